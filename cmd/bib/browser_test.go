package main

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/bib-project/bib/sip/siptest"
)

const chromiumPath = "/usr/bin/chromium"

// TestBrowserListens drives headless Chromium through the supervisor page:
// sign in, see the call, press Listen, and check from the page's own
// WebRTC statistics that audio packets arrive and carry sound; Stop ends
// the session. Skipped when Chromium is not installed, except in CI.
func TestBrowserListens(t *testing.T) {
	needChromium(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	agent, customer := newTestParty(t, "1001"), newTestParty(t, "2001")
	ts := startServer(t, monitorConfig(customer))
	ac, bc := placeCall(t, ctx, ts, agent, customer)
	waitCallID(t, ctx, ts)

	// Both parties talk until the test ends.
	talkCtx, stopTalk := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		a, b := toneStream(440, 50), toneStream(1000, 50)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-talkCtx.Done():
				return
			case <-tick.C:
			}
			ac.SendRTP(siptest.RTPPacket(0xA1, uint16(i), uint32(160*i), 0, a[i%50]))
			bc.SendRTP(siptest.RTPPacket(0xB2, uint16(i), uint32(160*i), 0, b[i%50]))
		}
	}()
	defer func() { stopTalk(); wg.Wait() }()

	bctx := newBrowser(t, ctx)
	if err := chromedp.Do(bctx,
		chromedp.Navigate(ts.httpURL+"/"),
		chromedp.WaitVisible(chromedp.CSS("#user")),
		chromedp.SendKeys(chromedp.CSS("#user"), "boss"),
		chromedp.SendKeys(chromedp.CSS("#password"), "boss-secret"),
		chromedp.Click(chromedp.CSS("#login")),
		chromedp.WaitVisible(chromedp.CSS(`button[data-action="listen"]`)),
		chromedp.Click(chromedp.CSS(`button[data-action="listen"]`)),
	); err != nil {
		t.Fatalf("page: %v", err)
	}
	st := waitPageAudio(t, ctx, bctx)
	t.Logf("page stats: %+v", *st)
	if v := metricValue(t, ts, "bib_monitor_sessions_active"); v != 1 {
		t.Fatalf("active sessions %d", v)
	}
	if err := chromedp.Do(bctx,
		chromedp.Click(chromedp.CSS(`button[data-action="stop"]`)),
		chromedp.WaitVisible(chromedp.CSS(`button[data-action="listen"]`)),
	); err != nil {
		t.Fatalf("stop: %v", err)
	}
	for metricValue(t, ts, "bib_monitor_sessions_active") != 0 {
		select {
		case <-ctx.Done():
			t.Fatal("session not ended by Stop")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// needChromium skips the test when Chromium is absent, except in CI where
// .ci/run installs it.
func needChromium(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is missing in CI (.ci/run installs the chromium package): %v", chromiumPath, err)
		}
		t.Skipf("%s not installed (apt-get install chromium); the real-browser monitoring test is skipped", chromiumPath)
	}
}

// newBrowser starts headless Chromium with the flags WebRTC on loopback
// needs and returns a chromedp context for one tab.
func newBrowser(t *testing.T, ctx context.Context) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", "new"),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.WindowSize(1280, 800),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("allow-loopback-in-peer-connection", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
	)
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	bctx, bcancel := chromedp.NewContext(actx)
	t.Cleanup(func() { bcancel(); acancel() })
	return bctx
}

type audioStats struct {
	PacketsReceived  float64 `json:"packetsReceived"`
	AudioLevel       float64 `json:"audioLevel"`
	TotalAudioEnergy float64 `json:"totalAudioEnergy"`
}

// waitPageAudio polls the page's WebRTC statistics (getStats) until audio
// packets arrive and carry sound.
func waitPageAudio(t *testing.T, ctx, bctx context.Context) *audioStats {
	t.Helper()
	for {
		s, err := chromedp.Run(bctx, chromedp.Evaluate[*audioStats](`window.bibAudioStats()`, chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatalf("getStats: %v", err)
		}
		if s != nil && s.PacketsReceived > 50 && s.AudioLevel > 0 {
			return s
		}
		select {
		case <-ctx.Done():
			errText, _ := chromedp.Run(bctx, chromedp.Text(chromedp.CSS("#listen-error")))
			status, _ := chromedp.Run(bctx, chromedp.Text(chromedp.CSS("#listen-status")))
			t.Fatalf("no audio playing in the page: last stats %+v, status %q, error %q", s, status, errText)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
