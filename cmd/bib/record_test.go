package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bib-project/bib/bridge"
	"github.com/bib-project/bib/bridge/codec"
	"github.com/bib-project/bib/recorder"
	"github.com/bib-project/bib/sip"
	"github.com/bib-project/bib/sip/siptest"
	"github.com/bib-project/bib/storage"
)

// agentConfig is a bib serve config with one recorded, monitorable Jabber
// desktop agent on line 1001 and a route for 2XXX to the customer party.
func agentConfig(customer *siptest.Party, recording string) Config {
	var cfg Config
	cfg.Cluster = bridge.Cluster{Release: "14.0(1)SU3", BuiltinBridgeEnable: true}
	cfg.Devices = []bridge.Device{{Name: "CSFAGENT1", Line: "1001", BuiltinBridge: "default", Recording: recording, Monitoring: true}}
	cfg.Routes = []sip.Route{{Match: "2XXX", Target: fmt.Sprintf("sip:${user}@%s", customer.SIPAddr)}}
	cfg.Recording = recorder.Defaults()
	// A deep jitter buffer: under -race on a loaded 2-core machine a packet
	// may be late by more than 60 ms, and this test is about sample-exact
	// placement, not about late-packet policy (recorder tests cover that).
	cfg.Recording.JitterMS = 500
	return cfg
}

func newTestParty(t *testing.T, user string) *siptest.Party {
	t.Helper()
	p, err := siptest.NewParty(user, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// placeCall has caller dial callee's user through bib and the callee answer.
func placeCall(t *testing.T, ctx context.Context, ts *testServer, caller, callee *siptest.Party) (ac, bc *siptest.Call) {
	t.Helper()
	got := make(chan *siptest.Call, 1)
	go func() {
		select {
		case c := <-callee.Incoming:
			c.Answer(callee.SDP(siptest.SDPOptions{Codecs: []string{"0", "101"}}))
			got <- c
		case <-ctx.Done():
		}
	}()
	target := ts.sip.Addr("udp")
	uri := caller.URI()
	uri.User, uri.Host, uri.Port = callee.User, target.Addr().String(), int(target.Port())
	ac, err := caller.Invite(ctx, uri, caller.SDP(siptest.SDPOptions{Codecs: []string{"0", "101"}}))
	if err != nil {
		t.Fatalf("invite: %v", err)
	}
	select {
	case bc = <-got:
	case <-ctx.Done():
		t.Fatal("callee got no INVITE")
	}
	return ac, bc
}

// toneStream returns n 20 ms PCMU payloads of a tone.
func toneStream(freq float64, n int) [][]byte {
	var phase float64
	out := make([][]byte, n)
	for i := range out {
		pcm := codec.AppendTone(nil, 160, freq, 8000, 0.3, &phase)
		p := make([]byte, 160)
		for j, s := range pcm {
			p[j] = codec.UlawEncode(s)
		}
		out[i] = p
	}
	return out
}

// waitRecording polls the API until a recording with the given status exists.
func waitRecording(t *testing.T, ctx context.Context, ts *testServer) storage.Meta {
	t.Helper()
	for {
		resp, err := http.Get(ts.httpURL + "/api/v1/recordings")
		if err == nil {
			var body struct{ Recordings []storage.Meta }
			json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if len(body.Recordings) > 0 && body.Recordings[0].Status != "recording" {
				return body.Recordings[0]
			}
		}
		select {
		case <-ctx.Done():
			t.Fatal("no finished recording appeared")
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestRecordingEndToEnd: a real SIP call through bib serve with an
// automatically recorded agent; the archive's stereo WAV holds, after the
// leading silence, exactly the G.711-decoded audio each party sent, the
// agent on the left and the customer on the right.
func TestRecordingEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	agent, customer := newTestParty(t, "1001"), newTestParty(t, "2001")
	ts := startServer(t, agentConfig(customer, "automatic"))
	ac, bc := placeCall(t, ctx, ts, agent, customer)
	// The recording starts when bib has the caller's ACK; audio sent before
	// that is relayed but, by design, not part of the recording.
	waitRecordingStarted(t, ctx, ts, waitCallID(t, ctx, ts))

	const frames = 100
	sendA, sendB := toneStream(440, frames), toneStream(1000, frames)
	tick := time.NewTicker(20 * time.Millisecond)
	for i := range frames {
		<-tick.C
		ac.SendRTP(siptest.RTPPacket(0xA1, uint16(i), uint32(160*i), 0, sendA[i]))
		bc.SendRTP(siptest.RTPPacket(0xB2, uint16(5000+i), uint32(90000+160*i), 0, sendB[i]))
	}
	tick.Stop()
	time.Sleep(100 * time.Millisecond) // let the last packets cross bib before hanging up
	if err := ac.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	m := waitRecording(t, ctx, ts)
	if m.Status != storage.StatusComplete || m.Channels != 2 || m.SampleRate != 8000 {
		t.Fatalf("recording meta: status %s channels %d rate %d reason %q", m.Status, m.Channels, m.SampleRate, m.Reason)
	}
	if m.Near.Device != "CSFAGENT1" || m.Near.Line != "1001" || m.Far.Addr != "2001" {
		t.Fatalf("parties: near %+v far %+v", m.Near, m.Far)
	}
	resp, err := http.Get(ts.httpURL + "/api/v1/recordings/" + m.ID + "/audio")
	if err != nil {
		t.Fatal(err)
	}
	wav, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	info, err := recorder.ParseWAVHeader(bytes.NewReader(wav))
	if err != nil {
		t.Fatal(err)
	}
	pcm := wav[info.DataOffset:]
	left, right := make([]int16, len(pcm)/4), make([]int16, len(pcm)/4)
	for i := range left {
		left[i] = int16(binary.LittleEndian.Uint16(pcm[4*i:]))
		right[i] = int16(binary.LittleEndian.Uint16(pcm[4*i+2:]))
	}
	checkExact := func(name string, ch []int16, sent [][]byte) int {
		var want []int16
		for _, p := range sent {
			for _, b := range p {
				want = append(want, codec.UlawDecode(b))
			}
		}
		for off := 0; off+len(want) <= len(ch); off++ {
			if ch[off] == want[0] && ch[off+1] == want[1] && slices.Equal(ch[off:off+len(want)], want) {
				for _, s := range ch[:off] {
					if s != 0 {
						t.Fatalf("%s: leading part is not silence", name)
					}
				}
				return off
			}
		}
		// Diagnose: where does the sent stream start, and where does it diverge?
		for off := 0; off+320 <= len(ch); off++ {
			if slices.Equal(ch[off:off+320], want[:320]) {
				for i := range want {
					if off+i >= len(ch) || ch[off+i] != want[i] {
						zeros := 0
						for j := off + i; j < len(ch) && j < off+i+400 && ch[j] == 0; j++ {
							zeros++
						}
						t.Fatalf("%s: sent audio starts at sample %d and diverges at sent sample %d (frame %d); %d zeros follow", name, off, i, i/160, zeros)
					}
				}
			}
		}
		t.Fatalf("%s channel does not contain the sent audio sample for sample (%d samples recorded)", name, len(ch))
		return 0
	}
	offL := checkExact("left (agent)", left, sendA)
	offR := checkExact("right (customer)", right, sendB)
	t.Logf("recording %s: %d ms, agent audio at sample %d, customer at %d", m.ID, m.DurationMS, offL, offR)
	if d := offL - offR; d > 160 || d < -160 {
		t.Errorf("channels offset by %d samples for audio sent at the same instants", d)
	}
	if !strings.Contains(string(m.GateVerdict), `"allowed":true`) {
		t.Errorf("gate verdict not in metadata: %s", m.GateVerdict)
	}
}

// waitRecordingStarted waits until a call has a recording in progress.
func waitRecordingStarted(t *testing.T, ctx context.Context, ts *testServer, id string) {
	t.Helper()
	for {
		if cs, ok := ts.callState(id); ok {
			for _, v := range cs.recordingViews() {
				if v.ID != "" {
					return
				}
			}
		}
		select {
		case <-ctx.Done():
			t.Fatal("recording did not start")
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func postJSON(t *testing.T, url, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

// waitCallID returns the id of the one answered call.
func waitCallID(t *testing.T, ctx context.Context, ts *testServer) string {
	t.Helper()
	for {
		for _, ci := range ts.sip.Calls() {
			if _, ok := ts.callState(ci.ID); ok {
				return ci.ID
			}
		}
		select {
		case <-ctx.Done():
			t.Fatal("no answered call")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestSelectiveRecordingAPI: a selective device is recorded only between
// API start and stop; pause makes a silent span with events; the gate's
// refusals and tone requests come back as 403 with the reason.
func TestSelectiveRecordingAPI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	agent, customer := newTestParty(t, "1001"), newTestParty(t, "2001")
	ts := startServer(t, agentConfig(customer, "selective"))
	ac, bc := placeCall(t, ctx, ts, agent, customer)
	id := waitCallID(t, ctx, ts)
	url := ts.httpURL + "/api/v1/calls/" + id + "/recording"

	send := func(n, from int) {
		tone := toneStream(440, n)
		for i := range n {
			ac.SendRTP(siptest.RTPPacket(1, uint16(from+i), uint32(160*(from+i)), 0, tone[i]))
			bc.SendRTP(siptest.RTPPacket(2, uint16(from+i), uint32(160*(from+i)), 0, tone[i]))
			time.Sleep(20 * time.Millisecond)
		}
	}
	send(10, 0)
	if code, body := postJSON(t, url, `{"action":"pause"}`); code != http.StatusConflict {
		t.Fatalf("pause before start: %d %v", code, body)
	}
	if code, body := postJSON(t, url, `{"tone":true,"action":"start"}`); code != http.StatusForbidden || body["error"] != bridge.CodeToneNotSupported {
		t.Fatalf("tone request: %d %v", code, body)
	}
	startAt := time.Now()
	if code, body := postJSON(t, url, `{"action":"start"}`); code != http.StatusOK {
		t.Fatalf("start: %d %v", code, body)
	}
	if code, _ := postJSON(t, url, `{"action":"start"}`); code != http.StatusConflict {
		t.Fatalf("second start: %d", code)
	}
	send(20, 10)
	if code, body := postJSON(t, url, `{"action":"pause"}`); code != http.StatusOK {
		t.Fatalf("pause: %d %v", code, body)
	}
	send(20, 30)
	if code, body := postJSON(t, url, `{"action":"resume"}`); code != http.StatusOK {
		t.Fatalf("resume: %d %v", code, body)
	}
	send(20, 50)
	if code, body := postJSON(t, url, `{"action":"stop"}`); code != http.StatusOK {
		t.Fatalf("stop: %d %v", code, body)
	}
	between := time.Since(startAt)
	m := waitRecording(t, ctx, ts)
	if m.Status != storage.StatusComplete {
		t.Fatalf("status %s %s", m.Status, m.Reason)
	}
	var kinds []string
	for _, ev := range m.Events {
		kinds = append(kinds, ev.Kind)
	}
	if !slices.Contains(kinds, "recording_paused") || !slices.Contains(kinds, "recording_resumed") {
		t.Fatalf("events %v lack pause/resume", kinds)
	}
	// The recording spans start to stop (60 frames sent, at least 1.2 s),
	// not the whole call (which began 10 frames earlier).
	if m.DurationMS < 1100 || m.DurationMS > between.Milliseconds()+100 {
		t.Fatalf("selective recording lasted %d ms; start to stop took %s", m.DurationMS, between)
	}
	ac.Bye(ctx)
}

func TestRecordingRefusedByGate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	agent, customer := newTestParty(t, "1001"), newTestParty(t, "2001")
	cfg := agentConfig(customer, "selective")
	cfg.Devices[0].BuiltinBridge = "off"
	ts := startServer(t, cfg)
	ac, _ := placeCall(t, ctx, ts, agent, customer)
	id := waitCallID(t, ctx, ts)
	code, body := postJSON(t, ts.httpURL+"/api/v1/calls/"+id+"/recording", `{"action":"start"}`)
	if code != http.StatusForbidden || body["error"] != bridge.CodeBuiltinBridgeOff || body["reason"] == "" {
		t.Fatalf("start on a device with BIB off: %d %v", code, body)
	}
	resp := ts.get(t, "/api/v1/calls/"+id)
	var view map[string]any
	json.NewDecoder(resp.Body).Decode(&view)
	recs, _ := view["recordings"].([]any)
	if len(recs) != 1 || recs[0].(map[string]any)["status"] != "refused" {
		t.Fatalf("call record recordings: %v", view["recordings"])
	}
	ac.Bye(ctx)
}
