package codec

import (
	"errors"
	"fmt"
	"math"
)

// ErrRate is returned for a sample rate outside MinRate..MaxRate.
var ErrRate = errors.New("invalid sample rate")

// The sample rates a resampler accepts, in Hz. The bounds keep the filter
// (whose length grows with the ratio of the rates) to a sane size when a rate
// comes from a file header.
const (
	MinRate = 1000
	MaxRate = 384000
)

// Resampling is band-limited interpolation with a Kaiser-windowed sinc low-pass
// evaluated as a polyphase filter bank: for a rate change by L/M (the
// reduced ratio toRate/fromRate) output sample i lies at input time i*M/L and
// is a dot product of the nearby input samples with one of L precomputed
// phases of the filter.
//
// The low-pass cuts at the lower rate's Nyquist frequency: its stopband
// (attenuation of about 80 dB) starts there and its passband ends about 7%
// below it (3.7 kHz for 8 kHz, 7.4 kHz for 16 kHz), so 44.1 kHz prompts
// converted to 8 kHz do not fold their upper band into the telephone band.
const (
	rsZeroCrossings = 32   // sinc zero crossings on each side of the centre
	rsKaiserBeta    = 8.0  // about 80 dB stopband attenuation
	rsCutoff        = 0.46 // -6 dB point as a fraction of the lower rate
	rsChunk         = 1024 // input samples buffered per step
	rsMaxTable      = 1 << 20
)

// Resampler converts a stream of mono 16-bit PCM from one sample rate to
// another, keeping filter state across calls to Process. Its output lags its
// input by Delay output samples (the filter's look-ahead); in exchange each
// call returns all the output its input allows, so converting 8 kHz to 16 kHz
// turns every 160-sample frame into exactly 320 samples and 16 kHz to 8 kHz
// turns 320 into 160. A Resampler is not safe for concurrent use.
type Resampler struct {
	from, to int
	l, m     int // toRate/fromRate = l/m, reduced
	half     int // taps on each side of an output's position
	prefill  int // zeros the buffer starts with (sets the delay)
	fc       float64
	coef     []float32 // l phases of 2*half taps; nil for very large l
	scratch  []float32 // taps computed on the fly when coef is nil
	buf      []float32 // history and buffered input
	n        int       // valid samples in buf
	base     int       // index in buf of the integer part of the next output time
	phase    int       // fractional part of the next output time, in 1/l
}

// NewResampler returns a streaming resampler from fromRate to toRate (Hz).
// Equal rates pass samples through unchanged. Rates must lie within
// MinRate..MaxRate. Usual pairs (8, 16, 22.05, 44.1, 48 kHz) precompute their
// filter phases; pairs whose reduced ratio needs more than about a million
// coefficients (say 44101 Hz) compute them per output sample, which is
// correct but some hundred times slower.
func NewResampler(fromRate, toRate int) (*Resampler, error) {
	r, err := newResampler(fromRate, toRate)
	if err != nil {
		return nil, err
	}
	r.prefill = 2*r.half - 1 // delay of half input samples
	r.Reset()
	return r, nil
}

func newResampler(from, to int) (*Resampler, error) {
	if from < MinRate || to < MinRate || from > MaxRate || to > MaxRate {
		return nil, fmt.Errorf("resample %d Hz to %d Hz: %w", from, to, ErrRate)
	}
	g := gcd(from, to)
	r := &Resampler{from: from, to: to, l: to / g, m: from / g}
	if from == to {
		return r, nil
	}
	// Cut-off in cycles per input sample and the window's half-width T
	// (input samples) holding rsZeroCrossings zero crossings of the sinc.
	r.fc = rsCutoff * float64(min(from, to)) / float64(from)
	t := rsZeroCrossings / (2 * r.fc)
	r.half = int(math.Ceil(t)) + 1
	// With a small m a half-width that is a multiple of m makes the delay a
	// whole number of output samples (16 kHz to 8 kHz: m = 2).
	if r.m > 1 && r.m <= 64 {
		r.half = (r.half + r.m - 1) / r.m * r.m
	}
	taps := 2 * r.half
	if r.l*taps <= rsMaxTable {
		r.coef = make([]float32, r.l*taps)
		for p := range r.l {
			r.fillTaps(r.coef[p*taps:(p+1)*taps], p)
		}
	} else {
		r.scratch = make([]float32, taps)
	}
	r.buf = make([]float32, taps+rsChunk)
	return r, nil
}

// fillTaps computes phase p's taps: tap j weighs the input sample at offset
// x = p/l + half - 1 - j before the output's position.
func (r *Resampler) fillTaps(dst []float32, p int) {
	t := rsZeroCrossings / (2 * r.fc)
	i0b := besselI0(rsKaiserBeta)
	f := float64(p) / float64(r.l)
	for j := range dst {
		x := f + float64(r.half-1-j)
		if math.Abs(x) >= t {
			dst[j] = 0
			continue
		}
		u := 2 * r.fc * x
		s := 2 * r.fc
		if u != 0 {
			s *= math.Sin(math.Pi*u) / (math.Pi * u)
		}
		q := x / t
		w := besselI0(rsKaiserBeta*math.Sqrt(1-q*q)) / i0b
		dst[j] = float32(s * w)
	}
}

// besselI0 is the modified Bessel function of the first kind, order 0.
func besselI0(x float64) float64 {
	sum, term := 1.0, 1.0
	h := x * x / 4
	for k := 1; k < 100; k++ {
		term *= h / float64(k*k)
		sum += term
		if term < sum*1e-12 {
			break
		}
	}
	return sum
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// Reset clears the filter history, as after a gap in the stream.
func (r *Resampler) Reset() {
	if r.buf == nil {
		return
	}
	clear(r.buf)
	r.n = r.prefill
	r.base = r.half - 1
	r.phase = 0
}

// Delay returns how many output samples the output lags the input by
// (rounded down when it is not a whole number, which happens only for
// unusual rate pairs). It is 0 for equal rates.
func (r *Resampler) Delay() int {
	if r.buf == nil {
		return 0
	}
	d := r.prefill - (r.half - 1) // input samples
	return d * r.l / r.m
}

// Process appends to dst the output that src completes and returns it. It
// does not allocate when dst has room for the output (about
// len(src)*toRate/fromRate samples, plus one).
func (r *Resampler) Process(dst, src []int16) []int16 {
	if r.buf == nil {
		return append(dst, src...)
	}
	taps := 2 * r.half
	for len(src) > 0 {
		k := min(len(src), len(r.buf)-r.n)
		for i, s := range src[:k] {
			r.buf[r.n+i] = float32(s)
		}
		r.n += k
		src = src[k:]
		dst = r.run(dst, taps)
	}
	return dst
}

// feedZeros pushes n zero samples through the filter.
func (r *Resampler) feedZeros(dst []int16, n int) []int16 {
	taps := 2 * r.half
	for n > 0 {
		k := min(n, len(r.buf)-r.n)
		clear(r.buf[r.n : r.n+k])
		r.n += k
		n -= k
		dst = r.run(dst, taps)
	}
	return dst
}

// run produces every output whose taps are all buffered, then drops the
// history no later output needs.
func (r *Resampler) run(dst []int16, taps int) []int16 {
	for r.base+r.half < r.n {
		var c []float32
		if r.coef != nil {
			c = r.coef[r.phase*taps : (r.phase+1)*taps]
		} else {
			r.fillTaps(r.scratch, r.phase)
			c = r.scratch
		}
		x := r.buf[r.base-r.half+1 : r.base+r.half+1]
		x = x[:len(c)]
		var acc float32
		for j, v := range c {
			acc += v * x[j]
		}
		dst = append(dst, sat16f(float64(acc)))
		r.phase += r.m
		r.base += r.phase / r.l
		r.phase %= r.l
	}
	drop := min(r.base-r.half+1, r.n)
	if drop > 0 {
		copy(r.buf, r.buf[drop:r.n])
		r.n -= drop
		r.base -= drop
	}
	return dst
}

// Resample converts src, mono PCM at fromRate, to toRate, appends the result
// to dst and returns it. The output has ceil(len(src)*toRate/fromRate)
// samples aligned with the input (no delay): output sample i is the signal
// at input time i*fromRate/toRate, with silence assumed around src. Equal
// rates append src unchanged; a rate outside MinRate..MaxRate appends nothing.
// It allocates its filter on each call: use a Resampler for streams.
func Resample(dst, src []int16, fromRate, toRate int) []int16 {
	r, err := newResampler(fromRate, toRate)
	if err != nil {
		return dst
	}
	if r.buf == nil {
		return append(dst, src...)
	}
	r.prefill = r.half - 1 // no delay
	r.Reset()
	want := len(dst) + int((int64(len(src))*int64(r.l)+int64(r.m)-1)/int64(r.m))
	dst = r.Process(dst, src)
	dst = r.feedZeros(dst, r.half)
	if len(dst) > want { // never more than a rounding sample; kept exact
		dst = dst[:want]
	}
	return dst
}
