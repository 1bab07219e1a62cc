package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/bib-project/bib/bridge"
	"github.com/bib-project/bib/sip"
)

// onTransfer follows a completed blind transfer: the party of t.Side was
// replaced by t.Target (sip/transfer.go). As on the call manager
// (PROTOCOL.md section 1):
//   - the call's legs get new refci values;
//   - a near end that left (the transferor was an agent) has its recording
//     finalized and its forks ended;
//   - a near end that stayed keeps its local recording (a "transfer"
//     event names the new far end) and its forks are told: call-manager
//     forks end and new ones start with the new refci, a SIPREC session
//     gets a metadata re-INVITE;
//   - a transfer target that is one of our devices and records
//     automatically gets its own recording, as on a new call.
func (s *server) onTransfer(ci sip.CallInfo, t sip.TransferInfo) {
	cs, ok := s.callState(ci.ID)
	if !ok {
		return
	}
	gone, stay := t.Side, t.Side.Other()
	cs.mu.Lock()
	cs.info = ci
	cs.roles = s.policy.NearEnd(ci.Caller, ci.Callee)
	cs.refci[0], cs.refci[1] = refciSeq.Add(1), refciSeq.Add(1)
	goneRec := cs.recs[gone]
	stayRec, stayFork := cs.recs[stay], cs.forks[stay]
	var near, far sip.ForkParty
	if stayFork != nil {
		near, far = forkParties(s.forkCallLocked(cs, stay))
	}
	newFar := cs.roles.Party(gone)
	cs.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	detail := fmt.Sprintf("transferred by %s to %s", t.Transferor.User, t.Target.User)
	if newFar.Configured {
		detail += " (" + newFar.Device.Name + ")"
	}
	detail += "; refci " + strconv.FormatUint(uint64(cs.refci[stay]), 10) + "/" + strconv.FormatUint(uint64(cs.refci[gone]), 10)
	if goneRec != nil {
		_ = goneRec.Note(ctx, "transfer", detail+"; the near end left the call")
		if err := s.stopRecording(ctx, cs, gone); err != nil {
			s.log.Warn("recording of the transferor did not finish cleanly", "call_id", ci.ID, "err", err)
		}
	} else {
		s.stopForks(cs, gone)
	}
	// Supervisors were allowed to listen to the agent who left, not to the
	// call that goes on without them.
	s.endMonitoring(ctx, ci.ID, gone, "the monitored agent transferred the call and left")
	if stayRec != nil {
		_ = stayRec.Note(ctx, "transfer", detail)
	}
	if stayFork != nil {
		stayFork.UpdateParties(near, far, true)
	}
	s.log.Info("call transferred", "call_id", ci.ID, "side", gone.String(), "from", t.Transferor.User, "to", t.Target.User)

	// The target's own context, if it is an agent device that records.
	pr := cs.roles.Party(gone)
	if pr.Configured && pr.Device.Recording == bridge.RecordingAutomatic && pr.Record.Allowed {
		if err := s.startRecording(cs, gone, false); err != nil && err != errAlreadyRecording {
			s.log.Error("automatic recording of the transfer target did not start", "call_id", ci.ID, "err", err)
		}
	}
}

// onIdentity follows a party's new asserted identity (a far end
// transferred in another system): each near end facing it notes the new
// far end in its recording, and its forks are told (call-manager forks get
// an UPDATE, SIPREC a metadata re-INVITE); refci values do not change.
func (s *server) onIdentity(ci sip.CallInfo, id sip.IdentityInfo) {
	cs, ok := s.callState(ci.ID)
	if !ok {
		return
	}
	near := id.Side.Other()
	cs.mu.Lock()
	cs.info = ci
	rec, fork := cs.recs[near], cs.forks[near]
	var np, fp sip.ForkParty
	if fork != nil {
		np, fp = forkParties(s.forkCallLocked(cs, near))
	}
	cs.mu.Unlock()
	detail := fmt.Sprintf("far end now %s", id.New.User)
	if id.New.Display != "" {
		detail += " (" + id.New.Display + ")"
	}
	detail += ", was " + id.Old.User
	if rec != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = rec.Note(ctx, "far_end_changed", detail)
		cancel()
	}
	if fork != nil {
		fork.UpdateParties(np, fp, false)
	}
}

// endMonitoring ends every supervisor session (browser and SIP) that
// monitors near-end side of a call.
func (s *server) endMonitoring(ctx context.Context, callID string, side bridge.Side, why string) {
	if s.mon == nil {
		return
	}
	for _, id := range s.mon.whepOnSide(callID, side) {
		s.mon.removeWHEP(callID, id, why)
	}
	for _, sm := range s.mon.sipSessions(callID) {
		sm.mu.Lock()
		sipCall := sm.sipCall
		sm.mu.Unlock()
		if sm.side == side && sipCall != "" {
			_ = s.sip.EndMonitor(ctx, sipCall, why)
		}
	}
}
