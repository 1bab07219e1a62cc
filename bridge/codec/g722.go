package codec

// G.722 (ITU-T G.722, 11/1988 and later) in its 64 kbit/s mode, the mode SIP
// phones negotiate as "G722/8000" (RFC 3551 section 4.5.2: the RTP clock runs
// at 8000 Hz although the audio is sampled at 16 kHz, so one payload byte
// carries two PCM samples and one timestamp tick).
//
// The coder splits the 16 kHz signal with a 24-tap quadrature mirror filter
// (QMF) into a lower and a higher sub-band at 8 kHz each. The lower band is
// coded with 6-bit ADPCM (of which the predictor only uses the 4 most
// significant bits, so that the 56 and 48 kbit/s modes stay decodable), the
// higher band with 2-bit ADPCM. Both bands share the recommendation's block 4
// (pole-zero predictor with sign-sign adaptation). Block names in comments
// follow the recommendation (QUANTL, INVQAL, LOGSCL, SCALEL, ...).
//
// Linear PCM is 16-bit; the sub-band signals are 15-bit, as the
// recommendation's fixed-point arithmetic expects.

// QMF coefficients h(0)..h(23) (G.722 table 11), scaled by 2^13. The filter
// is symmetric: h(i) == h(23-i).
var g722QMF = [24]int32{
	3, -11, -11, 53, 12, -156, 32, 362, -210, -805, 951, 3876,
	3876, 951, -805, -210, 362, 32, -156, 12, 53, -11, -11, 3,
}

var (
	// QUANTL decision levels for the 6-bit lower-band quantizer, in units of
	// the scale factor >> 12 (table 14). Index 0 is unused.
	g722Q6 = [31]int32{
		0, 35, 72, 110, 150, 190, 233, 276, 323, 370, 422, 473, 530, 587, 650,
		714, 786, 858, 940, 1023, 1121, 1219, 1339, 1458, 1612, 1765, 1980,
		2195, 2557, 2919, 0,
	}
	// QUANTL code words for negative and positive differences, by interval.
	g722ILN = [31]uint8{
		0, 63, 62, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17,
		16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4,
	}
	g722ILP = [31]uint8{
		0, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46, 45,
		44, 43, 42, 41, 40, 39, 38, 37, 36, 35, 34, 33, 32,
	}
	// INVQBL output levels for the 6-bit code (table 15), scale 2^15.
	g722QM6 = [64]int32{
		-136, -136, -136, -136, -24808, -21904, -19008, -16704,
		-14984, -13512, -12280, -11192, -10232, -9360, -8576, -7856,
		-7192, -6576, -6000, -5456, -4944, -4464, -4008, -3576,
		-3168, -2776, -2400, -2032, -1688, -1360, -1040, -728,
		24808, 21904, 19008, 16704, 14984, 13512, 12280, 11192,
		10232, 9360, 8576, 7856, 7192, 6576, 6000, 5456,
		4944, 4464, 4008, 3576, 3168, 2776, 2400, 2032,
		1688, 1360, 1040, 728, 432, 136, -432, -136,
	}
	// INVQAL output levels for the truncated 4-bit code (table 16).
	g722QM4 = [16]int32{
		0, -20456, -12896, -8968, -6288, -4240, -2584, -1200,
		20456, 12896, 8968, 6288, 4240, 2584, 1200, 0,
	}
	// LOGSCL: 4-bit code to magnitude class, and the log scale factor
	// multipliers per class (table 17).
	g722RL42 = [16]uint8{0, 7, 6, 5, 4, 3, 2, 1, 7, 6, 5, 4, 3, 2, 1, 0}
	g722WL   = [8]int32{-60, -30, 58, 172, 334, 538, 1198, 3042}
	// SCALEL/SCALEH: 2048 * 2^(i/32), the mantissa of the linear scale factor.
	g722ILB = [32]int32{
		2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383,
		2435, 2489, 2543, 2599, 2656, 2714, 2774, 2834,
		2896, 2960, 3025, 3091, 3158, 3228, 3298, 3371,
		3444, 3520, 3597, 3676, 3756, 3838, 3922, 4008,
	}
	// Higher band: QUANTH code words, INVQAH levels (table 18), LOGSCH.
	g722IHN = [3]uint8{0, 1, 0}
	g722IHP = [3]uint8{0, 3, 2}
	g722QM2 = [4]int32{-7408, -1616, 7408, 1616}
	g722RH2 = [4]uint8{2, 1, 2, 1}
	g722WH  = [3]int32{0, -214, 798}
)

// sat16 limits v to the 16-bit range, as the recommendation's arithmetic does.
func sat16(v int32) int32 {
	if v > 32767 {
		return 32767
	}
	if v < -32768 {
		return -32768
	}
	return v
}

// g722Band is the adaptive predictor state of one sub-band (block 4) plus
// its quantizer scale factor (blocks 3L/3H).
type g722Band struct {
	s  int32    // predicted signal, SL/SH
	sz int32    // zero-section prediction, SZL/SZH
	r  [3]int32 // reconstructed signal r(n), r(n-1), r(n-2)
	a  [3]int32 // pole coefficients a1, a2 (index 0 unused)
	p  [3]int32 // partially reconstructed signal p(n), p(n-1), p(n-2)
	d  [7]int32 // quantized difference d(n) .. d(n-6)
	b  [7]int32 // zero coefficients b1..b6 (index 0 unused)
	nb int32    // log scale factor, NBL/NBH
	de int32    // linear scale factor, DETL/DETH
}

func (b *g722Band) reset(det int32) {
	*b = g722Band{de: det}
}

// scale is SCALEL (shift 8) / SCALEH (shift 10): log to linear scale factor.
func (b *g722Band) scale(shift int32) {
	wd1 := (b.nb >> 6) & 31
	wd2 := shift - (b.nb >> 11)
	var wd3 int32
	if wd2 < 0 {
		wd3 = g722ILB[wd1] << -wd2
	} else {
		wd3 = g722ILB[wd1] >> wd2
	}
	b.de = wd3 << 2
}

// adaptLow is LOGSCL + SCALEL for the lower band's 4-bit code.
func (b *g722Band) adaptLow(code4 int32) {
	nb := (b.nb*127)>>7 + g722WL[g722RL42[code4]]
	b.nb = min(max(nb, 0), 18432)
	b.scale(8)
}

// adaptHigh is LOGSCH + SCALEH for the higher band's 2-bit code.
func (b *g722Band) adaptHigh(code2 int32) {
	nb := (b.nb*127)>>7 + g722WH[g722RH2[code2]]
	b.nb = min(max(nb, 0), 22528)
	b.scale(10)
}

func sign(v int32) int32 { return v >> 31 } // 0 for v >= 0, -1 otherwise

// predict is block 4: reconstruct with the quantized difference d, adapt the
// pole (UPPOL1/2) and zero (UPZERO) coefficients, shift the delay lines
// (DELAYA/L) and compute the next prediction (FILTEP, FILTEZ, PREDIC).
func (b *g722Band) predict(d int32) {
	// RECONS and PARREC.
	b.r[0] = sat16(b.s + d)
	b.p[0] = sat16(b.sz + d)

	// UPPOL2: second pole coefficient.
	sg0, sg1, sg2 := sign(b.p[0]), sign(b.p[1]), sign(b.p[2])
	wd1 := sat16(b.a[1] << 2)
	wd2 := wd1
	if sg0 == sg1 {
		wd2 = -wd1
	}
	wd2 = min(wd2, 32767)
	wd3 := int32(-128)
	if sg0 == sg2 {
		wd3 = 128
	}
	wd3 += wd2 >> 7
	wd3 += (b.a[2] * 32512) >> 15
	a2 := min(max(wd3, -12288), 12288)

	// UPPOL1: first pole coefficient, limited by the new a2.
	wd1 = -192
	if sg0 == sg1 {
		wd1 = 192
	}
	a1 := sat16(wd1 + (b.a[1]*32640)>>15)
	lim := sat16(15360 - a2)
	a1 = min(max(a1, -lim), lim)

	// UPZERO: sign-sign update of the six zero coefficients.
	step := int32(128)
	if d == 0 {
		step = 0
	}
	sgd := sign(d)
	for i := 1; i < 7; i++ {
		w := -step
		if sign(b.d[i]) == sgd {
			w = step
		}
		b.b[i] = sat16(w + (b.b[i]*32640)>>15)
	}

	// DELAYA/DELAYL.
	b.d[6], b.d[5], b.d[4], b.d[3], b.d[2], b.d[1] = b.d[5], b.d[4], b.d[3], b.d[2], b.d[1], d
	b.r[2], b.r[1] = b.r[1], b.r[0]
	b.p[2], b.p[1] = b.p[1], b.p[0]
	b.a[1], b.a[2] = a1, a2

	// FILTEP: pole section.
	sp := (b.a[1] * sat16(b.r[1]+b.r[1])) >> 15
	sp = sat16(sp + (b.a[2]*sat16(b.r[2]+b.r[2]))>>15)

	// FILTEZ: zero section.
	var sz int32
	for i := 1; i < 7; i++ {
		sz += (b.b[i] * sat16(b.d[i]+b.d[i])) >> 15
	}
	b.sz = sat16(sz)

	// PREDIC.
	b.s = sat16(sp + b.sz)
}

// Initial scale factors (DETL = 32, DETH = 8 after reset, clause 3.6).
const (
	g722DetLow  = 32
	g722DetHigh = 8
)

// G722Encoder encodes 16 kHz linear PCM to G.722 at 64 kbit/s. The zero value
// is not ready: use NewG722Encoder. It is not safe for concurrent use.
type G722Encoder struct {
	x       [24]int32 // transmit QMF delay line, oldest first
	low     g722Band
	high    g722Band
	pending int16 // an odd sample left over from the previous Encode
	hasPend bool
}

// G722Decoder decodes G.722 at 64 kbit/s to 16 kHz linear PCM. The zero value
// is not ready: use NewG722Decoder. It is not safe for concurrent use.
type G722Decoder struct {
	x    [24]int32 // receive QMF delay line: x[2k] difference, x[2k+1] sum signals, oldest first
	low  g722Band
	high g722Band
}

var (
	_ Encoder = (*G722Encoder)(nil)
	_ Decoder = (*G722Decoder)(nil)
)

// NewG722Encoder returns a G.722 64 kbit/s encoder in its reset state.
func NewG722Encoder() Encoder { return newG722Encoder() }

func newG722Encoder() *G722Encoder {
	e := &G722Encoder{}
	e.Reset()
	return e
}

// NewG722Decoder returns a G.722 64 kbit/s decoder in its reset state.
func NewG722Decoder() Decoder { return newG722Decoder() }

func newG722Decoder() *G722Decoder {
	d := &G722Decoder{}
	d.Reset()
	return d
}

// Reset returns the encoder to the recommendation's initial state and drops
// any pending odd sample.
func (e *G722Encoder) Reset() {
	e.x = [24]int32{}
	e.low.reset(g722DetLow)
	e.high.reset(g722DetHigh)
	e.pending, e.hasPend = 0, false
}

// SampleRate is 16000.
func (e *G722Encoder) SampleRate() int { return 16000 }

// PayloadSize returns the bytes Encode may write for n samples: two samples
// per byte, rounded up because a pending odd sample may complete a pair.
func (e *G722Encoder) PayloadSize(n int) int { return (n + 1) / 2 }

// Encode codes pcm into dst, one byte per pair of samples, and returns the
// number of bytes written. An odd trailing sample is kept and paired with the
// first sample of the next call, so a stream cut into odd-sized pieces still
// encodes as a whole.
func (e *G722Encoder) Encode(dst []byte, pcm []int16) int {
	n := 0
	if e.hasPend && len(pcm) > 0 {
		dst[0] = e.encodePair(int32(e.pending), int32(pcm[0]))
		n = 1
		pcm = pcm[1:]
		e.hasPend = false
	}
	pairs := len(pcm) / 2
	dst = dst[n : n+pairs]
	for i := range dst {
		dst[i] = e.encodePair(int32(pcm[2*i]), int32(pcm[2*i+1]))
	}
	if len(pcm)%2 == 1 {
		e.pending, e.hasPend = pcm[len(pcm)-1], true
	}
	return n + pairs
}

// encodePair runs the transmit QMF on two samples (s0 older than s1) and
// codes the two sub-band samples into one byte: ihigh<<6 | ilow.
func (e *G722Encoder) encodePair(s0, s1 int32) byte {
	copy(e.x[:22], e.x[2:])
	e.x[22], e.x[23] = s0, s1

	// Transmit QMF: xA from even taps on the newest sample and every second
	// one before it, xB from odd taps on the others.
	var xa, xb int32
	for i := range 12 {
		xa += g722QMF[2*i] * e.x[23-2*i]
		xb += g722QMF[2*i+1] * e.x[22-2*i]
	}
	xl := (xa + xb) >> 14
	xh := (xa - xb) >> 14

	// Lower band: SUBTRA, QUANTL.
	el := sat16(xl - e.low.s)
	wd := el
	if el < 0 {
		wd = -(el + 1)
	}
	i := int32(1)
	for ; i < 30; i++ {
		if wd < (g722Q6[i]*e.low.de)>>12 {
			break
		}
	}
	var ilow int32
	if el < 0 {
		ilow = int32(g722ILN[i])
	} else {
		ilow = int32(g722ILP[i])
	}
	// INVQAL with the 4-bit code, LOGSCL/SCALEL, block 4.
	code4 := ilow >> 2
	dlow := (e.low.de * g722QM4[code4]) >> 15
	e.low.adaptLow(code4)
	e.low.predict(dlow)

	// Higher band: SUBTRA, QUANTH.
	eh := sat16(xh - e.high.s)
	wd = eh
	if eh < 0 {
		wd = -(eh + 1)
	}
	mih := 1
	if wd >= (564*e.high.de)>>12 {
		mih = 2
	}
	var ihigh int32
	if eh < 0 {
		ihigh = int32(g722IHN[mih])
	} else {
		ihigh = int32(g722IHP[mih])
	}
	// INVQAH, LOGSCH/SCALEH, block 4.
	dhigh := (e.high.de * g722QM2[ihigh]) >> 15
	e.high.adaptHigh(ihigh)
	e.high.predict(dhigh)

	return byte(ihigh<<6 | ilow)
}

// Reset returns the decoder to the recommendation's initial state.
func (d *G722Decoder) Reset() {
	d.x = [24]int32{}
	d.low.reset(g722DetLow)
	d.high.reset(g722DetHigh)
}

// SampleRate is 16000.
func (d *G722Decoder) SampleRate() int { return 16000 }

// Samples returns 2n: each byte holds one sample of each sub-band.
func (d *G722Decoder) Samples(n int) int { return 2 * n }

// Decode decodes payload into dst (which must hold 2*len(payload) samples)
// and returns the number of samples written. Every byte value is a valid
// code word, so any payload decodes.
func (d *G722Decoder) Decode(dst []int16, payload []byte) int {
	dst = dst[:2*len(payload)]
	for i, c := range payload {
		dst[2*i], dst[2*i+1] = d.decodeByte(c)
	}
	return len(dst)
}

func (d *G722Decoder) decodeByte(c byte) (int16, int16) {
	ilow := int32(c & 0x3F)
	ihigh := int32(c >> 6)

	// Lower band: INVQBL with the full 6-bit code, RECONS, LIMIT.
	rlow := d.low.s + (d.low.de*g722QM6[ilow])>>15
	rlow = min(max(rlow, -16384), 16383)
	// INVQAL with the 4-bit code feeds the predictor, as in the encoder.
	code4 := ilow >> 2
	dlow := (d.low.de * g722QM4[code4]) >> 15
	d.low.adaptLow(code4)
	d.low.predict(dlow)

	// Higher band: INVQAH, RECONS, LIMIT.
	dhigh := (d.high.de * g722QM2[ihigh]) >> 15
	rhigh := d.high.s + dhigh
	rhigh = min(max(rhigh, -16384), 16383)
	d.high.adaptHigh(ihigh)
	d.high.predict(dhigh)

	// Receive QMF: xd = rl - rh feeds the even taps, xs = rl + rh the odd
	// taps; each yields one output sample.
	copy(d.x[:22], d.x[2:])
	d.x[22], d.x[23] = rlow-rhigh, rlow+rhigh
	var x0, x1 int32
	for i := range 12 {
		x0 += g722QMF[2*i] * d.x[22-2*i]
		x1 += g722QMF[2*i+1] * d.x[23-2*i]
	}
	return int16(sat16(x0 >> 11)), int16(sat16(x1 >> 11))
}
