package sip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bib-project/bib/bridge"
	"github.com/emiago/sipgo"
	sipmsg "github.com/emiago/sipgo/sip"
)

// Silent monitoring from a SIP phone (PROTOCOL.md section 3).
//
// Two ways in:
//   - the supervisor dials <monitor_prefix><line> (default monitor-1001) at
//     bib. The INVITE is not routed: bib answers it itself, after digest
//     authentication of the From user, which is always required here;
//   - bib calls the supervisor's phone (DialMonitor, used by the HTTP API),
//     with auto-answer headers.
//
// Either way bib's side of the media is a=sendonly and the agent's call
// sees no signalling at all. Who may listen to what is not decided here:
// the OnMonitor hook (cmd/bib) answers that and provides the media
// (a bridge.SupervisorLeg fed by the call's mixer).

// Monitoring modes (MonitorRequest.Mode). Only MonitorSilent is ever
// granted; the others are refused with the reason the hook gives.
const (
	MonitorSilent  = "silent"
	MonitorWhisper = "whisper"
	MonitorBarge   = "barge"
)

// Request-URI prefixes that ask for whisper or barge. They are recognised
// so that such a request is refused for what it is, never routed.
const (
	whisperPrefix = "whisper-"
	bargePrefix   = "barge-"
)

// Headers that ask for a monitoring mode. X-Monitor-Mode (or X-Bib-Mode,
// as on the HTTP API) names it: silent, whisper, barge, or anything else
// (passed on as is, and refused). Call-Info with purpose=barge, whisper or
// coach asks for that mode; a Join header (RFC 3911) asks to join the
// agent's dialog, which is barge.
var monitorModeHeaders = []string{"X-Monitor-Mode", "X-Bib-Mode"}

// monitorSetupTimeout bounds the OnMonitor hook and DialMonitor's wait for
// the supervisor's answer when the caller's context has no deadline.
const monitorSetupTimeout = 30 * time.Second

// MonitorRequest is what the OnMonitor hook sees of a supervisor's
// monitoring INVITE.
type MonitorRequest struct {
	// Line is the agent line dialled: the Request-URI user without the
	// prefix (monitor-1001 -> 1001).
	Line string
	// Mode is MonitorSilent, MonitorWhisper, MonitorBarge or, from an
	// X-Monitor-Mode header, any other lower-cased word.
	Mode string
	// ModeFrom says where a mode other than silent was asked for: "prefix",
	// a header name ("X-Monitor-Mode", "Call-Info", "Join"); "" for silent.
	ModeFrom string
	// User is the supervisor: the From user, authenticated by SIP digest.
	User       string
	RequestURI string
	CallID     string
	Source     string // ip:port the INVITE came from
	Transport  string // UDP, TCP or TLS
	// Offer is the supervisor's SDP offer; nil for a delayed offer (bib
	// then offers in its 200 and reads the answer in the ACK).
	Offer *bridge.MediaDesc
}

// MonitorMedia is the media side of one supervisor's SIP leg, provided by
// the OnMonitor hook or passed to DialMonitor: cmd/bib wraps a
// bridge.SupervisorLeg added to the monitored call's mixer. Once handed
// over, the SIP side owns it and calls Close exactly when the dialog ends.
type MonitorMedia interface {
	// Local returns bib's RTP and RTCP addresses for the SDP.
	Local() (rtp, rtcp netip.AddrPort)
	// SetRemote applies the supervisor's SDP and returns the codec the mix
	// is sent with (bridge.SupervisorLeg.SetRemote). Called for the first
	// offer or answer and for every later one (re-INVITE, UPDATE).
	SetRemote(d bridge.MediaDesc) (bridge.Codec, error)
	// Done is closed when the monitored call ended: bib then sends BYE to
	// the supervisor.
	Done() <-chan struct{}
	// Close frees the media; reason says why the dialog ended. Idempotent.
	Close(reason string)
	// Secure reports whether the monitored call is secure (SRTP): its
	// supervisor legs must then be SRTP too.
	Secure() bool
	// SetSRTP sets bib's key for the mix it sends (nil: plain RTP).
	SetSRTP(send *bridge.SRTPKey) error
}

// MonitorCounters count SIP monitoring dialogs.
type MonitorCounters struct {
	Active  uint64 `json:"sip_monitor_sessions_active"`
	Started uint64 `json:"sip_monitor_sessions_total"`
	Refused uint64 `json:"sip_monitor_refused_total"`
}

// offerCodecs are what bib offers a supervisor when it makes the offer
// (delayed-offer INVITE, DialMonitor): the codecs the mixer can encode.
var offerCodecs = []bridge.Codec{
	{PT: 0, Name: "PCMU", Rate: 8000, Channels: 1},
	{PT: 8, Name: "PCMA", Rate: 8000, Channels: 1},
	{PT: 9, Name: "G722", Rate: 8000, Channels: 1},
}

// monitorSet is the Server's registry of monitoring dialogs.
type monitorSet struct {
	byCallID sync.Map // SIP Call-ID -> *monitorDialog
	wg       sync.WaitGroup
	stop     chan struct{}
	stopOnce sync.Once
	active   atomic.Int64
	started  atomic.Uint64
	refused  atomic.Uint64
}

func (m *monitorSet) stopCh() chan struct{} {
	m.stopOnce.Do(func() {
		if m.stop == nil {
			m.stop = make(chan struct{})
		}
	})
	return m.stop
}

// MonitorCounters returns the SIP monitoring counters.
func (s *Server) MonitorCounters() MonitorCounters {
	return MonitorCounters{
		Active:  uint64(max(0, s.mons.active.Load())),
		Started: s.mons.started.Load(),
		Refused: s.mons.refused.Load(),
	}
}

// closeMonitors ends every monitoring dialog's media without signalling
// (server Close) and waits for their watchers.
func (s *Server) closeMonitors() {
	close(s.mons.stopCh())
	s.mons.byCallID.Range(func(_, v any) bool {
		v.(*monitorDialog).finish("server closed")
		return true
	})
	s.mons.wg.Wait()
}

// monitorDialog is one supervisor's SIP dialog with bib: UAS when the
// supervisor dialled in, UAC when bib called the supervisor.
type monitorDialog struct {
	s         *Server
	callID    string
	localTag  string
	transport string
	laddr     sipmsg.Addr
	dua       *sipgo.DialogUA
	media     MonitorMedia
	log       *slog.Logger
	uas       *sipgo.DialogServerSession
	uac       *sipgo.DialogClientSession
	done      chan struct{}
	ended     atomic.Bool // a BYE was sent or received
	finished  atomic.Bool

	mu      sync.Mutex
	target  sipmsg.Uri
	origin  Origin
	codec   bridge.Codec
	cseq    remoteCSeq
	acks    map[uint32]chan []byte
	oaBusy  bool
	oaIdle  chan struct{}   // closed when the offer/answer in progress ends
	srtpTag string          // a=crypto tag of an SRTP leg; "" for plain RTP
	key     *bridge.SRTPKey // bib's key for the mix on an SRTP leg
}

// errSecureMonitor refuses a plain supervisor leg on a secure call.
var errSecureMonitor = &StatusError{Code: 488, Reason: "Not Acceptable Here", Warning: warningValue("bib", 302,
	"the monitored call is secure (SRTP): the supervisor leg must be SRTP too (RTP/SAVP with a=crypto "+bridge.SuiteAES128SHA1_80+")")}

// useSRTP makes the leg SRTP: bib's key for the mix under tag.
func (d *monitorDialog) useSRTP(tag string) error {
	if d.key == nil {
		k, err := bridge.NewSRTPKey(bridge.SuiteAES128SHA1_80)
		if err != nil {
			return err
		}
		d.key = &k
	}
	d.srtpTag = tag
	return d.media.SetSRTP(d.key)
}

// MonitorDialog is a monitoring dialog bib placed (DialMonitor).
type MonitorDialog struct{ d *monitorDialog }

// ID returns the dialog's SIP Call-ID.
func (m *MonitorDialog) ID() string { return m.d.callID }

// Codec returns the codec the mix is sent with.
func (m *MonitorDialog) Codec() bridge.Codec {
	m.d.mu.Lock()
	defer m.d.mu.Unlock()
	return m.d.codec
}

// Done is closed when the dialog ended, whoever ended it.
func (m *MonitorDialog) Done() <-chan struct{} { return m.d.done }

// Hangup sends BYE to the supervisor (with a Reason header carrying
// reason) and frees the media. Idempotent.
func (m *MonitorDialog) Hangup(ctx context.Context, reason string) error {
	m.d.hangup(ctx, reason)
	return nil
}

// parseMonitorTarget tells whether an initial INVITE is a monitoring
// request: its Request-URI user starts with the monitor prefix, whisper-
// or barge- (case-insensitive). It returns the agent line, the mode and
// where a mode other than silent was asked for.
func parseMonitorTarget(req *sipmsg.Request, prefix string) (line, mode, from string, ok bool) {
	user := req.Recipient.User
	for _, p := range []struct{ prefix, mode string }{
		{prefix, MonitorSilent}, {whisperPrefix, MonitorWhisper}, {bargePrefix, MonitorBarge},
	} {
		if p.prefix != "" && len(user) >= len(p.prefix) && strings.EqualFold(user[:len(p.prefix)], p.prefix) {
			line, mode, ok = user[len(p.prefix):], p.mode, true
			break
		}
	}
	if !ok {
		return "", "", "", false
	}
	if mode != MonitorSilent {
		from = "prefix"
	}
	if hm, hfrom := headerMode(req); hm != "" && mode == MonitorSilent {
		mode, from = hm, hfrom
	}
	return line, mode, from, true
}

// headerMode returns a mode other than silent asked for by a header, and
// the header's name; "" when none asks for one.
func headerMode(req *sipmsg.Request) (mode, from string) {
	for _, name := range monitorModeHeaders {
		for _, h := range req.GetHeaders(name) {
			v := strings.ToLower(strings.TrimSpace(h.Value()))
			switch v {
			case "", MonitorSilent, "monitor", "listen":
				continue
			}
			if len(v) > 32 {
				v = v[:32]
			}
			return v, name
		}
	}
	for _, h := range req.GetHeaders("Call-Info") {
		if m := callInfoPurpose(h.Value()); m != "" {
			return m, "Call-Info"
		}
	}
	if len(req.GetHeaders("Join")) > 0 {
		return MonitorBarge, "Join" // RFC 3911: join the agent's dialog
	}
	return "", ""
}

// callInfoPurpose reads purpose=barge|whisper|coach from a Call-Info value
// (RFC 3261 section 20.9: info *(";" info-param)), for every comma
// separated entry.
func callInfoPurpose(v string) string {
	for _, entry := range strings.Split(v, ",") {
		if i := strings.LastIndexByte(entry, '>'); i >= 0 {
			entry = entry[i+1:]
		}
		for _, p := range strings.Split(entry, ";") {
			k, val, _ := strings.Cut(p, "=")
			if !strings.EqualFold(strings.TrimSpace(k), "purpose") {
				continue
			}
			switch strings.ToLower(strings.Trim(strings.TrimSpace(val), `"`)) {
			case "barge", "barge-in", "conference":
				return MonitorBarge
			case "whisper", "coach", "coaching":
				return MonitorWhisper
			}
		}
	}
	return ""
}

// monitorDialogOf finds the monitoring dialog a request belongs to.
func (s *Server) monitorDialogOf(req *sipmsg.Request) *monitorDialog {
	h := req.CallID()
	if h == nil {
		return nil
	}
	v, ok := s.mons.byCallID.Load(h.Value())
	if !ok {
		return nil
	}
	return v.(*monitorDialog)
}

// monitorInvite handles an INVITE that is a monitoring request or a
// re-INVITE in a monitoring dialog; false if it is neither.
func (s *Server) monitorInvite(req *sipmsg.Request, tx sipmsg.ServerTransaction) bool {
	if to := req.To(); to != nil && to.Params.Has("tag") {
		d := s.monitorDialogOf(req)
		if d == nil {
			return false
		}
		d.handleOffer(req, tx)
		return true
	}
	line, mode, from, ok := parseMonitorTarget(req, s.cfg.MonitorPrefix)
	if !ok {
		return false
	}
	s.acceptMonitor(req, tx, line, mode, from)
	return true
}

// monitorUpdate handles an UPDATE in a monitoring dialog.
func (s *Server) monitorUpdate(req *sipmsg.Request, tx sipmsg.ServerTransaction) bool {
	d := s.monitorDialogOf(req)
	if d == nil {
		return false
	}
	d.handleOffer(req, tx)
	return true
}

// monitorAck passes an ACK to its monitoring dialog.
func (s *Server) monitorAck(req *sipmsg.Request, tx sipmsg.ServerTransaction) bool {
	d := s.monitorDialogOf(req)
	if d == nil {
		return false
	}
	if cs := req.CSeq(); cs != nil {
		d.deliverAck(cs.SeqNo, req.Body())
		if d.uas != nil {
			_ = d.uas.ReadAck(req, tx)
		}
	}
	return true
}

// monitorBye: the supervisor hung up. Only the monitoring session ends.
func (s *Server) monitorBye(req *sipmsg.Request, tx sipmsg.ServerTransaction) bool {
	d := s.monitorDialogOf(req)
	if d == nil {
		return false
	}
	if !d.matchTag(req) {
		s.respond(tx, req, 481, "", "no dialog matches this To tag")
		return true
	}
	// ReadBye also ends a 2xx still waiting for its ACK (a BYE may be
	// processed before the ACK that preceded it).
	if d.uas == nil || d.uas.ReadBye(req, tx) != nil {
		s.respond(tx, req, 200, "OK", "")
	}
	d.ended.Store(true)
	d.finish("supervisor hung up")
	return true
}

// admitMonitor is admission for a monitoring INVITE: the request rate,
// then digest authentication of the From user, always (a monitoring
// request must say who listens, whatever sip.auth.required and
// sip.auth.trusted say). False means it was answered.
func (s *Server) admitMonitor(req *sipmsg.Request, tx sipmsg.ServerTransaction, user string) bool {
	src := sourceAddr(req)
	if ok, wait := s.sec.lim.allow(src); !ok {
		s.rejected.Add(1)
		s.refuse(req, tx, user, 503, "Service Unavailable", RefusedRateLimited, "request rate limit exceeded",
			sipmsg.NewHeader("Retry-After", retryAfter(wait)))
		return false
	}
	a := s.sec.auth
	res := a.check(req, user, src)
	if res == authOK {
		return true
	}
	s.rejected.Add(1)
	s.answerAuth(req, tx, user, src, res)
	return false
}

// acceptMonitor answers a supervisor's monitoring INVITE (bib is the UAS).
func (s *Server) acceptMonitor(req *sipmsg.Request, tx sipmsg.ServerTransaction, line, mode, modeFrom string) {
	from, to, cid, cseq := req.From(), req.To(), req.CallID(), req.CSeq()
	if from == nil || to == nil || cid == nil || cseq == nil || req.Contact() == nil || !from.Params.Has("tag") {
		s.malformed.Add(1)
		s.rejected.Add(1)
		s.respond(tx, req, 400, "", "INVITE needs From with tag, To, Call-ID, CSeq and Contact")
		return
	}
	if _, dup := s.lookup(req); dup || s.monitorDialogOf(req) != nil {
		s.respond(tx, req, 482, "Loop Detected", "Call-ID already in use")
		return
	}
	user := from.Address.User
	if !s.admitMonitor(req, tx, user) {
		s.mons.refused.Add(1)
		return
	}
	tp := strings.ToUpper(req.Transport())
	log := s.log.With("monitor_call_id", cid.Value(), "user", user, "line", line)
	reject := func(se *StatusError, hdrs ...sipmsg.Header) {
		s.rejected.Add(1)
		s.mons.refused.Add(1)
		s.reportRefusal(req, user, se.Code, RefusedCallRejected, se.Warning)
		log.Info("monitoring refused", "mode", mode, "mode_from", modeFrom, "code", se.Code, "why", se.Warning, "source", req.Source())
		s.respond(tx, req, se.Code, se.Reason, se.Warning, hdrs...)
	}
	if s.OnMonitor == nil {
		reject(&StatusError{Code: 403, Reason: "Forbidden", Warning: "silent monitoring is not enabled on this server"})
		return
	}
	// The offer is read before the hook but judged after it, so that a
	// whisper or barge request is refused for what it is.
	var offer *bridge.MediaDesc
	var offerErr *StatusError
	if body := req.Body(); len(body) > 0 {
		if ct := req.ContentType(); ct != nil && !isSDPType(ct.Value()) {
			offerErr = &StatusError{Code: 415, Warning: "body must be application/sdp"}
		} else if d, err := ParseMedia(body); err != nil {
			offerErr = sdpStatus(err)
		} else {
			offer = &d
		}
	}
	mr := &MonitorRequest{
		Line: line, Mode: mode, ModeFrom: modeFrom, User: user, RequestURI: req.Recipient.String(),
		CallID: cid.Value(), Source: req.Source(), Transport: tp, Offer: offer,
	}
	hctx, cancel := context.WithTimeout(context.Background(), monitorSetupTimeout)
	media, err := s.OnMonitor(hctx, mr)
	cancel()
	if err != nil {
		reject(statusOf(err))
		return
	}
	if mode != MonitorSilent {
		// Never granted, whatever the hook said.
		media.Close("refused")
		reject(&StatusError{Code: 403, Reason: "Forbidden", Warning: mode + " is not supported: bib is listen-only; use silent monitoring"})
		return
	}
	if offerErr != nil {
		media.Close("bad offer")
		reject(offerErr)
		return
	}
	secureCall := media.Secure()
	cryptoTag := ""
	switch {
	case offer != nil && offer.SRTP != nil:
		cryptoTag, _, _ = OfferCrypto(req.Body())
	case offer != nil && secureCall:
		media.Close("plain leg on a secure call")
		reject(errSecureMonitor)
		return
	case offer == nil && secureCall:
		cryptoTag = "1" // delayed offer: bib offers RTP/SAVP
	}
	var codec bridge.Codec
	if offer != nil {
		if offer.Mode == bridge.SendOnly || offer.Mode == bridge.Inactive || offer.RTP.Port() == 0 {
			media.Close("offer cannot receive")
			reject(&StatusError{Code: 488, Reason: "Not Acceptable Here", Warning: warningValue("bib", 399,
				"a monitoring leg only receives: bib sends the mix a=sendonly, so offer sendrecv or recvonly (got "+offer.Mode.String()+")")})
			return
		}
		if codec, err = media.SetRemote(*offer); err != nil {
			media.Close("no common codec")
			reject(&StatusError{Code: 488, Reason: "Not Acceptable Here", Warning: warningValue("bib", 305, "no common codec: offer PCMU, PCMA or G722")})
			return
		}
	}
	dua := s.dialogUA(tp)
	ds, err := dua.ReadInvite(req, tx)
	if err != nil {
		media.Close("invalid invite")
		reject(&StatusError{Code: 400, Warning: err.Error()})
		return
	}
	tag, _ := ds.InviteRequest.To().Params.Get("tag")
	d := &monitorDialog{
		s: s, callID: cid.Value(), localTag: tag, transport: tp, laddr: s.laddr(tp), dua: dua,
		media: media, log: log, uas: ds, done: make(chan struct{}),
		target: *req.Contact().Address.Clone(), origin: newOrigin(s.now(), 7), codec: codec,
		cseq: remoteCSeq{seq: cseq.SeqNo, have: true},
	}
	if cryptoTag != "" {
		if err := d.useSRTP(cryptoTag); err != nil {
			media.Close("srtp")
			reject(&StatusError{Code: 500, Warning: "srtp: " + err.Error()})
			return
		}
	}
	s.mons.byCallID.Store(d.callID, d)
	s.mons.active.Add(1)
	s.mons.started.Add(1)
	var body []byte
	if offer != nil {
		body = d.sdp([]bridge.Codec{codec}, bridge.SendOnly)
	} else {
		body = d.sdp(offerCodecs, bridge.SendOnly) // delayed offer: bib offers, the ACK answers
	}
	ackCh := d.expectAck(cseq.SeqNo)
	res := sipmsg.NewResponseFromRequest(ds.InviteRequest, 200, "OK", body)
	res.AppendHeader(sdpHeader())
	res.AppendHeader(&sipmsg.ContactHeader{Address: *dua.ContactHDR.Address.Clone()})
	res.AppendHeader(sipmsg.NewHeader("Allow", allowed))
	res.AppendHeader(sipmsg.NewHeader("Server", s.cfg.UserAgent))
	err = ds.WriteResponse(res) // returns once the ACK arrived (RFC 3261 section 13.3.1.4)
	var ackBody []byte
	select {
	case ackBody = <-ackCh:
	default:
	}
	d.dropAck(cseq.SeqNo)
	if d.finished.Load() {
		return // the supervisor hung up meanwhile
	}
	if err != nil {
		log.Warn("monitoring: no ACK for 200", "err", err)
		d.hangup(context.Background(), "no ACK")
		return
	}
	if offer == nil {
		ans, err := ParseMedia(ackBody)
		if err == nil && (ans.SRTP != nil) != (cryptoTag != "") {
			err = fmt.Errorf("%w: answer is %s to an %s offer", ErrMonitorAnswer, protoName(ans.SRTP != nil), protoName(cryptoTag != ""))
		}
		if err == nil {
			codec, err = d.applyAnswer(ans)
		}
		if err != nil {
			log.Warn("monitoring: the ACK carried no usable answer", "err", err)
			d.hangup(context.Background(), "no usable SDP answer in ACK")
			return
		}
	}
	log.Info("supervisor listening", "via", "sip", "codec", codec.Name, "source", req.Source(), "transport", tp)
	d.watch()
}

// applyAnswer applies the supervisor's answer to bib's sendonly offer.
func (d *monitorDialog) applyAnswer(ans bridge.MediaDesc) (bridge.Codec, error) {
	if ans.Mode == bridge.SendOnly || ans.RTP.Port() == 0 {
		return bridge.Codec{}, fmt.Errorf("%w: the supervisor's answer does not receive (%s)", ErrMonitorAnswer, ans.Mode)
	}
	c, err := d.media.SetRemote(ans)
	if err != nil {
		return bridge.Codec{}, err
	}
	d.mu.Lock()
	d.codec = c
	d.mu.Unlock()
	return c, nil
}

// watch waits for the end of the monitored call (BYE to the supervisor),
// of the dialog, or of the server.
func (d *monitorDialog) watch() {
	stop := d.s.mons.stopCh()
	d.s.mons.wg.Go(func() {
		select {
		case <-d.media.Done():
			d.hangup(context.Background(), "monitored call ended")
		case <-d.done:
		case <-stop:
			d.finish("server closed")
		}
	})
}

// sdp is bib's SDP for the dialog: one audio stream, a=sendonly (or
// inactive), from the supervisor leg's ports.
func (d *monitorDialog) sdp(codecs []bridge.Codec, mode bridge.Mode) []byte {
	rtp, rtcp := d.media.Local()
	ip := rtp.Addr()
	if !ip.IsValid() || ip.IsUnspecified() {
		ip = d.s.eng.IP()
	}
	d.mu.Lock()
	d.origin.Version++
	o := d.origin
	d.mu.Unlock()
	st := sdpStream{Port: rtp.Port(), Codecs: codecs, Mode: mode}
	d.mu.Lock()
	if d.srtpTag != "" {
		st.Crypto = cryptoAttr(d.srtpTag, *d.key)
	}
	d.mu.Unlock()
	b := buildSDP(o, ip, "bib", []sdpStream{st})
	if rtcp.IsValid() && rtcp.Port() != rtp.Port()+1 {
		b = append(b, "a=rtcp:"+strconv.Itoa(int(rtcp.Port()))+"\r\n"...)
	}
	return b
}

func (d *monitorDialog) expectAck(cseq uint32) chan []byte {
	ch := make(chan []byte, 1)
	d.mu.Lock()
	if d.acks == nil {
		d.acks = map[uint32]chan []byte{}
	}
	d.acks[cseq] = ch
	d.mu.Unlock()
	return ch
}

func (d *monitorDialog) deliverAck(cseq uint32, body []byte) {
	d.mu.Lock()
	ch, ok := d.acks[cseq]
	delete(d.acks, cseq)
	d.mu.Unlock()
	if ok {
		ch <- body
	}
}

func (d *monitorDialog) dropAck(cseq uint32) {
	d.mu.Lock()
	delete(d.acks, cseq)
	d.mu.Unlock()
}

// matchTag checks that an in-dialog request carries bib's tag in To.
func (d *monitorDialog) matchTag(req *sipmsg.Request) bool {
	to := req.To()
	if to == nil {
		return false
	}
	tag, _ := to.Params.Get("tag")
	return tag == d.localTag
}

// hangup ends the dialog from bib's side: BYE, then free the media.
func (d *monitorDialog) hangup(ctx context.Context, reason string) {
	if d.ended.CompareAndSwap(false, true) {
		bctx, cancel := context.WithTimeout(ctx, byeTimeout)
		d.mu.Lock()
		target := *d.target.Clone()
		d.mu.Unlock()
		bye := sipmsg.NewRequest(sipmsg.BYE, target)
		bye.Laddr = d.laddr
		bye.AppendHeader(sipmsg.NewHeader("Reason", `SIP;cause=200;text="`+quoteSafe(reason)+`"`))
		var err error
		switch {
		case d.uas != nil:
			err = d.uas.WriteBye(bctx, bye)
		case d.uac != nil:
			err = d.uac.WriteBye(bctx, bye)
		}
		cancel()
		if err != nil {
			d.log.Debug("monitoring bye failed", "err", err)
		}
	}
	d.finish(reason)
}

// finish frees the media and forgets the dialog. Idempotent.
func (d *monitorDialog) finish(reason string) {
	if !d.finished.CompareAndSwap(false, true) {
		return
	}
	d.s.mons.byCallID.Delete(d.callID)
	d.s.mons.active.Add(-1)
	d.media.Close(reason)
	if d.uas != nil {
		d.uas.Close()
	}
	if d.uac != nil {
		d.uac.Close()
	}
	close(d.done)
	d.log.Info("supervisor stopped listening", "via", "sip", "reason", reason)
}

// handleOffer answers a re-INVITE or UPDATE from the supervisor (hold,
// resume, session refresh). bib stays sendonly, or inactive when the
// supervisor offers sendonly or inactive; the codec cannot change.
func (d *monitorDialog) handleOffer(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
	s := d.s
	if !d.matchTag(req) || req.CSeq() == nil {
		s.respond(tx, req, 481, "", "no dialog matches this request")
		return
	}
	seq := req.CSeq().SeqNo
	d.mu.Lock()
	bad := !d.cseq.accept(seq)
	d.mu.Unlock()
	if bad {
		s.respond(tx, req, 500, "", "CSeq out of order", sipmsg.NewHeader("Retry-After", "1"))
		return
	}
	if !d.beginOffer() {
		// RFC 3261 section 14.2: an offer while another is pending gets 491.
		s.respond(tx, req, 491, "", "another offer/answer is in progress", sipmsg.NewHeader("Retry-After", "1"))
		return
	}
	defer d.endOffer()
	if m, from := headerMode(req); m != "" {
		s.respond(tx, req, 403, "Forbidden", m+" (asked by "+from+") is not supported: bib is listen-only; the session stays silent monitoring")
		return
	}
	if ct := req.Contact(); ct != nil && req.IsInvite() {
		d.mu.Lock()
		d.target = *ct.Address.Clone()
		d.mu.Unlock()
	}
	d.mu.Lock()
	cur := d.codec
	d.mu.Unlock()
	body := req.Body()
	if len(body) == 0 {
		if !req.IsInvite() {
			d.answer(req, tx, nil, false) // UPDATE without SDP: a session refresh
			return
		}
		// SDP-less re-INVITE: bib offers (its current codec, sendonly), the
		// supervisor answers in the ACK.
		ackBody := d.answer(req, tx, d.sdp([]bridge.Codec{cur}, bridge.SendOnly), true)
		ans, err := ParseMedia(ackBody)
		if err == nil {
			ans, err = pinCodec(ans, cur)
		}
		if err == nil {
			_, err = d.applyAnswer(ans)
		}
		if err != nil {
			d.log.Warn("monitoring: no usable answer in the ACK to an SDP-less re-INVITE", "err", err)
		}
		return
	}
	off, err := ParseMedia(body)
	if err == nil {
		off, err = pinCodec(off, cur)
	}
	if err == nil {
		d.mu.Lock()
		secure := d.srtpTag != ""
		d.mu.Unlock()
		if secure != (off.SRTP != nil) {
			err = sdpErr(ErrMediaTransport, 302, "a monitoring leg keeps its transport (%s); got %s", protoName(secure), protoName(off.SRTP != nil))
		} else if secure {
			tag, _, _ := OfferCrypto(body)
			d.mu.Lock()
			d.srtpTag = tag
			d.mu.Unlock()
		}
	}
	if err != nil {
		se := sdpStatus(err)
		s.respond(tx, req, se.Code, se.Reason, se.Warning)
		return
	}
	mode := bridge.SendOnly
	if off.Mode == bridge.SendOnly || off.Mode == bridge.Inactive {
		mode = bridge.Inactive // the supervisor holds: bib neither sends nor receives
	}
	if _, err := d.media.SetRemote(off); err != nil {
		se := sdpStatus(sdpErr(ErrNoAudio, 305, "%v", err))
		s.respond(tx, req, se.Code, se.Reason, se.Warning)
		return
	}
	d.answer(req, tx, d.sdp([]bridge.Codec{cur}, mode), req.IsInvite())
}

// beginOffer marks an offer/answer in progress. A supervisor may send its
// next re-INVITE as soon as it sent the ACK of the previous one, before
// bib has read that ACK: wait a moment for the previous exchange to end
// before refusing with 491.
func (d *monitorDialog) beginOffer() bool {
	for attempt := 0; ; attempt++ {
		d.mu.Lock()
		if d.finished.Load() {
			d.mu.Unlock()
			return false
		}
		if !d.oaBusy {
			d.oaBusy = true
			d.oaIdle = make(chan struct{})
			d.mu.Unlock()
			return true
		}
		idle := d.oaIdle
		d.mu.Unlock()
		if attempt > 0 {
			return false
		}
		t := time.NewTimer(2 * sipmsg.T1)
		select {
		case <-idle:
		case <-t.C:
		case <-d.done:
		}
		t.Stop()
	}
}

func (d *monitorDialog) endOffer() {
	d.mu.Lock()
	d.oaBusy = false
	close(d.oaIdle)
	d.mu.Unlock()
}

// pinCodec puts the codec in use first in d's list: a monitoring leg keeps
// its codec for its whole life (the mixer output was set up for it).
func pinCodec(d bridge.MediaDesc, cur bridge.Codec) (bridge.MediaDesc, error) {
	if cur.Name == "" {
		return d, nil
	}
	for i, c := range d.Codecs {
		if c.Is(cur.Name) {
			cs := make([]bridge.Codec, 0, len(d.Codecs))
			cs = append(cs, c)
			cs = append(cs, d.Codecs[:i]...)
			d.Codecs = append(cs, d.Codecs[i+1:]...)
			return d, nil
		}
	}
	return d, sdpErr(ErrNoAudio, 305, "a monitoring leg keeps its codec: offer %s", cur.Name)
}

// answer sends 200 to an in-dialog INVITE/UPDATE; for INVITE it
// retransmits the 2xx over UDP until the ACK arrives (RFC 3261 section
// 13.3.1.4) and returns the ACK's body.
func (d *monitorDialog) answer(req *sipmsg.Request, tx sipmsg.ServerTransaction, body []byte, isInvite bool) []byte {
	res := sipmsg.NewResponseFromRequest(req, 200, "OK", body)
	res.AppendHeader(&sipmsg.ContactHeader{Address: *d.dua.ContactHDR.Address.Clone()})
	if len(body) > 0 {
		res.AppendHeader(sdpHeader())
	}
	res.AppendHeader(sipmsg.NewHeader("Server", d.s.cfg.UserAgent))
	if !isInvite {
		_ = tx.Respond(res)
		return nil
	}
	cseq := req.CSeq().SeqNo
	ackCh := d.expectAck(cseq)
	defer d.dropAck(cseq)
	if err := tx.Respond(res); err != nil {
		d.log.Debug("respond to re-invite failed", "err", err)
	}
	b, ok := d.s.awaitAck(ackCh, res, d.transport, d.done)
	if !ok {
		d.log.Warn("monitoring: no ACK for 2xx to re-INVITE")
	}
	return b
}

// MonitorDial is a monitoring call bib places to a supervisor's phone.
type MonitorDial struct {
	// Target is the supervisor phone's SIP URI, e.g. sip:3000@10.0.0.5:5060.
	Target string
	// FromUser and FromName are the caller identity the phone shows
	// (e.g. "monitor-1001", "Monitoring 1001").
	FromUser, FromName string
	// Media is the supervisor leg's media. DialMonitor owns it from the
	// call on: it is closed when the dialog ends or the call fails.
	Media MonitorMedia
	// AlertInfo is the URL put in the Alert-Info header (default
	// http://<domain>/). Auto-answer phones only look at its parameter.
	AlertInfo string
}

// DialMonitor calls a supervisor's phone with a sendonly offer and
// auto-answer headers (Call-Info: <sip:domain>;answer-after=0 and
// Alert-Info: <url>;info=alert-autoanswer), waits for the answer (bounded
// by ctx, or 30 s without a deadline), and returns the dialog. On failure
// the media is closed; errors wrap ErrMonitorAnswer or a
// *sipgo.ErrDialogResponse.
func (s *Server) DialMonitor(ctx context.Context, md MonitorDial) (*MonitorDialog, error) {
	if md.Media == nil {
		return nil, errors.New("sip: DialMonitor without media")
	}
	var target sipmsg.Uri
	if err := sipmsg.ParseUri(md.Target, &target); err != nil || target.Host == "" ||
		(!strings.EqualFold(target.Scheme, "sip") && !strings.EqualFold(target.Scheme, "sips")) {
		md.Media.Close("bad target")
		return nil, fmt.Errorf("%w: %q is not a sip: URI", ErrMonitorTarget, md.Target)
	}
	if s.cli == nil {
		md.Media.Close("not listening")
		return nil, errors.New("sip: DialMonitor before Listen")
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, monitorSetupTimeout)
		defer cancel()
	}
	tp := transportFor(target)
	dua := s.duas[tp]
	if dua == nil {
		dua = s.duas["UDP"]
	}
	d := &monitorDialog{
		s: s, callID: sipmsg.GenerateTagN(24) + "@bib", localTag: sipmsg.GenerateTagN(16), transport: tp,
		laddr: s.laddr(tp), dua: dua, media: md.Media, done: make(chan struct{}),
		target: *target.Clone(), origin: newOrigin(s.now(), 9),
	}
	d.log = s.log.With("monitor_call_id", d.callID, "supervisor", target.String())
	fromUser := md.FromUser
	if fromUser == "" {
		fromUser = "bib"
	}
	req := sipmsg.NewRequest(sipmsg.INVITE, *target.Clone())
	from := &sipmsg.FromHeader{DisplayName: md.FromName, Address: sipmsg.Uri{Scheme: "sip", User: fromUser, Host: s.cfg.Domain}, Params: sipmsg.NewParams()}
	from.Params.Add("tag", d.localTag)
	to := &sipmsg.ToHeader{Address: sipmsg.Uri{Scheme: "sip", User: target.User, Host: target.Host, Port: target.Port}, Params: sipmsg.NewParams()}
	callID := sipmsg.CallIDHeader(d.callID)
	req.AppendHeader(from)
	req.AppendHeader(to)
	req.AppendHeader(&callID)
	req.AppendHeader(sipmsg.NewHeader("User-Agent", s.cfg.UserAgent))
	req.AppendHeader(sipmsg.NewHeader("Allow", allowed))
	// Auto-answer conventions: Call-Info answer-after (Broadsoft, Polycom,
	// Yealink, Grandstream) and Alert-Info info=alert-autoanswer (Cisco and
	// others).
	req.AppendHeader(sipmsg.NewHeader("Call-Info", "<sip:"+s.cfg.Domain+">;answer-after=0"))
	alert := md.AlertInfo
	if alert == "" {
		alert = "http://" + s.cfg.Domain + "/"
	}
	req.AppendHeader(sipmsg.NewHeader("Alert-Info", "<"+alert+">;info=alert-autoanswer"))
	if md.Media.Secure() {
		if err := d.useSRTP("1"); err != nil {
			md.Media.Close("srtp")
			return nil, err
		}
	}
	req.AppendHeader(sdpHeader())
	req.SetBody(d.sdp(offerCodecs, bridge.SendOnly))
	req.SetTransport(tp)
	req.Laddr = d.laddr

	fail := func(reason string, err error) (*MonitorDialog, error) {
		s.mons.byCallID.Delete(d.callID)
		md.Media.Close(reason)
		return nil, err
	}
	s.mons.byCallID.Store(d.callID, d)
	ds, err := dua.WriteInvite(ctx, req)
	if err != nil {
		return fail("supervisor unreachable", fmt.Errorf("%w: invite %s: %v", ErrMonitorAnswer, target.String(), err))
	}
	if err := ds.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		ds.Close()
		var dr *sipgo.ErrDialogResponse
		if errors.As(err, &dr) {
			return fail("supervisor declined", fmt.Errorf("%w: %s answered %s", ErrMonitorAnswer, target.String(), dr.Res.StartLine()))
		}
		return fail("supervisor did not answer", fmt.Errorf("%w: %s: %v", ErrMonitorAnswer, target.String(), err))
	}
	d.uac = ds
	res := ds.InviteResponse
	if ct := res.Contact(); ct != nil {
		d.target = *ct.Address.Clone()
	}
	actx, acancel := context.WithTimeout(context.Background(), byeTimeout)
	ack := sipmsg.NewRequest(sipmsg.ACK, *d.target.Clone())
	ack.Laddr = d.laddr
	_ = ds.WriteAck(actx, ack)
	acancel()
	ans, err := ParseMedia(res.Body())
	var codec bridge.Codec
	if err == nil && (ans.SRTP != nil) != (d.srtpTag != "") {
		err = fmt.Errorf("answer is %s to an %s offer (the monitored call is %s)", protoName(ans.SRTP != nil), protoName(d.srtpTag != ""), map[bool]string{true: "secure", false: "plain"}[d.srtpTag != ""])
	}
	if err == nil {
		codec, err = d.applyAnswer(ans)
	}
	s.mons.active.Add(1)
	s.mons.started.Add(1)
	if err != nil {
		d.hangup(context.Background(), "unusable SDP answer")
		return nil, fmt.Errorf("%w: %v", ErrMonitorAnswer, err)
	}
	d.log.Info("supervisor listening", "via", "sip", "dialled", true, "codec", codec.Name)
	d.watch()
	return &MonitorDialog{d: d}, nil
}

// EndMonitor sends BYE on the monitoring dialog with SIP Call-ID callID
// (dialled in or placed) and frees its media.
func (s *Server) EndMonitor(ctx context.Context, callID, reason string) error {
	v, ok := s.mons.byCallID.Load(callID)
	if !ok {
		return fmt.Errorf("monitoring dialog %q: %w", callID, ErrCallNotFound)
	}
	d := v.(*monitorDialog)
	if d.uas == nil && d.uac == nil {
		return fmt.Errorf("monitoring dialog %q is not set up yet: %w", callID, ErrCallNotFound)
	}
	d.hangup(ctx, reason)
	return nil
}
