package bridge

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bib-project/bib/bridge/codec"
)

// ErrNoCommonCodec: the supervisor offered no codec the mixer can encode.
var ErrNoCommonCodec = errors.New("no common codec (want PCMU, PCMA or G722)")

// SupervisorCounters count a supervisor leg's traffic. Everything the
// supervisor sends is dropped: it is counted here and nowhere else used.
type SupervisorCounters struct {
	PacketsSent atomic.Uint64 // mix packets sent to the supervisor
	BytesSent   atomic.Uint64
	SendErrors  atomic.Uint64
	DroppedRTP  atomic.Uint64 // audio RTP (any payload type but telephone-event) from the supervisor
	DroppedDTMF atomic.Uint64 // RFC 4733 telephone-events from the supervisor
	DroppedRTCP atomic.Uint64 // RTCP from the supervisor (on either port)
	DroppedJunk atomic.Uint64 // datagrams that are neither RTP nor RTCP
}

// SupervisorLegStats is a snapshot for the API and logs.
type SupervisorLegStats struct {
	Local       netip.AddrPort `json:"local_rtp"`
	Remote      netip.AddrPort `json:"remote_rtp"`
	Codec       Codec          `json:"codec"`
	SRTP        bool           `json:"srtp"` // the mix is sent as SRTP (SetSRTP)
	PacketsSent uint64         `json:"packets_sent"`
	SendErrors  uint64         `json:"send_errors"`
	Dropped     uint64         `json:"supervisor_packets_dropped"`
	DroppedRTP  uint64         `json:"dropped_rtp"`
	DroppedDTMF uint64         `json:"dropped_dtmf"`
	DroppedRTCP uint64         `json:"dropped_rtcp"`
}

// supDest is where the mix goes, replaced as a whole on each offer/answer.
type supDest struct {
	rtp   netip.AddrPort
	codec Codec
	send  bool // the supervisor's SDP lets it receive (sendrecv or recvonly)
	dtmf  [128]bool
}

// supSRTP is the supervisor stream's protection: nil pointer means plain
// RTP; ctx nil means an unusable key was given and nothing is sent.
type supSRTP struct {
	ctx *srtpCtx
}

// SupervisorLeg is the media side of a SIP supervisor's call: bib sends the
// call's mix to the supervisor, a=sendonly, from its own RTP/RTCP port pair;
// whatever the supervisor sends (RTP audio, RTCP, RFC 4733 digits) is read
// and dropped. Nothing it receives is relayed, mixed or recorded: the read
// loops only count. It implements MixOutput: add it to the call's Mixer.
type SupervisorLeg struct {
	log        *slog.Logger
	rtp, rtcp  *net.UDPConn
	release    func()
	local      netip.AddrPort
	localRTCP  netip.AddrPort
	dest       atomic.Pointer[supDest]
	srtp       atomic.Pointer[supSRTP]
	srtpMu     sync.Mutex // serialises SetSRTP, guards srtpLast
	srtpLast   *srtpCtx   // the last usable context, kept across a plain interlude
	stamp      rtpStamp   // mixer goroutine only
	buf        []byte     // mixer goroutine only
	ebuf       []byte     // mixer goroutine only: buf encrypted
	wg         sync.WaitGroup
	closing    atomic.Bool
	closeOnce  sync.Once
	C          SupervisorCounters
	dropNotify func(n uint64)
}

var _ MixOutput = (*SupervisorLeg)(nil)

// NewSupervisorLeg binds a port pair from the engine's range and starts the
// read loops that drop what the supervisor sends. onDrop, if not nil, is
// called with 1 for every dropped datagram (for a server-wide counter); it
// must be cheap and must not block.
func NewSupervisorLeg(e *Engine, log *slog.Logger, onDrop func(n uint64)) (*SupervisorLeg, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rtpc, rtcpc, release, err := e.AllocatePair()
	if err != nil {
		return nil, fmt.Errorf("supervisor leg: %w", err)
	}
	s := &SupervisorLeg{
		log: log, rtp: rtpc, rtcp: rtcpc, release: release,
		local:      rtpc.LocalAddr().(*net.UDPAddr).AddrPort(),
		localRTCP:  rtcpc.LocalAddr().(*net.UDPAddr).AddrPort(),
		stamp:      newRTPStamp(),
		buf:        make([]byte, rtpHeaderMin+mixSlotBytes),
		ebuf:       make([]byte, rtpHeaderMin+mixSlotBytes+srtpMaxTrailer),
		dropNotify: onDrop,
	}
	s.wg.Add(2)
	go func() { defer s.wg.Done(); s.readLoop(s.rtp, false) }()
	go func() { defer s.wg.Done(); s.readLoop(s.rtcp, true) }()
	return s, nil
}

// Local returns bib's RTP and RTCP addresses for the SDP sent to the
// supervisor (which must say a=sendonly).
func (s *SupervisorLeg) Local() (rtp, rtcp netip.AddrPort) { return s.local, s.localRTCP }

// SetRemote applies the supervisor's SDP: the mix goes to d.RTP, encoded
// with the first of d's codecs the mixer can encode (PCMU, PCMA, G722), and
// only while d lets the supervisor receive (sendrecv or recvonly; a
// sendrecv offer is answered sendonly by the signalling layer). It returns
// the chosen codec, which the answer must list and the Mixer output must
// use.
func (s *SupervisorLeg) SetRemote(d MediaDesc) (Codec, error) {
	nd := &supDest{rtp: d.RTP, send: (d.Mode == SendRecv || d.Mode == RecvOnly) && d.RTP.Port() != 0 && !d.RTP.Addr().IsUnspecified()}
	found := false
	for _, c := range d.Codecs {
		if c.Is("telephone-event") && c.PT < 128 {
			nd.dtmf[c.PT] = true
			continue
		}
		if _, ok := codec.Lookup(c.Name); ok && !found && c.PT < 128 {
			nd.codec, found = c, true
			nd.codec.Name = strings.ToUpper(c.Name)
		}
	}
	if !found {
		return Codec{}, fmt.Errorf("supervisor leg: %w", ErrNoCommonCodec)
	}
	s.dest.Store(nd)
	return nd.codec, nil
}

// SetSRTP sets bib's sending key toward the supervisor (the a=crypto of
// the SDP bib sent it); nil sends plain RTP. The same key as before keeps
// the encryption context, so the rollover counter goes on. An unusable key
// is an error and stops the mix until a usable key or nil is set: nothing
// goes out in the clear that was meant to be encrypted (such frames count
// as send errors). It may be called while the mixer runs.
func (s *SupervisorLeg) SetSRTP(send *SRTPKey) error {
	s.srtpMu.Lock()
	defer s.srtpMu.Unlock()
	if send == nil {
		s.srtp.Store(nil)
		return nil
	}
	if c := s.srtpLast; c != nil && c.key.Equal(*send) {
		if cur := s.srtp.Load(); cur == nil || cur.ctx != c {
			s.srtp.Store(&supSRTP{ctx: c})
		}
		return nil
	}
	c, err := newSRTPCtx(*send, false)
	if err != nil {
		s.srtp.Store(&supSRTP{})
		return fmt.Errorf("supervisor leg: %w", err)
	}
	s.srtpLast = c
	s.srtp.Store(&supSRTP{ctx: c})
	return nil
}

// Codec returns the codec chosen by SetRemote.
func (s *SupervisorLeg) Codec() Codec {
	if d := s.dest.Load(); d != nil {
		return d.codec
	}
	return Codec{}
}

// WriteMix sends one mixed frame. The stream has its own SSRC; the sequence
// number grows by one per packet sent and the timestamp by the frame's
// samples on every frame, also while the supervisor holds and nothing is
// sent (RFC 3550 section 5.1), whatever the parties of the call do.
func (s *SupervisorLeg) WriteMix(f *MixFrame) {
	d := s.dest.Load()
	if d == nil || !d.send || s.closing.Load() || !strings.EqualFold(f.Codec, d.codec.Name) {
		s.stamp.skip(f.Samples) // time passes, no packet: the timestamp moves, the sequence does not
		return
	}
	seq, ts, first := s.stamp.next(f.Samples)
	b := s.buf[:rtpHeaderMin+len(f.Payload)]
	b[0] = 0x80
	b[1] = d.codec.PT & 0x7f
	if first {
		b[1] |= 0x80
	}
	b[2], b[3] = byte(seq>>8), byte(seq)
	b[4], b[5], b[6], b[7] = byte(ts>>24), byte(ts>>16), byte(ts>>8), byte(ts)
	ssrc := s.stamp.ssrc
	b[8], b[9], b[10], b[11] = byte(ssrc>>24), byte(ssrc>>16), byte(ssrc>>8), byte(ssrc)
	copy(b[rtpHeaderMin:], f.Payload)
	if sp := s.srtp.Load(); sp != nil {
		if sp.ctx == nil {
			s.C.SendErrors.Add(1)
			return
		}
		eb, err := sp.ctx.encrypt(s.ebuf, b)
		if err != nil {
			s.C.SendErrors.Add(1)
			return
		}
		b = eb
	}
	if _, err := s.rtp.WriteToUDPAddrPort(b, d.rtp); err != nil {
		s.C.SendErrors.Add(1)
		return
	}
	s.C.PacketsSent.Add(1)
	s.C.BytesSent.Add(uint64(len(b)))
}

// readLoop reads and drops everything arriving on one of the leg's
// sockets, counting it by kind. It never forwards a byte.
func (s *SupervisorLeg) readLoop(c *net.UDPConn, rtcpPort bool) {
	buf := make([]byte, readBufSize)
	fails := 0
	for {
		n, _, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if s.closing.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			if fails++; fails >= errorBudget {
				s.log.Error("supervisor leg read loop giving up", "err", err)
				return
			}
			continue
		}
		fails = 0
		b := buf[:n]
		switch {
		case n < 8 || b[0]>>6 != 2:
			s.C.DroppedJunk.Add(1)
		case rtcpPort || isRTCP(b):
			s.C.DroppedRTCP.Add(1)
		default:
			if d := s.dest.Load(); d != nil && d.dtmf[b[1]&0x7f] {
				s.C.DroppedDTMF.Add(1)
			} else {
				s.C.DroppedRTP.Add(1)
			}
		}
		if s.dropNotify != nil {
			s.dropNotify(1)
		}
	}
}

// Dropped returns how many datagrams the supervisor sent (all dropped).
func (s *SupervisorLeg) Dropped() uint64 {
	return s.C.DroppedRTP.Load() + s.C.DroppedDTMF.Load() + s.C.DroppedRTCP.Load() + s.C.DroppedJunk.Load()
}

// Stats returns a snapshot.
func (s *SupervisorLeg) Stats() SupervisorLegStats {
	st := SupervisorLegStats{
		Local:       s.local,
		PacketsSent: s.C.PacketsSent.Load(),
		SendErrors:  s.C.SendErrors.Load(),
		Dropped:     s.Dropped(),
		DroppedRTP:  s.C.DroppedRTP.Load(),
		DroppedDTMF: s.C.DroppedDTMF.Load(),
		DroppedRTCP: s.C.DroppedRTCP.Load(),
	}
	if d := s.dest.Load(); d != nil {
		st.Remote, st.Codec = d.rtp, d.codec
	}
	st.SRTP = s.srtp.Load() != nil
	return st
}

// Close stops the read loops and frees the ports. Remove the leg from its
// mixer first. Idempotent.
func (s *SupervisorLeg) Close() error {
	s.closeOnce.Do(func() {
		s.closing.Store(true)
		past := time.Unix(1, 0)
		s.rtp.SetReadDeadline(past)
		s.rtcp.SetReadDeadline(past)
		s.wg.Wait()
		s.release()
		s.log.Info("supervisor leg closed", "packets_sent", s.C.PacketsSent.Load(), "supervisor_packets_dropped", s.Dropped())
	})
	return nil
}
