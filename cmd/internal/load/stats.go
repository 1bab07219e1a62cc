package load

import (
	"math"
	"math/bits"
	"sync/atomic"
)

// Histogram counts non-negative durations in microseconds in log-linear
// buckets: exact below 64 µs, then 64 buckets per power of two (relative
// error under 1.6 %). Record is lock-free and allocation-free; any number of
// goroutines may record while another takes a Snapshot.
type Histogram struct {
	counts [histBuckets]atomic.Uint64
	n      atomic.Uint64
	sum    atomic.Uint64
	max    atomic.Uint64
}

const (
	histSub     = 64
	histBuckets = histSub + 42*histSub // up to 2^48 µs
)

func bucketOf(us uint64) int {
	if us < histSub {
		return int(us)
	}
	shift := bits.Len64(us) - 7 // us>>shift in [64, 128)
	i := histSub + shift*histSub + int(us>>uint(shift)) - histSub
	return min(i, histBuckets-1)
}

// bucketRange returns the smallest and largest value of bucket i.
func bucketRange(i int) (lo, hi uint64) {
	if i < histSub {
		return uint64(i), uint64(i)
	}
	shift := uint((i - histSub) / histSub)
	m := uint64((i-histSub)%histSub + histSub)
	return m << shift, (m+1)<<shift - 1
}

// Record adds one value in microseconds (negative values count as 0).
func (h *Histogram) Record(us int64) {
	if us < 0 {
		us = 0
	}
	v := uint64(us)
	h.counts[bucketOf(v)].Add(1)
	h.n.Add(1)
	h.sum.Add(v)
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			return
		}
	}
}

// Count returns the number of values recorded.
func (h *Histogram) Count() uint64 { return h.n.Load() }

// MaxUS returns the largest value recorded.
func (h *Histogram) MaxUS() uint64 { return h.max.Load() }

// Snapshot copies the bucket counts.
func (h *Histogram) Snapshot() HistSnapshot {
	s := HistSnapshot{Counts: make([]uint64, histBuckets), Max: h.max.Load(), Sum: h.sum.Load()}
	for i := range h.counts {
		c := h.counts[i].Load()
		s.Counts[i] = c
		s.N += c
	}
	return s
}

// HistSnapshot is a copy of a Histogram's counts, for percentiles and for
// the difference between two moments.
type HistSnapshot struct {
	Counts []uint64
	N      uint64
	Sum    uint64
	Max    uint64 // over the whole life of the histogram, not the difference
}

// Sub returns the values recorded between old and s.
func (s HistSnapshot) Sub(old HistSnapshot) HistSnapshot {
	d := HistSnapshot{Counts: make([]uint64, len(s.Counts)), Max: s.Max, Sum: s.Sum - old.Sum}
	for i := range s.Counts {
		var o uint64
		if i < len(old.Counts) {
			o = old.Counts[i]
		}
		d.Counts[i] = s.Counts[i] - o
		d.N += d.Counts[i]
	}
	return d
}

// Quantile returns the value (µs) at quantile q in [0, 1]: the middle of
// the bucket holding the ceil(q*N)-th value, capped by Max; 0 when empty.
func (s HistSnapshot) Quantile(q float64) float64 {
	if s.N == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(s.N)))
	rank = max(rank, 1)
	var seen uint64
	for i, c := range s.Counts {
		seen += c
		if seen >= rank {
			lo, hi := bucketRange(i)
			v := float64(lo+hi) / 2
			if s.Max > 0 && v > float64(s.Max) {
				v = float64(s.Max)
			}
			return v
		}
	}
	return float64(s.Max)
}

// QuantileMS is Quantile in milliseconds, rounded to microseconds.
func (s HistSnapshot) QuantileMS(q float64) float64 { return roundMS(s.Quantile(q)) }

func roundMS(us float64) float64 { return math.Round(us) / 1000 }

// Buckets returns (upper bound µs, count) pairs for the non-empty range of
// the histogram, merged into at most n bars of roughly equal log width, for
// the HTML latency histogram.
func (s HistSnapshot) Buckets(n int) (upper []float64, count []uint64) {
	first, last := -1, -1
	for i, c := range s.Counts {
		if c > 0 {
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	if first < 0 || n <= 0 {
		return nil, nil
	}
	span := last - first + 1
	per := (span + n - 1) / n
	for i := first; i <= last; i += per {
		var c uint64
		end := min(i+per, last+1)
		for j := i; j < end; j++ {
			c += s.Counts[j]
		}
		_, hi := bucketRange(end - 1)
		upper = append(upper, float64(hi))
		count = append(count, c)
	}
	return upper, count
}

// jitterState is the RFC 3550 appendix A.8 interarrival jitter estimator of
// one received stream, in RTP timestamp units scaled by 16 (the RFC's
// integer form: J += |D| - J/16).
type jitterState struct {
	lastTransit atomic.Int64
	have        atomic.Bool
	j16         atomic.Int64
}

// update feeds one packet: arrival in RTP clock units, ts its RTP timestamp.
func (j *jitterState) update(arrival int64, ts uint32) {
	transit := arrival - int64(ts)
	if !j.have.Load() {
		j.lastTransit.Store(transit)
		j.have.Store(true)
		return
	}
	d := transit - j.lastTransit.Swap(transit)
	// RTP timestamps wrap at 2^32: keep d in the signed 32-bit range.
	d = int64(int32(d))
	if d < 0 {
		d = -d
	}
	cur := j.j16.Load()
	j.j16.Store(cur + d - (cur+8)>>4)
}

// value returns the jitter in RTP timestamp units.
func (j *jitterState) value() float64 { return float64(j.j16.Load()) / 16 }

func (j *jitterState) reset() {
	j.have.Store(false)
	j.j16.Store(0)
	j.lastTransit.Store(0)
}
