package bridge

import "errors"

var (
	// ErrPortsExhausted: no free RTP port pair is left in the configured range.
	ErrPortsExhausted = errors.New("rtp port range exhausted")
	// ErrClosed: the call or engine has been closed.
	ErrClosed = errors.New("closed")
	// ErrDuplicateCall: a call with this id already exists.
	ErrDuplicateCall = errors.New("duplicate call id")
)
