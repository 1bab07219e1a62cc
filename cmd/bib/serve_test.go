package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"testing"
	"time"
)

// testServer is a bib serve running in-process on free loopback ports.
type testServer struct {
	*server
	httpURL string
	cancel  context.CancelFunc
	done    chan error
}

// startServer starts bib serve with cfg (ports 0 unless set) and stops it
// at the end of the test. Each prepare function runs on the server before
// it serves (the place to wrap hooks without racing the handlers).
func startServer(t *testing.T, cfg Config, prepare ...func(*server)) *testServer {
	t.Helper()
	if cfg.SIP.Listen == "" {
		cfg.SIP.Listen = "127.0.0.1:0"
	}
	if cfg.HTTP.Listen == "" {
		cfg.HTTP.Listen = "127.0.0.1:0"
	}
	if cfg.Data == "" {
		cfg.Data = t.TempDir()
	}
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var w io.Writer = io.Discard
	if os.Getenv("BIB_TEST_LOG") != "" {
		w = os.Stderr
	}
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := newServer(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range prepare {
		f(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.listen(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	ts := &testServer{server: s, httpURL: "http://" + s.httpLn.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- s.serve(ctx, io.Discard) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-ts.done:
		case <-time.After(15 * time.Second):
			t.Error("server did not stop")
		}
	})
	return ts
}

func (ts *testServer) get(t *testing.T, path string) *http.Response {
	t.Helper()
	resp, err := http.Get(ts.httpURL + path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}
