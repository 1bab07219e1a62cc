package sip

import (
	"fmt"
	"strings"

	"github.com/bib-project/bib/bridge"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/srtp/v3"
)

// SRTP with SDES keys (RFC 4568) on call legs, forks and supervisor legs.
//
// Call legs: bib passes each party's a=crypto line to the other party
// unchanged, so the SRTP datagrams are relayed byte for byte; bib reads
// each party's key from its SDP to authenticate what it relays (wrong-key
// and forged packets are dropped and counted) and to give the recorder,
// mixer and forks the decrypted audio. When a party offers several crypto
// lines, bib forwards only the first one with a suite it supports, so the
// answerer cannot pick a key bib does not know. A secure (RTP/SAVP) offer
// and a plain answer, or the reverse, are not interworked: bib never
// translates between RTP and SRTP.
//
// Streams bib sends itself (forks, supervisor legs) are encrypted with a
// key bib makes for each stream and states in its own a=crypto.

// isSecure reports whether an m-line's transport is SRTP with SDES keys.
func isSecure(protos []string) bool {
	p := strings.ToUpper(strings.Join(protos, "/"))
	return p == "RTP/SAVP" || p == "RTP/SAVPF"
}

// sdesLine is one parsed a=crypto attribute.
type sdesLine struct {
	index int // into md.Attributes
	tag   string
	key   bridge.SRTPKey
}

// cryptoOf returns the first a=crypto line of md whose suite bib
// supports. err is set when that line is malformed (a suite bib supports
// with unusable key parameters); ok is false when no line has a supported
// suite.
func cryptoOf(md *sdp.MediaDescription) (line sdesLine, ok bool, err error) {
	for i, a := range md.Attributes {
		if a.Key != "crypto" {
			continue
		}
		f := strings.Fields(a.Value)
		if len(f) < 3 {
			continue
		}
		if f[1] != bridge.SuiteAES128SHA1_80 && f[1] != bridge.SuiteAES128SHA1_32 {
			continue
		}
		if len(f) > 3 {
			// Session parameters (UNENCRYPTED_SRTP, KDR, ...) change how
			// packets are protected; bib supports the defaults only.
			return sdesLine{}, false, sdpErr(ErrMediaTransport, 302, "a=crypto %s: session parameters %q not supported", f[0], strings.Join(f[3:], " "))
		}
		k, err := bridge.ParseSDES(f[1], f[2])
		if err != nil {
			return sdesLine{}, false, sdpErr(ErrMalformedSDP, 399, "a=crypto %s: %v", f[0], err)
		}
		return sdesLine{index: i, tag: f[0], key: k}, true, nil
	}
	return sdesLine{}, false, nil
}

// secureKey returns the sending key of a secure m-line, or the SDP error
// for one without a usable a=crypto.
func secureKey(md *sdp.MediaDescription) (sdesLine, error) {
	line, ok, err := cryptoOf(md)
	if err != nil {
		return line, err
	}
	if !ok {
		return line, sdpErr(ErrMediaTransport, 302, "RTP/SAVP audio without an a=crypto suite bib supports (%s, %s)",
			bridge.SuiteAES128SHA1_80, bridge.SuiteAES128SHA1_32)
	}
	return line, nil
}

// keepOneCrypto drops every a=crypto line of md but keep.
func keepOneCrypto(md *sdp.MediaDescription, keep int) {
	out := md.Attributes[:0]
	for i, a := range md.Attributes {
		if a.Key == "crypto" && i != keep {
			continue
		}
		out = append(out, a)
	}
	md.Attributes = out
}

// OfferCrypto returns the tag of the a=crypto line bib would use in an
// SDP offer's anchored audio stream, and whether the stream is SRTP.
func OfferCrypto(body []byte) (tag string, secure bool, err error) {
	sd, err := unmarshal(body)
	if err != nil {
		return "", false, err
	}
	i, err := pickAudio(sd)
	if err != nil {
		return "", false, err
	}
	md := sd.MediaDescriptions[i]
	if !isSecure(md.MediaName.Protos) {
		return "", false, nil
	}
	line, err := secureKey(md)
	return line.tag, true, err
}

// cryptoAttr formats bib's a=crypto value for key under tag.
func cryptoAttr(tag string, k bridge.SRTPKey) string {
	return tag + " " + k.Suite + " " + k.Inline()
}

// lineCryptoTag returns the tag of the a=crypto line bib uses on the
// index-th m-line of body.
func lineCryptoTag(body []byte, index int) (string, bool, error) {
	sd, err := unmarshal(body)
	if err != nil || index < 0 || index >= len(sd.MediaDescriptions) {
		return "", false, err
	}
	md := sd.MediaDescriptions[index]
	if !isSecure(md.MediaName.Protos) {
		return "", false, nil
	}
	line, err := secureKey(md)
	return line.tag, true, err
}

// srtpReader authenticates and decrypts one received SRTP stream (the
// recording server's streams). One reader goroutine uses it.
type srtpReader struct {
	key bridge.SRTPKey
	ctx *srtp.Context
	hdr rtp.Header
	buf []byte
}

func newSRTPReader(k bridge.SRTPKey) (*srtpReader, error) {
	var prof srtp.ProtectionProfile
	switch k.Suite {
	case bridge.SuiteAES128SHA1_80:
		prof = srtp.ProtectionProfileAes128CmHmacSha1_80
	case bridge.SuiteAES128SHA1_32:
		prof = srtp.ProtectionProfileAes128CmHmacSha1_32
	default:
		return nil, fmt.Errorf("srtp: suite %q not supported", k.Suite)
	}
	if len(k.Master) != 30 {
		return nil, fmt.Errorf("srtp: %s key is %d bytes, want 30", k.Suite, len(k.Master))
	}
	ctx, err := srtp.CreateContext(k.Master[:16], k.Master[16:], prof, srtp.SRTPReplayProtection(128))
	if err != nil {
		return nil, err
	}
	return &srtpReader{key: k, ctx: ctx, buf: make([]byte, 0, 1600)}, nil
}

// open returns the decrypted RTP packet, or false for one that fails
// authentication (wrong key, forged, replayed).
func (r *srtpReader) open(b []byte) ([]byte, bool) {
	out, err := r.ctx.DecryptRTP(r.buf[:0], b, &r.hdr)
	if err != nil {
		return nil, false
	}
	return out, true
}

// srtpMismatch refuses an answer whose transport differs from the offer's
// (RTP/SAVP answered with RTP/AVP or the reverse): bib relays SRTP
// unchanged and never translates between RTP and SRTP.
func srtpMismatch(off, ans bridge.MediaDesc) error {
	if (off.SRTP != nil) == (ans.SRTP != nil) || ans.RTP.Port() == 0 {
		return nil
	}
	return sdpErr(ErrMediaTransport, 302, "%s answered to an %s offer: bib does not translate between RTP and SRTP",
		protoName(ans.SRTP != nil), protoName(off.SRTP != nil))
}
