package main

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/bib-project/bib/bridge"
)

// deviceView is one device as the API shows it (never its credentials).
type deviceView struct {
	Name             string            `json:"name"`
	Line             string            `json:"line"`
	User             string            `json:"user,omitempty"`
	ClientType       bridge.ClientType `json:"client_type"`
	BuiltinBridge    string            `json:"builtin_bridge"`
	Privacy          bool              `json:"privacy"`
	Recording        string            `json:"recording"`
	RecordingProfile string            `json:"recording_profile,omitempty"`
	Monitoring       bool              `json:"monitoring"`
	Capabilities     []bridge.Verdict  `json:"capabilities"`
}

// capabilitiesView is the body of GET /api/v1/devices/{name}/capabilities.
type capabilitiesView struct {
	Device       string            `json:"device"`
	ClientType   bridge.ClientType `json:"client_type"`
	Capabilities []bridge.Verdict  `json:"capabilities"`
}

// registerDeviceRoutes adds the read-only device API:
//
//	GET /api/v1/devices                      -> {"devices": [deviceView...]}
//	GET /api/v1/devices/{name}/capabilities  -> capabilitiesView, or 404 unknown_device
//
// Each capability is a verdict per action (monitor, record, barge, whisper,
// tone): allowed, or the machine code and the reason. pol must not be nil.
func registerDeviceRoutes(mux *http.ServeMux, pol *bridge.Policy) {
	mux.HandleFunc("GET /api/v1/devices", func(w http.ResponseWriter, r *http.Request) {
		devs := pol.Devices()
		out := struct {
			Devices []deviceView `json:"devices"`
		}{Devices: make([]deviceView, 0, len(devs))}
		for _, d := range devs {
			caps, _ := pol.Capabilities(d.Name)
			out.Devices = append(out.Devices, deviceView{
				Name:             d.Name,
				Line:             d.Line,
				User:             d.User,
				ClientType:       d.ClientType(),
				BuiltinBridge:    d.BuiltinBridge,
				Privacy:          d.Privacy,
				Recording:        d.Recording,
				RecordingProfile: d.RecordingProfile,
				Monitoring:       d.Monitoring,
				Capabilities:     caps,
			})
		}
		respondJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /api/v1/devices/{name}/capabilities", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		d, ok := pol.DeviceByName(name)
		if !ok {
			writeJSONError(w, http.StatusNotFound, bridge.CodeUnknownDevice,
				fmt.Sprintf("No device named %q is configured; GET /api/v1/devices lists the configured devices.", name))
			return
		}
		caps, _ := pol.Capabilities(d.Name)
		respondJSON(w, http.StatusOK, capabilitiesView{Device: d.Name, ClientType: d.ClientType(), Capabilities: caps})
	})
}

// apiError is the body of every API error: a stable machine code and one
// human sentence.
type apiError struct {
	Error  string `json:"error"`
	Reason string `json:"reason"`
}

// writeJSONError writes {"error": code, "reason": reason} with the status.
// Gate refusals use the verdict's Code and Reason with status 403.
func writeJSONError(w http.ResponseWriter, status int, code, reason string) {
	respondJSON(w, status, apiError{Error: code, Reason: reason})
}

// respondJSON writes v as a JSON body with the status.
func respondJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	// The status is sent; an encoding error can only be a broken connection.
	_ = json.NewEncoder(w).Encode(v)
}
