package main

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bib-project/bib/storage"
)

var (
	cryptoKeysOnce sync.Once
	cryptoKeys     [2]*rsa.PrivateKey
)

// testPKI is a directory with two RSA key pairs in files:
// key.pem (PKCS#8), key-enc.pem (encrypted PKCS#8, password "pw"; openssl),
// key.pfx (password "pw"; openssl), key-nopw.pfx (empty password; openssl),
// cert.pem (self-signed for key.pem), other.pem / other-cert.pem.
type testPKI struct {
	dir     string
	openssl bool
}

func (p testPKI) path(name string) string { return filepath.Join(p.dir, name) }

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	cryptoKeysOnce.Do(func() {
		for i := range cryptoKeys {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			cryptoKeys[i] = k
		}
	})
	p := testPKI{dir: t.TempDir()}
	for i, base := range []string{"key", "other"} {
		k := cryptoKeys[i]
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		writePEM(t, p.path(base+".pem"), "PRIVATE KEY", der)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(i + 1)), Subject: pkix.Name{CommonName: "bib test " + base},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		}
		cder, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
		if err != nil {
			t.Fatal(err)
		}
		name := "cert.pem"
		if base == "other" {
			name = "other-cert.pem"
		}
		writePEM(t, p.path(name), "CERTIFICATE", cder)
	}
	if _, err := exec.LookPath("openssl"); err == nil {
		p.openssl = true
		for _, args := range [][]string{
			{"pkcs8", "-topk8", "-in", "key.pem", "-v2", "aes-256-cbc", "-passout", "pass:pw", "-out", "key-enc.pem"},
			{"pkcs12", "-export", "-inkey", "key.pem", "-in", "cert.pem", "-passout", "pass:pw", "-out", "key.pfx"},
			{"pkcs12", "-export", "-inkey", "key.pem", "-in", "cert.pem", "-passout", "pass:", "-out", "key-nopw.pfx"},
		} {
			cmd := exec.Command("openssl", args...)
			cmd.Dir = p.dir
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("openssl %v: %v\n%s", args, err, out)
			}
		}
	}
	return p
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// sealTestFile encrypts content as dir/name.enc + .esk for cert.
func sealTestFile(t *testing.T, cert, dir, name string, content []byte) {
	t.Helper()
	rcpt, err := storage.LoadRecipient(cert)
	if err != nil {
		t.Fatal(err)
	}
	sfs := &storage.SealedFS{Base: storage.OSFS{}, To: rcpt, ChunkSize: 4096}
	f, err := sfs.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(content); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestDecryptCLI(t *testing.T) {
	pki := newTestPKI(t)
	dir := t.TempDir()
	content := bytes.Repeat([]byte("RIFF-tone-0123456789abcdef"), 2000) // 50 kB, 13 chunks
	sealTestFile(t, pki.path("cert.pem"), dir, "rec.wav", content)
	sealTestFile(t, pki.path("cert.pem"), dir, "other.wav", content)
	enc, esk := filepath.Join(dir, "rec.wav.enc"), filepath.Join(dir, "rec.wav.esk")
	encBytes, _ := os.ReadFile(enc)

	flipped := filepath.Join(dir, "flipped.enc")
	b := bytes.Clone(encBytes)
	b[len(b)/2] ^= 0x40
	os.WriteFile(flipped, b, 0o600)
	truncated := filepath.Join(dir, "truncated.enc")
	os.WriteFile(truncated, encBytes[:len(encBytes)-1000], 0o600)

	outDir := t.TempDir()
	out := filepath.Join(outDir, "out.wav")
	std := func(extra ...string) []string {
		return append([]string{"--privatekey", pki.path("key.pem"), "--encryptionkey", esk, "--encryptedfile", enc, "--outputfile", out}, extra...)
	}
	with := func(flag, v string) []string {
		a := std()
		for i := range a {
			if a[i] == flag {
				a[i+1] = v
			}
		}
		return a
	}
	type tc struct {
		name    string
		args    []string
		code    int
		msg     string // substring of the one-line error
		openssl bool
	}
	cases := []tc{
		{"pem", std(), 0, "", false},
		{"help", []string{"--help"}, 0, "", false},
		{"no flags", nil, exitDecryptUsage, "--privatekey is required", false},
		{"missing outputfile", std()[:6], exitDecryptUsage, "--outputfile is required", false},
		{"unknown flag", std("--bogus"), exitDecryptUsage, "flag provided but not defined: -bogus", false},
		{"missing enc", with("--encryptedfile", filepath.Join(dir, "nope.enc")), exitDecryptUsage, "no such file", false},
		{"output dir missing", with("--outputfile", filepath.Join(dir, "no/dir/out")), exitDecryptUsage, "does not exist", false},
		{"wrong key", with("--privatekey", pki.path("other.pem")), exitDecryptKey, "wrong private key", false},
		{"cert as key", with("--privatekey", pki.path("cert.pem")), exitDecryptKey, "no PRIVATE KEY block", false},
		{"flipped byte", with("--encryptedfile", flipped), exitDecryptDamage, "failed authentication", false},
		{"truncated", with("--encryptedfile", truncated), exitDecryptDamage, "truncated", false},
		{"swapped esk", with("--encryptionkey", filepath.Join(dir, "other.wav.esk")), exitDecryptDamage, "belongs to a different encrypted file", false},
		{"esk is enc", with("--encryptionkey", enc), exitDecryptDamage, "invalid key file (.esk)", false},
		{"enc-pem password", append(with("--privatekey", pki.path("key-enc.pem")), "--password", "pw"), 0, "", true},
		{"enc-pem wrong password", append(with("--privatekey", pki.path("key-enc.pem")), "--password", "nope"), exitDecryptKey, "wrong password", true},
		{"enc-pem no password", with("--privatekey", pki.path("key-enc.pem")), exitDecryptKey, "give --password", true},
		{"pfx password", append(with("--privatekey", pki.path("key.pfx")), "--password", "pw"), 0, "", true},
		{"pfx wrong password", append(with("--privatekey", pki.path("key.pfx")), "--password", "nope"), exitDecryptKey, "wrong password", true},
		{"pfx without password", with("--privatekey", pki.path("key-nopw.pfx")), 0, "", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.openssl && !pki.openssl {
				t.Skip("openssl CLI not installed: cannot make encrypted PEM / PKCS#12 keys")
			}
			os.Remove(out)
			var so, se bytes.Buffer
			code := decryptMain(c.args, &so, &se)
			if code != c.code {
				t.Fatalf("exit %d, want %d; stderr %q", code, c.code, se.String())
			}
			ents, _ := os.ReadDir(outDir)
			if c.code != 0 {
				line := se.String()
				if strings.Count(line, "\n") != 1 || !strings.HasPrefix(line, "bib decrypt: ") || !strings.Contains(line, c.msg) {
					t.Fatalf("stderr %q: want one line \"bib decrypt: ...%s...\"", line, c.msg)
				}
				if len(ents) != 0 {
					t.Fatalf("left behind in the output dir: %v", ents)
				}
				t.Logf("exit %d: %s", code, strings.TrimSpace(line))
				return
			}
			if c.name == "help" {
				if !strings.Contains(so.String(), "--encryptionkey NAME.esk") {
					t.Fatalf("help: %q", so.String())
				}
				return
			}
			got, err := os.ReadFile(out)
			if err != nil || !bytes.Equal(got, content) {
				t.Fatalf("output differs (err %v)", err)
			}
			if len(ents) != 1 {
				t.Fatalf("output dir: %v, want only out.wav", ents)
			}
		})
	}
}

// A failed decrypt leaves an existing OUT as it was.
func TestDecryptKeepsExistingOutputOnFailure(t *testing.T) {
	pki := newTestPKI(t)
	dir := t.TempDir()
	sealTestFile(t, pki.path("cert.pem"), dir, "r.wav", []byte("some plaintext that is long enough to need more than the header chunk of 64 bytes"))
	out := filepath.Join(dir, "out.wav")
	os.WriteFile(out, []byte("previous"), 0o600)
	var so, se bytes.Buffer
	code := decryptMain([]string{"--privatekey", pki.path("other.pem"), "--encryptionkey", filepath.Join(dir, "r.wav.esk"),
		"--encryptedfile", filepath.Join(dir, "r.wav.enc"), "--outputfile", out}, &so, &se)
	if code != exitDecryptKey {
		t.Fatalf("exit %d: %s", code, se.String())
	}
	if b, _ := os.ReadFile(out); string(b) != "previous" {
		t.Fatalf("existing output replaced on failure: %q", b)
	}
}
