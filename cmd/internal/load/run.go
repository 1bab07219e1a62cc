package load

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/netip"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/bib-project/bib/cmd/internal/prompt"
)

// Timing constants of a call's life.
const (
	// mediaGrace is how long receipt stays open after a call's senders
	// stopped, before BYE: packets in flight still count.
	mediaGrace = 300 * time.Millisecond
	// custWait bounds how long after the 200 OK the customer's INVITE may
	// still be unknown to the harness.
	custWait = 2 * time.Second
	// byeTimeout bounds each BYE transaction.
	byeTimeout = 5 * time.Second
	// pacerTick is the pacing resolution.
	pacerTick = 2 * time.Millisecond
)

// ErrConfig wraps configuration errors.
var ErrConfig = errors.New("load config")

// call is one attempted call.
type call struct {
	n        int // attempt number, from 1
	slot     int
	line     string
	device   string
	custUser string
	monitor  bool
	webrtc   bool // the supervisor joins over WebRTC (WHEP) instead of SIP

	custCh  chan netip.AddrPort // the bridge's B-leg address, from the customer's INVITE
	peerBye chan struct{}       // the bridge hung up on the agent
	byeOnce sync.Once

	mu       sync.Mutex
	agentDS  *sipgo.DialogClientSession
	custDS   *sipgo.DialogServerSession
	supDS    *sipgo.DialogClientSession
	web      *webSup
	agentCID string
	custCID  string
}

// callRecord is what fidelity checks need to know about a finished call.
type callRecord struct {
	Line         string
	Device       string
	Answered     time.Time
	Ended        time.Time
	AgentStart   time.Time // wall time of the agent's first packet
	CustStart    time.Time
	AgentFirst   int // prompt frame the agent started with
	AgentFrames  int // frames the agent's stream consumed (sent or dropped)
	CustFirst    int
	CustFrames   int
	AgentDropped int
	CustDropped  int
}

// runner is one run's state.
type runner struct {
	cfg    Config
	log    *slog.Logger
	target netip.AddrPort
	pt     uint8
	codec  string
	agentP *prompt.Prompt
	custP  *prompt.Prompt

	agent, cust, sup *userAgent
	m                *media
	sipc             sipCounters
	web              *webClient     // WebRTC supervisors (nil without --webrtc)
	webP             *prompt.Prompt // WebRTC supervisors' own audio (PCMU)

	start time.Time // first INVITE

	mu       sync.Mutex
	pending  map[string]*call // customer user -> call
	failWhy  map[string]uint64
	records  []callRecord
	supWhy   string
	firstInv time.Time
	lastInv  time.Time

	attempted   atomic.Uint64
	established atomic.Uint64
	failed      atomic.Uint64
	dropped     atomic.Uint64
	active      atomic.Int64
	maxActive   atomic.Int64
	supReq      atomic.Uint64
	supOK       atomic.Uint64
	supFail     atomic.Uint64
	webReq      atomic.Uint64 // WebRTC supervisors attempted
	supWeb      atomic.Uint64 // WebRTC supervisors connected
	webRecv     atomic.Uint64 // RTP packets WebRTC supervisors received
	webDelFail  atomic.Uint64 // sessions DELETE did not end

	setup  Histogram
	jitter Histogram
}

// Options are the non-flag inputs of Run.
type Options struct {
	// Log receives the harness's own diagnostics (nil: discarded).
	Log *slog.Logger
}

// Run executes a load test and returns its report. The report is returned
// (with Verdict "fail") when the bridge misbehaves; an error means the run
// itself could not happen (bad config, no bridge to spawn, sockets).
// progress, if not nil, gets a one-line status rewritten every second
// (carriage return), ending with a newline.
func Run(ctx context.Context, cfg Config, progress io.Writer, opts ...Options) (*Report, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	r := &runner{cfg: cfg, log: o.Log, pending: map[string]*call{}, failWhy: map[string]uint64{}}
	r.codec = strings.ToUpper(cfg.Codec)
	var err error
	if r.agentP, err = prompt.Get("agent", r.codec); err != nil {
		return nil, err
	}
	if r.custP, err = prompt.Get("customer", r.codec); err != nil {
		return nil, err
	}
	r.pt = uint8(r.agentP.Codec.StaticPT)
	if cfg.WebRTC > 0 {
		if r.webP, err = prompt.Get("agent", "PCMU"); err != nil {
			return nil, err
		}
	}
	report := &Report{Schema: "bib-load/1", Started: time.Now(), Spawned: cfg.Spawn, Settings: Settings{
		Calls: cfg.Calls, Rate: cfg.Rate, DurationS: cfg.Duration.Seconds(), HoldS: cfg.Hold.Seconds(),
		Supervisors: cfg.Supervisors, WebRTC: cfg.WebRTC, Record: cfg.Record, Fork: cfg.Fork, Codec: strings.ToLower(cfg.Codec),
		Impair: cfg.Impair, Thresholds: cfg.Thresholds, Sockets: cfg.Sockets,
	}}
	notes := []string{}
	note := func(format string, a ...any) { notes = append(notes, fmt.Sprintf(format, a...)) }

	// SIP user agents first: a spawned bridge routes to the customer's port.
	if r.agent, err = newUserAgent("agent", cfg.AgentListen, r.log); err != nil {
		return nil, err
	}
	defer r.agent.close()
	if r.cust, err = newUserAgent("customer", cfg.CustomerListen, r.log); err != nil {
		return nil, err
	}
	defer r.cust.close()
	if cfg.Supervisors > 0 {
		if r.sup, err = newUserAgent("supervisor", cfg.SupListen, r.log); err != nil {
			return nil, err
		}
		defer r.sup.close()
	}
	r.agent.srv.OnBye(r.onAgentBye)
	r.agent.srv.OnInvite(func(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
		_ = tx.Respond(sipmsg.NewResponseFromRequest(req, 486, "Busy Here", nil))
	})
	r.cust.srv.OnInvite(r.onCustomerInvite)
	r.cust.srv.OnAck(r.onCustomerAck)
	r.cust.srv.OnBye(r.onCustomerBye)
	if r.sup != nil {
		r.sup.srv.OnBye(r.onSupBye)
	}
	r.agent.serve()
	r.cust.serve()
	if r.sup != nil {
		r.sup.serve()
	}

	ip := r.agent.addr.Addr()
	if r.m, err = newMedia(cfg.Calls, cfg.Sockets, cfg.Impair, ip); err != nil {
		return nil, err
	}

	// The recorder (forks) and the bridge.
	var sp, rsp *spawned
	bridgePID := cfg.BridgePID
	httpBase := strings.TrimRight(cfg.BridgeHTTP, "/")
	recorderPID := cfg.RecorderPID
	recHTTP := strings.TrimRight(cfg.RecorderHTTP, "/")
	if cfg.Spawn {
		bin := cfg.BibBinary
		if bin == "" {
			if bin, err = os.Executable(); err != nil {
				r.m.close()
				return nil, fmt.Errorf("find bib binary: %w", err)
			}
		}
		sizes := []int{bridgePortCount(cfg.Calls, cfg.Supervisors > 0, cfg.Fork)}
		if cfg.Fork {
			sizes = append(sizes, recorderPortCount(cfg.Calls))
		}
		ranges, err := pickPortRanges(sizes...)
		if err != nil {
			r.m.close()
			return nil, fmt.Errorf("%w: --calls: %w", ErrConfig, err)
		}
		var forkTo netip.AddrPort
		if cfg.Fork {
			if rsp, err = spawnRecorder(ctx, bin, ranges[1], cfg.BridgeLogLevel, cfg.KeepDir); err != nil {
				r.m.close()
				return nil, err
			}
			defer rsp.cleanup()
			forkTo, recorderPID, recHTTP = rsp.SIP, rsp.pid(), rsp.HTTP
			report.Forks.Protocol = cfg.ForkProtocol
			report.Settings.ForkProto = cfg.ForkProtocol
			if cfg.KeepDir {
				note("The spawned recorder's log and archive are kept in %s.", rsp.dir)
			}
		}
		sp, err = spawnBridge(ctx, spawnOptions{
			bin: bin, calls: cfg.Calls, customer: r.cust.addr, prefix: cfg.CustomerPrefix,
			firstLine: cfg.FirstLine, record: cfg.Record, monitor: cfg.Supervisors > 0,
			supUser: cfg.SupUser, supPass: cfg.SupPassword, logLevel: cfg.BridgeLogLevel, keep: cfg.KeepDir,
			rtpPorts: ranges[0], fork: forkTo, forkProtocol: cfg.ForkProtocol, pprof: cfg.CPUProfile != "",
		})
		if err != nil {
			if rsp != nil {
				rsp.stop(5 * time.Second)
			}
			r.m.close()
			return nil, err
		}
		defer sp.cleanup()
		r.target = sp.SIP
		bridgePID = sp.pid()
		httpBase = sp.HTTP
		if cfg.KeepDir {
			note("The spawned bridge's config, log and data are kept in %s.", sp.dir)
		}
	} else {
		r.target = netip.MustParseAddrPort(cfg.Target)
	}
	report.Target = r.target.String()
	report.Bridge.PID = bridgePID
	report.Recorder.PID = recorderPID
	report.Forks.Recorder = recHTTP
	stopRecorder := func() {
		if rsp == nil {
			return
		}
		cpu, err := rsp.stop(20 * time.Second)
		report.Recorder.ProcessCPUTotal = round3(cpu)
		if err != nil {
			note("Stopping the spawned recorder: %v", err)
		}
		rsp = nil
	}
	defer stopRecorder() // after the bridge: its draining BYEs end the forks
	stopBridge := func() {
		if sp == nil {
			return
		}
		cpu, err := sp.stop(20 * time.Second)
		report.Bridge.ProcessCPUTotal = round3(cpu)
		if err != nil {
			note("Stopping the spawned bridge: %v", err)
		}
		sp = nil
	}
	defer stopBridge()

	if cfg.WebRTC > 0 {
		if r.web, err = newWebClient(httpBase, cfg.SupUser, cfg.SupPassword, ip, r.log); err != nil {
			r.m.close()
			return nil, err
		}
		defer r.web.close()
		// Sign in once, before the calls (the sign-in's cost stays out of
		// the supervisors' setup); a failure is every WebRTC supervisor's.
		_, _ = r.web.token(ctx, "")
	}

	mctx, stopMedia := context.WithCancel(context.Background())
	pacers := max(1, min(runtime.GOMAXPROCS(0), 4))
	report.Harness.Pacers = pacers
	r.m.run(mctx, pacers, pacerTick)
	closeMedia := sync.OnceFunc(func() { stopMedia(); r.m.close() })
	defer closeMedia()

	// Registration (the gate applies to registered Jabber devices).
	if cfg.Register {
		r.registerAll(ctx)
		if f := r.sipc.registerFail.Load(); f > 0 {
			note("%d of %d agent registrations failed.", f, cfg.Calls)
		}
	}

	// Figures before the first call.
	var before, recBefore ProcSample
	var haveProc, haveRecProc bool
	if bridgePID > 0 {
		if before, err = readProc("/proc", bridgePID); err == nil {
			haveProc = true
		} else {
			note("Bridge process %d: procfs not readable (%v); no CPU or memory figures.", bridgePID, err)
		}
	} else {
		note("No local bridge process (use --spawn or --bridge-pid): no CPU or memory figures.")
	}
	if recorderPID > 0 {
		if recBefore, err = readProc("/proc", recorderPID); err == nil {
			haveRecProc = true
		} else {
			note("Recorder process %d: procfs not readable (%v); no CPU or memory figures.", recorderPID, err)
		}
	}
	var relayedBefore float64
	var forkBefore map[string]float64
	haveMetrics := false
	if httpBase != "" {
		if mt, err := scrape(ctx, httpBase); err == nil {
			if v, ok := mt[metricRelayed]; ok {
				relayedBefore, haveMetrics = v, true
			}
			forkBefore = forkMetrics(mt)
		}
		if !haveMetrics {
			note("The bridge's /metrics at %s has no %s: packets relayed unknown.", httpBase, metricRelayed)
		}
	} else {
		note("No bridge HTTP address (--bridge-http): packets relayed and recordings cannot be queried.")
	}
	harnessBefore, _ := readProc("/proc", os.Getpid())

	// Calls, with a sampler, the progress line and the CPU profile.
	r.start = time.Now()
	sctx, stopSampler := context.WithCancel(ctx)
	samplerDone := make(chan struct{})
	var series []Sample
	var maxRSS uint64
	go func() {
		defer close(samplerDone)
		series, maxRSS = r.sample(sctx, bridgePID, recorderPID, progress)
	}()
	type profResult struct {
		raw []byte
		err error
	}
	profC := make(chan profResult, 1)
	profAfter, profSeconds := profileWindow(cfg.Duration)
	if cfg.CPUProfile != "" {
		go func() {
			raw, err := fetchProfile(ctx, httpBase, r.start, profAfter, profSeconds)
			profC <- profResult{raw, err}
		}()
	}
	r.generate(ctx)
	if r.web != nil {
		r.web.close()
	}
	stopSampler()
	<-samplerDone
	if cfg.CPUProfile != "" {
		res := <-profC
		if res.err == nil {
			report.Profile, res.err = saveProfile(res.raw, cfg.CPUProfile)
		}
		if res.err != nil {
			note("CPU profile (--cpuprofile) not taken: %v.", res.err)
		} else {
			report.Profile.StartS, report.Profile.Seconds = round3(profAfter.Seconds()), float64(profSeconds)
		}
	}

	// Everything has hung up; let stragglers arrive, then count.
	time.Sleep(50 * time.Millisecond)
	end := time.Now()
	harnessAfter, _ := readProc("/proc", os.Getpid())
	tot := r.m.snapshotTotals()
	drops := uint64(0)
	if tbl, err := os.ReadFile("/proc/net/udp"); err == nil {
		drops = udpDrops(tbl, r.m.ports())
	}
	if tbl, err := os.ReadFile("/proc/net/udp6"); err == nil {
		drops += udpDrops(tbl, r.m.ports())
	}
	if haveProc {
		if after, err := readProc("/proc", bridgePID); err == nil {
			report.Bridge.CPUSeconds = round3(after.CPUSeconds - before.CPUSeconds)
			report.Bridge.RSSMaxBytes = max(after.HWMBytes, maxRSS)
			if el := end.Sub(r.start).Seconds(); el > 0 {
				report.Bridge.CPUPercentMean = round3(100 * report.Bridge.CPUSeconds / el)
			}
		} else {
			note("Bridge process %d disappeared during the run (%v).", bridgePID, err)
		}
	}
	if haveRecProc {
		if after, err := readProc("/proc", recorderPID); err == nil {
			report.Recorder.CPUSeconds = round3(after.CPUSeconds - recBefore.CPUSeconds)
			report.Recorder.RSSMaxBytes = max(after.HWMBytes, after.RSSBytes)
		} else {
			note("Recorder process %d disappeared during the run (%v).", recorderPID, err)
		}
	}
	if haveMetrics {
		if mt, err := scrape(ctx, httpBase); err == nil {
			report.Bridge.Metrics = true
			report.Bridge.PacketsRelayed = uint64(mt[metricRelayed] - relayedBefore)
			if report.Bridge.PacketsRelayed > 0 && report.Bridge.CPUSeconds > 0 {
				report.Bridge.CPUUSPerPacket = round3(report.Bridge.CPUSeconds * 1e6 / float64(report.Bridge.PacketsRelayed))
			}
			if cfg.Fork {
				report.Forks.BridgeMetrics = metricDiff(forkBefore, forkMetrics(mt))
			}
		}
	}
	report.Harness.CPUSeconds = round3(harnessAfter.CPUSeconds - harnessBefore.CPUSeconds)
	report.Harness.RSSMaxBytes = harnessAfter.HWMBytes

	// Calls.
	c := &report.Calls
	c.Attempted, c.Established, c.Failed, c.Dropped = r.attempted.Load(), r.established.Load(), r.failed.Load(), r.dropped.Load()
	c.MaxConcurrent = uint64(r.maxActive.Load())
	c.Registered, c.RegisterFail = r.sipc.registered.Load(), r.sipc.registerFail.Load()
	r.mu.Lock()
	if len(r.failWhy) > 0 {
		c.FailReasons = r.failWhy
	}
	if w := r.lastInv.Sub(r.firstInv).Seconds(); w >= 1 {
		c.CPS = round3(float64(c.Established) / w)
	} else if c.Established > 0 {
		c.CPS = float64(c.Established)
	}
	records := r.records
	supWhy := r.supWhy
	r.mu.Unlock()
	c.SetupMS = quantiles(r.setup.Snapshot())

	// RTP: parties only (supervisor streams go to the bridge and nowhere else).
	rt := &report.RTP
	for _, k := range []kind{kindAgent, kindCustomer} {
		t := tot[k]
		rt.Sent += t.Sent
		rt.Received += t.Recv
		rt.Duplicates += t.RecvDup
		rt.Late += t.RecvLate
		rt.Misrouted += t.WrongRx
		rt.SendErrors += t.SendErr
		rt.Impairment.Dropped += t.Dropped
		rt.Impairment.Duplicated += t.Dups
		rt.Impairment.Reordered += t.Reordered
	}
	if rt.Sent > rt.Received {
		rt.Lost = rt.Sent - rt.Received
	}
	if rt.Sent > 0 {
		rt.LossRatio = float64(rt.Lost) / float64(rt.Sent)
	}
	rt.Unmatched = r.m.unmatched.Load()
	rt.HarnessDrops = drops
	lat := r.m.latency.Snapshot()
	rt.LatencyMS = quantiles(lat)
	rt.JitterMS = quantiles(r.jitter.Snapshot())
	up, cnt := lat.Buckets(40)
	for i := range up {
		report.LatencyHist = append(report.LatencyHist, Bar{LeMS: roundMS(up[i]), Count: cnt[i]})
	}
	if rt.Unmatched > 0 && rt.Received == 0 {
		note("%d packets arrived with SSRCs the harness did not send: the bridge may rewrite SSRCs, which the harness needs preserved to match packets.", rt.Unmatched)
	}
	if drops > 0 {
		note("The harness's own sockets dropped %d datagrams (kernel buffers full): part of the loss is the harness's, not the bridge's.", drops)
	}

	// Supervisors.
	sv := &report.Supervisors
	sv.Requested, sv.Streams, sv.Failed = r.supReq.Load(), r.supOK.Load(), r.supFail.Load()
	sv.Available = sv.Streams > 0
	sv.PacketsSent = tot[kindSupervisor].Sent
	sv.PacketsReceived = r.m.supRecv.Load()
	sv.LeakedToParties = r.m.leaks.Load()
	sv.WebRTCStreams = r.supWeb.Load()
	sv.SIPStreams = sv.Streams - sv.WebRTCStreams
	sv.WebRTCPacketsReceived = r.webRecv.Load()
	if cfg.Supervisors > 0 && !sv.Available {
		why := supWhy
		if why == "" {
			why = "no call was monitored"
		}
		note("Monitoring not available: %s.", why)
	} else if sv.Failed > 0 && supWhy != "" {
		note("First supervisor failure: %s.", supWhy)
	}
	switch {
	case cfg.Supervisors > 0 && cfg.WebRTC > 0:
		wr := r.webReq.Load()
		note("Supervisors joined over SIP (%d of %d connected) and over WebRTC/WHEP (%d of %d connected, %d packets received); every one transmitted its own marked audio, so any of it reaching a party counts as a leak.",
			sv.SIPStreams, sv.Requested-wr, sv.WebRTCStreams, wr, sv.WebRTCPacketsReceived)
	case cfg.Supervisors > 0:
		note("Supervisors join over SIP only; WebRTC (WHEP) supervisors are not exercised yet.")
	}
	if n := r.webDelFail.Load(); n > 0 {
		note("%d WebRTC supervisor sessions could not be ended with DELETE (bib may keep them until the call ends).", n)
	}

	// Recordings: while the bridge still runs.
	if cfg.Record {
		if httpBase == "" {
			note("Recordings not checked: no bridge HTTP address.")
		} else {
			rec, rnotes := checkRecordings(ctx, httpBase, records, r.agentP, r.custP, cfg.FidelitySample, cfg.SupUser, cfg.SupPassword)
			report.Recordings = rec
			notes = append(notes, rnotes...)
		}
	}
	report.Recordings.Expected = c.Established
	if cfg.Record && report.Recordings.Expected > 0 {
		report.Recordings.Completeness = round3(float64(report.Recordings.Complete) / float64(report.Recordings.Expected))
	}

	// Forked recordings, at the recorder, while it still runs.
	if cfg.Fork {
		if recHTTP == "" {
			note("Forked recordings not checked: no recorder HTTP address (--recorder-http).")
		} else {
			rec, rnotes := checkRecordings(ctx, recHTTP, records, r.agentP, r.custP, cfg.FidelitySample, cfg.SupUser, cfg.SupPassword)
			report.Forks.RecordingReport = rec
			for _, n := range rnotes {
				notes = append(notes, "Recorder: "+n)
			}
		}
		report.Forks.Expected = c.Established
		if report.Forks.Expected > 0 {
			report.Forks.Completeness = round3(float64(report.Forks.Complete) / float64(report.Forks.Expected))
		}
		if v := report.Forks.BridgeMetrics["bib_fork_failures_total"]; v > 0 {
			note("The bridge counted %.0f recorder failures (bib_fork_failures_total) during the run.", v)
		}
	}

	stopBridge()
	stopRecorder()
	closeMedia()
	report.Series = series
	report.DurationS = round3(time.Since(report.Started).Seconds())
	report.Notes = notes
	report.judge(cfg)
	return report, nil
}

// pickWebRTC says whether supervisor k (from 0) joins over WebRTC, given
// the WebRTC share in parts per million: when the running count of WebRTC
// supervisors, ceil(k*share), steps. The share holds over any prefix of
// the run, and the first supervisor is a WebRTC one.
func pickWebRTC(k, ppm int64) bool {
	return ceilDiv((k+1)*ppm, 1e6) > ceilDiv(k*ppm, 1e6)
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

func round3(v float64) float64 { return float64(int64(v*1000+0.5)) / 1000 }

func quantiles(s HistSnapshot) Quantiles {
	return Quantiles{P50: s.QuantileMS(0.50), P95: s.QuantileMS(0.95), P99: s.QuantileMS(0.99), Max: roundMS(float64(s.Max))}
}

// registerAll registers every agent line, 32 at a time.
func (r *runner) registerAll(ctx context.Context) {
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i := range r.cfg.Calls {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			code, err := r.agent.register(rctx, r.target, r.line(i), r.device(i))
			if err != nil || code != 200 {
				r.sipc.registerFail.Add(1)
				return
			}
			r.sipc.registered.Add(1)
		}()
	}
	wg.Wait()
}

func (r *runner) line(slot int) string { return strconv.Itoa(r.cfg.FirstLine + slot) }

// device is the device name agent slot registers as.
func (r *runner) device(slot int) string {
	if slot < len(r.cfg.AgentDevices) {
		return r.cfg.AgentDevices[slot]
	}
	return deviceName(slot)
}

// generate places calls at the configured rate, never more than Calls at
// once, until Duration has passed since the first INVITE, then waits for
// every call to end.
func (r *runner) generate(ctx context.Context) {
	cfg := r.cfg
	deadline := r.start.Add(cfg.Duration)
	dctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	free := make(chan int, cfg.Calls)
	for i := range cfg.Calls {
		free <- i
	}
	interval := time.Duration(float64(time.Second) / cfg.Rate)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var wg sync.WaitGroup
	every := 0
	if cfg.Supervisors > 0 {
		every = max(1, int(1/cfg.Supervisors+0.5))
	}
	webPPM := int64(math.Round(cfg.WebRTC * 1e6)) // WebRTC share of the supervisors, per million
loop:
	for n := 1; ; n++ {
		var slot int
		select {
		case slot = <-free:
		case <-dctx.Done():
			break loop
		}
		if n > 1 {
			select {
			case <-tick.C:
			case <-dctx.Done():
				break loop
			}
		}
		c := &call{
			n: n, slot: slot, line: r.line(slot), device: r.device(slot),
			custUser: fmt.Sprintf("%s%06d", cfg.CustomerPrefix, n),
			monitor:  every > 0 && (n-1)%every == 0,
			custCh:   make(chan netip.AddrPort, 1), peerBye: make(chan struct{}),
		}
		if c.monitor && webPPM > 0 {
			c.webrtc = pickWebRTC(int64((n-1)/every), webPPM)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.runCall(ctx, dctx, c)
			free <- slot
		}()
	}
	wg.Wait()
}

// runCall is one call's whole life.
func (r *runner) runCall(ctx, dctx context.Context, c *call) {
	r.attempted.Add(1)
	now := time.Now()
	r.mu.Lock()
	if r.firstInv.IsZero() {
		r.firstInv = now
	}
	r.lastInv = now
	r.pending[c.custUser] = c
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.pending, c.custUser)
		r.mu.Unlock()
	}()
	fail := func(why string) {
		r.failed.Add(1)
		r.mu.Lock()
		r.failWhy[why]++
		r.mu.Unlock()
	}

	body := offerSDP(r.m.addr(c.slot, kindAgent), r.pt, r.agentP.Codec.Name, "sendrecv", uint64(c.n))
	req := r.agent.newInvite(r.target, c.line, c.device, c.custUser, body)
	c.agentCID = req.CallID().Value()
	r.agent.track(c.agentCID, c)
	defer r.agent.untrack(c.agentCID)
	sctx, cancel := context.WithTimeout(ctx, r.cfg.SetupTimeout)
	defer cancel()
	t0 := time.Now()
	ds, err := r.agent.dua.WriteInvite(sctx, req)
	if err != nil {
		fail("send INVITE: " + err.Error())
		return
	}
	defer ds.Close()
	if err := ds.WaitAnswer(sctx, sipgo.AnswerOptions{}); err != nil {
		fail(statusText(err))
		return
	}
	setup := time.Since(t0)
	c.mu.Lock()
	c.agentDS = ds
	c.mu.Unlock()
	actx, acancel := context.WithTimeout(context.Background(), byeTimeout)
	err = ds.Ack(actx)
	acancel()
	if err != nil {
		fail("ACK: " + err.Error())
		r.bye(ds)
		return
	}
	rm, err := parseSDP(ds.InviteResponse.Body())
	if err != nil {
		fail("answer: " + err.Error())
		r.bye(ds)
		return
	}
	var custDst netip.AddrPort
	select {
	case custDst = <-c.custCh:
	case <-time.After(custWait):
		fail("the customer never received the INVITE")
		r.bye(ds)
		return
	}
	r.setup.Record(setup.Microseconds())
	r.established.Add(1)
	act := r.active.Add(1)
	for {
		m := r.maxActive.Load()
		if act <= m || r.maxActive.CompareAndSwap(m, act) {
			break
		}
	}
	defer r.active.Add(-1)

	answered := time.Now()
	as := r.m.start(c.slot, kindAgent, rm.addr, r.agentP, r.pt, c.n*37)
	cs := r.m.start(c.slot, kindCustomer, custDst, r.custP, r.pt, c.n*53)
	var ss *stream
	switch {
	case c.monitor && c.webrtc && r.web != nil:
		r.webReq.Add(1)
		ss = r.superviseWebRTC(ctx, c)
	case c.monitor && r.sup != nil:
		ss = r.supervise(ctx, c)
	}
	c.mu.Lock()
	web := c.web
	c.mu.Unlock()

	// Hold.
	var holdC <-chan time.Time
	if r.cfg.Hold > 0 {
		t := time.NewTimer(r.cfg.Hold)
		defer t.Stop()
		holdC = t.C
	}
	peerHung := false
	select {
	case <-holdC:
	case <-dctx.Done():
	case <-c.peerBye:
		peerHung = true
	}

	// Tear down: stop sending, let the last packets arrive, hang up.
	r.m.stop(as)
	r.m.stop(cs)
	switch {
	case web != nil:
		web.halt()
	case ss != nil:
		r.m.stop(ss)
	}
	time.Sleep(mediaGrace)
	if ss != nil {
		c.mu.Lock()
		sds := c.supDS
		c.mu.Unlock()
		switch {
		case web != nil:
			r.endWebRTC(web)
		case sds != nil:
			r.bye(sds)
		}
		r.m.finish(ss)
	}
	if peerHung {
		r.dropped.Add(1)
	} else {
		r.bye(ds)
	}
	ended := time.Now()
	r.m.finish(as)
	r.m.finish(cs)
	r.jitter.Record(int64(as.jit.value() * 1e6 / float64(r.agentP.Codec.ClockRate)))
	r.jitter.Record(int64(cs.jit.value() * 1e6 / float64(r.custP.Codec.ClockRate)))
	rec := callRecord{
		Line: c.line, Device: c.device, Answered: answered, Ended: ended,
		AgentStart: r.m.base.Add(time.Duration(as.firstNS.Load())), CustStart: r.m.base.Add(time.Duration(cs.firstNS.Load())),
		AgentFirst: as.firstFrame, AgentFrames: int(as.frames.Load()), AgentDropped: int(as.dropped.Load()),
		CustFirst: cs.firstFrame, CustFrames: int(cs.frames.Load()), CustDropped: int(cs.dropped.Load()),
	}
	r.mu.Lock()
	r.records = append(r.records, rec)
	r.mu.Unlock()
}

func (r *runner) bye(ds *sipgo.DialogClientSession) {
	ctx, cancel := context.WithTimeout(context.Background(), byeTimeout)
	defer cancel()
	if err := ds.Bye(ctx); err != nil {
		r.sipc.byeFail.Add(1)
	}
}

// supervise dials monitor-<line> for a call and, once answered, streams
// the supervisor's own audio to the bridge: none of it may reach a party.
func (r *runner) supervise(ctx context.Context, c *call) *stream {
	r.supReq.Add(1)
	body := offerSDP(r.m.addr(c.slot, kindSupervisor), r.pt, r.agentP.Codec.Name, "sendrecv", uint64(c.n))
	req := r.sup.newInvite(r.target, r.cfg.SupUser, "Load Supervisor", r.cfg.MonitorPrefix+c.line, body)
	cid := req.CallID().Value()
	r.sup.track(cid, c)
	sctx, cancel := context.WithTimeout(ctx, r.cfg.SetupTimeout)
	defer cancel()
	supFail := func(why string) *stream {
		r.supFail.Add(1)
		r.sup.untrack(cid)
		r.mu.Lock()
		if r.supWhy == "" {
			r.supWhy = fmt.Sprintf("INVITE %s%s: %s", r.cfg.MonitorPrefix, c.line, why)
		}
		r.mu.Unlock()
		return nil
	}
	ds, err := r.sup.dua.WriteInvite(sctx, req)
	if err != nil {
		return supFail(err.Error())
	}
	if err := ds.WaitAnswer(sctx, sipgo.AnswerOptions{Username: r.cfg.SupUser, Password: r.cfg.SupPassword}); err != nil {
		ds.Close()
		return supFail(statusText(err))
	}
	actx, acancel := context.WithTimeout(context.Background(), byeTimeout)
	_ = ds.Ack(actx)
	acancel()
	rm, err := parseSDP(ds.InviteResponse.Body())
	if err != nil {
		r.bye(ds)
		return supFail("answer: " + err.Error())
	}
	c.mu.Lock()
	c.supDS = ds
	c.mu.Unlock()
	r.supOK.Add(1)
	return r.m.start(c.slot, kindSupervisor, rm.addr, r.agentP, r.pt, c.n*71)
}

// onCustomerInvite answers the bridge's B-leg INVITE for a pending call.
func (r *runner) onCustomerInvite(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
	if to := req.To(); to != nil && to.Params.Has("tag") {
		// Re-INVITE: mirror the offer with the same address.
		c := r.cust.find(req)
		if c == nil {
			_ = tx.Respond(sipmsg.NewResponseFromRequest(req, 481, "Call/Transaction Does Not Exist", nil))
			return
		}
		res := sipmsg.NewSDPResponseFromRequest(req, offerSDP(r.m.addr(c.slot, kindCustomer), r.pt, r.custP.Codec.Name, "sendrecv", uint64(c.n)+1))
		_ = tx.Respond(res)
		return
	}
	r.mu.Lock()
	c := r.pending[req.Recipient.User]
	r.mu.Unlock()
	if c == nil {
		_ = tx.Respond(sipmsg.NewResponseFromRequest(req, 404, "Not Found", nil))
		return
	}
	ds, err := r.cust.dua.ReadInvite(req, tx)
	if err != nil {
		_ = tx.Respond(sipmsg.NewResponseFromRequest(req, 400, "Bad Request", nil))
		return
	}
	rm, err := parseSDP(req.Body())
	if err != nil {
		_ = ds.Respond(488, "Not Acceptable Here", nil)
		return
	}
	cid := req.CallID().Value()
	c.mu.Lock()
	c.custDS = ds
	c.custCID = cid
	c.mu.Unlock()
	r.cust.track(cid, c)
	if err := ds.RespondSDP(offerSDP(r.m.addr(c.slot, kindCustomer), r.pt, r.custP.Codec.Name, "sendrecv", uint64(c.n))); err != nil {
		r.cust.untrack(cid)
		return
	}
	select {
	case c.custCh <- rm.addr:
	default:
	}
}

func (r *runner) onCustomerAck(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
	c := r.cust.find(req)
	if c == nil {
		return
	}
	c.mu.Lock()
	ds := c.custDS
	c.mu.Unlock()
	if ds != nil {
		_ = ds.ReadAck(req, tx)
	}
}

func (r *runner) onCustomerBye(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
	c := r.cust.find(req)
	if c == nil {
		_ = tx.Respond(sipmsg.NewResponseFromRequest(req, 481, "Call/Transaction Does Not Exist", nil))
		return
	}
	c.mu.Lock()
	ds := c.custDS
	c.mu.Unlock()
	if ds == nil || ds.ReadBye(req, tx) != nil {
		_ = tx.Respond(sipmsg.NewResponseFromRequest(req, 200, "OK", nil))
	}
	r.cust.untrack(req.CallID().Value())
}

// onAgentBye: the bridge hung up on an agent (media timeout, shutdown).
func (r *runner) onAgentBye(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
	c := r.agent.find(req)
	if c == nil {
		_ = tx.Respond(sipmsg.NewResponseFromRequest(req, 481, "Call/Transaction Does Not Exist", nil))
		return
	}
	c.mu.Lock()
	ds := c.agentDS
	c.mu.Unlock()
	if ds == nil || ds.ReadBye(req, tx) != nil {
		_ = tx.Respond(sipmsg.NewResponseFromRequest(req, 200, "OK", nil))
	}
	c.byeOnce.Do(func() { close(c.peerBye) })
}

func (r *runner) onSupBye(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
	c := r.sup.find(req)
	if c != nil {
		c.mu.Lock()
		ds := c.supDS
		c.supDS = nil
		c.mu.Unlock()
		if ds != nil && ds.ReadBye(req, tx) == nil {
			return
		}
	}
	_ = tx.Respond(sipmsg.NewResponseFromRequest(req, 200, "OK", nil))
}

// sample records one Sample per second until ctx ends, and writes the
// progress line. It returns the series and the largest bridge RSS seen.
func (r *runner) sample(ctx context.Context, pid, recPID int, progress io.Writer) ([]Sample, uint64) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var series []Sample
	var maxRSS uint64
	prevLat := r.m.latency.Snapshot()
	prevTot := r.m.snapshotTotals()
	prevProc, procErr := ProcSample{}, errors.New("no pid")
	if pid > 0 {
		prevProc, procErr = readProc("/proc", pid)
	}
	prevRec, recErr := ProcSample{}, errors.New("no pid")
	if recPID > 0 {
		prevRec, recErr = readProc("/proc", recPID)
	}
	prevT := time.Now()
	var last string
	for {
		select {
		case <-ctx.Done():
			if progress != nil && last != "" {
				fmt.Fprintln(progress)
			}
			return series, maxRSS
		case <-t.C:
		}
		now := time.Now()
		dt := now.Sub(prevT).Seconds()
		prevT = now
		lat := r.m.latency.Snapshot()
		d := lat.Sub(prevLat)
		prevLat = lat
		tot := r.m.snapshotTotals()
		var sent, recv uint64
		for _, k := range []kind{kindAgent, kindCustomer} {
			sent += tot[k].Sent - prevTot[k].Sent
			recv += tot[k].Recv - prevTot[k].Recv
		}
		prevTot = tot
		s := Sample{
			T: round3(now.Sub(r.start).Seconds()), Active: r.active.Load(),
			Attempted: r.attempted.Load(), Established: r.established.Load(), Failed: r.failed.Load(),
			Sent: sent, Received: recv, P50MS: d.QuantileMS(0.5), P99MS: d.QuantileMS(0.99),
		}
		if sent > recv && sent > 0 {
			s.LossRatio = float64(sent-recv) / float64(sent)
		}
		if procErr == nil {
			if p, err := readProc("/proc", pid); err == nil {
				s.BridgeCPUPct = round3(100 * (p.CPUSeconds - prevProc.CPUSeconds) / dt)
				s.BridgeRSS = p.RSSBytes
				maxRSS = max(maxRSS, p.HWMBytes, p.RSSBytes)
				prevProc = p
			}
		}
		if recErr == nil {
			if p, err := readProc("/proc", recPID); err == nil {
				s.RecorderCPUPct = round3(100 * (p.CPUSeconds - prevRec.CPUSeconds) / dt)
				prevRec = p
			}
		}
		// Per-stream jitter, sampled once a second.
		for i := range r.m.st {
			st := &r.m.st[i]
			if st.kind != kindSupervisor && st.ssrc.Load() != 0 && st.recv.Load() > 1 {
				r.jitter.Record(int64(st.jit.value() * 1e6 / 8000))
			}
		}
		series = append(series, s)
		if progress != nil {
			line := fmt.Sprintf("\r%5.0fs  calls up %d/%d  placed %d  failed %d  loss %.4f%%  p99 %.3f ms",
				s.T, s.Active, r.cfg.Calls, s.Attempted, s.Failed, 100*s.LossRatio, s.P99MS)
			if procErr == nil {
				line += fmt.Sprintf("  bridge cpu %.0f%%", s.BridgeCPUPct)
			}
			if recErr == nil {
				line += fmt.Sprintf("  recorder cpu %.0f%%", s.RecorderCPUPct)
			}
			if pad := len(last) - len(line); pad > 0 {
				line += strings.Repeat(" ", pad)
			}
			fmt.Fprint(progress, line)
			last = line
		}
	}
}

// sortedReasons lists failure reasons, most frequent first (for notes).
func sortedReasons(m map[string]uint64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return m[out[i]] > m[out[j]] || (m[out[i]] == m[out[j]] && out[i] < out[j]) })
	return out
}
