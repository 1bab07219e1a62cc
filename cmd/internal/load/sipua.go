package load

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/emiago/sipgo"
	sipmsg "github.com/emiago/sipgo/sip"
	"github.com/pion/sdp/v3"
)

// userAgent is one sipgo user agent shared by every party of a kind (all
// agents, all customers, all supervisors): one UDP SIP socket, dialogs
// told apart by Call-ID.
type userAgent struct {
	name string
	ua   *sipgo.UserAgent
	srv  *sipgo.Server
	cli  *sipgo.Client
	conn *net.UDPConn
	addr netip.AddrPort
	dua  *sipgo.DialogUA

	mu      sync.Mutex
	dialogs map[string]*call // Call-ID -> call

	wg sync.WaitGroup
}

func newUserAgent(name, listen string, log *slog.Logger) (*userAgent, error) {
	ap, err := netip.ParseAddrPort(listen)
	if err != nil {
		return nil, err
	}
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return nil, fmt.Errorf("%s sip listen %s: %w", name, listen, err)
	}
	_ = conn.SetReadBuffer(4 << 20)
	u := &userAgent{name: name, conn: conn, addr: conn.LocalAddr().(*net.UDPAddr).AddrPort(), dialogs: map[string]*call{}}
	stack := log.With("ua", name)
	u.ua, err = sipgo.NewUA(sipgo.WithUserAgent("bib-load-"+name),
		sipgo.WithUserAgentTransportLayerOptions(sipmsg.WithTransportLayerLogger(stack)),
		sipgo.WithUserAgentTransactionLayerOptions(sipmsg.WithTransactionLayerLogger(stack)))
	if err == nil {
		u.srv, err = sipgo.NewServer(u.ua, sipgo.WithServerLogger(stack))
	}
	if err == nil {
		u.cli, err = sipgo.NewClient(u.ua, sipgo.WithClientHostname(u.addr.Addr().String()), sipgo.WithClientLogger(stack))
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	u.dua = &sipgo.DialogUA{Client: u.cli, ContactHDR: sipmsg.ContactHeader{Address: u.uri(name)}}
	u.srv.OnOptions(func(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
		_ = tx.Respond(sipmsg.NewResponseFromRequest(req, 200, "OK", nil))
	})
	return u, nil
}

func (u *userAgent) serve() {
	u.wg.Add(1)
	go func() { defer u.wg.Done(); _ = u.srv.ServeUDP(u.conn) }()
}

func (u *userAgent) close() {
	u.conn.Close()
	u.wg.Wait()
	u.ua.Close()
}

func (u *userAgent) uri(user string) sipmsg.Uri {
	return sipmsg.Uri{Scheme: "sip", User: user, Host: u.addr.Addr().String(), Port: int(u.addr.Port())}
}

func (u *userAgent) track(callID string, c *call) {
	u.mu.Lock()
	u.dialogs[callID] = c
	u.mu.Unlock()
}

func (u *userAgent) untrack(callID string) {
	u.mu.Lock()
	delete(u.dialogs, callID)
	u.mu.Unlock()
}

func (u *userAgent) find(req *sipmsg.Request) *call {
	h := req.CallID()
	if h == nil {
		return nil
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.dialogs[h.Value()]
}

// offerSDP is a minimal SDP for one audio stream with one codec.
func offerSDP(addr netip.AddrPort, pt uint8, name string, mode string, version uint64) []byte {
	ip := addr.Addr().String()
	fam := "IP4"
	if addr.Addr().Is6() {
		fam = "IP6"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "v=0\r\no=bib-load %d %d IN %s %s\r\ns=bib load\r\nc=IN %s %s\r\nt=0 0\r\n",
		version, version, fam, ip, fam, ip)
	fmt.Fprintf(&b, "m=audio %d RTP/AVP %d\r\na=rtpmap:%d %s/8000\r\na=ptime:20\r\na=%s\r\n",
		addr.Port(), pt, pt, name, mode)
	return []byte(b.String())
}

// remoteMedia is what an SDP body says about where to send audio.
type remoteMedia struct {
	addr netip.AddrPort
	mode string
	pts  []uint8
}

var errNoAudio = errors.New("sdp: no active audio stream")

// parseSDP reads the first active audio m-line of body.
func parseSDP(body []byte) (remoteMedia, error) {
	var sd sdp.SessionDescription
	if err := sd.Unmarshal(body); err != nil {
		return remoteMedia{}, fmt.Errorf("sdp: %w", err)
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
			return remoteMedia{}, fmt.Errorf("sdp: audio stream without c= line")
		}
		ip, err := netip.ParseAddr(ci.Address.Address)
		if err != nil {
			return remoteMedia{}, fmt.Errorf("sdp: c= address: %w", err)
		}
		rm := remoteMedia{addr: netip.AddrPortFrom(ip, uint16(md.MediaName.Port.Value)), mode: "sendrecv"}
		for _, f := range md.MediaName.Formats {
			if v, err := strconv.ParseUint(f, 10, 8); err == nil {
				rm.pts = append(rm.pts, uint8(v))
			}
		}
		for _, a := range append(sd.Attributes, md.Attributes...) {
			switch a.Key {
			case "sendrecv", "sendonly", "recvonly", "inactive":
				rm.mode = a.Key
			}
		}
		return rm, nil
	}
	return remoteMedia{}, errNoAudio
}

// sipCounters count signalling outcomes the report shows.
type sipCounters struct {
	registered    atomic.Uint64
	registerFail  atomic.Uint64
	byeFail       atomic.Uint64
	droppedByPeer atomic.Uint64 // BYE from the bridge before the harness hung up
}

// register sends REGISTER for one agent line (the device's directory
// number as the address of record, the device name in the Contact) and
// returns the final status code.
func (u *userAgent) register(ctx context.Context, target netip.AddrPort, line, device string) (int, error) {
	host := target.Addr().String()
	req := sipmsg.NewRequest(sipmsg.REGISTER, sipmsg.Uri{Scheme: "sip", Host: host, Port: int(target.Port())})
	aor := sipmsg.Uri{Scheme: "sip", User: line, Host: host}
	from := &sipmsg.FromHeader{DisplayName: device, Address: aor, Params: sipmsg.NewParams()}
	from.Params.Add("tag", sipmsg.GenerateTagN(10))
	req.AppendHeader(from)
	req.AppendHeader(&sipmsg.ToHeader{Address: aor, Params: sipmsg.NewParams()})
	req.AppendHeader(&sipmsg.ContactHeader{Address: u.uri(device), Params: sipmsg.NewParams()})
	req.AppendHeader(sipmsg.NewHeader("Expires", "3600"))
	res, err := u.cli.Do(ctx, req)
	if err != nil {
		return 0, err
	}
	return res.StatusCode, nil
}

// newInvite builds an INVITE from user (display name) to the given user
// at target, with an SDP offer.
func (u *userAgent) newInvite(target netip.AddrPort, fromUser, display, toUser string, body []byte) *sipmsg.Request {
	host := target.Addr().String()
	ruri := sipmsg.Uri{Scheme: "sip", User: toUser, Host: host, Port: int(target.Port())}
	req := sipmsg.NewRequest(sipmsg.INVITE, ruri)
	from := &sipmsg.FromHeader{DisplayName: display, Address: sipmsg.Uri{Scheme: "sip", User: fromUser, Host: u.addr.Addr().String()}, Params: sipmsg.NewParams()}
	from.Params.Add("tag", sipmsg.GenerateTagN(12))
	req.AppendHeader(from)
	req.AppendHeader(&sipmsg.ToHeader{Address: sipmsg.Uri{Scheme: "sip", User: toUser, Host: host}, Params: sipmsg.NewParams()})
	cid := sipmsg.CallIDHeader(sipmsg.GenerateTagN(24) + "@bib-load")
	req.AppendHeader(&cid)
	req.AppendHeader(&sipmsg.ContactHeader{Address: u.uri(fromUser)})
	req.AppendHeader(sipmsg.NewHeader("Content-Type", "application/sdp"))
	req.SetBody(body)
	return req
}

// statusText describes a failed INVITE for the report.
func statusText(err error) string {
	var de *sipgo.ErrDialogResponse
	if errors.As(err, &de) && de.Res != nil {
		s := fmt.Sprintf("%d %s", de.Res.StatusCode, de.Res.Reason)
		if w := de.Res.GetHeader("Warning"); w != nil {
			s += " (" + w.Value() + ")"
		}
		return s
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "timeout"
	}
	return err.Error()
}
