package main

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bib-project/bib/storage"
)

const recordingsUsage = `Usage:
  bib recordings ls [--data DIR] [--line L] [--device D] [--since T] [--until T] [--json]
  bib recordings show [--data DIR] ID
  bib recordings export [--data DIR] [--track near|far|mixed] ID --out FILE
                        [--privatekey KEY [--password P]]
  bib recordings verify [--data DIR] [--json]

T is RFC 3339 (2026-12-04T10:00:00Z) or a date (2026-12-04, UTC).
verify re-hashes every finished recording; it exits 1 on any problem.
export of an encrypted recording decrypts it with --privatekey (PEM or
.pfx/.p12; an interrupted recording gives its authenticated part, WAV sizes
fixed); without a key it writes FILE.enc and FILE.esk as stored (open them
with bib decrypt).
`

// recordingsMain implements `bib recordings`.
func recordingsMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stderr, recordingsUsage)
		return 2
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet("bib recordings "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, recordingsUsage) }
	data := fs.String("data", "./data", "data directory holding the archive")
	var (
		line, device, since, until, out, track *string
		keyPath, password                      *string
		asJSON                                 *bool
	)
	switch cmd {
	case "ls":
		line = fs.String("line", "", "only recordings of this line or directory number")
		device = fs.String("device", "", "only recordings of this device")
		since = fs.String("since", "", "only recordings started at or after T")
		until = fs.String("until", "", "only recordings started before T")
		asJSON = fs.Bool("json", false, "print JSON")
	case "show":
	case "export":
		out = fs.String("out", "", "file to write the audio to")
		track = fs.String("track", "", "extra track instead of the stereo file")
		keyPath = fs.String("privatekey", "", "private key (PEM or .pfx/.p12) to decrypt an encrypted recording")
		password = fs.String("password", "", "password of --privatekey")
	case "verify":
		asJSON = fs.Bool("json", false, "print JSON")
	default:
		fmt.Fprintf(stderr, "bib recordings: unknown command %q\n\n%s", cmd, recordingsUsage)
		return 2
	}
	pos, err := recParseArgs(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	wantArgs := map[string]int{"ls": 0, "show": 1, "export": 1, "verify": 0}[cmd]
	if len(pos) != wantArgs {
		fmt.Fprintf(stderr, "bib recordings %s: want %d argument(s), got %d\n\n%s", cmd, wantArgs, len(pos), recordingsUsage)
		return 2
	}
	if fi, err := os.Stat(filepath.Join(*data, "index.db")); err != nil || fi.IsDir() {
		fmt.Fprintf(stderr, "bib recordings: no archive in %s (index.db not found); pass --data DIR\n", *data)
		return 1
	}
	st, err := storage.OpenDir(*data)
	if err != nil {
		fmt.Fprintf(stderr, "bib recordings: %v\n", err)
		return 1
	}
	defer st.Close()

	switch cmd {
	case "ls":
		q := storage.Query{Line: *line, Device: *device, Limit: 1000}
		if q.Since, err = recParseTime(*since); err != nil {
			fmt.Fprintf(stderr, "bib recordings ls: --since: %v\n", err)
			return 2
		}
		if q.Until, err = recParseTime(*until); err != nil {
			fmt.Fprintf(stderr, "bib recordings ls: --until: %v\n", err)
			return 2
		}
		return recordingsList(ctx, st, q, *asJSON, stdout, stderr)
	case "show":
		m, err := st.Get(ctx, pos[0])
		if err != nil {
			fmt.Fprintf(stderr, "bib recordings show: %v\n", err)
			return 1
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(m)
		return 0
	case "export":
		if *out == "" {
			fmt.Fprintf(stderr, "bib recordings export: --out FILE is required\n")
			return 2
		}
		var priv *rsa.PrivateKey
		if *keyPath != "" {
			if priv, err = storage.LoadPrivateKey(*keyPath, *password); err != nil {
				fmt.Fprintf(stderr, "bib recordings export: --privatekey %s: %v\n", *keyPath, err)
				return 2
			}
		}
		note, err := recordingsExport(ctx, st, pos[0], *track, *out, priv)
		if err != nil {
			fmt.Fprintf(stderr, "bib recordings export: %s\n", strings.ReplaceAll(err.Error(), "\n", "; "))
			return 1
		}
		if note != "" {
			fmt.Fprintln(stdout, note)
		}
		return 0
	}
	return recordingsVerify(ctx, st, *asJSON, stdout, stderr)
}

// recParseArgs parses flags that may come before or after positional
// arguments ("export ID --out FILE").
func recParseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// recParseTime accepts RFC 3339 or a bare date (UTC midnight); "" is zero.
func recParseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither RFC 3339 nor YYYY-MM-DD", s)
	}
	return t, nil
}

func recordingsList(ctx context.Context, st storage.Store, q storage.Query, asJSON bool, stdout, stderr io.Writer) int {
	all := []storage.Meta{}
	for {
		page, next, err := st.List(ctx, q)
		if err != nil {
			fmt.Fprintf(stderr, "bib recordings ls: %v\n", err)
			return 1
		}
		all = append(all, page...)
		if next == "" {
			break
		}
		q.Cursor = next
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(all)
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTART\tDURATION\tNEAR\tFAR\tSTATUS")
	for _, m := range all {
		status := string(m.Status)
		if m.Reason != "" {
			status += " (" + m.Reason + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", m.ID, m.StartTime.UTC().Format(time.RFC3339),
			(time.Duration(m.DurationMS) * time.Millisecond).String(), recPartyLabel(m.Near), recPartyLabel(m.Far), status)
	}
	_ = tw.Flush()
	return 0
}

func recPartyLabel(p storage.Party) string {
	parts := []string{}
	for _, s := range []string{p.Device, p.Addr} {
		if s != "" {
			parts = append(parts, s)
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, "/")
}

// recordingsExport copies a recording's audio to out (temp file + rename).
// An encrypted recording is decrypted on the fly with priv; without priv it
// is exported as stored, out.enc + out.esk. The note says what was written
// when it is not simply out.
func recordingsExport(ctx context.Context, st *storage.DirStore, id, track, out string, priv *rsa.PrivateKey) (string, error) {
	src, m, err := st.Open(ctx, id, track)
	if err != nil {
		return "", err
	}
	defer src.Close()
	if !m.Encrypted {
		return "", writeAtomic(out, func(w io.Writer) error {
			_, err := io.Copy(w, src)
			return err
		})
	}
	if priv == nil {
		esk, _, err := st.Key(ctx, id, track)
		if err != nil {
			return "", err
		}
		if err := writeAtomic(out+storage.EncSuffix, func(w io.Writer) error {
			_, err := io.Copy(w, src)
			return err
		}); err != nil {
			return "", err
		}
		if err := writeAtomic(out+storage.ESKSuffix, func(w io.Writer) error {
			_, err := w.Write(esk)
			return err
		}); err != nil {
			os.Remove(out + storage.EncSuffix)
			return "", err
		}
		return fmt.Sprintf("recording %s is encrypted: exported as stored to %s%s + %s%s (decrypt with bib decrypt, or pass --privatekey)",
			id, out, storage.EncSuffix, out, storage.ESKSuffix), nil
	}
	view, info, err := openRecordingPlain(ctx, st, src, id, track, priv)
	if err != nil {
		return "", fmt.Errorf("%s: %w", id, err)
	}
	if info.truncated && m.Status != storage.StatusInterrupted {
		return "", fmt.Errorf("%s: %w: the index says %s, but the encrypted file has no final chunk", id, storage.ErrTruncated, m.Status)
	}
	if err := writeAtomic(out, func(w io.Writer) error {
		_, err := io.Copy(w, view)
		return err
	}); err != nil {
		return "", fmt.Errorf("%s: %w", id, err)
	}
	if info.truncated {
		return fmt.Sprintf("recording %s was interrupted: %s", id, info.warning(id+".wav"+storage.EncSuffix)), nil
	}
	return "", nil
}

func recordingsVerify(ctx context.Context, st storage.Store, asJSON bool, stdout, stderr io.Writer) int {
	probs, err := st.Verify(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "bib recordings verify: %v\n", err)
		return 1
	}
	if asJSON {
		if probs == nil {
			probs = []storage.Problem{}
		}
		_ = json.NewEncoder(stdout).Encode(map[string]any{"problems": probs})
	} else {
		for _, p := range probs {
			id := p.ID
			if id == "" {
				id = "-"
			}
			fmt.Fprintf(stdout, "%s\t%s\t%s\t%s\n", p.Kind, id, p.Path, p.Detail)
		}
		if len(probs) == 0 {
			fmt.Fprintln(stdout, "ok: every finished recording matches its size and sha256")
		} else {
			fmt.Fprintf(stdout, "%d problem(s)\n", len(probs))
		}
	}
	if len(probs) > 0 {
		return 1
	}
	return 0
}
