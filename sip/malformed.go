package sip

import (
	"bytes"
	"net"
	"strings"

	sipmsg "github.com/emiago/sipgo/sip"
)

// checkParser validates datagrams before sipgo sees them. sipgo's UDP
// transport logs and silently drops a datagram it cannot parse (a broken
// header fails the whole message), so the sender would retransmit
// forever; bib answers such requests 400 with a Warning instead (RFC 3261
// section 21.4.1 and 16.3). Parsing twice costs a few microseconds per
// signalling message, never per RTP packet.
var checkParser = sipmsg.NewParser()

// maxLineLen bounds header lines copied into a 400 for a broken request.
const maxLineLen = 1024

// readFilter is sipgo's transport read hook. It must never return an error
// (that stops the UDP read loop); returning nil drops the datagram.
func (s *Server) readFilter(p sipmsg.TransportReadProps, data []byte) ([]byte, error) {
	if !strings.EqualFold(p.Transport, "udp") {
		// Over TCP the bytes are a stream chunk, not a message; sipgo closes
		// a connection whose stream does not parse, and framing is lost anyway.
		return data, nil
	}
	if len(bytes.Trim(data, "\r\n")) == 0 {
		return data, nil // keepalive
	}
	msg, err := checkParser.ParseSIP(data)
	if err == nil {
		req, ok := msg.(*sipmsg.Request)
		if !ok {
			return data, nil
		}
		if missing := missingHeaders(req); missing != "" {
			s.malformed.Add(1)
			s.log.Debug("malformed sip request", "source", p.RemoteAddr.String(), "missing", missing)
			if !req.IsAck() {
				s.writeBadRequest(p.RemoteAddr, data, "missing or invalid "+missing)
			}
			return nil, nil
		}
		return data, nil
	}
	s.malformed.Add(1)
	s.log.Debug("unparsable sip datagram", "source", p.RemoteAddr.String(), "len", len(data), "err", err)
	s.writeBadRequest(p.RemoteAddr, data, "malformed request: "+err.Error())
	return nil, nil
}

// missingHeaders names the RFC 3261 section 8.1.1 headers a request lacks.
func missingHeaders(req *sipmsg.Request) string {
	var miss []string
	if v := req.Via(); v == nil || v.Host == "" {
		miss = append(miss, "Via")
	}
	if req.From() == nil {
		miss = append(miss, "From")
	}
	if req.To() == nil {
		miss = append(miss, "To")
	}
	if req.CallID() == nil {
		miss = append(miss, "Call-ID")
	}
	if cs := req.CSeq(); cs == nil || (cs.MethodName != req.Method && !(req.IsAck() || req.IsCancel())) {
		miss = append(miss, "CSeq")
	}
	return strings.Join(miss, ", ")
}

// writeBadRequest answers a request that could not be parsed with a
// stateless 400, built from the raw lines that matter for matching (Via,
// From, To, Call-ID, CSeq). Responses, ACKs and anything without a request
// line or a Via get no answer.
func (s *Server) writeBadRequest(to net.Addr, data []byte, why string) {
	if s.udp == nil || to == nil {
		return
	}
	if res := badRequest(data, s.cfg.UserAgent, why); res != nil {
		_, _ = s.udp.WriteTo(res, to)
	}
}

// badRequest builds the 400 for writeBadRequest; nil when none is due.
func badRequest(data []byte, agent, why string) []byte {
	lines := bytes.Split(data, []byte("\n"))
	start := strings.TrimSpace(string(lines[0]))
	parts := strings.Fields(start)
	if len(parts) != 3 || !strings.HasPrefix(parts[2], "SIP/") || !isToken(parts[0]) || strings.EqualFold(parts[0], "ACK") {
		return nil
	}
	var b strings.Builder
	b.WriteString("SIP/2.0 400 Bad Request\r\n")
	haveVia := false
	for _, raw := range lines[1:] {
		line := strings.TrimRight(string(raw), "\r")
		if line == "" {
			break
		}
		if len(line) > maxLineLen || strings.ContainsFunc(line, func(r rune) bool { return r < 0x20 && r != '\t' }) {
			continue
		}
		name, _, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "via", "v":
			haveVia = true
		case "from", "f", "to", "t", "call-id", "i", "cseq":
		default:
			continue
		}
		b.WriteString(line)
		b.WriteString("\r\n")
	}
	if !haveVia {
		return nil
	}
	b.WriteString("Warning: ")
	b.WriteString(warningValue(agent, 399, why))
	b.WriteString("\r\nServer: ")
	b.WriteString(agent)
	b.WriteString("\r\nContent-Length: 0\r\n\r\n")
	return []byte(b.String())
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("-.!%*_+`'~", c) >= 0) {
			return false
		}
	}
	return true
}
