package sip

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bib-project/bib/sip/siptest"
	"github.com/emiago/sipgo"
	sipmsg "github.com/emiago/sipgo/sip"
)

// testPKI is a throwaway CA and a server certificate for bib.test and
// 127.0.0.1, generated per test; no key is ever committed.
type testPKI struct {
	pool                      *x509.CertPool
	cert                      tls.Certificate
	caFile, certFile, keyFile string
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bib test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "bib.test"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		DNSNames: []string{"bib.test"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := &testPKI{pool: x509.NewCertPool(),
		caFile: filepath.Join(dir, "ca.pem"), certFile: filepath.Join(dir, "cert.pem"), keyFile: filepath.Join(dir, "key.pem")}
	p.pool.AddCert(ca)
	write := func(path, typ string, der []byte) {
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(p.caFile, "CERTIFICATE", caDER)
	write(p.certFile, "CERTIFICATE", leafDER)
	write(p.keyFile, "EC PRIVATE KEY", keyDER)
	if p.cert, err = tls.LoadX509KeyPair(p.certFile, p.keyFile); err != nil {
		t.Fatal(err)
	}
	return p
}

func tlsEnv(t *testing.T, pki *testPKI, routes []Route) *env {
	t.Helper()
	return newEnv(t, envOpts{routes: routes, cfg: func(c *Config) {
		c.TLSListen, c.TLSCert, c.TLSKey, c.TLSCA = "127.0.0.1:0", pki.certFile, pki.keyFile, pki.caFile
	}})
}

// tlsClient is a sipgo client whose UA dials TLS with conf.
func tlsClient(t *testing.T, conf *tls.Config) *sipgo.Client {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("tls-client"), sipgo.WithUserAgenTLSConfig(conf),
		sipgo.WithUserAgentTransportLayerOptions(sipmsg.WithTransportLayerLogger(testLog())),
		sipgo.WithUserAgentTransactionLayerOptions(sipmsg.WithTransactionLayerLogger(testLog())))
	if err != nil {
		t.Fatal(err)
	}
	cli, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"), sipgo.WithClientLogger(testLog()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ua.Close() })
	return cli
}

func tlsRegister(addr netip.AddrPort, user string) *sipmsg.Request {
	ru := sipmsg.Uri{Scheme: "sip", Host: addr.Addr().String(), Port: int(addr.Port()), UriParams: sipmsg.NewParams()}
	ru.UriParams.Add("transport", "tls")
	req := sipmsg.NewRequest(sipmsg.REGISTER, ru)
	aor := sipmsg.Uri{Scheme: "sip", User: user, Host: addr.Addr().String()}
	from := &sipmsg.FromHeader{Address: aor, Params: sipmsg.NewParams()}
	from.Params.Add("tag", sipmsg.GenerateTagN(8))
	req.AppendHeader(from)
	req.AppendHeader(&sipmsg.ToHeader{Address: aor, Params: sipmsg.NewParams()})
	ct := sipmsg.Uri{Scheme: "sip", User: user, Host: "127.0.0.1", Port: 5999, UriParams: sipmsg.NewParams()}
	ct.UriParams.Add("transport", "tls")
	req.AppendHeader(&sipmsg.ContactHeader{Address: ct, Params: sipmsg.NewParams()})
	req.AppendHeader(sipmsg.NewHeader("Expires", "300"))
	return req
}

func TestTLSHandshake(t *testing.T) {
	pki := newTestPKI(t)
	e := tlsEnv(t, pki, nil)
	addr := e.srv.Addr("tls")
	if !addr.IsValid() || addr.Port() == 0 {
		t.Fatalf("no tls address: %v", addr)
	}
	cases := []struct {
		name    string
		conf    *tls.Config
		wantErr string
	}{
		{"trusted", &tls.Config{RootCAs: pki.pool}, ""},
		{"trusted by name", &tls.Config{RootCAs: pki.pool, ServerName: "bib.test"}, ""},
		{"untrusted certificate", &tls.Config{}, "certificate"},
		{"wrong server name", &tls.Config{RootCAs: pki.pool, ServerName: "wrong.example"}, "certificate"},
		{"tls 1.1 only", &tls.Config{RootCAs: pki.pool, MaxVersion: tls.VersionTLS11}, "version"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(e.ctx, 5*time.Second)
			defer cancel()
			cli := tlsClient(t, tc.conf)
			user := "30" + strconv.Itoa(10+i)
			res, err := cli.Do(ctx, tlsRegister(addr, user))
			if tc.wantErr == "" {
				mustStatus(t, err, res, 200)
				regs := e.srv.Registrations()
				if len(regs) == 0 || regs[len(regs)-1].Transport != "TLS" {
					t.Fatalf("registrations %+v", regs)
				}
				return
			}
			if err == nil || !strings.Contains(strings.ToLower(err.Error()), tc.wantErr) {
				t.Fatalf("want a handshake error about %q, got res=%v err=%v", tc.wantErr, res, err)
			}
		})
	}
}

// The listener itself negotiates TLS 1.2 at least, with an AEAD suite.
func TestTLSListenerVersions(t *testing.T) {
	pki := newTestPKI(t)
	e := tlsEnv(t, pki, nil)
	d := &net.Dialer{Timeout: 5 * time.Second}
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		c, err := tls.DialWithDialer(d, "tcp", e.srv.Addr("tls").String(), &tls.Config{RootCAs: pki.pool, MinVersion: v, MaxVersion: v})
		if err != nil {
			t.Fatalf("%s: %v", tls.VersionName(v), err)
		}
		st := c.ConnectionState()
		if st.Version != v || !strings.Contains(tls.CipherSuiteName(st.CipherSuite), "GCM") && !strings.Contains(tls.CipherSuiteName(st.CipherSuite), "CHACHA20") {
			t.Fatalf("%s: negotiated %s %s", tls.VersionName(v), tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite))
		}
		c.Close()
	}
	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11} {
		c, err := tls.DialWithDialer(d, "tcp", e.srv.Addr("tls").String(), &tls.Config{RootCAs: pki.pool, MinVersion: v, MaxVersion: v})
		if err == nil {
			c.Close()
			t.Fatalf("%s accepted", tls.VersionName(v))
		}
	}
}

func TestTLSConfigErrors(t *testing.T) {
	pki := newTestPKI(t)
	cases := []struct {
		name string
		cfg  func(*Config)
		want string
	}{
		{"cert without listen", func(c *Config) { c.TLSCert = pki.certFile }, "sip.tls_cert"},
		{"listen without cert", func(c *Config) { c.TLSListen = "127.0.0.1:0" }, "sip.tls_cert, sip.tls_key"},
		{"wildcard", func(c *Config) { c.TLSListen, c.TLSCert, c.TLSKey = "0.0.0.0:5061", pki.certFile, pki.keyFile }, "wildcard"},
		{"bad address", func(c *Config) { c.TLSListen, c.TLSCert, c.TLSKey = "nowhere", pki.certFile, pki.keyFile }, "sip.tls_listen"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := Config{Listen: "127.0.0.1:0"}
			tc.cfg(&c)
			c.Defaults()
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want error naming %q, got %v", tc.want, err)
			}
		})
	}
	// A key that does not match the certificate fails at Listen.
	other := newTestPKI(t)
	if _, err := serverTLSConfig(pki.certFile, other.keyFile); err == nil {
		t.Fatal("mismatched key accepted")
	}
	if _, err := clientTLSConfig(pki.keyFile, nil); err == nil {
		t.Fatal("a key file accepted as CA bundle")
	}
}

// tlsCallee is a minimal callee that serves SIP only over TLS.
type tlsCallee struct {
	addr    netip.AddrPort
	rtp     *net.UDPConn
	invites chan *sipmsg.Request
	byes    chan struct{}
	mu      sync.Mutex
	calls   map[string]*sipgo.DialogServerSession
}

func newTLSCallee(t *testing.T, pki *testPKI) *tlsCallee {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pki.cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	rtp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	c := &tlsCallee{addr: ln.Addr().(*net.TCPAddr).AddrPort(), rtp: rtp, invites: make(chan *sipmsg.Request, 4),
		byes: make(chan struct{}, 4), calls: map[string]*sipgo.DialogServerSession{}}
	ua, _ := sipgo.NewUA(sipgo.WithUserAgent("tls-callee"), sipgo.WithUserAgenTLSConfig(&tls.Config{RootCAs: pki.pool}),
		sipgo.WithUserAgentTransportLayerOptions(sipmsg.WithTransportLayerLogger(testLog())),
		sipgo.WithUserAgentTransactionLayerOptions(sipmsg.WithTransactionLayerLogger(testLog())))
	srv, _ := sipgo.NewServer(ua, sipgo.WithServerLogger(testLog()))
	cli, _ := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"), sipgo.WithClientLogger(testLog()))
	contact := sipmsg.Uri{Scheme: "sip", User: "2001", Host: "127.0.0.1", Port: int(c.addr.Port()), UriParams: sipmsg.NewParams()}
	contact.UriParams.Add("transport", "tls")
	dua := &sipgo.DialogUA{Client: cli, ContactHDR: sipmsg.ContactHeader{Address: contact}}
	rtpAddr := rtp.LocalAddr().(*net.UDPAddr).AddrPort()
	sdp := "v=0\r\no=callee 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio " +
		strconv.Itoa(int(rtpAddr.Port())) + " RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
	srv.OnInvite(func(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
		ds, err := dua.ReadInvite(req, tx)
		if err != nil {
			return
		}
		c.mu.Lock()
		c.calls[req.CallID().Value()] = ds
		c.mu.Unlock()
		c.invites <- req
		_ = ds.RespondSDP([]byte(sdp))
	})
	srv.OnAck(func(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
		c.mu.Lock()
		ds := c.calls[req.CallID().Value()]
		c.mu.Unlock()
		if ds != nil {
			_ = ds.ReadAck(req, tx)
		}
	})
	srv.OnBye(func(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
		c.mu.Lock()
		ds := c.calls[req.CallID().Value()]
		c.mu.Unlock()
		if ds != nil {
			_ = ds.ReadBye(req, tx)
		}
		c.byes <- struct{}{}
	})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = srv.ServeTLS(ln) }()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		ua.Close()
		rtp.Close()
	})
	return c
}

// A route to a sips: target places the B leg over TLS; the call works and
// media flows.
func TestTLSSipsRoute(t *testing.T) {
	pki := newTestPKI(t)
	callee := newTLSCallee(t, pki)
	e := tlsEnv(t, pki, []Route{{Match: "2XXX", Target: "sips:${user}@127.0.0.1:" + strconv.Itoa(int(callee.addr.Port()))}})
	caller := e.party("1001")
	ac, err := caller.Invite(e.ctx, e.uri("2001"), caller.SDP(siptest.SDPOptions{}))
	if err != nil {
		t.Fatalf("invite: %v", err)
	}
	var inv *sipmsg.Request
	select {
	case inv = <-callee.invites:
	case <-e.ctx.Done():
		t.Fatal("callee got no INVITE")
	}
	if tp := inv.Transport(); !strings.EqualFold(tp, "TLS") {
		t.Fatalf("B leg transport %s", tp)
	}
	if ci := e.waitState(StateAnswered); ci.TransportB != "TLS" {
		t.Fatalf("call info transport_b %q", ci.TransportB)
	}
	pkt := siptest.RTPPacket(0x55, 7, 160, 0, []byte("over a TLS-signalled call"))
	if err := ac.SendRTP(pkt); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	callee.rtp.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := callee.rtp.ReadFromUDPAddrPort(buf)
	if err != nil || !bytes.Equal(buf[:n], pkt) {
		t.Fatalf("callee rtp: %v %x", err, buf[:n])
	}
	if err := ac.Bye(e.ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-callee.byes:
	case <-e.ctx.Done():
		t.Fatal("callee got no BYE over TLS")
	}
	e.waitEnded(1)
}
