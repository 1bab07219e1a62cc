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

// TestLoadSpawnSmoke runs `bib load --spawn` for a few calls and seconds
// against a real bib serve (built from this package) and checks the
// report. It asserts what the harness measured, not how fast.
func TestLoadSpawnSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds bib and runs a 3 s load test")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "bib")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
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
	num := func(path string) float64 {
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
