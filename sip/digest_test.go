package sip

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bib-project/bib/bridge"
	"github.com/bib-project/bib/sip/siptest"
	"github.com/emiago/sipgo"
	sipmsg "github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
)

// fakeClock is a settable clock for nonce expiry and backoff.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// refusals collects OnRefused reports.
type refusals struct {
	mu  sync.Mutex
	all []Refusal
}

func (r *refusals) add(x Refusal) {
	r.mu.Lock()
	r.all = append(r.all, x)
	r.mu.Unlock()
}

func (r *refusals) reasons() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := map[string]int{}
	for _, x := range r.all {
		m[x.Reason]++
	}
	return m
}

type authEnvOpts struct {
	auth   AuthConfig
	limits LimitsConfig
	clock  *fakeClock
	routes []Route
	users  map[string]string // user -> password
}

// authEnv starts bib with digest credentials for users.
func authEnv(t *testing.T, o authEnvOpts) (*env, *refusals) {
	t.Helper()
	o.auth.Defaults()
	creds := NewCredentials(o.auth.Realm)
	for u, p := range o.users {
		creds.AddPassword(u, p)
	}
	ref := &refusals{}
	e := newEnv(t, envOpts{
		routes: o.routes,
		cfg: func(c *Config) {
			c.Auth = o.auth
			c.Limits = o.limits
		},
		hooks: func(s *Server) {
			s.sec.auth.creds = creds
			if o.clock != nil {
				s.sec.auth.now = o.clock.Now
				s.sec.lim.now = o.clock.Now
			}
			s.OnRefused = ref.add
		},
	})
	return e, ref
}

// sendRegister sends a REGISTER for p (Expires 300) with an optional
// Authorization value.
func sendRegister(t *testing.T, ctx context.Context, e *env, p *siptest.Party, user, authz string) *sipmsg.Response {
	t.Helper()
	req := p.NewRegister(e.srv.Addr("udp"))
	if user != p.User {
		req.To().Address.User = user
		req.From().Address.User = user
	}
	req.AppendHeader(sipmsg.NewHeader("Expires", "300"))
	if authz != "" {
		req.AppendHeader(sipmsg.NewHeader("Authorization", authz))
	}
	res, err := p.Cli.Do(ctx, req)
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	return res
}

// challengeFor returns the WWW-Authenticate value offering alg.
func challengeFor(t *testing.T, res *sipmsg.Response, alg string) string {
	t.Helper()
	for _, h := range res.GetHeaders("WWW-Authenticate") {
		if strings.Contains(h.Value(), "algorithm="+alg+",") {
			return h.Value()
		}
	}
	t.Fatalf("no %s challenge in %s", alg, res.StartLine())
	return ""
}

// answer computes an Authorization value with an independent digest
// implementation (github.com/icholy/digest).
func answer(t *testing.T, chal, method, uri, user, password string, nc int) string {
	t.Helper()
	c, err := digest.ParseChallenge(chal)
	if err != nil {
		t.Fatal(err)
	}
	cred, err := digest.Digest(c, digest.Options{Method: method, URI: uri, Username: user, Password: password, Count: nc})
	if err != nil {
		t.Fatal(err)
	}
	return cred.String()
}

func registrarURI(e *env) string {
	a := e.srv.Addr("udp")
	return "sip:" + a.String()
}

func registered(e *env, user string) bool {
	return slices.ContainsFunc(e.srv.Registrations(), func(r Registration) bool { return r.User == user })
}

func TestDigestRegister(t *testing.T) {
	cases := []struct {
		name     string
		alg      string
		password string
		want     int
	}{
		{"sha-256 right password", "SHA-256", "s3cret", 200},
		{"md5 right password", "MD5", "s3cret", 200},
		{"sha-256 wrong password", "SHA-256", "guess", 403},
		{"md5 wrong password", "MD5", "guess", 403},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, ref := authEnv(t, authEnvOpts{users: map[string]string{"1001": "s3cret"}})
			p := e.party("1001")
			res := sendRegister(t, e.ctx, e, p, "1001", "")
			mustStatus(t, nil, res, 401)
			if registered(e, "1001") {
				t.Fatal("registered without credentials")
			}
			hs := res.GetHeaders("WWW-Authenticate")
			if len(hs) != 2 || !strings.Contains(hs[0].Value(), "algorithm=SHA-256") || !strings.Contains(hs[1].Value(), "algorithm=MD5") {
				t.Fatalf("want SHA-256 then MD5 challenges, got %v", hs)
			}
			authz := answer(t, challengeFor(t, res, tc.alg), "REGISTER", registrarURI(e), "1001", tc.password, 1)
			res = sendRegister(t, e.ctx, e, p, "1001", authz)
			mustStatus(t, nil, res, tc.want)
			if got := registered(e, "1001"); got != (tc.want == 200) {
				t.Fatalf("registered=%v after %s", got, res.StartLine())
			}
			k := e.srv.SecurityCounters()
			if tc.want == 200 && (k.AuthSuccesses != 1 || k.AuthFailures != 0) {
				t.Fatalf("counters %+v", k)
			}
			if tc.want == 403 && (k.AuthFailures != 1 || ref.reasons()[RefusedAuthFailed] != 1) {
				t.Fatalf("counters %+v refusals %v", k, ref.reasons())
			}
		})
	}
}

// A sipgo client authenticates the way real user agents do (first
// challenge, SHA-256).
func TestDigestRegisterSipgoClient(t *testing.T) {
	e, _ := authEnv(t, authEnvOpts{users: map[string]string{"1001": "s3cret"}})
	p := e.party("1001")
	req := p.NewRegister(e.srv.Addr("udp"))
	req.AppendHeader(sipmsg.NewHeader("Expires", "300"))
	res, err := p.Cli.Do(e.ctx, req)
	mustStatus(t, err, res, 401)
	res, err = p.Cli.DoDigestAuth(e.ctx, req, res, sipgo.DigestAuth{Username: "1001", Password: "s3cret"})
	mustStatus(t, err, res, 200)
	if !strings.Contains(header(req, "Authorization"), "algorithm=SHA-256") {
		t.Fatalf("client did not use SHA-256: %s", header(req, "Authorization"))
	}
	if !registered(e, "1001") {
		t.Fatal("not registered")
	}
}

func TestDigestReplayRefused(t *testing.T) {
	e, ref := authEnv(t, authEnvOpts{users: map[string]string{"1001": "s3cret"}})
	p := e.party("1001")
	res := sendRegister(t, e.ctx, e, p, "1001", "")
	chal := challengeFor(t, res, "SHA-256")
	authz := answer(t, chal, "REGISTER", registrarURI(e), "1001", "s3cret", 1)
	mustStatus(t, nil, sendRegister(t, e.ctx, e, p, "1001", authz), 200)

	// The same credentials again (nonce and nc reused): refused with a
	// fresh challenge, counted as a failure.
	res = sendRegister(t, e.ctx, e, p, "1001", authz)
	mustStatus(t, nil, res, 401)
	if strings.Contains(challengeFor(t, res, "SHA-256"), nonceOf(t, chal)) {
		t.Fatal("replay answered with the old nonce")
	}
	if ref.reasons()[RefusedAuthReplay] != 1 {
		t.Fatalf("refusals %v", ref.reasons())
	}
	// The same nonce with a growing nonce-count is fine (RFC 7616 3.4).
	mustStatus(t, nil, sendRegister(t, e.ctx, e, p, "1001", answer(t, chal, "REGISTER", registrarURI(e), "1001", "s3cret", 2)), 200)
	// But going back to a lower count is not.
	mustStatus(t, nil, sendRegister(t, e.ctx, e, p, "1001", answer(t, chal, "REGISTER", registrarURI(e), "1001", "s3cret", 1)), 401)
	if k := e.srv.SecurityCounters(); k.AuthSuccesses != 2 || k.AuthFailures != 2 {
		t.Fatalf("counters %+v", k)
	}
}

var nonceRE = regexp.MustCompile(`nonce="([^"]+)"`)

func nonceOf(t *testing.T, chal string) string {
	t.Helper()
	m := nonceRE.FindStringSubmatch(chal)
	if m == nil {
		t.Fatalf("no nonce in %q", chal)
	}
	return m[1]
}

func TestDigestStaleNonce(t *testing.T) {
	clk := newFakeClock()
	e, _ := authEnv(t, authEnvOpts{clock: clk, users: map[string]string{"1001": "s3cret"},
		auth: AuthConfig{NonceTTL: bridge.Duration(30 * time.Second)}})
	p := e.party("1001")
	chal := challengeFor(t, sendRegister(t, e.ctx, e, p, "1001", ""), "MD5")
	clk.Add(31 * time.Second)
	res := sendRegister(t, e.ctx, e, p, "1001", answer(t, chal, "REGISTER", registrarURI(e), "1001", "s3cret", 1))
	mustStatus(t, nil, res, 401)
	fresh := challengeFor(t, res, "MD5")
	if !strings.Contains(fresh, "stale=true") {
		t.Fatalf("want stale=true, got %q", fresh)
	}
	// A stale nonce with the right password is not a failure.
	if k := e.srv.SecurityCounters(); k.AuthFailures != 0 {
		t.Fatalf("counters %+v", k)
	}
	// Wrong password with a stale nonce is a failure, not stale.
	mustStatus(t, nil, sendRegister(t, e.ctx, e, p, "1001", answer(t, chal, "REGISTER", registrarURI(e), "1001", "nope", 1)), 403)
	mustStatus(t, nil, sendRegister(t, e.ctx, e, p, "1001", answer(t, fresh, "REGISTER", registrarURI(e), "1001", "s3cret", 1)), 200)
}

// An unknown user sees exactly what a known user with a wrong password
// sees: same challenges (but for the nonce), same 403.
func TestDigestUnknownUserIndistinguishable(t *testing.T) {
	e, _ := authEnv(t, authEnvOpts{auth: AuthConfig{Required: true}, users: map[string]string{"1001": "s3cret"}})
	p := e.party("probe")
	shape := func(res *sipmsg.Response) string {
		var b strings.Builder
		b.WriteString(res.StartLine())
		for _, h := range res.Headers() {
			switch strings.ToLower(h.Name()) {
			case "www-authenticate":
				b.WriteString("|" + nonceRE.ReplaceAllString(h.Value(), `nonce="N"`))
			case "warning", "retry-after", "server":
				b.WriteString("|" + h.Name() + ": " + h.Value())
			case "via", "from", "to", "call-id", "cseq", "content-length":
			default:
				b.WriteString("|" + h.Name())
			}
		}
		return b.String()
	}
	var first, second []string
	for _, user := range []string{"1001", "9999"} {
		res := sendRegister(t, e.ctx, e, p, user, "")
		mustStatus(t, nil, res, 401)
		first = append(first, shape(res))
		authz := answer(t, challengeFor(t, res, "SHA-256"), "REGISTER", registrarURI(e), user, "wrong", 1)
		res = sendRegister(t, e.ctx, e, p, user, authz)
		mustStatus(t, nil, res, 403)
		second = append(second, shape(res))
	}
	if first[0] != first[1] {
		t.Fatalf("challenges differ:\nknown:   %s\nunknown: %s", first[0], first[1])
	}
	if second[0] != second[1] {
		t.Fatalf("refusals differ:\nknown:   %s\nunknown: %s", second[0], second[1])
	}
	// The unknown user with a password it made up is refused too.
	if registered(e, "9999") {
		t.Fatal("unknown user registered")
	}
}

func TestDigestFailureBackoff(t *testing.T) {
	clk := newFakeClock()
	e, ref := authEnv(t, authEnvOpts{clock: clk, users: map[string]string{"1001": "s3cret"},
		auth: AuthConfig{MaxFailures: 3, Backoff: bridge.Duration(2 * time.Second), MaxBackoff: bridge.Duration(time.Minute)}})
	p := e.party("1001")
	try := func(password string) *sipmsg.Response {
		res := sendRegister(t, e.ctx, e, p, "1001", "")
		if res.StatusCode != 401 {
			return res
		}
		return sendRegister(t, e.ctx, e, p, "1001", answer(t, challengeFor(t, res, "SHA-256"), "REGISTER", registrarURI(e), "1001", password, 1))
	}
	for round, wantWait := range []string{"2", "4", "8"} {
		for i := range 3 {
			if res := try("wrong"); res.StatusCode != 403 {
				t.Fatalf("round %d failure %d: got %s", round, i, res.StartLine())
			}
		}
		// Blocked now, even with the right password and before any challenge.
		res := sendRegister(t, e.ctx, e, p, "1001", "")
		mustStatus(t, nil, res, 503)
		if got := header(res, "Retry-After"); got != wantWait {
			t.Fatalf("round %d: Retry-After %q, want %s", round, got, wantWait)
		}
		if res := try("s3cret"); res.StatusCode != 503 {
			t.Fatalf("round %d: right password while blocked: %s", round, res.StartLine())
		}
		w, _ := strconv.Atoi(wantWait)
		clk.Add(time.Duration(w) * time.Second)
		mustStatus(t, nil, try("s3cret"), 200)
	}
	if n := ref.reasons()[RefusedAuthBlocked]; n != 6 {
		t.Fatalf("auth_blocked refusals %d, want 6 (%v)", n, ref.reasons())
	}
}

// INVITE from a device with credentials: challenged, then placed by a
// real sipgo dialog client that answers the challenge; a wrong password
// never reaches the callee.
func TestDigestInvite(t *testing.T) {
	callee := newParty(t, "2001")
	e, ref := authEnv(t, authEnvOpts{routes: []Route{staticRoute(callee, "2XXX")}, users: map[string]string{"1001": "s3cret"}})
	caller := e.party("1001")

	invite := func(password string) (*sipgo.DialogClientSession, error) {
		dua := &sipgo.DialogUA{Client: caller.Cli, ContactHDR: sipmsg.ContactHeader{Address: caller.URI()}}
		req := sipmsg.NewRequest(sipmsg.INVITE, e.uri("2001"))
		from := &sipmsg.FromHeader{Address: sipmsg.Uri{Scheme: "sip", User: "1001", Host: "127.0.0.1"}, Params: sipmsg.NewParams()}
		from.Params.Add("tag", sipmsg.GenerateTagN(10))
		req.AppendHeader(from)
		req.AppendHeader(&sipmsg.ToHeader{Address: e.uri("2001"), Params: sipmsg.NewParams()})
		req.AppendHeader(sipmsg.NewHeader("Content-Type", "application/sdp"))
		req.SetBody(caller.SDP(siptest.SDPOptions{}))
		ds, err := dua.WriteInvite(e.ctx, req)
		if err != nil {
			return nil, err
		}
		return ds, ds.WaitAnswer(e.ctx, sipgo.AnswerOptions{Username: "1001", Password: password})
	}

	_, err := invite("wrong")
	var de *sipgo.ErrDialogResponse
	if !errors.As(err, &de) || de.Res.StatusCode != 403 {
		t.Fatalf("wrong password: %v", err)
	}
	select {
	case <-callee.Incoming:
		t.Fatal("callee rang for an unauthenticated caller")
	default:
	}

	got := answerNext(t, e.ctx, callee, nil)
	ds, err := invite("s3cret")
	if err != nil {
		t.Fatalf("invite: %v", err)
	}
	if err := ds.Ack(e.ctx); err != nil {
		t.Fatal(err)
	}
	bc := recv(t, e.ctx, got)
	e.waitState(StateAnswered)
	m, err := siptest.ParseSDP(ds.InviteResponse.Body())
	if err != nil {
		t.Fatal(err)
	}
	// Media flows: the callee hears the caller.
	pkt := siptest.RTPPacket(0xA1, 1, 160, 0, []byte("authenticated caller"))
	if err := caller.SendRTP(m.RTP, pkt); err != nil {
		t.Fatal(err)
	}
	if _, err := callee.WaitPackets(e.ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := bc.Bye(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.waitEnded(1)
	if r := ref.reasons(); r[RefusedAuthFailed] != 1 {
		t.Fatalf("refusals %v", r)
	}
	if k := e.srv.SecurityCounters(); k.CallsReserved != 0 {
		t.Fatalf("call slot leaked: %+v", k)
	}
}

// Trusted sources (a trunk) skip authentication even when required.
func TestDigestTrustedSource(t *testing.T) {
	callee := newParty(t, "2001")
	e, _ := authEnv(t, authEnvOpts{routes: []Route{staticRoute(callee, "2XXX")},
		auth:  AuthConfig{Required: true, Trusted: []string{"127.0.0.0/8"}},
		users: map[string]string{"1001": "s3cret"}})
	caller := e.party("5555")
	got := answerNext(t, e.ctx, callee, nil)
	ac, err := caller.Invite(e.ctx, e.uri("2001"), caller.SDP(siptest.SDPOptions{}))
	if err != nil {
		t.Fatalf("invite from trusted source: %v", err)
	}
	bc := recv(t, e.ctx, got)
	exchange(t, e.ctx, caller, ac, callee, bc, 5, 1)
	if err := ac.Bye(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.waitEnded(1)
}

func TestParseDigest(t *testing.T) {
	good := []struct {
		in   string
		want digestParams
	}{
		{`Digest username="1001", realm="bib", nonce="abc", uri="sip:bib", response="ff", algorithm=SHA-256, cnonce="x", qop=auth, nc=00000001`,
			digestParams{username: "1001", realm: "bib", nonce: "abc", uri: "sip:bib", response: "ff", algorithm: "SHA-256", cnonce: "x", qop: "auth", nc: "00000001"}},
		{"digest  response=\"ff\",uri=\"sip:a@b\" ,\tusername=\"a\\\"b\",realm=\"r\",nonce=n,opaque=\"o\",extra=1",
			digestParams{username: `a"b`, realm: "r", nonce: "n", uri: "sip:a@b", response: "ff", opaque: "o"}},
	}
	for _, tc := range good {
		got, err := parseDigest(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("parseDigest(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	bad := []string{
		"", "Digest", "Basic dXNlcjpwYXNz", `Digest username="a`, `Digest username="a" realm="r"`,
		`Digest username="a", username="b", realm="r", nonce="n", uri="u", response="r"`,
		`Digest realm="r", nonce="n", uri="u", response="r"`, `Digest =x`, `Digest username=, realm="r"`,
	}
	for _, in := range bad {
		if _, err := parseDigest(in); !errors.Is(err, errDigestSyntax) {
			t.Errorf("parseDigest(%q): want errDigestSyntax, got %v", in, err)
		}
	}
}

func FuzzParseDigest(f *testing.F) {
	f.Add(`Digest username="1001", realm="bib", nonce="abc", uri="sip:bib", response="ff", algorithm=MD5, cnonce="x", qop=auth, nc=00000001`)
	f.Add(`Digest username="a\"b", realm=r`)
	f.Add(`Digest ,,,`)
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseDigest(s)
		if err == nil && (d.username == "" || d.nonce == "" || d.response == "") {
			t.Fatalf("accepted without mandatory fields: %q", s)
		}
	})
}

func TestCredentials(t *testing.T) {
	md5hex := func(s string) string { h := md5.Sum([]byte(s)); return hex.EncodeToString(h[:]) }
	shahex := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	devs := []bridge.Device{
		{Name: "CSFA", Line: "1001", Password: "pw1"},
		{Name: "CSFB", Line: "1002", HA1: md5hex("1002:bib:pw2")},
		{Name: "CSFC", Line: "1003"}, // no credential
	}
	sups := []bridge.Supervisor{{User: "sup1", HA1: shahex("sup1:bib:pw3")}, {User: "sup2", PasswordHash: "$2a$..."}}
	c, err := CredentialsFor("bib", devs, sups)
	if err != nil {
		t.Fatal(err)
	}
	if c.Len() != 3 {
		t.Fatalf("Len %d, want 3", c.Len())
	}
	want := map[string][numAlgs]string{
		"1001": {algSHA256: shahex("1001:bib:pw1"), algMD5: md5hex("1001:bib:pw1")},
		"1002": {algMD5: md5hex("1002:bib:pw2")},
		"sup1": {algSHA256: shahex("sup1:bib:pw3")},
	}
	for u, w := range want {
		if got := *c.m[u]; got != w {
			t.Errorf("%s: %v, want %v", u, got, w)
		}
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "htdigest")
	if err := os.WriteFile(file, []byte("# comment\n\nfile1:bib:"+md5hex("file1:bib:x")+"\nfile1:bib:"+shahex("file1:bib:x")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.LoadFile(file); err != nil {
		t.Fatal(err)
	}
	if e := c.m["file1"]; e == nil || e[algMD5] == "" || e[algSHA256] == "" {
		t.Fatalf("file credentials: %v", e)
	}
	for name, content := range map[string]string{
		"realm": "u:other:" + md5hex("x"), "short": "u:bib:abc", "shape": "u:bib", "hex": "u:bib:" + strings.Repeat("z", 32),
	} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(content+"\n"), 0o600)
		if err := c.LoadFile(p); err == nil {
			t.Errorf("%s: bad line accepted", name)
		}
	}
}

func TestNonceForgery(t *testing.T) {
	clk := newFakeClock()
	a, err := newAuthenticator(AuthConfig{Realm: "bib", NonceTTL: bridge.Duration(time.Minute)}, nil, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	n := a.newNonce()
	if at, ok := a.checkNonce(n); !ok || !at.Equal(clk.Now()) {
		t.Fatalf("own nonce rejected: %v %v", at, ok)
	}
	b := []byte(n)
	b[3] ^= 1
	for _, bad := range []string{string(b), "", "abc", n + "A", strings.Repeat("A", len(n))} {
		if _, ok := a.checkNonce(bad); ok {
			t.Errorf("forged nonce %q accepted", bad)
		}
	}
	other, _ := newAuthenticator(AuthConfig{Realm: "bib", NonceTTL: bridge.Duration(time.Minute)}, nil, clk.Now)
	if _, ok := other.checkNonce(n); ok {
		t.Error("nonce of another process accepted")
	}
}

func TestSameURI(t *testing.T) {
	var r sipmsg.Uri
	if err := sipmsg.ParseUri("sip:2001@127.0.0.1:5060", &r); err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string]bool{
		"sip:2001@127.0.0.1:5060": true, "sip:2001@127.0.0.1": true, "SIP:2001@127.0.0.1:5060;transport=udp": true,
		"sip:2002@127.0.0.1:5060": false, "sips:2001@127.0.0.1:5060": false, "sip:2001@127.0.0.2": false, "garbage": false,
	} {
		if got := sameURI(in, r); got != want {
			t.Errorf("sameURI(%q) = %v", in, got)
		}
	}
}

// Valid credentials of one user do not let a request speak for another.
func TestDigestIdentityMismatch(t *testing.T) {
	e, _ := authEnv(t, authEnvOpts{users: map[string]string{"1001": "s3cret", "1002": "other"}})
	p := e.party("1001")
	res := sendRegister(t, e.ctx, e, p, "1002", "")
	mustStatus(t, nil, res, 401)
	authz := answer(t, challengeFor(t, res, "SHA-256"), "REGISTER", registrarURI(e), "1001", "s3cret", 1)
	mustStatus(t, nil, sendRegister(t, e.ctx, e, p, "1002", authz), 403)
	if registered(e, "1002") {
		t.Fatal("1001 registered as 1002")
	}
	// A digest-uri naming another resource is refused as well.
	res = sendRegister(t, e.ctx, e, p, "1001", "")
	authz = answer(t, challengeFor(t, res, "SHA-256"), "REGISTER", "sip:elsewhere.example", "1001", "s3cret", 1)
	mustStatus(t, nil, sendRegister(t, e.ctx, e, p, "1001", authz), 400)
}
