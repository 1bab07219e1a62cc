package sip

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/bib-project/bib/bridge"
	"github.com/bib-project/bib/sip/siptest"
)

func newKey(t *testing.T) bridge.SRTPKey {
	t.Helper()
	k, err := bridge.NewSRTPKey(bridge.SuiteAES128SHA1_80)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// An SRTP call through bib: each party's a=crypto reaches the other
// unchanged (one line: the first suite bib supports), the SRTP datagrams
// are relayed byte for byte and each party decrypts the other's with the
// key it was given; packets with the wrong key, forged or replayed, from
// the party's own address, are dropped and counted, never relayed.
func TestSRTPCallPassThrough(t *testing.T) {
	b := newParty(t, "2001")
	e := newEnv(t, envOpts{routes: []Route{staticRoute(b, "2XXX")}})
	a := e.party("1001")
	ka, kb := newKey(t), newKey(t)
	offer := a.SDP(siptest.SDPOptions{Proto: "RTP/SAVP", Codecs: []string{"0", "101"},
		Extra: "a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2\r\n" + siptest.CryptoLine(2, ka)})
	got := make(chan *siptest.Call, 1)
	go func() {
		in := <-b.Incoming
		tags, keys, err := siptest.ParseCrypto(in.Invite.Body())
		if err != nil || len(keys) != 1 || !keys[0].Equal(ka) || tags[0] != "2" || !strings.Contains(string(in.Invite.Body()), "RTP/SAVP") {
			t.Errorf("callee's offer: tags %v keys %d err %v\n%s", tags, len(keys), err, in.Invite.Body())
		}
		_ = in.Answer(b.SDP(siptest.SDPOptions{Proto: "RTP/SAVP", Codecs: []string{"0", "101"}, Extra: siptest.CryptoLine(2, kb)}))
		got <- in
	}()
	ac, err := a.Invite(e.ctx, e.uri("2001"), offer)
	if err != nil {
		t.Fatal(err)
	}
	bc := recv(t, e.ctx, got)
	if _, keys, _ := siptest.ParseCrypto(ac.Response().Body()); len(keys) != 1 || !keys[0].Equal(kb) {
		t.Fatalf("caller's answer does not carry the callee's key:\n%s", ac.Response().Body())
	}
	e.waitState(StateAnswered)
	sa, _ := siptest.NewSRTP(ka, &kb)
	sb, _ := siptest.NewSRTP(kb, &ka)
	wrong, _ := siptest.NewSRTP(newKey(t), nil)
	const n = 20
	var sentA, sentB [][]byte
	for i := range n {
		pa := sa.Seal(siptest.RTPPacket(0xA1, uint16(100+i), uint32(160*i), 0, bytes.Repeat([]byte{byte(i)}, 160)))
		pb := sb.Seal(siptest.RTPPacket(0xB2, uint16(900+i), uint32(160*i), 0, bytes.Repeat([]byte{byte(200 - i)}, 160)))
		sentA, sentB = append(sentA, pa), append(sentB, pb)
		if err := ac.SendRTP(pa); err != nil {
			t.Fatal(err)
		}
		if err := bc.SendRTP(pb); err != nil {
			t.Fatal(err)
		}
		// From the caller's own address: a wrong key, a forged tag (on a
		// packet index not used yet) and a replay of the packet just sent.
		ac.SendRTP(wrong.Seal(siptest.RTPPacket(0xA1, uint16(5000+i), uint32(160*i), 0, bytes.Repeat([]byte{0x55}, 160))))
		forged := bytes.Clone(pa)
		forged[3]++ // sequence number +1: the next packet's index
		ac.SendRTP(forged)
		ac.SendRTP(pa)
		time.Sleep(2 * time.Millisecond)
	}
	gotB, err := b.WaitPackets(e.ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	gotA, err := a.WaitPackets(e.ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // anything wrongly relayed would show now
	gotB = b.Received()
	if len(gotB) != n {
		t.Fatalf("callee received %d packets, want exactly the caller's %d", len(gotB), n)
	}
	for i := range n {
		if !bytes.Equal(gotB[i].Data, sentA[i]) || !bytes.Equal(gotA[i].Data, sentB[i]) {
			t.Fatalf("packet %d not relayed byte for byte", i)
		}
		if p, err := sb.Open(gotB[i].Data); err != nil || p[12] != byte(i) {
			t.Fatalf("callee cannot open packet %d: %v", i, err)
		}
		if _, err := sa.Open(gotA[i].Data); err != nil {
			t.Fatalf("caller cannot open packet %d: %v", i, err)
		}
	}
	ci, _ := e.srv.Call(e.srv.Calls()[0].ID)
	la := ci.Media.Legs[0]
	if !la.SRTP || la.PacketsIn != n || la.SRTPAuthFailed != 2*n || la.SRTPReplayed != n {
		t.Fatalf("caller leg: srtp %v in %d auth_failed %d replayed %d", la.SRTP, la.PacketsIn, la.SRTPAuthFailed, la.SRTPReplayed)
	}
	_ = ac.Bye(e.ctx)
	e.waitEnded(1)
}

// bib never translates between RTP and SRTP: an SRTP offer answered with
// plain RTP fails the call with 488 and a reason, and the callee is hung up.
func TestSRTPMismatchRefused(t *testing.T) {
	b := newParty(t, "2001")
	e := newEnv(t, envOpts{routes: []Route{staticRoute(b, "2XXX")}})
	a := e.party("1001")
	go func() {
		in := <-b.Incoming
		_ = in.Answer(b.SDP(siptest.SDPOptions{}))
		b.Incoming <- in
	}()
	_, err := a.Invite(e.ctx, e.uri("2001"), a.SDP(siptest.SDPOptions{Proto: "RTP/SAVP", Extra: siptest.CryptoLine(1, newKey(t))}))
	if err == nil || !strings.Contains(err.Error(), "488") {
		t.Fatalf("invite: %v", err)
	}
	bc := recv(t, e.ctx, b.Incoming)
	waitDone(t, e.ctx, bc.Ended(), "BYE to the callee")
	ended := e.waitEnded(1)
	if !strings.Contains(ended[0].EndReason, "sdp") {
		t.Logf("end reason %q", ended[0].EndReason)
	}
}

// A secure call is monitored only on a secure supervisor leg: a plain
// offer is refused with 488 and a reason; an RTP/SAVP offer is answered
// RTP/SAVP with bib's own key (the mix is sent encrypted with it); with a
// delayed offer bib offers RTP/SAVP itself.
func TestSRTPMonitorSecureCall(t *testing.T) {
	callee := newParty(t, "2001")
	me := newMonEnv(t, callee)
	_, ac, _ := agentCall(t, me.env, callee)
	me.mu.Lock()
	me.secure = true
	me.mu.Unlock()
	sup := me.supervisor("sup-pw")
	_, err := sup.Invite(me.ctx, me.uri("monitor-1001"), sup.SDP(siptest.SDPOptions{}))
	if err == nil || !strings.Contains(err.Error(), "488") {
		t.Fatalf("plain supervisor leg on a secure call: %v", err)
	}
	ks := newKey(t)
	sc, err := sup.Invite(me.ctx, me.uri("monitor-1001"), sup.SDP(siptest.SDPOptions{Proto: "RTP/SAVP", Extra: siptest.CryptoLine(7, ks)}))
	if err != nil {
		t.Fatal(err)
	}
	ans := sc.Response().Body()
	tags, keys, err := siptest.ParseCrypto(ans)
	if err != nil || len(keys) != 1 || tags[0] != "7" || keys[0].Equal(ks) || !strings.Contains(string(ans), "RTP/SAVP") {
		t.Fatalf("answer to an SRTP supervisor (tags %v, %v):\n%s", tags, err, ans)
	}
	m := me.lastMedia(t)
	m.mu.Lock()
	k := m.key
	m.mu.Unlock()
	if k == nil || !k.Equal(keys[0]) {
		t.Fatal("the mix is not sent with the key bib stated")
	}
	_ = sc.Bye(me.ctx)

	// Delayed offer: bib offers RTP/SAVP.
	sc2, err := sup.Invite(me.ctx, me.uri("monitor-1001"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, keys, _ := siptest.ParseCrypto(sc2.Response().Body()); len(keys) != 1 || !strings.Contains(string(sc2.Response().Body()), "RTP/SAVP") {
		t.Fatalf("bib's offer to a supervisor of a secure call:\n%s", sc2.Response().Body())
	}
	_ = sc2.Bye(me.ctx)
	_ = ac.Bye(me.ctx)
	me.waitEnded(1)
}

// DialMonitor for a secure call offers RTP/SAVP with bib's key; a phone
// that answers SRTP gets the mix encrypted with that key; one that
// answers plain RTP is hung up and the dial fails.
func TestSRTPDialMonitor(t *testing.T) {
	me := newMonEnv(t, nil)
	phone := me.party("3000")
	for _, answerSecure := range []bool{true, false} {
		m := newFakeMonMedia(t, me.eng)
		m.secure = true
		done := make(chan error, 1)
		go func() {
			_, err := me.srv.DialMonitor(me.ctx, MonitorDial{Target: "sip:3000@" + phone.SIPAddr.String(), Media: m})
			done <- err
		}()
		var in *siptest.Call
		select {
		case in = <-phone.Incoming:
		case <-me.ctx.Done():
			t.Fatal("phone got no INVITE")
		}
		_, keys, err := siptest.ParseCrypto(in.Invite.Body())
		if err != nil || len(keys) != 1 || !strings.Contains(string(in.Invite.Body()), "RTP/SAVP") {
			t.Fatalf("offer for a secure call:\n%s", in.Invite.Body())
		}
		opts := siptest.SDPOptions{Mode: "recvonly", Codecs: []string{"0"}}
		if answerSecure {
			opts.Proto, opts.Extra = "RTP/SAVP", siptest.CryptoLine(1, newKey(t))
		}
		if err := in.Answer(phone.SDP(opts)); err != nil {
			t.Fatal(err)
		}
		var derr error
		select {
		case derr = <-done:
		case <-me.ctx.Done():
			t.Fatal("DialMonitor did not return")
		}
		m.mu.Lock()
		k := m.key
		m.mu.Unlock()
		if answerSecure {
			if derr != nil || k == nil || !k.Equal(keys[0]) {
				t.Fatalf("secure answer: err %v, mix key matches offer: %v", derr, k != nil && k.Equal(keys[0]))
			}
			continue
		}
		if !errors.Is(derr, ErrMonitorAnswer) && (derr == nil || !strings.Contains(derr.Error(), "RTP/AVP")) {
			t.Fatalf("plain answer to a secure offer: %v", derr)
		}
		waitDone(t, me.ctx, in.Ended(), "BYE to the phone")
	}
}

// A blind transfer of a secure call: the new party gets the remaining
// party's key in its INVITE, the remaining party the new party's key in
// its re-INVITE, and SRTP then flows between them byte for byte.
func TestSRTPTransfer(t *testing.T) {
	b := newParty(t, "2001")
	target := newParty(t, "3001")
	e := newEnv(t, envOpts{routes: []Route{staticRoute(b, "2XXX"), staticRoute(target, "3XXX")}})
	a := e.party("1001")
	ka, kb, kc := newKey(t), newKey(t), newKey(t)
	a.Answers = siptest.SDPOptions{Proto: "RTP/SAVP", Extra: siptest.CryptoLine(1, ka)}
	got := answerNext(t, e.ctx, b, b.SDP(siptest.SDPOptions{Proto: "RTP/SAVP", Extra: siptest.CryptoLine(1, kb)}))
	ac, err := a.Invite(e.ctx, e.uri("2001"), a.SDP(siptest.SDPOptions{Proto: "RTP/SAVP", Extra: siptest.CryptoLine(1, ka)}))
	if err != nil {
		t.Fatal(err)
	}
	bc := recv(t, e.ctx, got)
	e.waitState(StateAnswered)
	gotT := answerNext(t, e.ctx, target, target.SDP(siptest.SDPOptions{Proto: "RTP/SAVP", Extra: siptest.CryptoLine(1, kc)}))
	mustStatus(t, nil, refer(t, bc, e, "<sip:3001@127.0.0.1>"), 202)
	tc := recv(t, e.ctx, gotT)
	if _, keys, _ := siptest.ParseCrypto(tc.Invite.Body()); len(keys) != 1 || !keys[0].Equal(ka) {
		t.Fatalf("the new party did not get the remaining party's key:\n%s", tc.Invite.Body())
	}
	var reinv []byte
	for reinv == nil {
		for _, r := range ac.InDialogRequests() {
			if strings.Contains(header(r.Req, "P-Asserted-Identity"), "3001") {
				reinv = r.Offer
			}
		}
		select {
		case <-e.ctx.Done():
			t.Fatal("no re-INVITE at the remaining party")
		case <-time.After(5 * time.Millisecond):
		}
	}
	if _, keys, _ := siptest.ParseCrypto(reinv); len(keys) != 1 || !keys[0].Equal(kc) {
		t.Fatalf("the remaining party did not get the new party's key:\n%s", reinv)
	}
	for cs := e.srv.Calls(); len(cs) != 1 || cs[0].Callee != "3001" || cs[0].State != StateAnswered; cs = e.srv.Calls() {
		select {
		case <-e.ctx.Done():
			t.Fatal("call not transferred")
		case <-time.After(5 * time.Millisecond):
		}
	}
	sa, _ := siptest.NewSRTP(ka, &kc)
	sc, _ := siptest.NewSRTP(kc, &ka)
	for i := range 10 {
		ac.SendRTP(sa.Seal(siptest.RTPPacket(0xA1, uint16(i), uint32(160*i), 0, bytes.Repeat([]byte{byte(i)}, 160))))
		tc.SendRTP(sc.Seal(siptest.RTPPacket(0xC3, uint16(i), uint32(160*i), 0, bytes.Repeat([]byte{byte(i)}, 160))))
	}
	gotC, err := target.WaitPackets(e.ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	gotA, err := a.WaitPackets(e.ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := sc.Open(gotC[i].Data); err != nil {
			t.Fatalf("new party cannot open packet %d: %v", i, err)
		}
		if _, err := sa.Open(gotA[i].Data); err != nil {
			t.Fatalf("remaining party cannot open packet %d: %v", i, err)
		}
	}
	_ = ac.Bye(e.ctx)
	e.waitEnded(1)
}
