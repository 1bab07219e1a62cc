package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bib-project/bib/sip"
)

// needSIPp returns the sipp binary, skipping the test when it is absent on a
// developer machine; in CI (CI=true) a missing sipp is a failure, because
// .ci/run installs it.
func needSIPp(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("sipp")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("sipp not installed: .ci/run must install the sip-tester package")
		}
		t.Skip("sipp not installed (apt-get install sip-tester)")
	}
	if _, err := os.Stat("/usr/share/sip-tester/g711a.pcap"); err != nil {
		t.Fatalf("sip-tester's g711a.pcap missing: %v", err)
	}
	return p
}

// freePort returns a loopback port free for UDP right now.
func freePort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// TestSIPpInterop: SIPp (a SIP stack we did not write) places calls through
// bib to a SIPp UAS that echoes RTP; the caller plays the g711a.pcap that
// ships with sip-tester. The calls must complete and the audio must cross
// bib in both directions.
func TestSIPpInterop(t *testing.T) {
	sippBin := needSIPp(t)
	const calls = 3
	scen, _ := filepath.Abs("../../testdata/sipp")
	uasPort, uasMedia := freePort(t), freePort(t)
	uacPort, uacMedia := freePort(t), freePort(t)

	var mu sync.Mutex
	var ended []sip.CallInfo
	var cfg Config
	cfg.Routes = []sip.Route{{Match: "*", Target: fmt.Sprintf("sip:${user}@127.0.0.1:%d", uasPort)}}
	ts := startServer(t, cfg, func(s *server) {
		prev := s.sip.OnEnded
		s.sip.OnEnded = func(ci sip.CallInfo) {
			mu.Lock()
			ended = append(ended, ci)
			mu.Unlock()
			prev(ci)
		}
	})
	bibSIP := ts.sip.Addr("udp")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tmp := t.TempDir()
	var uasOut bytes.Buffer
	uas := exec.CommandContext(ctx, sippBin, "-sf", filepath.Join(scen, "uas_echo.xml"),
		"-i", "127.0.0.1", "-p", fmt.Sprint(uasPort), "-mi", "127.0.0.1", "-mp", fmt.Sprint(uasMedia),
		"-rtp_echo", "-m", fmt.Sprint(calls), "-nostdin", "-trace_err", "-error_file", filepath.Join(tmp, "uas_err.log"))
	uas.Stdout, uas.Stderr = &uasOut, &uasOut
	uas.Dir = tmp
	if err := uas.Start(); err != nil {
		t.Fatal(err)
	}
	var uacOut bytes.Buffer
	uac := exec.CommandContext(ctx, sippBin, "-sf", filepath.Join(scen, "uac_pcap.xml"), bibSIP.String(),
		"-s", "2000", "-i", "127.0.0.1", "-p", fmt.Sprint(uacPort), "-mi", "127.0.0.1", "-mp", fmt.Sprint(uacMedia),
		"-m", fmt.Sprint(calls), "-r", fmt.Sprint(calls), "-l", fmt.Sprint(calls), "-d", "3000",
		"-timeout", "45s", "-timeout_error", "-nostdin", "-trace_err", "-error_file", filepath.Join(tmp, "uac_err.log"))
	uac.Stdout, uac.Stderr = &uacOut, &uacOut
	uac.Dir = tmp
	uacErr := uac.Run()
	uasErr := uas.Wait()
	errLog, _ := os.ReadFile(filepath.Join(tmp, "uac_err.log"))
	if uacErr != nil {
		t.Fatalf("sipp uac: %v\n%s\nerrors:\n%s", uacErr, tail(uacOut.Bytes()), errLog)
	}
	if uasErr != nil {
		t.Fatalf("sipp uas: %v\n%s", uasErr, tail(uasOut.Bytes()))
	}

	mu.Lock()
	defer mu.Unlock()
	if len(ended) != calls {
		t.Fatalf("bib saw %d calls end, want %d", len(ended), calls)
	}
	for _, ci := range ended {
		a, b := ci.Media.Legs[0], ci.Media.Legs[1]
		t.Logf("call %s: caller sent %d packets (relayed %d), echo sent %d (relayed %d), dropped source %d/%d",
			ci.ID, a.PacketsIn, b.PacketsOut, b.PacketsIn, a.PacketsOut, a.DroppedSource, b.DroppedSource)
		// About 3 s of talk: the pcap paces itself (about 100 packets in 3 s).
		if a.PacketsIn < 50 || b.PacketsOut != a.PacketsIn {
			t.Errorf("call %s: caller audio did not cross bib: in %d, relayed %d", ci.ID, a.PacketsIn, b.PacketsOut)
		}
		if b.PacketsIn < 50 || a.PacketsOut != b.PacketsIn {
			t.Errorf("call %s: echoed audio did not come back: in %d, relayed %d", ci.ID, b.PacketsIn, a.PacketsOut)
		}
	}
}

func tail(b []byte) []byte {
	if len(b) > 3000 {
		return b[len(b)-3000:]
	}
	return b
}
