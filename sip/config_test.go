package sip

import (
	"strings"
	"testing"
	"time"

	"github.com/bib-project/bib/bridge"
	sipmsg "github.com/emiago/sipgo/sip"
	"gopkg.in/yaml.v3"
)

func TestConfigDefaultsAndValidate(t *testing.T) {
	var c Config
	c.Defaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:5060" || len(c.Transports) != 2 || time.Duration(c.RingTimeout) != 60*time.Second ||
		c.MonitorPrefix != "monitor-" || c.Domain != "127.0.0.1" || time.Duration(c.MinExpires) != time.Minute {
		t.Fatalf("defaults: %+v", c)
	}
	bad := []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.Listen = "localhost:5060" }, "sip.listen"},
		{func(c *Config) { c.Listen = "0.0.0.0:5060" }, "sip.listen"},
		{func(c *Config) { c.Transports = []string{"udp", "tls"} }, "sip.transports[1]"},
		{func(c *Config) { c.Transports = []string{"udp", "UDP"} }, "sip.transports[1]"},
		{func(c *Config) { c.RingTimeout = -1 }, "sip.ring_timeout"},
		{func(c *Config) { c.Domain = "a b" }, "sip.domain"},
		{func(c *Config) { c.MinExpires = bridge.Duration(1500 * time.Millisecond) }, "sip.min_expires"},
		{func(c *Config) { c.DefaultExpires = bridge.Duration(time.Second) }, "sip.default_expires"},
	}
	for _, tc := range bad {
		c := Config{}
		c.Defaults()
		tc.mod(&c)
		err := c.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), tc.want+":") {
			t.Errorf("want error naming %s, got %v", tc.want, err)
		}
	}
}

func TestConfigYAML(t *testing.T) {
	var doc struct {
		SIP    Config  `yaml:"sip"`
		Routes []Route `yaml:"routes"`
	}
	in := "sip:\n  listen: 127.0.0.1:5070\n  ring_timeout: 5s\nroutes:\n  - match: \"2XXX\"\n    target: \"sip:${user}@127.0.0.1:5080\"\n  - match: \"*\"\n    target: \"sip:op@127.0.0.1:5090\"\n"
	if err := yaml.Unmarshal([]byte(in), &doc); err != nil {
		t.Fatal(err)
	}
	doc.SIP.Defaults()
	if err := doc.SIP.Validate(); err != nil {
		t.Fatal(err)
	}
	if time.Duration(doc.SIP.RingTimeout) != 5*time.Second || len(doc.Routes) != 2 {
		t.Fatalf("%+v", doc)
	}
	if err := ValidateRoutes(doc.Routes); err != nil {
		t.Fatal(err)
	}
}

func TestRoutes(t *testing.T) {
	tests := []struct {
		match string
		user  string
		ok    bool
	}{
		{"2XXX", "2001", true},
		{"2XXX", "3001", false},
		{"2XXX", "20011", false},
		{"2XXX", "2a01", false},
		{"20X1", "2051", true},
		{"*", "anything", true},
		{"regex:(alice|bob)", "bob", true},
		{"regex:(alice|bob)", "bobby", false},
		{"regex:9[0-9]+", "9123", true},
	}
	for _, tc := range tests {
		r, err := compileRoute(Route{Match: tc.match, Target: "sip:${user}@127.0.0.1:5070"})
		if err != nil {
			t.Fatal(err)
		}
		if got := r.matches(tc.user); got != tc.ok {
			t.Errorf("%q matches %q = %v, want %v", tc.match, tc.user, got, tc.ok)
		}
	}
	r, _ := compileRoute(Route{Match: "*", Target: "sip:${user}@127.0.0.1:5070;transport=tcp"})
	u, err := r.target("2001")
	if err != nil || u.User != "2001" || u.Port != 5070 {
		t.Fatalf("target %v %v", u, err)
	}
	if v, _ := u.UriParams.Get("transport"); v != "tcp" {
		t.Fatalf("transport param lost: %v", u)
	}

	bad := []struct {
		r    Route
		want string
	}{
		{Route{Match: "", Target: "sip:a@b"}, "routes[0].match"},
		{Route{Match: "2XYZ", Target: "sip:a@b"}, "routes[0].match"},
		{Route{Match: "regex:(", Target: "sip:a@b"}, "routes[0].match"},
		{Route{Match: "*", Target: ""}, "routes[0].target"},
		{Route{Match: "*", Target: "http://x"}, "routes[0].target"},
	}
	for _, tc := range bad {
		err := ValidateRoutes([]Route{tc.r})
		if err == nil || !strings.HasPrefix(err.Error(), tc.want+":") {
			t.Errorf("%+v: want %s, got %v", tc.r, tc.want, err)
		}
	}
}

func TestRegistrar(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	reg := newRegistrar(func() time.Time { return now })
	seq := uint32(0)
	register := func(user, contact string, params map[string]string, expires string) registerResult {
		t.Helper()
		seq++
		req := sipmsg.NewRequest(sipmsg.REGISTER, sipmsg.Uri{Scheme: "sip", Host: "bib"})
		aor := sipmsg.Uri{Scheme: "sip", User: user, Host: "bib"}
		req.AppendHeader(&sipmsg.ToHeader{Address: aor})
		req.AppendHeader(&sipmsg.FromHeader{Address: aor})
		cid := sipmsg.CallIDHeader("reg-" + user)
		req.AppendHeader(&cid)
		req.AppendHeader(&sipmsg.CSeqHeader{SeqNo: seq, MethodName: sipmsg.REGISTER})
		if contact != "" {
			ch := &sipmsg.ContactHeader{Params: sipmsg.NewParams()}
			if contact == "*" {
				ch.Address.Wildcard = true
			} else if err := sipmsg.ParseUri(contact, &ch.Address); err != nil {
				t.Fatal(err)
			}
			for k, v := range params {
				ch.Params.Add(k, v)
			}
			req.AppendHeader(ch)
		}
		if expires != "" {
			req.AppendHeader(sipmsg.NewHeader("Expires", expires))
		}
		return reg.apply(req, 60, 3600)
	}

	if r := register("1001", "sip:1001@127.0.0.1:5071", nil, ""); r.code != 200 || len(r.bindings) != 1 ||
		!r.bindings[0].Expires.Equal(now.Add(time.Hour)) {
		t.Fatalf("default expiry: %+v", r)
	}
	if r := register("1001", "sip:1001@127.0.0.1:5071", nil, "30"); r.code != 423 || r.minExpires != 60 {
		t.Fatalf("want 423: %+v", r)
	}
	if r := register("1001", "sip:1001@127.0.0.1:5071", map[string]string{"expires": "10"}, "600"); r.code != 423 {
		t.Fatalf("contact param below minimum: %+v", r)
	}
	// A second contact, more recent: lookup prefers it.
	now = now.Add(time.Second)
	if r := register("1001", "sip:1001@127.0.0.1:5072", map[string]string{"expires": "120"}, ""); r.code != 200 || len(r.bindings) != 2 {
		t.Fatalf("%+v", r)
	}
	if g, ok := reg.lookup("1001"); !ok || g.Contact != "sip:1001@127.0.0.1:5072" {
		t.Fatalf("lookup %+v", g)
	}
	// The 120 s binding expires; the older one remains.
	now = now.Add(121 * time.Second)
	if g, ok := reg.lookup("1001"); !ok || g.Contact != "sip:1001@127.0.0.1:5071" {
		t.Fatalf("after expiry %+v", g)
	}
	// Query without Contact lists bindings.
	if r := register("1001", "", nil, ""); r.code != 200 || len(r.bindings) != 1 {
		t.Fatalf("query %+v", r)
	}
	// expires=0 removes.
	if r := register("1001", "sip:1001@127.0.0.1:5071", nil, "0"); r.code != 200 || len(r.bindings) != 0 {
		t.Fatalf("remove %+v", r)
	}
	if _, ok := reg.lookup("1001"); ok {
		t.Fatal("binding survived expires=0")
	}
	// Wildcard needs Expires: 0.
	register("1001", "sip:1001@127.0.0.1:5071", nil, "")
	if r := register("1001", "*", nil, "60"); r.code != 400 {
		t.Fatalf("wildcard with expiry: %+v", r)
	}
	if r := register("1001", "*", nil, "0"); r.code != 200 {
		t.Fatalf("wildcard: %+v", r)
	}
	if len(reg.all()) != 0 {
		t.Fatalf("left: %+v", reg.all())
	}
	if r := register("1001", "sip:x@y", nil, "abc"); r.code != 400 {
		t.Fatalf("bad Expires: %+v", r)
	}
}

func TestRegisterOverSIP(t *testing.T) {
	e := newEnv(t, envOpts{})
	p := e.party("1001")
	res, err := p.Register(e.ctx, e.srv.Addr("udp"), 10)
	mustStatus(t, err, res, 423)
	if header(res, "Min-Expires") != "60" || !strings.Contains(header(res, "Warning"), "below the minimum") {
		t.Fatalf("423 headers: %s", res)
	}
	res, err = p.Register(e.ctx, e.srv.Addr("udp"), 120)
	mustStatus(t, err, res, 200)
	if ct := res.Contact(); ct == nil || ct.Params.GetOr("expires", "") != "120" {
		t.Fatalf("200 contact: %v", res.Contact())
	}
	if regs := e.srv.Registrations(); len(regs) != 1 || regs[0].User != "1001" {
		t.Fatalf("%+v", regs)
	}
	res, err = p.Register(e.ctx, e.srv.Addr("udp"), 0)
	mustStatus(t, err, res, 200)
	if regs := e.srv.Registrations(); len(regs) != 0 {
		t.Fatalf("%+v", regs)
	}
}
