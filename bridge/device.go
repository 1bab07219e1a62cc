package bridge

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ErrBadConfig is wrapped by every *ConfigError.
var ErrBadConfig = errors.New("invalid config")

// ErrBadDeviceName is wrapped by errors about a device name's shape.
var ErrBadDeviceName = errors.New("bad device name")

// ConfigError names the config key that is wrong (e.g. "devices[2].recording")
// and says why. It wraps ErrBadConfig and, where there is one, a more
// specific sentinel (ErrBadRelease, ErrBadDeviceName).
type ConfigError struct {
	Key string // dotted path of the key, e.g. "cluster.release", "devices[0].name"
	Msg string // what is wrong, with the bad value quoted
	Err error  // specific cause, may be nil
}

func (e *ConfigError) Error() string { return e.Key + ": " + e.Msg }

// Unwrap returns ErrBadConfig and the specific cause.
func (e *ConfigError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrBadConfig, e.Err}
	}
	return []error{ErrBadConfig}
}

func cfgErr(key, format string, args ...any) *ConfigError {
	return &ConfigError{Key: key, Msg: fmt.Sprintf(format, args...)}
}

// underKey returns err with its key moved under prefix ("devices[2]" + "." + key).
func underKey(prefix string, err error) error {
	var ce *ConfigError
	if errors.As(err, &ce) {
		c := *ce
		c.Key = prefix + "." + c.Key
		return &c
	}
	return fmt.Errorf("%s: %w", prefix, err)
}

// Deployment values of Cluster.Deployment.
const (
	DeploymentOnPremises = "on-premises"
	DeploymentCloud      = "cloud"
)

// DefaultClusterID is the cluster id a call manager uses out of the box.
const DefaultClusterID = "StandAloneCluster"

// DefaultRelease is the emulated release when the config names none.
const DefaultRelease = "14.0(1)SU3"

// Cluster is the emulated call-manager cluster.
type Cluster struct {
	// ID is the cluster id sent in recording metadata (x-nearendclusterid).
	// Letters, digits, '.', '_', '-'; at most 50 characters. Default StandAloneCluster.
	ID string `yaml:"id" json:"id"`
	// Release is the emulated call-manager release, e.g. "14.0(1)SU3",
	// "12.5(1)SU4", "11.5.1.10000-6", "15". Default 14.0(1)SU3.
	Release string `yaml:"release" json:"release"`
	// Deployment is on-premises or cloud. Monitoring and recording work
	// only on-premises. Default on-premises.
	Deployment string `yaml:"deployment" json:"deployment"`
	// BuiltinBridgeEnable is the clusterwide service parameter "Builtin
	// Bridge Enable"; devices whose builtin_bridge is default follow it.
	// Default false, as on a freshly installed cluster.
	BuiltinBridgeEnable bool `yaml:"builtin_bridge_enable" json:"builtin_bridge_enable"`
	// DevicePackInstalled says the latest device package is installed, which
	// some releases need before the Built In Bridge field exists for some
	// Jabber device types (see devicePackTable). Default false.
	DevicePackInstalled bool `yaml:"device_pack_installed" json:"device_pack_installed"`
	// PlayRecordingTone mirrors the call manager's "Play Recording
	// Notification Tone" parameters. Must stay false: Jabber plays no tone
	// and bib never injects audio; true is a config error. Default false.
	PlayRecordingTone bool `yaml:"play_recording_tone" json:"play_recording_tone"`
	// PlayMonitoringTone mirrors "Play Monitoring Notification Tone". Must
	// stay false, as above. Default false.
	PlayMonitoringTone bool `yaml:"play_monitoring_tone" json:"play_monitoring_tone"`
}

// Defaults fills empty fields with their defaults.
func (c *Cluster) Defaults() {
	if c.ID == "" {
		c.ID = DefaultClusterID
	}
	if c.Release == "" {
		c.Release = DefaultRelease
	}
	if c.Deployment == "" {
		c.Deployment = DeploymentOnPremises
	}
}

// Validate checks every field; keys in errors are relative ("release").
// Call Defaults first.
func (c *Cluster) Validate() error {
	if c.ID == "" || len(c.ID) > 50 || !cfgAll(c.ID, cfgToken) {
		return cfgErr("id", "%q is not a cluster id (1 to 50 letters, digits, '.', '_' or '-')", c.ID)
	}
	if _, err := ParseRelease("release", c.Release); err != nil {
		return &ConfigError{Key: "release", Msg: fmt.Sprintf("%q is not a call-manager release (want a shape like 9.1(2), 12.5(1)SU4, 14SU3 or 11.5.1.10000-6)", c.Release), Err: err}
	}
	switch c.Deployment {
	case DeploymentOnPremises, DeploymentCloud:
	default:
		return cfgErr("deployment", "%q is not one of on-premises, cloud", c.Deployment)
	}
	if c.PlayRecordingTone {
		return cfgErr("play_recording_tone", "true is not supported: Jabber clients play no recording notification tone and bib never injects audio into a call; set it to false")
	}
	if c.PlayMonitoringTone {
		return cfgErr("play_monitoring_tone", "true is not supported: Jabber clients play no monitoring notification tone and bib never injects audio into a call; set it to false")
	}
	return nil
}

// ClientType is the kind of endpoint a device name stands for.
type ClientType string

const (
	ClientDesktop ClientType = "CSF" // Jabber for Windows or Mac
	ClientIPhone  ClientType = "TCT" // Jabber for iPhone
	ClientAndroid ClientType = "BOT" // Jabber for Android
	ClientTablet  ClientType = "TAB" // Jabber for tablets (iPad, Android)
	ClientPhone   ClientType = "SEP" // hardware IP phone (SEP + MAC address)
)

// Describe names the client in words, e.g. "Jabber for iPhone (TCT)".
func (t ClientType) Describe() string {
	switch t {
	case ClientDesktop:
		return "Jabber desktop (CSF)"
	case ClientIPhone:
		return "Jabber for iPhone (TCT)"
	case ClientAndroid:
		return "Jabber for Android (BOT)"
	case ClientTablet:
		return "Jabber for tablets (TAB)"
	case ClientPhone:
		return "hardware phone (SEP)"
	}
	return "unknown device type"
}

// ClientTypes lists every client type in a fixed order.
var ClientTypes = []ClientType{ClientDesktop, ClientIPhone, ClientAndroid, ClientTablet, ClientPhone}

// maxDeviceName is the call manager's device-name limit for these types
// (PROTOCOL.md section 5).
const maxDeviceName = 15

// ClientTypeOf validates a device name and returns its client type.
// Rules (PROTOCOL.md section 5, from the client's feature guide):
//   - CSF + letters and digits, at most 15 characters in total;
//   - TCT, BOT, TAB + uppercase A-Z, 0-9, '.', '_', '-', at most 15 in total;
//   - SEP + exactly 12 hex digits (the MAC address).
//
// Errors wrap ErrBadDeviceName and quote the name.
func ClientTypeOf(name string) (ClientType, error) {
	bad := func(why string) (ClientType, error) {
		return "", fmt.Errorf("%w %q: %s", ErrBadDeviceName, name, why)
	}
	if len(name) < 4 {
		return bad("want CSF, TCT, BOT, TAB or SEP followed by at least one character")
	}
	prefix, rest := ClientType(name[:3]), name[3:]
	switch prefix {
	case ClientPhone:
		if len(rest) != 12 || !cfgAll(rest, cfgHex) {
			return bad("a hardware phone's name is SEP followed by exactly 12 hex digits (its MAC address)")
		}
		return prefix, nil
	case ClientDesktop:
		if len(name) > maxDeviceName {
			return bad("at most 15 characters")
		}
		if !cfgAll(rest, cfgAlnum) {
			return bad("after CSF only letters and digits are allowed")
		}
		return prefix, nil
	case ClientIPhone, ClientAndroid, ClientTablet:
		if len(name) > maxDeviceName {
			return bad("at most 15 characters")
		}
		if !cfgAll(rest, cfgMobileName) {
			return bad("after " + string(prefix) + " only uppercase A-Z, 0-9, '.', '_' and '-' are allowed")
		}
		return prefix, nil
	}
	return bad("the name must start with CSF, TCT, BOT, TAB or SEP (uppercase)")
}

// Built In Bridge settings of Device.BuiltinBridge.
const (
	BIBOn      = "on"
	BIBOff     = "off"
	BIBDefault = "default"
)

// Recording options of Device.Recording (the line's recording option).
const (
	RecordingDisabled  = "disabled"
	RecordingAutomatic = "automatic"
	RecordingSelective = "selective"
)

// Device is one configured agent device: a Jabber client or a phone whose
// Built-in Bridge bib emulates.
type Device struct {
	// Name is the device name: CSF..., TCT..., BOT..., TAB... (at most 15
	// characters) or SEP + 12 hex digits. It gives the client type.
	// Required; unique (case-insensitive).
	Name string `yaml:"name" json:"name"`
	// Line is the device's directory number (digits, optional leading '+',
	// at most 24 characters). Required; unique.
	Line string `yaml:"line" json:"line"`
	// User is the owner's user id (letters, digits, '.', '_', '-', '@').
	// Optional.
	User string `yaml:"user" json:"user,omitempty"`
	// BuiltinBridge is the device's Built In Bridge setting: on, off or
	// default (follow cluster.builtin_bridge_enable). Default default.
	BuiltinBridge string `yaml:"builtin_bridge" json:"builtin_bridge"`
	// Privacy blocks monitoring of the device when true. Default false.
	Privacy bool `yaml:"privacy" json:"privacy"`
	// Recording is the line's recording option: disabled, automatic (every
	// call) or selective (started through the API). Default disabled.
	Recording string `yaml:"recording" json:"recording"`
	// RecordingProfile names the recording profile (where forks go).
	// Empty means the default profile. Optional.
	RecordingProfile string `yaml:"recording_profile" json:"recording_profile,omitempty"`
	// Monitoring lets supervisors whose monitors include this line listen
	// to its calls. Default false.
	Monitoring bool `yaml:"monitoring" json:"monitoring"`
	// Password is the SIP digest password the device registers with. At
	// most one of password and ha1. Optional.
	Password string `yaml:"password" json:"-"`
	// HA1 is the precomputed digest HA1 (32 hex digits for MD5, 64 for
	// SHA-256) instead of a password. Optional.
	HA1 string `yaml:"ha1" json:"-"`
}

// ClientType returns the client type given by the name's prefix, or "" when
// the name is not valid.
func (d Device) ClientType() ClientType {
	t, _ := ClientTypeOf(d.Name)
	return t
}

// Defaults fills empty fields with their defaults and lowercases the
// enumerated values (the call manager spells them On/Off/Default).
func (d *Device) Defaults() {
	d.BuiltinBridge = strings.ToLower(strings.TrimSpace(d.BuiltinBridge))
	if d.BuiltinBridge == "" {
		d.BuiltinBridge = BIBDefault
	}
	d.Recording = strings.ToLower(strings.TrimSpace(d.Recording))
	if d.Recording == "" {
		d.Recording = RecordingDisabled
	}
}

// Validate checks every field; keys in errors are relative ("name").
// Call Defaults first.
func (d *Device) Validate() error {
	if _, err := ClientTypeOf(d.Name); err != nil {
		return &ConfigError{Key: "name", Msg: err.Error(), Err: ErrBadDeviceName}
	}
	if !cfgValidLine(d.Line) {
		return cfgErr("line", "%q is not a directory number for device %s (digits with an optional leading '+', at most 24)", d.Line, d.Name)
	}
	if len(d.User) > 128 || !cfgAll(d.User, cfgUser) {
		return cfgErr("user", "%q is not a user id for device %s (letters, digits, '.', '_', '-', '@'; at most 128)", d.User, d.Name)
	}
	switch d.BuiltinBridge {
	case BIBOn, BIBOff, BIBDefault:
	default:
		return cfgErr("builtin_bridge", "%q is not one of on, off, default (device %s)", d.BuiltinBridge, d.Name)
	}
	switch d.Recording {
	case RecordingDisabled, RecordingAutomatic, RecordingSelective:
	default:
		return cfgErr("recording", "%q is not one of disabled, automatic, selective (device %s)", d.Recording, d.Name)
	}
	if len(d.RecordingProfile) > 50 || !cfgAll(d.RecordingProfile, cfgToken) {
		return cfgErr("recording_profile", "%q is not a profile name for device %s (letters, digits, '.', '_', '-'; at most 50)", d.RecordingProfile, d.Name)
	}
	if d.Password != "" && d.HA1 != "" {
		return cfgErr("ha1", "set at most one of password and ha1 (device %s)", d.Name)
	}
	if err := cfgValidPassword(d.Password); err != nil {
		return cfgErr("password", "%s (device %s)", err, d.Name)
	}
	if d.HA1 != "" && !cfgValidHA1(d.HA1) {
		return cfgErr("ha1", "want 32 (MD5) or 64 (SHA-256) hex digits for device %s, got %d characters", d.Name, len(d.HA1))
	}
	return nil
}

// bibOn reports the effective Built In Bridge: on, or default with the
// cluster parameter on.
func (d Device) bibOn(c *Cluster) bool {
	switch strings.ToLower(d.BuiltinBridge) {
	case BIBOn:
		return true
	case BIBDefault, "":
		return c.BuiltinBridgeEnable
	}
	return false
}

// Supervisor is a user who may listen to agents' calls.
type Supervisor struct {
	// User is the supervisor's login (letters, digits, '.', '_', '-', '@').
	// Required; unique.
	User string `yaml:"user" json:"user"`
	// Password in clear text (for SIP digest and web login). Use instead
	// of password_hash/ha1, not with them.
	Password string `yaml:"password" json:"-"`
	// PasswordHash is a bcrypt hash ($2a$/$2b$/$2y$, 60 characters) for the
	// web login. Optional.
	PasswordHash string `yaml:"password_hash" json:"-"`
	// HA1 is the precomputed SIP digest HA1 (32 or 64 hex digits). Optional.
	HA1 string `yaml:"ha1" json:"-"`
	// Monitors is the monitoring search space: the lines this supervisor
	// may listen to. Each entry is a directory number, a pattern where X
	// stands for any one digit ("2XXX"), or "*" for every line. Default
	// empty: the supervisor may listen to nobody.
	Monitors []string `yaml:"monitors" json:"monitors"`
}

// Validate checks every field; keys in errors are relative ("monitors[1]").
func (s *Supervisor) Validate() error {
	if s.User == "" || len(s.User) > 128 || !cfgAll(s.User, cfgUser) {
		return cfgErr("user", "%q is not a user id (1 to 128 letters, digits, '.', '_', '-', '@')", s.User)
	}
	if s.Password == "" && s.PasswordHash == "" && s.HA1 == "" {
		return cfgErr("password", "supervisor %s needs a credential: password, password_hash or ha1", s.User)
	}
	if s.Password != "" && (s.PasswordHash != "" || s.HA1 != "") {
		return cfgErr("password", "supervisor %s: set password alone, or password_hash and/or ha1 instead of it", s.User)
	}
	if err := cfgValidPassword(s.Password); err != nil {
		return cfgErr("password", "%s (supervisor %s)", err, s.User)
	}
	if s.PasswordHash != "" && !cfgValidBcrypt(s.PasswordHash) {
		return cfgErr("password_hash", "not a bcrypt hash ($2a$, $2b$ or $2y$, 60 characters) for supervisor %s", s.User)
	}
	if s.HA1 != "" && !cfgValidHA1(s.HA1) {
		return cfgErr("ha1", "want 32 (MD5) or 64 (SHA-256) hex digits for supervisor %s, got %d characters", s.User, len(s.HA1))
	}
	for i, m := range s.Monitors {
		if !cfgValidMonitor(m) {
			return cfgErr(fmt.Sprintf("monitors[%d]", i), "%q is not a line, a pattern of digits and X, or * (supervisor %s)", m, s.User)
		}
	}
	return nil
}

// MayMonitor reports whether line is in the supervisor's monitoring search
// space.
func (s Supervisor) MayMonitor(line string) bool {
	return slices.ContainsFunc(s.Monitors, func(p string) bool { return matchMonitorLine(p, line) })
}

// matchMonitorLine matches a directory number against a monitors entry: "*"
// matches every line, X (or x) any one digit, anything else itself.
func matchMonitorLine(pattern, line string) bool {
	if pattern == "*" {
		return line != ""
	}
	if len(pattern) != len(line) {
		return false
	}
	for i := 0; i < len(pattern); i++ {
		p, c := pattern[i], line[i]
		if p == 'X' || p == 'x' {
			if c < '0' || c > '9' {
				return false
			}
			continue
		}
		if p != c {
			return false
		}
	}
	return true
}

func cfgValidMonitor(p string) bool {
	if p == "*" {
		return true
	}
	body := strings.TrimPrefix(p, "+")
	return body != "" && len(p) <= 24 && cfgAll(body, func(c byte) bool { return cfgDigit(c) || c == 'X' || c == 'x' })
}

func cfgValidLine(s string) bool {
	body := strings.TrimPrefix(s, "+")
	return body != "" && len(s) <= 24 && cfgAll(body, cfgDigit)
}

func cfgValidPassword(p string) error {
	if len(p) > 128 {
		return errors.New("longer than 128 characters")
	}
	for i := 0; i < len(p); i++ {
		if p[i] < 0x20 || p[i] == 0x7f {
			return errors.New("contains a control character")
		}
	}
	return nil
}

func cfgValidHA1(h string) bool { return (len(h) == 32 || len(h) == 64) && cfgAll(h, cfgHex) }

func cfgValidBcrypt(h string) bool {
	if len(h) != 60 {
		return false
	}
	switch h[:4] {
	case "$2a$", "$2b$", "$2y$":
	default:
		return false
	}
	return cfgDigit(h[4]) && cfgDigit(h[5]) && h[6] == '$' && cfgAll(h[7:], func(c byte) bool { return cfgAlnum(c) || c == '.' || c == '/' })
}

func cfgAll(s string, ok func(byte) bool) bool {
	for i := 0; i < len(s); i++ {
		if !ok(s[i]) {
			return false
		}
	}
	return true
}

func cfgDigit(c byte) bool { return c >= '0' && c <= '9' }
func cfgUpper(c byte) bool { return c >= 'A' && c <= 'Z' }
func cfgAlnum(c byte) bool { return cfgDigit(c) || cfgUpper(c) || (c >= 'a' && c <= 'z') }
func cfgHex(c byte) bool {
	return cfgDigit(c) || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f')
}
func cfgMobileName(c byte) bool {
	return cfgDigit(c) || cfgUpper(c) || c == '.' || c == '_' || c == '-'
}
func cfgToken(c byte) bool { return cfgAlnum(c) || c == '.' || c == '_' || c == '-' }
func cfgUser(c byte) bool  { return cfgToken(c) || c == '@' }
