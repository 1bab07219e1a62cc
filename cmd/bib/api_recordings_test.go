package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

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
	registerRecordingRoutes(mux, st, slog.New(slog.DiscardHandler))
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
