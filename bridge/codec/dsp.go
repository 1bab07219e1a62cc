package codec

import "math"

// Small DSP helpers used by tests across bib and by the load harness's
// fidelity checks. Levels are relative to 16-bit full scale (32768): a
// full-scale square wave has RMS 1 (0 dBFS), a full-scale sine has RMS
// 1/sqrt(2) (about -3.01 dBFS).

const fullScale = 32768.0

// MinDBFS is the floor DBFS reports (for silence), well below the 16-bit
// quantisation noise floor (about -101 dBFS).
const MinDBFS = -120.0

// Tone writes a sine wave into dst and returns the result; how many samples
// it writes depends on dst:
//   - if dst has spare capacity (len < cap) it appends cap-len samples, so
//     Tone(buf[:0], ...) fills buf's whole capacity;
//   - otherwise (len == cap, e.g. make([]int16, n)) it overwrites all of dst.
//
// Use AppendTone to give the count explicitly. amp is the peak amplitude as
// a fraction of full scale (1 gives peaks of 32767). phase, in radians, is
// where the sine starts; Tone advances it past the last sample written so
// the next call continues without a discontinuity. A nil phase starts at 0.
func Tone(dst []int16, freq float64, rate int, amp float64, phase *float64) []int16 {
	if len(dst) < cap(dst) {
		return AppendTone(dst, cap(dst)-len(dst), freq, rate, amp, phase)
	}
	return AppendTone(dst[:0], len(dst), freq, rate, amp, phase)
}

// AppendTone appends n samples of a sine of frequency freq (Hz) at sample
// rate rate to dst; amp and phase are as for Tone.
func AppendTone(dst []int16, n int, freq float64, rate int, amp float64, phase *float64) []int16 {
	var ph float64
	if phase != nil {
		ph = *phase
	}
	step := 2 * math.Pi * freq / float64(rate)
	peak := amp * 32767
	for range n {
		dst = append(dst, sat16f(peak*math.Sin(ph)))
		ph += step
		if ph >= 2*math.Pi {
			ph -= 2 * math.Pi
		}
	}
	if phase != nil {
		*phase = ph
	}
	return dst
}

// sat16f rounds v to the nearest int16, saturating.
func sat16f(v float64) int16 {
	v = math.Round(v)
	if v > 32767 {
		return 32767
	}
	if v < -32768 {
		return -32768
	}
	return int16(v)
}

// Goertzel returns the power of samples at frequency freq (Hz), sample rate
// rate, normalised so that a full-scale sine at freq gives about 1, a sine
// of amplitude a (fraction of full scale) about a*a, and silence 0. Power at
// other frequencies leaks in as for any rectangular window of len(samples)
// samples: use at least a few periods of the lowest frequency of interest
// (160 samples resolve 50 Hz bins at 8 kHz). freq need not fall on a bin.
func Goertzel(samples []int16, freq float64, rate int) float64 {
	n := len(samples)
	if n == 0 {
		return 0
	}
	w := 2 * math.Pi * freq / float64(rate)
	coeff := 2 * math.Cos(w)
	var s1, s2 float64
	for _, x := range samples {
		s0 := float64(x) + coeff*s1 - s2
		s2, s1 = s1, s0
	}
	// |X(w)|^2 of the n-point DTFT; a sine of amplitude A gives |X| = A*n/2.
	p := s1*s1 + s2*s2 - coeff*s1*s2
	return p * 4 / (float64(n) * float64(n) * fullScale * fullScale)
}

// RMS returns the root mean square of samples relative to full scale
// (0 for silence or an empty slice, 1 for a full-scale square wave).
func RMS(samples []int16) float64 {
	if len(samples) == 0 {
		return 0
	}
	var sum float64
	for _, x := range samples {
		f := float64(x)
		sum += f * f
	}
	return math.Sqrt(sum/float64(len(samples))) / fullScale
}

// DBFS converts a level relative to full scale (an RMS from RMS, or an
// amplitude) to decibels, floored at MinDBFS.
func DBFS(level float64) float64 {
	if level <= 0 {
		return MinDBFS
	}
	return max(20*math.Log10(level), MinDBFS)
}

// LevelDBFS is DBFS(RMS(samples)).
func LevelDBFS(samples []int16) float64 { return DBFS(RMS(samples)) }

// IsSilent reports whether the RMS level of samples is below thresholdDBFS
// (e.g. -60). An empty slice is silent.
func IsSilent(samples []int16, thresholdDBFS float64) bool {
	return LevelDBFS(samples) < thresholdDBFS
}

// Peak returns the largest absolute sample value (32768 for -32768).
func Peak(samples []int16) int {
	var p int
	for _, x := range samples {
		v := int(x)
		if v < 0 {
			v = -v
		}
		p = max(p, v)
	}
	return p
}

// SNR returns the signal-to-noise ratio in dB of got against ref, sample by
// sample over their common length: the power of ref over the power of
// got-ref. It returns +Inf when they are equal and 0 for empty input. Align
// the two first (see Correlate).
func SNR(ref, got []int16) float64 {
	n := min(len(ref), len(got))
	if n == 0 {
		return 0
	}
	var sig, noise float64
	for i := range n {
		r := float64(ref[i])
		e := float64(got[i]) - r
		sig += r * r
		noise += e * e
	}
	if noise == 0 {
		return math.Inf(1)
	}
	return 10 * math.Log10(sig/noise)
}

// Correlate finds how far b lags a. For every lag from -maxLag to maxLag it
// computes the normalised cross-correlation of a[i] and b[i+lag] over the
// samples where both exist:
//
//	sum(a[i]*b[i+lag]) / sqrt(sum(a[i]^2) * sum(b[i+lag]^2))
//
// and returns the lag with the largest coefficient, and that coefficient (1
// for a scaled copy, near 0 for unrelated signals, negative for an inverted
// copy if nothing better is found). Lags whose overlap is shorter than half
// the shorter input are skipped so that a few samples at the edges cannot
// win. lag > 0 means b is a's signal delayed by lag samples, as a recording
// is of what was sent. Cost is O(len * maxLag): meant for tests and
// offline checks, not the relay.
func Correlate(a, b []int16, maxLag int) (lag int, coeff float64) {
	minOverlap := max(min(len(a), len(b))/2, 1)
	// Prefix sums of squares give each lag's energies in O(1).
	ea := prefixEnergy(a)
	eb := prefixEnergy(b)
	coeff = math.Inf(-1)
	for l := -maxLag; l <= maxLag; l++ {
		// Overlap: i in [i0, i1) with 0 <= i < len(a), 0 <= i+l < len(b).
		i0 := max(0, -l)
		i1 := min(len(a), len(b)-l)
		if i1-i0 < minOverlap {
			continue
		}
		var dot float64
		bb := b[i0+l : i1+l]
		for i, x := range a[i0:i1] {
			dot += float64(x) * float64(bb[i])
		}
		den := math.Sqrt((ea[i1] - ea[i0]) * (eb[i1+l] - eb[i0+l]))
		c := 0.0
		if den > 0 {
			c = dot / den
		}
		if c > coeff {
			lag, coeff = l, c
		}
	}
	if math.IsInf(coeff, -1) {
		return 0, 0
	}
	return lag, coeff
}

func prefixEnergy(x []int16) []float64 {
	e := make([]float64, len(x)+1)
	for i, v := range x {
		f := float64(v)
		e[i+1] = e[i] + f*f
	}
	return e
}

// Mix writes the saturating sum a[i]+b[i] into dst[i] for every i below
// len(dst); a sample missing from a or b (beyond its length) counts as
// silence. Sums beyond the int16 range clip to -32768 or 32767 instead of
// wrapping. dst may be a or b (mixing in place). It does not allocate.
func Mix(dst, a, b []int16) {
	n := min(len(dst), len(a), len(b))
	d, x, y := dst[:n], a[:n], b[:n]
	for i := range d {
		s := int32(x[i]) + int32(y[i])
		d[i] = int16(min(max(s, -32768), 32767))
	}
	// Tails: whichever input is longer continues alone.
	rest := dst[n:]
	if len(a) > n {
		n2 := copy(rest, a[n:])
		rest = rest[n2:]
	} else if len(b) > n {
		n2 := copy(rest, b[n:])
		rest = rest[n2:]
	}
	clear(rest)
}
