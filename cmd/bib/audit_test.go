package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bib-project/bib/bridge"
	"github.com/bib-project/bib/sip"
	"github.com/bib-project/bib/sip/siptest"
	"github.com/emiago/sipgo"
	sipmsg "github.com/emiago/sipgo/sip"
)

func TestAuditLogAppendQueryChain(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	t0 := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	al, err := openAuditLog(path, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	actions := []string{"monitor.start", "recording.play", "recording.list", "sip.refused", "monitor.stop"}
	for i, a := range actions {
		al.Record(ctx, AuditRecord{Time: t0.Add(time.Duration(i) * time.Minute), Actor: "sup1", Action: a, Target: "call:x"})
	}
	cases := []struct {
		name string
		q    auditQuery
		want []uint64
		more bool
	}{
		{"last two", auditQuery{Limit: 2}, []uint64{4, 5}, true},
		{"all", auditQuery{Limit: 100}, []uint64{1, 2, 3, 4, 5}, false},
		{"action prefix", auditQuery{Action: "recording.", Limit: 100}, []uint64{2, 3}, false},
		{"exact action", auditQuery{Action: "recording", Limit: 100}, nil, false},
		{"since", auditQuery{Since: t0.Add(2 * time.Minute), Limit: 2}, []uint64{3, 4}, true},
		{"after", auditQuery{After: 4, Limit: 10}, []uint64{5}, false},
		{"actor", auditQuery{Actor: "nobody", Limit: 10}, nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			recs, more, err := al.Query(ctx, tc.q)
			if err != nil {
				t.Fatal(err)
			}
			var seqs []uint64
			for _, r := range recs {
				seqs = append(seqs, r.Seq)
			}
			if !equalSeqs(seqs, tc.want) || more != tc.more {
				t.Fatalf("seqs %v more %v, want %v %v", seqs, more, tc.want, tc.more)
			}
		})
	}
	al.Close()
	al.Close() // idempotent

	// Reopening continues the sequence and the chain.
	al, err = openAuditLog(path, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	al.Record(ctx, AuditRecord{Actor: "system", Action: "config.loaded"})
	al.Close()
	if n, err := verifyAuditChain(path); err != nil || n != 6 {
		t.Fatalf("chain: %d lines, %v", n, err)
	}
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	var last AuditRecord
	json.Unmarshal([]byte(lines[5]), &last)
	if last.Seq != 6 || last.Outcome != auditOK || last.Time.IsZero() {
		t.Fatalf("last record %+v", last)
	}
	// Editing one record in the middle, or removing one, breaks the chain.
	for name, edit := range map[string]func([]string) []string{
		"edited":  func(l []string) []string { l[2] = strings.Replace(l[2], `"sup1"`, `"sup2"`, 1); return l },
		"removed": func(l []string) []string { return append(l[:2], l[3:]...) },
	} {
		p := filepath.Join(t.TempDir(), name+".jsonl")
		os.WriteFile(p, []byte(strings.Join(edit(append([]string(nil), lines...)), "\n")+"\n"), 0o600)
		if _, err := verifyAuditChain(p); err == nil {
			t.Errorf("%s record not detected", name)
		}
	}
}

func equalSeqs(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// A full queue drops records without blocking and says so in the file.
func TestAuditLogOverflow(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	a := &auditLog{path: path, log: slog.New(slog.DiscardHandler), now: time.Now, f: f,
		q: make(chan AuditRecord, 2), flushc: make(chan chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	for range 5 { // the writer is not running yet: 2 fit, 3 are dropped
		a.Record(context.Background(), AuditRecord{Actor: "x", Action: "recording.list"})
	}
	go a.run()
	recs, _, err := a.Query(context.Background(), auditQuery{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	if len(recs) != 3 || recs[0].Action != "audit.dropped" || recs[0].Detail["records"] != float64(3) {
		t.Fatalf("records %+v", recs)
	}
	if a.lost.Load() != 3 {
		t.Fatalf("lost %d", a.lost.Load())
	}
}

func TestConfigSettingsRedactsSecrets(t *testing.T) {
	var c Config
	c.Supervisors = []bridge.Supervisor{{User: "sup1", Password: "hunter2", HA1: strings.Repeat("a", 32)}}
	c.Devices = []bridge.Device{{Name: "CSFA", Line: "1001", Password: "pw"}}
	c.Defaults()
	s := configSettings(c)
	for k, v := range s {
		if strings.Contains(v, "hunter2") || v == "pw" || strings.Contains(v, strings.Repeat("a", 32)) {
			t.Fatalf("secret leaked in %s=%s", k, v)
		}
	}
	if s["supervisors[0].password"] != "(set)" || s["devices[0].password"] != "(set)" || s["supervisors[0].user"] != "sup1" || s["sip.listen"] == "" {
		t.Fatalf("settings %v", s)
	}
}

// bib serve writes the trail: start-up config and changes, SIP refusals
// (digest failures, a rate-limit flood), recording API access, reads of
// the trail; GET /api/v1/audit is for admins only; /metrics counts.
func TestAuditServe(t *testing.T) {
	data := t.TempDir()
	cfg := Config{Data: data}
	cfg.Supervisors = []bridge.Supervisor{
		{User: "boss", Password: "boss-pw", Monitors: []string{"*"}},
		{User: "sup2", Password: "sup2-pw", Monitors: []string{"1XXX"}},
	}
	cfg.Devices = []bridge.Device{{Name: "CSFAGENT", Line: "1001", Password: "agent-pw"}}
	cfg.HTTP.Admins = []string{"boss"}
	cfg.SIP.Limits = sip.LimitsConfig{RequestsPerSecond: 0.001, Burst: 10}
	ts := startServer(t, cfg)

	// A wrong SIP password: challenged, then refused.
	p, err := siptest.NewParty("1001", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sipAddr := ts.sip.Addr("udp")
	req := p.NewRegister(sipAddr)
	req.AppendHeader(sipmsg.NewHeader("Expires", "300"))
	res, err := p.Cli.Do(ctx, req)
	if err != nil || res.StatusCode != 401 {
		t.Fatalf("register: %v %v", res, err)
	}
	res, err = p.Cli.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: "1001", Password: "wrong"})
	if err != nil || res.StatusCode != 403 {
		t.Fatalf("wrong password: %v %v", res, err)
	}
	// A flood of REGISTERs beyond the burst: 503 with Retry-After.
	refusedFlood := 0
	for range 40 {
		res, err := p.Register(ctx, sipAddr, 300)
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode == 503 {
			refusedFlood++
		}
	}
	if refusedFlood < 30 {
		t.Fatalf("only %d of 40 refused", refusedFlood)
	}

	// The trail is for admins.
	if code := auditGet(t, ts, "/api/v1/audit", "").StatusCode; code != http.StatusUnauthorized {
		t.Fatalf("anonymous read: %d", code)
	}
	if code := auditGet(t, ts, "/api/v1/audit", auditLogin(t, ts, "sup2", "sup2-pw")).StatusCode; code != http.StatusForbidden {
		t.Fatalf("non-admin read: %d", code)
	}
	boss := auditLogin(t, ts, "boss", "boss-pw")
	if code := auditGet(t, ts, "/api/v1/recordings", boss).StatusCode; code != http.StatusOK {
		t.Fatalf("recordings list: %d", code)
	}
	var out struct {
		Records []AuditRecord `json:"records"`
	}
	resp := auditGet(t, ts, "/api/v1/audit?limit=1000", boss)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("admin read: %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, r := range out.Records {
		key := r.Action + "/" + r.Outcome
		if r.Action == "sip.refused" {
			key += "/" + r.Detail["reason"].(string)
			if r.Actor != "sip:1001" || !strings.HasPrefix(r.Source, "127.0.0.1:") {
				t.Fatalf("sip refusal record %+v", r)
			}
		}
		if r.Action == "recording.list" && r.Actor != "boss" {
			t.Fatalf("recording access by %q", r.Actor)
		}
		count[key]++
	}
	want := map[string]int{
		"config.loaded/ok": 1, "sip.refused/refused/auth_failed": 1, "sip.refused/refused/rate_limited": refusedFlood,
		"audit.read/refused": 2, "recording.list/ok": 1, "audit.read/ok": 1,
	}
	for k, n := range want {
		if count[k] != n {
			t.Errorf("%s: %d records, want %d (all: %v)", k, count[k], n, count)
		}
	}
	metrics := auditGet(t, ts, "/metrics", "")
	body, _ := io.ReadAll(metrics.Body)
	for _, line := range []string{"bib_sip_auth_failures_total 1", "bib_sip_rate_limited_total " + itoa(refusedFlood)} {
		if !bytes.Contains(body, []byte(line+"\n")) {
			t.Errorf("metrics lack %q", line)
		}
	}
	stopServer(ts)

	// Restart with a changed config: config.changed names the key.
	cfg.SIP.RingTimeout = bridge.Duration(42 * time.Second)
	ts2 := startServer(t, cfg)
	stopServer(ts2)
	if _, err := verifyAuditChain(filepath.Join(data, "audit.jsonl")); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(data, "audit.jsonl"))
	var changed AuditRecord
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var r AuditRecord
		json.Unmarshal([]byte(l), &r)
		if r.Action == "config.changed" {
			changed = r
		}
	}
	if ch, _ := changed.Detail["changed"].([]any); len(ch) != 1 || ch[0] != "sip.ring_timeout" {
		t.Fatalf("config.changed %+v", changed)
	}
}

// stopServer stops a test server now (its cleanup then finds it stopped).
func stopServer(ts *testServer) {
	ts.cancel()
	err := <-ts.done
	ts.done <- err
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func auditGet(t *testing.T, ts *testServer, path, token string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, ts.httpURL+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func auditLogin(t *testing.T, ts *testServer, user, password string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"user": user, "password": password})
	resp, err := http.Post(ts.httpURL+"/api/v1/login", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Token == "" {
		t.Fatalf("login %s: %d %v", user, resp.StatusCode, err)
	}
	return out.Token
}
