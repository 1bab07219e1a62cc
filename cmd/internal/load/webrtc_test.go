package load

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/bib-project/bib/cmd/internal/prompt"
)

// pionGoroutines lists the running goroutines whose stack is in pion
// (empty once every peer connection, mux and track reader has ended).
func pionGoroutines() []string {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "github.com/pion/") {
			out = append(out, g)
		}
	}
	return out
}

func waitNoPion(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		g := pionGoroutines()
		if len(g) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d pion goroutines still running, first:\n%s", len(g), g[0])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// leakyWHEP is a fake bib serve monitoring API whose WHEP sessions leak:
// every RTP packet the supervisor sends is relayed, unchanged, to leakTo
// (a party's socket), and a mix is sent to the supervisor at 50 pps.
type leakyWHEP struct {
	t       *testing.T
	leakTo  netip.AddrPort
	logins  atomic.Int32
	gets    atomic.Int32
	deletes atomic.Int32

	mu       sync.Mutex
	sessions map[string]func() // id -> end the session
	wg       sync.WaitGroup
}

func (f *leakyWHEP) handler() http.Handler {
	mux := http.NewServeMux()
	authed := func(r *http.Request) bool { return r.Header.Get("Authorization") == "Bearer tok-1" }
	mux.HandleFunc("POST /api/v1/login", func(w http.ResponseWriter, r *http.Request) {
		f.logins.Add(1)
		io.WriteString(w, `{"token":"tok-1","user":"sup"}`)
	})
	mux.HandleFunc("GET /api/v1/calls", func(w http.ResponseWriter, r *http.Request) {
		if !authed(r) {
			http.Error(w, `{"error":"unauthenticated"}`, http.StatusUnauthorized)
			return
		}
		// The call is listed from the second request on (it is being
		// answered), as the harness may ask before bib lists it.
		if f.gets.Add(1) == 1 {
			io.WriteString(w, `{"calls":[{"id":"other","sip_call_id_a":"cid-0","state":"answered"}]}`)
			return
		}
		io.WriteString(w, `{"calls":[{"id":"c1","sip_call_id_a":"cid-1","state":"answered"},{"id":"gone","sip_call_id_a":"cid-2","state":"ended"}]}`)
	})
	mux.HandleFunc("POST /api/v1/calls/c1/listen", func(w http.ResponseWriter, r *http.Request) {
		if !authed(r) || r.Header.Get("Content-Type") != "application/sdp" {
			http.Error(w, "no", http.StatusBadRequest)
			return
		}
		offer, _ := io.ReadAll(r.Body)
		answer, id, err := f.answer(string(offer))
		if err != nil {
			f.t.Errorf("fake WHEP: %v", err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/sdp")
		w.Header().Set("Location", "/api/v1/calls/c1/listen/"+id)
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, answer)
	})
	mux.HandleFunc("DELETE /api/v1/calls/c1/listen/{sid}", func(w http.ResponseWriter, r *http.Request) {
		f.deletes.Add(1)
		f.mu.Lock()
		end := f.sessions[r.PathValue("sid")]
		delete(f.sessions, r.PathValue("sid"))
		f.mu.Unlock()
		if end == nil {
			http.NotFound(w, r)
			return
		}
		end()
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

// endAll ends the sessions not deleted.
func (f *leakyWHEP) endAll() {
	f.mu.Lock()
	ends := f.sessions
	f.sessions = map[string]func(){}
	f.mu.Unlock()
	for _, end := range ends {
		end()
	}
	f.wg.Wait()
}

// answer sets up one leaking session.
func (f *leakyWHEP) answer(offer string) (string, string, error) {
	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return "", "", err
	}
	mux := webrtc.NewICEUDPMux(nil, uc)
	me := &webrtc.MediaEngine{}
	me.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypePCMU, ClockRate: 8000, Channels: 1}, PayloadType: 0}, webrtc.RTPCodecTypeAudio)
	se := webrtc.SettingEngine{}
	se.SetICEUDPMux(mux)
	se.SetIncludeLoopbackCandidate(true)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	pc, err := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se)).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		mux.Close()
		uc.Close()
		return "", "", err
	}
	done := make(chan struct{})
	var once sync.Once
	end := func() {
		once.Do(func() {
			close(done)
			pc.GracefulClose()
			mux.Close()
			uc.Close()
		})
	}
	mix, _ := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypePCMU, ClockRate: 8000}, "audio", "mix")
	if _, err := pc.AddTrack(mix); err != nil {
		end()
		return "", "", err
	}
	leak, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(f.leakTo))
	if err != nil {
		end()
		return "", "", err
	}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		buf := make([]byte, 1500)
		for {
			n, _, err := tr.Read(buf)
			if err != nil {
				return
			}
			leak.Write(buf[:n]) // the bug under test: supervisor audio to a party
		}
	})
	f.wg.Add(1)
	go func() { // the mix
		defer f.wg.Done()
		defer leak.Close()
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		p := &rtp.Packet{Header: rtp.Header{Version: 2}, Payload: make([]byte, 160)}
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			p.SequenceNumber++
			p.Timestamp += 160
			mix.WriteRTP(p)
		}
	}()
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		end()
		return "", "", err
	}
	ans, err := pc.CreateAnswer(nil)
	if err != nil {
		end()
		return "", "", err
	}
	g := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(ans); err != nil {
		end()
		return "", "", err
	}
	<-g
	f.mu.Lock()
	id := "s" + itoa(len(f.sessions)+1)
	f.sessions[id] = end
	f.mu.Unlock()
	return pc.LocalDescription().SDP, id, nil
}

// A WebRTC supervisor signs in once, finds the call by its SIP Call-ID,
// connects, receives the mix and transmits audio marked with its stream's
// SSRC: when the far end relays that audio to a party, the party's
// receiver counts every packet as a leak. Ending it (DELETE, close) leaves
// no goroutine behind.
func TestWebRTCSupervisorLeakDetected(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lo := netip.MustParseAddr("127.0.0.1")
	m, err := newMedia(1, 1, Impairment{}, lo)
	if err != nil {
		t.Fatal(err)
	}
	mctx, stop := context.WithCancel(ctx)
	m.run(mctx, 1, pacerTick)
	defer func() { stop(); m.close() }()

	fake := &leakyWHEP{t: t, leakTo: m.addr(0, kindAgent), sessions: map[string]func(){}}
	hs := httptest.NewServer(fake.handler())
	defer hs.Close()
	defer fake.endAll()
	w, err := newWebClient(hs.URL, "sup", "pw", lo, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()

	lctx, lcancel := context.WithTimeout(ctx, callLookup)
	id, err := w.callID(lctx, "cid-1")
	lcancel()
	if err != nil || id != "c1" {
		t.Fatalf("call id %q, %v", id, err)
	}
	// An ended call is not listed: the wait is bounded by the context.
	ectx, ecancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = w.callID(ectx, "cid-2")
	ecancel()
	if err == nil || !strings.Contains(err.Error(), "does not list") {
		t.Fatalf("ended call: %v", err)
	}
	p, err := prompt.Get("agent", "PCMU")
	if err != nil {
		t.Fatal(err)
	}
	s := m.claim(0, kindSupervisor, p, 0, 0)
	var got atomic.Uint64
	ws, err := w.join(ctx, id, s.ssrc.Load(), func(int) { got.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer ws.close()
	ws.transmit(m, s)
	deadline := time.Now().Add(10 * time.Second)
	for m.leaks.Load() < 25 || got.Load() < 25 {
		if time.Now().After(deadline) {
			t.Fatalf("leaks %d, mix packets received %d, sent %d", m.leaks.Load(), got.Load(), s.sent.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	ws.halt()
	time.Sleep(100 * time.Millisecond)
	if err := ws.delete(ctx); err != nil {
		t.Fatal(err)
	}
	ws.close()
	m.finish(s)
	sent, leaks := s.sent.Load(), m.leaks.Load()
	if leaks > sent || leaks+5 < sent {
		t.Fatalf("%d packets sent, %d counted as leaks", sent, leaks)
	}
	if m.unmatched.Load() != 0 {
		t.Fatalf("%d leaked packets not recognised", m.unmatched.Load())
	}
	if n := fake.logins.Load(); n != 1 {
		t.Fatalf("%d logins, want 1", n)
	}
	if n := fake.deletes.Load(); n != 1 {
		t.Fatalf("%d DELETEs", n)
	}
	// A second DELETE finds nothing (404): not an error.
	if err := ws.delete(ctx); err != nil {
		t.Fatal(err)
	}
	fake.wg.Wait()
	w.close()
	waitNoPion(t)
}

// A refused listen request fails the supervisor with bib's reason and
// leaves nothing running.
func TestWebRTCSupervisorRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/login", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"token":"t"}`)
	})
	mux.HandleFunc("POST /api/v1/calls/{id}/listen", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"error":"out_of_scope","message":"Supervisor sup may not monitor line 10001"}`, http.StatusForbidden)
	})
	hs := httptest.NewServer(mux)
	defer hs.Close()
	w, err := newWebClient(hs.URL, "sup", "pw", netip.MustParseAddr("127.0.0.1"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	_, err = w.join(ctx, "c1", 1234, func(int) {})
	if err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "out_of_scope") {
		t.Fatalf("join: %v", err)
	}
	w.close()
	waitNoPion(t)

	// A failed sign-in is remembered, not retried by every supervisor.
	var logins atomic.Int32
	mux2 := http.NewServeMux()
	mux2.HandleFunc("POST /api/v1/login", func(w http.ResponseWriter, r *http.Request) {
		logins.Add(1)
		http.Error(w, "bad", http.StatusUnauthorized)
	})
	hs2 := httptest.NewServer(mux2)
	defer hs2.Close()
	w2, err := newWebClient(hs2.URL, "sup", "wrong", netip.MustParseAddr("127.0.0.1"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer w2.close()
	for range 3 {
		if _, err := w2.callID(ctx, "x"); err == nil || !strings.Contains(err.Error(), "login") {
			t.Fatalf("callID: %v", err)
		}
	}
	if logins.Load() != 1 {
		t.Fatalf("%d sign-ins", logins.Load())
	}
}

func TestPickWebRTC(t *testing.T) {
	for _, tc := range []struct {
		share float64
		n     int
		want  int
	}{{0.5, 10, 5}, {0.1, 100, 10}, {1, 7, 7}, {0.3, 10, 3}, {0.25, 3, 1}, {0.000001, 5, 1}} {
		ppm := int64(tc.share*1e6 + 0.5)
		got := 0
		for k := range int64(tc.n) {
			if pickWebRTC(k, ppm) {
				got++
			}
		}
		if got != tc.want || !pickWebRTC(0, ppm) {
			t.Errorf("share %g over %d: %d WebRTC (first %v), want %d", tc.share, tc.n, got, pickWebRTC(0, ppm), tc.want)
		}
	}
}

// buildBib builds bib (the go build cache makes repeated builds a link).
func buildBib(ctx context.Context, t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "bib")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/bib-project/bib/cmd/bib").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// Against a real bib serve: every call is monitored, half the supervisors
// over SIP and half over WebRTC (WHEP). All connect, both kinds receive
// the mix, none of the supervisors' audio reaches a party, and no WebRTC
// goroutine outlives the run.
func TestRunWebRTCSupervisorsSpawn(t *testing.T) {
	if testing.Short() {
		t.Skip("builds bib and runs a 3 s load test")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	bin := buildBib(ctx, t)
	cfg := Config{
		Spawn: true, BibBinary: bin,
		Calls: 4, Rate: 20, Duration: 3 * time.Second,
		Supervisors: 1, WebRTC: 0.5,
		Thresholds: Thresholds{MaxP99MS: 1000}, // no timing assertions in unit tests
	}
	rep, err := Run(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	sv := rep.Supervisors
	t.Logf("supervisors %+v; notes %q", sv, rep.Notes)
	if rep.Calls.Established != 4 {
		t.Fatalf("calls %+v", rep.Calls)
	}
	if sv.Requested != 4 || sv.Streams != 4 || sv.Failed != 0 || sv.SIPStreams != 2 || sv.WebRTCStreams != 2 {
		t.Fatalf("supervisors %+v", sv)
	}
	if sv.WebRTCPacketsReceived < 50 || sv.PacketsReceived < sv.WebRTCPacketsReceived+50 {
		t.Fatalf("packets received: %d in all, %d over WebRTC", sv.PacketsReceived, sv.WebRTCPacketsReceived)
	}
	// Four supervisors transmitted for about 3 s each.
	if sv.PacketsSent < 4*100 {
		t.Fatalf("supervisors sent %d packets", sv.PacketsSent)
	}
	if sv.LeakedToParties != 0 || rep.RTP.Unmatched != 0 {
		t.Fatalf("leaks %d, unmatched %d", sv.LeakedToParties, rep.RTP.Unmatched)
	}
	if rep.Verdict != "pass" {
		t.Fatalf("verdict %s: %q", rep.Verdict, rep.Failures)
	}
	found := false
	for _, n := range rep.Notes {
		if strings.Contains(n, "over SIP (2 of 2 connected) and over WebRTC/WHEP (2 of 2 connected") {
			found = true
		}
		if strings.Contains(n, "not exercised yet") {
			t.Errorf("stale note %q", n)
		}
	}
	if !found {
		t.Errorf("no note on the SIP/WebRTC split in %q", rep.Notes)
	}
	waitNoPion(t)
}
