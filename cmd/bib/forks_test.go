package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bib-project/bib/bridge"
	"github.com/bib-project/bib/bridge/codec"
	"github.com/bib-project/bib/recorder"
	"github.com/bib-project/bib/sip"
	"github.com/bib-project/bib/sip/siptest"
	"github.com/bib-project/bib/storage"
	sipmsg "github.com/emiago/sipgo/sip"
)

type sipmsgUri = sipmsg.Uri

var sipmsgParseUri = sipmsg.ParseUri

type bytesReaderAt []byte

func (b bytesReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(b)) {
		return 0, io.EOF
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func TestRecordingProfileValidate(t *testing.T) {
	for _, tc := range []struct {
		p    RecordingProfile
		want string
	}{
		{RecordingProfile{Name: "a", Destination: "sip:rec@127.0.0.1:5080"}, ""},
		{RecordingProfile{Name: "a", Destination: "sip:rec@127.0.0.1", Protocol: "siprec", Failover: []string{"sip:r2@127.0.0.1"}}, ""},
		{RecordingProfile{Name: "a", Destination: "nonsense uri"}, "recording_profiles[0].destination"},
		{RecordingProfile{Name: "a", Destination: "sip:r@h", Failover: []string{"::"}}, "recording_profiles[0].failover[0]"},
		{RecordingProfile{Name: "a", Destination: "sip:r@h", Protocol: "nice"}, "recording_profiles[0].protocol"},
		{RecordingProfile{Name: "a", Destination: "sip:r@h", Offer: "late"}, "recording_profiles[0].offer"},
		{RecordingProfile{Name: "a", Destination: "sip:r@h", Protocol: "siprec", Offer: "delayed"}, "recording_profiles[0].offer"},
		{RecordingProfile{Name: "a", Destination: "sip:r@h", Transport: "sctp"}, "recording_profiles[0].transport"},
		{RecordingProfile{Destination: "sip:r@h"}, "recording_profiles[0].name"},
	} {
		err := ValidateRecordingProfiles([]RecordingProfile{tc.p})
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)) {
			t.Errorf("%+v: %v, want %q", tc.p, err, tc.want)
		}
	}
	if err := ValidateRecordingProfiles([]RecordingProfile{{Name: "a", Destination: "sip:r@h"}, {Name: "A", Destination: "sip:r@h"}}); err == nil {
		t.Error("duplicate names accepted")
	}
}

// startRecorderService runs `bib recorder` in-process on free ports.
func startRecorderService(t *testing.T, opts ...func(*recorderOptions)) *recorderService {
	t.Helper()
	var w io.Writer = io.Discard
	if os.Getenv("BIB_TEST_LOG") != "" {
		w = os.Stderr
	}
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	o := recorderOptions{SIP: "127.0.0.1:0", Data: t.TempDir(), RTPPorts: "46000-46999"}
	for _, f := range opts {
		f(&o)
	}
	rs, err := newRecorderService(o, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := rs.listen(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- rs.serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("recorder did not stop")
		}
	})
	return rs
}

// TestForksServeToRecorder: bib serve forks a call to bib recorder; the
// recorder's stereo recording holds exactly what each party sent (G.711
// decoded), near end left, far end right.
func TestForksServeToRecorder(t *testing.T) {
	for _, tc := range []forkCase{{"cucm", "delayed"}, {"cucm", "early"}, {"siprec", ""}} {
		t.Run(tc.proto+" "+tc.offer, func(t *testing.T) {
			rs := startRecorderService(t)
			callee, err := siptest.NewParty("2000", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer callee.Close()
			// The real path: a configured agent device whose recording
			// profile points at the recorder; bib serve forks on answer.
			var cfg Config
			cfg.Routes = []sip.Route{{Match: "2000", Target: "sip:${user}@" + callee.SIPAddr.String()}}
			cfg.Cluster = bridge.Cluster{BuiltinBridgeEnable: true}
			cfg.Devices = []bridge.Device{{Name: "CSFJSMITH", Line: "1001", BuiltinBridge: "default",
				Recording: bridge.RecordingAutomatic, RecordingProfile: "rec"}}
			cfg.RecordingProfiles = []RecordingProfile{{Name: "rec", Destination: "sip:rec@" + rs.srv.Addr("udp").String(),
				Protocol: tc.proto, Offer: tc.offer}}
			ts := startServer(t, cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			agent, err := siptest.NewParty("1001", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer agent.Close()
			go func() {
				in := <-callee.Incoming
				_ = in.Answer(callee.SDP(siptest.SDPOptions{Codecs: []string{"0", "101"}}))
				callee.Incoming <- in
			}()
			bib := ts.sip.Addr("udp")
			ac, err := agent.Invite(ctx, agentURI(bib.String()), agent.SDP(siptest.SDPOptions{Codecs: []string{"0", "101"}}))
			if err != nil {
				t.Fatal(err)
			}
			var bc *siptest.Call
			select {
			case bc = <-callee.Incoming:
			case <-ctx.Done():
				t.Fatal("callee got no call")
			}
			cs, _ := ts.callState(waitCallID(t, ctx, ts))
			startedFork(t, ctx, cs)
			refci := strconv.FormatUint(uint64(cs.refci[bridge.SideA]), 10)
			// One second of a tone from each party, paced as a phone sends.
			enc, _ := codec.NewEncoder("PCMU")
			var pa, pb float64
			var sentA, sentB [][]byte
			tick := time.NewTicker(20 * time.Millisecond)
			for i := range 50 {
				<-tick.C
				a := make([]byte, 160)
				b := make([]byte, 160)
				enc.Encode(a, codec.Tone(make([]int16, 160), 440, 8000, 8000, &pa))
				enc.Encode(b, codec.Tone(make([]int16, 160), 1000, 8000, 6000, &pb))
				sentA, sentB = append(sentA, a), append(sentB, b)
				ac.SendRTP(siptest.RTPPacket(0xA, uint16(i), uint32(i*160), 0, a))
				bc.SendRTP(siptest.RTPPacket(0xB, uint16(i), uint32(i*160), 0, b))
			}
			tick.Stop()
			time.Sleep(100 * time.Millisecond) // let the last packets cross both hops
			if err := ac.Bye(ctx); err != nil {
				t.Fatal(err)
			}
			m := waitForkRecording(t, ctx, rs.store)
			if m.RefCI != tc.refci(refci) || m.Near.Device != tc.nearDevice() {
				t.Errorf("metadata refci %q near device %q", m.RefCI, m.Near.Device)
			}
			left, right := readForkStereo(t, ctx, rs.store, m.ID)
			checkForkChannel(t, "near (left)", left, sentA)
			checkForkChannel(t, "far (right)", right, sentB)
			b, err := os.ReadFile(identificationPath(rs.opts.Data, m.ID))
			if err != nil {
				t.Fatal(err)
			}
			var id identification
			if err := json.Unmarshal(b, &id); err != nil {
				t.Fatal(err)
			}
			wantIdent := ";x-nearend;x-refci=" + refci + ";"
			if tc.proto == "siprec" {
				wantIdent = "urn:ietf:params:xml:ns:recording:1"
			}
			if len(id.Identification) == 0 || !strings.Contains(id.Identification[0], wantIdent) {
				t.Errorf("identification sidecar %s", b)
			}
		})
	}
}

type forkCase struct{ proto, offer string }

func (tc forkCase) refci(sent string) string {
	if tc.proto == "siprec" {
		return ""
	}
	return sent
}

func (tc forkCase) nearDevice() string {
	if tc.proto == "siprec" {
		return ""
	}
	return "CSFJSMITH"
}

func agentURI(bib string) sipmsgUri {
	var u sipmsgUri
	_ = sipmsgParseUri("sip:2000@"+bib, &u)
	return u
}

// waitRecording waits for the archive's one finished recording.
func waitForkRecording(t *testing.T, ctx context.Context, st storage.Store) storage.Meta {
	t.Helper()
	for {
		list, _, err := st.List(ctx, storage.Query{})
		if err == nil && len(list) == 1 && list[0].Status != storage.StatusRecording {
			if list[0].Status != storage.StatusComplete {
				t.Fatalf("recording %s: %s", list[0].Status, list[0].Reason)
			}
			return list[0]
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no finished recording: %v %+v", err, list)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func readForkStereo(t *testing.T, ctx context.Context, st storage.Store, id string) (left, right []int16) {
	t.Helper()
	f, _, err := st.Open(ctx, id, "")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	info, err := recorder.ParseWAVHeader(bytesReaderAt(b))
	if err != nil || info.Channels != 2 || info.Rate != 8000 {
		t.Fatalf("wav %+v %v", info, err)
	}
	data := b[info.DataOffset : info.DataOffset+info.DataBytes]
	for i := 0; i+3 < len(data); i += 4 {
		left = append(left, int16(uint16(data[i])|uint16(data[i+1])<<8))
		right = append(right, int16(uint16(data[i+2])|uint16(data[i+3])<<8))
	}
	return left, right
}

// checkChannel: after leading silence the channel holds exactly the
// decoded payloads, then silence.
func checkForkChannel(t *testing.T, name string, ch []int16, sent [][]byte) {
	t.Helper()
	dec, _ := codec.NewDecoder("PCMU")
	var want []int16
	for _, p := range sent {
		buf := make([]int16, 160)
		want = append(want, buf[:dec.Decode(buf, p)]...)
	}
	at := slices.IndexFunc(ch, func(v int16) bool { return v != 0 })
	if at < 0 {
		t.Fatalf("%s: silent", name)
	}
	// The tone's first sample is 0 (phase 0): align on the first non-zero one.
	first := slices.IndexFunc(want, func(v int16) bool { return v != 0 })
	start := at - first
	if start < 0 || start+len(want) > len(ch) {
		t.Fatalf("%s: audio at %d does not fit (%d samples, want %d)", name, at, len(ch), len(want))
	}
	if got := ch[start : start+len(want)]; !slices.Equal(got, want) {
		diff := 0
		for i := range got {
			if got[i] != want[i] {
				diff++
			}
		}
		t.Fatalf("%s: %d of %d samples differ from what the party sent", name, diff, len(want))
	}
	for _, v := range ch[start+len(want):] {
		if v != 0 {
			t.Fatalf("%s: trailing audio after the party stopped", name)
		}
	}
}
