package bridge

import (
	"fmt"
	"strings"
)

// Action is something a supervisor, recorder or API client asks the
// Built-in Bridge to do with an agent's call.
type Action string

const (
	ActionMonitor Action = "monitor" // silent monitoring: one mixed stream to a supervisor
	ActionRecord  Action = "record"  // recording forks (near end and far end)
	ActionBarge   Action = "barge"   // supervisor joins and talks to both parties: never allowed
	ActionWhisper Action = "whisper" // supervisor talks to the agent only (coaching): never allowed
	ActionTone    Action = "tone"    // a monitoring or recording notification tone: never allowed
)

// Actions lists every action in the order capabilities are reported.
var Actions = []Action{ActionMonitor, ActionRecord, ActionBarge, ActionWhisper, ActionTone}

// ParseAction maps a name to an Action; ok is false for other names.
func ParseAction(s string) (a Action, ok bool) {
	for _, a := range Actions {
		if string(a) == s {
			return a, true
		}
	}
	return "", false
}

// noun names the action in a sentence ("Recording ...").
func (a Action) noun() string {
	switch a {
	case ActionMonitor:
		return "monitoring"
	case ActionRecord:
		return "recording"
	}
	return string(a)
}

// Machine codes of refusals (Verdict.Code). They are stable: clients match
// on them; Reason is for people.
const (
	CodeCloudDeployment     = "cloud_deployment"
	CodeReleaseTooOld       = "release_too_old"
	CodeDevicePackRequired  = "device_pack_required"
	CodeBuiltinBridgeOff    = "builtin_bridge_off"
	CodePrivacyOn           = "privacy_on"
	CodeMonitoringDisabled  = "monitoring_disabled"
	CodeRecordingDisabled   = "recording_disabled"
	CodeBargeNotSupported   = "barge_not_supported"
	CodeWhisperNotSupported = "whisper_not_supported"
	CodeToneNotSupported    = "tone_not_supported"
	CodeUnknownDevice       = "unknown_device"
	CodeInvalidDevice       = "invalid_device"
	CodeUnknownAction       = "unknown_action"
)

// Verdict is the gate's answer for one action on one device. A refusal
// carries a stable Code and a one-line Reason saying why and what to do;
// callers pass both on (SIP 403 with Warning: 399 bib "Reason", or HTTP 403
// with {"error": Code, "reason": Reason}).
type Verdict struct {
	Action  Action `json:"action"`
	Allowed bool   `json:"allowed"`
	Code    string `json:"error,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

func allow(a Action) Verdict { return Verdict{Action: a, Allowed: true} }

func deny(a Action, code, reason string) Verdict {
	return Verdict{Action: a, Code: code, Reason: reason}
}

// UnknownDeviceVerdict is the refusal for a device or line that is not
// configured.
func UnknownDeviceVerdict(a Action, name string) Verdict {
	return deny(a, CodeUnknownDevice, fmt.Sprintf("No device or line %q is configured, so bib cannot %s its calls; add it under devices.", name, a))
}

// relKey is a major.minor release boundary.
type relKey struct{ major, minor int }

func (k relKey) String() string { return fmt.Sprintf("%d.%d", k.major, k.minor) }

// minReleaseTable: the oldest call-manager release on which each client type
// can be monitored or recorded through its Built-in Bridge.
var minReleaseTable = []struct {
	client ClientType
	action Action
	min    relKey
}{
	// Client's feature guide (PROTOCOL.md section 5): Jabber desktop (CSF)
	// needs release 9.x or later.
	{ClientDesktop, ActionMonitor, relKey{9, 0}},
	{ClientDesktop, ActionRecord, relKey{9, 0}},
	// Client's feature guide (PROTOCOL.md section 5): Jabber for iPhone/iPad
	// (TCT, TAB) and for Android (BOT, TAB) need release 11.0 or later.
	{ClientIPhone, ActionMonitor, relKey{11, 0}},
	{ClientIPhone, ActionRecord, relKey{11, 0}},
	{ClientAndroid, ActionMonitor, relKey{11, 0}},
	{ClientAndroid, ActionRecord, relKey{11, 0}},
	{ClientTablet, ActionMonitor, relKey{11, 0}},
	{ClientTablet, ActionRecord, relKey{11, 0}},
	// Hardware phones: silent recording through the phone's bridge since
	// release 6.0 (PROTOCOL.md section 5, history); silent monitoring
	// arrived with the same release (the rule; the call manager's
	// features guide describes both in one chapter).
	{ClientPhone, ActionMonitor, relKey{6, 0}},
	{ClientPhone, ActionRecord, relKey{6, 0}},
}

func minRelease(t ClientType, a Action) (relKey, bool) {
	for _, row := range minReleaseTable {
		if row.client == t && row.action == a {
			return row.min, true
		}
	}
	return relKey{}, false
}

// devicePackRow says whether, for a client type and a range of releases
// [from, until), the device page shows the Built In Bridge field only once a
// device package is installed. until{0,0} means no upper bound.
type devicePackRow struct {
	client    ClientType
	from      relKey
	until     relKey
	needsPack bool
}

// devicePackTable says when the Built In Bridge field needs a device package.
//
// What is documented: the client's feature guide says that on some
// call-manager releases the Built In Bridge field appears on the device page
// of Jabber device types only after a device package is installed, and that
// without the field the device cannot be monitored or recorded (PROTOCOL.md
// section 5). It does not list which releases, per device type, in public
// detail.
//
// What is assumed here (change the rows when better facts are known): the
// mobile and tablet types (TCT, BOT, TAB), first supported on 11.0, needed a
// device package on the 11.x releases (11.0 and 11.5) and ship the field in
// the base install from 12.0 on; the desktop type (CSF), supported since 9.0,
// has the field without a package; hardware phones (SEP) always have it.
// A client type and release that match no row need no package.
var devicePackTable = []devicePackRow{
	{ClientDesktop, relKey{9, 0}, relKey{}, false},     // assumption
	{ClientIPhone, relKey{11, 0}, relKey{12, 0}, true}, // assumption
	{ClientIPhone, relKey{12, 0}, relKey{}, false},     // assumption
	{ClientAndroid, relKey{11, 0}, relKey{12, 0}, true},
	{ClientAndroid, relKey{12, 0}, relKey{}, false},
	{ClientTablet, relKey{11, 0}, relKey{12, 0}, true},
	{ClientTablet, relKey{12, 0}, relKey{}, false},
	{ClientPhone, relKey{6, 0}, relKey{}, false}, // the field predates the bridge features
}

// needsDevicePack looks a client type and release up in devicePackTable.
func needsDevicePack(t ClientType, r Release) bool {
	for _, row := range devicePackTable {
		if row.client != t || !r.AtLeast(row.from.major, row.from.minor) {
			continue
		}
		if row.until != (relKey{}) && r.AtLeast(row.until.major, row.until.minor) {
			continue
		}
		return row.needsPack
	}
	return false
}

// gateCtx is what a rule looks at.
type gateCtx struct {
	cluster *Cluster
	release Release
	dev     Device
	client  ClientType
	action  Action
}

// gateRule is one row of the gate. The first rule that applies to the action
// and denies decides the verdict.
type gateRule struct {
	code    string
	actions []Action
	// config marks a rule about this device's bib settings (is monitoring or
	// recording switched on) rather than about what the emulated cluster
	// can do; Policy.Gate skips these rules, Policy.Check applies them.
	config bool
	deny   func(g gateCtx) (reason string, denied bool)
}

// listenActions are the actions the version gate decides.
var listenActions = []Action{ActionMonitor, ActionRecord}

// gateRules is the version gate and the listen-only policy, in the order
// they are checked.
var gateRules = []gateRule{
	// PROTOCOL.md section 3: bib is listen-only; barge would put a
	// supervisor's audio into the call. Refused whatever the config says.
	{code: CodeBargeNotSupported, actions: []Action{ActionBarge}, deny: func(gateCtx) (string, bool) {
		return "Barge is not supported: bib is listen-only and never sends a supervisor's audio into a call; use silent monitoring.", true
	}},
	// PROTOCOL.md section 3: whisper (coaching) is refused in any form.
	{code: CodeWhisperNotSupported, actions: []Action{ActionWhisper}, deny: func(gateCtx) (string, bool) {
		return "Whisper coaching is not supported: bib is listen-only, so a supervisor can listen to the agent but never talk to them; use silent monitoring.", true
	}},
	// PROTOCOL.md section 4: Jabber supports no monitoring or recording
	// notification tone and bib never injects audio into a call.
	{code: CodeToneNotSupported, actions: []Action{ActionTone}, deny: func(gateCtx) (string, bool) {
		return "Monitoring and recording notification tones are not supported: Jabber clients play none and bib never injects audio into a call.", true
	}},
	// Only reachable with a device that skipped validation.
	{code: CodeInvalidDevice, actions: listenActions, deny: func(g gateCtx) (string, bool) {
		if g.client != "" {
			return "", false
		}
		return fmt.Sprintf("Device name %q is not a CSF, TCT, BOT, TAB or SEP device name, so bib cannot tell its client type; fix the name.", g.dev.Name), true
	}},
	// PROTOCOL.md section 5 (client's feature guide): monitoring and
	// recording are for on-premises deployments only.
	{code: CodeCloudDeployment, actions: listenActions, deny: func(g gateCtx) (string, bool) {
		if g.cluster.Deployment != DeploymentCloud {
			return "", false
		}
		return fmt.Sprintf("%s works only in on-premises deployments and this cluster is a cloud deployment; set cluster.deployment to on-premises.", capitalize(g.action.noun())), true
	}},
	// PROTOCOL.md section 5: minimum release per client type (minReleaseTable).
	{code: CodeReleaseTooOld, actions: listenActions, deny: func(g gateCtx) (string, bool) {
		floor, ok := minRelease(g.client, g.action)
		if !ok || g.release.AtLeast(floor.major, floor.minor) {
			return "", false
		}
		return fmt.Sprintf("%s of %s devices needs call-manager release %s or later, but the cluster runs %s; upgrade the cluster.",
			capitalize(g.action.noun()), g.client.Describe(), floor, g.release.Raw), true
	}},
	// PROTOCOL.md section 5: without the Built In Bridge field the device
	// cannot be monitored or recorded; some releases need a device package
	// for it (devicePackTable, partly assumed).
	{code: CodeDevicePackRequired, actions: listenActions, deny: func(g gateCtx) (string, bool) {
		if g.cluster.DevicePackInstalled || !needsDevicePack(g.client, g.release) {
			return "", false
		}
		return fmt.Sprintf("On release %s the Built In Bridge field for %s devices appears only after a device package is installed, so %s cannot use %s; install the latest device package (then set cluster.device_pack_installed: true).",
			g.release.Raw, g.client.Describe(), g.dev.Name, g.action.noun()), true
	}},
	// PROTOCOL.md section 5: Built In Bridge On / Off / Default, Default
	// following the cluster parameter "Builtin Bridge Enable".
	{code: CodeBuiltinBridgeOff, actions: listenActions, deny: func(g gateCtx) (string, bool) {
		if g.dev.bibOn(g.cluster) {
			return "", false
		}
		if strings.EqualFold(g.dev.BuiltinBridge, BIBOff) {
			return fmt.Sprintf("Built In Bridge is off on device %s, so it cannot use %s; set its builtin_bridge to on.", g.dev.Name, g.action.noun()), true
		}
		return fmt.Sprintf("Built In Bridge on device %s is default and the cluster parameter Builtin Bridge Enable is off, so it cannot use %s; set the device's builtin_bridge to on or cluster.builtin_bridge_enable to true.", g.dev.Name, g.action.noun()), true
	}},
	// PROTOCOL.md section 5: privacy must be off for monitoring.
	{code: CodePrivacyOn, actions: []Action{ActionMonitor}, deny: func(g gateCtx) (string, bool) {
		if !g.dev.Privacy {
			return "", false
		}
		return fmt.Sprintf("Privacy is on for device %s, which blocks monitoring; turn its privacy off.", g.dev.Name), true
	}},
	// bib config: monitoring is enabled per device.
	{code: CodeMonitoringDisabled, actions: []Action{ActionMonitor}, config: true, deny: func(g gateCtx) (string, bool) {
		if g.dev.Monitoring {
			return "", false
		}
		return fmt.Sprintf("Monitoring is not enabled for device %s; set its monitoring to true.", g.dev.Name), true
	}},
	// PROTOCOL.md section 1: the line's recording option
	// (disabled / automatic / selective).
	{code: CodeRecordingDisabled, actions: []Action{ActionRecord}, config: true, deny: func(g gateCtx) (string, bool) {
		if g.dev.Recording != RecordingDisabled && g.dev.Recording != "" {
			return "", false
		}
		return fmt.Sprintf("Recording is disabled for device %s; set its recording to automatic or selective.", g.dev.Name), true
	}},
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// evaluate runs the rule table. With withConfig false it answers only what
// the emulated cluster allows (the version gate and listen-only policy).
func evaluate(c *Cluster, r Release, dev Device, a Action, withConfig bool) Verdict {
	if _, ok := ParseAction(string(a)); !ok {
		return deny(a, CodeUnknownAction, fmt.Sprintf("Unknown action %q; bib knows monitor and record (and refuses barge, whisper and tone).", a))
	}
	g := gateCtx{cluster: c, release: r, dev: dev, client: dev.ClientType(), action: a}
	for i := range gateRules {
		rule := &gateRules[i]
		if rule.config && !withConfig {
			continue
		}
		if !containsAction(rule.actions, a) {
			continue
		}
		if reason, denied := rule.deny(g); denied {
			return deny(a, rule.code, reason)
		}
	}
	return allow(a)
}

func containsAction(as []Action, a Action) bool {
	for _, x := range as {
		if x == a {
			return true
		}
	}
	return false
}

// Policy is the validated config of the emulated cluster, its devices and
// supervisors, and answers gate questions about them. It is immutable after
// NewPolicy and safe for concurrent use.
type Policy struct {
	cluster     Cluster
	release     Release
	devices     []Device
	byName      map[string]int // upper-cased name -> index in devices
	byLine      map[string]int
	supervisors []Supervisor
	byUser      map[string]int
	warnings    []string
}

// NewPolicy applies defaults, validates everything and builds the lookup
// tables. Errors are *ConfigError values naming the key, e.g.
// "devices[2].recording", and are returned for: invalid fields, duplicate
// device names or lines, duplicate supervisor users, tone settings, and a
// device whose recording is automatic while the gate denies recording (it
// could never work). Denials that only matter when someone asks (selective
// recording, monitoring) are collected in Warnings instead.
func NewPolicy(c Cluster, devices []Device, supervisors []Supervisor) (*Policy, error) {
	c.Defaults()
	if err := c.Validate(); err != nil {
		return nil, underKey("cluster", err)
	}
	rel, err := ParseRelease("cluster.release", c.Release)
	if err != nil {
		return nil, &ConfigError{Key: "cluster.release", Msg: err.Error(), Err: err}
	}
	p := &Policy{
		cluster:     c,
		release:     rel,
		devices:     make([]Device, len(devices)),
		byName:      make(map[string]int, len(devices)),
		byLine:      make(map[string]int, len(devices)),
		supervisors: make([]Supervisor, len(supervisors)),
		byUser:      make(map[string]int, len(supervisors)),
	}
	for i, d := range devices {
		key := fmt.Sprintf("devices[%d]", i)
		d.Defaults()
		if err := d.Validate(); err != nil {
			return nil, underKey(key, err)
		}
		name := strings.ToUpper(d.Name)
		if j, dup := p.byName[name]; dup {
			return nil, cfgErr(key+".name", "%q is already the name of devices[%d]", d.Name, j)
		}
		if j, dup := p.byLine[d.Line]; dup {
			return nil, cfgErr(key+".line", "%q is already the line of devices[%d] (%s); shared lines are not supported", d.Line, j, p.devices[j].Name)
		}
		p.byName[name] = i
		p.byLine[d.Line] = i
		p.devices[i] = d
		if d.Recording == RecordingAutomatic {
			if v := p.Gate(d, ActionRecord); !v.Allowed {
				return nil, cfgErr(key+".recording", "automatic recording of device %s can never work: %s", d.Name, v.Reason)
			}
		}
		var denied []string
		if d.Recording == RecordingSelective {
			if v := p.Gate(d, ActionRecord); !v.Allowed {
				denied = append(denied, fmt.Sprintf("selective recording denied (%s): %s", v.Code, v.Reason))
			}
		}
		if d.Monitoring {
			if v := p.Gate(d, ActionMonitor); !v.Allowed {
				denied = append(denied, fmt.Sprintf("monitoring denied (%s): %s", v.Code, v.Reason))
			}
		}
		if len(denied) > 0 {
			p.warnings = append(p.warnings, fmt.Sprintf("device %s (%s): %s", d.Name, key, strings.Join(denied, " ")))
		}
	}
	for i, s := range supervisors {
		key := fmt.Sprintf("supervisors[%d]", i)
		s.Monitors = append([]string(nil), s.Monitors...)
		if err := s.Validate(); err != nil {
			return nil, underKey(key, err)
		}
		if j, dup := p.byUser[s.User]; dup {
			return nil, cfgErr(key+".user", "%q is already the user of supervisors[%d]", s.User, j)
		}
		p.byUser[s.User] = i
		p.supervisors[i] = s
		if len(s.Monitors) == 0 {
			p.warnings = append(p.warnings, fmt.Sprintf("supervisor %s (%s): monitors is empty, so this supervisor may listen to nobody", s.User, key))
			continue
		}
		for j, m := range s.Monitors {
			if !p.anyLine(m) {
				p.warnings = append(p.warnings, fmt.Sprintf("supervisor %s (%s.monitors[%d]): %q matches no configured device line", s.User, key, j, m))
			}
		}
	}
	return p, nil
}

func (p *Policy) anyLine(pattern string) bool {
	for _, d := range p.devices {
		if matchMonitorLine(pattern, d.Line) {
			return true
		}
	}
	return false
}

// Cluster returns the cluster config with defaults applied.
func (p *Policy) Cluster() Cluster { return p.cluster }

// Release returns the parsed cluster release.
func (p *Policy) Release() Release { return p.release }

// Gate answers whether the emulated cluster lets dev do a: the version gate
// and the listen-only policy, ignoring whether the device's own monitoring
// or recording option is switched on. Pure.
func (p *Policy) Gate(dev Device, a Action) Verdict {
	return evaluate(&p.cluster, p.release, dev, a, false)
}

// Check is Gate plus the device's own options (monitoring: true, recording
// not disabled): the verdict for an actual request. Pure.
func (p *Policy) Check(dev Device, a Action) Verdict {
	return evaluate(&p.cluster, p.release, dev, a, true)
}

// CheckLine is Check for the device on a line (or with a device name);
// unknown ones get an unknown_device refusal.
func (p *Policy) CheckLine(party string, a Action) Verdict {
	d, ok := p.lookup(party)
	if !ok {
		return UnknownDeviceVerdict(a, party)
	}
	return p.Check(d, a)
}

// Capabilities returns the verdict of every action (in Actions order) for
// the named device; ok is false when no such device is configured.
func (p *Policy) Capabilities(name string) ([]Verdict, bool) {
	d, ok := p.DeviceByName(name)
	if !ok {
		return nil, false
	}
	return p.capabilities(d), true
}

func (p *Policy) capabilities(d Device) []Verdict {
	vs := make([]Verdict, len(Actions))
	for i, a := range Actions {
		vs[i] = p.Check(d, a)
	}
	return vs
}

// DeviceByName finds a device by name (case-insensitive, as the call
// manager treats device names).
func (p *Policy) DeviceByName(name string) (Device, bool) {
	i, ok := p.byName[strings.ToUpper(name)]
	if !ok {
		return Device{}, false
	}
	return p.devices[i], true
}

// DeviceByLine finds the device on a directory number.
func (p *Policy) DeviceByLine(line string) (Device, bool) {
	i, ok := p.byLine[line]
	if !ok {
		return Device{}, false
	}
	return p.devices[i], true
}

// lookup resolves a SIP user part that is either a device name or a line.
func (p *Policy) lookup(party string) (Device, bool) {
	if d, ok := p.DeviceByName(party); ok {
		return d, true
	}
	return p.DeviceByLine(party)
}

// Supervisor finds a supervisor by user (exact match).
func (p *Policy) Supervisor(user string) (Supervisor, bool) {
	i, ok := p.byUser[user]
	if !ok {
		return Supervisor{}, false
	}
	return p.supervisors[i], true
}

// Devices returns a copy of the configured devices, defaults applied, in
// config order.
func (p *Policy) Devices() []Device { return append([]Device(nil), p.devices...) }

// Warnings returns the policy denials and oddities to log once at start-up,
// one line per device or supervisor.
func (p *Policy) Warnings() []string { return append([]string(nil), p.warnings...) }

// Near-end modes of a call (Roles.Mode), written to the call record.
const (
	NearEndNone = "none" // neither party is a configured device: relay only
	NearEndA    = "a"    // the caller is the agent
	NearEndB    = "b"    // the callee is the agent
	NearEndBoth = "both" // both are agents: two independent contexts
)

// PartyRole is what the policy knows about one party of a call.
type PartyRole struct {
	Configured bool    // the party is a configured device (an agent)
	Device     Device  // zero unless Configured
	Monitor    Verdict // Check(Device, monitor); zero unless Configured
	Record     Verdict // Check(Device, record); zero unless Configured
}

// Roles says which parties of a call are near ends. When both are, each
// one's bridge applies its own policy, as two phones' bridges would.
type Roles struct {
	A, B PartyRole
	Mode string // NearEndNone, NearEndA, NearEndB or NearEndBoth
}

// Party returns the role of one side.
func (r Roles) Party(s Side) PartyRole {
	if s == SideA {
		return r.A
	}
	return r.B
}

// NearEnd resolves the two parties of a call (SIP user parts: a line or a
// device name; A is the caller) to near-end roles with their verdicts.
func (p *Policy) NearEnd(partyA, partyB string) Roles {
	var r Roles
	for _, s := range []struct {
		party string
		role  *PartyRole
	}{{partyA, &r.A}, {partyB, &r.B}} {
		d, ok := p.lookup(s.party)
		if !ok {
			continue
		}
		*s.role = PartyRole{Configured: true, Device: d, Monitor: p.Check(d, ActionMonitor), Record: p.Check(d, ActionRecord)}
	}
	switch {
	case r.A.Configured && r.B.Configured:
		r.Mode = NearEndBoth
	case r.A.Configured:
		r.Mode = NearEndA
	case r.B.Configured:
		r.Mode = NearEndB
	default:
		r.Mode = NearEndNone
	}
	return r
}

// SideGate is the gate's outcome for one near end, as stored in a call
// record (no credentials).
type SideGate struct {
	Side       string     `json:"side"` // "a" or "b"
	Device     string     `json:"device"`
	Line       string     `json:"line"`
	ClientType ClientType `json:"client_type"`
	Verdicts   []Verdict  `json:"verdicts"` // monitor, record
}

// CallGate is the part of a call record that says which policy applied.
type CallGate struct {
	NearEnd string     `json:"near_end"` // none, a, b or both
	Sides   []SideGate `json:"sides,omitempty"`
}

// Summary returns the call-record form of r.
func (r Roles) Summary() CallGate {
	g := CallGate{NearEnd: r.Mode}
	for _, s := range []Side{SideA, SideB} {
		pr := r.Party(s)
		if !pr.Configured {
			continue
		}
		g.Sides = append(g.Sides, SideGate{
			Side:       s.String(),
			Device:     pr.Device.Name,
			Line:       pr.Device.Line,
			ClientType: pr.Device.ClientType(),
			Verdicts:   []Verdict{pr.Monitor, pr.Record},
		})
	}
	return g
}
