package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bib-project/bib/bridge"
	"github.com/bib-project/bib/recorder"
	"github.com/bib-project/bib/sip"
)

// callState is what bib serve keeps per answered call beyond signalling and
// media: the gate's roles and the local recordings running on it.
type callState struct {
	info  sip.CallInfo
	media *bridge.Call
	roles bridge.Roles
	refci [2]uint32 // per-leg call identifiers (x-refci style)

	mu     sync.Mutex
	recs   [2]*recorder.Recorder // per near-end side; nil when not recording
	forks  [2]*sip.ForkSession   // per near-end side; nil when not forking
	events []sip.ForkEvent       // what happened to the forks, for the call record
}

// recordingView is a call record's recording state for one near end.
type recordingView struct {
	Side   string `json:"side"`
	Device string `json:"device"`
	Mode   string `json:"mode"` // automatic | selective
	ID     string `json:"id,omitempty"`
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
}

// refciSeq hands out per-leg call identifiers; they look like a call
// manager's (decimal, increasing) and are unique within this process.
var refciSeq atomic.Uint32

func init() { refciSeq.Store(uint32(time.Now().Unix()%10_000_000) * 10) }

// startRecording starts a local recording with side s as the near end.
// The caller has checked the gate.
func (s *server) startRecording(cs *callState, side bridge.Side, selective bool) error {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.recs[side] != nil {
		return errAlreadyRecording
	}
	near, far := cs.roles.Party(side), cs.roles.Party(side.Other())
	ci := cs.info
	user := func(sd bridge.Side) (string, string) {
		if sd == bridge.SideA {
			return ci.Caller, ci.CallerName
		}
		return ci.Callee, ci.CalleeName
	}
	nearAddr, nearName := user(side)
	farAddr, farName := user(side.Other())
	info := recorder.CallInfo{
		CallID:      ci.ID,
		RefCI:       strconv.FormatUint(uint64(cs.refci[side]), 10),
		FarRefCI:    strconv.FormatUint(uint64(cs.refci[side.Other()]), 10),
		NearDevice:  near.Device.Name,
		NearLine:    near.Device.Line,
		NearAddr:    nearAddr,
		NearName:    nearName,
		FarDevice:   far.Device.Name,
		FarLine:     far.Device.Line,
		FarAddr:     farAddr,
		FarName:     farName,
		GateVerdict: near.Record,
		Media:       [2]bridge.MediaDesc{cs.media.Leg(bridge.SideA).Desc(), cs.media.Leg(bridge.SideB).Desc()},
		Answered:    cs.media.Answered(),
	}
	if selective {
		now := time.Now()
		info.Start, info.StartMono = now, cs.media.Now()
	}
	rec, err := recorder.New(s.cfg.Recording, info, s.store, s.log.With("call_id", ci.ID, "near", side.String()),
		recorder.WithNearSide(side), recorder.WithClock(cs.media.Now), recorder.WithMetrics(&s.recMetrics))
	if err != nil {
		return fmt.Errorf("start recording: %w", err)
	}
	if err := cs.media.AddTap(rec); err != nil {
		rec.Close()
		return fmt.Errorf("start recording: %w", err)
	}
	cs.recs[side] = rec
	s.log.Info("recording started", "call_id", ci.ID, "recording_id", rec.ID(), "near", side.String(), "device", near.Device.Name)
	s.startForksLocked(cs, side)
	return nil
}

// startForksLocked starts the recording forks of near-end side s when its
// device has a recording profile. A recorder that is down or refuses never
// disturbs the call or the local recording: the failure is an event in
// the call record, a metric and one log line. cs.mu is held.
func (s *server) startForksLocked(cs *callState, side bridge.Side) {
	near := cs.roles.Party(side)
	if near.Device.RecordingProfile == "" || cs.forks[side] != nil {
		return
	}
	fc := s.forkCallLocked(cs, side)
	onEvent := func(ev sip.ForkEvent) {
		cs.mu.Lock()
		if len(cs.events) < 100 {
			cs.events = append(cs.events, ev)
		}
		cs.mu.Unlock()
	}
	f, err := startForks(s.sip, s.cfg.RecordingProfiles, fc, &s.forkMetrics, onEvent, s.log.With("call_id", cs.info.ID, "near", side.String()))
	if err != nil {
		s.log.Warn("recording fork not started", "call_id", cs.info.ID, "profile", near.Device.RecordingProfile, "err", err)
		cs.events = append(cs.events, sip.ForkEvent{At: time.Now(), Kind: "failed", Detail: err.Error()})
		return
	}
	cs.forks[side] = f
}

// forkCallLocked describes the call for the forks of near-end side s.
// cs.mu is held.
func (s *server) forkCallLocked(cs *callState, side bridge.Side) forkCall {
	near, far := cs.roles.Party(side), cs.roles.Party(side.Other())
	fc := forkCall{
		Info: cs.info, Media: cs.media, Near: side, Device: near.Device, Verdict: near.Record,
		ClusterID: s.policy.Cluster().ID,
		RefCI:     [2]string{strconv.FormatUint(uint64(cs.refci[0]), 10), strconv.FormatUint(uint64(cs.refci[1]), 10)},
	}
	if far.Configured {
		fc.FarDevice = far.Device.Name
	}
	return fc
}

// stopForks ends the forks of one side (or both with all).
func (s *server) stopForks(cs *callState, sides ...bridge.Side) {
	cs.mu.Lock()
	var fs []*sip.ForkSession
	for _, sd := range sides {
		if f := cs.forks[sd]; f != nil {
			fs = append(fs, f)
			cs.forks[sd] = nil
		}
	}
	cs.mu.Unlock()
	for _, f := range fs {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		f.Stop(ctx, "recording stopped")
		cancel()
	}
}

// stopRecording finalizes the recording of near-end side s.
func (s *server) stopRecording(ctx context.Context, cs *callState, side bridge.Side) error {
	cs.mu.Lock()
	rec := cs.recs[side]
	cs.recs[side] = nil
	cs.mu.Unlock()
	if rec == nil {
		return errNotRecording
	}
	cs.media.RemoveTap(rec)
	s.stopForks(cs, side)
	err := rec.Stop(ctx)
	return errors.Join(err, rec.Close())
}

var (
	errAlreadyRecording = errors.New("already recording")
	errNotRecording     = errors.New("not recording")
)

// autoRecord starts the automatic recordings an answered call is entitled
// to: one per near end whose device records automatically and whose gate
// allows it.
func (s *server) autoRecord(cs *callState) {
	for _, side := range []bridge.Side{bridge.SideA, bridge.SideB} {
		pr := cs.roles.Party(side)
		if !pr.Configured || pr.Device.Recording != "automatic" {
			continue
		}
		if !pr.Record.Allowed {
			s.log.Info("not recording: gate refused", "call_id", cs.info.ID, "device", pr.Device.Name, "reason", pr.Record.Reason)
			continue
		}
		if err := s.startRecording(cs, side, false); err != nil {
			s.recMetrics.WriteErrors.Add(1)
			s.log.Error("automatic recording did not start", "call_id", cs.info.ID, "err", err)
		}
	}
}

// endRecordings closes a finished call's recorders; the call's EvEnd has
// already told them to finalize.
func (s *server) endRecordings(cs *callState) {
	s.stopForks(cs, bridge.SideA, bridge.SideB)
	cs.mu.Lock()
	recs := cs.recs
	cs.recs = [2]*recorder.Recorder{}
	cs.mu.Unlock()
	for _, r := range recs {
		if r != nil {
			if err := r.Close(); err != nil {
				s.log.Warn("recording close", "call_id", cs.info.ID, "err", err)
			}
		}
	}
}

func (cs *callState) recordingViews() []recordingView {
	var out []recordingView
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for _, side := range []bridge.Side{bridge.SideA, bridge.SideB} {
		pr := cs.roles.Party(side)
		if !pr.Configured || pr.Device.Recording == "" || pr.Device.Recording == "disabled" {
			continue
		}
		v := recordingView{Side: side.String(), Device: pr.Device.Name, Mode: pr.Device.Recording, Status: "off"}
		if !pr.Record.Allowed {
			v.Status, v.Reason = "refused", pr.Record.Reason
		} else if r := cs.recs[side]; r != nil {
			st := r.Stats()
			v.ID, v.Status, v.Reason = r.ID(), string(st.Status), st.Reason
		}
		out = append(out, v)
	}
	return out
}

// handleRecordingControl is POST /api/v1/calls/{id}/recording
// {"action":"start"|"stop"|"pause"|"resume", "side":"a"|"b" (optional)}.
func (s *server) handleRecordingControl(w http.ResponseWriter, r *http.Request) {
	cs, ok := s.callState(r.PathValue("id"))
	if !ok {
		writeJSONError(w, http.StatusNotFound, "unknown_call", "No answered call has that id.")
		return
	}
	var req struct {
		Action string `json:"action"`
		Side   string `json:"side"`
		Tone   bool   `json:"tone"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil {
		writeJSONError(w, http.StatusBadRequest, "bad_request", "Body must be JSON like {\"action\":\"start\"}.")
		return
	}
	if req.Tone {
		v := s.policy.Gate(bridge.Device{}, bridge.ActionTone)
		writeJSONError(w, http.StatusForbidden, v.Code, v.Reason)
		return
	}
	// Which near end: the one asked for, else the only one.
	var side bridge.Side
	switch {
	case req.Side == "a" || req.Side == "b":
		side = bridge.SideA
		if req.Side == "b" {
			side = bridge.SideB
		}
		if !cs.roles.Party(side).Configured {
			writeJSONError(w, http.StatusBadRequest, "not_a_device", "That side of the call is not a configured device.")
			return
		}
	case cs.roles.Mode == bridge.NearEndA:
		side = bridge.SideA
	case cs.roles.Mode == bridge.NearEndB:
		side = bridge.SideB
	case cs.roles.Mode == bridge.NearEndBoth:
		writeJSONError(w, http.StatusBadRequest, "side_required", "Both parties are configured devices; say which with \"side\": \"a\" or \"b\".")
		return
	default:
		writeJSONError(w, http.StatusForbidden, bridge.CodeUnknownDevice, "Neither party of this call is a configured device, so bib only relays it.")
		return
	}
	pr := cs.roles.Party(side)
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	var err error
	switch req.Action {
	case "start":
		if !pr.Record.Allowed {
			writeJSONError(w, http.StatusForbidden, pr.Record.Code, pr.Record.Reason)
			return
		}
		err = s.startRecording(cs, side, true)
	case "stop":
		err = s.stopRecording(ctx, cs, side)
	case "pause", "resume":
		cs.mu.Lock()
		rec := cs.recs[side]
		cs.mu.Unlock()
		if rec == nil {
			err = errNotRecording
		} else if req.Action == "pause" {
			err = rec.Pause(ctx)
		} else {
			err = rec.Resume(ctx)
		}
	default:
		writeJSONError(w, http.StatusBadRequest, "bad_action", "action must be start, stop, pause or resume.")
		return
	}
	switch {
	case errors.Is(err, errAlreadyRecording):
		writeJSONError(w, http.StatusConflict, "already_recording", "This call is already being recorded for that device.")
	case errors.Is(err, errNotRecording):
		writeJSONError(w, http.StatusConflict, "not_recording", "This call is not being recorded for that device.")
	case err != nil:
		s.log.Error("recording control", "call_id", cs.info.ID, "action", req.Action, "err", err)
		writeJSONError(w, http.StatusInternalServerError, "recording_error", err.Error())
	default:
		respondJSON(w, http.StatusOK, map[string]any{"recordings": cs.recordingViews()})
	}
}
