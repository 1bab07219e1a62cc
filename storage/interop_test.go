package storage

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// docBlock returns the fenced code block that follows marker in
// the README's encryption section, so the test runs what the documentation says.
func docBlock(t *testing.T, marker string) string {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?s)<!-- ` + regexp.QuoteMeta(marker) + ` -->\n` + "```" + `[a-z]*\n(.*?)` + "```")
	m := re.FindSubmatch(doc)
	if m == nil {
		t.Fatalf("README.md: no code block after <!-- %s -->", marker)
	}
	return string(m[1])
}

// TestOpenSSLInterop decrypts a file bib sealed with the commands of
// the README (Encryption at rest): the RSA-OAEP unwrap with the openssl CLI, the chunks
// with Python's cryptography package.
func TestOpenSSLInterop(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl CLI not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	priv, rcpt := testKeyPair(t, 0)
	dir := t.TempDir()
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "private.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	sfs := &SealedFS{Base: noSyncFS{}, To: rcpt, ChunkSize: 1000}
	f, err := sfs.OpenFile(filepath.Join(dir, "rec.wav"), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	writeWAV(t, f, 8000, 2, 2, nil) // header rewrites and syncs: short chunks too
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	want := wavHeader(8000, 2, 8000*2*2*2)
	pcm := make([]byte, 8000*2*2*2)
	for i := 0; i < 100; i++ {
		tone(pcm[i*640:(i+1)*640], 8000, 2, i*160)
	}
	want = append(want, pcm...)

	sh := exec.CommandContext(ctx, "sh", "-e", "-c", docBlock(t, "interop:rsa"))
	sh.Dir = dir
	if out, err := sh.CombinedOutput(); err != nil {
		t.Fatalf("documented openssl step: %v\n%s", err, out)
	}
	key, err := os.ReadFile(filepath.Join(dir, "content.key"))
	if err != nil || len(key) != 32 {
		t.Fatalf("content.key: %d bytes, %v", len(key), err)
	}
	havePy := exec.CommandContext(ctx, "python3", "-c", "import cryptography").Run() == nil
	if !havePy {
		// The RSA step above was openssl's; open the chunks in Go with the
		// key openssl recovered.
		enc, _ := os.ReadFile(filepath.Join(dir, "rec.wav.enc"))
		got, err := openBytes(enc, key)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("openssl-recovered key does not open the file: %v", err)
		}
		t.Skip("python3 cryptography not installed: the AES-GCM step was checked in Go only")
	}
	script := filepath.Join(dir, "bib-decrypt.py")
	if err := os.WriteFile(script, []byte(docBlock(t, "interop:aes")), 0o600); err != nil {
		t.Fatal(err)
	}
	py := exec.CommandContext(ctx, "python3", script, "content.key", "rec.wav.enc")
	py.Dir = dir
	var stderr bytes.Buffer
	py.Stderr = &stderr
	got, err := py.Output()
	if err != nil {
		t.Fatalf("documented Python step: %v\n%s", err, stderr.String())
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("openssl+Python decrypted %d bytes, want %d (equal=%v)", len(got), len(want), bytes.Equal(got, want))
	}
	// And it detects tampering too.
	enc, _ := os.ReadFile(filepath.Join(dir, "rec.wav.enc"))
	enc[len(enc)/2] ^= 1
	os.WriteFile(filepath.Join(dir, "bad.enc"), enc, 0o600)
	bad := exec.CommandContext(ctx, "python3", script, "content.key", "bad.enc")
	bad.Dir = dir
	if err := bad.Run(); err == nil {
		t.Fatal("Python decrypter accepted a flipped byte")
	}
}
