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

	"github.com/bib-project/bib/storage"
)

const decryptUsage = `Usage:
  bib decrypt --privatekey FILE [--password P] --encryptionkey NAME.esk --encryptedfile NAME.enc --outputfile OUT

Decrypts a file bib encrypted at rest (a recording, its metadata, or a
problem report): NAME.enc is the data, NAME.esk its key wrapped for a
certificate. FILE is that certificate's private key: PEM (PKCS#1, PKCS#8,
encrypted PKCS#8 or legacy encrypted PEM) or PKCS#12 (.pfx/.p12).
OUT is written only when the whole file decrypted and authenticated.

Exit status: 0 done; 2 invalid parameters; 3 key problem (wrong private
key, wrong password, unusable key file); 4 the encrypted file or its .esk is
damaged, truncated, modified or not a pair; 1 other errors (I/O).
`

// Exit statuses of bib decrypt.
const (
	exitDecryptIO     = 1
	exitDecryptUsage  = 2
	exitDecryptKey    = 3
	exitDecryptDamage = 4
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
	if err := decryptFile(*out, *enc, *esk, priv); err != nil {
		code, msg := decryptErr(err)
		return fail(code, "%s", msg)
	}
	fmt.Fprintf(stdout, "decrypted %s -> %s\n", *enc, *out)
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
func decryptFile(out, enc, esk string, priv *rsa.PrivateKey) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(out), filepath.Base(out)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := decryptTo(tmp, enc, esk, priv); err != nil {
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

// decryptTo streams the plaintext of enc (with its esk) to w. An error can
// come after some bytes were written: callers discard w's content then.
// `bib recordings export` can use it to decrypt on the fly.
func decryptTo(w io.Writer, enc, esk string, priv *rsa.PrivateKey) error {
	kb, err := os.ReadFile(esk)
	if err != nil {
		return fmt.Errorf("--encryptionkey %s: %w", esk, err)
	}
	f, err := os.Open(enc)
	if err != nil {
		return fmt.Errorf("--encryptedfile %s: %w", enc, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	r, err := storage.OpenSealedFile(f, fi.Size(), kb, priv)
	if err != nil {
		return fmt.Errorf("%s + %s: %w", filepath.Base(enc), filepath.Base(esk), err)
	}
	if _, err := io.Copy(w, r); err != nil {
		return fmt.Errorf("%s: %w", filepath.Base(enc), err)
	}
	return nil
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
