package codec

import (
	"errors"
	"fmt"
)

// ErrShortPayload is returned for a payload too short for its format.
var ErrShortPayload = errors.New("payload too short")

// EventSize is the length of one RFC 4733 named-event payload.
const EventSize = 4

// Event is one RFC 4733 telephone-event payload (section 2.3):
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|     event     |E|R| volume    |          duration             |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
type Event struct {
	Code     uint8  // event code; 0-15 are the DTMF digits (RFC 4733 section 3.2)
	End      bool   // E bit: the last packets of the event
	Volume   uint8  // power level in -dBm0, 0-63 (section 2.5.2.2)
	Duration uint16 // in RTP timestamp units since the event began
}

// ParseEvent decodes the first EventSize bytes of payload. The R bit is
// ignored as section 2.3.3 requires; bytes after the first event (RFC 2198
// redundancy is not handled here) are ignored.
func ParseEvent(payload []byte) (Event, error) {
	if len(payload) < EventSize {
		return Event{}, fmt.Errorf("telephone-event of %d bytes: %w", len(payload), ErrShortPayload)
	}
	return Event{
		Code:     payload[0],
		End:      payload[1]&0x80 != 0,
		Volume:   payload[1] & 0x3F,
		Duration: uint16(payload[2])<<8 | uint16(payload[3]),
	}, nil
}

// PutEvent writes e into dst[:EventSize] and returns EventSize, or returns 0
// and writes nothing if dst is shorter. The R bit is sent as zero and Volume
// is truncated to its 6 bits.
func PutEvent(dst []byte, e Event) int {
	if len(dst) < EventSize {
		return 0
	}
	b1 := e.Volume & 0x3F
	if e.End {
		b1 |= 0x80
	}
	dst[0], dst[1], dst[2], dst[3] = e.Code, b1, byte(e.Duration>>8), byte(e.Duration)
	return EventSize
}

// AppendEvent appends the payload of e to dst.
func AppendEvent(dst []byte, e Event) []byte {
	var b [EventSize]byte
	PutEvent(b[:], e)
	return append(dst, b[:]...)
}

const dtmfDigits = "0123456789*#ABCD"

// Digit returns the DTMF character of the event ('0'-'9', '*', '#',
// 'A'-'D' for codes 0-15), or 0 for any other event.
func (e Event) Digit() byte {
	if int(e.Code) < len(dtmfDigits) {
		return dtmfDigits[e.Code]
	}
	return 0
}

// EventCode returns the event code of a DTMF character ('0'-'9', '*', '#',
// 'A'-'D', or 'a'-'d'); ok is false for other characters.
func EventCode(digit byte) (code uint8, ok bool) {
	switch {
	case digit >= '0' && digit <= '9':
		return digit - '0', true
	case digit == '*':
		return 10, true
	case digit == '#':
		return 11, true
	case digit >= 'A' && digit <= 'D':
		return digit - 'A' + 12, true
	case digit >= 'a' && digit <= 'd':
		return digit - 'a' + 12, true
	}
	return 0, false
}
