package bridge

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/bib-project/bib/bridge/codec"
)

// capFrame is a copy of one MixFrame.
type capFrame struct {
	codec   string
	payload []byte
	samples uint32
	index   uint64
	silent  bool
}

// frameSink is a MixOutput that hands copies of the frames to the test.
type frameSink struct{ ch chan capFrame }

func newFrameSink() *frameSink { return &frameSink{ch: make(chan capFrame, 4096)} }

func (s *frameSink) WriteMix(f *MixFrame) {
	s.ch <- capFrame{codec: f.Codec, payload: bytes.Clone(f.Payload), samples: f.Samples, index: f.Index, silent: f.Silent}
}

// mixHarness drives a Mixer with a fake clock.
type mixHarness struct {
	t    *testing.T
	m    *Mixer
	tick chan time.Time
	now  time.Time
}

func newMixHarness(t *testing.T) *mixHarness {
	t.Helper()
	h := &mixHarness{t: t, tick: make(chan time.Time), now: time.Unix(1000, 0)}
	h.m = NewMixer("test", MixerConfig{Tick: h.tick})
	t.Cleanup(func() { h.m.Close() })
	return h
}

// step advances the fake clock by one frame.
func (h *mixHarness) step() {
	h.t.Helper()
	h.now = h.now.Add(MixFrameDuration)
	select {
	case h.tick <- h.now:
	case <-time.After(5 * time.Second):
		h.t.Fatal("mixer goroutine does not take ticks")
	}
}

// recv takes n frames from a sink.
func recvFrames(t *testing.T, s *frameSink, n int) []capFrame {
	t.Helper()
	out := make([]capFrame, 0, n)
	for range n {
		select {
		case f := <-s.ch:
			out = append(out, f)
		case <-time.After(5 * time.Second):
			t.Fatalf("got %d of %d frames", len(out), n)
		}
	}
	return out
}

// toneSource sends a tone as 20 ms RTP packets.
type toneSource struct {
	ssrc  uint32
	seq   uint16
	ts    uint32
	pt    uint8
	freq  float64
	amp   float64
	phase float64
	enc   codec.Encoder
	pcm   []int16
	buf   []byte
	pkt   Packet
}

func newToneSource(t testing.TB, name string, pt uint8, freq, amp float64, ssrc uint32) *toneSource {
	t.Helper()
	enc, err := codec.NewEncoder(name)
	if err != nil {
		t.Fatal(err)
	}
	n := 20 * enc.SampleRate() / 1000
	return &toneSource{ssrc: ssrc, seq: 100, ts: ssrc * 7, pt: pt, freq: freq, amp: amp, enc: enc,
		pcm: make([]int16, n), buf: make([]byte, enc.PayloadSize(n))}
}

// next fills and returns the next packet (valid until the following call).
func (s *toneSource) next() *Packet {
	codec.Tone(s.pcm, s.freq, s.enc.SampleRate(), s.amp, &s.phase)
	n := s.enc.Encode(s.buf, s.pcm)
	s.pkt.Header.SSRC, s.pkt.Header.SequenceNumber, s.pkt.Header.Timestamp, s.pkt.Header.PayloadType = s.ssrc, s.seq, s.ts, s.pt
	s.pkt.Payload = s.buf[:n]
	s.seq++
	s.ts += 160
	return &s.pkt
}

func pcmuDesc(extra ...Codec) MediaDesc {
	return MediaDesc{Codecs: append([]Codec{{PT: 0, Name: "PCMU", Rate: 8000}, {PT: 101, Name: "telephone-event", Rate: 8000}}, extra...)}
}

// decodeFrames decodes and concatenates frames.
func decodeFrames(t *testing.T, fs []capFrame) ([]int16, int) {
	t.Helper()
	dec, err := codec.NewDecoder(fs[0].codec)
	if err != nil {
		t.Fatal(err)
	}
	var out []int16
	buf := make([]int16, 4096)
	for _, f := range fs {
		n := dec.Decode(buf, f.payload)
		out = append(out, buf[:n]...)
	}
	return out, dec.SampleRate()
}

func TestMixerBothTonesAllCodecs(t *testing.T) {
	for _, tc := range []struct {
		name         string
		aCodec, bCod string
		aPT, bPT     uint8
	}{
		{"pcmu+pcma", "PCMU", "PCMA", 0, 8},
		{"pcmu+g722", "PCMU", "G722", 0, 9},
		{"g722+g722", "G722", "G722", 9, 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newMixHarness(t)
			h.m.Event(Event{Kind: EvMedia, Media: [2]MediaDesc{
				{Codecs: []Codec{{PT: tc.aPT, Name: tc.aCodec, Rate: 8000}}},
				{Codecs: []Codec{{PT: tc.bPT, Name: tc.bCod, Rate: 8000}}},
			}})
			outs := map[string]*frameSink{}
			for _, c := range []string{"PCMU", "PCMA", "G722"} {
				outs[c] = newFrameSink()
				if err := h.m.AddOutput(outs[c], c); err != nil {
					t.Fatal(err)
				}
			}
			a := newToneSource(t, tc.aCodec, tc.aPT, 440, 0.3, 1111)
			b := newToneSource(t, tc.bCod, tc.bPT, 1000, 0.3, 2222)
			const frames = 60
			for range frames {
				h.m.RTP(AtoB, a.next())
				h.m.RTP(BtoA, b.next())
				h.step()
			}
			for c, s := range outs {
				fs := recvFrames(t, s, frames)
				for i, f := range fs {
					if f.index != uint64(i) || f.samples != 160 || f.codec != c {
						t.Fatalf("%s frame %d: index %d samples %d codec %s", c, i, f.index, f.samples, f.codec)
					}
				}
				pcm, rate := decodeFrames(t, fs[10:])
				p440, p1000, p2500 := codec.Goertzel(pcm, 440, rate), codec.Goertzel(pcm, 1000, rate), codec.Goertzel(pcm, 2500, rate)
				if p440 < 0.03 || p1000 < 0.03 || p2500 > 0.001 {
					t.Errorf("%s output: power 440 Hz %.4f, 1000 Hz %.4f, 2500 Hz %.5f", c, p440, p1000, p2500)
				}
			}
			st := h.m.Stats()
			if st.Packets != [2]uint64{frames, frames} || st.Late != [2]uint64{} || st.Overflow != [2]uint64{} {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

func TestMixerSaturates(t *testing.T) {
	h := newMixHarness(t)
	h.m.Event(Event{Kind: EvMedia, Media: [2]MediaDesc{pcmuDesc(), pcmuDesc()}})
	out := newFrameSink()
	if err := h.m.AddOutput(out, "PCMU"); err != nil {
		t.Fatal(err)
	}
	// Both parties send a loud positive constant (as loud as u-law allows):
	// the sum, about 64000, must clip to 32767, not wrap to a negative value.
	loud := bytes.Repeat([]byte{codec.UlawEncode(32000)}, 160)
	for i := range 20 {
		for d, ssrc := range []uint32{1, 2} {
			p := &Packet{Payload: loud}
			p.Header.SSRC, p.Header.SequenceNumber, p.Header.Timestamp = ssrc, uint16(i), uint32(i*160)
			h.m.RTP(Direction(d), p)
		}
		h.step()
	}
	pcm, _ := decodeFrames(t, recvFrames(t, out, 20)[8:])
	for i, v := range pcm {
		if v < 30000 {
			t.Fatalf("sample %d = %d: the sum wrapped or dropped instead of clipping", i, v)
		}
	}
}

func TestMixerContinuityAcrossSSRCChangeAndHold(t *testing.T) {
	h := newMixHarness(t)
	h.m.Event(Event{Kind: EvMedia, Media: [2]MediaDesc{pcmuDesc(), pcmuDesc()}})
	out := newFrameSink()
	if err := h.m.AddOutput(out, "PCMU"); err != nil {
		t.Fatal(err)
	}
	a := newToneSource(t, "PCMU", 0, 440, 0.3, 1)
	var frames []capFrame
	run := func(n int, send bool) []capFrame {
		for range n {
			if send {
				h.m.RTP(AtoB, a.next())
			}
			h.step()
		}
		fs := recvFrames(t, out, n)
		frames = append(frames, fs...)
		return fs
	}
	heard := func(fs []capFrame) bool {
		pcm, _ := decodeFrames(t, fs)
		return codec.Goertzel(pcm, 440, 8000) > 0.03
	}
	if !heard(run(30, true)[5:]) {
		t.Fatal("tone not heard before the changes")
	}
	// Hold: the agent stops sending; frames keep coming, silent.
	held := run(25, false)
	if !slices.ContainsFunc(held[5:], func(f capFrame) bool { return f.silent }) || heard(held[5:]) {
		t.Fatal("no silent frames during hold")
	}
	// Resume with a new SSRC and a timestamp jump, as after a re-INVITE.
	a.ssrc, a.ts, a.seq = 0xdeadbeef, a.ts+123456, 7
	if !heard(run(30, true)[5:]) {
		t.Fatal("tone not heard after resume with a new SSRC")
	}
	// Timestamps jump forward within the same SSRC (a sender that kept its
	// clock running through the hold).
	a.ts += 8000 * 10
	if !heard(run(30, true)[5:]) {
		t.Fatal("tone not heard after a timestamp jump")
	}
	for i, f := range frames {
		if f.index != uint64(i) || f.samples != 160 {
			t.Fatalf("frame %d has index %d, samples %d: stream not continuous", i, f.index, f.samples)
		}
	}
	if st := h.m.Stats(); st.Resyncs[AtoB] != 2 {
		t.Errorf("resyncs %v, want 2 for direction a->b", st.Resyncs)
	}
}

func TestMixerIgnoresCNAndEvents(t *testing.T) {
	h := newMixHarness(t)
	h.m.Event(Event{Kind: EvMedia, Media: [2]MediaDesc{pcmuDesc(Codec{PT: 13, Name: "CN", Rate: 8000}), pcmuDesc()}})
	out := newFrameSink()
	if err := h.m.AddOutput(out, "PCMA"); err != nil {
		t.Fatal(err)
	}
	// A DTMF event, comfort noise and an undeclared payload type carry
	// bytes that would be loud if decoded as G.711.
	loud := bytes.Repeat([]byte{0x80}, 160)
	var ev [4]byte
	codec.PutEvent(ev[:], codec.Event{Code: 5, Volume: 10, Duration: 800})
	for i := range 30 {
		var p Packet
		p.Header.SSRC, p.Header.SequenceNumber, p.Header.Timestamp = 9, uint16(i), uint32(i*160)
		switch i % 3 {
		case 0:
			p.Header.PayloadType, p.Payload = 101, ev[:]
		case 1:
			p.Header.PayloadType, p.Payload = 13, []byte{40}
		default:
			p.Header.PayloadType, p.Payload = 96, loud
		}
		h.m.RTP(AtoB, &p)
		h.step()
	}
	fs := recvFrames(t, out, 30)
	pcm, _ := decodeFrames(t, fs)
	if !codec.IsSilent(pcm, -60) {
		t.Fatalf("mix of events and comfort noise is not silent: %.1f dBFS", codec.LevelDBFS(pcm))
	}
	for _, f := range fs {
		if !f.silent {
			t.Fatal("a frame with no audio is not marked silent")
		}
	}
	if st := h.m.Stats(); st.Ignored[AtoB] < 25 {
		t.Errorf("ignored %v, want about 30", st.Ignored)
	}
}

func TestMixerJitterReorderAndLate(t *testing.T) {
	h := newMixHarness(t)
	h.m.Event(Event{Kind: EvMedia, Media: [2]MediaDesc{pcmuDesc(), pcmuDesc()}})
	out := newFrameSink()
	if err := h.m.AddOutput(out, "PCMU"); err != nil {
		t.Fatal(err)
	}
	a := newToneSource(t, "PCMU", 0, 440, 0.3, 5)
	// Packets arrive in pairs, swapped, one tick late: within the 60 ms
	// jitter buffer, so the tone must come out whole.
	var held *Packet
	for i := range 40 {
		p := a.next()
		cp := *p
		cp.Payload = bytes.Clone(p.Payload)
		if i%2 == 0 {
			held = &cp
		} else {
			h.m.RTP(AtoB, &cp)
			h.m.RTP(AtoB, held)
		}
		h.step()
	}
	pcm, _ := decodeFrames(t, recvFrames(t, out, 40)[6:38])
	// A whole tone has no gaps: every 20 ms block carries it.
	for i := 0; i+160 <= len(pcm); i += 160 {
		if codec.Goertzel(pcm[i:i+160], 440, 8000) < 0.03 {
			t.Fatalf("block %d lacks the tone: reordered packet lost", i/160)
		}
	}
	if st := h.m.Stats(); st.Late[AtoB] != 0 {
		t.Fatalf("late %v, want none", st.Late)
	}
	// A packet 200 ms in the past is late: dropped and counted.
	p := a.next()
	p.Header.Timestamp -= 1600
	h.m.RTP(AtoB, p)
	h.step()
	recvFrames(t, out, 1)
	if st := h.m.Stats(); st.Late[AtoB] != 1 || st.Duplicates[AtoB] != 0 {
		t.Fatalf("stats %+v, want one late packet", st)
	}
}

func TestMixerQueueOverflowCounted(t *testing.T) {
	h := newMixHarness(t)
	a := newToneSource(t, "PCMU", 0, 440, 0.3, 5)
	for range mixQueueLen + 8 {
		h.m.RTP(AtoB, a.next())
	}
	big := &Packet{Payload: make([]byte, mixSlotBytes+1)}
	h.m.RTP(BtoA, big)
	st := h.m.Stats()
	if st.Packets[AtoB] != mixQueueLen || st.Overflow[AtoB] != 8 || st.Oversize[BtoA] != 1 {
		t.Fatalf("stats %+v", st)
	}
	h.step() // drains; the queue takes packets again
	h.step() // returns once the previous tick has been handled
	h.m.RTP(AtoB, a.next())
	if st := h.m.Stats(); st.Packets[AtoB] != mixQueueLen+1 {
		t.Fatalf("queue not drained: %+v", st)
	}
}

func TestMixerOutputsJoinAndLeave(t *testing.T) {
	h := newMixHarness(t)
	s1, s2 := newFrameSink(), newFrameSink()
	if err := h.m.AddOutput(s1, "pcmu"); err != nil {
		t.Fatal(err)
	}
	if err := h.m.AddOutput(s2, "opus"); err == nil {
		t.Fatal("an unsupported codec was accepted")
	}
	if err := h.m.AddOutput(s2, "G722"); err != nil {
		t.Fatal(err)
	}
	h.step()
	recvFrames(t, s1, 1)
	if f := recvFrames(t, s2, 1)[0]; f.codec != "G722" || len(f.payload) != 160 {
		t.Fatalf("G722 frame %+v", f)
	}
	if n := h.m.RemoveOutput(s1); n != 1 {
		t.Fatalf("%d outputs left", n)
	}
	h.step()
	recvFrames(t, s2, 1)
	if len(s1.ch) != 0 {
		t.Fatal("a removed output still gets frames")
	}
	if n := h.m.RemoveOutput(s2); n != 0 || h.m.Outputs() != 0 {
		t.Fatalf("%d outputs left", n)
	}
}

func TestMixerStopsAtCallEnd(t *testing.T) {
	h := newMixHarness(t)
	h.m.Event(Event{Kind: EvEnd, Reason: "bye from a"})
	select {
	case <-h.m.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("mixer still running after EvEnd")
	}
	if r := h.m.Reason(); r != "call ended: bye from a" {
		t.Fatalf("reason %q", r)
	}
	h.m.Close() // idempotent after EvEnd
}

func TestMixerCatchUpAfterStall(t *testing.T) {
	h := newMixHarness(t)
	out := newFrameSink()
	if err := h.m.AddOutput(out, "PCMU"); err != nil {
		t.Fatal(err)
	}
	h.step()
	h.now = h.now.Add(3 * MixFrameDuration) // goroutine delayed by 3 frames
	h.step()
	h.now = h.now.Add(20 * MixFrameDuration) // a long stall
	h.step()
	fs := recvFrames(t, out, 1+4+mixMaxCatchUp)
	for i, f := range fs[:5] {
		if f.index != uint64(i) {
			t.Fatalf("frame %d index %d", i, f.index)
		}
	}
	if st := h.m.Stats(); st.Skipped != 21-mixMaxCatchUp || st.Frames != uint64(len(fs)) {
		t.Fatalf("stats %+v", st)
	}
}

func TestRTPStampContinuous(t *testing.T) {
	s := newRTPStamp()
	seq0, ts0, first := s.next(160)
	if !first {
		t.Fatal("first packet not flagged")
	}
	for i := 1; i < 70000; i++ {
		seq, ts, first := s.next(160)
		if first || seq != seq0+uint16(i) || ts != ts0+uint32(i)*160 {
			t.Fatalf("packet %d: seq %d ts %d", i, seq, ts)
		}
	}
}
