package bridge

import (
	"net/netip"
	"strings"
	"time"

	"github.com/pion/rtp"
)

// Side names one of a call's two legs. SideA faces the caller (the party that
// sent the initial INVITE), SideB the callee.
type Side uint8

const (
	SideA Side = 0
	SideB Side = 1
)

// Other returns the opposite side.
func (s Side) Other() Side { return s ^ 1 }

func (s Side) String() string {
	if s == SideA {
		return "a"
	}
	return "b"
}

// Direction says which party sent a relayed packet. AtoB is audio spoken by
// the caller (received on leg A, sent out of leg B).
type Direction uint8

const (
	AtoB Direction = 0
	BtoA Direction = 1
)

// From returns the side whose party sent packets in this direction.
func (d Direction) From() Side { return Side(d) }

func (d Direction) String() string {
	if d == AtoB {
		return "a->b"
	}
	return "b->a"
}

// Mode is an SDP media direction attribute (RFC 3264 section 6.1) as seen
// from the party that wrote the SDP.
type Mode uint8

const (
	SendRecv Mode = iota
	SendOnly
	RecvOnly
	Inactive
)

func (m Mode) String() string {
	switch m {
	case SendOnly:
		return "sendonly"
	case RecvOnly:
		return "recvonly"
	case Inactive:
		return "inactive"
	}
	return "sendrecv"
}

// ParseMode maps an SDP attribute name to a Mode; ok is false for other names.
func ParseMode(attr string) (m Mode, ok bool) {
	switch attr {
	case "sendrecv":
		return SendRecv, true
	case "sendonly":
		return SendOnly, true
	case "recvonly":
		return RecvOnly, true
	case "inactive":
		return Inactive, true
	}
	return SendRecv, false
}

// Codec is one payload type of a negotiated audio stream (RFC 4566 rtpmap).
type Codec struct {
	PT       uint8  `json:"pt"`
	Name     string `json:"name"`     // encoding name as in rtpmap, e.g. PCMU, PCMA, G722, telephone-event, CN
	Rate     uint32 `json:"rate"`     // RTP clock rate in Hz (8000 for G722 per RFC 3551)
	Channels uint8  `json:"channels"` // 1 unless rtpmap says otherwise
	Fmtp     string `json:"fmtp,omitempty"`
}

// Is reports whether the codec has the given encoding name (case-insensitive).
func (c Codec) Is(name string) bool { return strings.EqualFold(c.Name, name) }

// MediaDesc is what one party's SDP says about its audio stream: where it
// wants to receive RTP and RTCP, which payload types it uses and in which
// direction. It is the only thing package sip hands down about a session.
type MediaDesc struct {
	RTP     netip.AddrPort `json:"rtp"`            // c= address and m= port; port 0 means the stream is disabled
	RTCP    netip.AddrPort `json:"rtcp,omitempty"` // a=rtcp or RTP port + 1
	RTCPMux bool           `json:"rtcp_mux"`       // a=rtcp-mux negotiated (RFC 5761)
	Mode    Mode           `json:"-"`
	Codecs  []Codec        `json:"codecs"` // in preference order
	Ptime   int            `json:"ptime_ms,omitempty"`
	// SRTP is the key the party sends its RTP with (its a=crypto, RFC
	// 4568), nil for plain RTP. bib authenticates and decrypts with it and
	// relays the party's datagrams unchanged; the other party must have
	// been given the same key. Never serialised.
	SRTP *SRTPKey `json:"-"`
}

// Hold reports whether this description puts the stream on hold (RFC 3264
// section 8.4: sendonly or inactive, or the legacy 0.0.0.0 address).
func (m MediaDesc) Hold() bool {
	return m.Mode == SendOnly || m.Mode == Inactive || (m.RTP.Addr().IsUnspecified() && m.RTP.IsValid())
}

// Codec returns the codec bound to payload type pt.
func (m MediaDesc) Codec(pt uint8) (Codec, bool) {
	for _, c := range m.Codecs {
		if c.PT == pt {
			return c, true
		}
	}
	return Codec{}, false
}

// Packet is one relayed RTP packet as a tap sees it. Every slice aliases the
// relay's read (or decrypt) buffer and is valid only during the Tap.RTP call.
// On an SRTP leg the packet is the decrypted one: taps always see plain RTP.
type Packet struct {
	Header  rtp.Header
	Payload []byte // RTP payload (after CSRCs, extension and padding removed)
	// Raw is the whole datagram as received and relayed; on an SRTP leg it
	// is the decrypted RTP packet (no authentication tag), while the
	// encrypted datagram is what was relayed.
	Raw     []byte
	Arrival int64 // receive time, nanoseconds on the call's monotonic clock (see Call.Now)
}

// Tap observes a call's media. RTP runs on a relay goroutine for every
// packet that passed source filtering (and, on an SRTP leg,
// authentication), once per direction's packet, and must not block,
// allocate on its steady path or retain pkt: copy what you keep into your
// own bounded queue and count overflow. Event runs off the hot path when
// the call's media state changes.
type Tap interface {
	RTP(dir Direction, pkt *Packet)
	Event(ev Event)
}

// EventKind names a media state change.
type EventKind uint8

const (
	// EvMedia: a new offer/answer completed (initial, re-INVITE or UPDATE);
	// Event.Media holds both parties' descriptions.
	EvMedia EventKind = iota + 1
	// EvHold and EvResume: a party put the other on hold, or resumed.
	EvHold
	EvResume
	// EvSSRC: the SSRC in a direction changed.
	EvSSRC
	// EvEnd: the call ended; no further RTP or events follow.
	EvEnd
	// EvAnswer: the call was answered (timeline anchor for recordings).
	EvAnswer
)

func (k EventKind) String() string {
	switch k {
	case EvMedia:
		return "media"
	case EvHold:
		return "hold"
	case EvResume:
		return "resume"
	case EvSSRC:
		return "ssrc_change"
	case EvEnd:
		return "end"
	case EvAnswer:
		return "answer"
	}
	return "unknown"
}

// Event is a media state change delivered to taps.
type Event struct {
	Kind  EventKind
	At    time.Time // wall clock
	Mono  int64     // same instant on the call's monotonic clock (comparable with Packet.Arrival)
	Side  Side      // for hold/resume: the side that asked for it; for SSRC: the sending side
	Media [2]MediaDesc
	// Reason says why the call ended (EvEnd) in a few words, e.g. "bye from a".
	Reason string
}
