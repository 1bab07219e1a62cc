package bridge

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/rtp"
)

// forkPair is a fork stream whose route points at a test socket.
type forkPair struct {
	f    *ForkStream
	recv *net.UDPConn
}

func newForkPair(t testing.TB, mode ForkSend, pts map[uint8]ForkPT) *forkPair {
	t.Helper()
	send, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	recv, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	f, err := newForkStream(send, func() { send.Close() }, AtoB, WithForkSend(mode), WithForkSSRC(0xfeedf00d, 1000, 50000))
	if err != nil {
		t.Fatal(err)
	}
	if pts == nil {
		pts = map[uint8]ForkPT{0: {Out: 0, Rate: 8000}, 96: {Out: 101, Rate: 8000, Event: true}}
	}
	if err := f.SetRoute(ForkRoute{Addr: recv.LocalAddr().(*net.UDPAddr).AddrPort(), PT: pts}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close(); recv.Close() })
	return &forkPair{f: f, recv: recv}
}

// feed hands one source packet to the fork as the relay would.
func (p *forkPair) feed(t testing.TB, ssrc uint32, seq uint16, ts uint32, pt uint8, arrival time.Duration, payload []byte) {
	t.Helper()
	raw := rtpPacket(t, ssrc, seq, ts, payload)
	raw[1] = pt
	var pkt Packet
	if err := parseRTP(raw, &pkt); err != nil {
		t.Fatal(err)
	}
	pkt.Arrival = int64(arrival)
	p.f.RTP(AtoB, &pkt)
}

func (p *forkPair) read(t *testing.T, n int) []rtp.Packet {
	t.Helper()
	var out []rtp.Packet
	buf := make([]byte, 2048)
	for len(out) < n {
		p.recv.SetReadDeadline(time.Now().Add(2 * time.Second))
		k, _, err := p.recv.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("read %d of %d packets: %v", len(out), n, err)
		}
		var r rtp.Packet
		if err := r.Unmarshal(bytes.Clone(buf[:k])); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

const ms = time.Millisecond

func TestForkContinuity(t *testing.T) {
	type src struct {
		ssrc    uint32
		seq     uint16
		ts      uint32
		pt      uint8
		arrival time.Duration
	}
	type want struct {
		seq    uint16
		ts     uint32
		pt     uint8
		marker bool
	}
	for _, tc := range []struct {
		name    string
		in      []src
		want    []want
		rebases uint64
	}{
		{
			name: "steady stream keeps spacing",
			in:   []src{{1, 10, 800, 0, 0}, {1, 11, 960, 0, 20 * ms}, {1, 12, 1120, 0, 40 * ms}},
			want: []want{{1000, 50000, 0, true}, {1001, 50160, 0, false}, {1002, 50320, 0, false}},
		},
		{
			name: "loss and reordering are kept",
			in:   []src{{1, 10, 800, 0, 0}, {1, 13, 1280, 0, 60 * ms}, {1, 12, 1120, 0, 61 * ms}},
			want: []want{{1000, 50000, 0, true}, {1003, 50480, 0, false}, {1002, 50320, 0, false}},
		},
		{
			name:    "source ssrc change re-anchors on the arrival gap",
			in:      []src{{1, 10, 800, 0, 0}, {1, 11, 960, 0, 20 * ms}, {2, 40000, 7, 0, 120 * ms}, {2, 40001, 167, 0, 140 * ms}},
			want:    []want{{1000, 50000, 0, true}, {1001, 50160, 0, false}, {1002, 50960, 0, true}, {1003, 51120, 0, false}},
			rebases: 1,
		},
		{
			name:    "timestamp jump on the same ssrc re-anchors",
			in:      []src{{1, 10, 800, 0, 0}, {1, 11, 900000, 0, 20 * ms}, {1, 12, 900160, 0, 40 * ms}},
			want:    []want{{1000, 50000, 0, true}, {1001, 50160, 0, true}, {1002, 50320, 0, false}},
			rebases: 1,
		},
		{
			name: "hold gap with consistent timestamps is kept",
			in:   []src{{1, 10, 800, 0, 0}, {1, 11, 960, 0, 20 * ms}, {1, 12, 960 + 8000*5, 0, 5020 * ms}},
			want: []want{{1000, 50000, 0, false}, {1001, 50160, 0, false}, {1002, 50160 + 40000, 0, false}},
		},
		{
			name:    "sequence jump on the same ssrc re-anchors",
			in:      []src{{1, 10, 800, 0, 0}, {1, 30000, 960, 0, 20 * ms}},
			want:    []want{{1000, 50000, 0, true}, {1001, 50160, 0, true}},
			rebases: 1,
		},
		{
			name: "telephone-event keeps its timestamp and gets the recorder's payload type",
			in:   []src{{1, 10, 800, 0, 0}, {1, 11, 960, 96, 20 * ms}, {1, 12, 960, 96, 40 * ms}, {1, 13, 960, 96, 1500 * ms}, {1, 14, 960 + 8000*3/2 + 160, 0, 1520 * ms}},
			want: []want{{1000, 50000, 0, true}, {1001, 50160, 101, false}, {1002, 50160, 101, false}, {1003, 50160, 101, false}, {1004, 50160 + 12160, 0, false}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newForkPair(t, ForkSendNonBlocking, nil)
			payload := []byte("0123456789abcdef0123456789abcdef")
			for i, s := range tc.in {
				pl := append([]byte{byte(i)}, payload...)
				p.feed(t, s.ssrc, s.seq, s.ts, s.pt, s.arrival, pl)
			}
			got := p.read(t, len(tc.want))
			for i, w := range tc.want {
				g := got[i]
				if g.SSRC != 0xfeedf00d {
					t.Errorf("packet %d: ssrc %x, want the fork's own", i, g.SSRC)
				}
				if g.SequenceNumber != w.seq || g.Timestamp != w.ts || g.PayloadType != w.pt {
					t.Errorf("packet %d: seq %d ts %d pt %d, want seq %d ts %d pt %d", i, g.SequenceNumber, g.Timestamp, g.PayloadType, w.seq, w.ts, w.pt)
				}
				if i > 0 && g.Marker != w.marker && tc.name != "hold gap with consistent timestamps is kept" {
					t.Errorf("packet %d: marker %v, want %v", i, g.Marker, w.marker)
				}
				if !bytes.Equal(g.Payload, append([]byte{byte(i)}, payload...)) {
					t.Errorf("packet %d: payload changed", i)
				}
			}
			if n := p.f.C.Rebases.Load(); n != tc.rebases {
				t.Errorf("rebases %d, want %d", n, tc.rebases)
			}
		})
	}
}

func TestForkRouting(t *testing.T) {
	for _, mode := range []ForkSend{ForkSendNonBlocking, ForkSendDirect, ForkSendQueued} {
		t.Run([]string{"nonblocking", "direct", "queued"}[mode], func(t *testing.T) {
			p := newForkPair(t, mode, map[uint8]ForkPT{8: {Out: 8}})
			p.feed(t, 1, 1, 0, 0, 0, []byte("pcmu")) // not negotiated with the recorder
			var other Packet
			raw := rtpPacket(t, 1, 1, 0, []byte("x"))
			_ = parseRTP(raw, &other)
			p.f.RTP(BtoA, &other) // the other direction is not this fork's
			p.feed(t, 1, 2, 160, 8, 20*ms, []byte("pcma"))
			p.f.Pause()
			p.feed(t, 1, 3, 320, 8, 40*ms, []byte("paused"))
			got := p.read(t, 1)
			if string(got[0].Payload) != "pcma" || got[0].PayloadType != 8 {
				t.Fatalf("got pt %d %q", got[0].PayloadType, got[0].Payload)
			}
			p.recv.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			if _, _, err := p.recv.ReadFromUDPAddrPort(make([]byte, 100)); err == nil {
				t.Error("a packet arrived that should not have been sent")
			}
			if p.f.C.Unmapped.Load() != 1 || p.f.C.Paused.Load() != 1 || p.f.C.Packets.Load() != 1 {
				t.Errorf("counters unmapped %d paused %d packets %d", p.f.C.Unmapped.Load(), p.f.C.Paused.Load(), p.f.C.Packets.Load())
			}
		})
	}
}

func TestForkRouteValidation(t *testing.T) {
	p := newForkPair(t, ForkSendNonBlocking, nil)
	for _, a := range []netip.AddrPort{{}, netip.MustParseAddrPort("127.0.0.1:0"), netip.MustParseAddrPort("0.0.0.0:4000")} {
		if err := p.f.SetRoute(ForkRoute{Addr: a}); !errorsIs(err, ErrForkAddress) {
			t.Errorf("SetRoute(%v) = %v, want ErrForkAddress", a, err)
		}
	}
}

func TestForkFromEngine(t *testing.T) {
	eng, err := NewEngine(Config{RTPPorts: "41000-41009"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f, err := NewForkStream(eng, BtoA)
	if err != nil {
		t.Fatal(err)
	}
	if p := f.Local().Port(); p < 41000 || p > 41009 || p%2 != 0 {
		t.Errorf("local port %d not an even port of the range", p)
	}
	if in, _ := eng.pool.stats(); in != 1 {
		t.Errorf("pairs in use %d, want 1", in)
	}
	f.Close()
	f.Close()
	if in, _ := eng.pool.stats(); in != 0 {
		t.Errorf("pairs in use after close %d, want 0", in)
	}
}
