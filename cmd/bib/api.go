package main

import (
	"fmt"
	"net/http"
	"net/http/pprof"

	"github.com/bib-project/bib/bridge"
	"github.com/bib-project/bib/sip"
)

// callView is a call record as the API shows it.
type callView struct {
	sip.CallInfo
	Gate       *bridge.CallGate `json:"gate,omitempty"`
	Recordings []recordingView  `json:"recordings,omitempty"`
	Forks      []sip.ForkEvent  `json:"fork_events,omitempty"`
}

func (s *server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /metrics", s.metrics)
	if s.cfg.HTTP.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("GET /api/v1/calls", func(w http.ResponseWriter, r *http.Request) {
		calls := s.sip.Calls()
		out := make([]callView, 0, len(calls))
		for _, ci := range calls {
			out = append(out, s.view(ci))
		}
		respondJSON(w, http.StatusOK, map[string]any{"calls": out})
	})
	mux.HandleFunc("GET /api/v1/calls/{id}", func(w http.ResponseWriter, r *http.Request) {
		ci, ok := s.sip.Call(r.PathValue("id"))
		if !ok {
			writeJSONError(w, http.StatusNotFound, "unknown_call", "No active call has that id.")
			return
		}
		respondJSON(w, http.StatusOK, s.view(ci))
	})
	mux.HandleFunc("DELETE /api/v1/calls/{id}", func(w http.ResponseWriter, r *http.Request) {
		if err := s.sip.Hangup(r.Context(), r.PathValue("id"), "api"); err != nil {
			writeJSONError(w, http.StatusNotFound, "unknown_call", err.Error())
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /api/v1/registrations", func(w http.ResponseWriter, r *http.Request) {
		respondJSON(w, http.StatusOK, map[string]any{"registrations": s.sip.Registrations()})
	})
	mux.HandleFunc("POST /api/v1/calls/{id}/recording", s.handleRecordingControl)
	registerDeviceRoutes(mux, s.policy)
	registerRecordingRoutes(mux, s.store, s.privKey, s.log)
	if s.cfg.ProblemReports.Enabled {
		registerProblemReportRoutes(mux, s.cfg.ProblemReports.Dir, s.cfg.ProblemReports.MaxBytes, s.log)
	}
	s.registerMonitorRoutes(mux)
	s.registerAuditRoutes(mux)
	return mux
}

func (s *server) view(ci sip.CallInfo) callView {
	v := callView{CallInfo: ci}
	if cs, ok := s.callState(ci.ID); ok {
		g := cs.roles.Summary()
		v.Gate = &g
		v.Recordings = cs.recordingViews()
		cs.mu.Lock()
		v.Forks = append([]sip.ForkEvent(nil), cs.events...)
		cs.mu.Unlock()
	}
	return v
}

// metrics writes Prometheus text exposition format (version 0.0.4).
func (s *server) metrics(w http.ResponseWriter, r *http.Request) {
	k := s.engine.Counters()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	m := func(name, typ, help string, v any) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n%s %v\n", name, help, name, typ, name, v)
	}
	m("bib_calls_active", "gauge", "Calls with media anchored now.", k.CallsActive)
	m("bib_calls_started_total", "counter", "Calls whose media was set up.", k.CallsStarted)
	m("bib_calls_ended_total", "counter", "Calls whose media was torn down.", k.CallsEnded)
	m("bib_media_timeouts_total", "counter", "Calls ended because no RTP flowed for media_timeout.", k.MediaTimeouts)
	m("bib_rtp_port_failures_total", "counter", "Calls refused because the RTP port range was exhausted.", k.PortFailures)
	m("bib_rtp_port_pairs_in_use", "gauge", "RTP/RTCP port pairs bound now.", k.PortsInUse)
	m("bib_rtp_port_pairs_capacity", "gauge", "RTP/RTCP port pairs in the configured range.", k.PortsCapacity)
	m("bib_rtp_packets_in_total", "counter", "Valid RTP packets received from parties.", k.PacketsIn)
	m("bib_rtp_bytes_in_total", "counter", "Bytes of valid RTP packets received from parties.", k.BytesIn)
	m("bib_rtp_packets_relayed_total", "counter", "RTP packets sent on to the other party.", k.PacketsOut)
	m("bib_rtcp_packets_total", "counter", "RTCP packets received from parties.", k.RTCP)
	rm := &s.recMetrics
	m("bib_recordings_active", "gauge", "Local recordings being written.", rm.Active.Load())
	m("bib_recordings_completed_total", "counter", "Local recordings finalized cleanly.", rm.Completed.Load())
	m("bib_recordings_failed_total", "counter", "Local recordings that failed (archive full or unwritable).", rm.Failed.Load())
	m("bib_recording_write_errors_total", "counter", "Archive write errors.", rm.WriteErrors.Load())
	m("bib_recording_overflow_packets_total", "counter", "Packets dropped by full recorder queues (written as gaps).", rm.Overflow.Load())
	fm := &s.forkMetrics
	m("bib_fork_attempts_total", "counter", "Recording fork sessions tried (INVITEs to recorders).", fm.Attempts.Load())
	m("bib_fork_started_total", "counter", "Recording fork sets established.", fm.Started.Load())
	m("bib_fork_failures_total", "counter", "Recorder destinations that refused, failed or timed out.", fm.Failures.Load())
	m("bib_fork_failovers_total", "counter", "Switches to the next recorder destination.", fm.Failovers.Load())
	m("bib_fork_lost_total", "counter", "Established forks whose recorder stopped answering.", fm.Lost.Load())
	m("bib_fork_codec_rejected_total", "counter", "Forks ended with Q.850 cause 47 (recorder cannot take the codec).", fm.CodecRejected.Load())
	m("bib_fork_exhausted_total", "counter", "Fork sets for which no recorder destination was left.", fm.Exhausted.Load())
	fmt.Fprintf(w, "# HELP bib_rtp_dropped_total Datagrams dropped at a call leg, by reason.\n# TYPE bib_rtp_dropped_total counter\n")
	fmt.Fprintf(w, "bib_rtp_dropped_total{reason=\"source\"} %d\n", k.DroppedSource)
	fmt.Fprintf(w, "bib_rtp_dropped_total{reason=\"malformed\"} %d\n", k.Malformed)
	fmt.Fprintf(w, "bib_rtp_dropped_total{reason=\"oversize\"} %d\n", k.Oversize)
	fmt.Fprintf(w, "bib_rtp_dropped_total{reason=\"no_destination\"} %d\n", k.NoDestination)
	fmt.Fprintf(w, "bib_rtp_dropped_total{reason=\"send_error\"} %d\n", k.SendErrors)
	fmt.Fprintf(w, "bib_rtp_dropped_total{reason=\"srtp_auth\"} %d\n", k.SRTPAuthFailed)
	fmt.Fprintf(w, "bib_rtp_dropped_total{reason=\"srtp_replay\"} %d\n", k.SRTPReplayed)
	s.writeMonitorMetrics(w)
	s.writeSecurityMetrics(w)
}
