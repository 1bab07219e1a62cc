package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/bib-project/bib/bridge"
)

func TestGateCLI(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string // exact stdout ("" = empty)
		stderr string // substring of stderr ("" = stderr must be empty)
	}{
		{"csf allowed", []string{"--device", "CSFJSMITH", "--release", "12.5(1)SU4", "--bib", "on"}, 0, "allowed\n", ""},
		{"csf default with cluster bib", []string{"--device", "CSFJSMITH", "--release", "9.1(2)", "--cluster-bib", "--action", "monitor"}, 0, "allowed\n", ""},
		{"single dash flags", []string{"-device", "SEP38ED18552A12", "-release", "8.6", "-bib", "on", "-action", "monitor"}, 0, "allowed\n", ""},
		{"csf too old", []string{"--device", "CSFJSMITH", "--release", "8.6(2)", "--bib", "on"}, 3,
			"denied: Recording of Jabber desktop (CSF) devices needs call-manager release 9.0 or later, but the cluster runs 8.6(2); upgrade the cluster.\n", ""},
		{"tct needs device pack", []string{"--device", "TCTJSMITH", "--release", "11.5.1.10000-6", "--bib", "on", "--action", "monitor"}, 3,
			"denied: On release 11.5.1.10000-6 the Built In Bridge field for Jabber for iPhone (TCT) devices appears only after a device package is installed, so TCTJSMITH cannot use monitoring; install the latest device package (then set cluster.device_pack_installed: true).\n", ""},
		{"tct with device pack", []string{"--device", "TCTJSMITH", "--release", "11.5.1.10000-6", "--bib", "on", "--device-pack"}, 0, "allowed\n", ""},
		{"cloud", []string{"--device", "BOTJSMITH", "--release", "14SU3", "--bib", "on", "--deployment", "cloud"}, 3,
			"denied: Recording works only in on-premises deployments and this cluster is a cloud deployment; set cluster.deployment to on-premises.\n", ""},
		{"bib default, cluster off", []string{"--device", "TABJSMITH", "--release", "15"}, 3,
			"denied: Built In Bridge on device TABJSMITH is default and the cluster parameter Builtin Bridge Enable is off, so it cannot use recording; set the device's builtin_bridge to on or cluster.builtin_bridge_enable to true.\n", ""},
		{"privacy blocks monitor", []string{"--device", "CSFJSMITH", "--release", "14", "--bib", "on", "--privacy", "--action", "monitor"}, 3,
			"denied: Privacy is on for device CSFJSMITH, which blocks monitoring; turn its privacy off.\n", ""},
		{"privacy does not block record", []string{"--device", "CSFJSMITH", "--release", "14", "--bib", "on", "--privacy"}, 0, "allowed\n", ""},
		{"barge", []string{"--device", "CSFJSMITH", "--release", "15", "--bib", "on", "--action", "barge"}, 3,
			"denied: Barge is not supported: bib is listen-only and never sends a supervisor's audio into a call; use silent monitoring.\n", ""},
		{"whisper", []string{"--device", "CSFJSMITH", "--release", "15", "--bib", "on", "--action", "whisper"}, 3,
			"denied: Whisper coaching is not supported: bib is listen-only, so a supervisor can listen to the agent but never talk to them; use silent monitoring.\n", ""},
		{"tone", []string{"--device", "CSFJSMITH", "--release", "15", "--bib", "on", "--action", "tone"}, 3,
			"denied: Monitoring and recording notification tones are not supported: Jabber clients play none and bib never injects audio into a call.\n", ""},

		{"help", []string{"-h"}, 0, "", "usage: bib gate"},
		{"no device", []string{"--release", "14"}, 2, "", "--device is required"},
		{"no release", []string{"--device", "CSFJSMITH"}, 2, "", "--release is required"},
		{"garbage release", []string{"--device", "CSFJSMITH", "--release", "fourteen"}, 2, "", `--release: bad call-manager release "fourteen"`},
		{"bad device", []string{"--device", "SEP1234", "--release", "14"}, 2, "", `--device: bad device name "SEP1234"`},
		{"bad action", []string{"--device", "CSFJSMITH", "--release", "14", "--action", "coach"}, 2, "", `--action: "coach"`},
		{"bad deployment", []string{"--device", "CSFJSMITH", "--release", "14", "--deployment", "hybrid"}, 2, "", `--deployment: "hybrid"`},
		{"bad bib", []string{"--device", "CSFJSMITH", "--release", "14", "--bib", "yes"}, 2, "", `--bib: "yes"`},
		{"unknown flag", []string{"--device", "CSFJSMITH", "--release", "14", "--colour"}, 2, "", "flag provided but not defined"},
		{"extra argument", []string{"--device", "CSFJSMITH", "--release", "14", "extra"}, 2, "", `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := gateMain(tt.args, &out, &errOut)
			if code != tt.code {
				t.Errorf("exit %d, want %d (stdout %q, stderr %q)", code, tt.code, out.String(), errOut.String())
			}
			if out.String() != tt.stdout {
				t.Errorf("stdout\n got %q\nwant %q", out.String(), tt.stdout)
			}
			if tt.stderr == "" && errOut.Len() > 0 {
				t.Errorf("unexpected stderr %q", errOut.String())
			}
			if tt.stderr != "" && !strings.Contains(errOut.String(), tt.stderr) {
				t.Errorf("stderr %q lacks %q", errOut.String(), tt.stderr)
			}
			if strings.Count(out.String(), "\n") > 1 {
				t.Errorf("stdout is more than one line: %q", out.String())
			}
		})
	}
}

func TestGateCLIJSON(t *testing.T) {
	tests := []struct {
		args []string
		code int
		want bridge.Verdict
	}{
		{[]string{"--json", "--device", "CSFJSMITH", "--release", "14", "--bib", "on", "--action", "monitor"}, 0,
			bridge.Verdict{Action: bridge.ActionMonitor, Allowed: true}},
		{[]string{"--json", "--device", "BOTJSMITH", "--release", "10.5(2)", "--bib", "on"}, 3,
			bridge.Verdict{Action: bridge.ActionRecord, Code: bridge.CodeReleaseTooOld,
				Reason: "Recording of Jabber for Android (BOT) devices needs call-manager release 11.0 or later, but the cluster runs 10.5(2); upgrade the cluster."}},
		{[]string{"--json", "--device", "SEP38ED18552A12", "--release", "14", "--action", "whisper"}, 3,
			bridge.Verdict{Action: bridge.ActionWhisper, Code: bridge.CodeWhisperNotSupported,
				Reason: "Whisper coaching is not supported: bib is listen-only, so a supervisor can listen to the agent but never talk to them; use silent monitoring."}},
	}
	for _, tt := range tests {
		var out, errOut bytes.Buffer
		code := gateMain(tt.args, &out, &errOut)
		if code != tt.code || errOut.Len() > 0 {
			t.Fatalf("%v: exit %d, stderr %q", tt.args, code, errOut.String())
		}
		var got bridge.Verdict
		dec := json.NewDecoder(&out)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&got); err != nil {
			t.Fatalf("%v: %v", tt.args, err)
		}
		if got != tt.want {
			t.Fatalf("%v:\n got %+v\nwant %+v", tt.args, got, tt.want)
		}
	}
	// allowed verdicts carry no error/reason keys at all
	var out bytes.Buffer
	gateMain([]string{"--json", "--device", "CSFJSMITH", "--release", "14", "--bib", "on"}, &out, &bytes.Buffer{})
	if got := out.String(); got != `{"action":"record","allowed":true}`+"\n" {
		t.Fatalf("allowed JSON %q", got)
	}
}
