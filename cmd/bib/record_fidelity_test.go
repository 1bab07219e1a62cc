package main

// End-to-end recording fidelity: the cases (2)-(6), each a real SIP
// call through bib serve with automatic recording, the parties sending
// paced RTP from their siptest sockets, the recording fetched through the
// API and checked with detectors (exact sample matches, zero runs, markers,
// codec.Goertzel). Case (1) is TestRecordingEndToEnd.

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bib-project/bib/bridge/codec"
	"github.com/bib-project/bib/recorder"
	"github.com/bib-project/bib/sip/siptest"
	"github.com/bib-project/bib/storage"
)

const fidFrame = 160 // samples per 20 ms packet at 8 kHz

// fidCall is one answered, recorded call between the agent (left channel)
// and the customer (right channel).
type fidCall struct {
	ctx                context.Context
	ts                 *testServer
	agent, customer    *siptest.Party
	ac, bc             *siptest.Call
	answerLo, answerHi time.Time // the recording's sample 0 lies between these
	hangupLo, hangupHi time.Time // and its end between these
	meta               storage.Meta
	left, right        []int16
	wavRate, wavFrames int
}

func startFidelityCall(t *testing.T) *fidCall {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	fc := &fidCall{ctx: ctx}
	fc.agent, fc.customer = newTestParty(t, "1001"), newTestParty(t, "2001")
	fc.ts = startServer(t, agentConfig(fc.customer, "automatic"))
	// The recorder's sample 0 is when bib has the caller's ACK: after the
	// INVITE left and before the call shows a recording in progress.
	fc.answerLo = time.Now()
	fc.ac, fc.bc = placeCall(t, ctx, fc.ts, fc.agent, fc.customer)
	waitRecordingStarted(t, ctx, fc.ts, waitCallID(t, ctx, fc.ts))
	fc.answerHi = time.Now()
	return fc
}

// hangup has the agent send BYE, waits for the finished recording and
// fetches its full metadata and audio through the API.
func (fc *fidCall) hangup(t *testing.T) {
	t.Helper()
	fc.hangupLo = time.Now()
	if err := fc.ac.Bye(fc.ctx); err != nil {
		t.Fatal(err)
	}
	// bib answers the BYE before it ends the recording, so the hangup
	// bracket closes when the finished recording shows (polled every 2 ms).
	var listed storage.Meta
	for listed.ID == "" {
		resp, err := http.Get(fc.ts.httpURL + "/api/v1/recordings")
		if err == nil {
			var body struct{ Recordings []storage.Meta }
			json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if len(body.Recordings) > 0 && body.Recordings[0].Status != "recording" {
				listed = body.Recordings[0]
				break
			}
		}
		select {
		case <-fc.ctx.Done():
			t.Fatal("no finished recording appeared")
		case <-time.After(2 * time.Millisecond):
		}
	}
	fc.hangupHi = time.Now()
	resp, err := http.Get(fc.ts.httpURL + "/api/v1/recordings/" + listed.ID)
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(resp.Body).Decode(&fc.meta)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	m := fc.meta
	if m.Status != storage.StatusComplete || m.Channels != 2 || m.SampleRate != 8000 {
		t.Fatalf("recording meta: status %s channels %d rate %d reason %q", m.Status, m.Channels, m.SampleRate, m.Reason)
	}
	resp, err = http.Get(fc.ts.httpURL + "/api/v1/recordings/" + m.ID + "/audio")
	if err != nil {
		t.Fatal(err)
	}
	wav, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	info, err := recorder.ParseWAVHeader(bytes.NewReader(wav))
	if err != nil {
		t.Fatal(err)
	}
	if info.Channels != 2 || info.Rate != 8000 {
		t.Fatalf("wav format %d ch %d Hz", info.Channels, info.Rate)
	}
	pcm := wav[info.DataOffset:]
	n := len(pcm) / 4
	fc.left, fc.right = make([]int16, n), make([]int16, n)
	for i := range n {
		fc.left[i] = int16(binary.LittleEndian.Uint16(pcm[4*i:]))
		fc.right[i] = int16(binary.LittleEndian.Uint16(pcm[4*i+2:]))
	}
	fc.wavRate, fc.wavFrames = info.Rate, n
}

// checkDuration compares the WAV's length with the call's duration, answer
// to hangup, within the 20 ms. Two comparisons:
//   - against the recorder's own answer and hangup instants (metadata
//     start_time and end_time): |samples/8000 - (end-start)| <= 20 ms;
//   - against the test's clock: bib's answer lies in [answerLo, answerHi]
//     (INVITE sent .. recording seen in progress) and its hangup in
//     [hangupLo, hangupHi] (BYE sent .. finished recording listed), so the call lasted
//     between hangupLo-answerHi and hangupHi-answerLo; the WAV length must
//     be in that range widened by 20 ms. The brackets are the test's
//     uncertainty about when bib saw the ACK and the BYE, not a tolerance
//     of the recorder; start_time and end_time must also fall inside them.
func (fc *fidCall) checkDuration(t *testing.T) {
	t.Helper()
	const tol = 20 * time.Millisecond
	m := fc.meta
	wavDur := time.Duration(fc.wavFrames) * time.Second / time.Duration(fc.wavRate)
	metaDur := m.EndTime.Sub(m.StartTime)
	if d := wavDur - metaDur; d < -tol || d > tol {
		t.Errorf("recording holds %v of audio, metadata says answer-to-hangup %v (start %v end %v)", wavDur, metaDur, m.StartTime, m.EndTime)
	}
	if d := time.Duration(m.DurationMS)*time.Millisecond - wavDur; d < -time.Millisecond || d > time.Millisecond {
		t.Errorf("duration_ms %d, WAV holds %v", m.DurationMS, wavDur)
	}
	lo, hi := fc.hangupLo.Sub(fc.answerHi), fc.hangupHi.Sub(fc.answerLo)
	if wavDur < lo-tol || wavDur > hi+tol {
		t.Errorf("recording holds %v of audio; the call lasted between %v and %v", wavDur, lo, hi)
	}
	if m.StartTime.Before(fc.answerLo.Round(0).Add(-time.Millisecond)) || m.StartTime.After(fc.answerHi.Round(0).Add(time.Millisecond)) {
		t.Errorf("start_time %v outside the answer bracket [%v, %v]", m.StartTime, fc.answerLo, fc.answerHi)
	}
	// end_time is start_time plus the audio written, so it is as exact as the
	// duration: within the 20 ms of the hangup.
	if m.EndTime.Before(fc.hangupLo.Round(0).Add(-tol)) || m.EndTime.After(fc.hangupHi.Round(0).Add(time.Millisecond)) {
		t.Errorf("end_time %v outside the hangup bracket [%v, %v]", m.EndTime, fc.hangupLo, fc.hangupHi)
	}
}

// samplePosOf is the recording position of wall instant at.
func (fc *fidCall) samplePosOf(at time.Time) int {
	return int(at.Round(0).Sub(fc.meta.StartTime) * 8000 / time.Second)
}

// fidSignal is n frames of dc + amp*sin: never zero after G.711, so a
// written silence is told apart from the signal sample by sample.
func fidSignal(freq float64, n int) []int16 {
	out := make([]int16, n*fidFrame)
	for i := range out {
		out[i] = int16(3000 + 2000*math.Sin(2*math.Pi*freq*float64(i)/8000))
	}
	return out
}

// fidEncode splits pcm into 20 ms PCMU payloads. The first two bytes of
// each payload are replaced by the frame's index (as nonzero u-law codes):
// a periodic tone repeats its frames exactly (440 Hz every 5 frames), and
// the checks locate frames by content.
func fidEncode(pcm []int16) [][]byte {
	out := make([][]byte, len(pcm)/fidFrame)
	for k := range out {
		p := make([]byte, fidFrame)
		for j := range p {
			p[j] = codec.UlawEncode(pcm[k*fidFrame+j])
		}
		p[0], p[1] = 0xfe-byte(k%30), 0xfe-byte(k/30%30) // small positive values, never 0 (0xff)
		out[k] = p
	}
	return out
}

// fidDecode is what the recorder should write for payloads.
func fidDecode(payloads ...[]byte) []int16 {
	var out []int16
	for _, p := range payloads {
		for _, b := range p {
			out = append(out, codec.UlawDecode(b))
		}
	}
	return out
}

// findSeq returns where want starts in ch (searching from 'from'), or -1.
func findSeq(ch []int16, want []int16, from int) int {
	for off := max(from, 0); off+len(want) <= len(ch); off++ {
		if ch[off] == want[0] && slices.Equal(ch[off:off+len(want)], want) {
			return off
		}
	}
	return -1
}

func fidAllZero(x []int16) bool {
	for _, v := range x {
		if v != 0 {
			return false
		}
	}
	return true
}

// zeroRun returns the run of zero samples containing i: [from, to).
func zeroRun(ch []int16, i int) (from, to int) {
	if i < 0 || i >= len(ch) || ch[i] != 0 {
		return i, i
	}
	from, to = i, i
	for from > 0 && ch[from-1] == 0 {
		from--
	}
	for to < len(ch) && ch[to] == 0 {
		to++
	}
	return from, to
}

func fidCount(m storage.Meta, kind string) int {
	n := 0
	for _, e := range m.Events {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

// impairedSender sends one party's packets with designed impairments: a
// packet is dropped, sent at once, sent later by a timer (reordering
// follows from unequal delays), swapped with its successor, or sent twice.
type impairedSender struct {
	t    *testing.T
	call *siptest.Call
	rng  *rand.Rand
	wg   sync.WaitGroup

	dropped    []int // frame indexes never sent
	duplicates int
	swapped    int
	held       []byte // a packet held back to follow the next one
}

// send sends frame k's packet b now or later as the dice say: dropped
// (only if mayDrop), held back to follow the next packet, duplicated, and
// sent at once if direct, else after 0-40 ms.
func (s *impairedSender) send(k int, b []byte, mayDrop, direct bool) {
	if mayDrop && s.rng.IntN(100) < 5 {
		s.dropped = append(s.dropped, k)
		s.flushHeld()
		return
	}
	dup := s.rng.IntN(100) < 3
	swap := s.held == nil && mayDrop && s.rng.IntN(100) < 4
	var delay time.Duration
	if !direct {
		delay = time.Duration(s.rng.IntN(41)) * time.Millisecond
	}
	switch {
	case swap:
		s.held = b
		s.swapped++
	case delay == 0:
		s.out(b)
		s.flushHeld()
	default:
		s.flushHeld()
		s.later(b, delay)
	}
	if dup {
		s.duplicates++
		s.later(b, time.Duration(1+s.rng.IntN(40))*time.Millisecond)
	}
}

func (s *impairedSender) flushHeld() {
	if s.held != nil {
		s.out(s.held)
		s.held = nil
	}
}

func (s *impairedSender) out(b []byte) {
	if err := s.call.SendRTP(b); err != nil {
		s.t.Errorf("send rtp: %v", err)
	}
}

func (s *impairedSender) later(b []byte, d time.Duration) {
	s.wg.Add(1)
	time.AfterFunc(d, func() {
		defer s.wg.Done()
		s.out(b)
	})
}

func (s *impairedSender) wait() {
	s.flushHeld()
	s.wg.Wait()
}

// TestFidelityImpairedEndToEnd is the case (2): 5% loss, up to
// 40 ms jitter, reordering and duplicates made by the parties' senders.
func TestFidelityImpairedEndToEnd(t *testing.T) {
	fc := startFidelityCall(t)
	const frames = 200 // 4 s
	const markFrame, markAt = 170, 40
	pa, pb := fidSignal(440, frames), fidSignal(700, frames)
	for _, p := range [][]int16{pa, pb} {
		for j := range 10 {
			p[markFrame*fidFrame+markAt+j] = 30000
		}
	}
	sendA, sendB := fidEncode(pa), fidEncode(pb)
	rng := rand.New(rand.NewPCG(2, 5))
	sa := &impairedSender{t: t, call: fc.ac, rng: rng}
	sb := &impairedSender{t: t, call: fc.bc, rng: rng}
	tick := time.NewTicker(20 * time.Millisecond)
	for k := range frames {
		<-tick.C
		// Never drop the first frames (they locate the stream), the marker
		// frame, or the last frames (a loss at the end is not detectable
		// as a loss by sequence numbers).
		mayDrop := k >= 5 && k != markFrame && k < frames-5
		// In three ticks of ten both parties' packets go straight out, the
		// others are delayed by 0-40 ms each. The recorder anchors each
		// stream on its least-delayed packet; the test's own pacing (the
		// ticker wakes late by a varying few hundred microseconds under
		// -race on a loaded machine) is part of that delay. Undelayed
		// packets in the same ticks give both streams the same minimum
		// delay, the issue's condition for sample alignment ("a marker
		// sent by both parties at the same instant"); with independent
		// choices the two minima came from different ticks and differed
		// by up to 2 samples of pacing noise alone. Being frequent, they
		// also show up in the first frames, inside the jitter buffer, so
		// the anchor is mostly settled before the first write.
		direct := rng.IntN(10) < 3
		sa.send(k, siptest.RTPPacket(0xA1, uint16(k), uint32(fidFrame*k), 0, sendA[k]), mayDrop, direct)
		sb.send(k, siptest.RTPPacket(0xB2, uint16(7000+k), uint32(90000+fidFrame*k), 0, sendB[k]), mayDrop, direct)
	}
	tick.Stop()
	sa.wait()
	sb.wait()
	time.Sleep(100 * time.Millisecond) // let the last packets cross bib before hanging up
	fc.hangup(t)
	m := fc.meta
	t.Logf("dropped agent %v, customer %v; duplicates %d/%d; swaps %d/%d", sa.dropped, sb.dropped, sa.duplicates, sb.duplicates, sa.swapped, sb.swapped)

	fc.checkDuration(t)

	// Corrections a channel applies after the marker were still pending
	// when the marker was placed (the recorder waits for a silence to apply
	// them, README "Placement"): the marker check allows for them.
	pendingAtMark := 0
	for _, c := range []struct {
		name string
		ch   []int16
		s    *impairedSender
		sent [][]byte
		st   storage.DirStats
	}{
		{"agent (left)", fc.left, sa, sendA, m.Near.Stream},
		{"customer (right)", fc.right, sb, sendB, m.Far.Stream},
	} {
		// The first frame locates the stream; frame k then belongs at
		// pos0 + 160k (placement by RTP timestamp), plus the anchor
		// corrections the recorder applied so far (see below).
		pos0 := findSeq(c.ch, fidDecode(c.sent[0]), 0)
		if pos0 < 0 {
			t.Fatalf("%s: first frame not in the recording", c.name)
		}
		if !fidAllZero(c.ch[:pos0]) {
			t.Errorf("%s: leading part is not silence", c.name)
		}
		lost := c.s.dropped
		// Walk the frames: every frame that was sent is in the channel
		// sample for sample; received frames in a row are contiguous
		// (continuous audio is never cut or padded); a run of n lost frames
		// is exactly zero between its neighbours and 160n samples long,
		// less the anchor correction the recorder may take out of a
		// silence (README, "Placement by RTP timestamp": an earlier anchor
		// learned after the first write is applied at the stream's next
		// silence, which is then shorter by that much). That correction is
		// measured as the shift of the audio after the hole relative to
		// pos0 + 160k; it may only move audio earlier, and is reported.
		shift, prevEnd := 0, -1
		var corr []string
		for k, p := range c.sent {
			if slices.Contains(lost, k) {
				continue
			}
			want := fidDecode(p)
			exp := pos0 + k*fidFrame + shift
			at := -1
			if prevEnd >= 0 && !slices.Contains(lost, k-1) {
				// Right after a received frame: exactly contiguous.
				if exp+fidFrame <= len(c.ch) && slices.Equal(c.ch[exp:exp+fidFrame], want) {
					at = exp
				}
			} else {
				// After a hole: at most 2 ms earlier (an anchor correction),
				// never later.
				for d := 0; d <= 16 && at < 0; d++ {
					if e := exp - d; e >= 0 && e+fidFrame <= len(c.ch) && slices.Equal(c.ch[e:e+fidFrame], want) {
						at = e
					}
				}
			}
			if at < 0 {
				t.Errorf("%s: frame %d not at sample %d (or up to 2 ms earlier after a loss)", c.name, k, exp)
				break
			}
			if at != exp {
				corr = append(corr, fmt.Sprintf("%d samples at frame %d", exp-at, k))
				shift += at - exp
				if k > markFrame {
					pendingAtMark += exp - at
				}
			}
			if prevEnd >= 0 && at > prevEnd {
				n := 0
				for n < k && slices.Contains(lost, k-1-n) {
					n++
				}
				if !fidAllZero(c.ch[prevEnd:at]) {
					t.Errorf("%s: lost frames %d..%d not silent in [%d,%d)", c.name, k-n, k-1, prevEnd, at)
				}
				if got, want := at-prevEnd, n*fidFrame; got != want {
					t.Logf("%s: lost frames %d..%d: %d samples of silence, %d less than the loss (anchor correction)", c.name, k-n, k-1, got, want-got)
				}
			}
			prevEnd = at + fidFrame
		}
		// The issue: each lost frame is silence of the right length. The
		// recorder's design (README, placement) takes late-learned anchor
		// corrections out of the next silence, so a hole can be shorter by
		// the correction: here arrival-time noise (ticker wake-up, syscalls,
		// scheduling under -race), measured at 0-4 samples per call, the
		// same corrections that keep the marker check below within +-1.
		// The exact length holds for every hole without a
		// correction (checked above: any shortening shows as a shift); a
		// correction is allowed up to 1 ms in total per channel and logged.
		// Audio is never moved later, and a larger total fails.
		if -shift > 8 {
			t.Errorf("%s: holes shortened by %d samples in total (%v)", c.name, -shift, corr)
		} else if shift != 0 {
			t.Logf("%s: anchor corrections taken out of holes: %v", c.name, corr)
		}
		runs := 0
		for i, k := range lost {
			if i == 0 || lost[i-1] != k-1 {
				runs++
			}
		}
		// gap_ms counts the missing audio in full, correction or not.
		if c.st.Gaps != uint64(runs) || c.st.GapMS != int64(20*len(lost)) {
			t.Errorf("%s: gaps %d (%d ms); the sender dropped %d frames in %d runs", c.name, c.st.Gaps, c.st.GapMS, len(lost), runs)
		}
		if c.st.Lost != uint64(len(lost)) || c.st.Duplicates != uint64(c.s.duplicates) || c.st.Late != 0 || c.st.Gaps == 0 {
			t.Errorf("%s: stats %+v; dropped %d, duplicated %d", c.name, c.st, len(lost), c.s.duplicates)
		}
	}
	if len(sa.dropped) == 0 || len(sb.dropped) == 0 {
		t.Fatal("the seed made no loss; the marker check needs gaps before it")
	}

	// A marker sent by both parties in the same 20 ms tick, late in the
	// call (after losses gave the recorder holes to realign at), lands on
	// the same sample +-1.
	ml, mr := fidMarker(fc.left), fidMarker(fc.right)
	if ml < 0 || mr < 0 {
		t.Fatalf("marker not found: left %d right %d", ml, mr)
	}
	if d, tol := ml-mr, 1+pendingAtMark; d < -tol || d > tol {
		t.Errorf("channels misaligned: marker at sample %d (agent) and %d (customer); corrections pending at the marker: %d samples",
			ml, mr, pendingAtMark)
	}
	t.Logf("recording %s: %d ms; marker at %d / %d", m.ID, m.DurationMS, ml, mr)
}

// fidMarker returns the first sample louder than the test signal, or -1.
func fidMarker(x []int16) int {
	for i, v := range x {
		if v > 20000 {
			return i
		}
	}
	return -1
}

// fidTone says which of freqs dominates x (codec.Goertzel), and its power.
func fidTone(x []int16, freqs ...float64) (float64, float64) {
	best, bp := 0.0, 0.0
	for _, f := range freqs {
		if p := codec.Goertzel(x, f, 8000); p > bp {
			best, bp = f, p
		}
	}
	return best, bp
}

// TestFidelitySSRCJumpEndToEnd is case (3): mid-call the agent's phone
// switches to a new SSRC (new sequence and timestamp bases), and later its
// timestamp jumps 10 s (+80000) ahead; the audio continues on the left
// channel with no hole longer than one frame at either switch.
func TestFidelitySSRCJumpEndToEnd(t *testing.T) {
	fc := startFidelityCall(t)
	const frames, switchAt, jumpAt = 180, 60, 120
	// A different tone per segment: the detector then tells which segment
	// a stretch of the recording came from.
	freqs := []float64{440, 660, 880}
	segA := [][][]byte{fidEncode(fidSignal(freqs[0], switchAt)), fidEncode(fidSignal(freqs[1], jumpAt-switchAt)), fidEncode(fidSignal(freqs[2], frames-jumpAt))}
	sendB := fidEncode(fidSignal(1000, frames))
	tick := time.NewTicker(20 * time.Millisecond)
	for k := range frames {
		<-tick.C
		var pkt []byte
		switch {
		case k < switchAt:
			pkt = siptest.RTPPacket(0xA1, uint16(k), uint32(fidFrame*k), 0, segA[0][k])
		case k < jumpAt: // new source: new SSRC, sequence and timestamp bases
			pkt = siptest.RTPPacket(0xA2, uint16(40000+k), uint32(3_000_000+fidFrame*k), 0, segA[1][k-switchAt])
		default: // same source, timestamp 80000 (10 s) ahead, sequence continues
			pkt = siptest.RTPPacket(0xA2, uint16(40000+k), uint32(3_000_000+80000+fidFrame*k), 0, segA[2][k-jumpAt])
		}
		if err := fc.ac.SendRTP(pkt); err != nil {
			t.Fatal(err)
		}
		if err := fc.bc.SendRTP(siptest.RTPPacket(0xB2, uint16(k), uint32(fidFrame*k), 0, sendB[k])); err != nil {
			t.Fatal(err)
		}
	}
	tick.Stop()
	time.Sleep(100 * time.Millisecond)
	fc.hangup(t)
	m := fc.meta

	// Each segment is in the left channel sample for sample; between one
	// segment's end and the next one's start there is at most one frame of
	// silence, and no overlap (a re-anchored segment must not cut or
	// overwrite audio already placed). Segments are located by their
	// first and last frames, so an overlap is measured, not just detected.
	prevEnd := -1
	for i, seg := range segA {
		want := fidDecode(seg...)
		from := 0
		if prevEnd >= 0 {
			from = prevEnd - 2*fidFrame
		}
		head := findSeq(fc.left, want[:fidFrame], from)
		if head < 0 || head+len(want) > len(fc.left) {
			t.Fatalf("agent segment %d (%v Hz): first frame at %d", i, freqs[i], head)
		}
		// Intact up to where the next segment starts (an overlap is
		// reported at the switch below).
		end := head + len(want)
		if i+1 < len(segA) {
			if next := findSeq(fc.left, fidDecode(segA[i+1][0]), head); next >= 0 && next < end {
				end = next
			}
		}
		if !slices.Equal(fc.left[head:end], want[:end-head]) {
			t.Errorf("agent segment %d (%v Hz) not recorded sample for sample: %s", i, freqs[i], fidDiverge(fc.left, want, head))
		}
		if prevEnd >= 0 {
			hole := head - prevEnd
			switch {
			case hole < 0:
				// The new segment starts before the old one ended: the old
				// segment's last samples were overwritten.
				t.Errorf("switch %d: new audio placed at sample %d, %d samples before the old audio's end %d: the old audio's last %d samples are lost", i, head, -hole, prevEnd, -hole)
			case hole > fidFrame || !fidAllZero(fc.left[prevEnd:head]):
				t.Errorf("switch %d: old audio ends at %d, new starts at %d: hole of %d samples", i, prevEnd, head, hole)
			}
			// The detector: the tone before the switch is the old
			// segment's, after it the new one's.
			before, _ := fidTone(fc.left[prevEnd-3200:prevEnd-fidFrame], freqs...)
			after, p := fidTone(fc.left[head+fidFrame:head+3200], freqs...)
			if before != freqs[i-1] || after != freqs[i] || p < 0.002 {
				t.Errorf("switch %d: tone %v Hz before, %v Hz (power %.4f) after; want %v then %v", i, before, after, p, freqs[i-1], freqs[i])
			}
			t.Logf("switch %d at sample %d: hole %d samples", i, head, hole)
		}
		prevEnd = head + len(want)
	}
	if at := findSeq(fc.right, fidDecode(sendB...), 0); at < 0 {
		t.Error("customer's audio not in the right channel sample for sample")
	}
	if fidCount(m, "ssrc_change") != 1 || m.Near.Stream.SSRCChanges != 1 {
		t.Errorf("ssrc_change events %d, near ssrc_changes %d; want 1", fidCount(m, "ssrc_change"), m.Near.Stream.SSRCChanges)
	}
	if fidCount(m, "ts_jump") != 1 || m.Near.Stream.TSJumps != 1 {
		t.Errorf("ts_jump events %d, near ts_jumps %d; want 1", fidCount(m, "ts_jump"), m.Near.Stream.TSJumps)
	}
	for _, e := range m.Events {
		if (e.Kind == "ssrc_change" || e.Kind == "ts_jump") && e.Direction != "near" {
			t.Errorf("event %+v not on the near direction", e)
		}
	}
	if m.Far.Stream.SSRCChanges != 0 || m.Far.Stream.TSJumps != 0 || m.Near.Stream.Lost != 0 {
		t.Errorf("stats near %+v far %+v", m.Near.Stream, m.Far.Stream)
	}
}

// TestFidelityHoldEndToEnd is case (4): the agent holds (re-INVITE
// sendonly) for about 400 ms and resumes (sendrecv) while both parties
// keep sending; both channels are silent for the hold span and the
// metadata has hold and resume events.
func TestFidelityHoldEndToEnd(t *testing.T) {
	fc := startFidelityCall(t)
	const frames = 130
	sendA, sendB := fidEncode(fidSignal(440, frames)), fidEncode(fidSignal(1000, frames))
	var holdLo, holdHi, resumeLo, resumeHi time.Time
	sent := make(chan struct{})
	ticks := make(chan int, frames)
	go func() {
		defer close(sent)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for k := range frames {
			select {
			case <-tick.C:
			case <-fc.ctx.Done():
				return
			}
			fc.ac.SendRTP(siptest.RTPPacket(0xA1, uint16(k), uint32(fidFrame*k), 0, sendA[k]))
			fc.bc.SendRTP(siptest.RTPPacket(0xB2, uint16(k), uint32(fidFrame*k), 0, sendB[k]))
			ticks <- k
		}
	}()
	waitTick := func(n int) {
		for k := range ticks {
			if k >= n {
				return
			}
		}
	}
	reinvite := func(mode string) (time.Time, time.Time) {
		lo := time.Now()
		res, err := fc.ac.ReInvite(fc.ctx, fc.agent.SDP(siptest.SDPOptions{Mode: mode, Codecs: []string{"0", "101"}}))
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("re-INVITE %s: %v %v", mode, res, err)
		}
		return lo, time.Now()
	}
	waitTick(40)
	holdLo, holdHi = reinvite("sendonly")
	time.Sleep(400 * time.Millisecond)
	resumeLo, resumeHi = reinvite("sendrecv")
	<-sent
	time.Sleep(100 * time.Millisecond)
	fc.hangup(t)
	m := fc.meta

	// bib starts the silent span when it handles the hold re-INVITE, which
	// happens between sending it and getting its 200; likewise for the
	// resume. "Within a frame or two": the silence must start within
	// 40 ms of that bracket and end within 40 ms of the resume's.
	const slack = 2 * fidFrame
	hs0, hs1 := fc.samplePosOf(holdLo), fc.samplePosOf(holdHi)
	rs0, rs1 := fc.samplePosOf(resumeLo), fc.samplePosOf(resumeHi)
	t.Logf("hold re-INVITE at samples [%d,%d], resume at [%d,%d]", hs0, hs1, rs0, rs1)
	for _, c := range []struct {
		name string
		ch   []int16
	}{{"agent (left)", fc.left}, {"customer (right)", fc.right}} {
		mid := (hs1 + rs0) / 2
		zf, zt := zeroRun(c.ch, mid)
		if zf == zt {
			t.Errorf("%s: audio in the middle of the hold (sample %d)", c.name, mid)
			continue
		}
		if zf < hs0-slack || zf > hs1+slack || zt < rs0-slack || zt > rs1+slack {
			t.Errorf("%s: silence [%d,%d); hold at [%d,%d], resume at [%d,%d] (+-%d)", c.name, zf, zt, hs0, hs1, rs0, rs1, slack)
		}
		// Audio on both sides of the hold.
		if fidAllZero(c.ch[max(zf-fidFrame, 0):zf]) || fidAllZero(c.ch[zt:min(zt+fidFrame, len(c.ch))]) {
			t.Errorf("%s: no audio around the hold silence [%d,%d)", c.name, zf, zt)
		}
		t.Logf("%s: silence [%d,%d)", c.name, zf, zt)
	}
	if fidCount(m, "hold") != 1 || fidCount(m, "resume") != 1 {
		t.Fatalf("events %+v; want one hold and one resume", m.Events)
	}
	for _, e := range m.Events {
		var lo, hi int
		switch e.Kind {
		case "hold":
			lo, hi = hs0, hs1
		case "resume":
			lo, hi = rs0, rs1
		default:
			continue
		}
		if at := int(e.OffsetMS * 8); at < lo-slack || at > hi+slack {
			t.Errorf("%s event at offset %d ms (sample %d), re-INVITE at samples [%d,%d]", e.Kind, e.OffsetMS, at, lo, hi)
		}
	}
	if m.Near.Stream.Held == 0 && m.Far.Stream.Held == 0 {
		t.Errorf("no packet counted as held: near %+v far %+v", m.Near.Stream, m.Far.Stream)
	}
}

// TestFidelityCNAndDTMFEndToEnd is case (5): the agent sends one comfort
// noise packet and stays quiet (DTX) for 24 frames, its timestamps
// skipping the silence; the customer sends digit 5 as RFC 4733 events
// (updates, then three end packets) in place of 5 frames of audio.
func TestFidelityCNAndDTMFEndToEnd(t *testing.T) {
	fc := startFidelityCall(t)
	const frames = 100
	const cnAt, talkAgain = 30, 55 // CN at frame 30, audio again at frame 55
	const dtmfAt, dtmfEnd = 40, 45 // the digit replaces frames 40..44
	sendA, sendB := fidEncode(fidSignal(440, frames)), fidEncode(fidSignal(1000, frames))
	tick := time.NewTicker(20 * time.Millisecond)
	send := func(c *siptest.Call, b []byte) {
		if err := c.SendRTP(b); err != nil {
			t.Fatal(err)
		}
	}
	for k := range frames {
		<-tick.C
		switch {
		case k < cnAt:
			send(fc.ac, siptest.RTPPacket(0xA1, uint16(k), uint32(fidFrame*k), 0, sendA[k]))
		case k == cnAt:
			send(fc.ac, siptest.RTPPacket(0xA1, uint16(k), uint32(fidFrame*k), 13, []byte{40}))
		case k >= talkAgain: // DTX: the sequence continues, the timestamp skipped the silence
			send(fc.ac, siptest.RTPPacket(0xA1, uint16(k-(talkAgain-cnAt-1)), uint32(fidFrame*k), 0, sendA[k]))
		}
		switch {
		case k >= dtmfAt && k < dtmfEnd:
			dur := uint16((k - dtmfAt + 1) * fidFrame)
			ts := uint32(fidFrame * dtmfAt)
			send(fc.bc, siptest.RTPPacket(0xB2, uint16(k), ts, 101, []byte{5, 10, byte(dur >> 8), byte(dur)}))
			if k == dtmfEnd-1 {
				for r := range 3 {
					send(fc.bc, siptest.RTPPacket(0xB2, uint16(k+1+r), ts, 101, []byte{5, 0x80 | 10, byte(dur >> 8), byte(dur)}))
				}
			}
		case k >= dtmfEnd:
			send(fc.bc, siptest.RTPPacket(0xB2, uint16(k+3), uint32(fidFrame*k), 0, sendB[k]))
		default:
			send(fc.bc, siptest.RTPPacket(0xB2, uint16(k), uint32(fidFrame*k), 0, sendB[k]))
		}
	}
	tick.Stop()
	time.Sleep(100 * time.Millisecond)
	fc.hangup(t)
	m := fc.meta

	// Agent: audio before the CN, exactly (talkAgain-cnAt) frames of
	// silence, audio after, each sample where its timestamp puts it.
	pos0 := findSeq(fc.left, fidDecode(sendA[:cnAt]...), 0)
	if pos0 < 0 {
		t.Fatal("agent audio before the CN not in the left channel sample for sample")
	}
	// The silence is (talkAgain-cnAt) frames long, less any anchor
	// correction the recorder takes out of it (README: DTX before a
	// talkspurt is where a pending correction is applied).
	fidHole(t, "agent CN/DTX", fc.left, pos0+cnAt*fidFrame, (talkAgain-cnAt)*fidFrame, fidDecode(sendA[talkAgain:]...))
	// Customer: the event packets are not audio: silence where they were,
	// no DTMF tone (770 + 1336 Hz for 5) in the channel, audio around.
	p0 := findSeq(fc.right, fidDecode(sendB[:dtmfAt]...), 0)
	if p0 < 0 {
		t.Fatal("customer audio before the digit not in the right channel sample for sample")
	}
	df := p0 + dtmfAt*fidFrame
	fidHole(t, "customer digit", fc.right, df, (dtmfEnd-dtmfAt)*fidFrame, fidDecode(sendB[dtmfEnd:]...))
	for _, f := range []float64{770, 1336} {
		for i := 0; i+fidFrame <= len(fc.right); i += fidFrame / 2 {
			if p := codec.Goertzel(fc.right[i:i+fidFrame], f, 8000); p > 1e-3 {
				t.Errorf("DTMF tone %v Hz in the customer channel at sample %d (power %.4f)", f, i, p)
				break
			}
		}
	}
	if s := m.Near.Stream; s.CNPackets != 1 || s.Gaps != 0 || s.GapMS != 0 || s.Lost != 0 {
		t.Errorf("near stats %+v; want 1 CN packet, no gap, no loss", s)
	}
	if s := m.Far.Stream; s.DTMFEvents != 1 || s.Gaps != 0 || s.Lost != 0 {
		t.Errorf("far stats %+v; want 1 DTMF event, no gap, no loss", s)
	}
	var dtmf []storage.Event
	for _, e := range m.Events {
		if e.Kind == "dtmf" {
			dtmf = append(dtmf, e)
		}
	}
	if len(dtmf) != 1 || dtmf[0].Direction != "far" || !strings.Contains(dtmf[0].Detail, "digit=*") || strings.Contains(dtmf[0].Detail, "5 ") || !strings.Contains(dtmf[0].Detail, "duration_ms=100") {
		t.Errorf("dtmf events %+v; want one, far, masked, 100 ms", dtmf)
	}
	if want := (df * 1000 / 8000); len(dtmf) == 1 && (dtmf[0].OffsetMS < int64(want)-1 || dtmf[0].OffsetMS > int64(want)+1) {
		t.Errorf("dtmf at %d ms, its audio place is %d ms", dtmf[0].OffsetMS, want)
	}
}

// TestFidelityNoRTPEndToEnd is case (6): an answered call where neither
// party sends RTP for about a second still leaves a recording: silence of
// the call's length, no_rtp true.
func TestFidelityNoRTPEndToEnd(t *testing.T) {
	fc := startFidelityCall(t)
	time.Sleep(time.Second)
	fc.hangup(t)
	m := fc.meta
	fc.checkDuration(t)
	if !m.NoRTP || !m.Near.Stream.NoRTP || !m.Far.Stream.NoRTP || m.Near.Stream.Packets != 0 || m.Far.Stream.Packets != 0 {
		t.Errorf("no_rtp %v near %+v far %+v", m.NoRTP, m.Near.Stream, m.Far.Stream)
	}
	if fc.wavFrames < 7600 || !fidAllZero(fc.left) || !fidAllZero(fc.right) {
		t.Errorf("recording of %d samples, silent left %v right %v", fc.wavFrames, fidAllZero(fc.left), fidAllZero(fc.right))
	}
}

// fidDiverge describes where want, placed at at in ch, first differs.
func fidDiverge(ch, want []int16, at int) string {
	if at < 0 {
		return "its first frame is nowhere"
	}
	for i := range want {
		if at+i >= len(ch) {
			return fmt.Sprintf("starts at %d, the recording ends after %d of %d samples", at, i, len(want))
		}
		if ch[at+i] != want[i] {
			zf, zt := zeroRun(ch, at+i)
			next := findSeq(ch, want[i:min(i+fidFrame, len(want))], at+i)
			return fmt.Sprintf("starts at %d, differs from sample %d (frame %d) on, zeros [%d,%d) there, the rest of that frame found at %d (shift %d)", at, i, i/fidFrame, zf, zt, next, next-(at+i))
		}
	}
	return fmt.Sprintf("starts at %d and matches", at)
}

// fidHole checks that ch holds silence from sample from for n samples,
// then exactly the audio after. The one allowance is the recorder's
// documented anchor correction (README, placement: a better anchor learned
// after the first write is applied at the stream's next silence, which is
// then shorter by that much): the silence may be shorter by up to 8
// samples (1 ms; measured here: 0-3 samples of arrival-time noise), never
// longer, and the audio after it must follow it exactly.
func fidHole(t *testing.T, name string, ch []int16, from, n int, after []int16) {
	t.Helper()
	for c := 0; c <= 8; c++ {
		at := from + n - c
		if at+len(after) <= len(ch) && slices.Equal(ch[at:at+len(after)], after) {
			if !fidAllZero(ch[from:at]) {
				t.Errorf("%s: not silent in [%d,%d)", name, from, at)
			}
			if c != 0 {
				t.Logf("%s: %d samples of silence, %d less than sent (anchor correction)", name, n-c, c)
			}
			return
		}
	}
	zf, zt := zeroRun(ch, from+n/2)
	t.Errorf("%s: want %d samples of silence at %d then the audio; silence is [%d,%d), the audio after is at %d", name, n, from, zf, zt, findSeq(ch, after, 0))
}
