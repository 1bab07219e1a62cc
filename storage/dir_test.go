package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
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
