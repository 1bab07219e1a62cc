package load

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Config is everything `bib load` can be told (one field per flag).
type Config struct {
	// Target is the bridge's SIP address, IP:PORT (UDP). Ignored with Spawn.
	Target string
	// Spawn starts a local `bib serve` with a generated configuration.
	Spawn bool
	// BibBinary is the bib executable Spawn runs. Default: this executable.
	BibBinary string
	// BridgePID is a local bridge process to sample through procfs (the
	// spawned one's pid with Spawn). 0: no process figures.
	BridgePID int
	// BridgeHTTP is the bridge's HTTP base URL (http://IP:PORT) for
	// /metrics, /api/v1/recordings and, with WebRTC, /api/v1/calls and
	// the WHEP listen endpoint. Set automatically with Spawn.
	BridgeHTTP string
	// BridgeLogLevel is the spawned bridge's log level. Default warn.
	BridgeLogLevel string
	// KeepDir keeps the spawned bridge's directory (config, logs, data)
	// instead of deleting it, and reports where it is.
	KeepDir bool

	// Calls is the number of concurrent calls (the ceiling; each call slot
	// is refilled when its call ends while Duration lasts). Default 10.
	Calls int
	// Rate is the call attempt rate, calls per second. Default 10.
	Rate float64
	// Duration is how long the test places and holds calls, from the first
	// INVITE. Default 10s.
	Duration time.Duration
	// Hold is how long each call lasts once answered; 0 holds every call
	// until Duration ends.
	Hold time.Duration
	// SetupTimeout bounds each INVITE transaction. Default 10s.
	SetupTimeout time.Duration
	// Supervisors is the fraction of calls (0..1) that a supervisor
	// monitors (listen-only, while transmitting its own audio).
	Supervisors float64
	// WebRTC is the fraction (0..1) of those supervisors that join over
	// WebRTC (bib serve's WHEP endpoint, POST /api/v1/calls/{id}/listen)
	// instead of SIP. Needs BridgeHTTP (or Spawn) and a bridge that is bib.
	WebRTC float64
	// Record asks for every call to be recorded and checks the recordings.
	Record bool
	// Fork asks for recording forks to a `bib recorder` and checks the
	// recorder's recordings. Spawn starts the recorder and points every
	// agent device at it; otherwise RecorderHTTP names its API.
	Fork bool
	// ForkProtocol is cucm (call-manager style, delayed offer) or siprec.
	// Default cucm. Used with Spawn.
	ForkProtocol string
	// RecorderHTTP is the recorder's HTTP base URL (its recordings API).
	// Set automatically with Spawn.
	RecorderHTTP string
	// RecorderPID is a local recorder process to sample through procfs
	// (the spawned one's with Spawn).
	RecorderPID int
	// CPUProfile, when set, is the file a CPU profile of the bridge (taken
	// over the middle half of Duration from /debug/pprof/profile) is saved
	// to; its top functions go in the report. Spawn enables the profiler.
	CPUProfile string
	// FidelitySample is how many recordings are downloaded and compared
	// with what the parties sent. Default 10.
	FidelitySample int
	// Impair is applied by every sender.
	Impair Impairment
	// Codec is pcmu, pcma or g722. Default pcmu.
	Codec string
	// Register makes every agent REGISTER its line (as a Jabber device)
	// before calling. Default true.
	Register bool
	// AgentListen and CustomerListen are the harness's SIP addresses
	// (IP:PORT; port 0 picks one). The bridge must route the customer
	// numbers (CustomerPrefix + digits) to CustomerListen.
	AgentListen    string
	CustomerListen string
	SupListen      string
	// LinePrefix and first line: agent i uses line FirstLine+i. Default 10001.
	FirstLine int
	// AgentDevices names the device each agent slot registers as (slot i
	// uses AgentDevices[i]); slots beyond the list use CSFLOADnnnn.
	AgentDevices []string
	// CustomerPrefix starts every dialled customer number. Default "2".
	CustomerPrefix string
	// MonitorPrefix is what supervisors dial before the agent's line.
	// Default "monitor-".
	MonitorPrefix string
	// SupUser and SupPassword authenticate supervisors (digest) when the
	// bridge challenges.
	SupUser     string
	SupPassword string
	// Sockets is the number of RTP sockets per party kind, shared by calls
	// round-robin. Default min(Calls, 16).
	Sockets int

	// Thresholds decide the verdict.
	Thresholds Thresholds
}

// Thresholds are the pass/fail limits.
type Thresholds struct {
	// MaxLoss is the highest acceptable rtp.loss_ratio. Default 0.0001 (0.01 %).
	MaxLoss float64 `json:"max_loss"`
	// MaxP99MS is the highest acceptable rtp.latency_ms.p99. Default 2.
	MaxP99MS float64 `json:"max_p99_ms"`
	// MinCompleteness is the lowest acceptable recordings.completeness
	// (checked when recording was asked for). Default 1.
	MinCompleteness float64 `json:"min_completeness"`
	// MaxLeaks is the most supervisor packets parties may receive. Default 0.
	MaxLeaks uint64 `json:"max_leaks"`
	// MinSuccess is the lowest acceptable calls.established/attempted.
	// Default 1.
	MinSuccess float64 `json:"min_success"`
}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	if c.Calls == 0 {
		c.Calls = 10
	}
	if c.Rate == 0 {
		c.Rate = 10
	}
	if c.Duration == 0 {
		c.Duration = 10 * time.Second
	}
	if c.SetupTimeout == 0 {
		c.SetupTimeout = 10 * time.Second
	}
	if c.FidelitySample == 0 {
		c.FidelitySample = 10
	}
	if c.Codec == "" {
		c.Codec = "pcmu"
	}
	if c.ForkProtocol == "" {
		c.ForkProtocol = "cucm"
	}
	if c.AgentListen == "" {
		c.AgentListen = "127.0.0.1:0"
	}
	if c.CustomerListen == "" {
		c.CustomerListen = "127.0.0.1:0"
	}
	if c.SupListen == "" {
		c.SupListen = "127.0.0.1:0"
	}
	if c.FirstLine == 0 {
		c.FirstLine = 10001
	}
	if c.CustomerPrefix == "" {
		c.CustomerPrefix = "2"
	}
	if c.MonitorPrefix == "" {
		c.MonitorPrefix = "monitor-"
	}
	if c.SupUser == "" {
		c.SupUser = "loadsup"
	}
	if c.SupPassword == "" {
		c.SupPassword = "load-harness"
	}
	if c.BridgeLogLevel == "" {
		c.BridgeLogLevel = "warn"
	}
	if c.Sockets == 0 {
		c.Sockets = min(c.Calls, 16)
	}
	t := &c.Thresholds
	if t.MaxLoss == 0 {
		t.MaxLoss = 0.0001
	}
	if t.MaxP99MS == 0 {
		t.MaxP99MS = 2
	}
	if t.MinCompleteness == 0 {
		t.MinCompleteness = 1
	}
	if t.MinSuccess == 0 {
		t.MinSuccess = 1
	}
}

// Validate checks every field; errors name the flag.
func (c *Config) Validate() error {
	var errs []error
	bad := func(flag, format string, a ...any) {
		errs = append(errs, fmt.Errorf("--%s: %s", flag, fmt.Sprintf(format, a...)))
	}
	if !c.Spawn {
		if _, err := netip.ParseAddrPort(c.Target); err != nil {
			bad("target", "%q is not IP:PORT (or use --spawn)", c.Target)
		}
	}
	if c.Calls < 1 || c.Calls > 100000 {
		bad("calls", "%d is not in 1..100000", c.Calls)
	}
	if c.Rate <= 0 || c.Rate > 10000 {
		bad("rate", "%g is not in (0, 10000] calls per second", c.Rate)
	}
	if c.Duration <= 0 {
		bad("duration", "%s must be positive", c.Duration)
	}
	if c.Hold < 0 {
		bad("hold", "%s is negative", c.Hold)
	}
	if c.Supervisors < 0 || c.Supervisors > 1 {
		bad("supervisors", "%g is not a fraction in 0..1", c.Supervisors)
	}
	switch {
	case c.WebRTC < 0 || c.WebRTC > 1:
		bad("webrtc", "%g is not a fraction in 0..1 (of the supervisors)", c.WebRTC)
	case c.WebRTC > 0 && c.Supervisors == 0:
		bad("webrtc", "needs --supervisors above 0 (it is a fraction of the supervisors)")
	case c.WebRTC > 0 && !c.Spawn && c.BridgeHTTP == "":
		bad("webrtc", "needs --http (bib serve's HTTP base URL, e.g. http://127.0.0.1:8080) or --spawn")
	}
	for _, p := range []struct {
		flag string
		v    float64
	}{{"loss", c.Impair.Loss}, {"duplicate", c.Impair.Duplicate}, {"reorder", c.Impair.Reorder}} {
		if p.v < 0 || p.v >= 1 {
			bad(p.flag, "%g is not a probability in [0, 1)", p.v)
		}
	}
	if c.Impair.Jitter < 0 || c.Impair.Jitter > 2*time.Second {
		bad("jitter", "%s is not in 0..2s", c.Impair.Jitter)
	}
	switch strings.ToLower(c.Codec) {
	case "pcmu", "pcma", "g722":
	default:
		bad("codec", "%q is not pcmu, pcma or g722", c.Codec)
	}
	for _, a := range []struct{ flag, v string }{{"agent-listen", c.AgentListen}, {"customer-listen", c.CustomerListen}, {"supervisor-listen", c.SupListen}} {
		if ap, err := netip.ParseAddrPort(a.v); err != nil || ap.Addr().IsUnspecified() {
			bad(a.flag, "%q is not IP:PORT with a concrete IP", a.v)
		}
	}
	if c.Sockets < 1 || c.Sockets > 1024 {
		bad("sockets", "%d is not in 1..1024", c.Sockets)
	}
	if c.BridgePID < 0 {
		bad("bridge-pid", "%d is negative", c.BridgePID)
	}
	for _, u := range []struct{ flag, v string }{{"bridge-http (--http)", c.BridgeHTTP}, {"recorder-http", c.RecorderHTTP}} {
		if u.v != "" && !strings.HasPrefix(u.v, "http://") && !strings.HasPrefix(u.v, "https://") {
			bad(u.flag, "%q is not an http:// URL", u.v)
		}
	}
	switch c.ForkProtocol {
	case "cucm", "siprec":
	default:
		bad("fork-protocol", "%q is not cucm or siprec", c.ForkProtocol)
	}
	if c.RecorderPID < 0 {
		bad("recorder-pid", "%d is negative", c.RecorderPID)
	}
	if c.CPUProfile != "" && !c.Spawn && c.BridgeHTTP == "" {
		bad("cpuprofile", "needs --spawn or --bridge-http (a bridge serving /debug/pprof/)")
	}
	t := c.Thresholds
	if t.MaxLoss < 0 || t.MaxLoss > 1 {
		bad("max-loss", "%g is not a ratio in 0..1", t.MaxLoss)
	}
	if t.MaxP99MS <= 0 {
		bad("max-p99-ms", "%g must be positive", t.MaxP99MS)
	}
	if t.MinCompleteness < 0 || t.MinCompleteness > 1 {
		bad("min-completeness", "%g is not a ratio in 0..1", t.MinCompleteness)
	}
	if t.MinSuccess < 0 || t.MinSuccess > 1 {
		bad("min-success", "%g is not a ratio in 0..1", t.MinSuccess)
	}
	return errors.Join(errs...)
}
