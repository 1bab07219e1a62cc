package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)

func openTest(t *testing.T) *DirStore {
	t.Helper()
	st, err := OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// record creates and commits a recording with the given content.
func record(t *testing.T, st Store, m Meta, content string) Meta {
	t.Helper()
	ctx := context.Background()
	b, err := st.Create(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(b, content); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(ctx, m); err != nil {
		t.Fatal(err)
	}
	got, err := st.Get(ctx, b.ID())
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestIDs(t *testing.T) {
	a, b := NewID(t0), NewID(t0.Add(time.Millisecond))
	if !ValidID(a) || !ValidID(b) || a >= b || a == NewID(t0) {
		t.Fatalf("ids %s %s not valid, unique and sortable", a, b)
	}
	if got := idTime(a); !got.Equal(t0) {
		t.Fatalf("id time %v", got)
	}
	for _, bad := range []string{"", "../../../etc/passwd", strings.Repeat("z", 26), strings.ToUpper(a)} {
		if ValidID(bad) {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzCursor(f *testing.F) {
	f.Add(encodeCursor(NewID(t0)))
	f.Add("")
	f.Add("%%%")
	f.Fuzz(func(t *testing.T, c string) {
		id, err := decodeCursor(c)
		if err != nil {
			return
		}
		if !ValidID(id) || decodeCursorMust(t, encodeCursor(id)) != id {
			t.Fatalf("cursor %q decoded to %q", c, id)
		}
	})
}

func decodeCursorMust(t *testing.T, c string) string {
	id, err := decodeCursor(c)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestCreateCommitGetOpen(t *testing.T) {
	st := openTest(t)
	ctx := context.Background()
	m := Meta{CallID: "call-1", StartTime: t0, Near: Party{Device: "CSFJSMITH", Line: "1001"}, Channels: 2, SampleRate: 8000}
	b, err := st.Create(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := st.Get(ctx, b.ID())
	if got.Status != StatusRecording {
		t.Fatalf("status while recording: %s", got.Status)
	}
	if _, _, err := st.Open(ctx, b.ID(), ""); !errors.Is(err, ErrNoAudio) {
		t.Fatalf("open while recording: %v", err)
	}
	x, err := b.Extra("near")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(x, "near-track")
	if _, err := b.Extra("../x"); !errors.Is(err, ErrInvalidTrack) {
		t.Fatalf("bad track name: %v", err)
	}
	_, _ = io.WriteString(b, "xxxxhello")
	_, _ = b.Seek(0, io.SeekStart)
	_, _ = io.WriteString(b, "HEAD")
	m.DurationMS = 1234
	if err := b.Commit(ctx, m); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(ctx, m); !errors.Is(err, ErrFinished) {
		t.Fatalf("second commit: %v", err)
	}
	got, err = st.Get(ctx, b.ID())
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("HEADhello"))
	if got.Status != StatusComplete || got.SizeBytes != 9 || got.DurationMS != 1234 || got.SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("meta %+v", got)
	}
	f, m2, err := st.Open(ctx, b.ID(), "")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(f)
	f.Close()
	if string(body) != "HEADhello" || m2.ID != b.ID() {
		t.Fatalf("body %q", body)
	}
	f, _, err = st.Open(ctx, b.ID(), "near")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(f)
	f.Close()
	if string(body) != "near-track" || len(got.Tracks) != 1 || got.Tracks[0].Name != "near" {
		t.Fatalf("track %q %+v", body, got.Tracks)
	}
	if _, _, err := st.Open(ctx, b.ID(), "far"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing track: %v", err)
	}
	// Files land in the dated tree with a sidecar.
	day := idTime(b.ID())
	p := filepath.Join(st.Dir(), "recordings", day.Format("2006/01/02"), b.ID())
	for _, suffix := range []string{".wav", ".json", ".near.wav"} {
		if _, err := os.Stat(p + suffix); err != nil {
			t.Errorf("missing %s: %v", suffix, err)
		}
	}
	if _, err := st.Get(ctx, "nope"); !errors.Is(err, ErrInvalidID) {
		t.Fatalf("invalid id: %v", err)
	}
	if _, err := st.Get(ctx, NewID(t0)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
}

func TestListFiltersAndPaging(t *testing.T) {
	st := openTest(t)
	ctx := context.Background()
	var ids []string
	for i := range 7 {
		m := Meta{
			ID: NewID(t0.Add(time.Duration(i) * time.Minute)), CallID: "c", StartTime: t0.Add(time.Duration(i) * time.Minute),
			Near: Party{Device: []string{"SEPA", "SEPB"}[i%2], Line: "100" + string(rune('0'+i%3))},
			Far:  Party{Device: "TRUNK"},
		}
		ids = append(ids, record(t, st, m, "x").ID)
	}
	slices.Reverse(ids) // newest first
	var got []string
	cursor := ""
	for range 10 {
		page, next, err := st.List(ctx, Query{Limit: 3, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range page {
			got = append(got, m.ID)
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if !slices.Equal(got, ids) {
		t.Fatalf("paged %v, want %v", got, ids)
	}
	for _, tc := range []struct {
		q    Query
		want int
	}{
		{Query{Device: "SEPA"}, 4},
		{Query{Device: "TRUNK"}, 7},
		{Query{Line: "1001"}, 2},
		{Query{Since: t0.Add(2 * time.Minute)}, 5},
		{Query{Since: t0.Add(2 * time.Minute), Until: t0.Add(4 * time.Minute)}, 2},
		{Query{Device: "SEPB", Since: t0.Add(3 * time.Minute)}, 2},
	} {
		page, _, err := st.List(ctx, tc.q)
		if err != nil || len(page) != tc.want {
			t.Errorf("%+v: %d results (%v), want %d", tc.q, len(page), err, tc.want)
		}
	}
	if _, _, err := st.List(ctx, Query{Cursor: "bogus!"}); !errors.Is(err, ErrInvalidCursor) {
		t.Fatalf("bad cursor: %v", err)
	}
}

func TestAbortAndUpdate(t *testing.T) {
	st := openTest(t)
	ctx := context.Background()
	b, err := st.Create(ctx, Meta{CallID: "c"})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(b, "partial")
	if err := st.Update(ctx, Meta{ID: b.ID(), CallID: "c", SampleRate: 16000, Status: StatusRecording}); err != nil {
		t.Fatal(err)
	}
	if m, _ := st.Get(ctx, b.ID()); m.SampleRate != 16000 {
		t.Fatalf("update lost: %+v", m)
	}
	if err := b.Abort(ctx, Meta{CallID: "c"}, "disk full"); err != nil {
		t.Fatal(err)
	}
	m, _ := st.Get(ctx, b.ID())
	if m.Status != StatusFailed || m.Reason != "disk full" || m.SizeBytes != 0 {
		t.Fatalf("%+v", m)
	}
	parts, _ := filepath.Glob(filepath.Join(st.Dir(), "recordings", "*", "*", "*", "*.part"))
	if len(parts) != 0 {
		t.Fatalf("abort left %v", parts)
	}
	if probs, err := st.Verify(ctx); err != nil || len(probs) != 0 {
		t.Fatalf("failed recordings are not problems: %v %+v", err, probs)
	}
}

func TestVerify(t *testing.T) {
	st := openTest(t)
	ctx := context.Background()
	good := record(t, st, Meta{CallID: "good"}, "fine")
	gone := record(t, st, Meta{CallID: "gone"}, "bye")
	bad := record(t, st, Meta{CallID: "bad"}, "abcd")
	path := func(id string) string {
		return filepath.Join(st.Dir(), "recordings", idTime(id).Format("2006/01/02"), id+".wav")
	}
	_ = os.Remove(path(gone.ID))
	_ = os.WriteFile(path(bad.ID), []byte("abce"), 0o640)
	_ = os.WriteFile(filepath.Join(filepath.Dir(path(good.ID)), NewID(t0)+".wav"), []byte("?"), 0o640)
	probs, err := st.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]string{}
	for _, p := range probs {
		kinds[p.Kind] = p.ID
	}
	if len(probs) != 3 || kinds["missing"] != gone.ID || kinds["corrupt"] != bad.ID {
		t.Fatalf("problems %+v", probs)
	}
	if _, ok := kinds["orphan"]; !ok {
		t.Fatalf("orphan not reported: %+v", probs)
	}
}

func TestRepair(t *testing.T) {
	dir := t.TempDir()
	st, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	b, err := st.Create(ctx, Meta{CallID: "crashed", StartTime: t0})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(b, "unfinished-bytes")
	x, _ := b.Extra("mixed")
	_, _ = io.WriteString(x, "mix")
	done := record(t, st, Meta{CallID: "fine"}, "ok")
	st.Close() // crash: b is never committed
	b.Close()
	x.Close()

	st2, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	var fixed []string
	out, err := st2.Repair(ctx, func(f File, m *Meta) error {
		fi, _ := f.Stat()
		fixed = append(fixed, fi.Name())
		if err := f.Truncate(10); err != nil { // a fixer may shorten the file
			return err
		}
		m.DurationMS = 42
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 || out[0].ID != b.ID() || len(fixed) != 2 {
		t.Fatalf("repaired %+v (fixer saw %v)", out, fixed)
	}
	m, _ := st2.Get(ctx, b.ID())
	if m.Status != StatusInterrupted || m.Reason == "" || m.SizeBytes != 10 || m.DurationMS != 42 || len(m.Tracks) != 1 {
		t.Fatalf("%+v", m)
	}
	if m2, _ := st2.Get(ctx, done.ID); m2.Status != StatusComplete {
		t.Fatalf("finished recording touched: %+v", m2)
	}
	if probs, err := st2.Verify(ctx); err != nil || len(probs) != 0 {
		t.Fatalf("verify: %v %+v", err, probs)
	}
}

func TestCreateFailsCleanly(t *testing.T) {
	dir := t.TempDir()
	st, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := os.Chmod(filepath.Join(dir, "recordings"), 0o500); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(filepath.Join(dir, "recordings"), 0o750)
	if os.Geteuid() == 0 {
		t.Skip("root ignores directory permissions")
	}
	if _, err := st.Create(context.Background(), Meta{CallID: "c"}); err == nil {
		t.Fatal("create in an unwritable archive succeeded")
	}
}

// openSealedStore opens an archive that encrypts for key i.
func openSealedStore(t *testing.T, dir string, i int) *DirStore {
	t.Helper()
	_, rcpt := testKeyPair(t, i)
	st, err := OpenDir(dir, WithFS(&SealedFS{Base: noSyncFS{}, To: rcpt, ChunkSize: 256}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// sealedMeta is a recording's metadata with fields the index must not keep
// in clear for an encrypted recording.
func sealedMeta() Meta {
	return Meta{
		CallID: "call-enc", RefCI: "77001", StartTime: t0, SampleRate: 8000, Channels: 2,
		Near:        Party{Device: "CSFAGENT1", Line: "1001", Addr: "1001", Name: "Agent Secretname"},
		Far:         Party{Addr: "2001", Name: "Customer Privatename", Stream: DirStats{Packets: 123}},
		Events:      []Event{{Kind: "dtmf", Detail: "dtmf-digits-4711"}},
		GateVerdict: []byte(`{"allowed":true,"why":"verdict-text-9"}`),
		Codecs:      []string{"PCMU"},
	}
}

func decryptFileAt(t *testing.T, st *DirStore, f io.ReaderAt, size int64, esk []byte, key int) []byte {
	t.Helper()
	priv, _ := testKeyPair(t, key)
	r, err := OpenSealedFile(f, size, esk, priv)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestEncryptedStore: with a SealedFS the archive holds only .enc/.esk
// files, the index only the search fields, and everything reads back with
// the key.
func TestEncryptedStore(t *testing.T) {
	dir := t.TempDir()
	st := openSealedStore(t, dir, 0)
	ctx := context.Background()
	audio := strings.Repeat("RIFF-audio-bytes-", 100)
	b, err := st.Create(ctx, sealedMeta())
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(b, audio)
	x, _ := b.Extra("mixed")
	io.WriteString(x, "mixed-track-content")
	if err := b.Commit(ctx, sealedMeta()); err != nil {
		t.Fatal(err)
	}
	if err := st.Update(ctx, func() Meta { m := sealedMeta(); m.ID = b.ID(); m.Status = StatusComplete; return m }()); err != nil {
		t.Fatal(err)
	}
	plain := record(t, openTestAt(t, dir), Meta{CallID: "plain", Near: Party{Name: "Clear Name"}}, "clear")

	var names []string
	filepath.WalkDir(filepath.Join(dir, "recordings"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			names = append(names, strings.TrimPrefix(d.Name(), b.ID()))
		}
		return err
	})
	slices.Sort(names)
	want := []string{".json.enc", ".json.esk", ".mixed.wav.enc", ".mixed.wav.esk", ".wav.enc", ".wav.esk", plain.ID + ".json", plain.ID + ".wav"}
	if !slices.Equal(names, want) {
		t.Fatalf("files %v, want %v", names, want)
	}

	m, err := st.Get(ctx, b.ID())
	if err != nil {
		t.Fatal(err)
	}
	if !m.Encrypted || m.Status != StatusComplete || m.Near.Line != "1001" || m.Far.Addr != "2001" || m.CallID != "call-enc" ||
		m.Near.Name != "" || m.Far.Name != "" || m.Events != nil || m.GateVerdict != nil || m.RefCI != "" || m.Far.Stream.Packets != 0 || len(m.Tracks) != 1 {
		t.Fatalf("index meta of an encrypted recording: %+v", m)
	}
	if list, _, _ := st.List(ctx, Query{Line: "2001"}); len(list) != 1 || list[0].ID != b.ID() {
		t.Fatalf("search by line: %+v", list)
	}
	if pm, _ := st.Get(ctx, plain.ID); pm.Encrypted || pm.Near.Name != "Clear Name" {
		t.Fatalf("clear recording in the same archive: %+v", pm)
	}
	st.Close() // flush the WAL into index.db before scanning it
	st = openSealedStore(t, dir, 0)
	for _, secret := range []string{"Secretname", "Privatename", "dtmf-digits-4711", "verdict-text-9", "77001", "RIFF-audio", "mixed-track"} {
		filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				if raw, _ := os.ReadFile(p); bytes.Contains(raw, []byte(secret)) {
					t.Errorf("%q in clear in %s", secret, p)
				}
			}
			return err
		})
	}

	f, m, err := st.Open(ctx, b.ID(), "")
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := f.(File).Stat()
	esk, _, err := st.Key(ctx, b.ID(), "")
	if err != nil {
		t.Fatal(err)
	}
	if got := decryptFileAt(t, st, f.(io.ReaderAt), fi.Size(), esk, 0); string(got) != audio || fi.Size() != m.SizeBytes {
		t.Fatalf("audio decrypts to %d bytes; stored %d, index %d", len(got), fi.Size(), m.SizeBytes)
	}
	f.Close()
	data, sesk, err := st.Sidecar(ctx, b.ID())
	if err != nil {
		t.Fatal(err)
	}
	var full Meta
	if err := json.Unmarshal(decryptFileAt(t, st, bytes.NewReader(data), int64(len(data)), sesk, 0), &full); err != nil ||
		full.Far.Name != "Customer Privatename" || len(full.Events) != 1 || !full.Encrypted {
		t.Fatalf("sidecar: %v %+v", err, full)
	}
	if _, _, err := st.Key(ctx, plain.ID, ""); !errors.Is(err, ErrNotEncrypted) {
		t.Fatalf("key of a clear recording: %v", err)
	}
	if probs, err := st.Verify(ctx); err != nil || len(probs) != 0 {
		t.Fatalf("verify: %v %+v", err, probs)
	}
	// A plain store (encryption switched off) still reads and verifies it.
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st2 := openTestAt(t, dir)
	if f, _, err := st2.Open(ctx, b.ID(), "mixed"); err != nil {
		t.Fatalf("open encrypted track from a plain store: %v", err)
	} else {
		f.Close()
	}
	if probs, err := st2.Verify(ctx); err != nil || len(probs) != 0 {
		t.Fatalf("verify from a plain store: %v %+v", err, probs)
	}
	// Damage: a missing key file, a changed ciphertext, an orphan.
	base := filepath.Join(dir, "recordings", idTime(b.ID()).Format("2006/01/02"), b.ID())
	os.Remove(base + ".mixed.wav.esk")
	raw, _ := os.ReadFile(base + ".wav.enc")
	raw[100] ^= 1
	os.WriteFile(base+".wav.enc", raw, 0o640)
	os.WriteFile(filepath.Join(filepath.Dir(base), NewID(t0)+".wav.enc"), []byte("?"), 0o640)
	probs, err := st2.Verify(ctx)
	kinds := map[string]int{}
	for _, p := range probs {
		kinds[p.Kind]++
	}
	if err != nil || len(probs) != 3 || kinds["missing"] != 1 || kinds["corrupt"] != 1 || kinds["orphan"] != 1 {
		t.Fatalf("verify damaged: %v %+v", err, probs)
	}
}

func openTestAt(t *testing.T, dir string) *DirStore {
	t.Helper()
	st, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// TestRepairEncrypted: a crash leaves NAME.wav.part.enc/.esk without a
// final chunk; Repair (without the key) publishes it as it is, marks it
// interrupted, and the authenticated part decrypts.
func TestRepairEncrypted(t *testing.T) {
	dir := t.TempDir()
	st := openSealedStore(t, dir, 0)
	ctx := context.Background()
	b, err := st.Create(ctx, sealedMeta())
	if err != nil {
		t.Fatal(err)
	}
	content := strings.Repeat("0123456789", 100)
	io.WriteString(b, content)
	if err := b.Sync(); err != nil { // the recorder's periodic flush
		t.Fatal(err)
	}
	io.WriteString(b, "lost: never flushed")
	st.Close() // crash: no Commit, no Close of the blob

	st2 := openSealedStore(t, dir, 1) // restarted with another certificate
	var sawSize int64
	var readErr error
	out, err := st2.Repair(ctx, func(f File, m *Meta) error {
		fi, _ := f.Stat()
		sawSize = fi.Size()
		_, readErr = f.ReadAt(make([]byte, 1), 0)
		m.DurationMS = 42
		return nil
	})
	if err != nil || len(out) != 1 {
		t.Fatalf("repair: %v %+v", err, out)
	}
	if sawSize != int64(len(content)) || !errors.Is(readErr, ErrSealed) {
		t.Fatalf("fixer saw size %d and read error %v", sawSize, readErr)
	}
	m, _ := st2.Get(ctx, b.ID())
	if m.Status != StatusInterrupted || !strings.Contains(m.Reason, "decrypted") || m.DurationMS != 42 || !m.Encrypted || m.Far.Name != "" {
		t.Fatalf("repaired: %+v", m)
	}
	base := filepath.Join(dir, "recordings", idTime(b.ID()).Format("2006/01/02"), b.ID())
	for _, n := range []string{".wav.part.enc", ".wav.part.esk"} {
		if _, err := os.Stat(base + n); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s still there", n)
		}
	}
	f, _, err := st2.Open(ctx, b.ID(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.(File).Stat()
	esk, _, _ := st2.Key(ctx, b.ID(), "")
	priv, _ := testKeyPair(t, 0)
	if _, err := OpenSealedFile(f.(io.ReaderAt), fi.Size(), esk, priv); !errors.Is(err, ErrTruncated) {
		t.Fatalf("strict open of the interrupted file: %v", err)
	}
	r, err := RecoverSealedFile(f.(io.ReaderAt), fi.Size(), esk, priv)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil || string(got) != content || !r.Truncated() {
		t.Fatalf("recovered %q (%v, truncated %v)", got, err, r.Truncated())
	}
	// The sidecar is the one the recorder wrote (Repair cannot rewrite it).
	data, sesk, _ := st2.Sidecar(ctx, b.ID())
	var sc Meta
	sr, err := OpenSealedFile(bytes.NewReader(data), int64(len(data)), sesk, priv)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.NewDecoder(sr).Decode(&sc); err != nil || sc.Far.Name != "Customer Privatename" {
		t.Fatalf("sidecar after repair: %v %+v", err, sc)
	}
	if probs, err := st2.Verify(ctx); err != nil || len(probs) != 0 {
		t.Fatalf("verify: %v %+v", err, probs)
	}
}
