package bridge

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
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
// never hangs the benchmark or turns it into a send-only run. The window is
// a channel of credits, so a sender waiting for it parks instead of
// spinning: a spinning sender's CPU would grow with the relay's latency and
// be charged to the relay in cpu-ns/pkt.
func pump(b *testing.B, a, bConn *net.UDPConn, dst netip.AddrPort) {
	pumpTo(b, a, bConn, []netip.AddrPort{dst}, 64)
}

// pumpTo is pump with packet i sent to dsts[i%len(dsts)] (round robin over
// calls) and a given window.
func pumpTo(b *testing.B, a, bConn *net.UDPConn, dsts []netip.AddrPort, window int64) {
	pkt := rtpPacket(b, 0x1234, 1, 0, make([]byte, 160))
	pumpWith(b, a, bConn, window, func(i int) ([]byte, netip.AddrPort) {
		pkt[3] = byte(i)
		return pkt, dsts[i%len(dsts)]
	})
}

// pumpWith sends b.N datagrams (next(i) says which and where) from a with at
// most window in flight, counts what arrives on bConn, and reports the
// process CPU per packet and the loss.
func pumpWith(b *testing.B, a, bConn *net.UDPConn, window int64, next func(i int) ([]byte, netip.AddrPort)) {
	var sent, done, lost atomic.Int64
	n := int64(b.N)
	credit := make(chan struct{}, window)
	for range window {
		credit <- struct{}{}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 2048)
		for done.Load()+lost.Load() < n {
			bConn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if _, _, err := bConn.ReadFromUDPAddrPort(buf); err != nil {
				k := sent.Load() - done.Load() - lost.Load()
				lost.Add(k)
				for range k {
					credit <- struct{}{}
				}
				continue
			}
			done.Add(1)
			credit <- struct{}{}
		}
	}()
	cpu0 := cpuNow()
	b.ResetTimer()
	// A counted loop, not b.Loop: the receiver goroutine needs the final
	// packet count up front.
	for i := 0; i < b.N; i++ {
		<-credit
		pkt, dst := next(i)
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

// BenchmarkRelay: one call, one direction. "bib" is media.io goroutine,
// "bib-epoll" media.io epoll.
func BenchmarkRelay(b *testing.B) {
	for _, bc := range []struct {
		name, io string
		tap      bool
	}{
		{"bib", "goroutine", false},
		{"bib-epoll", "epoll", false},
		{"bib-with-tap", "goroutine", true},
		{"bib-epoll-with-tap", "epoll", true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			if bc.io == "epoll" && !ioSupported {
				b.Skip("no epoll engine here")
			}
			e := testEngineIO(b, freeRange(b), bc.io)
			c, pa, pb := setupCall(b, e)
			defer c.Close("bench")
			if bc.tap {
				c.AddTap(nopTap{})
			}
			la, _ := c.Leg(SideA).Local()
			b.ReportAllocs()
			pump(b, pa.conn, pb.conn, la)
		})
	}
	b.Run("minimal", func(b *testing.B) {
		// The syscall floor: read, write, nothing else.
		pa, pb := newParty(b), newParty(b)
		in := minimalRelay(b, pb.addr)
		b.ReportAllocs()
		pump(b, pa.conn, pb.conn, in)
	})
	b.Run("direct", func(b *testing.B) {
		// No relay: the harness's own cost, to subtract from the others.
		pa, pb := newParty(b), newParty(b)
		b.ReportAllocs()
		pump(b, pa.conn, pb.conn, pb.addr)
	})
}

// minimalRelay starts the floor relay, one goroutine that reads a datagram
// and writes it to dst, and returns the address it reads on.
func minimalRelay(b testing.TB, dst netip.AddrPort) netip.AddrPort {
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
			out.WriteToUDPAddrPort(buf[:n], dst)
		}
	}()
	b.Cleanup(func() { in.Close(); out.Close() })
	return in.LocalAddr().(*net.UDPAddr).AddrPort()
}

// BenchmarkRelayCalls relays through 200 calls at once, packets sent round
// robin over the calls with up to 128 in flight, so many legs are ready at
// the same time. All calls share one sending and one receiving party
// socket, so the harness costs the same in every sub-benchmark. "minimal"
// is 200 floor relays (a goroutine per socket).
func BenchmarkRelayCalls(b *testing.B) {
	const calls = 200
	for _, mode := range []string{"goroutine", "epoll"} {
		b.Run(mode, func(b *testing.B) {
			if mode == "epoll" && !ioSupported {
				b.Skip("no epoll engine here")
			}
			e := testEngineIO(b, callsRange(b, calls), mode)
			pa, pb := newParty(b), newParty(b)
			dsts := make([]netip.AddrPort, calls)
			for i := range dsts {
				c, err := e.NewCall(fmt.Sprintf("bench-%d", i), nil)
				if err != nil {
					b.Fatal(err)
				}
				c.SetRemote(SideA, pa.desc())
				c.SetRemote(SideB, pb.desc())
				dsts[i], _ = c.Leg(SideA).Local()
			}
			b.ReportAllocs()
			pumpTo(b, pa.conn, pb.conn, dsts, 128)
		})
	}
	b.Run("minimal", func(b *testing.B) {
		pa, pb := newParty(b), newParty(b)
		dsts := make([]netip.AddrPort, calls)
		for i := range dsts {
			dsts[i] = minimalRelay(b, pb.addr)
		}
		b.ReportAllocs()
		pumpTo(b, pa.conn, pb.conn, dsts, 128)
	})
	b.Run("direct", func(b *testing.B) {
		pa, pb := newParty(b), newParty(b)
		b.ReportAllocs()
		pumpTo(b, pa.conn, pb.conn, []netip.AddrPort{pb.addr}, 128)
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

// callsRange is a port range with room for calls calls (and some taken ports).
func callsRange(t testing.TB, calls int) string {
	pr, _ := ParsePortRange(freeRange(t))
	lo := min(pr.Min, 65535-4*calls-200) &^ 1
	return fmt.Sprintf("%d-%d", lo, lo+4*calls+199)
}

// BenchmarkRelayProc runs the relay in a child process (this test binary
// running TestRelayChild) and the pump in this one, and reports
// relay-cpu-ns/pkt: the child's user+system CPU per relayed packet while
// the pump ran. That isolates the relay's cost from the sender's and the
// receiver's, which dominate cpu-ns/pkt above.
func BenchmarkRelayProc(b *testing.B) {
	for _, calls := range []int{1, 200} {
		for _, mode := range []string{"goroutine", "epoll", "minimal"} {
			b.Run(fmt.Sprintf("calls=%d/%s", calls, mode), func(b *testing.B) {
				if mode == "epoll" && !ioSupported {
					b.Skip("no epoll engine here")
				}
				relayProc(b, mode, calls, procWindow(b, calls))
			})
		}
	}
}

// procWindow is the window of the out-of-process relay benchmarks: 64
// packets in flight for one call, 128 for many, or BIB_RELAY_WINDOW.
func procWindow(b *testing.B, calls int) int64 {
	if w := os.Getenv("BIB_RELAY_WINDOW"); w != "" {
		n, err := strconv.ParseInt(w, 10, 64)
		if err != nil || n < 1 {
			b.Fatalf("BIB_RELAY_WINDOW %q: want a positive number", w)
		}
		return n
	}
	if calls > 1 {
		return 128
	}
	return 64
}

func relayProc(b *testing.B, mode string, calls int, window int64) {
	pa, pb := newParty(b), newParty(b)
	cmd := exec.Command(os.Args[0], "-test.run", "^TestRelayChild$")
	// BIB_RELAY_PERF=1 also counts the child's syscalls and context
	// switches (its whole life, setup included) with perf stat.
	perfOut := ""
	if os.Getenv("BIB_RELAY_PERF") == "1" {
		perfOut = filepath.Join(b.TempDir(), "perf.csv")
		cmd = exec.Command("perf", append([]string{"stat", "-x,", "-o", perfOut, "-e", "raw_syscalls:sys_enter,context-switches", "--"}, cmd.Args...)...)
	}
	cmd.Env = append(os.Environ(), fmt.Sprintf("BIB_RELAY_CHILD=%s %d %s %s", mode, calls, pa.addr, pb.addr))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		stdin.Close()
		cmd.Wait()
		if perfOut != "" {
			reportPerf(b, perfOut)
		}
	}()
	sc := bufio.NewScanner(stdout)
	var dsts []netip.AddrPort
	for sc.Scan() && sc.Text() != "ready" {
		ap, err := netip.ParseAddrPort(sc.Text())
		if err != nil {
			b.Fatalf("relay child: %q", sc.Text())
		}
		dsts = append(dsts, ap)
	}
	if len(dsts) != calls {
		b.Fatalf("relay child gave %d addresses, want %d", len(dsts), calls)
	}
	cpu := func() int64 {
		fmt.Fprintln(stdin, "cpu")
		if !sc.Scan() {
			b.Fatal("relay child: no cpu reading")
		}
		n, err := strconv.ParseInt(sc.Text(), 10, 64)
		if err != nil {
			b.Fatalf("relay child: %q", sc.Text())
		}
		return n
	}
	pumpProc(b, pa, pb, dsts, window, cpu)
}

// pumpProc is pumpTo reporting relay-cpu-ns/pkt: how much cpu, the relay
// process's user+system CPU time in ns, grew during the pump, per packet.
func pumpProc(b *testing.B, pa, pb *party, dsts []netip.AddrPort, window int64, cpu func() int64) {
	c0 := cpu()
	pumpTo(b, pa.conn, pb.conn, dsts, window)
	b.ReportMetric(float64(cpu()-c0)/float64(b.N), "relay-cpu-ns/pkt")
}

func reportPerf(b *testing.B, file string) {
	out, err := os.ReadFile(file)
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Split(line, ",")
		if len(f) < 3 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		switch {
		case strings.Contains(f[2], "sys_enter"):
			b.ReportMetric(v/float64(b.N), "relay-syscalls/pkt")
		case strings.Contains(f[2], "context-switches"):
			b.ReportMetric(v/float64(b.N), "relay-ctxsw/pkt")
		}
	}
}

// TestRelayChild is BenchmarkRelayProc's relay process. BIB_RELAY_CHILD is
// "mode calls partyA partyB": it relays calls calls from partyA to partyB,
// prints each call's leg A address, then "ready", answers each "cpu" line
// on stdin with its CPU time in ns and ends when stdin closes. Without the
// variable it skips.
func TestRelayChild(t *testing.T) {
	spec := os.Getenv("BIB_RELAY_CHILD")
	if spec == "" {
		t.Skip("helper process of BenchmarkRelayProc")
	}
	var mode, as, bs string
	var calls int
	if _, err := fmt.Sscan(spec, &mode, &calls, &as, &bs); err != nil {
		t.Fatalf("BIB_RELAY_CHILD %q: %v", spec, err)
	}
	pa, pb := &party{addr: netip.MustParseAddrPort(as)}, &party{addr: netip.MustParseAddrPort(bs)}
	if mode == "minimal" {
		for range calls {
			fmt.Println(minimalRelay(t, pb.addr))
		}
	} else {
		e := testEngineIO(t, callsRange(t, calls), mode)
		for i := range calls {
			c, err := e.NewCall(fmt.Sprintf("proc-%d", i), nil)
			if err != nil {
				t.Fatal(err)
			}
			c.SetRemote(SideA, pa.desc())
			c.SetRemote(SideB, pb.desc())
			la, _ := c.Leg(SideA).Local()
			fmt.Println(la)
		}
	}
	fmt.Println("ready")
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if sc.Text() == "cpu" {
			fmt.Println(cpuNow().Nanoseconds())
		}
	}
}
