// Package siptest provides a scriptable SIP user agent with its own RTP
// socket, for loopback tests of bib (package sip, the load harness, and
// other packages' integration tests). It is built on sipgo and speaks real
// SIP over UDP on 127.0.0.1; it does not import package sip.
package siptest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/emiago/sipgo"
	sipmsg "github.com/emiago/sipgo/sip"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
)

// Party is one SIP user agent (phone) with a UDP SIP socket and a UDP RTP
// socket, both on 127.0.0.1 with ports picked by the kernel. Incoming
// INVITEs arrive on Incoming; the test decides how to answer. In-dialog
// re-INVITEs and UPDATEs are answered automatically (mirroring the
// direction attribute), BYEs with 200.
type Party struct {
	User string
	// AuthUser and AuthPassword, when set, answer digest challenges (401,
	// 407) to the party's INVITEs. Set before Invite.
	AuthUser, AuthPassword string
	// Answers shapes the SDP the party answers re-INVITEs and UPDATEs with
	// (its Mode is always the offer's mirror); e.g. Proto RTP/SAVP and an
	// a=crypto line in Extra for an SRTP party. Set before the call.
	Answers SDPOptions

	UA  *sipgo.UserAgent
	Srv *sipgo.Server
	Cli *sipgo.Client

	SIPAddr netip.AddrPort
	RTPAddr netip.AddrPort

	// Incoming receives every new INVITE (buffered; tests read it).
	Incoming chan *Call

	log     *slog.Logger
	sipConn *net.UDPConn
	rtpConn *net.UDPConn
	dua     *sipgo.DialogUA
	sdpVer  atomic.Uint64
	wg      sync.WaitGroup
	cancel  context.CancelFunc

	mu       sync.Mutex
	calls    map[string]*Call
	received []Received
	notify   chan struct{}
	closed   bool
}

// Received is one datagram that arrived on the party's RTP socket.
type Received struct {
	From netip.AddrPort
	Data []byte
}

// NewParty binds the sockets and starts serving SIP and reading RTP.
func NewParty(user string, log *slog.Logger) (*Party, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sipConn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	rtpConn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		sipConn.Close()
		return nil, err
	}
	p := &Party{
		User: user, log: log, sipConn: sipConn, rtpConn: rtpConn,
		SIPAddr:  sipConn.LocalAddr().(*net.UDPAddr).AddrPort(),
		RTPAddr:  rtpConn.LocalAddr().(*net.UDPAddr).AddrPort(),
		Incoming: make(chan *Call, 16),
		calls:    map[string]*Call{},
		notify:   make(chan struct{}, 1),
	}
	stack := log.With("party", user)
	p.UA, err = sipgo.NewUA(sipgo.WithUserAgent(user),
		sipgo.WithUserAgentTransportLayerOptions(sipmsg.WithTransportLayerLogger(stack)),
		sipgo.WithUserAgentTransactionLayerOptions(sipmsg.WithTransactionLayerLogger(stack)))
	if err == nil {
		p.Srv, err = sipgo.NewServer(p.UA, sipgo.WithServerLogger(stack))
	}
	if err == nil {
		p.Cli, err = sipgo.NewClient(p.UA, sipgo.WithClientHostname("127.0.0.1"), sipgo.WithClientLogger(stack))
	}
	if err != nil {
		sipConn.Close()
		rtpConn.Close()
		return nil, err
	}
	p.dua = &sipgo.DialogUA{Client: p.Cli, ContactHDR: sipmsg.ContactHeader{Address: p.URI()}}
	p.Srv.OnInvite(p.onInvite)
	p.Srv.OnAck(p.onAck)
	p.Srv.OnBye(p.onBye)
	p.Srv.OnUpdate(p.onUpdate)
	p.Srv.OnNotify(p.onNotify)
	p.Srv.OnOptions(func(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
		_ = tx.Respond(sipmsg.NewResponseFromRequest(req, 200, "OK", nil))
	})
	p.wg.Add(2)
	go func() { defer p.wg.Done(); _ = p.Srv.ServeUDP(sipConn) }()
	go func() { defer p.wg.Done(); p.readRTP() }()
	return p, nil
}

// Close stops the party and waits for its goroutines.
func (p *Party) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	err := errors.Join(p.sipConn.Close(), p.rtpConn.Close())
	p.wg.Wait()
	p.UA.Close()
	return err
}

// URI is the party's contact URI.
func (p *Party) URI() sipmsg.Uri {
	return sipmsg.Uri{Scheme: "sip", User: p.User, Host: p.SIPAddr.Addr().String(), Port: int(p.SIPAddr.Port())}
}

// SDPOptions shape an SDP body.
type SDPOptions struct {
	Mode    string   // sendrecv (default), sendonly, recvonly, inactive
	Codecs  []string // payload types in order, default "0 8 9 101 13"
	RTCPMux bool
	Proto   string         // default RTP/AVP
	Addr    netip.AddrPort // default the party's RTP socket
	Extra   string         // raw lines appended (each ending in \r\n)
}

// SDP builds an SDP body for the party's RTP socket with PCMU, PCMA, G722,
// telephone-event and CN.
func (p *Party) SDP(o SDPOptions) []byte {
	if o.Mode == "" {
		o.Mode = "sendrecv"
	}
	if len(o.Codecs) == 0 {
		o.Codecs = []string{"0", "8", "9", "101", "13"}
	}
	if o.Proto == "" {
		o.Proto = "RTP/AVP"
	}
	if !o.Addr.IsValid() {
		o.Addr = p.RTPAddr
	}
	var b strings.Builder
	fmt.Fprintf(&b, "v=0\r\no=%s 4242 %d IN IP4 %s\r\ns=siptest\r\nc=IN IP4 %s\r\nt=0 0\r\n",
		p.User, p.sdpVer.Add(1), o.Addr.Addr(), o.Addr.Addr())
	fmt.Fprintf(&b, "m=audio %d %s %s\r\n", o.Addr.Port(), o.Proto, strings.Join(o.Codecs, " "))
	maps := map[string]string{"0": "PCMU/8000", "8": "PCMA/8000", "9": "G722/8000", "101": "telephone-event/8000", "13": "CN/8000"}
	for _, c := range o.Codecs {
		if m, ok := maps[c]; ok {
			fmt.Fprintf(&b, "a=rtpmap:%s %s\r\n", c, m)
		}
		if c == "101" {
			b.WriteString("a=fmtp:101 0-16\r\n")
		}
	}
	b.WriteString("a=ptime:20\r\n")
	if o.RTCPMux {
		b.WriteString("a=rtcp-mux\r\n")
	}
	b.WriteString("a=" + o.Mode + "\r\n")
	b.WriteString(o.Extra)
	return []byte(b.String())
}

// Media is what a party learned from an SDP body it received.
type Media struct {
	RTP     netip.AddrPort
	Mode    string
	Formats []string
	RTCPMux bool
	Raw     []byte
}

// ParseSDP reads the first audio m-line of body.
func ParseSDP(body []byte) (Media, error) {
	var sd sdp.SessionDescription
	if err := sd.Unmarshal(body); err != nil {
		return Media{}, err
	}
	for _, md := range sd.MediaDescriptions {
		if md.MediaName.Media != "audio" || md.MediaName.Port.Value == 0 {
			continue
		}
		ci := md.ConnectionInformation
		if ci == nil {
			ci = sd.ConnectionInformation
		}
		if ci == nil || ci.Address == nil {
			return Media{}, errors.New("no c= line")
		}
		ip, err := netip.ParseAddr(ci.Address.Address)
		if err != nil {
			return Media{}, err
		}
		m := Media{RTP: netip.AddrPortFrom(ip, uint16(md.MediaName.Port.Value)), Mode: "sendrecv", Formats: md.MediaName.Formats, Raw: body}
		for _, a := range append(slices.Clone(sd.Attributes), md.Attributes...) {
			switch a.Key {
			case "sendrecv", "sendonly", "recvonly", "inactive":
				m.Mode = a.Key
			case "rtcp-mux":
				m.RTCPMux = true
			}
		}
		return m, nil
	}
	return Media{}, errors.New("no active audio m-line")
}

func mirror(mode string) string {
	switch mode {
	case "sendonly":
		return "recvonly"
	case "recvonly":
		return "sendonly"
	case "inactive":
		return "inactive"
	}
	return "sendrecv"
}

// Register sends REGISTER for the party to a registrar with an Expires
// header (seconds) and returns the final response.
func (p *Party) Register(ctx context.Context, registrar netip.AddrPort, expires int) (*sipmsg.Response, error) {
	req := p.NewRegister(registrar)
	req.AppendHeader(sipmsg.NewHeader("Expires", strconv.Itoa(expires)))
	return p.Cli.Do(ctx, req)
}

// NewRegister builds a REGISTER with To/From/Contact for the party; add
// Expires or contact parameters, then send with p.Cli.Do.
func (p *Party) NewRegister(registrar netip.AddrPort) *sipmsg.Request {
	host := registrar.Addr().String()
	req := sipmsg.NewRequest(sipmsg.REGISTER, sipmsg.Uri{Scheme: "sip", Host: host, Port: int(registrar.Port())})
	aor := sipmsg.Uri{Scheme: "sip", User: p.User, Host: host}
	from := &sipmsg.FromHeader{Address: aor, Params: sipmsg.NewParams()}
	from.Params.Add("tag", sipmsg.GenerateTagN(10))
	req.AppendHeader(from)
	req.AppendHeader(&sipmsg.ToHeader{Address: aor, Params: sipmsg.NewParams()})
	req.AppendHeader(&sipmsg.ContactHeader{Address: p.URI(), Params: sipmsg.NewParams()})
	return req
}

// SendRTP sends one datagram from the party's RTP socket.
func (p *Party) SendRTP(dst netip.AddrPort, b []byte) error {
	_, err := p.rtpConn.WriteToUDPAddrPort(b, dst)
	return err
}

func (p *Party) readRTP() {
	buf := make([]byte, 2048)
	for {
		n, from, err := p.rtpConn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		p.mu.Lock()
		p.received = append(p.received, Received{From: from, Data: slices.Clone(buf[:n])})
		p.mu.Unlock()
		select {
		case p.notify <- struct{}{}:
		default:
		}
	}
}

// Received returns copies of every datagram received so far.
func (p *Party) Received() []Received {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.received)
}

// WaitPackets waits until at least n datagrams have arrived.
func (p *Party) WaitPackets(ctx context.Context, n int) ([]Received, error) {
	for {
		got := p.Received()
		if len(got) >= n {
			return got, nil
		}
		select {
		case <-p.notify:
		case <-ctx.Done():
			return got, fmt.Errorf("%s: %d of %d packets: %w", p.User, len(got), n, ctx.Err())
		}
	}
}

// RTPPacket builds an RTP packet with pion/rtp.
func RTPPacket(ssrc uint32, seq uint16, ts uint32, pt uint8, payload []byte) []byte {
	pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: pt, SequenceNumber: seq, Timestamp: ts, SSRC: ssrc}, Payload: payload}
	b, _ := pkt.Marshal()
	return b
}

func (p *Party) track(c *Call) {
	p.mu.Lock()
	p.calls[c.CallID] = c
	p.mu.Unlock()
}

func (p *Party) find(req *sipmsg.Request) *Call {
	h := req.CallID()
	if h == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls[h.Value()]
}

func (p *Party) onInvite(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
	if to := req.To(); to != nil && to.Params.Has("tag") {
		c := p.find(req)
		if c == nil {
			_ = tx.Respond(sipmsg.NewResponseFromRequest(req, 481, "Call/Transaction Does Not Exist", nil))
			return
		}
		c.answerInDialog(req, tx)
		return
	}
	ds, err := p.dua.ReadInvite(req, tx)
	if err != nil {
		_ = tx.Respond(sipmsg.NewResponseFromRequest(req, 400, "Bad Request", nil))
		return
	}
	c := newCall(p, req.CallID().Value())
	c.uas = ds
	c.Invite = req
	c.tx = tx
	if body := req.Body(); len(body) > 0 {
		if m, err := ParseSDP(body); err == nil {
			c.setRemote(m)
		}
	}
	p.track(c)
	select {
	case p.Incoming <- c:
	default:
		_ = ds.Respond(486, "Busy Here", nil)
		return
	}
	// The handler must not return before the INVITE is answered: sipgo
	// terminates the transaction when it does.
	select {
	case <-c.final:
	case <-ds.Context().Done():
		close(c.cancelled)
	}
}

func (p *Party) onUpdate(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
	c := p.find(req)
	if c == nil {
		_ = tx.Respond(sipmsg.NewResponseFromRequest(req, 481, "Call/Transaction Does Not Exist", nil))
		return
	}
	c.answerInDialog(req, tx)
}

func (p *Party) onNotify(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
	c := p.find(req)
	if c == nil {
		_ = tx.Respond(sipmsg.NewResponseFromRequest(req, 481, "Call/Transaction Does Not Exist", nil))
		return
	}
	c.mu.Lock()
	c.notifies = append(c.notifies, req)
	c.mu.Unlock()
	_ = tx.Respond(sipmsg.NewResponseFromRequest(req, 200, "OK", nil))
}

func (p *Party) onAck(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
	c := p.find(req)
	if c == nil {
		return
	}
	select {
	case c.acks <- req:
	default:
	}
	if c.uas != nil {
		_ = c.uas.ReadAck(req, tx)
	}
}

func (p *Party) onBye(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
	c := p.find(req)
	if c == nil {
		_ = tx.Respond(sipmsg.NewResponseFromRequest(req, 481, "Call/Transaction Does Not Exist", nil))
		return
	}
	_ = tx.Respond(sipmsg.NewResponseFromRequest(req, 200, "OK", nil))
	c.mu.Lock()
	c.byeReq = req
	c.mu.Unlock()
	c.end()
}
