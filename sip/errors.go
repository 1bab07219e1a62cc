package sip

import (
	"errors"
	"fmt"
	"strings"
)

var (
	// ErrNoRoute: no registered contact and no static route matches the callee.
	ErrNoRoute = errors.New("no route")
	// ErrCallNotFound: no live call has the given id.
	ErrCallNotFound = errors.New("call not found")
	// ErrShuttingDown: the server no longer accepts calls.
	ErrShuttingDown = errors.New("shutting down")

	// ErrMalformedSDP: the body is not a parsable SDP session description.
	ErrMalformedSDP = errors.New("malformed sdp")
	// ErrNoAudio: the SDP has no audio stream bib can anchor.
	ErrNoAudio = errors.New("sdp has no audio stream")
	// ErrMediaTransport: the audio stream uses a transport bib does not relay
	// (RTP/SAVP, TCP media, ...).
	ErrMediaTransport = errors.New("unsupported media transport")
	// ErrMediaAddress: the connection address is not an IP literal of a
	// family bib can reach.
	ErrMediaAddress = errors.New("unsupported media address")

	// ErrMonitorAnswer: the supervisor's phone did not take a monitoring
	// call bib placed (declined, unreachable, or answered unusably).
	ErrMonitorAnswer = errors.New("supervisor did not take the monitoring call")
	// ErrMonitorTarget: the supervisor's address is not a SIP URI.
	ErrMonitorTarget = errors.New("bad supervisor address")
)

// StatusError is an error that knows the SIP response it should become. It
// can be returned by the Authorize hook; bib answers the INVITE with Code,
// Reason (the reason phrase, default from the code) and a Warning header.
//
// Warning is either a full warning-value (`399 bib "text"`, RFC 3261
// section 20.43) or plain text, which bib wraps as `399 bib "text"`.
type StatusError struct {
	Code    int
	Reason  string
	Warning string
}

func (e *StatusError) Error() string {
	if e.Warning != "" {
		return fmt.Sprintf("sip %d %s: %s", e.Code, e.Reason, e.Warning)
	}
	return fmt.Sprintf("sip %d %s", e.Code, e.Reason)
}

// warningValue returns the Warning header value for e.
func (e *StatusError) warningValue(agent string) string {
	return warningValue(agent, 399, e.Warning)
}

// warningValue formats a Warning header value (RFC 3261 section 20.43). If
// text already starts with a three digit code it is used as is.
func warningValue(agent string, code int, text string) string {
	if text == "" {
		return ""
	}
	if len(text) > 4 && text[3] == ' ' && isDigits(text[:3]) {
		return text
	}
	// warn-text is a quoted-string: drop characters that would break it.
	clean := strings.Map(func(r rune) rune {
		switch {
		case r == '"' || r == '\\':
			return '\''
		case r < 0x20 || r == 0x7f:
			return ' '
		}
		return r
	}, text)
	if len(clean) > 200 {
		clean = clean[:200]
	}
	return fmt.Sprintf("%d %s \"%s\"", code, agent, clean)
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// sdpError is an SDP rejection with its RFC 3261 section 20.43 warn-code:
// 301 incompatible network address formats, 302 incompatible transport
// protocol, 304 media type not available, 305 incompatible media format,
// 399 miscellaneous.
type sdpError struct {
	err  error // one of the sentinels above
	warn int
	msg  string
}

func (e *sdpError) Error() string { return e.err.Error() + ": " + e.msg }
func (e *sdpError) Unwrap() error { return e.err }

func sdpErr(sentinel error, warn int, format string, args ...any) error {
	return &sdpError{err: sentinel, warn: warn, msg: fmt.Sprintf(format, args...)}
}

// reasonPhrase returns the RFC 3261 reason phrase for a status code.
func reasonPhrase(code int) string {
	switch code {
	case 100:
		return "Trying"
	case 180:
		return "Ringing"
	case 183:
		return "Session Progress"
	case 200:
		return "OK"
	case 400:
		return "Bad Request"
	case 403:
		return "Forbidden"
	case 404:
		return "Not Found"
	case 405:
		return "Method Not Allowed"
	case 408:
		return "Request Timeout"
	case 415:
		return "Unsupported Media Type"
	case 423:
		return "Interval Too Brief"
	case 480:
		return "Temporarily Unavailable"
	case 481:
		return "Call/Transaction Does Not Exist"
	case 486:
		return "Busy Here"
	case 487:
		return "Request Terminated"
	case 488:
		return "Not Acceptable Here"
	case 491:
		return "Request Pending"
	case 500:
		return "Server Internal Error"
	case 503:
		return "Service Unavailable"
	case 600:
		return "Busy Everywhere"
	case 603:
		return "Decline"
	}
	switch code / 100 {
	case 1:
		return "Session Progress"
	case 2:
		return "OK"
	case 3:
		return "Redirect"
	case 4:
		return "Request Failure"
	case 5:
		return "Server Error"
	}
	return "Global Failure"
}
