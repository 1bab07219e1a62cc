package bridge

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
	"go.uber.org/goleak"
)

// clientConn is the browser stand-in's socket: it counts the RTP datagrams
// the client sends, so the test knows what bib must have dropped.
type clientConn struct {
	*net.UDPConn
	rtpOut atomic.Uint64
}

func (c *clientConn) WriteTo(b []byte, a net.Addr) (int, error) {
	c.note(b)
	return c.UDPConn.WriteTo(b, a)
}

func (c *clientConn) WriteToAddrPort(b []byte, a netip.AddrPort) (int, error) {
	c.note(b)
	return c.UDPConn.WriteToUDPAddrPort(b, a)
}

func (c *clientConn) ReadFromAddrPort(b []byte) (int, netip.AddrPort, error) {
	return c.UDPConn.ReadFromUDPAddrPort(b)
}

func (c *clientConn) note(b []byte) {
	if len(b) >= 2 && b[0] >= 128 && b[0] <= 191 && !isRTCP(b) {
		c.rtpOut.Add(1)
	}
}

// whepClient is a pion peer connection playing the browser: it receives the
// mix and, to prove bib drops it, sends loud audio of its own on a second
// (sendonly) m-line.
type whepClient struct {
	pc    *webrtc.PeerConnection
	conn  *clientConn
	mux   ice.UDPMux
	mic   *webrtc.TrackLocalStaticSample
	pkts  chan *rtp.Packet
	track chan struct{}
}

func newWHEPClient(t *testing.T, mode string) *whepClient {
	t.Helper()
	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	c := &whepClient{conn: &clientConn{UDPConn: uc}, pkts: make(chan *rtp.Packet, 1000), track: make(chan struct{})}
	c.mux = webrtc.NewICEUDPMux(nil, c.conn)
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	se := webrtc.SettingEngine{}
	se.SetICEUDPMux(c.mux)
	se.SetIncludeLoopbackCandidate(true)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	api := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se))
	c.pc, err = api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.pc.Close(); c.mux.Close(); uc.Close() })
	switch mode {
	case "recvonly":
		if _, err := c.pc.AddTransceiverFromKind(webrtc.RTPCodecTypeAudio, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
	case "sendrecv", "extra":
		// sendrecv: one m-line on which the client also sends (an
		// uncooperative client: pion keeps sending even when the answer
		// says sendonly). extra: a recvonly m-line plus a sendonly one.
		if mode == "extra" {
			if _, err := c.pc.AddTransceiverFromKind(webrtc.RTPCodecTypeAudio, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
				t.Fatal(err)
			}
		}
		c.mic, err = webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypePCMU, ClockRate: 8000}, "mic", "sup")
		if err != nil {
			t.Fatal(err)
		}
		dir := webrtc.RTPTransceiverDirectionSendrecv
		if mode == "extra" {
			dir = webrtc.RTPTransceiverDirectionSendonly
		}
		if _, err := c.pc.AddTransceiverFromTrack(c.mic, webrtc.RTPTransceiverInit{Direction: dir}); err != nil {
			t.Fatal(err)
		}
	}
	c.pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		close(c.track)
		for {
			p, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			select {
			case c.pkts <- p:
			default:
			}
		}
	})
	return c
}

func (c *whepClient) offer(t *testing.T) string {
	t.Helper()
	o, err := c.pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	g := webrtc.GatheringCompletePromise(c.pc)
	if err := c.pc.SetLocalDescription(o); err != nil {
		t.Fatal(err)
	}
	<-g
	return c.pc.LocalDescription().SDP
}

// answerDirections returns the direction attribute of each m-line.
func answerDirections(t *testing.T, answer string) []string {
	t.Helper()
	var dirs []string
	for _, l := range strings.Split(answer, "\r\n") {
		switch l {
		case "m=audio 9 UDP/TLS/RTP/SAVPF 0", "a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive":
			dirs = append(dirs, l)
		}
	}
	return dirs
}

func TestWHEPAnswerIsListenOnly(t *testing.T) {
	mc := newMonitoredCall(t)
	for _, tc := range []struct {
		mode string
		want []string
	}{
		{"recvonly", []string{"m=audio 9 UDP/TLS/RTP/SAVPF 0", "a=sendonly"}},
		{"sendrecv", []string{"m=audio 9 UDP/TLS/RTP/SAVPF 0", "a=sendonly"}},
		{"extra", []string{"m=audio 9 UDP/TLS/RTP/SAVPF 0", "a=sendonly", "m=audio 9 UDP/TLS/RTP/SAVPF 0", "a=inactive"}},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			cl := newWHEPClient(t, tc.mode)
			answer, s, err := NewWHEPSession(context.Background(), cl.offer(t), mc.m, WebRTCConfig{Engine: mc.e})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if got := answerDirections(t, answer); !slices.Equal(got, tc.want) {
				t.Fatalf("answer m-lines and directions %q, want %q:\n%s", got, tc.want, answer)
			}
			if err := cl.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestWHEPSessionHearsBothPartiesAndDropsBrowserAudio(t *testing.T) {
	mc := newMonitoredCall(t)
	cl := newWHEPClient(t, "sendrecv")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	answer, s, err := NewWHEPSession(ctx, cl.offer(t), mc.m, WebRTCConfig{Engine: mc.e})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Listen-only, host candidate on the media address, from the port range.
	for _, want := range []string{"a=sendonly", "PCMU/8000", "typ host"} {
		if !strings.Contains(answer, want) {
			t.Fatalf("answer lacks %q:\n%s", want, answer)
		}
	}
	if strings.Contains(answer, "typ srflx") || strings.Contains(answer, ".local") {
		t.Fatalf("answer has non-host or mDNS candidates:\n%s", answer)
	}
	if err := cl.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		t.Fatal(err)
	}
	if mc.m.Outputs() != 1 {
		t.Fatalf("mixer has %d outputs", mc.m.Outputs())
	}

	loud := make([]byte, 160)
	for i := range loud {
		loud[i] = byte(0x80 + i%2) // near full scale in u-law
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var got []*rtp.Packet
	for i := 0; i < 150 && len(got) < 70; i++ {
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatal("timeout")
		}
		mc.send(t)
		if err := cl.mic.WriteSample(media.Sample{Data: loud, Duration: 20 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
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
	mc.checkParties(t)
	if len(got) < 70 {
		t.Fatalf("browser received %d packets", len(got))
	}
	checkMixStream(t, got, got[0].PayloadType)
	sent := cl.conn.rtpOut.Load()
	if sent < 30 {
		t.Fatalf("the client sent only %d RTP packets: the drop path is not exercised", sent)
	}
	eventually(t, "browser packets counted", func() bool { return s.Dropped() == sent })
	s.Close()
	if mc.m.Outputs() != 0 {
		t.Fatal("closed session still a mixer output")
	}
	select {
	case <-s.Done():
	case <-ctx.Done():
		t.Fatal("Done not closed")
	}
}

func TestWHEPOfferRefused(t *testing.T) {
	e := testEngine(t, freeRange(t))
	m := NewMixer("x", MixerConfig{Tick: make(chan time.Time)})
	defer m.Close()
	sendOnly := "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\na=sendonly\r\na=rtpmap:0 PCMU/8000\r\n"
	opusOnly := "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=recvonly\r\na=rtpmap:111 opus/48000/2\r\n"
	for _, tc := range []struct {
		name, offer string
		want        error
	}{
		{"garbage", "hello", ErrWHEPOffer},
		{"sendonly", sendOnly, ErrWHEPDirection},
		{"opus only", opusOnly, ErrWHEPNoPCMU},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := NewWHEPSession(context.Background(), tc.offer, m, WebRTCConfig{Engine: e})
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
		})
	}
	if in, _ := e.pool.stats(); in != 0 {
		t.Fatalf("%d port pairs leaked", in)
	}
}

// FuzzListenOnlyOffer: any offer either is refused with one of the offer
// errors or becomes an offer whose every m-line is recvonly (the one
// listened to) or inactive.
func FuzzListenOnlyOffer(f *testing.F) {
	f.Add("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\na=sendrecv\r\na=rtpmap:0 PCMU/8000\r\n")
	f.Add("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\nc=IN IP4 0.0.0.0\r\na=recvonly\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=sendonly\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n")
	f.Add("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\n")
	f.Add("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=sendonly\r\nm=audio 9 RTP/AVP 0\r\na=recvonly\r\n")
	f.Add("garbage")
	f.Fuzz(func(t *testing.T, offer string) {
		out, err := listenOnlyOffer(offer)
		if err != nil {
			if !errors.Is(err, ErrWHEPOffer) && !errors.Is(err, ErrWHEPNoPCMU) && !errors.Is(err, ErrWHEPDirection) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		recv := 0
		for _, l := range strings.Split(out, "\r\n") {
			switch l {
			case "a=sendrecv", "a=sendonly":
				t.Fatalf("rewritten offer still has %s:\n%s", l, out)
			case "a=recvonly":
				recv++
			}
		}
		if recv != 1 {
			t.Fatalf("%d recvonly m-lines:\n%s", recv, out)
		}
	})
}

// TestWHEPSessionCloseLeavesNoGoroutines: Close stops every goroutine of the
// session (peer connection, ICE mux, readers) and the mixer's.
func TestWHEPSessionCloseLeavesNoGoroutines(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	mc := newMonitoredCall(t)
	cl := newWHEPClient(t, "recvonly")
	answer, s, err := NewWHEPSession(context.Background(), cl.offer(t), mc.m, WebRTCConfig{Engine: mc.e})
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	cl.pc.Close()
	cl.mux.Close()
	mc.m.Close()
	mc.colA.stop()
	mc.colB.stop()
	mc.c.Close("test")
	if in, _ := mc.e.pool.stats(); in != 0 {
		t.Fatalf("%d port pairs still in use", in)
	}
}
