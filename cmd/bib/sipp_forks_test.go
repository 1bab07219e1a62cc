package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bib-project/bib/bridge"
	"github.com/bib-project/bib/bridge/codec"
	"github.com/bib-project/bib/sip"
	"github.com/bib-project/bib/sip/siptest"
)

// TestSIPpRecorderReceivesForks: a SIPp UAS we did not write plays a
// call-manager-style recorder with delayed offer. It checks bib's fork
// INVITEs (x-nearend/x-farend From parameters, isFocus, Supported:
// X-cisco-srtp-fallback, P-Asserted-Identity, Session-ID, no body), offers
// recvonly in its 200 and checks bib's answer in the ACK (a=sendonly, the
// call's codec and telephone-event). Two fork calls per recorded call.
func TestSIPpRecorderReceivesForks(t *testing.T) {
	sippBin := needSIPp(t)
	scen, _ := filepath.Abs("../../testdata/sipp")
	recPort, recMedia := freePort(t), freePort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tmp := t.TempDir()
	var recOut bytes.Buffer
	rec := exec.CommandContext(ctx, sippBin, "-sf", filepath.Join(scen, "recorder_uas_delayed.xml"),
		"-i", "127.0.0.1", "-p", fmt.Sprint(recPort), "-mi", "127.0.0.1", "-mp", fmt.Sprint(recMedia),
		"-m", "2", "-nostdin", "-trace_err", "-error_file", filepath.Join(tmp, "rec_err.log"))
	rec.Stdout, rec.Stderr, rec.Dir = &recOut, &recOut, tmp
	if err := rec.Start(); err != nil {
		t.Fatal(err)
	}

	agent, customer := newTestParty(t, "1001"), newTestParty(t, "2001")
	cfg := agentConfig(customer, "automatic")
	cfg.Devices[0].RecordingProfile = "sipp"
	cfg.RecordingProfiles = []RecordingProfile{{Name: "sipp", Destination: fmt.Sprintf("sip:rec@127.0.0.1:%d", recPort), Protocol: "cucm", Offer: "delayed"}}
	ts := startServer(t, cfg)
	ac, bc := placeCall(t, ctx, ts, agent, customer)
	cs, _ := ts.callState(waitCallID(t, ctx, ts))
	var f *sip.ForkSession
	for {
		cs.mu.Lock()
		f = cs.forks[bridge.SideA]
		cs.mu.Unlock()
		if f != nil && len(f.Events()) > 0 {
			if ev := f.Events()[0]; ev.Kind != "started" {
				t.Fatalf("fork did not start: %+v\nsipp:\n%s", f.Events(), tail(recOut.Bytes()))
			}
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("forks did not start: %+v\n%s", f, recOut.Bytes())
		}
		time.Sleep(10 * time.Millisecond)
	}
	tone := toneStream(440, 50)
	for i := range 50 {
		ac.SendRTP(siptest.RTPPacket(1, uint16(i), uint32(160*i), 0, tone[i]))
		bc.SendRTP(siptest.RTPPacket(2, uint16(i), uint32(160*i), 0, tone[i]))
		time.Sleep(20 * time.Millisecond)
	}
	streams := f.Streams()
	for i, st := range streams {
		if st == nil || st.C.Packets.Load() < 40 {
			t.Errorf("fork stream %d sent %v packets to the recorder", i, st)
		}
	}
	if err := ac.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rec.Wait(); err != nil {
		errLog, _ := os.ReadFile(filepath.Join(tmp, "rec_err.log"))
		t.Fatalf("sipp recorder: %v\n%s\nerrors:\n%s", err, tail(recOut.Bytes()), errLog)
	}
}

// TestSIPpSIPRECToRecorder: a SIPp UAC sends a SIPREC INVITE (multipart
// body with two labelled streams and RFC 7865 metadata) to bib recorder and
// plays sip-tester's g711a.pcap on the first stream; bib recorder answers
// recvonly and archives a stereo recording with that audio and the metadata.
func TestSIPpSIPRECToRecorder(t *testing.T) {
	sippBin := needSIPp(t)
	scen, _ := filepath.Abs("../../testdata/sipp")
	rs := startRecorderService(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tmp := t.TempDir()
	var out bytes.Buffer
	uac := exec.CommandContext(ctx, sippBin, "-sf", filepath.Join(scen, "siprec_uac.xml"), rs.srv.Addr("tcp").String(),
		"-t", "t1", "-i", "127.0.0.1", "-p", fmt.Sprint(freePort(t)), "-mi", "127.0.0.1", "-mp", fmt.Sprint(freePort(t)),
		"-m", "1", "-d", "2000", "-timeout", "40s", "-timeout_error", "-nostdin", "-trace_err", "-error_file", filepath.Join(tmp, "err.log"))
	uac.Stdout, uac.Stderr, uac.Dir = &out, &out, tmp
	if err := uac.Run(); err != nil {
		errLog, _ := os.ReadFile(filepath.Join(tmp, "err.log"))
		t.Fatalf("sipp siprec uac: %v\n%s\nerrors:\n%s", err, tail(out.Bytes()), errLog)
	}
	m := waitForkRecording(t, ctx, rs.store)
	left, right := readForkStereo(t, ctx, rs.store, m.ID)
	if len(left) < 8000 {
		t.Fatalf("recording holds %d samples, want about 2 s", len(left))
	}
	if lvl := codec.RMS(left); lvl < 0.005 {
		t.Errorf("the pcap audio is missing from the first stream's channel (rms %.4f, right %.4f); near %+v far %+v events %+v", lvl, codec.RMS(right), m.Near, m.Far, m.Events)
	}
	if lvl := codec.RMS(right); lvl != 0 {
		t.Errorf("the silent second stream has audio (rms %.4f)", lvl)
	}
	b, err := os.ReadFile(identificationPath(rs.opts.Data, m.ID))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "urn:ietf:params:xml:ns:recording:1") || !strings.Contains(string(b), "sip:1001@example.com") {
		t.Errorf("the received metadata is not kept verbatim:\n%s", b)
	}
}
