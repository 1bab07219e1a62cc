package main

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

type upFile struct {
	field, name string
	body        []byte
}

func postReport(t *testing.T, url string, files ...upFile) (int, apiError, map[string][]string) {
	t.Helper()
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	for _, f := range files {
		w, err := mw.CreateFormFile(f.field, f.name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(f.body)
	}
	mw.Close()
	resp, err := http.Post(url+"/prt/upload", mw.FormDataContentType(), &b)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var ae apiError
	var ok map[string][]string
	json.Unmarshal(raw, &ae)
	json.Unmarshal(raw, &ok)
	return resp.StatusCode, ae, ok
}

func makeZip(t *testing.T, entries map[string]string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for name, body := range entries {
		// The raw name, as a hostile client would write it.
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Store})
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, body)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func newPRTServer(t *testing.T, max int64) (*httptest.Server, string) {
	t.Helper()
	dir := t.TempDir()
	mux := http.NewServeMux()
	registerProblemReportRoutes(mux, dir, max, slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, dir
}

func TestProblemReportUpload(t *testing.T) {
	srv, dir := newPRTServer(t, 64<<10)
	good := makeZip(t, map[string]string{"version.txt": "bib dev\n", "logs/log.txt": "hello"})
	big := makeZip(t, map[string]string{"big.bin": strings.Repeat("x", 70<<10)})
	cases := []struct {
		name   string
		files  []upFile
		status int
		code   string
	}{
		{"zip", []upFile{{prtFormField, "report.zip", good}}, http.StatusCreated, ""},
		{"traversal", []upFile{{prtFormField, "r.zip", makeZip(t, map[string]string{"../../etc/cron.d/x": "boom"})}}, http.StatusBadRequest, "unsafe_zip"},
		{"absolute", []upFile{{prtFormField, "r.zip", makeZip(t, map[string]string{"/etc/passwd": "x"})}}, http.StatusBadRequest, "unsafe_zip"},
		{"backslash", []upFile{{prtFormField, "r.zip", makeZip(t, map[string]string{`..\..\win.ini`: "x"})}}, http.StatusBadRequest, "unsafe_zip"},
		{"oversize", []upFile{{prtFormField, "r.zip", big}}, http.StatusRequestEntityTooLarge, "too_large"},
		{"not a zip", []upFile{{prtFormField, "r.zip", []byte("PK but not really")}}, http.StatusBadRequest, "bad_zip"},
		{"other type", []upFile{{prtFormField, "notes.txt", []byte("hi")}}, http.StatusUnsupportedMediaType, "unsupported_file"},
		{"wrong field", []upFile{{"file", "report.zip", good}}, http.StatusBadRequest, "no_file"},
		{"enc without esk", []upFile{{prtFormField, "r.zip.enc", []byte("BIBENC\x01\x00" + strings.Repeat("\x00", 24))}}, http.StatusBadRequest, "incomplete"},
		{"bad esk", []upFile{{prtFormField, "r.zip.enc", []byte("BIBENC\x01\x00" + strings.Repeat("\x00", 24))}, {prtFormField, "r.zip.esk", []byte("{}")}}, http.StatusBadRequest, "bad_esk"},
		{"empty", []upFile{{prtFormField, "r.zip", nil}}, http.StatusBadRequest, "empty_file"},
	}
	var stored []string
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, ae, ok := postReport(t, srv.URL, c.files...)
			if status != c.status || ae.Error != c.code {
				t.Fatalf("status %d %q (%s), want %d %q", status, ae.Error, ae.Reason, c.status, c.code)
			}
			if c.code != "" {
				if ae.Reason == "" {
					t.Fatal("refusal without a reason")
				}
				t.Logf("%d %s: %s", status, ae.Error, ae.Reason)
				return
			}
			stored = append(stored, ok["stored"]...)
		})
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || len(stored) != 1 || ents[0].Name() != stored[0] || !prtName.MatchString(stored[0]) {
		t.Fatalf("dir holds %v, stored %v: want exactly the one accepted zip, nothing from refused uploads", ents, stored)
	}

	// Listing and download.
	resp, err := http.Get(srv.URL + "/api/v1/problem-reports")
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Reports []prtView `json:"problem_reports"`
	}
	json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	if len(list.Reports) != 1 || list.Reports[0].Name != stored[0] || list.Reports[0].SizeBytes != int64(len(good)) || list.Reports[0].Encrypted {
		t.Fatalf("list: %+v", list.Reports)
	}
	resp, err = http.Get(srv.URL + "/api/v1/problem-reports/" + stored[0])
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(got, good) || resp.Header.Get("Content-Type") != "application/zip" {
		t.Fatalf("download: %d %s, %d bytes", resp.StatusCode, resp.Header.Get("Content-Type"), len(got))
	}
	for _, bad := range []string{"..%2F..%2Fetc%2Fpasswd", "prt-x.zip", "index.db"} {
		resp, err := http.Get(srv.URL + "/api/v1/problem-reports/" + bad)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("download %q: %d, want 404", bad, resp.StatusCode)
		}
	}

	// The HTML form.
	resp, err = http.Get(srv.URL + "/prt/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(page), `name="zipFileName"`) || !strings.Contains(string(page), `action="/prt/upload"`) {
		t.Fatalf("form page: %s", page)
	}
}

func TestProblemReportsConfig(t *testing.T) {
	var c ProblemReportsConfig
	c.Defaults("/var/lib/bib")
	if c.MaxBytes != 50<<20 || c.Dir != "/var/lib/bib/problem-reports" || c.Enabled {
		t.Fatalf("defaults: %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.MaxBytes = 10
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "problem_reports.max_bytes") {
		t.Fatalf("validate: %v", err)
	}
}
