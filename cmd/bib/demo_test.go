package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/bib-project/bib/bridge"
	"github.com/bib-project/bib/bridge/codec"
	"github.com/bib-project/bib/storage"
	"github.com/chromedp/chromedp"
	"github.com/pion/webrtc/v4"
)

// TestDemo: bib serve --demo on free ports brings up the two simulated
// Jabber calls; the API shows them up and recorded, a recording appears
// after a call loop ends, and a WHEP listener hears speech.
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ts := startDemo(t, ctx, 4*time.Second)

	tok := login(t, ts, demoSupervisor, demoPassword)
	// Both demo calls come up, answered, with the gate's verdicts and a
	// recording in progress.
	var calls []callView
	for {
		resp, body := do(t, "GET", ts.httpURL+"/api/v1/calls", tok, "", "")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("calls: %d %s", resp.StatusCode, body)
		}
		var v struct{ Calls []callView }
		json.Unmarshal(body, &v)
		calls = calls[:0]
		for _, c := range v.Calls {
			if c.State == "answered" && len(c.Recordings) == 1 && c.Recordings[0].Status == "recording" {
				calls = append(calls, c)
			}
		}
		if len(calls) == 2 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("demo calls did not come up: %s", body)
		case <-time.After(100 * time.Millisecond):
		}
	}
	devices := map[string]bool{}
	for _, c := range calls {
		devices[c.Gate.Sides[0].Device] = true
	}
	if !devices["CSFJDOE"] || !devices["BOTASMITH"] {
		t.Fatalf("demo devices: %v", devices)
	}

	// A WHEP listener on the first call hears speech (the MP3 prompts).
	cl, offer := newPionListener(t)
	resp, answer := do(t, "POST", ts.httpURL+"/api/v1/calls/"+calls[0].ID+"/listen", tok, "application/sdp", offer)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("listen: %d %s", resp.StatusCode, answer)
	}
	if err := cl.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(answer)}); err != nil {
		t.Fatal(err)
	}
	var loud, total int
	pcm := make([]int16, 160)
	for total < 100 {
		select {
		case p := <-cl.pkts:
			total++
			for i, b := range p.Payload {
				pcm[i] = codec.UlawDecode(b)
			}
			if codec.RMS(pcm[:len(p.Payload)]) > 0.01 {
				loud++
			}
		case <-ctx.Done():
			t.Fatalf("listener got %d packets", total)
		}
	}
	if loud < 20 {
		t.Fatalf("listener heard speech in only %d of %d packets", loud, total)
	}

	// After a loop ends (4 s calls), its recording is in the archive.
	for {
		resp, body := do(t, "GET", ts.httpURL+"/api/v1/recordings", tok, "", "")
		var v struct{ Recordings []storage.Meta }
		json.Unmarshal(body, &v)
		if resp.StatusCode == 200 && len(v.Recordings) > 0 && v.Recordings[len(v.Recordings)-1].Status == storage.StatusComplete {
			m := v.Recordings[len(v.Recordings)-1]
			if m.DurationMS < 2000 || m.Channels != 2 {
				t.Fatalf("demo recording: %d ms, %d channels", m.DurationMS, m.Channels)
			}
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no complete demo recording: %s", body)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// startDemo starts bib serve with the demo's config and drives the demo
// calls as serve does (startServer serves without them).
func startDemo(t *testing.T, ctx context.Context, callDuration time.Duration) *testServer {
	t.Helper()
	var cfg Config
	cfg.Media.IP = "127.0.0.1"
	cfg.Demo.Enabled = true
	cfg.Demo.CallDuration = bridge.Duration(callDuration)
	dm, err := applyDemo(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, cfg)
	dctx, dcancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); ts.runDemo(dctx, dm, testWriter{t}) }()
	t.Cleanup(func() { dcancel(); <-done })
	return ts
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) { w.t.Log(string(b)); return len(b), nil }

// TestBrowserDemo: the real-browser monitoring test against the demo: the
// page lists the demo calls, Listen plays one. With BIB_SCREENSHOT=FILE
// (make demo-shot) it saves a screenshot of the page with the calls listed.
func TestBrowserDemo(t *testing.T) {
	needChromium(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ts := startDemo(t, ctx, 20*time.Second)

	bctx := newBrowser(t, ctx)
	if err := chromedp.Do(bctx,
		chromedp.Navigate(ts.httpURL+"/"),
		chromedp.WaitVisible(chromedp.CSS("#user")),
		chromedp.SendKeys(chromedp.CSS("#user"), demoSupervisor),
		chromedp.SendKeys(chromedp.CSS("#password"), demoPassword),
		chromedp.Click(chromedp.CSS("#login")),
		chromedp.WaitVisible(chromedp.CSS(`button[data-action="listen"]`)),
	); err != nil {
		t.Fatalf("page: %v", err)
	}
	// Wait until both demo calls are listed.
	for {
		n, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.querySelectorAll('button[data-action="listen"]').length`))
		if err != nil {
			t.Fatal(err)
		}
		if n >= 2 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("page lists %d calls", n)
		case <-time.After(200 * time.Millisecond):
		}
	}
	if err := chromedp.Do(bctx, chromedp.Click(chromedp.CSS(`button[data-action="listen"]`))); err != nil {
		t.Fatal(err)
	}
	st := waitPageAudio(t, ctx, bctx)
	t.Logf("demo page stats: %+v", *st)
	if path := os.Getenv("BIB_SCREENSHOT"); path != "" {
		png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot saved to %s", path)
	}
}
