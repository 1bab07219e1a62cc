package bridge

import (
	"errors"
	"unsafe"
)

// Wire limits. A datagram longer than maxDatagram is oversize and dropped:
// RTP audio never needs it, and relaying it could exceed the path MTU.
const (
	maxDatagram  = 1500
	readBufSize  = maxDatagram + 1 // the extra byte detects oversize reads
	rtpHeaderMin = 12
)

// stampBuf receives one datagram's control messages: room for
// SCM_TIMESTAMPNS and a little more, 8-byte aligned for the cmsghdr.
type stampBuf [8]uint64

func (b *stampBuf) bytes() []byte { return unsafe.Slice((*byte)(unsafe.Pointer(&b[0])), len(b)*8) }

var (
	errShort   = errors.New("rtp: shorter than fixed header")
	errVersion = errors.New("rtp: version is not 2")
	errHeader  = errors.New("rtp: header fields exceed packet")
	errPadding = errors.New("rtp: bad padding length")
)

// isRTCP reports whether a datagram on a multiplexed port is RTCP: RFC 5761
// section 4 distinguishes by the second byte (RTCP packet types 192-223 fall
// where RTP marker+payload type would be 64-95, which RTP must not use).
func isRTCP(b []byte) bool {
	return len(b) >= 2 && b[1] >= 192 && b[1] <= 223
}

// parseRTP validates an RTP datagram (RFC 3550 section 5.1) and fills pkt's
// header and payload without allocating once pkt.Header's slices have grown.
// Raw is set to b.
func parseRTP(b []byte, pkt *Packet) error {
	if len(b) < rtpHeaderMin {
		return errShort
	}
	if b[0]>>6 != 2 {
		return errVersion
	}
	n, err := pkt.Header.Unmarshal(b)
	if err != nil {
		return errHeader
	}
	end := len(b)
	if pkt.Header.Padding {
		p := int(b[end-1])
		if p == 0 || p > end-n {
			return errPadding
		}
		end -= p
	}
	pkt.Payload = b[n:end]
	pkt.Raw = b
	return nil
}
