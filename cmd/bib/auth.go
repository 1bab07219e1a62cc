package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/bib-project/bib/bridge"
)

// HTTP authentication of supervisors.
//
// Auth is on when at least one supervisor is configured; with none (the
// embedded defaults, the load harness, most tests) the API is open as
// before and nobody may listen to calls. When on:
//   - POST /api/v1/login {"user","password"} checks the password against
//     the supervisor's bcrypt password_hash (a plain password in the config
//     is hashed at start-up, with a warning) and returns a session token,
//     both as JSON (for API clients: Authorization: Bearer <token>) and as
//     the cookie bib_session (HttpOnly, SameSite=Strict) for the web page;
//   - the call, monitoring and recording APIs (/api/v1/calls...,
//     /api/v1/recordings..., /api/v1/registrations) need a session: without
//     one they answer 401; a call or recording whose agent line is outside
//     the supervisor's monitoring search space (supervisors[].monitors)
//     answers 403, and lists show only the calls and recordings in scope;
//   - a session ends after http.session_timeout without a request (default
//     30 minutes) or with POST /api/v1/logout.
//
// Refusals are logged at warn level with the path and remote address.

// sessionCookie is the web page's session cookie.
const sessionCookie = "bib_session"

// webUser is a supervisor who can sign in on the web page.
type webUser struct {
	sup  bridge.Supervisor
	hash []byte // bcrypt
}

type authSession struct {
	user string
	last time.Time
}

// auth holds the supervisors' password hashes and the live sessions.
type auth struct {
	log     *slog.Logger
	now     func() time.Time
	timeout time.Duration
	pol     *bridge.Policy
	users   map[string]webUser
	dummy   []byte // compared against for unknown users, so timing says nothing

	mu       sync.Mutex
	sessions map[[32]byte]*authSession // by SHA-256 of the token
}

// bcryptCost is the cost of hashes made from plain passwords at start-up.
var bcryptCost = bcrypt.DefaultCost

func newAuth(sups []bridge.Supervisor, pol *bridge.Policy, timeout time.Duration, log *slog.Logger, now func() time.Time) (*auth, error) {
	if now == nil {
		now = time.Now
	}
	if timeout <= 0 {
		timeout = 30 * time.Minute
	}
	a := &auth{log: log, now: now, timeout: timeout, pol: pol, users: map[string]webUser{}, sessions: map[[32]byte]*authSession{}}
	for _, s := range sups {
		var h []byte
		switch {
		case s.PasswordHash != "":
			h = []byte(s.PasswordHash)
		case s.Password != "":
			var err error
			if h, err = bcrypt.GenerateFromPassword([]byte(s.Password), bcryptCost); err != nil {
				return nil, err
			}
			log.Warn("supervisor password is in clear text in the config; it was hashed in memory, but store a bcrypt password_hash instead", "user", s.User)
		default:
			log.Warn("supervisor has no web password (only ha1): it cannot sign in on the web page", "user", s.User)
			continue
		}
		a.users[s.User] = webUser{sup: s, hash: h}
	}
	if len(sups) > 0 {
		a.dummy, _ = bcrypt.GenerateFromPassword([]byte("not a password"), bcryptCost)
	}
	return a, nil
}

// enabled reports whether HTTP auth is on (some supervisor is configured).
func (a *auth) enabled() bool { return a.dummy != nil }

var errBadCredentials = errors.New("bad credentials")

// login checks a password and opens a session.
func (a *auth) login(user, password string) (string, error) {
	u, ok := a.users[user]
	if !ok {
		bcrypt.CompareHashAndPassword(a.dummy, []byte(password))
		return "", errBadCredentials
	}
	if bcrypt.CompareHashAndPassword(u.hash, []byte(password)) != nil {
		return "", errBadCredentials
	}
	var b [32]byte
	rand.Read(b[:])
	tok := base64.RawURLEncoding.EncodeToString(b[:])
	a.mu.Lock()
	a.gc()
	a.sessions[sha256.Sum256([]byte(tok))] = &authSession{user: user, last: a.now()}
	a.mu.Unlock()
	return tok, nil
}

// gc drops expired sessions. Caller holds mu.
func (a *auth) gc() {
	now := a.now()
	for k, s := range a.sessions {
		if now.Sub(s.last) >= a.timeout {
			delete(a.sessions, k)
		}
	}
}

// token returns the request's session token: Authorization: Bearer first,
// then the cookie.
func requestToken(r *http.Request) string {
	if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	if c, err := r.Cookie(sessionCookie); err == nil {
		return c.Value
	}
	return ""
}

// session returns the supervisor of the request's live session and marks
// it used; expired sessions are removed.
func (a *auth) session(r *http.Request) (bridge.Supervisor, bool) {
	tok := requestToken(r)
	if tok == "" {
		return bridge.Supervisor{}, false
	}
	k := sha256.Sum256([]byte(tok))
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.sessions[k]
	if !ok {
		return bridge.Supervisor{}, false
	}
	now := a.now()
	if now.Sub(s.last) >= a.timeout {
		delete(a.sessions, k)
		return bridge.Supervisor{}, false
	}
	s.last = now
	return a.users[s.user].sup, true
}

func (a *auth) logout(r *http.Request) {
	if tok := requestToken(r); tok != "" {
		a.mu.Lock()
		delete(a.sessions, sha256.Sum256([]byte(tok)))
		a.mu.Unlock()
	}
}

type supervisorKey struct{}

// supervisorOf returns the signed-in supervisor of a request (ok false
// when auth is off).
func supervisorOf(r *http.Request) (bridge.Supervisor, bool) {
	s, ok := r.Context().Value(supervisorKey{}).(bridge.Supervisor)
	return s, ok
}

// protectedPath reports whether a path needs a session when auth is on.
func protectedPath(p string) bool {
	for _, pre := range []string{"/api/v1/calls", "/api/v1/recordings", "/api/v1/registrations"} {
		if p == pre || strings.HasPrefix(p, pre+"/") {
			return true
		}
	}
	return false
}

// registerAuthRoutes adds login, logout and the session query.
func (a *auth) registerRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/v1/login", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			User     string `json:"user"`
			Password string `json:"password"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil {
			writeJSONError(w, http.StatusBadRequest, "bad_request", `Send {"user": "...", "password": "..."} as JSON.`)
			return
		}
		if !a.enabled() {
			writeJSONError(w, http.StatusNotFound, "auth_disabled", "No supervisors are configured, so there is nobody to sign in as; add supervisors to the config.")
			return
		}
		tok, err := a.login(req.User, req.Password)
		if err != nil {
			a.log.Warn("http sign-in refused", "user", req.User, "remote", r.RemoteAddr)
			writeJSONError(w, http.StatusUnauthorized, "bad_credentials", "Unknown user or wrong password.")
			return
		}
		a.log.Info("supervisor signed in", "user", req.User, "remote", r.RemoteAddr)
		http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: tok, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
		respondJSON(w, http.StatusOK, map[string]any{"token": tok, "user": req.User, "idle_timeout_s": int(a.timeout.Seconds())})
	})
	mux.HandleFunc("POST /api/v1/logout", func(w http.ResponseWriter, r *http.Request) {
		a.logout(r)
		http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /api/v1/session", func(w http.ResponseWriter, r *http.Request) {
		if !a.enabled() {
			respondJSON(w, http.StatusOK, map[string]any{"auth": false})
			return
		}
		sup, ok := a.session(r)
		if !ok {
			writeJSONError(w, http.StatusUnauthorized, "unauthenticated", "Sign in first: POST /api/v1/login.")
			return
		}
		respondJSON(w, http.StatusOK, map[string]any{"auth": true, "user": sup.User, "monitors": sup.Monitors})
	})
}

// middleware requires a session on the protected paths (when auth is on),
// puts the supervisor in the request context and enforces the monitoring
// search space on calls and recordings.
func (a *auth) middleware(s *server, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !a.enabled() || !protectedPath(r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		sup, ok := a.session(r)
		if !ok {
			a.log.Warn("http request refused: not signed in", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
			w.Header().Set("WWW-Authenticate", `Bearer realm="bib"`)
			writeJSONError(w, http.StatusUnauthorized, "unauthenticated", "Sign in first (POST /api/v1/login), then send the cookie or Authorization: Bearer <token>.")
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), supervisorKey{}, sup))
		parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/") // api v1 calls {id} ...
		switch {
		case len(parts) == 3 && parts[2] == "calls" && r.Method == http.MethodGet:
			a.filterList(w, r, next, "calls", func(raw json.RawMessage) bool { return s.callRawInScope(sup, raw) })
			return
		case len(parts) == 3 && parts[2] == "recordings" && r.Method == http.MethodGet:
			a.filterList(w, r, next, "recordings", func(raw json.RawMessage) bool { return recordingInScope(sup, raw) })
			return
		case len(parts) >= 4 && parts[2] == "calls":
			if in, known := s.callInScope(sup, parts[3]); known && !in {
				a.refuseScope(w, r, sup, "call "+parts[3])
				return
			}
		case len(parts) >= 4 && parts[2] == "recordings":
			// Look the recording's metadata up through the API itself.
			rec := newCapture()
			mr := r.Clone(r.Context())
			mr.Method, mr.URL.Path, mr.URL.RawQuery = http.MethodGet, "/api/v1/recordings/"+parts[3], ""
			next.ServeHTTP(rec, mr)
			if rec.Code == http.StatusOK && !recordingInScope(sup, rec.Body.Bytes()) {
				a.refuseScope(w, r, sup, "recording "+parts[3])
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func (a *auth) refuseScope(w http.ResponseWriter, r *http.Request, sup bridge.Supervisor, what string) {
	a.log.Warn("http request refused: out of the supervisor's monitoring search space", "user", sup.User, "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
	writeJSONError(w, http.StatusForbidden, "out_of_scope",
		"Supervisor "+sup.User+" may not monitor the agent line of "+what+"; add the line to the supervisor's monitors.")
}

// filterList runs the list handler and keeps the items of the JSON array
// under key for which keep is true; other fields pass unchanged.
func (a *auth) filterList(w http.ResponseWriter, r *http.Request, next http.Handler, key string, keep func(json.RawMessage) bool) {
	rec := newCapture()
	next.ServeHTTP(rec, r)
	var body map[string]json.RawMessage
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &body) != nil {
		copyResponse(w, rec)
		return
	}
	var items []json.RawMessage
	if err := json.Unmarshal(body[key], &items); err != nil {
		copyResponse(w, rec)
		return
	}
	kept := make([]json.RawMessage, 0, len(items))
	for _, it := range items {
		if keep(it) {
			kept = append(kept, it)
		}
	}
	body[key], _ = json.Marshal(kept)
	respondJSON(w, http.StatusOK, body)
}

func copyResponse(w http.ResponseWriter, rec *capture) {
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	io.Copy(w, bytes.NewReader(rec.Body.Bytes()))
}

// agentLines returns the lines of a call's configured parties (its near
// ends).
func agentLines(pol *bridge.Policy, caller, callee string) []string {
	roles := pol.NearEnd(caller, callee)
	var lines []string
	for _, side := range []bridge.Side{bridge.SideA, bridge.SideB} {
		if pr := roles.Party(side); pr.Configured {
			lines = append(lines, pr.Device.Line)
		}
	}
	return lines
}

func mayMonitorAny(sup bridge.Supervisor, lines []string) bool {
	for _, l := range lines {
		if sup.MayMonitor(l) {
			return true
		}
	}
	return false
}

// callRawInScope decides for one item of the call list.
func (s *server) callRawInScope(sup bridge.Supervisor, raw json.RawMessage) bool {
	var c struct {
		Caller string `json:"caller"`
		Callee string `json:"callee"`
	}
	if json.Unmarshal(raw, &c) != nil {
		return false
	}
	return mayMonitorAny(sup, agentLines(s.policy, c.Caller, c.Callee))
}

// callInScope reports whether a live call's agent line is in sup's search
// space; known is false for an unknown call (the handler answers 404).
func (s *server) callInScope(sup bridge.Supervisor, id string) (in, known bool) {
	ci, ok := s.sip.Call(id)
	if !ok {
		return false, false
	}
	return mayMonitorAny(sup, agentLines(s.policy, ci.Caller, ci.Callee)), true
}

// recordingInScope decides on a recording's metadata: its near end's line.
func recordingInScope(sup bridge.Supervisor, raw []byte) bool {
	var m struct {
		Near struct {
			Line string `json:"line"`
			Addr string `json:"addr"`
		} `json:"near"`
	}
	if json.Unmarshal(raw, &m) != nil {
		return false
	}
	line := m.Near.Line
	if line == "" {
		line = m.Near.Addr
	}
	return sup.MayMonitor(line)
}

// capture is an in-memory ResponseWriter for running a handler whose
// answer the middleware inspects.
type capture struct {
	Code int
	Body bytes.Buffer
	h    http.Header
}

func newCapture() *capture { return &capture{Code: http.StatusOK, h: http.Header{}} }

func (c *capture) Header() http.Header         { return c.h }
func (c *capture) Write(b []byte) (int, error) { return c.Body.Write(b) }
func (c *capture) WriteHeader(code int)        { c.Code = code }
