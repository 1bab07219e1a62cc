package storage

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// opensslKeys makes, with the openssl CLI, one RSA key in every format bib
// reads, plus keys it must refuse. It skips the test when openssl is absent.
func opensslKeys(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl CLI not installed: key format tests need it to make PEM and PKCS#12 files")
	}
	dir := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command("openssl", args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "key.pem")
	run("rsa", "-in", "key.pem", "-traditional", "-out", "pkcs1.pem")
	run("pkcs8", "-topk8", "-in", "key.pem", "-v2", "aes-256-cbc", "-passout", "pass:s3cret", "-out", "enc8.pem")
	run("rsa", "-in", "key.pem", "-aes256", "-traditional", "-passout", "pass:s3cret", "-out", "legacyenc.pem")
	run("req", "-x509", "-new", "-key", "key.pem", "-subj", "/CN=bib recordings", "-days", "30", "-out", "cert.pem")
	run("pkey", "-in", "key.pem", "-pubout", "-out", "pub.pem")
	run("pkcs12", "-export", "-inkey", "key.pem", "-in", "cert.pem", "-passout", "pass:s3cret", "-out", "modern.pfx")
	run("pkcs12", "-export", "-inkey", "key.pem", "-in", "cert.pem", "-passout", "pass:", "-out", "empty.pfx")
	run("pkcs12", "-export", "-inkey", "key.pem", "-in", "cert.pem", "-keypbe", "PBE-SHA1-3DES", "-certpbe", "PBE-SHA1-3DES",
		"-macalg", "sha1", "-passout", "pass:s3cret", "-out", "legacy.p12")
	run("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024", "-out", "small.pem")
	run("req", "-x509", "-new", "-key", "small.pem", "-subj", "/CN=small", "-days", "30", "-out", "small-cert.pem")
	run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ec.pem")
	run("req", "-x509", "-new", "-key", "ec.pem", "-subj", "/CN=ec", "-days", "30", "-out", "ec-cert.pem")
	return dir
}

func TestLoadKeys(t *testing.T) {
	dir := opensslKeys(t)
	p := func(n string) string { return filepath.Join(dir, n) }
	rcpt, err := LoadRecipient(p("cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if rcpt.CertSHA256 == "" || !strings.Contains(rcpt.Subject, "bib recordings") {
		t.Fatalf("certificate fingerprint/subject missing: %+v", rcpt)
	}
	pub, err := LoadRecipient(p("pub.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if pub.KeySHA256 != rcpt.KeySHA256 {
		t.Fatal("certificate and public key fingerprints differ")
	}
	// The fingerprint is what openssl computes over the SPKI DER.
	out, err := exec.Command("sh", "-c", "openssl pkey -pubin -in "+p("pub.pem")+" -outform DER | openssl dgst -sha256 -r").Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Fields(string(out))[0]; got != rcpt.KeySHA256 {
		t.Fatalf("fingerprint %s, openssl says %s", rcpt.KeySHA256, got)
	}

	for _, tc := range []struct {
		file, password string
		want           error
	}{
		{"key.pem", "", nil},
		{"pkcs1.pem", "", nil},
		{"enc8.pem", "s3cret", nil},
		{"enc8.pem", "wrong", ErrWrongPassword},
		{"enc8.pem", "", ErrWrongPassword},
		{"legacyenc.pem", "s3cret", nil},
		{"legacyenc.pem", "wrong", ErrWrongPassword},
		{"modern.pfx", "s3cret", nil},
		{"modern.pfx", "wrong", ErrWrongPassword},
		{"empty.pfx", "", nil},
		{"empty.pfx", "x", ErrWrongPassword},
		{"legacy.p12", "s3cret", nil},
		{"legacy.p12", "wrong", ErrWrongPassword},
		{"cert.pem", "", ErrKeyFile},
		{"missing.pem", "", ErrKeyFile},
	} {
		t.Run(tc.file+"/"+tc.password, func(t *testing.T) {
			k, err := LoadPrivateKey(p(tc.file), tc.password)
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("err = %v, want %v", err, tc.want)
				}
				t.Logf("%v", err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			fp, _ := KeyFingerprint(&k.PublicKey)
			if fp != rcpt.KeySHA256 {
				t.Fatal("loaded a different key")
			}
		})
	}

	for _, tc := range []struct{ file, want string }{
		{"small-cert.pem", "1024 bits is too short"},
		{"ec-cert.pem", "not RSA"},
		{"key.pem", "a private key is not a certificate"},
		{"modern.pfx", "not PEM"},
	} {
		t.Run("recipient "+tc.file, func(t *testing.T) {
			_, err := LoadRecipient(p(tc.file))
			if !errors.Is(err, ErrKeyFile) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrKeyFile saying %q", err, tc.want)
			}
		})
	}
}

func TestEncryptionConfig(t *testing.T) {
	dir := opensslKeys(t)
	p := func(n string) string { return filepath.Join(dir, n) }
	for _, tc := range []struct {
		name string
		cfg  EncryptionConfig
		want string // substring of the error, "" for none
	}{
		{"off", EncryptionConfig{}, ""},
		{"certificate only", EncryptionConfig{Certificate: p("cert.pem")}, ""},
		{"with pfx", EncryptionConfig{Certificate: p("cert.pem"), PrivateKey: p("modern.pfx"), Password: "s3cret"}, ""},
		{"weak", EncryptionConfig{Certificate: p("small-cert.pem")}, "storage.encryption.certificate"},
		{"wrong password", EncryptionConfig{Certificate: p("cert.pem"), PrivateKey: p("modern.pfx"), Password: "x"}, "wrong password"},
		{"other key", EncryptionConfig{Certificate: p("cert.pem"), PrivateKey: p("small.pem")}, "not the key of storage.encryption.certificate"},
		{"key without cert", EncryptionConfig{PrivateKey: p("key.pem")}, "storage.encryption.private_key: set without"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if err == nil {
				_, _, err = tc.cfg.Load()
			}
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestParsePrivateKeyGarbage(t *testing.T) {
	for _, b := range [][]byte{nil, []byte("x"), []byte("-----BEGIN FOO-----\n-----END FOO-----\n"), {0x30, 0x03, 0x02, 0x01, 0x03}} {
		if _, err := ParsePrivateKey(b, ""); !errors.Is(err, ErrKeyFile) {
			t.Fatalf("%q: err = %v, want ErrKeyFile", b, err)
		}
	}
}

func FuzzParsePrivateKey(f *testing.F) {
	f.Add([]byte("-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n"), "pw")
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x03}, "")
	f.Fuzz(func(t *testing.T, b []byte, pw string) {
		_, _ = ParsePrivateKey(b, pw)
	})
}
