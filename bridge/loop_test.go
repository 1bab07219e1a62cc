package bridge

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestConfigIO(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"default", Config{}, ""},
		{"goroutine", Config{IO: "goroutine"}, ""},
		{"epoll", Config{IO: "epoll", IOWorkers: 3}, map[bool]string{true: "", false: "media.io"}[ioSupported]},
		{"unknown engine", Config{IO: "uring"}, `media.io: "uring"`},
		{"negative workers", Config{IO: "epoll", IOWorkers: -1}, "media.io_workers: -1"},
		{"too many workers", Config{IOWorkers: 5000}, "media.io_workers: 5000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.cfg
			c.Defaults()
			err := c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				if c.IO == "" || c.IOWorkers < 1 {
					t.Fatalf("Defaults left io=%q io_workers=%d", c.IO, c.IOWorkers)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
	var c Config
	c.Defaults()
	if c.IO != defaultIO || c.IOWorkers != runtime.GOMAXPROCS(0) {
		t.Fatalf("defaults io=%q workers=%d", c.IO, c.IOWorkers)
	}
}

// closeTap fails the test if RTP or a non-final event arrives after the
// call's Close returned.
type closeTap struct {
	closed  atomic.Bool
	inside  atomic.Int32
	packets atomic.Uint64
	late    atomic.Uint64
}

func (c *closeTap) RTP(Direction, *Packet) {
	c.inside.Add(1)
	if c.closed.Load() {
		c.late.Add(1)
	}
	// Some work, so Close often lands while a callback is running.
	for t0 := time.Now(); time.Since(t0) < 20*time.Microsecond; {
	}
	if c.closed.Load() {
		c.late.Add(1)
	}
	c.packets.Add(1)
	c.inside.Add(-1)
}

func (c *closeTap) Event(ev Event) {
	if c.closed.Load() {
		c.late.Add(1)
	}
}

// TestCloseWhileTraffic closes calls while both parties flood them: after
// Close returns, no tap callback of the call runs, and every worker and read
// goroutine ends with the engine.
func TestCloseWhileTraffic(t *testing.T) {
	forEachIO(t, func(t *testing.T, mode string) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			closeWhileTraffic(t, mode)
		}()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("close under traffic hung")
		}
	})
}

func closeWhileTraffic(t *testing.T, mode string) {
	opts := goleak.IgnoreCurrent()
	e := testEngineIO(t, freeRange(t), mode)
	const calls = 8
	var stop atomic.Bool
	var senders sync.WaitGroup
	type callT struct {
		c   *Call
		tap *closeTap
	}
	cs := make([]callT, calls)
	for i := range cs {
		c, err := e.NewCall(fmt.Sprintf("flood-%d", i), nil)
		if err != nil {
			t.Fatal(err)
		}
		a, b := newParty(t), newParty(t)
		c.SetRemote(SideA, a.desc())
		c.SetRemote(SideB, b.desc())
		tap := &closeTap{}
		if err := c.AddTap(tap); err != nil {
			t.Fatal(err)
		}
		cs[i] = callT{c, tap}
		la, _ := c.Leg(SideA).Local()
		lb, _ := c.Leg(SideB).Local()
		for _, p := range []struct {
			from *party
			to   netip.AddrPort
		}{{a, la}, {b, lb}} {
			senders.Add(1)
			go func() {
				defer senders.Done()
				pkt := rtpPacket(t, uint32(i), 1, 0, make([]byte, 160))
				for seq := uint16(0); !stop.Load(); seq++ {
					binary.BigEndian.PutUint16(pkt[2:4], seq)
					p.from.conn.WriteToUDPAddrPort(pkt, p.to)
					if seq%32 == 0 {
						runtime.Gosched()
					}
				}
			}()
		}
	}
	for _, ct := range cs {
		// Wait for traffic to flow through the relay before closing.
		deadline := time.Now().Add(10 * time.Second)
		for ct.tap.packets.Load() == 0 && time.Now().Before(deadline) {
			runtime.Gosched()
		}
		if ct.tap.packets.Load() == 0 {
			t.Errorf("%s: no packet reached the tap", ct.c.ID())
		}
		if err := ct.c.Close("test"); err != nil {
			t.Errorf("close %s: %v", ct.c.ID(), err)
		}
		if n := ct.tap.inside.Load(); n != 0 {
			t.Errorf("%s: %d tap callbacks still running after Close", ct.c.ID(), n)
		}
		ct.tap.closed.Store(true)
	}
	stop.Store(true)
	senders.Wait()
	for _, ct := range cs {
		if n := ct.tap.late.Load(); n != 0 {
			t.Errorf("%s: %d tap callbacks after Close returned", ct.c.ID(), n)
		}
	}
	e.Close()
	if err := goleak.Find(opts); err != nil {
		t.Error(err)
	}
}

// TestManyCalls relays distinct traffic through many concurrent calls and
// checks every datagram arrives intact at the right party.
func TestManyCalls(t *testing.T) {
	forEachIO(t, func(t *testing.T, mode string) {
		e := testEngineIO(t, freeRange(t), mode)
		const calls, rounds = 60, 5
		cs := make([]*Call, calls)
		as, bs := make([]*party, calls), make([]*party, calls)
		for i := range cs {
			c, err := e.NewCall(fmt.Sprintf("many-%d", i), nil)
			if err != nil {
				t.Fatal(err)
			}
			as[i], bs[i] = newParty(t), newParty(t)
			c.SetRemote(SideA, as[i].desc())
			c.SetRemote(SideB, bs[i].desc())
			cs[i] = c
		}
		for r := range rounds {
			want := make([][2][]byte, calls)
			for i, c := range cs {
				la, _ := c.Leg(SideA).Local()
				lb, _ := c.Leg(SideB).Local()
				want[i][0] = rtpPacket(t, uint32(1000+i), uint16(r), uint32(160*r), bytes.Repeat([]byte{byte(i)}, 160))
				want[i][1] = rtpPacket(t, uint32(2000+i), uint16(r), uint32(160*r), bytes.Repeat([]byte{byte(r)}, 80))
				as[i].conn.WriteToUDPAddrPort(want[i][0], la)
				bs[i].conn.WriteToUDPAddrPort(want[i][1], lb)
			}
			for i := range cs {
				if got := bs[i].recv(t, 5*time.Second); !bytes.Equal(got, want[i][0]) {
					t.Fatalf("round %d call %d a->b: got %x", r, i, got)
				}
				if got := as[i].recv(t, 5*time.Second); !bytes.Equal(got, want[i][1]) {
					t.Fatalf("round %d call %d b->a: got %x", r, i, got)
				}
			}
		}
		for i, c := range cs {
			st := c.Stats()
			if st.Legs[0].PacketsIn != rounds || st.Legs[1].PacketsIn != rounds || st.Legs[0].DroppedSource+st.Legs[1].DroppedSource != 0 {
				t.Fatalf("call %d counters %+v", i, st.Legs)
			}
			if err := c.Close("test"); err != nil {
				t.Fatalf("close: %v", err)
			}
		}
		if k := e.Counters(); k.CallsActive != 0 || k.PortsInUse != 0 || k.PacketsIn != 2*calls*rounds {
			t.Fatalf("engine counters %+v", k)
		}
	})
}

// TestSSRCChangeEvent: a new SSRC in a direction is reported once, before
// the tap sees the packet that carries it.
func TestSSRCChangeEvent(t *testing.T) {
	forEachIO(t, func(t *testing.T, mode string) {
		e := testEngineIO(t, freeRange(t), mode)
		c, a, b := setupCall(t, e)
		tap := &recTap{}
		c.AddTap(tap)
		la, _ := c.Leg(SideA).Local()
		for i, ssrc := range []uint32{7, 7, 9, 9} {
			a.conn.WriteToUDPAddrPort(rtpPacket(t, ssrc, uint16(i), 0, make([]byte, 20)), la)
			if b.recv(t, 5*time.Second) == nil {
				t.Fatalf("packet %d not relayed", i)
			}
		}
		c.Close("test")
		tap.mu.Lock()
		defer tap.mu.Unlock()
		n := 0
		for _, k := range tap.events {
			if k == EvSSRC {
				n++
			}
		}
		if n != 1 || len(tap.pkts[AtoB]) != 4 {
			t.Fatalf("events %v, %d packets", tap.events, len(tap.pkts[AtoB]))
		}
	})
}

// TestRelayIPv6 runs a call on ::1.
func TestRelayIPv6(t *testing.T) {
	probe, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	probe.Close()
	forEachIO(t, func(t *testing.T, mode string) {
		e, err := NewEngine(Config{IP: "::1", RTPPorts: freeRange(t), IO: mode}, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		c, err := e.NewCall("v6", nil)
		if err != nil {
			t.Fatal(err)
		}
		var ps [2]*party
		for i := range ps {
			conn, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close() })
			ps[i] = &party{conn: conn, addr: conn.LocalAddr().(*net.UDPAddr).AddrPort()}
			c.SetRemote(Side(i), ps[i].desc())
		}
		for s := range ps {
			l, _ := c.Leg(Side(s)).Local()
			pkt := rtpPacket(t, uint32(s), 1, 2, []byte("six"))
			ps[s].conn.WriteToUDPAddrPort(pkt, l)
			if got := ps[1-s].recv(t, 5*time.Second); !bytes.Equal(got, pkt) {
				t.Fatalf("side %d: got %x", s, got)
			}
		}
		// Same address, other port: dropped by the source filter.
		stranger, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
		if err != nil {
			t.Fatal(err)
		}
		defer stranger.Close()
		l, _ := c.Leg(SideA).Local()
		stranger.WriteToUDPAddrPort(rtpPacket(t, 1, 1, 1, nil), l)
		deadline := time.Now().Add(5 * time.Second)
		for c.Stats().Legs[0].DroppedSource == 0 && time.Now().Before(deadline) {
			runtime.Gosched()
		}
		if st := c.Stats().Legs[0]; st.DroppedSource != 1 || st.PacketsIn != 1 {
			t.Fatalf("leg a counters %+v", st)
		}
	})
}

// TestEpollRelayAllocs: the epoll engine relays without allocating.
func TestEpollRelayAllocs(t *testing.T) {
	if !ioSupported {
		t.Skip("no epoll engine here")
	}
	e := testEngineIO(t, freeRange(t), "epoll")
	c, a, b := setupCall(t, e)
	c.AddTap(nopTap{})
	la, _ := c.Leg(SideA).Local()
	pkt := rtpPacket(t, 5, 1, 0, make([]byte, 160))
	buf := make([]byte, 2000)
	relay := func(n int) {
		for i := range n {
			binary.BigEndian.PutUint16(pkt[2:4], uint16(i))
			a.conn.WriteToUDPAddrPort(pkt, la)
			b.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, _, err := b.conn.ReadFromUDPAddrPort(buf); err != nil {
				t.Fatal(err)
			}
		}
	}
	relay(100) // warm up: header slices, sockaddr cache
	const n = 2000
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	relay(n)
	runtime.ReadMemStats(&m1)
	if per := float64(m1.Mallocs-m0.Mallocs) / n; per > 0.05 {
		t.Fatalf("%.2f allocations per relayed packet", per)
	}
}

// TestRelayAddressForms: both engines treat unusual peer addresses alike.
// A peer signalled as IPv4-mapped IPv6 never matches an IPv4 source (its
// packets are dropped) but can be sent to; an IPv6 peer cannot be reached
// from an IPv4 socket (a send error); port 0 means nowhere to send.
func TestRelayAddressForms(t *testing.T) {
	forEachIO(t, func(t *testing.T, mode string) {
		tests := []struct {
			name  string
			descB func(b *party) MediaDesc // what B signals
			want  func(a, b LegStats) bool
		}{
			{"mapped peer", func(b *party) MediaDesc {
				d := b.desc()
				d.RTP = netip.AddrPortFrom(netip.AddrFrom16(b.addr.Addr().As16()), b.addr.Port())
				return d
			}, func(a, b LegStats) bool {
				return a.PacketsIn == 1 && b.PacketsOut == 1 && b.DroppedSource == 1 && b.PacketsIn == 0
			}},
			{"ipv6 peer", func(b *party) MediaDesc {
				d := b.desc()
				d.RTP = netip.AddrPortFrom(netip.IPv6Loopback(), b.addr.Port())
				return d
			}, func(a, b LegStats) bool {
				return a.PacketsIn == 1 && a.SendErrors == 1 && b.PacketsOut == 0
			}},
			{"port zero", func(b *party) MediaDesc {
				d := b.desc()
				d.RTP = netip.AddrPortFrom(b.addr.Addr(), 0)
				return d
			}, func(a, b LegStats) bool {
				return a.PacketsIn == 1 && a.NoDestination == 1 && b.PacketsOut == 0
			}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				e := testEngineIO(t, freeRange(t), mode)
				c, err := e.NewCall("forms", nil)
				if err != nil {
					t.Fatal(err)
				}
				a, b := newParty(t), newParty(t)
				c.SetRemote(SideA, a.desc())
				c.SetRemote(SideB, tt.descB(b))
				la, _ := c.Leg(SideA).Local()
				lb, _ := c.Leg(SideB).Local()
				a.conn.WriteToUDPAddrPort(rtpPacket(t, 1, 1, 1, []byte("to b")), la)
				b.conn.WriteToUDPAddrPort(rtpPacket(t, 2, 1, 1, []byte("to a")), lb)
				// Wait until both datagrams were handled, then read the final
				// counters after Close.
				deadline := time.Now().Add(5 * time.Second)
				for time.Now().Before(deadline) {
					st := c.Stats()
					if st.Legs[0].PacketsIn+st.Legs[1].PacketsIn+st.Legs[1].DroppedSource == 2 {
						break
					}
					runtime.Gosched()
				}
				c.Close("test")
				st := c.Stats()
				if !tt.want(st.Legs[0], st.Legs[1]) {
					t.Fatalf("counters a %+v\nb %+v", st.Legs[0], st.Legs[1])
				}
			})
		}
	})
}
