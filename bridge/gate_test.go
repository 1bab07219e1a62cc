package bridge

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// names of one device per client type used by the matrix test.
var matrixDevices = map[ClientType]string{
	ClientDesktop: "CSFAGENT",
	ClientIPhone:  "TCTAGENT",
	ClientAndroid: "BOTAGENT",
	ClientTablet:  "TABAGENT",
	ClientPhone:   "SEP38ED18552A12",
}

// The expectations below restate the rules from PROTOCOL.md section 5 and
// the issue as literal data, independent of the rule table in gate.go.
var (
	// release string -> is it at least 9.0 / 11.0 / 6.0
	matrixReleases = []string{"8.6", "9.0", "9.1(2)", "10.5(2)", "11.0(1a)", "11.5", "12.5(1)SU4", "14", "15"}
	tooOld         = map[ClientType][]string{
		ClientDesktop: {"8.6"},
		ClientIPhone:  {"8.6", "9.0", "9.1(2)", "10.5(2)"},
		ClientAndroid: {"8.6", "9.0", "9.1(2)", "10.5(2)"},
		ClientTablet:  {"8.6", "9.0", "9.1(2)", "10.5(2)"},
		ClientPhone:   nil,
	}
	minFor = map[ClientType]string{ClientDesktop: "9.0", ClientIPhone: "11.0", ClientAndroid: "11.0", ClientTablet: "11.0", ClientPhone: "6.0"}
	// the releases (of this matrix) on which the Built In Bridge field needs
	// a device package (devicePackTable's assumption: mobile types on 11.x).
	needsPack = map[ClientType][]string{
		ClientIPhone:  {"11.0(1a)", "11.5"},
		ClientAndroid: {"11.0(1a)", "11.5"},
		ClientTablet:  {"11.0(1a)", "11.5"},
	}
)

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestGateMatrix: every client type x release x deployment x Built In Bridge
// setting x device pack x privacy, for monitor and record.
func TestGateMatrix(t *testing.T) {
	bibCases := []struct {
		name       string
		device     string
		clusterBIB bool
		effective  bool
	}{
		{"bib-on", BIBOn, false, true},
		{"bib-off", BIBOff, true, false},
		{"bib-default-cluster-on", BIBDefault, true, true},
		{"bib-default-cluster-off", BIBDefault, false, false},
	}
	n := 0
	for _, ct := range ClientTypes {
		for _, rel := range matrixReleases {
			for _, dep := range []string{DeploymentOnPremises, DeploymentCloud} {
				for _, bib := range bibCases {
					for _, pack := range []bool{false, true} {
						for _, privacy := range []bool{false, true} {
							for _, action := range []Action{ActionMonitor, ActionRecord} {
								name := fmt.Sprintf("%s/%s/%s/%s/pack=%v/privacy=%v/%s", ct, rel, dep, bib.name, pack, privacy, action)
								c := Cluster{Release: rel, Deployment: dep, BuiltinBridgeEnable: bib.clusterBIB, DevicePackInstalled: pack}
								d := Device{Name: matrixDevices[ct], Line: "1001", BuiltinBridge: bib.device, Privacy: privacy,
									Recording: RecordingSelective, Monitoring: true}
								p, err := NewPolicy(c, []Device{d}, nil)
								if err != nil {
									t.Fatalf("%s: NewPolicy: %v", name, err)
								}
								got := p.Check(d, action)

								// expected code, first failing rule in the documented order
								want := ""
								switch {
								case dep == DeploymentCloud:
									want = CodeCloudDeployment
								case contains(tooOld[ct], rel):
									want = CodeReleaseTooOld
								case contains(needsPack[ct], rel) && !pack:
									want = CodeDevicePackRequired
								case !bib.effective:
									want = CodeBuiltinBridgeOff
								case action == ActionMonitor && privacy:
									want = CodePrivacyOn
								}
								checkVerdict(t, name, got, action, want)
								checkReason(t, name, got, rel, minFor[ct], d.Name)
								n++
							}
						}
					}
				}
			}
		}
	}
	if n != 5*9*2*4*2*2*2 {
		t.Fatalf("ran %d cases", n)
	}
}

func checkVerdict(t *testing.T, name string, got Verdict, a Action, wantCode string) {
	t.Helper()
	if got.Action != a {
		t.Errorf("%s: action %q, want %q", name, got.Action, a)
	}
	if wantCode == "" {
		if !got.Allowed || got.Code != "" || got.Reason != "" {
			t.Errorf("%s: got %+v, want allowed", name, got)
		}
		return
	}
	if got.Allowed || got.Code != wantCode {
		t.Errorf("%s: got %+v, want denied with %s", name, got, wantCode)
	}
}

// checkReason: a refusal is one line, one sentence-like text that says what
// to do, with the facts that matter for its code.
func checkReason(t *testing.T, name string, v Verdict, rel, min, dev string) {
	t.Helper()
	if v.Allowed {
		return
	}
	r := v.Reason
	if r == "" || strings.ContainsAny(r, "\r\n") || !strings.HasSuffix(r, ".") || strings.ToUpper(r[:1]) != r[:1] {
		t.Errorf("%s: reason %q is not one capitalised line ending in a full stop", name, r)
	}
	var must []string
	switch v.Code {
	case CodeCloudDeployment:
		must = []string{"on-premises"}
	case CodeReleaseTooOld:
		must = []string{rel, min + " or later", "upgrade"}
	case CodeDevicePackRequired:
		must = []string{rel, dev, "install the latest device package"}
	case CodeBuiltinBridgeOff:
		must = []string{dev, "Built In Bridge", "builtin_bridge"}
	case CodePrivacyOn:
		must = []string{dev, "privacy off"}
	}
	for _, m := range must {
		if !strings.Contains(r, m) {
			t.Errorf("%s: reason %q lacks %q", name, r, m)
		}
	}
}

func mustPolicy(t *testing.T, c Cluster, devs []Device, sups []Supervisor) *Policy {
	t.Helper()
	p, err := NewPolicy(c, devs, sups)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestGateReasons pins a few complete sentences, as a user reads them.
func TestGateReasons(t *testing.T) {
	tests := []struct {
		c    Cluster
		d    Device
		a    Action
		want Verdict
	}{
		{
			Cluster{Release: "10.5(2)SU3"}, Device{Name: "TCTJSMITH", Line: "1", BuiltinBridge: "on"}, ActionRecord,
			Verdict{ActionRecord, false, CodeReleaseTooOld, "Recording of Jabber for iPhone (TCT) devices needs call-manager release 11.0 or later, but the cluster runs 10.5(2)SU3; upgrade the cluster."},
		},
		{
			Cluster{Release: "11.5(1)SU2"}, Device{Name: "BOTJSMITH", Line: "1", BuiltinBridge: "on"}, ActionMonitor,
			Verdict{ActionMonitor, false, CodeDevicePackRequired, "On release 11.5(1)SU2 the Built In Bridge field for Jabber for Android (BOT) devices appears only after a device package is installed, so BOTJSMITH cannot use monitoring; install the latest device package (then set cluster.device_pack_installed: true)."},
		},
		{
			Cluster{Release: "14", Deployment: "cloud"}, Device{Name: "CSFJSMITH", Line: "1", BuiltinBridge: "on"}, ActionMonitor,
			Verdict{ActionMonitor, false, CodeCloudDeployment, "Monitoring works only in on-premises deployments and this cluster is a cloud deployment; set cluster.deployment to on-premises."},
		},
		{
			Cluster{Release: "14"}, Device{Name: "CSFJSMITH", Line: "1"}, ActionRecord,
			Verdict{ActionRecord, false, CodeBuiltinBridgeOff, "Built In Bridge on device CSFJSMITH is default and the cluster parameter Builtin Bridge Enable is off, so it cannot use recording; set the device's builtin_bridge to on or cluster.builtin_bridge_enable to true."},
		},
		{
			Cluster{Release: "14", BuiltinBridgeEnable: true}, Device{Name: "CSFJSMITH", Line: "1", BuiltinBridge: "off"}, ActionRecord,
			Verdict{ActionRecord, false, CodeBuiltinBridgeOff, "Built In Bridge is off on device CSFJSMITH, so it cannot use recording; set its builtin_bridge to on."},
		},
		{
			Cluster{Release: "14"}, Device{Name: "CSFJSMITH", Line: "1", BuiltinBridge: "on", Privacy: true}, ActionMonitor,
			Verdict{ActionMonitor, false, CodePrivacyOn, "Privacy is on for device CSFJSMITH, which blocks monitoring; turn its privacy off."},
		},
		{
			Cluster{Release: "14"}, Device{Name: "CSFJSMITH", Line: "1", BuiltinBridge: "on", Privacy: true}, ActionRecord,
			Verdict{Action: ActionRecord, Allowed: true},
		},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			tt.d.Defaults()
			p := mustPolicy(t, tt.c, nil, nil)
			if got := p.Gate(tt.d, tt.a); got != tt.want {
				t.Fatalf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// TestNeverAllowed: barge, whisper and tones are refused with their own
// reasons even on a cluster where everything else is allowed.
func TestNeverAllowed(t *testing.T) {
	c := Cluster{Release: "15", BuiltinBridgeEnable: true, DevicePackInstalled: true}
	for _, ct := range ClientTypes {
		d := Device{Name: matrixDevices[ct], Line: "1", BuiltinBridge: "on", Monitoring: true, Recording: "automatic"}
		p := mustPolicy(t, c, []Device{d}, nil)
		d, _ = p.DeviceByName(d.Name)
		for _, a := range []Action{ActionMonitor, ActionRecord} {
			if v := p.Check(d, a); !v.Allowed {
				t.Fatalf("%s %s: %+v, want allowed", ct, a, v)
			}
		}
		for a, code := range map[Action]string{
			ActionBarge:   CodeBargeNotSupported,
			ActionWhisper: CodeWhisperNotSupported,
			ActionTone:    CodeToneNotSupported,
		} {
			for _, v := range []Verdict{p.Check(d, a), p.Gate(d, a)} {
				if v.Allowed || v.Code != code || v.Reason == "" || !strings.Contains(strings.ToLower(v.Reason), string(a)) {
					t.Errorf("%s %s: %+v", ct, a, v)
				}
			}
		}
	}
	p := mustPolicy(t, c, nil, nil)
	if v := p.Check(Device{Name: "CSFX", BuiltinBridge: "on"}, "eavesdrop"); v.Allowed || v.Code != CodeUnknownAction {
		t.Errorf("unknown action: %+v", v)
	}
	if v := p.Check(Device{Name: "nonsense", BuiltinBridge: "on", Monitoring: true}, ActionMonitor); v.Allowed || v.Code != CodeInvalidDevice {
		t.Errorf("invalid device: %+v", v)
	}
}

// TestCheckDeviceOptions: Check adds the device's own switches to Gate.
func TestCheckDeviceOptions(t *testing.T) {
	p := mustPolicy(t, Cluster{Release: "14", BuiltinBridgeEnable: true}, nil, nil)
	d := Device{Name: "CSFJSMITH", Line: "1001"}
	d.Defaults()
	if v := p.Gate(d, ActionMonitor); !v.Allowed {
		t.Fatalf("Gate monitor: %+v", v)
	}
	if v := p.Check(d, ActionMonitor); v.Code != CodeMonitoringDisabled {
		t.Fatalf("Check monitor: %+v", v)
	}
	if v := p.Check(d, ActionRecord); v.Code != CodeRecordingDisabled {
		t.Fatalf("Check record: %+v", v)
	}
	d.Monitoring, d.Recording = true, RecordingSelective
	if v := p.Check(d, ActionMonitor); !v.Allowed {
		t.Fatalf("Check monitor: %+v", v)
	}
	if v := p.Check(d, ActionRecord); !v.Allowed {
		t.Fatalf("Check record: %+v", v)
	}
	// platform denials win over the device's own switches
	d.BuiltinBridge, d.Monitoring = BIBOff, false
	if v := p.Check(d, ActionMonitor); v.Code != CodeBuiltinBridgeOff {
		t.Fatalf("Check monitor: %+v", v)
	}
}

func TestNewPolicyErrors(t *testing.T) {
	good := func() []Device {
		return []Device{
			{Name: "CSFJSMITH", Line: "1001", BuiltinBridge: "on", Recording: "automatic"},
			{Name: "SEP38ED18552A12", Line: "1000"},
		}
	}
	onCluster := Cluster{Release: "12.5(1)SU4"}
	tests := []struct {
		name string
		c    Cluster
		devs func() []Device
		sups []Supervisor
		key  string
		also []string // substrings of the message
	}{
		{"bad release", Cluster{Release: "v12"}, good, nil, "cluster.release", []string{`"v12"`}},
		{"tone", Cluster{PlayRecordingTone: true}, good, nil, "cluster.play_recording_tone", []string{"tone"}},
		{"bad name", onCluster, func() []Device { d := good(); d[1].Name = "SEP1234"; return d }, nil, "devices[1].name", []string{`"SEP1234"`}},
		{"dup name", onCluster, func() []Device { d := good(); d[1].Name = "CSFjsmith"; return d }, nil, "devices[1].name", []string{"devices[0]"}},
		{"dup line", onCluster, func() []Device { d := good(); d[1].Line = "1001"; return d }, nil, "devices[1].line", []string{"devices[0]", "CSFJSMITH"}},
		{"bad recording", onCluster, func() []Device { d := good(); d[1].Recording = "on"; return d }, nil, "devices[1].recording", []string{`"on"`}},
		{"automatic but bib off", onCluster, func() []Device { d := good(); d[0].BuiltinBridge = "off"; return d }, nil,
			"devices[0].recording", []string{"CSFJSMITH", "can never work", "Built In Bridge is off"}},
		{"automatic but too old", Cluster{Release: "8.6(2)"}, good, nil,
			"devices[0].recording", []string{"9.0 or later"}},
		{"automatic in cloud", Cluster{Release: "14", Deployment: "cloud"}, good, nil,
			"devices[0].recording", []string{"on-premises"}},
		{"bad supervisor", onCluster, good, []Supervisor{{User: "a", Password: "x"}, {User: "b", Password: "y", Monitors: []string{"1?"}}},
			"supervisors[1].monitors[0]", []string{`"1?"`}},
		{"dup supervisor", onCluster, good, []Supervisor{{User: "a", Password: "x"}, {User: "a", Password: "y"}},
			"supervisors[1].user", []string{"supervisors[0]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewPolicy(tt.c, tt.devs(), tt.sups)
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Key != tt.key || !errors.Is(err, ErrBadConfig) {
				t.Fatalf("NewPolicy error = %v, want key %q", err, tt.key)
			}
			if !strings.HasPrefix(err.Error(), tt.key+": ") {
				t.Errorf("message %q does not start with the key", err)
			}
			for _, s := range tt.also {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("message %q lacks %q", err, s)
				}
			}
		})
	}
	if _, err := NewPolicy(onCluster, good(), nil); err != nil {
		t.Fatalf("good config: %v", err)
	}
}

func TestPolicyWarnings(t *testing.T) {
	p := mustPolicy(t, Cluster{Release: "11.5(1)"}, []Device{
		{Name: "TCTJSMITH", Line: "1001", BuiltinBridge: "on", Recording: "selective", Monitoring: true}, // needs device pack
		{Name: "CSFJDOE", Line: "1002", BuiltinBridge: "on", Privacy: true, Monitoring: true},            // privacy
		{Name: "CSFOK", Line: "1003", BuiltinBridge: "on", Monitoring: true, Recording: "automatic"},     // fine
		{Name: "CSFOFF", Line: "1004", BuiltinBridge: "off"},                                             // nothing asked: no warning
	}, []Supervisor{
		{User: "boss", Password: "x", Monitors: []string{"100X", "2XXX"}},
		{User: "idle", Password: "x"},
	})
	w := p.Warnings()
	if len(w) != 4 {
		t.Fatalf("warnings: %q", w)
	}
	wantParts := [][]string{
		{"TCTJSMITH", "devices[0]", "selective recording denied (device_pack_required)", "monitoring denied (device_pack_required)"},
		{"CSFJDOE", "devices[1]", "monitoring denied (privacy_on)"},
		{"boss", "supervisors[0].monitors[1]", `"2XXX"`, "matches no configured device line"},
		{"idle", "listen to nobody"},
	}
	for i, parts := range wantParts {
		for _, s := range parts {
			if !strings.Contains(w[i], s) {
				t.Errorf("warning %d %q lacks %q", i, w[i], s)
			}
		}
	}
	// Warnings returns a copy.
	w[0] = "changed"
	if p.Warnings()[0] == "changed" {
		t.Error("Warnings exposes internal state")
	}
}

func testPolicy(t *testing.T) *Policy {
	t.Helper()
	return mustPolicy(t, Cluster{Release: "14SU3", BuiltinBridgeEnable: true}, []Device{
		{Name: "CSFJSMITH", Line: "1001", User: "jsmith", Monitoring: true, Recording: "automatic", Password: "pw"},
		{Name: "TCTJDOE", Line: "1002", BuiltinBridge: "off"},
		{Name: "SEP38ED18552A12", Line: "1000", Privacy: true, Monitoring: true, Recording: "selective"},
	}, []Supervisor{{User: "boss", Password: "x", Monitors: []string{"100X"}}})
}

func TestPolicyLookups(t *testing.T) {
	p := testPolicy(t)
	if d, ok := p.DeviceByName("csfjsmith"); !ok || d.Line != "1001" || d.BuiltinBridge != BIBDefault {
		t.Fatalf("DeviceByName: %+v %v", d, ok)
	}
	if d, ok := p.DeviceByLine("1000"); !ok || d.Name != "SEP38ED18552A12" {
		t.Fatalf("DeviceByLine: %+v %v", d, ok)
	}
	if _, ok := p.DeviceByLine("9999"); ok {
		t.Fatal("DeviceByLine found a missing line")
	}
	if s, ok := p.Supervisor("boss"); !ok || !s.MayMonitor("1002") || s.MayMonitor("2000") {
		t.Fatalf("Supervisor: %+v %v", s, ok)
	}
	if _, ok := p.Supervisor("BOSS"); ok {
		t.Fatal("supervisor users are case-sensitive")
	}
	devs := p.Devices()
	if len(devs) != 3 || devs[1].Name != "TCTJDOE" {
		t.Fatalf("Devices: %+v", devs)
	}
	devs[0].Name = "changed"
	if p.Devices()[0].Name != "CSFJSMITH" {
		t.Fatal("Devices exposes internal state")
	}
	if v := p.CheckLine("1001", ActionRecord); !v.Allowed {
		t.Fatalf("CheckLine: %+v", v)
	}
	if v := p.CheckLine("5555", ActionMonitor); v.Allowed || v.Code != CodeUnknownDevice || !strings.Contains(v.Reason, `"5555"`) {
		t.Fatalf("CheckLine unknown: %+v", v)
	}
}

func TestCapabilities(t *testing.T) {
	p := testPolicy(t)
	caps, ok := p.Capabilities("SEP38ED18552A12")
	if !ok || len(caps) != len(Actions) {
		t.Fatalf("Capabilities: %+v %v", caps, ok)
	}
	want := map[Action]string{
		ActionMonitor: CodePrivacyOn, ActionRecord: "", ActionBarge: CodeBargeNotSupported,
		ActionWhisper: CodeWhisperNotSupported, ActionTone: CodeToneNotSupported,
	}
	for i, v := range caps {
		if v.Action != Actions[i] {
			t.Errorf("caps[%d] is %s, want %s", i, v.Action, Actions[i])
		}
		checkVerdict(t, string(v.Action), v, v.Action, want[v.Action])
	}
	if _, ok := p.Capabilities("CSFNOBODY"); ok {
		t.Fatal("Capabilities of unknown device")
	}
}

func TestNearEnd(t *testing.T) {
	p := testPolicy(t)
	tests := []struct {
		a, b     string
		mode     string
		devA     string
		devB     string
		recA     bool // record verdict on side A
		recB     bool
		nSummary int
	}{
		{"1001", "+4930123", NearEndA, "CSFJSMITH", "", true, false, 1},
		{"+4930123", "1001", NearEndB, "", "CSFJSMITH", false, true, 1},
		{"CSFJSMITH", "SEP38ED18552A12", NearEndBoth, "CSFJSMITH", "SEP38ED18552A12", true, true, 2},
		{"1002", "1000", NearEndBoth, "TCTJDOE", "SEP38ED18552A12", false, true, 2},
		{"555", "666", NearEndNone, "", "", false, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.a+"-"+tt.b, func(t *testing.T) {
			r := p.NearEnd(tt.a, tt.b)
			if r.Mode != tt.mode || r.A.Device.Name != tt.devA || r.B.Device.Name != tt.devB ||
				r.A.Configured != (tt.devA != "") || r.B.Configured != (tt.devB != "") {
				t.Fatalf("NearEnd = %+v", r)
			}
			if r.A.Record.Allowed != tt.recA || r.B.Record.Allowed != tt.recB {
				t.Fatalf("record verdicts A %+v B %+v", r.A.Record, r.B.Record)
			}
			if r.Party(SideA) != r.A || r.Party(SideB) != r.B {
				t.Fatal("Party(side) mismatch")
			}
			s := r.Summary()
			if s.NearEnd != tt.mode || len(s.Sides) != tt.nSummary {
				t.Fatalf("Summary = %+v", s)
			}
		})
	}
	// The call-record form carries verdicts and never credentials.
	b, err := json.Marshal(p.NearEnd("1001", "1002").Summary())
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	want := `{"near_end":"both","sides":[` +
		`{"side":"a","device":"CSFJSMITH","line":"1001","client_type":"CSF","verdicts":[{"action":"monitor","allowed":true},{"action":"record","allowed":true}]},` +
		`{"side":"b","device":"TCTJDOE","line":"1002","client_type":"TCT","verdicts":[` +
		`{"action":"monitor","allowed":false,"error":"builtin_bridge_off","reason":"Built In Bridge is off on device TCTJDOE, so it cannot use monitoring; set its builtin_bridge to on."},` +
		`{"action":"record","allowed":false,"error":"builtin_bridge_off","reason":"Built In Bridge is off on device TCTJDOE, so it cannot use recording; set its builtin_bridge to on."}]}]}`
	if got != want {
		t.Fatalf("summary JSON\n got %s\nwant %s", got, want)
	}
	if dj, _ := json.Marshal(p.Devices()[0]); strings.Contains(string(dj), "pw") {
		t.Fatalf("device JSON leaks the password: %s", dj)
	}
}

// TestDevicePackTable: the table has no overlapping rows per client type,
// so the first-match lookup cannot hide a row.
func TestDevicePackTable(t *testing.T) {
	for i, a := range devicePackTable {
		for _, b := range devicePackTable[i+1:] {
			if a.client != b.client {
				continue
			}
			aEnd, bEnd := a.until, b.until
			inf := relKey{1 << 30, 0}
			if aEnd == (relKey{}) {
				aEnd = inf
			}
			if bEnd == (relKey{}) {
				bEnd = inf
			}
			less := func(x, y relKey) bool { return x.major < y.major || (x.major == y.major && x.minor < y.minor) }
			if less(a.from, bEnd) && less(b.from, aEnd) {
				t.Errorf("rows %+v and %+v overlap", a, b)
			}
		}
	}
	for _, ct := range ClientTypes {
		if _, ok := minRelease(ct, ActionMonitor); !ok {
			t.Errorf("no minimum monitor release for %s", ct)
		}
		if _, ok := minRelease(ct, ActionRecord); !ok {
			t.Errorf("no minimum record release for %s", ct)
		}
	}
}

func TestParseAction(t *testing.T) {
	for _, a := range Actions {
		if got, ok := ParseAction(string(a)); !ok || got != a {
			t.Errorf("ParseAction(%q) = %q, %v", a, got, ok)
		}
	}
	for _, s := range []string{"", "Monitor", "listen", "coach"} {
		if _, ok := ParseAction(s); ok {
			t.Errorf("ParseAction(%q) accepted", s)
		}
	}
}

func BenchmarkCheck(b *testing.B) {
	p, err := NewPolicy(Cluster{Release: "12.5(1)SU4", BuiltinBridgeEnable: true}, []Device{
		{Name: "CSFJSMITH", Line: "1001", Monitoring: true, Recording: "selective"},
	}, nil)
	if err != nil {
		b.Fatal(err)
	}
	d, _ := p.DeviceByName("CSFJSMITH")
	b.ReportAllocs()
	for b.Loop() {
		if v := p.Check(d, ActionMonitor); !v.Allowed {
			b.Fatal(v)
		}
	}
}
