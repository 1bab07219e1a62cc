package main

import (
	"crypto/rsa"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/bib-project/bib/recorder"
	"github.com/bib-project/bib/storage"
)

const decryptUsage = `Usage:
  bib decrypt --privatekey FILE [--password P] --encryptionkey NAME.esk --encryptedfile NAME.enc --outputfile OUT

Decrypts a file bib encrypted at rest (a recording, its metadata, or a
problem report): NAME.enc is the data, NAME.esk its key wrapped for a
certificate. FILE is that certificate's private key: PEM (PKCS#1, PKCS#8,
encrypted PKCS#8 or legacy encrypted PEM) or PKCS#12 (.pfx/.p12).
OUT is written only when every chunk of the file authenticated.

An interrupted recording (bib stopped before finalizing it, so its
encrypted file has no final chunk) is recovered: OUT holds the audio that
reached the disk and authenticated, with the WAV header sizes fixed, a
one-line warning is printed and the exit status is 5. Only a missing end is
tolerated this way, and only for a WAV: a modified chunk is still an error
(4), and so is any other truncated file.

Exit status: 0 done; 5 done, but the file was truncated (an interrupted
recording: OUT holds what authenticated); 2 invalid parameters; 3 key
problem (wrong private key, wrong password, unusable key file); 4 the
encrypted file or its .esk is damaged, truncated (other than a recording),
modified or not a pair; 1 other errors (I/O).
`

// Exit statuses of bib decrypt.
const (
	exitDecryptIO     = 1
	exitDecryptUsage  = 2
	exitDecryptKey    = 3
	exitDecryptDamage = 4
	// exitDecryptTruncated: decrypted an interrupted recording (no final
	// chunk); the output holds what authenticated.
	exitDecryptTruncated = 5
)

// decryptMain implements `bib decrypt`.
func decryptMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bib decrypt", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	keyPath := fs.String("privatekey", "", "private key file: .pem, or PKCS#12 .pfx/.p12")
	password := fs.String("password", "", "password of the private key, if it has one")
	esk := fs.String("encryptionkey", "", "the NAME.esk file (wrapped key)")
	enc := fs.String("encryptedfile", "", "the NAME.enc file (encrypted data)")
	out := fs.String("outputfile", "", "where to write the decrypted file")
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, "bib decrypt: "+format+"\n", a...)
		return code
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, decryptUsage)
			return 0
		}
		return fail(exitDecryptUsage, "%v (see bib decrypt --help)", err)
	}
	if fs.NArg() > 0 {
		return fail(exitDecryptUsage, "unexpected argument %q (see bib decrypt --help)", fs.Arg(0))
	}
	for _, req := range []struct{ name, v string }{
		{"privatekey", *keyPath}, {"encryptionkey", *esk}, {"encryptedfile", *enc}, {"outputfile", *out},
	} {
		if strings.TrimSpace(req.v) == "" {
			return fail(exitDecryptUsage, "--%s is required (see bib decrypt --help)", req.name)
		}
	}
	for _, in := range []struct{ flag, path string }{{"privatekey", *keyPath}, {"encryptionkey", *esk}, {"encryptedfile", *enc}} {
		if fi, err := os.Stat(in.path); err != nil {
			return fail(exitDecryptUsage, "--%s %s: %v", in.flag, in.path, errorsText(err))
		} else if fi.IsDir() {
			return fail(exitDecryptUsage, "--%s %s: is a directory", in.flag, in.path)
		}
	}
	if fi, err := os.Stat(filepath.Dir(*out)); err != nil || !fi.IsDir() {
		return fail(exitDecryptUsage, "--outputfile %s: directory %s does not exist", *out, filepath.Dir(*out))
	}
	if samePath(*out, *enc) || samePath(*out, *esk) || samePath(*out, *keyPath) {
		return fail(exitDecryptUsage, "--outputfile %s: must not be one of the input files", *out)
	}
	priv, err := storage.LoadPrivateKey(*keyPath, *password)
	if err != nil {
		code, msg := decryptErr(err)
		return fail(code, "--privatekey %s: %s", *keyPath, msg)
	}
	res, err := decryptFile(*out, *enc, *esk, priv)
	if err != nil {
		code, msg := decryptErr(err)
		return fail(code, "%s", msg)
	}
	fmt.Fprintf(stdout, "decrypted %s -> %s\n", *enc, *out)
	if res.truncated {
		fmt.Fprintf(stderr, "bib decrypt: warning: %s\n", res.warning(*enc))
		return exitDecryptTruncated
	}
	return 0
}

// decryptErr maps an error to an exit status and a one-line message that
// names the problem.
func decryptErr(err error) (int, string) {
	msg := strings.ReplaceAll(err.Error(), "\n", "; ")
	switch {
	case errors.Is(err, storage.ErrWrongPassword):
		return exitDecryptKey, msg
	case errors.Is(err, storage.ErrWrongKey):
		return exitDecryptKey, msg
	case errors.Is(err, storage.ErrKeyFile):
		return exitDecryptKey, msg
	case errors.Is(err, storage.ErrTampered), errors.Is(err, storage.ErrTruncated),
		errors.Is(err, storage.ErrNotSealed), errors.Is(err, storage.ErrKeyMismatch),
		errors.Is(err, storage.ErrBadESK):
		return exitDecryptDamage, msg
	}
	return exitDecryptIO, msg
}

// decryptFile decrypts enc (with its esk) into out, atomically: a temp file
// in out's directory, synced and renamed only when every chunk
// authenticated; removed on any failure.
func decryptFile(out, enc, esk string, priv *rsa.PrivateKey) (res plainInfo, err error) {
	err = writeAtomic(out, func(w io.Writer) error {
		res, err = decryptTo(w, enc, esk, priv)
		return err
	})
	return res, err
}

// writeAtomic writes out through fill: a temp file in out's directory,
// synced and renamed when fill succeeded, removed otherwise.
func writeAtomic(out string, fill func(io.Writer) error) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := fill(tmp); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), out)
}

// decryptTo streams the plaintext of enc (with its esk) to w (see
// openPlain for a truncated file). An error can come after some bytes were
// written: callers discard w's content then.
func decryptTo(w io.Writer, enc, esk string, priv *rsa.PrivateKey) (plainInfo, error) {
	kb, err := os.ReadFile(esk)
	if err != nil {
		return plainInfo{}, fmt.Errorf("--encryptionkey %s: %w", esk, err)
	}
	f, err := os.Open(enc)
	if err != nil {
		return plainInfo{}, fmt.Errorf("--encryptedfile %s: %w", enc, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return plainInfo{}, err
	}
	r, res, err := openPlain(f, fi.Size(), kb, priv)
	if err != nil {
		return res, fmt.Errorf("%s + %s: %w", filepath.Base(enc), filepath.Base(esk), err)
	}
	if _, err := io.Copy(w, r); err != nil {
		return res, fmt.Errorf("%s: %w", filepath.Base(enc), err)
	}
	return res, nil
}

// plainInfo describes the plaintext openPlain returns.
type plainInfo struct {
	// truncated: the file had no final chunk (an interrupted recording);
	// the plaintext is what authenticated, WAV sizes fixed.
	truncated  bool
	durationMS int64 // playing time of a recovered WAV
	dropped    int64 // bytes of a partial last chunk left out
}

func (p plainInfo) warning(name string) string {
	msg := fmt.Sprintf("%s has no final chunk (the recording was interrupted before bib finalized it): "+
		"wrote the %.2f s that authenticated, with the WAV sizes fixed", filepath.Base(name), float64(p.durationMS)/1000)
	if p.dropped > 0 {
		msg += fmt.Sprintf("; %d bytes of a partly written chunk were left out", p.dropped)
	}
	return msg
}

// openPlain opens an encrypted file (src, size bytes; esk its key file) for
// reading its plaintext. A file without its final chunk opens only when
// its plaintext is a WAV (an interrupted recording): the reader then holds
// the chunks that authenticated, with the RIFF sizes fixed, and
// info.truncated is set. Any chunk that does not authenticate is an error.
func openPlain(src io.ReaderAt, size int64, esk []byte, priv *rsa.PrivateKey) (*io.SectionReader, plainInfo, error) {
	r, err := storage.RecoverSealedFile(src, size, esk, priv)
	if err != nil {
		return nil, plainInfo{}, err
	}
	if !r.Truncated() {
		return io.NewSectionReader(r, 0, r.Size()), plainInfo{}, nil
	}
	if r.Size() == 0 {
		return nil, plainInfo{}, fmt.Errorf("%w: it has no final chunk and no data reached the disk before its writer stopped", storage.ErrTruncated)
	}
	v, info, err := recorder.WAVView(r, r.Size())
	if errors.Is(err, recorder.ErrNotWAV) {
		return nil, plainInfo{}, fmt.Errorf("%w: it has no final chunk, and it is not a WAV recording whose authenticated part could be recovered", storage.ErrTruncated)
	}
	if err != nil {
		return nil, plainInfo{}, err
	}
	return v, plainInfo{truncated: true, durationMS: info.DurationMS(), dropped: r.Dropped()}, nil
}

func samePath(a, b string) bool {
	fa, err1 := os.Stat(a)
	fb, err2 := os.Stat(b)
	if err1 == nil && err2 == nil {
		return os.SameFile(fa, fb)
	}
	aa, _ := filepath.Abs(a)
	bb, _ := filepath.Abs(b)
	return aa == bb
}

// errorsText shortens a path error to its cause ("no such file or directory").
func errorsText(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}
