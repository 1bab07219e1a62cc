package siptest

import (
	"errors"
	"fmt"
	"strings"

	"github.com/bib-project/bib/bridge"
	"github.com/pion/srtp/v3"
)

// SRTP protects what a test party sends and opens what it receives, with
// SDES keys (RFC 4568), independently of bib's own SRTP code.
type SRTP struct {
	enc, dec *srtp.Context
}

func srtpContext(k bridge.SRTPKey) (*srtp.Context, error) {
	prof := srtp.ProtectionProfileAes128CmHmacSha1_80
	if k.Suite == bridge.SuiteAES128SHA1_32 {
		prof = srtp.ProtectionProfileAes128CmHmacSha1_32
	}
	if len(k.Master) != 30 {
		return nil, fmt.Errorf("siptest: srtp key of %d bytes", len(k.Master))
	}
	return srtp.CreateContext(k.Master[:16], k.Master[16:], prof)
}

// NewSRTP makes a session sending with send and receiving with recv (the
// other side's key; nil when the party only sends).
func NewSRTP(send bridge.SRTPKey, recv *bridge.SRTPKey) (*SRTP, error) {
	enc, err := srtpContext(send)
	if err != nil {
		return nil, err
	}
	s := &SRTP{enc: enc}
	if recv != nil {
		if s.dec, err = srtpContext(*recv); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Seal encrypts an RTP packet.
func (s *SRTP) Seal(pkt []byte) []byte {
	out, err := s.enc.EncryptRTP(nil, pkt, nil)
	if err != nil {
		panic(err)
	}
	return out
}

// Open authenticates and decrypts an SRTP packet.
func (s *SRTP) Open(pkt []byte) ([]byte, error) {
	if s.dec == nil {
		return nil, errors.New("siptest: no receive key")
	}
	return s.dec.DecryptRTP(nil, pkt, nil)
}

// CryptoLine is an a=crypto SDP line for key k under tag.
func CryptoLine(tag int, k bridge.SRTPKey) string {
	return fmt.Sprintf("a=crypto:%d %s %s\r\n", tag, k.Suite, k.Inline())
}

// ParseCrypto returns the key of body's a=crypto lines (all of them, in
// order, with their tags).
func ParseCrypto(body []byte) (tags []string, keys []bridge.SRTPKey, err error) {
	for _, ln := range strings.Split(strings.ReplaceAll(string(body), "\r\n", "\n"), "\n") {
		v, ok := strings.CutPrefix(ln, "a=crypto:")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) < 3 {
			return nil, nil, fmt.Errorf("siptest: bad a=crypto %q", ln)
		}
		k, err := bridge.ParseSDES(f[1], f[2])
		if err != nil {
			return nil, nil, err
		}
		tags, keys = append(tags, f[0]), append(keys, k)
	}
	return tags, keys, nil
}
