package prompt

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/bib-project/bib/bridge/codec"
)

// The embedded copies must be the files testdata/prompts/generate.sh wrote.
func TestEmbeddedMatchesTestdata(t *testing.T) {
	names := Names()
	if len(names) < 2 {
		t.Fatalf("embedded prompts %v, want at least agent and customer", names)
	}
	for _, n := range names {
		emb, err := MP3(n)
		if err != nil {
			t.Fatal(err)
		}
		disk, err := os.ReadFile(filepath.Join("..", "..", "..", "testdata", "prompts", n+".mp3"))
		if err != nil {
			t.Fatalf("testdata copy of %s: %v", n, err)
		}
		if !bytes.Equal(emb, disk) {
			t.Errorf("cmd/internal/prompt/mp3/%s.mp3 differs from testdata/prompts/%s.mp3: copy it again (see testdata/prompts/README.md)", n, n)
		}
		if len(emb) > 100<<10 {
			t.Errorf("%s.mp3 is %d bytes, keep prompts under 100 KB", n, len(emb))
		}
	}
}

func TestBuild(t *testing.T) {
	for _, tc := range []struct {
		codec string
		rate  int
		size  int
		spf   int
	}{
		{"PCMU", 8000, 160, 160},
		{"pcma", 8000, 160, 160},
		{"G722", 16000, 160, 320},
	} {
		for _, name := range []string{"agent", "customer"} {
			t.Run(tc.codec+"/"+name, func(t *testing.T) {
				p, err := Build(name, tc.codec)
				if err != nil {
					t.Fatal(err)
				}
				if p.Codec.SampleRate != tc.rate || p.SamplesPerFrame != tc.spf || p.TSPerFrame != 160 {
					t.Fatalf("rate %d spf %d ts %d", p.Codec.SampleRate, p.SamplesPerFrame, p.TSPerFrame)
				}
				if d := p.DurationMS(); d < 3000 || d > 30000 {
					t.Fatalf("duration %d ms, want a few seconds", d)
				}
				for i, f := range p.Frames {
					if len(f) != tc.size {
						t.Fatalf("frame %d: %d bytes, want %d", i, len(f), tc.size)
					}
				}
				if len(p.Decoded) != len(p.PCM) {
					t.Fatalf("decoded %d samples, pcm %d", len(p.Decoded), len(p.PCM))
				}
				// Speech, not silence, and the codec round trip keeps it.
				if lvl := codec.LevelDBFS(p.PCM); lvl < -40 || lvl > -3 {
					t.Fatalf("level %.1f dBFS", lvl)
				}
				lag, c := codec.Correlate(p.PCM, p.Decoded, 40)
				if c < 0.9 {
					t.Fatalf("decoded vs source: coeff %.3f at lag %d", c, lag)
				}
				exp := p.Expected(nil, len(p.Frames)-1, 3)
				if len(exp) != 3*p.SamplesPerFrame {
					t.Fatalf("expected %d samples", len(exp))
				}
				if !slicesEqual(exp[p.SamplesPerFrame:2*p.SamplesPerFrame], p.Decoded[:p.SamplesPerFrame]) {
					t.Fatal("Expected does not loop to frame 0")
				}
			})
		}
	}
}

// The two voices must be told apart by correlation (fidelity checks rely
// on it to detect swapped channels).
func TestVoicesDiffer(t *testing.T) {
	a, err := Get("agent", "PCMU")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Get("customer", "PCMU")
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := Get("agent", "pcmu"); again != a {
		t.Fatal("Get did not cache")
	}
	n := min(len(a.Decoded), len(c.Decoded), 8000*3)
	if _, coeff := codec.Correlate(a.Decoded[:n], c.Decoded[:n], 80); coeff > 0.3 {
		t.Fatalf("agent and customer correlate at %.2f", coeff)
	}
}

func TestUnknown(t *testing.T) {
	if _, err := Build("nope", "PCMU"); err == nil {
		t.Fatal("want error for unknown prompt")
	}
	if _, err := Build("agent", "OPUS"); err == nil {
		t.Fatal("want error for unsupported codec")
	}
	if _, _, err := Decode([]byte("not an mp3 at all")); err == nil {
		t.Fatal("want error for garbage")
	}
}

func slicesEqual(a, b []int16) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func FuzzDecode(f *testing.F) {
	b, _ := MP3("agent")
	f.Add(b[:min(len(b), 2000)])
	f.Add([]byte("ID3\x03\x00\x00\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pcm, rate, err := Decode(data)
		if err == nil && len(pcm) > 0 && rate <= 0 {
			t.Fatalf("rate %d with %d samples", rate, len(pcm))
		}
	})
}
