package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bib-project/bib/sip/siptest"
	"github.com/bib-project/bib/storage"
)

// startBib runs the bib binary with a config file and waits for its ready
// line. The process is killed at the end of the test if still running.
func startBib(t *testing.T, ctx context.Context, cfgPath string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, bibBinary(t), "serve", "--config", cfgPath)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if testing.Verbose() {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "bib serve ready") {
				ready <- sc.Text()
			}
		}
	}()
	select {
	case line := <-ready:
		return cmd, line
	case <-ctx.Done():
		t.Fatal("bib serve did not become ready")
	}
	return nil, ""
}

// TestCrashRecovery: kill -9 bib serve during a recorded call, start it
// again: the recording is repaired, playable, and marked interrupted.
func TestCrashRecovery(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	agent, customer := newTestParty(t, "1001"), newTestParty(t, "2001")
	sipPort, httpPort := freePort(t), freePort(t)
	cfg := fmt.Sprintf(`sip: {listen: "127.0.0.1:%d"}
http: {listen: "127.0.0.1:%d"}
media: {rtp_ports: "%d-%d"}
data: %q
cluster: {release: "14.0(1)SU3", builtin_bridge_enable: true}
devices:
  - {name: CSFAGENT1, line: "1001", builtin_bridge: default, recording: automatic, monitoring: true}
routes:
  - {match: "2XXX", target: "sip:${user}@%s"}
`, sipPort, httpPort, 40000+sipPort%10000*2, 40000+sipPort%10000*2+99, filepath.Join(dir, "data"), customer.SIPAddr)
	cfgPath := filepath.Join(dir, "bib.yaml")
	os.WriteFile(cfgPath, []byte(cfg), 0o600)

	cmd, _ := startBib(t, ctx, cfgPath)
	got := make(chan *siptest.Call, 1)
	go func() {
		c := <-customer.Incoming
		c.Answer(customer.SDP(siptest.SDPOptions{Codecs: []string{"0", "101"}}))
		got <- c
	}()
	uri := agent.URI()
	uri.User, uri.Host, uri.Port = "2001", "127.0.0.1", sipPort
	ac, err := agent.Invite(ctx, uri, agent.SDP(siptest.SDPOptions{Codecs: []string{"0", "101"}}))
	if err != nil {
		t.Fatal(err)
	}
	bc := <-got
	tone := toneStream(440, 100)
	for i := range 100 { // 2 s of audio, so the header has been refreshed
		ac.SendRTP(siptest.RTPPacket(1, uint16(i), uint32(160*i), 0, tone[i]))
		bc.SendRTP(siptest.RTPPacket(2, uint16(i), uint32(160*i), 0, tone[i]))
		time.Sleep(20 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()

	// Restart on the same data dir: start-up repairs the recording.
	startBib(t, ctx, cfgPath)
	out, err := exec.CommandContext(ctx, bibBinary(t), "recordings", "ls", "--json", "--data", filepath.Join(dir, "data")).Output()
	if err != nil {
		t.Fatalf("bib recordings ls: %v", err)
	}
	var list []storage.Meta
	if err := json.Unmarshal(out, &list); err != nil {
		var wrapped struct{ Recordings []storage.Meta }
		if err2 := json.Unmarshal(out, &wrapped); err2 != nil {
			t.Fatalf("recordings ls output: %v\n%s", err, out)
		}
		list = wrapped.Recordings
	}
	if len(list) != 1 {
		t.Fatalf("want 1 recording, got %d:\n%s", len(list), out)
	}
	m := list[0]
	if m.Status != storage.StatusInterrupted {
		t.Fatalf("status %q (reason %q), want interrupted", m.Status, m.Reason)
	}
	if m.DurationMS < 1000 {
		t.Fatalf("repaired recording holds %d ms, want most of the 2 s sent", m.DurationMS)
	}
	// Export it and let an independent reader parse it.
	wavPath := filepath.Join(dir, "out.wav")
	if b, err := exec.CommandContext(ctx, bibBinary(t), "recordings", "export", m.ID, "--out", wavPath, "--data", filepath.Join(dir, "data")).CombinedOutput(); err != nil {
		t.Fatalf("export: %v\n%s", err, b)
	}
	if probe, err := exec.LookPath("ffprobe"); err == nil {
		b, err := exec.CommandContext(ctx, probe, "-v", "error", "-show_entries", "stream=channels,sample_rate", "-of", "csv=p=0", wavPath).CombinedOutput()
		if err != nil || !strings.Contains(string(b), "8000,2") {
			t.Fatalf("ffprobe cannot read the repaired recording: %v %s", err, b)
		}
	} else if os.Getenv("CI") != "" {
		t.Fatal("ffprobe missing: .ci/run installs ffmpeg")
	}
	if b, err := exec.CommandContext(ctx, bibBinary(t), "recordings", "verify", "--data", filepath.Join(dir, "data")).CombinedOutput(); err != nil {
		t.Fatalf("verify after repair: %v\n%s", err, b)
	}
}
