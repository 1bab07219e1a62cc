package bridge

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Config is the media plane's configuration (YAML key `media`).
type Config struct {
	// IP is the address media sockets bind to and that goes into SDP c= lines. Default 127.0.0.1.
	IP string `yaml:"ip"`
	// RTPPorts is the UDP port range for RTP/RTCP pairs, "MIN-MAX" (inclusive). Default 20000-29999.
	RTPPorts string `yaml:"rtp_ports"`
	// MediaTimeout tears a call down when no RTP arrived in either direction for this long (duration, e.g. 60s; 0 disables). Default 60s.
	MediaTimeout Duration `yaml:"media_timeout"`
	// IO selects the RTP I/O engine: "goroutine" (a read goroutine per socket
	// on Go's netpoller) or "epoll" (Linux only: io_workers loops, each
	// polling its calls' sockets with one epoll set and relaying with
	// recvmmsg/sendmmsg batches). Default epoll on Linux (about a third less
	// relay CPU per packet, see BenchmarkRelayProc), goroutine elsewhere.
	IO string `yaml:"io"`
	// IOWorkers is the number of epoll loops when io is epoll (1-1024). Default GOMAXPROCS.
	IOWorkers int `yaml:"io_workers"`
}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	if c.IP == "" {
		c.IP = "127.0.0.1"
	}
	if c.RTPPorts == "" {
		c.RTPPorts = "20000-29999"
	}
	if c.MediaTimeout == 0 {
		c.MediaTimeout = Duration(60 * time.Second)
	}
	if c.IO == "" {
		c.IO = defaultIO
	}
	if c.IOWorkers == 0 {
		c.IOWorkers = runtime.GOMAXPROCS(0)
	}
}

// Validate checks every field and names the bad one.
func (c *Config) Validate() error {
	ip, err := netip.ParseAddr(c.IP)
	if err != nil || ip.IsUnspecified() {
		return fmt.Errorf("media.ip: %q is not a usable IP address", c.IP)
	}
	if _, err := ParsePortRange(c.RTPPorts); err != nil {
		return fmt.Errorf("media.rtp_ports: %w", err)
	}
	if c.MediaTimeout < 0 {
		return fmt.Errorf("media.media_timeout: %s is negative", time.Duration(c.MediaTimeout))
	}
	switch c.IO {
	case "goroutine":
	case "epoll":
		if !ioSupported {
			return fmt.Errorf("media.io: %q is not supported on %s (want goroutine)", c.IO, runtime.GOOS)
		}
	default:
		return fmt.Errorf("media.io: %q is not an I/O engine (want goroutine or epoll)", c.IO)
	}
	if c.IOWorkers < 1 || c.IOWorkers > 1024 {
		return fmt.Errorf("media.io_workers: %d is out of range 1-1024", c.IOWorkers)
	}
	return nil
}

// Duration is a time.Duration that YAML writes as "60s".
type Duration time.Duration

// UnmarshalText parses Go duration syntax.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q (want e.g. 60s, 500ms)", b)
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes Go duration syntax.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Totals are engine-wide counters, including calls that have ended.
type Totals struct {
	CallsStarted  atomic.Uint64
	CallsEnded    atomic.Uint64
	MediaTimeouts atomic.Uint64
	PortFailures  atomic.Uint64
	// Packet counters of ended calls; live calls are added at read time.
	packetsIn, bytesIn, packetsOut, rtcp, droppedSource, malformed, oversize, noDest, sendErr atomic.Uint64
	srtpAuth, srtpReplay                                                                      atomic.Uint64
}

// Engine owns the RTP port pool and the live calls.
type Engine struct {
	cfg  Config
	log  *slog.Logger
	ip   netip.Addr
	pool *portPool
	loop *ioLoop   // media.io: epoll; nil for goroutine
	keep io.Closer // holds the kernel's receive timestamping on (keepStamps)

	mu    sync.Mutex
	calls map[string]*Call

	// OnMediaTimeout is called (from the janitor goroutine) for a call with no
	// RTP in either direction for MediaTimeout; the signalling layer then ends
	// it. Set before Run.
	OnMediaTimeout func(c *Call)

	T Totals
}

// NewEngine validates cfg and prepares the port pool; no socket is bound
// until a call needs one.
func NewEngine(cfg Config, log *slog.Logger) (*Engine, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ip := netip.MustParseAddr(cfg.IP)
	pr, _ := ParsePortRange(cfg.RTPPorts)
	e := &Engine{cfg: cfg, log: log, ip: ip, pool: newPortPool(ip, pr), calls: map[string]*Call{}}
	if cfg.IO == "epoll" {
		e.loop = newIOLoop(cfg.IOWorkers, log)
	}
	e.keep = keepStamps(ip)
	return e, nil
}

// IP returns the media address.
func (e *Engine) IP() netip.Addr { return e.ip }

// NewCall binds two legs (two RTP/RTCP port pairs) and starts their relay
// loops. Nothing is relayed until SetRemote tells each leg where its party is.
func (e *Engine) NewCall(id string, log *slog.Logger) (*Call, error) {
	e.mu.Lock()
	if _, dup := e.calls[id]; dup {
		e.mu.Unlock()
		return nil, fmt.Errorf("new call %s: %w", id, ErrDuplicateCall)
	}
	e.mu.Unlock()
	if log == nil {
		log = e.log
	}
	now := time.Now()
	c := &Call{id: id, engine: e, log: log.With("call_id", id), start: now, base: now, idleSince: now}
	empty := []Tap{}
	c.taps.Store(&empty)
	for s := range c.legs {
		rtpc, rtcpc, pair, err := e.pool.allocate()
		if err != nil {
			e.T.PortFailures.Add(1)
			for _, l := range c.legs[:s] {
				l.close()
				e.pool.release(l.pair)
			}
			return nil, fmt.Errorf("new call %s: %w", id, err)
		}
		l := &Leg{call: c, side: Side(s), rtp: rtpc, rtcp: rtcpc, pair: pair}
		l.local = rtpc.LocalAddr().(interface{ AddrPort() netip.AddrPort }).AddrPort()
		l.localRTCP = rtcpc.LocalAddr().(interface{ AddrPort() netip.AddrPort }).AddrPort()
		c.legs[s] = l
	}
	e.mu.Lock()
	if _, dup := e.calls[id]; dup {
		e.mu.Unlock()
		for _, l := range c.legs {
			l.close()
			e.pool.release(l.pair)
		}
		return nil, fmt.Errorf("new call %s: %w", id, ErrDuplicateCall)
	}
	e.calls[id] = c
	e.mu.Unlock()
	e.T.CallsStarted.Add(1)
	if e.loop != nil {
		if err := e.loop.attach(c); err != nil {
			c.Close("media io setup failed")
			return nil, fmt.Errorf("new call %s: %w", id, err)
		}
		return c, nil
	}
	for _, l := range c.legs {
		c.wg.Add(2)
		go func() { defer c.wg.Done(); l.readRTP() }()
		go func() { defer c.wg.Done(); l.readRTCP() }()
	}
	return c, nil
}

func (e *Engine) remove(c *Call) {
	e.mu.Lock()
	if e.calls[c.id] == c {
		delete(e.calls, c.id)
	}
	e.mu.Unlock()
	e.T.CallsEnded.Add(1)
	for _, l := range c.legs {
		e.T.packetsIn.Add(l.C.PacketsIn.Load())
		e.T.bytesIn.Add(l.C.BytesIn.Load())
		e.T.packetsOut.Add(l.C.PacketsOut.Load())
		e.T.rtcp.Add(l.C.RTCPIn.Load())
		e.T.droppedSource.Add(l.C.DroppedSource.Load())
		e.T.malformed.Add(l.C.Malformed.Load())
		e.T.oversize.Add(l.C.Oversize.Load())
		e.T.noDest.Add(l.C.NoDestination.Load())
		e.T.sendErr.Add(l.C.SendErrors.Load())
		e.T.srtpAuth.Add(l.C.SRTPAuthFailed.Load())
		e.T.srtpReplay.Add(l.C.SRTPReplayed.Load())
	}
}

// Call returns a live call by id.
func (e *Engine) Call(id string) (*Call, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c, ok := e.calls[id]
	return c, ok
}

// Calls returns the live calls, oldest first.
func (e *Engine) Calls() []*Call {
	e.mu.Lock()
	out := make([]*Call, 0, len(e.calls))
	for _, c := range e.calls {
		out = append(out, c)
	}
	e.mu.Unlock()
	slices.SortFunc(out, func(a, b *Call) int { return a.start.Compare(b.start) })
	return out
}

// Counters is a snapshot of engine-wide counters, live calls included.
type Counters struct {
	CallsActive, CallsStarted, CallsEnded, MediaTimeouts, PortFailures uint64
	PortsInUse, PortsCapacity                                          int
	PacketsIn, BytesIn, PacketsOut, RTCP                               uint64
	DroppedSource, Malformed, Oversize, NoDestination, SendErrors      uint64
	SRTPAuthFailed, SRTPReplayed                                       uint64
}

// Counters sums the totals of ended calls and the live calls' counters.
func (e *Engine) Counters() Counters {
	var k Counters
	calls := e.Calls()
	k.CallsActive = uint64(len(calls))
	k.CallsStarted = e.T.CallsStarted.Load()
	k.CallsEnded = e.T.CallsEnded.Load()
	k.MediaTimeouts = e.T.MediaTimeouts.Load()
	k.PortFailures = e.T.PortFailures.Load()
	k.PortsInUse, k.PortsCapacity = e.pool.stats()
	k.PacketsIn = e.T.packetsIn.Load()
	k.BytesIn = e.T.bytesIn.Load()
	k.PacketsOut = e.T.packetsOut.Load()
	k.RTCP = e.T.rtcp.Load()
	k.DroppedSource = e.T.droppedSource.Load()
	k.Malformed = e.T.malformed.Load()
	k.Oversize = e.T.oversize.Load()
	k.NoDestination = e.T.noDest.Load()
	k.SendErrors = e.T.sendErr.Load()
	k.SRTPAuthFailed = e.T.srtpAuth.Load()
	k.SRTPReplayed = e.T.srtpReplay.Load()
	for _, c := range calls {
		for _, l := range c.legs {
			k.PacketsIn += l.C.PacketsIn.Load()
			k.BytesIn += l.C.BytesIn.Load()
			k.PacketsOut += l.C.PacketsOut.Load()
			k.RTCP += l.C.RTCPIn.Load()
			k.DroppedSource += l.C.DroppedSource.Load()
			k.Malformed += l.C.Malformed.Load()
			k.Oversize += l.C.Oversize.Load()
			k.NoDestination += l.C.NoDestination.Load()
			k.SendErrors += l.C.SendErrors.Load()
			k.SRTPAuthFailed += l.C.SRTPAuthFailed.Load()
			k.SRTPReplayed += l.C.SRTPReplayed.Load()
		}
	}
	return k
}

// Run watches for media timeouts until ctx ends. The check costs nothing on
// the hot path: it compares packet counters between ticks.
func (e *Engine) Run(ctx context.Context) {
	if e.cfg.MediaTimeout <= 0 {
		<-ctx.Done()
		return
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			e.checkIdle(now)
		}
	}
}

func (e *Engine) checkIdle(now time.Time) {
	timeout := time.Duration(e.cfg.MediaTimeout)
	for _, c := range e.Calls() {
		n := c.packets()
		if n != c.lastCount {
			c.lastCount, c.idleSince = n, now
			continue
		}
		if now.Sub(c.idleSince) >= timeout && !c.closing.Load() {
			c.idleSince = now // report once per timeout period
			e.T.MediaTimeouts.Add(1)
			e.log.Warn("media timeout: no RTP in either direction", "call_id", c.id, "timeout", timeout)
			if e.OnMediaTimeout != nil {
				e.OnMediaTimeout(c)
			}
		}
	}
}

// Close closes every live call.
func (e *Engine) Close() error {
	for _, c := range e.Calls() {
		c.Close("shutdown")
	}
	if e.loop != nil {
		e.loop.stop()
	}
	if e.keep != nil {
		e.keep.Close()
	}
	return nil
}
