package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/bib-project/bib/bridge"
)

// Exit codes of `bib gate`.
const (
	gateExitAllowed = 0 // the action is allowed
	gateExitUsage   = 2 // bad flags or values
	gateExitDenied  = 3 // the action is denied; the reason is printed
)

// gateMain runs `bib gate`: it answers offline whether the emulated cluster
// would let a device be monitored or recorded (or barged, whispered to, or
// played a tone: never). It prints `allowed` or `denied: <reason>` (or the
// verdict as JSON with --json) and returns 0 when allowed, 3 when denied and
// 2 for usage errors.
func gateMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bib gate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	device := fs.String("device", "", "device name: CSF..., TCT..., BOT..., TAB... or SEP + 12 hex digits (required)")
	release := fs.String("release", "", `call-manager release, e.g. 9.1(2), 12.5(1)SU4, 14SU3, 15.0.1.12900-234 (required)`)
	deployment := fs.String("deployment", bridge.DeploymentOnPremises, "on-premises or cloud")
	devicePack := fs.Bool("device-pack", false, "the latest device package is installed")
	bib := fs.String("bib", bridge.BIBDefault, "the device's Built In Bridge setting: on, off or default")
	clusterBIB := fs.Bool("cluster-bib", false, `the cluster parameter "Builtin Bridge Enable" is on`)
	privacy := fs.Bool("privacy", false, "privacy is on for the device")
	action := fs.String("action", string(bridge.ActionRecord), "monitor, record, barge, whisper or tone")
	asJSON := fs.Bool("json", false, `print the verdict as JSON: {"action", "allowed", "error", "reason"}`)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: bib gate --device NAME --release R [--deployment on-premises|cloud] [--device-pack]\n"+
			"                [--bib on|off|default] [--cluster-bib] [--privacy] [--action monitor|record|barge|whisper|tone] [--json]\n\n"+
			"Says whether the emulated cluster lets the device be monitored or recorded through its Built-in Bridge.\n"+
			"Prints 'allowed' (exit 0) or 'denied: <reason>' (exit 3); exit 2 on usage errors.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return gateExitAllowed
		}
		return gateExitUsage
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "bib gate: "+format+"\n", a...)
		fmt.Fprintln(stderr, "run 'bib gate -h' for usage")
		return gateExitUsage
	}
	if fs.NArg() > 0 {
		return usage("unexpected argument %q", fs.Arg(0))
	}
	if *device == "" {
		return usage("--device is required")
	}
	if *release == "" {
		return usage("--release is required")
	}
	act, ok := bridge.ParseAction(*action)
	if !ok {
		return usage("--action: %q is not one of monitor, record, barge, whisper, tone", *action)
	}
	if _, err := bridge.ParseRelease("--release", *release); err != nil {
		return usage("%v", err)
	}
	if _, err := bridge.ClientTypeOf(*device); err != nil {
		return usage("--device: %v", err)
	}
	switch *deployment {
	case bridge.DeploymentOnPremises, bridge.DeploymentCloud:
	default:
		return usage("--deployment: %q is not one of on-premises, cloud", *deployment)
	}
	switch *bib {
	case bridge.BIBOn, bridge.BIBOff, bridge.BIBDefault:
	default:
		return usage("--bib: %q is not one of on, off, default", *bib)
	}

	pol, err := bridge.NewPolicy(bridge.Cluster{
		Release:             *release,
		Deployment:          *deployment,
		BuiltinBridgeEnable: *clusterBIB,
		DevicePackInstalled: *devicePack,
	}, nil, nil)
	if err != nil {
		return usage("%v", err)
	}
	// Gate, not Check: the question is what the cluster allows, not whether
	// a config file switched monitoring or recording on for this device.
	v := pol.Gate(bridge.Device{Name: *device, BuiltinBridge: *bib, Privacy: *privacy}, act)

	if *asJSON {
		if err := json.NewEncoder(stdout).Encode(v); err != nil {
			fmt.Fprintf(stderr, "bib gate: %v\n", err)
			return gateExitUsage
		}
	} else if v.Allowed {
		fmt.Fprintln(stdout, "allowed")
	} else {
		fmt.Fprintf(stdout, "denied: %s\n", v.Reason)
	}
	if !v.Allowed {
		return gateExitDenied
	}
	return gateExitAllowed
}
