package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bib-project/bib/bridge"
)

// monitors is bib serve's registry of monitored calls: one bridge.Mixer per
// call, attached as a tap when the first supervisor starts listening and
// detached when the last one leaves or the call ends. Browser sessions
// (WHEP) live here; SIP supervisor legs will join through attachOutput.
type monitors struct {
	log    *slog.Logger
	engine *bridge.Engine

	mu     sync.Mutex
	calls  map[string]*monCall
	closed bool
	wg     sync.WaitGroup

	// droppedClosed sums supervisor_packets_dropped of ended sessions and
	// legs; live ones are added when read.
	droppedClosed atomic.Uint64
	sessionsTotal atomic.Uint64
	// droppedSIP counts what SIP supervisors sent (every leg's onDrop).
	droppedSIP atomic.Uint64
	sipLegs    map[string]*sipMonitor // live SIP supervisor legs by session id (monitor_sip.go)

	// audit records every monitoring session's start and end, however it
	// ends (the supervisor leaves, the call ends, bib stops). Set by the
	// server; nil records nothing.
	audit func(AuditRecord)
}

// auditSession writes a monitor.start or monitor.end record.
func (m *monitors) auditSession(action, user, callID, source string, detail map[string]any) {
	if m.audit == nil {
		return
	}
	m.audit(AuditRecord{Actor: user, Action: action, Target: callID, Source: source, Outcome: auditOK, Detail: detail})
}

// monCall is one monitored call.
type monCall struct {
	id      string
	call    *bridge.Call
	mixer   *bridge.Mixer
	whep    map[string]*listener
	outputs int // non-WHEP outputs (SIP legs)
}

// listener is one browser supervisor.
type listener struct {
	sess    *bridge.WHEPSession
	user    string
	side    bridge.Side
	line    string
	started time.Time
}

var errMonitorsClosed = errors.New("server is shutting down")

func newMonitors(eng *bridge.Engine, log *slog.Logger) *monitors {
	return &monitors{log: log, engine: eng, calls: map[string]*monCall{}, sipLegs: map[string]*sipMonitor{}}
}

// mixerFor returns the call's mixer, creating and attaching it if needed.
// Caller holds mu.
func (m *monitors) mixerFor(c *bridge.Call) (*monCall, error) {
	if m.closed {
		return nil, errMonitorsClosed
	}
	if mc, ok := m.calls[c.ID()]; ok {
		return mc, nil
	}
	mx := bridge.NewMixer(c.ID(), bridge.MixerConfig{Log: m.log})
	if err := c.AddTap(mx); err != nil {
		mx.Close()
		return nil, fmt.Errorf("attach mixer to call %s: %w", c.ID(), err)
	}
	mc := &monCall{id: c.ID(), call: c, mixer: mx, whep: map[string]*listener{}}
	m.calls[c.ID()] = mc
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		<-mx.Done() // the call ended (EvEnd) or the last listener left
		m.ended(mc)
	}()
	return mc, nil
}

// ended closes everything of a call whose mixer stopped.
func (m *monitors) ended(mc *monCall) {
	m.mu.Lock()
	if m.calls[mc.id] == mc {
		delete(m.calls, mc.id)
	}
	ls := make([]*listener, 0, len(mc.whep))
	for _, l := range mc.whep {
		ls = append(ls, l)
	}
	mc.whep = map[string]*listener{}
	m.mu.Unlock()
	for _, l := range ls {
		m.closeListener(mc, l, mc.mixer.Reason())
	}
}

func (m *monitors) closeListener(mc *monCall, l *listener, why string) {
	l.sess.Close()
	m.droppedClosed.Add(l.sess.Dropped())
	m.auditSession("monitor.end", l.user, mc.id, "", map[string]any{"via": "webrtc", "session": l.sess.ID(), "reason": why,
		"seconds": int(time.Since(l.started).Seconds()), "supervisor_packets_dropped": l.sess.Dropped()})
	m.log.Info("supervisor stopped listening", "call_id", mc.id, "user", l.user, "session", l.sess.ID(),
		"reason", why, "supervisor_packets_dropped", l.sess.Dropped(), "duration", time.Since(l.started).Round(time.Second).String())
}

// whepOnSide lists a call's browser sessions monitoring near-end side.
func (m *monitors) whepOnSide(callID string, side bridge.Side) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ids []string
	if mc, ok := m.calls[callID]; ok {
		for id, l := range mc.whep {
			if l.side == side {
				ids = append(ids, id)
			}
		}
	}
	return ids
}

// detachIfIdle stops the mixer when no output is left. Caller holds mu.
func (m *monitors) detachIfIdle(mc *monCall) {
	if len(mc.whep) > 0 || mc.outputs > 0 {
		return
	}
	delete(m.calls, mc.id)
	mc.call.RemoveTap(mc.mixer)
	m.wg.Add(1)
	go func() { defer m.wg.Done(); mc.mixer.Close() }() // the watcher goroutine finishes the cleanup
}

// addWHEP answers a browser's offer and starts a listening session.
func (m *monitors) addWHEP(ctx context.Context, c *bridge.Call, offer, user string, side bridge.Side, line string) (string, *bridge.WHEPSession, error) {
	m.mu.Lock()
	mc, err := m.mixerFor(c)
	if err != nil {
		m.mu.Unlock()
		return "", nil, err
	}
	// Hold one output slot while the answer is built (outside the lock),
	// so that the mixer is not detached meanwhile.
	mc.outputs++
	m.mu.Unlock()
	answer, sess, err := bridge.NewWHEPSession(ctx, offer, mc.mixer, bridge.WebRTCConfig{Engine: m.engine, Log: m.log.With("call_id", c.ID(), "user", user)})
	m.mu.Lock()
	defer m.mu.Unlock()
	mc.outputs--
	if err != nil {
		m.detachIfIdle(mc)
		return "", nil, err
	}
	if m.calls[c.ID()] != mc { // the call ended while the answer was built
		sess.Close()
		return "", nil, bridge.ErrClosed
	}
	l := &listener{sess: sess, user: user, side: side, line: line, started: time.Now()}
	mc.whep[sess.ID()] = l
	m.sessionsTotal.Add(1)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		select {
		case <-sess.Done(): // the browser went away (ICE failed, closed)
			m.removeWHEP(c.ID(), sess.ID(), "peer connection closed")
		case <-mc.mixer.Done():
		}
	}()
	m.log.Info("supervisor listening", "call_id", c.ID(), "user", user, "line", line, "agent_side", side.String(), "session", sess.ID(), "via", "webrtc")
	m.auditSession("monitor.start", user, c.ID(), "", map[string]any{"via": "webrtc", "session": sess.ID(), "line": line})
	return answer, sess, nil
}

// session finds a browser session of a call.
func (m *monitors) session(callID, id string) (*listener, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mc, ok := m.calls[callID]
	if !ok {
		return nil, false
	}
	l, ok := mc.whep[id]
	return l, ok
}

// removeWHEP ends a browser session; false if there is no such session.
func (m *monitors) removeWHEP(callID, id, why string) bool {
	m.mu.Lock()
	mc, ok := m.calls[callID]
	var l *listener
	if ok {
		l, ok = mc.whep[id]
	}
	if !ok {
		m.mu.Unlock()
		return false
	}
	delete(mc.whep, id)
	m.detachIfIdle(mc)
	m.mu.Unlock()
	m.closeListener(mc, l, why)
	return true
}

// attachOutput adds a non-browser output (a SIP supervisor leg) to the
// call's mix; detach removes it and stops the mixer if it was the last.
func (m *monitors) attachOutput(c *bridge.Call, out bridge.MixOutput, codecName string) (detach func(), done <-chan struct{}, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mc, err := m.mixerFor(c)
	if err != nil {
		return nil, nil, err
	}
	if err := mc.mixer.AddOutput(out, codecName); err != nil {
		m.detachIfIdle(mc)
		return nil, nil, err
	}
	mc.outputs++
	var once sync.Once
	detach = func() {
		once.Do(func() {
			mc.mixer.RemoveOutput(out)
			m.mu.Lock()
			mc.outputs--
			if m.calls[mc.id] == mc {
				m.detachIfIdle(mc)
			}
			m.mu.Unlock()
		})
	}
	return detach, mc.mixer.Done(), nil
}

// listenerView is one listening session in the API.
type listenerView struct {
	ID      string           `json:"id"`
	User    string           `json:"user"`
	Line    string           `json:"line"`
	Started time.Time        `json:"started"`
	Stats   bridge.WHEPStats `json:"stats"`
}

// listeners returns a call's browser sessions and its mixer's counters.
func (m *monitors) listeners(callID string) ([]listenerView, *bridge.MixerStats) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mc, ok := m.calls[callID]
	if !ok {
		return []listenerView{}, nil
	}
	out := make([]listenerView, 0, len(mc.whep))
	for id, l := range mc.whep {
		out = append(out, listenerView{ID: id, User: l.user, Line: l.line, Started: l.started, Stats: l.sess.Stats()})
	}
	st := mc.mixer.Stats()
	return out, &st
}

// dropped returns supervisor_packets_dropped: everything supervisors sent,
// over all sessions, ended or live.
func (m *monitors) dropped() uint64 {
	n := m.droppedClosed.Load() + m.droppedSIP.Load()
	m.mu.Lock()
	for _, mc := range m.calls {
		for _, l := range mc.whep {
			n += l.sess.Dropped()
		}
	}
	m.mu.Unlock()
	return n
}

// active returns the number of live sessions, browser and SIP.
func (m *monitors) active() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := len(m.sipLegs)
	for _, mc := range m.calls {
		n += len(mc.whep)
	}
	return n
}

// close ends every session and waits for the watchers. Idempotent.
func (m *monitors) close() {
	m.mu.Lock()
	m.closed = true
	mcs := make([]*monCall, 0, len(m.calls))
	for _, mc := range m.calls {
		mcs = append(mcs, mc)
	}
	m.mu.Unlock()
	for _, mc := range mcs {
		mc.call.RemoveTap(mc.mixer)
		mc.mixer.Close()
	}
	m.wg.Wait()
}
