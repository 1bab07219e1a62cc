package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bib-project/bib/recorder"
	"github.com/bib-project/bib/storage"
)

var recT0 = time.Date(2026, 12, 4, 9, 0, 0, 0, time.UTC)

// seedArchive writes three recordings (two devices, one failed) into a new
// archive and returns its directory and their metadata, oldest first.
func seedArchive(t *testing.T) (string, []storage.Meta) {
	t.Helper()
	dir := t.TempDir()
	st, err := storage.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	var out []storage.Meta
	for i, dev := range []string{"SEP001122334455", "CSFJSMITH", "CSFJSMITH"} {
		start := recT0.Add(time.Duration(i) * time.Hour)
		m := storage.Meta{ID: storage.NewID(start), CallID: "call-" + dev, StartTime: start,
			Near: storage.Party{Device: dev, Addr: "100" + string(rune('1'+i))}, Far: storage.Party{Device: "TRUNK", Addr: "5550100"}}
		b, err := st.Create(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		if i == 2 {
			if err := b.Abort(ctx, m, "archive write failed: no space left on device"); err != nil {
				t.Fatal(err)
			}
		} else {
			w, err := recorder.NewWAVWriter(b, 8000, 2)
			if err != nil {
				t.Fatal(err)
			}
			pcm := make([]int16, 2*8000)
			for j := range pcm {
				pcm[j] = int16(j*37%2000 - 1000)
			}
			_ = w.Write(pcm)
			_ = w.Flush()
			m.DurationMS, m.SampleRate, m.Channels = 1000, 8000, 2
			if err := b.Commit(ctx, m); err != nil {
				t.Fatal(err)
			}
		}
		got, err := st.Get(ctx, m.ID)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, got)
	}
	return dir, out
}

func runRec(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	code := recordingsMain(ctx, args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestRecordingsLsShow(t *testing.T) {
	dir, recs := seedArchive(t)
	code, out, errs := runRec(t, "ls", "--data", dir)
	if code != 0 || strings.Count(out, "\n") != 4 || !strings.Contains(out, "failed (archive write failed") {
		t.Fatalf("ls: %d %q %q", code, out, errs)
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--device", "CSFJSMITH"}, []string{recs[2].ID, recs[1].ID}},
		{[]string{"--line", "1001"}, []string{recs[0].ID}},
		{[]string{"--since", recT0.Add(30 * time.Minute).Format(time.RFC3339), "--until", recT0.Add(90 * time.Minute).Format(time.RFC3339)}, []string{recs[1].ID}},
		{[]string{"--since", "2026-12-05"}, []string{}},
	} {
		code, out, errs := runRec(t, append([]string{"ls", "--data", dir, "--json"}, tc.args...)...)
		var got []storage.Meta
		if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil {
			t.Fatalf("%v: %d %v %s", tc.args, code, err, errs)
		}
		ids := []string{}
		for _, m := range got {
			ids = append(ids, m.ID)
		}
		if strings.Join(ids, ",") != strings.Join(tc.want, ",") {
			t.Errorf("%v: %v, want %v", tc.args, ids, tc.want)
		}
	}
	code, out, _ = runRec(t, "show", "--data", dir, recs[0].ID)
	var m storage.Meta
	if err := json.Unmarshal([]byte(out), &m); code != 0 || err != nil || m.SHA256 != recs[0].SHA256 || !strings.Contains(out, `"duration_ms": 1000`) {
		t.Fatalf("show: %d %v %s", code, err, out)
	}
	if code, _, errs := runRec(t, "show", "--data", dir, storage.NewID(recT0)); code != 1 || !strings.Contains(errs, "not found") {
		t.Fatalf("show unknown: %d %s", code, errs)
	}
	if code, _, _ := runRec(t, "ls", "--data", dir, "--since", "yesterday"); code != 2 {
		t.Fatalf("bad --since: %d", code)
	}
	if code, _, errs := runRec(t, "ls", "--data", filepath.Join(dir, "nope")); code != 1 || !strings.Contains(errs, "no archive") {
		t.Fatalf("missing archive: %d %s", code, errs)
	}
	if code, _, _ := runRec(t, "frobnicate"); code != 2 {
		t.Fatalf("unknown command: %d", code)
	}
}

func TestRecordingsExportVerify(t *testing.T) {
	dir, recs := seedArchive(t)
	out := filepath.Join(t.TempDir(), "call.wav")
	if code, _, errs := runRec(t, "export", recs[1].ID, "--out", out, "--data", dir); code != 0 {
		t.Fatalf("export: %d %s", code, errs)
	}
	b, err := os.ReadFile(out)
	if err != nil || int64(len(b)) != recs[1].SizeBytes {
		t.Fatalf("exported %d bytes (%v), want %d", len(b), err, recs[1].SizeBytes)
	}
	if _, err := recorder.ParseWAVHeader(bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := runRec(t, "export", "--data", dir, recs[2].ID, "--out", out); code != 1 || !strings.Contains(errs, "no audio") {
		t.Fatalf("export failed recording: %d %s", code, errs)
	}
	if code, out, _ := runRec(t, "verify", "--data", dir); code != 0 || !strings.HasPrefix(out, "ok") {
		t.Fatalf("verify clean: %d %s", code, out)
	}
	// Flip one byte of the first recording's audio.
	p := filepath.Join(dir, "recordings", recT0.Format("2006/01/02"), recs[0].ID+".wav")
	b, _ = os.ReadFile(p)
	b[100] ^= 1
	if err := os.WriteFile(p, b, 0o640); err != nil {
		t.Fatal(err)
	}
	code, outText, _ := runRec(t, "verify", "--data", dir, "--json")
	var res struct{ Problems []storage.Problem }
	if err := json.Unmarshal([]byte(outText), &res); code != 1 || err != nil || len(res.Problems) != 1 ||
		res.Problems[0].Kind != "corrupt" || res.Problems[0].ID != recs[0].ID {
		t.Fatalf("verify corrupt: %d %v %s", code, err, outText)
	}
}
