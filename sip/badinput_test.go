package sip

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/bib-project/bib/bridge"
	"github.com/bib-project/bib/sip/siptest"
)

// liveCall sets up an answered call caller(1001) -> callee(2001).
func liveCall(t *testing.T, o envOpts) (*env, *siptest.Party, *siptest.Call, *siptest.Party, *siptest.Call) {
	t.Helper()
	callee := newParty(t, "2001")
	o.routes = append(o.routes, staticRoute(callee, "2XXX"))
	e := newEnv(t, o)
	caller := e.party("1001")
	got := answerNext(t, e.ctx, callee, nil)
	ac, err := caller.Invite(e.ctx, e.uri("2001"), caller.SDP(siptest.SDPOptions{}))
	if err != nil {
		t.Fatal(err)
	}
	bc := recv(t, e.ctx, got)
	e.waitState(StateAnswered)
	return e, caller, ac, callee, bc
}

func TestStrangerRTPDropped(t *testing.T) {
	e, caller, ac, callee, bc := liveCall(t, envOpts{})
	exchange(t, e.ctx, caller, ac, callee, bc, 5, 1)
	stranger, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	// Inject towards both legs, interleaved with real audio.
	for i := range 10 {
		inject := siptest.RTPPacket(0xBAD, uint16(i), 0, 0, []byte("injected audio"))
		for _, dst := range []*siptest.Call{ac, bc} {
			if _, err := stranger.WriteToUDPAddrPort(inject, dst.RemoteRTP()); err != nil {
				t.Fatal(err)
			}
		}
	}
	exchange(t, e.ctx, caller, ac, callee, bc, 5, 2)
	// exchange already proved nothing else arrived in order; the counters must
	// show every injected datagram.
	ci := waitCounter(t, e, func(ci CallInfo) bool {
		return ci.Media.Legs[0].DroppedSource == 10 && ci.Media.Legs[1].DroppedSource == 10
	})
	if ci.Media.Legs[0].PacketsIn != 10 || ci.Media.Legs[1].PacketsIn != 10 {
		t.Fatalf("packets in: %+v", ci.Media.Legs)
	}
	for _, p := range append(caller.Received(), callee.Received()...) {
		if bytes.Contains(p.Data, []byte("injected")) {
			t.Fatal("stranger's packet was relayed")
		}
	}
}

func TestBadRTPFromParty(t *testing.T) {
	e, caller, ac, callee, bc := liveCall(t, envOpts{})
	bad := [][]byte{
		{},                              // empty
		{0x80, 0x00, 0x01},              // short
		bytes.Repeat([]byte{0x00}, 40),  // version 0
		bytes.Repeat([]byte{0xff}, 100), // garbage
		append([]byte{0x8f}, make([]byte, 20)...), // CSRC count exceeds packet
	}
	for _, b := range bad {
		if err := ac.SendRTP(b); err != nil {
			t.Fatal(err)
		}
	}
	over := siptest.RTPPacket(1, 1, 1, 0, make([]byte, 1600))
	if err := ac.SendRTP(over); err != nil {
		t.Fatal(err)
	}
	exchange(t, e.ctx, caller, ac, callee, bc, 10, 3)
	ci := waitCounter(t, e, func(ci CallInfo) bool {
		return ci.Media.Legs[0].Malformed >= 4 && ci.Media.Legs[0].Oversize == 1
	})
	// The empty datagram counts as malformed too, or is not seen at all.
	if m := ci.Media.Legs[0].Malformed; m != 4 && m != 5 {
		t.Fatalf("malformed %d", m)
	}
	if ci.Media.Legs[0].PacketsIn != 10 || ci.Media.Legs[1].PacketsOut != 10 {
		t.Fatalf("audio counters: %+v", ci.Media.Legs)
	}
}

func TestGarbageSIP(t *testing.T) {
	e, caller, ac, callee, bc := liveCall(t, envOpts{})
	udp, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(e.srv.Addr("udp")))
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	before := e.srv.Counters().Malformed

	// Pure garbage: dropped (no request line to answer), counted.
	for _, g := range [][]byte{
		[]byte("\x00\x01\x02 hello"),
		bytes.Repeat([]byte("A"), 3000),
		[]byte("SIP/2.0 200 OK\r\n\r\n"),
	} {
		if _, err := udp.Write(g); err != nil {
			t.Fatal(err)
		}
	}
	// A request whose start line parses but whose CSeq is broken: 400 + Warning.
	half := "OPTIONS sip:bib@127.0.0.1 SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-garbage1\r\n" +
		"From: <sip:x@127.0.0.1>;tag=1\r\nTo: <sip:bib@127.0.0.1>\r\nCall-ID: garbage-1\r\n" +
		"CSeq: notanumber OPTIONS\r\nContent-Length: 0\r\n\r\n"
	// A request missing its CSeq.
	noCSeq := "INVITE sip:2001@127.0.0.1 SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-garbage2\r\n" +
		"From: <sip:x@127.0.0.1>;tag=1\r\nTo: <sip:2001@127.0.0.1>\r\nCall-ID: garbage-2\r\nContent-Length: 0\r\n\r\n"
	for _, req := range []string{half, noCSeq} {
		if _, err := udp.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		udp.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 4096)
		n, err := udp.Read(buf)
		if err != nil {
			t.Fatalf("no answer to broken request: %v", err)
		}
		res := string(buf[:n])
		if !strings.HasPrefix(res, "SIP/2.0 400 ") || !strings.Contains(res, "Warning: 399 bib \"") {
			t.Fatalf("answer to broken request:\n%s", res)
		}
		if !strings.Contains(res, "z9hG4bK-garbage") {
			t.Fatalf("400 lacks the request's Via:\n%s", res)
		}
	}
	// TCP: garbage closes that connection only.
	tcp, err := net.Dial("tcp", e.srv.Addr("tcp").String())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = tcp.Write([]byte("GARBAGE\r\n\r\n\x00\xff" + strings.Repeat("x", 70000)))
	tcp.Close()

	// Two unparsable datagrams and two broken requests; the stray response
	// parses (the transaction layer drops it) and TCP garbage only closes
	// its connection.
	if got := e.srv.Counters().Malformed - before; got != 4 {
		t.Fatalf("malformed counter grew by %d, want 4", got)
	}
	// The live call is unaffected: audio both ways, and signalling still works.
	exchange(t, e.ctx, caller, ac, callee, bc, 10, 4)
	res, err := ac.ReInvite(e.ctx, caller.SDP(siptest.SDPOptions{}))
	mustStatus(t, err, res, 200)
	exchange(t, e.ctx, caller, ac, callee, bc, 10, 5)
}

func TestShutdownByesBothLegs(t *testing.T) {
	e, _, ac, _, bc := liveCall(t, envOpts{})
	ctx, cancel := context.WithTimeout(e.ctx, 5*time.Second)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	waitDone(t, e.ctx, ac.Ended(), "BYE at caller")
	waitDone(t, e.ctx, bc.Ended(), "BYE at callee")
	if r := header(ac.ByeRequest(), "Reason"); !strings.Contains(r, "shutting down") {
		t.Fatalf("Reason %q", r)
	}
	if n := len(e.srv.Calls()); n != 0 {
		t.Fatalf("%d calls left", n)
	}
	// New calls are refused while closing.
	caller := e.party("1002")
	_, err := caller.Invite(e.ctx, e.uri("2001"), caller.SDP(siptest.SDPOptions{}))
	if err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("invite after shutdown: %v", err)
	}
}

func TestMediaTimeout(t *testing.T) {
	e, _, ac, _, bc := liveCall(t, envOpts{media: bridge.Config{MediaTimeout: bridge.Duration(time.Second)}})
	// No RTP at all: the janitor (1 s ticks) ends the call with BYE both ways.
	waitDone(t, e.ctx, ac.Ended(), "BYE at caller")
	waitDone(t, e.ctx, bc.Ended(), "BYE at callee")
	for _, c := range []*siptest.Call{ac, bc} {
		if r := header(c.ByeRequest(), "Reason"); r != `SIP;cause=408;text="media timeout"` {
			t.Fatalf("Reason %q", r)
		}
	}
	if ended := e.waitEnded(1); ended[0].EndReason != "media timeout" {
		t.Fatalf("ended: %s", fmtInfo(ended[0]))
	}
}

func TestHangupAPI(t *testing.T) {
	e, _, ac, _, bc := liveCall(t, envOpts{})
	id := e.srv.Calls()[0].ID
	if err := e.srv.Hangup(e.ctx, id, "supervisor ended it"); err != nil {
		t.Fatal(err)
	}
	waitDone(t, e.ctx, ac.Ended(), "BYE at caller")
	waitDone(t, e.ctx, bc.Ended(), "BYE at callee")
	e.waitEnded(1) // bib has finished the call (both BYEs answered)
	if err := e.srv.Hangup(e.ctx, id, "again"); err == nil {
		t.Fatal("hangup of an ended call succeeded")
	}
}

// waitCounter polls the single call's stats until cond holds.
func waitCounter(t *testing.T, e *env, cond func(CallInfo) bool) CallInfo {
	t.Helper()
	for {
		calls := e.srv.Calls()
		if len(calls) == 1 && cond(calls[0]) {
			return calls[0]
		}
		select {
		case <-e.ctx.Done():
			t.Fatalf("counters never matched: %+v", calls)
		case <-time.After(2 * time.Millisecond):
		}
	}
}
