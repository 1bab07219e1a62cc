package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/bib-project/bib/bridge"
)

func testDeviceMux(t *testing.T) *http.ServeMux {
	t.Helper()
	pol, err := bridge.NewPolicy(bridge.Cluster{Release: "11.5(1)SU3", BuiltinBridgeEnable: true}, []bridge.Device{
		{Name: "CSFJSMITH", Line: "1001", User: "jsmith", Monitoring: true, Recording: "automatic", RecordingProfile: "archive", Password: "s3cret"},
		{Name: "TCTJSMITH", Line: "1002", User: "jsmith", BuiltinBridge: "on", Monitoring: true, HA1: strings.Repeat("ab", 16)},
		{Name: "SEP38ED18552A12", Line: "1000", Privacy: true, Recording: "selective"},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	registerDeviceRoutes(mux, pol)
	return mux
}

func get(t *testing.T, h http.Handler, method, path string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec
}

func TestAPIDevicesList(t *testing.T) {
	rec := get(t, testDeviceMux(t), http.MethodGet, "/api/v1/devices")
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, content type %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	body := rec.Body.String()
	for _, secret := range []string{"s3cret", "abab", "password", "ha1"} {
		if strings.Contains(body, secret) {
			t.Fatalf("device list leaks %q: %s", secret, body)
		}
	}
	var got struct {
		Devices []deviceView `json:"devices"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Devices) != 3 {
		t.Fatalf("devices: %+v", got.Devices)
	}
	csf, tct, sep := got.Devices[0], got.Devices[1], got.Devices[2]
	if csf.Name != "CSFJSMITH" || csf.Line != "1001" || csf.User != "jsmith" || csf.ClientType != bridge.ClientDesktop ||
		csf.BuiltinBridge != "default" || csf.Recording != "automatic" || csf.RecordingProfile != "archive" || !csf.Monitoring {
		t.Errorf("CSF view: %+v", csf)
	}
	if tct.ClientType != bridge.ClientIPhone || sep.ClientType != bridge.ClientPhone || sep.Recording != "selective" || !sep.Privacy {
		t.Errorf("views: %+v %+v", tct, sep)
	}
	// 11.5 without device pack: the TCT device cannot be monitored or recorded.
	want := map[string][]string{
		"CSFJSMITH":       {"", "", bridge.CodeBargeNotSupported, bridge.CodeWhisperNotSupported, bridge.CodeToneNotSupported},
		"TCTJSMITH":       {bridge.CodeDevicePackRequired, bridge.CodeDevicePackRequired, bridge.CodeBargeNotSupported, bridge.CodeWhisperNotSupported, bridge.CodeToneNotSupported},
		"SEP38ED18552A12": {bridge.CodePrivacyOn, "", bridge.CodeBargeNotSupported, bridge.CodeWhisperNotSupported, bridge.CodeToneNotSupported},
	}
	for _, d := range got.Devices {
		checkCaps(t, d.Name, d.Capabilities, want[d.Name])
	}
}

func checkCaps(t *testing.T, name string, caps []bridge.Verdict, codes []string) {
	t.Helper()
	if len(caps) != len(bridge.Actions) {
		t.Fatalf("%s: %d capabilities", name, len(caps))
	}
	for i, v := range caps {
		if v.Action != bridge.Actions[i] || v.Allowed != (codes[i] == "") || v.Code != codes[i] || (v.Allowed == (v.Reason != "")) {
			t.Errorf("%s %s: %+v, want code %q", name, bridge.Actions[i], v, codes[i])
		}
	}
}

func TestAPIDeviceCapabilities(t *testing.T) {
	mux := testDeviceMux(t)
	for _, path := range []string{"/api/v1/devices/SEP38ED18552A12/capabilities", "/api/v1/devices/sep38ed18552a12/capabilities"} {
		rec := get(t, mux, http.MethodGet, path)
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: status %d %s", path, rec.Code, rec.Body)
		}
		var got capabilitiesView
		dec := json.NewDecoder(rec.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&got); err != nil {
			t.Fatal(err)
		}
		if got.Device != "SEP38ED18552A12" || got.ClientType != bridge.ClientPhone {
			t.Fatalf("%s: %+v", path, got)
		}
		checkCaps(t, got.Device, got.Capabilities,
			[]string{bridge.CodePrivacyOn, "", bridge.CodeBargeNotSupported, bridge.CodeWhisperNotSupported, bridge.CodeToneNotSupported})
		if !strings.Contains(got.Capabilities[0].Reason, "privacy off") {
			t.Errorf("monitor reason %q", got.Capabilities[0].Reason)
		}
	}
}

func TestAPIDeviceErrors(t *testing.T) {
	mux := testDeviceMux(t)
	rec := get(t, mux, http.MethodGet, "/api/v1/devices/CSFNOBODY/capabilities")
	if rec.Code != http.StatusNotFound || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, content type %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	var e map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
		t.Fatal(err)
	}
	if len(e) != 2 || e["error"] != "unknown_device" || !strings.Contains(e["reason"], `"CSFNOBODY"`) {
		t.Fatalf("404 body %v", e)
	}
	if rec := get(t, mux, http.MethodPost, "/api/v1/devices"); rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("POST: status %d", rec.Code)
	}
	if rec := get(t, mux, http.MethodDelete, "/api/v1/devices/CSFJSMITH/capabilities"); rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("DELETE: status %d", rec.Code)
	}
}

func TestWriteJSONError(t *testing.T) {
	rec := httptest.NewRecorder()
	writeJSONError(rec, http.StatusForbidden, bridge.CodeBargeNotSupported, "Barge is not supported.")
	if rec.Code != http.StatusForbidden || rec.Body.String() != `{"error":"barge_not_supported","reason":"Barge is not supported."}`+"\n" {
		t.Fatalf("%d %q", rec.Code, rec.Body)
	}
}
