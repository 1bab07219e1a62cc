package bridge

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bib-project/bib/bridge/codec"
)

// The supervisor mix: one Mixer per monitored call, attached to the call as
// a Tap. The relay copies each packet into a bounded per-direction queue
// (never waiting); one goroutine per mixer, paced by one 20 ms clock, pulls
// both directions through a jitter buffer placed by RTP timestamp, decodes,
// sums with saturation and encodes once per distinct output codec. Every
// output (a SIP supervisor leg, a WebRTC session) gets one frame per tick:
// its RTP sequence number grows by one and its timestamp by the frame's
// samples per frame, whatever the parties do (SSRC changes, holds,
// re-INVITEs, silence), so its stream stays continuous.
//
// During a hold, or whenever neither party sends audio, the mixer keeps
// sending frames of encoded silence rather than pausing: receivers' jitter
// buffers, NAT bindings and ICE consent stay alive and nothing has to
// re-synchronise on resume.

// Mixer frame and jitter-buffer geometry.
const (
	// MixFrameDuration is the length of every mixed frame.
	MixFrameDuration = 20 * time.Millisecond
	// mixFrameTicks is one frame in RTP clock ticks (every codec the mixer
	// decodes or encodes has an 8000 Hz RTP clock, G.722 included: RFC 3551
	// section 4.5.2).
	mixFrameTicks = 160
	// mixQueueLen is each direction's queue between the relay and the
	// mixer, in packets (640 ms of 20 ms packets). A power of two.
	mixQueueLen = 32
	// mixSlotBytes is the largest payload the mixer accepts (120 ms of
	// G.711, 120 ms of G.722).
	mixSlotBytes = 960
	// mixPending is how many packets a direction's jitter buffer holds.
	mixPending = 24
	// mixDefaultDelay is the default playout delay (jitter buffer depth).
	mixDefaultDelay = 60 * time.Millisecond
	// mixMaxAhead: a packet whose timestamp lies further ahead of the
	// playout point than this re-synchronises the direction (a sender's
	// timestamp jump, a new stream after hold).
	mixMaxAhead = 8000 / 2 // 500 ms in ticks
	// mixLateResync: this many late packets in a row re-synchronise the
	// direction (the sender's clock runs slow, or it restarted its
	// timestamps lower).
	mixLateResync = 5
	// mixMaxCatchUp bounds the frames produced for one tick when the
	// goroutine was delayed; frames beyond it are skipped.
	mixMaxCatchUp = 5
	// mixPCMWindow is the decoded audio each direction can hold ahead of
	// the playout point, in samples at 16 kHz (covers mixMaxAhead plus the
	// longest packet).
	mixPCMWindow = 16000*(mixMaxAhead+mixSlotBytes)/8000 + 2*mixFrameTicks*2
)

// ErrMixerCodec: an output asked for a codec the mixer cannot encode.
var ErrMixerCodec = errors.New("mixer: unsupported output codec")

// MixFrame is one mixed frame encoded for one codec. It is valid only during
// MixOutput.WriteMix: an output that keeps the payload copies it.
type MixFrame struct {
	Codec   string // encoding name: PCMU, PCMA or G722
	Payload []byte
	// Samples is the RTP timestamp increment of this frame (160 for 20 ms
	// at the 8000 Hz RTP clock of every supported codec).
	Samples uint32
	// Index counts frames since the mixer started, with no gaps except
	// after a stall longer than mixMaxCatchUp frames.
	Index uint64
	// Silent: no party contributed audio to this frame (hold, silence
	// suppression, comfort noise, DTMF, or nothing received yet).
	Silent bool
}

// MixOutput receives the supervisor mix. WriteMix runs on the mixer's
// goroutine once per frame and must not block; it must not retain f or its
// payload.
type MixOutput interface {
	WriteMix(f *MixFrame)
}

// MixerConfig configures a Mixer.
type MixerConfig struct {
	// Delay is the jitter-buffer depth (playout delay). Default 60 ms.
	Delay time.Duration
	// Log receives start/stop lines (never per packet). Default: discard.
	Log *slog.Logger
	// Tick replaces the mixer's own 20 ms ticker (tests). Each value
	// received is the current time; the mixer produces the frames due
	// since the first tick, one per 20 ms.
	Tick <-chan time.Time
}

// MixerStats are a mixer's counters.
type MixerStats struct {
	Packets    [2]uint64 `json:"packets"`     // per direction, queued for mixing
	Overflow   [2]uint64 `json:"overflow"`    // queue or jitter buffer full: dropped before mixing
	Oversize   [2]uint64 `json:"oversize"`    // payload too large for a slot
	Late       [2]uint64 `json:"late"`        // arrived after their playout time
	Duplicates [2]uint64 `json:"duplicates"`  // same timestamp already buffered
	Resyncs    [2]uint64 `json:"resyncs"`     // playout point reset (SSRC change, jump)
	Ignored    [2]uint64 `json:"ignored"`     // comfort noise, telephone-events, unknown payload types
	Frames     uint64    `json:"frames"`      // frames mixed
	Skipped    uint64    `json:"skipped"`     // frames skipped after a stall
	Outputs    int       `json:"outputs"`     // current outputs
	MixRate    int       `json:"mix_rate_hz"` // internal rate of the last frame
}

// Mixer mixes a call's two directions for listen-only supervisors. It
// implements Tap: attach it with Call.AddTap.
type Mixer struct {
	id    string
	log   *slog.Logger
	q     [2]mixQueue
	media atomic.Pointer[[2]MediaDesc]

	mu   sync.Mutex // guards plan rebuilds
	plan atomic.Pointer[mixPlan]

	quit     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
	reason   atomic.Pointer[string]

	// Owned by the mixer goroutine.
	dirs     [2]mixDir
	mixBuf   []int16
	dirFrame [2][]int16
	frame    MixFrame
	mixRate  int
	start    time.Time
	produced uint64
	seenDesc *[2]MediaDesc

	frames, skipped atomic.Uint64
	lastRate        atomic.Int64
}

var _ Tap = (*Mixer)(nil)

// NewMixer starts a mixer for call id; it runs until Close or the call's
// EvEnd.
func NewMixer(id string, cfg MixerConfig) *Mixer {
	if cfg.Delay <= 0 {
		cfg.Delay = mixDefaultDelay
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	m := &Mixer{
		id:      id,
		log:     cfg.Log.With("call_id", id, "leg", "mixer"),
		quit:    make(chan struct{}),
		done:    make(chan struct{}),
		mixBuf:  make([]int16, 2*mixFrameTicks),
		mixRate: 8000,
	}
	m.dirFrame[0] = make([]int16, 0, 2*mixFrameTicks+1)
	m.dirFrame[1] = make([]int16, 0, 2*mixFrameTicks+1)
	delay := uint32(cfg.Delay / (time.Second / 8000))
	for i := range m.dirs {
		m.dirs[i].init(delay)
	}
	m.plan.Store(&mixPlan{})
	tick, stop := cfg.Tick, func() {}
	if tick == nil {
		t := time.NewTicker(MixFrameDuration)
		tick, stop = t.C, t.Stop
	}
	go m.run(tick, stop)
	return m
}

// RTP queues a copy of the packet for the mixer goroutine. It never blocks
// or allocates; a full queue drops the packet and counts it.
func (m *Mixer) RTP(dir Direction, pkt *Packet) {
	m.q[dir&1].push(pkt)
}

// Event rebinds codecs on EvMedia and stops the mixer on EvEnd.
func (m *Mixer) Event(ev Event) {
	switch ev.Kind {
	case EvMedia:
		md := ev.Media
		for i := range md {
			md[i].Codecs = slices.Clone(md[i].Codecs)
		}
		m.media.Store(&md)
	case EvEnd:
		m.stop("call ended: " + ev.Reason)
	}
}

// AddOutput starts sending the mix, encoded as codecName (PCMU, PCMA or
// G722), to out from the next frame on.
func (m *Mixer) AddOutput(out MixOutput, codecName string) error {
	name := strings.ToUpper(codecName)
	if _, ok := codec.Lookup(name); !ok {
		return fmt.Errorf("%w: %q", ErrMixerCodec, codecName)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.plan.Load()
	next := &mixPlan{outs: slices.Clone(old.outs), encs: slices.Clone(old.encs)}
	idx := slices.IndexFunc(next.encs, func(e *mixEnc) bool { return e.name == name })
	if idx < 0 {
		enc, err := newMixEnc(name)
		if err != nil {
			return err
		}
		next.encs = append(next.encs, enc)
		idx = len(next.encs) - 1
	}
	next.outs = append(next.outs, mixOut{out: out, enc: idx})
	m.plan.Store(next)
	return nil
}

// RemoveOutput stops sending to out and returns how many outputs remain.
// The mixer goroutine may still be inside one WriteMix call to out.
func (m *Mixer) RemoveOutput(out MixOutput) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.plan.Load()
	next := &mixPlan{}
	used := map[int]int{}
	for _, o := range old.outs {
		if o.out == out {
			continue
		}
		j, ok := used[o.enc]
		if !ok {
			j = len(next.encs)
			used[o.enc] = j
			next.encs = append(next.encs, old.encs[o.enc])
		}
		next.outs = append(next.outs, mixOut{out: o.out, enc: j})
	}
	m.plan.Store(next)
	return len(next.outs)
}

// Outputs returns the number of outputs.
func (m *Mixer) Outputs() int { return len(m.plan.Load().outs) }

// Done is closed when the mixer has stopped (Close, or the call ended).
func (m *Mixer) Done() <-chan struct{} { return m.done }

// Reason says why the mixer stopped ("" while it runs).
func (m *Mixer) Reason() string {
	if r := m.reason.Load(); r != nil {
		return *r
	}
	return ""
}

// Close stops the mixer and waits for its goroutine. Idempotent.
func (m *Mixer) Close() error {
	m.stop("closed")
	<-m.done
	return nil
}

func (m *Mixer) stop(reason string) {
	m.stopOnce.Do(func() {
		m.reason.Store(&reason)
		close(m.quit)
	})
}

// Stats returns a snapshot of the counters.
func (m *Mixer) Stats() MixerStats {
	var s MixerStats
	for d := range 2 {
		q := &m.q[d]
		s.Packets[d] = q.packets.Load()
		s.Overflow[d] = q.overflow.Load() + m.dirs[d].c.full.Load()
		s.Oversize[d] = q.oversize.Load()
		c := &m.dirs[d].c
		s.Late[d] = c.late.Load()
		s.Duplicates[d] = c.dups.Load()
		s.Resyncs[d] = c.resyncs.Load()
		s.Ignored[d] = c.ignored.Load()
	}
	s.Frames = m.frames.Load()
	s.Skipped = m.skipped.Load()
	s.Outputs = m.Outputs()
	s.MixRate = int(m.lastRate.Load())
	return s
}

func (m *Mixer) run(tick <-chan time.Time, stopTick func()) {
	defer close(m.done)
	defer stopTick()
	m.log.Debug("mixer started")
	for {
		select {
		case <-m.quit:
			st := m.Stats()
			m.log.Info("mixer stopped", "reason", m.Reason(), "frames", st.Frames,
				"packets_a_to_b", st.Packets[0], "packets_b_to_a", st.Packets[1],
				"overflow", st.Overflow[0]+st.Overflow[1], "late", st.Late[0]+st.Late[1],
				"resyncs", st.Resyncs[0]+st.Resyncs[1], "skipped", st.Skipped)
			return
		case now := <-tick:
			m.advance(now)
		}
	}
}

// advance produces the frames due at now: one per 20 ms since the first
// tick.
func (m *Mixer) advance(now time.Time) {
	if m.start.IsZero() {
		m.start = now.Add(-MixFrameDuration)
	}
	due := uint64(now.Sub(m.start) / MixFrameDuration)
	if due <= m.produced {
		return
	}
	n := due - m.produced
	if n > mixMaxCatchUp {
		m.skipped.Add(n - mixMaxCatchUp)
		m.produced += n - mixMaxCatchUp
		n = mixMaxCatchUp
	}
	for range n {
		m.step()
		m.produced++
	}
}

// step mixes one frame and hands it to every output.
func (m *Mixer) step() {
	if d := m.media.Load(); d != m.seenDesc {
		m.seenDesc = d
		for i := range m.dirs {
			m.dirs[i].rebind(d, Direction(i))
		}
	}
	for i := range m.dirs {
		m.dirs[i].drain(&m.q[i])
	}
	rate := 8000
	for i := range m.dirs {
		rate = max(rate, m.dirs[i].rate)
	}
	if rate != m.mixRate {
		m.mixRate = rate
		for i := range m.dirs {
			m.dirs[i].up.Reset()
		}
	}
	ns := mixFrameTicks * rate / 8000
	silent := true
	for i := range m.dirs {
		d := &m.dirs[i]
		pcm, had := d.frame()
		silent = silent && !had
		buf := m.dirFrame[i][:0]
		if d.rate != rate {
			buf = d.up.Process(buf, pcm)
		} else {
			buf = append(buf, pcm...)
		}
		m.dirFrame[i] = buf
	}
	mix := m.mixBuf[:ns]
	codec.Mix(mix, m.dirFrame[0], m.dirFrame[1])
	m.frames.Add(1)
	m.lastRate.Store(int64(rate))

	plan := m.plan.Load()
	for _, e := range plan.encs {
		e.encode(mix, rate)
	}
	f := &m.frame
	f.Samples = mixFrameTicks
	f.Index = m.produced
	f.Silent = silent
	for _, o := range plan.outs {
		e := plan.encs[o.enc]
		f.Codec, f.Payload = e.name, e.out
		o.out.WriteMix(f)
	}
}

// mixPlan is the immutable list of outputs and the encoders they share,
// swapped as a whole when an output joins or leaves.
type mixPlan struct {
	outs []mixOut
	encs []*mixEnc
}

type mixOut struct {
	out MixOutput
	enc int // index in encs
}

// mixEnc encodes the mix once per frame for one codec. Used only by the
// mixer goroutine (plans share the pointer).
type mixEnc struct {
	name   string
	enc    codec.Encoder
	rs     *codec.Resampler
	rsFrom int
	pcm    []int16
	out    []byte
}

func newMixEnc(name string) (*mixEnc, error) {
	enc, err := codec.NewEncoder(name)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMixerCodec, err)
	}
	n := mixFrameTicks * enc.SampleRate() / 8000
	return &mixEnc{name: name, enc: enc, pcm: make([]int16, 0, n+1), out: make([]byte, enc.PayloadSize(n))}, nil
}

func (e *mixEnc) encode(mix []int16, rate int) {
	pcm := mix
	if want := e.enc.SampleRate(); want != rate {
		if e.rs == nil || e.rsFrom != rate {
			e.rs, _ = codec.NewResampler(rate, want) // both rates are 8000 or 16000
			e.rsFrom = rate
		}
		e.pcm = e.rs.Process(e.pcm[:0], mix)
		pcm = e.pcm
	}
	n := e.enc.Encode(e.out[:cap(e.out)], pcm)
	e.out = e.out[:n]
}

// mixSlot is one queued packet.
type mixSlot struct {
	seq     uint16
	pt      uint8
	ts      uint32
	ssrc    uint32
	n       uint16
	arrival int64
	data    [mixSlotBytes]byte
}

// mixQueue is a single-producer single-consumer ring: the producer is the
// relay goroutine of one direction, the consumer the mixer goroutine.
// Slots are published by the head index (release/acquire through atomics).
type mixQueue struct {
	head     atomic.Uint32 // next slot to write; written by the producer
	tail     atomic.Uint32 // next slot to read; written by the consumer
	packets  atomic.Uint64
	overflow atomic.Uint64
	oversize atomic.Uint64
	slots    [mixQueueLen]mixSlot
}

func (q *mixQueue) push(pkt *Packet) {
	if len(pkt.Payload) > mixSlotBytes {
		q.oversize.Add(1)
		return
	}
	h := q.head.Load()
	if h-q.tail.Load() >= mixQueueLen {
		q.overflow.Add(1)
		return
	}
	s := &q.slots[h&(mixQueueLen-1)]
	s.seq = pkt.Header.SequenceNumber
	s.pt = pkt.Header.PayloadType
	s.ts = pkt.Header.Timestamp
	s.ssrc = pkt.Header.SSRC
	s.arrival = pkt.Arrival
	s.n = uint16(copy(s.data[:], pkt.Payload))
	q.head.Store(h + 1)
	q.packets.Add(1)
}

// pendPacket is a packet waiting in a direction's jitter buffer.
type pendPacket struct {
	ts   uint32
	pt   uint8
	n    uint16
	data [mixSlotBytes]byte
}

type dirCounters struct {
	late, dups, resyncs, ignored, full atomic.Uint64
}

// mixDir is one direction's jitter buffer and decoder (mixer goroutine only).
type mixDir struct {
	delay   uint32 // playout delay in RTP ticks
	started bool
	ssrc    uint32
	playTS  uint32 // RTP timestamp of the next frame's first sample
	lateRun int

	pend  [mixPending]pendPacket
	npend int

	// codec binding: payload type -> decoder kind (rebuilt on EvMedia)
	kinds [128]decKind
	ulaw  codec.Decoder
	alaw  codec.Decoder
	g722  codec.Decoder
	cur   decKind
	rate  int // PCM rate of the current decoder

	pcm     []int16 // decoded audio from playTS on, at rate
	filled  int     // samples of pcm that hold audio (high-water mark)
	scratch []int16
	up      *codec.Resampler // rate -> 16 kHz when the other side is G.722

	c dirCounters
}

type decKind uint8

const (
	decNone    decKind = iota // unknown payload type: ignored
	decSilence                // CN, telephone-event: silence
	decULaw
	decALaw
	decG722
)

func (d *mixDir) init(delay uint32) {
	d.delay = delay
	d.ulaw, _ = codec.NewDecoder("PCMU")
	d.alaw, _ = codec.NewDecoder("PCMA")
	d.g722, _ = codec.NewDecoder("G722")
	d.rate = 8000
	d.cur = decULaw
	d.pcm = make([]int16, mixPCMWindow)
	d.scratch = make([]int16, 2*mixSlotBytes)
	d.up, _ = codec.NewResampler(8000, 16000)
	d.rebind(nil, AtoB)
}

// rebind maps payload types to decoders: the sender's SDP first, then the
// receiver's (RFC 3264 lets each side send with the other's numbers), then
// the RFC 3551 static types.
func (d *mixDir) rebind(md *[2]MediaDesc, dir Direction) {
	for pt := range d.kinds {
		d.kinds[pt] = decNone
	}
	d.kinds[0], d.kinds[8], d.kinds[9], d.kinds[codec.CNPayloadType] = decULaw, decALaw, decG722, decSilence
	if md == nil {
		return
	}
	for _, s := range []Side{dir.From().Other(), dir.From()} { // sender last: it wins
		for _, c := range md[s].Codecs {
			if c.PT >= 128 {
				continue
			}
			d.kinds[c.PT] = kindOf(c)
		}
	}
}

func kindOf(c Codec) decKind {
	switch {
	case c.Is("PCMU"):
		return decULaw
	case c.Is("PCMA"):
		return decALaw
	case c.Is("G722"):
		return decG722
	case c.Is("telephone-event"), codec.IsCN(c.PT, c.Name):
		return decSilence
	}
	return decNone
}

// resync makes ts (minus the playout delay) the new playout point.
func (d *mixDir) resync(ts uint32) {
	if d.started {
		d.c.resyncs.Add(1)
	}
	d.started = true
	d.playTS = ts - d.delay
	d.npend = 0
	d.lateRun = 0
	clear(d.pcm[:d.filled])
	d.filled = 0
	d.g722.Reset()
}

// drain moves the queued packets into the jitter buffer.
func (d *mixDir) drain(q *mixQueue) {
	t := q.tail.Load()
	h := q.head.Load()
	for ; t != h; t++ {
		d.insert(&q.slots[t&(mixQueueLen-1)])
	}
	q.tail.Store(t)
}

func (d *mixDir) insert(s *mixSlot) {
	if !d.started || s.ssrc != d.ssrc {
		d.ssrc = s.ssrc
		d.resync(s.ts)
	}
	off := int32(s.ts - d.playTS)
	switch {
	case off < 0:
		d.c.late.Add(1)
		if d.lateRun++; d.lateRun < mixLateResync {
			return
		}
		d.resync(s.ts)
	case off > mixMaxAhead:
		d.resync(s.ts)
	default:
		d.lateRun = 0
	}
	for i := range d.npend {
		if d.pend[i].ts == s.ts {
			d.c.dups.Add(1)
			return
		}
	}
	if d.npend == mixPending { // only with timestamps far apart: drop the packet
		d.c.full.Add(1)
		return
	}
	p := &d.pend[d.npend]
	d.npend++
	p.ts, p.pt, p.n = s.ts, s.pt&0x7f, s.n
	copy(p.data[:s.n], s.data[:s.n])
}

// frame decodes the packets due in the next frame, in timestamp order, and
// returns the frame's PCM at d.rate (aliasing d.pcm until the next call)
// and whether any audio was decoded into it.
func (d *mixDir) frame() ([]int16, bool) {
	end := d.playTS + mixFrameTicks
	for d.npend > 0 {
		// pick the earliest due packet
		best := -1
		for i := range d.npend {
			if int32(d.pend[i].ts-end) < 0 && (best < 0 || int32(d.pend[i].ts-d.pend[best].ts) < 0) {
				best = i
			}
		}
		if best < 0 {
			break
		}
		d.decode(&d.pend[best])
		d.npend--
		d.pend[best] = d.pend[d.npend]
	}
	ns := mixFrameTicks * d.rate / 8000
	had := d.filled > 0
	out := d.pcm[:ns]
	// Return a copy (in scratch) and move the rest of the window down.
	copy(d.scratch[:ns], out)
	if d.filled > ns {
		copy(d.pcm, d.pcm[ns:d.filled])
		clear(d.pcm[d.filled-ns : d.filled])
		d.filled -= ns
	} else {
		clear(d.pcm[:d.filled])
		d.filled = 0
	}
	d.playTS = end
	return d.scratch[:ns], had
}

func (d *mixDir) decode(p *pendPacket) {
	k := d.kinds[p.pt]
	if k == decNone || k == decSilence {
		d.c.ignored.Add(1)
		return
	}
	if k != d.cur {
		d.cur = k
		rate := d.decoder().SampleRate()
		if rate != d.rate {
			clear(d.pcm[:d.filled])
			d.filled = 0
			d.rate = rate
		}
		d.g722.Reset()
	}
	dec := d.decoder()
	off := int(int32(p.ts-d.playTS)) * d.rate / 8000
	if off < 0 {
		return
	}
	n := dec.Decode(d.scratch, p.data[:p.n])
	if off >= len(d.pcm) {
		return
	}
	n = copy(d.pcm[off:], d.scratch[:n])
	d.filled = max(d.filled, off+n)
}

func (d *mixDir) decoder() codec.Decoder {
	switch d.cur {
	case decALaw:
		return d.alaw
	case decG722:
		return d.g722
	}
	return d.ulaw
}

// rtpStamp gives an output its own continuous RTP header fields: a random
// SSRC, a sequence number that grows by one per frame and a timestamp that
// grows by the frame's samples, both starting at random values (RFC 3550
// section 5.1).
type rtpStamp struct {
	ssrc  uint32
	seq   uint16
	ts    uint32
	first bool
}

func newRTPStamp() rtpStamp {
	return rtpStamp{ssrc: rand.Uint32(), seq: uint16(rand.Uint32()), ts: rand.Uint32(), first: true}
}

// next returns the sequence number and timestamp for a frame of samples
// ticks, and whether it is the stream's first packet (marker bit).
func (s *rtpStamp) next(samples uint32) (seq uint16, ts uint32, first bool) {
	seq, ts, first = s.seq, s.ts, s.first
	s.seq++
	s.ts += samples
	s.first = false
	return seq, ts, first
}

// skip advances the timestamp over a frame that is not sent.
func (s *rtpStamp) skip(samples uint32) { s.ts += samples }
