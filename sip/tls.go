package sip

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	sipmsg "github.com/emiago/sipgo/sip"
)

// SIP over TLS (RFC 3261 section 26.2, RFC 5630 for sips:). bib serves TLS
// on its own address (sip.tls_listen) with a certificate and key from
// files, and places calls over TLS to route targets written as sips: URIs
// or with ;transport=tls. TLS 1.2 is the minimum; cipher suites are Go's
// defaults (AEAD with forward secrecy for 1.2; all of 1.3).

// WithTLSClientConfig sets the TLS client configuration bib uses towards
// sips: targets (e.g. a test CA in RootCAs). Default: system roots, or
// sip.tls_ca when set. MinVersion is raised to TLS 1.2 if lower.
func WithTLSClientConfig(c *tls.Config) Option {
	return func(s *Server) { s.secInit().clientTLS = c }
}

// serverTLSConfig loads the certificate chain and key for the listener.
func serverTLSConfig(certFile, keyFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("sip.tls_cert/sip.tls_key: %w", err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
	}, nil
}

// clientTLSConfig is the dialing side: override (a test) or the CA file,
// else the system roots.
func clientTLSConfig(caFile string, override *tls.Config) (*tls.Config, error) {
	var c *tls.Config
	switch {
	case override != nil:
		c = override.Clone()
	case caFile != "":
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("sip.tls_ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("sip.tls_ca: %s holds no PEM certificate", caFile)
		}
		c = &tls.Config{RootCAs: pool}
	default:
		c = &tls.Config{}
	}
	if c.MinVersion < tls.VersionTLS12 {
		c.MinVersion = tls.VersionTLS12
	}
	return c, nil
}

// listenTLS binds sip.tls_listen when set. Called by Listen.
func (s *Server) listenTLS(ctx context.Context) error {
	if s.cfg.TLSListen == "" {
		return nil
	}
	conf, err := serverTLSConfig(s.cfg.TLSCert, s.cfg.TLSKey)
	if err != nil {
		return err
	}
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", s.cfg.TLSListen)
	if err != nil {
		return fmt.Errorf("sip: listen tls %s: %w", s.cfg.TLSListen, err)
	}
	s.sec.tlsLn = tls.NewListener(l, conf)
	s.addrs["tls"] = l.Addr().(*net.TCPAddr).AddrPort()
	s.log.Info("sip tls listening", "tls", s.addrs["tls"].String())
	return nil
}

// serveTLS serves the TLS listener (nil when none is bound).
func (s *Server) serveTLS() error { return s.srv.ServeTLS(s.sec.tlsLn) }

func (s *Server) closeTLS() {
	if s.sec != nil && s.sec.tlsLn != nil {
		s.sec.tlsLn.Close()
	}
}

// transportFor returns the transport bib uses to reach u: TLS for sips:
// or ;transport=tls, TCP for ;transport=tcp, else UDP.
func transportFor(u sipmsg.Uri) string {
	if strings.EqualFold(u.Scheme, "sips") {
		return "TLS"
	}
	if v, ok := u.UriParams.Get("transport"); ok {
		switch strings.ToLower(v) {
		case "tls":
			return "TLS"
		case "tcp":
			return "TCP"
		}
	}
	return "UDP"
}

// TransportFor is transportFor for other packages (recording forks):
// "UDP", "TCP" or "TLS".
func TransportFor(u sipmsg.Uri) string { return transportFor(u) }

// validTLSConfig checks the TLS fields of Config.
func (c *Config) validTLS() error {
	if c.TLSListen == "" {
		if c.TLSCert != "" || c.TLSKey != "" {
			return fmt.Errorf("sip.tls_cert/tls_key: set but sip.tls_listen is empty")
		}
		return nil
	}
	ap, err := netip.ParseAddrPort(c.TLSListen)
	if err != nil {
		return fmt.Errorf("sip.tls_listen: %q is not IP:port", c.TLSListen)
	}
	if ap.Addr().IsUnspecified() {
		return fmt.Errorf("sip.tls_listen: %q: give the address phones reach, not a wildcard", c.TLSListen)
	}
	if c.TLSCert == "" || c.TLSKey == "" {
		return fmt.Errorf("sip.tls_cert, sip.tls_key: both are required with sip.tls_listen")
	}
	return nil
}
