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

// authorizeMonitor decides whether the request's supervisor may silently
// monitor call id in the given mode. The checks, in order: the mode
// (whisper, barge, tone and anything but monitor are refused with the
// gate's reason), the call exists and is answered, it has an agent (a
// configured device), the agent's line is in the supervisor's monitoring
// search space, and the gate allows monitoring that device.
func (s *server) authorizeMonitor(r *http.Request, id, mode string) (monitorTarget, *refusal) {
	var t monitorTarget
	mode = strings.ToLower(strings.TrimSpace(mode))
	action := bridge.ActionMonitor
	switch mode {
	case "", "monitor", "listen", "silent":
	default:
		a, ok := bridge.ParseAction(mode)
		if !ok {
			return t, &refusal{http.StatusUnprocessableEntity, "unknown_mode",
				fmt.Sprintf("Mode %q is not known; bib offers only silent monitoring (mode monitor) and refuses whisper and barge.", mode)}
		}
		action = a
	}
	ci, ok := s.sip.Call(id)
	if !ok {
		return t, &refusal{http.StatusNotFound, "unknown_call", "No active call has that id."}
	}
	roles := s.policy.NearEnd(ci.Caller, ci.Callee)
	if roles.Mode == bridge.NearEndNone {
		return t, refuse(bridge.UnknownDeviceVerdict(action, ci.Callee))
	}
	if action != bridge.ActionMonitor {
		// Whisper, barge and tone: refused by the listen-only policy
		// whatever the device, with the gate's code and reason.
		for _, side := range []bridge.Side{bridge.SideA, bridge.SideB} {
			if pr := roles.Party(side); pr.Configured {
				if v := s.policy.Check(pr.Device, action); !v.Allowed {
					return t, refuse(v)
				}
			}
		}
	}
	sup, authed := supervisorOf(r)
	if !s.auth.enabled() {
		return t, &refusal{http.StatusForbidden, "no_supervisors",
			"No supervisors are configured, so nobody may monitor calls; add supervisors with their monitors to the config."}
	}
	if !authed {
		return t, &refusal{http.StatusUnauthorized, "unauthenticated", "Sign in first: POST /api/v1/login."}
	}
	var first *refusal
	for _, side := range []bridge.Side{bridge.SideA, bridge.SideB} {
		pr := roles.Party(side)
		if !pr.Configured || !sup.MayMonitor(pr.Device.Line) {
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
	fmt.Fprintf(w, "# HELP bib_monitor_sessions_active Browser supervisors listening now.\n# TYPE bib_monitor_sessions_active gauge\nbib_monitor_sessions_active %d\n", s.mon.active())
	fmt.Fprintf(w, "# HELP bib_monitor_sessions_total Browser listening sessions started.\n# TYPE bib_monitor_sessions_total counter\nbib_monitor_sessions_total %d\n", s.mon.sessionsTotal.Load())
}
