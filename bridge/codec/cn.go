package codec

import (
	"fmt"
	"strings"
)

// CNPayloadType is the static payload type of comfort noise (RFC 3551
// section 6, RFC 3389).
const CNPayloadType = 13

// IsCN reports whether a payload type carries comfort noise (RFC 3389): the
// static payload type 13, or any payload type whose rtpmap encoding name is
// "CN" (case-insensitive).
func IsCN(pt uint8, name string) bool {
	return pt == CNPayloadType || strings.EqualFold(name, "CN")
}

// ParseCN returns the noise level of a comfort noise payload (RFC 3389
// section 3.1) in -dBov: 0 is the loudest (a full-scale square wave's
// power), 127 the quietest. The first byte's most significant bit is
// reserved and ignored. Spectral information (the reflection coefficients
// that may follow) is not decoded.
func ParseCN(payload []byte) (levelDBov uint8, err error) {
	if len(payload) < 1 {
		return 0, fmt.Errorf("comfort noise: %w", ErrShortPayload)
	}
	return payload[0] & 0x7F, nil
}
