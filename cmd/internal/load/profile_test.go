package load

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/pprof/profile"
)

// syntheticProfile is a CPU profile of three stacks (leaf first):
//
//	relay <- loop <- main: 60 ms
//	write (inlined into relay) <- relay <- loop <- main: 30 ms
//	syscall <- write <- loop <- main: 10 ms
//
// with write appearing twice in the last stack's path (recursion must be
// counted once in cum).
func syntheticProfile() *profile.Profile {
	fn := map[string]*profile.Function{}
	var fns []*profile.Function
	for i, n := range []string{"main", "loop", "relay", "write", "syscall"} {
		f := &profile.Function{ID: uint64(i + 1), Name: n}
		fn[n] = f
		fns = append(fns, f)
	}
	loc := func(id uint64, names ...string) *profile.Location {
		l := &profile.Location{ID: id, Address: 0x1000 * id}
		for _, n := range names {
			l.Line = append(l.Line, profile.Line{Function: fn[n]})
		}
		return l
	}
	lMain, lLoop, lRelay := loc(1, "main"), loc(2, "loop"), loc(3, "relay")
	lInl := loc(4, "write", "relay") // write inlined into relay
	lSys, lWrite := loc(5, "syscall"), loc(6, "write")
	ms := int64(time.Millisecond)
	return &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}},
		PeriodType: &profile.ValueType{Type: "cpu", Unit: "nanoseconds"},
		Period:     10 * ms,
		Function:   fns,
		Location:   []*profile.Location{lMain, lLoop, lRelay, lInl, lSys, lWrite},
		Sample: []*profile.Sample{
			{Location: []*profile.Location{lRelay, lLoop, lMain}, Value: []int64{6, 60 * ms}},
			{Location: []*profile.Location{lInl, lLoop, lMain}, Value: []int64{3, 30 * ms}},
			{Location: []*profile.Location{lSys, lWrite, lWrite, lLoop, lMain}, Value: []int64{1, 10 * ms}},
		},
	}
}

func TestSummarizeProfile(t *testing.T) {
	cpu, top := summarizeProfile(syntheticProfile(), 10)
	if cpu != 0.1 {
		t.Errorf("cpu seconds %v, want 0.1", cpu)
	}
	want := []ProfileEntry{
		{Function: "relay", FlatPct: 60, CumPct: 90},
		{Function: "write", FlatPct: 30, CumPct: 40},
		{Function: "syscall", FlatPct: 10, CumPct: 10},
	}
	if len(top) != len(want) {
		t.Fatalf("top %+v, want %+v", top, want)
	}
	for i := range want {
		if top[i] != want[i] {
			t.Errorf("top[%d] = %+v, want %+v", i, top[i], want[i])
		}
	}
	if _, top := summarizeProfile(syntheticProfile(), 2); len(top) != 2 || top[1].Function != "write" {
		t.Errorf("top 2: %+v", top)
	}
	if cpu, top := summarizeProfile(&profile.Profile{SampleType: []*profile.ValueType{{Type: "cpu", Unit: "nanoseconds"}}}, 10); cpu != 0 || len(top) != 0 {
		t.Errorf("empty profile: %v %+v", cpu, top)
	}
}

// fetchProfile waits for the window, asks for the right length, and
// saveProfile writes the raw bytes and summarises them.
func TestFetchAndSaveProfile(t *testing.T) {
	var raw bytes.Buffer
	if err := syntheticProfile().Write(&raw); err != nil {
		t.Fatal(err)
	}
	var gotSeconds string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/debug/pprof/profile" {
			http.NotFound(w, r)
			return
		}
		gotSeconds = r.URL.Query().Get("seconds")
		w.Write(raw.Bytes())
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := fetchProfile(ctx, srv.URL, time.Now(), 0, 7)
	if err != nil {
		t.Fatal(err)
	}
	if gotSeconds != "7" {
		t.Errorf("seconds=%q, want 7", gotSeconds)
	}
	file := filepath.Join(t.TempDir(), "cpu.pprof")
	pr, err := saveProfile(b, file)
	if err != nil {
		t.Fatal(err)
	}
	if pr.File != file || len(pr.Top) != 3 || pr.Top[0].Function != "relay" || pr.CPUSeconds != 0.1 {
		t.Errorf("report %+v", pr)
	}
	if saved, err := os.ReadFile(file); err != nil || !bytes.Equal(saved, raw.Bytes()) {
		t.Errorf("saved file differs from the profile served (%v)", err)
	}
	// A bridge without the profiler: a clear error.
	if _, err := fetchProfile(ctx, srv.URL+"/nothing", time.Now(), 0, 1); err == nil {
		t.Error("404 accepted")
	}
	if _, err := saveProfile([]byte("not a profile"), file); err == nil {
		t.Error("garbage parsed as a profile")
	}
}

func TestProfileWindow(t *testing.T) {
	for _, tc := range []struct {
		d       time.Duration
		after   time.Duration
		seconds int
	}{
		{60 * time.Second, 15 * time.Second, 30},
		{3 * time.Second, 750 * time.Millisecond, 2},
		{time.Second, 250 * time.Millisecond, 1},
	} {
		after, s := profileWindow(tc.d)
		if after != tc.after || s != tc.seconds {
			t.Errorf("%s: %s %d, want %s %d", tc.d, after, s, tc.after, tc.seconds)
		}
	}
}

// System calls are attributed to the first caller outside the standard
// library: which part of the bridge asked for them.
func TestSyscallCallers(t *testing.T) {
	names := []string{
		"internal/runtime/syscall/linux.Syscall6", "syscall.RawSyscall6", "syscall.Sendto",
		"internal/poll.(*FD).Write", "os.(*File).Write",
		"github.com/bib-project/bib/bridge.(*ioWorker).send", "github.com/bib-project/bib/recorder.(*WAVWriter).Write",
		"runtime.goexit", "github.com/bib-project/bib/bridge.(*Relay).forward", "golang.org/x/sys/unix.Syscall",
	}
	fn := map[string]*profile.Function{}
	locs := map[string]*profile.Location{}
	p := &profile.Profile{SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}}}
	for i, n := range names {
		fn[n] = &profile.Function{ID: uint64(i + 1), Name: n}
		locs[n] = &profile.Location{ID: uint64(i + 1), Line: []profile.Line{{Function: fn[n]}}}
		p.Function = append(p.Function, fn[n])
		p.Location = append(p.Location, locs[n])
	}
	stack := func(v int64, ns ...string) {
		s := &profile.Sample{Value: []int64{v, v * 1e7}}
		for _, n := range ns {
			s.Location = append(s.Location, locs[n])
		}
		p.Sample = append(p.Sample, s)
	}
	stack(5, "internal/runtime/syscall/linux.Syscall6", "syscall.RawSyscall6", "github.com/bib-project/bib/bridge.(*ioWorker).send", "runtime.goexit")
	stack(3, "internal/runtime/syscall/linux.Syscall6", "syscall.Sendto", "internal/poll.(*FD).Write", "os.(*File).Write",
		"github.com/bib-project/bib/recorder.(*WAVWriter).Write", "github.com/bib-project/bib/bridge.(*ioWorker).send")
	stack(1, "golang.org/x/sys/unix.Syscall", "runtime.goexit")
	stack(1, "github.com/bib-project/bib/bridge.(*Relay).forward", "runtime.goexit") // not a system call
	vi := cpuIndex(p)
	pct, by := syscallCallers(p, vi, sampleTotal(p, vi), 10)
	if pct != 90 {
		t.Errorf("syscall share %v%%, want 90", pct)
	}
	want := []ProfileEntry{
		{Function: "github.com/bib-project/bib/bridge.(*ioWorker).send", FlatPct: 50, CumPct: 50},
		{Function: "github.com/bib-project/bib/recorder.(*WAVWriter).Write", FlatPct: 30, CumPct: 30},
		{Function: "(runtime)", FlatPct: 10, CumPct: 10},
	}
	if len(by) != len(want) {
		t.Fatalf("callers %+v, want %+v", by, want)
	}
	for i := range want {
		if by[i] != want[i] {
			t.Errorf("caller %d = %+v, want %+v", i, by[i], want[i])
		}
	}
	for name, std := range map[string]bool{"os.(*File).Write": true, "internal/poll.(*FD).Write": true, "main.main": false,
		"github.com/a/b.F": false, "golang.org/x/sys/unix.Syscall": true, "golang.org/x/net/ipv4.(*PacketConn).WriteBatch": false} {
		if isStdFunc(name) != std {
			t.Errorf("isStdFunc(%q) = %v", name, !std)
		}
	}
}
