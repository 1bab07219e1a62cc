package bridge

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
)

func testEngine(t testing.TB, ports string) *Engine {
	t.Helper()
	return testEngineIO(t, ports, "")
}

// testEngineIO is testEngine with a given media.io ("" for the default).
func testEngineIO(t testing.TB, ports, mode string) *Engine {
	t.Helper()
	e, err := NewEngine(Config{IP: "127.0.0.1", RTPPorts: ports, IO: mode}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// freeRange picks a port range for a test's engine. Ranges of tests
// running in parallel processes may overlap; the pool skips ports that are
// taken, so that only costs a few retries.
func freeRange(t testing.TB) string {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	p := c.LocalAddr().(*net.UDPAddr).Port
	c.Close()
	lo := 20000 + (p*7)%30000
	lo -= lo % 2
	return fmt.Sprintf("%d-%d", lo, lo+1999)
}

// ioModes are the media.io engines this platform supports.
func ioModes() []string {
	if ioSupported {
		return []string{"goroutine", "epoll"}
	}
	return []string{"goroutine"}
}

// forEachIO runs a relay test against every I/O engine.
func forEachIO(t *testing.T, f func(t *testing.T, mode string)) {
	for _, m := range ioModes() {
		t.Run(m, func(t *testing.T) { f(t, m) })
	}
}

type party struct {
	conn *net.UDPConn
	addr netip.AddrPort
}

func newParty(t testing.TB) *party {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &party{conn: c, addr: c.LocalAddr().(*net.UDPAddr).AddrPort()}
}

func (p *party) desc() MediaDesc {
	return MediaDesc{RTP: p.addr, Codecs: []Codec{{PT: 0, Name: "PCMU", Rate: 8000, Channels: 1}}}
}

func (p *party) recv(t testing.TB, timeout time.Duration) []byte {
	t.Helper()
	buf := make([]byte, 2000)
	p.conn.SetReadDeadline(time.Now().Add(timeout))
	n, _, err := p.conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

func rtpPacket(t testing.TB, ssrc uint32, seq uint16, ts uint32, payload []byte) []byte {
	t.Helper()
	b, err := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: seq, Timestamp: ts, SSRC: ssrc}, Payload: payload}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// setupCall creates a call with parties a and b signalled on their legs.
func setupCall(t testing.TB, e *Engine) (*Call, *party, *party) {
	t.Helper()
	c, err := e.NewCall("c1", nil)
	if err != nil {
		t.Fatal(err)
	}
	a, b := newParty(t), newParty(t)
	c.SetRemote(SideA, a.desc())
	c.SetRemote(SideB, b.desc())
	c.Negotiated()
	c.Answer()
	return c, a, b
}

type recTap struct {
	mu     sync.Mutex
	pkts   [2][][]byte
	events []EventKind
}

func (r *recTap) RTP(dir Direction, p *Packet) {
	r.mu.Lock()
	r.pkts[dir] = append(r.pkts[dir], bytes.Clone(p.Raw))
	r.mu.Unlock()
}

func (r *recTap) Event(ev Event) {
	r.mu.Lock()
	r.events = append(r.events, ev.Kind)
	r.mu.Unlock()
}

func TestRelayByteIdenticalBothWays(t *testing.T) { forEachIO(t, testRelayByteIdenticalBothWays) }

func testRelayByteIdenticalBothWays(t *testing.T, mode string) {
	e := testEngineIO(t, freeRange(t), mode)
	c, a, b := setupCall(t, e)
	tap := &recTap{}
	if err := c.AddTap(tap); err != nil {
		t.Fatal(err)
	}
	la, _ := c.Leg(SideA).Local()
	lb, _ := c.Leg(SideB).Local()
	var sentA, sentB [][]byte
	for i := range 50 {
		pa := rtpPacket(t, 0xA, uint16(100+i), uint32(160*i), bytes.Repeat([]byte{byte(i)}, 160))
		pb := rtpPacket(t, 0xB, uint16(900+i), uint32(8000+160*i), bytes.Repeat([]byte{byte(255 - i)}, 160))
		a.conn.WriteToUDPAddrPort(pa, la)
		b.conn.WriteToUDPAddrPort(pb, lb)
		sentA, sentB = append(sentA, pa), append(sentB, pb)
		gotB := b.recv(t, 2*time.Second)
		gotA := a.recv(t, 2*time.Second)
		if !bytes.Equal(gotB, pa) {
			t.Fatalf("packet %d a->b: got %x want %x", i, gotB, pa)
		}
		if !bytes.Equal(gotA, pb) {
			t.Fatalf("packet %d b->a: got %x want %x", i, gotA, pb)
		}
	}
	// Counters are final once Close returns: a packet can reach its party
	// before the relay has counted its send.
	c.Close("test")
	st := c.Stats()
	if st.Legs[0].PacketsIn != 50 || st.Legs[1].PacketsOut != 50 || st.Legs[1].PacketsIn != 50 || st.Legs[0].PacketsOut != 50 {
		t.Fatalf("counters: %+v", st.Legs)
	}
	if !st.Legs[0].Latched || !st.Legs[1].Latched {
		t.Fatal("legs not latched")
	}
	tap.mu.Lock()
	defer tap.mu.Unlock()
	for i := range sentA {
		if !bytes.Equal(tap.pkts[AtoB][i], sentA[i]) || !bytes.Equal(tap.pkts[BtoA][i], sentB[i]) {
			t.Fatalf("tap packet %d differs", i)
		}
	}
	if tap.events[0] != EvMedia || tap.events[1] != EvAnswer || tap.events[len(tap.events)-1] != EvEnd {
		t.Fatalf("tap events %v", tap.events)
	}
}

func TestRelayDropsStrangerAndBadPackets(t *testing.T) {
	forEachIO(t, testRelayDropsStrangerAndBadPackets)
}

func testRelayDropsStrangerAndBadPackets(t *testing.T, mode string) {
	e := testEngineIO(t, freeRange(t), mode)
	c, a, b := setupCall(t, e)
	la, _ := c.Leg(SideA).Local()
	stranger := newParty(t)
	good := rtpPacket(t, 1, 1, 160, make([]byte, 160))
	stranger.conn.WriteToUDPAddrPort(good, la)                       // wrong source
	a.conn.WriteToUDPAddrPort([]byte{0x80, 0, 1}, la)                // short
	a.conn.WriteToUDPAddrPort(append([]byte{0x40}, good[1:]...), la) // version 1
	a.conn.WriteToUDPAddrPort(make([]byte, 1600), la)                // oversize
	bad := bytes.Clone(good)
	bad[0] |= 0x0f // claims 15 CSRCs: header longer than the packet
	a.conn.WriteToUDPAddrPort(bad[:20], la)
	a.conn.WriteToUDPAddrPort(good, la) // the one that must arrive
	got := b.recv(t, 2*time.Second)
	if !bytes.Equal(got, good) {
		t.Fatalf("good packet not relayed intact: %x", got)
	}
	if extra := b.recv(t, 100*time.Millisecond); extra != nil {
		t.Fatalf("bad packet relayed: %x", extra)
	}
	st := c.Stats().Legs[0]
	if st.DroppedSource != 1 || st.Malformed != 3 || st.Oversize != 1 || st.PacketsIn != 1 {
		t.Fatalf("counters %+v", st)
	}
}

func TestRelayRTCP(t *testing.T) { forEachIO(t, testRelayRTCP) }

func testRelayRTCP(t *testing.T, mode string) {
	e := testEngineIO(t, freeRange(t), mode)
	c, err := e.NewCall("rtcp", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close("test")
	a, b := newParty(t), newParty(t)
	aRTCP := newParty(t)
	da := a.desc()
	da.RTCP = aRTCP.addr
	db := b.desc()
	db.RTCPMux = true // b multiplexes: its RTCP goes to its RTP port
	c.SetRemote(SideA, da)
	c.SetRemote(SideB, db)
	_, laRTCP := c.Leg(SideA).Local()
	lb, _ := c.Leg(SideB).Local()
	sr := []byte{0x80, 200, 0, 6, 0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24}
	aRTCP.conn.WriteToUDPAddrPort(sr, laRTCP)
	if got := b.recv(t, 2*time.Second); !bytes.Equal(got, sr) {
		t.Fatalf("rtcp a->b (mux): %x", got)
	}
	// b sends RTCP on its RTP port (mux); it must reach a's RTCP port.
	b.conn.WriteToUDPAddrPort(sr, lb)
	if got := aRTCP.recv(t, 2*time.Second); !bytes.Equal(got, sr) {
		t.Fatalf("rtcp b->a: %x", got)
	}
}

func TestHoldResumeEvents(t *testing.T) { forEachIO(t, testHoldResumeEvents) }

func testHoldResumeEvents(t *testing.T, mode string) {
	e := testEngineIO(t, freeRange(t), mode)
	c, a, b := setupCall(t, e)
	tap := &recTap{}
	c.AddTap(tap)
	da := a.desc()
	da.Mode = SendOnly
	db := b.desc()
	db.Mode = RecvOnly
	c.SetRemote(SideA, da)
	c.SetRemote(SideB, db)
	c.Negotiated()
	if !c.Held() {
		t.Fatal("not held")
	}
	c.SetRemote(SideA, a.desc())
	c.SetRemote(SideB, b.desc())
	c.Negotiated()
	if c.Held() {
		t.Fatal("still held")
	}
	tap.mu.Lock()
	defer tap.mu.Unlock()
	want := []EventKind{EvMedia, EvAnswer, EvMedia, EvHold, EvMedia, EvResume}
	if len(tap.events) != len(want) {
		t.Fatalf("events %v want %v", tap.events, want)
	}
	for i := range want {
		if tap.events[i] != want[i] {
			t.Fatalf("events %v want %v", tap.events, want)
		}
	}
}

func TestPortExhaustion(t *testing.T) { forEachIO(t, testPortExhaustion) }

func testPortExhaustion(t *testing.T, mode string) {
	r := freeRange(t)
	pr, _ := ParsePortRange(r)
	e := testEngineIO(t, fmt.Sprintf("%d-%d", pr.Min, pr.Min+3), mode) // two pairs: one call
	c, err := e.NewCall("one", nil)
	if err != nil {
		t.Skipf("ports in use on this machine: %v", err)
	}
	if _, err := e.NewCall("two", nil); err == nil || !errorsIs(err, ErrPortsExhausted) {
		t.Fatalf("want ErrPortsExhausted, got %v", err)
	}
	c.Close("test")
	c2, err := e.NewCall("three", nil)
	if err != nil {
		t.Fatalf("ports not released: %v", err)
	}
	c2.Close("test")
}

func TestMediaTimeout(t *testing.T) { forEachIO(t, testMediaTimeout) }

func testMediaTimeout(t *testing.T, mode string) {
	e := testEngineIO(t, freeRange(t), mode)
	e.cfg.MediaTimeout = Duration(time.Minute)
	var timedOut []string
	e.OnMediaTimeout = func(c *Call) { timedOut = append(timedOut, c.ID()) }
	c, a, _ := setupCall(t, e)
	t0 := time.Now()
	e.checkIdle(t0.Add(30 * time.Second))
	la, _ := c.Leg(SideA).Local()
	a.conn.WriteToUDPAddrPort(rtpPacket(t, 1, 1, 1, make([]byte, 10)), la)
	for c.packets() == 0 {
		time.Sleep(time.Millisecond)
	}
	e.checkIdle(t0.Add(50 * time.Second)) // activity seen: resets
	e.checkIdle(t0.Add(100 * time.Second))
	if len(timedOut) != 0 {
		t.Fatalf("timed out early: %v", timedOut)
	}
	e.checkIdle(t0.Add(111 * time.Second))
	if len(timedOut) != 1 || e.T.MediaTimeouts.Load() != 1 {
		t.Fatalf("timeout not reported: %v", timedOut)
	}
}

func TestEngineRunStops(t *testing.T) {
	e := testEngine(t, freeRange(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Run(ctx); close(done) }()
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop")
	}
}

func FuzzParseRTP(f *testing.F) {
	f.Add(rtpPacket(f, 1, 2, 3, []byte("payload")))
	f.Add([]byte{0x80, 0, 0, 1})
	f.Add([]byte{0xb0, 0x80, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0xbe, 0xde, 0, 1, 0x10, 0xff, 0, 0, 4})
	pkt := &Packet{}
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := parseRTP(b, pkt); err != nil {
			return
		}
		if len(pkt.Payload) > len(b)-12 {
			t.Fatalf("payload %d longer than packet %d allows", len(pkt.Payload), len(b))
		}
		if pkt.Header.Version != 2 {
			t.Fatal("accepted version", pkt.Header.Version)
		}
	})
}
