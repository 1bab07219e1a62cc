package bridge

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
)

// The tests build their SRTP contexts with pion directly, splitting the
// key as RFC 4568 section 6.2 says (16 bytes of key, 14 of salt), so they
// check bib's key handling rather than reuse it.

var testProfiles = map[string]srtp.ProtectionProfile{
	SuiteAES128SHA1_80: srtp.ProtectionProfileAes128CmHmacSha1_80,
	SuiteAES128SHA1_32: srtp.ProtectionProfileAes128CmHmacSha1_32,
}

// testCtx is a party's (or a recorder's) SRTP context for k: one context
// seals, another opens.
func testCtx(t testing.TB, k SRTPKey) *srtp.Context {
	t.Helper()
	if len(k.Master) != 30 {
		t.Fatalf("test key of %d bytes", len(k.Master))
	}
	c, err := srtp.CreateContext(k.Master[:16], k.Master[16:], testProfiles[k.Suite])
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func seal(t testing.TB, c *srtp.Context, plain []byte) []byte {
	t.Helper()
	out, err := c.EncryptRTP(nil, plain, nil)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mustKey(t testing.TB, suite string) SRTPKey {
	t.Helper()
	k, err := NewSRTPKey(suite)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestParseSDES(t *testing.T) {
	key := bytes.Repeat([]byte{0xa5}, 30)
	for i := range key {
		key[i] = byte(i * 7)
	}
	b64 := base64.StdEncoding.EncodeToString(key)
	for _, tt := range []struct {
		name, suite, params string
		wantSuite           string
		wantErr             string
	}{
		{"plain", SuiteAES128SHA1_80, "inline:" + b64, SuiteAES128SHA1_80, ""},
		{"32-bit tag", SuiteAES128SHA1_32, "inline:" + b64, SuiteAES128SHA1_32, ""},
		{"suite case", "aes_cm_128_hmac_sha1_80", "inline:" + b64, SuiteAES128SHA1_80, ""},
		{"method case", SuiteAES128SHA1_80, "INLINE:" + b64, SuiteAES128SHA1_80, ""},
		{"lifetime power", SuiteAES128SHA1_80, "inline:" + b64 + "|2^20", SuiteAES128SHA1_80, ""},
		{"lifetime decimal", SuiteAES128SHA1_80, "inline:" + b64 + "|1048576", SuiteAES128SHA1_80, ""},
		{"unknown suite", "F8_128_HMAC_SHA1_80", "inline:" + b64, "", `crypto suite "F8_128_HMAC_SHA1_80" is not supported`},
		{"AES-256", "AES_256_CM_HMAC_SHA1_80", "inline:" + b64, "", "not supported"},
		{"MKI", SuiteAES128SHA1_80, "inline:" + b64 + "|2^20|1:4", "", "master key identifier (MKI)"},
		{"MKI without lifetime", SuiteAES128SHA1_80, "inline:" + b64 + "|1:4", "", "MKI"},
		{"two keys", SuiteAES128SHA1_80, "inline:" + b64 + ";inline:" + b64, "", "more than one key"},
		{"short key", SuiteAES128SHA1_80, "inline:" + base64.StdEncoding.EncodeToString(key[:16]), "", "inline key is 16 bytes, AES_CM_128_HMAC_SHA1_80 needs 30"},
		{"long key", SuiteAES128SHA1_80, "inline:" + base64.StdEncoding.EncodeToString(append(key, 1, 2)), "", "is 32 bytes"},
		{"bad base64", SuiteAES128SHA1_80, "inline:" + b64[:20] + "!!" + b64[22:], "", "not valid base64"},
		{"empty key", SuiteAES128SHA1_80, "inline:", "", "inline key is empty"},
		{"no method", SuiteAES128SHA1_80, b64, "", "key method must be inline"},
		{"other method", SuiteAES128SHA1_80, "uri:" + b64, "", "key method must be inline"},
		{"bad lifetime", SuiteAES128SHA1_80, "inline:" + b64 + "|soon", "", `lifetime "soon"`},
		{"lifetime twice", SuiteAES128SHA1_80, "inline:" + b64 + "|2^20|2^20", "", "lifetime given twice"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			k, err := ParseSDES(tt.suite, tt.params)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseSDES = %v, %v; want error containing %q", k, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if k.Suite != tt.wantSuite || !bytes.Equal(k.Master, key) {
				t.Fatalf("got suite %q key %x", k.Suite, k.Master)
			}
			if k.Inline() != "inline:"+b64 {
				t.Fatalf("Inline() = %q", k.Inline())
			}
		})
	}
}

func TestSRTPKey(t *testing.T) {
	for _, suite := range []string{SuiteAES128SHA1_80, SuiteAES128SHA1_32} {
		k := mustKey(t, suite)
		if k.Suite != suite || len(k.Master) != 30 || k.Validate() != nil {
			t.Fatalf("NewSRTPKey(%s) = %q, %d bytes, %v", suite, k.Suite, len(k.Master), k.Validate())
		}
		back, err := ParseSDES(suite, k.Inline())
		if err != nil || !back.Equal(k) {
			t.Fatalf("round trip: %v %v", back, err)
		}
		if k2 := mustKey(t, suite); k2.Equal(k) {
			t.Fatal("two random keys are equal")
		}
		other := k.clone()
		other.Suite = SuiteAES128SHA1_32
		if suite == SuiteAES128SHA1_80 && other.Equal(k) {
			t.Fatal("keys of different suites are equal")
		}
		if s := k.String(); strings.Contains(s, k.Inline()[7:]) || !strings.Contains(s, suite) {
			t.Fatalf("String() = %q", s)
		}
	}
	if _, err := NewSRTPKey("NULL"); err == nil {
		t.Fatal("NewSRTPKey accepted an unknown suite")
	}
	if err := (SRTPKey{Suite: SuiteAES128SHA1_80, Master: make([]byte, 29)}).Validate(); err == nil {
		t.Fatal("Validate accepted a short key")
	}
}

func FuzzParseSDES(f *testing.F) {
	f.Add(SuiteAES128SHA1_80, "inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd")
	f.Add(SuiteAES128SHA1_32, "inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd|2^31")
	f.Add(SuiteAES128SHA1_80, "inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd|2^20|1:4")
	f.Add("x", "inline:|")
	f.Add(SuiteAES128SHA1_80, "inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxw=")
	f.Fuzz(func(t *testing.T, suite, params string) {
		k, err := ParseSDES(suite, params)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error text")
			}
			return
		}
		if err := k.Validate(); err != nil {
			t.Fatalf("ParseSDES(%q, %q) gave an invalid key: %v", suite, params, err)
		}
		back, err := ParseSDES(k.Suite, k.Inline())
		if err != nil || !back.Equal(k) || back.Inline() != k.Inline() {
			t.Fatalf("round trip of %q: %v, %v", k.Inline(), back, err)
		}
		if _, err := newSRTPCtx(k, true); err != nil {
			t.Fatalf("parsed key unusable: %v", err)
		}
	})
}

// setupSRTPCall is setupCall with each party sending with its own key
// (nil: plain RTP).
func setupSRTPCall(t testing.TB, e *Engine, ka, kb *SRTPKey) (*Call, *party, *party) {
	t.Helper()
	c, err := e.NewCall("srtp", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close("cleanup") })
	a, b := newParty(t), newParty(t)
	da, db := a.desc(), b.desc()
	da.SRTP, db.SRTP = ka, kb
	c.SetRemote(SideA, da)
	c.SetRemote(SideB, db)
	c.Negotiated()
	c.Answer()
	return c, a, b
}

// expectOnly reads from p until it has got len(want) datagrams, which must
// be want in order, then checks that nothing else arrives.
func expectOnly(t *testing.T, p *party, want [][]byte) {
	t.Helper()
	for i, w := range want {
		got := p.recv(t, 2*time.Second)
		if got == nil {
			t.Fatalf("datagram %d of %d did not arrive", i, len(want))
		}
		if !bytes.Equal(got, w) {
			t.Fatalf("datagram %d: got %x\nwant %x", i, got, w)
		}
	}
	if extra := p.recv(t, 100*time.Millisecond); extra != nil {
		t.Fatalf("unexpected extra datagram %x", extra)
	}
}

func TestSRTPCall(t *testing.T) { forEachIO(t, testSRTPCall) }

func testSRTPCall(t *testing.T, mode string) {
	e := testEngineIO(t, freeRange(t), mode)
	ka, kb := mustKey(t, SuiteAES128SHA1_80), mustKey(t, SuiteAES128SHA1_32)
	c, a, b := setupSRTPCall(t, e, &ka, &kb)
	tap := &recTap{}
	if err := c.AddTap(tap); err != nil {
		t.Fatal(err)
	}
	la, _ := c.Leg(SideA).Local()
	lb, _ := c.Leg(SideB).Local()
	sa, sb := testCtx(t, ka), testCtx(t, kb)
	// The receivers hold the other party's key, as SDES arranged it.
	ra, rb := testCtx(t, kb), testCtx(t, ka)
	var plainA, plainB [][]byte
	var bytesA, bytesB uint64
	for i := range 50 {
		pa := rtpPacket(t, 0xA, uint16(100+i), uint32(160*i), bytes.Repeat([]byte{byte(i)}, 160))
		pb := rtpPacket(t, 0xB, uint16(900+i), uint32(8000+160*i), bytes.Repeat([]byte{byte(255 - i)}, 160))
		ea, eb := seal(t, sa, pa), seal(t, sb, pb)
		if bytes.Contains(ea, pa[12:]) {
			t.Fatal("sealed packet carries the plain payload")
		}
		a.conn.WriteToUDPAddrPort(ea, la)
		b.conn.WriteToUDPAddrPort(eb, lb)
		plainA, plainB = append(plainA, pa), append(plainB, pb)
		bytesA, bytesB = bytesA+uint64(len(ea)), bytesB+uint64(len(eb))
		gotB, gotA := b.recv(t, 2*time.Second), a.recv(t, 2*time.Second)
		if !bytes.Equal(gotB, ea) || !bytes.Equal(gotA, eb) {
			t.Fatalf("packet %d: a party did not receive exactly the bytes the other sent", i)
		}
		if d, err := rb.DecryptRTP(nil, gotB, nil); err != nil || !bytes.Equal(d, pa) {
			t.Fatalf("packet %d: b cannot open what a sent: %v", i, err)
		}
		if d, err := ra.DecryptRTP(nil, gotA, nil); err != nil || !bytes.Equal(d, pb) {
			t.Fatalf("packet %d: a cannot open what b sent: %v", i, err)
		}
	}
	c.Close("test")
	st := c.Stats()
	for s, want := range []struct{ in, bytes uint64 }{{50, bytesA}, {50, bytesB}} {
		l := st.Legs[s]
		if !l.SRTP || l.PacketsIn != want.in || l.BytesIn != want.bytes || l.PacketsOut != 50 || l.SRTPAuthFailed != 0 || l.SRTPReplayed != 0 || l.Malformed != 0 {
			t.Fatalf("leg %d stats %+v", s, l)
		}
	}
	tap.mu.Lock()
	defer tap.mu.Unlock()
	if len(tap.pkts[AtoB]) != 50 || len(tap.pkts[BtoA]) != 50 {
		t.Fatalf("tap saw %d/%d packets", len(tap.pkts[AtoB]), len(tap.pkts[BtoA]))
	}
	for i := range plainA {
		if !bytes.Equal(tap.pkts[AtoB][i], plainA[i]) || !bytes.Equal(tap.pkts[BtoA][i], plainB[i]) {
			t.Fatalf("tap packet %d is not the decrypted packet", i)
		}
	}
}

// payloadTap keeps the payloads (and sequence numbers) a tap is shown.
type payloadTap struct {
	mu   sync.Mutex
	seqs [2][]uint16
	pay  [2][][]byte
}

func (p *payloadTap) RTP(dir Direction, pkt *Packet) {
	p.mu.Lock()
	p.seqs[dir] = append(p.seqs[dir], pkt.Header.SequenceNumber)
	p.pay[dir] = append(p.pay[dir], bytes.Clone(pkt.Payload))
	p.mu.Unlock()
}

func (p *payloadTap) Event(Event) {}

func TestSRTPRejects(t *testing.T) { forEachIO(t, testSRTPRejects) }

// testSRTPRejects: from the party's own address, packets sealed with another
// key, tampered packets, garbage, truncated packets and replays are
// dropped and counted; the party's real stream goes through complete.
func testSRTPRejects(t *testing.T, mode string) {
	e := testEngineIO(t, freeRange(t), mode)
	ka, kb := mustKey(t, SuiteAES128SHA1_80), mustKey(t, SuiteAES128SHA1_80)
	c, a, b := setupSRTPCall(t, e, &ka, &kb)
	tap := &payloadTap{}
	c.AddTap(tap)
	la, _ := c.Leg(SideA).Local()
	good := testCtx(t, ka)
	wrong := testCtx(t, mustKey(t, SuiteAES128SHA1_80))
	var relayed [][]byte
	var payloads [][]byte
	var authFail, replays, malformed int
	send := func(d []byte) {
		if _, err := a.conn.WriteToUDPAddrPort(d, la); err != nil {
			t.Fatal(err)
		}
	}
	var prev []byte
	for i := range 60 {
		seq := uint16(2000 + i)
		pay := bytes.Repeat([]byte{byte(i + 1)}, 160)
		p := rtpPacket(t, 0x5a5a, seq, uint32(160*i), pay)
		switch i % 6 {
		case 1: // another key, the same stream's next packet
			send(seal(t, wrong, p))
			authFail++
		case 2: // tampered: one payload bit flipped
			x := seal(t, testCtx(t, ka), p)
			x[20] ^= 1
			send(x)
			authFail++
		case 3: // garbage that looks like an RTP header
			g := make([]byte, 172)
			for j := range g {
				g[j] = byte(j*31 + i)
			}
			g[0], g[1] = 0x80, 0
			send(g)
			authFail++
		case 4: // too short to carry an authentication tag
			send(p[:15])
			authFail++
		case 5: // not RTP at all
			send(append([]byte{0x40}, p[1:]...))
			malformed++
		}
		if i%10 == 9 && prev != nil { // a replay of the previous real packet
			send(prev)
			replays++
		}
		x := seal(t, good, p)
		send(x)
		relayed = append(relayed, x)
		payloads = append(payloads, pay)
		prev = x
	}
	expectOnly(t, b, relayed)
	c.Close("test")
	st := c.Stats().Legs[0]
	if st.PacketsIn != uint64(len(relayed)) || st.SRTPAuthFailed != uint64(authFail) || st.SRTPReplayed != uint64(replays) || st.Malformed != uint64(malformed) {
		t.Fatalf("leg a: in %d auth_failed %d replayed %d malformed %d; want %d %d %d %d",
			st.PacketsIn, st.SRTPAuthFailed, st.SRTPReplayed, st.Malformed, len(relayed), authFail, replays, malformed)
	}
	if out := c.Stats().Legs[1].PacketsOut; out != uint64(len(relayed)) {
		t.Fatalf("leg b sent %d packets, want %d", out, len(relayed))
	}
	tap.mu.Lock()
	defer tap.mu.Unlock()
	if len(tap.pay[AtoB]) != len(payloads) {
		t.Fatalf("tap saw %d packets, want the %d genuine ones", len(tap.pay[AtoB]), len(payloads))
	}
	for i := range payloads {
		if !bytes.Equal(tap.pay[AtoB][i], payloads[i]) {
			t.Fatalf("tap packet %d: payload is not the genuine one", i)
		}
	}
}

func TestSRTPUnusableKeyFailsClosed(t *testing.T) {
	e := testEngine(t, freeRange(t))
	bad := SRTPKey{Suite: SuiteAES128SHA1_80, Master: make([]byte, 12)}
	c, a, b := setupSRTPCall(t, e, &bad, nil)
	la, _ := c.Leg(SideA).Local()
	a.conn.WriteToUDPAddrPort(rtpPacket(t, 1, 1, 0, make([]byte, 160)), la)
	if got := b.recv(t, 200*time.Millisecond); got != nil {
		t.Fatal("a leg with an unusable key relayed a packet")
	}
	eventually(t, "auth failure counted", func() bool { return c.Stats().Legs[0].SRTPAuthFailed == 1 })
	if !c.Stats().Legs[0].SRTP {
		t.Fatal("leg not reported as SRTP")
	}
}

func TestSRTPReinvite(t *testing.T) { forEachIO(t, testSRTPReinvite) }

// testSRTPReinvite: a re-INVITE with the same key keeps the rollover
// counter (the stream crosses sequence number 65535 before it), also after
// a plain RTP offer in between; a new key replaces the context.
func testSRTPReinvite(t *testing.T, mode string) {
	e := testEngineIO(t, freeRange(t), mode)
	k1 := mustKey(t, SuiteAES128SHA1_80)
	c, a, b := setupSRTPCall(t, e, &k1, nil)
	la, _ := c.Leg(SideA).Local()
	sender := testCtx(t, k1)
	seq := uint16(65500)
	ts := uint32(0)
	next := func(ctx *srtp.Context) []byte {
		p := rtpPacket(t, 0x77, seq, ts, bytes.Repeat([]byte{byte(seq)}, 160))
		seq++
		ts += 160
		return seal(t, ctx, p)
	}
	stream := func(ctx *srtp.Context, n int) {
		t.Helper()
		var want [][]byte
		for range n {
			x := next(ctx)
			a.conn.WriteToUDPAddrPort(x, la)
			want = append(want, x)
		}
		expectOnly(t, b, want)
	}
	reinvite := func(k *SRTPKey) {
		d := a.desc()
		d.Codecs = append(d.Codecs, Codec{PT: 101, Name: "telephone-event", Rate: 8000, Channels: 1})
		if k != nil {
			kc := k.clone() // equal by value, not the same slice
			d.SRTP = &kc
		}
		c.SetRemote(SideA, d)
		c.Negotiated()
	}
	stream(sender, 100) // 65500..65535, then 0..63 with rollover counter 1
	if roc, _ := sender.ROC(0x77); roc != 1 {
		t.Fatalf("sender's rollover counter %d, want 1", roc)
	}
	reinvite(&k1)
	stream(sender, 50)
	reinvite(nil) // plain RTP for a moment
	reinvite(&k1)
	stream(sender, 20)
	if st := c.Stats().Legs[0]; st.SRTPAuthFailed != 0 || st.PacketsIn != 170 {
		t.Fatalf("after re-INVITEs with the same key: %+v", st)
	}

	k2 := mustKey(t, SuiteAES128SHA1_32)
	reinvite(&k2)
	old := next(sender) // a late packet under the old key
	a.conn.WriteToUDPAddrPort(old, la)
	sender2 := testCtx(t, k2)
	stream(sender2, 20)
	eventually(t, "old-key packet counted", func() bool { return c.Stats().Legs[0].SRTPAuthFailed == 1 })
	if st := c.Stats().Legs[0]; st.PacketsIn != 190 {
		t.Fatalf("after the new key: %+v", st)
	}
}

// TestSRTPForkStream: a fork with an SRTP route sends packets a recorder
// holding bib's key opens to the source payload; the same key on a new
// route (or after a pause) keeps the rollover counter going, a new key
// takes over.
func TestSRTPForkStream(t *testing.T) {
	for _, m := range []ForkSend{ForkSendNonBlocking, ForkSendQueued} {
		t.Run([]string{"nonblocking", "direct", "queued"}[m], func(t *testing.T) { testSRTPForkStream(t, m) })
	}
}

func testSRTPForkStream(t *testing.T, mode ForkSend) {
	send, recv := newParty(t), newParty(t)
	f, err := newForkStream(send.conn, func() {}, AtoB, WithForkSend(mode), WithForkSSRC(0xf00d, 65500, 1000))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pts := map[uint8]ForkPT{0: {Out: 8, Rate: 8000}}
	k := mustKey(t, SuiteAES128SHA1_80)
	route := func(k *SRTPKey) {
		t.Helper()
		r := ForkRoute{Addr: recv.addr, PT: pts}
		if k != nil {
			kc := k.clone()
			r.SRTP = &kc
		}
		if err := f.SetRoute(r); err != nil {
			t.Fatal(err)
		}
	}
	route(&k)
	rec := testCtx(t, k)
	src := uint16(10)
	feedCheck := func(rec *srtp.Context, n int) {
		t.Helper()
		for range n {
			pay := bytes.Repeat([]byte{byte(src)}, 160)
			raw := rtpPacket(t, 0xabc, src, uint32(src)*160, pay)
			var pkt Packet
			if err := parseRTP(raw, &pkt); err != nil {
				t.Fatal(err)
			}
			pkt.Arrival = int64(src) * 20e6
			f.RTP(AtoB, &pkt)
			src++
			got := recv.recv(t, 2*time.Second)
			if got == nil {
				t.Fatalf("fork packet for source %d did not arrive", src-1)
			}
			if bytes.Contains(got, pay) {
				t.Fatal("fork packet carries the plain payload")
			}
			var h rtp.Header
			d, err := rec.DecryptRTP(nil, got, &h)
			if err != nil {
				t.Fatalf("recorder cannot open fork packet (seq %d): %v", h.SequenceNumber, err)
			}
			var p rtp.Packet
			if err := p.Unmarshal(d); err != nil || !bytes.Equal(p.Payload, pay) || p.SSRC != 0xf00d || p.PayloadType != 8 {
				t.Fatalf("decrypted fork packet: %+v %v", p.Header, err)
			}
		}
	}
	feedCheck(rec, 60) // fork sequence 65500..65535, 0..23
	if roc, _ := rec.ROC(0xf00d); roc != 1 {
		t.Fatalf("recorder's rollover counter %d, want 1", roc)
	}
	route(&k) // a re-INVITE toward the recorder, same key
	feedCheck(rec, 10)
	f.Pause()
	route(&k)
	feedCheck(rec, 10)

	k2 := mustKey(t, SuiteAES128SHA1_32)
	route(&k2)
	feedCheck(testCtx(t, k2), 10)

	if err := f.SetRoute(ForkRoute{Addr: recv.addr, PT: pts, SRTP: &SRTPKey{Suite: "NULL"}}); err == nil {
		t.Fatal("SetRoute accepted an unusable key")
	}
	paused := f.C.Paused.Load()
	var pkt Packet
	parseRTP(rtpPacket(t, 0xabc, src, 0, make([]byte, 160)), &pkt)
	f.RTP(AtoB, &pkt)
	if f.C.Paused.Load() != paused+1 {
		t.Fatal("a fork with an unusable key is not paused")
	}
	if got := recv.recv(t, 100*time.Millisecond); got != nil {
		t.Fatal("a fork with an unusable key sent a packet")
	}
}

func TestSRTPForkFromCall(t *testing.T) { forEachIO(t, testSRTPForkFromCall) }

// testSRTPForkFromCall: an SRTP call forked to an SRTP recorder: the
// recorder opens with bib's key what party a sealed with its own key.
func testSRTPForkFromCall(t *testing.T, mode string) {
	e := testEngineIO(t, freeRange(t), mode)
	ka, kb := mustKey(t, SuiteAES128SHA1_80), mustKey(t, SuiteAES128SHA1_80)
	c, a, b := setupSRTPCall(t, e, &ka, &kb)
	f, err := NewForkStream(e, AtoB)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recorder := newParty(t)
	kf := mustKey(t, SuiteAES128SHA1_80)
	if err := f.SetRoute(ForkRoute{Addr: recorder.addr, PT: map[uint8]ForkPT{0: {Out: 0, Rate: 8000}}, SRTP: &kf}); err != nil {
		t.Fatal(err)
	}
	c.AddTap(f)
	la, _ := c.Leg(SideA).Local()
	sa, rec := testCtx(t, ka), testCtx(t, kf)
	for i := range 30 {
		pay := bytes.Repeat([]byte{byte(3 * i)}, 160)
		x := seal(t, sa, rtpPacket(t, 0x1, uint16(i), uint32(160*i), pay))
		a.conn.WriteToUDPAddrPort(x, la)
		if got := b.recv(t, 2*time.Second); !bytes.Equal(got, x) {
			t.Fatalf("packet %d not relayed unchanged", i)
		}
		got := recorder.recv(t, 2*time.Second)
		if got == nil {
			t.Fatalf("fork packet %d missing", i)
		}
		d, err := rec.DecryptRTP(nil, got, nil)
		if err != nil {
			t.Fatalf("recorder cannot open fork packet %d: %v", i, err)
		}
		var p rtp.Packet
		if err := p.Unmarshal(d); err != nil || !bytes.Equal(p.Payload, pay) {
			t.Fatalf("fork packet %d: payload differs from the party's (%v)", i, err)
		}
	}
	c.RemoveTap(f)
}

// TestSRTPSupervisorLeg: the mix toward the supervisor is sealed with
// bib's key; the same key again keeps the rollover counter; nil goes back
// to plain RTP; an unusable key stops the stream.
func TestSRTPSupervisorLeg(t *testing.T) {
	e := testEngine(t, freeRange(t))
	sup := newParty(t)
	leg, err := NewSupervisorLeg(e, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer leg.Close()
	if _, err := leg.SetRemote(MediaDesc{RTP: sup.addr, Mode: RecvOnly, Codecs: []Codec{{PT: 0, Name: "PCMU", Rate: 8000}}}); err != nil {
		t.Fatal(err)
	}
	leg.stamp.seq = 65500 // cross the wrap early
	k := mustKey(t, SuiteAES128SHA1_32)
	kc := k.clone()
	if err := leg.SetSRTP(&kc); err != nil {
		t.Fatal(err)
	}
	rec := testCtx(t, k)
	var lastSeq uint16
	frame := func(i int) []byte {
		pay := bytes.Repeat([]byte{byte(i)}, 160)
		leg.WriteMix(&MixFrame{Codec: "PCMU", Payload: pay, Samples: 160, Index: uint64(i)})
		return pay
	}
	check := func(i int, open func([]byte) ([]byte, error)) {
		t.Helper()
		pay := frame(i)
		got := sup.recv(t, 2*time.Second)
		if got == nil {
			t.Fatalf("frame %d not sent", i)
		}
		d, err := open(got)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		var p rtp.Packet
		if err := p.Unmarshal(d); err != nil || !bytes.Equal(p.Payload, pay) {
			t.Fatalf("frame %d: payload differs (%v)", i, err)
		}
		if i > 0 && p.SequenceNumber != lastSeq+1 {
			t.Fatalf("frame %d: seq %d after %d", i, p.SequenceNumber, lastSeq)
		}
		lastSeq = p.SequenceNumber
	}
	decrypt := func(b []byte) ([]byte, error) { return rec.DecryptRTP(nil, b, nil) }
	plain := func(b []byte) ([]byte, error) { return b, nil }
	for i := range 60 {
		check(i, decrypt)
	}
	kc2 := k.clone()
	if err := leg.SetSRTP(&kc2); err != nil {
		t.Fatal(err)
	}
	for i := 60; i < 70; i++ {
		check(i, decrypt)
	}
	leg.SetSRTP(nil)
	check(70, plain)
	if err := leg.SetSRTP(&kc2); err != nil {
		t.Fatal(err)
	}
	check(71, decrypt)
	if err := leg.SetSRTP(&SRTPKey{Suite: SuiteAES128SHA1_80, Master: []byte{1}}); err == nil {
		t.Fatal("SetSRTP accepted an unusable key")
	}
	errs := leg.C.SendErrors.Load()
	frame(72)
	if got := sup.recv(t, 100*time.Millisecond); got != nil {
		t.Fatal("the supervisor leg sent a frame with an unusable key")
	}
	if leg.C.SendErrors.Load() != errs+1 {
		t.Fatal("the unsent frame is not counted")
	}
	if !leg.Stats().SRTP {
		t.Fatal("stats do not say SRTP")
	}
}

// TestSRTPMonitoredCall: parties speaking SRTP, a mixer on the call and an
// SRTP supervisor: the supervisor opens the mix with bib's key and hears
// both parties, so the mixer was given the decrypted audio.
func TestSRTPMonitoredCall(t *testing.T) {
	forEachIO(t, func(t *testing.T, mode string) {
		e := testEngineIO(t, freeRange(t), mode)
		ka, kb := mustKey(t, SuiteAES128SHA1_80), mustKey(t, SuiteAES128SHA1_80)
		c, a, b := setupSRTPCall(t, e, &ka, &kb)
		m := NewMixer(c.ID(), MixerConfig{})
		defer m.Close()
		if err := c.AddTap(m); err != nil {
			t.Fatal(err)
		}
		sup := newParty(t)
		leg, err := NewSupervisorLeg(e, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer leg.Close()
		cd, err := leg.SetRemote(MediaDesc{RTP: sup.addr, Mode: RecvOnly, Codecs: []Codec{{PT: 0, Name: "PCMU", Rate: 8000}}})
		if err != nil {
			t.Fatal(err)
		}
		ks := mustKey(t, SuiteAES128SHA1_80)
		if err := leg.SetSRTP(&ks); err != nil {
			t.Fatal(err)
		}
		colSup := collect(sup)
		if err := m.AddOutput(leg, cd.Name); err != nil {
			t.Fatal(err)
		}
		colA, colB := collect(a), collect(b)
		la, _ := c.Leg(SideA).Local()
		lb, _ := c.Leg(SideB).Local()
		srcA, srcB := newToneSource(t, "PCMU", 0, 440, 0.3, 0xa), newToneSource(t, "PCMU", 0, 1000, 0.3, 0xb)
		sa, sb := testCtx(t, ka), testCtx(t, kb)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		const n = 75
		for range n {
			<-tick.C
			a.conn.WriteToUDPAddrPort(seal(t, sa, marshalPacket(t, srcA.next())), la)
			b.conn.WriteToUDPAddrPort(seal(t, sb, marshalPacket(t, srcB.next())), lb)
		}
		eventually(t, "relayed packets", func() bool { return colA.count() >= n && colB.count() >= n })
		m.RemoveOutput(leg)
		colA.stop()
		colB.stop()
		rec := testCtx(t, ks)
		var pkts []*rtp.Packet
		for i, x := range colSup.stop() {
			d, err := rec.DecryptRTP(nil, x, nil)
			if err != nil {
				t.Fatalf("supervisor packet %d: %v", i, err)
			}
			p := &rtp.Packet{}
			if err := p.Unmarshal(d); err != nil {
				t.Fatal(err)
			}
			pkts = append(pkts, p)
		}
		checkMixStream(t, pkts, 0)
		if st := m.Stats(); st.Packets != [2]uint64{n, n} {
			t.Fatalf("mixer queued %v packets, want %d per direction", st.Packets, n)
		}
	})
}

// TestSRTPRelayAllocs: relaying SRTP (decrypting for a tap) allocates
// nothing per packet, in either engine.
func TestSRTPRelayAllocs(t *testing.T) {
	if poolDrops() {
		t.Skip("sync.Pool drops items here (race detector): pion's pooled cipher buffers allocate")
	}
	forEachIO(t, func(t *testing.T, mode string) {
		e := testEngineIO(t, freeRange(t), mode)
		k := mustKey(t, SuiteAES128SHA1_80)
		c, a, b := setupSRTPCall(t, e, &k, nil)
		c.AddTap(nopTap{})
		la, _ := c.Leg(SideA).Local()
		const warm, n = 100, 2000
		sender := testCtx(t, k)
		pkts := make([][]byte, warm+n)
		plain := rtpPacket(t, 5, 0, 0, make([]byte, 160))
		for i := range pkts {
			binary.BigEndian.PutUint16(plain[2:4], uint16(i))
			pkts[i] = seal(t, sender, plain)
		}
		buf := make([]byte, 2000)
		relay := func(pkts [][]byte) {
			for _, p := range pkts {
				a.conn.WriteToUDPAddrPort(p, la)
				b.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, _, err := b.conn.ReadFromUDPAddrPort(buf); err != nil {
					t.Fatal(err)
				}
			}
		}
		relay(pkts[:warm]) // header slices, sockaddr cache, SSRC state
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		relay(pkts[warm:])
		runtime.ReadMemStats(&m1)
		if per := float64(m1.Mallocs-m0.Mallocs) / n; per > 0.05 {
			t.Fatalf("%.2f allocations per relayed SRTP packet", per)
		}
		if st := c.Stats().Legs[0]; st.PacketsIn != warm+n {
			t.Fatalf("relayed %d of %d", st.PacketsIn, warm+n)
		}
	})
}

// poolDrops reports whether sync.Pool discards what is put back, as it
// does at random under the race detector.
func poolDrops() bool {
	made := 0
	p := sync.Pool{New: func() any { made++; return new([32]byte) }}
	for range 1000 {
		p.Put(p.Get())
	}
	return made > 10 // a GC may empty the pool once or twice
}
