package storage

import "errors"

var (
	// ErrNotFound: no recording with that id.
	ErrNotFound = errors.New("recording not found")
	// ErrInvalidID: the id is not one this package issues (also guards paths).
	ErrInvalidID = errors.New("invalid recording id")
	// ErrInvalidCursor: a List cursor that this store did not hand out.
	ErrInvalidCursor = errors.New("invalid cursor")
	// ErrNoAudio: the recording has no audio file (failed, or still recording).
	ErrNoAudio = errors.New("recording has no audio")
	// ErrClosed: the store or blob was already closed.
	ErrClosed = errors.New("store closed")
	// ErrFinished: Commit or Abort was already called on the blob.
	ErrFinished = errors.New("blob already finished")
	// ErrInvalidTrack: an extra track name outside [a-z0-9]{1,16}.
	ErrInvalidTrack = errors.New("invalid track name")
)
