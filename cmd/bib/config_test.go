package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// The embedded default.yaml is the documentation of every key: it must
// parse strictly and mean exactly what Defaults() gives.
func TestDefaultYAMLMatchesDefaults(t *testing.T) {
	var fromYAML Config
	if err := decodeConfig([]byte(defaultConfigYAML), &fromYAML); err != nil {
		t.Fatalf("default.yaml does not parse: %v", err)
	}
	fromYAML.Defaults()
	var def Config
	def.Defaults()
	if fromYAML.Routes == nil {
		fromYAML.Routes = def.Routes
	}
	norm := func(c *Config) {
		if len(c.Routes) == 0 {
			c.Routes = nil
		}
		if len(c.Devices) == 0 {
			c.Devices = nil
		}
		if len(c.Supervisors) == 0 {
			c.Supervisors = nil
		}
		if len(c.RecordingProfiles) == 0 {
			c.RecordingProfiles = nil
		}
	}
	norm(&fromYAML)
	norm(&def)
	if !reflect.DeepEqual(fromYAML, def) {
		t.Fatalf("default.yaml and Defaults() differ:\nyaml:     %+v\ndefaults: %+v", fromYAML, def)
	}
	if err := def.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	cases := []struct {
		name, yaml, want string
	}{
		{"unknown top-level key", "sipp:\n  listen: x\n", `unknown key "sipp"`},
		{"unknown nested key", "media:\n  rtp_port: 1-2\n", `unknown key "rtp_port"`},
		{"bad port range", "media:\n  rtp_ports: 30000-20000\n", "media.rtp_ports"},
		{"bad media ip", "media:\n  ip: nowhere\n", "media.ip"},
		{"bad duration", "media:\n  media_timeout: soon\n", "invalid duration"},
		{"bad http listen", "http:\n  listen: localhost\n", "http.listen"},
		{"bad log level", "log_level: loud\n", "log_level"},
		{"bad type", "devices: 5\n", "line 1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "bib.yaml")
			os.WriteFile(p, []byte(tc.yaml), 0o600)
			c, err := loadConfig(p)
			if err == nil {
				err = c.Validate()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestEmptyConfigFileIsDefaults(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bib.yaml")
	os.WriteFile(p, nil, 0o600)
	c, err := loadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.SIP.Listen != "127.0.0.1:5060" || c.HTTP.Listen != "127.0.0.1:8080" || c.Data != "./data" {
		t.Fatalf("defaults not applied: %+v", c)
	}
}

// The README's configuration reference is the embedded default.yaml, so
// the documentation cannot drift from what bib runs on.
func TestREADMEShowsTheDefaultConfig(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "```yaml\n"+strings.TrimRight(defaultConfigYAML, "\n")+"\n```") {
		t.Fatal("README.md's configuration block is not cmd/bib/default.yaml: paste the file into the ```yaml block of the Configuration section")
	}
}
