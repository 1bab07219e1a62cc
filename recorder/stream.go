package recorder

import (
	"fmt"
	"math"
	"slices"

	"github.com/bib-project/bib/bridge"
	"github.com/bib-project/bib/bridge/codec"
	"github.com/bib-project/bib/storage"
)

// What a payload type carries.
type ptKind uint8

const (
	kindNone  ptKind = iota // unknown or undecodable: discarded
	kindAudio               // decoded into the recording
	kindCN                  // comfort noise (RFC 3389): silence
	kindEvent               // RFC 4733 telephone-event: metadata only
)

// binding is what one payload type of one direction is bound to.
type binding struct {
	kind    ptKind
	name    string
	dec     codec.Decoder
	decRate int
	warned  bool // unsupported codec event written
}

const (
	// rtpClock is the RTP timestamp rate of every audio codec the recorder
	// decodes (G.711 and, per RFC 3551 section 4.5.2, G.722).
	rtpClock = 8000
	// jumpNS: a timestamp step this much larger (or this much more negative)
	// than the arrival step is a discontinuity, re-anchored on the wall clock.
	jumpNS = int64(500e6)
	// lateRunMax: this many late audio packets in a row mean the sender's
	// clock moved back; the stream is re-anchored at arrival.
	lateRunMax = 5
	// seenSize is the duplicate-detection window in sequence numbers.
	seenSize = 1024
	// maxDecoded is the most PCM samples one payload yields at the output rate.
	maxDecoded = 2 * maxPayload
	// window is the per-direction playout ring in samples (power of two);
	// chunk is the most the writer emits at once.
	window = 1 << 14
	chunk  = window / 2
)

// entry is one buffered audio packet waiting for its place on the timeline.
type entry struct {
	pos     int64 // output sample index of its first sample
	extSeq  int64
	epoch   uint32 // SSRC epoch
	anchor  uint32 // anchor generation
	pt      uint8
	n       uint16
	payload [maxPayload]byte
}

// stream is the jitter buffer and placement state of one direction. Only
// the writer goroutine touches it.
type stream struct {
	r     *Recorder
	label string // "near" or "far"
	bind  [128]binding

	// anchoring: pos = extTS*mul + offset
	anchored    bool
	ssrc        uint32
	epoch       uint32
	anchor      uint32
	offset      int64 // applied: where new audio of this anchor is placed
	best        int64 // least-delayed offset seen for this anchor (<= offset)
	extTS       int64
	lastTS      uint32
	prevArrival int64
	lateRun     int
	placedEnd   int64 // end of the latest audio placed, any anchor: a new anchor starts no earlier
	anchorFloor int64 // placedEnd when the current anchor began: its corrections stop there

	// sequence accounting of the current epoch
	maxSeq, minSeq int64
	recv           uint64
	lostPrev       uint64
	seen           [seenSize]int64 // extSeq<<1 | late

	entries []entry
	free    []uint16
	ord     []uint16 // pending entries sorted by pos

	win      []int16 // playout ring
	scratch  []int16
	out      []int16
	upPrev   int16
	relValid bool
	relEpoch uint32
	relSeq   int64
	relEnd   int64
	relAnch  uint32 // anchor generation of the last released entry
	lastPT   int

	dtmfActive bool
	dtmfTS     uint32
	dtmfIdx    int

	stats storage.DirStats
}

func newStream(r *Recorder, label string, pending int) *stream {
	s := &stream{
		r: r, label: label,
		entries: make([]entry, pending),
		free:    make([]uint16, pending),
		ord:     make([]uint16, 0, pending),
		win:     make([]int16, window),
		scratch: make([]int16, maxDecoded),
		out:     make([]int16, maxDecoded),
		lastPT:  -1,
	}
	for i := range s.free {
		s.free[i] = uint16(pending - 1 - i)
	}
	return s
}

// packet places one received packet (writer goroutine).
func (s *stream) packet(p *qpkt) {
	tl := &s.r.tl
	s.stats.Packets++
	if !tl.started || p.arrival < tl.origin {
		s.stats.Discarded++ // early media before the timeline starts
		return
	}
	arrPos := tl.pos(p.arrival)
	first := false
	if !s.anchored || p.ssrc != s.ssrc {
		if s.anchored {
			s.stats.SSRCChanges++
			s.r.event("ssrc_change", max(arrPos, tl.written), s.label, fmt.Sprintf("ssrc %08x -> %08x", s.ssrc, p.ssrc))
		}
		s.newEpoch(p, arrPos)
		first = true
	}

	ext := s.maxSeq + int64(int16(p.sn-uint16(s.maxSeq)))
	slot := &s.seen[ext&(seenSize-1)]
	if *slot>>1 == ext {
		s.stats.Duplicates++
		return
	}
	*slot = ext << 1
	s.recv++
	s.maxSeq, s.minSeq = max(s.maxSeq, ext), min(s.minSeq, ext)

	dTS := int64(int32(p.ts - s.lastTS))
	extTS := s.extTS + dTS
	if !first {
		dTSns := dTS * 1e9 / rtpClock
		dArr := p.arrival - s.prevArrival
		if dTSns < -jumpNS || dTSns > dArr+jumpNS {
			s.stats.TSJumps++
			s.r.event("ts_jump", max(arrPos, tl.written), s.label,
				fmt.Sprintf("timestamp stepped %d ms while %d ms passed; re-anchored on arrival", dTSns/1e6, dArr/1e6))
			s.reanchor(extTS, arrPos)
		}
	}
	s.extTS, s.lastTS, s.prevArrival = extTS, p.ts, p.arrival

	// The anchor follows the least-delayed packet, but a correction is only
	// applied where it cuts no audio (see settle).
	if cand := arrPos - extTS*s.r.mul; cand < s.best {
		s.best = cand
	}
	if s.best < s.offset {
		s.correct()
	}
	pos := extTS*s.r.mul + s.offset

	b := &s.bind[p.pt&127]
	switch b.kind {
	case kindEvent:
		s.dtmf(p, pos)
		return
	case kindCN:
		s.stats.CNPackets++
		return
	case kindNone:
		s.stats.Discarded++
		if !b.warned {
			b.warned = true
			detail := fmt.Sprintf("payload type %d not negotiated", p.pt)
			if b.name != "" {
				detail = fmt.Sprintf("payload type %d (%s) cannot be decoded", p.pt, b.name)
			}
			s.r.event("unsupported_codec", max(pos, tl.written), s.label, detail)
		}
		return
	}
	n := int64(b.dec.Samples(int(p.n)) * tl.rate / b.decRate)
	if tl.held(pos, pos+n) {
		s.stats.Held++
		return
	}
	if pos+n <= tl.written {
		s.lateRun++
		if s.lateRun < lateRunMax {
			s.stats.Late++
			*slot |= 1
			return
		}
		s.stats.Resyncs++
		s.r.event("resync", tl.written, s.label, "audio kept arriving late; re-anchored on arrival")
		s.reanchor(extTS, arrPos)
		pos = extTS*s.r.mul + s.offset
	}
	s.lateRun = 0
	if len(s.free) == 0 {
		s.stats.Discarded++ // buffer full: positions far ahead of the clock
		*slot |= 1
		return
	}
	i := s.free[len(s.free)-1]
	s.free = s.free[:len(s.free)-1]
	e := &s.entries[i]
	e.pos, e.extSeq, e.epoch, e.anchor, e.pt = pos, ext, s.epoch, s.anchor, p.pt&127
	s.placedEnd = max(s.placedEnd, pos+n)
	e.n = uint16(copy(e.payload[:], p.payload[:p.n]))
	k, _ := slices.BinarySearchFunc(s.ord, pos, func(j uint16, pos int64) int {
		if s.entries[j].pos <= pos {
			return -1
		}
		return 1
	})
	s.ord = slices.Insert(s.ord, k, i)
}

func (s *stream) newEpoch(p *qpkt, arrPos int64) {
	s.lostPrev += s.epochLost()
	s.anchored = true
	s.ssrc = p.ssrc
	s.epoch++
	s.maxSeq, s.minSeq, s.recv = int64(p.sn), int64(p.sn), 0
	for i := range s.seen {
		s.seen[i] = math.MinInt64
	}
	s.extTS, s.lastTS, s.prevArrival = int64(p.ts), p.ts, p.arrival
	s.lateRun = 0
	s.dtmfActive = false
	s.anchor++
	// The new source starts on arrival, but never over audio the old one
	// placed (which may sit a little late while a correction is pending).
	s.offset = max(arrPos, s.placedEnd) - s.extTS*s.r.mul
	s.best = s.offset
	s.anchorFloor = s.placedEnd
}

func (s *stream) epochLost() uint64 {
	if !s.anchored {
		return 0
	}
	return uint64(max(s.maxSeq-s.minSeq+1-int64(s.recv), 0))
}

// reanchor places extTS at arrPos from now on, or right after the audio
// already placed if that ends later: re-anchoring never cuts audio.
func (s *stream) reanchor(extTS, arrPos int64) {
	s.anchor++
	s.offset = max(arrPos, s.placedEnd) - extTS*s.r.mul
	s.anchorFloor = s.placedEnd
	s.best = s.offset
	s.lateRun = 0
}

// correct is called at placement while a better (earlier) anchor is
// pending. Before any audio of the current anchor has been released, the
// correction is applied as far as it fits in front of the first buffered
// packet (the jitter buffer's learning window: nothing written moves). A
// correction larger than the jitter buffer depth means the anchor was badly
// off: it is applied at once, cutting that much audio, and noted as a
// realign event. Anything else waits for a silence in playout (release).
func (s *stream) correct() {
	tl := &s.r.tl
	if !s.relValid || s.relAnch != s.anchor {
		room := int64(math.MaxInt64)
		for _, j := range s.ord {
			if e := &s.entries[j]; e.anchor == s.anchor {
				room = e.pos - max(s.floor(tl.written), s.anchorFloor)
				break
			}
		}
		s.settle(room)
	}
	if d := s.offset - s.best; d > s.r.depth {
		ahead := d * 1000 / int64(tl.rate)
		s.r.event("realign", s.floor(tl.written), s.label, fmt.Sprintf(
			"audio arrived %d ms ahead of its place, more than the %d ms jitter buffer; moved earlier, cutting up to %d ms",
			ahead, s.r.cfg.JitterMS, ahead))
		s.settle(math.MaxInt64)
	}
}

// floor is the first sample the stream may still fill: nothing before the
// written position or the end of the audio already released.
func (s *stream) floor(written int64) int64 {
	if s.relValid {
		return max(written, s.relEnd)
	}
	return written
}

// settle applies up to room samples of the pending anchor correction: the
// current anchor's buffered audio and all its later audio move earlier. It
// returns how far they moved.
func (s *stream) settle(room int64) int64 {
	d := min(s.offset-s.best, room)
	if d <= 0 {
		return 0
	}
	s.offset -= d
	s.shift(-d)
	return d
}

// shift moves the pending audio of the current anchor by delta samples.
func (s *stream) shift(delta int64) {
	moved := false
	for _, j := range s.ord {
		if e := &s.entries[j]; e.anchor == s.anchor {
			e.pos += delta
			moved = true
		}
	}
	if moved {
		slices.SortStableFunc(s.ord, func(a, b uint16) int {
			pa, pb := s.entries[a].pos, s.entries[b].pos
			switch {
			case pa < pb:
				return -1
			case pa > pb:
				return 1
			}
			return 0
		})
	}
}

// dtmf records RFC 4733 events (section 2.5: one event repeats its
// timestamp with a growing duration and ends with up to three packets with
// the E bit set).
func (s *stream) dtmf(p *qpkt, pos int64) {
	if p.n < 4 {
		return
	}
	ev, end := p.payload[0], p.payload[1]&0x80 != 0
	dur := int64(p.payload[2])<<8 | int64(p.payload[3])
	if !s.dtmfActive || p.ts != s.dtmfTS {
		s.dtmfActive, s.dtmfTS = true, p.ts
		s.stats.DTMFEvents++
		s.dtmfIdx = s.r.event("dtmf", max(pos, 0), s.label, "digit="+s.r.digit(ev))
	}
	if end && s.dtmfIdx >= 0 {
		s.r.events[s.dtmfIdx].Detail = fmt.Sprintf("digit=%s duration_ms=%d", s.r.digit(ev), dur*1000/rtpClock)
		s.dtmfIdx = -1
	}
}

// release decodes the pending audio that starts before to into the playout
// ring; samples before from are already written and are dropped.
func (s *stream) release(from, to int64) {
	tl := &s.r.tl
	for len(s.ord) > 0 {
		i := s.ord[0]
		e := &s.entries[i]
		if e.pos >= to {
			return
		}
		s.ord = s.ord[:copy(s.ord, s.ord[1:])]
		s.free = append(s.free, i)
		b := &s.bind[e.pt]
		if b.kind != kindAudio {
			continue // rebound by a re-INVITE while buffered
		}
		if !s.relValid || e.epoch != s.relEpoch {
			b.dec.Reset()
		} else if e.extSeq > s.relSeq+1 && e.pos > s.relEnd && s.missing(s.relSeq, e.extSeq) {
			s.stats.Gaps++
			s.stats.GapMS += (e.pos - s.relEnd) * 1000 / int64(tl.rate)
			b.dec.Reset()
		}
		// A pending anchor correction is applied where the stream is silent
		// anyway: in the hole before this packet (loss, DTX, talkspurt
		// start, hold). Whatever belonged in the hole and has not arrived is
		// late from now on, so nothing can land on the moved audio. The gap
		// above counts the missing audio; its silence is shorter by d.
		if s.best < s.offset && e.anchor == s.anchor {
			if d := s.settle(e.pos - s.floor(from)); d > 0 {
				e.pos -= d // e left s.ord above
			}
		}
		if int(e.pt) != s.lastPT {
			s.lastPT = int(e.pt)
			s.r.codecUsed(s.label, b.name, max(e.pos, from))
		}
		n := s.decode(b, e.payload[:e.n])
		start := max(e.pos, from)
		for p := start; p < e.pos+int64(n); p++ {
			s.win[p&(window-1)] = s.out[p-e.pos]
		}
		s.relValid, s.relEpoch, s.relAnch = true, e.epoch, e.anchor
		s.relSeq = max(s.relSeq, e.extSeq)
		s.relEnd = e.pos + int64(n)
	}
}

// missing reports whether a sequence number strictly between a and b was
// never received or arrived too late to be played.
func (s *stream) missing(a, b int64) bool {
	if b-a > seenSize {
		return true
	}
	for x := a + 1; x < b; x++ {
		if v := s.seen[x&(seenSize-1)]; v>>1 != x || v&1 != 0 {
			return true
		}
	}
	return false
}

// decode turns a payload into s.out at the output rate and returns the
// sample count. 8 kHz audio in a 16 kHz recording is upsampled 2x by linear
// interpolation (one output sample of delay); 16 kHz audio in an 8 kHz
// recording is averaged down by pairs.
func (s *stream) decode(b *binding, payload []byte) int {
	rate := s.r.tl.rate
	switch {
	case b.decRate == rate:
		return b.dec.Decode(s.out, payload)
	case b.decRate*2 == rate:
		k := b.dec.Decode(s.scratch, payload[:min(len(payload), maxDecoded/2)])
		prev := int32(s.upPrev)
		for i, x := range s.scratch[:k] {
			s.out[2*i] = int16((prev + int32(x)) / 2)
			s.out[2*i+1] = x
			prev = int32(x)
		}
		s.upPrev = int16(prev)
		return 2 * k
	default: // b.decRate == 2*rate, checked at bind time
		k := b.dec.Decode(s.scratch, payload)
		for i := 0; i+1 < k; i += 2 {
			s.out[i/2] = int16((int32(s.scratch[i]) + int32(s.scratch[i+1])) / 2)
		}
		return k / 2
	}
}

// take copies n samples starting at from out of the ring into dst (every
// stride-th element) and clears them.
func (s *stream) take(from int64, n int, dst []int16, stride int) {
	for i := range n {
		j := (from + int64(i)) & (window - 1)
		dst[i*stride] = s.win[j]
		s.win[j] = 0
	}
}

// flush releases everything still buffered up to to (end of recording).
func (s *stream) finalStats() storage.DirStats {
	st := s.stats
	st.Lost = s.lostPrev + s.epochLost()
	st.NoRTP = st.Packets == 0
	return st
}

// rebind maps every payload type of this direction after an offer/answer:
// the sending party's own description first, then the other party's, then
// the RFC 3551 static types.
func (s *stream) rebind(own, other bridge.MediaDesc, rate int) {
	for pt := range s.bind {
		c, ok := own.Codec(uint8(pt))
		if !ok {
			c, ok = other.Codec(uint8(pt))
		}
		if !ok {
			c, ok = staticCodec(uint8(pt))
		}
		old := s.bind[pt]
		var nb binding
		if ok {
			nb = bindCodec(c, old, rate)
		}
		nb.warned = old.warned && old.name == nb.name
		s.bind[pt] = nb
	}
}

func staticCodec(pt uint8) (bridge.Codec, bool) {
	switch pt {
	case 0:
		return bridge.Codec{PT: 0, Name: "PCMU", Rate: 8000, Channels: 1}, true
	case 8:
		return bridge.Codec{PT: 8, Name: "PCMA", Rate: 8000, Channels: 1}, true
	case 9:
		return bridge.Codec{PT: 9, Name: "G722", Rate: 8000, Channels: 1}, true
	case 13:
		return bridge.Codec{PT: 13, Name: "CN", Rate: 8000, Channels: 1}, true
	}
	return bridge.Codec{}, false
}

func bindCodec(c bridge.Codec, old binding, rate int) binding {
	switch {
	case c.Is("telephone-event"):
		return binding{kind: kindEvent, name: "telephone-event"}
	case c.Is("CN"):
		return binding{kind: kindCN, name: "CN"}
	}
	info, ok := codec.Lookup(c.Name)
	if !ok {
		return binding{name: c.Name}
	}
	if old.kind == kindAudio && old.name == info.Name {
		return old // same codec: keep the decoder and its state
	}
	dec, err := codec.NewDecoder(info.Name)
	if err != nil || dec == nil { // a codec still being written returns nil
		return binding{name: info.Name}
	}
	dr := dec.SampleRate()
	if dr != rate && dr*2 != rate && dr != rate*2 {
		return binding{name: info.Name}
	}
	return binding{kind: kindAudio, name: info.Name, dec: dec, decRate: dr}
}

// span is a silenced stretch of the timeline [start, end).
type span struct{ start, end int64 }

// timeline is the recording's one clock, shared by both directions.
type timeline struct {
	started  bool
	rate     int   // output samples per second
	origin   int64 // call clock (ns) of sample 0
	written  int64 // samples written per channel
	silenced []span
}

func (t *timeline) pos(mono int64) int64 { return (mono - t.origin) * int64(t.rate) / 1e9 }

// held reports whether [from, to) lies inside one silenced span.
func (t *timeline) held(from, to int64) bool {
	for _, sp := range t.silenced {
		if from >= sp.start && to <= sp.end {
			return true
		}
	}
	return false
}

func (t *timeline) openSilence(pos int64) {
	t.silenced = append(t.silenced, span{start: max(pos, t.written), end: math.MaxInt64})
}

func (t *timeline) closeSilence(pos int64) {
	if n := len(t.silenced); n > 0 && t.silenced[n-1].end == math.MaxInt64 {
		t.silenced[n-1].end = max(pos, t.written)
	}
}
