package sip

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/bib-project/bib/bridge"
)

// audioLine is one m=audio line of an SDP body with several (SIPREC).
type audioLine struct {
	Index int // position among all m-lines
	Label string
	Desc  bridge.MediaDesc
}

// parseAudioLines describes every RTP/AVP audio m-line of body, in order,
// with its a=label (RFC 4574). m-lines bib cannot use are skipped.
func parseAudioLines(body []byte) ([]audioLine, error) {
	sd, err := unmarshal(body)
	if err != nil {
		return nil, err
	}
	var out []audioLine
	for i, md := range sd.MediaDescriptions {
		if !strings.EqualFold(md.MediaName.Media, "audio") || !supportedProto(md.MediaName.Protos) {
			continue
		}
		d, err := describe(sd, md)
		if err != nil {
			return nil, err
		}
		l := audioLine{Index: i, Desc: d}
		if v, ok := md.Attribute("label"); ok {
			l.Label = strings.TrimSpace(v)
		}
		out = append(out, l)
	}
	if len(out) == 0 {
		return nil, sdpErr(ErrNoAudio, 304, "no audio stream in sdp")
	}
	return out, nil
}

// sdpStream is one m=audio line bib writes.
type sdpStream struct {
	Media  string // "audio" unless set (a rejected m-line keeps its media type)
	Proto  string // "RTP/AVP" unless set
	Port   uint16
	Codecs []bridge.Codec
	Mode   bridge.Mode
	Label  string
	Crypto string // a=crypto value: the stream is RTP/SAVP (SDES)
}

// buildSDP writes an SDP body with one audio m-line per stream, all on ip
// (RFC 4566). A stream with port 0 is a rejected m-line.
func buildSDP(o Origin, ip netip.Addr, user string, streams []sdpStream) []byte {
	at := "IP4"
	if ip.Is6() && !ip.Is4In6() {
		at = "IP6"
	}
	addr := ip.Unmap().String()
	var b strings.Builder
	fmt.Fprintf(&b, "v=0\r\no=%s %d %d IN %s %s\r\ns=SIP Call\r\nc=IN %s %s\r\nt=0 0\r\n", user, o.SessionID, o.Version, at, addr, at, addr)
	for _, s := range streams {
		pts := make([]string, 0, len(s.Codecs))
		for _, c := range s.Codecs {
			pts = append(pts, strconv.Itoa(int(c.PT)))
		}
		if len(pts) == 0 {
			pts = []string{"0"}
		}
		media, proto := s.Media, s.Proto
		if media == "" {
			media = "audio"
		}
		if proto == "" {
			proto = "RTP/AVP"
			if s.Crypto != "" {
				proto = "RTP/SAVP"
			}
		}
		fmt.Fprintf(&b, "m=%s %d %s %s\r\n", media, s.Port, proto, strings.Join(pts, " "))
		if s.Port == 0 {
			continue
		}
		for _, c := range s.Codecs {
			rate := c.Rate
			if rate == 0 {
				rate = 8000
			}
			fmt.Fprintf(&b, "a=rtpmap:%d %s/%d\r\n", c.PT, c.Name, rate)
			if c.Fmtp != "" {
				fmt.Fprintf(&b, "a=fmtp:%d %s\r\n", c.PT, c.Fmtp)
			}
		}
		b.WriteString("a=ptime:20\r\n")
		if s.Label != "" {
			b.WriteString("a=label:" + s.Label + "\r\n")
		}
		if s.Crypto != "" {
			b.WriteString("a=crypto:" + s.Crypto + "\r\n")
		}
		b.WriteString("a=" + s.Mode.String() + "\r\n")
	}
	return []byte(b.String())
}

// isAudioCodec reports whether c carries audio (not an event or comfort noise).
func isAudioCodec(c bridge.Codec) bool {
	return c.Name != "" && !c.Is("telephone-event") && !c.Is("CN")
}

// callCodec returns the audio codec a call is using: the first audio codec
// of the answer that the offer also lists (bib relays payloads untouched,
// so both directions carry it). ok is false before any negotiation.
func callCodec(m [2]bridge.MediaDesc) (bridge.Codec, bool) {
	for _, c := range m[1].Codecs {
		if !isAudioCodec(c) {
			continue
		}
		for _, o := range m[0].Codecs {
			if sameCodec(c, o) {
				return c, true
			}
		}
	}
	for _, d := range m {
		for _, c := range d.Codecs {
			if isAudioCodec(c) {
				return c, true
			}
		}
	}
	return bridge.Codec{}, false
}

func sameCodec(a, b bridge.Codec) bool {
	ra, rb := a.Rate, b.Rate
	if ra == 0 {
		ra = 8000
	}
	if rb == 0 {
		rb = 8000
	}
	return strings.EqualFold(a.Name, b.Name) && ra == rb
}

// findCodec returns the codec of list with c's name and rate.
func findCodec(list []bridge.Codec, c bridge.Codec) (bridge.Codec, bool) {
	for _, x := range list {
		if sameCodec(x, c) {
			return x, true
		}
	}
	return bridge.Codec{}, false
}

func findNamed(list []bridge.Codec, name string) (bridge.Codec, bool) {
	for _, x := range list {
		if x.Is(name) {
			return x, true
		}
	}
	return bridge.Codec{}, false
}

// forkRoute maps every payload type the call's parties may send for codec
// and telephone-event onto the recorder's numbers (out, outEvent) and
// returns the route to addr. The sender's own description wins when the
// two parties bind one number differently.
func forkRoute(addr netip.AddrPort, call [2]bridge.MediaDesc, from bridge.Side, codec bridge.Codec, out bridge.Codec, outEvent *bridge.Codec) bridge.ForkRoute {
	r := bridge.ForkRoute{Addr: addr, PT: map[uint8]bridge.ForkPT{}}
	for _, d := range []bridge.MediaDesc{call[from.Other()], call[from]} {
		for _, c := range d.Codecs {
			switch {
			case sameCodec(c, codec):
				r.PT[c.PT] = bridge.ForkPT{Out: out.PT, Rate: out.Rate}
			case c.Is("telephone-event") && outEvent != nil:
				r.PT[c.PT] = bridge.ForkPT{Out: outEvent.PT, Rate: outEvent.Rate, Event: true}
			default:
				delete(r.PT, c.PT)
			}
		}
	}
	if _, ok := r.PT[codec.PT]; !ok {
		r.PT[codec.PT] = bridge.ForkPT{Out: out.PT, Rate: out.Rate}
	}
	return r
}

// eventCodec is telephone-event as bib offers it to recorders (RFC 4733).
var eventCodec = bridge.Codec{PT: 101, Name: "telephone-event", Rate: 8000, Channels: 1, Fmtp: "0-15"}
