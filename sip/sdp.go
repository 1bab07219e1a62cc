package sip

import (
	"net/netip"
	"strconv"
	"strings"

	"github.com/bib-project/bib/bridge"
	"github.com/pion/sdp/v3"
)

// maxSDP bounds the SDP bodies bib parses; a SIP message over UDP cannot be
// larger anyway, and a bound keeps a hostile TCP peer from costing memory.
const maxSDP = 16 << 10

// Origin is the o= line bib writes into every SDP it sends on one leg
// (RFC 4566 section 5.2). RFC 3264 section 8 requires the version to grow
// by one with every new offer or answer that changes; bib increments it for
// each SDP it sends, which is allowed.
type Origin struct {
	SessionID uint64
	Version   uint64
}

// ParseMedia parses an SDP body and describes its first anchorable audio
// stream (the first m=audio line with RTP/AVP or RTP/AVPF). Errors wrap
// ErrMalformedSDP, ErrNoAudio, ErrMediaTransport or ErrMediaAddress.
func ParseMedia(body []byte) (bridge.MediaDesc, error) {
	sd, err := unmarshal(body)
	if err != nil {
		return bridge.MediaDesc{}, err
	}
	i, err := pickAudio(sd)
	if err != nil {
		return bridge.MediaDesc{}, err
	}
	return describe(sd, sd.MediaDescriptions[i])
}

// Rewrite returns body with its media anchored on bib (RFC 3264 offer or
// answer rewriting for a B2BUA): the o= line becomes bib's origin o, every
// c= line and the anchored audio m= port point at local, a=rtcp at
// localRTCP (or local when the party multiplexes RTCP on the RTP port), and
// every other m-line is rejected with port 0 (RFC 3264 section 6). Codecs,
// fmtp, ptime, telephone-event, CN, direction and rtcp-mux are kept as is.
// A legacy hold address (c=0.0.0.0) is kept so the hold still reads as one.
func Rewrite(body []byte, o Origin, local, localRTCP netip.AddrPort) ([]byte, error) {
	sd, err := unmarshal(body)
	if err != nil {
		return nil, err
	}
	idx, err := pickAudio(sd)
	if err != nil {
		return nil, err
	}
	addrType := "IP4"
	if local.Addr().Is6() && !local.Addr().Is4In6() {
		addrType = "IP6"
	}
	addr := local.Addr().Unmap().String()
	conn := func(old *sdp.ConnectionInformation) *sdp.ConnectionInformation {
		if old != nil && old.Address != nil && isUnspecified(old.Address.Address) {
			return &sdp.ConnectionInformation{NetworkType: "IN", AddressType: addrType, Address: &sdp.Address{Address: unspecified(addrType)}}
		}
		return &sdp.ConnectionInformation{NetworkType: "IN", AddressType: addrType, Address: &sdp.Address{Address: addr}}
	}
	sd.Origin = sdp.Origin{
		Username:       "bib",
		SessionID:      o.SessionID,
		SessionVersion: o.Version,
		NetworkType:    "IN",
		AddressType:    addrType,
		UnicastAddress: addr,
	}
	if sd.ConnectionInformation != nil {
		sd.ConnectionInformation = conn(sd.ConnectionInformation)
	}
	for i, md := range sd.MediaDescriptions {
		if md.ConnectionInformation != nil {
			md.ConnectionInformation = conn(md.ConnectionInformation)
		}
		if i != idx {
			md.MediaName.Port = sdp.RangedPort{Value: 0}
			continue
		}
		if isSecure(md.MediaName.Protos) && md.MediaName.Port.Value != 0 {
			line, err := secureKey(md)
			if err != nil {
				return nil, err
			}
			keepOneCrypto(md, line.index)
		}
		oldPort := md.MediaName.Port.Value
		if oldPort != 0 {
			md.MediaName.Port = sdp.RangedPort{Value: int(local.Port())}
		}
		for j, a := range md.Attributes {
			if a.Key != "rtcp" {
				continue
			}
			port := localRTCP.Port()
			if p, _, _ := strings.Cut(a.Value, " "); p == strconv.Itoa(oldPort) {
				port = local.Port() // RTCP multiplexed on the RTP port (RFC 5761 section 5.1.3)
			}
			md.Attributes[j].Value = strconv.Itoa(int(port)) + " IN " + addrType + " " + addr
		}
	}
	return sd.Marshal()
}

func unspecified(addrType string) string {
	if addrType == "IP6" {
		return "::"
	}
	return "0.0.0.0"
}

func isUnspecified(s string) bool {
	a, err := netip.ParseAddr(s)
	return err == nil && a.IsUnspecified()
}

func unmarshal(body []byte) (*sdp.SessionDescription, error) {
	if len(body) == 0 {
		return nil, sdpErr(ErrMalformedSDP, 399, "empty body")
	}
	if len(body) > maxSDP {
		return nil, sdpErr(ErrMalformedSDP, 399, "sdp longer than %d bytes", maxSDP)
	}
	sd := &sdp.SessionDescription{}
	if err := sd.Unmarshal(body); err != nil {
		return nil, sdpErr(ErrMalformedSDP, 399, "malformed sdp: %v", err)
	}
	return sd, nil
}

// supportedProto reports whether bib can relay an m-line's transport: plain
// RTP (RFC 3551 RTP/AVP, or RFC 4585 RTP/AVPF whose feedback rides in RTCP,
// which bib relays untouched).
func supportedProto(protos []string) bool {
	p := strings.ToUpper(strings.Join(protos, "/"))
	return p == "RTP/AVP" || p == "RTP/AVPF" || isSecure(protos)
}

// pickAudio returns the index of the m-line bib anchors.
func pickAudio(sd *sdp.SessionDescription) (int, error) {
	var badProto string
	for i, md := range sd.MediaDescriptions {
		if !strings.EqualFold(md.MediaName.Media, "audio") {
			continue
		}
		if !supportedProto(md.MediaName.Protos) {
			if badProto == "" {
				badProto = strings.Join(md.MediaName.Protos, "/")
			}
			continue
		}
		return i, nil
	}
	if badProto != "" {
		return -1, sdpErr(ErrMediaTransport, 302, "audio transport %s not supported, only RTP/AVP and RTP/SAVP with SDES keys", badProto)
	}
	return -1, sdpErr(ErrNoAudio, 304, "no audio stream in sdp")
}

// staticPT is the RFC 3551 table for payload types that need no rtpmap.
func staticPT(pt uint8) (name string, rate uint32, ok bool) {
	switch pt {
	case 0:
		return "PCMU", 8000, true
	case 3:
		return "GSM", 8000, true
	case 4:
		return "G723", 8000, true
	case 8:
		return "PCMA", 8000, true
	case 9:
		return "G722", 8000, true
	case 13:
		return "CN", 8000, true
	case 18:
		return "G729", 8000, true
	}
	return "", 0, false
}

func describe(sd *sdp.SessionDescription, md *sdp.MediaDescription) (bridge.MediaDesc, error) {
	var d bridge.MediaDesc
	ci := md.ConnectionInformation
	if ci == nil {
		ci = sd.ConnectionInformation
	}
	if ci == nil || ci.Address == nil {
		return d, sdpErr(ErrMalformedSDP, 399, "audio stream has no c= line")
	}
	if !strings.EqualFold(ci.NetworkType, "IN") {
		return d, sdpErr(ErrMediaAddress, 300, "network type %q not supported", ci.NetworkType)
	}
	ip, err := netip.ParseAddr(ci.Address.Address)
	if err != nil || ip.Zone() != "" {
		return d, sdpErr(ErrMediaAddress, 301, "connection address %q is not an IP address", ci.Address.Address)
	}
	ip = ip.Unmap()
	port := md.MediaName.Port.Value
	if port < 0 || port > 65535 {
		return d, sdpErr(ErrMalformedSDP, 399, "media port %d out of range", port)
	}
	d.RTP = netip.AddrPortFrom(ip, uint16(port))
	_, d.RTCPMux = md.Attribute("rtcp-mux")
	if isSecure(md.MediaName.Protos) && port != 0 {
		line, err := secureKey(md)
		if err != nil {
			return d, err
		}
		d.SRTP = &line.key
	}

	d.Mode = bridge.SendRecv
	for _, a := range sd.Attributes {
		if m, ok := bridge.ParseMode(a.Key); ok {
			d.Mode = m
		}
	}
	for _, a := range md.Attributes {
		if m, ok := bridge.ParseMode(a.Key); ok {
			d.Mode = m
		}
	}

	if v, ok := md.Attribute("rtcp"); ok {
		f := strings.Fields(v)
		p, err := strconv.Atoi(firstOr(f, ""))
		if err != nil || p <= 0 || p > 65535 {
			return d, sdpErr(ErrMalformedSDP, 399, "bad a=rtcp %q", v)
		}
		rip := ip
		if len(f) >= 4 {
			if a, err := netip.ParseAddr(f[3]); err == nil {
				rip = a.Unmap()
			}
		}
		d.RTCP = netip.AddrPortFrom(rip, uint16(p))
	} else if port > 0 && port < 65535 && !d.RTCPMux {
		d.RTCP = netip.AddrPortFrom(ip, uint16(port+1))
	}
	if v, ok := md.Attribute("ptime"); ok {
		if p, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && p > 0 && p <= 1000 {
			d.Ptime = p
		}
	}

	rtpmap := map[uint8]string{}
	fmtp := map[uint8]string{}
	for _, a := range md.Attributes {
		switch a.Key {
		case "rtpmap", "fmtp":
			pts, rest, _ := strings.Cut(a.Value, " ")
			pt, err := strconv.ParseUint(pts, 10, 7)
			if err != nil {
				continue
			}
			if a.Key == "rtpmap" {
				rtpmap[uint8(pt)] = strings.TrimSpace(rest)
			} else {
				fmtp[uint8(pt)] = strings.TrimSpace(rest)
			}
		}
	}
	for _, f := range md.MediaName.Formats {
		pt, err := strconv.ParseUint(f, 10, 7)
		if err != nil {
			return d, sdpErr(ErrMalformedSDP, 305, "payload type %q is not a number 0-127", f)
		}
		c := bridge.Codec{PT: uint8(pt), Channels: 1, Fmtp: fmtp[uint8(pt)]}
		if m, ok := rtpmap[uint8(pt)]; ok {
			name, rest, _ := strings.Cut(m, "/")
			c.Name = name
			rate, ch, _ := strings.Cut(rest, "/")
			if r, err := strconv.ParseUint(rate, 10, 32); err == nil {
				c.Rate = uint32(r)
			}
			if n, err := strconv.ParseUint(ch, 10, 8); err == nil && n > 0 {
				c.Channels = uint8(n)
			}
		} else if name, rate, ok := staticPT(uint8(pt)); ok {
			c.Name, c.Rate = name, rate
		}
		d.Codecs = append(d.Codecs, c)
	}
	if len(d.Codecs) == 0 && port != 0 {
		return d, sdpErr(ErrMalformedSDP, 305, "audio stream lists no payload types")
	}
	return d, nil
}

func firstOr(f []string, def string) string {
	if len(f) > 0 {
		return f[0]
	}
	return def
}
