package codec

import (
	"errors"
	"math"
	"testing"
)

func TestResampleTone(t *testing.T) {
	tests := []struct {
		from, to int
		freq     float64
	}{
		{44100, 8000, 1000},
		{44100, 16000, 1000},
		{22050, 8000, 1000},
		{22050, 16000, 3000},
		{8000, 16000, 1000},
		{16000, 8000, 1000},
		{8000, 44100, 440},
		{48000, 8000, 3300},
		{44101, 8000, 1000}, // reduced ratio 8000/44101: taps computed on the fly
	}
	for _, tt := range tests {
		in := AppendTone(nil, tt.from/4, tt.freq, tt.from, 0.5, nil)
		out := Resample(nil, in, tt.from, tt.to)
		if want := (len(in)*tt.to + tt.from - 1) / tt.from; len(out) != want {
			t.Errorf("%d->%d: %d samples out, want %d", tt.from, tt.to, len(out), want)
			continue
		}
		// Output sample i is the input at time i*from/to: compare with the
		// ideal tone generated at the output rate, away from the edges.
		ideal := AppendTone(nil, len(out), tt.freq, tt.to, 0.5, nil)
		edge := tt.to / 50
		mid, ref := out[edge:len(out)-edge], ideal[edge:len(out)-edge]
		snr := SNR(ref, mid)
		power := Goertzel(mid, tt.freq, tt.to)
		t.Logf("%d->%d %g Hz: SNR %.1f dB, power %.4f", tt.from, tt.to, tt.freq, snr, power)
		if snr < 40 {
			t.Errorf("%d->%d %g Hz: SNR against the ideal tone %.1f dB, want >= 40", tt.from, tt.to, tt.freq, snr)
		}
		if math.Abs(10*math.Log10(power/0.25)) > 0.2 {
			t.Errorf("%d->%d %g Hz: power %.4f, want 0.25 within 0.2 dB", tt.from, tt.to, tt.freq, power)
		}
	}
}

// Components above the new Nyquist frequency must be removed, not folded
// into the band.
func TestResampleAntiAlias(t *testing.T) {
	tests := []struct {
		from, to    int
		freq, alias float64
	}{
		{44100, 8000, 6000, 2000},
		{44100, 8000, 4500, 3500},
		{16000, 8000, 5000, 3000},
		{22050, 16000, 9000, 7000},
	}
	for _, tt := range tests {
		in := AppendTone(nil, tt.from/4, tt.freq, tt.from, 0.9, nil)
		out := Resample(nil, in, tt.from, tt.to)
		edge := tt.to / 50
		mid := out[edge : len(out)-edge]
		inPower := Goertzel(in, tt.freq, tt.from)
		aliasPower := Goertzel(mid, tt.alias, tt.to)
		att := 10 * math.Log10(inPower/max(aliasPower, 1e-30))
		level := LevelDBFS(mid) - LevelDBFS(in)
		t.Logf("%d->%d %g Hz: alias at %g Hz down %.1f dB, level %.1f dB", tt.from, tt.to, tt.freq, tt.alias, att, level)
		if att < 40 || level > -40 {
			t.Errorf("%d->%d %g Hz: alias down %.1f dB, level %.1f dB; want both beyond 40 dB", tt.from, tt.to, tt.freq, att, level)
		}
	}
}

func TestResampleLength(t *testing.T) {
	for _, n := range []int{0, 1, 2, 159, 160, 441, 1000} {
		for _, rates := range [][2]int{{44100, 8000}, {8000, 16000}, {16000, 8000}, {8000, 8000}, {11025, 16000}} {
			out := Resample(make([]int16, 3, 10), make([]int16, n), rates[0], rates[1])
			want := 3 + (n*rates[1]+rates[0]-1)/rates[0]
			if len(out) != want {
				t.Errorf("%d samples %d->%d: len %d, want %d (including 3 kept)", n, rates[0], rates[1], len(out), want)
			}
		}
	}
	if out := Resample(nil, make([]int16, 10), 0, 8000); len(out) != 0 {
		t.Errorf("rate 0 gave %d samples", len(out))
	}
	if _, err := NewResampler(8000, 500); !errors.Is(err, ErrRate) {
		t.Errorf("NewResampler(8000, 500) err = %v", err)
	}
}

func TestResamplerStream(t *testing.T) {
	tests := []struct {
		from, to, frame, wantOut int
	}{
		{8000, 16000, 160, 320},
		{16000, 8000, 320, 160},
		{8000, 8000, 160, 160},
	}
	for _, tt := range tests {
		in := chirp(tt.from, tt.from, 100, float64(min(tt.from, tt.to))*0.45, 0.5)
		whole := Resample(nil, in, tt.from, tt.to)
		r, err := NewResampler(tt.from, tt.to)
		if err != nil {
			t.Fatal(err)
		}
		var got []int16
		frame := make([]int16, 0, tt.wantOut)
		for i := 0; i+tt.frame <= len(in); i += tt.frame {
			frame = r.Process(frame[:0], in[i:i+tt.frame])
			if len(frame) != tt.wantOut {
				t.Fatalf("%d->%d: frame %d gave %d samples, want %d", tt.from, tt.to, i/tt.frame, len(frame), tt.wantOut)
			}
			got = append(got, frame...)
		}
		// The stream is the whole-buffer result delayed by Delay samples.
		d := r.Delay()
		if d <= 0 && tt.from != tt.to {
			t.Fatalf("%d->%d: delay %d", tt.from, tt.to, d)
		}
		for i := d; i < len(got); i++ {
			if diff := int(got[i]) - int(whole[i-d]); diff < -1 || diff > 1 {
				t.Fatalf("%d->%d: stream sample %d = %d, whole-buffer sample %d = %d", tt.from, tt.to, i, got[i], i-d, whole[i-d])
			}
		}

		// Reset forgets the history: the first frame after it is the first
		// frame of a new stream.
		r.Reset()
		again := r.Process(nil, in[:tt.frame])
		if i := firstDiff(again, got[:tt.wantOut]); i >= 0 {
			t.Errorf("%d->%d: after Reset sample %d differs", tt.from, tt.to, i)
		}
	}
}

func TestResamplerNoAllocs(t *testing.T) {
	up, _ := NewResampler(8000, 16000)
	down, _ := NewResampler(16000, 8000)
	in := AppendTone(nil, 160, 1000, 8000, 0.5, nil)
	out := make([]int16, 0, 320)
	if a := testing.AllocsPerRun(100, func() { out = up.Process(out[:0], in) }); a != 0 {
		t.Errorf("8k->16k: %v allocs per frame", a)
	}
	if a := testing.AllocsPerRun(100, func() { in = down.Process(in[:0], out) }); a != 0 {
		t.Errorf("16k->8k: %v allocs per frame", a)
	}
}

func BenchmarkResampler(b *testing.B) {
	for _, c := range []struct {
		name          string
		from, to, len int
	}{
		{"8k-16k/160", 8000, 16000, 160},
		{"16k-8k/320", 16000, 8000, 320},
	} {
		b.Run(c.name, func(b *testing.B) {
			r, _ := NewResampler(c.from, c.to)
			in := AppendTone(nil, c.len, 1000, c.from, 0.5, nil)
			out := make([]int16, 0, 2*c.len)
			b.ReportAllocs()
			for b.Loop() {
				out = r.Process(out[:0], in)
			}
		})
	}
	b.Run("Resample-44k1-8k/1s", func(b *testing.B) {
		in := AppendTone(nil, 44100, 1000, 44100, 0.5, nil)
		out := make([]int16, 0, 8000)
		b.ReportAllocs()
		for b.Loop() {
			out = Resample(out[:0], in, 44100, 8000)
		}
	})
}

func FuzzResampler(f *testing.F) {
	f.Add(uint16(8000), uint16(16000), uint8(7), []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10})
	f.Add(uint16(44100), uint16(8000), uint8(160), []byte{0xFF, 0x7F, 0x00, 0x80})
	f.Fuzz(func(t *testing.T, from, to uint16, chunk uint8, raw []byte) {
		// Rates from 8 kHz to 48 kHz keep each run fast.
		fromRate := 8000 + int(from)%40001
		toRate := 8000 + int(to)%40001
		src := make([]int16, len(raw)/2)
		for i := range src {
			src[i] = int16(uint16(raw[2*i]) | uint16(raw[2*i+1])<<8)
		}
		out := Resample(nil, src, fromRate, toRate)
		if want := (len(src)*toRate + fromRate - 1) / fromRate; len(out) != want {
			t.Fatalf("%d->%d: %d samples from %d, want %d", fromRate, toRate, len(out), len(src), want)
		}
		r, err := NewResampler(fromRate, toRate)
		if err != nil {
			t.Fatal(err)
		}
		step := int(chunk)%64 + 1
		var got []int16
		for i := 0; i < len(src); i += step {
			got = r.Process(got, src[i:min(i+step, len(src))])
		}
		if limit := len(src)*toRate/fromRate + 2; len(got) > limit {
			t.Fatalf("%d->%d: stream gave %d samples for %d", fromRate, toRate, len(got), len(src))
		}
	})
}
