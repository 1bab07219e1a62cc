package main

import (
	"archive/zip"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/bib-project/bib/storage"
)

// ProblemReportsConfig is problem_reports: receiving `bib report` uploads.
type ProblemReportsConfig struct {
	// Enabled turns on POST /prt/upload, GET /prt/ and the
	// /api/v1/problem-reports listing. Default false.
	Enabled bool `yaml:"enabled"`
	// MaxBytes is the largest accepted upload, in bytes. Default 52428800 (50 MiB).
	MaxBytes int64 `yaml:"max_bytes"`
	// Dir is where reports are stored. Default DATA/problem-reports.
	Dir string `yaml:"dir"`
}

// prtFormField is the multipart field name the emulated client's
// problem-report tool uses.
const prtFormField = "zipFileName"

const defaultPRTMaxBytes = 50 << 20

// Defaults fills unset fields; data is the data directory.
func (c *ProblemReportsConfig) Defaults(data string) {
	if c.MaxBytes == 0 {
		c.MaxBytes = defaultPRTMaxBytes
	}
	if c.Dir == "" {
		c.Dir = filepath.Join(data, "problem-reports")
	}
}

// Validate checks the fields; errors name the key.
func (c ProblemReportsConfig) Validate() error {
	if c.MaxBytes < 1024 {
		return fmt.Errorf("problem_reports.max_bytes: %d is below 1024", c.MaxBytes)
	}
	if c.Enabled && strings.TrimSpace(c.Dir) == "" {
		return errors.New("problem_reports.dir: must not be empty")
	}
	return nil
}

// prtName is the shape of a stored report: server-chosen, so no client
// name ever becomes a path.
var prtName = regexp.MustCompile(`^prt-[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}\.zip(\.enc|\.esk)?$`)

// prtView is one stored report in the listing.
type prtView struct {
	Name      string    `json:"name"`
	SizeBytes int64     `json:"size_bytes"`
	Received  time.Time `json:"received"`
	Encrypted bool      `json:"encrypted"`
}

var prtForm = template.Must(template.New("prt").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>bib: upload a problem report</title></head>
<body>
<h1>Upload a problem report</h1>
<p>A <code>.zip</code> made by <code>bib report</code>, or an encrypted report's <code>.zip.enc</code> and <code>.zip.esk</code> together. Up to {{.}} bytes.</p>
<form method="post" action="/prt/upload" enctype="multipart/form-data">
<input type="file" name="zipFileName" multiple accept=".zip,.enc,.esk">
<button type="submit">Upload</button>
</form>
</body></html>
`))

// registerProblemReportRoutes adds the problem-report receiver:
//
//	POST /prt/upload                     multipart/form-data, field zipFileName: a .zip, or a .enc and its .esk
//	GET  /prt/                           an HTML upload form
//	GET  /api/v1/problem-reports         -> {"problem_reports": [prtView...]}, newest first
//	GET  /api/v1/problem-reports/{name}  the stored file
//
// Uploads larger than maxBytes get 413 too_large; a zip that does not open
// or has an entry name that could escape a directory gets 400. Nothing is
// ever unpacked. dir is created when missing.
func registerProblemReportRoutes(mux *http.ServeMux, dir string, maxBytes int64, log *slog.Logger) {
	h := &prtHandler{dir: dir, max: maxBytes, log: log, now: time.Now}
	mux.HandleFunc("POST /prt/upload", h.upload)
	mux.HandleFunc("GET /prt/{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		_ = prtForm.Execute(w, maxBytes)
	})
	mux.HandleFunc("GET /api/v1/problem-reports", h.list)
	mux.HandleFunc("GET /api/v1/problem-reports/{name}", h.download)
}

type prtHandler struct {
	dir string
	max int64
	log *slog.Logger
	now func() time.Time
}

// errPRT is a refusal with its status and machine code.
type errPRT struct {
	status int
	code   string
	reason string
}

func (e *errPRT) Error() string { return e.reason }

func (h *prtHandler) upload(w http.ResponseWriter, r *http.Request) {
	names, err := h.receive(w, r)
	if err != nil {
		var pe *errPRT
		if !errors.As(err, &pe) {
			h.log.Error("problem report upload", "err", err)
			pe = &errPRT{http.StatusInternalServerError, "store_failed", "The report could not be stored: " + err.Error()}
		} else {
			h.log.Warn("problem report refused", "code", pe.code, "reason", pe.reason, "remote", r.RemoteAddr)
		}
		writeJSONError(w, pe.status, pe.code, pe.reason)
		return
	}
	h.log.Info("problem report received", "files", strings.Join(names, ","), "remote", r.RemoteAddr)
	respondJSON(w, http.StatusCreated, map[string]any{"stored": names})
}

// receive streams each part to a temp file, checks it, and publishes the
// set under one server-chosen base name.
func (h *prtHandler) receive(w http.ResponseWriter, r *http.Request) ([]string, error) {
	// The whole body may hold a .enc and its small .esk plus form overhead.
	r.Body = http.MaxBytesReader(w, r.Body, h.max+64<<10)
	mr, err := r.MultipartReader()
	if err != nil {
		return nil, &errPRT{http.StatusBadRequest, "bad_form", "Send multipart/form-data with the report in a field named " + prtFormField + "."}
	}
	if err := os.MkdirAll(h.dir, 0o750); err != nil {
		return nil, err
	}
	type part struct{ ext, tmp string }
	var parts []part
	defer func() {
		for _, p := range parts {
			os.Remove(p.tmp) // renamed ones are gone already
		}
	}()
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, tooLargeOr(err, h.max, &errPRT{http.StatusBadRequest, "bad_form", "The multipart body is malformed: " + err.Error()})
		}
		if p.FormName() != prtFormField || p.FileName() == "" {
			p.Close()
			continue
		}
		ext := prtExt(p.FileName())
		if ext == "" {
			return nil, &errPRT{http.StatusUnsupportedMediaType, "unsupported_file",
				fmt.Sprintf("%q is not a problem report: send a .zip, or a .enc with its .esk.", filepath.Base(p.FileName()))}
		}
		if slices.ContainsFunc(parts, func(q part) bool { return q.ext == ext }) || len(parts) >= 2 {
			return nil, &errPRT{http.StatusBadRequest, "too_many_files", "Send one .zip, or one .enc and one .esk."}
		}
		tmp, err := os.CreateTemp(h.dir, ".upload-*")
		if err != nil {
			return nil, err
		}
		parts = append(parts, part{ext: ext, tmp: tmp.Name()})
		n, err := io.Copy(tmp, io.LimitReader(p, h.max+1))
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, tooLargeOr(err, h.max, err)
		}
		if n > h.max {
			return nil, tooLarge(h.max)
		}
		if n == 0 {
			return nil, &errPRT{http.StatusBadRequest, "empty_file", "The uploaded file is empty."}
		}
	}
	exts := make([]string, len(parts))
	for i, p := range parts {
		exts[i] = p.ext
	}
	slices.Sort(exts)
	switch {
	case slices.Equal(exts, []string{".zip"}):
		if err := checkReportZip(parts[0].tmp); err != nil {
			return nil, err
		}
	case slices.Equal(exts, []string{".zip.enc", ".zip.esk"}):
		for _, p := range parts {
			if err := checkSealedPart(p.ext, p.tmp); err != nil {
				return nil, err
			}
		}
	case len(exts) == 0:
		return nil, &errPRT{http.StatusBadRequest, "no_file", "No file in the form field " + prtFormField + "."}
	default:
		return nil, &errPRT{http.StatusBadRequest, "incomplete", "An encrypted report needs both its .zip.enc and its .zip.esk."}
	}
	var rb [4]byte
	_, _ = rand.Read(rb[:])
	base := fmt.Sprintf("prt-%s-%s.zip", h.now().UTC().Format("20060102T150405Z"), hex.EncodeToString(rb[:]))
	var names []string
	for _, p := range parts {
		name := base + strings.TrimPrefix(p.ext, ".zip")
		if err := os.Rename(p.tmp, filepath.Join(h.dir, name)); err != nil {
			return nil, err
		}
		names = append(names, name)
	}
	slices.Sort(names)
	return names, nil
}

// prtExt classifies an uploaded file name: ".zip", ".zip.enc", ".zip.esk"
// (a bare .enc/.esk counts as the zip's), or "".
func prtExt(name string) string {
	name = strings.ToLower(name)
	switch {
	case strings.HasSuffix(name, ".zip"):
		return ".zip"
	case strings.HasSuffix(name, storage.EncSuffix):
		return ".zip" + storage.EncSuffix
	case strings.HasSuffix(name, storage.ESKSuffix):
		return ".zip" + storage.ESKSuffix
	}
	return ""
}

func tooLarge(max int64) error {
	return &errPRT{http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("The upload is larger than the %d bytes allowed (problem_reports.max_bytes).", max)}
}

func tooLargeOr(err error, max int64, other error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return tooLarge(max)
	}
	return other
}

// checkReportZip opens the zip and refuses entry names that could escape a
// directory if someone unpacked it (absolute, "..", backslashes, drive
// letters). The server itself never unpacks.
func checkReportZip(path string) error {
	zr, err := zip.OpenReader(path)
	if err != nil {
		return &errPRT{http.StatusBadRequest, "bad_zip", "The file is not a readable zip archive: " + err.Error()}
	}
	defer zr.Close()
	for _, f := range zr.File {
		if reason := unsafeZipName(f.Name); reason != "" {
			return &errPRT{http.StatusBadRequest, "unsafe_zip", fmt.Sprintf("The zip has an entry named %q (%s); refused.", f.Name, reason)}
		}
	}
	return nil
}

func unsafeZipName(name string) string {
	switch {
	case name == "":
		return "empty name"
	case strings.ContainsRune(name, '\\'):
		return "backslash"
	case strings.HasPrefix(name, "/"):
		return "absolute path"
	case len(name) >= 2 && name[1] == ':':
		return "drive letter"
	case strings.ContainsRune(name, 0):
		return "NUL byte"
	}
	for _, el := range strings.Split(name, "/") {
		if el == ".." {
			return "parent directory"
		}
	}
	return ""
}

func checkSealedPart(ext, path string) error {
	if ext == ".zip"+storage.ESKSuffix {
		fi, err := os.Stat(path)
		if err != nil {
			return err
		}
		if fi.Size() > 64<<10 {
			return &errPRT{http.StatusBadRequest, "bad_esk", "The .esk is too large to be a key file."}
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if _, err := storage.ParseESK(b); err != nil {
			return &errPRT{http.StatusBadRequest, "bad_esk", err.Error()}
		}
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := storage.ReadSealedHeader(f); err != nil {
		return &errPRT{http.StatusBadRequest, "bad_enc", err.Error()}
	}
	return nil
}

func (h *prtHandler) list(w http.ResponseWriter, r *http.Request) {
	ents, err := os.ReadDir(h.dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		writeJSONError(w, http.StatusInternalServerError, "list_failed", err.Error())
		return
	}
	out := []prtView{}
	for _, e := range ents {
		if !e.Type().IsRegular() || !prtName.MatchString(e.Name()) {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		out = append(out, prtView{Name: e.Name(), SizeBytes: fi.Size(), Received: fi.ModTime().UTC(),
			Encrypted: !strings.HasSuffix(e.Name(), ".zip")})
	}
	slices.SortFunc(out, func(a, b prtView) int { return strings.Compare(b.Name, a.Name) })
	respondJSON(w, http.StatusOK, map[string]any{"problem_reports": out})
}

func (h *prtHandler) download(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !prtName.MatchString(name) {
		writeJSONError(w, http.StatusNotFound, "unknown_report", "No problem report has that name; GET /api/v1/problem-reports lists them.")
		return
	}
	f, err := os.Open(filepath.Join(h.dir, name))
	if err != nil {
		writeJSONError(w, http.StatusNotFound, "unknown_report", "No problem report has that name; GET /api/v1/problem-reports lists them.")
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		writeJSONError(w, http.StatusInternalServerError, "read_failed", err.Error())
		return
	}
	ct := "application/octet-stream"
	if strings.HasSuffix(name, ".zip") {
		ct = "application/zip"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	http.ServeContent(w, r, name, fi.ModTime(), f)
}
