package sip

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bib-project/bib/bridge"
	"github.com/emiago/sipgo"
	sipmsg "github.com/emiago/sipgo/sip"
)

// Recording fork protocols and offer modes (ForkProfile).
const (
	ForkCUCM     = "cucm"   // two INVITEs per call, near end then far end (PROTOCOL.md section 1)
	ForkSIPREC   = "siprec" // one RFC 7866 recording session with two streams
	OfferDelayed = "delayed"
	OfferEarly   = "early"
)

// Fork defaults.
const (
	defaultForkTimeout   = 3 * time.Second
	defaultForkKeepalive = 10 * time.Second
)

var (
	// ErrForkCodec: the recorder cannot take the call's codec.
	ErrForkCodec = errors.New("recorder cannot take the call's codec")
	// ErrForkFailed: no recorder destination accepted the fork.
	ErrForkFailed = errors.New("no recorder accepted the fork")
	// ErrForkSRTP: the call is secure (SRTP) and the recorder does not
	// take SRTP.
	ErrForkSRTP = errors.New("secure call: the recorder does not support SRTP")
)

// ForkProfile says where and how a call's media is forked to an external
// recorder.
type ForkProfile struct {
	Name string
	// Destinations are SIP URIs of recorders: the first is used, the next
	// ones when it fails (failover), in order.
	Destinations []string
	Protocol     string // ForkCUCM or ForkSIPREC
	Offer        string // OfferDelayed or OfferEarly (SIPREC: early)
	Transport    string // udp or tcp; "" follows the URI's transport parameter, else udp
	// Timeout bounds one INVITE to one destination (default 3s).
	Timeout time.Duration
	// Keepalive is the interval of in-dialog OPTIONS that detect a dead
	// recorder mid-call (default 10s; negative disables).
	Keepalive time.Duration
	// SRTPFallback lets a secure call be forked in plain RTP to a recorder
	// that does not support SRTP. Default false: a secure call is forked
	// only to recorders that take SRTP (the next destination is tried).
	SRTPFallback bool
}

// ForkParty identifies one end of a recorded call in the fork's headers
// or metadata.
type ForkParty struct {
	Name      string // display name
	Addr      string // directory number (x-*addr, the AOR's user part)
	Device    string // device name (x-*device)
	RefCI     string // call leg id (x-refci, x-farendrefci)
	ClusterID string // x-*clusterid
}

// ForkMetrics are process-wide fork counters (atomics, for /metrics).
type ForkMetrics struct {
	Attempts      atomic.Uint64 // INVITEs (sessions) tried
	Started       atomic.Uint64 // fork sets established
	Failures      atomic.Uint64 // destinations that refused, failed or timed out
	Failovers     atomic.Uint64 // switches to the next destination
	Lost          atomic.Uint64 // established forks whose recorder stopped answering
	CodecRejected atomic.Uint64 // forks ended with Q.850 cause 47
	Exhausted     atomic.Uint64 // fork sets for which no destination was left
}

// ForkEvent is something that happened to a call's forks, for the call
// record.
type ForkEvent struct {
	At          time.Time `json:"at"`
	Kind        string    `json:"kind"` // started, failed, failover, lost, codec_rejected, exhausted, ended, held, resumed, renegotiated
	Destination string    `json:"destination,omitempty"`
	Detail      string    `json:"detail,omitempty"`
}

// ForkRequest is one call's fork: the profile, which side is the near end
// (the agent) and the parties' identities.
type ForkRequest struct {
	Profile   ForkProfile
	Near      bridge.Side
	NearParty ForkParty
	FarParty  ForkParty
	// Metrics may be shared by every fork of the process; nil allocates one.
	Metrics *ForkMetrics
	// OnEvent, if set, sees every ForkEvent (from the fork's goroutine).
	OnEvent func(ForkEvent)
}

// forkDialog is one SIP dialog to a recorder.
type forkDialog struct {
	f       *ForkSession
	callID  string
	dest    string
	ds      *sipgo.DialogClientSession
	streams []int          // indexes into ForkSession.streams
	offered []bridge.Codec // the recorder's codecs (its offer or answer)
	remote  []netip.AddrPort
	labels  []string
	secure  bool     // SRTP toward the recorder (streams use keys[i])
	tags    []string // a=crypto tag per stream
	ended   atomic.Bool
}

// ForkSession forks one call to a recorder. It is a bridge.Tap (for the
// call's events); the media goes through its bridge.ForkStreams.
type ForkSession struct {
	s     *Server
	mc    *bridge.Call
	req   ForkRequest
	log   *slog.Logger
	dests []sipmsg.Uri
	met   *ForkMetrics

	streams [2]*bridge.ForkStream // 0: near end's voice, 1: far end's voice
	events  chan bridge.Event
	parties chan partyUpdate
	byes    chan *forkDialog
	stop    chan string
	done    chan struct{}
	once    sync.Once

	// run goroutine state
	cur      int
	dialogs  []*forkDialog
	held     bool
	paused   bool
	codec    bridge.Codec
	media    [2]bridge.MediaDesc
	origin   Origin
	session  string             // Session-ID (RFC 7989 shape)
	rs       *rsState           // SIPREC metadata ids, kept across re-INVITEs
	keys     [2]*bridge.SRTPKey // bib's SRTP key per stream, made on first secure use
	sequence int

	mu  sync.Mutex
	evs []ForkEvent
}

var _ bridge.Tap = (*ForkSession)(nil)

// Validate checks a profile; errors name the field.
func (p ForkProfile) Validate() error {
	if p.Name == "" {
		return fmt.Errorf("name: empty")
	}
	if len(p.Destinations) == 0 {
		return fmt.Errorf("destination: empty")
	}
	for i, d := range p.Destinations {
		if _, err := parseDest(d); err != nil {
			if i == 0 {
				return fmt.Errorf("destination: %w", err)
			}
			return fmt.Errorf("failover[%d]: %w", i-1, err)
		}
	}
	switch p.Protocol {
	case ForkCUCM, ForkSIPREC:
	default:
		return fmt.Errorf("protocol: %q is not one of cucm, siprec", p.Protocol)
	}
	switch p.Offer {
	case "", OfferDelayed, OfferEarly:
	default:
		return fmt.Errorf("offer: %q is not one of delayed, early", p.Offer)
	}
	if p.Protocol == ForkSIPREC && p.Offer == OfferDelayed {
		return fmt.Errorf("offer: siprec sends its offer (with the metadata) in the INVITE; use early")
	}
	switch strings.ToLower(p.Transport) {
	case "", "udp", "tcp":
	default:
		return fmt.Errorf("transport: %q is not one of udp, tcp", p.Transport)
	}
	if p.Timeout < 0 {
		return fmt.Errorf("timeout: negative")
	}
	return nil
}

func parseDest(d string) (sipmsg.Uri, error) {
	var u sipmsg.Uri
	if err := sipmsg.ParseUri(d, &u); err != nil || u.Host == "" {
		return u, fmt.Errorf("%q is not a SIP URI", d)
	}
	if !strings.EqualFold(u.Scheme, "sip") {
		return u, fmt.Errorf("%q: only sip: URIs are supported", d)
	}
	return u, nil
}

// StartFork starts forking call mc as req says: it binds two fork streams,
// attaches them and the session to the call, and places the recording
// calls (on its own goroutine; failures are reported as events, never to
// the call). Stop ends it.
func (s *Server) StartFork(mc *bridge.Call, req ForkRequest, log *slog.Logger) (*ForkSession, error) {
	p := req.Profile
	if p.Offer == "" {
		p.Offer = OfferDelayed
		if p.Protocol == ForkSIPREC {
			p.Offer = OfferEarly
		}
	}
	if p.Timeout == 0 {
		p.Timeout = defaultForkTimeout
	}
	if p.Keepalive == 0 {
		p.Keepalive = defaultForkKeepalive
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("fork profile %s: %w", p.Name, err)
	}
	if s.cli == nil {
		return nil, errors.New("fork: server not listening")
	}
	req.Profile = p
	if req.Metrics == nil {
		req.Metrics = &ForkMetrics{}
	}
	if log == nil {
		log = s.log
	}
	f := &ForkSession{
		s: s, mc: mc, req: req, met: req.Metrics,
		log:    log.With("call_id", mc.ID(), "fork_profile", p.Name),
		events: make(chan bridge.Event, 64), byes: make(chan *forkDialog, 4),
		parties: make(chan partyUpdate, 8),
		stop:    make(chan string, 1), done: make(chan struct{}),
		origin:  newOrigin(time.Now(), 7),
		session: newSessionID(),
	}
	for _, d := range p.Destinations {
		u, _ := parseDest(d)
		f.dests = append(f.dests, u)
	}
	dirs := [2]bridge.Direction{bridge.Direction(req.Near), bridge.Direction(req.Near.Other())}
	for i, d := range dirs {
		st, err := bridge.NewForkStream(s.eng, d)
		if err != nil {
			f.closeStreams()
			return nil, err
		}
		f.streams[i] = st
	}
	for _, st := range f.streams {
		if err := mc.AddTap(st); err != nil {
			f.detach()
			f.closeStreams()
			return nil, fmt.Errorf("fork: %w", err)
		}
	}
	if err := mc.AddTap(f); err != nil {
		f.detach()
		f.closeStreams()
		return nil, fmt.Errorf("fork: %w", err)
	}
	go f.run()
	return f, nil
}

func newSessionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// RTP implements bridge.Tap; the session itself does not look at packets.
func (f *ForkSession) RTP(bridge.Direction, *bridge.Packet) {}

// Event implements bridge.Tap: events are handled on the fork's goroutine.
func (f *ForkSession) Event(ev bridge.Event) {
	select {
	case f.events <- ev:
	default:
		f.log.Warn("fork event queue full; event dropped", "event", ev.Kind.String())
	}
}

// Stop ends the forks (BYE to the recorder) and frees their sockets; it
// waits until done or ctx ends. Idempotent.
func (f *ForkSession) Stop(ctx context.Context, reason string) error {
	f.once.Do(func() { f.stop <- reason })
	select {
	case <-f.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// partyUpdate is a change of who the call's ends are.
type partyUpdate struct {
	near, far ForkParty
	transfer  bool
}

// UpdateParties tells the recorder who the call's ends are now, the way
// the call manager does (PROTOCOL.md section 1): after a transfer (new
// refci values) call-manager-style forks end (BYE) and new ones start
// carrying the new identities; after a far end's identity change without
// a transfer here, both forks get an UPDATE. A SIPREC session stays and
// gets a re-INVITE with the new metadata (RFC 7866 section 9.2) in both
// cases. It does not wait for the recorder.
func (f *ForkSession) UpdateParties(near, far ForkParty, transfer bool) {
	select {
	case f.parties <- partyUpdate{near: near, far: far, transfer: transfer}:
	case <-f.done:
	default:
		f.log.Warn("fork party update queue full; update dropped")
	}
}

func (f *ForkSession) partiesChanged(u partyUpdate) {
	f.req.NearParty, f.req.FarParty = u.near, u.far
	what := "far end now " + u.far.Addr
	if u.far.Device != "" {
		what += " (" + u.far.Device + ")"
	}
	live := liveDialogs(f.dialogs)
	if len(live) == 0 {
		return // the next recording calls carry the new identities
	}
	if f.req.Profile.Protocol == ForkSIPREC {
		mode := bridge.SendOnly
		if f.held {
			mode = bridge.Inactive
		}
		if err := f.reinvite(live[0], mode, true); err != nil {
			f.event("failed", live[0].dest, "metadata re-INVITE: "+err.Error())
			return
		}
		f.event("metadata_updated", live[0].dest, "re-INVITE with new metadata: "+what)
		return
	}
	dest := live[0].dest
	if u.transfer {
		f.byeAll("", "transfer")
		f.event("transferred", dest, "forks ended (BYE) on transfer; new forks with new refci: "+what)
		if !f.held {
			f.connect(f.cur)
		}
		return
	}
	for _, d := range live {
		if err := f.update(d); err != nil {
			f.event("failed", d.dest, "UPDATE: "+err.Error())
			return
		}
	}
	f.event("identity_updated", dest, "UPDATE on both forks: "+what)
}

// update sends an UPDATE without SDP on a call-manager-style fork dialog
// carrying the current identities: the Contact URI has the same x-*
// parameters as the INVITE's From, with the new values (the From of a
// dialog cannot change; a Contact can, UPDATE being a target refresh).
func (f *ForkSession) update(d *forkDialog) error {
	role := "x-nearend"
	if len(d.streams) > 0 && d.streams[0] == 1 {
		role = "x-farend"
	}
	target := *d.ds.InviteRequest.Recipient.Clone()
	if c := d.ds.InviteResponse.Contact(); c != nil {
		target = *c.Address.Clone()
	}
	tp := d.ds.InviteRequest.Transport()
	req := sipmsg.NewRequest(sipmsg.UPDATE, target)
	req.Laddr = f.s.laddr(tp)
	ct := f.contact(tp, f.req.NearParty.Addr)
	ct.Address.UriParams = f.fromURI(role).UriParams
	ct.Params.Add("isFocus", "")
	req.AppendHeader(ct)
	n := f.req.NearParty
	req.AppendHeader(sipmsg.NewHeader("P-Asserted-Identity", assertedIdentity(n.Name, n.Addr, f.s.cfg.Domain)))
	_, err := f.do(d, req)
	return err
}

// do sends an in-dialog request on a fork dialog and wants a 2xx.
func (f *ForkSession) do(d *forkDialog, req *sipmsg.Request) (*sipmsg.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), f.req.Profile.Timeout)
	defer cancel()
	res, err := d.ds.Do(ctx, req)
	if err != nil {
		return nil, err
	}
	if !res.IsSuccess() {
		return nil, fmt.Errorf("recorder answered %s", res.StartLine())
	}
	return res, nil
}

// Done is closed when the session has ended.
func (f *ForkSession) Done() <-chan struct{} { return f.done }

// Events returns what happened to the forks so far.
func (f *ForkSession) Events() []ForkEvent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]ForkEvent(nil), f.evs...)
}

// Streams returns the fork streams (near end's voice first) for counters.
func (f *ForkSession) Streams() [2]*bridge.ForkStream { return f.streams }

func (f *ForkSession) event(kind, dest, detail string) {
	ev := ForkEvent{At: time.Now(), Kind: kind, Destination: dest, Detail: detail}
	f.mu.Lock()
	f.evs = append(f.evs, ev)
	f.mu.Unlock()
	if f.req.OnEvent != nil {
		f.req.OnEvent(ev)
	}
}

func (f *ForkSession) detach() {
	f.mc.RemoveTap(f)
	for _, st := range f.streams {
		if st != nil {
			f.mc.RemoveTap(st)
		}
	}
}

func (f *ForkSession) closeStreams() {
	for _, st := range f.streams {
		if st != nil {
			st.Close()
		}
	}
}

// run is the session's goroutine: it owns the dialogs.
func (f *ForkSession) run() {
	defer close(f.done)
	var tick <-chan time.Time
	if ka := f.req.Profile.Keepalive; ka > 0 {
		t := time.NewTicker(ka)
		defer t.Stop()
		tick = t.C
	}
	started := false
	for {
		select {
		case reason := <-f.stop:
			f.teardown(reason)
			return
		case ev := <-f.events:
			switch ev.Kind {
			case bridge.EvMedia:
				f.media = ev.Media
				if !started {
					started = true
					if f.held = ev.Media[f.req.Near].Hold(); !f.held {
						f.connect(0)
					}
					continue
				}
				f.mediaChanged()
			case bridge.EvHold, bridge.EvResume:
				if ev.Side == f.req.Near {
					f.media = ev.Media
					f.nearHold(ev.Kind == bridge.EvHold)
				}
			case bridge.EvEnd:
				f.teardown("call ended")
				return
			}
		case u := <-f.parties:
			f.partiesChanged(u)
		case d := <-f.byes:
			f.recorderBye(d)
		case <-tick:
			f.keepalive()
		}
	}
}

// teardown ends every dialog and frees the streams.
func (f *ForkSession) teardown(reason string) {
	f.detach()
	f.byeAll("", reason)
	f.closeStreams()
	f.event("ended", "", reason)
}

// connect places the recording calls, trying destinations from index
// from on (wrapping around once) until one takes them.
func (f *ForkSession) connect(from int) bool {
	n := len(f.dests)
	for k := 0; k < n; k++ {
		i := (from + k) % n
		dest := f.dests[i].String()
		err := f.place(f.dests[i])
		if err == nil {
			f.cur = i
			f.met.Started.Add(1)
			f.event("started", dest, f.req.Profile.Protocol+" "+f.req.Profile.Offer+" offer")
			f.log.Debug("recording fork started", "destination", dest)
			return true
		}
		f.met.Failures.Add(1)
		f.event("failed", dest, err.Error())
		if errors.Is(err, ErrForkCodec) {
			f.met.CodecRejected.Add(1)
		}
		if k+1 < n {
			f.met.Failovers.Add(1)
			f.event("failover", f.dests[(i+1)%n].String(), "after "+dest+": "+err.Error())
		}
	}
	f.met.Exhausted.Add(1)
	f.event("exhausted", "", "no recorder destination accepted the fork; the call continues unrecorded by external recorders")
	f.log.Warn("recording fork failed on every destination; the call continues", "destinations", len(f.dests))
	return false
}

// place establishes the fork set at one destination.
func (f *ForkSession) place(dest sipmsg.Uri) error {
	err := f.placeAs(dest, false)
	if errors.Is(err, ErrForkSRTP) && f.req.Profile.SRTPFallback {
		// X-cisco-srtp-fallback: the profile allows a plain fork of a
		// secure call to a recorder without SRTP.
		f.event("srtp_fallback", dest.String(), err.Error()+"; forking in plain RTP (srtp_fallback)")
		return f.placeAs(dest, true)
	}
	return err
}

func (f *ForkSession) placeAs(dest sipmsg.Uri, plain bool) error {
	f.sequence++
	if f.req.Profile.Protocol == ForkSIPREC {
		d, err := f.invite(dest, []int{0, 1}, "", plain)
		if err != nil {
			return err
		}
		f.dialogs = []*forkDialog{d}
		return nil
	}
	near, err := f.invite(dest, []int{0}, "x-nearend", plain)
	if err != nil {
		return err
	}
	far, err := f.invite(dest, []int{1}, "x-farend", plain)
	if err != nil {
		f.bye(near, "")
		return err
	}
	f.dialogs = []*forkDialog{near, far}
	return nil
}

func protoName(secure bool) string {
	if secure {
		return "RTP/SAVP"
	}
	return "RTP/AVP"
}

func (f *ForkSession) transport(dest sipmsg.Uri) string {
	tp := strings.ToUpper(f.req.Profile.Transport)
	if tp == "" && f.req.Profile.Protocol == ForkSIPREC {
		// A SIPREC INVITE with its metadata exceeds 1300 bytes: RFC 3261
		// section 18.1.1 sends it over a congestion-controlled transport.
		tp = "TCP"
	}
	if tp == "" {
		tp = "UDP"
		if v, ok := dest.UriParams.Get("transport"); ok && strings.EqualFold(v, "tcp") {
			tp = "TCP"
		}
	}
	return tp
}

// contact is bib's Contact for a fork dialog, on the transport used.
func (f *ForkSession) contact(tp, user string) *sipmsg.ContactHeader {
	dua := f.s.duas[tp]
	if dua == nil {
		dua = f.s.duas["UDP"]
	}
	ct := &sipmsg.ContactHeader{Address: *dua.ContactHDR.Address.Clone(), Params: sipmsg.NewParams()}
	ct.Address.User = user
	return ct
}

// fromURI is the From URI of a call-manager-style fork (PROTOCOL.md
// section 1): the agent's address with x-nearend or x-farend first, then
// the near and far end identities.
func (f *ForkSession) fromURI(role string) sipmsg.Uri {
	n, fp := f.req.NearParty, f.req.FarParty
	u := sipmsg.Uri{Scheme: "sip", User: n.Addr, Host: f.s.cfg.Domain, UriParams: sipmsg.NewParams()}
	add := func(k, v string) {
		if v != "" {
			u.UriParams.Add(k, v)
		}
	}
	u.UriParams.Add(role, "")
	add("x-refci", n.RefCI)
	add("x-nearendclusterid", n.ClusterID)
	add("x-nearenddevice", n.Device)
	add("x-nearendaddr", n.Addr)
	add("x-farendrefci", fp.RefCI)
	add("x-farendclusterid", fp.ClusterID)
	add("x-farenddevice", fp.Device)
	add("x-farendaddr", fp.Addr)
	return u
}

// offerSDP is bib's SDP offer (early offer, re-INVITE) for streams idx.
func (f *ForkSession) offerSDP(idx []int, codecs [][]bridge.Codec, mode bridge.Mode, labels []string, tags []string) []byte {
	f.origin.Version++
	var ss []sdpStream
	for k, i := range idx {
		s := sdpStream{Port: f.streams[i].Local().Port(), Codecs: codecs[k], Mode: mode}
		if labels != nil {
			s.Label = labels[k]
		}
		if tags != nil {
			s.Crypto = cryptoAttr(tags[k], *f.key(i))
		}
		ss = append(ss, s)
	}
	return buildSDP(f.origin, f.s.eng.IP(), "bib", ss)
}

// key returns bib's SRTP key for stream i, making it on first use. One key
// per stream for the session's life: the stream's SSRC and sequence go on
// across re-INVITEs and new recording calls, and so does its SRTP context.
func (f *ForkSession) key(i int) *bridge.SRTPKey {
	if f.keys[i] == nil {
		k, err := bridge.NewSRTPKey(bridge.SuiteAES128SHA1_80)
		if err != nil {
			panic("srtp: no randomness for a key: " + err.Error())
		}
		f.keys[i] = &k
	}
	return f.keys[i]
}

// route is the stream route of dialog d's k-th stream.
func (f *ForkSession) route(d *forkDialog, k int, r bridge.ForkRoute) bridge.ForkRoute {
	if d.secure {
		r.SRTP = f.key(d.streams[k])
	}
	return r
}

// callSecure reports whether either party of the call uses SRTP.
func callSecure(m [2]bridge.MediaDesc) bool { return m[0].SRTP != nil || m[1].SRTP != nil }

// invite places one recording call carrying streams idx (one for a
// call-manager-style fork, two for SIPREC) and sets their routes.
func (f *ForkSession) invite(dest sipmsg.Uri, idx []int, role string, plain bool) (*forkDialog, error) {
	p := f.req.Profile
	secure := callSecure(f.media) && !plain
	f.met.Attempts.Add(1)
	codec, ok := callCodec(f.media)
	if !ok {
		return nil, fmt.Errorf("%w: the call has no negotiated audio codec", ErrForkCodec)
	}
	f.codec = codec
	tp := f.transport(dest)
	d := &forkDialog{f: f, callID: sipmsg.GenerateTagN(24) + "@bib", dest: dest.String(), streams: idx}
	req := sipmsg.NewRequest(sipmsg.INVITE, *dest.Clone())
	n := f.req.NearParty
	from := &sipmsg.FromHeader{DisplayName: n.Name, Params: sipmsg.NewParams()}
	to := &sipmsg.ToHeader{Address: sipmsg.Uri{Scheme: "sip", User: dest.User, Host: dest.Host, Port: dest.Port}, Params: sipmsg.NewParams()}
	callID := sipmsg.CallIDHeader(d.callID)
	var ct *sipmsg.ContactHeader
	if p.Protocol == ForkSIPREC {
		from.Address = sipmsg.Uri{Scheme: "sip", User: "bib", Host: f.s.cfg.Domain}
		ct = f.contact(tp, "bib")
		ct.Params.Add("+sip.src", "")
	} else {
		from.Address = f.fromURI(role)
		ct = f.contact(tp, n.Addr)
		ct.Params.Add("isFocus", "")
	}
	from.Params.Add("tag", sipmsg.GenerateTagN(16))
	req.AppendHeader(from)
	req.AppendHeader(to)
	req.AppendHeader(&callID)
	req.AppendHeader(ct)
	req.AppendHeader(sipmsg.NewHeader("User-Agent", f.s.cfg.UserAgent))
	req.AppendHeader(sipmsg.NewHeader("Allow", "INVITE, ACK, BYE, CANCEL, UPDATE, OPTIONS"))
	req.AppendHeader(sipmsg.NewHeader("Session-ID", f.session+";remote=00000000000000000000000000000000"))
	if p.Protocol == ForkSIPREC {
		req.AppendHeader(sipmsg.NewHeader("Require", "siprec"))
		req.AppendHeader(sipmsg.NewHeader("Accept", "application/sdp, "+ContentTypeRSMetadata))
	} else {
		pai := sipmsg.Uri{Scheme: "sip", User: n.Addr, Host: f.s.cfg.Domain}
		disp := ""
		if n.Name != "" {
			disp = `"` + quoteSafe(n.Name) + `" `
		}
		req.AppendHeader(sipmsg.NewHeader("P-Asserted-Identity", disp+"<"+pai.String()+">"))
		req.AppendHeader(sipmsg.NewHeader("Supported", "X-cisco-srtp-fallback"))
	}
	offered := []bridge.Codec{codec, eventCodec}
	if codec.PT == eventCodec.PT {
		offered[1].PT = 100
	}
	var tags []string
	if secure && (p.Protocol == ForkSIPREC || p.Offer == OfferEarly) {
		d.secure = true
		for range idx {
			tags = append(tags, "1")
		}
		d.tags = tags
	}
	switch {
	case p.Protocol == ForkSIPREC:
		d.labels = []string{"1", "2"}
		sdpBody := f.offerSDP(idx, [][]bridge.Codec{offered, offered}, bridge.SendOnly, d.labels, tags)
		meta, err := f.metadata(d.labels)
		if err != nil {
			return nil, err
		}
		ctype, body := BuildMultipart("bib-"+sipmsg.GenerateTagN(12), []BodyPart{
			{ContentType: "application/sdp", Disposition: "session;handling=required", Body: sdpBody},
			{ContentType: ContentTypeRSMetadata, Disposition: "recording-session", Body: meta},
		})
		req.AppendHeader(sipmsg.NewHeader("Content-Type", ctype))
		req.SetBody(body)
	case p.Offer == OfferEarly:
		req.AppendHeader(sdpHeader())
		req.SetBody(f.offerSDP(idx, [][]bridge.Codec{offered}, bridge.SendOnly, nil, tags))
	}
	req.SetTransport(tp)
	req.Laddr = f.s.laddr(tp)

	dua := f.s.duas[tp]
	if dua == nil {
		dua = f.s.duas["UDP"]
	}
	// On timeout WaitAnswer gives up at once instead of waiting out the
	// CANCEL (64*T1): a dead recorder must not hold up the failover.
	ctx, cancel := context.WithTimeoutCause(context.Background(), p.Timeout, sipgo.WaitAnswerForceCancelErr)
	defer cancel()
	f.s.forks.Store(d.callID, d)
	fail := func(err error) (*forkDialog, error) {
		f.s.forks.Delete(d.callID)
		return nil, err
	}
	ds, err := dua.WriteInvite(ctx, req)
	if err != nil {
		return fail(fmt.Errorf("invite %s: %w", dest.String(), err))
	}
	d.ds = ds
	if err := ds.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		ds.Close()
		var dr *sipgo.ErrDialogResponse
		if errors.As(err, &dr) {
			if d.secure && dr.Res.StatusCode == 488 {
				return fail(fmt.Errorf("%w (it answered %s to an RTP/SAVP offer)", ErrForkSRTP, dr.Res.StartLine()))
			}
			return fail(fmt.Errorf("recorder answered %s", dr.Res.StartLine()))
		}
		if ctx.Err() != nil {
			return fail(fmt.Errorf("recorder did not answer within %s", p.Timeout))
		}
		return fail(fmt.Errorf("invite %s: %w", dest.String(), err))
	}
	res := ds.InviteResponse
	ackCtx, ackCancel := context.WithTimeout(context.Background(), p.Timeout)
	defer ackCancel()
	lines, perr := parseAudioLines(res.Body())
	if perr == nil && len(lines) < len(idx) {
		perr = sdpErr(ErrNoAudio, 304, "recorder's sdp has %d audio streams, want %d", len(lines), len(idx))
	}
	var ackBody []byte
	var routes []bridge.ForkRoute
	if perr == nil && p.Offer == OfferDelayed && p.Protocol != ForkSIPREC {
		// The recorder offered: SRTP if it offered it (bib then answers
		// with its own key), else plain RTP, which a secure call accepts
		// only with srtp_fallback.
		d.secure, d.tags = false, nil
		for k := range idx {
			if lines[k].Desc.SRTP != nil {
				d.secure = true
			}
		}
		if d.secure {
			for k := range idx {
				tag, _, _ := lineCryptoTag(res.Body(), lines[k].Index)
				d.tags = append(d.tags, tag)
			}
		} else if secure && p.SRTPFallback {
			// X-cisco-srtp-fallback: the profile allows a plain fork of a
			// secure call to a recorder without SRTP.
			f.event("srtp_fallback", d.dest, "secure call, recorder offered RTP/AVP only; forking in plain RTP (srtp_fallback)")
		} else if secure {
			perr = fmt.Errorf("%w (it offered RTP/AVP only)", ErrForkSRTP)
		}
	} else if perr == nil {
		for k := range idx {
			if (lines[k].Desc.SRTP != nil) != d.secure {
				perr = fmt.Errorf("%w (it answered %s to an %s offer)", ErrForkSRTP, protoName(lines[k].Desc.SRTP != nil), protoName(d.secure))
				if !d.secure {
					perr = sdpErr(ErrMediaTransport, 302, "recorder answered RTP/SAVP to an RTP/AVP offer")
				}
			}
		}
	}
	if perr == nil {
		for k, i := range idx {
			l := lines[k]
			out, ok := findCodec(l.Desc.Codecs, codec)
			if !ok || l.Desc.RTP.Port() == 0 {
				perr = fmt.Errorf("%w (%s/%d not among the recorder's payload types)", ErrForkCodec, codec.Name, codec.Rate)
				break
			}
			var ev *bridge.Codec
			if te, ok := findNamed(l.Desc.Codecs, "telephone-event"); ok {
				ev = &te
			}
			d.offered = l.Desc.Codecs
			d.remote = append(d.remote, l.Desc.RTP)
			routes = append(routes, f.route(d, k, forkRoute(l.Desc.RTP, f.media, f.streams[i].Direction().From(), codec, out, ev)))
			if p.Offer == OfferDelayed {
				cs := []bridge.Codec{out}
				if ev != nil {
					cs = append(cs, *ev)
				}
				var tags []string
				if d.secure {
					tags = d.tags[k : k+1]
				}
				ackBody = f.offerSDP([]int{i}, [][]bridge.Codec{cs}, bridge.SendOnly, nil, tags)
			}
		}
	}
	target := *dest.Clone()
	if c := res.Contact(); c != nil {
		target = *c.Address.Clone()
	}
	ack := sipmsg.NewRequest(sipmsg.ACK, target)
	ack.Laddr = f.s.laddr(tp)
	if p.Offer == OfferDelayed {
		if ackBody == nil && perr != nil && len(lines) > 0 {
			// RFC 3264 section 6: an offer bib cannot accept is still
			// answered, with the stream rejected, before the BYE.
			ackBody = buildSDP(f.origin, f.s.eng.IP(), "bib", []sdpStream{{Port: 0, Codecs: firstCodec(lines[0].Desc.Codecs), Mode: bridge.SendOnly}})
		}
		if ackBody != nil {
			ack.AppendHeader(sdpHeader())
			ack.SetBody(ackBody)
		}
	}
	if err := ds.WriteAck(ackCtx, ack); err != nil {
		f.log.Debug("fork ack failed", "destination", d.dest, "err", err)
	}
	if perr != nil {
		reason := `Q.850;cause=47`
		switch {
		case errors.Is(perr, ErrForkSRTP):
			reason = `SIP;cause=488;text="secure call: recorder without SRTP"`
		case !errors.Is(perr, ErrForkCodec):
			reason = `SIP;cause=488;text="unusable SDP"`
		}
		f.bye(d, reason)
		return nil, perr
	}
	for k, i := range idx {
		if err := f.streams[i].SetRoute(routes[k]); err != nil {
			f.bye(d, "")
			return nil, err
		}
	}
	return d, nil
}

// metadata is the RFC 7865 document of a SIPREC session.
func (f *ForkSession) metadata(labels []string) ([]byte, error) {
	if f.rs == nil {
		f.rs = newRSState(time.Now())
	}
	now := time.Now()
	for i, p := range []ForkParty{f.req.NearParty, f.req.FarParty} {
		f.rs.set(i, "sip:"+p.Addr+"@"+f.s.cfg.Domain, p.Name, now)
	}
	return f.rs.build([]string{f.session}, labels)
}

// bye ends one fork dialog, with a Reason header when reason is set.
func (f *ForkSession) bye(d *forkDialog, reason string) {
	if d == nil || !d.ended.CompareAndSwap(false, true) {
		return
	}
	f.s.forks.Delete(d.callID)
	for _, i := range d.streams {
		f.streams[i].Pause()
	}
	target := *d.ds.InviteRequest.Recipient.Clone()
	if c := d.ds.InviteResponse.Contact(); c != nil {
		target = *c.Address.Clone()
	}
	bye := sipmsg.NewRequest(sipmsg.BYE, target)
	bye.Laddr = f.s.laddr(d.ds.InviteRequest.Transport())
	if reason != "" {
		bye.AppendHeader(sipmsg.NewHeader("Reason", reason))
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.req.Profile.Timeout)
	defer cancel()
	if err := d.ds.WriteBye(ctx, bye); err != nil {
		f.log.Debug("fork bye failed", "destination", d.dest, "err", err)
	}
}

// byeAll ends every fork dialog, concurrently.
func (f *ForkSession) byeAll(reasonHdr, why string) {
	var wg sync.WaitGroup
	for _, d := range f.dialogs {
		wg.Go(func() { f.bye(d, reasonHdr) })
	}
	wg.Wait()
	f.dialogs = nil
}

// nearHold: the agent put the call on hold (or resumed). Call-manager
// style ends both recording calls and places new ones on resume; SIPREC
// pauses the streams with a=inactive and resumes with a=sendonly.
func (f *ForkSession) nearHold(hold bool) {
	if hold == f.held {
		return
	}
	f.held = hold
	if f.req.Profile.Protocol == ForkSIPREC {
		if len(f.dialogs) == 0 {
			if !hold {
				f.connect(f.cur)
			}
			return
		}
		mode := bridge.SendOnly
		if hold {
			mode = bridge.Inactive
		}
		if err := f.reinvite(f.dialogs[0], mode, true); err != nil {
			f.event("failed", f.dialogs[0].dest, "re-INVITE: "+err.Error())
		}
		if hold {
			f.event("held", f.dialogs[0].dest, "re-INVITE a=inactive")
		} else {
			f.event("resumed", f.dialogs[0].dest, "re-INVITE a=sendonly")
		}
		return
	}
	if hold {
		dest := ""
		if len(f.dialogs) > 0 {
			dest = f.dialogs[0].dest
		}
		f.byeAll("", "agent hold")
		f.event("held", dest, "forks ended (BYE) on agent hold")
		return
	}
	f.event("resumed", "", "new forks on agent resume")
	f.connect(f.cur)
}

// reinvite re-offers a dialog's streams with the current codec in mode
// (SIPREC pause/resume, codec change), with fresh metadata if meta.
func (f *ForkSession) reinvite(d *forkDialog, mode bridge.Mode, meta bool) error {
	out := make([][]bridge.Codec, len(d.streams))
	for k := range d.streams {
		c, ok := findCodec(d.offered, f.codec)
		if !ok {
			return ErrForkCodec
		}
		out[k] = []bridge.Codec{c}
		if te, ok := findNamed(d.offered, "telephone-event"); ok {
			out[k] = append(out[k], te)
		}
	}
	var tags []string
	if d.secure {
		tags = d.tags
	}
	sdpBody := f.offerSDP(d.streams, out, mode, d.labels, tags)
	req := sipmsg.NewRequest(sipmsg.INVITE, d.ds.InviteRequest.Recipient)
	if c := d.ds.InviteResponse.Contact(); c != nil {
		req = sipmsg.NewRequest(sipmsg.INVITE, *c.Address.Clone())
	}
	tp := d.ds.InviteRequest.Transport()
	req.Laddr = f.s.laddr(tp)
	if f.req.Profile.Protocol == ForkSIPREC {
		req.AppendHeader(sipmsg.NewHeader("Require", "siprec"))
		ct := f.contact(tp, "bib")
		ct.Params.Add("+sip.src", "")
		req.AppendHeader(ct)
	}
	if meta && f.req.Profile.Protocol == ForkSIPREC {
		m, err := f.metadata(d.labels)
		if err != nil {
			return err
		}
		ctype, body := BuildMultipart("bib-"+sipmsg.GenerateTagN(12), []BodyPart{
			{ContentType: "application/sdp", Disposition: "session;handling=required", Body: sdpBody},
			{ContentType: ContentTypeRSMetadata, Disposition: "recording-session", Body: m},
		})
		req.AppendHeader(sipmsg.NewHeader("Content-Type", ctype))
		req.SetBody(body)
	} else {
		req.AppendHeader(sdpHeader())
		req.SetBody(sdpBody)
	}
	if _, err := f.do(d, req); err != nil {
		return err
	}
	ack := sipmsg.NewRequest(sipmsg.ACK, req.Recipient)
	ack.Laddr = req.Laddr
	if err := d.ds.WriteRequest(ack); err != nil {
		f.log.Debug("fork ack to re-invite failed", "err", err)
	}
	if mode == bridge.Inactive {
		for _, i := range d.streams {
			f.streams[i].Pause()
		}
		return nil
	}
	return f.reroute(d)
}

// reroute recomputes a dialog's stream routes for the current codec and
// the call's payload type numbers.
func (f *ForkSession) reroute(d *forkDialog) error {
	for k, i := range d.streams {
		out, ok := findCodec(d.offered, f.codec)
		if !ok {
			return ErrForkCodec
		}
		var ev *bridge.Codec
		if te, ok := findNamed(d.offered, "telephone-event"); ok {
			ev = &te
		}
		if err := f.streams[i].SetRoute(f.route(d, k, forkRoute(d.remote[k], f.media, f.streams[i].Direction().From(), f.codec, out, ev))); err != nil {
			return err
		}
	}
	return nil
}

// mediaChanged follows a re-INVITE or UPDATE of the call: same codec, the
// routes are refreshed; a new codec the recorder offered is re-negotiated;
// one it cannot take ends the fork with Q.850 cause 47.
func (f *ForkSession) mediaChanged() {
	codec, ok := callCodec(f.media)
	if !ok || len(f.dialogs) == 0 || f.held {
		if ok {
			f.codec = codec
		}
		return
	}
	if sameCodec(codec, f.codec) {
		for _, d := range f.dialogs {
			_ = f.reroute(d)
		}
		return
	}
	old := f.codec
	f.codec = codec
	for _, d := range f.dialogs {
		if _, ok := findCodec(d.offered, codec); !ok {
			f.met.CodecRejected.Add(1)
			f.event("codec_rejected", d.dest, fmt.Sprintf("call changed codec %s -> %s, which the recorder did not offer; fork ended with Q.850 cause 47", old.Name, codec.Name))
			f.log.Warn("recording fork ended: recorder cannot take the new codec", "destination", d.dest, "codec", codec.Name)
			f.bye(d, "Q.850;cause=47")
			continue
		}
		if err := f.reinvite(d, bridge.SendOnly, false); err != nil {
			f.event("failed", d.dest, "codec re-negotiation: "+err.Error())
			continue
		}
		f.event("renegotiated", d.dest, old.Name+" -> "+codec.Name)
	}
	f.dialogs = liveDialogs(f.dialogs)
}

func liveDialogs(ds []*forkDialog) []*forkDialog {
	out := ds[:0]
	for _, d := range ds {
		if !d.ended.Load() {
			out = append(out, d)
		}
	}
	return out
}

// keepalive probes the recorder with in-dialog OPTIONS; when it does not
// answer, the forks move to the next destination.
func (f *ForkSession) keepalive() {
	if len(f.dialogs) == 0 {
		return
	}
	for _, d := range f.dialogs {
		if d.ended.Load() {
			continue
		}
		req := sipmsg.NewRequest(sipmsg.OPTIONS, d.ds.InviteRequest.Recipient)
		if c := d.ds.InviteResponse.Contact(); c != nil {
			req = sipmsg.NewRequest(sipmsg.OPTIONS, *c.Address.Clone())
		}
		req.Laddr = f.s.laddr(d.ds.InviteRequest.Transport())
		ctx, cancel := context.WithTimeout(context.Background(), f.req.Profile.Timeout)
		res, err := d.ds.Do(ctx, req)
		cancel()
		if err == nil && res.StatusCode != 408 && res.StatusCode != 481 {
			continue
		}
		why := "no answer to OPTIONS"
		if err == nil {
			why = "OPTIONS answered " + res.StartLine()
		}
		f.lost(d.dest, why)
		return
	}
}

// lost handles a recorder that went away mid-call: the fork set moves to
// the next destination.
func (f *ForkSession) lost(dest, why string) {
	f.met.Lost.Add(1)
	f.log.Warn("recorder lost mid-call; failing over", "destination", dest, "why", why)
	f.event("lost", dest, why)
	for _, d := range f.dialogs {
		d.ended.Store(true) // no BYE: the recorder is gone
		f.s.forks.Delete(d.callID)
		d.ds.Close()
		for _, i := range d.streams {
			f.streams[i].Pause()
		}
	}
	f.dialogs = nil
	if f.held {
		return
	}
	if len(f.dests) > 1 {
		f.met.Failovers.Add(1)
		f.event("failover", f.dests[(f.cur+1)%len(f.dests)].String(), "after "+dest+": "+why)
	}
	f.connect((f.cur + 1) % len(f.dests))
}

// recorderBye: the recorder ended a fork dialog. The other dialog of the
// set is ended too; bib does not retry (the recorder chose to stop).
func (f *ForkSession) recorderBye(d *forkDialog) {
	f.event("ended", d.dest, "recorder sent BYE")
	for _, o := range f.dialogs {
		if o != d {
			f.bye(o, "")
		}
	}
	f.dialogs = nil
}

// forkBye answers a BYE from a recorder on a fork dialog; false if the
// request is not for a fork.
func (s *Server) forkBye(req *sipmsg.Request, tx sipmsg.ServerTransaction) bool {
	h := req.CallID()
	if h == nil {
		return false
	}
	v, ok := s.forks.Load(h.Value())
	if !ok {
		return false
	}
	d := v.(*forkDialog)
	s.respond(tx, req, 200, "OK", "")
	if d.ended.CompareAndSwap(false, true) {
		s.forks.Delete(d.callID)
		for _, i := range d.streams {
			d.f.streams[i].Pause()
		}
		select {
		case d.f.byes <- d:
		default:
		}
	}
	return true
}

func firstCodec(cs []bridge.Codec) []bridge.Codec {
	if len(cs) == 0 {
		return nil
	}
	return cs[:1]
}
