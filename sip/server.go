package sip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bib-project/bib/bridge"
	"github.com/emiago/sipgo"
	sipmsg "github.com/emiago/sipgo/sip"
)

// Option configures a Server.
type Option func(*Server)

// WithClock injects the clock used by the registrar and call times.
func WithClock(now func() time.Time) Option { return func(s *Server) { s.now = now } }

// WithStackLogger sets the logger for sipgo's transport and transaction
// layers (default: the server's logger at component=sipgo).
func WithStackLogger(l *slog.Logger) Option { return func(s *Server) { s.stackLog = l } }

// Counters are server-wide signalling counters.
type Counters struct {
	Malformed     uint64 `json:"sip_malformed"`      // datagrams or requests that could not be parsed or lacked mandatory headers
	CallsRejected uint64 `json:"sip_calls_rejected"` // INVITEs answered with a final failure by bib itself
	Registrations uint64 `json:"sip_registrations"`  // live bindings
}

// Server is bib's SIP front end: registrar and back-to-back user agent.
type Server struct {
	// OnAnswered is called once per call, after the callee answered and
	// the caller was sent 200 and acknowledged it (the media is then fully
	// negotiated). Set before Serve.
	OnAnswered func(ci CallInfo, c *bridge.Call)
	// OnEnded is called once when a call that reached the callee ended.
	OnEnded func(ci CallInfo)
	// OnTransfer is called after a blind transfer (REFER) completed: the
	// party of t.Side was replaced (transfer.go). Set before Serve.
	OnTransfer func(ci CallInfo, t TransferInfo)
	// OnIdentity is called when a party's re-INVITE or UPDATE asserts a new
	// identity (P-Asserted-Identity), after the offer/answer. Set before Serve.
	OnIdentity func(ci CallInfo, id IdentityInfo)
	// Authorize is called for every new INVITE before routing; an error
	// rejects the call: a *StatusError with its code and Warning, any other
	// error as 403 with the error text as Warning.
	Authorize func(req *InviteInfo) error
	// OnRefused is called for every REGISTER or new INVITE bib refused
	// (authentication, rate and call limits, any final failure to a new
	// INVITE), e.g. to write an audit trail. It must not block. Set before
	// Serve.
	OnRefused func(Refusal)
	// OnMonitor is called for every authenticated monitoring INVITE (a
	// Request-URI user starting with sip.monitor_prefix, whisper- or
	// barge-; monitor.go). It decides and returns the supervisor leg's
	// media, or an error that refuses the INVITE like Authorize's. Nil:
	// monitoring INVITEs are refused. Set before Serve.
	OnMonitor func(ctx context.Context, req *MonitorRequest) (MonitorMedia, error)

	cfg      Config
	routes   []route
	eng      *bridge.Engine
	log      *slog.Logger
	stackLog *slog.Logger
	now      func() time.Time
	reg      *registrar

	ua  *sipgo.UserAgent
	srv *sipgo.Server
	cli *sipgo.Client

	udp   *net.UDPConn
	tcp   *net.TCPListener
	addrs map[string]netip.AddrPort // by "udp"/"tcp"
	duas  map[string]*sipgo.DialogUA

	mu       sync.Mutex
	calls    map[string]*call  // by bib call id
	byCallID map[string]legRef // by SIP Call-ID of either leg
	closing  bool
	seq      atomic.Uint64

	malformed atomic.Uint64
	rejected  atomic.Uint64
	forks     sync.Map   // SIP Call-ID -> *forkDialog (recording forks, fork.go)
	sec       *security  // digest auth, limits, TLS (admit.go, tls.go)
	mons      monitorSet // supervisors' monitoring dialogs (monitor.go)

	serveWG sync.WaitGroup
	callWG  sync.WaitGroup
	closed  sync.Once
}

type legRef struct {
	c    *call
	side bridge.Side
	leg  *sigLeg // set for a leg a transfer replaced (its BYE ends nothing)
}

// New builds a server. Nothing is bound until Listen.
func New(cfg Config, routes []Route, eng *bridge.Engine, log *slog.Logger, opts ...Option) (*Server, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := ValidateRoutes(routes); err != nil {
		return nil, err
	}
	if eng == nil {
		return nil, errors.New("sip: nil media engine")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg: cfg, eng: eng, log: log, now: time.Now,
		addrs: map[string]netip.AddrPort{}, duas: map[string]*sipgo.DialogUA{},
		calls: map[string]*call{}, byCallID: map[string]legRef{},
	}
	for _, r := range routes {
		cr, _ := compileRoute(r)
		s.routes = append(s.routes, cr)
	}
	for _, o := range opts {
		o(s)
	}
	if s.stackLog == nil {
		s.stackLog = log.With("component", "sipgo")
	}
	if err := s.initSecurity(); err != nil {
		return nil, err
	}
	s.reg = newRegistrar(s.now)
	ua, err := sipgo.NewUA(
		sipgo.WithUserAgent(cfg.UserAgent),
		sipgo.WithUserAgentHostname(cfg.Domain),
		sipgo.WithUserAgenTLSConfig(s.sec.tlsConf),
		sipgo.WithUserAgentTransportLayerOptions(
			sipmsg.WithTransportLayerLogger(s.stackLog),
			sipmsg.WithTransportLayerReadFilter(s.readFilter),
		),
		sipgo.WithUserAgentTransactionLayerOptions(sipmsg.WithTransactionLayerLogger(s.stackLog)),
	)
	if err != nil {
		return nil, fmt.Errorf("sip: user agent: %w", err)
	}
	s.ua = ua
	s.srv, err = sipgo.NewServer(ua, sipgo.WithServerLogger(s.stackLog))
	if err != nil {
		ua.Close()
		return nil, fmt.Errorf("sip: server: %w", err)
	}
	s.srv.OnInvite(s.onInvite)
	s.srv.OnAck(s.onAck)
	s.srv.OnBye(s.onBye)
	s.srv.OnCancel(s.onCancel)
	s.srv.OnUpdate(s.onUpdate)
	s.srv.OnRefer(s.onRefer)
	s.srv.OnRegister(s.onRegister)
	s.srv.OnOptions(s.onOptions)
	s.srv.OnNoRoute(s.onNoRoute)
	eng.OnMediaTimeout = s.onMediaTimeout
	return s, nil
}

// Listen binds the configured transports. After it returns, Addr reports
// the bound addresses (useful with port 0).
func (s *Server) Listen(ctx context.Context) error {
	ap := netip.MustParseAddrPort(s.cfg.Listen)
	// With port 0 the second transport takes the first one's port; that port
	// may be busy for the other protocol, so try a few times.
	tries := 1
	if ap.Port() == 0 {
		tries = 20
	}
	var err error
	for range tries {
		if err = s.bindTransports(ctx, ap); err == nil {
			break
		}
	}
	if err != nil {
		return err
	}
	if err := s.listenTLS(ctx); err != nil {
		s.closeListeners()
		return err
	}
	return s.startClient(ap)
}

// bindTransports binds every configured transport on ap's address and one
// port (with port 0, the port the first transport got).
func (s *Server) bindTransports(ctx context.Context, ap netip.AddrPort) error {
	clear(s.addrs)
	s.udp, s.tcp = nil, nil
	port := ap.Port()
	for _, t := range s.cfg.Transports {
		switch strings.ToLower(t) {
		case "udp":
			c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ap.Addr(), port)))
			if err != nil {
				s.closeListeners()
				return fmt.Errorf("sip: listen udp %s: %w", s.cfg.Listen, err)
			}
			s.udp = c
			s.addrs["udp"] = c.LocalAddr().(*net.UDPAddr).AddrPort()
		case "tcp":
			var lc net.ListenConfig
			l, err := lc.Listen(ctx, "tcp", netip.AddrPortFrom(ap.Addr(), port).String())
			if err != nil {
				s.closeListeners()
				return fmt.Errorf("sip: listen tcp %s: %w", s.cfg.Listen, err)
			}
			s.tcp = l.(*net.TCPListener)
			s.addrs["tcp"] = s.tcp.Addr().(*net.TCPAddr).AddrPort()
		}
		// With port 0, let the second transport share the first one's port
		// when it is free, so one address serves both.
		if port == 0 {
			for _, a := range s.addrs {
				port = a.Port()
			}
		}
	}
	return nil
}

// startClient creates the UAC side and the dialog UAs per transport.
func (s *Server) startClient(ap netip.AddrPort) error {
	host := ap.Addr().String()
	var err error
	s.cli, err = sipgo.NewClient(s.ua, sipgo.WithClientHostname(host), sipgo.WithClientLogger(s.stackLog))
	if err != nil {
		s.closeListeners()
		return fmt.Errorf("sip: client: %w", err)
	}
	for t, a := range s.addrs {
		contact := sipmsg.ContactHeader{Address: sipmsg.Uri{Scheme: "sip", User: "bib", Host: a.Addr().String(), Port: int(a.Port())}}
		if t != "udp" {
			contact.Address.UriParams = sipmsg.NewParams()
			contact.Address.UriParams.Add("transport", t)
		}
		s.duas[strings.ToUpper(t)] = &sipgo.DialogUA{Client: s.cli, ContactHDR: contact}
	}
	return nil
}

func (s *Server) closeListeners() {
	if s.udp != nil {
		s.udp.Close()
	}
	if s.tcp != nil {
		s.tcp.Close()
	}
	s.closeTLS()
}

// Addr returns the bound address of a transport ("udp" or "tcp"); the zero
// value if it is not served.
func (s *Server) Addr(transport string) netip.AddrPort {
	return s.addrs[strings.ToLower(transport)]
}

// Serve handles SIP until ctx ends, then closes the listeners. Calls in
// progress are not ended: call Shutdown first for a graceful stop.
func (s *Server) Serve(ctx context.Context) error {
	if s.cli == nil {
		return errors.New("sip: Serve before Listen")
	}
	errc := make(chan error, 3)
	if s.udp != nil {
		s.serveWG.Add(1)
		go func() { defer s.serveWG.Done(); errc <- s.srv.ServeUDP(s.udp) }()
	}
	if s.tcp != nil {
		s.serveWG.Add(1)
		go func() { defer s.serveWG.Done(); errc <- s.srv.ServeTCP(s.tcp) }()
	}
	if s.sec.tlsLn != nil {
		s.serveWG.Add(1)
		go func() { defer s.serveWG.Done(); errc <- s.serveTLS() }()
	}
	s.log.Info("sip listening", "udp", s.addrs["udp"].String(), "tcp", s.addrs["tcp"].String())
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		if err != nil {
			err = fmt.Errorf("sip: serve: %w", err)
		}
	}
	s.closeListeners()
	s.serveWG.Wait()
	return err
}

// Shutdown stops accepting calls, sends BYE on both legs of every call
// (CANCEL and 503 for calls still ringing) and waits until all calls have
// ended or ctx is done.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	calls := make([]*call, 0, len(s.calls))
	for _, c := range s.calls {
		calls = append(calls, c)
	}
	s.mu.Unlock()
	for _, c := range calls {
		go c.hangup(-1, "shutdown", `SIP;cause=503;text="bib shutting down"`)
	}
	done := make(chan struct{})
	go func() { s.callWG.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("sip: shutdown: %d calls not drained: %w", len(s.Calls()), ctx.Err())
	}
}

// Close frees everything now: listeners, the SIP stack and the media of any
// call left. It does not signal the calls' parties (use Shutdown).
func (s *Server) Close() error {
	s.closed.Do(func() {
		s.mu.Lock()
		s.closing = true
		calls := make([]*call, 0, len(s.calls))
		for _, c := range s.calls {
			calls = append(calls, c)
		}
		s.mu.Unlock()
		for _, c := range calls {
			c.abort("server closed")
		}
		s.closeMonitors()
		s.closeListeners()
		s.serveWG.Wait()
		s.ua.Close()
	})
	return nil
}

// Calls lists the live calls, oldest first.
func (s *Server) Calls() []CallInfo {
	s.mu.Lock()
	calls := make([]*call, 0, len(s.calls))
	for _, c := range s.calls {
		calls = append(calls, c)
	}
	s.mu.Unlock()
	out := make([]CallInfo, 0, len(calls))
	for _, c := range calls {
		out = append(out, c.snapshot())
	}
	slices.SortFunc(out, func(a, b CallInfo) int { return a.Start.Compare(b.Start) })
	return out
}

// Call returns one live call.
func (s *Server) Call(id string) (CallInfo, bool) {
	s.mu.Lock()
	c, ok := s.calls[id]
	s.mu.Unlock()
	if !ok {
		return CallInfo{}, false
	}
	return c.snapshot(), true
}

// Hangup ends a call: BYE on both legs (or CANCEL/480 while ringing) with
// a Reason header carrying reason, and waits for it to end.
func (s *Server) Hangup(ctx context.Context, id, reason string) error {
	s.mu.Lock()
	c, ok := s.calls[id]
	s.mu.Unlock()
	if ok {
		// A call that has finished stays listed until it is unregistered.
		c.mu.Lock()
		ok = !c.finished
		c.mu.Unlock()
	}
	if !ok {
		return fmt.Errorf("hangup %s: %w", id, ErrCallNotFound)
	}
	if reason == "" {
		reason = "hangup"
	}
	go c.hangup(-1, reason, `SIP;cause=200;text="`+quoteSafe(reason)+`"`)
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("hangup %s: %w", id, ctx.Err())
	}
}

// Registrations lists the live registrar bindings.
func (s *Server) Registrations() []Registration { return s.reg.all() }

// Counters returns signalling counters.
func (s *Server) Counters() Counters {
	return Counters{
		Malformed:     s.malformed.Load(),
		CallsRejected: s.rejected.Load(),
		Registrations: uint64(len(s.reg.all())),
	}
}

func quoteSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '"' || r == '\\' || r < 0x20 {
			return '\''
		}
		return r
	}, s)
}

// register adds a call; false if the server is closing.
func (s *Server) register(c *call) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.calls[c.id] = c
	s.callWG.Add(1)
	return true
}

func (s *Server) bindCallID(callID string, c *call, side bridge.Side) {
	s.mu.Lock()
	s.byCallID[callID] = legRef{c: c, side: side}
	s.mu.Unlock()
}

func (s *Server) unregister(c *call) {
	s.releaseCall(c.legs[bridge.SideA].callID)
	s.mu.Lock()
	delete(s.calls, c.id)
	c.mu.Lock()
	legs := append(c.legs[:], c.old...)
	c.mu.Unlock()
	for _, l := range legs {
		if l != nil && s.byCallID[l.callID].c == c {
			delete(s.byCallID, l.callID)
		}
	}
	s.mu.Unlock()
	s.callWG.Done()
}

func (s *Server) lookup(req *sipmsg.Request) (legRef, bool) {
	h := req.CallID()
	if h == nil {
		return legRef{}, false
	}
	s.mu.Lock()
	r, ok := s.byCallID[h.Value()]
	s.mu.Unlock()
	return r, ok
}

// newID returns a call id unique within this process.
func (s *Server) newID() string {
	return strconv.FormatInt(s.now().UnixMilli(), 36) + "-" + strconv.FormatUint(s.seq.Add(1), 36) + "-" + sipmsg.GenerateTagN(6)
}

// respond answers a request with code and an optional Warning.
func (s *Server) respond(tx sipmsg.ServerTransaction, req *sipmsg.Request, code int, reason, warning string, hdrs ...sipmsg.Header) {
	if reason == "" {
		reason = reasonPhrase(code)
	}
	res := sipmsg.NewResponseFromRequest(req, code, reason, nil)
	if w := warningValue(s.cfg.UserAgent, 399, warning); w != "" {
		res.AppendHeader(sipmsg.NewHeader("Warning", w))
	}
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	res.AppendHeader(sipmsg.NewHeader("Server", s.cfg.UserAgent))
	if err := tx.Respond(res); err != nil {
		s.log.Debug("respond failed", "code", code, "method", req.Method.String(), "err", err)
	}
}

func (s *Server) onOptions(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
	s.respond(tx, req, 200, "OK", "",
		sipmsg.NewHeader("Allow", allowed),
		sipmsg.NewHeader("Accept", "application/sdp"))
}

const allowed = "INVITE, ACK, BYE, CANCEL, UPDATE, REFER, NOTIFY, OPTIONS, REGISTER"

func (s *Server) onNoRoute(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
	s.respond(tx, req, 405, "Method Not Allowed", "method "+req.Method.String()+" not supported", sipmsg.NewHeader("Allow", allowed))
}

func (s *Server) onCancel(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
	// A CANCEL that matched a pending INVITE was answered by the transaction
	// layer (200, then 487 for the INVITE); this one matched nothing.
	s.respond(tx, req, 481, "", "no pending INVITE matches this CANCEL")
}

func (s *Server) onRegister(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
	if !s.admitRegister(req, tx) {
		return // refused or challenged (admit.go)
	}
	minExp := int(time.Duration(s.cfg.MinExpires) / time.Second)
	defExp := int(time.Duration(s.cfg.DefaultExpires) / time.Second)
	r := s.reg.apply(req, minExp, defExp)
	var hdrs []sipmsg.Header
	if r.code == 423 {
		hdrs = append(hdrs, sipmsg.NewHeader("Min-Expires", strconv.Itoa(r.minExpires)))
	}
	now := s.now()
	for _, b := range r.bindings {
		exp := int(b.Expires.Sub(now).Round(time.Second) / time.Second)
		c := &sipmsg.ContactHeader{Address: *b.uri.Clone(), Params: sipmsg.NewParams()}
		c.Params.Add("expires", strconv.Itoa(exp))
		hdrs = append(hdrs, c)
	}
	if r.code == 200 {
		hdrs = append(hdrs, sipmsg.NewHeader("Date", now.UTC().Format(time.RFC1123)))
		to := ""
		if h := req.To(); h != nil {
			to = h.Address.User
		}
		s.log.Debug("register", "user", to, "bindings", len(r.bindings), "source", req.Source())
	}
	s.respond(tx, req, r.code, "", r.warning, hdrs...)
}

// route finds where a call for user goes: the most recent registered
// contact, then the static routes in order.
func (s *Server) route(user string) (sipmsg.Uri, string, error) {
	if reg, ok := s.reg.lookup(user); ok {
		return *reg.uri.Clone(), "registrar", nil
	}
	for i, r := range s.routes {
		if r.matches(user) {
			u, err := r.target(user)
			if err != nil {
				return sipmsg.Uri{}, "", fmt.Errorf("routes[%d] target for %q: %w", i, user, err)
			}
			return u, "routes[" + strconv.Itoa(i) + "]", nil
		}
	}
	return sipmsg.Uri{}, "", fmt.Errorf("%w to %s", ErrNoRoute, user)
}

func (s *Server) onMediaTimeout(mc *bridge.Call) {
	s.mu.Lock()
	c, ok := s.calls[mc.ID()]
	s.mu.Unlock()
	if !ok {
		return
	}
	c.mu.Lock()
	answered := c.setupDone
	c.mu.Unlock()
	if !answered {
		return // ringing calls are bounded by ring_timeout
	}
	c.log.Warn("media timeout: no RTP in either direction, ending call")
	go c.hangup(-1, "media timeout", `SIP;cause=408;text="media timeout"`)
}
