package sip

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bib-project/bib/bridge"
	"github.com/bib-project/bib/sip/siptest"
	"github.com/emiago/sipgo"
	sipmsg "github.com/emiago/sipgo/sip"
	"github.com/pion/rtp"
)

// fakeSink records what a recording session received.
type fakeSink struct {
	rs     *RecordedSession
	mu     sync.Mutex
	pkts   [2][]rtp.Packet
	events []bridge.Event
	closed chan struct{}
}

func (s *fakeSink) RTP(dir bridge.Direction, p *bridge.Packet) {
	s.mu.Lock()
	s.pkts[dir&1] = append(s.pkts[dir&1], rtp.Packet{Header: p.Header, Payload: bytes.Clone(p.Payload)})
	s.mu.Unlock()
}

func (s *fakeSink) Event(ev bridge.Event) {
	s.mu.Lock()
	s.events = append(s.events, ev)
	s.mu.Unlock()
}

func (s *fakeSink) Close() error { close(s.closed); return nil }

func (s *fakeSink) packets(d bridge.Direction) []rtp.Packet {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.pkts[d])
}

func (s *fakeSink) kinds() []bridge.EventKind {
	s.mu.Lock()
	defer s.mu.Unlock()
	var k []bridge.EventKind
	for _, e := range s.events {
		k = append(k, e.Kind)
	}
	return k
}

// testRecorder is a RecorderServer on loopback whose sessions are fakeSinks.
type testRecorder struct {
	*RecorderServer
	sinks chan *fakeSink
	stop  context.CancelFunc
	done  chan struct{}
}

func startRecorder(t *testing.T) *testRecorder {
	t.Helper()
	tr := &testRecorder{sinks: make(chan *fakeSink, 16), done: make(chan struct{})}
	rs, err := NewRecorderServer(RecorderConfig{Listen: "127.0.0.1:0", RTPPorts: "45000-45999"}, func(rs *RecordedSession) (RecordingSink, error) {
		s := &fakeSink{rs: rs, closed: make(chan struct{})}
		tr.sinks <- s
		return s, nil
	}, testLog())
	if err != nil {
		t.Fatal(err)
	}
	tr.RecorderServer = rs
	ctx, cancel := context.WithCancel(context.Background())
	tr.stop = cancel
	if err := rs.Listen(ctx); err != nil {
		t.Fatal(err)
	}
	go func() { defer close(tr.done); _ = rs.Serve(ctx) }()
	t.Cleanup(tr.kill)
	return tr
}

// kill stops the recorder without any BYE, as if the process died.
func (tr *testRecorder) kill() {
	tr.RecorderServer.Close()
	tr.stop()
	<-tr.done
}

func (tr *testRecorder) uri() string { return "sip:rec@" + tr.Addr("udp").String() }

func (tr *testRecorder) next(t *testing.T, ctx context.Context) *fakeSink {
	t.Helper()
	select {
	case s := <-tr.sinks:
		return s
	case <-ctx.Done():
		t.Fatal("no recording session arrived")
	}
	return nil
}

// forkCall is a call from agent 1001 (A, the near end) to 2000 (B) through
// bib, with a fork started when it is answered.
type forkCall struct {
	e      *env
	a, b   *siptest.Party
	ac, bc *siptest.Call
	fork   *ForkSession
}

func newForkCall(t *testing.T, prof ForkProfile) *forkCall {
	t.Helper()
	fc := &forkCall{}
	forkc := make(chan *ForkSession, 1)
	b := newParty(t, "2000")
	e := newEnv(t, envOpts{routes: []Route{staticRoute(b, "2000")}, hooks: func(s *Server) {
		s.OnAnswered = func(ci CallInfo, mc *bridge.Call) {
			f, err := s.StartFork(mc, ForkRequest{
				Profile: prof, Near: bridge.SideA,
				NearParty: ForkParty{Name: "Agent Smith", Addr: "1001", Device: "CSFJSMITH", RefCI: "19301625", ClusterID: "StandAloneCluster"},
				FarParty:  ForkParty{Addr: "2000", Device: "SEP38ED18552A12", RefCI: "19301624", ClusterID: "StandAloneCluster"},
			}, nil)
			if err != nil {
				t.Errorf("StartFork: %v", err)
			}
			forkc <- f
		}
	}})
	fc.e, fc.b = e, b
	fc.a = e.party("1001")
	in := answerNext(t, e.ctx, b, b.SDP(siptest.SDPOptions{Codecs: []string{"0", "101"}}))
	ac, err := fc.a.Invite(e.ctx, e.uri("2000"), fc.a.SDP(siptest.SDPOptions{Codecs: []string{"0", "8", "101"}}))
	if err != nil {
		t.Fatal(err)
	}
	fc.ac, fc.bc = ac, recv(t, e.ctx, in)
	select {
	case fc.fork = <-forkc:
	case <-e.ctx.Done():
		t.Fatal("call not answered")
	}
	if fc.fork == nil {
		t.FailNow()
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		fc.fork.Stop(ctx, "test end")
	})
	return fc
}

// waitEvent waits until the fork reported n events of kind.
func (fc *forkCall) waitEvent(t *testing.T, kind string, n int) []ForkEvent {
	t.Helper()
	for {
		var got []ForkEvent
		for _, ev := range fc.fork.Events() {
			if ev.Kind == kind {
				got = append(got, ev)
			}
		}
		if len(got) >= n {
			return got
		}
		select {
		case <-fc.e.ctx.Done():
			t.Fatalf("waiting for %d fork events %q; have %+v", n, kind, fc.fork.Events())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// talk sends n PCMU packets from each party (20 ms apart on the sender's
// clock) and returns the payloads sent.
func (fc *forkCall) talk(t *testing.T, n int, seq0 uint16, tag byte) (fromA, fromB [][]byte) {
	t.Helper()
	for i := range n {
		pa := bytes.Repeat([]byte{tag, byte(i), 0x11}, 53)
		pb := bytes.Repeat([]byte{tag, byte(i), 0x22}, 53)
		fromA, fromB = append(fromA, pa), append(fromB, pb)
		seq := seq0 + uint16(i)
		if err := fc.ac.SendRTP(siptest.RTPPacket(0xA1, seq, uint32(seq)*160, 0, pa)); err != nil {
			t.Fatal(err)
		}
		if err := fc.bc.SendRTP(siptest.RTPPacket(0xB1, seq, uint32(seq)*160, 0, pb)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond) // keep the loopback socket buffers from overflowing
	}
	return fromA, fromB
}

func waitPackets(t *testing.T, ctx context.Context, s *fakeSink, d bridge.Direction, n int) []rtp.Packet {
	t.Helper()
	for {
		if p := s.packets(d); len(p) >= n {
			return p
		}
		select {
		case <-ctx.Done():
			t.Fatalf("sink got %d of %d packets in %s", len(s.packets(d)), n, d)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func checkPayloads(t *testing.T, who string, got []rtp.Packet, want [][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d packets, want %d", who, len(got), len(want))
	}
	ssrc := got[0].SSRC
	for i := range got {
		if !bytes.Equal(got[i].Payload, want[i]) {
			t.Fatalf("%s packet %d: payload differs from what the party sent", who, i)
		}
		if got[i].SSRC != ssrc || (i > 0 && got[i].SequenceNumber != got[i-1].SequenceNumber+1) || (i > 0 && got[i].Timestamp != got[i-1].Timestamp+160) {
			t.Fatalf("%s packet %d: stream not continuous (ssrc %x seq %d ts %d after %d/%d)", who, i, got[i].SSRC, got[i].SequenceNumber, got[i].Timestamp, got[i-1].SequenceNumber, got[i-1].Timestamp)
		}
	}
}

func TestForkToRecorder(t *testing.T) {
	for _, tc := range []struct {
		proto, offer string
	}{{ForkCUCM, OfferDelayed}, {ForkCUCM, OfferEarly}, {ForkSIPREC, OfferEarly}} {
		t.Run(tc.proto+" "+tc.offer, func(t *testing.T) {
			rec := startRecorder(t)
			fc := newForkCall(t, ForkProfile{Name: "p", Destinations: []string{rec.uri()}, Protocol: tc.proto, Offer: tc.offer, Keepalive: -1})
			ctx := fc.e.ctx
			fc.waitEvent(t, "started", 1)
			sink := rec.next(t, ctx)
			fromA, fromB := fc.talk(t, 30, 100, 1)
			checkPayloads(t, "near (agent) channel", waitPackets(t, ctx, sink, bridge.AtoB, 30), fromA)
			checkPayloads(t, "far channel", waitPackets(t, ctx, sink, bridge.BtoA, 30), fromB)
			rs := sink.rs
			if tc.proto == ForkCUCM {
				if rs.RefCI != "19301625" || rs.FarRefCI != "19301624" || rs.Near.Device != "CSFJSMITH" || rs.Far.Device != "SEP38ED18552A12" || rs.Near.Addr != "1001" || rs.Far.Addr != "2000" || rs.Near.Name != "Agent Smith" {
					t.Errorf("identification %+v", rs)
				}
				ids := rs.Identification()
				if len(ids) != 2 || !strings.Contains(ids[0], "<sip:1001@127.0.0.1;x-nearend;x-refci=19301625;x-nearendclusterid=StandAloneCluster;x-nearenddevice=CSFJSMITH;x-nearendaddr=1001;x-farendrefci=19301624;x-farendclusterid=StandAloneCluster;x-farenddevice=SEP38ED18552A12;x-farendaddr=1000") && !strings.Contains(ids[0], ";x-nearend;x-refci=19301625;") {
					t.Errorf("verbatim From headers %q", ids)
				}
				if len(ids) == 2 && !strings.Contains(ids[1], ";x-farend;x-refci=19301625;") {
					t.Errorf("second INVITE From %q, want x-farend first", ids[1])
				}
				if len(rs.CallIDs()) != 2 || rs.CallIDs()[0] == rs.CallIDs()[1] {
					t.Errorf("call ids %v, want two different", rs.CallIDs())
				}
			} else {
				ids := rs.Identification()
				if len(ids) != 1 || !strings.Contains(ids[0], NSRecording) || !strings.Contains(ids[0], "<label>1</label>") {
					t.Errorf("metadata kept %q", ids)
				}
				if rs.Near.Addr != "1001" || rs.Far.Addr != "2000" || rs.Near.Name != "Agent Smith" {
					t.Errorf("participants from metadata: near %+v far %+v", rs.Near, rs.Far)
				}
			}
			if err := fc.ac.Bye(ctx); err != nil {
				t.Fatal(err)
			}
			waitDone(t, ctx, sink.closed, "recording session end")
			if k := sink.kinds(); k[0] != bridge.EvMedia || k[1] != bridge.EvAnswer || k[len(k)-1] != bridge.EvEnd {
				t.Errorf("sink events %v", k)
			}
			waitDone(t, ctx, fc.fork.Done(), "fork end")
		})
	}
}

// TestForkHoldResume: agent hold ends both recording calls (BYE), resume
// places two new ones; the fork streams stay continuous across.
func TestForkHoldResume(t *testing.T) {
	rec := startRecorder(t)
	fc := newForkCall(t, ForkProfile{Name: "p", Destinations: []string{rec.uri()}, Protocol: ForkCUCM, Keepalive: -1})
	ctx := fc.e.ctx
	fc.waitEvent(t, "started", 1)
	s1 := rec.next(t, ctx)
	fc.talk(t, 5, 10, 1)
	waitPackets(t, ctx, s1, bridge.AtoB, 5)
	if res, err := fc.ac.ReInvite(ctx, fc.a.SDP(siptest.SDPOptions{Mode: "sendonly", Codecs: []string{"0", "101"}})); err != nil || !res.IsSuccess() {
		t.Fatalf("hold: %v %v", res, err)
	}
	waitDone(t, ctx, s1.closed, "first recording to end on hold")
	fc.waitEvent(t, "held", 1)
	if res, err := fc.ac.ReInvite(ctx, fc.a.SDP(siptest.SDPOptions{Codecs: []string{"0", "101"}})); err != nil || !res.IsSuccess() {
		t.Fatalf("resume: %v %v", res, err)
	}
	fc.waitEvent(t, "started", 2)
	s2 := rec.next(t, ctx)
	if slices.Equal(s1.rs.CallIDs(), s2.rs.CallIDs()) || len(s2.rs.CallIDs()) != 2 {
		t.Errorf("resume reused call ids: %v then %v", s1.rs.CallIDs(), s2.rs.CallIDs())
	}
	fc.talk(t, 5, 15, 2)
	got := waitPackets(t, ctx, s2, bridge.AtoB, 5)
	first := s1.packets(bridge.AtoB)
	last := first[len(first)-1]
	if got[0].SSRC != last.SSRC || got[0].SequenceNumber != last.SequenceNumber+1 || int32(got[0].Timestamp-last.Timestamp) <= 0 {
		t.Errorf("fork stream not continuous across hold: %d/%d/%x then %d/%d/%x", last.SequenceNumber, last.Timestamp, last.SSRC, got[0].SequenceNumber, got[0].Timestamp, got[0].SSRC)
	}
}

// TestForkFailover: the first destination never answers, the second takes
// the fork; later the second dies mid-call and the third takes over,
// while the call goes on.
func TestForkFailover(t *testing.T) {
	deadURI := "sip:rec@127.0.0.1:1" // nothing listens on port 1
	rec2, rec3 := startRecorder(t), startRecorder(t)
	fc := newForkCall(t, ForkProfile{Name: "p", Destinations: []string{deadURI, rec2.uri(), rec3.uri()}, Protocol: ForkCUCM,
		Timeout: 400 * time.Millisecond, Keepalive: 100 * time.Millisecond})
	ctx := fc.e.ctx
	st := fc.waitEvent(t, "started", 1)
	if st[0].Destination != rec2.uri() {
		t.Fatalf("started at %s, want %s", st[0].Destination, rec2.uri())
	}
	if f := fc.waitEvent(t, "failed", 1); f[0].Destination != deadURI {
		t.Errorf("failure %+v", f[0])
	}
	s2 := rec2.next(t, ctx)
	fc.talk(t, 5, 10, 1)
	waitPackets(t, ctx, s2, bridge.AtoB, 5)
	rec2.kill()
	fc.waitEvent(t, "lost", 1)
	st = fc.waitEvent(t, "started", 2)
	if st[1].Destination != rec3.uri() {
		t.Fatalf("failed over to %s, want %s", st[1].Destination, rec3.uri())
	}
	s3 := rec3.next(t, ctx)
	fc.talk(t, 5, 20, 2)
	waitPackets(t, ctx, s3, bridge.AtoB, 5)
	waitPackets(t, ctx, s3, bridge.BtoA, 5)
	// The call itself was never disturbed.
	if calls := fc.e.srv.Calls(); len(calls) != 1 || calls[0].State != StateAnswered {
		t.Fatalf("call state %v", calls)
	}
	if n := len(fc.a.Received()); n < 10 {
		t.Errorf("agent received %d packets from the other party, want 10", n)
	}
}

// TestForkCodecRejected: the recorder offers no codec the call uses; the
// fork ends with BYE Reason: Q.850;cause=47 and the call goes on.
func TestForkCodecRejected(t *testing.T) {
	rec := startRecorder(t)
	b := newParty(t, "2000")
	var forkc = make(chan *ForkSession, 1)
	e := newEnv(t, envOpts{routes: []Route{staticRoute(b, "2000")}, hooks: func(s *Server) {
		s.OnAnswered = func(ci CallInfo, mc *bridge.Call) {
			f, _ := s.StartFork(mc, ForkRequest{Profile: ForkProfile{Name: "p", Destinations: []string{rec.uri()}, Protocol: ForkCUCM, Keepalive: -1},
				NearParty: ForkParty{Addr: "1001"}, FarParty: ForkParty{Addr: "2000"}}, nil)
			forkc <- f
		}
	}})
	a := e.party("1001")
	in := answerNext(t, e.ctx, b, b.SDP(siptest.SDPOptions{Codecs: []string{"18"}, Extra: "a=rtpmap:18 G729/8000\r\n"}))
	if _, err := a.Invite(e.ctx, e.uri("2000"), a.SDP(siptest.SDPOptions{Codecs: []string{"18"}, Extra: "a=rtpmap:18 G729/8000\r\n"})); err != nil {
		t.Fatal(err)
	}
	recv(t, e.ctx, in)
	f := <-forkc
	defer f.Stop(context.Background(), "end")
	for {
		evs := f.Events()
		if slices.ContainsFunc(evs, func(ev ForkEvent) bool { return ev.Kind == "exhausted" }) {
			if !slices.ContainsFunc(evs, func(ev ForkEvent) bool { return ev.Kind == "failed" && strings.Contains(ev.Detail, "codec") }) {
				t.Errorf("events %+v", evs)
			}
			break
		}
		select {
		case <-e.ctx.Done():
			t.Fatalf("events %+v", f.Events())
		case <-time.After(5 * time.Millisecond):
		}
	}
	if rec.Sessions() != 0 {
		t.Errorf("recorder kept %d sessions", rec.Sessions())
	}
}

// rawInvite sends an INVITE with the given headers and body to the
// recorder and returns the final response (ACKing and ending a 2xx).
func rawInvite(t *testing.T, ctx context.Context, p *siptest.Party, target string, body string, hdrs ...sipmsg.Header) (*sipmsg.Response, func()) {
	t.Helper()
	u, _ := parseDest(target)
	req := sipmsg.NewRequest(sipmsg.INVITE, u)
	if len(body) > 1000 {
		req.SetTransport("TCP")
	}
	from := &sipmsg.FromHeader{Address: sipmsg.Uri{Scheme: "sip", User: "src", Host: "127.0.0.1"}, Params: sipmsg.NewParams()}
	from.Params.Add("tag", sipmsg.GenerateTagN(8))
	req.AppendHeader(from)
	req.AppendHeader(&sipmsg.ToHeader{Address: u, Params: sipmsg.NewParams()})
	cid := sipmsg.CallIDHeader(sipmsg.GenerateTagN(16))
	req.AppendHeader(&cid)
	for _, h := range hdrs {
		req.AppendHeader(h)
	}
	req.SetBody([]byte(body))
	dua := &sipgo.DialogUA{Client: p.Cli, ContactHDR: sipmsg.ContactHeader{Address: p.URI()}}
	ds, err := dua.WriteInvite(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	err = ds.WaitAnswer(ctx, sipgo.AnswerOptions{})
	res := ds.InviteResponse
	bye := func() {}
	if err == nil {
		_ = ds.Ack(ctx)
		bye = func() { _ = ds.Bye(ctx) }
	}
	if res == nil {
		t.Fatalf("no response: %v", err)
	}
	return res, bye
}

const siprecSDP = "v=0\r\no=src 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
	"m=audio 40010 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=label:%s\r\na=sendonly\r\n" +
	"m=audio 40012 RTP/AVP 8\r\na=label:%s\r\na=sendonly\r\n"

const siprecMeta = `<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns="%s"><datamode>complete</datamode>
<session session_id="s1"><sipSessionID>abc</sipSessionID></session>
<participant participant_id="p1"><nameID aor="sip:alice@example.com"><name xml:lang="en">Alice</name></nameID></participant>
<participant participant_id="p2"><nameID aor="sip:bob@example.com"/></participant>
<stream stream_id="st1" session_id="s1"><label>%s</label></stream>
<stream stream_id="st2" session_id="s1"><label>%s</label></stream>
<participantstreamassoc participant_id="p1"><send>st1</send><recv>st2</recv></participantstreamassoc>
<participantstreamassoc participant_id="p2"><send>st2</send></participantstreamassoc>
</recording>`

func multipartBody(parts ...[2]string) (string, []byte) {
	var bp []BodyPart
	for _, p := range parts {
		bp = append(bp, BodyPart{ContentType: p[0], Body: []byte(p[1])})
	}
	return BuildMultipart("xyzzy", bp)
}

// TestRecorderStrictAndLenient: what `bib recorder` refuses, and the
// variations of real clients it accepts.
func TestRecorderStrictAndLenient(t *testing.T) {
	rec := startRecorder(t)
	p := newParty(t, "src")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req := func(v string) sipmsg.Header { return sipmsg.NewHeader("Require", v) }
	ctH := func(v string) sipmsg.Header { return sipmsg.NewHeader("Content-Type", v) }
	sdp12 := fmt.Sprintf(siprecSDP, "1", "2")
	meta := fmt.Sprintf(siprecMeta, NSRecording, "1", "2")
	for _, tc := range []struct {
		name   string
		body   string
		hdrs   []sipmsg.Header
		code   int
		notes  string
		near   string
		single bool
	}{
		{name: "unknown require", hdrs: []sipmsg.Header{req("siprec, 100rel-x")}, body: sdp12, code: 420},
		{name: "multipart without boundary", hdrs: []sipmsg.Header{req("siprec"), ctH("multipart/mixed")}, body: "--x\r\n\r\n", code: 400},
		{name: "broken multipart", hdrs: []sipmsg.Header{req("siprec"), ctH("multipart/mixed;boundary=b")}, body: "garbage without parts", code: 400},
		{name: "malformed metadata", hdrs: []sipmsg.Header{req("siprec")}, body: "", code: 400},
		{name: "no sdp part", hdrs: []sipmsg.Header{req("siprec")}, body: "", code: 415},
		{name: "bad sdp", hdrs: []sipmsg.Header{req("siprec"), ctH("application/sdp")}, body: "v=0\r\nnot sdp", code: 488},
		{name: "rfc 7865", hdrs: []sipmsg.Header{req("siprec")}, code: 200, near: "alice"},
		{name: "legacy namespace, labels 0/1, rs-metadata", hdrs: []sipmsg.Header{req("siprec")}, code: 200, notes: "legacy namespace", near: "alice"},
		{name: "no metadata", hdrs: []sipmsg.Header{req("siprec"), ctH("application/sdp")}, body: sdp12, code: 200, notes: "no recording metadata"},
		{name: "single premixed m-line, extra part", hdrs: []sipmsg.Header{req("siprec")}, code: 200, notes: "pre-mixed", single: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, hdrs := tc.body, tc.hdrs
			switch tc.name {
			case "malformed metadata":
				ct, b := multipartBody([2]string{"application/sdp", sdp12}, [2]string{ContentTypeRSMetadata, "<recording><unclosed>"})
				body, hdrs = string(b), append(hdrs, ctH(ct))
			case "no sdp part":
				ct, b := multipartBody([2]string{ContentTypeRSMetadata, meta})
				body, hdrs = string(b), append(hdrs, ctH(ct))
			case "rfc 7865":
				ct, b := multipartBody([2]string{"application/sdp", sdp12}, [2]string{ContentTypeRSMetadata, meta})
				body, hdrs = string(b), append(hdrs, ctH(ct))
			case "legacy namespace, labels 0/1, rs-metadata":
				ct, b := multipartBody([2]string{"application/sdp", fmt.Sprintf(siprecSDP, "0", "1")}, [2]string{"application/rs-metadata", fmt.Sprintf(siprecMeta, NSRecordingLegacy, "0", "1")})
				body, hdrs = string(b), append(hdrs, ctH(ct))
			case "single premixed m-line, extra part":
				one := "v=0\r\no=src 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40010 RTP/AVP 0\r\na=label:mixed\r\na=sendonly\r\n"
				ct, b := multipartBody([2]string{"application/sdp", one}, [2]string{"text/plain", "hello"})
				body, hdrs = string(b), append(hdrs, ctH(ct))
			}
			res, bye := rawInvite(t, ctx, p, rec.uri(), body, hdrs...)
			if res.StatusCode != tc.code {
				t.Fatalf("got %s (warning %q), want %d", res.StartLine(), header(res, "Warning"), tc.code)
			}
			if tc.code >= 400 {
				if tc.code != 420 && header(res, "Warning") == "" {
					t.Error("rejection without a Warning saying why")
				}
				if tc.code == 420 && header(res, "Unsupported") != "100rel-x" {
					t.Errorf("Unsupported %q", header(res, "Unsupported"))
				}
				return
			}
			ans, err := parseAudioLines(res.Body())
			if err != nil {
				t.Fatal(err)
			}
			want := 2
			if tc.single {
				want = 1
			}
			if len(ans) != want || ans[0].Desc.Mode != bridge.RecvOnly {
				t.Fatalf("answer %q", res.Body())
			}
			s := rec.next(t, ctx)
			bye()
			waitDone(t, ctx, s.closed, "session end")
			if tc.notes != "" && !strings.Contains(strings.Join(s.rs.Notes(), "|"), tc.notes) {
				t.Errorf("notes %q, want %q", s.rs.Notes(), tc.notes)
			}
			if tc.near != "" && s.rs.Near.Addr != tc.near {
				t.Errorf("near %+v", s.rs.Near)
			}
		})
	}
}
