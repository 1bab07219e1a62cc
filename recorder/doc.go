// Package recorder turns a call's forked RTP into a recording.
//
// It owns the Recorder, a bridge.Tap: a bounded lock-free queue per
// direction that the relay goroutines copy packets into without blocking,
// and one writer goroutine per recording that drains both queues, runs a
// jitter buffer per direction (ordered by sequence, duplicates dropped,
// audio placed by RTP timestamp, loss and comfort noise filled with
// silence, RFC 4733 events removed and noted), keeps both directions on one
// timeline anchored at the call's answer, and writes a crash-safe stereo WAV
// (left: near end, right: far end) with optional mono and mixed tracks. It
// also owns the WAV format (writing, and RepairWAV for files a crash left
// behind) and the metadata a recording carries (events, per-direction
// statistics, status).
//
// It does not decide which calls are recorded (policy is the bridge's and
// cmd/'s), does not touch the relay's packets beyond copying them, and does
// not know where bytes are kept: it writes through a storage.Store.
// It does not play tones or inject anything into a call.
package recorder
