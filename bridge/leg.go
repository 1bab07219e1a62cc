package bridge

import (
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"time"
)

// LegCounters are a leg's packet counters. "In" counts what arrived from the
// leg's party, "Out" what bib sent to it. All are updated with atomics by
// the leg's read goroutines and may be read at any time.
type LegCounters struct {
	PacketsIn     atomic.Uint64 // valid RTP packets from the party (relayed or not)
	BytesIn       atomic.Uint64
	PacketsOut    atomic.Uint64 // RTP packets sent to the party
	BytesOut      atomic.Uint64
	RTCPIn        atomic.Uint64
	RTCPOut       atomic.Uint64
	DroppedSource atomic.Uint64 // datagrams from an address other than the party's
	Malformed     atomic.Uint64 // not RTP version 2, bad header lengths
	Oversize      atomic.Uint64 // datagrams longer than 1500 bytes
	NoDestination atomic.Uint64 // valid packets with nowhere to go (other party unknown or port 0)
	SendErrors    atomic.Uint64
	// SRTP legs only: datagrams dropped because their authentication
	// failed (wrong key, forged, tampered, too short for a tag) or because
	// their packet index was already received or is older than the replay
	// window. Neither is relayed nor shown to the taps.
	SRTPAuthFailed atomic.Uint64
	SRTPReplayed   atomic.Uint64
}

// LegStats is a snapshot of a leg for the API.
type LegStats struct {
	Side          string         `json:"side"`
	Local         netip.AddrPort `json:"local_rtp"`
	LocalRTCP     netip.AddrPort `json:"local_rtcp"`
	Remote        netip.AddrPort `json:"remote_rtp"`
	RemoteRTCP    netip.AddrPort `json:"remote_rtcp,omitempty"`
	RTCPMux       bool           `json:"rtcp_mux"`
	Latched       bool           `json:"latched"`
	Mode          string         `json:"mode"`
	Codecs        []Codec        `json:"codecs"`
	PacketsIn     uint64         `json:"packets_in"`
	BytesIn       uint64         `json:"bytes_in"`
	PacketsOut    uint64         `json:"packets_out"`
	BytesOut      uint64         `json:"bytes_out"`
	RTCPIn        uint64         `json:"rtcp_in"`
	RTCPOut       uint64         `json:"rtcp_out"`
	DroppedSource uint64         `json:"dropped_source"`
	Malformed     uint64         `json:"malformed"`
	Oversize      uint64         `json:"oversize"`
	NoDestination uint64         `json:"no_destination"`
	SendErrors    uint64         `json:"send_errors"`
	// SRTP: the party sends SRTP (its SDP carried a key); the counters
	// below stay 0 on a plain RTP leg.
	SRTP           bool   `json:"srtp"`
	SRTPAuthFailed uint64 `json:"srtp_auth_failed"`
	SRTPReplayed   uint64 `json:"srtp_replayed"`
}

// peer is where a leg's party receives media, as signalled in its SDP. It
// is replaced as a whole (copy on write) on every offer/answer.
type peer struct {
	rtp, rtcp netip.AddrPort
	mux       bool
	// srtp authenticates and decrypts what the party sends, nil for plain
	// RTP. Only the reader of the leg's RTP socket uses it; successive peer
	// values share it while the party's key stays the same.
	srtp *srtpCtx
}

// Leg is one side of a call: the sockets bib opened facing one party.
type Leg struct {
	call *Call
	side Side
	rtp  *net.UDPConn
	rtcp *net.UDPConn
	pair int

	local, localRTCP netip.AddrPort
	peer             atomic.Pointer[peer]
	latched          atomic.Bool
	desc             atomic.Pointer[MediaDesc]
	srtpLast         atomic.Pointer[srtpCtx] // last inbound SRTP context, kept across plain interludes

	C LegCounters
}

// Local returns bib's RTP and RTCP addresses on this leg: what goes into
// the SDP sent to this leg's party.
func (l *Leg) Local() (rtp, rtcp netip.AddrPort) { return l.local, l.localRTCP }

// Desc returns the party's last signalled media description.
func (l *Leg) Desc() MediaDesc {
	if d := l.desc.Load(); d != nil {
		return *d
	}
	return MediaDesc{}
}

func (l *Leg) setRemote(d MediaDesc) {
	dc := d
	dc.Codecs = append([]Codec(nil), d.Codecs...)
	if d.SRTP != nil {
		k := d.SRTP.clone()
		dc.SRTP = &k
	}
	l.desc.Store(&dc)
	p := &peer{rtp: d.RTP, rtcp: d.RTCP, mux: d.RTCPMux, srtp: l.inboundSRTP(dc.SRTP)}
	if !p.rtcp.IsValid() && p.rtp.IsValid() && !p.mux {
		p.rtcp = netip.AddrPortFrom(p.rtp.Addr(), p.rtp.Port()+1)
	}
	old := l.peer.Swap(p)
	if old == nil || old.rtp != p.rtp {
		l.latched.Store(false)
	}
}

// inboundSRTP returns the context for the party's sending key k: the one
// in use if k is unchanged (RFC 4568 section 7.1.4: the rollover counter
// and replay state carry on), else a new one. An unusable key gives a
// context that rejects every packet: nothing is relayed in the clear that
// the party meant to protect.
func (l *Leg) inboundSRTP(k *SRTPKey) *srtpCtx {
	if k == nil {
		return nil
	}
	cur := l.srtpLast.Load()
	if p := l.peer.Load(); p != nil && p.srtp != nil {
		cur = p.srtp
	}
	if cur != nil && cur.ctx != nil && cur.key.Equal(*k) {
		return cur
	}
	c, err := newSRTPCtx(*k, true)
	if err != nil {
		l.call.log.Error("srtp key unusable, dropping all media from the party", "leg", l.side.String(), "err", err)
		return &srtpCtx{key: k.clone()}
	}
	l.srtpLast.Store(c)
	return c
}

func (l *Leg) stats() LegStats {
	s := LegStats{
		Side:          l.side.String(),
		Local:         l.local,
		LocalRTCP:     l.localRTCP,
		Latched:       l.latched.Load(),
		PacketsIn:     l.C.PacketsIn.Load(),
		BytesIn:       l.C.BytesIn.Load(),
		PacketsOut:    l.C.PacketsOut.Load(),
		BytesOut:      l.C.BytesOut.Load(),
		RTCPIn:        l.C.RTCPIn.Load(),
		RTCPOut:       l.C.RTCPOut.Load(),
		DroppedSource: l.C.DroppedSource.Load(),
		Malformed:     l.C.Malformed.Load(),
		Oversize:      l.C.Oversize.Load(),
		NoDestination: l.C.NoDestination.Load(),
		SendErrors:    l.C.SendErrors.Load(),

		SRTPAuthFailed: l.C.SRTPAuthFailed.Load(),
		SRTPReplayed:   l.C.SRTPReplayed.Load(),
	}
	if p := l.peer.Load(); p != nil {
		s.Remote, s.RemoteRTCP, s.RTCPMux = p.rtp, p.rtcp, p.mux
		s.SRTP = p.srtp != nil
	}
	d := l.Desc()
	s.Mode = d.Mode.String()
	s.Codecs = d.Codecs
	return s
}

// errorBudget: consecutive socket errors after which a read loop gives up.
const errorBudget = 100

// readRTP is the hot loop for the leg's RTP socket: read a datagram from the
// party, filter it (and on an SRTP leg authenticate and decrypt it into a
// second buffer), relay it out of the other leg's socket unchanged, then
// show it (decrypted) to the taps. Two buffers, one Packet, no allocation,
// no lock, no log line per packet.
func (l *Leg) readRTP() {
	c := l.call
	out := c.legs[l.side.Other()]
	dir := Direction(l.side)
	buf := make([]byte, readBufSize)
	dec := make([]byte, readBufSize) // an SRTP packet decrypted, for the taps
	var stamp stampBuf
	oob := stamp.bytes()
	pkt := &Packet{}
	var lastSSRC uint32
	var haveSSRC bool
	fails := 0
	for {
		n, oobn, _, src, err := l.rtp.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			if c.closing.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			if fails++; fails == 1 || fails%10 == 0 {
				c.log.Warn("rtp read error", "leg", l.side.String(), "err", err, "consecutive", fails)
			}
			if fails >= errorBudget {
				c.log.Error("rtp read loop giving up", "leg", l.side.String(), "err", err)
				return
			}
			continue
		}
		fails = 0
		p := l.peer.Load()
		if p == nil || src != p.rtp {
			// RFC 5761: with rtcp-mux RTCP arrives here too, from the same address.
			l.C.DroppedSource.Add(1)
			continue
		}
		if n >= readBufSize {
			l.C.Oversize.Add(1)
			continue
		}
		b := buf[:n]
		if p.mux && isRTCP(b) {
			// SRTCP too: passed through unauthenticated (see srtp.go).
			l.relayRTCP(b, out)
			continue
		}
		if p.srtp != nil {
			if !l.openSRTP(p.srtp, b, dec, pkt) {
				continue
			}
		} else if err := parseRTP(b, pkt); err != nil {
			l.C.Malformed.Add(1)
			continue
		}
		if !l.latched.Load() {
			l.latched.Store(true)
		}
		l.C.PacketsIn.Add(1)
		l.C.BytesIn.Add(uint64(n))
		op := out.peer.Load()
		if op == nil || op.rtp.Port() == 0 || op.rtp.Addr().IsUnspecified() {
			l.C.NoDestination.Add(1)
		} else {
			// Counted before the send, so a packet its receiver already
			// holds is always in the counters; a failure takes it back.
			out.C.PacketsOut.Add(1)
			out.C.BytesOut.Add(uint64(n))
			if _, err := out.rtp.WriteToUDPAddrPort(b, op.rtp); err != nil {
				l.C.SendErrors.Add(1)
				out.C.PacketsOut.Add(^uint64(0))
				out.C.BytesOut.Add(^uint64(n - 1))
			}
		}
		taps := c.taps.Load()
		if len(*taps) == 0 && haveSSRC && pkt.Header.SSRC == lastSSRC {
			continue
		}
		pkt.Arrival = c.arrival(time.Now(), kernelStamp(&stamp, oobn))
		if !haveSSRC || pkt.Header.SSRC != lastSSRC {
			if haveSSRC {
				c.ssrcChanged(l.side, pkt.Arrival)
			}
			haveSSRC, lastSSRC = true, pkt.Header.SSRC
		}
		for _, t := range *taps {
			t.RTP(dir, pkt)
		}
	}
}

// readRTCP relays RTCP from the leg's RTCP socket (no rtcp-mux). SRTCP is
// relayed the same way, unchanged and unauthenticated.
func (l *Leg) readRTCP() {
	c := l.call
	out := c.legs[l.side.Other()]
	buf := make([]byte, readBufSize)
	fails := 0
	for {
		n, src, err := l.rtcp.ReadFromUDPAddrPort(buf)
		if err != nil {
			if c.closing.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			if fails++; fails >= errorBudget {
				c.log.Error("rtcp read loop giving up", "leg", l.side.String(), "err", err)
				return
			}
			continue
		}
		fails = 0
		p := l.peer.Load()
		if p == nil || (src != p.rtcp && src != p.rtp) {
			l.C.DroppedSource.Add(1)
			continue
		}
		if n >= readBufSize {
			l.C.Oversize.Add(1)
			continue
		}
		l.relayRTCP(buf[:n], out)
	}
}

// relayRTCP forwards an RTCP compound packet to the other party, on its
// RTCP port, or its RTP port when that party negotiated rtcp-mux.
func (l *Leg) relayRTCP(b []byte, out *Leg) {
	if len(b) < 8 || b[0]>>6 != 2 {
		l.C.Malformed.Add(1)
		return
	}
	l.C.RTCPIn.Add(1)
	op := out.peer.Load()
	if op == nil || op.rtp.Port() == 0 {
		l.C.NoDestination.Add(1)
		return
	}
	conn, dst := out.rtcp, op.rtcp
	if op.mux {
		conn, dst = out.rtp, op.rtp
	}
	out.C.RTCPOut.Add(1) // before the send, as for RTP
	if _, err := conn.WriteToUDPAddrPort(b, dst); err != nil {
		l.C.SendErrors.Add(1)
		out.C.RTCPOut.Add(^uint64(0))
	}
}

func (l *Leg) close() error {
	past := time.Unix(1, 0)
	l.rtp.SetReadDeadline(past)
	l.rtcp.SetReadDeadline(past)
	return errors.Join(l.rtp.Close(), l.rtcp.Close())
}
