package recorder

import (
	"sync/atomic"

	"github.com/pion/rtp"
)

// maxPayload is the largest RTP payload the recorder keeps: 60 ms of G.711
// or G.722. Larger payloads are discarded and counted.
const maxPayload = 480

// qpkt is one queued packet: the header fields the recorder uses and a copy
// of the payload.
type qpkt struct {
	arrival int64
	ts      uint32
	ssrc    uint32
	sn      uint16
	pt      uint8
	n       uint16
	payload [maxPayload]byte
}

type qslot struct {
	seq atomic.Uint64
	pkt qpkt
}

// queue is a bounded lock-free queue with preallocated slots (D. Vyukov's
// bounded MPMC design used here with one consumer). push never blocks and
// never allocates; it reports false when the queue is full.
type queue struct {
	slots []qslot
	mask  uint64
	_     [56]byte // keep the producer's counter off the slots' cache line
	enq   atomic.Uint64
	_     [56]byte
	deq   atomic.Uint64 // written only by the consumer
}

func newQueue(n int) *queue {
	size := 1
	for size < n {
		size <<= 1
	}
	q := &queue{slots: make([]qslot, size), mask: uint64(size - 1)}
	for i := range q.slots {
		q.slots[i].seq.Store(uint64(i))
	}
	return q
}

func (q *queue) push(h *rtp.Header, payload []byte, arrival int64) bool {
	pos := q.enq.Load()
	for {
		s := &q.slots[pos&q.mask]
		seq := s.seq.Load()
		switch d := int64(seq - pos); {
		case d == 0:
			if q.enq.CompareAndSwap(pos, pos+1) {
				p := &s.pkt
				p.arrival, p.ts, p.ssrc, p.sn, p.pt = arrival, h.Timestamp, h.SSRC, h.SequenceNumber, h.PayloadType
				p.n = uint16(copy(p.payload[:], payload))
				s.seq.Store(pos + 1)
				return true
			}
			pos = q.enq.Load()
		case d < 0:
			return false // full
		default:
			pos = q.enq.Load()
		}
	}
}

// fill returns an estimate of the queued packets.
func (q *queue) fill() uint64 { return q.enq.Load() - q.deq.Load() }

// peek returns the oldest packet, or nil when empty. Consumer only.
func (q *queue) peek() *qpkt {
	pos := q.deq.Load()
	s := &q.slots[pos&q.mask]
	if s.seq.Load() != pos+1 {
		return nil
	}
	return &s.pkt
}

// pop releases the packet peek returned. Consumer only.
func (q *queue) pop() {
	pos := q.deq.Load()
	q.slots[pos&q.mask].seq.Store(pos + q.mask + 1)
	q.deq.Store(pos + 1)
}
