package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bib-project/bib/bridge/codec"
	"github.com/bib-project/bib/recorder"
	"github.com/bib-project/bib/sip/siptest"
	"github.com/bib-project/bib/storage"
)

// Encryption at rest end to end: real SIP calls recorded by bib serve with
// storage.encryption set, the archive scanned for plaintext, decryption by
// bib decrypt and by the API, a crash, and a key rotation.

// sendTones sends n 20 ms PCMU frames from each party, agent 440 Hz and
// customer 1000 Hz, paced in real time, and returns what each sent.
func sendTones(ac, bc *siptest.Call, n int) (agent, customer [][]byte) {
	agent, customer = toneStream(440, n), toneStream(1000, n)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for i := range n {
		<-tick.C
		ac.SendRTP(siptest.RTPPacket(0xA1, uint16(i), uint32(160*i), 0, agent[i]))
		bc.SendRTP(siptest.RTPPacket(0xB2, uint16(5000+i), uint32(90000+160*i), 0, customer[i]))
	}
	return agent, customer
}

// ulawPCM is the G.711-decoded audio of payloads.
func ulawPCM(sent [][]byte) []int16 {
	var out []int16
	for _, p := range sent {
		for _, b := range p {
			out = append(out, codec.UlawDecode(b))
		}
	}
	return out
}

// wavChannels parses a 16-bit stereo WAV into its data chunk and channels.
func wavChannels(t *testing.T, wav []byte) (data []byte, left, right []int16) {
	t.Helper()
	info, err := recorder.ParseWAVHeader(bytes.NewReader(wav))
	if err != nil {
		t.Fatal(err)
	}
	if info.Channels != 2 || info.DataOffset+info.DataBytes != int64(len(wav)) {
		t.Fatalf("wav: %+v for %d bytes", info, len(wav))
	}
	data = wav[info.DataOffset:]
	left, right = make([]int16, len(data)/4), make([]int16, len(data)/4)
	for i := range left {
		left[i] = int16(binary.LittleEndian.Uint16(data[4*i:]))
		right[i] = int16(binary.LittleEndian.Uint16(data[4*i+2:]))
	}
	return data, left, right
}

// containsRun reports whether ch holds want[:n] sample for sample.
func containsRun(ch, want []int16, n int) bool {
	n = min(n, len(want))
	for off := 0; off+n <= len(ch); off++ {
		if slices.Equal(ch[off:off+n], want[:n]) {
			return true
		}
	}
	return false
}

// plaintextScanner finds any 64-byte window of known plaintexts in files.
// Windows with fewer than 32 non-zero bytes (silence) are not searched:
// zeros are everywhere on disk and prove nothing.
type plaintextScanner struct{ windows map[string]string }

func newPlaintextScanner() *plaintextScanner { return &plaintextScanner{windows: map[string]string{}} }

func (s *plaintextScanner) add(label string, p []byte) int {
	added := 0
	for i := 0; i+64 <= len(p); i++ {
		w := p[i : i+64]
		if 64-bytes.Count(w, []byte{0}) < 32 {
			continue
		}
		if _, ok := s.windows[string(w)]; !ok {
			s.windows[string(w)] = label
			added++
		}
	}
	return added
}

// scan returns "file: label" for every file under root holding a window.
func (s *plaintextScanner) scan(t *testing.T, root string) []string {
	t.Helper()
	var hits []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for i := 0; i+64 <= len(b); i++ {
			if label, ok := s.windows[string(b[i:i+64])]; ok {
				rel, _ := filepath.Rel(root, p)
				hits = append(hits, rel+": "+label)
				break
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hits
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// jsonStrings returns every string value in a JSON document.
func jsonStrings(t *testing.T, doc []byte) []string {
	t.Helper()
	var v any
	if err := json.Unmarshal(doc, &v); err != nil {
		t.Fatal(err)
	}
	var out []string
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case string:
			out = append(out, x)
		case []any:
			for _, e := range x {
				walk(e)
			}
		case map[string]any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(v)
	return out
}

// filesContaining returns the files under root that contain s.
func filesContaining(t *testing.T, root, s string) []string {
	t.Helper()
	var hits []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(s)) {
				hits = append(hits, p)
			}
		}
		return err
	})
	return hits
}

func httpGet(t *testing.T, url string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// runDecrypt runs `bib decrypt` in-process and returns exit status, stdout
// and stderr.
func runDecrypt(key, esk, enc, out string) (int, string, string) {
	var so, se bytes.Buffer
	code := decryptMain([]string{"--privatekey", key, "--encryptionkey", esk, "--encryptedfile", enc, "--outputfile", out}, &so, &se)
	return code, so.String(), se.String()
}

// TestEncryptedRecordingEndToEnd: a recorded call with encryption at rest
// leaves no plaintext audio and no protected metadata anywhere under the
// data directory (index and WAL included); bib decrypt of the stored files
// gives exactly the WAV the server (holding the key) serves, and that WAV
// holds the audio each party sent.
func TestEncryptedRecordingEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	pki := newTestPKI(t)
	agent, customer := newTestParty(t, "1001"), newTestParty(t, "2001")
	cfg := agentConfig(customer, "automatic")
	cfg.Storage.Encryption.Certificate = pki.path("cert.pem")
	cfg.Storage.Encryption.PrivateKey = pki.path("key.pem")
	cfg.Data = t.TempDir()
	ts := startServer(t, cfg)
	ac, bc := placeCall(t, ctx, ts, agent, customer)
	sentA, sentB := sendTones(ac, bc, 100)
	time.Sleep(100 * time.Millisecond) // let the last packets cross bib before hanging up
	if err := ac.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	idx := waitRecording(t, ctx, ts)
	if idx.Status != storage.StatusComplete || !idx.Encrypted || idx.Near.Name != "" || idx.GateVerdict != nil || idx.Events != nil {
		t.Fatalf("listed metadata of an encrypted recording: %+v", idx)
	}

	// The full metadata, decrypted from the sidecar by the server.
	resp, b := httpGet(t, ts.httpURL+"/api/v1/recordings/"+idx.ID)
	var full storage.Meta
	if err := json.Unmarshal(b, &full); resp.StatusCode != 200 || err != nil {
		t.Fatalf("get: %d %v %s", resp.StatusCode, err, b)
	}
	if !full.Encrypted || full.Near.Name == "" || full.GateVerdict == nil || full.Near.Stream.Packets == 0 || full.SHA256 != idx.SHA256 {
		t.Fatalf("full metadata: %+v", full)
	}

	// Audio decrypted by the server, seekable.
	resp, wav := httpGet(t, ts.httpURL+"/api/v1/recordings/"+idx.ID+"/audio")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "audio/wav" || resp.Header.Get("X-Bib-Encryption") != "decrypted" {
		t.Fatalf("decrypted audio: %d %v", resp.StatusCode, resp.Header)
	}
	data, left, right := wavChannels(t, wav)
	wantA, wantB := ulawPCM(sentA), ulawPCM(sentB)
	// The recorded audio is the parties' (sample-exact fidelity over the
	// whole call is TestRecordingEndToEnd's subject; here it is enough that
	// what decrypts is this call's audio: 10 frames of each, exactly).
	if !containsRun(left, wantA, 1600) || !containsRun(right, wantB, 1600) {
		t.Fatalf("the decrypted recording (%d ms) does not hold the audio the parties sent (agent found %v, customer found %v)",
			full.DurationMS, containsRun(left, wantA, 1600), containsRun(right, wantB, 1600))
	}
	resp, part := httpGet(t, ts.httpURL+"/api/v1/recordings/"+idx.ID+"/audio", "Range", "bytes=1000-1999")
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(part, wav[1000:2000]) {
		t.Fatalf("range on decrypted audio: %d, %d bytes", resp.StatusCode, len(part))
	}

	// As stored: the .enc and its .esk; bib decrypt gives the same WAV.
	dl := t.TempDir()
	resp, enc := httpGet(t, ts.httpURL+"/api/v1/recordings/"+idx.ID+"/audio?stored=1")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/octet-stream" || resp.Header.Get("X-Bib-Encryption") != "stored" ||
		!bytes.HasPrefix(enc, []byte("BIBENC")) || int64(len(enc)) != idx.SizeBytes {
		t.Fatalf("stored audio: %d %v %d bytes", resp.StatusCode, resp.Header, len(enc))
	}
	resp, esk := httpGet(t, ts.httpURL+"/api/v1/recordings/"+idx.ID+"/esk")
	if resp.StatusCode != 200 || !bytes.Contains(esk, []byte(`"wrapped_key"`)) {
		t.Fatalf("esk: %d %s", resp.StatusCode, esk)
	}
	os.WriteFile(filepath.Join(dl, "rec.wav.enc"), enc, 0o600)
	os.WriteFile(filepath.Join(dl, "rec.wav.esk"), esk, 0o600)
	out := filepath.Join(dl, "rec.wav")
	if code, _, se := runDecrypt(pki.path("key.pem"), filepath.Join(dl, "rec.wav.esk"), filepath.Join(dl, "rec.wav.enc"), out); code != 0 {
		t.Fatalf("bib decrypt: exit %d: %s", code, se)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, wav) {
		t.Fatalf("bib decrypt gives %d bytes that differ from the API's %d", len(got), len(wav))
	}

	// No plaintext under the data dir: any 64-byte window of the WAV's data
	// chunk, of each party's decoded audio, or of the metadata sidecar.
	sc := newPlaintextScanner()
	n := sc.add("stereo data chunk", data)
	pcmBytes := func(s []int16) []byte {
		b := make([]byte, 2*len(s))
		for i, v := range s {
			binary.LittleEndian.PutUint16(b[2*i:], uint16(v))
		}
		return b
	}
	n += sc.add("agent audio (mono)", pcmBytes(wantA))
	n += sc.add("customer audio (mono)", pcmBytes(wantB))
	// The protected metadata (what the index does not keep) as the
	// sidecar holds it, indented.
	prot, _ := json.MarshalIndent(map[string]any{"events": full.Events, "near": full.Near, "far": full.Far, "gate_verdict": full.GateVerdict}, "", "  ")
	sc.add("metadata", prot)
	if hits := sc.scan(t, dl); !slices.ContainsFunc(hits, func(h string) bool { return strings.HasPrefix(h, "rec.wav:") }) {
		t.Fatalf("control: the scanner does not find the decrypted WAV's audio in it: %v", hits)
	}
	if hits := sc.scan(t, cfg.Data); len(hits) > 0 {
		t.Fatalf("plaintext found in the data dir: %v", hits)
	}
	// Every string value of the full metadata that the index does not
	// keep (display names, leg ids, event times and details, the gate's
	// verdict) must not be anywhere in clear.
	public, _ := json.Marshal(idx)
	var secrets []string
	for _, v := range jsonStrings(t, mustJSON(t, full)) {
		// Shorter values ("record") are ordinary words found in the schema.
		if len(v) >= 8 && !strings.Contains(string(public), v) && !slices.Contains(secrets, v) {
			secrets = append(secrets, v)
		}
	}
	if !slices.Contains(secrets, full.Near.Name) || !slices.Contains(secrets, full.RefCI) {
		t.Fatalf("protected values %q lack the display name %q or the leg id %q", secrets, full.Near.Name, full.RefCI)
	}
	for _, v := range secrets {
		if hits := filesContaining(t, cfg.Data, v); len(hits) > 0 {
			t.Errorf("metadata value %q in clear in %v", v, hits)
		}
	}
	t.Logf("%d protected metadata values not found in clear: %q", len(secrets), secrets)
	var names []string
	filepath.WalkDir(cfg.Data, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			names = append(names, d.Name())
		}
		return err
	})
	t.Logf("recording %s: %d ms, %d audio windows searched in %v", idx.ID, idx.DurationMS, n, names)
}

// TestEncryptedCrashRecovery: kill -9 bib serve (without the private key)
// during an encrypted recorded call, start it again: the recording is
// listed interrupted, and bib decrypt recovers a playable WAV holding the
// audio that reached the disk (exit 5, one warning line).
func TestEncryptedCrashRecovery(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pki := newTestPKI(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	agent, customer := newTestParty(t, "1001"), newTestParty(t, "2001")
	sipPort, httpPort := freePort(t), freePort(t)
	cfg := fmt.Sprintf(`sip: {listen: "127.0.0.1:%d"}
http: {listen: "127.0.0.1:%d"}
media: {rtp_ports: "%d-%d"}
data: %q
cluster: {release: "14.0(1)SU3", builtin_bridge_enable: true}
devices:
  - {name: CSFAGENT1, line: "1001", builtin_bridge: default, recording: automatic, monitoring: true}
routes:
  - {match: "2XXX", target: "sip:${user}@%s"}
storage: {encryption: {certificate: %q}}
`, sipPort, httpPort, 40000+sipPort%10000*2, 40000+sipPort%10000*2+99, data, customer.SIPAddr, pki.path("cert.pem"))
	cfgPath := filepath.Join(dir, "bib.yaml")
	os.WriteFile(cfgPath, []byte(cfg), 0o600)

	cmd, _ := startBib(t, ctx, cfgPath)
	got := make(chan *siptest.Call, 1)
	go func() {
		select {
		case c := <-customer.Incoming:
			c.Answer(customer.SDP(siptest.SDPOptions{Codecs: []string{"0", "101"}}))
			got <- c
		case <-ctx.Done():
		}
	}()
	uri := agent.URI()
	uri.User, uri.Host, uri.Port = "2001", "127.0.0.1", sipPort
	ac, err := agent.Invite(ctx, uri, agent.SDP(siptest.SDPOptions{Codecs: []string{"0", "101"}}))
	if err != nil {
		t.Fatal(err)
	}
	var bc *siptest.Call
	select {
	case bc = <-got:
	case <-ctx.Done():
		t.Fatal("customer got no INVITE")
	}
	sentA, _ := sendTones(ac, bc, 125) // 2.5 s: the recorder has flushed at least twice
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	var parts []string
	filepath.WalkDir(data, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), ".part") {
			parts = append(parts, d.Name())
		}
		return err
	})
	if len(parts) != 2 {
		t.Fatalf("after the kill: partial files %v, want the .wav.part .enc and .esk", parts)
	}

	startBib(t, ctx, cfgPath) // start-up repairs the recording
	bib := func(args ...string) (int, string, string) {
		c := exec.CommandContext(ctx, bibBinary(t), args...)
		var so, se bytes.Buffer
		c.Stdout, c.Stderr = &so, &se
		err := c.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("bib %v: %v", args, err)
		}
		return code, so.String(), se.String()
	}
	code, out, se := bib("recordings", "ls", "--json", "--data", data)
	var list []storage.Meta
	if err := json.Unmarshal([]byte(out), &list); code != 0 || err != nil || len(list) != 1 {
		t.Fatalf("bib recordings ls: exit %d %v\n%s%s", code, err, out, se)
	}
	m := list[0]
	if m.Status != storage.StatusInterrupted || !m.Encrypted || !strings.Contains(m.Reason, "decrypted") {
		t.Fatalf("status %q encrypted %v reason %q: want interrupted, encrypted, header fixed at decryption", m.Status, m.Encrypted, m.Reason)
	}
	if m.DurationMS < 1000 {
		t.Fatalf("estimated duration %d ms, want most of the 2.5 s sent", m.DurationMS)
	}
	if code, out, se := bib("recordings", "verify", "--data", data); code != 0 {
		t.Fatalf("verify after repair: exit %d\n%s%s", code, out, se)
	}

	// Without the key, export gives the files as stored; bib decrypt
	// recovers the WAV.
	exp := filepath.Join(dir, "rec.wav")
	if code, out, se := bib("recordings", "export", m.ID, "--out", exp, "--data", data); code != 0 || !strings.Contains(out, "encrypted") {
		t.Fatalf("export without key: exit %d\n%s%s", code, out, se)
	}
	wavPath := filepath.Join(dir, "out.wav")
	code, _, se = bib("decrypt", "--privatekey", pki.path("key.pem"), "--encryptionkey", exp+".esk", "--encryptedfile", exp+".enc", "--outputfile", wavPath)
	if code != exitDecryptTruncated || strings.Count(se, "\n") != 1 || !strings.Contains(se, "warning") || !strings.Contains(se, "no final chunk") {
		t.Fatalf("bib decrypt of the interrupted recording: exit %d, stderr %q; want %d and one warning line", code, se, exitDecryptTruncated)
	}
	t.Logf("bib decrypt exit %d: %s", code, strings.TrimSpace(se))
	wav, err := os.ReadFile(wavPath)
	if err != nil {
		t.Fatal(err)
	}
	_, left, _ := wavChannels(t, wav) // sizes in the header match the file
	if ms := int64(len(left)) * 1000 / 8000; ms < 1000 || ms > m.DurationMS+100 {
		t.Fatalf("recovered %d ms (index estimate %d ms)", ms, m.DurationMS)
	}
	if want := ulawPCM(sentA); !containsRun(left, want, 1600) {
		t.Fatal("the recovered audio does not hold the agent's first 10 frames, sample for sample")
	}
	if probe, err := exec.LookPath("ffprobe"); err == nil {
		b, err := exec.CommandContext(ctx, probe, "-v", "error", "-show_entries", "stream=channels,sample_rate", "-of", "csv=p=0", wavPath).CombinedOutput()
		if err != nil || !strings.Contains(string(b), "8000,2") {
			t.Fatalf("ffprobe cannot read the recovered recording: %v %s", err, b)
		}
	} else if os.Getenv("CI") != "" {
		t.Fatal("ffprobe missing: .ci/run installs ffmpeg")
	}
	// With the key, export decrypts on the fly to the same WAV.
	exp2 := filepath.Join(dir, "direct.wav")
	if code, out, se := bib("recordings", "export", m.ID, "--out", exp2, "--data", data, "--privatekey", pki.path("key.pem")); code != 0 || !strings.Contains(out, "interrupted") {
		t.Fatalf("export with key: exit %d\n%s%s", code, out, se)
	}
	if b, _ := os.ReadFile(exp2); !bytes.Equal(b, wav) {
		t.Fatal("export --privatekey differs from bib decrypt")
	}
	// Tampering is still an error, interrupted or not.
	enc, _ := os.ReadFile(exp + ".enc")
	enc[len(enc)/2] ^= 0x20
	os.WriteFile(exp+".enc", enc, 0o600)
	code, _, se = bib("decrypt", "--privatekey", pki.path("key.pem"), "--encryptionkey", exp+".esk", "--encryptedfile", exp+".enc", "--outputfile", filepath.Join(dir, "bad.wav"))
	if code != exitDecryptDamage || !strings.Contains(se, "failed authentication") {
		t.Fatalf("tampered interrupted recording: exit %d %q", code, se)
	}
	if _, err := os.Stat(filepath.Join(dir, "bad.wav")); err == nil {
		t.Fatal("output written for a tampered file")
	}
}

// TestEncryptionKeyRotation: record with certificate 1, restart with
// certificate 2 (and its key), record again: each recording decrypts with
// its own key only, and the server serves the old one as stored.
func TestEncryptionKeyRotation(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pki := newTestPKI(t)
	data := t.TempDir()
	record := func(cert, key string) (*testServer, storage.Meta) {
		agent, customer := newTestParty(t, "1001"), newTestParty(t, "2001")
		cfg := agentConfig(customer, "automatic")
		cfg.Data = data
		cfg.Storage.Encryption.Certificate = cert
		cfg.Storage.Encryption.PrivateKey = key
		ts := startServer(t, cfg)
		ac, bc := placeCall(t, ctx, ts, agent, customer)
		sendTones(ac, bc, 25)
		if err := ac.Bye(ctx); err != nil {
			t.Fatal(err)
		}
		return ts, waitRecording(t, ctx, ts)
	}
	ts1, m1 := record(pki.path("cert.pem"), "")
	ts1.cancel()
	err := <-ts1.done
	ts1.done <- err // for startServer's cleanup
	if err != nil {
		t.Fatal(err)
	}
	ts2, m2 := record(pki.path("other-cert.pem"), pki.path("other.pem"))
	if m1.ID == m2.ID || !m1.Encrypted || !m2.Encrypted {
		t.Fatalf("recordings %+v %+v", m1, m2)
	}
	// The new server decrypts its own recording, not the old one.
	if resp, b := httpGet(t, ts2.httpURL+"/api/v1/recordings/"+m2.ID+"/audio"); resp.StatusCode != 200 || string(b[:4]) != "RIFF" {
		t.Fatalf("new recording: %d %.60s", resp.StatusCode, b)
	}
	resp, b := httpGet(t, ts2.httpURL+"/api/v1/recordings/"+m1.ID+"/audio")
	var e map[string]string
	if json.Unmarshal(b, &e); resp.StatusCode != http.StatusConflict || e["error"] != "other_key" {
		t.Fatalf("old recording with the new key: %d %s", resp.StatusCode, b)
	}
	if resp, b := httpGet(t, ts2.httpURL+"/api/v1/recordings/"+m1.ID+"/audio?stored=1"); resp.StatusCode != 200 || !bytes.HasPrefix(b, []byte("BIBENC")) {
		t.Fatalf("old recording as stored: %d", resp.StatusCode)
	}

	dir := t.TempDir()
	keys := map[string]string{m1.ID: pki.path("key.pem"), m2.ID: pki.path("other.pem")}
	others := map[string]string{m1.ID: pki.path("other.pem"), m2.ID: pki.path("key.pem")}
	fps := map[string]bool{}
	for _, id := range []string{m1.ID, m2.ID} {
		exp := filepath.Join(dir, id+".wav")
		if code, out, se := runRec(t, "export", id, "--out", exp, "--data", data); code != 0 {
			t.Fatalf("export %s: %d %s %s", id, code, out, se)
		}
		eskBytes, _ := os.ReadFile(exp + ".esk")
		esk, err := storage.ParseESK(eskBytes)
		if err != nil {
			t.Fatal(err)
		}
		fps[esk.KeySHA256] = true
		code, _, se := runDecrypt(keys[id], exp+".esk", exp+".enc", filepath.Join(dir, id+".out.wav"))
		if code != 0 {
			t.Fatalf("%s with its own key: exit %d %s", id, code, se)
		}
		wav, _ := os.ReadFile(filepath.Join(dir, id+".out.wav"))
		wavChannels(t, wav)
		code, _, se = runDecrypt(others[id], exp+".esk", exp+".enc", filepath.Join(dir, id+".wrong.wav"))
		if code != exitDecryptKey || !strings.Contains(se, "wrong private key") {
			t.Fatalf("%s with the other key: exit %d %q, want %d wrong private key", id, code, se, exitDecryptKey)
		}
		t.Logf("%s with the other key: exit %d: %s", id, code, strings.TrimSpace(se))
		// export --privatekey with the other key fails too.
		if code, _, se := runRec(t, "export", id, "--out", filepath.Join(dir, "x.wav"), "--data", data, "--privatekey", others[id]); code != 1 || !strings.Contains(se, "wrong private key") {
			t.Fatalf("export %s with the other key: %d %s", id, code, se)
		}
	}
	if len(fps) != 2 {
		t.Fatalf("both recordings name the same key: %v", fps)
	}
}
