package load

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"log/slog"

	"github.com/bib-project/bib/bridge"
	"github.com/bib-project/bib/sip"
)

// inProcessBridge runs bib's B2BUA and media engine in the test process,
// routing customer numbers (2...) to customer. It serves /metrics with
// the relay counter, as bib serve does.
func inProcessBridge(t *testing.T, customer string) (sipAddr string, httpBase string) {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	if os.Getenv("BIB_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	eng, err := bridge.NewEngine(bridge.Config{IP: "127.0.0.1", RTPPorts: "41000-41999"}, log)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sip.New(sip.Config{Listen: "127.0.0.1:0", Transports: []string{"udp"}},
		[]sip.Route{{Match: `regex:2\d+`, Target: "sip:${user}@" + customer}}, eng, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := srv.Listen(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{}, 2)
	go func() { eng.Run(ctx); done <- struct{}{} }()
	go func() { _ = srv.Serve(ctx); done <- struct{}{} }()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		k := eng.Counters()
		w.Write([]byte("# TYPE bib_rtp_packets_relayed_total counter\nbib_rtp_packets_relayed_total " + itoa(k.PacketsOut) + "\n"))
	}))
	t.Cleanup(func() {
		hs.Close()
		cancel()
		srv.Close()
		eng.Close()
		<-done
		<-done
	})
	return srv.Addr("udp").String(), hs.URL
}

func itoa[T ~uint64 | ~int64 | ~int](v T) string {
	b := []byte{}
	u := uint64(v)
	if u == 0 {
		return "0"
	}
	for u > 0 {
		b = append([]byte{byte('0' + u%10)}, b...)
		u /= 10
	}
	return string(b)
}

func freeUDP(t *testing.T) string {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	a := c.LocalAddr().String()
	c.Close()
	return a
}

// A real B2BUA relays real calls: every call is established, every packet
// arrives, latency is measured, and the report judges pass. Monitoring and
// recording are not asked for, so their absence is only a note.
func TestRunAgainstInProcessBridge(t *testing.T) {
	cust := freeUDP(t)
	target, httpBase := inProcessBridge(t, cust)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := Config{
		Target: target, CustomerListen: cust, BridgeHTTP: httpBase,
		Calls: 4, Rate: 20, Duration: 2 * time.Second,
		Thresholds: Thresholds{MaxP99MS: 1000}, // no timing assertions in unit tests
	}
	rep, err := Run(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := rep.Calls
	if c.Attempted != 4 || c.Established != 4 || c.Failed != 0 {
		t.Fatalf("calls %+v", c)
	}
	if c.MaxConcurrent != 4 {
		t.Errorf("max concurrent %d", c.MaxConcurrent)
	}
	rt := rep.RTP
	// About 2 s x 50 pps x 2 directions x 4 calls.
	if rt.Sent < 400 || rt.Received != rt.Sent || rt.Lost != 0 || rt.LossRatio != 0 {
		t.Fatalf("rtp %+v", rt)
	}
	if rt.LatencyMS.P50 <= 0 || rt.LatencyMS.Max < rt.LatencyMS.P99 {
		t.Fatalf("latency %+v", rt.LatencyMS)
	}
	if rt.Misrouted != 0 || rt.Duplicates != 0 {
		t.Fatalf("misrouted %d duplicates %d", rt.Misrouted, rt.Duplicates)
	}
	if !rep.Bridge.Metrics || rep.Bridge.PacketsRelayed < rt.Received {
		t.Fatalf("bridge %+v, received %d", rep.Bridge, rt.Received)
	}
	if c.SetupMS.P50 <= 0 {
		t.Fatalf("setup %+v", c.SetupMS)
	}
	if rep.Verdict != "pass" {
		t.Fatalf("verdict %s: %v", rep.Verdict, rep.Failures)
	}
	if len(rep.Series) == 0 {
		t.Fatal("no time series")
	}
}

// Asking for monitoring and recording from a bridge that offers neither is a
// failure whose sentences say so; deliberate loss is not counted against
// the bridge.
func TestRunMissingFeaturesAndImpairment(t *testing.T) {
	cust := freeUDP(t)
	target, _ := inProcessBridge(t, cust)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := Config{
		Target: target, CustomerListen: cust,
		Calls: 2, Rate: 20, Duration: 1500 * time.Millisecond,
		Supervisors: 0.5, Record: true,
		Impair:     Impairment{Loss: 0.1, Reorder: 0.05, Duplicate: 0.05, Seed: 7},
		Thresholds: Thresholds{MaxP99MS: 1000},
	}
	rep, err := Run(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Calls.Established != 2 {
		t.Fatalf("calls %+v", rep.Calls)
	}
	if rep.RTP.Impairment.Dropped == 0 || rep.RTP.Impairment.Reordered == 0 || rep.RTP.Impairment.Duplicated == 0 {
		t.Fatalf("impairment %+v", rep.RTP.Impairment)
	}
	if rep.RTP.Lost != 0 || rep.RTP.Duplicates != rep.RTP.Impairment.Duplicated {
		t.Fatalf("rtp %+v", rep.RTP)
	}
	if rep.Verdict != "fail" || rep.Supervisors.Available || rep.Recordings.Available {
		t.Fatalf("verdict %s sup %+v rec %+v", rep.Verdict, rep.Supervisors, rep.Recordings)
	}
	want := map[string]bool{
		"Supervisors were requested (--supervisors 0.5) but the bridge did not provide monitoring.": false,
		"Recording was requested (--record) but the bridge did not provide recordings.":             false,
	}
	for _, f := range rep.Failures {
		if _, ok := want[f]; ok {
			want[f] = true
		}
	}
	for f, seen := range want {
		if !seen {
			t.Errorf("missing failure %q in %q", f, rep.Failures)
		}
	}
}
