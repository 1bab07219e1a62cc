package sip

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Recording metadata namespaces: RFC 7865 and the one of the drafts that
// preceded it, which some session recording clients still send.
const (
	NSRecording       = "urn:ietf:params:xml:ns:recording:1"
	NSRecordingLegacy = "urn:ietf:params:xml:ns:siprec"
)

// Content types of recording metadata (RFC 7865 section 9; the +xml-less
// form is what some clients send).
const (
	ContentTypeRSMetadata = "application/rs-metadata+xml"
	contentTypeRSLegacy   = "application/rs-metadata"
)

// RecordingMetadata is an RFC 7865 recording metadata document, as much of
// it as bib writes and reads. Element names match in any namespace, so the
// legacy namespace parses the same way.
type RecordingMetadata struct {
	XMLName      xml.Name              `xml:"recording"`
	NS           string                `xml:"xmlns,attr,omitempty"`
	DataMode     string                `xml:"datamode,omitempty"`
	Groups       []RSGroup             `xml:"group"`
	Sessions     []RSSession           `xml:"session"`
	Participants []RSParticipant       `xml:"participant"`
	SessionAssoc []RSParticipantSess   `xml:"participantsessionassoc"`
	Streams      []RSStream            `xml:"stream"`
	StreamAssoc  []RSParticipantStream `xml:"participantstreamassoc"`
}

// RSGroup is a communication session group (RFC 7865 section 6.2).
type RSGroup struct {
	ID              string `xml:"group_id,attr"`
	AssociateTime   string `xml:"associate-time,omitempty"`
	DisassociatTime string `xml:"disassociate-time,omitempty"`
}

// RSSession is a communication session (RFC 7865 section 6.3).
type RSSession struct {
	ID           string   `xml:"session_id,attr"`
	GroupRef     string   `xml:"group-ref,omitempty"`
	SIPSessionID []string `xml:"sipSessionID,omitempty"`
	StartTime    string   `xml:"start-time,omitempty"`
	StopTime     string   `xml:"stop-time,omitempty"`
}

// RSParticipant is a participant (RFC 7865 section 6.5). LegacyID, AOR,
// Send and Recv are the shapes of the drafts (id attribute, aor element,
// send/recv inside the participant).
type RSParticipant struct {
	ID       string     `xml:"participant_id,attr,omitempty"`
	LegacyID string     `xml:"id,attr,omitempty"`
	NameIDs  []RSNameID `xml:"nameID"`
	AOR      []string   `xml:"aor,omitempty"`
	Name     []string   `xml:"name,omitempty"`
	Send     []string   `xml:"send,omitempty"`
	Recv     []string   `xml:"recv,omitempty"`
}

// RSNameID is a participant's address of record and display name.
type RSNameID struct {
	AOR  string   `xml:"aor,attr"`
	Name []RSName `xml:"name,omitempty"`
}

// RSName is a display name with its language.
type RSName struct {
	Lang string `xml:"http://www.w3.org/XML/1998/namespace lang,attr,omitempty"`
	Text string `xml:",chardata"`
}

// RSParticipantSess associates a participant with a session (section 6.6).
type RSParticipantSess struct {
	ParticipantID    string `xml:"participant_id,attr"`
	SessionID        string `xml:"session_id,attr"`
	AssociateTime    string `xml:"associate-time,omitempty"`
	DisassociateTime string `xml:"disassociate-time,omitempty"`
}

// RSStream ties a media stream to its SDP a=label (section 6.7).
type RSStream struct {
	ID        string `xml:"stream_id,attr,omitempty"`
	LegacyID  string `xml:"id,attr,omitempty"`
	SessionID string `xml:"session_id,attr,omitempty"`
	Label     string `xml:"label"`
}

// RSParticipantStream says which streams a participant sends and
// receives (section 6.8).
type RSParticipantStream struct {
	ParticipantID string   `xml:"participant_id,attr"`
	Send          []string `xml:"send,omitempty"`
	Recv          []string `xml:"recv,omitempty"`
}

// ParseRecordingMetadata parses a metadata document leniently: either
// namespace or none, elements it does not know ignored, the legacy
// participant shape accepted. It returns the namespace it found. Errors
// wrap ErrMalformedBody.
func ParseRecordingMetadata(b []byte) (*RecordingMetadata, string, error) {
	if len(b) > maxBody {
		return nil, "", fmt.Errorf("%w: metadata longer than %d bytes", ErrMalformedBody, maxBody)
	}
	var m RecordingMetadata
	dec := xml.NewDecoder(bytes.NewReader(b))
	dec.Strict = true
	dec.CharsetReader = func(label string, r io.Reader) (io.Reader, error) {
		// Metadata is UTF-8 (RFC 7865 section 9); tolerate a declaration
		// naming a compatible charset rather than failing the session.
		switch strings.ToLower(label) {
		case "utf-8", "us-ascii", "ascii", "iso-8859-1", "latin1":
			return r, nil
		}
		return nil, fmt.Errorf("charset %q not supported", label)
	}
	if err := dec.Decode(&m); err != nil {
		return nil, "", fmt.Errorf("%w: recording metadata: %v", ErrMalformedBody, err)
	}
	ns := m.XMLName.Space
	if ns != "" && ns != NSRecording && ns != NSRecordingLegacy {
		return nil, "", fmt.Errorf("%w: recording metadata namespace %q is not %s", ErrMalformedBody, ns, NSRecording)
	}
	for i := range m.Participants {
		p := &m.Participants[i]
		if p.ID == "" {
			p.ID = p.LegacyID
		}
	}
	for i := range m.Streams {
		s := &m.Streams[i]
		if s.ID == "" {
			s.ID = s.LegacyID
		}
		s.Label = strings.TrimSpace(s.Label)
	}
	return &m, ns, nil
}

// StreamSender returns the participant that sends the stream with the given
// SDP label, per participantstreamassoc (or the legacy send element).
func (m *RecordingMetadata) StreamSender(label string) (RSParticipant, bool) {
	var streamID string
	for _, s := range m.Streams {
		if s.Label == label {
			streamID = s.ID
			break
		}
	}
	if streamID == "" {
		return RSParticipant{}, false
	}
	pid := ""
	for _, a := range m.StreamAssoc {
		if slices.ContainsFunc(a.Send, func(x string) bool { return strings.TrimSpace(x) == streamID }) {
			pid = a.ParticipantID
			break
		}
	}
	for _, p := range m.Participants {
		if (pid != "" && p.ID == pid) || (pid == "" && slices.ContainsFunc(p.Send, func(x string) bool { return strings.TrimSpace(x) == streamID })) {
			return p, true
		}
	}
	return RSParticipant{}, false
}

// Identity returns a participant's first address of record and display name.
func (p RSParticipant) Identity() (aor, name string) {
	for _, n := range p.NameIDs {
		if aor == "" {
			aor = strings.TrimSpace(n.AOR)
		}
		if name == "" && len(n.Name) > 0 {
			name = strings.TrimSpace(n.Name[0].Text)
		}
	}
	if aor == "" && len(p.AOR) > 0 {
		aor = strings.TrimSpace(p.AOR[0])
	}
	if name == "" && len(p.Name) > 0 {
		name = strings.TrimSpace(p.Name[0])
	}
	return aor, name
}

// rsID returns a new metadata id: base64 of 128 random bits (RFC 7865
// section 6.10).
func rsID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.StdEncoding.EncodeToString(b[:])
}

// rsState is what bib has said about one recording session, so that each
// metadata document it sends (the INVITE's, every re-INVITE's) keeps the
// same session, stream and participant ids (RFC 7865 section 6.10), and a
// participant who left (a transfer) stays listed with its
// disassociate-time while the new one gets a new id.
type rsState struct {
	session string
	start   string
	streams [2]string
	parts   [2]rsPart // 0: near end, 1: far end; each sends streams[i]
	gone    []rsPart
}

type rsPart struct {
	id, aor, name string
	since, until  string
}

func newRSState(start time.Time) *rsState {
	st := &rsState{session: rsID(), start: start.UTC().Format(time.RFC3339Nano)}
	st.streams = [2]string{rsID(), rsID()}
	return st
}

// set names participant i (0 near, 1 far) at time at. Another AOR than
// before is another participant: the old one is disassociated.
func (st *rsState) set(i int, aor, name string, at time.Time) {
	ts := at.UTC().Format(time.RFC3339Nano)
	p := &st.parts[i]
	switch {
	case p.id == "":
		*p = rsPart{id: rsID(), aor: aor, name: name, since: st.start}
	case p.aor != aor:
		old := *p
		old.until = ts
		st.gone = append(st.gone, old)
		*p = rsPart{id: rsID(), aor: aor, name: name, since: ts}
	default:
		p.name = name
	}
}

// build writes the complete metadata (RFC 7865 sections 6.3 to 6.8,
// example in 10.1): the session, the current participants each sending
// one stream and receiving the other's, and the ones who left.
func (st *rsState) build(sipSessionIDs []string, labels []string) ([]byte, error) {
	m := RecordingMetadata{
		NS:       NSRecording,
		DataMode: "complete",
		Sessions: []RSSession{{ID: st.session, SIPSessionID: sipSessionIDs, StartTime: st.start}},
	}
	add := func(p rsPart) {
		np := RSParticipant{ID: p.id, NameIDs: []RSNameID{{AOR: p.aor}}}
		if p.name != "" {
			np.NameIDs[0].Name = []RSName{{Lang: "en", Text: p.name}}
		}
		m.Participants = append(m.Participants, np)
		m.SessionAssoc = append(m.SessionAssoc, RSParticipantSess{ParticipantID: p.id, SessionID: st.session, AssociateTime: p.since, DisassociateTime: p.until})
	}
	for _, p := range st.parts {
		add(p)
	}
	for _, p := range st.gone {
		add(p)
	}
	for i := range st.parts {
		label := ""
		if i < len(labels) {
			label = labels[i]
		}
		m.Streams = append(m.Streams, RSStream{ID: st.streams[i], SessionID: st.session, Label: label})
	}
	for i, p := range st.parts {
		m.StreamAssoc = append(m.StreamAssoc, RSParticipantStream{ParticipantID: p.id, Send: []string{st.streams[i]}, Recv: []string{st.streams[1-i]}})
	}
	out, err := xml.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append([]byte(xml.Header), append(out, '\n')...), nil
}
