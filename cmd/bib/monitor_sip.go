package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/bib-project/bib/bridge"
	"github.com/bib-project/bib/sip"
)

// Silent monitoring from SIP phones: the media side (sipMonitor, a
// bridge.SupervisorLeg on the call's mixer) and the two ways in: the
// supervisor dials monitor-<line> (onSIPMonitor, package sip's OnMonitor
// hook) or the API has bib call the supervisor's phone:
//
//	POST   /api/v1/calls/{id}/monitor            {"supervisor":"sip:3000@host","mode":"silent"} -> 201
//	GET    /api/v1/calls/{id}/monitor            the call's SIP supervisor sessions
//	DELETE /api/v1/calls/{id}/monitor/{session}  BYE to the supervisor (204)

// dialMonitorTimeout bounds the wait for the supervisor's phone to answer.
const dialMonitorTimeout = 30 * time.Second

// sipMonitor is one SIP supervisor's media: it implements sip.MonitorMedia.
type sipMonitor struct {
	m       *monitors
	id      string // session id (API)
	callID  string // the monitored call
	user    string
	line    string
	side    bridge.Side
	via     string // "dial-in" or "api"
	peer    string // the phone's URI (api) or source address (dial-in)
	started time.Time
	call    *bridge.Call
	leg     *bridge.SupervisorLeg
	done    chan struct{} // closed when the monitored call's mix ends
	closedC chan struct{}

	mu       sync.Mutex
	codec    string
	detach   func()
	closed   bool
	sipCall  string // the SIP Call-ID of the supervisor's dialog
	doneOnce sync.Once
}

var _ sip.MonitorMedia = (*sipMonitor)(nil)

// newSIPMonitor binds a supervisor leg for a permitted request. It joins
// the call's mix at the first SetRemote (when its codec is known).
func (m *monitors) newSIPMonitor(t monitorTarget, via, peer string) (*sipMonitor, error) {
	leg, err := bridge.NewSupervisorLeg(m.engine, m.log.With("call_id", t.call.ID(), "user", t.user, "via", "sip"), func(n uint64) { m.droppedSIP.Add(n) })
	if err != nil {
		return nil, err
	}
	sm := &sipMonitor{
		m: m, id: rand.Text()[:16], callID: t.call.ID(), user: t.user, line: t.line, side: t.side, via: via, peer: peer,
		started: time.Now(), call: t.call, leg: leg, done: make(chan struct{}), closedC: make(chan struct{}),
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		leg.Close()
		return nil, errMonitorsClosed
	}
	m.sipLegs[sm.id] = sm
	m.mu.Unlock()
	m.sessionsTotal.Add(1)
	return sm, nil
}

// Local returns the leg's RTP and RTCP addresses.
func (sm *sipMonitor) Local() (rtp, rtcp netip.AddrPort) { return sm.leg.Local() }

// Secure reports whether the monitored call is SRTP (either party): its
// supervisor legs must then be SRTP too (package sip refuses plain ones).
func (sm *sipMonitor) Secure() bool { return callSecure(sm.call) }

// SetSRTP sets bib's key for the mix sent to the supervisor.
func (sm *sipMonitor) SetSRTP(k *bridge.SRTPKey) error { return sm.leg.SetSRTP(k) }

// callSecure reports whether either party of a call uses SRTP.
func callSecure(c *bridge.Call) bool {
	return c.Leg(bridge.SideA).Desc().SRTP != nil || c.Leg(bridge.SideB).Desc().SRTP != nil
}

// SetRemote applies the supervisor's SDP; the first one adds the leg to the
// call's mix with the chosen codec. The codec cannot change afterwards
// (package sip keeps it first in later offers).
func (sm *sipMonitor) SetRemote(d bridge.MediaDesc) (bridge.Codec, error) {
	c, err := sm.leg.SetRemote(d)
	if err != nil {
		return c, err
	}
	sm.mu.Lock()
	defer sm.mu.Unlock()
	if sm.closed {
		return c, bridge.ErrClosed
	}
	if sm.detach != nil {
		if !strings.EqualFold(c.Name, sm.codec) {
			return c, fmt.Errorf("supervisor leg: codec change %s -> %s: %w", sm.codec, c.Name, bridge.ErrNoCommonCodec)
		}
		return c, nil
	}
	detach, mixDone, err := sm.m.attachOutput(sm.call, sm.leg, c.Name)
	if err != nil {
		return c, err
	}
	sm.detach, sm.codec = detach, c.Name
	sm.m.wg.Add(1)
	go func() {
		defer sm.m.wg.Done()
		select {
		case <-mixDone: // the call ended (or bib is stopping)
			sm.doneOnce.Do(func() { close(sm.done) })
		case <-sm.closedC:
		}
	}()
	sm.m.log.Info("supervisor listening", "call_id", sm.callID, "user", sm.user, "line", sm.line, "agent_side", sm.side.String(),
		"session", sm.id, "via", "sip-"+sm.via, "peer", sm.peer, "codec", c.Name)
	sm.m.auditSession("monitor.start", sm.user, sm.callID, sm.peer, map[string]any{"via": "sip-" + sm.via, "session": sm.id, "line": sm.line})
	return c, nil
}

// Done is closed when the monitored call ended.
func (sm *sipMonitor) Done() <-chan struct{} { return sm.done }

// Close leaves the mix and frees the leg. Idempotent.
func (sm *sipMonitor) Close(reason string) {
	sm.mu.Lock()
	if sm.closed {
		sm.mu.Unlock()
		return
	}
	sm.closed = true
	detach := sm.detach
	close(sm.closedC)
	sm.mu.Unlock()
	if detach != nil {
		detach()
	}
	sm.leg.Close()
	sm.m.mu.Lock()
	delete(sm.m.sipLegs, sm.id)
	sm.m.mu.Unlock()
	if detach != nil { // it was listening
		sm.m.auditSession("monitor.end", sm.user, sm.callID, sm.peer, map[string]any{"via": "sip-" + sm.via, "session": sm.id,
			"reason": reason, "seconds": int(time.Since(sm.started).Seconds()), "supervisor_packets_dropped": sm.leg.Dropped()})
	}
	sm.m.log.Info("supervisor stopped listening", "call_id", sm.callID, "user", sm.user, "session", sm.id, "via", "sip-"+sm.via,
		"reason", reason, "supervisor_packets_dropped", sm.leg.Dropped(), "packets_sent", sm.leg.Stats().PacketsSent,
		"duration", time.Since(sm.started).Round(time.Second).String())
}

func (sm *sipMonitor) setSIPCall(id string) {
	sm.mu.Lock()
	sm.sipCall = id
	sm.mu.Unlock()
}

// sipSessionView is one SIP supervisor session in the API.
type sipSessionView struct {
	ID        string                    `json:"id"`
	User      string                    `json:"user"`
	Line      string                    `json:"line"`
	Via       string                    `json:"via"`
	Peer      string                    `json:"peer"`
	SIPCallID string                    `json:"sip_call_id"`
	Started   time.Time                 `json:"started"`
	Stats     bridge.SupervisorLegStats `json:"stats"`
}

func (sm *sipMonitor) view() sipSessionView {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	return sipSessionView{ID: sm.id, User: sm.user, Line: sm.line, Via: sm.via, Peer: sm.peer, SIPCallID: sm.sipCall, Started: sm.started, Stats: sm.leg.Stats()}
}

// sipSessions lists a call's SIP supervisor sessions.
func (m *monitors) sipSessions(callID string) []*sipMonitor {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*sipMonitor
	for _, sm := range m.sipLegs {
		if sm.callID == callID {
			out = append(out, sm)
		}
	}
	return out
}

func (m *monitors) sipSession(id string) (*sipMonitor, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	sm, ok := m.sipLegs[id]
	return sm, ok
}

// sipStatus maps a refusal to a SIP response: the Warning carries the
// machine code and the reason.
func sipStatus(r *refusal) *sip.StatusError {
	code := http.StatusForbidden
	switch r.status {
	case http.StatusNotFound:
		code = 404
	case http.StatusConflict:
		code = 480 // the call is not connected yet
	case http.StatusServiceUnavailable:
		code = 503
	}
	return &sip.StatusError{Code: code, Warning: r.code + ": " + r.reason}
}

// onSIPMonitor is package sip's OnMonitor hook: a digest-authenticated
// user dialled <monitor_prefix><line> (or whisper-/barge-).
func (s *server) onSIPMonitor(_ context.Context, req *sip.MonitorRequest) (sip.MonitorMedia, error) {
	sup, ok := s.policy.Supervisor(req.User)
	mode := req.Mode
	if mode == sip.MonitorSilent {
		mode = ""
	}
	if !ok {
		// Refuse a whisper or barge request for what it is first.
		if _, ref := s.checkMonitor(sup, false, "", req.Line, mode); ref != nil && ref.status == http.StatusForbidden && mode != "" {
			return nil, sipStatus(ref)
		}
		return nil, &sip.StatusError{Code: 403, Warning: "not_a_supervisor: " + req.User + " is not a configured supervisor, so it may not monitor calls."}
	}
	t, ref := s.checkMonitor(sup, true, "", req.Line, mode)
	if ref != nil {
		s.log.Warn("monitoring refused", "via", "sip", "user", req.User, "line", req.Line, "mode", req.Mode, "mode_from", req.ModeFrom,
			"error", ref.code, "reason", ref.reason, "source", req.Source)
		return nil, sipStatus(ref)
	}
	sm, err := s.mon.newSIPMonitor(t, "dial-in", req.Source)
	if err != nil {
		if errors.Is(err, bridge.ErrPortsExhausted) {
			return nil, &sip.StatusError{Code: 503, Warning: "ports_exhausted: no RTP port is free for another listener"}
		}
		return nil, &sip.StatusError{Code: 500, Warning: "listen_failed: " + err.Error()}
	}
	sm.setSIPCall(req.CallID)
	return sm, nil
}

// monitorCallRequest is the body of POST /api/v1/calls/{id}/monitor.
type monitorCallRequest struct {
	Supervisor string `json:"supervisor"`
	Mode       string `json:"mode"`
}

func (s *server) registerSIPMonitorRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/v1/calls/{id}/monitor", s.handleMonitorCall)
	mux.HandleFunc("GET /api/v1/calls/{id}/monitor", func(w http.ResponseWriter, r *http.Request) {
		out := []sipSessionView{}
		for _, sm := range s.mon.sipSessions(r.PathValue("id")) {
			out = append(out, sm.view())
		}
		respondJSON(w, http.StatusOK, map[string]any{"sessions": out})
	})
	mux.HandleFunc("DELETE /api/v1/calls/{id}/monitor/{session}", func(w http.ResponseWriter, r *http.Request) {
		sm, ok := s.mon.sipSession(r.PathValue("session"))
		if !ok || sm.callID != r.PathValue("id") {
			writeJSONError(w, http.StatusNotFound, "unknown_session", "No SIP monitoring session with that id on this call.")
			return
		}
		if sup, authed := supervisorOf(r); authed && sup.User != sm.user {
			s.log.Warn("http request refused: session of another supervisor", "user", sup.User, "owner", sm.user, "path", r.URL.Path, "remote", r.RemoteAddr)
			writeJSONError(w, http.StatusForbidden, "not_your_session", "This monitoring session belongs to another supervisor.")
			return
		}
		sm.mu.Lock()
		sipCall := sm.sipCall
		sm.mu.Unlock()
		if err := s.sip.EndMonitor(r.Context(), sipCall, "stopped by the supervisor"); err != nil {
			sm.Close("stopped by the supervisor") // not set up yet: free the leg
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

// handleMonitorCall has bib call a supervisor's phone (the way a
// CTI-initiated monitor works) and send it the call's mix.
func (s *server) handleMonitorCall(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var req monitorCallRequest
	body, err := io.ReadAll(io.LimitReader(r.Body, 8<<10))
	if err == nil && len(body) > 0 {
		err = json.Unmarshal(body, &req)
	}
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, "bad_request", `Send JSON {"supervisor": "sip:3000@host", "mode": "silent"}.`)
		return
	}
	mode := req.Mode
	for _, v := range []string{r.URL.Query().Get("mode"), r.Header.Get("X-Bib-Mode"), r.Header.Get("X-Monitor-Mode")} {
		if mode == "" {
			mode = v
		}
	}
	t, ref := s.authorizeMonitor(r, id, mode)
	if ref != nil {
		s.log.Warn("monitoring refused", "via", "sip-api", "call_id", id, "mode", mode, "error", ref.code, "reason", ref.reason, "remote", r.RemoteAddr)
		writeJSONError(w, ref.status, ref.code, ref.reason)
		return
	}
	target := strings.TrimSpace(req.Supervisor)
	if !strings.HasPrefix(strings.ToLower(target), "sip:") && !strings.HasPrefix(strings.ToLower(target), "sips:") {
		writeJSONError(w, http.StatusBadRequest, "bad_supervisor", `"supervisor" must be the SIP URI of the supervisor's phone, e.g. "sip:3000@10.0.0.5".`)
		return
	}
	sm, err := s.mon.newSIPMonitor(t, "api", target)
	switch {
	case errors.Is(err, bridge.ErrPortsExhausted):
		writeJSONError(w, http.StatusServiceUnavailable, "ports_exhausted", "No RTP port is free for another listener; try again later.")
		return
	case err != nil:
		writeJSONError(w, http.StatusGone, "call_ended", "The call ended.")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), dialMonitorTimeout)
	defer cancel()
	dlg, err := s.sip.DialMonitor(ctx, sip.MonitorDial{
		Target: target, FromUser: s.cfg.SIP.MonitorPrefix + t.line, FromName: "Monitoring " + t.line, Media: sm,
	})
	switch {
	case errors.Is(err, sip.ErrMonitorTarget):
		writeJSONError(w, http.StatusBadRequest, "bad_supervisor", err.Error())
		return
	case err != nil:
		s.log.Warn("monitoring call to the supervisor failed", "call_id", id, "user", t.user, "supervisor", target, "err", err)
		writeJSONError(w, http.StatusBadGateway, "supervisor_unavailable", "The supervisor's phone did not take the monitoring call: "+err.Error())
		return
	}
	sm.setSIPCall(dlg.ID())
	loc := "/api/v1/calls/" + id + "/monitor/" + sm.id
	w.Header().Set("Location", loc)
	respondJSON(w, http.StatusCreated, map[string]any{
		"id": sm.id, "call_id": id, "supervisor": target, "user": t.user, "line": t.line,
		"codec": dlg.Codec().Name, "sip_call_id": dlg.ID(), "location": loc,
	})
}
