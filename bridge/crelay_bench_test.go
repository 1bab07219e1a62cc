//go:build linux

package bridge

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkRelayC measures an established C media relay, rtpengine (Debian
// package rtpengine-daemon), the way BenchmarkRelayProc measures bib: the
// relay runs in its own process, the pump of relay_bench_test.go runs in
// this one, and relay-cpu-ns/pkt is the relay process's user+system CPU per
// relayed packet while the pump ran. rtpengine forwards in userspace only
// (--table=-1: no kernel module) with --num-threads equal to GOMAXPROCS,
// the io_workers default of bib's epoll engine in BenchmarkRelayProc.
// It skips when rtpengine is not installed; BIB_RTPENGINE names another
// binary.
func BenchmarkRelayC(b *testing.B) {
	for _, calls := range []int{1, 200} {
		name := "rtpengine/1call"
		if calls > 1 {
			name = fmt.Sprintf("rtpengine/%dcalls", calls)
		}
		b.Run(name, func(b *testing.B) {
			bin := rtpengineBinary()
			if bin == "" {
				b.Skip("rtpengine not installed (apt-get install rtpengine-daemon, or set BIB_RTPENGINE)")
			}
			r := startRtpengine(b, bin, callsRange(b, calls), runtime.GOMAXPROCS(0))
			pa, pb := newParty(b), newParty(b)
			dsts, srcs := make([]netip.AddrPort, calls), make([]netip.AddrPort, calls)
			for i := range dsts {
				dsts[i], srcs[i] = r.call(b, fmt.Sprintf("bench-%d", i), pa.addr, pb.addr)
			}
			warmUp(b, r, pa, pb, dsts, srcs)
			// A socket rtpengine stops reading would cost the pump a
			// 200 ms timeout per window: end the run at once instead.
			r.log.watch(func() { pb.conn.Close() })
			pumpProc(b, pa, pb, dsts, procWindow(b, calls), r.cpu)
			if r.log.hasStalled() {
				b.Skipf("rtpengine stopped reading a socket (%q: more than 50 packets queued on it"+
					" several times), so its relay-cpu-ns/pkt counts dropped packets; a smaller"+
					" BIB_RELAY_WINDOW may do", stallMsg)
			}
		})
	}
}

func rtpengineBinary() string {
	if p := os.Getenv("BIB_RTPENGINE"); p != "" {
		return p
	}
	for _, p := range []string{"/usr/bin/rtpengine", "/usr/sbin/rtpengine"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("rtpengine"); err == nil {
		return p
	}
	return ""
}

// rtpengine is a running rtpengine process and its ng control socket.
type rtpengine struct {
	cmd   *exec.Cmd
	ng    *net.UDPConn
	log   *rtpengineLog
	clock int32 // the process's CPU-time clock
	seq   int   // ng cookie
}

// rtpengineLog is rtpengine's stderr, kept to explain a failure. It
// watches for the message with which rtpengine gives up on a socket.
type rtpengineLog struct {
	mu      sync.Mutex
	b       bytes.Buffer
	tail    []byte
	stalled bool
	onStall func() // called once, when rtpengine stops reading a socket
}

// stallMsg is what rtpengine logs when a socket had more than 50 packets
// queued several times (its MAX_RECV_ITERS and MAX_RECV_LOOP_STRIKES):
// from then on it reads that socket no more.
const stallMsg = "UDP receive queue exceeded"

func (l *rtpengineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() < 64<<10 {
		l.b.Write(p)
	}
	l.tail = append(l.tail, p...)
	if !l.stalled && bytes.Contains(l.tail, []byte(stallMsg)) {
		l.stalled = true
		if l.onStall != nil {
			l.onStall()
		}
	}
	l.tail = l.tail[max(0, len(l.tail)-len(stallMsg)):]
	return len(p), nil
}

func (l *rtpengineLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// watch calls f when rtpengine stops reading a socket (at once if it did).
func (l *rtpengineLog) watch(f func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.onStall = f
	if l.stalled {
		f()
	}
}

func (l *rtpengineLog) hasStalled() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stalled
}

// startRtpengine runs rtpengine in the foreground with media on 127.0.0.1
// in ports, no kernel forwarding and threads worker threads, and waits
// until it answers an ng ping. Cleanup stops it.
func startRtpengine(b *testing.B, bin, ports string, threads int) *rtpengine {
	b.Helper()
	pr, err := ParsePortRange(ports)
	if err != nil {
		b.Fatal(err)
	}
	// rtpengine needs a fixed control port: take a free one from the kernel
	// and hand it over (another process grabbing it meanwhile only fails
	// this run).
	probe, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	ngAddr := probe.LocalAddr().(*net.UDPAddr).AddrPort()
	probe.Close()
	ng, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(ngAddr))
	if err != nil {
		b.Fatal(err)
	}
	r := &rtpengine{ng: ng, log: &rtpengineLog{}}
	r.cmd = exec.Command(bin,
		"--config-file=none", // not /etc/rtpengine/rtpengine.conf
		"--foreground", "--log-stderr", "--log-level=4",
		"--table=-1", // userspace forwarding only
		"--interface=127.0.0.1",
		"--listen-ng="+ngAddr.String(),
		"--port-min="+strconv.Itoa(int(pr.Min)), "--port-max="+strconv.Itoa(int(pr.Max)),
		"--num-threads="+strconv.Itoa(threads),
		"--timeout=600", "--silent-timeout=600", "--final-timeout=600",
	)
	r.cmd.Stdout, r.cmd.Stderr = r.log, r.log
	if err := r.cmd.Start(); err != nil {
		b.Fatalf("start rtpengine: %v", err)
	}
	exited := make(chan struct{})
	go func() { r.cmd.Wait(); close(exited) }()
	b.Cleanup(func() {
		r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			r.cmd.Process.Kill()
			<-exited
		}
		ng.Close()
	})
	// The CPU-time clock of another process (clock_getcpuclockid(3)):
	// the sum of its threads' run time in ns, the quantity getrusage gives
	// the Go relay child and /proc/PID/stat's utime+stime in clock ticks.
	// (They agree: 1.2908 s against 129 ticks after a 200-call run.)
	r.clock = int32(^r.cmd.Process.Pid<<3 | 2)
	if r.cpu() < 0 {
		b.Fatalf("no CPU clock for rtpengine's pid %d", r.cmd.Process.Pid)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-exited:
			b.Fatalf("rtpengine exited: %v\n%s", r.cmd.ProcessState, r.log)
		default:
		}
		resp, err := r.command(map[string]string{"command": "ping"}, 100*time.Millisecond)
		if err == nil {
			if resp["result"] != "pong" {
				b.Fatalf("rtpengine ping: %v", resp)
			}
			return r
		}
		if time.Now().After(deadline) {
			b.Fatalf("rtpengine does not answer ng ping on %s: %v\n%s", ngAddr, err, r.log)
		}
	}
}

// command sends an ng command (a cookie, a space, a bencoded dictionary)
// and returns the answer's dictionary.
func (r *rtpengine) command(req map[string]string, timeout time.Duration) (map[string]any, error) {
	r.seq++
	cookie := strconv.Itoa(r.seq)
	msg := append([]byte(cookie+" "), bencode(req)...)
	if _, err := r.ng.Write(msg); err != nil {
		return nil, err
	}
	buf := make([]byte, 65536)
	r.ng.SetReadDeadline(time.Now().Add(timeout))
	for {
		n, err := r.ng.Read(buf)
		if err != nil {
			return nil, err
		}
		c, body, ok := bytes.Cut(buf[:n], []byte(" "))
		if !ok || string(c) != cookie {
			continue // an answer to an earlier, timed-out command
		}
		v, rest, err := bdecode(body)
		if err != nil || len(rest) != 0 {
			return nil, fmt.Errorf("ng answer %q: bad bencode (%v)", body, err)
		}
		d, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("ng answer %q: not a dictionary", body)
		}
		return d, nil
	}
}

// call sets up call id between a and b with an offer from a and an answer
// from b, and returns where a sends to reach b and where b's packets come
// from.
func (r *rtpengine) call(b *testing.B, id string, a, bAddr netip.AddrPort) (dst, src netip.AddrPort) {
	b.Helper()
	do := func(req map[string]string) netip.AddrPort {
		resp, err := r.command(req, 5*time.Second)
		if err != nil {
			b.Fatalf("rtpengine %s: %v\n%s", req["command"], err, r.log)
		}
		if resp["result"] != "ok" {
			b.Fatalf("rtpengine %s: %v", req["command"], resp)
		}
		sdp, _ := resp["sdp"].(string)
		ap, err := sdpAudio(sdp)
		if err != nil {
			b.Fatalf("rtpengine %s answer: %v", req["command"], err)
		}
		return ap
	}
	src = do(map[string]string{
		"command": "offer", "call-id": id, "from-tag": id + "-a",
		"sdp": benchSDP(a), "ICE": "remove",
	})
	dst = do(map[string]string{
		"command": "answer", "call-id": id, "from-tag": id + "-a", "to-tag": id + "-b",
		"sdp": benchSDP(bAddr), "ICE": "remove",
	})
	return dst, src
}

func benchSDP(ap netip.AddrPort) string {
	return fmt.Sprintf("v=0\r\no=- 1 1 IN IP4 %[1]s\r\ns=-\r\nc=IN IP4 %[1]s\r\nt=0 0\r\n"+
		"m=audio %[2]d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n", ap.Addr(), ap.Port())
}

// sdpAudio returns the address of an SDP's first audio stream.
func sdpAudio(sdp string) (netip.AddrPort, error) {
	var addr netip.Addr
	for _, line := range strings.Split(sdp, "\n") {
		line = strings.TrimSpace(line)
		if c, ok := strings.CutPrefix(line, "c=IN IP4 "); ok {
			a, err := netip.ParseAddr(c)
			if err != nil {
				return netip.AddrPort{}, fmt.Errorf("SDP %q: %v", line, err)
			}
			addr = a
		}
		if m, ok := strings.CutPrefix(line, "m=audio "); ok {
			port, _, _ := strings.Cut(m, " ")
			p, err := strconv.ParseUint(port, 10, 16)
			if err != nil || !addr.IsValid() {
				return netip.AddrPort{}, fmt.Errorf("SDP %q: no audio address", sdp)
			}
			return netip.AddrPortFrom(addr, uint16(p)), nil
		}
	}
	return netip.AddrPort{}, fmt.Errorf("SDP %q: no audio stream", sdp)
}

// cpu is the process's user+system CPU time in ns.
func (r *rtpengine) cpu() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(r.clock, &ts); err != nil {
		return -1
	}
	return ts.Nano()
}

// warmUp sends through every call (to dsts[i]) until a packet of it
// arrived (from srcs[i]), so that whatever rtpengine does with a stream's
// first packets (endpoint learning, stream setup) is done before the
// measurement, then drains pb. Every call must forward, or the benchmark
// fails.
func warmUp(b *testing.B, r *rtpengine, pa, pb *party, dsts, srcs []netip.AddrPort) {
	b.Helper()
	pkt := rtpPacket(b, 0x1234, 1, 0, make([]byte, 160))
	buf := make([]byte, 2048)
	for i, dst := range dsts {
		got := false
		for try := 0; try < 20 && !got; try++ {
			if _, err := pa.conn.WriteToUDPAddrPort(pkt, dst); err != nil {
				b.Fatal(err)
			}
			pb.conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			for {
				_, from, err := pb.conn.ReadFromUDPAddrPort(buf)
				if err != nil {
					break
				}
				if from == srcs[i] {
					got = true
					break
				}
			}
		}
		if !got {
			b.Fatalf("rtpengine does not forward call %d (to %s)\n%s", i, dst, r.log)
		}
	}
	for {
		pb.conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if _, _, err := pb.conn.ReadFromUDPAddrPort(buf); err != nil {
			return
		}
	}
}

// bencode encodes a dictionary of strings in bencoding, keys sorted.
func bencode(d map[string]string) []byte {
	str := func(buf []byte, s string) []byte {
		buf = strconv.AppendInt(buf, int64(len(s)), 10)
		buf = append(buf, ':')
		return append(buf, s...)
	}
	buf := []byte{'d'}
	for _, k := range slices.Sorted(maps.Keys(d)) {
		buf = str(str(buf, k), d[k])
	}
	return append(buf, 'e')
}

var errBencode = errors.New("bad bencode")

// bdecode decodes one bencoded value from p and returns the rest.
func bdecode(p []byte) (any, []byte, error) {
	if len(p) == 0 {
		return nil, nil, errBencode
	}
	switch c := p[0]; {
	case c == 'i':
		end := bytes.IndexByte(p, 'e')
		if end < 0 {
			return nil, nil, errBencode
		}
		n, err := strconv.ParseInt(string(p[1:end]), 10, 64)
		if err != nil {
			return nil, nil, errBencode
		}
		return int(n), p[end+1:], nil
	case c == 'l' || c == 'd':
		p = p[1:]
		var list []any
		for len(p) > 0 && p[0] != 'e' {
			v, rest, err := bdecode(p)
			if err != nil {
				return nil, nil, err
			}
			list, p = append(list, v), rest
		}
		if len(p) == 0 {
			return nil, nil, errBencode
		}
		if c == 'l' {
			return list, p[1:], nil
		}
		if len(list)%2 != 0 {
			return nil, nil, errBencode
		}
		d := make(map[string]any, len(list)/2)
		for i := 0; i < len(list); i += 2 {
			k, ok := list[i].(string)
			if !ok {
				return nil, nil, errBencode
			}
			d[k] = list[i+1]
		}
		return d, p[1:], nil
	case c >= '0' && c <= '9':
		colon := bytes.IndexByte(p, ':')
		if colon < 0 {
			return nil, nil, errBencode
		}
		n, err := strconv.Atoi(string(p[:colon]))
		if err != nil || n < 0 || n > len(p)-colon-1 {
			return nil, nil, errBencode
		}
		return string(p[colon+1 : colon+1+n]), p[colon+1+n:], nil
	}
	return nil, nil, errBencode
}
