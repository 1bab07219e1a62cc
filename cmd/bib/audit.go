package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/bib-project/bib/bridge"
	"github.com/bib-project/bib/sip"
)

// The audit trail: an append-only JSON-lines file, DATA/audit.jsonl, of
// every monitoring session, every recording access through the API, every
// refusal (SIP and HTTP) and the configuration at every start-up.
//
// Durability: Record never blocks the caller; records go through a bounded
// queue to one writer goroutine, which appends whatever is queued in one
// write(2) and then fsyncs (group commit): under load many records share
// one fsync, when idle each record is on disk a few milliseconds after
// Record. A full queue (auditQueue records) drops the record, counts it,
// and the next batch starts with an audit.dropped record saying how many.
//
// Tamper evidence: each record carries hash = SHA-256(previous hash ||
// the record's JSON without the hash), so editing or removing a line in
// the middle breaks the chain (verifyAuditChain). The chain does not stop
// someone who can rewrite the whole file; ship the file elsewhere for that.
//
// The recordings index (SQLite) does not hold the audit trail: the file is
// the only copy. GET /api/v1/audit reads it back.

// AuditRecord is one line of the audit trail.
type AuditRecord struct {
	Seq     uint64         `json:"seq"`
	Time    time.Time      `json:"time"`
	Actor   string         `json:"actor"`            // who: a supervisor, a SIP user (sip:1001), "system", "anonymous"
	Action  string         `json:"action"`           // what, e.g. monitor.start, recording.play, sip.refused, config.loaded
	Target  string         `json:"target,omitempty"` // which call, recording or user
	Source  string         `json:"source,omitempty"` // from where (ip:port)
	Outcome string         `json:"outcome"`          // ok, refused or failed
	Detail  map[string]any `json:"detail,omitempty"`
	Hash    string         `json:"hash,omitempty"`
}

// Audit outcomes.
const (
	auditOK      = "ok"
	auditRefused = "refused"
	auditFailed  = "failed"
)

// Auditor records audit events. Implementations never block for long and
// never fail the caller: an event that cannot be written is counted.
type Auditor interface {
	Record(ctx context.Context, r AuditRecord)
}

// nopAuditor discards everything (tests, commands without a data dir).
type nopAuditor struct{}

func (nopAuditor) Record(context.Context, AuditRecord) {}

var _ Auditor = (*auditLog)(nil)

// auditQueue bounds the records waiting for the writer.
const auditQueue = 8192

// auditLog is the file-backed Auditor.
type auditLog struct {
	path string
	log  *slog.Logger
	now  func() time.Time

	q       chan AuditRecord
	flushc  chan chan struct{}
	stop    chan struct{}
	done    chan struct{}
	closeMu sync.Once

	f        *os.File // owned by the writer goroutine
	seq      uint64   // last written, writer goroutine only
	prevHash string   // writer goroutine only

	dropped atomic.Uint64 // not yet reported in the file
	lost    atomic.Uint64 // total dropped since start
	written atomic.Uint64
	errs    atomic.Uint64
}

// openAuditLog opens (creating) the append-only file and starts the
// writer. The sequence number and hash chain continue from the last line.
func openAuditLog(path string, log *slog.Logger, now func() time.Time) (*auditLog, error) {
	if now == nil {
		now = time.Now
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	a := &auditLog{path: path, log: log, now: now, f: f,
		q: make(chan AuditRecord, auditQueue), flushc: make(chan chan struct{}),
		stop: make(chan struct{}), done: make(chan struct{})}
	if last, ok, err := lastAuditRecord(path); err != nil {
		f.Close()
		return nil, err
	} else if ok {
		a.seq, a.prevHash = last.Seq, last.Hash
	}
	go a.run()
	return a, nil
}

// lastAuditRecord reads the last complete line of the file.
func lastAuditRecord(path string) (AuditRecord, bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return AuditRecord{}, false, fmt.Errorf("audit log: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return AuditRecord{}, false, fmt.Errorf("audit log: %w", err)
	}
	const tail = 1 << 20
	off := max(0, st.Size()-tail)
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
		return AuditRecord{}, false, fmt.Errorf("audit log: %w", err)
	}
	lines := bytes.Split(buf, []byte("\n"))
	for i := len(lines) - 1; i >= 0; i-- {
		var r AuditRecord
		if json.Unmarshal(lines[i], &r) == nil && r.Seq > 0 {
			return r, true, nil
		}
	}
	return AuditRecord{}, false, nil
}

// Record queues r. Time defaults to now, Outcome to ok.
func (a *auditLog) Record(_ context.Context, r AuditRecord) {
	if r.Time.IsZero() {
		r.Time = a.now()
	}
	if r.Outcome == "" {
		r.Outcome = auditOK
	}
	select {
	case <-a.stop:
		a.lost.Add(1)
		return
	default:
	}
	select {
	case a.q <- r:
	default:
		a.dropped.Add(1)
		a.lost.Add(1)
	}
}

// Flush waits until everything recorded before the call is on disk.
func (a *auditLog) Flush(ctx context.Context) error {
	ack := make(chan struct{})
	select {
	case a.flushc <- ack:
	case <-a.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-ack:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close writes what is queued and closes the file. Idempotent.
func (a *auditLog) Close() error {
	a.closeMu.Do(func() { close(a.stop) })
	<-a.done
	return nil
}

func (a *auditLog) run() {
	defer close(a.done)
	defer a.f.Close()
	batch := make([]AuditRecord, 0, 256)
	drain := func() {
		for {
			select {
			case r := <-a.q:
				batch = append(batch, r)
			default:
				return
			}
		}
	}
	for {
		var ack chan struct{}
		stopping := false
		select {
		case r := <-a.q:
			batch = append(batch, r)
		case ack = <-a.flushc:
		case <-a.stop:
			stopping = true
		}
		drain()
		a.write(batch)
		batch = batch[:0]
		if ack != nil {
			close(ack)
		}
		if stopping {
			return
		}
	}
}

// write appends the batch in one write and fsyncs.
func (a *auditLog) write(batch []AuditRecord) {
	if n := a.dropped.Swap(0); n > 0 {
		batch = append([]AuditRecord{{Time: a.now(), Actor: "system", Action: "audit.dropped", Outcome: auditFailed,
			Detail: map[string]any{"records": n, "why": "audit queue full"}}}, batch...)
	}
	if len(batch) == 0 {
		return
	}
	var buf bytes.Buffer
	for _, r := range batch {
		a.seq++
		r.Seq = a.seq
		line, err := chainRecord(&r, a.prevHash)
		if err != nil {
			a.errs.Add(1)
			continue
		}
		a.prevHash = r.Hash
		buf.Write(line)
	}
	if _, err := a.f.Write(buf.Bytes()); err != nil {
		a.errs.Add(1)
		a.log.Error("audit log write failed: audit records lost", "path", a.path, "records", len(batch), "err", err)
		return
	}
	if err := a.f.Sync(); err != nil {
		a.errs.Add(1)
		a.log.Error("audit log fsync failed", "path", a.path, "err", err)
	}
	a.written.Add(uint64(len(batch)))
}

// chainRecord sets r.Hash from prev and returns the JSON line.
func chainRecord(r *AuditRecord, prev string) ([]byte, error) {
	r.Hash = ""
	body, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	h.Write([]byte(prev))
	h.Write(body)
	r.Hash = hex.EncodeToString(h.Sum(nil))
	line, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	return append(line, '\n'), nil
}

// verifyAuditChain checks every line's hash against its predecessor.
func verifyAuditChain(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 16<<20)
	prev, n := "", 0
	var prevSeq uint64
	for sc.Scan() {
		n++
		var r AuditRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return n, fmt.Errorf("line %d: not a record: %w", n, err)
		}
		want := r.Hash
		c := r
		if _, err := chainRecord(&c, prev); err != nil {
			return n, err
		}
		if c.Hash != want {
			return n, fmt.Errorf("line %d (seq %d): hash does not follow from the previous line: edited or removed records", n, r.Seq)
		}
		if prevSeq != 0 && r.Seq != prevSeq+1 {
			return n, fmt.Errorf("line %d: seq %d after %d", n, r.Seq, prevSeq)
		}
		prev, prevSeq = want, r.Seq
	}
	return n, sc.Err()
}

// auditQuery selects records for GET /api/v1/audit.
type auditQuery struct {
	Since  time.Time // records at or after
	After  uint64    // records with a larger seq (paging)
	Action string    // exact action, or a prefix ending in '.' ("recording.")
	Actor  string
	Limit  int // 1..1000
}

func (q auditQuery) match(r *AuditRecord) bool {
	if !q.Since.IsZero() && r.Time.Before(q.Since) {
		return false
	}
	if r.Seq <= q.After {
		return false
	}
	if q.Action != "" {
		if strings.HasSuffix(q.Action, ".") {
			if !strings.HasPrefix(r.Action, q.Action) {
				return false
			}
		} else if r.Action != q.Action {
			return false
		}
	}
	return q.Actor == "" || r.Actor == q.Actor
}

// Query returns matching records, oldest first: the first Limit after
// Since/After when either is given (paging forward), else the last Limit.
// more is true when further records match.
func (a *auditLog) Query(ctx context.Context, q auditQuery) (out []AuditRecord, more bool, err error) {
	if err := a.Flush(ctx); err != nil {
		return nil, false, err
	}
	f, err := os.Open(a.path)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	forward := !q.Since.IsZero() || q.After > 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 16<<20)
	for sc.Scan() {
		var r AuditRecord
		if json.Unmarshal(sc.Bytes(), &r) != nil || !q.match(&r) {
			continue
		}
		if forward && len(out) == q.Limit {
			return out, true, nil
		}
		out = append(out, r)
		if !forward && len(out) > q.Limit {
			out = out[1:]
			more = true
		}
	}
	return out, more, sc.Err()
}

// registerAuditRoutes serves GET /api/v1/audit?since=&after=&action=&actor=&limit=.
// With supervisors configured (HTTP sign-in on) only the supervisors
// listed in http.admins may read it; without, it is open like the rest
// of the API (loopback development setups).
func (s *server) registerAuditRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/audit", func(w http.ResponseWriter, r *http.Request) {
		actor := "anonymous"
		if s.auth.enabled() {
			sup, ok := s.auth.session(r)
			if !ok {
				s.audit().Record(r.Context(), AuditRecord{Actor: actor, Action: "audit.read", Source: r.RemoteAddr, Outcome: auditRefused, Detail: map[string]any{"why": "not signed in"}})
				w.Header().Set("WWW-Authenticate", `Bearer realm="bib"`)
				writeJSONError(w, http.StatusUnauthorized, "unauthenticated", "Sign in first (POST /api/v1/login) as a supervisor listed in http.admins.")
				return
			}
			actor = sup.User
			if !slices.Contains(s.cfg.HTTP.Admins, sup.User) {
				s.audit().Record(r.Context(), AuditRecord{Actor: actor, Action: "audit.read", Source: r.RemoteAddr, Outcome: auditRefused, Detail: map[string]any{"why": "not in http.admins"}})
				writeJSONError(w, http.StatusForbidden, "not_admin", "Only supervisors listed in http.admins may read the audit trail.")
				return
			}
		}
		v := r.URL.Query()
		q := auditQuery{Action: v.Get("action"), Actor: v.Get("actor"), Limit: 100}
		var err error
		if q.Since, err = recParseTime(v.Get("since")); err != nil {
			writeJSONError(w, http.StatusBadRequest, "bad_since", "since: "+err.Error())
			return
		}
		if a := v.Get("after"); a != "" {
			if q.After, err = strconv.ParseUint(a, 10, 64); err != nil {
				writeJSONError(w, http.StatusBadRequest, "bad_after", "after must be a record's seq.")
				return
			}
		}
		if l := v.Get("limit"); l != "" {
			n, err := strconv.Atoi(l)
			if err != nil || n < 1 || n > 1000 {
				writeJSONError(w, http.StatusBadRequest, "bad_limit", "limit must be a number from 1 to 1000.")
				return
			}
			q.Limit = n
		}
		al, ok := s.audit().(*auditLog)
		if !ok {
			writeJSONError(w, http.StatusServiceUnavailable, "audit_unavailable", "The audit log is not open.")
			return
		}
		// Reading the trail is itself audited, before the read.
		al.Record(r.Context(), AuditRecord{Actor: actor, Action: "audit.read", Source: r.RemoteAddr, Detail: map[string]any{"query": r.URL.RawQuery}})
		recs, more, err := al.Query(r.Context(), q)
		if err != nil {
			s.log.Error("read audit log", "err", err)
			writeJSONError(w, http.StatusInternalServerError, "audit_error", "The audit log could not be read.")
			return
		}
		if recs == nil {
			recs = []AuditRecord{}
		}
		resp := map[string]any{"records": recs, "more": more}
		if len(recs) > 0 {
			resp["next_after"] = recs[len(recs)-1].Seq
		}
		respondJSON(w, http.StatusOK, resp)
	})
}

// audit returns the server's Auditor (a no-op before the log is open).
func (s *server) audit() Auditor {
	if a := s.auditFile.Load(); a != nil {
		return a
	}
	return nopAuditor{}
}

// openAudit opens DATA/audit.jsonl and records the start-up configuration.
func (s *server) openAudit() error {
	path := filepath.Join(s.cfg.Data, "audit.jsonl")
	prev := previousSettings(path)
	al, err := openAuditLog(path, s.log, nil)
	if err != nil {
		return err
	}
	s.auditStartup(al, prev)
	s.auditFile.Store(al)
	return nil
}

// closeAudit flushes and closes the audit log (after everything that
// records into it has stopped).
func (s *server) closeAudit() {
	if al := s.auditFile.Swap(nil); al != nil {
		al.Close()
		if n := al.lost.Load(); n > 0 {
			s.log.Warn("audit records were dropped (queue full)", "records", n)
		}
	}
}

// onSIPRefused turns a SIP refusal into an audit record.
func (s *server) onSIPRefused(r sip.Refusal) {
	actor := "anonymous"
	if r.User != "" {
		actor = "sip:" + r.User
	}
	target := r.Callee
	if r.Method == "REGISTER" {
		target = "register:" + r.User
	}
	d := map[string]any{"method": r.Method, "code": r.Code, "reason": r.Reason, "transport": r.Transport}
	if r.CallID != "" {
		d["sip_call_id"] = r.CallID
	}
	if r.Detail != "" {
		d["warning"] = r.Detail
	}
	s.audit().Record(context.Background(), AuditRecord{Time: r.Time, Actor: actor, Action: "sip.refused", Target: target,
		Source: r.Source, Outcome: auditRefused, Detail: d})
}

// auditHTTP records accesses to recordings, monitoring and call control,
// and every 401/403 the API answers, with the signed-in supervisor as
// actor. Range requests that continue a playback (not starting at byte 0)
// are not recorded again.
func (s *server) auditHTTP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		action := auditAction(r)
		if action == "" && !strings.HasPrefix(r.URL.Path, "/api/") {
			next.ServeHTTP(w, r)
			return
		}
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(sw, r)
		outcome := auditOK
		switch {
		case sw.code == http.StatusUnauthorized || sw.code == http.StatusForbidden:
			outcome = auditRefused
		case sw.code >= 400:
			outcome = auditFailed
		}
		if action == "" {
			if outcome != auditRefused {
				return
			}
			action = "http.refused"
		}
		switch sw.Header().Get("X-Bib-Encryption") {
		case "decrypted":
			action = "recording.decrypt"
		case "stored":
			action = "recording.export"
		}
		actor := "anonymous"
		if s.auth.enabled() {
			if sup, ok := s.auth.session(r); ok {
				actor = sup.User
			}
		}
		d := map[string]any{"method": r.Method, "path": r.URL.Path, "status": sw.code}
		if r.URL.RawQuery != "" {
			d["query"] = r.URL.RawQuery
		}
		s.audit().Record(r.Context(), AuditRecord{Actor: actor, Action: action, Target: auditTarget(r), Source: r.RemoteAddr, Outcome: outcome, Detail: d})
	})
}

// auditAction names what an API request does ("" for requests not audited).
func auditAction(r *http.Request) string {
	p := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(p) < 3 || p[0] != "api" || p[1] != "v1" {
		return ""
	}
	switch p[2] {
	case "recordings":
		switch {
		case len(p) == 3 && r.Method == http.MethodGet:
			return "recording.list"
		case len(p) == 4 && r.Method == http.MethodGet:
			return "recording.get"
		case len(p) == 5 && p[4] == "audio":
			if rg := r.Header.Get("Range"); rg != "" && !strings.HasPrefix(strings.TrimSpace(rg), "bytes=0-") {
				return ""
			}
			return "recording.play"
		case len(p) == 5 && p[4] == "esk":
			return "recording.export_key"
		}
	case "calls":
		switch {
		case len(p) == 4 && r.Method == http.MethodDelete:
			return "call.hangup"
		case len(p) == 5 && p[4] == "listen" && r.Method == http.MethodPost:
			return "monitor.start"
		case len(p) == 6 && p[4] == "listen" && r.Method == http.MethodDelete:
			return "monitor.stop"
		case len(p) == 5 && p[4] == "recording" && r.Method == http.MethodPost:
			return "recording.control"
		}
	case "login":
		return "auth.login"
	}
	return ""
}

func auditTarget(r *http.Request) string {
	p := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(p) >= 4 {
		switch p[2] {
		case "recordings":
			return "recording:" + p[3]
		case "calls":
			return "call:" + p[3]
		}
	}
	return ""
}

// statusWriter remembers the status code; Flush passes through (WHEP and
// audio streaming).
type statusWriter struct {
	http.ResponseWriter
	code  int
	wrote bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.code, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// auditStartup records the configuration bib started with (secrets
// replaced by "(set)") and, when it differs from the previous start's,
// which keys changed.
func (s *server) auditStartup(al *auditLog, prev map[string]string) {
	cur := configSettings(s.cfg)
	creds := 0
	for _, d := range s.cfg.Devices {
		if d.Password != "" || d.HA1 != "" {
			creds++
		}
	}
	for _, sp := range s.cfg.Supervisors {
		if sp.Password != "" || sp.HA1 != "" {
			creds++
		}
	}
	al.Record(context.Background(), AuditRecord{Actor: "system", Action: "config.loaded", Detail: map[string]any{
		"version": version, "settings": cur, "devices": len(s.cfg.Devices), "supervisors": len(s.cfg.Supervisors),
		"sip_digest_users": creds, "sip_auth_required": s.cfg.SIP.Auth.Required, "sip_tls": s.cfg.SIP.TLSListen != "",
	}})
	if prev == nil {
		return
	}
	var changed, added, removed []string
	for k, v := range cur {
		pv, ok := prev[k]
		switch {
		case !ok:
			added = append(added, k)
		case pv != v:
			changed = append(changed, k)
		}
	}
	for k := range prev {
		if _, ok := cur[k]; !ok {
			removed = append(removed, k)
		}
	}
	if len(changed)+len(added)+len(removed) == 0 {
		return
	}
	sort.Strings(changed)
	sort.Strings(added)
	sort.Strings(removed)
	al.Record(context.Background(), AuditRecord{Actor: "system", Action: "config.changed",
		Detail: map[string]any{"changed": changed, "added": added, "removed": removed}})
}

// previousSettings returns the settings of the last config.loaded record
// (nil when there is none).
func previousSettings(path string) map[string]string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var last map[string]string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 16<<20)
	for sc.Scan() {
		if !bytes.Contains(sc.Bytes(), []byte(`"config.loaded"`)) {
			continue
		}
		var r struct {
			Action string `json:"action"`
			Detail struct {
				Settings map[string]string `json:"settings"`
			} `json:"detail"`
		}
		if json.Unmarshal(sc.Bytes(), &r) == nil && r.Action == "config.loaded" {
			last = r.Detail.Settings
		}
	}
	return last
}

// configSettings flattens the config to "a.b[0].c" -> value, secrets
// replaced by "(set)".
func configSettings(cfg Config) map[string]string {
	out := map[string]string{}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return out
	}
	var tree any
	if err := yaml.Unmarshal(b, &tree); err != nil {
		return out
	}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, c := range x {
				key := k
				if prefix != "" {
					key = prefix + "." + k
				}
				if isSecretKey(k) {
					if s := fmt.Sprint(c); c != nil && s != "" {
						out[key] = "(set)"
					}
					continue
				}
				walk(key, c)
			}
		case []any:
			for i, c := range x {
				walk(fmt.Sprintf("%s[%d]", prefix, i), c)
			}
		case nil:
		default:
			if s := fmt.Sprint(x); s != "" {
				out[prefix] = s
			}
		}
	}
	walk("", tree)
	return out
}

func isSecretKey(k string) bool {
	k = strings.ToLower(k)
	for _, w := range []string{"password", "ha1", "secret", "token", "private"} {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

// validateAdmins checks http.admins names configured supervisors.
func validateAdmins(c *Config) error {
	for i, a := range c.HTTP.Admins {
		if !slices.ContainsFunc(c.Supervisors, func(s bridge.Supervisor) bool { return s.User == a }) {
			return fmt.Errorf("http.admins[%d]: %q is not a configured supervisor", i, a)
		}
	}
	return nil
}

// writeSecurityMetrics adds the SIP admission and audit counters to /metrics.
func (s *server) writeSecurityMetrics(w io.Writer) {
	k := s.sip.SecurityCounters()
	m := func(name, typ, help string, v uint64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n%s %d\n", name, help, name, typ, name, v)
	}
	m("bib_sip_auth_challenges_total", "counter", "401 challenges sent without a failure (first contact, stale nonce).", k.AuthChallenges)
	m("bib_sip_auth_successes_total", "counter", "Requests that passed digest authentication.", k.AuthSuccesses)
	m("bib_sip_auth_failures_total", "counter", "Failed digest authentications (wrong password, unknown user, bad or replayed nonce).", k.AuthFailures)
	m("bib_sip_auth_blocked_total", "counter", "Requests refused while their source backed off after failures.", k.AuthBlocked)
	m("bib_sip_rate_limited_total", "counter", "Out-of-dialog requests refused by sip.limits.requests_per_second.", k.RateLimited)
	m("bib_sip_max_calls_refused_total", "counter", "INVITEs refused by sip.limits.max_calls.", k.MaxCalls)
	m("bib_sip_max_calls_per_source_refused_total", "counter", "INVITEs refused by sip.limits.max_calls_per_source.", k.PerSource)
	var written, lost uint64
	if al := s.auditFile.Load(); al != nil {
		written, lost = al.written.Load(), al.lost.Load()
	}
	m("bib_audit_records_total", "counter", "Audit records written to DATA/audit.jsonl.", written)
	m("bib_audit_dropped_total", "counter", "Audit records dropped because the audit queue was full.", lost)
}
