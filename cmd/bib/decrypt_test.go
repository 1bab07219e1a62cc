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

	"github.com/bib-project/bib/recorder"
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

// TestDecryptInterruptedRecording: a WAV whose writer was killed (no final
// chunk) decrypts to what authenticated with the WAV sizes fixed, exit 5
// and one warning line; a modified chunk or a truncated non-WAV stays an
// error and writes nothing.
func TestDecryptInterruptedRecording(t *testing.T) {
	pki := newTestPKI(t)
	dir := t.TempDir()
	rcpt, err := storage.LoadRecipient(pki.path("cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	sfs := &storage.SealedFS{Base: storage.OSFS{}, To: rcpt, ChunkSize: 4096}
	crash := func(name string, content func(f storage.File)) (enc, esk string) {
		f, err := sfs.OpenFile(filepath.Join(dir, name), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		content(f)
		if err := f.Sync(); err != nil { // sealed so far; then killed: no Close
			t.Fatal(err)
		}
		return filepath.Join(dir, name+".enc"), filepath.Join(dir, name+".esk")
	}
	var frames []int16
	enc, esk := crash("rec.wav", func(f storage.File) {
		w, _ := recorder.NewWAVWriter(f, 8000, 2)
		for i := range 2 * 8000 * 3 / 2 { // 1.5 s
			frames = append(frames, int16(i*13%3000-1500))
		}
		w.Write(frames)
		f.Write([]byte{1, 2, 3}) // half a frame
	})
	txtEnc, txtEsk := crash("notes.txt", func(f storage.File) { f.Write(bytes.Repeat([]byte("text "), 1000)) })
	raw, _ := os.ReadFile(enc)
	raw[len(raw)/2] ^= 1
	bad := filepath.Join(dir, "bad.enc")
	os.WriteFile(bad, raw, 0o600)

	outDir := t.TempDir()
	out := filepath.Join(outDir, "out.wav")
	for _, c := range []struct {
		name     string
		enc, esk string
		code     int
		msg      string
	}{
		{"interrupted wav", enc, esk, exitDecryptTruncated, "warning: rec.wav.enc has no final chunk"},
		{"interrupted and modified", bad, esk, exitDecryptDamage, "failed authentication"},
		{"interrupted, not a wav", txtEnc, txtEsk, exitDecryptDamage, "not a WAV recording"},
	} {
		t.Run(c.name, func(t *testing.T) {
			os.Remove(out)
			code, so, se := runDecrypt(pki.path("key.pem"), c.esk, c.enc, out)
			if code != c.code || strings.Count(se, "\n") != 1 || !strings.Contains(se, c.msg) {
				t.Fatalf("exit %d stderr %q stdout %q; want %d and one line with %q", code, se, so, c.code, c.msg)
			}
			t.Logf("exit %d: %s", code, strings.TrimSpace(se))
			ents, _ := os.ReadDir(outDir)
			if code != exitDecryptTruncated {
				if len(ents) != 0 {
					t.Fatalf("left behind: %v", ents)
				}
				return
			}
			wav, _ := os.ReadFile(out)
			info, err := recorder.ParseWAVHeader(bytes.NewReader(wav))
			if err != nil || info.DataOffset+info.DataBytes != int64(len(wav)) || info.DataBytes != int64(2*len(frames)) {
				t.Fatalf("recovered wav: %+v (%v) for %d bytes, want %d data bytes", info, err, len(wav), 2*len(frames))
			}
			for i, s := range frames {
				if got := int16(uint16(wav[44+2*i]) | uint16(wav[45+2*i])<<8); got != s {
					t.Fatalf("sample %d: %d, want %d", i, got, s)
				}
			}
		})
	}
	var so, se bytes.Buffer
	if decryptMain([]string{"--help"}, &so, &se); !strings.Contains(so.String(), "5 done, but the file was truncated") {
		t.Fatalf("--help does not document exit 5: %s", so.String())
	}
}
