package main

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/bib-project/bib/storage"
)

const reportUsage = `Usage:
  bib report [--out FILE.zip] [--config bib.yaml] [--data DIR] [--server http://127.0.0.1:8080]
             [--calls N] [--log FILE] [--encrypt-for CERT] [--upload URL]

Writes a problem report for support: version and build info, the effective
config with secrets redacted, the last N call records and the counters of a
running server (--server), the last N recordings' technical metadata
(--data), the tail of a log file (--log, last 1 MiB), and goroutine and heap
profiles of this process. With --encrypt-for CERT it writes FILE.zip.enc and
FILE.zip.esk instead (bib decrypt opens them); no plaintext touches the disk.
--upload URL POSTs the result as multipart/form-data (field zipFileName),
e.g. to a bib serve with problem_reports enabled: http://HOST:PORT/prt/upload.
`

// reportRetryDelays are the waits between upload attempts (tests shorten them).
var reportRetryDelays = []time.Duration{time.Second, 3 * time.Second}

const reportLogTail = 1 << 20

// reportMain implements `bib report`.
func reportMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bib report", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	out := fs.String("out", "", "output file (default bib-report-YYYYMMDD-HHMMSS.zip)")
	cfgPath := fs.String("config", "", "bib serve's config file (default: embedded defaults)")
	data := fs.String("data", "", "data directory (default: the config's data)")
	server := fs.String("server", "", "base URL of a running bib serve to collect calls and metrics from")
	calls := fs.Int("calls", 50, "how many call records and recordings to include")
	logFile := fs.String("log", "", "a log file of bib serve to include (last 1 MiB)")
	encryptFor := fs.String("encrypt-for", "", "certificate (PEM) to encrypt the report for")
	upload := fs.String("upload", "", "URL to POST the report to (multipart field zipFileName)")
	timeout := fs.Duration("timeout", 30*time.Second, "timeout of each HTTP request")
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, "bib report: "+format+"\n", a...)
		return code
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, reportUsage)
			return 0
		}
		return fail(2, "%v (see bib report --help)", err)
	}
	if fs.NArg() > 0 {
		return fail(2, "unexpected argument %q (see bib report --help)", fs.Arg(0))
	}
	if *calls < 0 || *calls > 10000 {
		return fail(2, "--calls %d: want 0..10000", *calls)
	}
	if *out == "" {
		*out = "bib-report-" + time.Now().UTC().Format("20060102-150405") + ".zip"
	}
	if fi, err := os.Stat(filepath.Dir(*out)); err != nil || !fi.IsDir() {
		return fail(2, "--out %s: directory %s does not exist", *out, filepath.Dir(*out))
	}
	var rcpt *storage.Recipient
	if *encryptFor != "" {
		var err error
		if rcpt, err = storage.LoadRecipient(*encryptFor); err != nil {
			return fail(2, "--encrypt-for: %v", err)
		}
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return fail(2, "--config: %v", err)
	}
	if *data != "" {
		cfg.Data = *data
	}
	col := reportCollector{
		cfg: cfg, dataSet: *data != "", server: strings.TrimRight(*server, "/"), calls: *calls, logFile: *logFile,
		client: &http.Client{Timeout: *timeout},
	}
	files, err := writeProblemReport(ctx, *out, rcpt, col.collect)
	if err != nil {
		return fail(1, "%v", err)
	}
	for _, f := range files {
		fi, _ := os.Stat(f)
		fmt.Fprintf(stdout, "report written: %s (%d bytes)\n", f, fi.Size())
	}
	for _, n := range col.notes {
		fmt.Fprintf(stdout, "note: %s\n", n)
	}
	if *upload != "" {
		stored, err := uploadReport(ctx, col.client, *upload, files)
		if err != nil {
			return fail(1, "%v", err)
		}
		fmt.Fprintf(stdout, "uploaded to %s: stored as %s\n", *upload, strings.Join(stored, ", "))
	}
	return 0
}

// writeProblemReport writes the zip built by fill to out (or out.enc + out.esk
// when rcpt is set) through a temporary name, and returns the files.
func writeProblemReport(ctx context.Context, out string, rcpt *storage.Recipient, fill func(context.Context, *zip.Writer)) ([]string, error) {
	var fsys storage.FS = storage.OSFS{}
	files := []string{out}
	if rcpt != nil {
		fsys = &storage.SealedFS{Base: storage.OSFS{}, To: rcpt}
		files = []string{out + storage.EncSuffix, out + storage.ESKSuffix}
	}
	tmp := fmt.Sprintf("%s.tmp-%d", out, time.Now().UnixNano())
	f, err := fsys.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", out, err)
	}
	zw := zip.NewWriter(f)
	fill(ctx, zw)
	err = zw.Close()
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fsys.Rename(tmp, out)
	}
	if err != nil {
		_ = fsys.Remove(tmp)
		return nil, fmt.Errorf("write %s: %w", out, err)
	}
	return files, nil
}

// reportCollector gathers the report's entries; what fails is recorded in
// errors.txt rather than stopping the report.
type reportCollector struct {
	cfg     Config
	dataSet bool
	server  string
	calls   int
	logFile string
	client  *http.Client
	errs    []string
	notes   []string
}

func (c *reportCollector) collect(ctx context.Context, zw *zip.Writer) {
	c.add(zw, "version.txt", func(w io.Writer) error { return writeVersion(w) })
	c.add(zw, "config.yaml", func(w io.Writer) error { return writeRedactedConfig(w, c.cfg) })
	if c.server != "" {
		c.add(zw, "calls.json", func(w io.Writer) error { return c.fetchCalls(ctx, w) })
		c.add(zw, "metrics.txt", func(w io.Writer) error { return c.fetch(ctx, "/metrics", w, 4<<20) })
	} else {
		c.notes = append(c.notes, "no --server: call records and counters not included")
	}
	if _, err := os.Stat(filepath.Join(c.cfg.Data, "index.db")); err == nil {
		c.add(zw, "recordings.json", func(w io.Writer) error { return c.recordings(ctx, w) })
	} else if c.dataSet {
		c.errs = append(c.errs, fmt.Sprintf("recordings: no index.db in %s", c.cfg.Data))
	}
	if c.logFile != "" {
		c.add(zw, "log.txt", func(w io.Writer) error { return tailFile(w, c.logFile, reportLogTail) })
	}
	c.add(zw, "goroutine.txt", func(w io.Writer) error { return pprof.Lookup("goroutine").WriteTo(w, 2) })
	c.add(zw, "heap.pprof", func(w io.Writer) error { return pprof.Lookup("heap").WriteTo(w, 0) })
	if len(c.errs) > 0 {
		if w, err := zw.Create("errors.txt"); err == nil {
			fmt.Fprintln(w, strings.Join(c.errs, "\n"))
		}
		c.notes = append(c.notes, fmt.Sprintf("%d item(s) could not be collected (see errors.txt): %s", len(c.errs), strings.Join(c.errs, "; ")))
	}
}

// add writes one entry; a failure is noted (the entry keeps what was written).
func (c *reportCollector) add(zw *zip.Writer, name string, fill func(io.Writer) error) {
	w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Deflate, Modified: time.Now()})
	if err == nil {
		err = fill(w)
	}
	if err != nil {
		c.errs = append(c.errs, fmt.Sprintf("%s: %v", name, err))
	}
}

func writeVersion(w io.Writer) error {
	fmt.Fprintf(w, "bib %s\ngo %s %s/%s\ncpus %d\ntime %s\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH,
		runtime.NumCPU(), time.Now().UTC().Format(time.RFC3339))
	if bi, ok := debug.ReadBuildInfo(); ok {
		fmt.Fprintf(w, "\n%s", bi.String())
	}
	return nil
}

// secretKey matches config keys whose values are redacted.
var secretKey = regexp.MustCompile(`(?i)(pass|secret|token|private_key|credential|api_key|^ha1$)`)

// writeRedactedConfig writes cfg as YAML with every secret value replaced.
func writeRedactedConfig(w io.Writer, cfg Config) error {
	var n yaml.Node
	if err := n.Encode(cfg); err != nil {
		return err
	}
	redactNode(&n)
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return err
	}
	return enc.Close()
}

func redactNode(n *yaml.Node) {
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if secretKey.MatchString(k.Value) && v.Kind == yaml.ScalarNode && v.Value != "" {
				v.Value, v.Tag, v.Style = "<redacted>", "!!str", 0
				continue
			}
			redactNode(v)
		}
		return
	}
	for _, c := range n.Content {
		redactNode(c)
	}
}

func (c *reportCollector) get(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.server+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return resp, nil
}

func (c *reportCollector) fetch(ctx context.Context, path string, w io.Writer, limit int64) error {
	resp, err := c.get(ctx, path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(w, io.LimitReader(resp.Body, limit))
	return err
}

// fetchCalls keeps the last N of GET /api/v1/calls.
func (c *reportCollector) fetchCalls(ctx context.Context, w io.Writer) error {
	resp, err := c.get(ctx, "/api/v1/calls")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		Calls []json.RawMessage `json:"calls"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&body); err != nil {
		return fmt.Errorf("GET /api/v1/calls: %w", err)
	}
	if len(body.Calls) > c.calls {
		body.Calls = body.Calls[len(body.Calls)-c.calls:]
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(body)
}

// recordingSummary is what a report carries of a recording: technical
// fields only, no parties' numbers or names.
type recordingSummary struct {
	ID         string           `json:"id"`
	Status     storage.Status   `json:"status"`
	Reason     string           `json:"reason,omitempty"`
	StartTime  time.Time        `json:"start_time"`
	DurationMS int64            `json:"duration_ms"`
	Codecs     []string         `json:"codecs"`
	SampleRate int              `json:"sample_rate"`
	Channels   int              `json:"channels"`
	SizeBytes  int64            `json:"size_bytes"`
	NearStream storage.DirStats `json:"near_stream"`
	FarStream  storage.DirStats `json:"far_stream"`
	Events     map[string]int   `json:"events"` // count per kind
}

func (c *reportCollector) recordings(ctx context.Context, w io.Writer) error {
	st, err := storage.OpenDir(c.cfg.Data)
	if err != nil {
		return err
	}
	defer st.Close()
	ms, _, err := st.List(ctx, storage.Query{Limit: max(c.calls, 1)})
	if err != nil {
		return err
	}
	out := make([]recordingSummary, 0, len(ms))
	for _, m := range ms {
		s := recordingSummary{ID: m.ID, Status: m.Status, Reason: m.Reason, StartTime: m.StartTime, DurationMS: m.DurationMS,
			Codecs: m.Codecs, SampleRate: m.SampleRate, Channels: m.Channels, SizeBytes: m.SizeBytes,
			NearStream: m.Near.Stream, FarStream: m.Far.Stream, Events: map[string]int{}}
		for _, e := range m.Events {
			s.Events[e.Kind]++
		}
		out = append(out, s)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(map[string]any{"recordings": out})
}

// tailFile copies the last limit bytes of path.
func tailFile(w io.Writer, path string, limit int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if off := fi.Size() - limit; off > 0 {
		fmt.Fprintf(w, "[... first %d bytes omitted ...]\n", off)
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			return err
		}
	}
	_, err = io.Copy(w, io.LimitReader(f, limit))
	return err
}

// uploadReport POSTs files as multipart/form-data in the field zipFileName,
// retrying network errors and 5xx; a 4xx is final. It returns the names the
// server stored.
func uploadReport(ctx context.Context, client *http.Client, url string, files []string) ([]string, error) {
	var last error
	for attempt := 0; attempt <= len(reportRetryDelays); attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(reportRetryDelays[attempt-1]):
			}
		}
		stored, retry, err := uploadOnce(ctx, client, url, files)
		if err == nil {
			return stored, nil
		}
		last = err
		if !retry {
			return nil, fmt.Errorf("upload to %s refused: %w", url, err)
		}
	}
	return nil, fmt.Errorf("upload to %s failed after %d attempts: %w", url, len(reportRetryDelays)+1, last)
}

func uploadOnce(ctx context.Context, client *http.Client, url string, files []string) (stored []string, retry bool, err error) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		var err error
		for _, name := range files {
			var part io.Writer
			if part, err = mw.CreateFormFile(prtFormField, filepath.Base(name)); err != nil {
				break
			}
			var f *os.File
			if f, err = os.Open(name); err != nil {
				break
			}
			_, err = io.Copy(part, f)
			f.Close()
			if err != nil {
				break
			}
		}
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, pr)
	if err != nil {
		pr.CloseWithError(err)
		return nil, false, err
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err := client.Do(req)
	pr.CloseWithError(errors.New("request finished"))
	if err != nil {
		return nil, true, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 == 2 {
		var ok struct {
			Stored []string `json:"stored"`
		}
		_ = json.Unmarshal(body, &ok)
		return ok.Stored, false, nil
	}
	var ae apiError
	msg := strings.TrimSpace(string(bytes.ToValidUTF8(body, nil)))
	if json.Unmarshal(body, &ae) == nil && ae.Error != "" {
		msg = ae.Error + ": " + ae.Reason
	}
	if len(msg) > 300 {
		msg = msg[:300] + "…"
	}
	return nil, resp.StatusCode >= 500, fmt.Errorf("%s: %s", resp.Status, msg)
}
