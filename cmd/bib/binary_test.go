package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	bibOnce sync.Once
	bibPath string
	bibErr  error
)

// bibBinary builds the bib binary once per test process, for tests that need
// a real process (crash recovery, signals, the load harness's --spawn).
func bibBinary(t *testing.T) string {
	t.Helper()
	bibOnce.Do(func() {
		dir, err := os.MkdirTemp("", "bib-test-bin-")
		if err != nil {
			bibErr = err
			return
		}
		bibPath = filepath.Join(dir, "bib")
		out, err := exec.Command("go", "build", "-o", bibPath, ".").CombinedOutput()
		if err != nil {
			bibErr = &buildError{out: string(out), err: err}
		}
	})
	if bibErr != nil {
		t.Fatalf("building bib: %v", bibErr)
	}
	return bibPath
}

type buildError struct {
	out string
	err error
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }
