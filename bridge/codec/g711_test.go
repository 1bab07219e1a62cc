package codec

import (
	"math"
	"testing"
)

func TestG711KnownValues(t *testing.T) {
	tests := []struct {
		name string
		dec  func(uint8) int16
		in   uint8
		want int16
	}{
		{"ulaw 0x00", UlawDecode, 0x00, -32124},
		{"ulaw 0x80", UlawDecode, 0x80, 32124},
		{"ulaw 0xFF", UlawDecode, 0xFF, 0},
		{"ulaw 0x7F", UlawDecode, 0x7F, 0},
		{"ulaw 0xFE", UlawDecode, 0xFE, 8},
		{"ulaw 0x7E", UlawDecode, 0x7E, -8},
		{"alaw 0xD5", AlawDecode, 0xD5, 8},
		{"alaw 0x55", AlawDecode, 0x55, -8},
		{"alaw 0xAA", AlawDecode, 0xAA, 32256},
		{"alaw 0x2A", AlawDecode, 0x2A, -32256},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.dec(tt.in); got != tt.want {
				t.Errorf("decode(0x%02X) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

// Decoding then encoding every byte gives the byte back, except mu-law's
// negative zero 0x7F, which decodes to 0 and encodes as positive zero 0xFF.
func TestG711RoundTripEveryByte(t *testing.T) {
	for i := range 256 {
		b := uint8(i)
		want := b
		if b == 0x7F {
			want = 0xFF
		}
		if got := UlawEncode(UlawDecode(b)); got != want {
			t.Errorf("ulaw 0x%02X -> %d -> 0x%02X", b, UlawDecode(b), got)
		}
		if got := AlawEncode(AlawDecode(b)); got != b {
			t.Errorf("alaw 0x%02X -> %d -> 0x%02X", b, AlawDecode(b), got)
		}
	}
}

// Encoding is monotonic: a larger sample never decodes to a smaller value,
// and the quantisation error stays within half a step of the segment.
func TestG711EncodeMonotonic(t *testing.T) {
	codecs := []struct {
		name string
		enc  func(int16) uint8
		dec  func(uint8) int16
	}{
		{"ulaw", UlawEncode, UlawDecode},
		{"alaw", AlawEncode, AlawDecode},
	}
	for _, c := range codecs {
		t.Run(c.name, func(t *testing.T) {
			prev := int16(math.MinInt16)
			for s := math.MinInt16; s <= math.MaxInt16; s++ {
				v := c.dec(c.enc(int16(s)))
				if v < prev {
					t.Fatalf("sample %d decodes to %d, below %d for a smaller sample", s, v, prev)
				}
				prev = v
				// Steps are at most 1024 (mu-law) / 1024 (A-law) in the top
				// segment, and about 1/16 of the value elsewhere.
				errAbs := math.Abs(float64(v) - float64(s))
				if limit := max(1024.0, math.Abs(float64(s))/16+16); errAbs > limit {
					t.Fatalf("sample %d decodes to %d: error %.0f > %.0f", s, v, errAbs, limit)
				}
			}
		})
	}
}

func TestG711Frames(t *testing.T) {
	in := AppendTone(nil, 800, 1000, 8000, 0.5, nil)
	for _, name := range []string{"PCMU", "PCMA"} {
		t.Run(name, func(t *testing.T) {
			enc, err := NewEncoder(name)
			if err != nil {
				t.Fatal(err)
			}
			dec, err := NewDecoder(name)
			if err != nil {
				t.Fatal(err)
			}
			p := make([]byte, enc.PayloadSize(len(in)))
			p = p[:enc.Encode(p, in)]
			out := make([]int16, dec.Samples(len(p)))
			out = out[:dec.Decode(out, p)]
			if len(out) != len(in) {
				t.Fatalf("%d samples in, %d out", len(in), len(out))
			}
			if snr := SNR(in, out); snr < 30 {
				t.Errorf("SNR %.1f dB, want >= 30", snr)
			}
		})
	}
	if _, err := NewDecoder("opus"); err == nil {
		t.Error("NewDecoder(opus) succeeded")
	}
}

func BenchmarkG711(b *testing.B) {
	pcm := AppendTone(nil, 160, 1000, 8000, 0.5, nil)
	payload := make([]byte, 160)
	for _, name := range []string{"PCMU", "PCMA"} {
		enc, _ := NewEncoder(name)
		dec, _ := NewDecoder(name)
		b.Run(name+"/Encode160", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(160)
			for b.Loop() {
				enc.Encode(payload, pcm)
			}
		})
		b.Run(name+"/Decode160", func(b *testing.B) {
			out := make([]int16, 160)
			b.ReportAllocs()
			b.SetBytes(160)
			for b.Loop() {
				dec.Decode(out, payload)
			}
		})
	}
}
