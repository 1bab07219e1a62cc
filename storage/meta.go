package storage

import (
	"encoding/json"
	"time"
)

// Status of a recording.
type Status string

const (
	// StatusRecording: the recording is being written (or a crash left it so
	// until the next Repair).
	StatusRecording Status = "recording"
	// StatusComplete: finalized cleanly, file hashed and renamed.
	StatusComplete Status = "complete"
	// StatusInterrupted: bib stopped before finalizing; Repair made the file
	// playable from what reached the disk.
	StatusInterrupted Status = "interrupted"
	// StatusFailed: the archive could not take the recording (disk full,
	// unwritable); Reason says why. A failed recording has no audio file.
	StatusFailed Status = "failed"
)

// Party identifies one end of the recorded call and carries the statistics
// of the audio that party sent.
type Party struct {
	Side   string   `json:"side,omitempty"` // "a" (caller) or "b" (callee)
	Device string   `json:"device,omitempty"`
	Line   string   `json:"line,omitempty"`
	Addr   string   `json:"addr,omitempty"` // directory number
	Name   string   `json:"name,omitempty"` // display name
	Stream DirStats `json:"stream"`
}

// DirStats counts what happened to the audio of one direction.
type DirStats struct {
	Packets     uint64 `json:"packets"`      // RTP packets received (all payload types)
	Lost        uint64 `json:"lost"`         // sequence numbers never received
	Late        uint64 `json:"late"`         // received after their audio was written
	Duplicates  uint64 `json:"duplicates"`   // same sequence number seen again
	Overflow    uint64 `json:"overflow"`     // dropped because the recorder queue was full
	Discarded   uint64 `json:"discarded"`    // unknown payload type, oversize, early media, buffer full
	Held        uint64 `json:"held"`         // arrived while the call was on hold or recording paused
	Gaps        uint64 `json:"gaps"`         // silence runs filled for missing audio
	GapMS       int64  `json:"gap_ms"`       // total length of those runs
	SSRCChanges uint64 `json:"ssrc_changes"` // source changes after the first
	TSJumps     uint64 `json:"ts_jumps"`     // timestamp discontinuities re-anchored on the wall clock
	Resyncs     uint64 `json:"resyncs"`      // re-anchors after persistent lateness
	CNPackets   uint64 `json:"cn_packets"`   // comfort noise packets (written as silence)
	DTMFEvents  uint64 `json:"dtmf_events"`  // RFC 4733 events (removed from the audio)
	NoRTP       bool   `json:"no_rtp"`       // not a single RTP packet arrived
}

// Event is something that happened during the recording.
type Event struct {
	Kind      string    `json:"kind"`                // hold, resume, recording_paused, recording_resumed, ssrc_change, ts_jump, resync, dtmf, overflow, codec, unsupported_codec, write_error
	At        time.Time `json:"at"`                  // wall clock, RFC 3339 with nanoseconds
	OffsetMS  int64     `json:"offset_ms"`           // from the first sample of the recording
	Direction string    `json:"direction,omitempty"` // "near" or "far" when it concerns one party's audio
	Detail    string    `json:"detail,omitempty"`
}

// Track is an extra file of a recording (per-party mono, mixed mono).
type Track struct {
	Name      string `json:"name"` // near, far, mixed
	SizeBytes int64  `json:"size_bytes"`
	SHA256    string `json:"sha256"`
}

// Meta is everything the archive knows about one recording. It is also what
// the HTTP API returns.
type Meta struct {
	ID          string          `json:"id"`
	CallID      string          `json:"call_id"`
	RefCI       string          `json:"refci,omitempty"`
	FarRefCI    string          `json:"far_refci,omitempty"`
	Near        Party           `json:"near"`
	Far         Party           `json:"far"`
	Codecs      []string        `json:"codecs"`
	StartTime   time.Time       `json:"start_time"`           // wall time of the first sample
	AnswerTime  time.Time       `json:"answer_time,omitzero"` // when the call was answered, if known
	EndTime     time.Time       `json:"end_time,omitzero"`    // wall time of the last sample
	DurationMS  int64           `json:"duration_ms"`
	SampleRate  int             `json:"sample_rate"`
	Channels    int             `json:"channels"`
	NoRTP       bool            `json:"no_rtp"` // neither party sent RTP
	Events      []Event         `json:"events"`
	Status      Status          `json:"status"`
	Reason      string          `json:"reason,omitempty"`
	GateVerdict json.RawMessage `json:"gate_verdict,omitempty"`
	SizeBytes   int64           `json:"size_bytes"`
	SHA256      string          `json:"sha256,omitempty"`
	Tracks      []Track         `json:"tracks,omitempty"`
	// Encrypted: the files are stored encrypted at rest (NAME.enc +
	// NAME.esk); size_bytes and sha256 are the ciphertext's. The index (and
	// so the API without the private key) then keeps only the fields search
	// needs; the full metadata is in the encrypted sidecar.
	Encrypted bool `json:"encrypted,omitempty"`
}

// Query selects recordings for List. Zero fields do not filter.
type Query struct {
	Line   string    // matches the near or far line or address
	Device string    // matches the near or far device
	Since  time.Time // start_time >= Since
	Until  time.Time // start_time < Until
	Limit  int       // page size; 0 means 100, capped at 1000
	Cursor string    // from the previous page
}

// Problem is one defect Verify found.
type Problem struct {
	ID     string `json:"id,omitempty"`
	Path   string `json:"path"`
	Kind   string `json:"kind"` // missing, corrupt, size, orphan, unfinished
	Detail string `json:"detail"`
}
