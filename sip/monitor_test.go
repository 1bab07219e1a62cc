package sip

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bib-project/bib/bridge"
	"github.com/bib-project/bib/sip/siptest"
	"github.com/emiago/sipgo"
	sipmsg "github.com/emiago/sipgo/sip"
)

// fakeMonMedia is a MonitorMedia around a real bridge.SupervisorLeg (real
// sockets, real drop counting) with no mixer: the test closes done to play
// the end of the monitored call.
type fakeMonMedia struct {
	leg  *bridge.SupervisorLeg
	done chan struct{}

	secure bool // the monitored call is SRTP

	mu      sync.Mutex
	key     *bridge.SRTPKey
	remotes []bridge.MediaDesc
	reason  string
	closed  chan struct{}
}

func newFakeMonMedia(t *testing.T, eng *bridge.Engine) *fakeMonMedia {
	t.Helper()
	leg, err := bridge.NewSupervisorLeg(eng, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := &fakeMonMedia{leg: leg, done: make(chan struct{}), closed: make(chan struct{})}
	t.Cleanup(func() { m.Close("test end") })
	return m
}

func (m *fakeMonMedia) Local() (rtp, rtcp netip.AddrPort) { return m.leg.Local() }
func (m *fakeMonMedia) SetRemote(d bridge.MediaDesc) (bridge.Codec, error) {
	m.mu.Lock()
	m.remotes = append(m.remotes, d)
	m.mu.Unlock()
	return m.leg.SetRemote(d)
}
func (m *fakeMonMedia) Done() <-chan struct{} { return m.done }
func (m *fakeMonMedia) Secure() bool          { return m.secure }
func (m *fakeMonMedia) SetSRTP(k *bridge.SRTPKey) error {
	m.mu.Lock()
	m.key = k
	m.mu.Unlock()
	return m.leg.SetSRTP(k)
}
func (m *fakeMonMedia) Close(reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	select {
	case <-m.closed:
		return
	default:
	}
	m.reason = reason
	m.leg.Close()
	close(m.closed)
}

func (m *fakeMonMedia) lastRemote() bridge.MediaDesc {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.remotes) == 0 {
		return bridge.MediaDesc{}
	}
	return m.remotes[len(m.remotes)-1]
}

func (m *fakeMonMedia) closeReason() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.reason
}

// monEnv is bib with digest credentials for the supervisor "sup" (password
// "sup-pw") and a route for 2XXX to callee, and an OnMonitor hook that
// grants silent monitoring of line 1001 and refuses the rest the way
// cmd/bib does (403 with a reason).
type monEnv struct {
	*env
	secure bool // the monitored call is SRTP (set before the INVITE)
	mu     sync.Mutex
	reqs   []MonitorRequest
	media  []*fakeMonMedia
}

func newMonEnv(t *testing.T, callee *siptest.Party) *monEnv {
	t.Helper()
	me := &monEnv{}
	var routes []Route
	if callee != nil {
		routes = []Route{staticRoute(callee, "2XXX")}
	}
	me.env = newEnv(t, envOpts{routes: routes, hooks: func(s *Server) {
		creds := NewCredentials("bib")
		creds.AddPassword("sup", "sup-pw")
		s.sec.auth.creds = creds
		s.OnMonitor = func(ctx context.Context, r *MonitorRequest) (MonitorMedia, error) {
			me.mu.Lock()
			me.reqs = append(me.reqs, *r)
			me.mu.Unlock()
			if r.Mode != MonitorSilent {
				return nil, &StatusError{Code: 403, Warning: r.Mode + "_not_supported: " + r.Mode + " is refused by the gate"}
			}
			if r.Line != "1001" {
				return nil, &StatusError{Code: 403, Warning: "out_of_scope: line " + r.Line}
			}
			m := newFakeMonMedia(t, s.eng)
			me.mu.Lock()
			m.secure = me.secure
			me.media = append(me.media, m)
			me.mu.Unlock()
			return m, nil
		}
	}})
	// Serving has started once bib answers a request: only then does an
	// outgoing request reuse bib's listening socket.
	probe := me.party("probe")
	req := sipmsg.NewRequest(sipmsg.OPTIONS, me.uri("bib"))
	if res, err := probe.Cli.Do(me.ctx, req); err != nil || res.StatusCode != 200 {
		t.Fatalf("OPTIONS: %v %v", res, err)
	}
	return me
}

func (me *monEnv) lastReq(t *testing.T) MonitorRequest {
	t.Helper()
	me.mu.Lock()
	defer me.mu.Unlock()
	if len(me.reqs) == 0 {
		t.Fatal("OnMonitor was not called")
	}
	return me.reqs[len(me.reqs)-1]
}

func (me *monEnv) lastMedia(t *testing.T) *fakeMonMedia {
	t.Helper()
	me.mu.Lock()
	defer me.mu.Unlock()
	if len(me.media) == 0 {
		t.Fatal("no monitoring media")
	}
	return me.media[len(me.media)-1]
}

// supervisor is a party that authenticates as "sup".
func (me *monEnv) supervisor(password string) *siptest.Party {
	p := me.party("sup")
	p.AuthUser, p.AuthPassword = "sup", password
	return p
}

// agentCall connects 1001 to 2001 through bib.
func agentCall(t *testing.T, e *env, callee *siptest.Party) (agent *siptest.Party, ac, bc *siptest.Call) {
	t.Helper()
	agent = e.party("1001")
	got := answerNext(t, e.ctx, callee, nil)
	ac, err := agent.Invite(e.ctx, e.uri("2001"), agent.SDP(siptest.SDPOptions{}))
	if err != nil {
		t.Fatal(err)
	}
	bc = recv(t, e.ctx, got)
	e.waitState(StateAnswered)
	return agent, ac, bc
}

func noSignalling(t *testing.T, calls ...*siptest.Call) {
	t.Helper()
	for i, c := range calls {
		if r := c.InDialogRequests(); len(r) != 0 {
			t.Fatalf("agent call leg %d saw %d in-dialog requests: monitoring must not signal the call", i, len(r))
		}
		if c.ByeRequest() != nil {
			t.Fatalf("agent call leg %d got BYE", i)
		}
	}
}

// TestMonitorDialIn: the supervisor dials monitor-1001 with a sendrecv
// offer, authenticates, gets a sendonly answer; what it sends is dropped;
// hold and resume re-INVITEs keep bib sendonly/inactive; its BYE ends only
// the monitoring session; the agent's call sees no signalling.
func TestMonitorDialIn(t *testing.T) {
	callee := newParty(t, "2001")
	me := newMonEnv(t, callee)
	agent, ac, bc := agentCall(t, me.env, callee)
	sup := me.supervisor("sup-pw")

	sc, err := sup.Invite(me.ctx, me.uri("monitor-1001"), sup.SDP(siptest.SDPOptions{Codecs: []string{"8", "0", "101"}}))
	if err != nil {
		t.Fatalf("monitor invite: %v", err)
	}
	r := me.lastReq(t)
	if r.Line != "1001" || r.Mode != MonitorSilent || r.User != "sup" || r.Offer == nil || r.ModeFrom != "" {
		t.Fatalf("hook saw %+v", r)
	}
	m := me.lastMedia(t)
	ans, err := siptest.ParseSDP(sc.Response().Body())
	if err != nil {
		t.Fatal(err)
	}
	local, _ := m.leg.Local()
	if ans.Mode != "sendonly" || ans.RTP != local || strings.Join(ans.Formats, " ") != "8" {
		t.Fatalf("answer: mode %s rtp %s (leg %s) formats %v\n%s", ans.Mode, ans.RTP, local, ans.Formats, ans.Raw)
	}
	if c := m.leg.Codec(); c.Name != "PCMA" || m.lastRemote().RTP != sup.RTPAddr {
		t.Fatalf("leg codec %+v remote %+v", c, m.lastRemote())
	}
	// Everything the supervisor sends is dropped and counted.
	for i := range 10 {
		if err := sc.SendRTP(siptest.RTPPacket(0x5, uint16(i), uint32(160*i), 8, make([]byte, 160))); err != nil {
			t.Fatal(err)
		}
	}
	for m.leg.Dropped() < 10 {
		select {
		case <-me.ctx.Done():
			t.Fatalf("dropped %d of 10", m.leg.Dropped())
		case <-time.After(2 * time.Millisecond):
		}
	}
	// Hold: the supervisor offers sendonly, bib answers inactive; resume.
	for _, x := range []struct{ offer, want string }{{"sendonly", "inactive"}, {"inactive", "inactive"}, {"sendrecv", "sendonly"}, {"recvonly", "sendonly"}} {
		res, err := sc.ReInvite(me.ctx, sup.SDP(siptest.SDPOptions{Mode: x.offer, Codecs: []string{"0", "8"}}))
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("re-INVITE %s: %v %v", x.offer, res, err)
		}
		got, _ := siptest.ParseSDP(res.Body())
		if got.Mode != x.want || strings.Join(got.Formats, " ") != "8" {
			t.Fatalf("re-INVITE %s answered %s %v, want %s with the codec kept", x.offer, got.Mode, got.Formats, x.want)
		}
		if d := m.lastRemote(); d.Codecs[0].Name != "PCMA" {
			t.Fatalf("codec not pinned: %+v", d.Codecs)
		}
	}
	// A codec change is refused: the leg keeps its codec.
	res, err := sc.ReInvite(me.ctx, sup.SDP(siptest.SDPOptions{Codecs: []string{"0"}}))
	mustStatus(t, err, res, 488)
	if calls := me.srv.Calls(); len(calls) != 1 {
		t.Fatalf("monitoring must not create a call: %d calls", len(calls))
	}
	if k := me.srv.MonitorCounters(); k.Active != 1 || k.Started != 1 {
		t.Fatalf("counters %+v", k)
	}
	if err := sc.Bye(me.ctx); err != nil {
		t.Fatal(err)
	}
	waitDone(t, me.ctx, m.closed, "media close")
	if m.closeReason() != "supervisor hung up" {
		t.Fatalf("close reason %q", m.closeReason())
	}
	if k := me.srv.MonitorCounters(); k.Active != 0 {
		t.Fatalf("counters after BYE %+v", k)
	}
	// The call goes on: media still flows both ways, and neither party saw
	// any signalling about the monitoring.
	exchange(t, me.ctx, agent, ac, callee, bc, 5, 0x42)
	noSignalling(t, ac, bc)
	if err := ac.Bye(me.ctx); err != nil {
		t.Fatal(err)
	}
	me.waitEnded(1)
}

// TestMonitorEndsWithCall: when the monitored call ends (the media's Done
// closes), bib sends BYE to the supervisor.
func TestMonitorEndsWithCall(t *testing.T) {
	me := newMonEnv(t, nil)
	sup := me.supervisor("sup-pw")
	sc, err := sup.Invite(me.ctx, me.uri("monitor-1001"), sup.SDP(siptest.SDPOptions{Mode: "recvonly"}))
	if err != nil {
		t.Fatal(err)
	}
	m := me.lastMedia(t)
	close(m.done)
	waitDone(t, me.ctx, sc.Ended(), "BYE to the supervisor")
	if bye := sc.ByeRequest(); bye == nil || !strings.Contains(header(bye, "Reason"), "monitored call ended") {
		t.Fatalf("bye %v", bye)
	}
	waitDone(t, me.ctx, m.closed, "media close")
}

// TestMonitorDelayedOffer: an INVITE without SDP gets bib's sendonly offer
// in the 200; the supervisor's answer arrives in the ACK.
func TestMonitorDelayedOffer(t *testing.T) {
	me := newMonEnv(t, nil)
	sup := me.supervisor("sup-pw")
	sc, err := sup.Invite(me.ctx, me.uri("MONITOR-1001"), nil)
	if err != nil {
		t.Fatal(err)
	}
	off, err := siptest.ParseSDP(sc.Response().Body())
	if err != nil {
		t.Fatal(err)
	}
	if off.Mode != "sendonly" || strings.Join(off.Formats, " ") != "0 8 9" {
		t.Fatalf("offer %s %v", off.Mode, off.Formats)
	}
	m := me.lastMedia(t)
	for m.lastRemote().RTP != sup.RTPAddr {
		select {
		case <-me.ctx.Done():
			t.Fatalf("answer in the ACK not applied: %+v", m.lastRemote())
		case <-time.After(2 * time.Millisecond):
		}
	}
	if d := m.lastRemote(); d.Mode != bridge.RecvOnly || m.leg.Codec().Name != "PCMU" {
		t.Fatalf("remote %+v codec %+v", d, m.leg.Codec())
	}
	if err := sc.Bye(me.ctx); err != nil {
		t.Fatal(err)
	}
	waitDone(t, me.ctx, m.closed, "media close")
}

// TestMonitorRefusals: whisper and barge in every form, an offer that
// cannot receive, a line the hook refuses, bad and missing credentials.
func TestMonitorRefusals(t *testing.T) {
	me := newMonEnv(t, nil)
	cases := []struct {
		name     string
		user     string
		password string
		hdrs     []sipmsg.Header
		sdp      siptest.SDPOptions
		code     int
		warning  string
		mode     string // mode the hook saw ("" = hook not called)
		modeFrom string
	}{
		{"whisper prefix", "whisper-1001", "sup-pw", nil, siptest.SDPOptions{}, 403, "whisper_not_supported", MonitorWhisper, "prefix"},
		{"barge prefix", "Barge-1001", "sup-pw", nil, siptest.SDPOptions{}, 403, "barge_not_supported", MonitorBarge, "prefix"},
		{"mode header", "monitor-1001", "sup-pw", []sipmsg.Header{sipmsg.NewHeader("X-Monitor-Mode", "Whisper")}, siptest.SDPOptions{}, 403, "whisper_not_supported", MonitorWhisper, "X-Monitor-Mode"},
		{"call-info purpose", "monitor-1001", "sup-pw", []sipmsg.Header{sipmsg.NewHeader("Call-Info", "<sip:bib>;purpose=barge")}, siptest.SDPOptions{}, 403, "barge_not_supported", MonitorBarge, "Call-Info"},
		{"join header", "monitor-1001", "sup-pw", []sipmsg.Header{sipmsg.NewHeader("Join", "abc@host;to-tag=1;from-tag=2")}, siptest.SDPOptions{}, 403, "barge_not_supported", MonitorBarge, "Join"},
		{"out of scope", "monitor-1002", "sup-pw", nil, siptest.SDPOptions{}, 403, "out_of_scope", MonitorSilent, ""},
		{"sendonly offer", "monitor-1001", "sup-pw", nil, siptest.SDPOptions{Mode: "sendonly"}, 488, "only receives", MonitorSilent, ""},
		{"no common codec", "monitor-1001", "sup-pw", nil, siptest.SDPOptions{Codecs: []string{"18"}}, 488, "no common codec", MonitorSilent, ""},
		{"bad password", "monitor-1001", "wrong", nil, siptest.SDPOptions{}, 403, "authentication failed", "", ""},
		{"no credentials", "monitor-1001", "", nil, siptest.SDPOptions{}, 401, "", "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			me.mu.Lock()
			before := len(me.reqs)
			me.mu.Unlock()
			sup := me.supervisor(c.password)
			_, err := sup.Invite(me.ctx, me.uri(c.user), sup.SDP(c.sdp), c.hdrs...)
			var de *sipgo.ErrDialogResponse
			if !errors.As(err, &de) {
				t.Fatalf("want %d, got %v", c.code, err)
			}
			mustStatus(t, err, de.Res, c.code)
			if w := header(de.Res, "Warning"); !strings.Contains(w, c.warning) || (c.warning != "" && !strings.HasPrefix(w, "399 bib \"") && !strings.HasPrefix(w, "305 bib \"")) {
				t.Fatalf("Warning %q, want %q", w, c.warning)
			}
			if c.code == 401 && header(de.Res, "WWW-Authenticate") == "" {
				t.Fatal("401 without a challenge")
			}
			me.mu.Lock()
			reqs := me.reqs[before:]
			me.mu.Unlock()
			if c.mode == "" {
				if len(reqs) != 0 {
					t.Fatalf("hook called for an unauthenticated request: %+v", reqs)
				}
				return
			}
			if len(reqs) != 1 || reqs[0].Mode != c.mode || reqs[0].ModeFrom != c.modeFrom || reqs[0].User != "sup" {
				t.Fatalf("hook saw %+v", reqs)
			}
		})
	}
	if k := me.srv.MonitorCounters(); k.Active != 0 || k.Refused < uint64(len(cases)) {
		t.Fatalf("counters %+v", k)
	}
}

// TestMonitorWithoutHook: with no OnMonitor hook, monitoring INVITEs are
// refused, never routed.
func TestMonitorWithoutHook(t *testing.T) {
	callee := newParty(t, "monitor-1001")
	e := newEnv(t, envOpts{routes: []Route{staticRoute(callee, "*")}, hooks: func(s *Server) {
		creds := NewCredentials("bib")
		creds.AddPassword("sup", "sup-pw")
		s.sec.auth.creds = creds
	}})
	sup := e.party("sup")
	sup.AuthUser, sup.AuthPassword = "sup", "sup-pw"
	_, err := sup.Invite(e.ctx, e.uri("monitor-1001"), sup.SDP(siptest.SDPOptions{}))
	var de *sipgo.ErrDialogResponse
	if !errors.As(err, &de) || de.Res.StatusCode != 403 {
		t.Fatalf("got %v", err)
	}
	select {
	case <-callee.Incoming:
		t.Fatal("a monitoring INVITE was routed")
	default:
	}
}

// TestDialMonitor: bib calls the supervisor's phone (the API-initiated
// flow) with a sendonly offer and auto-answer headers; Hangup sends BYE.
// A second dialog ends from the phone's side.
func TestDialMonitor(t *testing.T) {
	me := newMonEnv(t, nil)
	phone := me.party("3000")
	for _, phoneHangs := range []bool{false, true} {
		m := newFakeMonMedia(t, me.eng)
		type result struct {
			d   *MonitorDialog
			err error
		}
		done := make(chan result, 1)
		go func() {
			d, err := me.srv.DialMonitor(me.ctx, MonitorDial{Target: "sip:3000@" + phone.SIPAddr.String(), FromUser: "monitor-1001", FromName: "Monitoring 1001", Media: m})
			done <- result{d, err}
		}()
		var in *siptest.Call
		select {
		case in = <-phone.Incoming:
		case r := <-done:
			t.Fatalf("DialMonitor returned before the phone rang: %v", r.err)
		case <-me.ctx.Done():
			t.Fatal("phone got no INVITE")
		}
		if ci := header(in.Invite, "Call-Info"); !strings.Contains(ci, "answer-after=0") {
			t.Fatalf("Call-Info %q", ci)
		}
		if ai := header(in.Invite, "Alert-Info"); !strings.Contains(ai, "info=alert-autoanswer") {
			t.Fatalf("Alert-Info %q", ai)
		}
		off, err := siptest.ParseSDP(in.Invite.Body())
		local, _ := m.leg.Local()
		if err != nil || off.Mode != "sendonly" || off.RTP != local {
			t.Fatalf("offer %+v (leg %s): %v", off, local, err)
		}
		if err := in.Answer(phone.SDP(siptest.SDPOptions{Mode: "recvonly", Codecs: []string{"0"}})); err != nil {
			t.Fatal(err)
		}
		var r result
		select {
		case r = <-done:
		case <-me.ctx.Done():
			t.Fatal("DialMonitor did not return")
		}
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.d.Codec().Name != "PCMU" || m.lastRemote().RTP != phone.RTPAddr {
			t.Fatalf("codec %+v remote %+v", r.d.Codec(), m.lastRemote())
		}
		if phoneHangs {
			if err := in.Bye(me.ctx); err != nil {
				t.Fatal(err)
			}
			waitDone(t, me.ctx, r.d.Done(), "dialog end")
			if m.closeReason() != "supervisor hung up" {
				t.Fatalf("reason %q", m.closeReason())
			}
			continue
		}
		if err := r.d.Hangup(me.ctx, "stopped by the supervisor"); err != nil {
			t.Fatal(err)
		}
		waitDone(t, me.ctx, in.Ended(), "BYE at the phone")
		waitDone(t, me.ctx, m.closed, "media close")
	}
}

// TestDialMonitorDeclined: a phone that refuses gets its media closed and
// an ErrMonitorAnswer.
func TestDialMonitorDeclined(t *testing.T) {
	me := newMonEnv(t, nil)
	phone := me.party("3000")
	go func() {
		select {
		case in := <-phone.Incoming:
			_ = in.Respond(486, "Busy Here", nil)
		case <-me.ctx.Done():
		}
	}()
	m := newFakeMonMedia(t, me.eng)
	_, err := me.srv.DialMonitor(me.ctx, MonitorDial{Target: "sip:3000@" + phone.SIPAddr.String(), Media: m})
	if !errors.Is(err, ErrMonitorAnswer) || !strings.Contains(err.Error(), "486") {
		t.Fatalf("err %v", err)
	}
	waitDone(t, me.ctx, m.closed, "media close")
	if _, err := me.srv.DialMonitor(me.ctx, MonitorDial{Target: "tel:3000", Media: newFakeMonMedia(t, me.eng)}); !errors.Is(err, ErrMonitorTarget) {
		t.Fatalf("tel: target: %v", err)
	}
}

func TestParseMonitorTarget(t *testing.T) {
	cases := []struct {
		ruser      string
		hdrs       [][2]string
		line, mode string
		from       string
		ok         bool
	}{
		{"monitor-1001", nil, "1001", MonitorSilent, "", true},
		{"Monitor-1001", [][2]string{{"X-Monitor-Mode", "silent"}}, "1001", MonitorSilent, "", true},
		{"whisper-1001", nil, "1001", MonitorWhisper, "prefix", true},
		{"BARGE-2000", nil, "2000", MonitorBarge, "prefix", true},
		{"monitor-1001", [][2]string{{"X-Bib-Mode", "barge"}}, "1001", MonitorBarge, "X-Bib-Mode", true},
		{"monitor-1001", [][2]string{{"X-Monitor-Mode", "tone"}}, "1001", "tone", "X-Monitor-Mode", true},
		{"monitor-1001", [][2]string{{"Call-Info", "<http://x>;purpose=icon, <sip:y>;purpose=coach"}}, "1001", MonitorWhisper, "Call-Info", true},
		{"monitor-1001", [][2]string{{"Call-Info", "<sip:bib>;answer-after=0"}}, "1001", MonitorSilent, "", true},
		{"whisper-1001", [][2]string{{"X-Monitor-Mode", "silent"}}, "1001", MonitorWhisper, "prefix", true},
		{"1001", [][2]string{{"X-Monitor-Mode", "barge"}}, "", "", "", false},
		{"monitor", nil, "", "", "", false},
	}
	for _, c := range cases {
		req := sipmsg.NewRequest(sipmsg.INVITE, sipmsg.Uri{Scheme: "sip", User: c.ruser, Host: "bib"})
		for _, h := range c.hdrs {
			req.AppendHeader(sipmsg.NewHeader(h[0], h[1]))
		}
		line, mode, from, ok := parseMonitorTarget(req, "monitor-")
		if line != c.line || mode != c.mode || from != c.from || ok != c.ok {
			t.Errorf("%s %v: got %q %q %q %v, want %q %q %q %v", c.ruser, c.hdrs, line, mode, from, ok, c.line, c.mode, c.from, c.ok)
		}
	}
}

func FuzzParseMonitorTarget(f *testing.F) {
	f.Add("monitor-1001", "X-Monitor-Mode", "whisper", "<sip:a>;purpose=barge")
	f.Add("barge-1", "X-Bib-Mode", "", "")
	f.Add("whisper-", "Join", "x", "<;purpose=\"coach\",>")
	f.Fuzz(func(t *testing.T, user, hname, hval, callInfo string) {
		req := sipmsg.NewRequest(sipmsg.INVITE, sipmsg.Uri{Scheme: "sip", User: user, Host: "bib"})
		if hname != "" && !strings.ContainsAny(hname, ":\r\n ") {
			req.AppendHeader(sipmsg.NewHeader(hname, hval))
		}
		req.AppendHeader(sipmsg.NewHeader("Call-Info", callInfo))
		line, mode, from, ok := parseMonitorTarget(req, "monitor-")
		if !ok {
			if line != "" || mode != "" || from != "" {
				t.Fatalf("not a monitor request but %q %q %q", line, mode, from)
			}
			return
		}
		if !strings.HasSuffix(user, line) || mode == "" || len(mode) > 32 {
			t.Fatalf("user %q -> line %q mode %q", user, line, mode)
		}
		if (mode == MonitorSilent) != (from == "") {
			t.Fatalf("mode %q from %q", mode, from)
		}
	})
}
