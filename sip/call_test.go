package sip

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bib-project/bib/bridge"
	"github.com/bib-project/bib/sip/siptest"
	"github.com/emiago/sipgo"
	sipmsg "github.com/emiago/sipgo/sip"
)

func TestCallStaticRouteByeFromA(t *testing.T) {
	callee := newParty(t, "2001")
	e := newEnv(t, envOpts{routes: []Route{staticRoute(callee, "2XXX")}})
	caller := e.party("1001")

	got := answerNext(t, e.ctx, callee, nil)
	ac, err := caller.Invite(e.ctx, e.uri("2001"), caller.SDP(siptest.SDPOptions{}))
	if err != nil {
		t.Fatalf("invite: %v", err)
	}
	bc := recv(t, e.ctx, got)

	// Media anchors on bib: each party talks to a bib leg, never to the other.
	if ac.RemoteRTP() == callee.RTPAddr || bc.RemoteRTP() == caller.RTPAddr {
		t.Fatal("media not anchored on bib")
	}
	if ac.RemoteRTP().Addr() != e.eng.IP() || bc.RemoteRTP().Addr() != e.eng.IP() {
		t.Fatalf("sdp addresses %s %s, want %s", ac.RemoteRTP(), bc.RemoteRTP(), e.eng.IP())
	}
	// Codecs kept end to end.
	if f := strings.Join(bc.Remote().Formats, " "); f != "0 8 9 101 13" {
		t.Fatalf("callee saw formats %q", f)
	}
	if !strings.Contains(string(bc.Invite.Body()), "a=fmtp:101 0-16") || !strings.Contains(string(bc.Invite.Body()), "a=ptime:20") {
		t.Fatalf("fmtp/ptime lost:\n%s", bc.Invite.Body())
	}
	if strings.Contains(string(bc.Invite.Body()), "o=1001") {
		t.Fatal("caller's origin leaked to callee")
	}

	exchange(t, e.ctx, caller, ac, callee, bc, 50, 1)

	calls := []CallInfo{e.waitState(StateAnswered)}
	if len(calls) != 1 || calls[0].State != StateAnswered || calls[0].Caller != "1001" || calls[0].Callee != "2001" {
		t.Fatalf("calls: %+v", calls)
	}
	if calls[0].RoutedBy != "routes[0]" || calls[0].Answer == nil || calls[0].CallIDA == calls[0].CallIDB {
		t.Fatalf("call info: %+v", calls[0])
	}
	st := calls[0].Media
	if st.Legs[0].PacketsIn != 50 || st.Legs[1].PacketsIn != 50 || st.Legs[0].PacketsOut != 50 || st.Legs[1].PacketsOut != 50 {
		t.Fatalf("counters: a=%+v b=%+v", st.Legs[0], st.Legs[1])
	}

	if err := ac.Bye(e.ctx); err != nil {
		t.Fatalf("bye: %v", err)
	}
	waitDone(t, e.ctx, bc.Ended(), "BYE at callee")
	ended := e.waitEnded(1)
	if ended[0].EndReason != "bye from a" || ended[0].State != StateEnded {
		t.Fatalf("ended: %s", fmtInfo(ended[0]))
	}
	if len(e.answered) != 1 {
		t.Fatalf("OnAnswered ran %d times", len(e.answered))
	}
}

func TestCallBothWaysRegistered(t *testing.T) {
	e := newEnv(t, envOpts{})
	alice := e.party("1001")
	bob := e.party("2001")
	for _, p := range []*siptest.Party{alice, bob} {
		res, err := p.Register(e.ctx, e.srv.Addr("udp"), 300)
		mustStatus(t, err, res, 200)
	}
	if regs := e.srv.Registrations(); len(regs) != 2 {
		t.Fatalf("registrations: %+v", regs)
	}

	t.Run("a to b early offer, bye from callee", func(t *testing.T) {
		n := len(e.endedCalls())
		got := answerNext(t, e.ctx, bob, nil)
		ac, err := alice.Invite(e.ctx, e.uri("2001"), alice.SDP(siptest.SDPOptions{}))
		if err != nil {
			t.Fatalf("invite: %v", err)
		}
		bc := recv(t, e.ctx, got)
		if ci := []CallInfo{e.waitState(StateAnswered)}; ci[0].RoutedBy != "registrar" {
			t.Fatalf("calls: %+v", ci)
		}
		exchange(t, e.ctx, alice, ac, bob, bc, 20, 2)
		if err := bc.Bye(e.ctx); err != nil {
			t.Fatalf("bye: %v", err)
		}
		waitDone(t, e.ctx, ac.Ended(), "BYE at caller")
		if ended := e.waitEnded(n + 1); ended[n].EndReason != "bye from b" {
			t.Fatalf("ended: %s", fmtInfo(ended[n]))
		}
	})
	t.Run("b to a delayed offer, bye from caller", func(t *testing.T) {
		n := len(e.endedCalls())
		got := answerNext(t, e.ctx, alice, nil)
		bc, err := bob.Invite(e.ctx, e.uri("1001"), nil)
		if err != nil {
			t.Fatalf("invite: %v", err)
		}
		ac := recv(t, e.ctx, got)
		if len(ac.Invite.Body()) != 0 {
			t.Fatal("delayed offer INVITE reached the callee with a body")
		}
		if !bc.RemoteRTP().IsValid() || !ac.RemoteRTP().IsValid() {
			t.Fatalf("media not negotiated: caller %v callee %v", bc.Remote(), ac.Remote())
		}
		e.waitState(StateAnswered)
		exchange(t, e.ctx, bob, bc, alice, ac, 20, 3)
		if err := bc.Bye(e.ctx); err != nil {
			t.Fatalf("bye: %v", err)
		}
		waitDone(t, e.ctx, ac.Ended(), "BYE at callee")
		if ended := e.waitEnded(n + 1); ended[n].EndReason != "bye from a" {
			t.Fatalf("ended: %s", fmtInfo(ended[n]))
		}
	})
}

func TestEarlyMediaAnchored(t *testing.T) {
	callee := newParty(t, "2001")
	e := newEnv(t, envOpts{routes: []Route{staticRoute(callee, "*")}})
	caller := e.party("1001")
	go func() {
		in := <-callee.Incoming
		_ = in.Respond(183, "Session Progress", callee.SDP(siptest.SDPOptions{}))
		// bib anchors the callee's early media once it has processed the 183.
		e.waitState(StateEarly)
		// Early media callee -> caller before the answer.
		for i := range 5 {
			_ = in.SendRTP(siptest.RTPPacket(7, uint16(i), uint32(i*160), 0, []byte("early-media-payload")))
		}
		if _, err := caller.WaitPackets(e.ctx, 5); err != nil {
			t.Error(err)
		}
		_ = in.Answer(callee.SDP(siptest.SDPOptions{}))
	}()
	ac, err := caller.Invite(e.ctx, e.uri("777"), caller.SDP(siptest.SDPOptions{}))
	if err != nil {
		t.Fatalf("invite: %v", err)
	}
	var early *sipmsg.Response
	for _, r := range ac.Provisional() {
		if r.StatusCode == 183 {
			early = r
		}
	}
	if early == nil || len(early.Body()) == 0 {
		t.Fatalf("no 183 with sdp: %v", ac.Provisional())
	}
	m, err := siptest.ParseSDP(early.Body())
	if err != nil || m.RTP == callee.RTPAddr || m.RTP.Addr() != e.eng.IP() {
		t.Fatalf("183 sdp not anchored: %v %v", m, err)
	}
	got := caller.Received()
	for i, r := range got[:5] {
		if string(r.Data[12:]) != "early-media-payload" || r.From != m.RTP {
			t.Fatalf("early packet %d: %x from %s", i, r.Data, r.From)
		}
	}
	_ = ac.Bye(e.ctx)
	e.waitEnded(1)
}

func TestHoldResumeReinvite(t *testing.T) {
	callee := newParty(t, "2001")
	e := newEnv(t, envOpts{routes: []Route{staticRoute(callee, "2XXX")}})
	caller := e.party("1001")
	got := answerNext(t, e.ctx, callee, nil)
	ac, err := caller.Invite(e.ctx, e.uri("2001"), caller.SDP(siptest.SDPOptions{}))
	if err != nil {
		t.Fatal(err)
	}
	bc := recv(t, e.ctx, got)
	e.waitState(StateAnswered)
	exchange(t, e.ctx, caller, ac, callee, bc, 5, 1)

	// Hold: caller offers sendonly; the callee sees sendonly and answers recvonly.
	res, err := ac.ReInvite(e.ctx, caller.SDP(siptest.SDPOptions{Mode: "sendonly"}))
	mustStatus(t, err, res, 200)
	if m := ac.Remote(); m.Mode != "recvonly" || m.RTP.Addr() != e.eng.IP() {
		t.Fatalf("hold answer at caller: %+v", m)
	}
	rs := eventuallyReqs(t, e.ctx, bc, 1, false)
	if len(rs) != 1 || !strings.Contains(string(rs[0].Offer), "a=sendonly") {
		t.Fatalf("callee got %d re-INVITEs: %+v", len(rs), rs)
	}
	if ci := e.waitState(StateHeld); !ci.Media.Held {
		t.Fatalf("state after hold: %s held=%v", ci.State, ci.Media.Held)
	}
	// Resume.
	res, err = ac.ReInvite(e.ctx, caller.SDP(siptest.SDPOptions{Mode: "sendrecv"}))
	mustStatus(t, err, res, 200)
	if m := ac.Remote(); m.Mode != "sendrecv" {
		t.Fatalf("resume answer: %+v", m)
	}
	if ci := e.waitState(StateAnswered); ci.Media.Held {
		t.Fatal("held after resume")
	}
	exchange(t, e.ctx, caller, ac, callee, bc, 5, 2)

	// Hold from the callee side too, inactive.
	res, err = bc.ReInvite(e.ctx, callee.SDP(siptest.SDPOptions{Mode: "inactive"}))
	mustStatus(t, err, res, 200)
	if m := bc.Remote(); m.Mode != "inactive" {
		t.Fatalf("inactive answer: %+v", m)
	}
	e.waitState(StateHeld)
	res, err = bc.ReInvite(e.ctx, callee.SDP(siptest.SDPOptions{}))
	mustStatus(t, err, res, 200)
	exchange(t, e.ctx, caller, ac, callee, bc, 5, 3)
	_ = bc.Bye(e.ctx)
	e.waitEnded(1)
}

func TestSDPLessReinviteAndUpdate(t *testing.T) {
	callee := newParty(t, "2001")
	e := newEnv(t, envOpts{routes: []Route{staticRoute(callee, "2XXX")}})
	caller := e.party("1001")
	got := answerNext(t, e.ctx, callee, nil)
	ac, err := caller.Invite(e.ctx, e.uri("2001"), caller.SDP(siptest.SDPOptions{}))
	if err != nil {
		t.Fatal(err)
	}
	bc := recv(t, e.ctx, got)
	e.waitState(StateAnswered)

	t.Run("sdp-less re-invite", func(t *testing.T) {
		res, err := ac.ReInvite(e.ctx, nil)
		mustStatus(t, err, res, 200)
		if len(res.Body()) == 0 {
			t.Fatal("200 to SDP-less re-INVITE has no offer")
		}
		rs := eventuallyReqs(t, e.ctx, bc, 1, true)
		if len(rs) != 1 || len(rs[0].Offer) != 0 {
			t.Fatalf("callee re-INVITEs: %+v", rs)
		}
		// The caller's answer (sent in its ACK) must reach the callee in bib's ACK.
		if len(rs[0].AckBody) == 0 || !strings.Contains(string(rs[0].AckBody), "m=audio") {
			t.Fatalf("callee got no answer in ACK: %q", rs[0].AckBody)
		}
		exchange(t, e.ctx, caller, ac, callee, bc, 5, 4)
	})
	t.Run("update", func(t *testing.T) {
		res, err := bc.Update(e.ctx, callee.SDP(siptest.SDPOptions{Mode: "sendonly"}))
		mustStatus(t, err, res, 200)
		if m := bc.Remote(); m.Mode != "recvonly" {
			t.Fatalf("update answer: %+v", m)
		}
		rs := eventuallyReqs(t, e.ctx, ac, 1, false)
		if len(rs) != 1 || rs[0].Req.Method != sipmsg.UPDATE {
			t.Fatalf("caller in-dialog requests: %+v", rs)
		}
		e.waitState(StateHeld)
		res, err = bc.Update(e.ctx, callee.SDP(siptest.SDPOptions{}))
		mustStatus(t, err, res, 200)
		exchange(t, e.ctx, caller, ac, callee, bc, 5, 5)
	})
	_ = ac.Bye(e.ctx)
	e.waitEnded(1)
}

func TestCancelBeforeAnswer(t *testing.T) {
	callee := newParty(t, "2001")
	e := newEnv(t, envOpts{routes: []Route{staticRoute(callee, "2XXX")}})
	caller := e.party("1001")
	ringing := make(chan *siptest.Call, 1)
	go func() {
		in := <-callee.Incoming
		_ = in.Respond(180, "Ringing", nil)
		ringing <- in
	}()
	ctx, cancel := context.WithCancel(e.ctx)
	type result struct {
		c   *siptest.Call
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := caller.Invite(ctx, e.uri("2001"), caller.SDP(siptest.SDPOptions{}))
		done <- result{c, err}
	}()
	in := recv(t, e.ctx, ringing)
	cancel()
	waitDone(t, e.ctx, in.Cancelled(), "CANCEL at callee")
	r := <-done
	if r.err == nil {
		t.Fatal("cancelled invite succeeded")
	}
	if res := r.c.Response(); res == nil || res.StatusCode != 487 {
		t.Fatalf("caller final response: %v (err %v)", res, r.err)
	}
	if ended := e.waitEnded(1); ended[0].EndReason != "cancelled by a" {
		t.Fatalf("ended: %s", fmtInfo(ended[0]))
	}
}

func TestFailures(t *testing.T) {
	callee := newParty(t, "2001")
	silent := newParty(t, "3001")
	e := newEnv(t, envOpts{
		routes: []Route{staticRoute(callee, "2XXX"), staticRoute(silent, "3XXX")},
		cfg:    func(c *Config) { c.RingTimeout = bridge.Duration(300 * time.Millisecond) },
	})
	caller := e.party("1001")
	invite := func(user string, body []byte) (*siptest.Call, error) {
		return caller.Invite(e.ctx, e.uri(user), body)
	}
	status := func(c *siptest.Call, err error) *sipmsg.Response {
		t.Helper()
		var dr *sipgo.ErrDialogResponse
		if !errors.As(err, &dr) {
			t.Fatalf("want a failure response, got %v", err)
		}
		return dr.Res
	}

	t.Run("486 mapped back", func(t *testing.T) {
		go func() {
			in := <-callee.Incoming
			_ = in.Respond(486, "Busy Here", nil)
		}()
		res := status(invite("2001", caller.SDP(siptest.SDPOptions{})))
		if res.StatusCode != 486 || res.Reason != "Busy Here" {
			t.Fatalf("got %s", res.StartLine())
		}
	})
	t.Run("404 no route", func(t *testing.T) {
		res := status(invite("999", caller.SDP(siptest.SDPOptions{})))
		if res.StatusCode != 404 || !strings.Contains(header(res, "Warning"), `399 bib "no route to 999"`) {
			t.Fatalf("got %s warning %q", res.StartLine(), header(res, "Warning"))
		}
	})
	t.Run("408 ring timeout, CANCEL to callee", func(t *testing.T) {
		rang := make(chan *siptest.Call, 1)
		go func() {
			in := <-silent.Incoming
			_ = in.Respond(180, "Ringing", nil)
			rang <- in
		}()
		res := status(invite("3001", caller.SDP(siptest.SDPOptions{})))
		if res.StatusCode != 408 || !strings.Contains(header(res, "Warning"), "ring_timeout") {
			t.Fatalf("got %s warning %q", res.StartLine(), header(res, "Warning"))
		}
		in := recv(t, e.ctx, rang)
		waitDone(t, e.ctx, in.Cancelled(), "CANCEL at callee")
	})
	t.Run("488 for SRTP and no audio", func(t *testing.T) {
		for _, tc := range []struct {
			body []byte
			warn string
		}{
			{caller.SDP(siptest.SDPOptions{Proto: "RTP/SAVP"}), `302 bib "RTP/SAVP audio without an a=crypto suite bib supports`},
			{[]byte("v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=video 4000 RTP/AVP 96\r\n"), `304 bib "no audio stream`},
			{[]byte("this is not sdp"), `399 bib "malformed sdp`},
		} {
			res := status(invite("2001", tc.body))
			if res.StatusCode != 488 || !strings.HasPrefix(header(res, "Warning"), tc.warn) {
				t.Errorf("got %s warning %q, want 488 %q", res.StartLine(), header(res, "Warning"), tc.warn)
			}
		}
	})
	e.waitEnded(2)
	if n := e.srv.Counters().CallsRejected; n < 4 {
		t.Fatalf("rejected counter %d", n)
	}
}

func TestPortExhaustion503(t *testing.T) {
	callee := newParty(t, "2001")
	// Two pairs: room for one call only.
	e := newEnv(t, envOpts{routes: []Route{staticRoute(callee, "2XXX")}, media: bridge.Config{RTPPorts: "41000-41003"}})
	caller := e.party("1001")
	got := answerNext(t, e.ctx, callee, nil)
	ac, err := caller.Invite(e.ctx, e.uri("2001"), caller.SDP(siptest.SDPOptions{}))
	if err != nil {
		t.Skipf("first call could not get ports (range busy on this host?): %v", err)
	}
	recv(t, e.ctx, got)
	_, err = caller.Invite(e.ctx, e.uri("2002"), caller.SDP(siptest.SDPOptions{}))
	var dr *sipgo.ErrDialogResponse
	if !errors.As(err, &dr) || dr.Res.StatusCode != 503 || header(dr.Res, "Retry-After") == "" ||
		!strings.Contains(header(dr.Res, "Warning"), "no free RTP port") {
		t.Fatalf("want 503 with Retry-After and Warning, got %v", err)
	}
	_ = ac.Bye(e.ctx)
	e.waitEnded(1)
}

// eventuallyReqs waits until party call c has recorded n in-dialog
// requests (and, with ack, the last one's ACK body).
func eventuallyReqs(t *testing.T, ctx context.Context, c *siptest.Call, n int, ack bool) []siptest.InDialog {
	t.Helper()
	for {
		rs := c.InDialogRequests()
		if len(rs) >= n && (!ack || len(rs[n-1].AckBody) > 0) {
			return rs
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %d in-dialog requests: have %d", n, len(rs))
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func TestAuthorizeHook(t *testing.T) {
	callee := newParty(t, "2001")
	var mu sync.Mutex
	var seen *InviteInfo
	e := newEnv(t, envOpts{routes: []Route{staticRoute(callee, "2XXX")}, hooks: func(s *Server) {
		s.Authorize = func(req *InviteInfo) error {
			mu.Lock()
			seen = req
			mu.Unlock()
			if req.Callee == "2666" {
				return &StatusError{Code: 403, Warning: "barge is not allowed"}
			}
			return errors.New("plain error")
		}
	}})
	caller := e.party("1001")
	_, err := caller.Invite(e.ctx, e.uri("2666"), caller.SDP(siptest.SDPOptions{}))
	var dr *sipgo.ErrDialogResponse
	if !errors.As(err, &dr) || dr.Res.StatusCode != 403 || header(dr.Res, "Warning") != `399 bib "barge is not allowed"` {
		t.Fatalf("got %v", err)
	}
	mu.Lock()
	info := seen
	mu.Unlock()
	if info == nil || info.Caller != "1001" || !info.HasSDP || info.Transport != "UDP" || info.Header("Call-ID") == "" {
		t.Fatalf("InviteInfo %+v", info)
	}
	_, err = caller.Invite(e.ctx, e.uri("2001"), caller.SDP(siptest.SDPOptions{}))
	if !errors.As(err, &dr) || dr.Res.StatusCode != 403 || !strings.Contains(header(dr.Res, "Warning"), "plain error") {
		t.Fatalf("got %v", err)
	}
}
