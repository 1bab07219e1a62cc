package load

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/bib-project/bib/bridge"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// WebRTC (WHEP) supervisors: a browser-style supervisor per chosen call.
// It finds bib's id of the call (GET /api/v1/calls, by the SIP Call-ID of
// the agent's INVITE), posts a pion peer connection's offer to
// POST /api/v1/calls/{id}/listen with a sendrecv PCMU "microphone", and,
// once ICE and DTLS are up, counts the mix bib sends and transmits its own
// audio. The microphone's RTP carries the SSRC of the call slot's
// supervisor stream, the same marking the SIP supervisors' packets carry:
// if bib ever relayed it to a party, the party's receiver would count it
// as a leak. At the end of the call the session is ended with DELETE on
// its Location and the peer connection is closed.
//
// Every peer connection of a run shares one loopback UDP socket (an ICE
// UDP mux) and one sign-in (bearer token).

// Timing of WebRTC supervisors.
const (
	// callsRefresh is the least time between two GET /api/v1/calls.
	callsRefresh = 100 * time.Millisecond
	// callLookup bounds the wait for a call to be listed.
	callLookup = 3 * time.Second
	// webHTTPTimeout bounds each API request.
	webHTTPTimeout = 10 * time.Second
)

// webClient is a run's access to bib serve's monitoring API and the
// shared WebRTC machinery.
type webClient struct {
	base       string
	user, pass string
	cli        *http.Client
	tr         *http.Transport
	api        *webrtc.API
	conn       *net.UDPConn
	mux        ice.UDPMux

	tokMu  sync.Mutex
	tok    string
	tokErr error

	idsMu   sync.Mutex
	ids     map[string]string // SIP Call-ID of the agent's leg -> bib's call id
	fetched time.Time

	closeOnce sync.Once
}

// newWebClient opens the shared ICE socket on ip and prepares the peer
// connections' API: PCMU only, loopback host candidates, no mDNS, no
// interceptors (no RTCP reports, no NACK: the microphone's packets carry
// the harness's SSRC, which pion's reports would not describe).
func newWebClient(base, user, pass string, ip netip.Addr, log *slog.Logger) (*webClient, error) {
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
	if err != nil {
		return nil, fmt.Errorf("webrtc supervisors: %w", err)
	}
	_ = conn.SetReadBuffer(4 << 20)
	logs := bridge.PionLogs(log.With("part", "webrtc-supervisor"))
	tr := &http.Transport{MaxIdleConnsPerHost: 32, IdleConnTimeout: 30 * time.Second}
	w := &webClient{
		base: strings.TrimRight(base, "/"), user: user, pass: pass,
		tr: tr, cli: &http.Client{Transport: tr, Timeout: webHTTPTimeout},
		conn: conn, ids: map[string]string{},
	}
	w.mux = webrtc.NewICEUDPMux(logs.NewLogger("udpmux"), conn)
	me := &webrtc.MediaEngine{}
	if err := me.RegisterCodec(webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypePCMU, ClockRate: 8000, Channels: 1},
		PayloadType:        0,
	}, webrtc.RTPCodecTypeAudio); err != nil {
		w.close()
		return nil, err
	}
	se := webrtc.SettingEngine{LoggerFactory: logs}
	se.SetICEUDPMux(w.mux)
	se.SetIncludeLoopbackCandidate(ip.IsLoopback())
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	nt := webrtc.NetworkTypeUDP4
	if ip.Is6() && !ip.Is4In6() {
		nt = webrtc.NetworkTypeUDP6
	}
	se.SetNetworkTypes([]webrtc.NetworkType{nt})
	se.SetIPFilter(func(x net.IP) bool { a, ok := netip.AddrFromSlice(x); return ok && a.Unmap() == ip.Unmap() })
	w.api = webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se), webrtc.WithInterceptorRegistry(&interceptor.Registry{}))
	return w, nil
}

// close releases the shared socket and idle HTTP connections; every
// session must have been closed first.
func (w *webClient) close() {
	w.closeOnce.Do(func() {
		if w.mux != nil {
			w.mux.Close()
		}
		w.conn.Close()
		w.tr.CloseIdleConnections()
	})
}

// token returns the run's bearer token, signing in when there is none yet
// or when stale (a token the bridge refused) is the current one. A failed
// sign-in is remembered: supervisors fail with its reason instead of each
// trying again.
func (w *webClient) token(ctx context.Context, stale string) (string, error) {
	w.tokMu.Lock()
	defer w.tokMu.Unlock()
	if w.tok != "" && w.tok != stale {
		return w.tok, nil
	}
	if w.tokErr != nil {
		return "", w.tokErr
	}
	tok, err := loginToken(ctx, w.cli, w.base, w.user, w.pass)
	w.tok, w.tokErr = tok, err
	return tok, err
}

// do sends an authenticated request to path (relative to the base URL, or
// absolute) and reads the answer; a 401 signs in again once.
func (w *webClient) do(ctx context.Context, method, path, ctype string, body []byte) (*http.Response, []byte, error) {
	u := path
	if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
		u = w.base + path
	}
	stale := ""
	for attempt := 0; ; attempt++ {
		tok, err := w.token(ctx, stale)
		if err != nil {
			return nil, nil, err
		}
		req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
		if err != nil {
			return nil, nil, err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		res, err := w.cli.Do(req)
		if err != nil {
			return nil, nil, err
		}
		b, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
		res.Body.Close()
		if err != nil {
			return nil, nil, err
		}
		if res.StatusCode == http.StatusUnauthorized && attempt == 0 {
			stale = tok
			continue
		}
		return res, b, nil
	}
}

// callID returns bib's id of the call whose agent leg has SIP Call-ID
// sipCID, polling GET /api/v1/calls (at most every callsRefresh, shared by
// all supervisors) until it is listed or ctx ends.
func (w *webClient) callID(ctx context.Context, sipCID string) (string, error) {
	for {
		w.idsMu.Lock()
		id, ok := w.ids[sipCID]
		wait := callsRefresh
		if !ok {
			if since := time.Since(w.fetched); since < callsRefresh {
				wait = callsRefresh - since
			} else {
				if err := w.fetchCalls(ctx); err != nil {
					w.idsMu.Unlock()
					return "", err
				}
				id, ok = w.ids[sipCID]
			}
		}
		w.idsMu.Unlock()
		if ok {
			return id, nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", fmt.Errorf("GET /api/v1/calls does not list the call (SIP Call-ID %s): %w", sipCID, ctx.Err())
		case <-t.C:
		}
	}
}

// fetchCalls replaces the Call-ID map with the calls bib lists now.
// Caller holds idsMu.
func (w *webClient) fetchCalls(ctx context.Context) error {
	res, b, err := w.do(ctx, http.MethodGet, "/api/v1/calls", "", nil)
	w.fetched = time.Now()
	if err != nil {
		return fmt.Errorf("GET /api/v1/calls: %w", err)
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /api/v1/calls: status %d: %.200s", res.StatusCode, bytes.TrimSpace(b))
	}
	var page struct {
		Calls []struct {
			ID      string `json:"id"`
			CallIDA string `json:"sip_call_id_a"`
			State   string `json:"state"`
		} `json:"calls"`
	}
	if err := json.Unmarshal(b, &page); err != nil {
		return fmt.Errorf("GET /api/v1/calls: %w", err)
	}
	clear(w.ids)
	for _, c := range page.Calls {
		if c.CallIDA != "" && c.State != "ended" {
			w.ids[c.CallIDA] = c.ID
		}
	}
	return nil
}

// webSup is one WebRTC supervisor's session.
type webSup struct {
	w   *webClient
	pc  *webrtc.PeerConnection
	mic *micTrack
	loc string // the session's resource (Location of the 201)

	mu      sync.Mutex
	closed  bool
	wg      sync.WaitGroup // track readers and the microphone
	stopMic chan struct{}
	micOnce sync.Once
}

// join starts a listening session on bib's call id and returns once its
// peer connection is connected (ICE and DTLS). The microphone will send
// with SSRC ssrc, which the offer declares. onPacket is called for each
// RTP packet bib sends (its size). On error nothing is left running and
// the session, if bib created one, has been deleted.
func (w *webClient) join(ctx context.Context, callID string, ssrc uint32, onPacket func(n int)) (*webSup, error) {
	pc, err := w.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, fmt.Errorf("peer connection: %w", err)
	}
	ws := &webSup{w: w, pc: pc, mic: &micTrack{}, stopMic: make(chan struct{})}
	fail := func(err error) (*webSup, error) {
		if ws.loc != "" {
			dctx, cancel := context.WithTimeout(context.Background(), byeTimeout)
			_ = ws.delete(dctx)
			cancel()
		}
		ws.close()
		return nil, err
	}
	tr, err := pc.AddTransceiverFromTrack(ws.mic, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendrecv})
	if err != nil {
		return fail(fmt.Errorf("transceiver: %w", err))
	}
	state := make(chan webrtc.PeerConnectionState, 16)
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		select {
		case state <- s:
		default:
		}
	})
	// pion runs this in a goroutine of its own per track; the loop ends
	// when the peer connection closes.
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		ws.mu.Lock()
		if ws.closed {
			ws.mu.Unlock()
			return
		}
		ws.wg.Add(1)
		ws.mu.Unlock()
		defer ws.wg.Done()
		buf := make([]byte, 1500)
		for {
			n, _, err := tr.Read(buf)
			if err != nil {
				return
			}
			onPacket(n)
		}
	})
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return fail(fmt.Errorf("offer: %w", err))
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		return fail(fmt.Errorf("offer: %w", err))
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return fail(fmt.Errorf("ICE gathering: %w", ctx.Err()))
	}
	// The offer declares the sender's SSRC, which pion chose at random; the
	// microphone sends with the harness's marking SSRC instead, so that is
	// the one bib is told about.
	offerSDP := pc.LocalDescription().SDP
	if enc := tr.Sender().GetParameters().Encodings; len(enc) > 0 {
		offerSDP = strings.ReplaceAll(offerSDP, fmt.Sprintf("a=ssrc:%d ", enc[0].SSRC), fmt.Sprintf("a=ssrc:%d ", ssrc))
	}
	path := "/api/v1/calls/" + url.PathEscape(callID) + "/listen"
	res, body, err := w.do(ctx, http.MethodPost, path, "application/sdp", []byte(offerSDP))
	if err != nil {
		return fail(fmt.Errorf("POST %s: %w", path, err))
	}
	if res.StatusCode != http.StatusCreated {
		return fail(fmt.Errorf("POST %s: status %d: %.200s", path, res.StatusCode, bytes.TrimSpace(body)))
	}
	ws.loc = res.Header.Get("Location")
	if ws.loc == "" {
		return fail(fmt.Errorf("POST %s: 201 without a Location", path))
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(body)}); err != nil {
		return fail(fmt.Errorf("answer: %w", err))
	}
	for {
		select {
		case s := <-state:
			switch s {
			case webrtc.PeerConnectionStateConnected:
				return ws, nil
			case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
				return fail(fmt.Errorf("peer connection %s (ICE or DTLS with bib)", s))
			}
		case <-ctx.Done():
			return fail(fmt.Errorf("peer connection not connected: %w", ctx.Err()))
		}
	}
}

// transmit sends the supervisor's own audio, stream s's prompt at 50
// packets a second with s's SSRC, until stop. s was claimed for it.
func (ws *webSup) transmit(m *media, s *stream) {
	ws.wg.Add(1)
	go func() {
		defer ws.wg.Done()
		t := time.NewTicker(time.Duration(frameNS))
		defer t.Stop()
		hdr := rtp.Header{Version: 2, SSRC: s.ssrc.Load()}
		for {
			select {
			case <-ws.stopMic:
				return
			case <-t.C:
			}
			for now := m.now(); s.due <= now; s.due += frameNS {
				ws.sendFrame(m, s, &hdr)
			}
		}
	}()
}

// sendFrame writes the stream's next frame to the microphone track.
func (ws *webSup) sendFrame(m *media, s *stream, hdr *rtp.Header) {
	frame := s.p.Frames[s.frame]
	if s.frame++; s.frame == len(s.p.Frames) {
		s.frame = 0
	}
	s.frames.Add(1)
	hdr.SequenceNumber, hdr.Timestamp = s.seq, s.ts
	s.seq++
	s.ts += s.p.TSPerFrame
	b := ws.mic.w.Load()
	if b == nil { // the sender is not started yet: nothing goes out
		return
	}
	hdr.PayloadType, hdr.Marker = b.pt, s.marker
	n, err := b.w.WriteRTP(hdr, frame)
	switch {
	case err != nil:
		s.sendErr.Add(1)
	case n > 0:
		s.marker = false
		now := m.now()
		if s.firstNS.Load() == 0 {
			s.firstNS.Store(now)
		}
		s.lastNS.Store(now)
		s.sent.Add(1)
	}
}

// halt stops the microphone (idempotent).
func (ws *webSup) halt() {
	ws.micOnce.Do(func() { close(ws.stopMic) })
}

// delete ends the session at bib: DELETE on its Location. A session bib
// already ended (404) is not an error.
func (ws *webSup) delete(ctx context.Context) error {
	res, b, err := ws.w.do(ctx, http.MethodDelete, ws.loc, "", nil)
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusNoContent && res.StatusCode != http.StatusOK && res.StatusCode != http.StatusNotFound {
		return fmt.Errorf("DELETE %s: status %d: %.200s", ws.loc, res.StatusCode, bytes.TrimSpace(b))
	}
	return nil
}

// close stops the microphone, closes the peer connection and waits for
// every goroutine of the session (pion's and the harness's).
func (ws *webSup) close() {
	ws.halt()
	ws.mu.Lock()
	ws.closed = true
	ws.mu.Unlock()
	_ = ws.pc.GracefulClose()
	ws.wg.Wait()
}

// micTrack is the WebRTC supervisor's microphone: a pion TrackLocal that
// writes RTP headers as given. (pion's own static tracks put the sender's
// random SSRC in every packet; the harness needs its marking SSRC.)
type micTrack struct {
	w atomic.Pointer[micBinding]
}

type micBinding struct {
	w  webrtc.TrackLocalWriter
	pt uint8
}

var _ webrtc.TrackLocal = (*micTrack)(nil)

func (t *micTrack) Bind(ctx webrtc.TrackLocalContext) (webrtc.RTPCodecParameters, error) {
	for _, c := range ctx.CodecParameters() {
		if strings.EqualFold(c.MimeType, webrtc.MimeTypePCMU) {
			t.w.Store(&micBinding{w: ctx.WriteStream(), pt: uint8(c.PayloadType)})
			return c, nil
		}
	}
	return webrtc.RTPCodecParameters{}, webrtc.ErrUnsupportedCodec
}

func (t *micTrack) Unbind(webrtc.TrackLocalContext) error {
	t.w.Store(nil)
	return nil
}

func (t *micTrack) ID() string                { return "mic" }
func (t *micTrack) RID() string               { return "" }
func (t *micTrack) StreamID() string          { return "bib-load-supervisor" }
func (t *micTrack) Kind() webrtc.RTPCodecType { return webrtc.RTPCodecTypeAudio }

// superviseWebRTC is supervise over WebRTC: it joins c's call as a
// browser supervisor and returns the call slot's supervisor stream (its
// SSRC marks the microphone's packets), or nil when the supervisor failed.
func (r *runner) superviseWebRTC(ctx context.Context, c *call) *stream {
	r.supReq.Add(1)
	supFail := func(why string) *stream {
		r.supFail.Add(1)
		r.mu.Lock()
		if r.supWhy == "" {
			r.supWhy = fmt.Sprintf("WebRTC supervisor of line %s: %s", c.line, why)
		}
		r.mu.Unlock()
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, r.cfg.SetupTimeout)
	defer cancel()
	lctx, lcancel := context.WithTimeout(sctx, callLookup)
	id, err := r.web.callID(lctx, c.agentCID)
	lcancel()
	if err != nil {
		return supFail(err.Error())
	}
	s := r.m.claim(c.slot, kindSupervisor, r.webP, 0, c.n*71)
	ws, err := r.web.join(sctx, id, s.ssrc.Load(), func(n int) {
		r.m.supRecv.Add(1)
		r.m.supBytes.Add(uint64(n))
		r.webRecv.Add(1)
	})
	if err != nil {
		r.m.finish(s)
		return supFail(err.Error())
	}
	ws.transmit(r.m, s)
	c.mu.Lock()
	c.web = ws
	c.mu.Unlock()
	r.supOK.Add(1)
	r.supWeb.Add(1)
	return s
}

// endWebRTC ends a WebRTC supervisor at the end of its call.
func (r *runner) endWebRTC(ws *webSup) {
	ctx, cancel := context.WithTimeout(context.Background(), byeTimeout)
	if err := ws.delete(ctx); err != nil {
		r.webDelFail.Add(1)
	}
	cancel()
	ws.close()
}
