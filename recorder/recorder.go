package recorder

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bib-project/bib/bridge"
	"github.com/bib-project/bib/storage"
)

// CallInfo is who and what is recorded. It is copied into the metadata.
type CallInfo struct {
	CallID     string
	RefCI      string // near end's call leg id (x-refci)
	FarRefCI   string // far end's call leg id (x-farendrefci)
	NearDevice string
	NearLine   string
	NearAddr   string
	NearName   string
	FarDevice  string
	FarLine    string
	FarAddr    string
	FarName    string
	// GateVerdict is stored as JSON in the metadata.
	GateVerdict any
	// Media holds both parties' descriptions (indexed by bridge.Side) as known
	// when the recorder starts; later offer/answers arrive as EvMedia.
	Media [2]bridge.MediaDesc
	// Answered is when the call was answered, if known (metadata only).
	Answered time.Time
	// Start and StartMono set the timeline origin (wall clock and call
	// clock) for a recording started mid-call (selective recording). Zero
	// Start means: start at the EvAnswer event.
	Start     time.Time
	StartMono int64
}

// Metrics are counters shared by all recorders of a process, for export.
type Metrics struct {
	Active      atomic.Int64  // recordings being written
	Completed   atomic.Uint64 // committed cleanly
	Failed      atomic.Uint64 // ended failed (archive full or unwritable)
	WriteErrors atomic.Uint64 // archive write errors (one per failed recording)
	Overflow    atomic.Uint64 // packets dropped by full recorder queues
}

// Stats is a snapshot of a recording in progress (refreshed every 20 ms).
type Stats struct {
	ID         string
	Status     storage.Status
	Reason     string
	DurationMS int64
	Near, Far  storage.DirStats
}

// Option configures New.
type Option func(*Recorder)

// WithNearSide says which call side is the near end (the agent device);
// its audio goes to the left channel. Default bridge.SideA.
func WithNearSide(s bridge.Side) Option { return func(r *Recorder) { r.near = bridge.Direction(s) } }

// WithClock gives the call's monotonic clock (nanoseconds, the clock of
// Packet.Arrival and Event.Mono). Without it the timeline advances only with
// arriving packets and events, and a silent stretch is written when the next
// packet or the end arrives.
func WithClock(now func() int64) Option { return func(r *Recorder) { r.clock = now } }

// WithWallClock injects the wall clock (default time.Now).
func WithWallClock(now func() time.Time) Option { return func(r *Recorder) { r.wall = now } }

// WithMetrics shares process-wide counters.
func WithMetrics(m *Metrics) Option { return func(r *Recorder) { r.metrics = m } }

// op is a request to the writer goroutine.
type op struct {
	kind opKind
	ev   bridge.Event
	note [2]string // opNote: kind, detail
	mono int64
	has  bool // mono is set
	at   time.Time
}

type opKind uint8

const (
	opEvent opKind = iota
	opPause
	opResume
	opStop
	opNote
)

// Recorder records one call. It implements bridge.Tap.
type Recorder struct {
	cfg     Config
	info    CallInfo
	st      storage.Store
	blob    storage.Blob
	log     *slog.Logger
	near    bridge.Direction
	clock   func() int64
	wall    func() time.Time
	metrics *Metrics
	verdict json.RawMessage

	// relay side
	q          [2]*queue
	overflow   [2]atomic.Uint64
	oversize   [2]atomic.Uint64
	ended      atomic.Bool
	lostEvents atomic.Uint64
	wake       chan struct{}
	ops        chan op
	stop       chan op // capacity 1: Stop never waits for a stalled writer to take it
	done       chan struct{}
	stopOnce   sync.Once
	err        error // set before done closes

	// writer side
	tl          timeline
	mul         int64
	depth       int64
	streams     [2]*stream
	media       [2]bridge.MediaDesc
	heldBy      [2]bool
	paused      bool
	events      []storage.Event
	codecs      []string
	startAt     time.Time
	answerAt    time.Time
	now         int64
	wav         *WAVWriter
	tracks      []*track
	stereo      []int16
	mono        []int16
	flushedAt   int64
	failErr     error
	lastOverflw [2]uint64

	mu   sync.Mutex
	snap Stats
}

// track is an extra mono file.
type track struct {
	name string
	w    *WAVWriter
}

var _ bridge.Tap = (*Recorder)(nil)

// New creates the recording in st and starts its writer goroutine. The
// timeline starts at info.Start or, if zero, at the EvAnswer event.
func New(cfg Config, info CallInfo, st storage.Store, log *slog.Logger, opts ...Option) (*Recorder, error) {
	r, err := newRecorder(cfg, info, st, log, opts...)
	if err != nil {
		return nil, err
	}
	go r.run()
	return r, nil
}

// newRecorder builds a recorder without starting its writer goroutine.
func newRecorder(cfg Config, info CallInfo, st storage.Store, log *slog.Logger, opts ...Option) (*Recorder, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Recorder{
		cfg: cfg, info: info, st: st, near: bridge.AtoB,
		wall: time.Now, metrics: &Metrics{},
		wake: make(chan struct{}, 1), ops: make(chan op, 64), stop: make(chan op, 1), done: make(chan struct{}),
		media: info.Media, answerAt: info.Answered,
		stereo: make([]int16, 2*chunk), mono: make([]int16, chunk),
	}
	for _, o := range opts {
		o(r)
	}
	r.log = log.With("call_id", info.CallID)
	var verdict json.RawMessage
	if info.GateVerdict != nil {
		b, err := json.Marshal(info.GateVerdict)
		if err != nil {
			return nil, fmt.Errorf("recorder: gate verdict: %w", err)
		}
		verdict = b
	}
	r.verdict = verdict
	meta := r.meta()
	meta.StartTime = r.wall()
	if !info.Start.IsZero() {
		meta.StartTime = info.Start
	}
	blob, err := st.Create(context.Background(), meta)
	if err != nil {
		r.metrics.Failed.Add(1)
		return nil, fmt.Errorf("recorder: %w: %w", ErrArchive, err)
	}
	r.blob = blob
	r.log = r.log.With("recording_id", blob.ID())
	r.snap = Stats{ID: blob.ID(), Status: storage.StatusRecording}
	// A pending anchor correction (up to the depth) can hold audio for up
	// to twice the depth.
	pending := 2*cfg.JitterMS/5 + 32
	r.streams[r.near] = newStream(r, "near", pending)
	r.streams[1-r.near] = newStream(r, "far", pending)
	for d := range r.q {
		r.q[d] = newQueue(cfg.QueuePackets)
	}
	r.metrics.Active.Add(1)
	if !info.Start.IsZero() {
		r.begin(info.StartMono, info.Start)
	}
	return r, nil
}

// ID returns the recording's id in the archive.
func (r *Recorder) ID() string { return r.blob.ID() }

// RTP implements bridge.Tap: it copies the packet into the direction's queue
// and returns; a full queue drops the packet and counts it.
func (r *Recorder) RTP(dir bridge.Direction, pkt *bridge.Packet) {
	if r.ended.Load() {
		return
	}
	d := dir & 1
	if len(pkt.Payload) > maxPayload {
		r.oversize[d].Add(1)
		return
	}
	q := r.q[d]
	if !q.push(&pkt.Header, pkt.Payload, pkt.Arrival) {
		r.overflow[d].Add(1)
		return
	}
	if q.fill() > q.mask/2 {
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
}

// Event implements bridge.Tap. It never blocks: if the writer is so far
// behind that 64 events are waiting, the event is dropped and counted (the
// recording still ends at Close).
func (r *Recorder) Event(ev bridge.Event) {
	select {
	case r.ops <- op{kind: opEvent, ev: ev}:
	default:
		r.lostEvents.Add(1)
	}
}

func (r *Recorder) send(ctx context.Context, o op) error {
	select {
	case <-r.done:
		return ErrClosed
	default:
	}
	select {
	case r.ops <- o:
		return nil
	case <-r.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *Recorder) opNow(kind opKind) op {
	o := op{kind: kind, at: r.wall()}
	if r.clock != nil {
		o.mono, o.has = r.clock(), true
	}
	return o
}

// Pause silences the recording from now on (selective recording); the span
// is written as silence and noted as an event. ctx bounds the wait for a
// stalled writer.
func (r *Recorder) Pause(ctx context.Context) error { return r.send(ctx, r.opNow(opPause)) }

// Resume ends a Pause.
func (r *Recorder) Resume(ctx context.Context) error { return r.send(ctx, r.opNow(opResume)) }

// Note adds an event of kind with detail to the recording's metadata at the
// current position (a transfer, a far end's new identity).
func (r *Recorder) Note(ctx context.Context, kind, detail string) error {
	o := r.opNow(opNote)
	o.note = [2]string{kind, detail}
	return r.send(ctx, o)
}

// requestStop asks the writer to finish, once, without blocking.
func (r *Recorder) requestStop() {
	r.stopOnce.Do(func() { r.stop <- r.opNow(opStop) })
}

// Stop ends the recording now and waits (bounded by ctx) until it is
// finalized in the archive.
func (r *Recorder) Stop(ctx context.Context) error {
	r.requestStop()
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close ends the recording if it is still running, waits for it to be
// finalized and returns the outcome. It is idempotent.
func (r *Recorder) Close() error {
	r.requestStop()
	<-r.done
	return r.err
}

// Stats returns a snapshot of the recording.
func (r *Recorder) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.snap
}

// run is the writer goroutine.
func (r *Recorder) run() {
	defer close(r.done)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-r.wake:
		case o := <-r.ops:
			if r.handle(o) {
				return
			}
		case o := <-r.stop:
			// Apply what was queued before the stop, then finish.
			if r.drain(true) {
				return
			}
			r.handle(o)
			return
		}
		// Read the clock before draining: every packet stamped before this
		// instant is then in the queues and is placed before audio is written.
		var now int64
		if r.clock != nil {
			now = r.clock()
		}
		if r.drain(true) {
			return
		}
		r.advance(max(now, r.now))
		r.publish()
	}
}

// drain places every queued packet, both directions merged by arrival.
// With poll, requests (events) are taken between packets, so an event a
// goroutine sent before a packet is handled before that packet. It reports
// true when a request finished the recording.
func (r *Recorder) drain(poll bool) bool {
	for {
		a, b := r.q[0].peek(), r.q[1].peek()
		if a == nil && b != nil {
			a = r.q[0].peek() // anything queued before b is visible now
		}
		if poll {
			select {
			case o := <-r.ops:
				if r.handle(o) {
					return true
				}
				continue
			default:
			}
		}
		var d int
		switch {
		case a == nil && b == nil:
			return false
		case a == nil:
			d = 1
		case b == nil:
			d = 0
		case b.arrival < a.arrival:
			d = 1
		}
		p := a
		if d == 1 {
			p = b
		}
		r.now = max(r.now, p.arrival)
		r.streams[d].packet(p)
		r.q[d].pop()
		// A long backlog is written as it is placed, so the jitter buffers
		// never hold more than the depth plus 100 ms.
		if r.tl.started {
			if target := r.tl.pos(r.now) - r.depth; target-r.tl.written >= int64(r.tl.rate/10) {
				r.emitTo(target)
			}
		}
	}
}

// advance writes audio up to now minus the jitter depth.
func (r *Recorder) advance(now int64) {
	for d := range r.overflow {
		if n := r.overflow[d].Load(); n > r.lastOverflw[d] {
			r.metrics.Overflow.Add(n - r.lastOverflw[d])
			if r.tl.started {
				r.event("overflow", max(r.tl.pos(now)-r.depth, r.tl.written), r.streams[d].label,
					fmt.Sprintf("%d packets dropped by the recorder queue", n-r.lastOverflw[d]))
			}
			r.lastOverflw[d] = n
		}
	}
	if !r.tl.started {
		return
	}
	r.emitTo(r.tl.pos(now) - r.depth)
}

// handle applies one request; it reports true when the recording finished.
func (r *Recorder) handle(o op) bool {
	switch o.kind {
	case opEvent:
		return r.onEvent(o.ev)
	case opPause, opResume:
		mono := r.now
		if o.has {
			mono = o.mono
		}
		if !r.tl.started {
			r.paused = o.kind == opPause
			return false
		}
		pos := max(r.tl.pos(mono), r.tl.written)
		if o.kind == opPause && !r.paused {
			r.setSilenceAt(pos, func() { r.paused = true })
			r.event("recording_paused", pos, "", "")
		} else if o.kind == opResume && r.paused {
			r.setSilenceAt(pos, func() { r.paused = false })
			r.event("recording_resumed", pos, "", "")
		}
		return false
	case opNote:
		mono := r.now
		if o.has {
			mono = o.mono
		}
		pos := int64(0)
		if r.tl.started {
			pos = max(r.tl.pos(mono), r.tl.written)
		}
		r.event(o.note[0], pos, "", o.note[1])
		return false
	case opStop:
		mono := r.now
		if o.has {
			mono = max(o.mono, r.now)
		}
		r.finish(mono, o.at, "")
		return true
	}
	return false
}

func (r *Recorder) silent() bool { return r.paused || r.heldBy[0] || r.heldBy[1] }

// setSilenceAt applies change and opens or closes a silenced span at pos.
func (r *Recorder) setSilenceAt(pos int64, change func()) {
	was := r.silent()
	change()
	switch is := r.silent(); {
	case !was && is:
		r.tl.openSilence(pos)
	case was && !is:
		r.tl.closeSilence(pos)
	}
}

func (r *Recorder) sideLabel(s bridge.Side) string {
	if bridge.Direction(s) == r.near {
		return "near"
	}
	return "far"
}

func (r *Recorder) onEvent(ev bridge.Event) bool {
	switch ev.Kind {
	case bridge.EvMedia:
		r.media = ev.Media
		if r.tl.started {
			r.rebind()
		}
	case bridge.EvAnswer:
		if r.answerAt.IsZero() {
			r.answerAt = ev.At
		}
		if !r.tl.started {
			r.begin(ev.Mono, ev.At)
		}
	case bridge.EvHold, bridge.EvResume:
		hold := ev.Kind == bridge.EvHold
		side := ev.Side & 1
		if !r.tl.started || r.heldBy[side] == hold {
			r.heldBy[side] = hold
			return false
		}
		pos := max(r.tl.pos(ev.Mono), r.tl.written)
		r.setSilenceAt(pos, func() { r.heldBy[side] = hold })
		r.event(ev.Kind.String(), pos, "", "by "+r.sideLabel(side))
	case bridge.EvEnd:
		r.finish(max(ev.Mono, r.now), ev.At, ev.Reason)
		return true
	}
	return false
}

// begin starts the timeline: it fixes the sample rate (16 kHz when either
// party offers G.722, else 8 kHz) and writes the WAV headers.
func (r *Recorder) begin(mono int64, at time.Time) {
	rate := 8000
	for _, m := range r.media {
		for _, c := range m.Codecs {
			if c.Is("G722") {
				rate = 16000
			}
		}
	}
	r.tl = timeline{started: true, rate: rate, origin: mono}
	r.mul = int64(rate / rtpClock)
	r.depth = int64(r.cfg.JitterMS * rate / 1000)
	if at.IsZero() {
		at = r.wall()
	}
	r.startAt = at
	r.now = max(r.now, mono)
	r.rebind()
	if r.silent() {
		r.tl.openSilence(0)
	}
	r.openFiles()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.st.Update(ctx, r.meta()); err != nil {
		r.log.Warn("recording metadata update failed", "err", err)
	}
}

func (r *Recorder) rebind() {
	for d, s := range r.streams {
		side := bridge.Direction(d).From()
		s.rebind(r.media[side], r.media[side.Other()], r.tl.rate)
	}
}

func (r *Recorder) openFiles() {
	w, err := NewWAVWriter(r.blob, r.tl.rate, 2)
	if err != nil {
		r.fail(err)
		return
	}
	r.wav = w
	var names []string
	if r.cfg.MonoFiles {
		names = append(names, "near", "far")
	}
	if r.cfg.MixedFile {
		names = append(names, "mixed")
	}
	for _, name := range names {
		f, err := r.blob.Extra(name)
		if err != nil {
			r.fail(err)
			return
		}
		tw, err := NewWAVWriter(f, r.tl.rate, 1)
		if err != nil {
			r.fail(err)
			return
		}
		r.tracks = append(r.tracks, &track{name: name, w: tw})
	}
}

// fail stops writing after the first archive error; the call is untouched.
func (r *Recorder) fail(err error) {
	if r.failErr != nil {
		return
	}
	r.failErr = err
	r.metrics.WriteErrors.Add(1)
	r.log.Error("recording failed; the call continues unrecorded", "err", err)
	if r.tl.started {
		r.event("write_error", r.tl.written, "", err.Error())
	}
}

// emitTo writes both channels up to target (exclusive).
func (r *Recorder) emitTo(target int64) {
	near, far := r.streams[r.near], r.streams[1-r.near]
	for r.tl.written < target {
		from := r.tl.written
		n := int(min(target-from, chunk))
		to := from + int64(n)
		near.release(from, to)
		far.release(from, to)
		st := r.stereo[:2*n]
		near.take(from, n, st, 2)
		far.take(from, n, st[1:], 2)
		r.applySilence(from, to, st)
		r.write(st, n)
		r.tl.written = to
	}
	if r.wav != nil && r.failErr == nil && r.tl.written-r.flushedAt >= int64(r.tl.rate) {
		r.flushHeaders()
	}
}

func (r *Recorder) applySilence(from, to int64, st []int16) {
	keep := r.tl.silenced[:0]
	for _, sp := range r.tl.silenced {
		a, b := max(sp.start, from), min(sp.end, to)
		if a < b {
			clear(st[2*(a-from) : 2*(b-from)])
		}
		if sp.end > to {
			keep = append(keep, sp)
		}
	}
	r.tl.silenced = keep
}

func (r *Recorder) write(st []int16, n int) {
	if r.failErr != nil || r.wav == nil {
		return
	}
	if err := r.wav.Write(st); err != nil {
		r.fail(err)
		return
	}
	for _, t := range r.tracks {
		m := r.mono[:n]
		switch t.name {
		case "near":
			for i := range m {
				m[i] = st[2*i]
			}
		case "far":
			for i := range m {
				m[i] = st[2*i+1]
			}
		default:
			for i := range m {
				m[i] = int16((int32(st[2*i]) + int32(st[2*i+1])) / 2)
			}
		}
		if err := t.w.Write(m); err != nil {
			r.fail(err)
			return
		}
	}
}

func (r *Recorder) flushHeaders() {
	r.flushedAt = r.tl.written
	if err := r.wav.Flush(); err != nil {
		r.fail(err)
		return
	}
	for _, t := range r.tracks {
		if err := t.w.Flush(); err != nil {
			r.fail(err)
			return
		}
	}
}

// finish writes everything up to the end instant and finalizes the archive.
func (r *Recorder) finish(endMono int64, at time.Time, reason string) {
	r.ended.Store(true)
	defer r.metrics.Active.Add(-1)
	if !r.tl.started {
		r.begin(endMono, at)
	}
	r.drain(false)
	r.advance(endMono + int64(r.cfg.JitterMS)*1e6) // releases everything before the end
	if r.wav != nil && r.failErr == nil {
		r.flushHeaders()
	}
	m := r.meta()
	if reason != "" {
		m.Events = append(m.Events, storage.Event{Kind: "end", At: m.EndTime, OffsetMS: m.DurationMS, Detail: reason})
	}
	if n := r.lostEvents.Load(); n > 0 {
		m.Events = append(m.Events, storage.Event{Kind: "events_dropped", At: m.EndTime, OffsetMS: m.DurationMS,
			Detail: fmt.Sprintf("%d call events arrived while the recorder was stalled and were not applied", n)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var err error
	if r.failErr != nil {
		err = r.blob.Abort(ctx, m, "archive write failed: "+r.failErr.Error())
		err = errors.Join(fmt.Errorf("%w: %w", ErrArchive, r.failErr), err)
		r.metrics.Failed.Add(1)
	} else if err = r.blob.Commit(ctx, m); err != nil {
		r.metrics.Failed.Add(1)
		r.log.Error("recording could not be finalized", "err", err)
	} else {
		r.metrics.Completed.Add(1)
	}
	r.err = err
	r.publish()
	r.mu.Lock()
	r.snap.Status = storage.StatusComplete
	if err != nil {
		r.snap.Status, r.snap.Reason = storage.StatusFailed, err.Error()
	}
	r.mu.Unlock()
	r.log.Info("recording finished", "duration_ms", m.DurationMS, "status", r.snap.Status,
		"near_packets", m.Near.Stream.Packets, "near_lost", m.Near.Stream.Lost,
		"far_packets", m.Far.Stream.Packets, "far_lost", m.Far.Stream.Lost)
}

// event appends a metadata event at timeline position pos and returns its index.
func (r *Recorder) event(kind string, pos int64, dir, detail string) int {
	off := pos * 1000 / int64(r.tl.rate)
	at := r.startAt.Add(time.Duration(pos * 1e9 / int64(r.tl.rate)))
	r.events = append(r.events, storage.Event{Kind: kind, At: at, OffsetMS: off, Direction: dir, Detail: detail})
	return len(r.events) - 1
}

func (r *Recorder) codecUsed(dir, name string, pos int64) {
	if !slices.Contains(r.codecs, name) {
		r.codecs = append(r.codecs, name)
	}
	r.event("codec", pos, dir, name)
}

var dtmfDigits = "0123456789*#ABCD"

func (r *Recorder) digit(ev uint8) string {
	if r.cfg.MaskDTMF {
		return "*"
	}
	if int(ev) < len(dtmfDigits) {
		return dtmfDigits[ev : ev+1]
	}
	return fmt.Sprintf("event-%d", ev)
}

func (r *Recorder) dirStats(d bridge.Direction) storage.DirStats {
	st := r.streams[d].finalStats()
	st.Overflow = r.overflow[d].Load()
	st.Discarded += r.oversize[d].Load()
	return st
}

// meta assembles the metadata as it stands.
func (r *Recorder) meta() storage.Meta {
	in := r.info
	m := storage.Meta{
		CallID: in.CallID, RefCI: in.RefCI, FarRefCI: in.FarRefCI,
		Near:        storage.Party{Side: bridge.Side(r.near).String(), Device: in.NearDevice, Line: in.NearLine, Addr: in.NearAddr, Name: in.NearName},
		Far:         storage.Party{Side: bridge.Side(1 - r.near).String(), Device: in.FarDevice, Line: in.FarLine, Addr: in.FarAddr, Name: in.FarName},
		Codecs:      slices.Clone(r.codecs),
		StartTime:   r.startAt,
		AnswerTime:  r.answerAt,
		Channels:    2,
		Status:      storage.StatusRecording,
		Events:      slices.Clone(r.events),
		GateVerdict: r.verdict,
	}
	if m.Codecs == nil {
		m.Codecs = []string{}
	}
	if r.blob != nil {
		m.ID = r.blob.ID()
	}
	if r.tl.started {
		m.SampleRate = r.tl.rate
		m.DurationMS = r.tl.written * 1000 / int64(r.tl.rate)
		m.EndTime = r.startAt.Add(time.Duration(r.tl.written * 1e9 / int64(r.tl.rate)))
		m.Near.Stream = r.dirStats(r.near)
		m.Far.Stream = r.dirStats(1 - r.near)
		m.NoRTP = m.Near.Stream.NoRTP && m.Far.Stream.NoRTP
	}
	slices.SortStableFunc(m.Events, func(a, b storage.Event) int { return cmp.Compare(a.OffsetMS, b.OffsetMS) })
	if m.Events == nil {
		m.Events = []storage.Event{}
	}
	return m
}

func (r *Recorder) publish() {
	if !r.tl.started {
		return
	}
	near, far := r.dirStats(r.near), r.dirStats(1-r.near)
	r.mu.Lock()
	r.snap.DurationMS = r.tl.written * 1000 / int64(r.tl.rate)
	r.snap.Near, r.snap.Far = near, far
	r.mu.Unlock()
}
