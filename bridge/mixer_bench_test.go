package bridge

import (
	"testing"
	"time"
)

// BenchmarkMixer measures the mixer's cost per call for one 20 ms frame
// (reported also per second of audio, "µs/call-second"): queueing both directions' packets (the relay's
// share), draining them through the jitter buffers, decoding, summing,
// encoding once per output codec and handing frames to the outputs.
// µs/call-second divided by 1e6 is the fraction of one core a monitored
// call costs.
func BenchmarkMixer(b *testing.B) {
	for _, bc := range []struct {
		name    string
		src     [2]string
		pt      [2]uint8
		outputs []string
	}{
		{"pcmu/1out", [2]string{"PCMU", "PCMU"}, [2]uint8{0, 0}, []string{"PCMU"}},
		{"pcmu/4out", [2]string{"PCMU", "PCMU"}, [2]uint8{0, 0}, []string{"PCMU", "PCMU", "PCMU", "PCMU"}},
		{"pcmu+pcma/2codecs", [2]string{"PCMU", "PCMA"}, [2]uint8{0, 8}, []string{"PCMU", "PCMA"}},
		{"g722+pcmu/pcmu-out", [2]string{"G722", "PCMU"}, [2]uint8{9, 0}, []string{"PCMU"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			// A tick channel that never fires: the benchmark goroutine runs
			// the frames itself (the mixer goroutine only waits).
			m := NewMixer("bench", MixerConfig{Tick: make(chan time.Time)})
			defer m.Close()
			m.Event(Event{Kind: EvMedia, Media: [2]MediaDesc{
				{Codecs: []Codec{{PT: bc.pt[0], Name: bc.src[0], Rate: 8000}}},
				{Codecs: []Codec{{PT: bc.pt[1], Name: bc.src[1], Rate: 8000}}},
			}})
			for i, c := range bc.outputs {
				if err := m.AddOutput(&discardOutput{i}, c); err != nil {
					b.Fatal(err)
				}
			}
			a := newToneSource(b, bc.src[0], bc.pt[0], 440, 0.3, 1)
			z := newToneSource(b, bc.src[1], bc.pt[1], 1000, 0.3, 2)
			// Pre-encode one second so that the benchmark measures the mixer,
			// not the test's tone generator.
			type pk struct {
				p       Packet
				payload []byte
			}
			var pa, pz [50]pk
			for i := range 50 {
				pa[i].p = *a.next()
				pa[i].payload = append([]byte(nil), pa[i].p.Payload...)
				pz[i].p = *z.next()
				pz[i].payload = append([]byte(nil), pz[i].p.Payload...)
			}
			var shift uint32
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				p := &pa[i].p
				p.Payload = pa[i].payload
				p.Header.Timestamp += shift
				m.RTP(AtoB, p)
				p.Header.Timestamp -= shift
				q := &pz[i].p
				q.Payload = pz[i].payload
				q.Header.Timestamp += shift
				m.RTP(BtoA, q)
				q.Header.Timestamp -= shift
				m.step()
				if i++; i == 50 {
					i = 0
					shift += 50 * 160
				}
			}
			// One op is one 20 ms frame; 50 make a second of audio.
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)*50/1000, "µs/call-second")
			st := m.Stats()
			if st.Late != [2]uint64{} || st.Resyncs != [2]uint64{} || st.Overflow != [2]uint64{} {
				b.Fatalf("benchmark stream not steady: %+v", st)
			}
		})
	}
}

type discardOutput struct{ id int }

func (*discardOutput) WriteMix(*MixFrame) {}
