//go:build linux

package bridge

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The epoll I/O engine (media.io: epoll). A few workers each run an epoll
// loop over the sockets of the calls assigned to them, the way C relays do.
// Per ready socket a worker reads up to batchSize datagrams with
// one recvmmsg, handles each exactly as Leg.readRTP / Leg.readRTCP do, sends
// the relayed datagrams with one sendmmsg per destination socket (sendto
// when there is just one), and only then shows the packets to the taps.
// Compared with a goroutine per socket on Go's netpoller, one wakeup serves
// every socket ready at the time instead of one goroutine switch each, no
// read ends in EAGAIN before a park, and a burst on one socket costs two
// syscalls per 16 datagrams instead of two per datagram.
//
// A worker is a goroutine, not a locked OS thread blocked in epoll_wait: a
// blocking syscall keeps its P in syscall state until sysmon retakes it
// (20 us to 10 ms), which starved the rest of the process; that first
// version cost 48 us of CPU per packet in BenchmarkRelay against 11 us for
// the goroutine engine on a 2-core machine. Instead the worker's epoll fd
// is itself registered with Go's netpoller (an epoll fd is pollable): the
// worker polls it with timeout 0 and parks on the netpoller when nothing is
// ready. Every syscall the worker makes is non-blocking.
//
// A call's four sockets belong to one worker, so the per-leg relay state
// (SSRC tracking, cached destination sockaddrs) is touched by one thread
// only. The socket table, the epoll set and the batch buffers are owned by
// the worker; other goroutines talk to it through a control queue and an
// eventfd, and wait for its answer. That handshake is what lets Call.Close
// promise that no tap callback runs after it returns: a worker applies
// control requests only between batches.

const (
	ioSupported = true
	defaultIO   = "epoll" // media.io default: see BenchmarkRelayProc
)

const (
	batchSize = 16  // datagrams per recvmmsg, and at most as many per sendmmsg
	maxEvents = 128 // ready sockets per epoll_wait
	ctlSlot   = 0   // epoll token of the control eventfd; sockets use 1..
)

// ioLoop is the set of epoll workers of an engine. Workers start with the
// first call and stop when the last call closes (or in Engine.Close), so,
// as with the goroutine engine, an engine without calls runs no goroutine.
type ioLoop struct {
	n   int
	log *slog.Logger

	mu      sync.Mutex
	workers []*ioWorker
	calls   int // attached calls not yet detached
	next    int
}

func newIOLoop(workers int, log *slog.Logger) *ioLoop {
	return &ioLoop{n: workers, log: log}
}

// attach takes a new call's sockets away from Go's netpoller and registers
// them with a worker. On error the caller closes the call (Call.Close copes
// with any state attach left behind).
func (lp *ioLoop) attach(c *Call) error {
	lc, err := newLoopCall(c)
	if err != nil {
		return err
	}
	c.io = lc // the call owns the raw fds from here on
	w, err := lp.acquire()
	if err != nil {
		return err
	}
	lc.loop, lc.w = lp, w
	return w.submit(loopOp{kind: opAdd, lc: lc})
}

// acquire counts a new call and returns its worker, starting the workers
// if needed.
func (lp *ioLoop) acquire() (*ioWorker, error) {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	if lp.workers == nil {
		ws := make([]*ioWorker, 0, lp.n)
		for range lp.n {
			w, err := newIOWorker(lp.log)
			if err != nil {
				for _, w := range ws {
					w.closeFDs()
				}
				return nil, err
			}
			ws = append(ws, w)
		}
		for _, w := range ws {
			go func() { defer close(w.done); w.run() }()
		}
		lp.workers = ws
	}
	lp.calls++
	w := lp.workers[lp.next%len(lp.workers)]
	lp.next++
	return w, nil
}

// release uncounts a detached call and stops the workers after the last.
func (lp *ioLoop) release() {
	lp.mu.Lock()
	lp.calls--
	var ws []*ioWorker
	if lp.calls == 0 {
		ws, lp.workers = lp.workers, nil
	}
	lp.mu.Unlock()
	stopWorkers(ws)
}

// stop ends the workers and waits for them (Engine.Close). Calls still
// registered stop relaying; their Close still works.
func (lp *ioLoop) stop() {
	lp.mu.Lock()
	ws := lp.workers
	lp.workers = nil
	lp.mu.Unlock()
	stopWorkers(ws)
}

func stopWorkers(ws []*ioWorker) {
	for _, w := range ws {
		w.submit(loopOp{kind: opStop})
	}
	for _, w := range ws {
		<-w.done
	}
}

// loopCall is a call's registration with a worker.
type loopCall struct {
	c     *Call
	loop  *ioLoop
	w     *ioWorker
	socks [4]loopSock // [side*2]: RTP socket, [side*2+1]: RTCP socket

	// Worker-owned relay state, per side.
	lastSSRC [2]uint32
	haveSSRC [2]bool
	dst      [2]dstCache // where packets for side s's party go

	once     sync.Once
	closeErr error
}

// loopSock is one registered socket.
type loopSock struct {
	lc     *loopCall
	leg    *Leg
	fd     int
	family int // AF_INET or AF_INET6
	rtcp   bool
	slot   int32 // epoll token while registered, else 0
	fails  int   // consecutive read errors
}

// dstCache holds the sockaddrs of a party's peer value, rebuilt when
// setRemote swaps the peer. Keeping the pointer keeps the old value alive,
// so a new peer can never reuse its address.
type dstCache struct {
	p         *peer
	rtp, rtcp sockaddr
}

// sockaddr is a destination in kernel form.
type sockaddr struct {
	raw unix.RawSockaddrInet6 // large enough for either family
	len uint32
	bad bool // unusable on the socket's family: sending counts a send error
}

// newLoopCall duplicates the legs' socket fds and closes the *net.UDPConn
// values, which removes them from Go's netpoller (which would otherwise wake
// for every datagram) while the duplicates keep the ports bound.
func newLoopCall(c *Call) (*loopCall, error) {
	lc := &loopCall{c: c}
	for i := range lc.socks {
		lc.socks[i].fd = -1
	}
	for s, l := range c.legs {
		for k, conn := range []*net.UDPConn{l.rtp, l.rtcp} {
			fd, fam, err := dupSocket(conn)
			if err != nil {
				lc.closeFDs()
				return nil, fmt.Errorf("media io: take %s socket of leg %s: %w", [2]string{"rtp", "rtcp"}[k], l.side, err)
			}
			lc.socks[s*2+k] = loopSock{lc: lc, leg: l, fd: fd, family: fam, rtcp: k == 1}
		}
	}
	for _, l := range c.legs {
		l.rtp.Close()
		l.rtcp.Close()
	}
	return lc, nil
}

func dupSocket(conn *net.UDPConn) (fd, family int, err error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return -1, 0, err
	}
	fd = -1
	var opErr error
	if err := rc.Control(func(orig uintptr) {
		fd, opErr = unix.FcntlInt(orig, unix.F_DUPFD_CLOEXEC, 0)
		if opErr == nil {
			family, opErr = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
		}
	}); err != nil {
		opErr = err
	}
	if opErr != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return -1, 0, opErr
	}
	// The descriptor shares O_NONBLOCK with the original: sends never block.
	return fd, family, nil
}

func (lc *loopCall) closeFDs() error {
	var errs []error
	for i := range lc.socks {
		if fd := lc.socks[i].fd; fd >= 0 {
			errs = append(errs, unix.Close(fd))
			lc.socks[i].fd = -1
		}
	}
	return errors.Join(errs...)
}

// detach removes the call's sockets from its worker, waits until the worker
// has dropped them (so no tap callback of the call is running or will run),
// then closes them. Call.Close calls it once.
func (lc *loopCall) detach() error {
	lc.once.Do(func() {
		if lc.w != nil {
			lc.w.submit(loopOp{kind: opRemove, lc: lc})
			lc.loop.release()
		}
		lc.closeErr = lc.closeFDs()
	})
	return lc.closeErr
}

type opKind uint8

const (
	opAdd opKind = iota + 1
	opRemove
	opStop
)

type loopOp struct {
	kind opKind
	lc   *loopCall
	done chan error
}

// mmsghdr is struct mmsghdr (recvmmsg(2)).
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

// sendItem is a datagram of the current batch queued for sending.
type sendItem struct {
	fd       int
	from, to *Leg // from counts send errors, to counts what was sent
	rtcp     bool
	n        int
}

// ioWorker is one epoll loop.
type ioWorker struct {
	log  *slog.Logger
	done chan struct{} // closed when run returns
	epfd int
	ep   *os.File // epfd, registered with Go's netpoller
	rc   syscall.RawConn
	evfd int

	mu      sync.Mutex // guards ops and stopped
	ops     []loopOp
	stopped bool

	// Owned by the worker goroutine.
	socks  []*loopSock // by epoll token; [ctlSlot] unused
	free   []int32
	events [maxEvents]unix.EpollEvent
	ctlBuf [8]byte

	bufs  [batchSize][readBufSize]byte
	names [batchSize]unix.RawSockaddrInet6
	iov   [batchSize]unix.Iovec
	stamp [batchSize]stampBuf // SCM_TIMESTAMPNS of message i
	msgs  [batchSize]mmsghdr
	pkts  [batchSize]Packet
	tap   [batchSize]bool // message i is a valid RTP packet the taps should see
	// dec[i] holds message i decrypted on an SRTP leg: the taps run after
	// the batch's sends, which still read the encrypted bufs[i].
	dec [batchSize][readBufSize]byte

	out     [batchSize]sendItem
	nout    int
	sendIov [batchSize]unix.Iovec
	sendMsg [batchSize]mmsghdr
}

func newIOWorker(log *slog.Logger) (*ioWorker, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("media io: epoll_create1: %w", err)
	}
	evfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("media io: eventfd: %w", err)
	}
	w := &ioWorker{log: log, done: make(chan struct{}), epfd: epfd, evfd: evfd, socks: make([]*loopSock, 1, 64)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: ctlSlot}); err != nil {
		w.closeFDs()
		return nil, fmt.Errorf("media io: epoll_ctl: %w", err)
	}
	// Non-blocking, so os.NewFile registers it with the netpoller.
	if err := unix.SetNonblock(epfd, true); err != nil {
		w.closeFDs()
		return nil, fmt.Errorf("media io: epoll fd: %w", err)
	}
	w.ep = os.NewFile(uintptr(epfd), "epoll")
	if w.rc, err = w.ep.SyscallConn(); err != nil {
		w.closeFDs()
		return nil, fmt.Errorf("media io: epoll fd: %w", err)
	}
	for i := range w.msgs {
		w.iov[i].Base = &w.bufs[i][0]
		w.iov[i].SetLen(readBufSize)
		w.msgs[i].hdr.Name = (*byte)(unsafe.Pointer(&w.names[i]))
		w.msgs[i].hdr.Iov = &w.iov[i]
		w.msgs[i].hdr.SetIovlen(1)
		w.msgs[i].hdr.Control = (*byte)(unsafe.Pointer(&w.stamp[i][0]))
		w.sendMsg[i].hdr.Iov = &w.sendIov[i]
		w.sendMsg[i].hdr.SetIovlen(1)
	}
	return w, nil
}

func (w *ioWorker) closeFDs() {
	unix.Close(w.evfd)
	if w.ep != nil {
		w.ep.Close()
	} else {
		unix.Close(w.epfd)
	}
}

// submit hands an operation to the worker and waits for it to be applied.
// It must not be called from the worker itself (a tap callback).
func (w *ioWorker) submit(op loopOp) error {
	op.done = make(chan error, 1)
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		if op.kind == opAdd {
			return fmt.Errorf("media io: %w", ErrClosed)
		}
		return nil
	}
	w.ops = append(w.ops, op)
	one := [8]byte{1}
	_, err := unix.Write(w.evfd, one[:]) // EAGAIN only if the counter is saturated: already signalled
	w.mu.Unlock()
	if err != nil && err != unix.EAGAIN {
		return fmt.Errorf("media io: wake worker: %w", err)
	}
	return <-op.done
}

// run is the worker's loop: RawConn.Read calls poll whenever the netpoller
// reports the epoll fd readable, until poll returns true (stop).
func (w *ioWorker) run() {
	defer w.shutdown()
	if err := w.rc.Read(w.poll); err != nil {
		w.log.Error("media io: worker stops", "err", err)
	}
}

// poll serves ready sockets until none is known to be ready; false means
// park until the netpoller reports the epoll fd again.
//
// It parks without a final empty epoll_wait when every ready socket was
// drained (recvmmsg returned less than a full batch) and epoll_wait
// reported fewer than maxEvents: a datagram that arrives later wakes the
// epoll fd's pollers, so the netpoller sees it.
func (w *ioWorker) poll(epfd uintptr) bool {
	for {
		r, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, epfd, uintptr(unsafe.Pointer(&w.events[0])), maxEvents, 0, 0, 0)
		if errno != 0 {
			if errno == unix.EINTR {
				continue
			}
			w.log.Error("media io: epoll_wait failed, worker stops", "err", errno)
			return true
		}
		n := int(r)
		if n == 0 {
			return false
		}
		more := n == maxEvents
		ctl := false
		for i := range n {
			slot := w.events[i].Fd
			if slot == ctlSlot {
				ctl = true
				continue
			}
			if s := w.socks[slot]; s != nil && w.serve(s) {
				more = true
			}
		}
		// Control requests are applied only here, between batches: a
		// removed call's sockets then never show up in a later event.
		if ctl {
			if !w.control() {
				return true
			}
			more = true
		}
		if !more {
			return false
		}
	}
}

// control applies queued operations; false means stop.
func (w *ioWorker) control() bool {
	unix.Read(w.evfd, w.ctlBuf[:])
	w.mu.Lock()
	ops := w.ops
	w.ops = nil
	w.mu.Unlock()
	keep := true
	for _, op := range ops {
		switch op.kind {
		case opAdd:
			op.done <- w.add(op.lc)
		case opRemove:
			w.remove(op.lc)
			op.done <- nil
		case opStop:
			keep = false
			op.done <- nil
		}
	}
	return keep
}

// shutdown refuses further operations, answers queued ones and releases
// the worker's descriptors. Registered sockets stay open: their calls'
// Close closes them.
func (w *ioWorker) shutdown() {
	w.mu.Lock()
	w.stopped = true
	ops := w.ops
	w.ops = nil
	w.mu.Unlock()
	for _, op := range ops {
		if op.kind == opAdd {
			op.done <- fmt.Errorf("media io: %w", ErrClosed)
		} else {
			op.done <- nil
		}
	}
	for _, s := range w.socks {
		if s != nil {
			s.slot = 0
		}
	}
	w.closeFDs()
}

func (w *ioWorker) add(lc *loopCall) error {
	for i := range lc.socks {
		s := &lc.socks[i]
		var slot int32
		if k := len(w.free); k > 0 {
			slot, w.free = w.free[k-1], w.free[:k-1]
		} else {
			slot = int32(len(w.socks))
			w.socks = append(w.socks, nil)
		}
		if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, s.fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: slot}); err != nil {
			w.free = append(w.free, slot)
			w.remove(lc)
			return fmt.Errorf("media io: epoll_ctl add: %w", err)
		}
		s.slot = slot
		w.socks[slot] = s
	}
	return nil
}

func (w *ioWorker) remove(lc *loopCall) {
	for i := range lc.socks {
		w.drop(&lc.socks[i])
	}
}

func (w *ioWorker) drop(s *loopSock) {
	if s.slot == 0 {
		return
	}
	unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, s.fd, nil)
	w.socks[s.slot] = nil
	w.free = append(w.free, s.slot)
	s.slot = 0
}

// serve reads one batch from a ready socket, relays it and shows it to the
// taps. Level-triggered epoll reports the socket again if more is queued;
// the result says whether the batch was full (more may be queued).
func (w *ioWorker) serve(s *loopSock) bool {
	for i := range w.msgs {
		w.msgs[i].hdr.Namelen = unix.SizeofSockaddrInet6
		w.msgs[i].hdr.SetControllen(len(w.stamp[i].bytes()))
		w.msgs[i].hdr.Flags = 0
	}
	var r uintptr
	var errno syscall.Errno
	for {
		r, _, errno = unix.RawSyscall6(unix.SYS_RECVMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&w.msgs[0])), batchSize, unix.MSG_DONTWAIT, 0, 0)
		if errno != unix.EINTR {
			break
		}
	}
	if errno != 0 {
		if errno != unix.EAGAIN {
			w.readError(s, errno)
		}
		return false
	}
	s.fails = 0
	k := int(r)
	now := time.Now() // arrivals are the kernel's stamps, converted against this
	lc := s.lc
	l := s.leg
	out := lc.c.legs[l.side.Other()]
	if s.rtcp {
		for i := range k {
			w.tap[i] = false
			p := l.peer.Load()
			if p == nil || (!fromPeer(&w.names[i], p.rtcp) && !fromPeer(&w.names[i], p.rtp)) {
				l.C.DroppedSource.Add(1)
				continue
			}
			n := int(w.msgs[i].n)
			if n >= readBufSize {
				l.C.Oversize.Add(1)
				continue
			}
			w.queueRTCP(lc, l, out, i, n)
		}
		w.flush()
		return k == batchSize
	}
	// The steps of Leg.readRTP, sends queued instead of made.
	for i := range k {
		w.tap[i] = false
		p := l.peer.Load()
		if p == nil || !fromPeer(&w.names[i], p.rtp) {
			l.C.DroppedSource.Add(1)
			continue
		}
		n := int(w.msgs[i].n)
		if n >= readBufSize {
			l.C.Oversize.Add(1)
			continue
		}
		b := w.bufs[i][:n]
		if p.mux && isRTCP(b) {
			// SRTCP too: passed through unauthenticated (see srtp.go).
			w.queueRTCP(lc, l, out, i, n)
			continue
		}
		pkt := &w.pkts[i]
		if p.srtp != nil {
			if !l.openSRTP(p.srtp, b, w.dec[i][:], pkt) {
				continue
			}
		} else if err := parseRTP(b, pkt); err != nil {
			l.C.Malformed.Add(1)
			continue
		}
		if !l.latched.Load() {
			l.latched.Store(true)
		}
		l.C.PacketsIn.Add(1)
		l.C.BytesIn.Add(uint64(n))
		w.tap[i] = true
		op := out.peer.Load()
		if op == nil || op.rtp.Port() == 0 || op.rtp.Addr().IsUnspecified() {
			l.C.NoDestination.Add(1)
			continue
		}
		d := w.dest(lc, out, op)
		w.queue(lc.socks[out.side*2].fd, &d.rtp, l, out, false, i, n)
	}
	w.flush()
	// Taps after the sends, as in readRTP.
	c := lc.c
	side := l.side
	dir := Direction(side)
	for i := range k {
		if !w.tap[i] {
			continue
		}
		pkt := &w.pkts[i]
		taps := c.taps.Load()
		if len(*taps) == 0 && lc.haveSSRC[side] && pkt.Header.SSRC == lc.lastSSRC[side] {
			continue
		}
		pkt.Arrival = c.arrival(now, kernelStamp(&w.stamp[i], int(w.msgs[i].hdr.Controllen)))
		if !lc.haveSSRC[side] || pkt.Header.SSRC != lc.lastSSRC[side] {
			if lc.haveSSRC[side] {
				c.ssrcChanged(side, pkt.Arrival)
			}
			lc.haveSSRC[side], lc.lastSSRC[side] = true, pkt.Header.SSRC
		}
		for _, t := range *taps {
			t.RTP(dir, pkt)
		}
	}
	return k == batchSize
}

// readError counts a socket error like the read goroutines do: logged
// once, then every tenth; after errorBudget in a row the socket is dropped
// from the loop (the goroutine engine's read loop returns).
func (w *ioWorker) readError(s *loopSock, errno syscall.Errno) {
	c := s.lc.c
	if c.closing.Load() {
		return
	}
	kind := "rtp"
	if s.rtcp {
		kind = "rtcp"
	}
	s.fails++
	if !s.rtcp && (s.fails == 1 || s.fails%10 == 0) {
		c.log.Warn(kind+" read error", "leg", s.leg.side.String(), "err", errno, "consecutive", s.fails)
	}
	if s.fails >= errorBudget {
		c.log.Error(kind+" read loop giving up", "leg", s.leg.side.String(), "err", errno)
		w.drop(s)
	}
}

// queueRTCP is Leg.relayRTCP with the send queued.
func (w *ioWorker) queueRTCP(lc *loopCall, l, out *Leg, i, n int) {
	b := w.bufs[i][:n]
	if len(b) < 8 || b[0]>>6 != 2 {
		l.C.Malformed.Add(1)
		return
	}
	l.C.RTCPIn.Add(1)
	op := out.peer.Load()
	if op == nil || op.rtp.Port() == 0 {
		l.C.NoDestination.Add(1)
		return
	}
	d := w.dest(lc, out, op)
	fd, sa := lc.socks[out.side*2+1].fd, &d.rtcp
	if op.mux {
		fd, sa = lc.socks[out.side*2].fd, &d.rtp
	}
	w.queue(fd, sa, l, out, true, i, n)
}

// dest returns the sockaddrs of out's current peer, rebuilding them when
// the peer changed. Queued sends point into the cache, so they go first.
func (w *ioWorker) dest(lc *loopCall, out *Leg, op *peer) *dstCache {
	d := &lc.dst[out.side]
	if d.p != op {
		w.flush()
		fam := lc.socks[out.side*2].family
		d.p = op
		d.rtp.set(fam, op.rtp)
		d.rtcp.set(fam, op.rtcp)
	}
	return d
}

func (w *ioWorker) queue(fd int, sa *sockaddr, from, to *Leg, rtcp bool, i, n int) {
	if sa.bad {
		from.C.SendErrors.Add(1)
		return
	}
	// Counted when queued, so a packet its receiver already holds is always
	// in the counters; a failed send takes it back out (sent).
	if rtcp {
		to.C.RTCPOut.Add(1)
	} else {
		to.C.PacketsOut.Add(1)
		to.C.BytesOut.Add(uint64(n))
	}
	j := w.nout
	w.nout++
	w.out[j] = sendItem{fd: fd, from: from, to: to, rtcp: rtcp, n: n}
	w.sendIov[j].Base = &w.bufs[i][0]
	w.sendIov[j].SetLen(n)
	w.sendMsg[j].hdr.Name = (*byte)(unsafe.Pointer(&sa.raw))
	w.sendMsg[j].hdr.Namelen = sa.len
}

// flush sends the queued datagrams: one sendmmsg per run of datagrams for
// the same socket, sendto for a run of one.
func (w *ioWorker) flush() {
	for i := 0; i < w.nout; {
		j := i + 1
		for j < w.nout && w.out[j].fd == w.out[i].fd {
			j++
		}
		w.send(i, j)
		i = j
	}
	w.nout = 0
}

func (w *ioWorker) send(i, j int) {
	fd := uintptr(w.out[i].fd)
	for i < j {
		if j-i == 1 {
			m := &w.sendMsg[i].hdr
			var errno syscall.Errno
			for {
				_, _, errno = unix.RawSyscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(w.sendIov[i].Base)), uintptr(w.sendIov[i].Len), 0, uintptr(unsafe.Pointer(m.Name)), uintptr(m.Namelen))
				if errno != unix.EINTR {
					break
				}
			}
			w.sent(i, errno == 0)
			return
		}
		r, _, errno := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&w.sendMsg[i])), uintptr(j-i), 0, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 || r == 0 {
			// The first unsent datagram failed; go on with the rest.
			w.sent(i, false)
			i++
			continue
		}
		for k := i; k < i+int(r); k++ {
			w.sent(k, true)
		}
		i += int(r)
	}
}

// sent settles a queued datagram: a failure is a send error and no
// longer counts as sent.
func (w *ioWorker) sent(i int, ok bool) {
	if ok {
		return
	}
	it := &w.out[i]
	it.from.C.SendErrors.Add(1)
	if it.rtcp {
		it.to.C.RTCPOut.Add(^uint64(0))
	} else {
		it.to.C.PacketsOut.Add(^uint64(0))
		it.to.C.BytesOut.Add(^uint64(it.n - 1))
	}
}

// set encodes ap for a socket of the given family the way
// UDPConn.WriteToUDPAddrPort does: an AF_INET socket takes IPv4 and
// IPv4-mapped addresses, an AF_INET6 socket any address (IPv4 mapped).
func (s *sockaddr) set(family int, ap netip.AddrPort) {
	*s = sockaddr{}
	a := ap.Addr()
	switch {
	case !ap.IsValid():
		s.bad = true
	case family == unix.AF_INET:
		if !a.Is4() && !a.Is4In6() {
			s.bad = true
			return
		}
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&s.raw))
		sa.Family = unix.AF_INET
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], ap.Port())
		sa.Addr = a.As4()
		s.len = unix.SizeofSockaddrInet4
	case family == unix.AF_INET6:
		s.raw.Family = unix.AF_INET6
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&s.raw.Port))[:], ap.Port())
		s.raw.Addr = a.As16()
		s.raw.Scope_id = zoneIndex(a.Zone())
		s.len = unix.SizeofSockaddrInet6
	default:
		s.bad = true
	}
}

// fromPeer reports whether a received source address equals want, with
// the semantics of comparing ReadFromUDPAddrPort's result to want: an
// AF_INET source is a 4-byte address, an AF_INET6 one a 16-byte address
// with its zone. It does not allocate except for a source with a scope id
// (link-local IPv6), which needs the interface name.
func fromPeer(sa *unix.RawSockaddrInet6, want netip.AddrPort) bool {
	a := want.Addr()
	switch sa.Family {
	case unix.AF_INET:
		s4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return a.Is4() && want.Port() == binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&s4.Port))[:]) && a.As4() == s4.Addr
	case unix.AF_INET6:
		if !a.Is6() || want.Port() != binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:]) || a.As16() != sa.Addr {
			return false
		}
		if sa.Scope_id == 0 {
			return a.Zone() == ""
		}
		return a.Zone() == zoneName(sa.Scope_id)
	}
	return false
}

// zoneName and zoneIndex map IPv6 zones as package net does: interface
// name if known, else the decimal index.
func zoneName(idx uint32) string {
	if ifi, err := net.InterfaceByIndex(int(idx)); err == nil {
		return ifi.Name
	}
	return strconv.FormatUint(uint64(idx), 10)
}

func zoneIndex(zone string) uint32 {
	if zone == "" {
		return 0
	}
	if ifi, err := net.InterfaceByName(zone); err == nil {
		return uint32(ifi.Index)
	}
	n, _ := strconv.ParseUint(zone, 10, 32)
	return uint32(n)
}
