package bridge

import (
	"sync"
	"testing"
)

// BenchmarkForkRTP measures the cost a fork stream adds to the relay
// goroutine per packet (header rewrite + send), for each send path. A
// goroutine drains the recorder's socket as a recorder would. ns/op is the
// relay goroutine's time per packet; cpu-ns/pkt is the whole process's CPU
// per packet (sender goroutine and receiver included).
func BenchmarkForkRTP(b *testing.B) {
	for _, m := range []struct {
		name string
		mode ForkSend
	}{{"nonblocking", ForkSendNonBlocking}, {"direct", ForkSendDirect}, {"queued", ForkSendQueued}} {
		b.Run(m.name, func(b *testing.B) {
			p := newForkPair(b, m.mode, nil)
			benchForkSend(b, p)
			b.ReportMetric(float64(p.f.C.Dropped.Load())/float64(max(b.N, 1))*100, "%dropped")
		})
	}
}

// benchForkSend feeds b.N packets through p's fork stream on the benchmark
// goroutine while another goroutine drains the recorder's socket, then
// closes the pair and reports the process CPU per packet.
func benchForkSend(b *testing.B, p *forkPair) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 2048)
		for {
			if _, _, err := p.recv.ReadFromUDPAddrPort(buf); err != nil {
				return
			}
		}
	}()
	raw := rtpPacket(b, 0x1234, 1, 0, make([]byte, 160))
	var pkt Packet
	if err := parseRTP(raw, &pkt); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	var i uint32
	cpu0 := cpuNow()
	for b.Loop() {
		if q := p.f.q; q != nil {
			// Pace the producer to what the sender drains, as a real
			// call (50 packets/s) would: measure cost, not overflow.
			for q.head.Load()-q.tail.Load() > q.mask/2 {
				runtimeGosched()
			}
		}
		i++
		pkt.Header.SequenceNumber = uint16(i)
		pkt.Header.Timestamp = i * 160
		pkt.Arrival = int64(i) * 20e6
		p.f.RTP(AtoB, &pkt)
	}
	b.StopTimer()
	cpu := cpuNow() - cpu0
	p.f.Close()
	p.recv.Close()
	wg.Wait()
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(max(b.N, 1)), "cpu-ns/pkt")
}
