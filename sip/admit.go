package sip

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/bib-project/bib/bridge"
	sipmsg "github.com/emiago/sipgo/sip"
)

// Admission: what runs before bib does any work for an out-of-dialog
// request. Order: per-source request rate (limits.go), digest
// authentication (digest.go), then for INVITE the call limits. Requests
// inside a dialog never come here: they are matched to a live call first.

// Refusal reasons (Refusal.Reason).
const (
	RefusedAuthFailed   = "auth_failed"          // wrong password, unknown user, forged nonce
	RefusedAuthReplay   = "auth_replay"          // nonce-count reused
	RefusedAuthBlocked  = "auth_blocked"         // source backing off after failures
	RefusedAuthBad      = "auth_bad_request"     // unreadable Authorization
	RefusedRateLimited  = "rate_limited"         // sip.limits.requests_per_second
	RefusedMaxCalls     = "max_calls"            // sip.limits.max_calls
	RefusedPerSource    = "max_calls_per_source" // sip.limits.max_calls_per_source
	RefusedCallRejected = "call_rejected"        // any other final failure bib gave a new INVITE
)

// Refusal is one request bib refused. The OnRefused hook gets one per
// refused request (not for the first 401 challenge, which is the normal
// start of an authentication).
type Refusal struct {
	Time      time.Time
	Method    string // INVITE or REGISTER
	User      string // the identity claimed: From user (INVITE), To user (REGISTER)
	Callee    string // Request-URI user (INVITE)
	CallID    string
	Source    string // ip:port the request came from
	Transport string // UDP, TCP, TLS
	Code      int    // SIP status sent
	Reason    string // one of the Refused* constants
	Detail    string // the Warning text sent, if any
}

// SecurityCounters count admission outcomes since start.
type SecurityCounters struct {
	AuthChallenges uint64 `json:"sip_auth_challenges"` // 401 without a failure (first contact, stale nonce)
	AuthSuccesses  uint64 `json:"sip_auth_successes"`
	AuthFailures   uint64 `json:"sip_auth_failures"` // wrong password, unknown user, bad nonce, replay, unreadable
	AuthBlocked    uint64 `json:"sip_auth_blocked"`  // refused while the source backed off
	RateLimited    uint64 `json:"sip_rate_limited"`  // refused by requests_per_second
	MaxCalls       uint64 `json:"sip_max_calls_refused"`
	PerSource      uint64 `json:"sip_max_calls_per_source_refused"`
	CallsReserved  uint64 `json:"sip_calls_admitted_now"` // calls holding a slot now
}

// security is the Server's admission state.
type security struct {
	creds     *Credentials // from WithCredentials
	devices   []bridge.Device
	sups      []bridge.Supervisor // from WithPrincipals
	clientTLS *tls.Config         // from WithTLSClientConfig
	auth      *authenticator
	lim       *limiter
	tlsConf   *tls.Config // client side, used for sips: targets
	tlsLn     net.Listener
}

func (s *Server) secInit() *security {
	if s.sec == nil {
		s.sec = &security{}
	}
	return s.sec
}

// initSecurity builds the authenticator, limiter and TLS client config
// from the config and the options. Called by New after the options.
func (s *Server) initSecurity() error {
	sec := s.secInit()
	if len(sec.devices)+len(sec.sups) > 0 {
		c, err := CredentialsFor(s.cfg.Auth.Realm, sec.devices, sec.sups)
		if err != nil {
			return err
		}
		if sec.creds != nil {
			if sec.creds.realm != c.realm {
				return fmt.Errorf("sip.auth.realm: credentials were built for realm %q, config says %q", sec.creds.realm, c.realm)
			}
			for u, e := range sec.creds.m {
				c.m[u] = e
			}
		}
		sec.creds = c
	}
	a, err := newAuthenticator(s.cfg.Auth, sec.creds, s.now)
	if err != nil {
		return err
	}
	sec.auth = a
	sec.lim = newLimiter(s.cfg.Limits, s.now)
	if sec.tlsConf, err = clientTLSConfig(s.cfg.TLSCA, sec.clientTLS); err != nil {
		return err
	}
	if a.creds.Len() > 0 && !a.required {
		s.log.Warn("sip digest: only users with credentials are challenged; set sip.auth.required: true (and list trunks in sip.auth.trusted) so unknown users are refused",
			"users_with_credentials", a.creds.Len())
	}
	return nil
}

// SecurityCounters returns the admission counters.
func (s *Server) SecurityCounters() SecurityCounters {
	a, l := s.sec.auth, s.sec.lim
	return SecurityCounters{
		AuthChallenges: a.challenges.Load(), AuthSuccesses: a.successes.Load(),
		AuthFailures: a.failures.Load(), AuthBlocked: a.blocked.Load(),
		RateLimited: l.rateLimited.Load(), MaxCalls: l.maxCalls.Load(), PerSource: l.perSource.Load(),
		CallsReserved: uint64(l.active()),
	}
}

func sourceAddr(req *sipmsg.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(req.Source())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// admitRegister runs admission for a REGISTER; false means it was
// answered and must not be processed.
func (s *Server) admitRegister(req *sipmsg.Request, tx sipmsg.ServerTransaction) bool {
	user := ""
	if to := req.To(); to != nil {
		user = to.Address.User
	}
	return s.admit(req, tx, user)
}

// admitInvite runs admission for a new INVITE and reserves a call slot,
// released by releaseCall.
func (s *Server) admitInvite(req *sipmsg.Request, tx sipmsg.ServerTransaction) bool {
	user := ""
	if f := req.From(); f != nil {
		user = f.Address.User
	}
	if !s.admit(req, tx, user) {
		return false
	}
	callID := ""
	if h := req.CallID(); h != nil {
		callID = h.Value()
	}
	se, retry := s.sec.lim.reserve(callID, sourceAddr(req))
	if se == nil {
		return true
	}
	var hdrs []sipmsg.Header
	if retry != "" {
		hdrs = append(hdrs, sipmsg.NewHeader("Retry-After", retry))
	}
	reason := RefusedCallRejected
	switch se.Code {
	case 503:
		reason = RefusedMaxCalls
	case 486:
		reason = RefusedPerSource
	}
	s.rejected.Add(1)
	s.refuse(req, tx, user, se.Code, se.Reason, reason, se.Warning, hdrs...)
	return false
}

func (s *Server) admit(req *sipmsg.Request, tx sipmsg.ServerTransaction, user string) bool {
	src := sourceAddr(req)
	isInvite := req.IsInvite()
	if ok, wait := s.sec.lim.allow(src); !ok {
		if isInvite {
			s.rejected.Add(1)
		}
		s.refuse(req, tx, user, 503, "Service Unavailable", RefusedRateLimited, "request rate limit exceeded",
			sipmsg.NewHeader("Retry-After", retryAfter(wait)))
		return false
	}
	a := s.sec.auth
	if !a.applies(user, src) {
		return true
	}
	res := a.check(req, user, src)
	if res == authOK {
		return true
	}
	if isInvite {
		s.rejected.Add(1)
	}
	s.answerAuth(req, tx, user, src, res)
	return false
}

// answerAuth answers a request whose digest check did not pass: a
// challenge (401), or a refusal that says why (403, 400, 503 while the
// source backs off).
func (s *Server) answerAuth(req *sipmsg.Request, tx sipmsg.ServerTransaction, user string, src netip.Addr, res authResult) {
	a := s.sec.auth
	switch res {
	case authChallenge:
		s.respond(tx, req, 401, "Unauthorized", "", a.challengeHeaders(false)...)
	case authStale:
		s.respond(tx, req, 401, "Unauthorized", "", a.challengeHeaders(true)...)
	case authReplay:
		s.refuse(req, tx, user, 401, "Unauthorized", RefusedAuthReplay, "", a.challengeHeaders(false)...)
	case authFailed:
		s.refuse(req, tx, user, 403, "Forbidden", RefusedAuthFailed, "authentication failed")
	case authBadRequest:
		s.refuse(req, tx, user, 400, "Bad Request", RefusedAuthBad, "unusable digest credentials (want qop=auth, nc, cnonce, MD5 or SHA-256, uri = Request-URI)")
	case authBlocked:
		s.refuse(req, tx, user, 503, "Service Unavailable", RefusedAuthBlocked, "too many failed authentications from your address",
			sipmsg.NewHeader("Retry-After", retryAfter(a.blockedFor(src))))
	}
}

// refuse answers req and reports the refusal.
func (s *Server) refuse(req *sipmsg.Request, tx sipmsg.ServerTransaction, user string, code int, reason, why, warning string, hdrs ...sipmsg.Header) {
	// Report first: whoever reads the response may look for the refusal.
	s.reportRefusal(req, user, code, why, warning)
	s.respond(tx, req, code, reason, warning, hdrs...)
}

func (s *Server) reportRefusal(req *sipmsg.Request, user string, code int, why, warning string) {
	s.log.Debug("sip request refused", "method", req.Method.String(), "user", user, "source", req.Source(), "code", code, "reason", why)
	if s.OnRefused == nil {
		return
	}
	r := Refusal{Time: s.now(), Method: req.Method.String(), User: user, Source: req.Source(),
		Transport: strings.ToUpper(req.Transport()), Code: code, Reason: why, Detail: warning}
	if req.IsInvite() {
		r.Callee = req.Recipient.User
	}
	if h := req.CallID(); h != nil {
		r.CallID = h.Value()
	}
	s.OnRefused(r)
}

// callRefused runs for every final failure bib itself gives a new INVITE
// after admission (no route, bad SDP, Authorize said no, no RTP ports):
// it frees the call slot and reports the refusal.
func (s *Server) callRefused(req *sipmsg.Request, se *StatusError) {
	if h := req.CallID(); h != nil {
		s.sec.lim.release(h.Value())
	}
	user := ""
	if f := req.From(); f != nil {
		user = f.Address.User
	}
	s.reportRefusal(req, user, se.Code, RefusedCallRejected, se.Warning)
}

// releaseCall frees the call slot of a call that ended.
func (s *Server) releaseCall(callIDA string) { s.sec.lim.release(callIDA) }
