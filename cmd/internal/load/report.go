package load

import (
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// Report is what a run measured. The JSON field names are an interface
// other tools read: keep them.
type Report struct {
	Schema      string           `json:"schema"` // "bib-load/1"
	Started     time.Time        `json:"started"`
	DurationS   float64          `json:"duration_s"` // wall time of the whole run
	Target      string           `json:"target"`
	Spawned     bool             `json:"spawned"`
	Settings    Settings         `json:"settings"`
	Calls       CallsReport      `json:"calls"`
	RTP         RTPReport        `json:"rtp"`
	Supervisors SupervisorReport `json:"supervisors"`
	Recordings  RecordingReport  `json:"recordings"`
	Forks       ForkReport       `json:"forks"`
	Bridge      BridgeReport     `json:"bridge"`
	Recorder    RecorderReport   `json:"recorder"`
	Harness     HarnessReport    `json:"harness"`
	Profile     *ProfileReport   `json:"profile,omitempty"` // --cpuprofile
	Verdict     string           `json:"verdict"`           // "pass" or "fail"
	Failures    []string         `json:"failures"`
	Notes       []string         `json:"notes"`
	Series      []Sample         `json:"series"`
	LatencyHist []Bar            `json:"latency_histogram"`
}

// Settings echoes what was asked for.
type Settings struct {
	Calls       int        `json:"calls"`
	Rate        float64    `json:"rate"`
	DurationS   float64    `json:"duration_s"`
	HoldS       float64    `json:"hold_s"`
	Supervisors float64    `json:"supervisors"`
	WebRTC      float64    `json:"webrtc"` // share of the supervisors joining over WebRTC
	Record      bool       `json:"record"`
	Fork        bool       `json:"fork"`
	ForkProto   string     `json:"fork_protocol,omitempty"`
	Codec       string     `json:"codec"`
	Impair      Impairment `json:"impairment"`
	Thresholds  Thresholds `json:"thresholds"`
	Sockets     int        `json:"sockets"`
}

// CallsReport is about signalling.
type CallsReport struct {
	Attempted     uint64            `json:"attempted"`
	Established   uint64            `json:"established"`
	Failed        uint64            `json:"failed"`
	Dropped       uint64            `json:"dropped"` // ended by the bridge before the harness hung up
	CPS           float64           `json:"cps"`     // established calls per second over the placing window
	MaxConcurrent uint64            `json:"max_concurrent"`
	SetupMS       Quantiles         `json:"setup_ms"`
	FailReasons   map[string]uint64 `json:"fail_reasons,omitempty"`
	Registered    uint64            `json:"registered"`
	RegisterFail  uint64            `json:"register_failed"`
}

// Quantiles of a distribution in milliseconds.
type Quantiles struct {
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// RTPReport is about the parties' audio through the bridge.
type RTPReport struct {
	Sent       uint64    `json:"sent"`     // distinct packets the parties put on the wire
	Received   uint64    `json:"received"` // distinct packets that reached the other party
	Lost       uint64    `json:"lost"`     // sent - received
	LossRatio  float64   `json:"loss_ratio"`
	Duplicates uint64    `json:"duplicates"` // extra copies received
	Late       uint64    `json:"late"`       // SSRC known, but older than the stamp window
	Unmatched  uint64    `json:"unmatched"`  // SSRC of no running stream
	Misrouted  uint64    `json:"misrouted"`  // arrived at a socket that is not the peer's
	SendErrors uint64    `json:"send_errors"`
	JitterMS   Quantiles `json:"jitter_ms"`  // RFC 3550 interarrival jitter, sampled per stream per second
	LatencyMS  Quantiles `json:"latency_ms"` // send to receive, through the bridge
	// Impairment is what the senders did on purpose.
	Impairment ImpairReport `json:"impairment"`
	// HarnessDrops counts datagrams the harness's own sockets dropped
	// (kernel receive buffer full): lost, but not by the bridge.
	HarnessDrops uint64 `json:"harness_socket_drops"`
}

// ImpairReport counts deliberate damage.
type ImpairReport struct {
	Dropped    uint64 `json:"dropped"`
	Duplicated uint64 `json:"duplicated"`
	Reordered  uint64 `json:"reordered"`
}

// SupervisorReport is about monitoring legs.
type SupervisorReport struct {
	Available       bool   `json:"available"`
	Requested       uint64 `json:"requested"`
	Streams         uint64 `json:"streams"`
	Failed          uint64 `json:"failed"`
	PacketsSent     uint64 `json:"packets_sent"`
	PacketsReceived uint64 `json:"packets_received"`
	LeakedToParties uint64 `json:"leaked_to_parties"`
	// SIPStreams and WebRTCStreams split Streams by how the supervisors
	// joined (SIP dial-in, or WebRTC through bib's WHEP endpoint).
	SIPStreams    uint64 `json:"sip_streams"`
	WebRTCStreams uint64 `json:"webrtc_streams"`
	// WebRTCPacketsReceived is the part of PacketsReceived that reached
	// WebRTC supervisors.
	WebRTCPacketsReceived uint64 `json:"webrtc_packets_received"`
}

// RecordingReport is about recordings of the calls.
type RecordingReport struct {
	Available      bool    `json:"available"`
	Expected       uint64  `json:"expected"`
	Found          uint64  `json:"found"`
	Complete       uint64  `json:"complete"`
	Completeness   float64 `json:"completeness"` // complete / expected
	Sampled        uint64  `json:"sampled"`
	MaxSkewMS      float64 `json:"max_skew_ms"`
	MinCorrelation float64 `json:"min_correlation"`
	MinAudioRatio  float64 `json:"min_audio_ratio"` // recorded audio / audio sent, worst sampled channel
}

// ForkReport is about the recordings an external recorder made of the
// calls from the bridge's recording forks: the same fields as
// RecordingReport (forks.expected, forks.found, forks.complete,
// forks.completeness, ...), where the recorder is, and the bridge's fork
// counters.
type ForkReport struct {
	RecordingReport
	Protocol string `json:"protocol,omitempty"` // cucm or siprec (spawned recorder)
	Recorder string `json:"recorder,omitempty"` // the recorder's HTTP base URL
	// BridgeMetrics are the bridge's bib_fork_* counters, difference over
	// the run.
	BridgeMetrics map[string]float64 `json:"bridge_metrics,omitempty"`
}

// RecorderReport is the recorder process's cost (spawned or --recorder-pid).
type RecorderReport struct {
	PID             int     `json:"pid,omitempty"`
	CPUSeconds      float64 `json:"cpu_seconds"` // during the calls
	RSSMaxBytes     uint64  `json:"rss_max_bytes"`
	ProcessCPUTotal float64 `json:"process_cpu_seconds_total,omitempty"` // whole life, from the exit status (spawned only)
}

// BridgeReport is the bridge process's cost while the calls ran.
type BridgeReport struct {
	PID             int     `json:"pid,omitempty"`
	CPUSeconds      float64 `json:"cpu_seconds"`
	RSSMaxBytes     uint64  `json:"rss_max_bytes"`
	PacketsRelayed  uint64  `json:"packets_relayed"`
	CPUUSPerPacket  float64 `json:"cpu_us_per_packet"`
	CPUPercentMean  float64 `json:"cpu_percent_mean"`
	ProcessCPUTotal float64 `json:"process_cpu_seconds_total,omitempty"` // whole life, from the exit status (spawned only)
	Metrics         bool    `json:"metrics"`                             // /metrics was readable
}

// HarnessReport is the harness's own cost (it shares the machine).
type HarnessReport struct {
	CPUSeconds  float64 `json:"cpu_seconds"`
	RSSMaxBytes uint64  `json:"rss_max_bytes"`
	Pacers      int     `json:"pacers"`
}

// Sample is one second of the run.
type Sample struct {
	T            float64 `json:"t"` // seconds since the first INVITE
	Active       int64   `json:"active"`
	Attempted    uint64  `json:"attempted"`
	Established  uint64  `json:"established"`
	Failed       uint64  `json:"failed"`
	Sent         uint64  `json:"sent"`     // in this second
	Received     uint64  `json:"received"` // in this second
	LossRatio    float64 `json:"loss_ratio"`
	P50MS        float64 `json:"p50_ms"`
	P99MS        float64 `json:"p99_ms"`
	BridgeCPUPct float64 `json:"bridge_cpu_pct"`
	BridgeRSS    uint64  `json:"bridge_rss_bytes"`
	// RecorderCPUPct is the recorder process's CPU (forks), when known.
	RecorderCPUPct float64 `json:"recorder_cpu_pct,omitempty"`
}

// Bar is one latency histogram bar: values up to LeMS.
type Bar struct {
	LeMS  float64 `json:"le_ms"`
	Count uint64  `json:"count"`
}

// WriteJSON writes the report, indented.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// judge sets Verdict and Failures from the thresholds and what was asked.
func (r *Report) judge(cfg Config) {
	t := cfg.Thresholds
	var f []string
	add := func(format string, a ...any) { f = append(f, fmt.Sprintf(format, a...)) }
	c := r.Calls
	switch {
	case c.Attempted == 0:
		add("No call was attempted.")
	case c.Established == 0:
		add("No call was established (%d attempted).", c.Attempted)
	default:
		if ok := float64(c.Established) / float64(c.Attempted); ok < t.MinSuccess {
			add("Only %d of %d calls were established (%.2f%%, minimum %.2f%%).", c.Established, c.Attempted, 100*ok, 100*t.MinSuccess)
		}
	}
	if c.Dropped > 0 {
		add("The bridge ended %d calls before the harness hung up.", c.Dropped)
	}
	if r.RTP.Sent > 0 && r.RTP.LossRatio > t.MaxLoss {
		add("RTP loss %.4f%% (%d of %d packets) exceeds the limit of %.4f%%.", 100*r.RTP.LossRatio, r.RTP.Lost, r.RTP.Sent, 100*t.MaxLoss)
	}
	if c.Established > 0 && r.RTP.Received == 0 {
		add("No RTP reached the parties through the bridge.")
	}
	if r.RTP.LatencyMS.P99 > t.MaxP99MS {
		add("RTP latency p99 %.3f ms exceeds the limit of %.3f ms.", r.RTP.LatencyMS.P99, t.MaxP99MS)
	}
	if r.RTP.Misrouted > 0 {
		add("%d packets reached the wrong party (another call's socket or the sender's own side).", r.RTP.Misrouted)
	}
	if r.Supervisors.LeakedToParties > t.MaxLeaks {
		add("%d supervisor packets reached the parties (limit %d): monitoring is not listen-only.", r.Supervisors.LeakedToParties, t.MaxLeaks)
	}
	if cfg.Supervisors > 0 {
		switch {
		case !r.Supervisors.Available:
			add("Supervisors were requested (--supervisors %g) but the bridge did not provide monitoring.", cfg.Supervisors)
		case r.Supervisors.Failed > 0:
			add("%d of %d supervisor legs failed.", r.Supervisors.Failed, r.Supervisors.Requested)
		case r.Supervisors.Streams > 0 && r.Supervisors.PacketsReceived == 0:
			add("Supervisors were connected but received no audio.")
		case r.Supervisors.WebRTCStreams > 0 && r.Supervisors.WebRTCPacketsReceived == 0:
			add("WebRTC supervisors were connected but received no audio.")
		}
	}
	if cfg.Record {
		rec := r.Recordings
		switch {
		case !rec.Available:
			add("Recording was requested (--record) but the bridge did not provide recordings.")
		case rec.Completeness < t.MinCompleteness:
			add("Recordings %.2f%% complete (%d of %d expected, %d found), minimum %.2f%%.", 100*rec.Completeness, rec.Complete, rec.Expected, rec.Found, 100*t.MinCompleteness)
		}
	}
	if cfg.Fork {
		fk := r.Forks
		switch {
		case !fk.Available:
			add("Recording forks were requested (--fork) but the recorder's recordings are not available.")
		case fk.Completeness < t.MinCompleteness:
			add("Forked recordings %.2f%% complete (%d of %d expected, %d found at the recorder), minimum %.2f%%.", 100*fk.Completeness, fk.Complete, fk.Expected, fk.Found, 100*t.MinCompleteness)
		}
	}
	r.Failures = f
	if r.Failures == nil {
		r.Failures = []string{}
	}
	if r.Notes == nil {
		r.Notes = []string{}
	}
	r.Verdict = "pass"
	if len(f) > 0 {
		r.Verdict = "fail"
	}
}
