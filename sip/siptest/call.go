package siptest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/emiago/sipgo"
	sipmsg "github.com/emiago/sipgo/sip"
)

// Call is one dialog of a Party, placed (UAC) or received (UAS).
type Call struct {
	p      *Party
	CallID string
	// Invite is the INVITE received (UAS) or sent (UAC).
	Invite *sipmsg.Request

	uac *sipgo.DialogClientSession
	uas *sipgo.DialogServerSession
	tx  sipmsg.ServerTransaction

	final     chan struct{} // UAS: a final response was sent
	finalOnce sync.Once
	cancelled chan struct{} // UAS: the caller cancelled before the answer
	ended     chan struct{}
	endOnce   sync.Once
	acks      chan *sipmsg.Request

	mu          sync.Mutex
	remote      Media
	haveRemote  bool
	mode        string
	byeReq      *sipmsg.Request
	provisional []*sipmsg.Response
	inDialog    []InDialog
	notifies    []*sipmsg.Request
}

// InDialog records a re-INVITE or UPDATE the party received and answered.
type InDialog struct {
	Req     *sipmsg.Request
	Offer   []byte // the SDP offer received (nil for SDP-less)
	Answer  []byte // the SDP the party sent in its 200
	AckBody []byte // for SDP-less re-INVITE: the answer that came in the ACK
}

func newCall(p *Party, callID string) *Call {
	return &Call{
		p: p, CallID: callID, mode: "sendrecv",
		final: make(chan struct{}), cancelled: make(chan struct{}),
		ended: make(chan struct{}), acks: make(chan *sipmsg.Request, 4),
	}
}

func (c *Call) setRemote(m Media) {
	c.mu.Lock()
	c.remote, c.haveRemote = m, true
	c.mu.Unlock()
}

// Remote is where this party sends RTP (bib's leg), from the last SDP it
// received.
func (c *Call) Remote() Media {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.remote
}

// SendRTP sends one datagram to Remote().RTP.
func (c *Call) SendRTP(b []byte) error {
	m := c.Remote()
	if !m.RTP.IsValid() {
		return errors.New("no remote media yet")
	}
	return c.p.SendRTP(m.RTP, b)
}

// Ended is closed when the dialog ended (BYE sent or received).
func (c *Call) Ended() <-chan struct{} { return c.ended }

// Cancelled is closed when the caller cancelled an unanswered INVITE.
func (c *Call) Cancelled() <-chan struct{} { return c.cancelled }

// ByeRequest returns the BYE the party received, if any.
func (c *Call) ByeRequest() *sipmsg.Request {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byeReq
}

// Provisional returns the 1xx responses a placed call received.
func (c *Call) Provisional() []*sipmsg.Response {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.provisional)
}

// InDialogRequests returns the re-INVITEs and UPDATEs received so far.
func (c *Call) InDialogRequests() []InDialog {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.inDialog)
}

// Response returns the last response to the INVITE (UAC).
func (c *Call) Response() *sipmsg.Response {
	if c.uac == nil {
		return nil
	}
	return c.uac.InviteResponse
}

func (c *Call) end() { c.endOnce.Do(func() { close(c.ended) }) }

// Invite places a call to target with an SDP offer (nil for delayed
// offer, then the party answers in the ACK with sendrecv). It returns when
// the INVITE got a final response: on 2xx the ACK has been sent; on
// failure the error is a *sipgo.ErrDialogResponse. Cancelling ctx before
// the answer sends CANCEL.
func (p *Party) Invite(ctx context.Context, target sipmsg.Uri, offer []byte, hdrs ...sipmsg.Header) (*Call, error) {
	req := sipmsg.NewRequest(sipmsg.INVITE, target)
	from := &sipmsg.FromHeader{DisplayName: p.User + " name", Address: sipmsg.Uri{Scheme: "sip", User: p.User, Host: "127.0.0.1"}, Params: sipmsg.NewParams()}
	from.Params.Add("tag", sipmsg.GenerateTagN(10))
	req.AppendHeader(from)
	req.AppendHeader(&sipmsg.ToHeader{Address: sipmsg.Uri{Scheme: "sip", User: target.User, Host: target.Host, Port: target.Port}, Params: sipmsg.NewParams()})
	callID := sipmsg.CallIDHeader(sipmsg.GenerateTagN(20))
	req.AppendHeader(&callID)
	for _, h := range hdrs {
		req.AppendHeader(h)
	}
	if offer != nil {
		req.AppendHeader(sipmsg.NewHeader("Content-Type", "application/sdp"))
		req.SetBody(offer)
	}
	c := newCall(p, string(callID))
	c.Invite = req
	p.track(c)
	ds, err := p.dua.WriteInvite(ctx, req)
	if err != nil {
		return c, err
	}
	c.uac = ds
	err = ds.WaitAnswer(ctx, sipgo.AnswerOptions{Username: p.AuthUser, Password: p.AuthPassword, OnResponse: func(res *sipmsg.Response) error {
		if res.IsProvisional() {
			c.mu.Lock()
			c.provisional = append(c.provisional, res)
			c.mu.Unlock()
			if len(res.Body()) > 0 {
				if m, err := ParseSDP(res.Body()); err == nil {
					c.setRemote(m)
				}
			}
		}
		return nil
	}})
	if err != nil {
		return c, err
	}
	body := ds.InviteResponse.Body()
	m, perr := ParseSDP(body)
	if perr == nil {
		c.setRemote(m)
	}
	if offer != nil {
		return c, ds.Ack(ctx)
	}
	// Delayed offer: the 200 carried the offer; answer in the ACK.
	if perr != nil {
		_ = ds.Ack(ctx)
		return c, fmt.Errorf("delayed offer: 200 has no usable sdp: %w", perr)
	}
	ack := sipmsg.NewRequest(sipmsg.ACK, ds.InviteResponse.Contact().Address)
	ack.AppendHeader(sipmsg.NewHeader("Content-Type", "application/sdp"))
	ack.SetBody(p.SDP(SDPOptions{Mode: mirror(m.Mode)}))
	return c, ds.WriteAck(ctx, ack)
}

// Respond sends a provisional or failure response to a received INVITE.
func (c *Call) Respond(code int, reason string, body []byte) error {
	var hdrs []sipmsg.Header
	if len(body) > 0 {
		hdrs = append(hdrs, sipmsg.NewHeader("Content-Type", "application/sdp"))
	}
	if code >= 200 {
		defer c.finalOnce.Do(func() { close(c.final) })
	}
	return c.uas.Respond(code, reason, body, hdrs...)
}

// Answer sends 200 with body (an offer if the INVITE had none, then the
// answer arrives in the ACK) and waits for the ACK.
func (c *Call) Answer(body []byte) error {
	defer c.finalOnce.Do(func() { close(c.final) })
	if err := c.uas.RespondSDP(body); err != nil {
		return err
	}
	if len(c.Invite.Body()) == 0 {
		select {
		case ack := <-c.acks:
			if m, err := ParseSDP(ack.Body()); err == nil {
				c.setRemote(m)
			}
		default:
		}
	}
	return nil
}

func (c *Call) target() sipmsg.Uri {
	if c.uac != nil {
		if ct := c.uac.InviteResponse.Contact(); ct != nil {
			return *ct.Address.Clone()
		}
		return c.Invite.Recipient
	}
	return *c.Invite.Contact().Address.Clone()
}

func (c *Call) do(ctx context.Context, req *sipmsg.Request) (*sipmsg.Response, error) {
	if c.uac != nil {
		return c.uac.Do(ctx, req)
	}
	return c.uas.Do(ctx, req)
}

func (c *Call) write(req *sipmsg.Request) error {
	if c.uac != nil {
		return c.uac.WriteRequest(req)
	}
	return c.uas.WriteRequest(req)
}

// Refer asks bib to transfer the call's other party to target (RFC 3515
// blind transfer) and returns the response (202 when accepted).
func (c *Call) Refer(ctx context.Context, referTo string) (*sipmsg.Response, error) {
	req := sipmsg.NewRequest(sipmsg.REFER, c.target())
	req.AppendHeader(sipmsg.NewHeader("Refer-To", referTo))
	req.AppendHeader(sipmsg.NewHeader("Referred-By", "<sip:"+c.p.User+"@"+c.p.SIPAddr.String()+">"))
	return c.do(ctx, req)
}

// Notifies returns the NOTIFY requests received in the call's dialog.
func (c *Call) Notifies() []*sipmsg.Request {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*sipmsg.Request(nil), c.notifies...)
}

// ReInviteWith is ReInvite with extra headers (e.g. P-Asserted-Identity).
func (c *Call) ReInviteWith(ctx context.Context, offer []byte, hdrs ...sipmsg.Header) (*sipmsg.Response, error) {
	return c.offer(ctx, sipmsg.INVITE, offer, hdrs...)
}

// UpdateWith sends an UPDATE (offer may be nil) with extra headers.
func (c *Call) UpdateWith(ctx context.Context, offer []byte, hdrs ...sipmsg.Header) (*sipmsg.Response, error) {
	return c.offer(ctx, sipmsg.UPDATE, offer, hdrs...)
}

// ReInvite sends a re-INVITE with offer (nil for SDP-less: the 200 then
// carries bib's offer and the party answers in the ACK, mirroring its
// direction). It returns the final response; on 2xx the ACK was sent.
func (c *Call) ReInvite(ctx context.Context, offer []byte) (*sipmsg.Response, error) {
	return c.offer(ctx, sipmsg.INVITE, offer)
}

// Update sends an UPDATE with an SDP offer (RFC 3311).
func (c *Call) Update(ctx context.Context, offer []byte) (*sipmsg.Response, error) {
	return c.offer(ctx, sipmsg.UPDATE, offer)
}

func (c *Call) offer(ctx context.Context, method sipmsg.RequestMethod, offer []byte, hdrs ...sipmsg.Header) (*sipmsg.Response, error) {
	req := sipmsg.NewRequest(method, c.target())
	for _, h := range hdrs {
		req.AppendHeader(h)
	}
	if offer != nil {
		req.AppendHeader(sipmsg.NewHeader("Content-Type", "application/sdp"))
		req.SetBody(offer)
	}
	res, err := c.do(ctx, req)
	if err != nil {
		return nil, err
	}
	if !res.IsSuccess() {
		return res, nil
	}
	m, perr := ParseSDP(res.Body())
	if perr == nil {
		c.setRemote(m)
	}
	if method != sipmsg.INVITE {
		return res, nil
	}
	ack := sipmsg.NewRequest(sipmsg.ACK, c.target())
	if offer == nil && perr == nil {
		ack.AppendHeader(sipmsg.NewHeader("Content-Type", "application/sdp"))
		ack.SetBody(c.p.SDP(SDPOptions{Mode: mirror(m.Mode)}))
	}
	return res, c.write(ack)
}

// Bye ends the call from this party.
func (c *Call) Bye(ctx context.Context) error {
	defer c.end()
	req := sipmsg.NewRequest(sipmsg.BYE, c.target())
	res, err := c.do(ctx, req)
	if err != nil {
		return err
	}
	if res.StatusCode != 200 {
		return fmt.Errorf("bye: %s", res.StartLine())
	}
	return nil
}

// answerInDialog answers a received re-INVITE/UPDATE: with an offer, 200
// with the party's SDP mirroring the offered direction; without, 200 with
// a sendrecv offer and the answer expected in the ACK.
func (c *Call) answerInDialog(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
	rec := InDialog{Req: req, Offer: req.Body()}
	var answer []byte
	if len(rec.Offer) > 0 {
		m, err := ParseSDP(rec.Offer)
		if err != nil {
			_ = tx.Respond(sipmsg.NewResponseFromRequest(req, 488, "Not Acceptable Here", nil))
			return
		}
		c.setRemote(m)
		o := c.p.Answers
		o.Mode = mirror(m.Mode)
		answer = c.p.SDP(o)
	} else if req.IsInvite() {
		answer = c.p.SDP(SDPOptions{})
	}
	rec.Answer = answer
	res := sipmsg.NewResponseFromRequest(req, 200, "OK", answer)
	res.AppendHeader(&sipmsg.ContactHeader{Address: c.p.URI()})
	if answer != nil {
		res.AppendHeader(sipmsg.NewHeader("Content-Type", "application/sdp"))
	}
	// Drain stale ACKs before answering.
	for len(c.acks) > 0 {
		<-c.acks
	}
	_ = tx.Respond(res)
	if req.IsInvite() && len(rec.Offer) == 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*sipmsg.T1*8)
		defer cancel()
	wait:
		for {
			select {
			case ack := <-c.acks:
				if ack.CSeq().SeqNo != req.CSeq().SeqNo {
					continue
				}
				rec.AckBody = ack.Body()
				if m, err := ParseSDP(ack.Body()); err == nil {
					c.setRemote(m)
				}
				break wait
			case <-ctx.Done():
				break wait
			}
		}
	}
	c.mu.Lock()
	c.inDialog = append(c.inDialog, rec)
	c.mu.Unlock()
}

// RemoteRTP is a shortcut for Remote().RTP.
func (c *Call) RemoteRTP() netip.AddrPort { return c.Remote().RTP }
