package storage

import (
	"bytes"
	"errors"
	"io"
	mrand "math/rand/v2"
	"os"
	"testing"
)

// sealCrashed seals pt in flushed pieces of each bytes and never closes the
// writer: what a killed recorder leaves (every flush is whole chunks).
func sealCrashed(t *testing.T, pt []byte, each int) (enc, key []byte) {
	t.Helper()
	key, id := NewContentKey()
	m := &memWriterAt{}
	w, err := NewSealWriter(m, key, id, WithChunkSize(256))
	if err != nil {
		t.Fatal(err)
	}
	for rest := pt; len(rest) > 0; {
		n := min(len(rest), each)
		if _, err := w.Write(rest[:n]); err != nil {
			t.Fatal(err)
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	return m.b, key
}

func TestRecoverSealed(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(7, 8))
	pt := make([]byte, 2000)
	for i := range pt {
		pt[i] = byte(rng.IntN(256))
	}
	complete, ckey, _ := sealBytes(t, pt, 256, rng)
	crashed, key := sealCrashed(t, pt, 300)
	offs := chunkOffsets(t, crashed)
	last := offs[len(offs)-1]
	lastN := len(crashed) - last - sealChunkOver

	flip := func(b []byte, at int) []byte { b = bytes.Clone(b); b[at] ^= 1; return b }
	type tc struct {
		name      string
		enc, key  []byte
		want      []byte // plaintext; nil: an error
		truncated bool
		dropped   int64
		err       error // for want == nil
		strictErr error // what OpenSealed says
	}
	cases := []tc{
		{"complete", complete, ckey, pt, false, 0, nil, nil},
		{"crashed at a chunk boundary", crashed, key, pt, true, 0, nil, ErrTruncated},
		{"cut inside the last chunk", crashed[:len(crashed)-10], key, pt[:len(pt)-lastN], true, int64(len(crashed) - 10 - last), nil, ErrTruncated},
		{"only the header chunk", crashed[:offs[1]], key, pt[:64], true, 0, nil, ErrTruncated},
		{"cut inside the header chunk", crashed[:offs[0]+10], key, nil, false, 0, ErrTruncated, ErrTruncated},
		{"middle chunk modified", flip(crashed, offs[3]+30), key, nil, false, 0, ErrTampered, ErrTruncated},
		{"last chunk modified", flip(crashed, last+30), key, nil, false, 0, ErrTampered, ErrTampered},
		{"header chunk modified", flip(crashed, offs[0]+30), key, nil, false, 0, ErrTampered, ErrTampered},
		{"garbage after the final chunk", append(bytes.Clone(complete), 1, 2, 3), ckey, nil, false, 0, ErrTampered, ErrTruncated},
		{"length field inflated far beyond the file", func() []byte {
			b := bytes.Clone(crashed)
			b[offs[2]], b[offs[2]+1] = 0, 0x10 // n = 1 MiB: more than a chunk can hold
			return b
		}(), key, nil, false, 0, ErrTampered, ErrTampered},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := RecoverSealed(bytes.NewReader(c.enc), int64(len(c.enc)), c.key)
			if c.want == nil {
				if err == nil {
					_, err = io.ReadAll(r) // middle chunks authenticate when read
				}
				if !errors.Is(err, c.err) {
					t.Fatalf("RecoverSealed: %v, want %v", err, c.err)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(r)
				if err != nil || !bytes.Equal(got, c.want) {
					t.Fatalf("plaintext: %d bytes (%v), want %d", len(got), err, len(c.want))
				}
				if r.Truncated() != c.truncated || r.Dropped() != c.dropped {
					t.Fatalf("truncated %v dropped %d, want %v %d", r.Truncated(), r.Dropped(), c.truncated, c.dropped)
				}
			}
			_, serr := openBytes(c.enc, c.key)
			if c.strictErr == nil && serr != nil || c.strictErr != nil && !errors.Is(serr, c.strictErr) {
				t.Fatalf("OpenSealed: %v, want %v", serr, c.strictErr)
			}
			if n, err := SealedSize(bytes.NewReader(c.enc), int64(len(c.enc))); c.want != nil && (err != nil || n != int64(len(c.want))) {
				t.Fatalf("SealedSize %d (%v), want %d", n, err, len(c.want))
			}
		})
	}
}

// TestSealedFSHeaderRewriteCheckpoints: a WAV writer that only rewrites
// its header sizes (no Sync) and is then killed leaves everything written
// before the rewrite sealed on disk.
func TestSealedFSHeaderRewriteCheckpoints(t *testing.T) {
	priv, rcpt := testKeyPair(t, 0)
	dir := t.TempDir()
	sfs := &SealedFS{Base: noSyncFS{}, To: rcpt}
	name := dir + "/rec.wav.part"
	f, err := sfs.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	hdr := wavHeader(8000, 2, 0)
	pcm := make([]byte, 32000) // one second, less than a chunk
	tone(pcm, 8000, 2, 0)
	f.Write(hdr)
	f.Write(pcm)
	sizes := wavHeader(8000, 2, int64(len(pcm)))
	mustSeekWrite(t, f, 4, sizes[4:8])
	mustSeekWrite(t, f, 40, sizes[40:44])
	f.Seek(0, io.SeekEnd)
	f.Write(make([]byte, 100)) // after the checkpoint: lost in the crash
	// Killed here: no Sync, no Close.
	enc, err := os.ReadFile(name + EncSuffix)
	if err != nil {
		t.Fatal(err)
	}
	esk, _ := os.ReadFile(name + ESKSuffix)
	r, err := RecoverSealedFile(bytes.NewReader(enc), int64(len(enc)), esk, priv)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil || !r.Truncated() || !bytes.Equal(got, append(sizes, pcm...)) {
		t.Fatalf("recovered %d bytes (%v, truncated %v), want the %d written before the header rewrite", len(got), err, r.Truncated(), 44+len(pcm))
	}
	f.Close()
}

// FuzzRecoverSealed: whatever the bytes, RecoverSealed neither panics nor
// yields plaintext that did not authenticate: a file that opens reads to
// its end or fails with ErrTampered, and a prefix of a genuine file reads
// as a prefix of its plaintext.
func FuzzRecoverSealed(f *testing.F) {
	rng := mrand.New(mrand.NewPCG(9, 10))
	pt := bytes.Repeat([]byte("recover-"), 100)
	enc, key, _ := sealBytes(f, pt, 64, rng)
	f.Add(enc, uint16(len(enc)))
	f.Add(enc, uint16(len(enc)-20))
	f.Add(enc, uint16(200))
	f.Fuzz(func(t *testing.T, b []byte, cut uint16) {
		if int(cut) < len(b) {
			b = b[:cut]
		}
		r, err := RecoverSealed(bytes.NewReader(b), int64(len(b)), key)
		if err != nil {
			return
		}
		got, err := io.ReadAll(r)
		if err != nil {
			if !errors.Is(err, ErrTampered) {
				t.Fatalf("read: %v", err)
			}
			return
		}
		if !bytes.HasPrefix(pt, got) {
			t.Fatalf("recovered %d bytes that are not a prefix of the plaintext", len(got))
		}
		if !r.Truncated() && !bytes.Equal(got, pt) {
			t.Fatal("complete file with other plaintext")
		}
	})
}
