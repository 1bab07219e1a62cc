package recorder

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/bib-project/bib/storage"
)

func TestWAVWriterRoundTrip(t *testing.T) {
	for _, tc := range []struct{ rate, ch int }{{8000, 2}, {16000, 1}, {8000, 1}} {
		f, err := os.Create(filepath.Join(t.TempDir(), "x.wav"))
		if err != nil {
			t.Fatal(err)
		}
		w, err := NewWAVWriter(f, tc.rate, tc.ch)
		if err != nil {
			t.Fatal(err)
		}
		pcm := tone(440, 9000, 0, 10000*tc.ch)
		if err := w.Write(pcm[:5000*tc.ch]); err != nil {
			t.Fatal(err)
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := w.Write(pcm[5000*tc.ch:]); err != nil {
			t.Fatal(err)
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		b, _ := os.ReadFile(f.Name())
		info, l, r := decodeWAV(t, b)
		if info.Rate != tc.rate || info.Channels != tc.ch || w.Frames() != 10000 || info.Frames() != 10000 {
			t.Fatalf("%+v frames %d", info, w.Frames())
		}
		got := l
		if tc.ch == 2 {
			got = make([]int16, 0, 20000)
			for i := range l {
				got = append(got, l[i], r[i])
			}
		}
		if !slices.Equal(got, pcm) {
			t.Fatal("samples differ")
		}
	}
	if _, err := NewWAVWriter(nil, 44100, 2); !errors.Is(err, ErrFormat) {
		t.Fatalf("44.1 kHz: %v", err)
	}
}

// memFile is an in-memory storage.File.
type memFile struct {
	b   []byte
	off int64
}

func (m *memFile) Read(p []byte) (int, error) {
	if m.off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[m.off:])
	m.off += int64(n)
	return n, nil
}

func (m *memFile) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memFile) Write(p []byte) (int, error) {
	n, err := m.WriteAt(p, m.off)
	m.off += int64(n)
	return n, err
}

func (m *memFile) WriteAt(p []byte, off int64) (int, error) {
	if end := off + int64(len(p)); end > int64(len(m.b)) {
		m.b = append(m.b, make([]byte, end-int64(len(m.b)))...)
	}
	return copy(m.b[off:], p), nil
}

func (m *memFile) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		off += m.off
	case io.SeekEnd:
		off += int64(len(m.b))
	}
	m.off = off
	return off, nil
}

func (m *memFile) Truncate(n int64) error {
	if n < int64(len(m.b)) {
		m.b = m.b[:n]
	}
	return nil
}

func (m *memFile) Stat() (os.FileInfo, error) { return memInfo(len(m.b)), nil }
func (m *memFile) Sync() error                { return nil }
func (m *memFile) Close() error               { return nil }

type memInfo int64

func (i memInfo) Name() string       { return "mem" }
func (i memInfo) Size() int64        { return int64(i) }
func (i memInfo) Mode() os.FileMode  { return 0 }
func (i memInfo) ModTime() time.Time { return time.Time{} }
func (i memInfo) IsDir() bool        { return false }
func (i memInfo) Sys() any           { return nil }

func TestRepairWAV(t *testing.T) {
	for _, tc := range []struct {
		name      string
		flushed   int // frames covered by the last header rewrite
		written   int // frames on disk
		tailBytes int // partial frame after them
	}{
		{"never flushed", 0, 1000, 0},
		{"flushed then more", 400, 1000, 3},
		{"half frame", 1000, 1000, 2},
		{"header only", 0, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &memFile{}
			w, err := NewWAVWriter(f, 8000, 2)
			if err != nil {
				t.Fatal(err)
			}
			pcm := tone(300, 5000, 100, 2*tc.written)
			_ = w.Write(pcm[:2*tc.flushed])
			_ = w.Flush()
			_ = w.Write(pcm[2*tc.flushed:])
			f.b = append(f.b, make([]byte, tc.tailBytes)...)
			info, err := RepairWAV(f)
			if err != nil {
				t.Fatal(err)
			}
			if info.Frames() != int64(tc.written) {
				t.Fatalf("repaired %d frames, want %d", info.Frames(), tc.written)
			}
			_, l, r := decodeWAV(t, f.b)
			for i := range l {
				if l[i] != pcm[2*i] || r[i] != pcm[2*i+1] {
					t.Fatalf("frame %d differs", i)
				}
			}
		})
	}
	if _, err := RepairWAV(&memFile{b: []byte("garbage that is not a wav file at all......")}); !errors.Is(err, ErrNotWAV) {
		t.Fatalf("garbage: %v", err)
	}
}

func FuzzRepairWAV(f *testing.F) {
	good := &memFile{}
	w, _ := NewWAVWriter(good, 16000, 1)
	_ = w.Write(tone(100, 1000, 0, 50))
	f.Add(good.b)
	f.Add(good.b[:30])
	f.Add([]byte("RIFF\x00\x00\x00\x00WAVEdata\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m := &memFile{b: slices.Clone(b)}
		info, err := RepairWAV(m)
		if err != nil {
			return
		}
		// A repaired file parses, and its header matches its length.
		again, err := ParseWAVHeader(bytes.NewReader(m.b))
		if err != nil {
			t.Fatalf("repaired file does not parse: %v", err)
		}
		if again.DataOffset+again.DataBytes != int64(len(m.b)) || again.DataBytes%int64(2*info.Channels) != 0 {
			t.Fatalf("header %+v, file %d bytes", again, len(m.b))
		}
	})
}

// Crash: a recording written but never finalized is repaired at the next
// start into a playable WAV marked interrupted.
func TestCrashRepair(t *testing.T) {
	dir := t.TempDir()
	st, err := storage.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	blob, err := st.Create(ctx, storage.Meta{CallID: "crash", StartTime: wall0})
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWAVWriter(blob, 8000, 2)
	if err != nil {
		t.Fatal(err)
	}
	pcm := tone(440, 3000, 500, 2*8000*3)
	_ = w.Write(pcm[:2*8000])
	_ = w.Flush()             // the header covers 1 s
	_ = w.Write(pcm[2*8000:]) // 2 s more, then the process dies mid-frame
	_, _ = blob.Write([]byte{1, 2, 3})
	// kill -9: nothing is finalized; the index stays as it was.
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { blob.Close() })

	st2, err := storage.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	fixed, err := Repair(ctx, st2)
	if err != nil {
		t.Fatal(err)
	}
	if len(fixed) != 1 || fixed[0].Status != storage.StatusInterrupted || fixed[0].Reason == "" {
		t.Fatalf("repaired %+v", fixed)
	}
	m, err := st2.Get(ctx, blob.ID())
	if err != nil {
		t.Fatal(err)
	}
	if m.Status != storage.StatusInterrupted || m.DurationMS != 3000 || m.SampleRate != 8000 || m.SizeBytes != 44+3*8000*4 {
		t.Fatalf("meta %+v", m)
	}
	info, l, _ := readWAV(t, st2, m.ID, "")
	if info.Frames() != 24000 || l[23999] != pcm[2*23999] {
		t.Fatalf("repaired audio: %+v", info)
	}
	if probs, err := st2.Verify(ctx); err != nil || len(probs) != 0 {
		t.Fatalf("verify after repair: %v %+v", err, probs)
	}
	// A second start finds nothing left to repair.
	if again, err := Repair(ctx, st2); err != nil || len(again) != 0 {
		t.Fatalf("second repair: %v %+v", err, again)
	}
}

// A crash before the first audio (empty file) still yields a playable WAV.
func TestCrashRepairEmpty(t *testing.T) {
	dir := t.TempDir()
	st, _ := storage.OpenDir(dir)
	ctx := context.Background()
	blob, err := st.Create(ctx, storage.Meta{CallID: "early", SampleRate: 16000})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	blob.Close()
	st2, _ := storage.OpenDir(dir)
	defer st2.Close()
	if _, err := Repair(ctx, st2); err != nil {
		t.Fatal(err)
	}
	info, l, _ := readWAV(t, st2, blob.ID(), "")
	if info.Rate != 16000 || info.Channels != 2 || len(l) != 0 {
		t.Fatalf("%+v", info)
	}
}
