package load

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/pprof/profile"
)

// ProfileReport summarises a CPU profile of the bridge taken while the
// calls ran: what limits it.
type ProfileReport struct {
	File       string         `json:"file"`        // where the raw profile (pprof format) was saved
	StartS     float64        `json:"start_s"`     // seconds after the first INVITE the profile began
	Seconds    float64        `json:"seconds"`     // profile length asked for
	CPUSeconds float64        `json:"cpu_seconds"` // CPU time the samples cover
	Top        []ProfileEntry `json:"top"`         // functions by flat CPU share, largest first
	// SyscallPct is the share of sampled CPU inside system calls, and
	// Syscalls splits it by the first caller outside the standard library
	// (what asked for the system call: a relay loop, a fork's send, a
	// recording's file write), largest first.
	SyscallPct float64        `json:"syscall_pct"`
	Syscalls   []ProfileEntry `json:"syscalls"`
}

// ProfileEntry is one function of a CPU profile.
type ProfileEntry struct {
	Function string  `json:"function"`
	FlatPct  float64 `json:"flat_pct"` // % of sampled CPU spent in the function itself
	CumPct   float64 `json:"cum_pct"`  // % of sampled CPU with the function on the stack
}

// isSyscallFunc reports whether a function is a system call wrapper.
func isSyscallFunc(name string) bool {
	for _, p := range []string{"syscall.", "internal/runtime/syscall", "runtime/internal/syscall", "golang.org/x/sys/unix."} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// funcPackage is the import path of a profile function name
// ("github.com/a/b.(*T).M" -> "github.com/a/b", "os.(*File).Write" -> "os").
func funcPackage(name string) string {
	slash := strings.LastIndexByte(name, '/')
	if dot := strings.IndexByte(name[slash+1:], '.'); dot >= 0 {
		return name[:slash+1+dot]
	}
	return name
}

// isStdFunc reports whether a function belongs to the standard library,
// the runtime or golang.org/x/sys: its package path's first element has
// no dot (package main excepted).
func isStdFunc(name string) bool {
	pkg := funcPackage(name)
	if pkg == "main" {
		return false
	}
	first, _, _ := strings.Cut(pkg, "/")
	return !strings.Contains(first, ".") || strings.HasPrefix(pkg, "golang.org/x/sys/")
}

// syscallCallers splits the samples whose leaf is a system call by the
// first caller outside the standard library, and returns the syscall
// share of the total and the n largest callers (pct of the total).
func syscallCallers(p *profile.Profile, vi int, total int64, n int) (float64, []ProfileEntry) {
	by := map[string]int64{}
	var sys int64
	for _, s := range p.Sample {
		if vi >= len(s.Value) || len(s.Location) == 0 || len(s.Location[0].Line) == 0 {
			continue
		}
		leaf := s.Location[0].Line[0].Function
		if leaf == nil || !isSyscallFunc(leaf.Name) {
			continue
		}
		v := s.Value[vi]
		sys += v
		caller := "(runtime)"
	find:
		for _, loc := range s.Location {
			for _, ln := range loc.Line {
				if ln.Function != nil && !isStdFunc(ln.Function.Name) {
					caller = ln.Function.Name
					break find
				}
			}
		}
		by[caller] += v
	}
	if total <= 0 {
		return 0, nil
	}
	names := make([]string, 0, len(by))
	for f := range by {
		names = append(names, f)
	}
	sort.Slice(names, func(i, j int) bool {
		a, b := names[i], names[j]
		if by[a] != by[b] {
			return by[a] > by[b]
		}
		return a < b
	})
	if len(names) > n {
		names = names[:n]
	}
	out := make([]ProfileEntry, len(names))
	for i, f := range names {
		out[i] = ProfileEntry{Function: f, FlatPct: pctOf(by[f], total), CumPct: pctOf(by[f], total)}
	}
	return pctOf(sys, total), out
}

func pctOf(v, total int64) float64 { return math.Round(10000*float64(v)/float64(total)) / 100 }

// profileTopN is how many functions the report lists.
const profileTopN = 10

// summarizeProfile returns the CPU time a profile covers and its n
// functions with the most flat time. Inlined frames count as their own
// function, as `go tool pprof -top` shows them.
func summarizeProfile(p *profile.Profile, n int) (float64, []ProfileEntry) {
	vi := cpuIndex(p)
	if vi < 0 {
		return 0, nil
	}
	unit := 1.0
	if p.SampleType[vi].Unit == "nanoseconds" {
		unit = 1e-9
	}
	flat := map[string]int64{}
	cum := map[string]int64{}
	var total int64
	seen := map[string]bool{}
	for _, s := range p.Sample {
		if vi >= len(s.Value) {
			continue
		}
		v := s.Value[vi]
		total += v
		clear(seen)
		for li, loc := range s.Location {
			for k, ln := range loc.Line {
				name := "?"
				if ln.Function != nil {
					name = ln.Function.Name
				}
				if li == 0 && k == 0 {
					flat[name] += v
				}
				if !seen[name] {
					seen[name] = true
					cum[name] += v
				}
			}
			if len(loc.Line) == 0 {
				name := fmt.Sprintf("0x%x", loc.Address)
				if li == 0 {
					flat[name] += v
				}
				if !seen[name] {
					seen[name] = true
					cum[name] += v
				}
			}
		}
	}
	if total <= 0 {
		return 0, nil
	}
	names := make([]string, 0, len(flat))
	for f := range flat {
		names = append(names, f)
	}
	sort.Slice(names, func(i, j int) bool {
		a, b := names[i], names[j]
		if flat[a] != flat[b] {
			return flat[a] > flat[b]
		}
		return a < b
	})
	if len(names) > n {
		names = names[:n]
	}
	out := make([]ProfileEntry, len(names))
	for i, f := range names {
		out[i] = ProfileEntry{Function: f, FlatPct: pctOf(flat[f], total), CumPct: pctOf(cum[f], total)}
	}
	return round3(float64(total) * unit), out
}

// cpuIndex is the index of the CPU time value of a profile's samples
// (CPU profiles have samples/count and cpu/nanoseconds); -1 if none.
func cpuIndex(p *profile.Profile) int {
	for i, st := range p.SampleType {
		if st.Type == "cpu" || st.Unit == "nanoseconds" {
			return i
		}
	}
	return len(p.SampleType) - 1
}

// sampleTotal sums value vi over every sample.
func sampleTotal(p *profile.Profile, vi int) int64 {
	var t int64
	for _, s := range p.Sample {
		if vi >= 0 && vi < len(s.Value) {
			t += s.Value[vi]
		}
	}
	return t
}

// fetchProfile asks base/debug/pprof/profile for a CPU profile of
// seconds, starting at (first INVITE + startAfter), and returns its raw
// bytes. The wait and the request end with ctx.
func fetchProfile(ctx context.Context, base string, start time.Time, startAfter time.Duration, seconds int) ([]byte, error) {
	t := time.NewTimer(time.Until(start.Add(startAfter)))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.C:
	}
	// The server answers after the whole profile: no ordinary timeout.
	rctx, cancel := context.WithTimeout(ctx, time.Duration(seconds)*time.Second+30*time.Second)
	defer cancel()
	u := base + "/debug/pprof/profile?seconds=" + strconv.Itoa(seconds)
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 256<<20))
	if err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /debug/pprof/profile: status %d (is http.pprof enabled?): %.200s", res.StatusCode, b)
	}
	return b, nil
}

// saveProfile writes the raw profile to file and summarises it.
func saveProfile(raw []byte, file string) (*ProfileReport, error) {
	if err := os.WriteFile(file, raw, 0o644); err != nil {
		return nil, err
	}
	p, err := profile.Parse(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("parse CPU profile: %w", err)
	}
	cpu, top := summarizeProfile(p, profileTopN)
	if top == nil {
		top = []ProfileEntry{}
	}
	vi := cpuIndex(p)
	sysPct, sys := syscallCallers(p, vi, sampleTotal(p, vi), profileTopN)
	if sys == nil {
		sys = []ProfileEntry{}
	}
	return &ProfileReport{File: file, CPUSeconds: cpu, Top: top, SyscallPct: sysPct, Syscalls: sys}, nil
}

// profileWindow is the part of the run a CPU profile covers: the middle
// half of the calls' duration (whole seconds, at least one).
func profileWindow(d time.Duration) (startAfter time.Duration, seconds int) {
	seconds = max(1, int(math.Round(d.Seconds()/2)))
	return d / 4, seconds
}
