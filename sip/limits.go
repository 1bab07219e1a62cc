package sip

import (
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bib-project/bib/bridge"
)

// LimitsConfig is the `sip.limits` block: how much one node and one source
// may ask of bib. Beyond a limit bib answers at once (503 or 486 with
// Retry-After); it never queues, and calls already up are never touched.
// The defaults are generous: the load harness drives 200 calls per second
// from one address and must not be throttled.
type LimitsConfig struct {
	// MaxCalls caps calls in progress (ringing or answered). A new INVITE
	// beyond it gets 503 Service Unavailable + Retry-After. -1: no cap.
	// Default 1000.
	MaxCalls int `yaml:"max_calls"`
	// MaxCallsPerSource caps calls in progress whose INVITE came from one
	// IP address. Beyond it: 486 Busy Here + Retry-After. -1: no cap.
	// Default 200.
	MaxCallsPerSource int `yaml:"max_calls_per_source"`
	// RequestsPerSecond is the sustained rate of out-of-dialog requests
	// (new INVITEs, REGISTERs) accepted from one IP address, a token bucket
	// refilled at this rate. Beyond it: 503 + Retry-After. Requests inside
	// an existing dialog (re-INVITE, UPDATE, BYE, ACK) are never limited.
	// -1: no limit. Default 200.
	RequestsPerSecond float64 `yaml:"requests_per_second"`
	// Burst is the token bucket's size: how many requests one source may
	// send at once. Default 400.
	Burst int `yaml:"burst"`
	// RetryAfter is the Retry-After sent with 503/486 for call limits
	// (duration, whole seconds). Default 5s.
	RetryAfter bridge.Duration `yaml:"retry_after"`
}

// Defaults fills unset fields.
func (c *LimitsConfig) Defaults() {
	if c.MaxCalls == 0 {
		c.MaxCalls = 1000
	}
	if c.MaxCallsPerSource == 0 {
		c.MaxCallsPerSource = 200
	}
	if c.RequestsPerSecond == 0 {
		c.RequestsPerSecond = 200
	}
	if c.Burst == 0 {
		c.Burst = 400
	}
	if c.RetryAfter == 0 {
		c.RetryAfter = bridge.Duration(5 * time.Second)
	}
}

// Validate checks every field; keys are relative to sip.limits.
func (c *LimitsConfig) Validate() error {
	if c.MaxCalls < -1 {
		return fmt.Errorf("sip.limits.max_calls: %d: want a positive number or -1 (no cap)", c.MaxCalls)
	}
	if c.MaxCallsPerSource < -1 {
		return fmt.Errorf("sip.limits.max_calls_per_source: %d: want a positive number or -1 (no cap)", c.MaxCallsPerSource)
	}
	if math.IsNaN(c.RequestsPerSecond) || math.IsInf(c.RequestsPerSecond, 0) || (c.RequestsPerSecond < 0 && c.RequestsPerSecond != -1) {
		return fmt.Errorf("sip.limits.requests_per_second: %v: want a positive rate or -1 (no limit)", c.RequestsPerSecond)
	}
	if c.Burst < 1 {
		return fmt.Errorf("sip.limits.burst: %d must be at least 1", c.Burst)
	}
	if c.RetryAfter < bridge.Duration(time.Second) || time.Duration(c.RetryAfter)%time.Second != 0 {
		return fmt.Errorf("sip.limits.retry_after: %s must be a whole number of seconds, at least 1s", time.Duration(c.RetryAfter))
	}
	return nil
}

// maxBuckets bounds the per-source tables. Sources beyond it (a spoofed
// flood) share one bucket, so the table cannot grow without bound.
const maxBuckets = 1 << 16

type bucket struct {
	tokens float64
	last   time.Time
}

// limiter enforces LimitsConfig. Calls are reserved by the A leg's Call-ID
// when admitted and released when the call ends or is refused.
type limiter struct {
	cfg LimitsConfig
	now func() time.Time

	mu       sync.Mutex
	buckets  map[netip.Addr]*bucket
	overflow bucket // shared by sources beyond maxBuckets
	calls    map[string]netip.Addr
	perSrc   map[netip.Addr]int

	rateLimited, maxCalls, perSource atomic.Uint64
}

func newLimiter(cfg LimitsConfig, now func() time.Time) *limiter {
	return &limiter{cfg: cfg, now: now, buckets: map[netip.Addr]*bucket{},
		calls: map[string]netip.Addr{}, perSrc: map[netip.Addr]int{}}
}

// allow takes a token from src's bucket. When none is left it returns
// false and how long until one is.
func (l *limiter) allow(src netip.Addr) (bool, time.Duration) {
	rate := l.cfg.RequestsPerSecond
	if rate < 0 {
		return true, 0
	}
	burst := float64(l.cfg.Burst)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[src]
	if b == nil {
		if len(l.buckets) >= maxBuckets {
			l.pruneBuckets(now)
		}
		if len(l.buckets) >= maxBuckets {
			b = &l.overflow
			if b.last.IsZero() {
				b.tokens, b.last = burst, now
			}
		} else {
			b = &bucket{tokens: burst, last: now}
			l.buckets[src] = b
		}
	}
	if dt := now.Sub(b.last); dt > 0 {
		b.tokens = min(burst, b.tokens+dt.Seconds()*rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	l.rateLimited.Add(1)
	return false, time.Duration((1 - b.tokens) / rate * float64(time.Second))
}

// pruneBuckets drops buckets that have refilled completely (idle sources).
func (l *limiter) pruneBuckets(now time.Time) {
	full := time.Duration(float64(l.cfg.Burst) / l.cfg.RequestsPerSecond * float64(time.Second))
	for k, b := range l.buckets {
		if now.Sub(b.last) >= full {
			delete(l.buckets, k)
		}
	}
}

// reserve admits one more call from src under callID, or says which limit
// refuses it. A Call-ID already reserved is refused as a loop (482).
func (l *limiter) reserve(callID string, src netip.Addr) (*StatusError, string) {
	retry := strconv.Itoa(int(time.Duration(l.cfg.RetryAfter) / time.Second))
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, dup := l.calls[callID]; dup {
		return &StatusError{Code: 482, Reason: "Loop Detected", Warning: "Call-ID already in use"}, ""
	}
	if l.cfg.MaxCalls >= 0 && len(l.calls) >= l.cfg.MaxCalls {
		l.maxCalls.Add(1)
		return &StatusError{Code: 503, Reason: "Service Unavailable", Warning: "call limit reached (sip.limits.max_calls)"}, retry
	}
	if l.cfg.MaxCallsPerSource >= 0 && l.perSrc[src] >= l.cfg.MaxCallsPerSource {
		l.perSource.Add(1)
		return &StatusError{Code: 486, Reason: "Busy Here", Warning: "too many calls from your address (sip.limits.max_calls_per_source)"}, retry
	}
	l.calls[callID] = src
	l.perSrc[src]++
	return nil, ""
}

// release frees a reservation; unknown Call-IDs are ignored.
func (l *limiter) release(callID string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	src, ok := l.calls[callID]
	if !ok {
		return
	}
	delete(l.calls, callID)
	if l.perSrc[src]--; l.perSrc[src] <= 0 {
		delete(l.perSrc, src)
	}
}

// active returns the number of reserved calls.
func (l *limiter) active() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.calls)
}

// retryAfter formats a wait as Retry-After seconds, at least 1.
func retryAfter(d time.Duration) string {
	s := int64((d + time.Second - 1) / time.Second)
	return strconv.FormatInt(max(1, s), 10)
}
