package bridge

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The relay benchmarks push packets from party A through a relay to party B
// with a bounded window in flight and report, besides ns/op (wall time per
// packet), cpu-ns/pkt: the whole process's user+system CPU per relayed
// packet, from getrusage. Sender and receiver costs are identical across
// sub-benchmarks, so the difference is the relay's. "minimal" is the floor:
// one goroutine per socket that reads a datagram and writes it on.

func cpuNow() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pump sends b.N packets to dst from a and receives them at bConn, keeping at
// most window packets in flight. After a read times out, whatever was in
// flight is counted lost and the run goes on, so a stall of the machine
// never hangs the benchmark or turns it into a send-only run.
func pump(b *testing.B, a, bConn *net.UDPConn, dst netip.AddrPort) {
	const window = 64
	pkt := rtpPacket(b, 0x1234, 1, 0, make([]byte, 160))
	var sent, done, lost atomic.Int64
	n := int64(b.N)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 2048)
		for done.Load()+lost.Load() < n {
			bConn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if _, _, err := bConn.ReadFromUDPAddrPort(buf); err != nil {
				lost.Add(sent.Load() - done.Load() - lost.Load())
				continue
			}
			done.Add(1)
		}
	}()
	cpu0 := cpuNow()
	b.ResetTimer()
	// A counted loop, not b.Loop: the receiver goroutine needs the final
	// packet count up front.
	for i := 0; i < b.N; i++ {
		for sent.Load()-done.Load()-lost.Load() >= window {
			runtimeGosched()
		}
		pkt[3] = byte(i)
		if _, err := a.WriteToUDPAddrPort(pkt, dst); err != nil {
			b.Fatal(err)
		}
		sent.Add(1)
	}
	wg.Wait()
	b.StopTimer()
	cpu := cpuNow() - cpu0
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/pkt")
	if l := lost.Load(); l > 0 {
		b.ReportMetric(float64(l)/float64(b.N), "lost/pkt")
	}
}

func BenchmarkRelay(b *testing.B) {
	b.Run("bib", func(b *testing.B) {
		e := testEngine(b, freeRange(b))
		c, pa, pb := setupCall(b, e)
		defer c.Close("bench")
		la, _ := c.Leg(SideA).Local()
		b.ReportAllocs()
		pump(b, pa.conn, pb.conn, la)
	})
	b.Run("bib-with-tap", func(b *testing.B) {
		e := testEngine(b, freeRange(b))
		c, pa, pb := setupCall(b, e)
		defer c.Close("bench")
		c.AddTap(nopTap{})
		la, _ := c.Leg(SideA).Local()
		b.ReportAllocs()
		pump(b, pa.conn, pb.conn, la)
	})
	b.Run("minimal", func(b *testing.B) {
		// The syscall floor: read, write, nothing else.
		pa, pb := newParty(b), newParty(b)
		in, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		out, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		go func() {
			buf := make([]byte, 1501)
			for {
				n, _, err := in.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				out.WriteToUDPAddrPort(buf[:n], pb.addr)
			}
		}()
		defer in.Close()
		defer out.Close()
		b.ReportAllocs()
		pump(b, pa.conn, pb.conn, in.LocalAddr().(*net.UDPAddr).AddrPort())
	})
}

type nopTap struct{}

func (nopTap) RTP(Direction, *Packet) {}
func (nopTap) Event(Event)            {}

// BenchmarkParseRTP measures header validation and parsing alone.
func BenchmarkParseRTP(b *testing.B) {
	raw := rtpPacket(b, 1, 2, 3, make([]byte, 160))
	pkt := &Packet{}
	b.ReportAllocs()
	for b.Loop() {
		if err := parseRTP(raw, pkt); err != nil {
			b.Fatal(err)
		}
	}
}
