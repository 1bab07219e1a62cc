package bridge

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/logging"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// Browser supervisors: WHEP-style WebRTC sessions (an HTTP POST carries the
// browser's SDP offer, the answer comes back in the response; no trickle
// ICE). bib sends the call's mix as PCMU, which every browser plays, on a
// sendonly transceiver; ICE uses one host candidate on the media address,
// from a socket in the engine's RTP port range (no STUN, no mDNS, no TURN).
// Whatever the browser sends (RTP from a microphone it was not asked for)
// is counted at the socket and never read into anything.

// Errors of NewWHEPSession: the offer is unusable (HTTP 400 or 415/422 in
// the API).
var (
	ErrWHEPOffer     = errors.New("whep: bad sdp offer")
	ErrWHEPNoPCMU    = errors.New("whep: the offer has no PCMU/8000 audio (bib sends G.711 mu-law)")
	ErrWHEPDirection = errors.New("whep: the offer's audio cannot receive (want recvonly or sendrecv)")
)

// whepGatherTimeout bounds ICE gathering (host candidates only: instant).
const whepGatherTimeout = 5 * time.Second

// WebRTCConfig configures browser sessions.
type WebRTCConfig struct {
	// Engine provides the session's UDP socket from the RTP port range on
	// the media address. Required.
	Engine *Engine
	// Log gets a line per session start and end. Default: discard.
	Log *slog.Logger
}

// WHEPSession is one browser supervisor listening to one call. It
// implements MixOutput; NewWHEPSession adds it to the mixer and Close
// removes it.
type WHEPSession struct {
	id      string
	log     *slog.Logger
	mixer   *Mixer
	pc      *webrtc.PeerConnection
	track   *webrtc.TrackLocalStaticRTP
	mux     ice.UDPMux
	conn    *countingConn
	release func()

	stamp rtpStamp   // mixer goroutine only
	pkt   rtp.Packet // mixer goroutine only
	sent  atomic.Uint64
	errs  atomic.Uint64

	done      chan struct{}
	doneOnce  sync.Once
	closeOnce sync.Once
	wg        sync.WaitGroup
}

var _ MixOutput = (*WHEPSession)(nil)

// NewWHEPSession answers a browser's SDP offer: it binds a socket from the
// engine's range, sets up a peer connection that sends the mix as PCMU and
// nothing else, waits for ICE gathering (host candidates only) and returns
// the complete SDP answer. The session starts receiving mixed frames at
// once; they flow as soon as ICE and DTLS complete.
func NewWHEPSession(ctx context.Context, offerSDP string, mixer *Mixer, cfg WebRTCConfig) (string, *WHEPSession, error) {
	if cfg.Engine == nil {
		return "", nil, errors.New("whep: WebRTCConfig.Engine is required")
	}
	offerSDP, err := listenOnlyOffer(offerSDP)
	if err != nil {
		return "", nil, err
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var idb [12]byte
	rand.Read(idb[:])
	s := &WHEPSession{id: hex.EncodeToString(idb[:]), mixer: mixer, stamp: newRTPStamp(), done: make(chan struct{})}
	s.log = log.With("leg", "whep", "session", s.id)

	rtpc, rtcpc, release, err := cfg.Engine.AllocatePair()
	if err != nil {
		return "", nil, err
	}
	rtcpc.SetReadDeadline(time.Unix(1, 0)) // the odd port of the pair stays unused
	s.release = release
	s.conn = &countingConn{UDPConn: rtpc}
	s.mux = webrtc.NewICEUDPMux(pionLogs{s.log}.NewLogger("udpmux"), s.conn)

	answer, err := s.setup(ctx, offerSDP, cfg.Engine.IP())
	if err != nil {
		s.Close()
		return "", nil, err
	}
	if err := mixer.AddOutput(s, "PCMU"); err != nil {
		s.Close()
		return "", nil, err
	}
	s.log.Info("browser supervisor session started", "local", rtpc.LocalAddr().String())
	return answer, s, nil
}

func (s *WHEPSession) setup(ctx context.Context, offerSDP string, ip netip.Addr) (string, error) {
	me := &webrtc.MediaEngine{}
	if err := me.RegisterCodec(webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypePCMU, ClockRate: 8000, Channels: 1},
		PayloadType:        0,
	}, webrtc.RTPCodecTypeAudio); err != nil {
		return "", err
	}
	ir := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(me, ir); err != nil {
		return "", err
	}
	se := webrtc.SettingEngine{LoggerFactory: pionLogs{s.log}}
	se.SetICEUDPMux(s.mux)
	se.SetIncludeLoopbackCandidate(ip.IsLoopback())
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	nt := webrtc.NetworkTypeUDP4
	if ip.Is6() && !ip.Is4In6() {
		nt = webrtc.NetworkTypeUDP6
	}
	se.SetNetworkTypes([]webrtc.NetworkType{nt})
	se.SetIPFilter(func(x net.IP) bool { a, ok := netip.AddrFromSlice(x); return ok && a.Unmap() == ip.Unmap() })
	api := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se), webrtc.WithInterceptorRegistry(ir))

	pc, err := api.NewPeerConnection(webrtc.Configuration{}) // no ICE servers: host candidates only
	if err != nil {
		return "", fmt.Errorf("whep: peer connection: %w", err)
	}
	s.pc = pc
	s.track, err = webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypePCMU, ClockRate: 8000, Channels: 1}, "audio", "bib-mix")
	if err != nil {
		return "", err
	}
	tr, err := pc.AddTransceiverFromTrack(s.track, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
	if err != nil {
		return "", fmt.Errorf("whep: transceiver: %w", err)
	}
	// Read RTCP (receiver reports) so the interceptors see it; nothing else.
	sender := tr.Sender()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		buf := make([]byte, 1500)
		for {
			if _, _, err := sender.Read(buf); err != nil {
				return
			}
		}
	}()
	// No m-line is answered with a receiving direction, so no track should
	// ever arrive; if one did, it is drained and discarded (its packets were
	// already counted at the socket).
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			buf := make([]byte, 1500)
			for {
				if _, _, err := tr.Read(buf); err != nil {
					return
				}
			}
		}()
	})
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		s.log.Debug("peer connection state", "state", st.String())
		if st == webrtc.PeerConnectionStateFailed || st == webrtc.PeerConnectionStateClosed {
			s.doneOnce.Do(func() { close(s.done) })
		}
	})
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offerSDP}); err != nil {
		return "", fmt.Errorf("%w: %w", ErrWHEPOffer, err)
	}
	ans, err := pc.CreateAnswer(nil)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrWHEPOffer, err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(ans); err != nil {
		return "", fmt.Errorf("whep: local description: %w", err)
	}
	gctx, cancel := context.WithTimeout(ctx, whepGatherTimeout)
	defer cancel()
	select {
	case <-gathered:
	case <-gctx.Done():
		return "", fmt.Errorf("whep: ice gathering: %w", gctx.Err())
	}
	return pc.LocalDescription().SDP, nil
}

// listenOnlyOffer checks a browser's offer and rewrites it so that bib's
// answer can only be listen-only: the first audio m-line that can receive
// and offers PCMU/8000 is the listening one and is presented to the peer
// connection as recvonly (so the answer says sendonly even when the browser
// offered sendrecv); every other m-line is presented as inactive (answered
// inactive). The browser sees only the answer, which never lets it send.
func listenOnlyOffer(offer string) (string, error) {
	var sd sdp.SessionDescription
	if err := sd.UnmarshalString(offer); err != nil {
		return "", fmt.Errorf("%w: %w", ErrWHEPOffer, err)
	}
	listen := -1
	var firstErr error = ErrWHEPDirection
	for i, md := range sd.MediaDescriptions {
		if md.MediaName.Media != "audio" || md.MediaName.Port.Value == 0 || listen >= 0 {
			continue
		}
		dir := "sendrecv"
		for _, a := range md.Attributes {
			if _, ok := ParseMode(a.Key); ok {
				dir = a.Key
			}
		}
		if dir == "sendonly" || dir == "inactive" {
			continue
		}
		if !offersPCMU(md) {
			firstErr = ErrWHEPNoPCMU
			continue
		}
		listen = i
	}
	if listen < 0 {
		return "", firstErr
	}
	sess := sd.Attributes[:0:0] // media-level attributes below override; drop the session's
	for _, a := range sd.Attributes {
		if _, ok := ParseMode(a.Key); !ok {
			sess = append(sess, a)
		}
	}
	sd.Attributes = sess
	for i, md := range sd.MediaDescriptions {
		want := "inactive"
		if i == listen {
			want = "recvonly"
		}
		attrs := md.Attributes[:0:0]
		for _, a := range md.Attributes {
			if _, ok := ParseMode(a.Key); !ok {
				attrs = append(attrs, a)
			}
		}
		md.Attributes = append(attrs, sdp.NewPropertyAttribute(want))
	}
	b, err := sd.Marshal()
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrWHEPOffer, err)
	}
	return string(b), nil
}

func offersPCMU(md *sdp.MediaDescription) bool {
	for _, f := range md.MediaName.Formats {
		if f == "0" {
			return true
		}
	}
	for _, a := range md.Attributes {
		if a.Key == "rtpmap" && strings.Contains(strings.ToUpper(a.Value), " PCMU/8000") {
			return true
		}
	}
	return false
}

// ID returns the session id (the last segment of its resource URL).
func (s *WHEPSession) ID() string { return s.id }

// Done is closed when the browser's peer connection failed or closed.
func (s *WHEPSession) Done() <-chan struct{} { return s.done }

// Dropped returns how many RTP packets the browser sent (all dropped
// unread).
func (s *WHEPSession) Dropped() uint64 { return s.conn.rtpIn.Load() }

// WHEPStats is a snapshot of a session.
type WHEPStats struct {
	ID          string `json:"id"`
	State       string `json:"state"`
	PacketsSent uint64 `json:"packets_sent"`
	SendErrors  uint64 `json:"send_errors"`
	Dropped     uint64 `json:"supervisor_packets_dropped"`
	RTCPIn      uint64 `json:"rtcp_in"`
}

// Stats returns a snapshot.
func (s *WHEPSession) Stats() WHEPStats {
	st := WHEPStats{ID: s.id, PacketsSent: s.sent.Load(), SendErrors: s.errs.Load(), Dropped: s.Dropped(), RTCPIn: s.conn.rtcpIn.Load()}
	if s.pc != nil {
		st.State = s.pc.ConnectionState().String()
	}
	return st
}

// WriteMix sends one mixed frame on the track. The sequence number and
// timestamp are the session's own and continuous; pion sets the SSRC and
// payload type the answer negotiated.
func (s *WHEPSession) WriteMix(f *MixFrame) {
	seq, ts, first := s.stamp.next(f.Samples)
	p := &s.pkt
	p.Header = rtp.Header{Version: 2, Marker: first, SequenceNumber: seq, Timestamp: ts, SSRC: s.stamp.ssrc, PayloadType: 0}
	p.Payload = f.Payload
	if err := s.track.WriteRTP(p); err != nil {
		s.errs.Add(1)
		return
	}
	s.sent.Add(1)
}

// Close removes the session from the mixer, closes the peer connection and
// frees the socket. Idempotent.
func (s *WHEPSession) Close() error {
	var err error
	s.closeOnce.Do(func() {
		if s.mixer != nil {
			s.mixer.RemoveOutput(s)
		}
		if s.pc != nil {
			err = s.pc.Close()
		}
		if s.mux != nil {
			s.mux.Close()
		}
		s.release()
		s.wg.Wait()
		s.doneOnce.Do(func() { close(s.done) })
		s.log.Info("browser supervisor session closed", "packets_sent", s.sent.Load(), "supervisor_packets_dropped", s.Dropped())
	})
	return err
}

// countingConn is the session's UDP socket as ICE sees it. It counts the
// RTP and RTCP datagrams the browser sends (RFC 7983 demultiplexing: first
// byte 128-191; RFC 5761 for RTCP). SRTP leaves the RTP header in clear, so
// the counts need no keys. It is deliberately not a *net.UDPConn so that
// pion reads through ReadFrom/ReadFromAddrPort below.
type countingConn struct {
	*net.UDPConn
	rtpIn, rtcpIn atomic.Uint64
}

func (c *countingConn) count(b []byte) {
	if len(b) < 2 || b[0] < 128 || b[0] > 191 {
		return // STUN, DTLS
	}
	if isRTCP(b) {
		c.rtcpIn.Add(1)
	} else {
		c.rtpIn.Add(1)
	}
}

// ReadFrom counts and returns a datagram.
func (c *countingConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := c.UDPConn.ReadFrom(b)
	if err == nil {
		c.count(b[:n])
	}
	return n, a, err
}

// ReadFromAddrPort is ReadFrom without allocating an address.
func (c *countingConn) ReadFromAddrPort(b []byte) (int, netip.AddrPort, error) {
	n, a, err := c.UDPConn.ReadFromUDPAddrPort(b)
	if err == nil {
		c.count(b[:n])
	}
	return n, a, err
}

// WriteToAddrPort writes a datagram.
func (c *countingConn) WriteToAddrPort(b []byte, a netip.AddrPort) (int, error) {
	return c.UDPConn.WriteToUDPAddrPort(b, a)
}

// pionLogs sends pion's log lines to slog at debug level (its warnings and
// errors are about a browser's behaviour, e.g. RTP it should not send, and
// could repeat per packet).
type pionLogs struct{ log *slog.Logger }

// PionLogs is a pion logger factory writing to log at debug level (pion's
// default writes to stderr), for other pion users in this project.
func PionLogs(log *slog.Logger) logging.LoggerFactory { return pionLogs{log} }

func (f pionLogs) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{f.log.With("pion", scope)}
}

type pionLogger struct{ log *slog.Logger }

func (l pionLogger) Trace(string)          {}
func (l pionLogger) Tracef(string, ...any) {}
func (l pionLogger) Debug(m string)        { l.log.Debug(m) }
func (l pionLogger) Debugf(f string, a ...any) {
	l.log.Debug(fmt.Sprintf(f, a...))
}
func (l pionLogger) Info(m string)            { l.log.Debug(m) }
func (l pionLogger) Infof(f string, a ...any) { l.log.Debug(fmt.Sprintf(f, a...)) }
func (l pionLogger) Warn(m string)            { l.log.Debug(m, "pion_level", "warn") }
func (l pionLogger) Warnf(f string, a ...any) {
	l.log.Debug(fmt.Sprintf(f, a...), "pion_level", "warn")
}
func (l pionLogger) Error(m string) { l.log.Debug(m, "pion_level", "error") }
func (l pionLogger) Errorf(f string, a ...any) {
	l.log.Debug(fmt.Sprintf(f, a...), "pion_level", "error")
}
