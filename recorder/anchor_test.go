package recorder

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/bib-project/bib/bridge"
	"github.com/bib-project/bib/storage"
)

// frameAt checks that frame k of p (as decoded) lies in ch starting at the
// sample of its sender instant plus delay.
func frameAt(t *testing.T, ch, decoded []int16, p *party, k int, delay, origin int64) bool {
	t.Helper()
	at := samplePos(p.start+int64(k)*20*ms+delay, origin)
	want := decoded[k*160 : (k+1)*160]
	if at < 0 || at+160 > len(ch) || !slices.Equal(ch[at:at+160], want) {
		t.Errorf("%v: frame %d not at sample %d (sent + %d ms)", p.dir, k, at, delay/ms)
		return false
	}
	return true
}

// exactRun returns where want appears in ch, sample for sample after a
// silent lead-in, or -1.
func exactRun(ch, want []int16) int {
	for off := 0; off+len(want) <= len(ch); off++ {
		if ch[off] == want[0] && slices.Equal(ch[off:off+len(want)], want) {
			if !allZero(ch[:off]) {
				return -1
			}
			return off
		}
	}
	return -1
}

// The end-to-end failure, deterministically: continuous audio, no loss, no
// reordering, the first packets a few ms later than the ones after the
// jitter buffer's first write. The anchor learned later must not cut (or pad)
// the audio: the recording is the sent audio sample for sample.
func TestAnchorNoCutOnContinuousAudio(t *testing.T) {
	for _, jitterMS := range []int{60, 500} {
		t.Run(map[int]string{60: "depth 60 ms", 500: "depth 500 ms"}[jitterMS], func(t *testing.T) {
			rng := rand.New(rand.NewPCG(3, 5))
			cfg := Defaults()
			cfg.JitterMS = jitterMS
			h := newHarness(t, cfg, CallInfo{CallID: "anchor1"})
			a := newParty(t, bridge.AtoB, "PCMU", 40*ms, tone(440, 2000, 3000, 8000*3))
			b := newParty(t, bridge.BtoA, "PCMU", 40*ms, tone(900, 2000, 3000, 8000*3))
			// Quicker packets keep turning up later in the call: 4-5 ms of
			// scheduling delay at first, 2-3 ms later, 0-1 ms at the end.
			steps := func(k int) int64 {
				switch {
				case k < 60:
					return int64(4000+rng.IntN(1000)) * 1000
				case k < 110:
					return int64(2000+rng.IntN(1000)) * 1000
				}
				return int64(rng.IntN(1000)) * 1000
			}
			h.answer(0, pcmuMedia())
			h.feed(append(a.packets(steps), b.packets(steps)...))
			m, _, left, right := h.end(3200 * ms)
			for _, c := range []struct {
				p  *party
				ch []int16
			}{{a, left}, {b, right}} {
				off := exactRun(c.ch, c.p.decoded())
				if off < 0 {
					t.Fatalf("%v: the recording is not the sent audio sample for sample", c.p.dir)
				}
				// Placed on the least delay seen before the first write: after
				// the sent instant, by no more than the first packet's delay.
				if lo, hi := samplePos(c.p.start, 0), samplePos(c.p.start+5*ms, 0); off < lo || off > hi {
					t.Errorf("%v: audio starts at sample %d, want %d..%d", c.p.dir, off, lo, hi)
				}
			}
			if n := countEvents(m, "realign"); n != 0 {
				t.Errorf("%d realign events for a few ms of jitter", n)
			}
			for _, s := range []storage.DirStats{m.Near.Stream, m.Far.Stream} {
				if s.Late != 0 || s.Gaps != 0 || s.Resyncs != 0 {
					t.Errorf("stats %+v", s)
				}
			}
		})
	}
}

// A late start: what happens when the first packets are late and the ones
// after them on time. Party b is on time throughout; both parties send from
// the same instant with a marker at 2.5 s. Policy: a correction learned
// before the stream's first write is applied at once (nothing moves);
// otherwise it waits for silence in the stream (loss, DTX) and consumes it,
// never cutting audio, unless it exceeds the jitter buffer depth (60 ms),
// when it is applied at once with a realign event.
func TestAnchorLateStart(t *testing.T) {
	const base = 10 * ms // network delay of on-time packets
	type seg struct {
		from, to int   // frames [from, to)
		delay    int64 // placed at sent instant + delay
	}
	for _, tc := range []struct {
		name    string
		late    func(k int) int64 // extra delay of party a's packet k
		drop    []int             // party a's lost packets
		dtx     [2]int            // party a sends nothing for frames [dtx[0], dtx[1])
		segs    []seg             // where party a's frames must be
		silent  [][2]int64        // left-channel spans that must be silent (call clock ns)
		realign int
		aligned bool // markers on the same sample +-1
	}{{
		// Packet 1 overtakes packet 0; the anchor comes from packet 1.
		name: "first packet 30 ms late",
		late: func(k int) int64 { return map[bool]int64{true: 30 * ms}[k == 0] },
		segs: []seg{{0, 150, base}}, aligned: true,
	}, {
		// Learned within the jitter buffer: applied before anything is written.
		name: "first 40 ms 30 ms late",
		late: func(k int) int64 { return map[bool]int64{true: 30 * ms}[k < 2] },
		segs: []seg{{0, 150, base}}, aligned: true,
	}, {
		// Learned after 140 ms of audio was written, continuous audio: no
		// cut; the channel stays 30 ms late.
		name: "first 200 ms 30 ms late",
		late: func(k int) int64 { return map[bool]int64{true: 30 * ms}[k < 10] },
		segs: []seg{{0, 150, base + 30*ms}},
	}, {
		// Each loss gives room: the first one 20 ms (all of it), the second
		// the remaining 10 ms; from then on the channels are aligned.
		name:    "first 200 ms 30 ms late, two losses",
		late:    func(k int) int64 { return map[bool]int64{true: 30 * ms}[k < 10] },
		drop:    []int{60, 100},
		segs:    []seg{{0, 60, base + 30*ms}, {61, 100, base + 10*ms}, {101, 150, base}},
		silent:  [][2]int64{{100*20*ms + base + 10*ms, 101*20*ms + base}},
		aligned: true,
	}, {
		// A talkspurt after DTX (sequence numbers continue, the timestamp
		// jumps, marker set) takes the whole correction.
		name:    "first 200 ms 30 ms late, DTX",
		late:    func(k int) int64 { return map[bool]int64{true: 30 * ms}[k < 10] },
		dtx:     [2]int{50, 70},
		segs:    []seg{{0, 50, base + 30*ms}, {70, 150, base}},
		silent:  [][2]int64{{50*20*ms + base + 30*ms, 70*20*ms + base}},
		aligned: true,
	}, {
		// 100 ms late is more than the 60 ms jitter buffer: the anchor was
		// badly off; applied at once with an event, audio from then on aligned.
		name: "first 160 ms 100 ms late",
		late: func(k int) int64 { return map[bool]int64{true: 100 * ms}[k < 8] },
		segs: []seg{{12, 150, base}}, realign: 1, aligned: true,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Defaults(), CallInfo{CallID: "anchor2"})
			pa, pb := tone(440, 2000, 3000, 8000*3), tone(900, 2000, 3000, 8000*3)
			addMarker(pa, 20000)
			addMarker(pb, 20000)
			a := newParty(t, bridge.AtoB, "PCMU", 100*ms, pa)
			b := newParty(t, bridge.BtoA, "PCMU", 100*ms, pb)
			var items []item
			for _, it := range a.packets(func(k int) int64 { return base + tc.late(k) }) {
				switch {
				case slices.Contains(tc.drop, it.k), it.k >= tc.dtx[0] && it.k < tc.dtx[1]:
					continue
				case tc.dtx[1] > 0 && it.k >= tc.dtx[1]:
					it.hdr.SequenceNumber -= uint16(tc.dtx[1] - tc.dtx[0])
					it.hdr.Marker = it.k == tc.dtx[1]
				}
				items = append(items, it)
			}
			h.answer(0, pcmuMedia())
			h.feed(append(items, b.packets(constDelay(base))...))
			m, _, left, right := h.end(3300 * ms)

			da := a.decoded()
			for _, sg := range tc.segs {
				for k := sg.from; k < sg.to; k++ {
					if !frameAt(t, left, da, a, k, sg.delay, 0) {
						break
					}
				}
			}
			for _, sp := range tc.silent {
				if from, to := samplePos(a.start+sp[0], 0), samplePos(a.start+sp[1], 0); !allZero(left[from:to]) || left[from-1] == 0 || left[to] == 0 {
					t.Errorf("silence not exactly at samples %d..%d", from, to)
				}
			}
			if exactRun(right, b.decoded()) != samplePos(b.start+base, 0) {
				t.Error("far channel (on time) not exact")
			}
			ml, mr := findMarker(left, 0), findMarker(right, 0)
			if d := ml - mr; tc.aligned && (d < -1 || d > 1) {
				t.Errorf("channels misaligned: markers at %d and %d", ml, mr)
			}
			if n := countEvents(m, "realign"); n != tc.realign {
				t.Errorf("%d realign events, want %d", n, tc.realign)
			}
			s := m.Near.Stream
			if s.Resyncs != 0 || s.Lost != uint64(len(tc.drop)) {
				t.Errorf("near stats %+v", s)
			}
			// Without a realign nothing is late and the gaps are the losses;
			// a realign makes the packets still on their way late.
			if tc.realign == 0 && (s.Late != 0 || s.Gaps != uint64(len(tc.drop)) || s.GapMS != 20*int64(len(tc.drop))) {
				t.Errorf("near stats %+v", s)
			}
			if tc.realign > 0 && s.Late > 5 {
				t.Errorf("near stats %+v", s)
			}
		})
	}
}
