package sip

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bib-project/bib/sip/siptest"
	sipmsg "github.com/emiago/sipgo/sip"
)

// waitNotify waits for a NOTIFY whose sipfrag starts with frag.
func waitNotify(t *testing.T, e *env, c *siptest.Call, frag string) *sipmsg.Request {
	t.Helper()
	for {
		for _, n := range c.Notifies() {
			if strings.HasPrefix(string(n.Body()), frag) {
				return n
			}
		}
		select {
		case <-e.ctx.Done():
			var got []string
			for _, n := range c.Notifies() {
				got = append(got, strings.TrimSpace(string(n.Body())))
			}
			t.Fatalf("no NOTIFY %q; got %q", frag, got)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// until491 sends a request again while bib answers 491 (still finishing
// the previous offer/answer) and returns the first other response.
func until491(t *testing.T, what string, send func() (*sipmsg.Response, error)) *sipmsg.Response {
	t.Helper()
	for {
		res, err := send()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if res.StatusCode != 491 {
			return res
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// refer sends REFER until bib takes it (see until491).
func refer(t *testing.T, c *siptest.Call, e *env, to string) *sipmsg.Response {
	t.Helper()
	return until491(t, "REFER "+to, func() (*sipmsg.Response, error) { return c.Refer(e.ctx, to) })
}

// Blind transfer: the callee (2001) transfers the caller (1001) to 3001.
// The caller never leaves its dialog or bib's media ports; the new party
// gets an INVITE carrying the caller's identity and Referred-By; the
// transferor gets 202, NOTIFY 100 and 200, and a BYE; the caller gets a
// re-INVITE naming its new peer; media then flows caller <-> target byte
// for byte; OnTransfer reports it.
func TestBlindTransfer(t *testing.T) {
	b := newParty(t, "2001")
	target := newParty(t, "3001")
	var mu sync.Mutex
	var transfers []TransferInfo
	var infos []CallInfo
	e := newEnv(t, envOpts{
		routes: []Route{staticRoute(b, "2XXX"), staticRoute(target, "3XXX")},
		hooks: func(s *Server) {
			s.OnTransfer = func(ci CallInfo, ti TransferInfo) {
				mu.Lock()
				transfers, infos = append(transfers, ti), append(infos, ci)
				mu.Unlock()
			}
		},
	})
	a, ac, bc := agentCall(t, e, b)
	exchange(t, e.ctx, a, ac, b, bc, 5, 1)
	legB := bc.RemoteRTP() // bib's address facing the transferor

	// The transferor holds the caller first, as phones do.
	res, err := bc.ReInvite(e.ctx, b.SDP(siptest.SDPOptions{Mode: "sendonly"}))
	mustStatus(t, err, res, 200)
	e.waitState(StateHeld)

	// A transfer to nobody fails with a clear status and changes nothing.
	if res := refer(t, bc, e, "<sip:9999@example.invalid>"); res.StatusCode != 404 {
		t.Fatalf("REFER to an unroutable user: %v", res)
	}
	// Attended transfer is refused.
	if res := refer(t, bc, e, "<sip:3001@127.0.0.1?Replaces=abc%3Bto-tag%3D1%3Bfrom-tag%3D2>"); res.StatusCode != 501 {
		t.Fatalf("REFER with Replaces: %v", res)
	}

	gotT := answerNext(t, e.ctx, target, nil)
	mustStatus(t, nil, refer(t, bc, e, "<sip:3001@127.0.0.1>"), 202)
	tc := recv(t, e.ctx, gotT)
	if from := tc.Invite.From(); from == nil || from.Address.User != "1001" {
		t.Fatalf("target's INVITE From: %v", tc.Invite.From())
	}
	if rb := header(tc.Invite, "Referred-By"); !strings.Contains(rb, "2001") {
		t.Fatalf("target's INVITE Referred-By: %q", rb)
	}
	if m, _ := siptest.ParseSDP(tc.Invite.Body()); m.Mode != "sendrecv" || m.RTP != legB {
		t.Fatalf("offer to the target: %+v, want sendrecv at bib's %s", m, legB)
	}
	waitNotify(t, e, bc, "SIP/2.0 100")
	n := waitNotify(t, e, bc, "SIP/2.0 200")
	if ss := header(n, "Subscription-State"); !strings.HasPrefix(ss, "terminated") || header(n, "Event") != "refer" {
		t.Fatalf("final NOTIFY: Event %q Subscription-State %q", header(n, "Event"), ss)
	}
	waitDone(t, e.ctx, bc.Ended(), "BYE to the transferor")

	// The caller is taken off hold and told who it talks to.
	var reinv siptest.InDialog
	for reinv.Req == nil {
		for _, r := range ac.InDialogRequests() {
			if strings.Contains(header(r.Req, "P-Asserted-Identity"), "3001") {
				reinv = r
			}
		}
		select {
		case <-e.ctx.Done():
			t.Fatal("no re-INVITE with the new identity at the caller")
		case <-time.After(5 * time.Millisecond):
		}
	}
	if m, _ := siptest.ParseSDP(reinv.Offer); m.Mode != "sendrecv" {
		t.Fatalf("caller's re-INVITE: %+v", m)
	}
	ci := e.waitState(StateAnswered)
	if ci.Caller != "1001" || ci.Callee != "3001" {
		t.Fatalf("call after transfer: %s", fmtInfo(ci))
	}
	exchange(t, e.ctx, a, ac, target, tc, 10, 2)
	mu.Lock()
	if len(transfers) != 1 || transfers[0].Side != 1 || transfers[0].Transferor.User != "2001" || transfers[0].Target.User != "3001" {
		t.Fatalf("OnTransfer: %+v", transfers)
	}
	mu.Unlock()

	// The transferor's late BYE (its dialog is gone) ends nothing.
	_ = bc.Bye(e.ctx)
	exchange(t, e.ctx, a, ac, target, tc, 3, 3)
	if err := tc.Bye(e.ctx); err != nil {
		t.Fatal(err)
	}
	waitDone(t, e.ctx, ac.Ended(), "BYE to the caller")
	ended := e.waitEnded(1)
	if ended[0].Callee != "3001" {
		t.Fatalf("ended call: %s", fmtInfo(ended[0]))
	}
}

// A transfer target that refuses: the transferor hears the failure in the
// NOTIFY and the original call goes on.
func TestBlindTransferRefused(t *testing.T) {
	b := newParty(t, "2001")
	target := newParty(t, "3001")
	e := newEnv(t, envOpts{routes: []Route{staticRoute(b, "2XXX"), staticRoute(target, "3XXX")}})
	a, ac, bc := agentCall(t, e, b)
	go func() {
		select {
		case in := <-target.Incoming:
			_ = in.Respond(486, "Busy Here", nil)
		case <-e.ctx.Done():
		}
	}()
	mustStatus(t, nil, refer(t, bc, e, "<sip:3001@127.0.0.1>"), 202)
	waitNotify(t, e, bc, "SIP/2.0 486")
	exchange(t, e.ctx, a, ac, b, bc, 5, 4)
	if ci := e.waitState(StateAnswered); ci.Callee != "2001" {
		t.Fatalf("call after a refused transfer: %s", fmtInfo(ci))
	}
	_ = ac.Bye(e.ctx)
	e.waitEnded(1)
}

// A far end that asserts a new identity in a re-INVITE or UPDATE: relayed
// (with the header) and reported once per change.
func TestIdentityChange(t *testing.T) {
	b := newParty(t, "2001")
	var mu sync.Mutex
	var ids []IdentityInfo
	e := newEnv(t, envOpts{
		routes: []Route{staticRoute(b, "2XXX")},
		hooks: func(s *Server) {
			s.OnIdentity = func(ci CallInfo, id IdentityInfo) {
				mu.Lock()
				ids = append(ids, id)
				mu.Unlock()
			}
		},
	})
	_, ac, bc := agentCall(t, e, b)
	pai := sipmsg.NewHeader("P-Asserted-Identity", `"Remote Agent" <sip:4002@remote.example>`)
	res, err := bc.ReInviteWith(e.ctx, b.SDP(siptest.SDPOptions{}), pai)
	mustStatus(t, err, res, 200)
	rs := eventuallyReqs(t, e.ctx, ac, 1, false)
	if !strings.Contains(header(rs[0].Req, "P-Asserted-Identity"), "4002") {
		t.Fatalf("relayed re-INVITE lacks the new identity: %q", header(rs[0].Req, "P-Asserted-Identity"))
	}
	// The same identity again is no change; an SDP-less UPDATE with another is.
	// bib may still be finishing the previous exchange (491: try again).
	mustStatus(t, nil, until491(t, "re-INVITE", func() (*sipmsg.Response, error) {
		return bc.ReInviteWith(e.ctx, b.SDP(siptest.SDPOptions{}), pai)
	}), 200)
	mustStatus(t, nil, until491(t, "UPDATE", func() (*sipmsg.Response, error) {
		return bc.UpdateWith(e.ctx, nil, sipmsg.NewHeader("P-Asserted-Identity", "<sip:4003@remote.example>"))
	}), 200)
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(ids)
		mu.Unlock()
		if n >= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(ids) != 2 || ids[0].New.User != "4002" || ids[0].New.Display != "Remote Agent" || ids[0].Old.User != "2001" || ids[1].New.User != "4003" || ids[1].Side != 1 {
		t.Fatalf("OnIdentity: %+v", ids)
	}
	if ci, _ := e.srv.Call(e.srv.Calls()[0].ID); ci.Callee != "4003" {
		t.Fatalf("callee after identity change: %s", fmtInfo(ci))
	}
	_ = ac.Bye(e.ctx)
	e.waitEnded(1)
}

// RFC 5589 section 6.1: the transferor may hang up as soon as its REFER is
// accepted. Its BYE ends only its own dialog; the transfer goes on, and if
// the new party then refuses, the remaining party is hung up (nobody is
// left to talk to).
func TestBlindTransferTransferorLeavesEarly(t *testing.T) {
	for _, answers := range []bool{true, false} {
		b := newParty(t, "2001")
		target := newParty(t, "3001")
		e := newEnv(t, envOpts{routes: []Route{staticRoute(b, "2XXX"), staticRoute(target, "3XXX")}})
		a, ac, bc := agentCall(t, e, b)
		ring := make(chan *siptest.Call, 1)
		go func() {
			select {
			case in := <-target.Incoming:
				ring <- in
			case <-e.ctx.Done():
			}
		}()
		mustStatus(t, nil, refer(t, bc, e, "<sip:3001@127.0.0.1>"), 202)
		if err := bc.Bye(e.ctx); err != nil {
			t.Fatalf("transferor's BYE: %v", err)
		}
		in := recv(t, e.ctx, ring)
		if !answers {
			_ = in.Respond(486, "Busy Here", nil)
			waitDone(t, e.ctx, ac.Ended(), "BYE to the remaining party after a failed transfer")
			e.waitEnded(1)
			continue
		}
		if err := in.Answer(target.SDP(siptest.SDPOptions{})); err != nil {
			t.Fatal(err)
		}
		for cs := e.srv.Calls(); len(cs) != 1 || cs[0].Callee != "3001"; cs = e.srv.Calls() {
			select {
			case <-e.ctx.Done():
				t.Fatal("call not transferred")
			case <-time.After(5 * time.Millisecond):
			}
		}
		e.waitState(StateAnswered)
		exchange(t, e.ctx, a, ac, target, in, 5, 7)
		_ = ac.Bye(e.ctx)
		e.waitEnded(1)
	}
}
