package main

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bib-project/bib/bridge"
	"github.com/bib-project/bib/bridge/codec"
	"github.com/bib-project/bib/sip"
	"github.com/bib-project/bib/sip/siptest"
	"github.com/bib-project/bib/storage"
	sipmsg "github.com/emiago/sipgo/sip"
)

// TestTransferForks: a recorded agent's customer first shows a new
// identity (a transfer in another system: P-Asserted-Identity in a
// re-INVITE), then transfers the agent here (REFER) to a third party. The
// local recording goes on through both, with events; the forks behave as
// the call manager's do: call-manager style gets an UPDATE on both forks
// for the identity change, and for the transfer BYE plus new forks with new
// refci naming the new far end; SIPREC keeps one session and gets a
// metadata re-INVITE for each. bib recorder receives all of it.
func TestTransferForks(t *testing.T) {
	for _, proto := range []string{sip.ForkCUCM, sip.ForkSIPREC} {
		t.Run(proto, func(t *testing.T) {
			rs := startRecorderService(t)
			customer := newTestParty(t, "2000")
			target := newTestParty(t, "3000")
			agent := newTestParty(t, "1001")
			cfg := agentConfig(customer, bridge.RecordingAutomatic)
			cfg.Routes = append(cfg.Routes, sip.Route{Match: "3XXX", Target: "sip:${user}@" + target.SIPAddr.String()})
			cfg.Devices[0].RecordingProfile = "rec"
			cfg.RecordingProfiles = []RecordingProfile{{Name: "rec", Destination: "sip:rec@" + rs.srv.Addr("udp").String(), Protocol: proto}}
			ts := startServer(t, cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
			defer cancel()
			ac, bc := placeCall(t, ctx, ts, agent, customer)
			cs, _ := ts.callState(waitCallID(t, ctx, ts))
			f := startedFork(t, ctx, cs)
			cs.mu.Lock()
			refci0 := strconv.FormatUint(uint64(cs.refci[bridge.SideA]), 10)
			cs.mu.Unlock()
			talk := func(a, b *siptest.Call, n int, seq *uint16) {
				tick := time.NewTicker(20 * time.Millisecond)
				defer tick.Stop()
				for range n {
					<-tick.C
					*seq++
					a.SendRTP(siptest.RTPPacket(0xA, *seq, uint32(*seq)*160, 0, toneStream(440, 1)[0]))
					b.SendRTP(siptest.RTPPacket(0xB+uint32(len(b.CallID)), *seq, uint32(*seq)*160, 0, toneStream(1000, 1)[0]))
				}
			}
			var seq uint16
			talk(ac, bc, 15, &seq)

			// 1. The customer's side asserts a new identity.
			pai := sipmsg.NewHeader("P-Asserted-Identity", `"Remote Agent" <sip:4002@remote.example>`)
			until491(t, "re-INVITE", 200, func() (*sipmsg.Response, error) {
				return bc.ReInviteWith(ctx, customer.SDP(siptest.SDPOptions{Codecs: []string{"0", "101"}}), pai)
			})
			if proto == sip.ForkCUCM {
				waitForkEvent(t, ctx, f, "identity_updated", 1)
			} else {
				waitForkEvent(t, ctx, f, "metadata_updated", 1)
			}
			talk(ac, bc, 10, &seq)

			// 2. The customer transfers the agent to 3000.
			tc := transferTo(t, ctx, bc, target)
			select {
			case <-bc.Ended():
			case <-ctx.Done():
				t.Fatal("transferor got no BYE")
			}
			if proto == sip.ForkCUCM {
				waitForkEvent(t, ctx, f, "transferred", 1)
				waitForkEvent(t, ctx, f, "started", 2)
			} else {
				waitForkEvent(t, ctx, f, "metadata_updated", 2)
			}
			talk(ac, tc, 15, &seq)
			time.Sleep(100 * time.Millisecond)
			if err := ac.Bye(ctx); err != nil {
				t.Fatal(err)
			}

			// The local recording: one, complete, with both events.
			m := waitRecording(t, ctx, ts)
			if m.Status != storage.StatusComplete {
				t.Fatalf("local recording %s: %s", m.Status, m.Reason)
			}
			var kinds []string
			for _, ev := range m.Events {
				kinds = append(kinds, ev.Kind)
				if ev.Kind == "transfer" && !strings.Contains(ev.Detail, "to 3000") {
					t.Errorf("transfer event: %+v", ev)
				}
				if ev.Kind == "far_end_changed" && !strings.Contains(ev.Detail, "4002") {
					t.Errorf("far_end_changed event: %+v", ev)
				}
			}
			if !slices.Contains(kinds, "transfer") || !slices.Contains(kinds, "far_end_changed") {
				t.Errorf("local recording events %v", kinds)
			}

			// What the recorder received.
			want := 1
			if proto == sip.ForkCUCM {
				want = 2
			}
			recs := waitRecorderRecordings(t, ctx, rs, want)
			var idents [][]string
			for _, r := range recs {
				b, err := os.ReadFile(identificationPath(rs.opts.Data, r.ID))
				if err != nil {
					t.Fatal(err)
				}
				var id identification
				if err := json.Unmarshal(b, &id); err != nil {
					t.Fatal(err)
				}
				idents = append(idents, id.Identification)
			}
			all := strings.Join(slices.Concat(idents...), "\n")
			if proto == sip.ForkCUCM {
				// First pair: original refci and far end, then the UPDATE
				// with the new identity; second pair: new refci, far end 3000.
				var first, second []string
				for _, id := range idents {
					if strings.Contains(strings.Join(id, "\n"), "x-refci="+refci0+";") {
						first = id
					} else {
						second = id
					}
				}
				f1, f2 := strings.Join(first, "\n"), strings.Join(second, "\n")
				if !strings.Contains(f1, "x-farendaddr=2000") || !strings.Contains(f1, "UPDATE Contact:") || !strings.Contains(f1, "x-farendaddr=4002") {
					t.Errorf("first fork pair's identification:\n%s", f1)
				}
				if second == nil || strings.Contains(f2, "x-refci="+refci0+";") || !strings.Contains(f2, "x-farendaddr=3000") {
					t.Errorf("second fork pair's identification:\n%s", f2)
				}
			} else {
				docs := idents[0]
				if len(docs) < 3 || !strings.Contains(docs[1], "4002") || !strings.Contains(docs[len(docs)-1], "3000") {
					t.Errorf("SIPREC metadata documents:\n%s", all)
				}
				// One session throughout; the far ends that left are kept
				// with their disassociate-time (RFC 7865 section 6.6).
				sess := func(doc string) string {
					_, after, _ := strings.Cut(doc, `<session session_id="`)
					id, _, _ := strings.Cut(after, `"`)
					return id
				}
				last := docs[len(docs)-1]
				if sess(docs[0]) == "" || sess(last) != sess(docs[0]) || strings.Count(last, "<disassociate-time>") != 2 {
					t.Errorf("SIPREC metadata ids not kept across updates:\n%s", all)
				}
			}
		})
	}
}

func waitForkEvent(t *testing.T, ctx context.Context, f *sip.ForkSession, kind string, n int) {
	t.Helper()
	for {
		k := 0
		for _, e := range f.Events() {
			if e.Kind == kind {
				k++
			}
		}
		if k >= n {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("fork event %s x%d not seen: %+v", kind, n, f.Events())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// waitRecorderRecordings waits until the recorder's archive holds n
// finished recordings and returns them.
func waitRecorderRecordings(t *testing.T, ctx context.Context, rs *recorderService, n int) []storage.Meta {
	t.Helper()
	for {
		list, _, err := rs.store.List(ctx, storage.Query{})
		done := 0
		for _, m := range list {
			if m.Status != storage.StatusRecording {
				done++
			}
		}
		if err == nil && done >= n && len(list) == n {
			for _, m := range list {
				if m.Status != storage.StatusComplete {
					t.Fatalf("recorder recording %s: %s %s", m.ID, m.Status, m.Reason)
				}
			}
			return list
		}
		select {
		case <-ctx.Done():
			t.Fatalf("recorder recordings: %d finished of %d, want %d (%v)", done, len(list), n, err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestForkCodecChange: the call changes codec mid-call (PCMU -> PCMA by a
// re-INVITE); the recorder offered both, so each call-manager-style fork
// is re-negotiated by re-INVITE and the recorder's recording holds both
// halves, each decoded with its own codec, sample for sample.
func TestForkCodecChange(t *testing.T) {
	rs := startRecorderService(t)
	customer := newTestParty(t, "2000")
	agent := newTestParty(t, "1001")
	cfg := agentConfig(customer, bridge.RecordingAutomatic)
	cfg.Devices[0].RecordingProfile = "rec"
	cfg.RecordingProfiles = []RecordingProfile{{Name: "rec", Destination: "sip:rec@" + rs.srv.Addr("udp").String(), Protocol: sip.ForkCUCM}}
	ts := startServer(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ac, bc := placeCall(t, ctx, ts, agent, customer)
	cs, _ := ts.callState(waitCallID(t, ctx, ts))
	f := startedFork(t, ctx, cs)
	var seq uint16
	var sent [2][2][][]byte // [phase][party]
	talk := func(phase int, pt uint8, enc func([]int16) []byte) {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		var pa, pb float64
		for range 25 {
			<-tick.C
			seq++
			a := enc(codec.AppendTone(nil, 160, 440, 8000, 0.3, &pa))
			b := enc(codec.AppendTone(nil, 160, 1000, 8000, 0.25, &pb))
			sent[phase][0], sent[phase][1] = append(sent[phase][0], a), append(sent[phase][1], b)
			ac.SendRTP(siptest.RTPPacket(0xA, seq, uint32(seq)*160, pt, a))
			bc.SendRTP(siptest.RTPPacket(0xB, seq, uint32(seq)*160, pt, b))
		}
	}
	encoder := func(name string) func([]int16) []byte {
		e, _ := codec.NewEncoder(name)
		return func(pcm []int16) []byte {
			out := make([]byte, len(pcm))
			e.Encode(out, pcm)
			return out
		}
	}
	talk(0, 0, encoder("PCMU"))
	until491(t, "re-INVITE", 200, func() (*sipmsg.Response, error) {
		return bc.ReInvite(ctx, customer.SDP(siptest.SDPOptions{Codecs: []string{"8", "101"}}))
	})
	waitForkEvent(t, ctx, f, "renegotiated", 2)
	talk(1, 8, encoder("PCMA"))
	time.Sleep(100 * time.Millisecond)
	if err := ac.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	m := waitRecorderRecordings(t, ctx, rs, 1)[0]
	left, right := readForkStereo(t, ctx, rs.store, m.ID)
	for i, ch := range [][]int16{left, right} {
		for phase, name := range []string{"PCMU", "PCMA"} {
			dec, _ := codec.NewDecoder(name)
			var want []int16
			for _, p := range sent[phase][i] {
				buf := make([]int16, 160)
				want = append(want, buf[:dec.Decode(buf, p)]...)
			}
			if !containsRun(ch, want, len(want)) {
				t.Errorf("channel %d: the %s half is not in the recording sample for sample", i, name)
			}
		}
	}
}

// TestTransferEndsMonitoring: a supervisor listening to agent 1001 hears
// no more once the agent transferred the customer away and left: bib ends
// the monitoring session (BYE) while the customer's call goes on.
func TestTransferEndsMonitoring(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	agent, customer, target := newTestParty(t, "1001"), newTestParty(t, "2001"), newTestParty(t, "3001")
	cfg := monitorConfig(customer)
	cfg.Routes = append(cfg.Routes, sip.Route{Match: "3XXX", Target: "sip:${user}@" + target.SIPAddr.String()})
	ts := startServer(t, cfg)
	ac, bc := placeCall(t, ctx, ts, agent, customer)
	waitCallID(t, ctx, ts)
	sup := sipSupervisor(t, "boss", "boss-secret")
	sc, err := sup.Invite(ctx, bibURI(ts, "monitor-1001"), sup.SDP(siptest.SDPOptions{Codecs: []string{"0", "101"}}))
	if err != nil {
		t.Fatal(err)
	}
	tc := transferTo(t, ctx, ac, target)
	for _, w := range []struct {
		c    *siptest.Call
		what string
	}{{ac, "BYE to the transferring agent"}, {sc, "BYE to the supervisor"}} {
		select {
		case <-w.c.Ended():
		case <-ctx.Done():
			t.Fatal("no " + w.what)
		}
	}
	// The customer and the new party still talk.
	for i := range 5 {
		bc.SendRTP(siptest.RTPPacket(0xB, uint16(i), uint32(160*i), 0, make([]byte, 160)))
	}
	if _, err := target.WaitPackets(ctx, 5); err != nil {
		t.Fatal(err)
	}
	_ = tc.Bye(ctx)
}

// startedFork waits for the call's fork session of the agent (side A) and
// for its first fork set.
func startedFork(t *testing.T, ctx context.Context, cs *callState) *sip.ForkSession {
	t.Helper()
	var f *sip.ForkSession
	for f == nil {
		cs.mu.Lock()
		f = cs.forks[bridge.SideA]
		cs.mu.Unlock()
		if ctx.Err() != nil {
			t.Fatal("no fork session on the call")
		}
		time.Sleep(5 * time.Millisecond)
	}
	waitForkEvent(t, ctx, f, "started", 1)
	return f
}

// until491 sends a request again while bib answers 491 (still finishing
// the previous offer/answer) and wants the status want.
func until491(t *testing.T, what string, want int, send func() (*sipmsg.Response, error)) {
	t.Helper()
	for {
		res, err := send()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if res.StatusCode == want {
			return
		}
		if res.StatusCode != 491 {
			t.Fatalf("%s: %s", what, res.StartLine())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// answerNextWith answers p's next incoming call with sdp.
func answerNextWith(ctx context.Context, p *siptest.Party, sdp []byte) <-chan *siptest.Call {
	got := make(chan *siptest.Call, 1)
	go func() {
		select {
		case in := <-p.Incoming:
			_ = in.Answer(sdp)
			got <- in
		case <-ctx.Done():
		}
	}()
	return got
}

// transferTo has c transfer its call to target (REFER) and returns the
// target's answered call.
func transferTo(t *testing.T, ctx context.Context, c *siptest.Call, target *siptest.Party) *siptest.Call {
	t.Helper()
	got := answerNextWith(ctx, target, target.SDP(siptest.SDPOptions{Codecs: []string{"0", "101"}}))
	until491(t, "REFER", 202, func() (*sipmsg.Response, error) { return c.Refer(ctx, "<sip:"+target.User+"@127.0.0.1>") })
	select {
	case tc := <-got:
		return tc
	case <-ctx.Done():
		t.Fatal("transfer target got no call")
	}
	return nil
}
