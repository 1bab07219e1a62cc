package main

import (
	"context"
	"crypto/rsa"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bib-project/bib/bridge"
	"github.com/bib-project/bib/recorder"
	"github.com/bib-project/bib/sip"
	"github.com/bib-project/bib/storage"
	sipmsg "github.com/emiago/sipgo/sip"
)

// drainTimeout bounds the SIGTERM drain.
const drainTimeout = 10 * time.Second

func serveMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "YAML config file (default: embedded defaults; see `bib config`)")
	sipAddr := fs.String("sip", "", "SIP listen address IP:PORT, UDP and TCP (overrides sip.listen)")
	httpAddr := fs.String("http", "", "HTTP listen address IP:PORT (overrides http.listen)")
	ports := fs.String("rtp-ports", "", "RTP port range MIN-MAX (overrides media.rtp_ports)")
	data := fs.String("data", "", "data directory (overrides data)")
	level := fs.String("log-level", "", "debug|info|warn|error (overrides log_level)")
	demo := fs.Bool("demo", false, "run the demo: simulated Jabber agents call a simulated customer through bib (overrides demo.enabled)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "bib serve:", err)
		return 2
	}
	override := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	override(&cfg.SIP.Listen, *sipAddr)
	override(&cfg.HTTP.Listen, *httpAddr)
	override(&cfg.Media.RTPPorts, *ports)
	override(&cfg.Data, *data)
	override(&cfg.LogLevel, *level)
	if *demo {
		cfg.Demo.Enabled = true
	}
	var dm *demoSetup
	if cfg.Demo.Enabled {
		if dm, err = applyDemo(&cfg); err != nil {
			fmt.Fprintln(stderr, "bib serve:", err)
			return 2
		}
		fmt.Fprint(stdout, demoBanner(dm))
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(stderr, "bib serve: config:", strings.ReplaceAll(err.Error(), "\n", "; "))
		return 2
	}
	lvl, _ := parseLevel(cfg.LogLevel)
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	// sipgo logs a few transport warnings through a package-level logger.
	sipmsg.SetDefaultLogger(log.With("component", "sipgo"))
	srv, err := newServer(cfg, log)
	if err != nil {
		fmt.Fprintln(stderr, "bib serve:", err)
		return 2
	}
	srv.demo = dm
	if err := srv.run(ctx, stdout); err != nil {
		log.Error("bib serve stopped", "err", err)
		return 1
	}
	return 0
}

// server is a running `bib serve`: the pieces and the wiring between them.
type server struct {
	cfg    Config
	log    *slog.Logger
	policy *bridge.Policy
	engine *bridge.Engine
	sip    *sip.Server
	http   *http.Server
	httpLn net.Listener

	demo        *demoSetup // non-nil: run the demo calls while serving
	store       storage.Store
	privKey     *rsa.PrivateKey // optional: serve encrypted recordings decrypted
	recMetrics  recorder.Metrics
	forkMetrics sip.ForkMetrics
	auth        *auth     // supervisors' HTTP sign-in (auth.go)
	mon         *monitors // monitored calls and listeners (monitor.go)

	auditFile atomic.Pointer[auditLog] // DATA/audit.jsonl (audit.go)

	mu    sync.Mutex
	calls map[string]*callState // answered calls by id
}

func newServer(cfg Config, log *slog.Logger) (*server, error) {
	pol, err := bridge.NewPolicy(cfg.Cluster, cfg.Devices, cfg.Supervisors)
	if err != nil {
		return nil, err
	}
	eng, err := bridge.NewEngine(cfg.Media, log)
	if err != nil {
		return nil, err
	}
	s := &server{cfg: cfg, log: log, policy: pol, engine: eng, calls: map[string]*callState{}, mon: newMonitors(eng, log)}
	s.mon.audit = func(r AuditRecord) { s.audit().Record(context.Background(), r) }
	if s.auth, err = newAuth(cfg.Supervisors, pol, time.Duration(cfg.HTTP.SessionTimeout), log, nil); err != nil {
		return nil, err
	}
	ss, err := sip.New(cfg.SIP, cfg.Routes, eng, log, sip.WithPrincipals(cfg.Devices, cfg.Supervisors))
	if err != nil {
		return nil, err
	}
	ss.OnRefused = s.onSIPRefused
	ss.OnAnswered = s.onAnswered
	ss.OnEnded = s.onEnded
	ss.OnTransfer = s.onTransfer
	ss.OnIdentity = s.onIdentity
	ss.OnMonitor = s.onSIPMonitor // supervisors dialling monitor-<line> (monitor_sip.go)
	s.sip = ss
	return s, nil
}

// listen binds every socket, so a caller (or a test) knows the addresses
// before serving starts.
func (s *server) listen(ctx context.Context) error {
	if err := os.MkdirAll(s.cfg.Data, 0o750); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if err := s.openAudit(); err != nil {
		return err
	}
	opts := []storage.DirOption{storage.WithLogger(s.log)}
	rcpt, priv, err := s.cfg.Storage.Encryption.Load()
	if err != nil {
		return err
	}
	if rcpt != nil {
		opts = append(opts, storage.WithFS(&storage.SealedFS{Base: storage.OSFS{}, To: rcpt}))
		s.log.Info("recordings are encrypted at rest", "key_sha256", rcpt.KeySHA256, "subject", rcpt.Subject)
	}
	s.privKey = priv
	st, err := storage.OpenDir(s.cfg.Data, opts...)
	if err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	s.store = st
	if fixed, err := recorder.Repair(ctx, st); err != nil {
		s.log.Error("repairing unfinished recordings", "err", err)
	} else {
		for _, m := range fixed {
			s.log.Warn("recording left unfinished by a crash was repaired", "recording_id", m.ID, "status", m.Status, "call_id", m.CallID)
		}
	}
	if err := s.sip.Listen(ctx); err != nil {
		st.Close()
		return fmt.Errorf("sip listen: %w", err)
	}
	ln, err := net.Listen("tcp", s.cfg.HTTP.Listen)
	if err != nil {
		s.sip.Close()
		st.Close()
		return fmt.Errorf("http listen: %w", err)
	}
	s.httpLn = ln
	s.http = &http.Server{Handler: s.auditHTTP(s.auth.middleware(s, s.routes())), ReadHeaderTimeout: 10 * time.Second}
	return nil
}

// run binds, serves until ctx ends, then stops (draining calls first when
// the context was ended by SIGTERM).
func (s *server) run(ctx context.Context, stdout io.Writer) error {
	for _, w := range s.policy.Warnings() {
		s.log.Warn("policy", "detail", w)
	}
	if err := s.listen(ctx); err != nil {
		return err
	}
	return s.serve(ctx, stdout)
}

// serve runs the bound server until ctx ends.
func (s *server) serve(ctx context.Context, stdout io.Writer) error {
	serveCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	wg.Add(3)
	go func() { defer wg.Done(); s.engine.Run(serveCtx) }()
	sipDone := make(chan struct{})
	go func() {
		defer wg.Done()
		defer close(sipDone)
		if err := s.sip.Serve(serveCtx); err != nil && serveCtx.Err() == nil {
			errc <- fmt.Errorf("sip: %w", err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := s.http.Serve(s.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("http: %w", err)
		}
	}()
	fmt.Fprintf(stdout, "bib serve ready: sip %s (udp+tcp), http http://%s, rtp %s %s, data %s\n",
		s.sip.Addr("udp"), s.httpLn.Addr(), s.cfg.Media.IP, s.cfg.Media.RTPPorts, s.cfg.Data)
	s.log.Info("bib serve ready", "sip", s.sip.Addr("udp").String(), "http", s.httpLn.Addr().String())
	demoCtx, demoCancel := context.WithCancel(serveCtx)
	demoDone := make(chan struct{})
	if s.demo != nil {
		go func() { defer close(demoDone); s.runDemo(demoCtx, s.demo, stdout) }()
	} else {
		close(demoDone)
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	// The simulated calls hang up first, while bib can still answer them.
	demoCancel()
	select {
	case <-demoDone:
	case <-time.After(drainTimeout):
		s.log.Warn("demo calls did not stop in time")
	}
	if stopReason(ctx) == stopDrain {
		s.log.Info("SIGTERM: draining calls", "calls", len(s.engine.Calls()))
		dctx, dcancel := context.WithTimeout(context.Background(), drainTimeout)
		if err := s.sip.Shutdown(dctx); err != nil {
			s.log.Warn("drain incomplete", "err", err)
		}
		dcancel()
	}
	hctx, hcancel := context.WithTimeout(context.Background(), 2*time.Second)
	s.http.Shutdown(hctx)
	hcancel()
	cancel()
	// Serve returns once its context ends; Close after it, not during it.
	select {
	case <-sipDone:
	case <-time.After(5 * time.Second):
		s.log.Warn("sip server did not stop in time")
	}
	s.sip.Close()
	s.engine.Close()
	s.mon.close()
	wg.Wait()
	s.mu.Lock()
	left := make([]*callState, 0, len(s.calls))
	for _, cs := range s.calls {
		left = append(left, cs)
	}
	s.calls = map[string]*callState{}
	s.mu.Unlock()
	for _, cs := range left {
		s.endRecordings(cs)
	}
	if err := s.store.Close(); err != nil {
		s.log.Error("closing archive", "err", err)
	}
	s.closeAudit()
	s.log.Info("bib serve stopped")
	return runErr
}

// onAnswered runs when a call is answered: it resolves the near ends,
// records the gate's verdicts in the call record and starts the automatic
// recordings the gate allows.
func (s *server) onAnswered(ci sip.CallInfo, c *bridge.Call) {
	cs := &callState{info: ci, media: c, roles: s.policy.NearEnd(ci.Caller, ci.Callee)}
	cs.refci[0], cs.refci[1] = refciSeq.Add(1), refciSeq.Add(1)
	s.mu.Lock()
	s.calls[ci.ID] = cs
	s.mu.Unlock()
	s.autoRecord(cs)
}

func (s *server) onEnded(ci sip.CallInfo) {
	s.mu.Lock()
	cs := s.calls[ci.ID]
	delete(s.calls, ci.ID)
	s.mu.Unlock()
	if cs != nil {
		s.endRecordings(cs)
	}
}

func (s *server) callState(id string) (*callState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cs, ok := s.calls[id]
	return cs, ok
}
