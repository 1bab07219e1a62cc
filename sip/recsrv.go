package sip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bib-project/bib/bridge"
	"github.com/emiago/sipgo"
	sipmsg "github.com/emiago/sipgo/sip"
	"github.com/pion/sdp/v3"
)

// RecorderConfig configures the recording server (`bib recorder`).
type RecorderConfig struct {
	// Listen is IP:port for SIP over UDP and TCP. Port 0 picks one (tests).
	Listen string
	// RTPPorts is the UDP range for the streams received. Default 40000-49999.
	RTPPorts string
	// UserAgent is the Server header. Default "bib-recorder".
	UserAgent string
	// SRTP lets the server take SRTP (SDES) streams: RTP/SAVP offers are
	// accepted and decrypted, and its own delayed-offer SDP offers
	// RTP/SAVP. Without it an RTP/SAVP offer is refused with 488.
	SRTP bool
}

// RecordedParty is one party of a recorded call as the client described it.
type RecordedParty struct {
	Name      string `json:"name,omitempty"`
	Addr      string `json:"addr,omitempty"` // directory number / AOR user
	AOR       string `json:"aor,omitempty"`
	Device    string `json:"device,omitempty"`
	ClusterID string `json:"cluster_id,omitempty"`
}

// RecordedSession is one recording the server makes: a call-manager-style
// fork pair (matched by x-refci) or one SIPREC session. Channel 0 (left,
// bridge.AtoB) is the near end, channel 1 (right, bridge.BtoA) the far end.
type RecordedSession struct {
	Protocol string // ForkCUCM or ForkSIPREC
	Start    time.Time
	RefCI    string
	FarRefCI string
	Near     RecordedParty
	Far      RecordedParty

	base time.Time
	mu   sync.Mutex
	ids  []string
	idn  []string
	note []string
}

// Now is the session's monotonic clock in nanoseconds (for the recorder).
func (r *RecordedSession) Now() int64 { return int64(time.Since(r.base)) }

// CallIDs returns the SIP Call-IDs of the session's dialogs.
func (r *RecordedSession) CallIDs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.ids...)
}

// Identification returns what the client sent to identify the recording,
// verbatim and in arrival order: the From header of each call-manager-style
// INVITE, or each SIPREC metadata document.
func (r *RecordedSession) Identification() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.idn...)
}

// Notes returns what the server had to be lenient about.
func (r *RecordedSession) Notes() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.note...)
}

func (r *RecordedSession) add(callID, ident, note string) {
	r.mu.Lock()
	if callID != "" {
		r.ids = append(r.ids, callID)
	}
	if ident != "" {
		r.idn = append(r.idn, ident)
	}
	if note != "" {
		r.note = append(r.note, note)
	}
	r.mu.Unlock()
}

// RecordingSink receives one session's media (a recorder). Close finalizes.
type RecordingSink interface {
	bridge.Tap
	Close() error
}

// SinkFactory creates the sink of a new session.
type SinkFactory func(rs *RecordedSession) (RecordingSink, error)

// RecorderServer is a recording server: it accepts call-manager-style
// fork pairs and SIPREC sessions (RFC 7866), answers recvonly and feeds
// what it receives into a RecordingSink per session.
type RecorderServer struct {
	cfg     RecorderConfig
	log     *slog.Logger
	newSink SinkFactory
	eng     *bridge.Engine
	ua      *sipgo.UserAgent
	srv     *sipgo.Server
	udp     *net.UDPConn
	tcp     *net.TCPListener
	addrs   map[string]netip.AddrPort
	dua     *sipgo.DialogUA

	mu       sync.Mutex
	legs     map[string]*recLeg     // by Call-ID
	pending  map[string]*recLeg     // 2xx sent, ACK awaited, by Call-ID
	pairs    map[string]*recSession // open call-manager pairs by x-refci
	sessions map[*recSession]struct{}
	closed   bool
	wg       sync.WaitGroup
	once     sync.Once

	// Counters.
	Accepted, Rejected atomic.Uint64
}

type recSession struct {
	srv  *RecorderServer
	rs   *RecordedSession
	sink atomic.Pointer[sinkBox] // set once the first leg is answered
	key  string

	mu      sync.Mutex
	legs    []*recLeg
	streams [2]*recStream
	media   [2]bridge.MediaDesc
	ended   bool
	held    bool
}

type recLeg struct {
	s       *recSession
	callID  string
	ds      *sipgo.DialogServerSession
	chans   []int
	ended   bool
	acks    chan []byte
	siprec  bool
	lines   int // m-lines in the offer (SIPREC answers every one)
	contact sipmsg.ContactHeader
}

// sinkBox holds a session's sink for atomic publication to the readers.
type sinkBox struct {
	RecordingSink
	once sync.Once
}

// finish sends EvEnd and closes the sink, once.
func (b *sinkBox) finish(s *recSession, reason string) error {
	var err error
	b.once.Do(func() {
		mono := s.rs.Now()
		b.Event(bridge.Event{Kind: bridge.EvEnd, At: s.rs.base.Add(time.Duration(mono)), Mono: mono, Reason: reason})
		err = b.Close()
	})
	return err
}

type recStream struct {
	conn    *net.UDPConn
	release func()
	dir     bridge.Direction
	peer    atomic.Pointer[netip.AddrPort]
	latch   atomic.Bool
	local   netip.AddrPort
	srtp    atomic.Pointer[srtpReader] // the client's key; nil for plain RTP

	authFailed atomic.Uint64 // SRTP packets that failed authentication
}

// recorderCodecs are what the server offers (delayed offer) and accepts.
var recorderCodecs = []bridge.Codec{
	{PT: 0, Name: "PCMU", Rate: 8000, Channels: 1},
	{PT: 8, Name: "PCMA", Rate: 8000, Channels: 1},
	{PT: 9, Name: "G722", Rate: 8000, Channels: 1},
	eventCodec,
}

// NewRecorderServer builds a recording server; nothing is bound until Listen.
func NewRecorderServer(cfg RecorderConfig, newSink SinkFactory, log *slog.Logger) (*RecorderServer, error) {
	if cfg.UserAgent == "" {
		cfg.UserAgent = "bib-recorder"
	}
	if cfg.RTPPorts == "" {
		cfg.RTPPorts = "40000-49999"
	}
	ap, err := netip.ParseAddrPort(cfg.Listen)
	if err != nil || ap.Addr().IsUnspecified() {
		return nil, fmt.Errorf("recorder listen: %q is not a usable IP:port", cfg.Listen)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	eng, err := bridge.NewEngine(bridge.Config{IP: ap.Addr().String(), RTPPorts: cfg.RTPPorts}, log)
	if err != nil {
		return nil, fmt.Errorf("recorder: %w", err)
	}
	r := &RecorderServer{cfg: cfg, log: log, newSink: newSink, eng: eng, addrs: map[string]netip.AddrPort{},
		legs: map[string]*recLeg{}, pending: map[string]*recLeg{}, pairs: map[string]*recSession{}, sessions: map[*recSession]struct{}{}}
	stack := log.With("component", "sipgo")
	r.ua, err = sipgo.NewUA(sipgo.WithUserAgent(cfg.UserAgent), sipgo.WithUserAgentHostname(ap.Addr().String()),
		sipgo.WithUserAgentTransportLayerOptions(sipmsg.WithTransportLayerLogger(stack)),
		sipgo.WithUserAgentTransactionLayerOptions(sipmsg.WithTransactionLayerLogger(stack)))
	if err != nil {
		return nil, err
	}
	r.srv, err = sipgo.NewServer(r.ua, sipgo.WithServerLogger(stack))
	if err != nil {
		r.ua.Close()
		return nil, err
	}
	r.srv.OnInvite(r.onInvite)
	r.srv.OnAck(r.onAck)
	r.srv.OnBye(r.onBye)
	r.srv.OnUpdate(r.onUpdate)
	r.srv.OnOptions(func(req *sipmsg.Request, tx sipmsg.ServerTransaction) { r.respond(tx, req, 200, "", "") })
	r.srv.OnCancel(func(req *sipmsg.Request, tx sipmsg.ServerTransaction) { r.respond(tx, req, 481, "", "") })
	return r, nil
}

// Listen binds UDP and TCP on the configured address (one port for both).
func (r *RecorderServer) Listen(ctx context.Context) error {
	ap := netip.MustParseAddrPort(r.cfg.Listen)
	// UDP and TCP share one port; with port 0 the TCP side of the port the
	// kernel picked for UDP may be busy, so try a few times.
	tries := 1
	if ap.Port() == 0 {
		tries = 20
	}
	var (
		u   *net.UDPConn
		l   net.Listener
		ua  netip.AddrPort
		err error
	)
	for range tries {
		u, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
		if err != nil {
			return fmt.Errorf("recorder: listen udp %s: %w", ap, err)
		}
		ua = u.LocalAddr().(*net.UDPAddr).AddrPort()
		var lc net.ListenConfig
		l, err = lc.Listen(ctx, "tcp", ua.String())
		if err == nil {
			break
		}
		u.Close()
	}
	if err != nil {
		return fmt.Errorf("recorder: listen tcp %s: %w", ua, err)
	}
	r.udp = u
	r.addrs["udp"] = ua
	r.tcp = l.(*net.TCPListener)
	r.addrs["tcp"] = r.tcp.Addr().(*net.TCPAddr).AddrPort()
	cli, err := sipgo.NewClient(r.ua, sipgo.WithClientHostname(ua.Addr().String()))
	if err != nil {
		u.Close()
		l.Close()
		return err
	}
	r.dua = &sipgo.DialogUA{Client: cli, ContactHDR: sipmsg.ContactHeader{Address: sipmsg.Uri{Scheme: "sip", User: "recorder", Host: ua.Addr().String(), Port: int(ua.Port())}}}
	return nil
}

// Addr returns a bound address ("udp" or "tcp").
func (r *RecorderServer) Addr(transport string) netip.AddrPort {
	return r.addrs[strings.ToLower(transport)]
}

// Serve handles SIP until ctx ends.
func (r *RecorderServer) Serve(ctx context.Context) error {
	if r.udp == nil {
		return errors.New("recorder: Serve before Listen")
	}
	errc := make(chan error, 2)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); errc <- r.srv.ServeUDP(r.udp) }()
	go func() { defer wg.Done(); errc <- r.srv.ServeTCP(r.tcp) }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	r.udp.Close()
	r.tcp.Close()
	wg.Wait()
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("recorder: serve: %w", err)
	}
	return nil
}

// Close stops taking requests and finalizes every open recording (no
// BYE is sent: to the clients the server is simply gone). Idempotent.
func (r *RecorderServer) Close() error {
	r.once.Do(func() {
		r.mu.Lock()
		r.closed = true
		var ss []*recSession
		for s := range r.sessions {
			ss = append(ss, s)
		}
		r.mu.Unlock()
		if r.udp != nil {
			r.udp.Close()
			r.tcp.Close()
		}
		for _, s := range ss {
			s.end("recorder stopped")
		}
		r.wg.Wait()
		r.ua.Close()
	})
	return nil
}

// Sessions returns the number of open recordings.
func (r *RecorderServer) Sessions() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sessions)
}

func (r *RecorderServer) respond(tx sipmsg.ServerTransaction, req *sipmsg.Request, code int, warning string, body string, hdrs ...sipmsg.Header) {
	res := sipmsg.NewResponseFromRequest(req, code, reasonPhrase(code), nil)
	if w := warningValue(r.cfg.UserAgent, 399, warning); w != "" {
		res.AppendHeader(sipmsg.NewHeader("Warning", w))
	}
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	res.AppendHeader(sipmsg.NewHeader("Server", r.cfg.UserAgent))
	_ = tx.Respond(res)
}

func (r *RecorderServer) reject(tx sipmsg.ServerTransaction, req *sipmsg.Request, code int, warning string, hdrs ...sipmsg.Header) {
	r.Rejected.Add(1)
	r.log.Info("recording session rejected", "code", code, "why", warning, "source", req.Source())
	r.respond(tx, req, code, warning, "", hdrs...)
}

// offerInfo is what a new INVITE says.
type offerInfo struct {
	siprec  bool
	sdp     []byte
	meta    []byte
	metaDoc *RecordingMetadata
	notes   []string
}

// inspect applies the strict rules (Require, body structure) to a new
// INVITE and splits its body. A non-nil StatusError is the rejection.
func inspect(req *sipmsg.Request) (offerInfo, *StatusError) {
	var o offerInfo
	for _, h := range req.GetHeaders("Require") {
		for _, opt := range strings.Split(h.Value(), ",") {
			opt = strings.TrimSpace(opt)
			switch strings.ToLower(opt) {
			case "":
			case "siprec":
				o.siprec = true
			default:
				// RFC 3261 section 8.2.2.3: 420 naming what is unsupported.
				return o, &StatusError{Code: 420, Reason: "Bad Extension", Warning: opt}
			}
		}
	}
	if ct := req.Contact(); ct != nil && ct.Params.Has("+sip.src") {
		o.siprec = true
	}
	body := req.Body()
	if len(body) == 0 {
		return o, nil
	}
	ctype := "application/sdp"
	if h := req.ContentType(); h != nil {
		ctype = h.Value()
	}
	parts, err := SplitMultipart(ctype, body)
	if err != nil {
		return o, &StatusError{Code: 400, Reason: "Bad Request", Warning: err.Error()}
	}
	for _, p := range parts {
		switch p.ContentType {
		case "application/sdp":
			if o.sdp == nil {
				o.sdp = p.Body
				if !bytes.HasSuffix(o.sdp, []byte("\n")) {
					o.sdp = append(o.sdp, '\r', '\n')
				}
			} else {
				o.notes = append(o.notes, "second application/sdp part ignored")
			}
		case ContentTypeRSMetadata, contentTypeRSLegacy:
			if o.meta == nil {
				o.meta = p.Body
				o.siprec = true
				if p.ContentType == contentTypeRSLegacy {
					o.notes = append(o.notes, "metadata sent as application/rs-metadata (without +xml)")
				}
			}
		default:
			o.notes = append(o.notes, "body part "+p.ContentType+" ignored")
		}
	}
	if o.sdp == nil {
		return o, &StatusError{Code: 415, Reason: "Unsupported Media Type", Warning: "no application/sdp body part"}
	}
	if o.meta != nil {
		m, ns, err := ParseRecordingMetadata(o.meta)
		if err != nil {
			return o, &StatusError{Code: 400, Reason: "Bad Request", Warning: err.Error()}
		}
		o.metaDoc = m
		switch ns {
		case NSRecordingLegacy:
			o.notes = append(o.notes, "metadata in the legacy namespace "+NSRecordingLegacy)
		case "":
			o.notes = append(o.notes, "metadata without namespace")
		}
	} else if o.siprec {
		o.notes = append(o.notes, "no recording metadata")
	}
	return o, nil
}

func (r *RecorderServer) onInvite(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
	if to := req.To(); to != nil && to.Params.Has("tag") {
		r.reinvite(req, tx)
		return
	}
	from, cid := req.From(), req.CallID()
	if from == nil || cid == nil || req.CSeq() == nil {
		r.reject(tx, req, 400, "INVITE needs From, Call-ID and CSeq")
		return
	}
	o, se := inspect(req)
	if se != nil {
		var hdrs []sipmsg.Header
		if se.Code == 420 {
			hdrs = append(hdrs, sipmsg.NewHeader("Unsupported", se.Warning))
			se.Warning = "option " + se.Warning + " not supported"
		}
		r.reject(tx, req, se.Code, se.Warning, hdrs...)
		return
	}
	var lines []audioLine
	total := 0
	if o.sdp != nil {
		var err error
		lines, err = parseAudioLines(o.sdp)
		if err != nil {
			se := sdpStatus(err)
			r.reject(tx, req, se.Code, se.Warning)
			return
		}
		var sd sdp.SessionDescription
		_ = sd.Unmarshal(o.sdp)
		total = len(sd.MediaDescriptions)
	}
	if o.siprec && o.sdp == nil {
		r.reject(tx, req, 488, "a SIPREC INVITE must carry the SDP offer")
		return
	}
	for _, l := range lines {
		if l.Desc.SRTP != nil && !r.cfg.SRTP {
			r.reject(tx, req, 488, "this recorder does not take SRTP (RTP/SAVP); start it with --srtp")
			return
		}
	}
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		r.reject(tx, req, 503, "recorder shutting down")
		return
	}
	if o.siprec {
		r.newSIPREC(req, tx, o, lines, total)
		return
	}
	r.newCUCM(req, tx, o, lines)
}

// chooseCodec picks the first codec of an offer the server records, and
// the offer's telephone-event.
func chooseCodec(offer []bridge.Codec) ([]bridge.Codec, bool) {
	for _, c := range offer {
		if !isAudioCodec(c) {
			continue
		}
		if _, ok := findCodec(recorderCodecs, c); ok {
			out := []bridge.Codec{c}
			if te, ok := findNamed(offer, "telephone-event"); ok {
				out = append(out, te)
			}
			return out, true
		}
	}
	return nil, false
}

// newCUCM handles one INVITE of a call-manager-style fork pair.
func (r *RecorderServer) newCUCM(req *sipmsg.Request, tx sipmsg.ServerTransaction, o offerInfo, lines []audioLine) {
	from := req.From()
	p := from.Address.UriParams
	ch := 0
	note := ""
	switch {
	case p.Has("x-nearend"):
	case p.Has("x-farend"):
		ch = 1
	default:
		note = "From has neither x-nearend nor x-farend; recorded as the near end"
	}
	get := func(k string) string { v, _ := p.Get(k); return v }
	refci := get("x-refci")
	var answer []bridge.Codec
	if len(lines) > 0 {
		cs, ok := chooseCodec(lines[0].Desc.Codecs)
		if !ok {
			r.reject(tx, req, 488, "no codec the recorder records (PCMU, PCMA, G722) in the offer")
			return
		}
		answer = cs
	}
	r.mu.Lock()
	s := r.pairs[refci]
	if s != nil {
		s.mu.Lock()
		taken := s.ended || s.streams[ch] != nil
		s.mu.Unlock()
		if taken {
			s = nil
		}
	}
	fresh := s == nil
	if fresh {
		now := time.Now()
		rs := &RecordedSession{Protocol: ForkCUCM, Start: now, base: now, RefCI: refci, FarRefCI: get("x-farendrefci"),
			Near: RecordedParty{Name: from.DisplayName, Addr: get("x-nearendaddr"), Device: get("x-nearenddevice"), ClusterID: get("x-nearendclusterid")},
			Far:  RecordedParty{Addr: get("x-farendaddr"), Device: get("x-farenddevice"), ClusterID: get("x-farendclusterid")}}
		if rs.Near.Addr == "" {
			rs.Near.Addr = from.Address.User
		}
		s = &recSession{srv: r, rs: rs, key: refci}
		if refci != "" {
			r.pairs[refci] = s
		} else {
			note = strings.TrimPrefix(note+"; no x-refci: not paired", "; ")
		}
	}
	r.mu.Unlock()
	s.rs.add(req.CallID().Value(), from.Value(), note)
	var offered []audioLine
	if len(lines) > 0 {
		offered = lines[:1]
	}
	r.accept(req, tx, s, fresh, []int{ch}, offered, [][]bridge.Codec{answer}, false, 1)
}

// newSIPREC handles a SIPREC INVITE: up to two streams, near end first.
func (r *RecorderServer) newSIPREC(req *sipmsg.Request, tx sipmsg.ServerTransaction, o offerInfo, lines []audioLine, total int) {
	now := time.Now()
	rs := &RecordedSession{Protocol: ForkSIPREC, Start: now, base: now}
	if len(lines) > 2 {
		o.notes = append(o.notes, fmt.Sprintf("%d audio streams offered; the first two are recorded", len(lines)))
		lines = lines[:2]
	}
	chans := []int{0, 1}[:len(lines)]
	if len(lines) == 1 {
		o.notes = append(o.notes, "single (pre-mixed) audio stream, recorded on the near-end channel")
	}
	answers := make([][]bridge.Codec, len(lines))
	for i, l := range lines {
		cs, ok := chooseCodec(l.Desc.Codecs)
		if !ok {
			r.reject(tx, req, 488, "no codec the recorder records (PCMU, PCMA, G722) in stream "+l.Label)
			return
		}
		answers[i] = cs
	}
	if m := o.metaDoc; m != nil {
		for i, l := range lines {
			part, ok := m.StreamSender(l.Label)
			if !ok {
				continue
			}
			aor, name := part.Identity()
			rp := RecordedParty{AOR: aor, Name: name, Addr: aorUser(aor)}
			if i == 0 {
				rs.Near = rp
			} else {
				rs.Far = rp
			}
		}
		if rs.Near.AOR == "" && rs.Far.AOR == "" {
			o.notes = append(o.notes, "metadata does not say who sends which stream (no participantstreamassoc send)")
		}
	}
	ident := string(o.meta)
	s := &recSession{srv: r, rs: rs, key: ""}
	rs.add(req.CallID().Value(), ident, strings.Join(o.notes, "; "))
	r.accept(req, tx, s, true, chans, lines, answers, true, total)
}

func aorUser(aor string) string {
	var u sipmsg.Uri
	if err := sipmsg.ParseUri(aor, &u); err == nil {
		return u.User
	}
	return ""
}

// accept answers a new INVITE for channels chans of session s. lines are
// the offered streams (nil: delayed offer, the server offers in its 200 and
// the answer comes in the ACK).
func (r *RecorderServer) accept(req *sipmsg.Request, tx sipmsg.ServerTransaction, s *recSession, fresh bool, chans []int, lines []audioLine, answers [][]bridge.Codec, siprec bool, total int) {
	fail := func(code int, why string) {
		if fresh {
			r.mu.Lock()
			if s.key != "" && r.pairs[s.key] == s {
				delete(r.pairs, s.key)
			}
			r.mu.Unlock()
		}
		r.reject(tx, req, code, why)
	}
	streams := make([]*recStream, len(chans))
	for i, ch := range chans {
		conn, _, release, err := r.eng.AllocatePair()
		if err != nil {
			for _, st := range streams[:i] {
				st.release()
			}
			fail(503, "no free RTP port")
			return
		}
		streams[i] = &recStream{conn: conn, release: release, dir: bridge.Direction(ch), local: conn.LocalAddr().(*net.UDPAddr).AddrPort()}
	}
	ds, rerr := r.dua.ReadInvite(req, tx)
	if rerr != nil {
		err := rerr
		for _, st := range streams {
			st.release()
		}
		fail(400, err.Error())
		return
	}
	leg := &recLeg{s: s, callID: req.CallID().Value(), ds: ds, chans: chans, acks: make(chan []byte, 1), siprec: siprec, lines: total}
	// The answer (or, for a delayed offer, the server's offer): every
	// m-line in order, recvonly, labels kept (RFC 7866 section 8.1.1).
	var ss []sdpStream
	origin := newOrigin(time.Now(), 3)
	var offerKey *bridge.SRTPKey // delayed offer: the key the server states (it sends nothing)
	if lines == nil {
		ss = []sdpStream{{Port: streams[0].local.Port(), Codecs: recorderCodecs, Mode: bridge.RecvOnly}}
		if r.cfg.SRTP {
			k, _ := bridge.NewSRTPKey(bridge.SuiteAES128SHA1_80)
			offerKey = &k
			ss[0].Crypto = cryptoAttr("1", k)
		}
	} else {
		var sd sdp.SessionDescription
		_ = sd.Unmarshal(nil)
		k := 0
		for i := 0; i < max(total, len(lines)); i++ {
			if k < len(lines) && lines[k].Index == i {
				st := sdpStream{Port: streams[k].local.Port(), Codecs: answers[k], Mode: bridge.RecvOnly, Label: lines[k].Label}
				if lines[k].Desc.SRTP != nil {
					tag, _, _ := lineCryptoTag(req.Body(), lines[k].Index)
					if tag == "" {
						tag = "1"
					}
					key, _ := bridge.NewSRTPKey(lines[k].Desc.SRTP.Suite)
					st.Crypto = cryptoAttr(tag, key)
				}
				ss = append(ss, st)
				k++
				continue
			}
			ss = append(ss, sdpStream{Port: 0, Codecs: []bridge.Codec{{PT: 0, Name: "PCMU", Rate: 8000}}})
		}
	}
	body := buildSDP(origin, r.eng.IP(), "bib-recorder", ss)
	r.mu.Lock()
	r.legs[leg.callID] = leg
	r.pending[leg.callID] = leg
	r.mu.Unlock()
	res := sipmsg.NewResponseFromRequest(ds.InviteRequest, 200, "OK", body)
	res.AppendHeader(sdpHeader())
	res.AppendHeader(sipmsg.NewHeader("Server", r.cfg.UserAgent))
	err := ds.WriteResponse(res) // returns when the ACK arrived (or timed out)
	r.mu.Lock()
	delete(r.pending, leg.callID)
	r.mu.Unlock()
	if err != nil {
		r.log.Debug("answer to recording invite failed", "err", err)
	}
	var ackBody []byte
	select {
	case ackBody = <-leg.acks:
	default:
	}
	descs := make([]bridge.MediaDesc, len(chans))
	if lines == nil {
		ans, err := ParseMedia(ackBody)
		if err == nil && ans.RTP.Port() == 0 {
			err = errors.New("the answer rejected the stream (port 0)")
		}
		if err != nil {
			r.log.Warn("delayed-offer recording fork: no usable SDP answer in the ACK", "call_id", leg.callID, "err", err)
			r.mu.Lock()
			delete(r.legs, leg.callID)
			r.mu.Unlock()
			for _, st := range streams {
				st.release()
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = ds.WriteBye(ctx, r.byeFor(req))
			cancel()
			if fresh {
				fail(0, "")
			}
			return
		}
		if offerKey != nil && ans.SRTP == nil {
			r.log.Warn("delayed-offer recording fork: plain RTP answer to an RTP/SAVP offer", "call_id", leg.callID)
		}
		descs[0] = ans
	} else {
		for i := range lines {
			descs[i] = lines[i].Desc
			descs[i].Codecs = answers[i]
		}
	}
	s.mu.Lock()
	if s.ended {
		// The client ended the session before bib took it up (BYE raced
		// the ACK): nothing to record.
		s.mu.Unlock()
		for _, st := range streams {
			st.release()
		}
		return
	}
	for i, ch := range chans {
		st := streams[i]
		s.streams[ch] = st
		s.media[ch] = descs[i]
		s.media[ch].Mode = bridge.SendOnly
		st.setPeer(descs[i].RTP)
		st.setKey(descs[i].SRTP)
	}
	s.legs = append(s.legs, leg)
	media := s.media
	s.mu.Unlock()
	if fresh {
		sink, err := r.newSink(s.rs)
		if err != nil {
			r.log.Error("recording could not be created; session ended", "err", err)
			r.mu.Lock()
			delete(r.legs, leg.callID)
			r.mu.Unlock()
			for _, st := range streams {
				st.release()
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = ds.WriteBye(ctx, r.byeFor(req))
			cancel()
			return
		}
		box := &sinkBox{RecordingSink: sink}
		s.sink.Store(box)
		r.mu.Lock()
		r.sessions[s] = struct{}{}
		r.mu.Unlock()
		mono := s.rs.Now()
		sink.Event(bridge.Event{Kind: bridge.EvMedia, At: time.Now(), Mono: mono, Media: media})
		sink.Event(bridge.Event{Kind: bridge.EvAnswer, At: s.rs.Start.Add(time.Duration(mono)), Mono: mono})
		s.mu.Lock()
		ended := s.ended
		s.mu.Unlock()
		if ended { // a BYE ended the session while its recording was created
			_ = box.finish(s, "bye")
			return
		}
	} else {
		s.event(bridge.EvMedia, bridge.SideA, "")
	}
	r.Accepted.Add(1)
	// Readers join the wait group under the lock, and only while the
	// server is open: Close sets closed under it before it waits.
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		s.end("recorder stopped")
		return
	}
	for _, st := range streams {
		if st != nil {
			r.wg.Add(1)
			go func() { defer r.wg.Done(); s.read(st) }()
		}
	}
	r.mu.Unlock()
	r.log.Info("recording stream accepted", "protocol", s.rs.Protocol, "call_id", leg.callID, "refci", s.rs.RefCI,
		"channels", len(chans), "offer", map[bool]string{true: "delayed", false: "early"}[lines == nil])
}

// setKey sets the client's SRTP key (nil: plain RTP); the same key keeps
// the decryption context (rollover counter, replay window).
func (st *recStream) setKey(k *bridge.SRTPKey) {
	if k == nil {
		st.srtp.Store(nil)
		return
	}
	if cur := st.srtp.Load(); cur != nil && cur.key.Equal(*k) {
		return
	}
	rd, err := newSRTPReader(*k)
	if err != nil {
		return
	}
	st.srtp.Store(rd)
}

// byeFor is the BYE ending the dialog of INVITE req, sent from the
// server's own socket (no new client connection).
func (r *RecorderServer) byeFor(req *sipmsg.Request) *sipmsg.Request {
	bye := sipmsg.NewRequest(sipmsg.BYE, req.Contact().Address)
	if strings.EqualFold(req.Transport(), "UDP") && r.udp != nil {
		a := r.addrs["udp"]
		bye.Laddr = sipmsg.Addr{IP: a.Addr().AsSlice(), Port: int(a.Port())}
	}
	return bye
}

func (st *recStream) setPeer(a netip.AddrPort) {
	if !a.IsValid() || a.Addr().IsUnspecified() || a.Port() == 0 {
		st.latch.Store(true)
		return
	}
	st.peer.Store(&a)
}

func (s *recSession) event(k bridge.EventKind, side bridge.Side, reason string) {
	s.mu.Lock()
	media := s.media
	s.mu.Unlock()
	sink := s.sink.Load()
	if sink == nil {
		return
	}
	mono := s.rs.Now()
	sink.Event(bridge.Event{Kind: k, At: s.rs.base.Add(time.Duration(mono)), Mono: mono, Side: side, Media: media, Reason: reason})
}

// read is a stream's receive loop: RTP from the negotiated source only,
// handed to the sink with the session clock.
func (s *recSession) read(st *recStream) {
	buf := make([]byte, 1501)
	pkt := &bridge.Packet{}
	fixed := false // the source is settled: packets from elsewhere are dropped
	for {
		n, src, err := st.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		if p := st.peer.Load(); p == nil || *p != src {
			// Lenient where real clients differ: a recording client may send
			// from another port of the host it signalled (some send from a
			// port other than the SDP's). The first packet from that host
			// latches; after that only the latched source is accepted.
			sameHost := p != nil && p.Addr() == src.Addr()
			if fixed || !(st.latch.Load() || sameHost) {
				continue
			}
			st.peer.Store(&src)
			st.latch.Store(false)
		}
		fixed = true
		if n < 12 || n > 1500 || buf[0]>>6 != 2 {
			continue
		}
		b := buf[:n]
		if rd := st.srtp.Load(); rd != nil {
			var ok bool
			if b, ok = rd.open(b); !ok {
				st.authFailed.Add(1)
				continue
			}
			n = len(b)
		}
		hl, err := pkt.Header.Unmarshal(b)
		if err != nil {
			continue
		}
		end := n
		if pkt.Header.Padding {
			pad := int(b[n-1])
			if pad == 0 || pad > n-hl {
				continue
			}
			end -= pad
		}
		sink := s.sink.Load()
		if sink == nil {
			continue // the first leg's recording is being created
		}
		pkt.Payload, pkt.Raw, pkt.Arrival = b[hl:end], b, s.rs.Now()
		sink.RTP(st.dir, pkt)
	}
}

// end finalizes the session: the sink gets EvEnd and is closed, sockets freed.
func (s *recSession) end(reason string) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended = true
	streams := s.streams
	legs := s.legs
	s.mu.Unlock()
	for _, st := range streams {
		if st != nil {
			st.conn.SetReadDeadline(time.Unix(1, 0))
			st.release()
		}
	}
	r := s.srv
	r.mu.Lock()
	if s.key != "" && r.pairs[s.key] == s {
		delete(r.pairs, s.key)
	}
	for _, l := range legs {
		delete(r.legs, l.callID)
	}
	delete(r.sessions, s)
	r.mu.Unlock()
	if sink := s.sink.Load(); sink != nil {
		if err := sink.finish(s, reason); err != nil {
			r.log.Error("recording could not be finalized", "err", err)
		}
	}
	r.log.Info("recording session ended", "protocol", s.rs.Protocol, "refci", s.rs.RefCI, "reason", reason)
}

func (r *RecorderServer) onAck(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
	cid := req.CallID()
	if cid == nil {
		return
	}
	r.mu.Lock()
	l := r.pending[cid.Value()]
	r.mu.Unlock()
	if l == nil {
		return
	}
	select {
	case l.acks <- req.Body():
	default:
	}
	_ = l.ds.ReadAck(req, tx)
}

func (r *RecorderServer) onBye(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
	cid := req.CallID()
	if cid == nil {
		r.respond(tx, req, 400, "no Call-ID", "")
		return
	}
	r.mu.Lock()
	l := r.legs[cid.Value()]
	delete(r.legs, cid.Value())
	r.mu.Unlock()
	if l == nil {
		r.respond(tx, req, 481, "no recording session matches this BYE", "")
		return
	}
	r.respond(tx, req, 200, "", "")
	s := l.s
	s.mu.Lock()
	l.ended = true
	all := true
	for _, o := range s.legs {
		all = all && o.ended
	}
	// A call-manager pair stays open for its second leg while the first is
	// up; once every leg that arrived has ended, the recording is complete.
	s.mu.Unlock()
	if all {
		why := "bye"
		if h := req.GetHeader("Reason"); h != nil {
			why = "bye: " + h.Value()
		}
		s.end(why)
	}
}

// inDialog returns the recording leg of an in-dialog request, or answers
// 481 and returns nil.
func (r *RecorderServer) inDialog(req *sipmsg.Request, tx sipmsg.ServerTransaction) *recLeg {
	cid := req.CallID()
	r.mu.Lock()
	var l *recLeg
	if cid != nil {
		l = r.legs[cid.Value()]
	}
	r.mu.Unlock()
	if l == nil {
		r.respond(tx, req, 481, "no recording session matches this request", "")
	}
	return l
}

// onUpdate takes a call-manager-style identity update: an UPDATE whose
// Contact carries the x-* parameters with new values (a far end that
// changed). The Contact is kept verbatim with the session's identification.
// An UPDATE with an SDP offer is not supported here (488).
func (r *RecorderServer) onUpdate(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
	l := r.inDialog(req, tx)
	if l == nil {
		return
	}
	if len(req.Body()) > 0 {
		r.respond(tx, req, 488, "UPDATE with a body is not supported by this recorder; use re-INVITE", "")
		return
	}
	if ct := req.Contact(); ct != nil {
		l.s.rs.add("", "UPDATE Contact: "+ct.Value(), "")
	}
	r.respond(tx, req, 200, "", "")
}

// reinvite handles an in-dialog INVITE: SIPREC pause (a=inactive) and
// resume, metadata updates, codec changes (RFC 7866 sections 8.1.2, 8.3).
func (r *RecorderServer) reinvite(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
	l := r.inDialog(req, tx)
	if l == nil {
		return
	}
	o, se := inspect(req)
	if se != nil {
		r.respond(tx, req, se.Code, se.Warning, "")
		return
	}
	if o.sdp == nil {
		r.respond(tx, req, 488, "re-INVITE without SDP offer is not supported by this recorder", "")
		return
	}
	lines, err := parseAudioLines(o.sdp)
	if err != nil || len(lines) < len(l.chans) {
		se := sdpStatus(fmt.Errorf("%w", errors.Join(err, ErrNoAudio)))
		r.respond(tx, req, 488, se.Warning, "")
		return
	}
	s := l.s
	if o.meta != nil {
		s.rs.add("", string(o.meta), "")
	}
	var ss []sdpStream
	held := false
	s.mu.Lock()
	for k, ch := range l.chans {
		d := lines[k].Desc
		cs, ok := chooseCodec(d.Codecs)
		if !ok {
			s.mu.Unlock()
			r.respond(tx, req, 488, "no codec the recorder records in the new offer", "")
			return
		}
		mode := bridge.RecvOnly
		if d.Mode == bridge.Inactive || d.Mode == bridge.RecvOnly {
			mode, held = bridge.Inactive, true
		}
		d.Codecs = cs
		s.media[ch] = d
		if st := s.streams[ch]; st != nil {
			st.setPeer(d.RTP)
			st.setKey(d.SRTP)
			as := sdpStream{Port: st.local.Port(), Codecs: cs, Mode: mode, Label: lines[k].Label}
			if d.SRTP != nil {
				tag, _, _ := lineCryptoTag(o.sdp, lines[k].Index)
				key, _ := bridge.NewSRTPKey(d.SRTP.Suite)
				as.Crypto = cryptoAttr(tag, key)
			}
			ss = append(ss, as)
		}
	}
	was := s.held
	s.held = held
	s.mu.Unlock()
	body := buildSDP(newOrigin(time.Now(), 4), r.eng.IP(), "bib-recorder", ss)
	res := sipmsg.NewResponseFromRequest(req, 200, "OK", body)
	res.AppendHeader(sdpHeader())
	res.AppendHeader(&sipmsg.ContactHeader{Address: *r.dua.ContactHDR.Address.Clone()})
	_ = tx.Respond(res)
	s.event(bridge.EvMedia, bridge.SideA, "")
	switch {
	case held && !was:
		s.event(bridge.EvHold, bridge.SideA, "")
	case !held && was:
		s.event(bridge.EvResume, bridge.SideA, "")
	}
}
