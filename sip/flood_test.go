package sip

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bib-project/bib/sip/siptest"
	sipmsg "github.com/emiago/sipgo/sip"
)

const (
	floodInvites   = 2000
	floodWindow    = 50  // INVITEs in flight at once (keeps loopback buffers from overflowing)
	legitPackets   = 500 // per direction
	strangerPerPkt = 20  // stranger packets per legitimate packet and leg: 2 * 500 * 20 = 20,000
	floodPace      = time.Millisecond
)

// A stranger floods bib with INVITEs and the live call's RTP ports with
// packets while the call talks. The call loses nothing and receives only
// its parties' bytes; every INVITE is answered (404 within the rate, 503 +
// Retry-After beyond it); counters and refusal reports show it all.
func TestFlood(t *testing.T) {
	callee := newParty(t, "2001")
	e, ref := authEnv(t, authEnvOpts{routes: []Route{staticRoute(callee, "2XXX")},
		limits: LimitsConfig{RequestsPerSecond: 100, Burst: 200, MaxCalls: 50}})
	caller := e.party("1001")
	got := answerNext(t, e.ctx, callee, nil)
	ac, err := caller.Invite(e.ctx, e.uri("2001"), caller.SDP(siptest.SDPOptions{}))
	if err != nil {
		t.Fatal(err)
	}
	bc := recv(t, e.ctx, got)
	exchange(t, e.ctx, caller, ac, callee, bc, 10, 1) // both legs latched
	callID := e.waitState(StateAnswered).ID

	ctx, cancel := context.WithTimeout(e.ctx, 15*time.Second)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	var flood floodResult
	wg.Go(func() { flood = inviteFlood(ctx, t, e.srv.Addr("udp")) })

	stranger, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	baseA, baseB := len(caller.Received()), len(callee.Received())
	var sentA, sentB [][]byte
	junk := siptest.RTPPacket(0xBAD, 1, 1, 0, bytes.Repeat([]byte{0xEE}, 160))
	// Paced: one legitimate packet per leg every pace, with strangerPerPkt
	// stranger packets per leg in between, i.e. 2*strangerPerPkt/pace
	// stranger packets per second (40,000/s at 1ms). Unpaced, a loopback
	// sender outruns the leg's read loop and the kernel drops packets from
	// the socket's receive queue, legitimate ones included (see
	// the README's Security section, "Limits of the RTP flood protection").
	tick := time.NewTicker(floodPace)
	defer tick.Stop()
	for i := range legitPackets {
		<-tick.C
		pa := siptest.RTPPacket(0xA0A0A0A0, uint16(2000+i), uint32(160*(20+i)), 0, bytes.Repeat([]byte{byte(i), 0xA1}, 80))
		pb := siptest.RTPPacket(0xB0B0B0B0, uint16(6000+i), uint32(160*(20+i)), 0, bytes.Repeat([]byte{byte(i), 0xB1}, 80))
		sentA, sentB = append(sentA, pa), append(sentB, pb)
		if err := ac.SendRTP(pa); err != nil {
			t.Fatal(err)
		}
		if err := bc.SendRTP(pb); err != nil {
			t.Fatal(err)
		}
		for range strangerPerPkt {
			stranger.WriteToUDPAddrPort(junk, ac.RemoteRTP())
			stranger.WriteToUDPAddrPort(junk, bc.RemoteRTP())
		}
	}
	wg.Wait()
	elapsed := time.Since(start)

	// 0% loss, byte-identical, nothing from the stranger.
	check := func(p *siptest.Party, base int, sent [][]byte) {
		t.Helper()
		all, err := p.WaitPackets(ctx, base+len(sent))
		if err != nil {
			t.Fatal(err)
		}
		rcv := all[base:]
		if len(rcv) != len(sent) {
			t.Fatalf("%s received %d packets, want %d", p.User, len(rcv), len(sent))
		}
		for i := range sent {
			if !bytes.Equal(rcv[i].Data, sent[i]) {
				t.Fatalf("%s packet %d differs", p.User, i)
			}
		}
	}
	check(callee, baseB, sentA)
	check(caller, baseA, sentB)

	// Every stranger packet was counted as dropped at the leg.
	wantDropped := uint64(2 * legitPackets * strangerPerPkt)
	var dropped uint64
	for {
		ci, ok := e.srv.Call(callID)
		if !ok {
			t.Fatal("live call ended during the flood")
		}
		dropped = ci.Media.Legs[0].DroppedSource + ci.Media.Legs[1].DroppedSource
		if dropped >= wantDropped || ctx.Err() != nil {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	if dropped != wantDropped {
		t.Fatalf("dropped_source %d, want %d", dropped, wantDropped)
	}

	// Every INVITE was answered: 404 (admitted, no route) or 503 (rate).
	if flood.err != nil {
		t.Fatal(flood.err)
	}
	if flood.codes[404]+flood.codes[503] != floodInvites || flood.codes[503] == 0 || flood.codes[404] < 200 {
		t.Fatalf("responses %v", flood.codes)
	}
	if flood.noRetryAfter != 0 {
		t.Fatalf("%d 503s without Retry-After", flood.noRetryAfter)
	}
	k := e.srv.SecurityCounters()
	r := ref.reasons()
	if k.RateLimited != uint64(flood.codes[503]) || r[RefusedRateLimited] != flood.codes[503] || r[RefusedCallRejected] != flood.codes[404] {
		t.Fatalf("counters %+v refusals %v responses %v", k, r, flood.codes)
	}
	// 404s free their call slot: max_calls (50) never refused anything.
	if k.MaxCalls != 0 || k.CallsReserved != 1 {
		t.Fatalf("call slots leaked: %+v", k)
	}
	t.Logf("flood: %d INVITEs (404=%d 503=%d) and %d stranger RTP packets in %v; %d+%d call packets all delivered",
		floodInvites, flood.codes[404], flood.codes[503], wantDropped, elapsed.Round(time.Millisecond), legitPackets, legitPackets)

	// The call still ends normally; its BYE is exempt from the rate limit.
	if err := ac.Bye(e.ctx); err != nil {
		t.Fatalf("bye after the flood: %v", err)
	}
	e.waitEnded(1)
}

type floodResult struct {
	codes        map[int]int
	noRetryAfter int
	err          error
}

// inviteFlood sends floodInvites out-of-dialog INVITEs from one UDP socket,
// at most floodWindow unanswered at a time, ACKs every final response and
// counts the status codes.
func inviteFlood(ctx context.Context, t *testing.T, bib netip.AddrPort) floodResult {
	res := floodResult{codes: map[int]int{}}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		res.err = err
		return res
	}
	defer conn.Close()
	_ = conn.SetReadBuffer(4 << 20)
	local := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	window := make(chan struct{}, floodWindow)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range floodInvites {
			select {
			case window <- struct{}{}:
			case <-ctx.Done():
				return
			}
			msg := fmt.Sprintf("INVITE sip:9999@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-flood-%d\r\nMax-Forwards: 70\r\n"+
				"From: <sip:stranger@%s>;tag=f%d\r\nTo: <sip:9999@%s>\r\nCall-ID: flood-%d@127.0.0.1\r\nCSeq: 1 INVITE\r\n"+
				"Contact: <sip:stranger@%s>\r\nContent-Length: 0\r\n\r\n", bib, local, i, local.Addr(), i, bib, i, local)
			if _, err := conn.WriteToUDPAddrPort([]byte(msg), bib); err != nil {
				return
			}
		}
	}()
	parser := sipmsg.NewParser()
	seen := map[string]bool{}
	buf := make([]byte, 65535)
	for len(seen) < floodInvites {
		dl, _ := ctx.Deadline()
		conn.SetReadDeadline(dl)
		n, _, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			res.err = fmt.Errorf("flood: %d of %d INVITEs answered: %w", len(seen), floodInvites, err)
			break
		}
		msg, err := parser.ParseSIP(buf[:n])
		if err != nil {
			continue
		}
		r, ok := msg.(*sipmsg.Response)
		if !ok || r.StatusCode < 200 {
			continue
		}
		id := r.CallID().Value()
		ack := fmt.Sprintf("ACK sip:9999@%s SIP/2.0\r\nVia: %s\r\nMax-Forwards: 70\r\nFrom: %s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
			bib, r.Via().Value(), r.From().Value(), r.To().Value(), id)
		conn.WriteToUDPAddrPort([]byte(ack), bib)
		if seen[id] {
			continue // a retransmission that crossed our ACK
		}
		seen[id] = true
		res.codes[r.StatusCode]++
		if r.StatusCode == 503 && strings.TrimSpace(header(r, "Retry-After")) == "" {
			res.noRetryAfter++
		}
		<-window
	}
	<-done
	return res
}
