package recorder

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/bib-project/bib/bridge"
	"github.com/bib-project/bib/storage"
	"github.com/pion/rtp"
)

// (1) No impairment: after the leading silence each channel holds exactly the
// G.711-decoded audio its party sent.
func TestFidelityClean(t *testing.T) {
	for _, tc := range []struct {
		name  string
		codec string
		near  bridge.Side
	}{
		{"pcmu near a", "PCMU", bridge.SideA},
		{"pcma near b", "PCMA", bridge.SideB},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Defaults(), CallInfo{CallID: "c1"}, WithNearSide(tc.near))
			origin := 100 * ms
			a := newParty(t, bridge.AtoB, tc.codec, 120*ms, tone(440, 2000, 3000, 8000*3))
			b := newParty(t, bridge.BtoA, tc.codec, 137*ms, tone(1000, 2000, -3000, 8000*3))
			h.answer(origin, pcmuMedia())
			h.feed(append(a.packets(constDelay(5*ms)), b.packets(constDelay(5*ms))...))
			end := 3300 * ms
			m, info, left, right := h.end(end)

			if info.Rate != 8000 || info.Channels != 2 {
				t.Fatalf("format %d Hz %d ch, want 8000 Hz stereo", info.Rate, info.Channels)
			}
			if m.DurationMS != 3200 || len(left) != 3200*8 {
				t.Fatalf("duration %d ms (%d frames), want 3200 ms", m.DurationMS, len(left))
			}
			chA, chB := left, right
			if tc.near == bridge.SideB {
				chA, chB = right, left
			}
			for _, c := range []struct {
				name string
				ch   []int16
				p    *party
			}{{"a", chA, a}, {"b", chB, b}} {
				at := samplePos(c.p.start+5*ms, origin)
				want := c.p.decoded()
				if !allZero(c.ch[:at]) {
					t.Errorf("party %s: leading silence not silent", c.name)
				}
				if !slices.Equal(c.ch[at:at+len(want)], want) {
					t.Errorf("party %s: recorded audio differs from what was sent", c.name)
				}
				if !allZero(c.ch[at+len(want):]) {
					t.Errorf("party %s: trailing samples not silent", c.name)
				}
			}
			if m.Status != storage.StatusComplete || m.NoRTP {
				t.Errorf("status %s no_rtp %v", m.Status, m.NoRTP)
			}
			near, far := m.Near.Stream, m.Far.Stream
			for _, s := range []storage.DirStats{near, far} {
				if s.Packets != 150 || s.Lost != 0 || s.Late != 0 || s.Gaps != 0 || s.Duplicates != 0 {
					t.Errorf("stats %+v, want 150 packets and no impairment", s)
				}
			}
			if !slices.Equal(m.Codecs, []string{tc.codec}) {
				t.Errorf("codecs %v", m.Codecs)
			}
		})
	}
}

// (2) 5% loss, up to 40 ms jitter (reordering follows), duplicates.
func TestFidelityImpaired(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 9))
	h := newHarness(t, Defaults(), CallInfo{CallID: "c2"})
	origin := 50 * ms
	const secs = 8
	pa := tone(440, 2000, 3000, 8000*secs)
	pb := tone(700, 2000, 3000, 8000*secs)
	// Both parties make a marker at the same sender instant, 6.0 s.
	markAt := 6000 * ms
	a := newParty(t, bridge.AtoB, "PCMU", 60*ms, pa)
	b := newParty(t, bridge.BtoA, "PCMU", 73*ms, pb)
	addMarker(pa, int((markAt-a.start)*8000/1e9))
	addMarker(pb, int((markAt-b.start)*8000/1e9))

	const base = 30 * ms
	// The first packets of each party are delayed (differently), so the
	// anchor must find the least-delayed packet later in the call.
	jitter := func(k int) int64 {
		if k < 3 {
			return base + int64(5+rng.IntN(30))*ms
		}
		if rng.IntN(10) < 3 {
			return base
		}
		return base + int64(rng.IntN(41))*ms
	}
	markerPacket := func(p *party) int { return int((markAt - p.start) / (20 * ms)) }
	var items []item
	lost := map[bridge.Direction][]int{}
	dups := map[bridge.Direction]int{}
	for _, p := range []*party{a, b} {
		for _, it := range p.packets(jitter) {
			if it.k > 0 && it.k != markerPacket(p) && rng.IntN(100) < 5 {
				lost[p.dir] = append(lost[p.dir], it.k)
				continue
			}
			items = append(items, it)
			if rng.IntN(100) < 3 {
				d := it
				d.arrival += int64(rng.IntN(20)) * ms
				items = append(items, d)
				dups[p.dir]++
			}
		}
	}
	h.answer(origin, pcmuMedia())
	h.feed(items)
	end := 8200 * ms
	m, _, left, right := h.end(end)

	// Duration equals the call's (answer to end) within 20 ms.
	if d := m.DurationMS - (end-origin)/ms; d < -20 || d > 20 {
		t.Errorf("duration %d ms, call lasted %d ms", m.DurationMS, (end-origin)/ms)
	}
	// The markers land on the same sample, +-1.
	ml, mr := findMarker(left, 0), findMarker(right, 0)
	if ml < 0 || mr < 0 {
		t.Fatalf("marker not found: left %d right %d", ml, mr)
	}
	if d := ml - mr; d < -1 || d > 1 {
		t.Errorf("channels misaligned: marker at %d (near) and %d (far)", ml, mr)
	}
	if want := samplePos(markAt+base, origin); ml != want {
		t.Errorf("near marker at %d, want %d (sent instant + minimum network delay)", ml, want)
	}
	// Every lost frame after the first second is silence of exactly its
	// length (runs of consecutive losses are one silence).
	for _, c := range []struct {
		p  *party
		ch []int16
	}{{a, left}, {b, right}} {
		ks := lost[c.p.dir]
		for i := 0; i < len(ks); i++ {
			j := i
			for j+1 < len(ks) && ks[j+1] == ks[j]+1 {
				j++
			}
			if ks[i]*20 < 1000 {
				i = j
				continue
			}
			from := samplePos(c.p.start+int64(ks[i])*20*ms+base, origin)
			to := from + (j-i+1)*160
			if !allZero(c.ch[from:to]) {
				t.Errorf("%v: lost packets %d..%d not silent", c.p.dir, ks[i], ks[j])
			}
			if c.ch[from-1] == 0 || (to < len(c.ch) && c.ch[to] == 0 && ks[j]+1 < len(c.p.pcm)/160) {
				t.Errorf("%v: silence for lost packets %d..%d is not exactly %d samples", c.p.dir, ks[i], ks[j], to-from)
			}
			i = j
		}
	}
	for _, c := range []struct {
		dir bridge.Direction
		st  storage.DirStats
	}{{bridge.AtoB, m.Near.Stream}, {bridge.BtoA, m.Far.Stream}} {
		if c.st.Lost != uint64(len(lost[c.dir])) {
			t.Errorf("%v: lost %d, dropped %d", c.dir, c.st.Lost, len(lost[c.dir]))
		}
		if c.st.Duplicates != uint64(dups[c.dir]) {
			t.Errorf("%v: duplicates %d, sent %d", c.dir, c.st.Duplicates, dups[c.dir])
		}
		if c.st.Late != 0 || c.st.Gaps == 0 || c.st.GapMS < 20*int64(c.st.Gaps) {
			t.Errorf("%v: stats %+v", c.dir, c.st)
		}
	}
}

// (3) SSRC change, timestamp jump forward and back mid-call: each piece of
// audio still lands where it was sent.
func TestFidelitySSRCAndJumps(t *testing.T) {
	h := newHarness(t, Defaults(), CallInfo{CallID: "c3"})
	origin := 0 * ms
	a := newParty(t, bridge.AtoB, "PCMU", 20*ms, tone(440, 2000, 3000, 8000*5))
	b := newParty(t, bridge.BtoA, "PCMU", 20*ms, tone(900, 2000, 3000, 8000*5))
	ia := a.packets(constDelay(10 * ms))
	ib := b.packets(constDelay(10 * ms))
	for i := range ia {
		if ia[i].k >= 100 { // at 2 s: new source, new sequence and timestamp bases
			ia[i].hdr.SSRC = 0xdeadbeef
			ia[i].hdr.SequenceNumber += 12345
			ia[i].hdr.Timestamp += 0x7000_0000
		}
	}
	for i := range ib {
		switch {
		case ib[i].k >= 200: // at 4 s: back by 10 s
			ib[i].hdr.Timestamp += 3600*8000 - 10*8000
		case ib[i].k >= 150: // at 3 s: forward by an hour, same SSRC and sequence
			ib[i].hdr.Timestamp += 3600 * 8000
		}
	}
	h.answer(origin, pcmuMedia())
	h.feed(append(ia, ib...))
	m, _, left, right := h.end(5200 * ms)

	for _, c := range []struct {
		p  *party
		ch []int16
	}{{a, left}, {b, right}} {
		at := samplePos(c.p.start+10*ms, origin)
		want := c.p.decoded()
		if !slices.Equal(c.ch[at:at+len(want)], want) {
			first := -1
			for i := range want {
				if c.ch[at+i] != want[i] {
					first = i
					break
				}
			}
			t.Errorf("%v: audio misplaced from sample %d (%.3f s)", c.p.dir, first, float64(first)/8000)
		}
	}
	if m.Near.Stream.SSRCChanges != 1 || countEvents(m, "ssrc_change") != 1 {
		t.Errorf("ssrc changes %d, events %d", m.Near.Stream.SSRCChanges, countEvents(m, "ssrc_change"))
	}
	if m.Far.Stream.TSJumps != 2 || countEvents(m, "ts_jump") != 2 {
		t.Errorf("ts jumps %d, events %d", m.Far.Stream.TSJumps, countEvents(m, "ts_jump"))
	}
	if m.Near.Stream.Lost != 0 || m.Far.Stream.Lost != 0 || m.DurationMS != 5200 {
		t.Errorf("lost %d/%d duration %d", m.Near.Stream.Lost, m.Far.Stream.Lost, m.DurationMS)
	}
}

// (4) Hold and resume: both channels silent in between, events noted.
func TestFidelityHold(t *testing.T) {
	h := newHarness(t, Defaults(), CallInfo{CallID: "c4"})
	a := newParty(t, bridge.AtoB, "PCMU", 0, tone(440, 2000, 3000, 8000*4))
	b := newParty(t, bridge.BtoA, "PCMU", 0, tone(900, 2000, 3000, 8000*4)) // music on hold keeps flowing
	h.answer(0, pcmuMedia())
	ia, ib := a.packets(constDelay(5*ms)), b.packets(constDelay(5*ms))
	items := append(ia, ib...)
	slices.SortStableFunc(items, func(x, y item) int { return int(x.arrival - y.arrival) })
	holdAt, resumeAt := 1500*ms, 2500*ms
	for _, it := range items {
		if it.arrival >= holdAt && h.clock.Load() < holdAt {
			h.rec.Event(bridge.Event{Kind: bridge.EvHold, Side: bridge.SideA, Mono: holdAt})
		}
		if it.arrival >= resumeAt && h.clock.Load() < resumeAt {
			h.rec.Event(bridge.Event{Kind: bridge.EvResume, Side: bridge.SideA, Mono: resumeAt})
		}
		h.send(it)
	}
	m, _, left, right := h.end(4100 * ms)
	hs, he := samplePos(holdAt, 0), samplePos(resumeAt, 0)
	for name, ch := range map[string][]int16{"near": left, "far": right} {
		if !allZero(ch[hs:he]) {
			t.Errorf("%s: audio during hold", name)
		}
		if ch[hs-1] == 0 || ch[he] == 0 {
			t.Errorf("%s: silence does not match the hold span exactly", name)
		}
	}
	if countEvents(m, "hold") != 1 || countEvents(m, "resume") != 1 {
		t.Errorf("events %+v", m.Events)
	}
	for _, e := range m.Events {
		if e.Kind == "hold" && (e.OffsetMS != 1500 || !e.At.Equal(wall0.Add(1500*1e6))) {
			t.Errorf("hold event %+v", e)
		}
	}
	if m.Near.Stream.Held == 0 || m.Near.Stream.Gaps != 0 {
		t.Errorf("near stats %+v", m.Near.Stream)
	}
}

// (5) Comfort noise with DTX, and RFC 4733 events: silence of the right
// length, never decoded as audio, digits noted (masked by default).
func TestFidelityCNAndDTMF(t *testing.T) {
	for _, mask := range []bool{true, false} {
		t.Run(map[bool]string{true: "masked", false: "clear"}[mask], func(t *testing.T) {
			cfg := Defaults()
			cfg.MaskDTMF = mask
			h := newHarness(t, cfg, CallInfo{CallID: "c5"})
			a := newParty(t, bridge.AtoB, "PCMU", 0, tone(440, 2000, 3000, 8000*3))
			b := newParty(t, bridge.BtoA, "PCMU", 0, tone(900, 2000, 3000, 8000*3))
			ia, ib := a.packets(constDelay(5*ms)), b.packets(constDelay(5*ms))
			// a: one CN packet at 1.0 s, then nothing (DTX) until 2.0 s.
			var items []item
			for _, it := range ia {
				switch {
				case it.k == 50:
					it.hdr.PayloadType, it.payload = 13, []byte{40}
				case it.k > 50 && it.k < 100:
					continue
				case it.k >= 100:
					it.hdr.SequenceNumber -= 49
				}
				items = append(items, it)
			}
			// b: digit 5 from 1.5 s for 100 ms replaces the audio: five
			// updates then three end packets, all with the event's start timestamp.
			for _, it := range ib {
				if it.k >= 75 && it.k < 80 {
					ev := it
					ev.hdr.PayloadType = 101
					ev.hdr.Timestamp = ib[75].hdr.Timestamp
					dur := uint16((it.k - 74) * 160)
					ev.payload = []byte{5, 10, byte(dur >> 8), byte(dur)}
					items = append(items, ev)
					if it.k == 79 {
						for r := range 3 {
							end := ev
							end.hdr.SequenceNumber += uint16(r + 1)
							end.payload = []byte{5, 0x80 | 10, byte(dur >> 8), byte(dur)}
							items = append(items, end)
						}
					}
					continue
				}
				if it.k >= 80 {
					it.hdr.SequenceNumber += 3
				}
				items = append(items, it)
			}
			h.answer(0, pcmuMedia())
			h.feed(items)
			m, _, left, right := h.end(3100 * ms)

			da, db := a.decoded(), b.decoded()
			at := samplePos(5*ms, 0)
			if !allZero(left[at+50*160 : at+100*160]) {
				t.Error("near: CN/DTX span not silent")
			}
			if !slices.Equal(left[at:at+50*160], da[:50*160]) || !slices.Equal(left[at+100*160:at+len(da)], da[100*160:]) {
				t.Error("near: audio around CN misplaced")
			}
			if !allZero(right[at+75*160 : at+80*160]) {
				t.Error("far: telephone-event decoded as audio")
			}
			if !slices.Equal(right[at+80*160:at+len(db)], db[80*160:]) {
				t.Error("far: audio after the digit misplaced")
			}
			if s := m.Near.Stream; s.CNPackets != 1 || s.Gaps != 0 || s.Lost != 0 {
				t.Errorf("near stats %+v", s)
			}
			if s := m.Far.Stream; s.DTMFEvents != 1 || s.Gaps != 0 || s.Lost != 0 {
				t.Errorf("far stats %+v", s)
			}
			digit := "5"
			if mask {
				digit = "*"
			}
			var found bool
			for _, e := range m.Events {
				if e.Kind == "dtmf" {
					found = true
					if e.Detail != "digit="+digit+" duration_ms=100" || e.OffsetMS != 1505 || e.Direction != "far" {
						t.Errorf("dtmf event %+v", e)
					}
				}
			}
			if !found {
				t.Errorf("no dtmf event in %+v", m.Events)
			}
		})
	}
}

// (6) No RTP at all: a silent recording of the call's length saying so.
func TestFidelityNoRTP(t *testing.T) {
	h := newHarness(t, Defaults(), CallInfo{CallID: "c6", NearDevice: "CSFJSMITH"})
	h.answer(100*ms, pcmuMedia())
	m, info, left, right := h.end(2100 * ms)
	if m.Status != storage.StatusComplete || !m.NoRTP || !m.Near.Stream.NoRTP || !m.Far.Stream.NoRTP {
		t.Errorf("meta %+v", m)
	}
	if m.DurationMS != 2000 || len(left) != 16000 || info.Channels != 2 || !allZero(left) || !allZero(right) {
		t.Errorf("duration %d ms, %d frames", m.DurationMS, len(left))
	}
	if m.Near.Device != "CSFJSMITH" || !m.StartTime.Equal(wall0.Add(100*1e6)) || !m.EndTime.Equal(wall0.Add(2100*1e6)) {
		t.Errorf("identity/times %+v", m)
	}
}

// Re-INVITE from PCMU to PCMA mid-stream rebinds the decoder.
func TestCodecChange(t *testing.T) {
	h := newHarness(t, Defaults(), CallInfo{CallID: "c7"})
	pcm := tone(440, 2000, 3000, 8000*2)
	u := newParty(t, bridge.AtoB, "PCMU", 0, pcm[:8000])
	x := newParty(t, bridge.AtoB, "PCMA", 1000*ms, pcm[8000:])
	x.seq, x.ts = u.seq+50, u.ts+8000
	media := [2]bridge.MediaDesc{
		{Codecs: []bridge.Codec{{PT: 0, Name: "PCMU", Rate: 8000}}},
		{Codecs: []bridge.Codec{{PT: 0, Name: "PCMU", Rate: 8000}}},
	}
	h.answer(0, media)
	h.feed(u.packets(constDelay(5 * ms)))
	// The re-INVITE binds PT 96 to PCMA.
	media[0].Codecs = []bridge.Codec{{PT: 96, Name: "PCMA", Rate: 8000}}
	media[1].Codecs = media[0].Codecs
	h.rec.Event(bridge.Event{Kind: bridge.EvMedia, Media: media})
	x.pt = 96
	h.feed(x.packets(constDelay(5 * ms)))
	m, _, left, _ := h.end(2100 * ms)
	want := append(u.decoded(), x.decoded()...)
	at := samplePos(5*ms, 0)
	if !slices.Equal(left[at:at+len(want)], want) {
		t.Error("audio across the codec change differs")
	}
	if !slices.Equal(m.Codecs, []string{"PCMU", "PCMA"}) || countEvents(m, "codec") != 2 {
		t.Errorf("codecs %v events %+v", m.Codecs, m.Events)
	}
}

// G.722 negotiated: the recording is 16 kHz; G.711 audio is upsampled, and
// G.722 packets (decoder may not exist yet) never crash the recorder.
func TestSixteenKHz(t *testing.T) {
	h := newHarness(t, Defaults(), CallInfo{CallID: "c8"})
	media := pcmuMedia()
	media[1].Codecs = append([]bridge.Codec{{PT: 9, Name: "G722", Rate: 8000}}, media[1].Codecs...)
	a := newParty(t, bridge.AtoB, "PCMU", 0, tone(440, 2000, 3000, 8000))
	h.answer(0, media)
	items := a.packets(constDelay(5 * ms))
	for k := range 50 { // far end sends G.722 payloads
		items = append(items, item{dir: bridge.BtoA, arrival: int64(k)*20*ms + 5*ms,
			hdr:     rtp.Header{Version: 2, PayloadType: 9, SequenceNumber: uint16(k), Timestamp: uint32(k * 160), SSRC: 9},
			payload: make([]byte, 160)})
	}
	h.feed(items)
	m, info, left, _ := h.end(1100 * ms)
	if info.Rate != 16000 || m.SampleRate != 16000 || len(left) != 1100*16 {
		t.Fatalf("rate %d, %d frames", info.Rate, len(left))
	}
	want := a.decoded()
	at := 2 * samplePos(5*ms, 0)
	for i, v := range want {
		if left[at+2*i+1] != v {
			t.Fatalf("upsampled sample %d = %d, want %d", i, left[at+2*i+1], v)
		}
	}
	if m.Far.Stream.Packets != 50 {
		t.Errorf("far packets %d", m.Far.Stream.Packets)
	}
	if countEvents(m, "unsupported_codec") == 0 && !slices.Contains(m.Codecs, "G722") {
		t.Errorf("G.722 neither decoded nor reported: %+v", m.Events)
	}
}

func TestEventsCarryWallTime(t *testing.T) {
	h := newHarness(t, Defaults(), CallInfo{CallID: "c9", GateVerdict: map[string]any{"allowed": true}})
	h.answer(0, pcmuMedia())
	m, _, _, _ := h.end(500 * ms)
	if !strings.Contains(string(m.GateVerdict), `"allowed":true`) {
		t.Errorf("gate verdict %s", m.GateVerdict)
	}
	if countEvents(m, "end") != 1 {
		t.Errorf("events %+v", m.Events)
	}
}
