package sip

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/bib-project/bib/bridge"
	"github.com/emiago/sipgo"
	sipmsg "github.com/emiago/sipgo/sip"
	"github.com/pion/sdp/v3"
)

// Transfers and identity changes.
//
// Blind transfer (RFC 3515 REFER, RFC 5589 call flow): a party in an
// answered call sends REFER with Refer-To naming a new party. bib answers
// 202, reports progress to the transferor with NOTIFY (message/sipfrag),
// calls the new party on the transferor's side of the call (same bib media
// ports, the remaining party's codecs), and when it answers: connects it,
// sends NOTIFY 200 and BYE to the transferor, and re-INVITEs the remaining
// party (taking it off the hold the transferor usually put it on, with
// P-Asserted-Identity naming its new peer). If the new party does not
// answer, the NOTIFY carries the failure and the call stays as it was.
// Attended transfer (Refer-To with Replaces) is refused with 501.
//
// Identity change: a re-INVITE or UPDATE whose P-Asserted-Identity names
// someone else than before (a far end transferred in another system) is
// relayed as usual and reported with OnIdentity.

// Party is one end of a call as signalling names it.
type Party struct {
	User    string `json:"user"`
	Display string `json:"display,omitempty"`
}

// TransferInfo describes a completed transfer.
type TransferInfo struct {
	// Side is the call side whose party was replaced (the transferor's).
	Side       bridge.Side `json:"side"`
	Transferor Party       `json:"transferor"`
	Target     Party       `json:"target"`
	RoutedBy   string      `json:"routed_by"`
}

// IdentityInfo describes a party's new asserted identity.
type IdentityInfo struct {
	Side bridge.Side
	Old  Party
	New  Party
}

// transferTimeout bounds the NOTIFY and re-INVITE transactions of a transfer.
const transferTimeout = 8 * time.Second

func (s *Server) onRefer(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
	c, l, ok := s.inDialog(req, tx)
	if !ok {
		return
	}
	h := req.GetHeader("Refer-To")
	if h == nil {
		s.respond(tx, req, 400, "", "REFER needs a Refer-To header")
		return
	}
	var to sipmsg.Uri
	v := strings.TrimSpace(h.Value())
	if i, j := strings.IndexByte(v, '<'), strings.LastIndexByte(v, '>'); i >= 0 && j > i {
		v = v[i+1 : j]
	}
	if err := sipmsg.ParseUri(v, &to); err != nil || to.User == "" {
		s.respond(tx, req, 400, "", "Refer-To is not a SIP URI with a user part")
		return
	}
	if to.Headers != nil && to.Headers.Has("Replaces") || strings.Contains(strings.ToLower(h.Value()), "replaces=") {
		s.respond(tx, req, 501, "", "attended transfer (Refer-To with Replaces) is not supported; use a blind transfer")
		return
	}
	if !c.beginChange(l) {
		s.respond(tx, req, 491, "", "the call is changing; try the transfer again", sipmsg.NewHeader("Retry-After", "1"))
		return
	}
	target, routedBy, err := s.route(to.User)
	if err != nil {
		c.mu.Lock()
		c.oaBusy = false
		c.mu.Unlock()
		code := 500
		if errors.Is(err, ErrNoRoute) {
			code = 404
		}
		s.respond(tx, req, code, "", "transfer target: "+err.Error())
		return
	}
	c.mu.Lock()
	c.transferor = l
	c.mu.Unlock()
	s.respond(tx, req, 202, "Accepted", "")
	go c.transfer(l, target, routedBy)
}

// transferorLeft reports whether the transferor hung up while its blind
// transfer was under way (RFC 5589 section 6.1 lets it leave as soon as
// the REFER is accepted).
func (c *call) transferorLeft(old *sigLeg) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return old.ended
}

// notify sends a refer-event NOTIFY with a sipfrag of status on leg l
// (not once the transferor has hung up).
func (c *call) notify(l *sigLeg, code int, reason string, final bool) {
	if c.transferorLeft(l) {
		return
	}
	req := sipmsg.NewRequest(sipmsg.NOTIFY, l.targetClone(c))
	req.Laddr = l.laddr
	req.AppendHeader(sipmsg.NewHeader("Event", "refer"))
	state := "active;expires=60"
	if final {
		state = "terminated;reason=noresource"
	}
	req.AppendHeader(sipmsg.NewHeader("Subscription-State", state))
	req.AppendHeader(sipmsg.NewHeader("Content-Type", "message/sipfrag;version=2.0"))
	req.SetBody([]byte(fmt.Sprintf("SIP/2.0 %d %s\r\n", code, reason)))
	ctx, cancel := context.WithTimeout(context.Background(), transferTimeout)
	defer cancel()
	if _, err := l.do(ctx, req); err != nil {
		c.log.Debug("transfer notify failed", "code", code, "err", err)
	}
}

// transfer carries out a blind transfer requested by the party of leg old.
func (c *call) transfer(old *sigLeg, target sipmsg.Uri, routedBy string) {
	s := c.s
	release := func() {
		c.mu.Lock()
		c.oaBusy = false
		c.transferor = nil
		c.mu.Unlock()
	}
	c.notify(old, 100, "Trying", false)
	side := old.side
	stay := c.legs[side.Other()]

	// The offer to the new party: bib's address on the transferor's side,
	// the remaining party's codecs, sendrecv.
	c.mu.Lock()
	last := append([]byte(nil), old.lastSDP...)
	c.mu.Unlock()
	tp := transportFor(target)
	dua := s.duas[tp]
	if dua == nil {
		dua = s.duas["UDP"]
	}
	nl := &sigLeg{
		side: side, callID: sipmsg.GenerateTagN(24) + "@bib", transport: tp, dua: dua,
		localTag: sipmsg.GenerateTagN(16), laddr: s.laddr(tp), user: target.User,
		target: *target.Clone(), origin: newOrigin(s.now(), uint64(side)+7),
	}
	rtp, rtcp := c.media.Leg(side).Local()
	offer, err := Rewrite(setDirection(last, "sendrecv"), nl.origin, rtp, rtcp)
	if err != nil {
		release()
		c.notify(old, 500, "Server Internal Error", true)
		c.log.Warn("transfer: no offer for the new party", "err", err)
		return
	}
	nl.lastSDP = offer
	req := sipmsg.NewRequest(sipmsg.INVITE, *target.Clone())
	from := &sipmsg.FromHeader{DisplayName: stay.display, Address: sipmsg.Uri{Scheme: "sip", User: stay.user, Host: s.cfg.Domain}, Params: sipmsg.NewParams()}
	from.Params.Add("tag", nl.localTag)
	toH := &sipmsg.ToHeader{Address: sipmsg.Uri{Scheme: "sip", User: target.User, Host: target.Host, Port: target.Port}, Params: sipmsg.NewParams()}
	callID := sipmsg.CallIDHeader(nl.callID)
	req.AppendHeader(from)
	req.AppendHeader(toH)
	req.AppendHeader(&callID)
	req.AppendHeader(sipmsg.NewHeader("Referred-By", fmt.Sprintf("<sip:%s@%s>", old.user, s.cfg.Domain)))
	req.AppendHeader(sipmsg.NewHeader("User-Agent", s.cfg.UserAgent))
	req.AppendHeader(sipmsg.NewHeader("Allow", allowed))
	req.AppendHeader(sdpHeader())
	req.SetBody(offer)
	req.SetTransport(tp)
	req.Laddr = nl.laddr

	fail := func(code int, reason, why string) {
		release()
		if c.transferorLeft(old) {
			// Nobody is left for the remaining party to talk to.
			c.log.Info("transfer failed after the transferor left; ending the call", "target", target.User, "why", why)
			c.hangup(int(side), "transfer failed", fmt.Sprintf(`SIP;cause=%d;text="transfer failed"`, code))
			return
		}
		c.notify(old, code, reason, true)
		c.log.Info("transfer failed; the call stays as it was", "target", target.User, "why", why)
	}
	ringCtx, cancel := context.WithTimeout(context.Background(), time.Duration(s.cfg.RingTimeout))
	defer cancel()
	go func() {
		select {
		case <-c.done:
			cancel()
		case <-ringCtx.Done():
		}
	}()
	s.bindCallID(nl.callID, c, side)
	unbind := func() {
		s.mu.Lock()
		if s.byCallID[nl.callID].c == c && c.legs[side] != nl {
			delete(s.byCallID, nl.callID)
		}
		s.mu.Unlock()
	}
	ds, err := dua.WriteInvite(ringCtx, req)
	if err != nil {
		unbind()
		fail(503, "Service Unavailable", err.Error())
		return
	}
	nl.uac = ds
	if err := ds.WaitAnswer(ringCtx, sipgo.AnswerOptions{}); err != nil {
		unbind()
		code, reason := 408, "Request Timeout"
		var de *sipgo.ErrDialogResponse
		if errors.As(err, &de) {
			code, reason = de.Res.StatusCode, de.Res.Reason
		}
		fail(code, reason, err.Error())
		return
	}
	res := ds.InviteResponse
	ackCtx, ackCancel := context.WithTimeout(context.Background(), byeTimeout)
	defer ackCancel()
	if ct := res.Contact(); ct != nil {
		nl.target = *ct.Address.Clone()
	}
	// ACK and BYE from bib's own socket (Laddr), as on every leg.
	ack := sipmsg.NewRequest(sipmsg.ACK, *nl.target.Clone())
	ack.Laddr = nl.laddr
	if err := ds.WriteAck(ackCtx, ack); err != nil {
		c.log.Warn("transfer: ack to the new party failed", "err", err)
	}
	ans, err := ParseMedia(res.Body())
	if err == nil {
		if off, perr := ParseMedia(offer); perr == nil {
			err = srtpMismatch(off, ans)
		}
	}
	if err != nil {
		c.sendBye(ackCtx, nl, `SIP;cause=488;text="unusable SDP answer"`)
		unbind()
		fail(488, "Not Acceptable Here", "new party answered with unusable sdp: "+err.Error())
		return
	}
	if to := res.To(); to != nil {
		nl.display = to.DisplayName
	}

	// Swap the leg: the transferor's dialog is done, the new party's takes
	// its place on the same media ports.
	c.mu.Lock()
	if c.hungup || c.finished {
		c.mu.Unlock()
		c.sendBye(ackCtx, nl, "")
		unbind()
		release()
		return
	}
	c.legs[side] = nl
	c.old = append(c.old, old)
	c.mu.Unlock()
	s.mu.Lock()
	s.byCallID[old.callID] = legRef{c: c, side: side, leg: old}
	s.mu.Unlock()
	c.media.SetRemote(side, ans)

	c.notify(old, 200, "OK", true)
	c.sendBye(ackCtx, old, "")

	// The remaining party: off hold, facing its new peer.
	stayBody, err := c.localSDP(stay.side, res.Body())
	if err == nil {
		r := sipmsg.NewRequest(sipmsg.INVITE, stay.targetClone(c))
		r.Laddr = stay.laddr
		r.AppendHeader(sipmsg.NewHeader("P-Asserted-Identity", assertedIdentity(nl.display, nl.user, s.cfg.Domain)))
		r.AppendHeader(sdpHeader())
		r.SetBody(stayBody)
		ctx, cancel := context.WithTimeout(context.Background(), transferTimeout)
		rr, err := stay.do(ctx, r)
		cancel()
		switch {
		case err != nil:
			c.log.Warn("transfer: re-INVITE to the remaining party failed", "err", err)
		case rr.IsSuccess():
			c.sendAck(stay, nil)
			if d, perr := ParseMedia(rr.Body()); perr == nil {
				if off, oerr := ParseMedia(stayBody); oerr == nil && srtpMismatch(off, d) != nil {
					c.log.Warn("transfer: remaining party answered with another transport (RTP/SRTP); keeping its previous media", "err", srtpMismatch(off, d))
				} else {
					c.media.SetRemote(stay.side, d)
				}
			}
		default:
			c.log.Warn("transfer: remaining party refused the re-INVITE", "status", rr.StatusCode)
		}
	}
	c.media.Negotiated()
	if c.media.Held() {
		c.setState(StateHeld)
	} else {
		c.setState(StateAnswered)
	}
	release()
	c.log.Info("call transferred", "side", side.String(), "from", old.user, "to", nl.user)
	if s.OnTransfer != nil {
		s.OnTransfer(c.snapshot(), TransferInfo{
			Side: side, Transferor: Party{User: old.user, Display: old.display},
			Target: Party{User: nl.user, Display: nl.display}, RoutedBy: routedBy,
		})
	}
}

// assertedIdentity formats a P-Asserted-Identity value.
func assertedIdentity(display, user, domain string) string {
	if display != "" {
		return `"` + quoteSafe(display) + `" <sip:` + user + "@" + domain + ">"
	}
	return "<sip:" + user + "@" + domain + ">"
}

// assertedParty reads P-Asserted-Identity (or Remote-Party-ID) of a request.
func assertedParty(req *sipmsg.Request) (Party, bool) {
	for _, name := range []string{"P-Asserted-Identity", "Remote-Party-ID"} {
		h := req.GetHeader(name)
		if h == nil {
			continue
		}
		var u sipmsg.Uri
		v := strings.TrimSpace(h.Value())
		display := ""
		if i := strings.IndexByte(v, '<'); i >= 0 {
			display = strings.Trim(strings.TrimSpace(v[:i]), `"`)
			if j := strings.IndexByte(v[i:], '>'); j > 0 {
				v = v[i+1 : i+j]
			}
		}
		if err := sipmsg.ParseUri(v, &u); err != nil || u.User == "" {
			continue
		}
		return Party{User: u.User, Display: display}, true
	}
	return Party{}, false
}

// setDirection replaces the SDP's direction attributes with dir (session
// and media level), keeping everything else. A body that does not parse is
// returned as is (Rewrite then reports it).
func setDirection(body []byte, dir string) []byte {
	sd := &sdp.SessionDescription{}
	if err := sd.Unmarshal(body); err != nil {
		return body
	}
	isDir := func(k string) bool { return k == "sendrecv" || k == "sendonly" || k == "recvonly" || k == "inactive" }
	sd.Attributes = slices.DeleteFunc(sd.Attributes, func(a sdp.Attribute) bool { return isDir(a.Key) })
	for _, md := range sd.MediaDescriptions {
		md.Attributes = slices.DeleteFunc(md.Attributes, func(a sdp.Attribute) bool { return isDir(a.Key) })
		md.Attributes = append(md.Attributes, sdp.Attribute{Key: dir})
	}
	out, err := sd.Marshal()
	if err != nil {
		return body
	}
	return out
}
