package storage

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"math"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"
)

var (
	testKeyOnce sync.Once
	testKeys    [2]*rsa.PrivateKey
)

// testKeyPair returns one of two cached 2048-bit keys and its Recipient.
func testKeyPair(t testing.TB, i int) (*rsa.PrivateKey, *Recipient) {
	t.Helper()
	testKeyOnce.Do(func() {
		for j := range testKeys {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			testKeys[j] = k
		}
	})
	k := testKeys[i]
	fp, err := KeyFingerprint(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return k, &Recipient{Key: &k.PublicKey, KeySHA256: fp}
}

// memWriterAt is an in-memory io.WriterAt.
type memWriterAt struct{ b []byte }

func (m *memWriterAt) WriteAt(p []byte, off int64) (int, error) {
	if end := int(off) + len(p); end > len(m.b) {
		m.b = append(m.b, make([]byte, end-len(m.b))...)
	}
	return copy(m.b[off:], p), nil
}

// sealBytes seals pt written in random pieces with random flushes.
func sealBytes(t testing.TB, pt []byte, chunk int, rng *mrand.Rand) (enc, key []byte, id [16]byte) {
	t.Helper()
	key, id = NewContentKey()
	m := &memWriterAt{}
	w, err := NewSealWriter(m, key, id, WithChunkSize(chunk))
	if err != nil {
		t.Fatal(err)
	}
	for rest := pt; len(rest) > 0; {
		n := min(len(rest), 1+rng.IntN(3*chunk))
		if _, err := w.Write(rest[:n]); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
		if rng.IntN(4) == 0 {
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return m.b, key, id
}

func openBytes(enc, key []byte) ([]byte, error) {
	r, err := OpenSealed(bytes.NewReader(enc), int64(len(enc)), key)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

func TestSealRoundTrip(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(1, 2))
	for _, tc := range []struct {
		name  string
		size  int
		chunk int
	}{
		{"empty", 0, 100},
		{"one byte", 1, 100},
		{"header minus one", 63, 100},
		{"header exactly", 64, 100},
		{"header plus one", 65, 100},
		{"one data chunk", 64 + 100, 100},
		{"many chunks", 64 + 100*37 + 7, 100},
		{"default chunk", 200_000, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pt := make([]byte, tc.size)
			for i := range pt {
				pt[i] = byte(rng.Uint32())
			}
			chunk := tc.chunk
			if chunk == 0 {
				chunk = sealDataChunk
			}
			enc, key, _ := sealBytes(t, pt, chunk, rng)
			got, err := openBytes(enc, key)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, pt) {
				t.Fatalf("round trip: got %d bytes, want %d (equal=%v)", len(got), len(pt), bytes.Equal(got, pt))
			}
			// Random access.
			r, err := OpenSealed(bytes.NewReader(enc), int64(len(enc)), key)
			if err != nil {
				t.Fatal(err)
			}
			for range 50 {
				if len(pt) == 0 {
					break
				}
				off := rng.IntN(len(pt))
				n := rng.IntN(len(pt)-off) + 1
				buf := make([]byte, n)
				if _, err := r.ReadAt(buf, int64(off)); err != nil && err != io.EOF {
					t.Fatal(err)
				}
				if !bytes.Equal(buf, pt[off:off+n]) {
					t.Fatalf("ReadAt(%d, %d) differs", off, n)
				}
			}
		})
	}
}

// TestSealHeaderRewrite rewrites a WAV-like header many times, as the
// recorder does every second, and checks each re-seal used a fresh nonce.
func TestSealHeaderRewrite(t *testing.T) {
	key, id := NewContentKey()
	m := &memWriterAt{}
	w, err := NewSealWriter(m, key, id, WithChunkSize(1000))
	if err != nil {
		t.Fatal(err)
	}
	hdr := make([]byte, 44)
	copy(hdr, "RIFF....WAVEfmt ")
	if _, err := w.Write(hdr); err != nil {
		t.Fatal(err)
	}
	nonces := map[string]bool{}
	var want bytes.Buffer
	data := bytes.Repeat([]byte{1, 2, 3, 4, 5, 6, 7, 8}, 500)
	for i := range 20 {
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
		want.Write(data)
		var sz [4]byte
		binary.LittleEndian.PutUint32(sz[:], uint32(want.Len()))
		if _, err := w.Seek(40, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(sz[:]); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Seek(0, io.SeekEnd); err != nil {
			t.Fatal(err)
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		nonce := string(m.b[sealHeaderLen+4 : sealHeaderLen+4+sealNonceLen])
		if nonces[nonce] {
			t.Fatalf("rewrite %d reused a header-chunk nonce", i)
		}
		nonces[nonce] = true
		copy(hdr[40:], sz[:])
	}
	// Writing into sealed data is refused.
	if _, err := w.WriteAt([]byte{0}, 100); !errors.Is(err, ErrSealed) {
		t.Fatalf("rewrite of sealed data: err %v, want ErrSealed", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := openBytes(m.b, key)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, append(hdr, want.Bytes()...)) {
		t.Fatal("content after header rewrites differs")
	}
}

// chunkOffsets returns the ciphertext offsets of each chunk record.
func chunkOffsets(t *testing.T, enc []byte) []int {
	t.Helper()
	var offs []int
	for off := sealHeaderLen; off < len(enc); {
		offs = append(offs, off)
		n := int(binary.BigEndian.Uint32(enc[off:]))
		if off == sealHeaderLen {
			n = sealHeadChunk
		}
		off += sealChunkOver + n
	}
	return offs
}

func TestSealTamper(t *testing.T) {
	priv, rcpt := testKeyPair(t, 0)
	priv2, _ := testKeyPair(t, 1)
	rng := mrand.New(mrand.NewPCG(3, 4))
	pt := make([]byte, 64+100*10) // header chunk + 10 full data chunks + empty final
	for i := range pt {
		pt[i] = byte(i)
	}
	enc, key, id := sealBytes(t, pt, 100, rng)
	esk, err := WrapKey(rcpt, key, id, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	other, okey, oid := sealBytes(t, pt, 100, rng)
	otherESK, err := WrapKey(rcpt, okey, oid, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	_ = other
	offs := chunkOffsets(t, enc)
	flip := func(at int) []byte {
		b := bytes.Clone(enc)
		b[at] ^= 0x01
		return b
	}
	swap := func(i, j int) []byte { // two data chunks of equal size
		b := bytes.Clone(enc)
		li := offs[i+1] - offs[i]
		ci := bytes.Clone(b[offs[i]:offs[i+1]])
		copy(b[offs[i]:], b[offs[j]:offs[j]+li])
		copy(b[offs[j]:], ci)
		return b
	}
	last := len(offs) - 1
	for _, tc := range []struct {
		name string
		enc  []byte
		esk  []byte
		priv *rsa.PrivateKey
		want error
	}{
		{"intact", enc, esk, priv, nil},
		{"magic", flip(0), esk, priv, ErrNotSealed},
		{"file header size field", flip(15), esk, priv, ErrTampered},
		{"file id", flip(20), esk, priv, ErrKeyMismatch},
		{"header chunk nonce", flip(offs[0] + 5), esk, priv, ErrTampered},
		{"header chunk ciphertext", flip(offs[0] + 30), esk, priv, ErrTampered},
		{"data chunk length", flip(offs[3] + 3), esk, priv, nil}, // any error
		{"data chunk ciphertext", flip(offs[4] + 40), esk, priv, ErrTampered},
		{"data chunk tag", flip(offs[5+1] - 1), esk, priv, ErrTampered},
		{"final chunk tag", flip(len(enc) - 1), esk, priv, ErrTampered},
		{"reordered chunks", swap(2, 5), esk, priv, ErrTampered},
		{"truncated mid chunk", enc[:offs[6]+50], esk, priv, ErrTruncated},
		{"final chunk dropped", enc[:offs[last]], esk, priv, ErrTruncated},
		{"cut to header", enc[:sealHeaderLen+sealChunkOver+sealHeadChunk], esk, priv, ErrTruncated},
		{"trailing garbage", append(bytes.Clone(enc), 0, 0, 0, 0, 1), esk, priv, ErrTruncated},
		{"empty file", nil, esk, priv, ErrNotSealed},
		{"swapped esk", enc, otherESK, priv, ErrKeyMismatch},
		{"wrong private key", enc, esk, priv2, ErrWrongKey},
		{"esk not json", enc, []byte("hello"), priv, ErrBadESK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := OpenSealedFile(bytes.NewReader(tc.enc), int64(len(tc.enc)), tc.esk, tc.priv)
			if err == nil {
				var got []byte
				got, err = io.ReadAll(r)
				if err == nil && !bytes.Equal(got, pt) {
					t.Fatal("decrypted without error but content differs")
				}
			}
			switch {
			case tc.name == "intact":
				if err != nil {
					t.Fatalf("intact file: %v", err)
				}
			case tc.want == nil:
				if err == nil {
					t.Fatal("tampered file decrypted without error")
				}
			case !errors.Is(err, tc.want):
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if err != nil {
				t.Logf("%v", err)
			}
		})
	}
}

func TestSealedESKUnwrapTamper(t *testing.T) {
	priv, rcpt := testKeyPair(t, 0)
	key, id := NewContentKey()
	b, err := WrapKey(rcpt, key, id, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	e, err := ParseESK(b)
	if err != nil {
		t.Fatal(err)
	}
	e.WrappedKey[10] ^= 1
	if _, err := e.Unwrap(priv); !errors.Is(err, ErrBadESK) {
		t.Fatalf("modified wrapped key: %v, want ErrBadESK", err)
	}
}

// noSyncFS is the OS file system without fsync (fast tests).
type noSyncFS struct{ OSFS }

type noSyncFile struct{ File }

func (noSyncFile) Sync() error { return nil }

func (n noSyncFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	f, err := n.OSFS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return noSyncFile{f}, nil
}

// wavHeader is a canonical 44-byte PCM header.
func wavHeader(rate, channels int, data int64) []byte {
	h := make([]byte, 44)
	copy(h, "RIFF")
	binary.LittleEndian.PutUint32(h[4:], uint32(36+data))
	copy(h[8:], "WAVEfmt ")
	binary.LittleEndian.PutUint32(h[16:], 16)
	binary.LittleEndian.PutUint16(h[20:], 1)
	binary.LittleEndian.PutUint16(h[22:], uint16(channels))
	binary.LittleEndian.PutUint32(h[24:], uint32(rate))
	binary.LittleEndian.PutUint32(h[28:], uint32(rate*channels*2))
	binary.LittleEndian.PutUint16(h[32:], uint16(channels*2))
	binary.LittleEndian.PutUint16(h[34:], 16)
	copy(h[36:], "data")
	binary.LittleEndian.PutUint32(h[40:], uint32(data))
	return h
}

// tone fills pcm (interleaved) with a 1 kHz sine at rate Hz.
func tone(pcm []byte, rate, channels int, start int) {
	for i := 0; i < len(pcm)/(2*channels); i++ {
		v := int16(8000 * math.Sin(2*math.Pi*1000*float64(start+i)/float64(rate)))
		for c := range channels {
			binary.LittleEndian.PutUint16(pcm[(i*channels+c)*2:], uint16(v))
		}
	}
}

// writeWAV writes seconds of tone through f the way the recorder does: a
// header, 20 ms frames, and every second a header-size rewrite and a Sync.
// It calls each after every second.
func writeWAV(t testing.TB, f File, rate, channels, seconds int, each func(sec int)) {
	t.Helper()
	frame := make([]byte, rate/50*channels*2)
	if _, err := f.Write(wavHeader(rate, channels, 0)); err != nil {
		t.Fatal(err)
	}
	var data int64
	for sec := range seconds {
		for fr := range 50 {
			tone(frame, rate, channels, (sec*50+fr)*rate/50)
			if _, err := f.Write(frame); err != nil {
				t.Fatal(err)
			}
			data += int64(len(frame))
		}
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], uint32(36+data))
		mustSeekWrite(t, f, 4, b[:])
		binary.LittleEndian.PutUint32(b[:], uint32(data))
		mustSeekWrite(t, f, 40, b[:])
		if _, err := f.Seek(0, io.SeekEnd); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		if each != nil {
			each(sec)
		}
	}
}

func mustSeekWrite(t testing.TB, f File, off int64, b []byte) {
	t.Helper()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
}

// TestSealedFSLongRecordingMemoryFlat writes 10 minutes of 8 kHz stereo
// (19.2 MB) through SealedFS and checks the heap does not grow with it,
// then decrypts and compares.
func TestSealedFSLongRecordingMemoryFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("long recording")
	}
	priv, rcpt := testKeyPair(t, 0)
	dir := t.TempDir()
	sfs := &SealedFS{Base: noSyncFS{}, To: rcpt}
	name := filepath.Join(dir, "long.wav.part")
	f, err := sfs.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	const rate, channels, minutes = 8000, 2, 10
	var base, peak uint64
	var ms runtime.MemStats
	writeWAV(t, f, rate, channels, minutes*60, func(sec int) {
		if sec%60 != 0 {
			return
		}
		runtime.GC()
		runtime.ReadMemStats(&ms)
		if sec == 0 {
			base = ms.HeapAlloc
		}
		peak = max(peak, ms.HeapAlloc)
	})
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	growth := int64(peak) - int64(base)
	t.Logf("heap at 1 s: %d KiB, peak over 10 min: %d KiB (growth %d KiB; stream %d MB)",
		base>>10, peak>>10, growth>>10, rate*channels*2*60*minutes/1_000_000)
	if growth > 2<<20 {
		t.Fatalf("heap grew by %d KiB while writing: the stream is being buffered", growth>>10)
	}
	if err := sfs.Rename(name, filepath.Join(dir, "long.wav")); err != nil {
		t.Fatal(err)
	}
	enc, err := os.Open(filepath.Join(dir, "long.wav.enc"))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	fi, _ := enc.Stat()
	esk, err := os.ReadFile(filepath.Join(dir, "long.wav.esk"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := OpenSealedFile(enc, fi.Size(), esk, priv)
	if err != nil {
		t.Fatal(err)
	}
	wantSize := int64(44 + rate*channels*2*60*minutes)
	if r.Size() != wantSize {
		t.Fatalf("plaintext size %d, want %d", r.Size(), wantSize)
	}
	// Compare against a regenerated stream, chunk by chunk.
	got := make([]byte, 44)
	if _, err := io.ReadFull(r, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, wavHeader(rate, channels, wantSize-44)) {
		t.Fatal("final WAV header differs")
	}
	frame := make([]byte, rate/50*channels*2)
	want := make([]byte, len(frame))
	for i := 0; i < minutes*60*50; i++ {
		tone(want, rate, channels, i*rate/50)
		if _, err := io.ReadFull(r, frame); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !bytes.Equal(frame, want) {
			t.Fatalf("frame %d differs", i)
		}
	}
	t.Logf("ciphertext %d bytes for %d plaintext (%d chunks, overhead %.3f%%)", fi.Size(), wantSize, r.Chunks(),
		100*float64(fi.Size()-wantSize)/float64(wantSize))
}

// TestSealedFSNoPlaintextOnDisk writes a tone WAV and a JSON sidecar
// through SealedFS and scans every file in the directory for any 64-byte
// window of either plaintext. A positive control writes the same through
// OSFS and must be found.
func TestSealedFSNoPlaintextOnDisk(t *testing.T) {
	_, rcpt := testKeyPair(t, 0)
	const rate, channels, seconds = 8000, 1, 3
	write := func(fsys FS, dir string) (wav, sidecar []byte) {
		f, err := fsys.OpenFile(filepath.Join(dir, "rec.wav.part"), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
		if err != nil {
			t.Fatal(err)
		}
		writeWAV(t, f, rate, channels, seconds, nil)
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		if err := fsys.Rename(filepath.Join(dir, "rec.wav.part"), filepath.Join(dir, "rec.wav")); err != nil {
			t.Fatal(err)
		}
		sidecar = bytes.Repeat([]byte(`{"call_id":"secret-call-1234","near":{"line":"2001"}}`), 4)
		g, err := fsys.OpenFile(filepath.Join(dir, "rec.json"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := g.Write(sidecar); err != nil {
			t.Fatal(err)
		}
		if err := g.Close(); err != nil {
			t.Fatal(err)
		}
		wav = wavHeader(rate, channels, int64(rate*channels*2*seconds))
		pcm := make([]byte, rate*channels*2*seconds)
		tone(pcm, rate, channels, 0)
		return append(wav, pcm...), sidecar
	}
	scan := func(dir string, plain ...[]byte) (hits []string) {
		windows := map[string]bool{}
		for _, p := range plain {
			for i := 0; i+64 <= len(p); i++ {
				windows[string(p[i:i+64])] = true
			}
		}
		_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i+64 <= len(b); i++ {
				if windows[string(b[i:i+64])] {
					hits = append(hits, filepath.Base(p))
					break
				}
			}
			return nil
		})
		return hits
	}
	plainDir := t.TempDir()
	wav, sc := write(noSyncFS{}, plainDir)
	if hits := scan(plainDir, wav, sc); len(hits) != 2 {
		t.Fatalf("control: scanning plaintext files found %v, want both files", hits)
	}
	dir := t.TempDir()
	write(&SealedFS{Base: noSyncFS{}, To: rcpt}, dir)
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	t.Logf("files: %v", names)
	if len(names) != 4 {
		t.Fatalf("files %v, want rec.wav.enc/.esk and rec.json.enc/.esk", names)
	}
	if hits := scan(dir, wav, sc); len(hits) > 0 {
		t.Fatalf("plaintext found on disk in %v", hits)
	}
}

func TestSealedFSOps(t *testing.T) {
	priv, rcpt := testKeyPair(t, 0)
	dir := t.TempDir()
	sfs := &SealedFS{Base: OSFS{}, To: rcpt, ChunkSize: 128}
	p := filepath.Join(dir, "a.wav.part")
	f, err := sfs.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sfs.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("O_EXCL on existing: %v", err)
	}
	content := bytes.Repeat([]byte("abcdefgh"), 100)
	if _, err := f.Write(content); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Read(make([]byte, 1)); !errors.Is(err, ErrSealed) {
		t.Fatalf("Read: %v", err)
	}
	if _, err := f.ReadAt(make([]byte, 1), 0); !errors.Is(err, ErrSealed) {
		t.Fatalf("ReadAt: %v", err)
	}
	if err := f.Truncate(0); !errors.Is(err, ErrSealed) {
		t.Fatalf("Truncate: %v", err)
	}
	if fi, err := f.Stat(); err != nil || fi.Size() != int64(len(content)) {
		t.Fatalf("Stat: %v size %d", err, fi.Size())
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := sfs.OpenFile(p, os.O_RDWR, 0); !errors.Is(err, ErrSealed) {
		t.Fatalf("reopen for writing: %v", err)
	}
	final := filepath.Join(dir, "a.wav")
	if err := sfs.Rename(p, final); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{p + EncSuffix, p + ESKSuffix} {
		if _, err := os.Stat(n); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%s still there after rename", n)
		}
	}
	r, err := sfs.OpenFile(final, os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 6)
	if _, err := r.ReadAt(head, 0); err != nil || string(head) != sealMagic {
		t.Fatalf("read-only open: %q %v, want the ciphertext", head, err)
	}
	fi, _ := r.Stat()
	esk, _ := os.ReadFile(final + ESKSuffix)
	sr, err := OpenSealedFile(r, fi.Size(), esk, priv)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(sr)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("decrypt: %v", err)
	}
	r.Close()
	if err := sfs.Remove(final); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("left after Remove: %v", ents)
	}
	if err := sfs.Remove(final); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Remove missing: %v", err)
	}
}

func FuzzOpenSealed(f *testing.F) {
	rng := mrand.New(mrand.NewPCG(5, 6))
	pt := bytes.Repeat([]byte("fuzz"), 100)
	enc, key, _ := sealBytes(f, pt, 64, rng)
	f.Add(enc)
	f.Add(enc[:len(enc)/2])
	f.Add([]byte(sealMagic + "\x01\x00\x00\x00\x00\x40\x00\x00\x00\x40"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := OpenSealed(bytes.NewReader(b), int64(len(b)), key)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, r)
	})
}

func FuzzParseESK(f *testing.F) {
	f.Add([]byte(`{"format":"bib-esk-1","cipher":"AES-256-GCM-CHUNKED-1","wrap":"RSA-OAEP-SHA256-MGF1-SHA256","wrapped_key":"AAAA"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseESK(b)
	})
}

// BenchmarkSealWriter writes 20 ms stereo frames (640 bytes), the
// recorder's unit of work.
func BenchmarkSealWriter(b *testing.B) {
	key, id := NewContentKey()
	w, err := NewSealWriter(discardAt{}, key, id)
	if err != nil {
		b.Fatal(err)
	}
	frame := make([]byte, 640)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := w.Write(frame); err != nil {
			b.Fatal(err)
		}
	}
}

type discardAt struct{}

func (discardAt) WriteAt(p []byte, _ int64) (int, error) { return len(p), nil }
