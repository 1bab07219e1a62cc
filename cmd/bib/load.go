package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"github.com/bib-project/bib/cmd/internal/load"
)

const loadUsage = `bib load: place monitored and recorded calls through a SIP bridge and measure it.

Usage:
  bib load --spawn --calls N [--rate CPS] [--duration D] [...]       benchmark a bib serve it starts itself
  bib load --target HOST:PORT --customer-listen IP:PORT [...]        drive any SIP bridge

Exit status: 0 when the verdict is pass, 1 when it is fail, 2 when the run could not happen.
See the README ("bib load: the load-test harness") for what is measured and how.

Flags:
`

// ratio is a flag holding a fraction, given as 0.001 or 0.1%.
type ratio struct{ v *float64 }

func (r ratio) String() string {
	if r.v == nil {
		return "0"
	}
	return strconv.FormatFloat(*r.v, 'g', -1, 64)
}

func (r ratio) Set(s string) error {
	pct := strings.HasSuffix(s, "%")
	f, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
	if err != nil {
		return fmt.Errorf("%q is not a number or percentage", s)
	}
	if pct {
		f /= 100
	}
	*r.v = f
	return nil
}

func loadMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cfg load.Config
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, loadUsage)
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.Target, "target", "", "bridge SIP address IP:PORT (UDP); not with --spawn")
	fs.BoolVar(&cfg.Spawn, "spawn", false, "start a bib serve with a generated config on free loopback ports")
	fs.StringVar(&cfg.BibBinary, "bib", "", "bib binary --spawn runs (default: this executable)")
	fs.IntVar(&cfg.BridgePID, "bridge-pid", 0, "pid of a local bridge to sample CPU and memory from /proc")
	fs.StringVar(&cfg.BridgeHTTP, "bridge-http", "", "bridge HTTP base URL for /metrics and /api/v1/recordings, e.g. http://127.0.0.1:8080")
	fs.StringVar(&cfg.BridgeHTTP, "http", "", "bib serve's HTTP base URL (same as --bridge-http); needed by --webrtc without --spawn")
	fs.StringVar(&cfg.BridgeLogLevel, "bridge-log-level", "warn", "log level of the spawned bridge")
	fs.BoolVar(&cfg.KeepDir, "keep", false, "keep the spawned bridge's directory (config, log, recordings)")
	fs.IntVar(&cfg.Calls, "calls", 10, "concurrent calls (slots are refilled while --duration lasts)")
	fs.Float64Var(&cfg.Rate, "rate", 10, "call attempts per second")
	fs.DurationVar(&cfg.Duration, "duration", 0, "how long to place and hold calls (default 10s)")
	fs.DurationVar(&cfg.Hold, "hold", 0, "length of each call (default: until --duration ends)")
	fs.DurationVar(&cfg.SetupTimeout, "setup-timeout", 0, "bound on each INVITE (default 10s)")
	fs.Var(ratio{&cfg.Supervisors}, "supervisors", "fraction of calls a supervisor monitors (0.1 or 10%)")
	fs.Var(ratio{&cfg.WebRTC}, "webrtc", "fraction of the supervisors that join over WebRTC (bib serve's WHEP endpoint) instead of SIP (0.5 or 50%)")
	fs.BoolVar(&cfg.Record, "record", false, "record every call and check the recordings")
	fs.BoolVar(&cfg.Fork, "fork", false, "also fork every call to a recorder (--spawn starts a bib recorder) and check its recordings")
	fs.StringVar(&cfg.ForkProtocol, "fork-protocol", "cucm", "fork protocol with --spawn: cucm (call-manager style, delayed offer) or siprec")
	fs.StringVar(&cfg.RecorderHTTP, "recorder-http", "", "recorder HTTP base URL for /api/v1/recordings when not spawned, e.g. http://127.0.0.1:8081")
	fs.IntVar(&cfg.RecorderPID, "recorder-pid", 0, "pid of a local recorder to sample CPU and memory from /proc")
	fs.StringVar(&cfg.CPUProfile, "cpuprofile", "", "save a CPU profile of the bridge over the middle half of the run to this file (--spawn enables pprof)")
	fs.IntVar(&cfg.FidelitySample, "fidelity-sample", 10, "recordings downloaded and compared with what was sent")
	fs.Var(ratio{&cfg.Impair.Loss}, "loss", "probability each sender drops a packet (0.01 or 1%)")
	fs.DurationVar(&cfg.Impair.Jitter, "jitter", 0, "each packet is delayed by a random time up to this")
	fs.Var(ratio{&cfg.Impair.Reorder}, "reorder", "probability a packet is sent after the next one")
	fs.Var(ratio{&cfg.Impair.Duplicate}, "duplicate", "probability a packet is sent twice")
	fs.Uint64Var(&cfg.Impair.Seed, "seed", 1, "seed of the impairment choices")
	fs.StringVar(&cfg.Codec, "codec", "pcmu", "pcmu, pcma or g722")
	noRegister := fs.Bool("no-register", false, "do not REGISTER the agents' lines before calling")
	fs.StringVar(&cfg.AgentListen, "agent-listen", "127.0.0.1:0", "agents' SIP address")
	fs.StringVar(&cfg.CustomerListen, "customer-listen", "", "customers' SIP address; the bridge must route 2NNNNNN here (default 127.0.0.1:0 with --spawn, 127.0.0.1:5070 otherwise)")
	fs.StringVar(&cfg.SupListen, "supervisor-listen", "127.0.0.1:0", "supervisors' SIP address")
	fs.IntVar(&cfg.FirstLine, "first-line", 10001, "agent i calls from line first-line+i")
	fs.StringVar(&cfg.CustomerPrefix, "customer-prefix", "2", "prefix of the dialled customer numbers")
	fs.StringVar(&cfg.MonitorPrefix, "monitor-prefix", "monitor-", "what a supervisor dials before the agent's line")
	fs.StringVar(&cfg.SupUser, "supervisor-user", "loadsup", "supervisor digest user")
	fs.StringVar(&cfg.SupPassword, "supervisor-password", "load-harness", "supervisor digest password")
	fs.IntVar(&cfg.Sockets, "sockets", 0, "RTP sockets per party kind, shared round-robin (default min(calls, 16))")
	fs.Var(ratio{&cfg.Thresholds.MaxLoss}, "max-loss", "fail above this RTP loss ratio (default 0.0001 = 0.01%)")
	fs.Float64Var(&cfg.Thresholds.MaxP99MS, "max-p99-ms", 0, "fail above this p99 latency in ms (default 2)")
	fs.Var(ratio{&cfg.Thresholds.MinCompleteness}, "min-completeness", "fail below this share of complete recordings (default 1)")
	fs.Uint64Var(&cfg.Thresholds.MaxLeaks, "max-leaks", 0, "fail above this many supervisor packets reaching parties")
	fs.Var(ratio{&cfg.Thresholds.MinSuccess}, "min-success", "fail below this share of established calls (default 1)")
	jsonPath := fs.String("json", "", "write the JSON report to this file (- for stdout)")
	htmlPath := fs.String("html", "", "write the HTML report to this file")
	progress := fs.String("progress", "auto", "live status line on stderr: auto (when a terminal), on, off")
	verbose := fs.Bool("v", false, "log the harness's SIP diagnostics to stderr")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bib load: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	cfg.Register = !*noRegister
	if cfg.CustomerListen == "" && !cfg.Spawn {
		cfg.CustomerListen = "127.0.0.1:5070"
	}
	var prog io.Writer
	switch *progress {
	case "on":
		prog = stderr
	case "auto":
		if isTerminal(stderr) {
			prog = stderr
		}
	case "off":
	default:
		fmt.Fprintf(stderr, "bib load: --progress: %q is not auto, on or off\n", *progress)
		return 2
	}
	// sipgo logs through the default logger in a few places; keep the
	// terminal for the status line unless asked.
	logLevel := slog.LevelError + 4
	if *verbose {
		logLevel = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: logLevel}))
	slog.SetDefault(logger)

	rep, err := load.Run(ctx, cfg, prog, load.Options{Log: logger})
	if err != nil {
		fmt.Fprintln(stderr, "bib load:", err)
		return 2
	}
	if *jsonPath != "" {
		if err := writeReport(*jsonPath, stdout, rep.WriteJSON); err != nil {
			fmt.Fprintln(stderr, "bib load: --json:", err)
			return 2
		}
	}
	if *htmlPath != "" {
		if err := writeReport(*htmlPath, stdout, rep.WriteHTML); err != nil {
			fmt.Fprintln(stderr, "bib load: --html:", err)
			return 2
		}
	}
	if *jsonPath != "-" {
		printSummary(stdout, rep)
	}
	if rep.Verdict != "pass" {
		return 1
	}
	return 0
}

func writeReport(path string, stdout io.Writer, write func(io.Writer) error) error {
	if path == "-" {
		return write(stdout)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func printSummary(w io.Writer, r *load.Report) {
	c, rt := r.Calls, r.RTP
	fmt.Fprintf(w, "bib load: %s against %s\n", strings.ToUpper(r.Verdict), r.Target)
	fmt.Fprintf(w, "  calls     %d attempted, %d established, %d failed, %d dropped; max concurrent %d; %.1f cps; setup p50/p99 %.2f/%.2f ms\n",
		c.Attempted, c.Established, c.Failed, c.Dropped, c.MaxConcurrent, c.CPS, c.SetupMS.P50, c.SetupMS.P99)
	fmt.Fprintf(w, "  rtp       %d sent, %d received, %d lost (%.4f%%); latency p50/p99/max %.3f/%.3f/%.3f ms; jitter p99 %.3f ms\n",
		rt.Sent, rt.Received, rt.Lost, 100*rt.LossRatio, rt.LatencyMS.P50, rt.LatencyMS.P99, rt.LatencyMS.Max, rt.JitterMS.P99)
	if s := r.Supervisors; s.Requested > 0 {
		split := ""
		if r.Settings.WebRTC > 0 {
			split = fmt.Sprintf(" (%d SIP, %d WebRTC)", s.SIPStreams, s.WebRTCStreams)
		}
		fmt.Fprintf(w, "  monitor   %d of %d supervisors connected%s, %d packets received, %d leaked to parties\n",
			s.Streams, s.Requested, split, s.PacketsReceived, s.LeakedToParties)
	}
	if r.Settings.Record {
		g := r.Recordings
		fmt.Fprintf(w, "  record    %d expected, %d found, %d complete (%.1f%%); max skew %.1f ms; min correlation %.2f\n",
			g.Expected, g.Found, g.Complete, 100*g.Completeness, g.MaxSkewMS, g.MinCorrelation)
	}
	if r.Settings.Fork {
		g := r.Forks
		fmt.Fprintf(w, "  forks     %d expected, %d found at the recorder, %d complete (%.1f%%); max skew %.1f ms; min correlation %.2f\n",
			g.Expected, g.Found, g.Complete, 100*g.Completeness, g.MaxSkewMS, g.MinCorrelation)
	}
	if b := r.Bridge; b.PID != 0 {
		fmt.Fprintf(w, "  bridge    pid %d: %.2f CPU s (%.0f%% mean), RSS max %.1f MiB, %d packets relayed, %.2f µs CPU per packet\n",
			b.PID, b.CPUSeconds, b.CPUPercentMean, float64(b.RSSMaxBytes)/(1<<20), b.PacketsRelayed, b.CPUUSPerPacket)
	}
	if g := r.Recorder; g.PID != 0 {
		fmt.Fprintf(w, "  recorder  pid %d: %.2f CPU s, RSS max %.1f MiB\n", g.PID, g.CPUSeconds, float64(g.RSSMaxBytes)/(1<<20))
	}
	if p := r.Profile; p != nil {
		fmt.Fprintf(w, "  profile   %s: %.2f CPU s sampled over %.0f s from t=%.0f s; top by flat CPU:\n", p.File, p.CPUSeconds, p.Seconds, p.StartS)
		for _, e := range p.Top {
			fmt.Fprintf(w, "            %5.1f%% flat %5.1f%% cum  %s\n", e.FlatPct, e.CumPct, e.Function)
		}
		if len(p.Syscalls) > 0 {
			fmt.Fprintf(w, "            system calls %.1f%% of CPU, by caller:\n", p.SyscallPct)
			for _, e := range p.Syscalls {
				fmt.Fprintf(w, "            %5.1f%%  %s\n", e.FlatPct, e.Function)
			}
		}
	}
	for _, f := range r.Failures {
		fmt.Fprintln(w, "  FAIL:", f)
	}
	for _, n := range r.Notes {
		fmt.Fprintln(w, "  note:", n)
	}
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
