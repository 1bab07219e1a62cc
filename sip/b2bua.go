package sip

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/bib-project/bib/bridge"
	"github.com/emiago/sipgo"
	sipmsg "github.com/emiago/sipgo/sip"
)

// Call states reported in CallInfo.State.
const (
	StateRinging  = "ringing"
	StateEarly    = "early" // early media anchored (183 with SDP)
	StateAnswered = "answered"
	StateHeld     = "held"
	StateEnded    = "ended"
)

// byeTimeout bounds the wait for a BYE's response when bib ends a call.
const byeTimeout = 5 * time.Second

// inDialogTimeout bounds a forwarded re-INVITE or UPDATE (64*T1).
const inDialogTimeout = 32 * time.Second

var errCallerCancel = errors.New("caller cancelled")

// CallInfo describes a call for the API and the hooks.
type CallInfo struct {
	ID         string           `json:"id"`
	State      string           `json:"state"`
	Start      time.Time        `json:"start"`
	Answer     *time.Time       `json:"answer,omitempty"`
	End        *time.Time       `json:"end,omitempty"`
	EndReason  string           `json:"end_reason,omitempty"`
	Caller     string           `json:"caller"`
	CallerName string           `json:"caller_name,omitempty"`
	Callee     string           `json:"callee"`
	CalleeName string           `json:"callee_name,omitempty"`
	CallIDA    string           `json:"sip_call_id_a"`
	CallIDB    string           `json:"sip_call_id_b,omitempty"`
	ContactA   string           `json:"contact_a"`
	ContactB   string           `json:"contact_b,omitempty"`
	TransportA string           `json:"transport_a"`
	TransportB string           `json:"transport_b,omitempty"`
	RoutedBy   string           `json:"routed_by,omitempty"` // "registrar" or "routes[i]"
	Media      bridge.CallStats `json:"media"`
}

// InviteInfo is what the Authorize hook sees of a new INVITE.
type InviteInfo struct {
	Caller     string // From user
	CallerName string // From display name
	Callee     string // Request-URI user
	RequestURI string
	Source     string // ip:port the INVITE came from
	Transport  string // UDP or TCP
	HasSDP     bool
	req        *sipmsg.Request
}

// Header returns the first value of a request header ("" if absent).
func (i *InviteInfo) Header(name string) string {
	if i.req == nil {
		return ""
	}
	if h := i.req.GetHeader(name); h != nil {
		return h.Value()
	}
	return ""
}

// sigLeg is the signalling half of one leg: bib's dialog with one party.
// Leg A is a UAS dialog (the party called bib), leg B a UAC dialog.
type sigLeg struct {
	side      bridge.Side
	callID    string
	transport string // UDP or TCP
	dua       *sipgo.DialogUA
	uas       *sipgo.DialogServerSession
	uac       *sipgo.DialogClientSession
	localTag  string
	laddr     sipmsg.Addr
	user      string
	display   string

	// guarded by call.mu
	target  sipmsg.Uri // remote target (the party's Contact)
	origin  Origin
	lastSDP []byte
	cseq    remoteCSeq // in-dialog requests received
	acks    map[uint32]chan []byte
	ended   bool // a BYE was exchanged on this leg
}

type call struct {
	s     *Server
	id    string
	log   *slog.Logger
	media *bridge.Call
	legs  [2]*sigLeg
	done  chan struct{}
	ready chan struct{} // closed when the initial offer/answer completed (or failed)

	mu         sync.Mutex
	state      string
	start      time.Time
	answer     time.Time
	end        time.Time
	endReason  string
	routedBy   string
	setupDone  bool
	oaBusy     bool
	hungup     bool
	hangReason string
	hangHdr    string
	ringCancel context.CancelCauseFunc
	finished   bool
	old        []*sigLeg // legs replaced by transfers
	transferor *sigLeg   // the leg whose blind transfer is under way
}

func (c *call) setState(st string) {
	c.mu.Lock()
	if c.state != st && c.state != StateEnded {
		c.log.Debug("call state", "from", c.state, "to", st)
		c.state = st
	}
	c.mu.Unlock()
}

func (c *call) snapshot() CallInfo {
	c.mu.Lock()
	ci := CallInfo{ID: c.id, State: c.state, Start: c.start, EndReason: c.endReason, RoutedBy: c.routedBy}
	if !c.answer.IsZero() {
		t := c.answer
		ci.Answer = &t
	}
	if !c.end.IsZero() {
		t := c.end
		ci.End = &t
	}
	if a := c.legs[bridge.SideA]; a != nil {
		ci.Caller, ci.CallerName, ci.CallIDA, ci.ContactA, ci.TransportA = a.user, a.display, a.callID, a.target.String(), a.transport
	}
	if b := c.legs[bridge.SideB]; b != nil {
		ci.Callee, ci.CalleeName, ci.CallIDB, ci.ContactB, ci.TransportB = b.user, b.display, b.callID, b.target.String(), b.transport
	}
	c.mu.Unlock()
	ci.Media = c.media.Stats()
	return ci
}

// localSDP rewrites a party's SDP for the other party's leg `side`,
// anchoring media on that leg. The o= version grows only when the content
// changes (RFC 3264 section 8).
func (c *call) localSDP(side bridge.Side, peer []byte) ([]byte, error) {
	rtp, rtcp := c.media.Leg(side).Local()
	l := c.legs[side]
	c.mu.Lock()
	defer c.mu.Unlock()
	b, err := Rewrite(peer, l.origin, rtp, rtcp)
	if err != nil {
		return nil, err
	}
	if l.lastSDP != nil && !bytes.Equal(b, l.lastSDP) {
		l.origin.Version++
		if b, err = Rewrite(peer, l.origin, rtp, rtcp); err != nil {
			return nil, err
		}
	}
	l.lastSDP = b
	return b, nil
}

// applyOA records a completed offer/answer. rtcp-mux holds only if both
// sides signalled it (RFC 5761 section 5.1.1).
func (c *call) applyOA(offSide bridge.Side, off bridge.MediaDesc, ans bridge.MediaDesc) {
	if !ans.RTCPMux || !off.RTCPMux {
		off.RTCPMux, ans.RTCPMux = false, false
	}
	c.media.SetRemote(offSide, off)
	c.media.SetRemote(offSide.Other(), ans)
}

func (c *call) expectAck(side bridge.Side, cseq uint32) chan []byte {
	ch := make(chan []byte, 1)
	c.mu.Lock()
	l := c.legs[side]
	if l.acks == nil {
		l.acks = map[uint32]chan []byte{}
	}
	l.acks[cseq] = ch
	c.mu.Unlock()
	return ch
}

func (c *call) deliverAck(side bridge.Side, cseq uint32, body []byte) {
	c.mu.Lock()
	l := c.legs[side]
	ch, ok := l.acks[cseq]
	delete(l.acks, cseq)
	c.mu.Unlock()
	if ok {
		ch <- body
	}
}

func (c *call) dropAck(side bridge.Side, cseq uint32) {
	c.mu.Lock()
	delete(c.legs[side].acks, cseq)
	c.mu.Unlock()
}

func sdpHeader() sipmsg.Header { return sipmsg.NewHeader("Content-Type", "application/sdp") }

// onInvite handles initial INVITEs and re-INVITEs.
func (s *Server) onInvite(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
	if s.monitorInvite(req, tx) {
		return // a supervisor's monitoring dialog (monitor.go)
	}
	if to := req.To(); to != nil && to.Params.Has("tag") {
		c, l, ok := s.inDialog(req, tx)
		if ok {
			c.handleOffer(req, tx, l)
		}
		return
	}
	s.newCall(req, tx)
}

func (s *Server) onUpdate(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
	if s.monitorUpdate(req, tx) {
		return
	}
	c, l, ok := s.inDialog(req, tx)
	if ok {
		c.handleOffer(req, tx, l)
	}
}

func (s *Server) onAck(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
	if s.monitorAck(req, tx) {
		return
	}
	ref, ok := s.lookup(req)
	if !ok || req.CSeq() == nil {
		return
	}
	ref.c.mu.Lock()
	l := ref.c.legs[ref.side]
	ref.c.mu.Unlock()
	if l == nil || ref.leg != nil {
		return
	}
	// Deliver the body first: ReadAck releases the goroutine waiting in
	// DialogServerSession.WriteResponse, which then reads it.
	ref.c.deliverAck(ref.side, req.CSeq().SeqNo, req.Body())
	if l.uas != nil {
		// Confirms the initial dialog (the 2xx wait in DialogServerSession).
		_ = l.uas.ReadAck(req, tx)
	}
}

func (s *Server) onBye(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
	if s.forkBye(req, tx) {
		return // a recorder ended a recording fork (fork.go)
	}
	if s.monitorBye(req, tx) {
		return // a supervisor hung up (monitor.go)
	}
	c, l, ok := s.inDialog(req, tx)
	if !ok {
		return
	}
	s.respond(tx, req, 200, "OK", "")
	c.mu.Lock()
	l.ended = true
	replaced := c.legs[l.side] != l || c.transferor == l
	c.mu.Unlock()
	if replaced {
		return // the transferor leaving during or after its transfer (transfer.go)
	}
	hdr := ""
	if h := req.GetHeader("Reason"); h != nil {
		hdr = h.Value()
	}
	c.hangup(int(l.side), "bye from "+l.side.String(), hdr)
}

// inDialog matches a request to a call leg (RFC 3261 section 12.2.2) and
// checks its CSeq; it answers 481 or 500 itself when that fails.
func (s *Server) inDialog(req *sipmsg.Request, tx sipmsg.ServerTransaction) (*call, *sigLeg, bool) {
	ref, ok := s.lookup(req)
	var l *sigLeg
	if ok {
		ref.c.mu.Lock()
		l = ref.c.legs[ref.side]
		if ref.leg != nil {
			l = ref.leg
		}
		ref.c.mu.Unlock()
	}
	to := req.To()
	if !ok || l == nil || to == nil || req.CSeq() == nil {
		s.respond(tx, req, 481, "", "no dialog matches this request")
		return nil, nil, false
	}
	if tag, _ := to.Params.Get("tag"); tag != l.localTag {
		s.respond(tx, req, 481, "", "no dialog matches this To tag")
		return nil, nil, false
	}
	c := ref.c
	seq := req.CSeq().SeqNo
	c.mu.Lock()
	bad := !l.cseq.accept(seq)
	c.mu.Unlock()
	if bad {
		s.respond(tx, req, 500, "", "CSeq out of order", sipmsg.NewHeader("Retry-After", "1"))
		return nil, nil, false
	}
	return c, l, true
}

// newCall handles an initial INVITE: route it, anchor media, place the B leg.
func (s *Server) newCall(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
	from, to, cid, cseq := req.From(), req.To(), req.CallID(), req.CSeq()
	if from == nil || to == nil || cid == nil || cseq == nil || req.Contact() == nil || !from.Params.Has("tag") {
		s.malformed.Add(1)
		s.rejected.Add(1)
		s.respond(tx, req, 400, "", "INVITE needs From with tag, To, Call-ID, CSeq and Contact")
		return
	}
	if _, dup := s.lookup(req); dup {
		// A second INVITE with a Call-ID bib already knows and no To tag:
		// a loop or a fork bib does not support.
		s.respond(tx, req, 482, "Loop Detected", "Call-ID already in use")
		return
	}
	if !s.admitInvite(req, tx) {
		return // refused, challenged or over a limit (admit.go)
	}
	user := req.Recipient.User
	info := &InviteInfo{
		Caller: from.Address.User, CallerName: from.DisplayName, Callee: user,
		RequestURI: req.Recipient.String(), Source: req.Source(), Transport: strings.ToUpper(req.Transport()),
		HasSDP: len(req.Body()) > 0, req: req,
	}
	reject := func(se *StatusError, hdrs ...sipmsg.Header) {
		s.rejected.Add(1)
		s.callRefused(req, se)
		s.log.Info("call rejected", "caller", info.Caller, "callee", user, "code", se.Code, "why", se.Warning)
		s.respond(tx, req, se.Code, se.Reason, se.Warning, hdrs...)
	}
	if s.Authorize != nil {
		if err := s.Authorize(info); err != nil {
			reject(statusOf(err))
			return
		}
	}
	target, routedBy, err := s.route(user)
	if err != nil {
		reject(&StatusError{Code: 404, Reason: "Not Found", Warning: "no route to " + user})
		return
	}
	body := req.Body()
	var offer *bridge.MediaDesc
	if len(body) > 0 {
		if ct := req.ContentType(); ct != nil && !isSDPType(ct.Value()) {
			reject(&StatusError{Code: 415, Warning: "body must be application/sdp"}, sipmsg.NewHeader("Accept", "application/sdp"))
			return
		}
		d, err := ParseMedia(body)
		if err == nil && d.RTP.Port() != 0 && d.RTP.Addr().Is4() != s.eng.IP().Is4() {
			err = sdpErr(ErrMediaAddress, 301, "media address family of %s does not match bib's %s", d.RTP.Addr(), s.eng.IP())
		}
		if err != nil {
			reject(sdpStatus(err))
			return
		}
		offer = &d
	}
	id := s.newID()
	log := s.log.With("call_id", id)
	mc, err := s.eng.NewCall(id, s.log)
	if err != nil {
		if errors.Is(err, bridge.ErrPortsExhausted) {
			reject(&StatusError{Code: 503, Reason: "Service Unavailable", Warning: "no free RTP port pair"}, sipmsg.NewHeader("Retry-After", "5"))
		} else {
			reject(&StatusError{Code: 500, Warning: "media: " + err.Error()})
		}
		return
	}
	tp := strings.ToUpper(req.Transport())
	dua := s.dialogUA(tp)
	dsA, err := dua.ReadInvite(req, tx)
	if err != nil {
		mc.Close("invalid invite")
		reject(&StatusError{Code: 400, Warning: err.Error()})
		return
	}
	now := s.now()
	c := &call{s: s, id: id, log: log, media: mc, done: make(chan struct{}), ready: make(chan struct{}), state: StateRinging, start: now, routedBy: routedBy}
	atag, _ := dsA.InviteRequest.To().Params.Get("tag")
	c.legs[bridge.SideA] = &sigLeg{
		side: bridge.SideA, callID: cid.Value(), transport: tp, dua: dua, uas: dsA, localTag: atag,
		laddr: s.laddr(tp), user: from.Address.User, display: from.DisplayName,
		target: *req.Contact().Address.Clone(), origin: newOrigin(now, 0),
		cseq: remoteCSeq{seq: cseq.SeqNo, have: true},
	}
	if !s.register(c) {
		mc.Close("shutting down")
		reject(&StatusError{Code: 503, Reason: "Service Unavailable", Warning: "bib is shutting down"}, sipmsg.NewHeader("Retry-After", "5"))
		return
	}
	s.bindCallID(cid.Value(), c, bridge.SideA)
	log.Info("call start", "caller", info.Caller, "callee", user, "target", target.String(), "routed_by", routedBy,
		"transport", tp, "source", info.Source, "offer", offer != nil)
	c.setup(req, dsA, target, offer, body)
}

func isSDPType(v string) bool {
	mt, _, _ := strings.Cut(v, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "application/sdp")
}

func newOrigin(now time.Time, salt uint64) Origin {
	return Origin{SessionID: uint64(now.UnixNano()/1000)&0x7fffffffffff + salt, Version: 1}
}

func (s *Server) laddr(tp string) sipmsg.Addr {
	if tp != "UDP" || s.udp == nil {
		return sipmsg.Addr{}
	}
	a := s.addrs["udp"]
	return sipmsg.Addr{IP: a.Addr().AsSlice(), Port: int(a.Port())}
}

// statusOf maps an Authorize error to a response.
func statusOf(err error) *StatusError {
	var se *StatusError
	if errors.As(err, &se) {
		out := *se
		if out.Code < 300 || out.Code > 699 {
			out.Code = 403
		}
		if out.Reason == "" {
			out.Reason = reasonPhrase(out.Code)
		}
		return &out
	}
	return &StatusError{Code: 403, Reason: "Forbidden", Warning: err.Error()}
}

// sdpStatus maps an SDP error to 488 with the RFC 3261 warn-code.
func sdpStatus(err error) *StatusError {
	code, text := 399, err.Error()
	var se *sdpError
	if errors.As(err, &se) {
		code, text = se.warn, se.msg
	}
	return &StatusError{Code: 488, Reason: "Not Acceptable Here", Warning: warningValue("bib", code, text)}
}

// respondA sends a final (or provisional) response on the A leg's INVITE.
func (c *call) respondA(code int, reason, warning string, body []byte, hdrs ...sipmsg.Header) error {
	dsA := c.legs[bridge.SideA].uas
	if reason == "" {
		reason = reasonPhrase(code)
	}
	res := sipmsg.NewResponseFromRequest(dsA.InviteRequest, code, reason, body)
	if w := warningValue(c.s.cfg.UserAgent, 399, warning); w != "" {
		res.AppendHeader(sipmsg.NewHeader("Warning", w))
	}
	if len(body) > 0 {
		res.AppendHeader(sdpHeader())
	}
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	return dsA.WriteResponse(res)
}

// setup places the B leg and completes the initial offer/answer. It runs
// on the INVITE's handler goroutine and ends the call on any failure.
func (c *call) setup(req *sipmsg.Request, dsA *sipgo.DialogServerSession, target sipmsg.Uri, offer *bridge.MediaDesc, bodyA []byte) {
	s := c.s
	_ = dsA.Respond(100, "Trying", nil)

	tp := transportFor(target) // sips: and ;transport=tls go over TLS (tls.go)
	dua := s.duas[tp]
	if dua == nil {
		dua = s.duas["UDP"]
	}
	a := c.legs[bridge.SideA]
	b := &sigLeg{
		side: bridge.SideB, callID: sipmsg.GenerateTagN(24) + "@bib", transport: tp, dua: dua,
		localTag: sipmsg.GenerateTagN(16), laddr: s.laddr(tp), user: target.User,
		target: *target.Clone(), origin: newOrigin(c.start, 1),
	}
	c.mu.Lock()
	c.legs[bridge.SideB] = b
	c.mu.Unlock()
	s.bindCallID(b.callID, c, bridge.SideB)

	var bodyB []byte
	if offer != nil {
		c.media.SetRemote(bridge.SideA, *offer)
		var err error
		if bodyB, err = c.localSDP(bridge.SideB, bodyA); err != nil {
			c.failSetup(sdpStatus(err), "bad offer")
			return
		}
	}
	reqB := sipmsg.NewRequest(sipmsg.INVITE, *target.Clone())
	fromB := &sipmsg.FromHeader{DisplayName: a.display, Address: sipmsg.Uri{Scheme: "sip", User: a.user, Host: s.cfg.Domain}, Params: sipmsg.NewParams()}
	fromB.Params.Add("tag", b.localTag)
	toB := &sipmsg.ToHeader{Address: sipmsg.Uri{Scheme: "sip", User: target.User, Host: target.Host, Port: target.Port}, Params: sipmsg.NewParams()}
	callID := sipmsg.CallIDHeader(b.callID)
	reqB.AppendHeader(fromB)
	reqB.AppendHeader(toB)
	reqB.AppendHeader(&callID)
	reqB.AppendHeader(sipmsg.NewHeader("User-Agent", s.cfg.UserAgent))
	reqB.AppendHeader(sipmsg.NewHeader("Allow", allowed))
	if bodyB != nil {
		reqB.AppendHeader(sdpHeader())
	}
	reqB.SetBody(bodyB)
	reqB.SetTransport(tp)
	reqB.Laddr = b.laddr

	ringCtx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	ringCtx, stopRing := context.WithTimeoutCause(ringCtx, time.Duration(s.cfg.RingTimeout),
		&StatusError{Code: 408, Reason: "Request Timeout", Warning: "callee did not answer within ring_timeout"})
	defer stopRing()
	stopWatch := context.AfterFunc(dsA.Context(), func() { cancel(errCallerCancel) })
	defer stopWatch()
	c.mu.Lock()
	c.ringCancel = cancel
	if c.hungup {
		cancel(c.hangCause())
	}
	c.mu.Unlock()

	dsB, err := dua.WriteInvite(ringCtx, reqB)
	if err != nil {
		c.failSetup(&StatusError{Code: 503, Reason: "Service Unavailable", Warning: "cannot reach callee: " + err.Error()}, "callee unreachable")
		return
	}
	b.uac = dsB
	err = dsB.WaitAnswer(ringCtx, sipgo.AnswerOptions{OnResponse: c.onProvisional})
	stopWatch()
	if err != nil {
		c.setupFailed(ringCtx, err)
		return
	}
	resB := dsB.InviteResponse
	c.mu.Lock()
	if ct := resB.Contact(); ct != nil {
		b.target = *ct.Address.Clone()
	}
	if to := resB.To(); to != nil {
		b.display = to.DisplayName
	}
	c.mu.Unlock()
	bodyRes := resB.Body()
	ackCtx, ackCancel := context.WithTimeout(context.Background(), byeTimeout)
	defer ackCancel()
	cseqA := dsA.InviteRequest.CSeq().SeqNo

	if offer != nil {
		// Early offer: B's 200 carries the answer.
		ans, err := ParseMedia(bodyRes)
		if err == nil {
			err = srtpMismatch(*offer, ans)
		}
		if err != nil {
			_ = dsB.Ack(ackCtx)
			c.sendBye(ackCtx, b, `SIP;cause=488;text="unusable SDP answer"`)
			c.failSetup(sdpStatus(err), "callee answered with unusable sdp")
			return
		}
		c.applyOA(bridge.SideA, *offer, ans)
		sdpA, err := c.localSDP(bridge.SideA, bodyRes)
		if err != nil {
			_ = dsB.Ack(ackCtx)
			c.sendBye(ackCtx, b, "")
			c.failSetup(sdpStatus(err), "rewrite answer")
			return
		}
		if err := dsB.Ack(ackCtx); err != nil {
			c.log.Warn("ack to b failed", "err", err)
		}
		ackCh := c.expectAck(bridge.SideA, cseqA)
		if err := c.respondA(200, "OK", "", sdpA); err != nil {
			c.log.Warn("200 to a failed", "err", err)
		}
		c.dropAck(bridge.SideA, cseqA)
		_ = ackCh
	} else {
		// Delayed offer: B offers in its 200, A answers in the ACK, which
		// bib forwards in its ACK to B (RFC 3261 section 13.2.1).
		off, err := ParseMedia(bodyRes)
		if err != nil {
			_ = dsB.Ack(ackCtx)
			c.sendBye(ackCtx, b, `SIP;cause=488;text="unusable SDP offer"`)
			c.failSetup(sdpStatus(err), "callee offered unusable sdp")
			return
		}
		c.media.SetRemote(bridge.SideB, off)
		sdpA, err := c.localSDP(bridge.SideA, bodyRes)
		if err != nil {
			_ = dsB.Ack(ackCtx)
			c.sendBye(ackCtx, b, "")
			c.failSetup(sdpStatus(err), "rewrite offer")
			return
		}
		ackCh := c.expectAck(bridge.SideA, cseqA)
		if err := c.respondA(200, "OK", "", sdpA); err != nil {
			c.log.Warn("200 to a failed", "err", err)
		}
		var ackBody []byte
		select {
		case ackBody = <-ackCh:
		default:
		}
		c.dropAck(bridge.SideA, cseqA)
		ans, perr := ParseMedia(ackBody)
		if perr == nil {
			perr = srtpMismatch(off, ans)
		}
		var sdpB []byte
		if perr == nil {
			sdpB, perr = c.localSDP(bridge.SideB, ackBody)
		}
		ack := sipmsg.NewRequest(sipmsg.ACK, b.targetClone(c))
		ack.Laddr = b.laddr
		if perr == nil {
			ack.SetBody(sdpB)
			ack.AppendHeader(sdpHeader())
		}
		if err := dsB.WriteAck(ackCtx, ack); err != nil {
			c.log.Warn("ack to b failed", "err", err)
		}
		if perr != nil {
			c.log.Warn("caller's ACK carried no usable answer", "err", perr)
			c.markSetupDone()
			c.hangup(-1, "no sdp answer in ack", `SIP;cause=488;text="no usable SDP answer in ACK"`)
			return
		}
		c.applyOA(bridge.SideB, off, ans)
	}
	c.media.Negotiated()
	c.media.Answer()
	c.mu.Lock()
	c.answer = s.now()
	c.mu.Unlock()
	c.setState(StateAnswered)
	if c.media.Held() {
		c.setState(StateHeld)
	}
	if hung := c.markSetupDone(); hung {
		c.byeAndFinish(-1)
		return
	}
	c.log.Debug("call answered")
	if s.OnAnswered != nil {
		s.OnAnswered(c.snapshot(), c.media)
	}
}

// do sends an in-dialog request on the leg and waits for its final response.
func (l *sigLeg) do(ctx context.Context, req *sipmsg.Request) (*sipmsg.Response, error) {
	if l.uas != nil {
		return l.uas.Do(ctx, req)
	}
	return l.uac.Do(ctx, req)
}

// beginChange claims the call for one offer/answer or transfer, started
// by leg from (a current leg of an answered call); false if the call is
// not in that state or another change is in progress (491).
func (c *call) beginChange(from *sigLeg) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.setupDone || c.hungup || c.finished || c.legs[from.side] != from || c.oaBusy {
		return false
	}
	c.oaBusy = true
	return true
}

// remoteCSeq is the highest CSeq received in a dialog (RFC 3261 section
// 12.2.2: a lower or equal one is out of order).
type remoteCSeq struct {
	seq  uint32
	have bool
}

// accept records seq and reports whether it was in order. The dialog's
// lock is held.
func (r *remoteCSeq) accept(seq uint32) bool {
	if r.have && seq <= r.seq {
		return false
	}
	r.seq, r.have = seq, true
	return true
}

func (l *sigLeg) targetClone(c *call) sipmsg.Uri {
	c.mu.Lock()
	defer c.mu.Unlock()
	return *l.target.Clone()
}

// markSetupDone records that the initial exchange finished and reports
// whether a hangup was requested meanwhile.
func (c *call) markSetupDone() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.setupDone {
		c.setupDone = true
		close(c.ready)
	}
	return c.hungup
}

// onProvisional forwards B's 18x to A; a 183 with SDP (to an early offer)
// anchors early media: B's SDP is rewritten and the B leg's remote set.
func (c *call) onProvisional(res *sipmsg.Response) error {
	if !res.IsProvisional() || res.StatusCode == 100 {
		return nil
	}
	body := res.Body()
	if len(body) > 0 && c.media.Leg(bridge.SideA).Desc().RTP.IsValid() {
		if d, err := ParseMedia(body); err == nil {
			if sdpA, err := c.localSDP(bridge.SideA, body); err == nil {
				c.media.SetRemote(bridge.SideB, d)
				c.setState(StateEarly)
				_ = c.respondA(res.StatusCode, res.Reason, "", sdpA)
				return nil
			}
		} else {
			c.log.Debug("ignoring unusable early media sdp", "err", err)
		}
	}
	_ = c.respondA(res.StatusCode, res.Reason, "", nil)
	return nil
}

// hangCause is the response A gets when the call is ended while ringing.
func (c *call) hangCause() error {
	if c.hangReason == "shutdown" {
		return &StatusError{Code: 503, Reason: "Service Unavailable", Warning: "bib is shutting down"}
	}
	return &StatusError{Code: 480, Reason: "Temporarily Unavailable", Warning: "call ended: " + c.hangReason}
}

// setupFailed maps the end of an unanswered B leg to A's final response.
func (c *call) setupFailed(ringCtx context.Context, err error) {
	cause := context.Cause(ringCtx)
	var dr *sipgo.ErrDialogResponse
	var se *StatusError
	switch {
	case errors.Is(cause, errCallerCancel):
		// The transaction layer already answered 487; WaitAnswer sent CANCEL to B.
		c.finish("cancelled by a")
	case errors.As(err, &dr):
		res := dr.Res
		var hdrs []sipmsg.Header
		for _, name := range []string{"Warning", "Reason", "Retry-After"} {
			for _, h := range res.GetHeaders(name) {
				hdrs = append(hdrs, sipmsg.NewHeader(name, h.Value()))
			}
		}
		warn := ""
		if len(res.GetHeaders("Warning")) == 0 {
			warn = "callee answered " + res.StartLine()
		}
		code := res.StatusCode
		if code < 300 || code > 699 {
			code = 500
		}
		_ = c.respondA(code, res.Reason, warn, nil, hdrs...)
		c.finish("callee answered " + res.StartLine())
	case errors.As(cause, &se):
		_ = c.respondA(se.Code, se.Reason, se.Warning, nil)
		c.finish(strings.ToLower(se.Reason))
	case errors.Is(err, sipmsg.ErrTransactionTimeout):
		_ = c.respondA(408, "Request Timeout", "callee did not respond", nil)
		c.finish("callee did not respond")
	default:
		_ = c.respondA(503, "Service Unavailable", "cannot reach callee: "+err.Error(), nil)
		c.finish("callee unreachable")
	}
}

func (c *call) failSetup(se *StatusError, reason string) {
	c.s.rejected.Add(1)
	_ = c.respondA(se.Code, se.Reason, se.Warning, nil)
	c.finish(reason)
}

// hangup ends the call. by is the side whose party already ended it (it
// sent BYE), or -1. While the call is being set up the INVITE goroutine
// does the ending; otherwise BYE goes to every leg still up.
func (c *call) hangup(by int, reason, reasonHdr string) {
	c.mu.Lock()
	if c.hungup || c.finished {
		c.mu.Unlock()
		return
	}
	c.hungup, c.hangReason, c.hangHdr = true, reason, reasonHdr
	done := c.setupDone
	cancel := c.ringCancel
	cause := c.hangCause()
	c.mu.Unlock()
	c.log.Debug("hangup", "reason", reason, "by", by)
	if !done {
		if cancel != nil {
			cancel(cause)
		}
		return
	}
	c.byeAndFinish(by)
}

func (c *call) byeAndFinish(by int) {
	c.mu.Lock()
	hdr, reason := c.hangHdr, c.hangReason
	legs := c.legs
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), byeTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, l := range legs {
		if l == nil || int(l.side) == by {
			continue
		}
		wg.Go(func() { c.sendBye(ctx, l, hdr) })
	}
	wg.Wait()
	c.finish(reason)
}

// sendBye ends one leg's dialog (RFC 3261 section 15.1.1).
func (c *call) sendBye(ctx context.Context, l *sigLeg, reasonHdr string) {
	c.mu.Lock()
	if l.ended {
		c.mu.Unlock()
		return
	}
	l.ended = true
	target := *l.target.Clone()
	c.mu.Unlock()
	bye := sipmsg.NewRequest(sipmsg.BYE, target)
	bye.Laddr = l.laddr
	if reasonHdr != "" {
		bye.AppendHeader(sipmsg.NewHeader("Reason", reasonHdr))
	}
	var err error
	switch {
	case l.uas != nil:
		err = l.uas.WriteBye(ctx, bye)
	case l.uac != nil:
		err = l.uac.WriteBye(ctx, bye)
	}
	if err != nil {
		c.log.Debug("bye failed", "leg", l.side.String(), "err", err)
	}
}

// abort ends the call's media without signalling (server Close).
func (c *call) abort(reason string) {
	c.mu.Lock()
	cancel := c.ringCancel
	c.mu.Unlock()
	if cancel != nil {
		cancel(&StatusError{Code: 503, Reason: "Service Unavailable", Warning: "bib stopped"})
	}
	c.finish(reason)
}

// finish frees the media, forgets the call and reports it. Idempotent.
func (c *call) finish(reason string) {
	c.mu.Lock()
	if c.finished {
		c.mu.Unlock()
		return
	}
	c.finished = true
	c.state = StateEnded
	c.end = c.s.now()
	c.endReason = reason
	c.mu.Unlock()
	c.media.Close(reason)
	ci := c.snapshot()
	var dur time.Duration
	if ci.Answer != nil {
		dur = ci.End.Sub(*ci.Answer)
	}
	a, b := ci.Media.Legs[0], ci.Media.Legs[1]
	c.log.Info("call end", "reason", reason, "caller", ci.Caller, "callee", ci.Callee,
		"answered", ci.Answer != nil, "talk", dur.Round(time.Millisecond),
		"a_packets_in", a.PacketsIn, "b_packets_in", b.PacketsIn,
		"dropped_source", a.DroppedSource+b.DroppedSource, "malformed", a.Malformed+b.Malformed,
		"oversize", a.Oversize+b.Oversize)
	if c.s.OnEnded != nil {
		c.s.OnEnded(ci)
	}
	close(c.done)
	c.s.unregister(c)
}

// handleOffer forwards a re-INVITE or UPDATE from one party to the other
// (RFC 3261 section 14, RFC 3311), rewriting SDP both ways. An SDP-less
// re-INVITE is forwarded SDP-less: the other party's offer comes back in
// its 2xx and the answer travels in the ACKs.
func (c *call) handleOffer(req *sipmsg.Request, tx sipmsg.ServerTransaction, from *sigLeg) {
	s := c.s
	// A party may send a re-INVITE right after its ACK, before bib has
	// processed that ACK: give the initial exchange a moment to complete.
	select {
	case <-c.ready:
	case <-c.done:
	case <-time.After(2 * time.Second):
	}
	if !c.beginChange(from) {
		// RFC 3261 section 14.2: an offer while another is pending gets 491.
		s.respond(tx, req, 491, "", "another offer/answer is in progress", sipmsg.NewHeader("Retry-After", "1"))
		return
	}
	defer func() {
		c.mu.Lock()
		c.oaBusy = false
		c.mu.Unlock()
	}()
	if ct := req.Contact(); ct != nil {
		c.mu.Lock()
		from.target = *ct.Address.Clone()
		c.mu.Unlock()
	}
	to := c.legs[from.side.Other()]
	isInvite := req.IsInvite()
	body := req.Body()
	var offer *bridge.MediaDesc
	if len(body) > 0 {
		d, err := ParseMedia(body)
		if err != nil {
			se := sdpStatus(err)
			s.respond(tx, req, se.Code, se.Reason, se.Warning)
			return
		}
		offer = &d
	}
	out := sipmsg.NewRequest(req.Method, to.targetClone(c))
	out.Laddr = to.laddr
	for _, name := range []string{"P-Asserted-Identity", "Remote-Party-ID"} {
		if h := req.GetHeader(name); h != nil {
			out.AppendHeader(sipmsg.NewHeader(name, h.Value())) // who the other party now talks to
		}
	}
	if offer != nil {
		sdpTo, err := c.localSDP(to.side, body)
		if err != nil {
			se := sdpStatus(err)
			s.respond(tx, req, se.Code, se.Reason, se.Warning)
			return
		}
		out.AppendHeader(sdpHeader())
		out.SetBody(sdpTo)
	}
	ctx, cancel := context.WithTimeout(context.Background(), inDialogTimeout)
	defer cancel()
	res, err := to.do(ctx, out)
	if err != nil {
		s.respond(tx, req, 408, "", "other party did not answer the "+req.Method.String())
		return
	}
	if !res.IsSuccess() {
		var hdrs []sipmsg.Header
		for _, name := range []string{"Warning", "Retry-After", "Reason"} {
			for _, h := range res.GetHeaders(name) {
				hdrs = append(hdrs, sipmsg.NewHeader(name, h.Value()))
			}
		}
		s.respond(tx, req, res.StatusCode, res.Reason, "", hdrs...)
		return
	}
	if ct := res.Contact(); ct != nil && isInvite {
		c.mu.Lock()
		to.target = *ct.Address.Clone()
		c.mu.Unlock()
	}
	resBody := res.Body()
	switch {
	case offer != nil:
		if isInvite {
			c.sendAck(to, nil)
		}
		ans, err := ParseMedia(resBody)
		if err == nil {
			err = srtpMismatch(*offer, ans)
		}
		var sdpFrom []byte
		if err == nil {
			sdpFrom, err = c.localSDP(from.side, resBody)
		}
		if err != nil {
			c.log.Warn("other party answered an offer with unusable sdp", "err", err)
			se := sdpStatus(err)
			s.respond(tx, req, se.Code, se.Reason, se.Warning)
			return
		}
		c.applyOA(from.side, *offer, ans)
		c.answerOffer(req, tx, from, sdpFrom, isInvite)
	case isInvite:
		off, err := ParseMedia(resBody)
		var sdpFrom []byte
		if err == nil {
			sdpFrom, err = c.localSDP(from.side, resBody)
		}
		if err != nil {
			c.sendAck(to, nil)
			se := sdpStatus(err)
			s.respond(tx, req, se.Code, se.Reason, se.Warning)
			return
		}
		c.media.SetRemote(to.side, off)
		ackBody := c.answerOffer(req, tx, from, sdpFrom, true)
		ans, err := ParseMedia(ackBody)
		var sdpTo []byte
		if err == nil {
			sdpTo, err = c.localSDP(to.side, ackBody)
		}
		if err != nil {
			c.log.Warn("no usable sdp answer in ack to sdp-less re-invite", "err", err)
			c.sendAck(to, nil)
			return
		}
		c.sendAck(to, sdpTo)
		c.applyOA(to.side, off, ans)
	default:
		// UPDATE without SDP (a session refresh or a new identity):
		// nothing to negotiate.
		c.answerOffer(req, tx, from, nil, false)
		c.identityChange(req, from)
		return
	}
	c.media.Negotiated()
	if c.media.Held() {
		c.setState(StateHeld)
	} else {
		c.setState(StateAnswered)
	}
	c.identityChange(req, from)
}

// identityChange reports a party that asserts a new identity in a
// re-INVITE or UPDATE (P-Asserted-Identity, e.g. after a transfer in
// another system): the leg takes the new name, and OnIdentity hears of it.
func (c *call) identityChange(req *sipmsg.Request, from *sigLeg) {
	p, ok := assertedParty(req)
	if !ok {
		return
	}
	c.mu.Lock()
	old := Party{User: from.user, Display: from.display}
	changed := p.User != from.user || (p.Display != "" && p.Display != from.display)
	if changed {
		from.user = p.User
		if p.Display != "" || p.User != old.User {
			from.display = p.Display
		}
	}
	c.mu.Unlock()
	if !changed {
		return
	}
	c.log.Info("party identity changed", "side", from.side.String(), "from", old.User, "to", p.User)
	if c.s.OnIdentity != nil {
		c.s.OnIdentity(c.snapshot(), IdentityInfo{Side: from.side, Old: old, New: p})
	}
}

// answerOffer sends 200 to an in-dialog INVITE/UPDATE; for INVITE it
// retransmits the 2xx over UDP until the ACK arrives (RFC 3261 section
// 13.3.1.4) and returns the ACK's body.
func (c *call) answerOffer(req *sipmsg.Request, tx sipmsg.ServerTransaction, from *sigLeg, body []byte, isInvite bool) []byte {
	res := sipmsg.NewResponseFromRequest(req, 200, "OK", body)
	ct := from.dua.ContactHDR
	res.AppendHeader(&sipmsg.ContactHeader{Address: *ct.Address.Clone()})
	if len(body) > 0 {
		res.AppendHeader(sdpHeader())
	}
	res.AppendHeader(sipmsg.NewHeader("Server", c.s.cfg.UserAgent))
	if !isInvite {
		_ = tx.Respond(res)
		return nil
	}
	cseq := req.CSeq().SeqNo
	ackCh := c.expectAck(from.side, cseq)
	defer c.dropAck(from.side, cseq)
	if err := tx.Respond(res); err != nil {
		c.log.Debug("respond to re-invite failed", "err", err)
	}
	b, ok := c.s.awaitAck(ackCh, res, from.transport, c.done)
	if !ok {
		c.log.Warn("no ACK for 2xx to re-INVITE", "leg", from.side.String())
	}
	return b
}

// awaitAck waits for the ACK of a 2xx bib sent to an INVITE, retransmitting
// the 2xx over UDP from T1 doubling up to T2, for 64*T1 at most (RFC 3261
// section 13.3.1.4). It returns the ACK's body; ok is false when no ACK
// came in time (done closing is not a timeout).
func (s *Server) awaitAck(ackCh <-chan []byte, res *sipmsg.Response, transport string, done <-chan struct{}) (body []byte, ok bool) {
	interval := sipmsg.T1
	retrans := time.NewTimer(interval)
	defer retrans.Stop()
	deadline := time.NewTimer(64 * sipmsg.T1)
	defer deadline.Stop()
	for {
		select {
		case b := <-ackCh:
			return b, true
		case <-retrans.C:
			if transport == "UDP" {
				_ = s.srv.WriteResponse(res)
			}
			interval = min(2*interval, sipmsg.T2)
			retrans.Reset(interval)
		case <-deadline.C:
			return nil, false
		case <-done:
			return nil, true
		}
	}
}

// sendAck acknowledges a 2xx to a re-INVITE bib sent on leg l.
func (c *call) sendAck(l *sigLeg, body []byte) {
	ack := sipmsg.NewRequest(sipmsg.ACK, l.targetClone(c))
	ack.Laddr = l.laddr
	if len(body) > 0 {
		ack.AppendHeader(sdpHeader())
		ack.SetBody(body)
	}
	var err error
	if l.uas != nil {
		err = l.uas.WriteRequest(ack)
	} else {
		err = l.uac.WriteRequest(ack)
	}
	if err != nil {
		c.log.Warn("ack failed", "leg", l.side.String(), "err", err)
	}
}

// dialogUA returns the dialog user agent for a transport (its Contact names
// that transport), UDP's when bib does not listen on it.
func (s *Server) dialogUA(transport string) *sipgo.DialogUA {
	if d := s.duas[strings.ToUpper(transport)]; d != nil {
		return d
	}
	return s.duas["UDP"]
}
