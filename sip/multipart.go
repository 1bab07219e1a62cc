package sip

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/textproto"
	"strings"
)

// maxBody bounds the message bodies bib splits or parses (SIPREC multipart
// bodies, metadata): a SIP message over UDP cannot be larger anyway.
const maxBody = 64 << 10

// maxParts bounds the parts of a multipart body.
const maxParts = 8

// ErrMalformedBody: a multipart body or a recording metadata document that
// cannot be parsed.
var ErrMalformedBody = errors.New("malformed body")

// BodyPart is one part of a multipart/mixed SIP body (RFC 5621).
type BodyPart struct {
	ContentType string // media type, lower case, without parameters
	Disposition string // disposition type, lower case (session, recording-session, ...)
	Header      textproto.MIMEHeader
	Body        []byte
}

// SplitMultipart splits a SIP body by its Content-Type header value. A
// body that is not multipart comes back as one part of that type. Parts
// are returned in order; errors wrap ErrMalformedBody and say what is
// wrong.
func SplitMultipart(contentType string, body []byte) ([]BodyPart, error) {
	if len(body) > maxBody {
		return nil, fmt.Errorf("%w: body longer than %d bytes", ErrMalformedBody, maxBody)
	}
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return nil, fmt.Errorf("%w: content-type %q: %v", ErrMalformedBody, contentType, err)
	}
	if !strings.HasPrefix(mt, "multipart/") {
		return []BodyPart{{ContentType: mt, Body: body}}, nil
	}
	boundary := params["boundary"]
	if boundary == "" {
		return nil, fmt.Errorf("%w: %s without boundary", ErrMalformedBody, mt)
	}
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	var parts []BodyPart
	for {
		p, err := mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: multipart: %v", ErrMalformedBody, err)
		}
		if len(parts) == maxParts {
			return nil, fmt.Errorf("%w: more than %d body parts", ErrMalformedBody, maxParts)
		}
		b, err := io.ReadAll(io.LimitReader(p, maxBody+1))
		if err != nil {
			return nil, fmt.Errorf("%w: part %d: %v", ErrMalformedBody, len(parts)+1, err)
		}
		bp := BodyPart{Header: p.Header, Body: b, ContentType: "text/plain"}
		if ct := p.Header.Get("Content-Type"); ct != "" {
			t, _, err := mime.ParseMediaType(ct)
			if err != nil {
				return nil, fmt.Errorf("%w: part %d content-type %q: %v", ErrMalformedBody, len(parts)+1, ct, err)
			}
			bp.ContentType = t
		}
		if cd := p.Header.Get("Content-Disposition"); cd != "" {
			d, _, _ := strings.Cut(cd, ";")
			bp.Disposition = strings.ToLower(strings.TrimSpace(d))
		}
		parts = append(parts, bp)
	}
	if len(parts) == 0 {
		return nil, fmt.Errorf("%w: multipart body without parts", ErrMalformedBody)
	}
	return parts, nil
}

// BuildMultipart writes parts as a multipart/mixed body (RFC 2046 section
// 5.1.1) and returns the Content-Type header value with its boundary.
func BuildMultipart(boundary string, parts []BodyPart) (contentType string, body []byte) {
	var b bytes.Buffer
	for _, p := range parts {
		b.WriteString("--" + boundary + "\r\n")
		b.WriteString("Content-Type: " + p.ContentType + "\r\n")
		if p.Disposition != "" {
			b.WriteString("Content-Disposition: " + p.Disposition + "\r\n")
		}
		b.WriteString("\r\n")
		b.Write(p.Body)
		// The CRLF before a delimiter belongs to the delimiter (RFC 2046
		// section 5.1.1): the body keeps its own final line break.
		b.WriteString("\r\n")
	}
	b.WriteString("--" + boundary + "--\r\n")
	return "multipart/mixed;boundary=" + boundary, b.Bytes()
}
