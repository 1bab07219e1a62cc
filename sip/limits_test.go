package sip

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/bib-project/bib/bridge"
	"github.com/bib-project/bib/sip/siptest"
	"github.com/emiago/sipgo"
)

func TestLimiterTokenBucket(t *testing.T) {
	clk := newFakeClock()
	l := newLimiter(LimitsConfig{RequestsPerSecond: 10, Burst: 3, MaxCalls: -1, MaxCallsPerSource: -1}, clk.Now)
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	steps := []struct {
		advance time.Duration
		src     netip.Addr
		ok      bool
		wait    time.Duration
	}{
		{0, a, true, 0}, {0, a, true, 0}, {0, a, true, 0}, // the burst
		{0, a, false, 100 * time.Millisecond},
		{0, b, true, 0}, // other sources have their own bucket
		{50 * time.Millisecond, a, false, 50 * time.Millisecond},
		{50 * time.Millisecond, a, true, 0},
		{0, a, false, 100 * time.Millisecond},
		{time.Hour, a, true, 0}, {0, a, true, 0}, {0, a, true, 0}, // refill caps at the burst
		{0, a, false, 100 * time.Millisecond},
	}
	for i, st := range steps {
		clk.Add(st.advance)
		ok, wait := l.allow(st.src)
		if ok != st.ok || (wait-st.wait).Abs() > time.Millisecond {
			t.Fatalf("step %d: allow = %v, %v; want %v, %v", i, ok, wait, st.ok, st.wait)
		}
	}
	if n := l.rateLimited.Load(); n != 4 {
		t.Fatalf("rate limited %d, want 4", n)
	}
	if retryAfter(100*time.Millisecond) != "1" || retryAfter(2*time.Second) != "2" || retryAfter(2001*time.Millisecond) != "3" {
		t.Fatal("retryAfter rounding")
	}
}

func TestLimiterReserve(t *testing.T) {
	l := newLimiter(LimitsConfig{MaxCalls: 3, MaxCallsPerSource: 2, RetryAfter: bridge.Duration(7 * time.Second), RequestsPerSecond: -1, Burst: 1}, time.Now)
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	steps := []struct {
		op     string // r = reserve, f = free
		callID string
		src    netip.Addr
		code   int
	}{
		{"r", "1", a, 0}, {"r", "2", a, 0},
		{"r", "3", a, 486}, // per source
		{"r", "1", b, 482}, // Call-ID in use
		{"r", "4", b, 0},
		{"r", "5", b, 503}, // total
		{"f", "1", a, 0},
		{"f", "1", a, 0}, // twice: no effect
		{"r", "6", a, 0},
		{"r", "7", b, 503},
	}
	for i, st := range steps {
		if st.op == "f" {
			l.release(st.callID)
			continue
		}
		se, retry := l.reserve(st.callID, st.src)
		code := 0
		if se != nil {
			code = se.Code
		}
		if code != st.code {
			t.Fatalf("step %d: code %d, want %d (%v)", i, code, st.code, se)
		}
		if (code == 503 || code == 486) && retry != "7" {
			t.Fatalf("step %d: Retry-After %q", i, retry)
		}
	}
	if l.active() != 3 {
		t.Fatalf("active %d", l.active())
	}
}

func TestLimitsValidate(t *testing.T) {
	bad := []LimitsConfig{
		{MaxCalls: -2}, {MaxCallsPerSource: -5}, {RequestsPerSecond: -3}, {Burst: -1},
		{RetryAfter: bridge.Duration(1500 * time.Millisecond)},
	}
	for i, c := range bad {
		c.Defaults()
		if err := c.Validate(); err == nil {
			t.Errorf("case %d: %+v accepted", i, c)
		}
	}
	var def LimitsConfig
	def.Defaults()
	if def.MaxCalls != 1000 || def.MaxCallsPerSource != 200 || def.RequestsPerSecond != 200 || def.Burst != 400 || def.Validate() != nil {
		t.Fatalf("defaults %+v", def)
	}
}

// Beyond max_calls a new INVITE gets 503 + Retry-After at once, and the
// call already up keeps relaying; beyond max_calls_per_source, 486.
func TestLimitsMaxCalls(t *testing.T) {
	cases := []struct {
		name   string
		limits LimitsConfig
		code   int
	}{
		{"max_calls", LimitsConfig{MaxCalls: 1}, 503},
		{"max_calls_per_source", LimitsConfig{MaxCalls: 10, MaxCallsPerSource: 1}, 486},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			callee := newParty(t, "2001")
			e, ref := authEnv(t, authEnvOpts{routes: []Route{staticRoute(callee, "2XXX")}, limits: tc.limits})
			caller := e.party("1001")
			got := answerNext(t, e.ctx, callee, nil)
			ac, err := caller.Invite(e.ctx, e.uri("2001"), caller.SDP(siptest.SDPOptions{}))
			if err != nil {
				t.Fatal(err)
			}
			bc := recv(t, e.ctx, got)

			other := e.party("1002")
			_, err = other.Invite(e.ctx, e.uri("2001"), other.SDP(siptest.SDPOptions{}))
			var de *sipgo.ErrDialogResponse
			if !errors.As(err, &de) || de.Res.StatusCode != tc.code {
				t.Fatalf("second call: want %d, got %v", tc.code, err)
			}
			if ra := header(de.Res, "Retry-After"); ra != "5" {
				t.Fatalf("Retry-After %q", ra)
			}
			select {
			case <-callee.Incoming:
				t.Fatal("callee rang beyond the limit")
			default:
			}
			// The existing call is untouched.
			exchange(t, e.ctx, caller, ac, callee, bc, 20, 2)
			if err := ac.Bye(e.ctx); err != nil {
				t.Fatal(err)
			}
			e.waitEnded(1)
			k := e.srv.SecurityCounters()
			if k.CallsReserved != 0 || k.MaxCalls+k.PerSource != 1 {
				t.Fatalf("counters %+v", k)
			}
			want := RefusedMaxCalls
			if tc.code == 486 {
				want = RefusedPerSource
			}
			if ref.reasons()[want] != 1 {
				t.Fatalf("refusals %v", ref.reasons())
			}
			// The slot is free again.
			got = answerNext(t, e.ctx, callee, nil)
			ac2, err := other.Invite(e.ctx, e.uri("2001"), other.SDP(siptest.SDPOptions{}))
			if err != nil {
				t.Fatalf("after the first call ended: %v", err)
			}
			recv(t, e.ctx, got)
			if err := ac2.Bye(e.ctx); err != nil {
				t.Fatal(err)
			}
			e.waitEnded(2)
		})
	}
}

// A source over its request rate gets 503 for new INVITEs, while its
// calls' in-dialog requests (re-INVITE, BYE) still go through.
func TestLimitsRateInDialogExempt(t *testing.T) {
	clk := newFakeClock() // never advances: no refill
	callee := newParty(t, "2001")
	e, ref := authEnv(t, authEnvOpts{clock: clk, routes: []Route{staticRoute(callee, "2XXX")},
		limits: LimitsConfig{RequestsPerSecond: 1, Burst: 1}})
	caller := e.party("1001")
	got := answerNext(t, e.ctx, callee, nil)
	ac, err := caller.Invite(e.ctx, e.uri("2001"), caller.SDP(siptest.SDPOptions{}))
	if err != nil {
		t.Fatal(err)
	}
	bc := recv(t, e.ctx, got)

	_, err = caller.Invite(e.ctx, e.uri("2002"), caller.SDP(siptest.SDPOptions{}))
	var de *sipgo.ErrDialogResponse
	if !errors.As(err, &de) || de.Res.StatusCode != 503 || header(de.Res, "Retry-After") != "1" {
		t.Fatalf("over the rate: %v", err)
	}
	res, err := caller.Register(e.ctx, e.srv.Addr("udp"), 300)
	mustStatus(t, err, res, 503)

	res, err = ac.ReInvite(e.ctx, caller.SDP(siptest.SDPOptions{Mode: "sendonly"}))
	mustStatus(t, err, res, 200)
	e.waitState(StateHeld)
	res, err = ac.ReInvite(e.ctx, caller.SDP(siptest.SDPOptions{}))
	mustStatus(t, err, res, 200)
	e.waitState(StateAnswered)
	exchange(t, e.ctx, caller, ac, callee, bc, 10, 3)
	if err := ac.Bye(e.ctx); err != nil {
		t.Fatalf("bye over the rate: %v", err)
	}
	e.waitEnded(1)
	if n := ref.reasons()[RefusedRateLimited]; n != 2 {
		t.Fatalf("rate_limited refusals %d (%v)", n, ref.reasons())
	}
}
