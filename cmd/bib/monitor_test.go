package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
	"golang.org/x/crypto/bcrypt"

	"github.com/bib-project/bib/bridge"
	"github.com/bib-project/bib/bridge/codec"
	"github.com/bib-project/bib/sip/siptest"
)

func init() { bcryptCost = bcrypt.MinCost } // tests hash plain passwords quickly

// monitorConfig: agent 1001 (monitorable, recorded), agent 1002
// (monitorable), agent 1003 (privacy on: the gate refuses monitoring);
// supervisor "boss" may monitor 1001 and 1003, "other" only 1002.
func monitorConfig(customer *siptest.Party) Config {
	cfg := agentConfig(customer, "automatic")
	cfg.Devices = append(cfg.Devices,
		bridge.Device{Name: "CSFAGENT2", Line: "1002", Monitoring: true},
		bridge.Device{Name: "CSFAGENT3", Line: "1003", Monitoring: true, Privacy: true})
	hash, _ := bcrypt.GenerateFromPassword([]byte("other-secret"), bcrypt.MinCost)
	cfg.Supervisors = []bridge.Supervisor{
		{User: "boss", Password: "boss-secret", Monitors: []string{"1001", "1003"}},
		{User: "other", PasswordHash: string(hash), Monitors: []string{"1002"}},
	}
	return cfg
}

func login(t *testing.T, ts *testServer, user, pw string) string {
	t.Helper()
	code, body := postJSON(t, ts.httpURL+"/api/v1/login", fmt.Sprintf(`{"user":%q,"password":%q}`, user, pw))
	if code != http.StatusOK {
		t.Fatalf("login %s: %d %v", user, code, body)
	}
	return body["token"].(string)
}

// do sends a request with a bearer token and returns status and body.
func do(t *testing.T, method, url, token, ctype, body string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// pionListener plays a browser: it offers sendrecv audio, receives the mix,
// and sends loud audio of its own the whole time (bib must drop it).
type pionListener struct {
	pc     *webrtc.PeerConnection
	mic    *webrtc.TrackLocalStaticSample
	rtpOut atomic.Uint64
	pkts   chan *rtp.Packet
}

type countConn struct {
	*net.UDPConn
	l *pionListener
}

func (c *countConn) note(b []byte) {
	if len(b) >= 2 && b[0] >= 128 && b[0] <= 191 && (b[1] < 192 || b[1] > 223) {
		c.l.rtpOut.Add(1)
	}
}
func (c *countConn) WriteTo(b []byte, a net.Addr) (int, error) {
	c.note(b)
	return c.UDPConn.WriteTo(b, a)
}
func (c *countConn) WriteToAddrPort(b []byte, a netip.AddrPort) (int, error) {
	c.note(b)
	return c.UDPConn.WriteToUDPAddrPort(b, a)
}
func (c *countConn) ReadFromAddrPort(b []byte) (int, netip.AddrPort, error) {
	return c.UDPConn.ReadFromUDPAddrPort(b)
}

func newPionListener(t *testing.T) (*pionListener, string) {
	t.Helper()
	l := &pionListener{pkts: make(chan *rtp.Packet, 2000)}
	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	mux := webrtc.NewICEUDPMux(nil, &countConn{UDPConn: uc, l: l})
	me := &webrtc.MediaEngine{}
	me.RegisterDefaultCodecs()
	se := webrtc.SettingEngine{}
	se.SetICEUDPMux(mux)
	se.SetIncludeLoopbackCandidate(true)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	l.pc, err = webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se)).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.pc.Close(); mux.Close(); uc.Close() })
	l.mic, _ = webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypePCMU, ClockRate: 8000}, "mic", "sup")
	if _, err := l.pc.AddTransceiverFromTrack(l.mic, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendrecv}); err != nil {
		t.Fatal(err)
	}
	l.pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		for {
			p, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			select {
			case l.pkts <- p:
			default:
			}
		}
	})
	o, _ := l.pc.CreateOffer(nil)
	g := webrtc.GatheringCompletePromise(l.pc)
	if err := l.pc.SetLocalDescription(o); err != nil {
		t.Fatal(err)
	}
	<-g
	return l, l.pc.LocalDescription().SDP
}

func metricValue(t *testing.T, ts *testServer, name string) uint64 {
	t.Helper()
	resp, body := do(t, "GET", ts.httpURL+"/metrics", "", "", "")
	if resp.StatusCode != 200 {
		t.Fatalf("metrics: %d", resp.StatusCode)
	}
	m := regexp.MustCompile(`(?m)^` + name + ` (\d+)$`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("metric %s missing", name)
	}
	v, _ := strconv.ParseUint(string(m[1]), 10, 64)
	return v
}

// TestMonitorBrowserEndToEnd: a real SIP call through bib serve; a signed-in
// supervisor listens over WebRTC (WHEP) with a pion client that also sends
// loud audio. The client hears both tones in one continuous stream; each
// party receives exactly the datagrams the other sent; everything the
// client sent is counted as dropped; DELETE ends the session.
func TestMonitorBrowserEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	agent, customer := newTestParty(t, "1001"), newTestParty(t, "2001")
	ts := startServer(t, monitorConfig(customer))
	ac, bc := placeCall(t, ctx, ts, agent, customer)
	id := waitCallID(t, ctx, ts)
	tok := login(t, ts, "boss", "boss-secret")

	cl, offer := newPionListener(t)
	resp, answer := do(t, "POST", ts.httpURL+"/api/v1/calls/"+id+"/listen", tok, "application/sdp", offer)
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Content-Type") != "application/sdp" {
		t.Fatalf("listen: %d %s", resp.StatusCode, answer)
	}
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, "/api/v1/calls/"+id+"/listen/") || !strings.Contains(string(answer), "a=sendonly") || strings.Contains(string(answer), "a=sendrecv") {
		t.Fatalf("location %q, answer:\n%s", loc, answer)
	}
	if err := cl.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(answer)}); err != nil {
		t.Fatal(err)
	}

	const n = 120
	sendA, sendB := toneStream(440, n), toneStream(1000, n)
	var sentA, sentB [][]byte
	// The supervisor talks loudly (700 Hz at 90% of full scale).
	var micPhase float64
	loud := make([]byte, 160)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var got []*rtp.Packet
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
		for j, v := range codec.AppendTone(nil, 160, 700, 8000, 0.9, &micPhase) {
			loud[j] = codec.UlawEncode(v)
		}
		cl.mic.WriteSample(media.Sample{Data: loud, Duration: 20 * time.Millisecond})
	drain:
		for {
			select {
			case p := <-cl.pkts:
				got = append(got, p)
			default:
				break drain
			}
		}
	}
	expectEachOther(t, ctx, agent, customer, sentA, sentB)
	// The mix: continuous, both tones.
	if len(got) < 80 {
		t.Fatalf("listener got %d packets", len(got))
	}
	var pcm []int16
	buf := make([]int16, 400)
	for i, p := range got {
		if i > 0 && (p.SequenceNumber != got[i-1].SequenceNumber+1 || p.Timestamp != got[i-1].Timestamp+160 || p.SSRC != got[0].SSRC) {
			t.Fatalf("packet %d: seq %d ts %d after %d %d", i, p.SequenceNumber, p.Timestamp, got[i-1].SequenceNumber, got[i-1].Timestamp)
		}
		if i >= 10 {
			for j, b := range p.Payload {
				buf[j] = codec.UlawDecode(b)
			}
			pcm = append(pcm, buf[:len(p.Payload)]...)
		}
	}
	if p4, p10, p7 := codec.Goertzel(pcm, 440, 8000), codec.Goertzel(pcm, 1000, 8000), codec.Goertzel(pcm, 700, 8000); p4 < 0.01 || p10 < 0.01 || p7 > 1e-4 {
		t.Fatalf("mix: power at 440 Hz %.4f, at 1000 Hz %.4f, at the supervisor's 700 Hz %.6f", p4, p10, p7)
	}
	// All the client sent was dropped and counted.
	sent := cl.rtpOut.Load()
	if sent < 50 {
		t.Fatalf("client sent only %d RTP packets", sent)
	}
	deadline := time.Now().Add(5 * time.Second)
	for metricValue(t, ts, "bib_supervisor_packets_dropped_total") != sent {
		if time.Now().After(deadline) {
			t.Fatalf("dropped %d, client sent %d", metricValue(t, ts, "bib_supervisor_packets_dropped_total"), sent)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if v := metricValue(t, ts, "bib_monitor_sessions_active"); v != 1 {
		t.Fatalf("active sessions %d", v)
	}
	// Another supervisor cannot end this session; its owner can.
	other := login(t, ts, "other", "other-secret")
	if resp, _ := do(t, "DELETE", ts.httpURL+loc, other, "", ""); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("DELETE by another supervisor: %d", resp.StatusCode)
	}
	if resp, b := do(t, "DELETE", ts.httpURL+loc, tok, "", ""); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", resp.StatusCode, b)
	}
	if resp, _ := do(t, "DELETE", ts.httpURL+loc, tok, "", ""); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("second DELETE: %d", resp.StatusCode)
	}
	if v := metricValue(t, ts, "bib_monitor_sessions_active"); v != 0 {
		t.Fatalf("active sessions %d after DELETE", v)
	}
	if v := metricValue(t, ts, "bib_supervisor_packets_dropped_total"); v != sent {
		t.Fatalf("dropped counter %d changed after the session ended (client sent %d)", v, sent)
	}

	// The recording holds exactly the parties' audio, sample for sample,
	// and silence elsewhere: no trace of the supervisor's loud signal.
	if err := ac.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	recID, left, right := finishedRecordingChannels(t, ctx, ts, tok)
	// Sample-exact placement is the recorder's own test (record_test.go);
	// here: each channel carries its party's tone and none of the
	// supervisor's 700 Hz.
	for _, c := range []struct {
		name string
		ch   []int16
		freq float64
	}{{"left (agent)", left, 440}, {"right (customer)", right, 1000}} {
		if p, p7 := codec.Goertzel(c.ch, c.freq, 8000), codec.Goertzel(c.ch, 700, 8000); p < 0.01 || p7 > 1e-5 {
			t.Fatalf("recording %s: power at %.0f Hz %.4f, at the supervisor's 700 Hz %.6f", c.name, c.freq, p, p7)
		}
	}
	// Other supervisors cannot fetch it.
	if resp, _ := do(t, "GET", ts.httpURL+"/api/v1/recordings/"+recID+"/audio", other, "", ""); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("out-of-scope recording fetch: %d", resp.StatusCode)
	}
}
