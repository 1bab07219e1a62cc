package bridge

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
)

// ForkPT says how one source payload type is sent to a recorder: the
// payload type number the recorder negotiated for the same codec, the
// codec's RTP clock rate, and whether it is an RFC 4733 event.
type ForkPT struct {
	Out   uint8
	Rate  uint32
	Event bool
}

// ForkRoute is where a fork stream sends and how it maps payload types. A
// source payload type missing from PT is not sent (counted as unmapped).
type ForkRoute struct {
	Addr netip.AddrPort
	PT   map[uint8]ForkPT
	// SRTP is bib's sending key toward the recorder (the a=crypto of the
	// SDP bib sent it); nil sends plain RTP. A route with the same key as
	// before keeps the encryption context, so the rollover counter goes on.
	SRTP *SRTPKey
}

// forkRoute is ForkRoute compiled for the hot path: a fixed table, no map.
type forkRoute struct {
	addr netip.AddrPort
	sa   syscall.Sockaddr
	pt   [128]forkPT
	srtp *srtpCtx // nil: plain RTP
}

type forkPT struct {
	ok    bool
	event bool
	out   uint8
	rate  uint32
}

// ForkCounters are a fork stream's counters (atomics, readable any time).
type ForkCounters struct {
	Packets    atomic.Uint64 // RTP packets sent to the recorder
	Bytes      atomic.Uint64
	Paused     atomic.Uint64 // packets not sent because the stream had no route (paused, not yet negotiated)
	Unmapped   atomic.Uint64 // packets whose payload type the recorder did not negotiate
	Dropped    atomic.Uint64 // packets dropped because the socket (or the queue) was full
	SendErrors atomic.Uint64 // includes packets SRTP could not protect
	Rebases    atomic.Uint64 // timestamp/sequence re-anchors (source SSRC change, timestamp or sequence jump)
}

// ForkSend selects how a fork stream puts packets on the wire.
type ForkSend uint8

const (
	// ForkSendNonBlocking sends from the relay goroutine with a non-blocking
	// sendto(2): a full socket buffer drops the packet (counted) instead of
	// parking the relay goroutine. The default.
	ForkSendNonBlocking ForkSend = iota
	// ForkSendDirect uses net.UDPConn.WriteToUDPAddrPort from the relay
	// goroutine; it parks the goroutine while the socket buffer is full.
	// Kept for comparison in benchmarks.
	ForkSendDirect
	// ForkSendQueued copies packets into a bounded queue drained by one
	// sender goroutine; a full queue drops the packet (counted).
	ForkSendQueued
)

// ForkOption configures NewForkStream.
type ForkOption func(*ForkStream)

// WithForkSend selects the send path (default ForkSendNonBlocking).
func WithForkSend(m ForkSend) ForkOption { return func(f *ForkStream) { f.mode = m } }

// WithForkSSRC fixes the outgoing SSRC, sequence and timestamp origins
// (tests); by default they are random (RFC 3550 section 5.1).
func WithForkSSRC(ssrc uint32, seq uint16, ts uint32) ForkOption {
	return func(f *ForkStream) { f.ssrc, f.st.initSeq, f.st.initTS = ssrc, seq, ts }
}

// forkQueueSize is the queued sender's capacity in packets (a power of two).
const forkQueueSize = 256

// ForkStream is a Tap that forwards one direction of a call's RTP to an
// external recorder from its own UDP socket, as the call manager's
// Built-in Bridge does for each recording call. The payload is sent
// unchanged; the header is rewritten so that the recorder sees one
// continuous stream (RFC 3550 section 5.1): its own SSRC, sequence numbers
// that keep the source's spacing and continue across source changes, and
// timestamps that keep the source's spacing within a source and are
// re-anchored on the arrival-time gap when the source's SSRC changes or
// its timestamp or sequence number jumps. RFC 4733 events are sent with
// the payload type the recorder negotiated for telephone-event.
type ForkStream struct {
	dir     Direction
	mode    ForkSend
	conn    *net.UDPConn
	raw     syscall.RawConn
	release func()
	local   netip.AddrPort
	ssrc    uint32

	route atomic.Pointer[forkRoute]

	srtpMu   sync.Mutex // serialises SetRoute's choice of context
	srtpLast *srtpCtx   // the last SRTP context, kept across Pause

	// relay goroutine state
	st      forkState
	buf     [maxDatagram]byte
	ebuf    [maxDatagram + srtpMaxTrailer]byte // buf encrypted (SRTP routes)
	sendFn  func(fd uintptr) bool
	sendB   []byte
	sendSA  syscall.Sockaddr
	sendErr error

	// queued mode
	q       *forkQueue
	wake    chan struct{}
	quit    chan struct{}
	wg      sync.WaitGroup
	closing atomic.Bool
	once    sync.Once

	C ForkCounters
}

type forkState struct {
	initSeq    uint16
	initTS     uint32
	started    bool
	srcSSRC    uint32
	lastSrcSeq uint16
	lastSrcTS  uint32 // of the last audio packet
	lastArr    int64  // arrival of the last audio packet
	haveAudio  bool
	seqOff     uint16
	tsOff      uint32
	lastOutSeq uint16
	lastOutTS  uint32
	marker     bool // set the marker bit on the next packet (new talkspurt after a re-anchor)
}

var _ Tap = (*ForkStream)(nil)

// NewForkStream binds an RTP/RTCP port pair from the engine's range for a
// fork of direction dir. It sends nothing until SetRoute.
func NewForkStream(e *Engine, dir Direction, opts ...ForkOption) (*ForkStream, error) {
	rtpc, _, release, err := e.AllocatePair()
	if err != nil {
		return nil, fmt.Errorf("fork %s: %w", dir, err)
	}
	f, err := newForkStream(rtpc, release, dir, opts...)
	if err != nil {
		release()
		return nil, err
	}
	return f, nil
}

func newForkStream(conn *net.UDPConn, release func(), dir Direction, opts ...ForkOption) (*ForkStream, error) {
	f := &ForkStream{dir: dir, conn: conn, release: release}
	f.ssrc = rand.Uint32()
	f.st.initSeq = uint16(rand.Uint32() & 0x7fff) // low half leaves room before a wrap
	f.st.initTS = rand.Uint32()
	for _, o := range opts {
		o(f)
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("fork %s: %w", dir, err)
	}
	f.raw = raw
	f.local = conn.LocalAddr().(*net.UDPAddr).AddrPort()
	f.sendFn = f.sendRaw
	if f.mode == ForkSendQueued {
		f.q = newForkQueue(forkQueueSize)
		f.wake = make(chan struct{}, 1)
		f.quit = make(chan struct{})
		f.wg.Add(1)
		go func() { defer f.wg.Done(); f.sender() }()
	}
	return f, nil
}

// Local returns the stream's RTP address: the c=/m= of the SDP sent to the
// recorder, and the source address of every packet.
func (f *ForkStream) Local() netip.AddrPort { return f.local }

// Direction returns the forked direction.
func (f *ForkStream) Direction() Direction { return f.dir }

// SSRC returns the outgoing SSRC.
func (f *ForkStream) SSRC() uint32 { return f.ssrc }

// SetRoute starts (or changes) sending to r.Addr with r's payload type
// mapping, encrypted with r.SRTP if set. It may be called while packets
// flow. An unusable key is an error and pauses the stream: nothing goes
// out in the clear that was meant to be encrypted.
func (f *ForkStream) SetRoute(r ForkRoute) error {
	if !r.Addr.IsValid() || r.Addr.Port() == 0 || r.Addr.Addr().IsUnspecified() {
		return fmt.Errorf("fork route %s: %w", r.Addr, ErrForkAddress)
	}
	cr := &forkRoute{addr: r.Addr}
	if r.SRTP != nil {
		f.srtpMu.Lock()
		c := f.srtpLast
		if c == nil || !c.key.Equal(*r.SRTP) {
			var err error
			if c, err = newSRTPCtx(*r.SRTP, false); err != nil {
				f.srtpMu.Unlock()
				f.route.Store(nil)
				return fmt.Errorf("fork route %s: %w", r.Addr, err)
			}
			f.srtpLast = c
		}
		f.srtpMu.Unlock()
		cr.srtp = c
	}
	a := r.Addr.Addr()
	if a.Is4() || a.Is4In6() {
		cr.sa = &syscall.SockaddrInet4{Port: int(r.Addr.Port()), Addr: a.Unmap().As4()}
	} else {
		cr.sa = &syscall.SockaddrInet6{Port: int(r.Addr.Port()), Addr: a.As16()}
	}
	for pt, m := range r.PT {
		if pt > 127 || m.Out > 127 {
			continue
		}
		rate := m.Rate
		if rate == 0 {
			rate = 8000
		}
		cr.pt[pt] = forkPT{ok: true, event: m.Event, out: m.Out, rate: rate}
	}
	f.route.Store(cr)
	return nil
}

// Pause stops sending until the next SetRoute (hold, recorder gone).
func (f *ForkStream) Pause() { f.route.Store(nil) }

// RTP implements Tap; it runs on the relay goroutine of its direction. No
// allocation, no lock, no log line.
func (f *ForkStream) RTP(dir Direction, pkt *Packet) {
	if dir != f.dir || f.closing.Load() {
		return
	}
	r := f.route.Load()
	if r == nil {
		f.C.Paused.Add(1)
		return
	}
	h := &pkt.Header
	m := r.pt[h.PayloadType&0x7f]
	if !m.ok {
		f.C.Unmapped.Add(1)
		return
	}
	raw := pkt.Raw
	if len(raw) < rtpHeaderMin || len(raw) > maxDatagram {
		return
	}
	seq, ts := f.rewrite(h.SSRC, h.SequenceNumber, h.Timestamp, pkt.Arrival, m.rate, m.event)
	b := f.buf[:len(raw)]
	copy(b, raw)
	marker := h.Marker
	if f.st.marker && !m.event {
		marker, f.st.marker = true, false
	}
	b[1] = m.out & 0x7f
	if marker {
		b[1] |= 0x80
	}
	b[2], b[3] = byte(seq>>8), byte(seq)
	b[4], b[5], b[6], b[7] = byte(ts>>24), byte(ts>>16), byte(ts>>8), byte(ts)
	s := f.ssrc
	b[8], b[9], b[10], b[11] = byte(s>>24), byte(s>>16), byte(s>>8), byte(s)
	if r.srtp != nil {
		eb, err := r.srtp.encrypt(f.ebuf[:], b)
		if err != nil {
			f.C.SendErrors.Add(1)
			return
		}
		b = eb
	}
	f.send(r, b)
}

// rewrite maps a source packet's sequence number and timestamp onto the
// fork's continuous numbering.
func (f *ForkStream) rewrite(ssrc uint32, seq uint16, ts uint32, arrival int64, rate uint32, event bool) (uint16, uint32) {
	st := &f.st
	switch {
	case !st.started:
		st.started = true
		st.srcSSRC = ssrc
		st.seqOff = st.initSeq - seq
		st.tsOff = st.initTS - ts
		st.lastOutSeq = st.initSeq - 1
		st.lastOutTS = st.initTS
		st.marker = true
	case ssrc != st.srcSSRC:
		f.rebase(ssrc, seq, ts, arrival, rate)
	default:
		jump := false
		if d := int16(seq - st.lastSrcSeq); d > 3000 || d < -3000 {
			jump = true
		}
		if !event && st.haveAudio {
			// An audio timestamp that strays more than a second from what the
			// arrival gap predicts is a jump (RFC 3550 section 5.1 allows a
			// random start; a re-INVITE or a restart may reset it).
			exp := (arrival - st.lastArr) * int64(rate) / 1e9
			if d := int64(int32(ts-st.lastSrcTS)) - exp; d > int64(rate) || d < -int64(rate) {
				jump = true
			}
		}
		if jump {
			f.rebase(ssrc, seq, ts, arrival, rate)
		}
	}
	outSeq := seq + st.seqOff
	outTS := ts + st.tsOff
	if int16(outSeq-st.lastOutSeq) > 0 {
		st.lastOutSeq = outSeq
	}
	st.lastSrcSeq = seq
	if !event {
		if !st.haveAudio || int32(outTS-st.lastOutTS) > 0 {
			st.lastOutTS = outTS
		}
		st.lastSrcTS, st.lastArr, st.haveAudio = ts, arrival, true
	}
	return outSeq, outTS
}

// rebase re-anchors the source on the fork's numbering: the next sequence
// number follows the last one sent, and the timestamp advances by the
// arrival-time gap (at least one 20 ms frame, so it never repeats).
func (f *ForkStream) rebase(ssrc uint32, seq uint16, ts uint32, arrival int64, rate uint32) {
	st := &f.st
	f.C.Rebases.Add(1)
	adv := uint32(rate / 50)
	if st.haveAudio {
		if gap := (arrival - st.lastArr) * int64(rate) / 1e9; gap > int64(adv) && gap < 1<<31 {
			adv = uint32(gap)
		}
	}
	st.srcSSRC = ssrc
	st.seqOff = st.lastOutSeq + 1 - seq
	st.tsOff = st.lastOutTS + adv - ts
	st.marker = true
	st.haveAudio = false
	st.lastOutTS += adv
}

func (f *ForkStream) send(r *forkRoute, b []byte) {
	switch f.mode {
	case ForkSendDirect:
		if _, err := f.conn.WriteToUDPAddrPort(b, r.addr); err != nil {
			f.C.SendErrors.Add(1)
			return
		}
	case ForkSendQueued:
		if !f.q.push(b, r) {
			f.C.Dropped.Add(1)
			return
		}
		select {
		case f.wake <- struct{}{}:
		default:
		}
		return // counted by the sender
	default:
		f.sendB, f.sendSA, f.sendErr = b, r.sa, nil
		if err := f.raw.Write(f.sendFn); err != nil {
			f.C.SendErrors.Add(1)
			return
		}
		switch {
		case f.sendErr == syscall.EAGAIN:
			f.C.Dropped.Add(1)
			return
		case f.sendErr != nil:
			f.C.SendErrors.Add(1)
			return
		}
	}
	f.C.Packets.Add(1)
	f.C.Bytes.Add(uint64(len(b)))
}

// sendRaw is the RawConn callback: one sendto(2) on the non-blocking
// socket; returning true always means the goroutine never waits for the
// socket to become writable.
func (f *ForkStream) sendRaw(fd uintptr) bool {
	f.sendErr = syscall.Sendto(int(fd), f.sendB, 0, f.sendSA)
	return true
}

// sender drains the queue (ForkSendQueued).
func (f *ForkStream) sender() {
	for {
		for {
			p := f.q.peek()
			if p == nil {
				break
			}
			if _, err := f.conn.WriteToUDPAddrPort(p.b[:p.n], p.r.addr); err != nil {
				f.C.SendErrors.Add(1)
			} else {
				f.C.Packets.Add(1)
				f.C.Bytes.Add(uint64(p.n))
			}
			f.q.pop()
		}
		select {
		case <-f.wake:
		case <-f.quit:
			return
		}
	}
}

// Event implements Tap; a fork stream follows the packets themselves.
func (f *ForkStream) Event(Event) {}

// Close stops sending and frees the socket pair. Idempotent. Detach the
// stream from the call (RemoveTap) first.
func (f *ForkStream) Close() error {
	f.once.Do(func() {
		f.closing.Store(true)
		f.route.Store(nil)
		if f.quit != nil {
			close(f.quit)
			f.wg.Wait()
		}
		f.release()
	})
	return nil
}

// forkQueue is a single-producer single-consumer ring of packet copies.
type forkQueue struct {
	slots []forkSlot
	mask  uint64
	head  atomic.Uint64 // next to write (producer)
	tail  atomic.Uint64 // next to read (consumer)
}

type forkSlot struct {
	n int
	r *forkRoute
	b [maxDatagram + srtpMaxTrailer]byte
}

func newForkQueue(n int) *forkQueue {
	return &forkQueue{slots: make([]forkSlot, n), mask: uint64(n - 1)}
}

func (q *forkQueue) push(b []byte, r *forkRoute) bool {
	h := q.head.Load()
	if h-q.tail.Load() > q.mask {
		return false
	}
	s := &q.slots[h&q.mask]
	s.n = copy(s.b[:], b)
	s.r = r
	q.head.Store(h + 1)
	return true
}

func (q *forkQueue) peek() *forkSlot {
	t := q.tail.Load()
	if t == q.head.Load() {
		return nil
	}
	return &q.slots[t&q.mask]
}

func (q *forkQueue) pop() { q.tail.Add(1) }

// ErrForkAddress: a fork route without a usable destination address.
var ErrForkAddress = errors.New("fork destination is not a usable address")
