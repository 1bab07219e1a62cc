package sip

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"github.com/bib-project/bib/bridge"
	sipmsg "github.com/emiago/sipgo/sip"
)

// Config is the SIP side of `bib serve` (YAML key `sip`).
type Config struct {
	// Listen is the IP:port bib listens on, for every transport in Transports.
	// Port 0 picks a free port (tests). Default 127.0.0.1:5060.
	Listen string `yaml:"listen"`
	// Transports lists the SIP transports to serve: udp, tcp. Default [udp, tcp].
	Transports []string `yaml:"transports"`
	// Domain is the host part bib writes in the From URI of calls it places
	// (B legs). Default: the Listen IP.
	Domain string `yaml:"domain"`
	// UserAgent is the User-Agent/Server header value. Default "bib".
	UserAgent string `yaml:"user_agent"`
	// RingTimeout bounds how long a callee may ring (duration). On expiry the
	// caller gets 408 and the callee a CANCEL. Default 60s.
	RingTimeout bridge.Duration `yaml:"ring_timeout"`
	// MonitorPrefix marks Request-URI users that ask to monitor a line
	// (reserved for silent monitoring). Default "monitor-".
	MonitorPrefix string `yaml:"monitor_prefix"`
	// MinExpires is the shortest registration accepted (duration); shorter
	// ones get 423 Interval Too Brief (RFC 3261 section 10.3). Default 60s.
	MinExpires bridge.Duration `yaml:"min_expires"`
	// DefaultExpires applies to a REGISTER that asks for no expiry (duration).
	// Default 3600s.
	DefaultExpires bridge.Duration `yaml:"default_expires"`
	// TLSListen is the IP:port for SIP over TLS; empty (default) serves no
	// TLS. Needs TLSCert and TLSKey. Port 0 picks a free port (tests).
	TLSListen string `yaml:"tls_listen"`
	// TLSCert is the PEM certificate chain file for TLSListen.
	TLSCert string `yaml:"tls_cert"`
	// TLSKey is the PEM private key file for TLSCert.
	TLSKey string `yaml:"tls_key"`
	// TLSCA is a PEM file of CA certificates trusted for sips: targets
	// (recorders, routes). Default: the system roots.
	TLSCA string `yaml:"tls_ca"`
	// Auth is SIP digest authentication (digest.go).
	Auth AuthConfig `yaml:"auth"`
	// Limits caps calls and request rates (limits.go).
	Limits LimitsConfig `yaml:"limits"`
}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:5060"
	}
	if len(c.Transports) == 0 {
		c.Transports = []string{"udp", "tcp"}
	}
	if c.UserAgent == "" {
		c.UserAgent = "bib"
	}
	if c.RingTimeout == 0 {
		c.RingTimeout = bridge.Duration(60 * time.Second)
	}
	if c.MonitorPrefix == "" {
		c.MonitorPrefix = "monitor-"
	}
	if c.MinExpires == 0 {
		c.MinExpires = bridge.Duration(60 * time.Second)
	}
	if c.DefaultExpires == 0 {
		c.DefaultExpires = bridge.Duration(3600 * time.Second)
	}
	c.Auth.Defaults()
	c.Limits.Defaults()
	if c.Domain == "" {
		if ap, err := netip.ParseAddrPort(c.Listen); err == nil {
			c.Domain = ap.Addr().String()
		}
	}
}

// Validate checks every field and names the bad one.
func (c *Config) Validate() error {
	ap, err := netip.ParseAddrPort(c.Listen)
	if err != nil {
		return fmt.Errorf("sip.listen: %q is not IP:port", c.Listen)
	}
	if ap.Addr().IsUnspecified() {
		return fmt.Errorf("sip.listen: %q: give the address phones reach, not a wildcard", c.Listen)
	}
	if len(c.Transports) == 0 {
		return fmt.Errorf("sip.transports: empty, want udp and/or tcp")
	}
	seen := map[string]bool{}
	for i, t := range c.Transports {
		t = strings.ToLower(t)
		if t != "udp" && t != "tcp" {
			return fmt.Errorf("sip.transports[%d]: %q not supported, want udp or tcp", i, c.Transports[i])
		}
		if seen[t] {
			return fmt.Errorf("sip.transports[%d]: %q listed twice", i, c.Transports[i])
		}
		seen[t] = true
	}
	if strings.ContainsAny(c.Domain, " \t\r\n<>;@\"") {
		return fmt.Errorf("sip.domain: %q is not a host name", c.Domain)
	}
	if c.RingTimeout <= 0 {
		return fmt.Errorf("sip.ring_timeout: %s must be positive", time.Duration(c.RingTimeout))
	}
	if c.MonitorPrefix == "" {
		return fmt.Errorf("sip.monitor_prefix: empty")
	}
	if c.MinExpires <= 0 || time.Duration(c.MinExpires)%time.Second != 0 {
		return fmt.Errorf("sip.min_expires: %s must be a positive whole number of seconds", time.Duration(c.MinExpires))
	}
	if c.DefaultExpires < c.MinExpires || time.Duration(c.DefaultExpires)%time.Second != 0 {
		return fmt.Errorf("sip.default_expires: %s must be whole seconds and at least sip.min_expires", time.Duration(c.DefaultExpires))
	}
	if err := c.validTLS(); err != nil {
		return err
	}
	if err := c.Auth.Validate(); err != nil {
		return err
	}
	return c.Limits.Validate()
}

// Route is a static route (top-level YAML key `routes`, tried in order
// after registered contacts).
type Route struct {
	// Match selects callees by Request-URI user: a digit pattern where X is
	// any digit and other characters match themselves ("2XXX"), "regex:<Go
	// regexp>" matched against the whole user part, or "*" for anything.
	Match string `yaml:"match"`
	// Target is the SIP URI the call is sent to; ${user} is replaced by the
	// callee's user part, e.g. "sip:${user}@127.0.0.1:5070".
	Target string `yaml:"target"`
}

// Validate checks the route; errors name the field ("match", "target").
func (r Route) Validate() error {
	_, err := compileRoute(r)
	return err
}

// ValidateRoutes validates a route list, naming the bad entry as routes[i].
func ValidateRoutes(routes []Route) error {
	for i, r := range routes {
		if err := r.Validate(); err != nil {
			return fmt.Errorf("routes[%d].%w", i, err)
		}
	}
	return nil
}

type route struct {
	Route
	re *regexp.Regexp
}

func compileRoute(r Route) (route, error) {
	out := route{Route: r}
	switch {
	case r.Match == "":
		return out, fmt.Errorf("match: empty")
	case r.Match == "*":
	case strings.HasPrefix(r.Match, "regex:"):
		re, err := regexp.Compile(`^(?:` + strings.TrimPrefix(r.Match, "regex:") + `)$`)
		if err != nil {
			return out, fmt.Errorf("match: %q: %v", r.Match, err)
		}
		out.re = re
	default:
		for _, ch := range r.Match {
			if !(ch == 'X' || ch == 'x' || (ch >= '0' && ch <= '9') || ch == '+' || ch == '*' || ch == '#') {
				return out, fmt.Errorf("match: %q: want digits and X, \"regex:...\" or \"*\"", r.Match)
			}
		}
	}
	if r.Target == "" {
		return out, fmt.Errorf("target: empty")
	}
	var u sipmsg.Uri
	if err := sipmsg.ParseUri(strings.ReplaceAll(r.Target, "${user}", "user"), &u); err != nil || u.Host == "" {
		return out, fmt.Errorf("target: %q is not a SIP URI", r.Target)
	}
	if s := strings.ToLower(u.Scheme); s != "sip" && s != "sips" {
		return out, fmt.Errorf("target: %q: only sip: and sips: URIs are supported", r.Target)
	}
	return out, nil
}

// matches reports whether the route applies to the callee user.
func (r route) matches(user string) bool {
	switch {
	case r.Match == "*":
		return true
	case r.re != nil:
		return r.re.MatchString(user)
	}
	if len(user) != len(r.Match) {
		return false
	}
	for i := 0; i < len(user); i++ {
		p := r.Match[i]
		if p == 'X' || p == 'x' {
			if user[i] < '0' || user[i] > '9' {
				return false
			}
		} else if p != user[i] {
			return false
		}
	}
	return true
}

// target returns the route's target URI for user.
func (r route) target(user string) (sipmsg.Uri, error) {
	var u sipmsg.Uri
	err := sipmsg.ParseUri(strings.ReplaceAll(r.Target, "${user}", user), &u)
	return u, err
}
