package bridge

import (
	"errors"
	"runtime"
)

func errorsIs(err, target error) bool { return errors.Is(err, target) }

func runtimeGosched() { runtime.Gosched() }
