// Command bib is the built-in-bridge emulator: `bib serve` runs the bridge;
// the other subcommands answer questions offline or drive it.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `bib: a phone Built-in Bridge emulator (silent monitoring and call recording)

Usage:
  bib serve [--config bib.yaml] [--sip ADDR] [--http ADDR] [--rtp-ports MIN-MAX] [--data DIR] [--log-level LEVEL]
  bib load --spawn --calls N --rate CPS --duration D [...]   load-test bib (or --target any SIP bridge)
  bib recorder --sip ADDR --data DIR [--http ADDR]   a recording server for call-manager forks and SIPREC
  bib gate --device NAME --release R [...]      answer a version-gate question offline
  bib recordings ls|show|export|verify [...]    search and check the recording archive
  bib decrypt --privatekey KEY [--password P] --encryptionkey NAME.esk --encryptedfile NAME.enc --outputfile OUT
  bib report [--out FILE.zip] [--encrypt-for CERT] [--upload URL]   collect a problem report
  bib config                                    print the embedded default configuration
  bib version

Run "bib COMMAND --help" for a command's flags.
`

// version is set by the linker (-X main.version=...).
var version = "dev"

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches a subcommand and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		ctx, stop := signalContext(ctx)
		defer stop()
		return serveMain(ctx, args[1:], stdout, stderr)
	case "gate":
		return gateMain(args[1:], stdout, stderr)
	case "recordings":
		return recordingsMain(ctx, args[1:], stdout, stderr)
	case "config":
		fmt.Fprint(stdout, defaultConfigYAML)
		return 0
	case "version", "--version":
		fmt.Fprintf(stdout, "bib %s\n", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	case "decrypt":
		return decryptMain(args[1:], stdout, stderr)
	case "report":
		return reportMain(ctx, args[1:], stdout, stderr)
	case "load":
		ctx, stop := signalContext(ctx)
		defer stop()
		return loadMain(ctx, args[1:], stdout, stderr)
	case "recorder":
		ctx, stop := signalContext(ctx)
		defer stop()
		return recorderMain(ctx, args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "bib: unknown command %q\n\n%s", args[0], usage)
	return 2
}

// stopSignals carries how the serve context was ended: SIGTERM drains calls
// (BYE on both legs, recordings finalized); SIGINT stops now.
type stopKind int

const (
	stopNone stopKind = iota
	stopDrain
	stopNow
)

type stopKey struct{}

// signalContext returns a context cancelled by SIGTERM or SIGINT; which one
// is readable with stopReason.
func signalContext(parent context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancel(parent)
	kind := new(stopKind)
	ctx = context.WithValue(ctx, stopKey{}, kind)
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		select {
		case s := <-ch:
			if s == syscall.SIGTERM {
				*kind = stopDrain
			} else {
				*kind = stopNow
			}
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, func() { signal.Stop(ch); cancel() }
}

func stopReason(ctx context.Context) stopKind {
	if k, ok := ctx.Value(stopKey{}).(*stopKind); ok {
		return *k
	}
	return stopNone
}
