// Package storage is bib's recording archive.
//
// It owns where recording bytes live and how they are found again: the
// Store interface (create, commit or abort a recording, look it up, list,
// open its audio, repair what a crash left unfinished, verify hashes), the
// metadata record (Meta) every recording carries, and the default backend
// DirStore: a directory tree under the data dir
// (recordings/YYYY/MM/DD/<id>.wav plus an <id>.json sidecar) indexed by an
// embedded SQLite database (modernc.org/sqlite, no cgo) in WAL mode.
//
// Every byte of a recording reaches the disk through the FS interface, so an
// encrypting writer (AES-256-GCM chunks, RSA-wrapped key) or a fault-injecting
// one in tests can be slotted in without touching the rest.
//
// It does not know audio: it does not decode RTP, write WAV headers or judge
// whether a file plays. The recorder package produces the bytes and supplies
// the Fixer that repairs its format after a crash. Policy (which calls are
// recorded) belongs to the bridge and cmd/.
package storage
