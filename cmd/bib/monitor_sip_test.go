package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	sipmsg "github.com/emiago/sipgo/sip"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"

	"github.com/bib-project/bib/bridge/codec"
	"github.com/bib-project/bib/sip/siptest"
)

// bibURI is bib's SIP address for a Request-URI user.
func bibURI(ts *testServer, user string) sipmsg.Uri {
	a := ts.sip.Addr("udp")
	return sipmsg.Uri{Scheme: "sip", User: user, Host: a.Addr().String(), Port: int(a.Port())}
}

// sipSupervisor is a siptest party that authenticates with digest.
func sipSupervisor(t *testing.T, user, password string) *siptest.Party {
	t.Helper()
	p := newTestParty(t, user)
	p.AuthUser, p.AuthPassword = user, password
	return p
}

// checkMix checks a supervisor's received stream: one SSRC, sequence +1
// and timestamp +160 per packet, both parties' tones and not the
// supervisor's own 700 Hz.
func checkMix(t *testing.T, who string, pkts []*rtp.Packet) {
	t.Helper()
	if len(pkts) < 80 {
		t.Fatalf("%s got %d packets", who, len(pkts))
	}
	var pcm []int16
	for i, p := range pkts {
		if i > 0 && (p.SequenceNumber != pkts[i-1].SequenceNumber+1 || p.Timestamp != pkts[i-1].Timestamp+160 || p.SSRC != pkts[0].SSRC) {
			t.Fatalf("%s packet %d: seq %d ts %d ssrc %x after %d %d", who, i, p.SequenceNumber, p.Timestamp, p.SSRC, pkts[i-1].SequenceNumber, pkts[i-1].Timestamp)
		}
		if p.PayloadType != 0 {
			t.Fatalf("%s packet %d: payload type %d, want PCMU", who, i, p.PayloadType)
		}
		if i >= 10 {
			for _, b := range p.Payload {
				pcm = append(pcm, codec.UlawDecode(b))
			}
		}
	}
	if p4, p10, p7 := codec.Goertzel(pcm, 440, 8000), codec.Goertzel(pcm, 1000, 8000), codec.Goertzel(pcm, 700, 8000); p4 < 0.01 || p10 < 0.01 || p7 > 1e-4 {
		t.Fatalf("%s mix: power at 440 Hz %.4f, at 1000 Hz %.4f, at the supervisors' 700 Hz %.6f", who, p4, p10, p7)
	}
}

// TestMonitorSIPEndToEnd: a real call through bib serve (agent 440 Hz,
// customer 1000 Hz, recorded automatically); a SIP supervisor dials
// monitor-1001 (digest, sendrecv offer) and a browser supervisor listens
// over WebRTC. Both supervisors transmit loud audio the whole time, the
// SIP one also RFC 4733 digits and RTCP. Both hear both tones in one
// continuous stream; each party receives exactly what the other sent;
// the drop counter equals what the supervisors sent; the recording holds
// no supervisor audio; the end of the call sends BYE to the SIP
// supervisor; the parties see no signalling about any of it.
func TestMonitorSIPEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	agent, customer := newTestParty(t, "1001"), newTestParty(t, "2001")
	ts := startServer(t, monitorConfig(customer))
	ac, bc := placeCall(t, ctx, ts, agent, customer)
	id := waitCallID(t, ctx, ts)

	sup := sipSupervisor(t, "boss", "boss-secret")
	sc, err := sup.Invite(ctx, bibURI(ts, "monitor-1001"), sup.SDP(siptest.SDPOptions{Codecs: []string{"0", "101"}}))
	if err != nil {
		t.Fatalf("monitor-1001: %v", err)
	}
	ans, err := siptest.ParseSDP(sc.Response().Body())
	if err != nil || ans.Mode != "sendonly" || strings.Join(ans.Formats, " ") != "0" {
		t.Fatalf("answer %+v %v:\n%s", ans, err, sc.Response().Body())
	}
	rtcpDst := netip.AddrPortFrom(ans.RTP.Addr(), ans.RTP.Port()+1)

	tok := login(t, ts, "boss", "boss-secret")
	cl, offer := newPionListener(t)
	resp, answer := do(t, "POST", ts.httpURL+"/api/v1/calls/"+id+"/listen", tok, "application/sdp", offer)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("listen: %d %s", resp.StatusCode, answer)
	}
	if err := cl.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(answer)}); err != nil {
		t.Fatal(err)
	}
	if v := metricValue(t, ts, "bib_monitor_sessions_active"); v != 2 {
		t.Fatalf("active sessions %d, want 2", v)
	}

	const n = 120
	sendA, sendB := toneStream(440, n), toneStream(1000, n)
	var sentA, sentB [][]byte
	var supSent uint64
	var micPhase float64
	loud := make([]byte, 160)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var web []*rtp.Packet
	for i := range n {
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatal("timeout")
		}
		pa := siptest.RTPPacket(0xA1, uint16(i), uint32(160*i), 0, sendA[i])
		pb := siptest.RTPPacket(0xB2, uint16(5000+i), uint32(90000+160*i), 0, sendB[i])
		ac.SendRTP(pa)
		bc.SendRTP(pb)
		sentA, sentB = append(sentA, pa), append(sentB, pb)
		// Both supervisors talk loudly (700 Hz at 90% of full scale).
		for j, v := range codec.AppendTone(nil, 160, 700, 8000, 0.9, &micPhase) {
			loud[j] = codec.UlawEncode(v)
		}
		cl.mic.WriteSample(media.Sample{Data: loud, Duration: 20 * time.Millisecond})
		if err := sc.SendRTP(siptest.RTPPacket(0x5E, uint16(i), uint32(160*i), 0, loud)); err != nil {
			t.Fatal(err)
		}
		supSent++
		if i%10 == 0 { // an RFC 4733 digit ("5")
			if err := sc.SendRTP(siptest.RTPPacket(0x5E, uint16(10000+i), uint32(160*i), 101, []byte{5, 0x0a, 0, 160})); err != nil {
				t.Fatal(err)
			}
			supSent++
		}
		if i%25 == 0 { // an RTCP receiver report on the RTCP port
			rr := []byte{0x80, 201, 0, 1, 0, 0, 0, 0x5E}
			if err := sup.SendRTP(rtcpDst, rr); err != nil {
				t.Fatal(err)
			}
			supSent++
		}
	drain:
		for {
			select {
			case p := <-cl.pkts:
				web = append(web, p)
			default:
				break drain
			}
		}
	}
	expectEachOther(t, ctx, agent, customer, sentA, sentB)
	// Both supervisors hear both parties, continuously.
	checkMix(t, "browser supervisor", web)
	var sipPkts []*rtp.Packet
	for _, r := range sup.Received() {
		var p rtp.Packet
		if err := p.Unmarshal(r.Data); err != nil {
			t.Fatalf("SIP supervisor received a non-RTP datagram: %v", err)
		}
		if r.From != ans.RTP {
			t.Fatalf("mix came from %s, want bib's %s", r.From, ans.RTP)
		}
		sipPkts = append(sipPkts, &p)
	}
	checkMix(t, "SIP supervisor", sipPkts)
	// Everything the supervisors sent was dropped and counted.
	want := supSent + cl.rtpOut.Load()
	deadline := time.Now().Add(5 * time.Second)
	for metricValue(t, ts, "bib_supervisor_packets_dropped_total") != want {
		if time.Now().After(deadline) {
			t.Fatalf("dropped %d, supervisors sent %d (SIP %d)", metricValue(t, ts, "bib_supervisor_packets_dropped_total"), want, supSent)
		}
		time.Sleep(5 * time.Millisecond)
	}
	var list struct {
		Sessions []sipSessionView `json:"sessions"`
	}
	if resp, b := do(t, "GET", ts.httpURL+"/api/v1/calls/"+id+"/monitor", tok, "", ""); resp.StatusCode != 200 || json.Unmarshal(b, &list) != nil || len(list.Sessions) != 1 {
		t.Fatalf("sessions: %d %s", resp.StatusCode, b)
	}
	if st := list.Sessions[0].Stats; st.Dropped != supSent || st.DroppedDTMF != 12 || st.DroppedRTCP != 5 || st.Codec.Name != "PCMU" {
		t.Fatalf("leg stats %+v, supervisor sent %d", st, supSent)
	}

	// The call ends: the SIP supervisor gets BYE; the parties never saw
	// any signalling but their own.
	if err := ac.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sc.Ended():
	case <-ctx.Done():
		t.Fatal("the SIP supervisor got no BYE when the call ended")
	}
	if bye := sc.ByeRequest(); bye == nil {
		t.Fatal("no BYE request recorded")
	}
	for _, c := range []*siptest.Call{ac, bc} {
		if len(c.InDialogRequests()) != 0 {
			t.Fatalf("a party received in-dialog requests: %d", len(c.InDialogRequests()))
		}
	}
	if bc.ByeRequest() == nil {
		t.Fatal("the customer got no BYE")
	}

	// The recording: each channel its party's tone, no supervisor audio.
	_, left, right := finishedRecordingChannels(t, ctx, ts, tok)
	for _, c := range []struct {
		name string
		ch   []int16
		freq float64
	}{{"left (agent)", left, 440}, {"right (customer)", right, 1000}} {
		if p, p7 := codec.Goertzel(c.ch, c.freq, 8000), codec.Goertzel(c.ch, 700, 8000); p < 0.01 || p7 > 1e-5 {
			t.Fatalf("recording %s: power at %.0f Hz %.4f, at the supervisors' 700 Hz %.6f", c.name, c.freq, p, p7)
		}
	}
	waitMetric(t, ctx, ts, "bib_monitor_sessions_active", 0)
	// Both monitoring sessions are in the audit trail, start and end, the
	// SIP one ended by the end of the call.
	auditPath := filepath.Join(ts.cfg.Data, "audit.jsonl")
	for {
		b, _ := os.ReadFile(auditPath)
		text := string(b)
		if strings.Count(text, `"action":"monitor.start"`) >= 2 && strings.Count(text, `"action":"monitor.end"`) >= 2 &&
			strings.Contains(text, `"via":"sip-dial-in"`) && strings.Contains(text, `"via":"webrtc"`) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("audit trail lacks the monitoring sessions:\n%s", text)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func waitMetric(t *testing.T, ctx context.Context, ts *testServer, name string, want uint64) {
	t.Helper()
	for metricValue(t, ts, name) != want {
		select {
		case <-ctx.Done():
			t.Fatalf("%s = %d, want %d", name, metricValue(t, ts, name), want)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// TestMonitorSIPAPI: POST /api/v1/calls/{id}/monitor has bib call the
// supervisor's phone, which auto-answers and hears the call; DELETE sends
// BYE. A supervisor who dialled in and hangs up ends only its session.
func TestMonitorSIPAPI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	agent, customer := newTestParty(t, "1001"), newTestParty(t, "2001")
	ts := startServer(t, monitorConfig(customer))
	ac, bc := placeCall(t, ctx, ts, agent, customer)
	id := waitCallID(t, ctx, ts)
	tok := login(t, ts, "boss", "boss-secret")

	phone := newTestParty(t, "3000")
	answered := make(chan *siptest.Call, 1)
	go func() {
		select {
		case in := <-phone.Incoming:
			if !strings.Contains(in.Invite.GetHeader("Call-Info").Value(), "answer-after=0") {
				in.Respond(480, "No Auto Answer", nil)
				return
			}
			in.Answer(phone.SDP(siptest.SDPOptions{Mode: "recvonly", Codecs: []string{"0"}}))
			answered <- in
		case <-ctx.Done():
		}
	}()
	body := `{"supervisor":"sip:3000@` + phone.SIPAddr.String() + `","mode":"silent"}`
	resp, b := do(t, "POST", ts.httpURL+"/api/v1/calls/"+id+"/monitor", tok, "application/json", body)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("monitor: %d %s", resp.StatusCode, b)
	}
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, "/api/v1/calls/"+id+"/monitor/") {
		t.Fatalf("Location %q", loc)
	}
	var in *siptest.Call
	select {
	case in = <-answered:
	case <-ctx.Done():
		t.Fatal("the phone did not answer")
	}
	off, _ := siptest.ParseSDP(in.Invite.Body())
	if off.Mode != "sendonly" {
		t.Fatalf("bib offered %s", off.Mode)
	}
	// The phone hears the call: send some audio and wait for mix packets.
	for i := range 10 {
		ac.SendRTP(siptest.RTPPacket(0xA1, uint16(i), uint32(160*i), 0, make([]byte, 160)))
	}
	if _, err := phone.WaitPackets(ctx, 10); err != nil {
		t.Fatal(err)
	}
	if resp, b := do(t, "DELETE", ts.httpURL+loc, tok, "", ""); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", resp.StatusCode, b)
	}
	select {
	case <-in.Ended():
	case <-ctx.Done():
		t.Fatal("the phone got no BYE")
	}
	waitMetric(t, ctx, ts, "bib_monitor_sessions_active", 0)

	// A supervisor who dialled in hangs up: only the monitoring ends.
	sup := sipSupervisor(t, "boss", "boss-secret")
	sc, err := sup.Invite(ctx, bibURI(ts, "monitor-1001"), nil) // delayed offer
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := siptest.ParseSDP(sc.Response().Body()); m.Mode != "sendonly" {
		t.Fatalf("bib's offer is %s", m.Mode)
	}
	waitMetric(t, ctx, ts, "bib_monitor_sessions_active", 1)
	if err := sc.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, ctx, ts, "bib_monitor_sessions_active", 0)
	if _, ok := ts.sip.Call(id); !ok {
		t.Fatal("the supervisor's BYE ended the call")
	}
	for _, c := range []*siptest.Call{ac, bc} {
		if len(c.InDialogRequests()) != 0 || c.ByeRequest() != nil {
			t.Fatal("a party saw signalling about the monitoring")
		}
	}
	if err := ac.Bye(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestMonitorRefusals: whisper, barge, out-of-scope lines, gate-denied
// devices and bad credentials, over SIP and over the API, each with its
// status and reason.
func TestMonitorRefusals(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	agent, customer := newTestParty(t, "1001"), newTestParty(t, "2001")
	ts := startServer(t, monitorConfig(customer))
	placeCall(t, ctx, ts, agent, customer)
	id := waitCallID(t, ctx, ts)

	sipCases := []struct {
		name, user, password, ruser string
		hdrs                        []sipmsg.Header
		code                        int
		warning                     string
	}{
		{"whisper prefix", "boss", "boss-secret", "whisper-1001", nil, 403, "whisper_not_supported: Whisper coaching is not supported"},
		{"barge prefix", "boss", "boss-secret", "barge-1001", nil, 403, "barge_not_supported: Barge is not supported"},
		{"whisper header", "boss", "boss-secret", "monitor-1001", []sipmsg.Header{sipmsg.NewHeader("X-Monitor-Mode", "whisper")}, 403, "whisper_not_supported"},
		{"barge call-info", "boss", "boss-secret", "monitor-1001", []sipmsg.Header{sipmsg.NewHeader("Call-Info", "<sip:x>;purpose=barge")}, 403, "barge_not_supported"},
		{"out of scope", "boss", "boss-secret", "monitor-1002", nil, 403, "out_of_scope"},
		{"gate denied (privacy)", "boss", "boss-secret", "monitor-1003", nil, 403, "privacy_on: Privacy is on for device CSFAGENT3"},
		{"unknown line", "boss", "boss-secret", "monitor-4711", nil, 403, "unknown_device"},
		{"bad password", "boss", "wrong", "monitor-1001", nil, 403, "authentication failed"},
		{"no SIP credential", "other", "other-secret", "monitor-1002", nil, 403, "authentication failed"},
		{"not a supervisor", "1002", "", "monitor-1001", nil, 401, ""},
	}
	for _, c := range sipCases {
		t.Run("sip "+c.name, func(t *testing.T) {
			sup := sipSupervisor(t, c.user, c.password)
			_, err := sup.Invite(ctx, bibURI(ts, c.ruser), sup.SDP(siptest.SDPOptions{}), c.hdrs...)
			var de *sipgo.ErrDialogResponse
			if !errors.As(err, &de) || de.Res.StatusCode != c.code {
				t.Fatalf("want %d, got %v", c.code, err)
			}
			w := ""
			if h := de.Res.GetHeader("Warning"); h != nil {
				w = h.Value()
			}
			if !strings.Contains(w, c.warning) || (c.warning != "" && !strings.HasPrefix(w, `399 bib "`)) {
				t.Fatalf("Warning %q, want %q", w, c.warning)
			}
		})
	}
	boss, other := login(t, ts, "boss", "boss-secret"), login(t, ts, "other", "other-secret")
	apiCases := []struct {
		name, tok, body string
		code            int
		errCode         string
	}{
		{"whisper", boss, `{"supervisor":"sip:3000@127.0.0.1","mode":"whisper"}`, 403, "whisper_not_supported"},
		{"barge", boss, `{"supervisor":"sip:3000@127.0.0.1","mode":"barge"}`, 403, "barge_not_supported"},
		{"out of scope", other, `{"supervisor":"sip:3000@127.0.0.1"}`, 403, "out_of_scope"},
		{"not signed in", "", `{"supervisor":"sip:3000@127.0.0.1"}`, 401, "unauthenticated"},
		{"not a SIP URI", boss, `{"supervisor":"tel:3000"}`, 400, "bad_supervisor"},
	}
	for _, c := range apiCases {
		t.Run("api "+c.name, func(t *testing.T) {
			resp, b := do(t, "POST", ts.httpURL+"/api/v1/calls/"+id+"/monitor", c.tok, "application/json", c.body)
			var e struct{ Error, Reason string }
			json.Unmarshal(b, &e)
			if resp.StatusCode != c.code || e.Error != c.errCode || e.Reason == "" {
				t.Fatalf("%d %s, want %d %s", resp.StatusCode, b, c.code, c.errCode)
			}
		})
	}
	if v := metricValue(t, ts, "bib_monitor_sessions_active"); v != 0 {
		t.Fatalf("active sessions %d after refusals", v)
	}
}
