package main

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeBib serves what bib report collects from a running server, and the
// problem-report receiver. failUploads makes the first n uploads 503.
func fakeBib(t *testing.T, failUploads int32) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/calls", func(w http.ResponseWriter, r *http.Request) {
		calls := []map[string]any{}
		for i := range 3 {
			calls = append(calls, map[string]any{"id": fmt.Sprintf("call-%d", i)})
		}
		respondJSON(w, http.StatusOK, map[string]any{"calls": calls})
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "# TYPE bib_calls_active gauge\nbib_calls_active 3\n")
	})
	prt := http.NewServeMux()
	registerProblemReportRoutes(prt, t.TempDir(), 8<<20, slog.New(slog.DiscardHandler))
	var uploads atomic.Int32
	mux.HandleFunc("/prt/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && uploads.Add(1) <= failUploads {
			writeJSONError(w, http.StatusServiceUnavailable, "busy", "Try again.")
			return
		}
		prt.ServeHTTP(w, r)
	})
	mux.Handle("/api/v1/problem-reports", prt)
	mux.Handle("/api/v1/problem-reports/", prt)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, &uploads
}

func shortRetries(t *testing.T) {
	old := reportRetryDelays
	reportRetryDelays = []time.Duration{time.Millisecond, time.Millisecond}
	t.Cleanup(func() { reportRetryDelays = old })
}

// TestProblemReportEndToEnd: generated, encrypted, uploaded to a receiver
// (after a 503), listed, downloaded, decrypted with bib decrypt, opened.
func TestProblemReportEndToEnd(t *testing.T) {
	shortRetries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pki := newTestPKI(t)
	srv, uploads := fakeBib(t, 1)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "bib.yaml")
	os.WriteFile(cfg, []byte("devices:\n  - name: SEP001122334455\n    line: \"2001\"\n    password: hunter2-very-secret\n"), 0o600)
	logf := filepath.Join(dir, "bib.log")
	os.WriteFile(logf, append(bytes.Repeat([]byte("old line\n"), 200_000), "last line\n"...), 0o600) // 1.8 MB
	out := filepath.Join(dir, "r.zip")
	var so, se bytes.Buffer
	code := reportMain(ctx, []string{"--out", out, "--config", cfg, "--server", srv.URL, "--calls", "2", "--log", logf,
		"--encrypt-for", pki.path("cert.pem"), "--upload", srv.URL + "/prt/upload"}, &so, &se)
	if code != 0 {
		t.Fatalf("exit %d: %s%s", code, so.String(), se.String())
	}
	t.Logf("stdout:\n%s", so.String())
	if uploads.Load() != 2 {
		t.Fatalf("%d upload attempts, want 2 (one 503, one retry)", uploads.Load())
	}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "bib.log bib.yaml r.zip.enc r.zip.esk" {
		t.Fatalf("files after report: %v (no plaintext zip, no temp files)", names)
	}

	// List and download from the receiver.
	resp, err := http.Get(srv.URL + "/api/v1/problem-reports")
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Reports []prtView `json:"problem_reports"`
	}
	json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	if len(list.Reports) != 2 || !list.Reports[0].Encrypted {
		t.Fatalf("listing: %+v", list.Reports)
	}
	got := t.TempDir()
	var enc, esk string
	for _, r := range list.Reports {
		resp, err := http.Get(srv.URL + "/api/v1/problem-reports/" + r.Name)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(got, r.Name)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		os.WriteFile(p, b, 0o600)
		if strings.HasSuffix(p, ".enc") {
			enc = p
		} else {
			esk = p
		}
	}
	plain := filepath.Join(got, "report.zip")
	so.Reset()
	se.Reset()
	if code := decryptMain([]string{"--privatekey", pki.path("key.pem"), "--encryptionkey", esk, "--encryptedfile", enc, "--outputfile", plain}, &so, &se); code != 0 {
		t.Fatalf("decrypt: exit %d: %s", code, se.String())
	}
	zr, err := zip.OpenReader(plain)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	entries := map[string]string{}
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		entries[f.Name] = string(b)
	}
	for _, want := range []string{"version.txt", "config.yaml", "calls.json", "metrics.txt", "log.txt", "goroutine.txt", "heap.pprof"} {
		if _, ok := entries[want]; !ok {
			t.Errorf("report lacks %s (has %v)", want, keys(entries))
		}
	}
	if _, ok := entries["errors.txt"]; ok {
		t.Errorf("errors.txt: %s", entries["errors.txt"])
	}
	if c := entries["config.yaml"]; strings.Contains(c, "hunter2") || !strings.Contains(c, "password: <redacted>") || !strings.Contains(c, "SEP001122334455") {
		t.Errorf("config.yaml not redacted as expected:\n%s", c)
	}
	var calls struct {
		Calls []map[string]any `json:"calls"`
	}
	json.Unmarshal([]byte(entries["calls.json"]), &calls)
	if len(calls.Calls) != 2 || calls.Calls[1]["id"] != "call-2" {
		t.Errorf("calls.json: want the last 2 calls, got %s", entries["calls.json"])
	}
	if !strings.Contains(entries["metrics.txt"], "bib_calls_active 3") {
		t.Errorf("metrics.txt: %q", entries["metrics.txt"])
	}
	if l := entries["log.txt"]; len(l) > reportLogTail+100 || !strings.HasSuffix(l, "last line\n") || !strings.HasPrefix(l, "[... first") {
		t.Errorf("log.txt: %d bytes, want the bounded tail", len(l))
	}
	if !strings.Contains(entries["goroutine.txt"], "goroutine") || !strings.HasPrefix(entries["version.txt"], "bib ") {
		t.Errorf("profiles/version missing content")
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestProblemReportCLIErrors(t *testing.T) {
	shortRetries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pki := newTestPKI(t)
	srv, _ := fakeBib(t, 100) // always 503
	tiny := http.NewServeMux()
	registerProblemReportRoutes(tiny, t.TempDir(), 1024, slog.New(slog.DiscardHandler))
	small := httptest.NewServer(tiny)
	defer small.Close()
	dir := t.TempDir()
	for _, c := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"help", []string{"--help"}, 0, ""},
		{"bad flag", []string{"--nope"}, 2, "flag provided but not defined"},
		{"private key as cert", []string{"--encrypt-for", pki.path("key.pem")}, 2, "a private key is not a certificate"},
		{"missing out dir", []string{"--out", filepath.Join(dir, "no", "r.zip")}, 2, "does not exist"},
		{"server keeps failing", []string{"--out", filepath.Join(dir, "a.zip"), "--upload", srv.URL + "/prt/upload"}, 1, "failed after 3 attempts: 503"},
		{"too large for receiver", []string{"--out", filepath.Join(dir, "b.zip"), "--upload", small.URL + "/prt/upload"}, 1, "refused: 413 Request Entity Too Large: too_large"},
		{"nothing listening", []string{"--out", filepath.Join(dir, "c.zip"), "--upload", "http://127.0.0.1:1/prt/upload"}, 1, "failed after 3 attempts"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var so, se bytes.Buffer
			code := reportMain(ctx, c.args, &so, &se)
			if code != c.code || !strings.Contains(se.String(), c.msg) {
				t.Fatalf("exit %d stderr %q, want %d with %q", code, se.String(), c.code, c.msg)
			}
			if c.code != 0 && strings.Count(se.String(), "\n") != 1 {
				t.Fatalf("want one line: %q", se.String())
			}
			t.Logf("%s", strings.TrimSpace(se.String()))
		})
	}
}
