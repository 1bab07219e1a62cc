package bridge

import (
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Call is the media of one call: two legs and the taps that watch the relay.
type Call struct {
	id     string
	engine *Engine
	log    *slog.Logger
	legs   [2]*Leg
	taps   atomic.Pointer[[]Tap]
	start  time.Time
	base   time.Time // monotonic clock origin for Packet.Arrival

	mu       sync.Mutex // guards tap list writes, hold state, answer
	held     [2]bool    // held[s]: side s has put the other on hold
	answered time.Time

	closing  atomic.Bool
	io       *loopCall // the call's epoll registration (media.io: epoll), else nil
	once     sync.Once
	wg       sync.WaitGroup
	closeErr error

	// idle tracking, owned by the engine's janitor
	lastCount uint64
	idleSince time.Time
}

// ID returns the call's id.
func (c *Call) ID() string { return c.id }

// Leg returns the leg facing the given side's party.
func (c *Call) Leg(s Side) *Leg { return c.legs[s] }

// Start returns when the call's media was created.
func (c *Call) Start() time.Time { return c.start }

// Now returns the call's monotonic clock in nanoseconds (the clock of
// Packet.Arrival and Event.Mono).
func (c *Call) Now() int64 { return int64(time.Since(c.base)) }

// arrival converts a kernel receive time (Unix nanoseconds, 0 if none) to
// the call's monotonic clock, given now (read after the datagram was
// received). A stamp that is missing, in the future, or more than a second
// old (the wall clock stepped) gives now.
func (c *Call) arrival(now time.Time, kernel int64) int64 {
	mono := int64(now.Sub(c.base))
	if kernel == 0 {
		return mono
	}
	if d := now.UnixNano() - kernel; d >= 0 && d < 1e9 {
		return mono - d
	}
	return mono
}

func (c *Call) event(k EventKind, side Side, reason string) Event {
	now := time.Now()
	return Event{
		Kind:   k,
		At:     now,
		Mono:   int64(now.Sub(c.base)),
		Side:   side,
		Media:  [2]MediaDesc{c.legs[0].Desc(), c.legs[1].Desc()},
		Reason: reason,
	}
}

func (c *Call) emit(ev Event) {
	for _, t := range *c.taps.Load() {
		t.Event(ev)
	}
}

// SetRemote records what side s's party signalled in its SDP: where it
// receives RTP/RTCP and with which codecs and direction. Packets from that
// party are then accepted only from ev.RTP (symmetric RTP), and packets for
// it are sent there. Call it for every offer or answer received.
func (c *Call) SetRemote(s Side, d MediaDesc) { c.legs[s].setRemote(d) }

// Negotiated tells the taps that an offer/answer exchange completed and
// reports hold and resume transitions (RFC 3264 section 8.4).
func (c *Call) Negotiated() {
	c.mu.Lock()
	var evs []Event
	evs = append(evs, c.event(EvMedia, SideA, ""))
	for _, s := range []Side{SideA, SideB} {
		d := c.legs[s].Desc()
		h := d.Hold()
		if h != c.held[s] {
			c.held[s] = h
			k := EvResume
			if h {
				k = EvHold
			}
			evs = append(evs, c.event(k, s, ""))
		}
	}
	c.mu.Unlock()
	for _, ev := range evs {
		c.emit(ev)
	}
}

// Held reports whether either party has the call on hold.
func (c *Call) Held() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.held[0] || c.held[1]
}

// Answer marks the call answered (the recordings' timeline anchor).
func (c *Call) Answer() {
	c.mu.Lock()
	if !c.answered.IsZero() {
		c.mu.Unlock()
		return
	}
	c.answered = time.Now()
	ev := c.event(EvAnswer, SideB, "")
	c.mu.Unlock()
	c.emit(ev)
}

// Answered returns when the call was answered (zero if not yet).
func (c *Call) Answered() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.answered
}

func (c *Call) ssrcChanged(s Side, mono int64) {
	ev := c.event(EvSSRC, s, "")
	ev.Mono = mono
	ev.At = c.base.Add(time.Duration(mono))
	c.emit(ev)
}

// AddTap attaches a tap; it sees packets relayed from now on. A tap added
// to an answered call first receives EvMedia (and EvAnswer) so it knows the
// codecs and the timeline anchor.
func (c *Call) AddTap(t Tap) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing.Load() {
		return ErrClosed
	}
	t.Event(c.event(EvMedia, SideA, ""))
	if !c.answered.IsZero() {
		ev := c.event(EvAnswer, SideB, "")
		ev.At = c.answered
		ev.Mono = int64(c.answered.Sub(c.base))
		t.Event(ev)
	}
	old := *c.taps.Load()
	next := append(slices.Clip(old), t)
	c.taps.Store(&next)
	return nil
}

// RemoveTap detaches a tap. After it returns the relay may still be inside
// one RTP call of that tap that began before; taps must tolerate that.
func (c *Call) RemoveTap(t Tap) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := *c.taps.Load()
	next := slices.DeleteFunc(slices.Clone(old), func(x Tap) bool { return x == t })
	c.taps.Store(&next)
}

// CallStats is a snapshot of a call's media for the API.
type CallStats struct {
	ID       string      `json:"id"`
	Start    time.Time   `json:"start"`
	Answered *time.Time  `json:"answered,omitempty"`
	Held     bool        `json:"held"`
	Taps     int         `json:"taps"`
	Legs     [2]LegStats `json:"legs"`
}

// Stats returns a snapshot of the call's counters and media state.
func (c *Call) Stats() CallStats {
	s := CallStats{ID: c.id, Start: c.start, Held: c.Held(), Taps: len(*c.taps.Load())}
	if a := c.Answered(); !a.IsZero() {
		s.Answered = &a
	}
	s.Legs[0] = c.legs[0].stats()
	s.Legs[1] = c.legs[1].stats()
	return s
}

func (c *Call) packets() uint64 {
	return c.legs[0].C.PacketsIn.Load() + c.legs[1].C.PacketsIn.Load()
}

// Close stops the relay, tells the taps the call ended and frees the ports.
// It is idempotent; reason ends up in the taps' EvEnd.
func (c *Call) Close(reason string) error {
	c.once.Do(func() {
		c.mu.Lock()
		c.closing.Store(true)
		c.mu.Unlock()
		var errs []error
		if c.io != nil {
			errs = append(errs, c.io.detach()) // returns once no tap can run
		} else {
			errs = append(errs, c.legs[1].close(), c.legs[0].close())
		}
		c.wg.Wait()
		c.emit(c.event(EvEnd, SideA, reason))
		empty := []Tap{}
		c.taps.Store(&empty)
		for _, l := range c.legs {
			c.engine.pool.release(l.pair)
		}
		c.engine.remove(c)
		c.closeErr = errors.Join(errs...)
		c.log.Info("call media closed", "reason", reason,
			"a_in", c.legs[0].C.PacketsIn.Load(), "b_in", c.legs[1].C.PacketsIn.Load(),
			"a_dropped_source", c.legs[0].C.DroppedSource.Load(), "b_dropped_source", c.legs[1].C.DroppedSource.Load(),
			"malformed", c.legs[0].C.Malformed.Load()+c.legs[1].C.Malformed.Load())
	})
	return c.closeErr
}
