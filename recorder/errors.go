package recorder

import "errors"

var (
	// ErrConfig: a Config field is out of range (the message names it).
	ErrConfig = errors.New("invalid recorder config")
	// ErrNotWAV: the bytes do not start with a PCM WAV header this package
	// can repair.
	ErrNotWAV = errors.New("not a PCM WAV file")
	// ErrFormat: a WAV format this package does not write (rate, channels).
	ErrFormat = errors.New("unsupported WAV format")
	// ErrClosed: the recorder has already finished.
	ErrClosed = errors.New("recorder closed")
	// ErrArchive: the archive refused the recording (wraps the store's error).
	ErrArchive = errors.New("archive unavailable")
)
