package bridge

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
)

// SRTP with SDES keys (RFC 3711, RFC 4568).
//
// On call legs bib does not terminate SRTP: the signalling layer hands each
// party the other's a=crypto key unchanged, so the datagrams a party sends
// are relayed byte for byte, still encrypted. bib knows each party's sending
// key (MediaDesc.SRTP) and uses it to authenticate and decrypt what arrives:
// a datagram that fails is dropped and counted, never relayed, and the taps
// (recorder, mixer, forks) see the decrypted packet. Streams bib originates
// itself (ForkStream, SupervisorLeg) are encrypted with bib's own key.
//
// SRTCP is relayed like RTCP, unchanged and filtered by source address
// only: it is neither authenticated nor decrypted by bib (the receiving
// party authenticates it).

// SDES crypto suites bib supports (RFC 4568 section 6.2).
const (
	SuiteAES128SHA1_80 = "AES_CM_128_HMAC_SHA1_80"
	SuiteAES128SHA1_32 = "AES_CM_128_HMAC_SHA1_32"
)

// srtpSuite is what bib knows of a crypto suite.
type srtpSuite struct {
	name    string
	profile srtp.ProtectionProfile
	keyLen  int // master key bytes
	saltLen int // master salt bytes
	tagLen  int // SRTP authentication tag bytes
}

var srtpSuites = []srtpSuite{
	{SuiteAES128SHA1_80, srtp.ProtectionProfileAes128CmHmacSha1_80, 16, 14, 10},
	{SuiteAES128SHA1_32, srtp.ProtectionProfileAes128CmHmacSha1_32, 16, 14, 4},
}

// srtpMaxTrailer is the most an SRTP packet adds to its RTP packet (the
// longest authentication tag; bib uses no MKI).
const srtpMaxTrailer = 10

// srtpReplayWindow is the replay window of an inbound context in packets
// (RFC 3711 section 3.3.2 asks for at least 64).
const srtpReplayWindow = 128

func lookupSuite(name string) (srtpSuite, bool) {
	for _, s := range srtpSuites {
		if strings.EqualFold(s.name, name) {
			return s, true
		}
	}
	return srtpSuite{}, false
}

func suiteNames() string {
	names := make([]string, len(srtpSuites))
	for i, s := range srtpSuites {
		names[i] = s.name
	}
	return strings.Join(names, ", ")
}

// SRTPKey is one SDES key: the crypto suite and the master key followed by
// the master salt (30 bytes for the AES_CM_128 suites), as carried base64
// encoded in an a=crypto line's inline key parameter.
type SRTPKey struct {
	Suite  string
	Master []byte // master key || master salt
}

// NewSRTPKey returns a fresh random key for suite (crypto/rand).
func NewSRTPKey(suite string) (SRTPKey, error) {
	s, ok := lookupSuite(suite)
	if !ok {
		return SRTPKey{}, fmt.Errorf("srtp: crypto suite %q is not supported (want one of %s)", suite, suiteNames())
	}
	k := SRTPKey{Suite: s.name, Master: make([]byte, s.keyLen+s.saltLen)}
	if _, err := rand.Read(k.Master); err != nil {
		return SRTPKey{}, fmt.Errorf("srtp: generate key: %w", err)
	}
	return k, nil
}

// ParseSDES parses the key parameters of an a=crypto attribute (RFC 4568
// section 9.1) for suite: "inline:<base64 key||salt>[|<lifetime>][|<MKI>:<length>]".
// The lifetime (decimal or 2^n) is checked and ignored. Master key
// identifiers and more than one key are not supported and give an error,
// as do unknown suites, bad base64 and a key of the wrong length.
func ParseSDES(suite, keyParams string) (SRTPKey, error) {
	s, ok := lookupSuite(suite)
	if !ok {
		return SRTPKey{}, fmt.Errorf("srtp: crypto suite %q is not supported (want one of %s)", suite, suiteNames())
	}
	kp := strings.TrimSpace(keyParams)
	if strings.Contains(kp, ";") {
		return SRTPKey{}, errors.New("srtp: more than one key in the key parameters is not supported")
	}
	method, info, ok := strings.Cut(kp, ":")
	if !ok || !strings.EqualFold(method, "inline") {
		return SRTPKey{}, fmt.Errorf("srtp: key parameters %q: key method must be inline", shorten(kp))
	}
	fields := strings.Split(info, "|")
	if len(fields) > 3 {
		return SRTPKey{}, errors.New("srtp: key parameters: too many |-separated fields")
	}
	for i, f := range fields[1:] {
		if strings.Contains(f, ":") {
			return SRTPKey{}, fmt.Errorf("srtp: key parameters: master key identifier (MKI) %q is not supported", shorten(f))
		}
		if i > 0 {
			return SRTPKey{}, errors.New("srtp: key parameters: lifetime given twice")
		}
		if err := checkLifetime(f); err != nil {
			return SRTPKey{}, err
		}
	}
	b64 := fields[0]
	if b64 == "" {
		return SRTPKey{}, errors.New("srtp: key parameters: inline key is empty")
	}
	if len(b64) > 256 {
		return SRTPKey{}, errors.New("srtp: key parameters: inline key is too long")
	}
	master, err := base64.StdEncoding.DecodeString(b64)
	if err != nil && !strings.HasSuffix(b64, "=") {
		// Some implementations leave out the padding.
		if m, err2 := base64.RawStdEncoding.DecodeString(b64); err2 == nil {
			master, err = m, nil
		}
	}
	if err != nil {
		return SRTPKey{}, fmt.Errorf("srtp: key parameters: inline key is not valid base64: %v", err)
	}
	if want := s.keyLen + s.saltLen; len(master) != want {
		return SRTPKey{}, fmt.Errorf("srtp: key parameters: inline key is %d bytes, %s needs %d (master key and salt)", len(master), s.name, want)
	}
	return SRTPKey{Suite: s.name, Master: master}, nil
}

// checkLifetime validates an SDES key lifetime: a decimal number or 2^n.
func checkLifetime(f string) error {
	v := f
	if rest, ok := strings.CutPrefix(f, "2^"); ok {
		v = rest
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n == 0 || (v != f && n > 63) {
		return fmt.Errorf("srtp: key parameters: lifetime %q is not a number or a power of two (2^n)", shorten(f))
	}
	return nil
}

// shorten bounds user-supplied text quoted in an error.
func shorten(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// Inline returns the key parameters for an a=crypto line: "inline:<base64>".
func (k SRTPKey) Inline() string {
	return "inline:" + base64.StdEncoding.EncodeToString(k.Master)
}

// Equal reports whether o is the same suite and key material.
func (k SRTPKey) Equal(o SRTPKey) bool {
	return strings.EqualFold(k.Suite, o.Suite) && len(k.Master) == len(o.Master) && subtle.ConstantTimeCompare(k.Master, o.Master) == 1
}

// Validate checks that the key can be used: a supported suite and key
// material of the suite's length.
func (k SRTPKey) Validate() error {
	s, ok := lookupSuite(k.Suite)
	if !ok {
		return fmt.Errorf("srtp: crypto suite %q is not supported (want one of %s)", k.Suite, suiteNames())
	}
	if want := s.keyLen + s.saltLen; len(k.Master) != want {
		return fmt.Errorf("srtp: key is %d bytes, %s needs %d (master key and salt)", len(k.Master), s.name, want)
	}
	return nil
}

// String names the suite only: key material never ends up in a log line.
func (k SRTPKey) String() string { return k.Suite + " (key hidden)" }

func (k SRTPKey) clone() SRTPKey { return SRTPKey{Suite: k.Suite, Master: bytes.Clone(k.Master)} }

// srtpCtx is a one-way SRTP context with the key it was built from. Only
// one goroutine uses it at a time: the reader of the leg's RTP socket
// (inbound), the relay goroutine feeding a fork, or a mixer goroutine.
// key and tag never change after construction; the context does.
type srtpCtx struct {
	key SRTPKey
	tag int // authentication tag bytes
	ctx *srtp.Context
	hdr rtp.Header // scratch for EncryptRTP (outbound)
	// replay is the error pion wraps around a replayed packet, to tell a
	// replay apart from a bad authentication tag without allocating.
	replay error
}

// newSRTPCtx builds a context from a key. inbound contexts reject replays.
func newSRTPCtx(k SRTPKey, inbound bool) (*srtpCtx, error) {
	if err := k.Validate(); err != nil {
		return nil, err
	}
	s, _ := lookupSuite(k.Suite)
	var opts []srtp.ContextOption
	if inbound {
		opts = append(opts, srtp.SRTPReplayProtection(srtpReplayWindow))
	}
	ctx, err := srtp.CreateContext(k.Master[:s.keyLen], k.Master[s.keyLen:], s.profile, opts...)
	if err != nil {
		return nil, fmt.Errorf("srtp: %w", err)
	}
	return &srtpCtx{key: k.clone(), tag: s.tagLen, ctx: ctx, replay: srtpReplayErr()}, nil
}

// srtpReplayErr finds out, once, which error pion's DecryptRTP wraps
// around a replayed packet (it exports none): it decrypts one packet twice.
// nil if that fails; replays are then counted as authentication failures.
var srtpReplayErr = sync.OnceValue(func() error {
	k := SRTPKey{Suite: SuiteAES128SHA1_80, Master: make([]byte, 30)}
	s, _ := lookupSuite(k.Suite)
	enc, err1 := srtp.CreateContext(k.Master[:16], k.Master[16:], s.profile)
	dec, err2 := srtp.CreateContext(k.Master[:16], k.Master[16:], s.profile, srtp.SRTPReplayProtection(srtpReplayWindow))
	if err1 != nil || err2 != nil {
		return nil
	}
	p, err := enc.EncryptRTP(nil, []byte{0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xff}, nil)
	if err != nil {
		return nil
	}
	if _, err := dec.DecryptRTP(nil, p, nil); err != nil {
		return nil
	}
	_, err = dec.DecryptRTP(nil, p, nil)
	if err == nil || errors.Is(err, srtp.ErrFailedToVerifyAuthTag) {
		return nil
	}
	if u := errors.Unwrap(err); u != nil {
		return u
	}
	return nil
})

// encrypt protects a plain RTP packet into dst (which must have room for
// len(plain)+srtpMaxTrailer bytes, so nothing is allocated).
func (c *srtpCtx) encrypt(dst, plain []byte) ([]byte, error) {
	return c.ctx.EncryptRTP(dst[:0], plain, &c.hdr)
}

// srtpResult classifies an inbound datagram on an SRTP leg.
type srtpResult uint8

const (
	srtpOK        srtpResult = iota
	srtpMalformed            // not an RTP packet (version, header lengths, padding)
	srtpAuthFail             // authentication failed (wrong key, forged, too short to carry a tag, tampered)
	srtpReplay               // a packet index already received or older than the replay window
)

// open authenticates and decrypts an SRTP datagram b into dst (readBufSize
// bytes, the reader's scratch buffer) and fills pkt from the decrypted
// packet: Raw is the RTP packet without its authentication tag. b is left
// untouched. No allocation on success.
func (c *srtpCtx) open(b, dst []byte, pkt *Packet) srtpResult {
	if len(b) < rtpHeaderMin || b[0]>>6 != 2 {
		return srtpMalformed
	}
	if c == nil || c.ctx == nil {
		return srtpAuthFail // unusable key: fail closed
	}
	hl, err := pkt.Header.Unmarshal(b)
	if err != nil {
		return srtpMalformed
	}
	if len(b) < hl+c.tag {
		return srtpAuthFail
	}
	plain, err := c.ctx.DecryptRTP(dst[:0], b, &pkt.Header)
	if err != nil {
		if c.replay != nil && errors.Is(err, c.replay) {
			return srtpReplay
		}
		return srtpAuthFail
	}
	end := len(plain)
	if pkt.Header.Padding {
		p := int(plain[end-1])
		if p == 0 || p > end-hl {
			return srtpMalformed
		}
		end -= p
	}
	pkt.Payload = plain[hl:end]
	pkt.Raw = plain
	return srtpOK
}

// openSRTP runs open for the leg's reader and counts a failure; false
// means drop the datagram.
func (l *Leg) openSRTP(c *srtpCtx, b, dst []byte, pkt *Packet) bool {
	switch c.open(b, dst, pkt) {
	case srtpOK:
		return true
	case srtpMalformed:
		l.C.Malformed.Add(1)
	case srtpReplay:
		l.C.SRTPReplayed.Add(1)
	default:
		l.C.SRTPAuthFailed.Add(1)
	}
	return false
}
