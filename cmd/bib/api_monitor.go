package main

import (
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"strings"

	"github.com/bib-project/bib/bridge"
)

//go:embed ui
var uiFiles embed.FS

// maxOfferBytes bounds an SDP offer.
const maxOfferBytes = 64 << 10

// registerMonitorRoutes adds sign-in, silent monitoring from a browser and
// the supervisor web page:
//
//	POST   /api/v1/login, /api/v1/logout, GET /api/v1/session   (auth.go)
//	POST   /api/v1/calls/{id}/listen            WHEP: SDP offer in, 201 + SDP answer + Location
//	GET    /api/v1/calls/{id}/listen            the call's browser sessions and mixer counters
//	DELETE /api/v1/calls/{id}/listen/{session}  end a session (204)
//	GET    /  and /ui/...                        the web page
func (s *server) registerMonitorRoutes(mux *http.ServeMux) {
	s.auth.registerRoutes(mux)
	s.registerSIPMonitorRoutes(mux) // monitor_sip.go
	mux.HandleFunc("POST /api/v1/calls/{id}/listen", s.handleListen)
	mux.HandleFunc("GET /api/v1/calls/{id}/listen", func(w http.ResponseWriter, r *http.Request) {
		ls, st := s.mon.listeners(r.PathValue("id"))
		respondJSON(w, http.StatusOK, map[string]any{"listeners": ls, "mixer": st})
	})
	mux.HandleFunc("DELETE /api/v1/calls/{id}/listen/{session}", func(w http.ResponseWriter, r *http.Request) {
		id, sid := r.PathValue("id"), r.PathValue("session")
		l, ok := s.mon.session(id, sid)
		if !ok {
			writeJSONError(w, http.StatusNotFound, "unknown_session", "No listening session with that id on this call.")
			return
		}
		if sup, authed := supervisorOf(r); authed && sup.User != l.user {
			s.log.Warn("http request refused: session of another supervisor", "user", sup.User, "owner", l.user, "path", r.URL.Path, "remote", r.RemoteAddr)
			writeJSONError(w, http.StatusForbidden, "not_your_session", "This listening session belongs to another supervisor.")
			return
		}
		s.mon.removeWHEP(id, sid, "stopped by the supervisor")
		w.WriteHeader(http.StatusNoContent)
	})
	sub, _ := fs.Sub(uiFiles, "ui")
	files := http.FileServerFS(sub)
	mux.Handle("GET /ui/", http.StripPrefix("/ui/", files))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		http.ServeFileFS(w, r, sub, "index.html")
	})
}

// listenRequest is the JSON form of a listen request (the plain form is
// the SDP offer itself with Content-Type application/sdp).
type listenRequest struct {
	SDP  string `json:"sdp"`
	Mode string `json:"mode"`
}

// refusal is a 403 with a gate verdict's code and reason.
type refusal struct {
	status       int
	code, reason string
}

func (r *refusal) Error() string { return r.code + ": " + r.reason }

func refuse(v bridge.Verdict) *refusal {
	return &refusal{status: http.StatusForbidden, code: v.Code, reason: v.Reason}
}

// monitorTarget is what a permitted monitoring request applies to.
type monitorTarget struct {
	call *bridge.Call
	side bridge.Side // the agent's side
	line string      // the agent's line
	user string      // the supervisor ("" when auth is off)
}

// authorizeMonitor decides whether the request's signed-in supervisor may
// silently monitor call id in the given mode (checkMonitor).
func (s *server) authorizeMonitor(r *http.Request, id, mode string) (monitorTarget, *refusal) {
	sup, authed := supervisorOf(r)
	return s.checkMonitor(sup, authed, id, "", mode)
}

// checkMonitor is the one decision on a monitoring request, for the
// browser (WHEP), the API-initiated SIP call and a supervisor dialling
// monitor-<line>. The checks, in order: the mode (whisper, barge, tone and
// anything but monitor are refused with the gate's reason), supervisors
// are configured and sup is signed in (authed), then, when the request
// names an agent line (SIP dial-in): the line is a configured device in
// sup's monitoring search space, the gate allows monitoring it, and it has
// a connected call, which becomes id; then the call exists and is
// answered, it has an agent (a configured device), the agent's line is in
// sup's monitoring search space, and the gate allows monitoring that
// device.
func (s *server) checkMonitor(sup bridge.Supervisor, authed bool, id, line, mode string) (monitorTarget, *refusal) {
	var t monitorTarget
	mode = strings.ToLower(strings.TrimSpace(mode))
	switch mode {
	case "", "monitor", "listen", "silent":
	default:
		a, ok := bridge.ParseAction(mode)
		if !ok || a == bridge.ActionRecord {
			return t, &refusal{http.StatusUnprocessableEntity, "unknown_mode",
				fmt.Sprintf("Mode %q is not known; bib offers only silent monitoring (mode monitor) and refuses whisper and barge.", mode)}
		}
		if a != bridge.ActionMonitor {
			// Whisper, barge and tone: refused by the listen-only policy
			// whatever the device, with the gate's code and reason.
			if v := s.policy.Check(bridge.Device{}, a); !v.Allowed {
				return t, refuse(v)
			}
		}
	}
	if !s.auth.enabled() {
		return t, &refusal{http.StatusForbidden, "no_supervisors",
			"No supervisors are configured, so nobody may monitor calls; add supervisors with their monitors to the config."}
	}
	if !authed {
		return t, &refusal{http.StatusUnauthorized, "unauthenticated", "Sign in first: POST /api/v1/login."}
	}
	if line != "" {
		dev, ok := s.policy.DeviceByLine(line)
		if !ok {
			return t, refuse(bridge.UnknownDeviceVerdict(bridge.ActionMonitor, line))
		}
		if !sup.MayMonitor(line) {
			return t, &refusal{http.StatusForbidden, "out_of_scope",
				fmt.Sprintf("Supervisor %s may not monitor line %s; add it to the supervisor's monitors.", sup.User, line)}
		}
		if v := s.policy.Check(dev, bridge.ActionMonitor); !v.Allowed {
			return t, refuse(v)
		}
		if id = s.callOnLine(line); id == "" {
			return t, &refusal{http.StatusNotFound, "no_active_call",
				fmt.Sprintf("Line %s has no connected call to monitor; try again once the agent is on a call.", line)}
		}
	}
	ci, ok := s.sip.Call(id)
	if !ok {
		return t, &refusal{http.StatusNotFound, "unknown_call", "No active call has that id."}
	}
	roles := s.policy.NearEnd(ci.Caller, ci.Callee)
	if roles.Mode == bridge.NearEndNone {
		return t, refuse(bridge.UnknownDeviceVerdict(bridge.ActionMonitor, ci.Callee))
	}
	var first *refusal
	for _, side := range []bridge.Side{bridge.SideA, bridge.SideB} {
		pr := roles.Party(side)
		if !pr.Configured || !sup.MayMonitor(pr.Device.Line) || (line != "" && pr.Device.Line != line) {
			continue
		}
		if v := pr.Monitor; !v.Allowed {
			if first == nil {
				first = refuse(v)
			}
			continue
		}
		c, ok := s.engine.Call(id)
		if !ok || ci.Answer == nil {
			return t, &refusal{http.StatusConflict, "not_answered", "The call has no media yet (not answered); try again once it is connected."}
		}
		return monitorTarget{call: c, side: side, line: pr.Device.Line, user: sup.User}, nil
	}
	if first != nil {
		return t, first
	}
	return t, &refusal{http.StatusForbidden, "out_of_scope",
		fmt.Sprintf("Supervisor %s may not monitor the agent line(s) %s of this call; add them to the supervisor's monitors.", sup.User, strings.Join(agentLines(s.policy, ci.Caller, ci.Callee), ", "))}
}

// callOnLine returns the id of the most recent answered call whose agent
// (a configured device) is on line; "" if there is none.
func (s *server) callOnLine(line string) string {
	calls := s.sip.Calls() // oldest first
	for i := len(calls) - 1; i >= 0; i-- {
		ci := calls[i]
		if ci.Answer == nil || ci.End != nil {
			continue
		}
		for _, l := range agentLines(s.policy, ci.Caller, ci.Callee) {
			if l == line {
				return ci.ID
			}
		}
	}
	return ""
}

// handleListen is WHEP's POST: an SDP offer in, 201 with the answer and
// the session's URL out.
func (s *server) handleListen(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	mode := r.URL.Query().Get("mode")
	for _, h := range []string{"X-Bib-Mode", "X-Monitor-Mode"} {
		if v := r.Header.Get(h); v != "" && mode == "" {
			mode = v
		}
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxOfferBytes+1))
	if err != nil || len(body) > maxOfferBytes {
		writeJSONError(w, http.StatusRequestEntityTooLarge, "offer_too_large", "The SDP offer is larger than 64 KiB.")
		return
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	offer := string(body)
	switch ct {
	case "application/sdp":
	case "application/json":
		var req listenRequest
		if err := json.Unmarshal(body, &req); err != nil {
			writeJSONError(w, http.StatusBadRequest, "bad_request", `Send the SDP offer as application/sdp, or JSON {"sdp": "...", "mode": "monitor"}.`)
			return
		}
		offer = req.SDP
		if req.Mode != "" {
			mode = req.Mode
		}
	default:
		// Checked after the mode so that a whisper or barge request is
		// refused for what it is, whatever its body.
		offer = ""
	}
	t, ref := s.authorizeMonitor(r, id, mode)
	if ref != nil {
		s.log.Warn("monitoring refused", "call_id", id, "mode", mode, "error", ref.code, "reason", ref.reason, "remote", r.RemoteAddr)
		writeJSONError(w, ref.status, ref.code, ref.reason)
		return
	}
	if offer == "" {
		writeJSONError(w, http.StatusUnsupportedMediaType, "bad_offer", "Send the browser's SDP offer with Content-Type: application/sdp.")
		return
	}
	answer, sess, err := s.mon.addWHEP(r.Context(), t.call, offer, t.user, t.side, t.line)
	switch {
	case errors.Is(err, bridge.ErrWHEPOffer), errors.Is(err, bridge.ErrWHEPNoPCMU), errors.Is(err, bridge.ErrWHEPDirection):
		writeJSONError(w, http.StatusBadRequest, "bad_offer", err.Error())
		return
	case errors.Is(err, bridge.ErrPortsExhausted):
		writeJSONError(w, http.StatusServiceUnavailable, "ports_exhausted", "No RTP port is free for another listener; try again later.")
		return
	case errors.Is(err, bridge.ErrClosed), errors.Is(err, errMonitorsClosed):
		writeJSONError(w, http.StatusGone, "call_ended", "The call ended.")
		return
	case err != nil:
		s.log.Error("starting a browser listening session", "call_id", id, "err", err)
		writeJSONError(w, http.StatusInternalServerError, "listen_failed", "The listening session could not be set up.")
		return
	}
	w.Header().Set("Content-Type", "application/sdp")
	w.Header().Set("Location", "/api/v1/calls/"+id+"/listen/"+sess.ID())
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusCreated)
	io.WriteString(w, answer)
}

// writeMonitorMetrics appends the monitoring counters to /metrics.
func (s *server) writeMonitorMetrics(w io.Writer) {
	fmt.Fprintf(w, "# HELP bib_supervisor_packets_dropped_total Packets supervisors sent to bib (RTP, DTMF, RTCP); all dropped, never relayed, mixed or recorded.\n# TYPE bib_supervisor_packets_dropped_total counter\nbib_supervisor_packets_dropped_total %d\n", s.mon.dropped())
	fmt.Fprintf(w, "# HELP bib_monitor_sessions_active Supervisors listening now (browser and SIP).\n# TYPE bib_monitor_sessions_active gauge\nbib_monitor_sessions_active %d\n", s.mon.active())
	fmt.Fprintf(w, "# HELP bib_monitor_sessions_total Listening sessions started (browser and SIP).\n# TYPE bib_monitor_sessions_total counter\nbib_monitor_sessions_total %d\n", s.mon.sessionsTotal.Load())
	k := s.sip.MonitorCounters()
	fmt.Fprintf(w, "# HELP bib_monitor_sip_sessions_active SIP supervisors listening now.\n# TYPE bib_monitor_sip_sessions_active gauge\nbib_monitor_sip_sessions_active %d\n", k.Active)
	fmt.Fprintf(w, "# HELP bib_monitor_sip_refused_total Monitoring INVITEs refused (authentication, mode, scope, gate, SDP).\n# TYPE bib_monitor_sip_refused_total counter\nbib_monitor_sip_refused_total %d\n", k.Refused)
}
