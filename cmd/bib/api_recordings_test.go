package main

import (
	"bytes"
	"context"
	"crypto/rsa"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bib-project/bib/recorder"
	"github.com/bib-project/bib/storage"
)

func recordingsServer(t *testing.T) (*httptest.Server, []storage.Meta) {
	t.Helper()
	dir, recs := seedArchive(t)
	st, err := storage.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	mux := http.NewServeMux()
	registerRecordingRoutes(mux, st, nil, slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, recs
}

func getRec(t *testing.T, srv *httptest.Server, path string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func TestAPIRecordingsList(t *testing.T) {
	srv, recs := recordingsServer(t)
	var ids []string
	cursor := ""
	for range 5 {
		resp, b := getRec(t, srv, "/api/v1/recordings?limit=2&cursor="+url.QueryEscape(cursor))
		var page struct {
			Recordings []storage.Meta `json:"recordings"`
			Next       string         `json:"next_cursor"`
		}
		if err := json.Unmarshal(b, &page); resp.StatusCode != 200 || err != nil {
			t.Fatalf("%d %v %s", resp.StatusCode, err, b)
		}
		for _, m := range page.Recordings {
			ids = append(ids, m.ID)
		}
		if cursor = page.Next; cursor == "" {
			break
		}
	}
	if strings.Join(ids, ",") != strings.Join([]string{recs[2].ID, recs[1].ID, recs[0].ID}, ",") {
		t.Fatalf("paged ids %v", ids)
	}
	resp, b := getRec(t, srv, "/api/v1/recordings?device=SEP001122334455")
	if resp.StatusCode != 200 || strings.Count(string(b), `"call_id"`) != 1 {
		t.Fatalf("filter: %s", b)
	}
	for _, q := range []string{"limit=0", "limit=x", "since=nope", "until=2026-13-01", "cursor=zzz"} {
		resp, b := getRec(t, srv, "/api/v1/recordings?"+q)
		var e map[string]string
		if err := json.Unmarshal(b, &e); resp.StatusCode != 400 || err != nil || e["error"] == "" || e["reason"] == "" {
			t.Errorf("%s: %d %s", q, resp.StatusCode, b)
		}
	}
}

func TestAPIRecordingGetAndAudio(t *testing.T) {
	srv, recs := recordingsServer(t)
	resp, b := getRec(t, srv, "/api/v1/recordings/"+recs[0].ID)
	var m storage.Meta
	if err := json.Unmarshal(b, &m); resp.StatusCode != 200 || err != nil || m.SHA256 != recs[0].SHA256 {
		t.Fatalf("%d %v %s", resp.StatusCode, err, b)
	}
	for path, want := range map[string]int{
		"/api/v1/recordings/not-an-id":                        400,
		"/api/v1/recordings/" + storage.NewID(recT0):          404,
		"/api/v1/recordings/" + recs[2].ID + "/audio":         409,
		"/api/v1/recordings/" + recs[0].ID + "/audio?track=x": 404,
		"/api/v1/recordings/" + recs[0].ID + "/audio?track=.": 400,
	} {
		if resp, b := getRec(t, srv, path); resp.StatusCode != want {
			t.Errorf("%s: %d %s, want %d", path, resp.StatusCode, b, want)
		}
	}
	resp, full := getRec(t, srv, "/api/v1/recordings/"+recs[0].ID+"/audio")
	if resp.StatusCode != 200 || int64(len(full)) != recs[0].SizeBytes || resp.Header.Get("Content-Type") != "audio/wav" ||
		resp.Header.Get("Accept-Ranges") != "bytes" || string(full[:4]) != "RIFF" {
		t.Fatalf("audio: %d %d bytes %v", resp.StatusCode, len(full), resp.Header)
	}
	resp, part := getRec(t, srv, "/api/v1/recordings/"+recs[0].ID+"/audio", "Range", "bytes=1000-1999")
	if resp.StatusCode != http.StatusPartialContent || string(part) != string(full[1000:2000]) ||
		resp.Header.Get("Content-Range") != "bytes 1000-1999/32044" {
		t.Fatalf("range: %d %d bytes %v", resp.StatusCode, len(part), resp.Header)
	}
}

// seedEncryptedArchive writes, encrypted for pki's cert.pem, one complete
// recording (2 s) and one that a crash interrupted after 1 s (repaired at
// the next open), next to a recording in clear from before encryption was
// switched on. It returns the directory, the ids (complete, interrupted,
// clear) and the plaintext WAVs of the first two as they should decrypt.
func seedEncryptedArchive(t *testing.T, pki testPKI) (string, [3]string, [2][]byte) {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	var ids [3]string
	plain, err := storage.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := storage.Meta{CallID: "clear", StartTime: recT0, Near: storage.Party{Device: "SEP1", Addr: "1001"}}
	b, _ := plain.Create(ctx, m)
	b.Write([]byte("clear bytes"))
	if err := b.Commit(ctx, m); err != nil {
		t.Fatal(err)
	}
	ids[2] = b.ID()
	plain.Close()

	rcpt, err := storage.LoadRecipient(pki.path("cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := storage.OpenDir(dir, storage.WithFS(&storage.SealedFS{Base: storage.OSFS{}, To: rcpt}))
	if err != nil {
		t.Fatal(err)
	}
	// writeWAV writes seconds of a pattern, refreshing the header each second.
	writeWAV := func(f io.WriteSeeker, seconds int) {
		w, err := recorder.NewWAVWriter(f, 8000, 2)
		if err != nil {
			t.Fatal(err)
		}
		pcm := make([]int16, 2*8000)
		for s := range seconds {
			for j := range pcm {
				pcm[j] = int16((j+s)*37%2000 - 1000)
			}
			if err := w.Write(pcm); err != nil {
				t.Fatal(err)
			}
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	var want [2][]byte
	for i, secs := range []int{2, 1} {
		m := storage.Meta{CallID: "enc", StartTime: recT0.Add(time.Duration(i+1) * time.Hour), SampleRate: 8000, Channels: 2,
			Near: storage.Party{Device: "CSFAGENT1", Addr: "1001", Name: "Agent Name"}}
		b, err := st.Create(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = b.ID()
		writeWAV(b, secs)
		ref, _ := os.Create(filepath.Join(t.TempDir(), "ref.wav"))
		writeWAV(ref, secs)
		ref.Close()
		want[i], _ = os.ReadFile(ref.Name())
		if i == 0 {
			if err := b.Commit(ctx, m); err != nil {
				t.Fatal(err)
			}
		}
		// i == 1: killed before Commit.
	}
	st.Close()
	st, err = storage.OpenDir(dir) // a restart without the certificate
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if fixed, err := recorder.Repair(ctx, st); err != nil || len(fixed) != 1 || fixed[0].DurationMS != 1000 {
		t.Fatalf("repair: %v %+v", err, fixed)
	}
	return dir, ids, want
}

func TestAPIEncryptedRecordings(t *testing.T) {
	pki := newTestPKI(t)
	dir, ids, want := seedEncryptedArchive(t, pki)
	priv, err := storage.LoadPrivateKey(pki.path("key.pem"), "")
	if err != nil {
		t.Fatal(err)
	}
	other, _ := storage.LoadPrivateKey(pki.path("other.pem"), "")
	st, err := storage.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	serve := func(key *rsa.PrivateKey) *httptest.Server {
		mux := http.NewServeMux()
		registerRecordingRoutes(mux, st, key, slog.New(slog.DiscardHandler))
		srv := httptest.NewServer(mux)
		t.Cleanup(srv.Close)
		return srv
	}
	noKey, withKey, wrongKey := serve(nil), serve(priv), serve(other)
	audio := func(id string) string { return "/api/v1/recordings/" + id + "/audio" }

	// Without the key: as stored.
	var meta storage.Meta
	_, b := getRec(t, noKey, "/api/v1/recordings/"+ids[0])
	if json.Unmarshal(b, &meta); !meta.Encrypted || meta.Near.Name != "" {
		t.Fatalf("metadata without key: %s", b)
	}
	resp, enc := getRec(t, noKey, audio(ids[0]))
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/octet-stream" || resp.Header.Get("X-Bib-Encryption") != "stored" ||
		!strings.Contains(resp.Header.Get("Content-Disposition"), ".wav.enc") || int64(len(enc)) != meta.SizeBytes {
		t.Fatalf("stored audio: %d %v", resp.StatusCode, resp.Header)
	}
	resp, esk := getRec(t, noKey, audio(ids[0])[:len(audio(ids[0]))-len("audio")]+"esk")
	if resp.StatusCode != 200 {
		t.Fatalf("esk: %d %s", resp.StatusCode, esk)
	}
	r, err := storage.OpenSealedFile(bytes.NewReader(enc), int64(len(enc)), esk, priv)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := io.ReadAll(r); !bytes.Equal(got, want[0]) {
		t.Fatal("stored audio + esk do not decrypt to the recording")
	}
	if resp, b := getRec(t, noKey, "/api/v1/recordings/"+ids[2]+"/esk"); resp.StatusCode != 409 || !strings.Contains(string(b), "not_encrypted") {
		t.Fatalf("esk of a clear recording: %d %s", resp.StatusCode, b)
	}
	if resp, b := getRec(t, noKey, audio(ids[2])); resp.StatusCode != 200 || string(b) != "clear bytes" || resp.Header.Get("X-Bib-Encryption") != "" {
		t.Fatalf("clear recording: %d %q", resp.StatusCode, b)
	}

	// With the key: decrypted, seekable; an interrupted one with its sizes fixed.
	_, b = getRec(t, withKey, "/api/v1/recordings/"+ids[0])
	if json.Unmarshal(b, &meta); !meta.Encrypted || meta.Near.Name != "Agent Name" {
		t.Fatalf("metadata with key: %s", b)
	}
	resp, wav := getRec(t, withKey, audio(ids[0]))
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "audio/wav" || resp.Header.Get("X-Bib-Encryption") != "decrypted" || !bytes.Equal(wav, want[0]) {
		t.Fatalf("decrypted audio: %d %v, %d bytes", resp.StatusCode, resp.Header, len(wav))
	}
	resp, part := getRec(t, withKey, audio(ids[0]), "Range", "bytes=40000-40999")
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(part, want[0][40000:41000]) {
		t.Fatalf("range: %d %d bytes", resp.StatusCode, len(part))
	}
	resp, wav = getRec(t, withKey, audio(ids[1]))
	if resp.StatusCode != 200 || resp.Header.Get("X-Bib-Truncated") != "true" || !bytes.Equal(wav, want[1]) {
		t.Fatalf("interrupted recording decrypted: %d %v, %d bytes (want %d)", resp.StatusCode, resp.Header, len(wav), len(want[1]))
	}
	if resp, b := getRec(t, withKey, audio(ids[0])+"?stored=1"); resp.StatusCode != 200 || !bytes.Equal(b, enc) {
		t.Fatalf("?stored=1: %d", resp.StatusCode)
	}
	if resp, b := getRec(t, wrongKey, audio(ids[0])); resp.StatusCode != 409 || !strings.Contains(string(b), "other_key") {
		t.Fatalf("another certificate's key: %d %s", resp.StatusCode, b)
	}
}
