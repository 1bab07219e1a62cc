package codec

// G.711 (ITU-T G.711) mu-law and A-law. Decoding is a table lookup; encoding
// follows the segment search of the recommendation.

var (
	ulawTable [256]int16
	alawTable [256]int16
)

func init() {
	for i := range 256 {
		ulawTable[i] = ulawToLinear(uint8(i))
		alawTable[i] = alawToLinear(uint8(i))
	}
}

func ulawToLinear(u uint8) int16 {
	u = ^u
	t := (int32(u&0x0f) << 3) + 0x84
	t <<= (u & 0x70) >> 4
	if u&0x80 != 0 {
		return int16(0x84 - t)
	}
	return int16(t - 0x84)
}

func alawToLinear(a uint8) int16 {
	a ^= 0x55
	t := int32(a&0x0f) << 4
	seg := (a & 0x70) >> 4
	switch seg {
	case 0:
		t += 8
	case 1:
		t += 0x108
	default:
		t += 0x108
		t <<= seg - 1
	}
	if a&0x80 != 0 {
		return int16(t)
	}
	return int16(-t)
}

// UlawDecode returns the linear value of one mu-law byte.
func UlawDecode(u uint8) int16 { return ulawTable[u] }

// AlawDecode returns the linear value of one A-law byte.
func AlawDecode(a uint8) int16 { return alawTable[a] }

var (
	segUEnd = [8]int32{0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF}
	segAEnd = [8]int32{0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF}
)

func segment(v int32, ends *[8]int32) uint8 {
	for i, e := range ends {
		if v <= e {
			return uint8(i)
		}
	}
	return 8
}

// UlawEncode returns the mu-law byte for a linear sample.
func UlawEncode(s int16) uint8 {
	const bias = 0x84
	v := int32(s) >> 2
	mask := uint8(0xFF)
	if v < 0 {
		v = -v
		mask = 0x7F
	}
	if v > 8159 {
		v = 8159
	}
	v += bias >> 2
	seg := segment(v, &segUEnd)
	if seg >= 8 {
		return 0x7F ^ mask
	}
	u := (seg << 4) | uint8((v>>(seg+1))&0x0F)
	return u ^ mask
}

// AlawEncode returns the A-law byte for a linear sample.
func AlawEncode(s int16) uint8 {
	v := int32(s) >> 3
	mask := uint8(0xD5)
	if v < 0 {
		mask = 0x55
		v = -v - 1
	}
	seg := segment(v, &segAEnd)
	if seg >= 8 {
		return 0x7F ^ mask
	}
	a := seg << 4
	if seg < 2 {
		a |= uint8(v>>1) & 0x0F
	} else {
		a |= uint8(v>>seg) & 0x0F
	}
	return a ^ mask
}

type ulawDecoder struct{}

func (ulawDecoder) Decode(dst []int16, p []byte) int {
	dst = dst[:len(p)]
	for i, b := range p {
		dst[i] = ulawTable[b]
	}
	return len(p)
}
func (ulawDecoder) SampleRate() int   { return 8000 }
func (ulawDecoder) Samples(n int) int { return n }
func (ulawDecoder) Reset()            {}

type alawDecoder struct{}

func (alawDecoder) Decode(dst []int16, p []byte) int {
	dst = dst[:len(p)]
	for i, b := range p {
		dst[i] = alawTable[b]
	}
	return len(p)
}
func (alawDecoder) SampleRate() int   { return 8000 }
func (alawDecoder) Samples(n int) int { return n }
func (alawDecoder) Reset()            {}

type ulawEncoder struct{}

func (ulawEncoder) Encode(dst []byte, pcm []int16) int {
	dst = dst[:len(pcm)]
	for i, s := range pcm {
		dst[i] = UlawEncode(s)
	}
	return len(pcm)
}
func (ulawEncoder) SampleRate() int       { return 8000 }
func (ulawEncoder) PayloadSize(n int) int { return n }
func (ulawEncoder) Reset()                {}

type alawEncoder struct{}

func (alawEncoder) Encode(dst []byte, pcm []int16) int {
	dst = dst[:len(pcm)]
	for i, s := range pcm {
		dst[i] = AlawEncode(s)
	}
	return len(pcm)
}
func (alawEncoder) SampleRate() int       { return 8000 }
func (alawEncoder) PayloadSize(n int) int { return n }
func (alawEncoder) Reset()                {}
