package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// buildLoadBin builds this package into a test directory (the go build
// cache makes the second build a link).
func buildLoadBin(ctx context.Context, t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "bib")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// reportNum reads a number from a report decoded generically (the field
// names are the interface), failing the test when it is missing.
func reportNum(t *testing.T, rep map[string]any, path string) float64 {
	t.Helper()
	var v any = rep
	for _, k := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("%s: not an object at %s", path, k)
		}
		if v, ok = m[k]; !ok {
			t.Fatalf("report has no %s", path)
		}
	}
	f, ok := v.(float64)
	if !ok {
		t.Fatalf("%s = %v, not a number", path, v)
	}
	return f
}

// TestLoadSpawnSmoke runs `bib load --spawn` for a few calls and seconds
// against a real bib serve (built from this package) and checks the
// report. It asserts what the harness measured, not how fast.
func TestLoadSpawnSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds bib and runs a 3 s load test")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	bin := buildLoadBin(ctx, t)
	dir := t.TempDir()
	jsonPath := filepath.Join(dir, "out.json")
	htmlPath := filepath.Join(dir, "out.html")
	var stdout, stderr bytes.Buffer
	code := loadMain(ctx, []string{
		"--spawn", "--bib", bin, "--calls", "4", "--rate", "4", "--duration", "3s",
		"--max-p99-ms", "1000", // no timing assertion in a unit test
		"--json", jsonPath, "--html", htmlPath, "--progress", "off",
	}, &stdout, &stderr)
	t.Logf("stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	// Read the report generically: the field names are the interface.
	var rep map[string]any
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	num := func(path string) float64 { t.Helper(); return reportNum(t, rep, path) }
	if got := num("calls.established"); got != 4 {
		t.Errorf("calls.established = %v, want 4", got)
	}
	if got := num("calls.attempted"); got != 4 {
		t.Errorf("calls.attempted = %v, want 4", got)
	}
	if got := num("rtp.loss_ratio"); got != 0 {
		t.Errorf("rtp.loss_ratio = %v, want 0", got)
	}
	if num("rtp.sent") < 4*2*50 {
		t.Errorf("rtp.sent = %v, want at least 2 s of audio both ways on 4 calls", num("rtp.sent"))
	}
	if num("rtp.latency_ms.p50") <= 0 || num("rtp.latency_ms.max") < num("rtp.latency_ms.p99") {
		t.Errorf("latency not measured: %v", rep["rtp"])
	}
	if num("bridge.cpu_seconds") <= 0 || num("bridge.rss_max_bytes") <= 0 {
		t.Errorf("bridge figures missing: %v", rep["bridge"])
	}
	if num("bridge.packets_relayed") < num("rtp.received") {
		t.Errorf("bridge.packets_relayed %v < rtp.received %v", num("bridge.packets_relayed"), num("rtp.received"))
	}
	for _, k := range []string{"calls.failed", "calls.cps", "calls.max_concurrent", "calls.setup_ms.p50", "calls.setup_ms.p95",
		"calls.setup_ms.p99", "rtp.received", "rtp.lost", "rtp.jitter_ms.p50", "rtp.jitter_ms.p99",
		"supervisors.streams", "supervisors.packets_received", "supervisors.leaked_to_parties",
		"recordings.expected", "recordings.found", "recordings.complete", "recordings.completeness",
		"recordings.max_skew_ms", "bridge.cpu_us_per_packet"} {
		num(k)
	}
	if rep["verdict"] != "pass" {
		t.Errorf("verdict %v: %v", rep["verdict"], rep["failures"])
	}
	if _, ok := rep["failures"].([]any); !ok {
		t.Errorf("failures is not a list: %v", rep["failures"])
	}
	h, err := os.ReadFile(htmlPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(h, []byte("<svg")) || bytes.Contains(h, []byte("<script src")) || bytes.Contains(h, []byte("http://cdn")) {
		t.Error("HTML report is not a self-contained page with charts")
	}
}

func TestLoadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--calls", "-1", "--spawn"}, "--calls"},
		{[]string{"--target", "nowhere"}, "--target"},
		{[]string{"--spawn", "--loss", "150%"}, "--loss"},
		{[]string{"--spawn", "--codec", "opus"}, "--codec"},
		{[]string{"--spawn", "--progress", "sometimes"}, "--progress"},
		{[]string{"--spawn", "extra"}, "unexpected argument"},
		{[]string{"--spawn", "--fork", "--fork-protocol", "h323"}, "--fork-protocol"},
		{[]string{"--target", "127.0.0.1:5060", "--cpuprofile", "x.pprof"}, "--cpuprofile"},
	} {
		var out, errb bytes.Buffer
		if code := loadMain(context.Background(), tc.args, &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2", tc.args, code)
		}
		if !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%v: stderr %q does not mention %s", tc.args, errb.String(), tc.want)
		}
	}
}

// TestLoadSpawnForkSmoke runs `bib load --spawn --record --fork
// --cpuprofile` for a few calls and seconds: bib serve forks every call to
// the bib recorder the harness started, and every call's forked recording
// is found there, complete and faithful; the CPU profile is saved and
// summarised.
func TestLoadSpawnForkSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds bib and runs a 3 s load test with a recorder")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	bin := buildLoadBin(ctx, t)
	dir := t.TempDir()
	jsonPath := filepath.Join(dir, "out.json")
	profPath := filepath.Join(dir, "cpu.pprof")
	var stdout, stderr bytes.Buffer
	code := loadMain(ctx, []string{
		"--spawn", "--bib", bin, "--calls", "3", "--rate", "3", "--duration", "3s", "--record", "--fork",
		"--cpuprofile", profPath, "--max-p99-ms", "1000", "--json", jsonPath, "--progress", "off",
	}, &stdout, &stderr)
	t.Logf("stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var rep map[string]any
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	num := func(p string) float64 { return reportNum(t, rep, p) }
	if num("calls.established") != 3 {
		t.Fatalf("calls.established = %v, want 3", num("calls.established"))
	}
	if got, want := num("forks.found"), num("forks.expected"); got != want || want != 3 {
		t.Errorf("forks.found = %v, forks.expected = %v, want 3 and 3", got, want)
	}
	if got := num("forks.completeness"); got != 1 {
		t.Errorf("forks.completeness = %v, want 1", got)
	}
	if num("forks.sampled") != 3 || num("forks.min_correlation") < 0.9 {
		t.Errorf("forked recordings not faithful: %v", rep["forks"])
	}
	if num("forks.bridge_metrics.bib_fork_started_total") != 3 {
		t.Errorf("bridge fork metrics: %v", rep["forks"])
	}
	if num("recordings.completeness") != 1 {
		t.Errorf("local recordings: %v", rep["recordings"])
	}
	if num("recorder.cpu_seconds") <= 0 || num("recorder.rss_max_bytes") <= 0 {
		t.Errorf("recorder figures missing: %v", rep["recorder"])
	}
	prof, ok := rep["profile"].(map[string]any)
	if !ok {
		t.Fatalf("no profile in the report: %v", rep["notes"])
	}
	if _, ok := prof["top"].([]any); !ok {
		t.Errorf("profile.top is not a list: %v", prof)
	}
	if st, err := os.Stat(profPath); err != nil || st.Size() == 0 {
		t.Errorf("profile file not written: %v", err)
	}
}
