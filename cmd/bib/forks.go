package main

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/bib-project/bib/bridge"
	"github.com/bib-project/bib/sip"
)

// RecordingProfile is one entry of recording_profiles: where a device's
// calls are forked for an external recorder (README: "Recording forks for recorder vendors").
type RecordingProfile struct {
	// Name is what devices[].recording_profile refers to. Required, unique.
	Name string `yaml:"name"`
	// Destination is the recorder's SIP URI, e.g. sip:rec@10.0.0.5:5060. Required.
	Destination string `yaml:"destination"`
	// Protocol is cucm (two INVITEs per call, near end then far end) or
	// siprec (RFC 7866). Default cucm.
	Protocol string `yaml:"protocol"`
	// Offer is delayed (INVITE without SDP; the recorder offers in its 200,
	// bib answers in the ACK) or early. Default delayed for cucm, early
	// (the only choice) for siprec.
	Offer string `yaml:"offer"`
	// Transport is udp or tcp. Default: the URI's transport parameter, else
	// udp for cucm and tcp for siprec (its INVITE exceeds 1300 bytes).
	Transport string `yaml:"transport"`
	// Failover lists further recorder URIs tried in order when the
	// destination refuses, fails (5xx), times out or dies mid-call.
	Failover []string `yaml:"failover"`
	// Timeout bounds each INVITE to one destination (duration). Default 3s.
	Timeout bridge.Duration `yaml:"timeout"`
	// Keepalive is the interval of in-dialog OPTIONS that detect a dead
	// recorder mid-call (duration; 0 = default 10s).
	Keepalive bridge.Duration `yaml:"keepalive"`
	// SRTPFallback: a secure (SRTP) call may be forked in plain RTP to a
	// recorder without SRTP. Default false: a secure call is forked only to
	// recorders that take SRTP; one that does not is a failed destination
	// (the failover list is tried).
	SRTPFallback bool `yaml:"srtp_fallback"`
}

// forkProfile turns the config entry into the sip package's profile.
func (p RecordingProfile) forkProfile() sip.ForkProfile {
	proto := strings.ToLower(p.Protocol)
	if proto == "" {
		proto = sip.ForkCUCM
	}
	return sip.ForkProfile{
		Name: p.Name, Destinations: append([]string{p.Destination}, p.Failover...),
		Protocol: proto, Offer: strings.ToLower(p.Offer), Transport: strings.ToLower(p.Transport),
		Timeout: time.Duration(p.Timeout), Keepalive: time.Duration(p.Keepalive),
		SRTPFallback: p.SRTPFallback,
	}
}

// Validate checks the profile; keys are relative ("destination", "failover[0]").
func (p RecordingProfile) Validate() error {
	if p.Timeout < 0 {
		return fmt.Errorf("timeout: %s is negative", time.Duration(p.Timeout))
	}
	if p.Keepalive < 0 {
		return fmt.Errorf("keepalive: %s is negative", time.Duration(p.Keepalive))
	}
	return p.forkProfile().Validate()
}

// ValidateRecordingProfiles validates recording_profiles, naming the entry
// (recording_profiles[i].key), and checks names are unique.
func ValidateRecordingProfiles(ps []RecordingProfile) error {
	seen := map[string]bool{}
	for i, p := range ps {
		if err := p.Validate(); err != nil {
			return fmt.Errorf("recording_profiles[%d].%w", i, err)
		}
		if seen[strings.ToLower(p.Name)] {
			return fmt.Errorf("recording_profiles[%d].name: %q is used twice", i, p.Name)
		}
		seen[strings.ToLower(p.Name)] = true
	}
	return nil
}

// profileFor returns the profile a device's forks use: its
// recording_profile, or the first profile when it names none.
func profileFor(ps []RecordingProfile, dev bridge.Device) (RecordingProfile, bool) {
	if len(ps) == 0 {
		return RecordingProfile{}, false
	}
	if dev.RecordingProfile == "" {
		return RecordingProfile{}, false
	}
	for _, p := range ps {
		if strings.EqualFold(p.Name, dev.RecordingProfile) {
			return p, true
		}
	}
	return RecordingProfile{}, false
}

// forkCall is what startForks needs to know about an answered call.
type forkCall struct {
	Info      sip.CallInfo
	Media     *bridge.Call
	Near      bridge.Side   // the agent's side
	Device    bridge.Device // the agent's device
	FarDevice string        // the other party's device name, if it is one of ours
	Verdict   bridge.Verdict
	ClusterID string
	RefCI     [2]string // per side
}

// startForks starts the recording forks of one near end when its device
// records (automatic at answer; selective when the API asks) and has a
// profile, and the gate allows recording. It returns nil without error when
// nothing is to be forked. The call is never affected by a fork's failure:
// failures become fork events (onEvent), metrics and one log line.
func startForks(ss *sip.Server, profiles []RecordingProfile, fc forkCall, metrics *sip.ForkMetrics, onEvent func(sip.ForkEvent), log *slog.Logger) (*sip.ForkSession, error) {
	if fc.Device.Recording == bridge.RecordingDisabled || fc.Device.Recording == "" || !fc.Verdict.Allowed {
		return nil, nil
	}
	prof, ok := profileFor(profiles, fc.Device)
	if !ok {
		return nil, nil
	}
	near, far := forkParties(fc)
	req := sip.ForkRequest{
		Profile:   prof.forkProfile(),
		Near:      fc.Near,
		NearParty: near,
		FarParty:  far,
		Metrics:   metrics,
		OnEvent:   onEvent,
	}
	return ss.StartFork(fc.Media, req, log)
}

// forkParties names the near and far ends of a fork (x-* parameters,
// SIPREC participants).
func forkParties(fc forkCall) (near, far sip.ForkParty) {
	ci := fc.Info
	party := func(s bridge.Side) (user, name string) {
		if s == bridge.SideA {
			return ci.Caller, ci.CallerName
		}
		return ci.Callee, ci.CalleeName
	}
	nearUser, nearName := party(fc.Near)
	farUser, farName := party(fc.Near.Other())
	nearAddr := fc.Device.Line
	if nearAddr == "" {
		nearAddr = nearUser
	}
	near = sip.ForkParty{Name: nearName, Addr: nearAddr, Device: fc.Device.Name, RefCI: fc.RefCI[fc.Near], ClusterID: fc.ClusterID}
	far = sip.ForkParty{Name: farName, Addr: farUser, Device: fc.FarDevice, RefCI: fc.RefCI[fc.Near.Other()], ClusterID: fc.ClusterID}
	return near, far
}
