package main

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/bib-project/bib/bridge"
	"github.com/bib-project/bib/recorder"
	"github.com/bib-project/bib/sip"
	"github.com/bib-project/bib/storage"
)

// defaultConfigYAML is the embedded default configuration, every field with
// its unit and default. `bib config` prints it; a test checks it equals
// what Defaults() produces.
//
//go:embed default.yaml
var defaultConfigYAML string

// Config is bib serve's whole configuration: one YAML file.
type Config struct {
	// SIP listener and B2BUA behaviour.
	SIP sip.Config `yaml:"sip"`
	// Routes: static routes tried after registered contacts, in order.
	Routes []sip.Route `yaml:"routes"`
	// HTTP API, web page and /metrics.
	HTTP HTTPConfig `yaml:"http"`
	// Media plane: RTP address, port range, media timeout.
	Media bridge.Config `yaml:"media"`
	// Data is the directory for recordings and the index. Default ./data.
	Data string `yaml:"data"`
	// LogLevel: debug, info, warn or error. Default info.
	LogLevel string `yaml:"log_level"`
	// Cluster: the emulated call-manager cluster the gate reasons about.
	Cluster bridge.Cluster `yaml:"cluster"`
	// Devices: the agents' devices (the near ends bib monitors and records).
	Devices []bridge.Device `yaml:"devices"`
	// Supervisors and the lines each may monitor.
	Supervisors []bridge.Supervisor `yaml:"supervisors"`
	// Recording: local recording (jitter buffer, extra tracks, DTMF masking).
	Recording recorder.Config `yaml:"recording"`
	// Storage: the archive (encryption at rest).
	Storage StorageConfig `yaml:"storage"`
	// ProblemReports: receiving problem reports over HTTP.
	ProblemReports ProblemReportsConfig `yaml:"problem_reports"`
	// RecordingProfiles: external recorders that recorded devices fork to.
	RecordingProfiles []RecordingProfile `yaml:"recording_profiles"`
	// Demo: simulated agents calling a simulated customer (flag --demo).
	Demo DemoConfig `yaml:"demo"`
}

// StorageConfig is the archive's configuration.
type StorageConfig struct {
	// Encryption at rest: every recording written as NAME.enc + NAME.esk.
	Encryption storage.EncryptionConfig `yaml:"encryption"`
}

// HTTPConfig is the HTTP listener.
type HTTPConfig struct {
	// Listen is the HTTP address (API, web page, /metrics). Default 127.0.0.1:8080.
	Listen string `yaml:"listen"`
	// SessionTimeout ends a supervisor's sign-in session after this long without a request (duration). Default 30m.
	SessionTimeout bridge.Duration `yaml:"session_timeout"`
	// Admins lists supervisors (by user) who may read the audit trail,
	// GET /api/v1/audit. Default empty: nobody, once supervisors sign in.
	Admins []string `yaml:"admins"`
	// Pprof serves Go's profiler under /debug/pprof/ (for measuring what
	// limits a load run). Default false.
	Pprof bool `yaml:"pprof"`
}

// Defaults fills every unset field.
func (c *Config) Defaults() {
	c.SIP.Defaults()
	c.Media.Defaults()
	c.Cluster.Defaults()
	if c.HTTP.Listen == "" {
		c.HTTP.Listen = "127.0.0.1:8080"
	}
	if c.HTTP.SessionTimeout <= 0 {
		c.HTTP.SessionTimeout = bridge.Duration(30 * 60 * 1e9) // 30 minutes
	}
	if c.Data == "" {
		c.Data = "./data"
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	if c.Recording == (recorder.Config{}) {
		c.Recording = recorder.Defaults()
	}
	c.Storage.Encryption.Defaults()
	c.ProblemReports.Defaults(c.Data)
	c.Demo.Defaults()
}

// Validate checks every field; errors name the key.
func (c *Config) Validate() error {
	var errs []error
	if err := validateAdmins(c); err != nil {
		errs = append(errs, err)
	}
	if err := c.SIP.Validate(); err != nil {
		errs = append(errs, err)
	}
	for i := range c.Routes {
		if err := c.Routes[i].Validate(); err != nil {
			errs = append(errs, fmt.Errorf("routes[%d].%w", i, err))
		}
	}
	if _, err := netip.ParseAddrPort(c.HTTP.Listen); err != nil {
		errs = append(errs, fmt.Errorf("http.listen: %q is not IP:PORT", c.HTTP.Listen))
	}
	if err := c.Media.Validate(); err != nil {
		errs = append(errs, err)
	}
	if strings.TrimSpace(c.Data) == "" {
		errs = append(errs, errors.New("data: must not be empty"))
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if err := c.Recording.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("recording: %w", err))
	}
	if err := c.Storage.Encryption.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.ProblemReports.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Demo.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := ValidateRecordingProfiles(c.RecordingProfiles); err != nil {
		errs = append(errs, err)
	}
	for i, d := range c.Devices {
		if d.RecordingProfile == "" {
			continue
		}
		if _, ok := profileFor(c.RecordingProfiles, d); !ok {
			errs = append(errs, fmt.Errorf("devices[%d].recording_profile: no recording profile is named %q", i, d.RecordingProfile))
		}
	}
	return errors.Join(errs...)
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log_level: %q is not one of debug, info, warn, error", s)
	}
	return l, nil
}

var yamlUnknown = regexp.MustCompile(`line (\d+): field (\S+) not found in type (\S+)`)

// loadConfig reads a YAML file (or nothing, for the embedded defaults),
// rejecting unknown keys, then applies defaults. Validation is separate so
// flags can override first.
func loadConfig(path string) (Config, error) {
	var c Config
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return c, fmt.Errorf("config: %w", err)
		}
		if err := decodeConfig(b, &c); err != nil {
			return c, fmt.Errorf("config %s: %w", path, err)
		}
	}
	c.Defaults()
	return c, nil
}

// decodeConfig decodes YAML over c. Sections whose zero value is not their
// default (recording: mask_dtmf defaults to true) are pre-filled first, so
// keys the file leaves out keep their defaults.
func decodeConfig(b []byte, c *Config) error {
	if c.Recording == (recorder.Config{}) {
		c.Recording = recorder.Defaults()
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // empty file: all defaults
		}
		msg := err.Error()
		msg = yamlUnknown.ReplaceAllString(msg, `line $1: unknown key "$2" (in $3)`)
		msg = strings.ReplaceAll(msg, "main.Config", "top level")
		return errors.New(strings.TrimPrefix(msg, "yaml: unmarshal errors:\n  "))
	}
	return nil
}
