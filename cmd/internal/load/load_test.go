package load

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/bib-project/bib/cmd/internal/prompt"
)

func TestHistogramQuantiles(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values []int64
		q      float64
		want   float64 // µs
		tol    float64 // relative
	}{
		{"empty", nil, 0.5, 0, 0},
		{"single", []int64{700}, 0.99, 700, 0.02},
		{"exact small", []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 0.5, 5, 0},
		{"p99 of 1..1000", seq(1, 1000), 0.99, 990, 0.02},
		{"p50 of 1..100000", seq(1, 100000), 0.5, 50000, 0.02},
		{"negative is zero", []int64{-5}, 0.5, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h Histogram
			for _, v := range tc.values {
				h.Record(v)
			}
			got := h.Snapshot().Quantile(tc.q)
			if math.Abs(got-tc.want) > tc.tol*tc.want+1e-9 {
				t.Fatalf("q%.2f = %v, want %v (±%.0f%%)", tc.q, got, tc.want, 100*tc.tol)
			}
		})
	}
}

func seq(a, b int64) []int64 {
	var out []int64
	for v := a; v <= b; v++ {
		out = append(out, v)
	}
	return out
}

func TestHistogramBucketsCoverValues(t *testing.T) {
	for _, v := range []uint64{0, 1, 63, 64, 65, 127, 128, 1000, 123456, 1 << 40} {
		lo, hi := bucketRange(bucketOf(v))
		if v < lo || v > hi {
			t.Errorf("%d in bucket [%d, %d]", v, lo, hi)
		}
		if hi-lo > hi/60+1 {
			t.Errorf("%d: bucket [%d, %d] wider than 1/64", v, lo, hi)
		}
	}
}

func TestHistogramSubAndBars(t *testing.T) {
	var h Histogram
	for range 100 {
		h.Record(100)
	}
	a := h.Snapshot()
	for range 100 {
		h.Record(5000)
	}
	d := h.Snapshot().Sub(a)
	if d.N != 100 || d.Quantile(0.01) < 4900 {
		t.Fatalf("difference: n %d q1 %v", d.N, d.Quantile(0.01))
	}
	up, cnt := h.Snapshot().Buckets(10)
	var sum uint64
	for _, c := range cnt {
		sum += c
	}
	if len(up) > 10 || sum != 200 {
		t.Fatalf("%d bars holding %d values", len(up), sum)
	}
}

func BenchmarkHistogramRecord(b *testing.B) {
	var h Histogram
	b.ReportAllocs()
	v := int64(0)
	for b.Loop() {
		h.Record(v & 4095)
		v += 7
	}
}

// RFC 3550 A.8: packets exactly on time give zero jitter; a constant
// alternating 10 ms error converges to about 10 ms (80 units at 8 kHz).
func TestJitter(t *testing.T) {
	var j jitterState
	for i := range 200 {
		j.update(int64(i*160), uint32(i*160))
	}
	if j.value() != 0 {
		t.Fatalf("steady stream jitter %v", j.value())
	}
	j.reset()
	for i := range 500 {
		off := 0
		if i%2 == 1 {
			off = 80
		}
		j.update(int64(i*160+off), uint32(i*160))
	}
	if v := j.value(); v < 70 || v > 82 {
		t.Fatalf("alternating 10 ms: jitter %v units, want about 80", v)
	}
	// Timestamp wrap does not explode.
	j.reset()
	j.update(1000, math.MaxUint32-79)
	j.update(1160, 80)
	if v := j.value(); v > 10 {
		t.Fatalf("wrap: jitter %v", v)
	}
}

func TestImpairmentDeterministic(t *testing.T) {
	cfg := Impairment{Loss: 0.1, Duplicate: 0.05, Reorder: 0.05, Jitter: 30 * time.Millisecond, Seed: 42}
	run := func(stream uint64) []decision {
		var ip impairer
		ip.init(cfg, stream)
		out := make([]decision, 10000)
		for i := range out {
			out[i] = ip.next()
		}
		return out
	}
	a, b, c := run(1), run(1), run(2)
	same := true
	var drops, dups, holds int
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("decision %d differs with the same seed and stream", i)
		}
		if a[i] != c[i] {
			same = false
		}
		if a[i].drop {
			drops++
		}
		if a[i].dup {
			dups++
		}
		if a[i].hold {
			holds++
		}
		if a[i].delay < 0 || a[i].delay >= cfg.Jitter {
			t.Fatalf("delay %v out of [0, %v)", a[i].delay, cfg.Jitter)
		}
	}
	if same {
		t.Fatal("two streams drew the same decisions")
	}
	near := func(n int, p float64) bool { return math.Abs(float64(n)-p*10000) < 4*math.Sqrt(p*10000) }
	if !near(drops, 0.1) || !near(dups, 0.9*0.05) || !near(holds, 0.9*0.05) {
		t.Fatalf("drops %d dups %d holds %d of 10000", drops, dups, holds)
	}
	var none impairer
	none.init(Impairment{}, 1)
	if d := none.next(); d != (decision{}) {
		t.Fatalf("no impairment gave %+v", d)
	}
}

func TestProcParsers(t *testing.T) {
	st, err := os.ReadFile("testdata/proc_stat.txt")
	if err != nil {
		t.Fatal(err)
	}
	cpu, err := parseStat(st)
	if err != nil || cpu != 3.25 { // (250 + 75) ticks at 100 Hz, name with spaces and parentheses
		t.Fatalf("parseStat = %v, %v; want 3.25", cpu, err)
	}
	status := []byte("Name:\tbib\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\nThreads:\t9\n")
	rss, hwm, err := parseStatus(status)
	if err != nil || rss != 10240*1024 || hwm != 20480*1024 {
		t.Fatalf("parseStatus = %d %d %v", rss, hwm, err)
	}
	for _, bad := range []string{"", "1 (x", "1 (x) S 1 2"} {
		if _, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("parseStat(%q): no error", bad)
		}
	}
	if _, _, err := parseStatus([]byte("Name:\tkthreadd\n")); err == nil {
		t.Error("parseStatus without VmRSS: no error")
	}
	// This process, for real.
	s, err := readProc("/proc", os.Getpid())
	if err != nil || s.RSSBytes == 0 || s.HWMBytes < s.RSSBytes/2 {
		t.Fatalf("readProc(self) = %+v, %v", s, err)
	}
	tbl := "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n" +
		"  1: 0100007F:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 17\n" +
		"  2: 0100007F:1F91 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 5\n"
	if d := udpDrops([]byte(tbl), map[uint16]bool{8080: true}); d != 17 {
		t.Fatalf("udpDrops = %d, want 17", d)
	}
}

func FuzzParseStat(f *testing.F) {
	b, _ := os.ReadFile("testdata/proc_stat.txt")
	f.Add(b)
	f.Add([]byte("1 ()) R 0 0 0 0 0 0 0 0 0 0 1 2"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if v, err := parseStat(b); err == nil && v < 0 {
			t.Fatalf("negative cpu %v", v)
		}
		_, _, _ = parseStatus(b)
	})
}

func TestParseMetrics(t *testing.T) {
	m := parseMetrics("# HELP x y\n# TYPE x counter\nbib_rtp_packets_relayed_total 12345\n" +
		`bib_rtp_dropped_total{reason="source"} 7` + "\nbad line\nx 1e3 1700000000\n")
	if m[metricRelayed] != 12345 || m[`bib_rtp_dropped_total{reason="source"}`] != 7 || m["x"] != 1000 {
		t.Fatalf("%v", m)
	}
}

func FuzzParseMetrics(f *testing.F) {
	f.Add("a 1\nb{c=\"d\"} 2\n")
	f.Fuzz(func(t *testing.T, s string) { parseMetrics(s) })
}

func TestSSRCMapping(t *testing.T) {
	m := &media{key: 0xdeadbeef, st: make([]stream, 30)}
	if inverseOdd(ssrcMul)*ssrcMul != 1 {
		t.Fatal("inverse")
	}
	for idx := range m.st {
		for _, gen := range []uint32{1, 2, 77, 1 << 20} {
			ssrc := m.ssrcOf(idx, gen)
			m.st[idx].ssrc.Store(ssrc)
			if s := m.lookup(ssrc); s != &m.st[idx] {
				t.Fatalf("idx %d gen %d: lookup failed", idx, gen)
			}
			if s := m.lookup(ssrc + 1); s != nil && s.ssrc.Load() != ssrc+1 {
				t.Fatal("lookup returned a stream with another ssrc")
			}
		}
		m.st[idx].ssrc.Store(0)
	}
}

// The report's JSON names are an interface: check every name the issue
// lists is where other tools look for it.
func TestReportJSONNames(t *testing.T) {
	r := &Report{}
	r.judge(Config{Thresholds: Thresholds{MaxP99MS: 2, MinSuccess: 1, MinCompleteness: 1, MaxLoss: 0.0001}})
	var buf bytes.Buffer
	if err := r.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{
		"calls.attempted", "calls.established", "calls.failed", "calls.cps", "calls.max_concurrent",
		"calls.setup_ms.p50", "calls.setup_ms.p95", "calls.setup_ms.p99",
		"rtp.sent", "rtp.received", "rtp.lost", "rtp.loss_ratio", "rtp.jitter_ms.p50", "rtp.jitter_ms.p99",
		"rtp.latency_ms.p50", "rtp.latency_ms.p99", "rtp.latency_ms.max",
		"supervisors.streams", "supervisors.packets_received", "supervisors.leaked_to_parties",
		"supervisors.sip_streams", "supervisors.webrtc_streams", "supervisors.webrtc_packets_received", "settings.webrtc",
		"recordings.expected", "recordings.found", "recordings.complete", "recordings.completeness", "recordings.max_skew_ms",
		"bridge.cpu_seconds", "bridge.rss_max_bytes", "bridge.packets_relayed", "bridge.cpu_us_per_packet",
		"forks.available", "forks.expected", "forks.found", "forks.complete", "forks.completeness", "forks.max_skew_ms",
		"forks.min_correlation", "forks.min_audio_ratio", "forks.sampled",
		"recorder.cpu_seconds", "recorder.rss_max_bytes",
		"verdict", "failures", "notes",
	} {
		var v any = m
		for _, k := range strings.Split(path, ".") {
			obj, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("%s: parent is not an object", path)
			}
			if v, ok = obj[k]; !ok {
				t.Errorf("report JSON has no %s", path)
				break
			}
		}
	}
	if m["verdict"] != "fail" {
		t.Errorf("an empty run must fail, got %v", m["verdict"])
	}
	if _, ok := m["profile"]; ok {
		t.Error("profile present without --cpuprofile")
	}
	// With a profile and fork counters.
	r.Profile = &ProfileReport{File: "cpu.pprof", Top: []ProfileEntry{{Function: "f", FlatPct: 12.5, CumPct: 40}}}
	r.Forks.BridgeMetrics = map[string]float64{"bib_fork_started_total": 3}
	buf.Reset()
	if err := r.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var p struct {
		Profile struct {
			Top []struct {
				Function string  `json:"function"`
				FlatPct  float64 `json:"flat_pct"`
				CumPct   float64 `json:"cum_pct"`
			} `json:"top"`
		} `json:"profile"`
		Forks struct {
			BridgeMetrics map[string]float64 `json:"bridge_metrics"`
		} `json:"forks"`
	}
	if err := json.Unmarshal(buf.Bytes(), &p); err != nil {
		t.Fatal(err)
	}
	if len(p.Profile.Top) != 1 || p.Profile.Top[0].Function != "f" || p.Profile.Top[0].FlatPct != 12.5 || p.Profile.Top[0].CumPct != 40 {
		t.Errorf("profile.top = %+v", p.Profile.Top)
	}
	if p.Forks.BridgeMetrics["bib_fork_started_total"] != 3 {
		t.Errorf("forks.bridge_metrics = %v", p.Forks.BridgeMetrics)
	}
}

func TestJudge(t *testing.T) {
	base := func() *Report {
		r := &Report{}
		r.Calls = CallsReport{Attempted: 10, Established: 10}
		r.RTP = RTPReport{Sent: 100000, Received: 100000, LatencyMS: Quantiles{P99: 1}}
		return r
	}
	cfg := Config{Calls: 1}
	cfg.Defaults()
	for _, tc := range []struct {
		name   string
		mod    func(*Report, *Config)
		want   string
		phrase string
	}{
		{"clean", func(*Report, *Config) {}, "pass", ""},
		{"loss", func(r *Report, _ *Config) { r.RTP.Received = 99980; r.RTP.Lost = 20; r.RTP.LossRatio = 0.0002 }, "fail", "RTP loss"},
		{"latency", func(r *Report, _ *Config) { r.RTP.LatencyMS.P99 = 3 }, "fail", "latency p99"},
		{"failed calls", func(r *Report, _ *Config) { r.Calls.Established = 9; r.Calls.Failed = 1 }, "fail", "Only 9 of 10"},
		{"leak", func(r *Report, _ *Config) { r.Supervisors.LeakedToParties = 1 }, "fail", "listen-only"},
		{"supervisors missing", func(r *Report, c *Config) { c.Supervisors = 0.1 }, "fail", "did not provide monitoring"},
		{"webrtc silent", func(r *Report, c *Config) {
			c.Supervisors, c.WebRTC = 1, 0.5
			r.Supervisors = SupervisorReport{Available: true, Requested: 2, Streams: 2, SIPStreams: 1, WebRTCStreams: 1, PacketsReceived: 100}
		}, "fail", "WebRTC supervisors were connected but received no audio"},
		{"webrtc fine", func(r *Report, c *Config) {
			c.Supervisors, c.WebRTC = 1, 0.5
			r.Supervisors = SupervisorReport{Available: true, Requested: 2, Streams: 2, SIPStreams: 1, WebRTCStreams: 1, PacketsReceived: 100, WebRTCPacketsReceived: 50}
		}, "pass", ""},
		{"recording missing", func(r *Report, c *Config) { c.Record = true }, "fail", "did not provide recordings"},
		{"recording incomplete", func(r *Report, c *Config) {
			c.Record = true
			r.Recordings = RecordingReport{Available: true, Expected: 10, Found: 10, Complete: 9, Completeness: 0.9}
		}, "fail", "Recordings 90.00% complete"},
		{"misrouted", func(r *Report, _ *Config) { r.RTP.Misrouted = 3 }, "fail", "wrong party"},
		{"forks missing", func(r *Report, c *Config) { c.Fork = true }, "fail", "recorder's recordings are not available"},
		{"forks incomplete", func(r *Report, c *Config) {
			c.Fork = true
			r.Forks.RecordingReport = RecordingReport{Available: true, Expected: 10, Found: 9, Complete: 9, Completeness: 0.9}
		}, "fail", "Forked recordings 90.00% complete"},
		{"forks complete", func(r *Report, c *Config) {
			c.Fork = true
			r.Forks.RecordingReport = RecordingReport{Available: true, Expected: 10, Found: 10, Complete: 10, Completeness: 1}
		}, "pass", ""},
		{"forks not asked", func(r *Report, c *Config) {
			r.Forks.RecordingReport = RecordingReport{Available: true, Expected: 10, Completeness: 0}
		}, "pass", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, c := base(), cfg
			tc.mod(r, &c)
			r.judge(c)
			if r.Verdict != tc.want {
				t.Fatalf("verdict %s, failures %q", r.Verdict, r.Failures)
			}
			if tc.phrase != "" && !strings.Contains(strings.Join(r.Failures, "\n"), tc.phrase) {
				t.Fatalf("failures %q lack %q", r.Failures, tc.phrase)
			}
		})
	}
}

func TestHTMLSelfContained(t *testing.T) {
	r := &Report{Target: "127.0.0.1:5060 <x>", Verdict: "pass", Bridge: BridgeReport{PID: 1}}
	for i := range 30 {
		r.Series = append(r.Series, Sample{T: float64(i + 1), Active: int64(min(i*10, 100)), P99MS: 0.5, BridgeCPUPct: 40, BridgeRSS: 30 << 20})
	}
	r.LatencyHist = []Bar{{0.1, 10}, {0.2, 500}, {1.5, 3}}
	r.Notes = []string{"a <note> & more"}
	var buf bytes.Buffer
	if err := r.WriteHTML(&buf); err != nil {
		t.Fatal(err)
	}
	s := buf.String()
	if n := strings.Count(s, "<svg"); n != 6 {
		t.Errorf("%d charts, want 6", n)
	}
	for _, bad := range []string{"<script", "src=\"http", "href=\"http", "<x>", "<note>"} {
		if strings.Contains(s, bad) {
			t.Errorf("page contains %q", bad)
		}
	}
	if !strings.Contains(s, "polyline") || !strings.Contains(s, "<rect") || !strings.Contains(s, "a &lt;note&gt; &amp; more") {
		t.Error("charts or escaped notes missing")
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		mod  func(*Config)
		flag string
	}{
		{func(c *Config) { c.Spawn = false; c.Target = "x" }, "--target"},
		{func(c *Config) { c.Calls = -1 }, "--calls"},
		{func(c *Config) { c.Rate = -1 }, "--rate"},
		{func(c *Config) { c.Supervisors = 2 }, "--supervisors"},
		{func(c *Config) { c.Impair.Loss = 1 }, "--loss"},
		{func(c *Config) { c.Codec = "opus" }, "--codec"},
		{func(c *Config) { c.CustomerListen = "0.0.0.0:5070" }, "--customer-listen"},
		{func(c *Config) { c.BridgeHTTP = "127.0.0.1:8080" }, "--bridge-http"},
		{func(c *Config) { c.RecorderHTTP = "127.0.0.1:8081" }, "--recorder-http"},
		{func(c *Config) { c.ForkProtocol = "h323" }, "--fork-protocol"},
		{func(c *Config) { c.Spawn = false; c.Target = "127.0.0.1:5060"; c.CPUProfile = "x.pprof" }, "--cpuprofile"},
		{func(c *Config) { c.Supervisors = 0.5; c.WebRTC = 1.5 }, "--webrtc"},
		{func(c *Config) { c.Supervisors = 0; c.WebRTC = 0.5 }, "--webrtc: needs --supervisors"},
		{func(c *Config) { c.Spawn = false; c.Target = "127.0.0.1:5060"; c.Supervisors = 0.5; c.WebRTC = 0.5 }, "--webrtc: needs --http"},
	} {
		c := Config{Spawn: true}
		c.Defaults()
		tc.mod(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("want error naming %s, got %v", tc.flag, err)
		}
	}
	c := Config{Spawn: true}
	c.Defaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c = Config{Target: "127.0.0.1:5060", BridgeHTTP: "http://127.0.0.1:8080", Supervisors: 0.5, WebRTC: 0.5}
	c.Defaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestSpawnConfig(t *testing.T) {
	o := spawnOptions{calls: 3, customer: netip.MustParseAddrPort("127.0.0.1:5999"), prefix: "2", firstLine: 10001,
		record: true, monitor: true, supUser: "s", supPass: "p", logLevel: "warn", rtpPorts: [2]int{30000, 30999}}
	y := spawnConfig(o, "/tmp/x")
	for _, want := range []string{"CSFLOAD0003", `line: "10003"`, "recording: automatic", "builtin_bridge_enable: true",
		`target: "sip:${user}@127.0.0.1:5999"`, `match: "regex:2\\d+"`, "listen: 127.0.0.1:0", "rtp_ports: 30000-30999"} {
		if !strings.Contains(y, want) {
			t.Errorf("config lacks %q:\n%s", want, y)
		}
	}
	for _, bad := range []string{"recording_profile", "pprof"} {
		if strings.Contains(y, bad) {
			t.Errorf("config without forks or profile has %q:\n%s", bad, y)
		}
	}
	// Forks without --record still record (forks need automatic
	// recording); every device names the profile; pprof on.
	o.record, o.fork, o.forkProtocol, o.pprof = false, netip.MustParseAddrPort("127.0.0.1:5088"), "cucm", true
	y = spawnConfig(o, "/tmp/x")
	for _, want := range []string{"recording_profiles:", `destination: "sip:rec@127.0.0.1:5088", protocol: cucm, offer: delayed`,
		"pprof: true", "recording: automatic"} {
		if !strings.Contains(y, want) {
			t.Errorf("config lacks %q:\n%s", want, y)
		}
	}
	if n := strings.Count(y, "recording_profile: load"); n != 3 {
		t.Errorf("%d devices fork, want 3:\n%s", n, y)
	}
	o.forkProtocol = "siprec"
	if y = spawnConfig(o, "/tmp/x"); !strings.Contains(y, "protocol: siprec, offer: early") {
		t.Errorf("siprec profile:\n%s", y)
	}
}

func TestPickPortRanges(t *testing.T) {
	for range 50 {
		r, err := pickPortRanges(bridgePortCount(500, true, true), recorderPortCount(500))
		if err != nil {
			t.Fatal(err)
		}
		if r[0][0] < 20000 || r[1][1] > 60000 || r[0][0]%2 != 0 || r[1][0]%2 != 0 {
			t.Fatalf("ranges %v outside 20000..60000 or odd", r)
		}
		if r[0][1]-r[0][0]+1 < bridgePortCount(500, true, true) || r[1][1]-r[1][0]+1 < recorderPortCount(500) {
			t.Fatalf("ranges %v too small", r)
		}
		if r[1][0] <= r[0][1] {
			t.Fatalf("ranges %v overlap", r)
		}
	}
	if _, err := pickPortRanges(bridgePortCount(20000, true, false)); err == nil {
		t.Error("60000 ports fitted in 40000")
	}
}

func TestForkMetrics(t *testing.T) {
	before := parseMetrics("bib_fork_started_total 3\nbib_fork_failures_total 1\nbib_calls_total 9\n")
	after := parseMetrics("bib_fork_started_total 10\nbib_fork_failures_total 1\nbib_fork_lost_total 2\nbib_calls_total 20\n")
	d := metricDiff(forkMetrics(before), forkMetrics(after))
	want := map[string]float64{"bib_fork_started_total": 7, "bib_fork_failures_total": 0, "bib_fork_lost_total": 2}
	if len(d) != len(want) {
		t.Fatalf("diff %v, want %v", d, want)
	}
	for k, v := range want {
		if d[k] != v {
			t.Errorf("%s = %v, want %v", k, d[k], v)
		}
	}
}

// The summary table has the fork row and the recorder's cost; the CPU
// profile's top functions are listed.
func TestHTMLForksAndProfile(t *testing.T) {
	r := &Report{Verdict: "pass", Recorder: RecorderReport{PID: 2, CPUSeconds: 1.5, RSSMaxBytes: 40 << 20}}
	r.Settings.Fork = true
	r.Forks.RecordingReport = RecordingReport{Available: true, Expected: 500, Found: 500, Complete: 499, Completeness: 0.998}
	r.Profile = &ProfileReport{File: "out/cpu.pprof", Seconds: 30, CPUSeconds: 21.5,
		Top:        []ProfileEntry{{Function: "syscall.Syscall6<x>", FlatPct: 31.25, CumPct: 33}},
		SyscallPct: 40, Syscalls: []ProfileEntry{{Function: "bridge.(*ForkStream).sendRaw", FlatPct: 22.5, CumPct: 22.5}}}
	var buf bytes.Buffer
	if err := r.WriteHTML(&buf); err != nil {
		t.Fatal(err)
	}
	s := buf.String()
	for _, want := range []string{"forked recordings expected / found / complete", "500 / 500 / 499", "0.998",
		"recorder CPU s / RSS max", "1.500 / 40.0 MiB", "CPU profile", "31.25", "syscall.Syscall6&lt;x&gt;", "Recorder CPU",
		"System calls: 40.0 %", "22.50", "bridge.(*ForkStream).sendRaw"} {
		if !strings.Contains(s, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	// Without forks the row says so.
	r.Forks = ForkReport{}
	r.Profile = nil
	buf.Reset()
	if err := r.WriteHTML(&buf); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "CPU profile") {
		t.Error("profile section without a profile")
	}
}

// A recording that holds what the parties sent, delayed, matches with the
// right skew and correlation; WAV parsing reads what writeWAV writes.
func TestFidelityCompare(t *testing.T) {
	a, err := prompt.Get("agent", "PCMU")
	if err != nil {
		t.Fatal(err)
	}
	c, _ := prompt.Get("customer", "PCMU")
	const frames = 300 // 6 s
	sentA := a.Expected(nil, 5, frames)
	sentC := c.Expected(nil, 9, frames)
	// The recording starts 200 ms before the agent's first packet; the far
	// channel is 30 ms late relative to the near one.
	near := append(make([]int16, 1600), sentA...)
	far := append(make([]int16, 1600+240), sentC...)
	n := max(len(near), len(far))
	near = append(near, make([]int16, n-len(near))...)
	far = append(far, make([]int16, n-len(far))...)
	w, err := parseWAV(writeWAV(8000, near, far))
	if err != nil || len(w.Channels) != 2 || w.Rate != 8000 || len(w.Channels[0]) != n {
		t.Fatalf("parseWAV: %v %d ch", err, len(w.Channels))
	}
	fa := compareChannel(w.Channels[0], sentA, 8000, 1600)
	fc := compareChannel(w.Channels[1], sentC, 8000, 1600)
	if fa.coeff < 0.99 || math.Abs(fa.offsetErrMS) > 0.2 || fa.audioRatio < 0.99 {
		t.Fatalf("near %+v", fa)
	}
	if fc.coeff < 0.99 || math.Abs(fc.offsetErrMS-30) > 0.2 {
		t.Fatalf("far %+v", fc)
	}
	// A channel with the wrong voice does not correlate.
	if x := compareChannel(w.Channels[1], sentA, 8000, 1600); x.coeff > 0.5 {
		t.Fatalf("wrong voice correlates %+v", x)
	}
	// Silence where the audio should be: nothing heard.
	if x := compareChannel(make([]int16, n), sentA, 8000, 1600); x.audioRatio != 0 {
		t.Fatalf("silence heard %+v", x)
	}
}

// A recorder's fork may start after the parties' first packets: the
// recording then lacks the first few milliseconds and the sent audio sits
// at a negative offset. The short call (no 1 s skip) must still match.
func TestFidelityCompareLateRecording(t *testing.T) {
	a, err := prompt.Get("agent", "PCMU")
	if err != nil {
		t.Fatal(err)
	}
	sent := a.Expected(nil, 3, 175)               // 3.5 s
	for _, late := range []int{8, 40, 160, 800} { // 1, 5, 20, 100 ms
		rec := append([]int16(nil), sent[late:]...)
		rec = append(rec, make([]int16, 800)...)
		f := compareChannel(rec, sent, 8000, -late)
		if f.coeff < 0.99 || math.Abs(f.offsetErrMS) > 0.2 || f.audioRatio < 0.95 {
			t.Errorf("recording %d samples late: %+v", late, f)
		}
	}
}

func writeWAV(rate int, chans ...[]int16) []byte {
	n := len(chans[0])
	data := make([]byte, 2*n*len(chans))
	for i := range n {
		for c, ch := range chans {
			binary.LittleEndian.PutUint16(data[2*(i*len(chans)+c):], uint16(ch[i]))
		}
	}
	var b bytes.Buffer
	b.WriteString("RIFF")
	binary.Write(&b, binary.LittleEndian, uint32(36+len(data)))
	b.WriteString("WAVEfmt ")
	for _, v := range []any{uint32(16), uint16(1), uint16(len(chans)), uint32(rate),
		uint32(rate * 2 * len(chans)), uint16(2 * len(chans)), uint16(16)} {
		binary.Write(&b, binary.LittleEndian, v)
	}
	b.WriteString("data")
	binary.Write(&b, binary.LittleEndian, uint32(len(data)))
	b.Write(data)
	return b.Bytes()
}

func FuzzParseWAV(f *testing.F) {
	f.Add(writeWAV(8000, []int16{1, 2, 3}, []int16{4, 5, 6}))
	f.Add([]byte("RIFF\x00\x00\x00\x00WAVE"))
	f.Fuzz(func(t *testing.T, b []byte) {
		w, err := parseWAV(b)
		if err == nil && len(w.Channels) > 1 && len(w.Channels[0]) != len(w.Channels[1]) {
			t.Fatal("channels of different lengths")
		}
	})
}

func TestMatchRecordings(t *testing.T) {
	t0 := time.Now()
	calls := []callRecord{
		{Line: "10001", Answered: t0, Ended: t0.Add(10 * time.Second)},
		{Line: "10001", Answered: t0.Add(20 * time.Second), Ended: t0.Add(30 * time.Second)},
		{Line: "10002", Answered: t0, Ended: t0.Add(10 * time.Second)},
	}
	var metas []recMeta
	add := func(id, line string, start time.Time) {
		var m recMeta
		m.ID, m.Near.Line, m.StartTime = id, line, start
		metas = append(metas, m)
	}
	add("r2", "10001", t0.Add(20*time.Second+50*time.Millisecond))
	add("r1", "10001", t0.Add(30*time.Millisecond))
	add("rx", "10003", t0)
	got := matchRecordings(calls, metas)
	if got[0].ID != "r1" || got[1].ID != "r2" || len(got) != 2 {
		t.Fatalf("%+v", got)
	}
}
