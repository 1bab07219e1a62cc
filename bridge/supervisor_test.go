package bridge

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/bib-project/bib/bridge/codec"
	"github.com/pion/rtp"
)

// collector keeps every datagram a party receives until stopped.
type collector struct {
	p    *party
	mu   sync.Mutex
	got  [][]byte
	done chan struct{}
}

func collect(p *party) *collector {
	c := &collector{p: p, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		buf := make([]byte, 2000)
		for {
			n, _, err := p.conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.mu.Lock()
			c.got = append(c.got, bytes.Clone(buf[:n]))
			c.mu.Unlock()
		}
	}()
	return c
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.got)
}

// stop ends the read loop and returns what arrived.
func (c *collector) stop() [][]byte {
	c.p.conn.SetReadDeadline(time.Unix(1, 0))
	<-c.done
	return c.got
}

// eventually polls cond until it holds or the bound passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// marshalPacket turns a tone source's packet into a datagram.
func marshalPacket(t testing.TB, p *Packet) []byte {
	t.Helper()
	h := p.Header
	h.Version = 2
	b, err := (&rtp.Packet{Header: h, Payload: p.Payload}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// monitoredCall is a relayed call whose two parties send tones (a: 440 Hz,
// b: 1000 Hz) with a mixer tapped on it.
type monitoredCall struct {
	e            *Engine
	c            *Call
	a, b         *party
	srcA, srcB   *toneSource
	sentA, sentB [][]byte
	colA, colB   *collector
	m            *Mixer
}

func newMonitoredCall(t *testing.T) *monitoredCall {
	t.Helper()
	e := testEngine(t, freeRange(t))
	c, a, b := setupCall(t, e)
	mc := &monitoredCall{e: e, c: c, a: a, b: b,
		srcA: newToneSource(t, "PCMU", 0, 440, 0.3, 0xa),
		srcB: newToneSource(t, "PCMU", 0, 1000, 0.3, 0xb),
		m:    NewMixer(c.ID(), MixerConfig{})}
	t.Cleanup(func() { mc.m.Close() })
	if err := c.AddTap(mc.m); err != nil {
		t.Fatal(err)
	}
	mc.colA, mc.colB = collect(a), collect(b)
	return mc
}

// send sends one 20 ms packet from each party.
func (mc *monitoredCall) send(t *testing.T) {
	t.Helper()
	la, _ := mc.c.Leg(SideA).Local()
	lb, _ := mc.c.Leg(SideB).Local()
	pa := marshalPacket(t, mc.srcA.next())
	pb := marshalPacket(t, mc.srcB.next())
	if _, err := mc.a.conn.WriteToUDPAddrPort(pa, la); err != nil {
		t.Fatal(err)
	}
	if _, err := mc.b.conn.WriteToUDPAddrPort(pb, lb); err != nil {
		t.Fatal(err)
	}
	mc.sentA = append(mc.sentA, pa)
	mc.sentB = append(mc.sentB, pb)
}

// checkParties asserts that each party received exactly the bytes the
// other sent, nothing more, and that the mixer saw only the parties'
// packets.
func (mc *monitoredCall) checkParties(t *testing.T) {
	t.Helper()
	eventually(t, "relayed packets", func() bool {
		return mc.colA.count() >= len(mc.sentB) && mc.colB.count() >= len(mc.sentA)
	})
	for _, x := range []struct {
		name string
		got  [][]byte
		want [][]byte
	}{{"agent (a)", mc.colA.stop(), mc.sentB}, {"customer (b)", mc.colB.stop(), mc.sentA}} {
		if len(x.got) != len(x.want) {
			t.Fatalf("%s received %d datagrams, the other party sent %d", x.name, len(x.got), len(x.want))
		}
		for i := range x.got {
			if !bytes.Equal(x.got[i], x.want[i]) {
				t.Fatalf("%s: datagram %d differs from what the other party sent", x.name, i)
			}
		}
	}
	n := uint64(len(mc.sentA))
	if st := mc.m.Stats(); st.Packets != [2]uint64{n, n} {
		t.Fatalf("mixer queued %v packets, want %d per direction (the parties' only)", st.Packets, n)
	}
}

// checkMixStream asserts a supervisor's RTP stream: one SSRC and payload
// type, sequence numbers +1 and timestamps +160 per packet, and both tones
// audible once the jitter buffer filled.
func checkMixStream(t *testing.T, pkts []*rtp.Packet, pt uint8) {
	t.Helper()
	if len(pkts) < 40 {
		t.Fatalf("supervisor got %d packets", len(pkts))
	}
	dec, _ := codec.NewDecoder("PCMU")
	var pcm []int16
	buf := make([]int16, 2000)
	for i, p := range pkts {
		if p.PayloadType != pt || p.SSRC != pkts[0].SSRC {
			t.Fatalf("packet %d: pt %d ssrc %x", i, p.PayloadType, p.SSRC)
		}
		if i > 0 && (p.SequenceNumber != pkts[i-1].SequenceNumber+1 || p.Timestamp != pkts[i-1].Timestamp+160) {
			t.Fatalf("packet %d: seq %d ts %d after seq %d ts %d", i, p.SequenceNumber, p.Timestamp, pkts[i-1].SequenceNumber, pkts[i-1].Timestamp)
		}
		if i >= 10 {
			n := dec.Decode(buf, p.Payload)
			pcm = append(pcm, buf[:n]...)
		}
	}
	p440, p1000 := codec.Goertzel(pcm, 440, 8000), codec.Goertzel(pcm, 1000, 8000)
	if p440 < 0.01 || p1000 < 0.01 {
		t.Fatalf("mix lacks a tone: power at 440 Hz %.4f, at 1000 Hz %.4f", p440, p1000)
	}
}

func TestSupervisorLegListenOnly(t *testing.T) {
	mc := newMonitoredCall(t)
	sup := newParty(t)
	var dropped uint64
	var dmu sync.Mutex
	leg, err := NewSupervisorLeg(mc.e, nil, func(n uint64) { dmu.Lock(); dropped += n; dmu.Unlock() })
	if err != nil {
		t.Fatal(err)
	}
	defer leg.Close()
	cd, err := leg.SetRemote(MediaDesc{RTP: sup.addr, Mode: SendRecv, Codecs: []Codec{
		{PT: 18, Name: "G729", Rate: 8000}, {PT: 0, Name: "PCMU", Rate: 8000}, {PT: 101, Name: "telephone-event", Rate: 8000}}})
	if err != nil || cd.Name != "PCMU" || cd.PT != 0 {
		t.Fatalf("codec %+v, %v", cd, err)
	}
	if err := mc.m.AddOutput(leg, cd.Name); err != nil {
		t.Fatal(err)
	}
	colSup := collect(sup)
	lrtp, lrtcp := leg.Local()

	// The supervisor shouts (full-scale audio), dials digits and sends
	// RTCP the whole time.
	loud := newToneSource(t, "PCMU", 0, 700, 0.99, 0x5)
	var ev [4]byte
	codec.PutEvent(ev[:], codec.Event{Code: 1, Duration: 160})
	rtcpRR := []byte{0x80, 201, 0, 1, 0, 0, 0, 5}
	var supSent int
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for i := range 75 {
		<-tick.C
		mc.send(t)
		p := loud.next()
		if i%5 == 0 {
			p.Header.PayloadType, p.Payload = 101, ev[:]
		}
		sup.conn.WriteToUDPAddrPort(marshalPacket(t, p), lrtp)
		supSent++
		if i%10 == 0 {
			sup.conn.WriteToUDPAddrPort(rtcpRR, lrtcp)
			supSent++
		}
	}
	mc.checkParties(t)
	eventually(t, "supervisor packets counted", func() bool { return leg.Dropped() == uint64(supSent) })
	dmu.Lock()
	if dropped != uint64(supSent) {
		t.Errorf("drop callback counted %d, supervisor sent %d", dropped, supSent)
	}
	dmu.Unlock()
	if leg.C.DroppedDTMF.Load() != 15 || leg.C.DroppedRTCP.Load() != 8 || leg.C.DroppedRTP.Load() != 60 {
		t.Errorf("drops by kind: rtp %d dtmf %d rtcp %d", leg.C.DroppedRTP.Load(), leg.C.DroppedDTMF.Load(), leg.C.DroppedRTCP.Load())
	}
	mc.m.RemoveOutput(leg)
	var pkts []*rtp.Packet
	for _, b := range colSup.stop() {
		p := &rtp.Packet{}
		if err := p.Unmarshal(b); err != nil {
			t.Fatal(err)
		}
		pkts = append(pkts, p)
	}
	checkMixStream(t, pkts, 0)
	if !pkts[0].Marker {
		t.Error("first packet lacks the marker bit")
	}
}

func TestSupervisorLegHoldAndCodecs(t *testing.T) {
	e := testEngine(t, freeRange(t))
	sup := newParty(t)
	leg, err := NewSupervisorLeg(e, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer leg.Close()
	if _, err := leg.SetRemote(MediaDesc{RTP: sup.addr, Codecs: []Codec{{PT: 18, Name: "G729"}}}); !errorsIs(err, ErrNoCommonCodec) {
		t.Fatalf("G729 only: %v", err)
	}
	if c, err := leg.SetRemote(MediaDesc{RTP: sup.addr, Mode: RecvOnly, Codecs: []Codec{{PT: 8, Name: "pcma"}}}); err != nil || c.Name != "PCMA" {
		t.Fatalf("%+v %v", c, err)
	}
	frame := &MixFrame{Codec: "PCMA", Payload: bytes.Repeat([]byte{0xd5}, 160), Samples: 160}
	recv := func() *rtp.Packet {
		t.Helper()
		b := sup.recv(t, 5*time.Second)
		p := &rtp.Packet{}
		if b == nil || p.Unmarshal(b) != nil {
			t.Fatal("no packet")
		}
		return p
	}
	leg.WriteMix(frame)
	p1 := recv()
	// The supervisor puts bib on hold (its SDP says sendonly): no packets,
	// but time passes for the timestamp.
	if _, err := leg.SetRemote(MediaDesc{RTP: sup.addr, Mode: SendOnly, Codecs: []Codec{{PT: 8, Name: "PCMA"}}}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		leg.WriteMix(frame)
	}
	if _, err := leg.SetRemote(MediaDesc{RTP: sup.addr, Mode: SendRecv, Codecs: []Codec{{PT: 8, Name: "PCMA"}}}); err != nil {
		t.Fatal(err)
	}
	leg.WriteMix(frame)
	p2 := recv()
	if p2.SequenceNumber != p1.SequenceNumber+1 || p2.Timestamp != p1.Timestamp+4*160 || p2.SSRC != p1.SSRC || p2.PayloadType != 8 || p2.Marker {
		t.Fatalf("after hold: %+v, before: %+v", p2.Header, p1.Header)
	}
	if st := leg.Stats(); st.PacketsSent != 2 || st.Remote != sup.addr || st.Codec.PT != 8 {
		t.Fatalf("stats %+v", st)
	}
}
