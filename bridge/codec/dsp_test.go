package codec

import (
	"math"
	"testing"
)

func noise(n int, amp int32, seed uint32) []int16 {
	s := make([]int16, n)
	for i := range s {
		seed = seed*1664525 + 1013904223
		s[i] = int16(int32(seed>>16)%(2*amp+1) - amp)
	}
	return s
}

func TestTone(t *testing.T) {
	// Two calls continue the phase: same samples as one call.
	var ph float64
	a := AppendTone(nil, 100, 1000, 8000, 0.5, &ph)
	a = AppendTone(a, 60, 1000, 8000, 0.5, &ph)
	b := AppendTone(nil, 160, 1000, 8000, 0.5, nil)
	if i := firstDiff(a, b); i >= 0 {
		t.Fatalf("continued tone differs at %d: %d vs %d", i, a[i], b[i])
	}
	if p := Peak(b); p < 16383-1 || p > 16384 {
		t.Errorf("amp 0.5 peak %d, want 16383", p)
	}
	if b[0] != 0 || b[2] != 16384 && b[2] != 16383 { // 1 kHz at 8 kHz: 0, 45, 90 degrees
		t.Errorf("tone starts %v", b[:4])
	}

	// Tone's two ways of sizing.
	ph = 0
	full := Tone(make([]int16, 160), 1000, 8000, 0.5, &ph)
	if len(full) != 160 || firstDiff(full, b) >= 0 {
		t.Errorf("Tone over len: %d samples, differs at %d", len(full), firstDiff(full, b))
	}
	buf := make([]int16, 20, 180)
	app := Tone(buf, 1000, 8000, 0.5, nil)
	if len(app) != 180 || firstDiff(app[20:], b) >= 0 || &app[0] != &buf[0] {
		t.Errorf("Tone into spare capacity: %d samples", len(app))
	}
	if got := Tone(nil, 1000, 8000, 1, nil); len(got) != 0 {
		t.Errorf("Tone(nil) = %d samples", len(got))
	}
	// Full-scale tones must not wrap around.
	loud := AppendTone(nil, 80, 2000, 8000, 2, nil)
	if loud[1] != 32767 || loud[3] != -32768 {
		t.Errorf("amp 2 not clipped: %v", loud[:4])
	}
}

func TestGoertzel(t *testing.T) {
	tests := []struct {
		name         string
		samples      []int16
		freq         float64
		rate         int
		want, within float64
	}{
		{"full-scale sine", AppendTone(nil, 800, 1000, 8000, 1, nil), 1000, 8000, 1, 0.01},
		{"half amplitude", AppendTone(nil, 800, 1000, 8000, 0.5, nil), 1000, 8000, 0.25, 0.005},
		{"off-bin frequency", AppendTone(nil, 1600, 697, 8000, 0.5, nil), 697, 8000, 0.25, 0.01},
		{"other frequency", AppendTone(nil, 800, 1000, 8000, 1, nil), 1500, 8000, 0, 0.001},
		{"silence", make([]int16, 800), 1000, 8000, 0, 0},
		{"empty", nil, 1000, 8000, 0, 0},
		{"16 kHz", AppendTone(nil, 1600, 6000, 16000, 0.3, nil), 6000, 16000, 0.09, 0.002},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Goertzel(tt.samples, tt.freq, tt.rate); math.Abs(got-tt.want) > tt.within {
				t.Errorf("Goertzel = %.5f, want %.5f ± %g", got, tt.want, tt.within)
			}
		})
	}
}

func TestLevels(t *testing.T) {
	square := make([]int16, 160)
	for i := range square {
		square[i] = 32767
		if i%2 == 1 {
			square[i] = -32768
		}
	}
	sine := AppendTone(nil, 800, 1000, 8000, 1, nil)
	tests := []struct {
		name     string
		samples  []int16
		rms, dbs float64
	}{
		{"square", square, 1, 0},
		{"sine", sine, 1 / math.Sqrt2, -3.01},
		{"silence", make([]int16, 10), 0, MinDBFS},
		{"empty", nil, 0, MinDBFS},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := RMS(tt.samples); math.Abs(got-tt.rms) > 0.001 {
				t.Errorf("RMS = %.4f, want %.4f", got, tt.rms)
			}
			if got := LevelDBFS(tt.samples); math.Abs(got-tt.dbs) > 0.01 {
				t.Errorf("LevelDBFS = %.3f, want %.3f", got, tt.dbs)
			}
		})
	}
	if !IsSilent(make([]int16, 10), -60) || IsSilent(sine, -60) {
		t.Error("IsSilent wrong")
	}
	if IsSilent(noise(800, 100, 1), -60) { // about -55 dBFS
		t.Error("low noise at -55 dBFS called silent at -60")
	}
	if d := DBFS(0.5); math.Abs(d+6.0206) > 0.001 {
		t.Errorf("DBFS(0.5) = %f", d)
	}
	if p := Peak([]int16{3, -32768, 5}); p != 32768 {
		t.Errorf("Peak = %d", p)
	}
}

func TestSNR(t *testing.T) {
	ref := AppendTone(nil, 800, 1000, 8000, 0.5, nil)
	if s := SNR(ref, ref); !math.IsInf(s, 1) {
		t.Errorf("SNR of equal signals = %f", s)
	}
	half := make([]int16, len(ref))
	for i, v := range ref {
		half[i] = v / 2
	}
	// got = ref/2: error power is a quarter of the signal's, 6 dB.
	if s := SNR(ref, half); math.Abs(s-6.02) > 0.05 {
		t.Errorf("SNR against half = %.2f, want 6.02", s)
	}
}

func TestCorrelate(t *testing.T) {
	sent := noise(4000, 8000, 7)
	tests := []struct {
		name     string
		delay    int
		scale    float64
		wantCoef float64
	}{
		{"same", 0, 1, 1},
		{"delayed 37", 37, 1, 1},
		{"delayed 200 quieter", 200, 0.25, 1},
		{"ahead 15", -15, 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := make([]int16, len(sent))
			for i := range rec {
				if j := i - tt.delay; j >= 0 && j < len(sent) {
					rec[i] = int16(float64(sent[j]) * tt.scale)
				}
			}
			lag, c := Correlate(sent, rec, 300)
			if lag != tt.delay || c < tt.wantCoef-0.001 {
				t.Errorf("lag %d coeff %.4f, want %d and %.3f", lag, c, tt.delay, tt.wantCoef)
			}
		})
	}
	if _, c := Correlate(sent, noise(4000, 8000, 99), 100); c > 0.15 {
		t.Errorf("unrelated noise correlates at %.3f", c)
	}
	if lag, c := Correlate(nil, sent, 10); lag != 0 || c != 0 {
		t.Errorf("empty input: %d %f", lag, c)
	}
	// Through G.711 the correlation stays high.
	enc, dec := ulawEncoder{}, ulawDecoder{}
	p := make([]byte, len(sent))
	enc.Encode(p, sent)
	back := make([]int16, len(sent))
	dec.Decode(back, p)
	if lag, c := Correlate(sent, back, 50); lag != 0 || c < 0.99 {
		t.Errorf("through mu-law: lag %d coeff %.4f", lag, c)
	}
}

func TestMix(t *testing.T) {
	tests := []struct {
		name       string
		dstLen     int
		a, b, want []int16
	}{
		{"sum", 3, []int16{1, -2, 100}, []int16{10, 20, -300}, []int16{11, 18, -200}},
		{"clip high", 2, []int16{30000, 32767}, []int16{5000, 32767}, []int16{32767, 32767}},
		{"clip low", 2, []int16{-30000, -32768}, []int16{-5000, -32768}, []int16{-32768, -32768}},
		{"a longer", 4, []int16{1, 2, 3, 4}, []int16{10}, []int16{11, 2, 3, 4}},
		{"b longer, dst longest", 5, []int16{1}, []int16{10, 20}, []int16{11, 20, 0, 0, 0}},
		{"dst shortest", 1, []int16{1, 2}, []int16{3, 4}, []int16{4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := make([]int16, tt.dstLen)
			for i := range dst {
				dst[i] = 999 // must be overwritten
			}
			Mix(dst, tt.a, tt.b)
			if i := firstDiff(dst, tt.want); i >= 0 {
				t.Errorf("Mix = %v, want %v", dst, tt.want)
			}
		})
	}
	// In place.
	a := []int16{1, 2, 32767}
	Mix(a, a, []int16{1, 1, 1})
	if firstDiff(a, []int16{2, 3, 32767}) >= 0 {
		t.Errorf("in-place Mix = %v", a)
	}
}

func BenchmarkGoertzel(b *testing.B) {
	s := AppendTone(nil, 160, 1000, 8000, 0.5, nil)
	b.ReportAllocs()
	for b.Loop() {
		Goertzel(s, 1000, 8000)
	}
}

func BenchmarkMix(b *testing.B) {
	x := AppendTone(nil, 320, 1000, 16000, 0.5, nil)
	y := AppendTone(nil, 320, 700, 16000, 0.7, nil)
	dst := make([]int16, 320)
	b.ReportAllocs()
	for b.Loop() {
		Mix(dst, x, y)
	}
}
