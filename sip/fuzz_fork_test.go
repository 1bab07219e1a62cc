package sip

import (
	"fmt"
	"testing"
)

func FuzzSplitMultipart(f *testing.F) {
	ct, body := BuildMultipart("b1", []BodyPart{{ContentType: "application/sdp", Body: []byte("v=0\r\n")}, {ContentType: ContentTypeRSMetadata, Disposition: "recording-session", Body: []byte("<recording/>")}})
	f.Add(ct, body)
	f.Add("multipart/mixed;boundary=x", []byte("--x\r\nContent-Type: text/plain\r\n\r\nhi\r\n--x--"))
	f.Add("multipart/mixed", []byte("--x\r\n"))
	f.Add("application/sdp", []byte("v=0"))
	f.Add("multipart/mixed;boundary=\"", []byte{})
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		parts, err := SplitMultipart(ct, body)
		if err != nil {
			return
		}
		if len(parts) == 0 || len(parts) > maxParts {
			t.Fatalf("%d parts without error", len(parts))
		}
		for _, p := range parts {
			if len(p.Body) > maxBody+1 {
				t.Fatal("part larger than the bound")
			}
		}
	})
}

func FuzzParseRecordingMetadata(f *testing.F) {
	f.Add([]byte(fmt.Sprintf(siprecMeta, NSRecording, "1", "2")))
	f.Add([]byte(fmt.Sprintf(siprecMeta, NSRecordingLegacy, "0", "1")))
	f.Add([]byte(`<recording><participant id="a"><aor>sip:a@b</aor><send>s</send></participant><stream id="s"><label>x</label></stream></recording>`))
	f.Add([]byte(`<?xml version="1.0" encoding="ebcdic"?><recording/>`))
	f.Add([]byte(`<recording xmlns="urn:other"/>`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, _, err := ParseRecordingMetadata(b)
		if err != nil {
			return
		}
		for _, s := range m.Streams {
			if p, ok := m.StreamSender(s.Label); ok {
				p.Identity()
			}
		}
	})
}
