package sip

import (
	"bufio"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"math"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bib-project/bib/bridge"
	sipmsg "github.com/emiago/sipgo/sip"
)

// SIP digest authentication (RFC 3261 section 22, RFC 7616 with the
// SHA-256 algorithm of RFC 8760). bib is the registrar and the first hop,
// so it challenges with 401 and WWW-Authenticate, never 407.

// AuthConfig is the `sip.auth` block.
type AuthConfig struct {
	// Required makes every REGISTER and new INVITE authenticate, whoever
	// the From (REGISTER: To) user is, unless it comes from a Trusted
	// source. Unknown users then get the same challenge and the same 403 as
	// a wrong password. When false, only users that have credentials are
	// challenged and everyone else is let through (which tells a prober
	// which users have credentials). Default false.
	Required bool `yaml:"required"`
	// Realm is the digest realm. Precomputed HA1 values must be computed
	// with it: HA1 = H(user ":" realm ":" password). Default "bib".
	Realm string `yaml:"realm"`
	// NonceTTL is how long a nonce is accepted (duration); an older one gets
	// a new challenge with stale=true. Default 5m.
	NonceTTL bridge.Duration `yaml:"nonce_ttl"`
	// CredentialsFile is an optional file of "user:realm:ha1" lines (as
	// written by htdigest; 32 hex digits = MD5, 64 = SHA-256; '#' starts a
	// comment), added to the credentials of devices and supervisors.
	CredentialsFile string `yaml:"credentials_file"`
	// Trusted lists source prefixes (CIDR or single IPs) whose requests are
	// not challenged: SIP trunks and gateways that cannot authenticate.
	// Default empty.
	Trusted []string `yaml:"trusted"`
	// MaxFailures is the number of failed authentications from one source IP
	// after which that source is refused for a while. Default 5.
	MaxFailures int `yaml:"max_failures"`
	// Backoff is the first refusal period after MaxFailures failures
	// (duration); each further round of failures doubles it. Default 2s.
	Backoff bridge.Duration `yaml:"backoff"`
	// MaxBackoff caps the refusal period (duration); a source quiet for this
	// long starts again from Backoff. Default 5m.
	MaxBackoff bridge.Duration `yaml:"max_backoff"`
}

// Defaults fills unset fields.
func (c *AuthConfig) Defaults() {
	if c.Realm == "" {
		c.Realm = "bib"
	}
	if c.NonceTTL == 0 {
		c.NonceTTL = bridge.Duration(5 * time.Minute)
	}
	if c.MaxFailures == 0 {
		c.MaxFailures = 5
	}
	if c.Backoff == 0 {
		c.Backoff = bridge.Duration(2 * time.Second)
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = bridge.Duration(5 * time.Minute)
	}
}

// Validate checks every field; keys are relative to sip.auth.
func (c *AuthConfig) Validate() error {
	if c.Realm == "" || strings.ContainsAny(c.Realm, "\"\\\r\n") {
		return fmt.Errorf("sip.auth.realm: %q must be non-empty without quotes, backslashes or line breaks", c.Realm)
	}
	if c.NonceTTL < bridge.Duration(time.Second) {
		return fmt.Errorf("sip.auth.nonce_ttl: %s must be at least 1s", time.Duration(c.NonceTTL))
	}
	for i, t := range c.Trusted {
		if _, err := parsePrefix(t); err != nil {
			return fmt.Errorf("sip.auth.trusted[%d]: %q is not an IP or CIDR prefix", i, t)
		}
	}
	if c.MaxFailures < 1 {
		return fmt.Errorf("sip.auth.max_failures: %d must be at least 1", c.MaxFailures)
	}
	if c.Backoff <= 0 || c.MaxBackoff < c.Backoff {
		return fmt.Errorf("sip.auth.backoff/max_backoff: %s/%s: want 0 < backoff <= max_backoff",
			time.Duration(c.Backoff), time.Duration(c.MaxBackoff))
	}
	return nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// Digest algorithms bib offers, most preferred first (RFC 7616 section 3.7).
const (
	algSHA256 = iota
	algMD5
	numAlgs
)

var algNames = [numAlgs]string{algSHA256: "SHA-256", algMD5: "MD5"}

func algIndex(name string) int {
	switch strings.ToUpper(name) {
	case "SHA-256":
		return algSHA256
	case "MD5", "": // RFC 7616 section 3.3: absent means MD5
		return algMD5
	}
	return -1
}

func newHash(alg int) hash.Hash {
	if alg == algSHA256 {
		return sha256.New()
	}
	return md5.New()
}

// hhex returns the lowercase hex digest of the parts joined by ':'.
func hhex(alg int, parts ...string) string {
	h := newHash(alg)
	for i, p := range parts {
		if i > 0 {
			h.Write([]byte{':'})
		}
		h.Write([]byte(p))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Credentials are the digest secrets bib checks: per user, an HA1 for each
// algorithm the user can authenticate with. The zero value is not usable;
// use NewCredentials.
type Credentials struct {
	realm string
	m     map[string]*[numAlgs]string // user -> HA1 hex per algorithm ("" = none)
}

// NewCredentials returns an empty store for realm.
func NewCredentials(realm string) *Credentials {
	return &Credentials{realm: realm, m: map[string]*[numAlgs]string{}}
}

// Realm returns the realm the HA1 values belong to.
func (c *Credentials) Realm() string { return c.realm }

// Len returns the number of users with at least one credential.
func (c *Credentials) Len() int { return len(c.m) }

func (c *Credentials) entry(user string) *[numAlgs]string {
	e := c.m[user]
	if e == nil {
		e = new([numAlgs]string)
		c.m[user] = e
	}
	return e
}

// AddPassword derives the MD5 and SHA-256 HA1 of a clear-text password.
func (c *Credentials) AddPassword(user, password string) {
	e := c.entry(user)
	for alg := range numAlgs {
		e[alg] = hhex(alg, user, c.realm, password)
	}
}

// AddHA1 adds a precomputed HA1: 32 hex digits are MD5, 64 SHA-256.
func (c *Credentials) AddHA1(user, ha1 string) error {
	if !isHex(ha1) {
		return fmt.Errorf("ha1 for %q: not hex", user)
	}
	switch len(ha1) {
	case 32:
		c.entry(user)[algMD5] = strings.ToLower(ha1)
	case 64:
		c.entry(user)[algSHA256] = strings.ToLower(ha1)
	default:
		return fmt.Errorf("ha1 for %q: want 32 (MD5) or 64 (SHA-256) hex digits, got %d", user, len(ha1))
	}
	return nil
}

// LoadFile adds "user:realm:ha1" lines (htdigest format). Lines for
// another realm are an error: their HA1 could never match.
func (c *Credentials) LoadFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("sip.auth.credentials_file: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		parts := strings.Split(line, ":")
		if len(parts) != 3 || parts[0] == "" {
			return fmt.Errorf("sip.auth.credentials_file %s line %d: want user:realm:ha1", path, n)
		}
		if parts[1] != c.realm {
			return fmt.Errorf("sip.auth.credentials_file %s line %d: realm %q is not sip.auth.realm %q", path, n, parts[1], c.realm)
		}
		if err := c.AddHA1(parts[0], parts[2]); err != nil {
			return fmt.Errorf("sip.auth.credentials_file %s line %d: %w", path, n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("sip.auth.credentials_file %s: %w", path, err)
	}
	return nil
}

// CredentialsFor builds the store from configured devices and supervisors.
// A device authenticates with its line (directory number) as digest user
// name, a supervisor with its user; password gives both algorithms, ha1
// the one its length names. Entries without password or ha1 add nothing
// (a bcrypt password_hash serves the web login only).
func CredentialsFor(realm string, devices []bridge.Device, sups []bridge.Supervisor) (*Credentials, error) {
	c := NewCredentials(realm)
	add := func(key, user, password, ha1 string) error {
		if user == "" {
			return nil
		}
		if password != "" {
			c.AddPassword(user, password)
		}
		if ha1 != "" {
			if err := c.AddHA1(user, ha1); err != nil {
				return fmt.Errorf("%s.ha1: %w", key, err)
			}
		}
		return nil
	}
	for i, d := range devices {
		if err := add(fmt.Sprintf("devices[%d]", i), d.Line, d.Password, d.HA1); err != nil {
			return nil, err
		}
	}
	for i, s := range sups {
		if err := add(fmt.Sprintf("supervisors[%d]", i), s.User, s.Password, s.HA1); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// WithCredentials sets the digest credentials (merged with
// sip.auth.credentials_file). Without credentials and with auth.required
// false, bib authenticates nobody.
func WithCredentials(c *Credentials) Option {
	return func(s *Server) { s.secInit().creds = c }
}

// WithPrincipals takes the digest credentials of configured devices and
// supervisors (see CredentialsFor), in sip.auth.realm.
func WithPrincipals(devices []bridge.Device, sups []bridge.Supervisor) Option {
	return func(s *Server) {
		sec := s.secInit()
		sec.devices, sec.sups = devices, sups
	}
}

// digestParams is a parsed Authorization header (RFC 7616 section 3.4).
type digestParams struct {
	username, realm, nonce, uri, response, algorithm, cnonce, qop, nc, opaque string
}

// errDigestSyntax: the Authorization header is not a digest credential bib can read.
var errDigestSyntax = errors.New("malformed digest credentials")

// parseDigest parses the value of an Authorization header. It accepts
// quoted strings with backslash escapes and bare tokens, in any order;
// unknown parameters are ignored, duplicates are an error.
func parseDigest(v string) (digestParams, error) {
	var d digestParams
	v = strings.TrimSpace(v)
	if len(v) < 7 || !strings.EqualFold(v[:6], "Digest") || (v[6] != ' ' && v[6] != '\t') {
		return d, errDigestSyntax
	}
	rest := v[7:]
	seen := map[string]bool{}
	for {
		rest = strings.TrimLeft(rest, " \t\r\n")
		if rest == "" {
			break
		}
		eq := strings.IndexByte(rest, '=')
		if eq <= 0 {
			return d, errDigestSyntax
		}
		name := strings.ToLower(strings.TrimSpace(rest[:eq]))
		if name == "" || strings.ContainsAny(name, " \t\",") {
			return d, errDigestSyntax
		}
		rest = strings.TrimLeft(rest[eq+1:], " \t")
		var val string
		if strings.HasPrefix(rest, `"`) {
			var b strings.Builder
			i := 1
			closed := false
			for ; i < len(rest); i++ {
				ch := rest[i]
				if ch == '\\' && i+1 < len(rest) {
					i++
					b.WriteByte(rest[i])
					continue
				}
				if ch == '"' {
					closed = true
					break
				}
				b.WriteByte(ch)
			}
			if !closed {
				return d, errDigestSyntax
			}
			val, rest = b.String(), rest[i+1:]
		} else {
			end := strings.IndexAny(rest, ", \t")
			if end < 0 {
				end = len(rest)
			}
			val, rest = rest[:end], rest[end:]
			if val == "" {
				return d, errDigestSyntax
			}
		}
		if seen[name] {
			return d, errDigestSyntax
		}
		seen[name] = true
		switch name {
		case "username":
			d.username = val
		case "realm":
			d.realm = val
		case "nonce":
			d.nonce = val
		case "uri":
			d.uri = val
		case "response":
			d.response = val
		case "algorithm":
			d.algorithm = val
		case "cnonce":
			d.cnonce = val
		case "qop":
			d.qop = val
		case "nc":
			d.nc = val
		case "opaque":
			d.opaque = val
		}
		rest = strings.TrimLeft(rest, " \t\r\n")
		if rest == "" {
			break
		}
		if rest[0] != ',' {
			return d, errDigestSyntax
		}
		rest = rest[1:]
	}
	if d.username == "" || d.realm == "" || d.nonce == "" || d.uri == "" || d.response == "" {
		return d, errDigestSyntax
	}
	return d, nil
}

// Nonces are stateless until first used: base64url(issued unix nanos (8
// bytes) | 8 random bytes | first 16 bytes of HMAC-SHA256(key, first 16)).
// A forged or altered nonce fails the MAC; an old one is stale.
const (
	nonceRawLen = 8 + 8 + 16
	maxNonces   = 1 << 16 // nonces tracked for nonce-count replay checks
	maxFailSrcs = 1 << 16 // sources tracked for failure backoff
)

// authResult is the outcome of checking one request.
type authResult int

const (
	authOK         authResult = iota
	authChallenge             // no credentials: 401 with a fresh challenge
	authStale                 // right password, expired nonce: 401 stale=true
	authReplay                // nonce-count not increasing: 401 fresh, counted as a failure
	authFailed                // wrong credentials, unknown user, forged nonce: 403
	authBlocked               // source is backing off after failures: 503 Retry-After
	authBadRequest            // unreadable credentials: 400
)

type nonceUse struct {
	nc      uint32
	expires time.Time
}

type failState struct {
	count   int
	level   int
	last    time.Time
	blocked time.Time // refused until
}

type authenticator struct {
	cfg      AuthConfig
	creds    *Credentials
	trusted  []netip.Prefix
	required bool
	now      func() time.Time
	key      [32]byte // nonce MAC key, random per process
	dummyKey [32]byte // derives the fake HA1 of unknown users

	mu     sync.Mutex
	nonces map[string]nonceUse
	fails  map[netip.Addr]*failState

	challenges, successes, failures, blocked atomic.Uint64
}

func newAuthenticator(cfg AuthConfig, creds *Credentials, now func() time.Time) (*authenticator, error) {
	if creds == nil {
		creds = NewCredentials(cfg.Realm)
	}
	if creds.realm != cfg.Realm {
		return nil, fmt.Errorf("sip.auth.realm: credentials were built for realm %q, config says %q", creds.realm, cfg.Realm)
	}
	if cfg.CredentialsFile != "" {
		if err := creds.LoadFile(cfg.CredentialsFile); err != nil {
			return nil, err
		}
	}
	a := &authenticator{cfg: cfg, creds: creds, required: cfg.Required, now: now,
		nonces: map[string]nonceUse{}, fails: map[netip.Addr]*failState{}}
	for _, t := range cfg.Trusted {
		p, err := parsePrefix(t)
		if err != nil {
			return nil, fmt.Errorf("sip.auth.trusted: %q: %w", t, err)
		}
		a.trusted = append(a.trusted, p)
	}
	if _, err := rand.Read(a.key[:]); err != nil {
		return nil, fmt.Errorf("sip: nonce key: %w", err)
	}
	if _, err := rand.Read(a.dummyKey[:]); err != nil {
		return nil, fmt.Errorf("sip: nonce key: %w", err)
	}
	return a, nil
}

// enabled reports whether anything is ever challenged.
func (a *authenticator) enabled() bool { return a.required || a.creds.Len() > 0 }

// applies reports whether a request claiming user from src must authenticate.
func (a *authenticator) applies(user string, src netip.Addr) bool {
	for _, p := range a.trusted {
		if p.Contains(src) {
			return false
		}
	}
	if a.required {
		return true
	}
	_, ok := a.creds.m[user]
	return ok
}

func (a *authenticator) newNonce() string {
	var raw [nonceRawLen]byte
	binary.BigEndian.PutUint64(raw[:8], uint64(a.now().UnixNano()))
	_, _ = rand.Read(raw[8:16])
	m := hmac.New(sha256.New, a.key[:])
	m.Write(raw[:16])
	copy(raw[16:], m.Sum(nil))
	return base64.RawURLEncoding.EncodeToString(raw[:])
}

// checkNonce verifies the MAC and returns when the nonce was issued.
func (a *authenticator) checkNonce(n string) (time.Time, bool) {
	if base64.RawURLEncoding.DecodedLen(len(n)) != nonceRawLen {
		return time.Time{}, false
	}
	var raw [nonceRawLen]byte
	if k, err := base64.RawURLEncoding.Decode(raw[:], []byte(n)); err != nil || k != nonceRawLen {
		return time.Time{}, false
	}
	m := hmac.New(sha256.New, a.key[:])
	m.Write(raw[:16])
	if !hmac.Equal(raw[16:], m.Sum(nil)[:16]) {
		return time.Time{}, false
	}
	ns := binary.BigEndian.Uint64(raw[:8])
	if ns > math.MaxInt64 {
		return time.Time{}, false
	}
	return time.Unix(0, int64(ns)), true
}

// challenges returns the WWW-Authenticate headers: one per algorithm,
// SHA-256 first, all with the same nonce (RFC 7616 section 3.3, 3.7).
func (a *authenticator) challengeHeaders(stale bool) []sipmsg.Header {
	nonce := a.newNonce()
	out := make([]sipmsg.Header, 0, numAlgs)
	for alg := range numAlgs {
		v := `Digest realm="` + a.cfg.Realm + `", nonce="` + nonce + `", algorithm=` + algNames[alg] + `, qop="auth"`
		if stale {
			v += ", stale=true"
		}
		out = append(out, sipmsg.NewHeader("WWW-Authenticate", v))
	}
	return out
}

// blockedFor returns how long src is still refused (0: not refused).
func (a *authenticator) blockedFor(src netip.Addr) time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	f := a.fails[src]
	if f == nil {
		return 0
	}
	return max(0, f.blocked.Sub(a.now()))
}

// fail records a failed authentication from src; after MaxFailures in a
// row the source is refused for Backoff * 2^level, capped at MaxBackoff.
func (a *authenticator) fail(src netip.Addr) {
	a.failures.Add(1)
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	f := a.fails[src]
	if f == nil {
		if len(a.fails) >= maxFailSrcs {
			a.pruneFails(now)
		}
		if len(a.fails) >= maxFailSrcs {
			return // table full of active offenders: still refused per request
		}
		f = &failState{}
		a.fails[src] = f
	}
	if now.Sub(f.last) > time.Duration(a.cfg.MaxBackoff) && now.After(f.blocked) {
		f.count, f.level = 0, 0 // quiet for long enough: start over
	}
	f.last = now
	f.count++
	if f.count >= a.cfg.MaxFailures {
		d := time.Duration(a.cfg.Backoff) << min(f.level, 30)
		if d <= 0 || d > time.Duration(a.cfg.MaxBackoff) {
			d = time.Duration(a.cfg.MaxBackoff)
		}
		f.blocked = now.Add(d)
		f.count = 0
		f.level++
	}
}

func (a *authenticator) pruneFails(now time.Time) {
	for k, f := range a.fails {
		if now.After(f.blocked) && now.Sub(f.last) > time.Duration(a.cfg.MaxBackoff) {
			delete(a.fails, k)
		}
	}
}

// useNonce records nonce-count nc for nonce; false when nc does not grow
// (a replay, RFC 7616 section 3.4 "nc") or the table is full.
func (a *authenticator) useNonce(nonce string, nc uint32, issued time.Time) bool {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	u, ok := a.nonces[nonce]
	if ok && nc <= u.nc {
		return false
	}
	if !ok && len(a.nonces) >= maxNonces {
		for k, v := range a.nonces {
			if now.After(v.expires) {
				delete(a.nonces, k)
			}
		}
		if len(a.nonces) >= maxNonces {
			return false
		}
	}
	a.nonces[nonce] = nonceUse{nc: nc, expires: issued.Add(time.Duration(a.cfg.NonceTTL))}
	return true
}

// ha1 returns the user's HA1 for alg, or a fake one derived from a secret
// when the user or that algorithm has none, so that unknown users take the
// same path and time as wrong passwords.
func (a *authenticator) ha1(user string, alg int) (string, bool) {
	if e, ok := a.creds.m[user]; ok && e[alg] != "" {
		return e[alg], true
	}
	m := hmac.New(sha256.New, a.dummyKey[:])
	m.Write([]byte(user))
	sum := m.Sum(nil)
	if alg == algMD5 {
		sum = sum[:16]
	}
	return hex.EncodeToString(sum), false
}

// check authenticates req as identity (the From user of an INVITE, the
// To user of a REGISTER) from src.
func (a *authenticator) check(req *sipmsg.Request, identity string, src netip.Addr) authResult {
	if a.blockedFor(src) > 0 {
		a.blocked.Add(1)
		return authBlocked
	}
	var d digestParams
	found, bad := false, false
	for _, h := range req.GetHeaders("Authorization") {
		p, err := parseDigest(h.Value())
		if err != nil {
			bad = true
			continue
		}
		if p.realm == a.cfg.Realm {
			d, found = p, true
			break
		}
	}
	if !found {
		if bad {
			a.fail(src)
			return authBadRequest
		}
		a.challenges.Add(1)
		return authChallenge
	}
	alg := algIndex(d.algorithm)
	nc, ncErr := strconv.ParseUint(d.nc, 16, 32)
	if alg < 0 || !strings.EqualFold(d.qop, "auth") || d.cnonce == "" || len(d.nc) != 8 || ncErr != nil || nc == 0 {
		// bib offers qop=auth only; RFC 2069 responses without qop have no
		// nonce-count and cannot be protected against replay.
		a.fail(src)
		return authBadRequest
	}
	if !sameURI(d.uri, req.Recipient) {
		a.fail(src)
		return authBadRequest
	}
	issued, macOK := a.checkNonce(d.nonce)
	ha1, known := a.ha1(d.username, alg)
	ha2 := hhex(alg, req.Method.String(), d.uri)
	want := hhex(alg, ha1, d.nonce, d.nc, d.cnonce, strings.ToLower(d.qop), ha2)
	match := subtle.ConstantTimeCompare([]byte(want), []byte(strings.ToLower(d.response))) == 1
	// The user name must be the identity the request claims: a valid
	// password for one user does not let it speak for another.
	same := subtle.ConstantTimeCompare([]byte(d.username), []byte(identity)) == 1
	if !match || !known || !same || !macOK {
		a.fail(src)
		return authFailed
	}
	if a.now().Sub(issued) > time.Duration(a.cfg.NonceTTL) || issued.After(a.now().Add(time.Minute)) {
		a.challenges.Add(1)
		return authStale
	}
	if !a.useNonce(d.nonce, uint32(nc), issued) {
		a.fail(src)
		return authReplay
	}
	a.successes.Add(1)
	return authOK
}

// sameURI compares the digest-uri with the Request-URI (RFC 7616 section
// 3.4.6: the server checks they name the same resource).
func sameURI(digestURI string, rURI sipmsg.Uri) bool {
	var u sipmsg.Uri
	if err := sipmsg.ParseUri(digestURI, &u); err != nil {
		return false
	}
	port := func(x sipmsg.Uri) int {
		if x.Port != 0 {
			return x.Port
		}
		if strings.EqualFold(x.Scheme, "sips") {
			return 5061
		}
		return 5060
	}
	scheme := func(x sipmsg.Uri) string {
		if x.Scheme == "" {
			return "sip"
		}
		return strings.ToLower(x.Scheme)
	}
	return scheme(u) == scheme(rURI) && u.User == rURI.User && strings.EqualFold(u.Host, rURI.Host) && port(u) == port(rURI)
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return s != ""
}
