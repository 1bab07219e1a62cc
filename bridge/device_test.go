package bridge

import (
	"errors"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestClientTypeOf(t *testing.T) {
	tests := []struct {
		name    string
		want    ClientType
		wantErr string // substring of the error; "" = valid
	}{
		{"CSFJSMITH", ClientDesktop, ""},
		{"CSFjsmith01", ClientDesktop, ""},
		{"CSF123456789012", ClientDesktop, ""}, // 15 characters
		{"CSF1234567890123", "", "at most 15"},
		{"CSFJ.SMITH", "", "letters and digits"},
		{"CSF", "", "at least one character"},
		{"TCTJSMITH", ClientIPhone, ""},
		{"TCTJ.S_M-1", ClientIPhone, ""},
		{"TCTjsmith", "", "uppercase"},
		{"TCT123456789012", ClientIPhone, ""},
		{"TCT1234567890123", "", "at most 15"},
		{"BOTJSMITH", ClientAndroid, ""},
		{"BOTJ SMITH", "", "uppercase"},
		{"TABJSMITH", ClientTablet, ""},
		{"TABJSMITH!", "", "uppercase"},
		{"SEP38ED18552A12", ClientPhone, ""},
		{"SEP38ed18552a12", ClientPhone, ""},
		{"SEP38ED18552A1", "", "exactly 12 hex"},
		{"SEP38ED18552A123", "", "exactly 12 hex"},
		{"SEP38ED18552G12", "", "exactly 12 hex"},
		{"csfjsmith", "", "must start with"},
		{"ATAJSMITH", "", "must start with"},
		{"", "", "at least one character"},
		{"CS", "", "at least one character"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ClientTypeOf(tt.name)
			if tt.wantErr == "" {
				if err != nil || got != tt.want {
					t.Fatalf("ClientTypeOf(%q) = %q, %v; want %q", tt.name, got, err, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("ClientTypeOf(%q) = %q, want error", tt.name, got)
			}
			if !errors.Is(err, ErrBadDeviceName) || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), `"`+tt.name+`"`) {
				t.Fatalf("error %q: want ErrBadDeviceName, %q and the quoted name", err, tt.wantErr)
			}
		})
	}
}

func TestClusterDefaultsValidate(t *testing.T) {
	var c Cluster
	c.Defaults()
	if c.ID != "StandAloneCluster" || c.Release != DefaultRelease || c.Deployment != DeploymentOnPremises || c.BuiltinBridgeEnable || c.DevicePackInstalled {
		t.Fatalf("defaults: %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	tests := []struct {
		mod func(*Cluster)
		key string
	}{
		{func(c *Cluster) { c.ID = "Stand Alone" }, "id"},
		{func(c *Cluster) { c.ID = strings.Repeat("a", 51) }, "id"},
		{func(c *Cluster) { c.Release = "fourteen" }, "release"},
		{func(c *Cluster) { c.Deployment = "hybrid" }, "deployment"},
		{func(c *Cluster) { c.Deployment = "On-Premises" }, "deployment"},
		{func(c *Cluster) { c.PlayRecordingTone = true }, "play_recording_tone"},
		{func(c *Cluster) { c.PlayMonitoringTone = true }, "play_monitoring_tone"},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			c := Cluster{}
			c.Defaults()
			tt.mod(&c)
			err := c.Validate()
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Key != tt.key || !errors.Is(err, ErrBadConfig) {
				t.Fatalf("Validate() = %v, want ConfigError with key %q", err, tt.key)
			}
		})
	}
}

func validDevice() Device {
	d := Device{Name: "CSFJSMITH", Line: "1001", User: "jsmith"}
	d.Defaults()
	return d
}

func TestDeviceDefaultsValidate(t *testing.T) {
	d := Device{Name: "CSFJSMITH", Line: "1001", BuiltinBridge: "On", Recording: " Automatic"}
	d.Defaults()
	if d.BuiltinBridge != BIBOn || d.Recording != RecordingAutomatic {
		t.Fatalf("Defaults did not normalise: %+v", d)
	}
	d = Device{Name: "CSFJSMITH", Line: "1001"}
	d.Defaults()
	if d.BuiltinBridge != BIBDefault || d.Recording != RecordingDisabled || d.Privacy || d.Monitoring {
		t.Fatalf("defaults: %+v", d)
	}
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	if d.ClientType() != ClientDesktop {
		t.Fatalf("ClientType = %q", d.ClientType())
	}
	tests := []struct {
		mod func(*Device)
		key string
	}{
		{func(d *Device) { d.Name = "XYZ123" }, "name"},
		{func(d *Device) { d.Line = "" }, "line"},
		{func(d *Device) { d.Line = "10a1" }, "line"},
		{func(d *Device) { d.Line = "+" }, "line"},
		{func(d *Device) { d.User = "j smith" }, "user"},
		{func(d *Device) { d.BuiltinBridge = "maybe" }, "builtin_bridge"},
		{func(d *Device) { d.Recording = "always" }, "recording"},
		{func(d *Device) { d.RecordingProfile = "a/b" }, "recording_profile"},
		{func(d *Device) { d.Password = "x"; d.HA1 = strings.Repeat("a", 32) }, "ha1"},
		{func(d *Device) { d.HA1 = "abc" }, "ha1"},
		{func(d *Device) { d.HA1 = strings.Repeat("g", 32) }, "ha1"},
		{func(d *Device) { d.Password = "a\nb" }, "password"},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			d := validDevice()
			tt.mod(&d)
			err := d.Validate()
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Key != tt.key {
				t.Fatalf("Validate() = %v, want key %q", err, tt.key)
			}
		})
	}
	ok := []func(*Device){
		func(d *Device) { d.Line = "+4930123456" },
		func(d *Device) { d.HA1 = strings.Repeat("A1", 16) },
		func(d *Device) { d.HA1 = strings.Repeat("0f", 32) },
		func(d *Device) { d.Password = "s3cret pass" },
		func(d *Device) { d.User = "j.smith@example.com" },
		func(d *Device) { d.RecordingProfile = "MediaSense_1" },
	}
	for i, mod := range ok {
		d := validDevice()
		mod(&d)
		if err := d.Validate(); err != nil {
			t.Errorf("valid case %d: %v", i, err)
		}
	}
}

func TestSupervisorValidate(t *testing.T) {
	bcrypt := "$2a$10$" + strings.Repeat("N", 53)
	tests := []struct {
		name string
		s    Supervisor
		key  string // "" = valid
	}{
		{"password", Supervisor{User: "boss", Password: "pw", Monitors: []string{"1001"}}, ""},
		{"hash and ha1", Supervisor{User: "boss", PasswordHash: bcrypt, HA1: strings.Repeat("a", 32), Monitors: []string{"*"}}, ""},
		{"patterns", Supervisor{User: "boss", HA1: strings.Repeat("a", 64), Monitors: []string{"2XXX", "+49301XX", "1x01"}}, ""},
		{"no monitors", Supervisor{User: "boss", Password: "pw"}, ""},
		{"no user", Supervisor{Password: "pw"}, "user"},
		{"bad user", Supervisor{User: "bo ss", Password: "pw"}, "user"},
		{"no credential", Supervisor{User: "boss"}, "password"},
		{"password and hash", Supervisor{User: "boss", Password: "pw", PasswordHash: bcrypt}, "password"},
		{"bad hash", Supervisor{User: "boss", PasswordHash: "$1$abc"}, "password_hash"},
		{"bad ha1", Supervisor{User: "boss", HA1: "xyz"}, "ha1"},
		{"bad monitor", Supervisor{User: "boss", Password: "pw", Monitors: []string{"1001", "20*"}}, "monitors[1]"},
		{"empty monitor", Supervisor{User: "boss", Password: "pw", Monitors: []string{""}}, "monitors[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.s.Validate()
			if tt.key == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Key != tt.key {
				t.Fatalf("Validate() = %v, want key %q", err, tt.key)
			}
		})
	}
}

func TestSupervisorMayMonitor(t *testing.T) {
	s := Supervisor{Monitors: []string{"1001", "2XXX", "+4930X"}}
	tests := []struct {
		line string
		want bool
	}{
		{"1001", true},
		{"1002", false},
		{"2000", true},
		{"2999", true},
		{"20000", false},
		{"200", false},
		{"2A00", false},
		{"+49301", true},
		{"49301", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := s.MayMonitor(tt.line); got != tt.want {
			t.Errorf("MayMonitor(%q) = %v, want %v", tt.line, got, tt.want)
		}
	}
	all := Supervisor{Monitors: []string{"*"}}
	if !all.MayMonitor("1234") || all.MayMonitor("") {
		t.Error("* should match every non-empty line")
	}
	if (Supervisor{}).MayMonitor("1001") {
		t.Error("empty monitors should match nothing")
	}
}

// TestConfigYAML decodes every documented key with unknown keys rejected,
// so a renamed yaml tag shows up here.
func TestConfigYAML(t *testing.T) {
	const doc = `
cluster:
  id: StandAloneCluster
  release: "12.5(1)SU4"
  deployment: on-premises
  builtin_bridge_enable: false
  device_pack_installed: true
  play_recording_tone: false
  play_monitoring_tone: false
devices:
  - name: CSFJSMITH
    line: "1001"
    user: jsmith
    builtin_bridge: on
    privacy: false
    recording: automatic
    recording_profile: archive
    monitoring: true
    password: s3cret
  - name: SEP38ED18552A12
    line: 1000
    ha1: 0123456789abcdef0123456789abcdef
supervisors:
  - user: boss
    password: pw
    monitors: ["1001", "2XXX"]
  - user: lead
    password_hash: $2b$10$NNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNN
    ha1: 0123456789abcdef0123456789abcdef
    monitors: ["*"]
`
	var cfg struct {
		Cluster     Cluster      `yaml:"cluster"`
		Devices     []Device     `yaml:"devices"`
		Supervisors []Supervisor `yaml:"supervisors"`
	}
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	d := cfg.Devices[0]
	if cfg.Cluster.Release != "12.5(1)SU4" || !cfg.Cluster.DevicePackInstalled || d.BuiltinBridge != "on" ||
		d.Recording != "automatic" || !d.Monitoring || d.Password != "s3cret" || d.RecordingProfile != "archive" ||
		cfg.Devices[1].HA1 == "" || cfg.Devices[1].Line != "1000" || len(cfg.Supervisors[0].Monitors) != 2 || cfg.Supervisors[1].PasswordHash == "" {
		t.Fatalf("decoded %+v", cfg)
	}
	p, err := NewPolicy(cfg.Cluster, cfg.Devices, cfg.Supervisors)
	if err != nil {
		t.Fatal(err)
	}
	if v := p.Check(d, ActionRecord); !v.Allowed {
		t.Fatalf("example device cannot record: %+v", v)
	}
}

// FuzzClientTypeOf: never panics; a valid name is at most 15 characters
// (SEP: exactly 15), starts with its client type and is printable ASCII.
func FuzzClientTypeOf(f *testing.F) {
	for _, s := range []string{"CSFJSMITH", "TCTJ.S_M-1", "BOTX", "TAB1", "SEP38ED18552A12", "SEPXYZ", "", "csf", "CSF\x00", "TCTé"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		ct, err := ClientTypeOf(name)
		if err != nil {
			if ct != "" || !errors.Is(err, ErrBadDeviceName) {
				t.Fatalf("ClientTypeOf(%q) = %q, %v", name, ct, err)
			}
			return
		}
		if len(name) > 15 || len(name) < 4 || !strings.HasPrefix(name, string(ct)) {
			t.Fatalf("accepted %q as %q", name, ct)
		}
		if ct == ClientPhone && len(name) != 15 {
			t.Fatalf("accepted SEP name %q of length %d", name, len(name))
		}
		for i := 0; i < len(name); i++ {
			if name[i] <= ' ' || name[i] >= 0x7f {
				t.Fatalf("accepted %q with byte %#x", name, name[i])
			}
		}
		d := Device{Name: name, Line: "1"}
		d.Defaults()
		if err := d.Validate(); err != nil {
			t.Fatalf("valid name %q fails Device.Validate: %v", name, err)
		}
	})
}

// FuzzMonitorPattern: valid patterns match only lines of their own length
// (or any non-empty line for "*"), and a line always matches itself.
func FuzzMonitorPattern(f *testing.F) {
	f.Add("2XXX", "2001")
	f.Add("*", "1")
	f.Add("+49X", "+491")
	f.Add("1001", "1001")
	f.Add("x", "")
	f.Fuzz(func(t *testing.T, pattern, line string) {
		s := Supervisor{Monitors: []string{pattern}}
		got := s.MayMonitor(line)
		if !cfgValidMonitor(pattern) {
			return
		}
		if got && pattern != "*" && len(line) != len(pattern) {
			t.Fatalf("%q matched %q of another length", pattern, line)
		}
		if cfgValidLine(line) && !(Supervisor{Monitors: []string{line}}).MayMonitor(line) {
			t.Fatalf("line %q does not match itself", line)
		}
	})
}
