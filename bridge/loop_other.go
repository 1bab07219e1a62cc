//go:build !linux

package bridge

import (
	"errors"
	"log/slog"
)

// The epoll I/O engine exists on Linux only; Config.Validate rejects
// media.io: epoll elsewhere, so these are never reached in a valid setup.

const (
	ioSupported = false
	defaultIO   = "goroutine"
)

var errIOUnsupported = errors.New("media io: epoll engine is only available on Linux")

type ioLoop struct{}

type loopCall struct{}

func newIOLoop(int, *slog.Logger) *ioLoop { return &ioLoop{} }

func (*ioLoop) attach(*Call) error { return errIOUnsupported }

func (*ioLoop) stop() {}

func (*loopCall) detach() error { return nil }
