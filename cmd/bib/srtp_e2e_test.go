package main

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bib-project/bib/bridge"
	"github.com/bib-project/bib/bridge/codec"
	"github.com/bib-project/bib/sip"
	"github.com/bib-project/bib/sip/siptest"
	"github.com/bib-project/bib/storage"
	"github.com/pion/rtp"
)

func withSRTP(o *recorderOptions) { o.SRTP = true }

// TestSRTPRecordedAndForked: a secure call (both parties SRTP, SDES) through
// bib serve, recorded locally and forked. Each party gets the other's SRTP
// bytes unchanged; packets with a wrong key from the agent's own address
// are dropped, counted (call stats and /metrics) and kept out of the
// recording; the local recording is the decrypted audio sample for sample.
// Forks follow the rule for secure calls:
//   - cucm delayed: the first recorder takes no SRTP (it offers RTP/AVP),
//     so it is a failed destination and the failover recorder, which
//     offers RTP/SAVP, gets the forks encrypted with bib's keys;
//   - cucm early and SIPREC to an SRTP recorder: RTP/SAVP offered, taken;
//   - srtp_fallback: a recorder without SRTP gets a plain fork.
//
// Each recorder's recording equals what the parties sent, decrypted.
func TestSRTPRecordedAndForked(t *testing.T) {
	for _, tc := range []struct {
		name     string
		proto    string
		offer    string
		first    bool // the first destination takes SRTP
		fallback bool
	}{
		{"cucm delayed failover", sip.ForkCUCM, "delayed", false, false},
		{"cucm early", sip.ForkCUCM, "early", true, false},
		{"siprec", sip.ForkSIPREC, "", true, false},
		{"cucm fallback", sip.ForkCUCM, "delayed", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var first *recorderService
			if tc.first {
				first = startRecorderService(t, withSRTP)
			} else {
				first = startRecorderService(t)
			}
			second := startRecorderService(t, withSRTP)
			customer := newTestParty(t, "2000")
			agent := newTestParty(t, "1001")
			cfg := agentConfig(customer, bridge.RecordingAutomatic)
			cfg.Devices[0].RecordingProfile = "rec"
			prof := RecordingProfile{Name: "rec", Destination: "sip:rec@" + first.srv.Addr("udp").String(), Protocol: tc.proto, Offer: tc.offer,
				SRTPFallback: tc.fallback}
			if !tc.fallback {
				prof.Failover = []string{"sip:rec@" + second.srv.Addr("udp").String()}
			}
			cfg.RecordingProfiles = []RecordingProfile{prof}
			ts := startServer(t, cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
			defer cancel()

			ka, _ := bridge.NewSRTPKey(bridge.SuiteAES128SHA1_80)
			kc, _ := bridge.NewSRTPKey(bridge.SuiteAES128SHA1_32)
			got := answerNextWith(ctx, customer, customer.SDP(siptest.SDPOptions{Proto: "RTP/SAVP", Codecs: []string{"0", "101"}, Extra: siptest.CryptoLine(1, kc)}))
			bib := ts.sip.Addr("udp")
			uri := agent.URI()
			uri.User, uri.Host, uri.Port = "2000", bib.Addr().String(), int(bib.Port())
			ac, err := agent.Invite(ctx, uri, agent.SDP(siptest.SDPOptions{Proto: "RTP/SAVP", Codecs: []string{"0", "101"}, Extra: siptest.CryptoLine(1, ka)}))
			if err != nil {
				t.Fatal(err)
			}
			var cc *siptest.Call
			select {
			case cc = <-got:
			case <-ctx.Done():
				t.Fatal("customer got no call")
			}
			cs, _ := ts.callState(waitCallID(t, ctx, ts))
			f := startedFork(t, ctx, cs)

			sa, _ := siptest.NewSRTP(ka, &kc)
			sc, _ := siptest.NewSRTP(kc, &ka)
			wrong, _ := siptest.NewSRTP(kc, nil) // the customer's key, from the agent's address
			enc, _ := codec.NewEncoder("PCMU")
			var pa, pc float64
			var plainA, plainC, sentA, sentC [][]byte
			tick := time.NewTicker(20 * time.Millisecond)
			const n = 50
			for i := range n {
				<-tick.C
				a, c := make([]byte, 160), make([]byte, 160)
				enc.Encode(a, codec.AppendTone(nil, 160, 440, 8000, 0.3, &pa))
				enc.Encode(c, codec.AppendTone(nil, 160, 1000, 8000, 0.25, &pc))
				plainA, plainC = append(plainA, a), append(plainC, c)
				pktA := sa.Seal(siptest.RTPPacket(0xA, uint16(i), uint32(i*160), 0, a))
				pktC := sc.Seal(siptest.RTPPacket(0xC, uint16(i), uint32(i*160), 0, c))
				sentA, sentC = append(sentA, pktA), append(sentC, pktC)
				ac.SendRTP(pktA)
				cc.SendRTP(pktC)
				if i%5 == 0 {
					loud := make([]byte, 160)
					ac.SendRTP(wrong.Seal(siptest.RTPPacket(0xA, uint16(1000+i), uint32(i*160), 0, loud)))
				}
			}
			tick.Stop()
			expectEachOther(t, ctx, agent, customer, sentA, sentC)
			time.Sleep(100 * time.Millisecond)
			ci, _ := ts.sip.Call(cs.info.ID)
			if l := ci.Media.Legs[0]; !l.SRTP || l.SRTPAuthFailed != n/5 {
				t.Errorf("agent leg: srtp %v auth failures %d, want %d", l.SRTP, l.SRTPAuthFailed, n/5)
			}
			if v := metricValue(t, ts, `bib_rtp_dropped_total{reason="srtp_auth"}`); v != n/5 {
				t.Errorf("metric srtp_auth %d, want %d", v, n/5)
			}
			if err := ac.Bye(ctx); err != nil {
				t.Fatal(err)
			}

			// The local recording: decrypted, sample for sample.
			_, left, right := finishedRecordingChannels(t, ctx, ts, "")
			checkForkChannel(t, "local near (left)", left, plainA)
			checkForkChannel(t, "local far (right)", right, plainC)

			// The fork.
			evs := f.Events()
			kinds := make([]string, len(evs))
			for i, e := range evs {
				kinds[i] = e.Kind + ": " + e.Detail
			}
			target := first
			switch {
			case tc.fallback:
				if !slices.ContainsFunc(evs, func(e sip.ForkEvent) bool { return e.Kind == "srtp_fallback" }) {
					t.Errorf("no srtp_fallback event: %v", kinds)
				}
			case !tc.first:
				target = second
				if !slices.ContainsFunc(evs, func(e sip.ForkEvent) bool {
					return e.Kind == "failed" && strings.Contains(e.Detail, "does not support SRTP")
				}) || !slices.ContainsFunc(evs, func(e sip.ForkEvent) bool { return e.Kind == "failover" }) {
					t.Errorf("fork events: %v", kinds)
				}
				if list, _, _ := first.store.List(ctx, storage.Query{}); len(list) != 0 {
					t.Errorf("the recorder without SRTP recorded %d sessions of a secure call", len(list))
				}
			}
			m := waitRecorderRecordings(t, ctx, target, 1)[0]
			fl, fr := readForkStereo(t, ctx, target.store, m.ID)
			checkForkChannel(t, "fork near (left)", fl, plainA)
			checkForkChannel(t, "fork far (right)", fr, plainC)
		})
	}
}

// TestSRTPMonitorSecureCall: a secure call may only be monitored on a
// secure supervisor leg. A SIP supervisor offering plain RTP is refused
// (488, with the reason); one offering RTP/SAVP gets bib's key in the
// answer and a mix it decrypts to both parties' tones.
func TestSRTPMonitorSecureCall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	agent, customer := newTestParty(t, "1001"), newTestParty(t, "2001")
	ts := startServer(t, monitorConfig(customer))
	ka, _ := bridge.NewSRTPKey(bridge.SuiteAES128SHA1_80)
	kc, _ := bridge.NewSRTPKey(bridge.SuiteAES128SHA1_80)
	got := answerNextWith(ctx, customer, customer.SDP(siptest.SDPOptions{Proto: "RTP/SAVP", Codecs: []string{"0", "101"}, Extra: siptest.CryptoLine(1, kc)}))
	ac, err := agent.Invite(ctx, bibURI(ts, "2001"), agent.SDP(siptest.SDPOptions{Proto: "RTP/SAVP", Codecs: []string{"0", "101"}, Extra: siptest.CryptoLine(1, ka)}))
	if err != nil {
		t.Fatal(err)
	}
	var cc *siptest.Call
	select {
	case cc = <-got:
	case <-ctx.Done():
		t.Fatal("customer got no call")
	}
	waitCallID(t, ctx, ts)

	sup := sipSupervisor(t, "boss", "boss-secret")
	if _, err := sup.Invite(ctx, bibURI(ts, "monitor-1001"), sup.SDP(siptest.SDPOptions{Codecs: []string{"0", "101"}})); err == nil ||
		!strings.Contains(err.Error(), "488") {
		t.Fatalf("plain supervisor leg on a secure call: %v", err)
	}
	ks, _ := bridge.NewSRTPKey(bridge.SuiteAES128SHA1_80)
	sc, err := sup.Invite(ctx, bibURI(ts, "monitor-1001"), sup.SDP(siptest.SDPOptions{Proto: "RTP/SAVP", Codecs: []string{"0", "101"}, Extra: siptest.CryptoLine(1, ks)}))
	if err != nil {
		t.Fatalf("SRTP supervisor: %v", err)
	}
	_, keys, err := siptest.ParseCrypto(sc.Response().Body())
	if err != nil || len(keys) != 1 {
		t.Fatalf("no key in bib's answer: %v\n%s", err, sc.Response().Body())
	}
	open, _ := siptest.NewSRTP(ks, &keys[0])
	sa, _ := siptest.NewSRTP(ka, nil)
	scc, _ := siptest.NewSRTP(kc, nil)
	const n = 120
	sendA, sendC := toneStream(440, n), toneStream(1000, n)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for i := range n {
		<-tick.C
		ac.SendRTP(sa.Seal(siptest.RTPPacket(0xA1, uint16(i), uint32(160*i), 0, sendA[i])))
		cc.SendRTP(scc.Seal(siptest.RTPPacket(0xC3, uint16(i), uint32(160*i), 0, sendC[i])))
	}
	time.Sleep(200 * time.Millisecond)
	var pkts []*rtp.Packet
	for _, r := range sup.Received() {
		plain, err := open.Open(r.Data)
		if err != nil {
			t.Fatalf("supervisor cannot open a mix packet: %v", err)
		}
		p := &rtp.Packet{}
		if err := p.Unmarshal(plain); err != nil {
			t.Fatal(err)
		}
		pkts = append(pkts, p)
	}
	checkMix(t, "SRTP supervisor", pkts)
	_ = ac.Bye(ctx)
}
