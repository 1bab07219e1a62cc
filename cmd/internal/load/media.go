package load

import (
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bib-project/bib/cmd/internal/prompt"
)

// The media side of the harness: RTP sockets shared by calls, pacing
// goroutines that send every active stream's next packet, one receive
// goroutine per socket, and per-stream send stamps so the receiver measures
// latency without anything in the payload.
//
// Streams are identified on receipt by SSRC alone: the SSRC is an
// invertible scramble of (generation, slot) under a random per-run key, so
// the receiver finds the stream with two multiplications and one compare,
// and the bridge sees ordinary random-looking SSRCs. A bridge that rewrites
// SSRCs defeats the matching (packets count as unmatched).

// stampRing is the per-stream window of send stamps (10.24 s at 50 pps).
const stampRing = 512

const frameNS = int64(prompt.FrameMS) * int64(time.Millisecond)

// kind says which party a stream or socket belongs to.
type kind uint8

const (
	kindAgent kind = iota
	kindCustomer
	kindSupervisor
	numKinds
)

func (k kind) String() string {
	return [...]string{"agent", "customer", "supervisor"}[k]
}

// stamp word: send time (ns since the run's base, 47 bits) << 17 | received
// flag << 16 | sequence number.
const stampRecv = 1 << 16

// stream is one direction of one call as the harness sends and receives
// it. A slot is reused by later calls; ssrc tells generations apart.
type stream struct {
	slot int
	kind kind // sender
	rx   kind // who should receive it
	sock int  // socket index (same index on both sides)
	ssrc atomic.Uint32

	// Sender state, owned by one pacer goroutine while the stream is
	// active (set before it is handed over).
	dst        netip.AddrPort
	conn       *net.UDPConn
	p          *prompt.Prompt
	pt         uint8
	seq        uint16
	ts         uint32
	frame      int
	firstFrame int
	due        int64 // nominal send time of the next packet (ns since base)
	dec        decision
	imp        impairer
	held       []byte // packet held back for reordering
	marker     bool

	// Counters, read by the sampler while the stream runs.
	sent      atomic.Uint64 // distinct packets put on the wire
	frames    atomic.Uint64 // frames consumed (sent + deliberately dropped)
	dropped   atomic.Uint64 // deliberately not sent (impairment)
	dups      atomic.Uint64 // extra copies sent (impairment)
	reordered atomic.Uint64 // held back and sent after the next one
	sendErr   atomic.Uint64
	firstNS   atomic.Int64
	lastNS    atomic.Int64

	recv     atomic.Uint64 // distinct packets received
	recvDup  atomic.Uint64 // copies of a packet already received
	recvLate atomic.Uint64 // matched the SSRC but no stamp in the window
	wrongRx  atomic.Uint64 // arrived at a socket other than the peer's
	jit      jitterState
	stamps   [stampRing]atomic.Uint64
}

// reset prepares the slot for a new call's stream.
func (s *stream) reset() {
	s.sent.Store(0)
	s.frames.Store(0)
	s.dropped.Store(0)
	s.dups.Store(0)
	s.reordered.Store(0)
	s.sendErr.Store(0)
	s.firstNS.Store(0)
	s.lastNS.Store(0)
	s.recv.Store(0)
	s.recvDup.Store(0)
	s.recvLate.Store(0)
	s.wrongRx.Store(0)
	s.jit.reset()
	for i := range s.stamps {
		s.stamps[i].Store(0)
	}
	s.held = s.held[:0]
}

// streamTotals are the folded counters of ended streams.
type streamTotals struct {
	Sent, Frames, Dropped, Dups, Reordered, SendErr uint64
	Recv, RecvDup, RecvLate, WrongRx                uint64
}

func (t *streamTotals) add(s *stream) {
	t.Sent += s.sent.Load()
	t.Frames += s.frames.Load()
	t.Dropped += s.dropped.Load()
	t.Dups += s.dups.Load()
	t.Reordered += s.reordered.Load()
	t.SendErr += s.sendErr.Load()
	t.Recv += s.recv.Load()
	t.RecvDup += s.recvDup.Load()
	t.RecvLate += s.recvLate.Load()
	t.WrongRx += s.wrongRx.Load()
}

// media owns the sockets, the streams and the goroutines that move packets.
type media struct {
	base   time.Time
	slots  int // call slots
	key    uint32
	gen    []uint32 // per stream index: generation counter (controller only)
	st     []stream // 3 per call slot: agent, customer, supervisor
	conns  [numKinds][]*net.UDPConn
	pacers []*pacer
	imp    Impairment

	latency Histogram // µs, parties only

	unmatched atomic.Uint64 // SSRC not a current stream (late packets of ended calls, or a rewritten SSRC)
	leaks     atomic.Uint64 // supervisor packets received by a party
	supRecv   atomic.Uint64 // packets received on supervisor sockets
	junk      atomic.Uint64 // not RTP version 2
	supBytes  atomic.Uint64

	mu     sync.Mutex
	totals [numKinds]streamTotals // folded ended streams

	wg sync.WaitGroup
}

const (
	ssrcMul = 0x9E3779B1 // odd: invertible mod 2^32
)

var ssrcInv = inverseOdd(ssrcMul)

// inverseOdd returns x^-1 mod 2^32 for odd x (Newton's iteration).
func inverseOdd(x uint32) uint32 {
	y := x // correct to 3 bits
	for range 5 {
		y *= 2 - x*y
	}
	return y
}

func newMedia(slots, sockets int, imp Impairment, ip netip.Addr) (*media, error) {
	m := &media{
		base:  time.Now(),
		slots: slots,
		key:   rand.Uint32(),
		gen:   make([]uint32, 3*slots),
		st:    make([]stream, 3*slots),
		imp:   imp,
	}
	for i := range m.st {
		s := &m.st[i]
		s.slot = i
		s.kind = kind(i % 3)
		switch s.kind {
		case kindAgent:
			s.rx = kindCustomer
		case kindCustomer:
			s.rx = kindAgent
		default:
			s.rx = kindSupervisor // received by the bridge only
		}
		s.sock = (i / 3) % sockets
		s.held = make([]byte, 0, 1500)
	}
	for k := range numKinds {
		for range sockets {
			c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
			if err != nil {
				m.closeConns()
				return nil, err
			}
			_ = c.SetReadBuffer(4 << 20)
			_ = c.SetWriteBuffer(4 << 20)
			m.conns[k] = append(m.conns[k], c)
		}
	}
	return m, nil
}

func (m *media) closeConns() {
	for k := range m.conns {
		for _, c := range m.conns[k] {
			c.Close()
		}
	}
}

// now is the run's monotonic clock in nanoseconds.
func (m *media) now() int64 { return int64(time.Since(m.base)) }

// stream returns the stream of call slot c sent by kind k.
func (m *media) stream(c int, k kind) *stream { return &m.st[3*c+int(k)] }

// addr returns the RTP address a party of kind k on call slot c receives on.
func (m *media) addr(c int, k kind) netip.AddrPort {
	s := m.stream(c, k)
	return m.conns[k][s.sock].LocalAddr().(*net.UDPAddr).AddrPort()
}

// ports returns every local RTP port, for the kernel's drop counters.
func (m *media) ports() map[uint16]bool {
	out := map[uint16]bool{}
	for k := range m.conns {
		for _, c := range m.conns[k] {
			out[c.LocalAddr().(*net.UDPAddr).AddrPort().Port()] = true
		}
	}
	return out
}

func (m *media) ssrcOf(idx int, gen uint32) uint32 {
	n := gen*uint32(len(m.st)) + uint32(idx) + 1
	return (n * ssrcMul) ^ m.key
}

// lookup finds the active stream an SSRC belongs to.
func (m *media) lookup(ssrc uint32) *stream {
	n := (ssrc ^ m.key) * ssrcInv
	if n == 0 {
		return nil
	}
	idx := int((n - 1) % uint32(len(m.st)))
	s := &m.st[idx]
	if s.ssrc.Load() != ssrc {
		return nil
	}
	return s
}

// start begins a stream: call slot c, sender kind k, towards dst, looping
// prompt p from frame first. It returns once a pacer owns the stream.
func (m *media) start(c int, k kind, dst netip.AddrPort, p *prompt.Prompt, pt uint8, first int) *stream {
	s := m.stream(c, k)
	s.dst = dst
	s.conn = m.conns[k][s.sock]
	m.claim(c, k, p, pt, first)
	m.pacers[s.slot%len(m.pacers)].add(s)
	return s
}

// claim readies the stream of call slot c sent by kind k (prompt p from
// frame first) and gives it a fresh SSRC, without a pacer: the caller puts
// its packets on the wire (a WebRTC supervisor's microphone) and owns the
// sender state. Receivers recognise the SSRC from now on; finish retires it.
func (m *media) claim(c int, k kind, p *prompt.Prompt, pt uint8, first int) *stream {
	s := m.stream(c, k)
	idx := 3*c + int(k)
	s.reset()
	m.gen[idx]++
	s.p = p
	s.pt = pt
	r := rand.Uint64()
	s.seq = uint16(r)
	s.ts = uint32(r >> 16)
	s.firstFrame = first % len(p.Frames)
	s.frame = s.firstFrame
	s.marker = true
	s.imp.init(m.imp, uint64(idx)<<32|uint64(m.gen[idx]))
	s.dec = s.imp.next()
	s.due = m.now()
	s.ssrc.Store(m.ssrcOf(idx, m.gen[idx]))
	return s
}

// stop takes a stream away from its pacer (flushing a held packet) and
// returns when the pacer has let go of it. Receipt stays open: call
// finish after the in-flight packets had time to arrive.
func (m *media) stop(s *stream) {
	done := make(chan struct{})
	m.pacers[s.slot%len(m.pacers)].remove(s, done)
	<-done
}

// finish folds a stopped stream's counters into the totals and retires its
// SSRC; later packets count as unmatched.
func (m *media) finish(s *stream) {
	s.ssrc.Store(0)
	m.mu.Lock()
	m.totals[s.kind].add(s)
	m.mu.Unlock()
}

// snapshotTotals returns ended plus running streams' counters per kind.
func (m *media) snapshotTotals() [numKinds]streamTotals {
	m.mu.Lock()
	t := m.totals
	m.mu.Unlock()
	for i := range m.st {
		s := &m.st[i]
		if s.ssrc.Load() != 0 {
			t[s.kind].add(s)
		}
	}
	return t
}

// run starts the pacers and the receive loops; they stop with ctx.
func (m *media) run(ctx context.Context, pacers int, tick time.Duration) {
	for range pacers {
		p := &pacer{m: m, buf: make([]byte, 1500)}
		m.pacers = append(m.pacers, p)
		m.wg.Add(1)
		go func() { defer m.wg.Done(); p.loop(ctx, tick) }()
	}
	for k := range m.conns {
		for i, c := range m.conns[k] {
			m.wg.Add(1)
			go func() { defer m.wg.Done(); m.readLoop(c, kind(k), i) }()
		}
	}
}

// close stops the receive loops (the pacers stop with the context given
// to run) and waits for every goroutine.
func (m *media) close() {
	m.closeConns()
	m.wg.Wait()
}

func (m *media) readLoop(c *net.UDPConn, k kind, sock int) {
	buf := make([]byte, 2048)
	for {
		n, _, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		now := m.now()
		if n < 12 || buf[0]>>6 != 2 {
			m.junk.Add(1)
			continue
		}
		if k == kindSupervisor {
			// The monitoring mix comes from the bridge with its own SSRC.
			m.supRecv.Add(1)
			m.supBytes.Add(uint64(n))
			continue
		}
		ssrc := binary.BigEndian.Uint32(buf[8:12])
		s := m.lookup(ssrc)
		if s == nil {
			m.unmatched.Add(1)
			continue
		}
		if s.kind == kindSupervisor {
			m.leaks.Add(1)
			continue
		}
		if s.rx != k || s.sock != sock {
			s.wrongRx.Add(1)
			continue
		}
		seq := binary.BigEndian.Uint16(buf[2:4])
		ts := binary.BigEndian.Uint32(buf[4:8])
		s.received(m, seq, ts, now)
	}
}

// received accounts one packet of the stream arriving at time now.
func (s *stream) received(m *media, seq uint16, ts uint32, now int64) {
	slot := &s.stamps[seq%stampRing]
	for {
		w := slot.Load()
		if w == 0 || uint16(w) != seq {
			s.recvLate.Add(1)
			return
		}
		if w&stampRecv != 0 {
			s.recvDup.Add(1)
			return
		}
		if slot.CompareAndSwap(w, w|stampRecv) {
			sentAt := int64(w >> 17)
			m.latency.Record((now - sentAt) / 1000)
			s.recv.Add(1)
			// RTP clock: 8000 Hz for all three codecs.
			s.jit.update(now*int64(s.p.Codec.ClockRate)/int64(time.Second), ts)
			return
		}
	}
}

// pacer sends the next packet of every stream it owns when it is due.
type pacer struct {
	m   *media
	buf []byte

	mu      sync.Mutex
	adds    []*stream
	removes []removal
	closed  bool

	streams []*stream
}

type removal struct {
	s    *stream
	done chan struct{}
}

func (p *pacer) add(s *stream) {
	p.mu.Lock()
	p.adds = append(p.adds, s)
	p.mu.Unlock()
}

func (p *pacer) remove(s *stream, done chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		close(done)
		return
	}
	p.removes = append(p.removes, removal{s, done})
}

func (p *pacer) loop(ctx context.Context, tick time.Duration) {
	t := time.NewTicker(tick)
	defer t.Stop()
	var adds []*stream
	var removes []removal
	for {
		select {
		case <-ctx.Done():
			p.mu.Lock()
			p.closed = true
			for _, r := range p.removes {
				close(r.done)
			}
			p.removes = nil
			p.mu.Unlock()
			return
		case <-t.C:
		}
		p.mu.Lock()
		adds, p.adds = append(adds[:0], p.adds...), p.adds[:0]
		removes, p.removes = append(removes[:0], p.removes...), p.removes[:0]
		p.mu.Unlock()
		p.streams = append(p.streams, adds...)
		for _, r := range removes {
			for i, s := range p.streams {
				if s == r.s {
					p.flush(s)
					p.streams[i] = p.streams[len(p.streams)-1]
					p.streams = p.streams[:len(p.streams)-1]
					break
				}
			}
			close(r.done)
		}
		now := p.m.now()
		for _, s := range p.streams {
			for s.due+int64(s.dec.delay) <= now {
				p.emit(s)
				s.due += frameNS
				s.dec = s.imp.next()
			}
		}
	}
}

// emit builds the stream's next packet and sends it as the impairment
// decision says.
func (p *pacer) emit(s *stream) {
	frame := s.p.Frames[s.frame]
	b := p.buf[:12+len(frame)]
	b[0] = 0x80
	b[1] = s.pt
	if s.marker {
		b[1] |= 0x80
		s.marker = false
	}
	binary.BigEndian.PutUint16(b[2:4], s.seq)
	binary.BigEndian.PutUint32(b[4:8], s.ts)
	binary.BigEndian.PutUint32(b[8:12], s.ssrc.Load())
	copy(b[12:], frame)
	seq := s.seq
	s.seq++
	s.ts += s.p.TSPerFrame
	s.frame++
	if s.frame == len(s.p.Frames) {
		s.frame = 0
	}
	s.frames.Add(1)
	d := s.dec
	switch {
	case d.drop:
		s.dropped.Add(1)
	case d.hold && len(s.held) == 0:
		s.held = append(s.held[:0], b...)
		s.reordered.Add(1)
	default:
		p.send(s, b, seq)
		if d.dup {
			p.write(s, b)
			s.dups.Add(1)
		}
		p.flush(s)
	}
}

// flush sends a held-back packet.
func (p *pacer) flush(s *stream) {
	if len(s.held) == 0 {
		return
	}
	p.send(s, s.held, binary.BigEndian.Uint16(s.held[2:4]))
	s.held = s.held[:0]
}

// send stamps and transmits a packet carrying seq.
func (p *pacer) send(s *stream, b []byte, seq uint16) {
	now := p.m.now()
	s.stamps[seq%stampRing].Store(uint64(now)<<17 | uint64(seq))
	if s.firstNS.Load() == 0 {
		s.firstNS.Store(now)
	}
	s.lastNS.Store(now)
	s.sent.Add(1)
	p.write(s, b)
}

func (p *pacer) write(s *stream, b []byte) {
	if _, err := s.conn.WriteToUDPAddrPort(b, s.dst); err != nil {
		s.sendErr.Add(1)
	}
}
