# bib: the two commands a newcomer needs are `make run` and `make test`.
GO       ?= go
BIN      := bin/bib
VERSION  := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
PKGS     := ./...

.PHONY: run build test bench bench-c-relay bench-load demo-shot fuzz lint clean

## run: build and start `bib serve --demo` on embedded defaults (127.0.0.1, data under ./data): live, recorded, monitorable calls
run: build
	./$(BIN) serve --demo

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/bib

## test: vet, then every test with the race detector (real sockets on loopback, SIPp if installed)
test:
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 14m $(PKGS)

## bench: hot-path benchmarks (relay vs the minimal Go relay, parsers, codecs, recorder)
bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime=200000x ./bridge/
	$(GO) test -run '^$$' -bench . -benchmem ./bridge/codec/ ./recorder/ ./storage/

## bench-c-relay: bib's relay (both media.io engines) against the minimal Go relay and rtpengine
## (apt-get install rtpengine-daemon first; skipped without it), each relay in a process of its own:
## relay-cpu-ns/pkt is that process's CPU per relayed packet. RELAY_WINDOW=n: n packets in flight
## (rtpengine stops reading a single call's socket at the default 64)
RELAY_WINDOW ?=
bench-c-relay:
	BIB_RELAY_WINDOW=$(RELAY_WINDOW) $(GO) test -run '^$$' -bench '^BenchmarkRelay(Proc|C)$$' -benchtime=200000x -count=5 -timeout 60m ./bridge/

## bench-load: the 500-call load run (relayed, recorded, forked to a bib recorder, 10% monitored) writing out/report.json, out/report.html and the bridge's CPU profile out/cpu.pprof
bench-load: build
	mkdir -p out
	./$(BIN) load --spawn --calls 500 --rate 100 --duration 60s --supervisors 10% --record --fork --cpuprofile out/cpu.pprof --json out/report.json --html out/report.html

## demo-shot: headless Chromium signs in to the demo's page, presses Listen and saves out/demo.png
demo-shot:
	mkdir -p out
	BIB_SCREENSHOT=$(CURDIR)/out/demo.png $(GO) test -count=1 -run '^TestBrowserDemo$$' -v ./cmd/bib/

## fuzz: a short run of every fuzz target (10 s each)
fuzz:
	@for pkg in $$($(GO) list $(PKGS)); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime 10s $$pkg || exit 1; \
	  done; \
	done

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet $(PKGS)

clean:
	rm -rf bin out
