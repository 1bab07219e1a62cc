package recorder

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bib-project/bib/bridge"
	"github.com/bib-project/bib/storage"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		bad  string
	}{
		{"defaults", func(*Config) {}, ""},
		{"jitter low", func(c *Config) { c.JitterMS = 5 }, "jitter_ms 5"},
		{"jitter high", func(c *Config) { c.JitterMS = 5000 }, "jitter_ms 5000"},
		{"queue", func(c *Config) { c.QueuePackets = 0 }, "queue_packets 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Defaults()
			tc.mod(&c)
			err := c.Validate()
			if tc.bad == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.bad) {
				t.Fatalf("got %v, want %q", err, tc.bad)
			}
		})
	}
}

func TestQueue(t *testing.T) {
	q := newQueue(10) // rounds up to 16
	var h rtpHeader
	for i := range 16 {
		h.SequenceNumber = uint16(i)
		if !q.push(&h.Header, []byte{byte(i)}, int64(i)) {
			t.Fatalf("push %d refused", i)
		}
	}
	if q.push(&h.Header, nil, 0) {
		t.Fatal("push into a full queue accepted")
	}
	for i := range 16 {
		p := q.peek()
		if p == nil || p.sn != uint16(i) || p.payload[0] != byte(i) || p.n != 1 {
			t.Fatalf("pop %d: %+v", i, p)
		}
		q.pop()
	}
	if q.peek() != nil {
		t.Fatal("empty queue returned a packet")
	}
}

// faultFS wraps the OS file system: writes to audio files can block until
// released, or fail with ENOSPC after a number of bytes.
type faultFS struct {
	storage.OSFS
	mu       sync.Mutex
	limit    int64 // bytes of audio accepted before ENOSPC; <0: no limit
	written  int64
	gate     chan struct{} // audio data writes wait on it when non-nil
	blocked  chan struct{} // closed when the first write waits
	onceBlck sync.Once
}

type faultFile struct {
	storage.File
	fs *faultFS
}

func (f *faultFS) OpenFile(name string, flag int, perm fs.FileMode) (storage.File, error) {
	file, err := f.OSFS.OpenFile(name, flag, perm)
	if err != nil || !strings.HasSuffix(name, ".wav.part") {
		return file, err
	}
	return &faultFile{File: file, fs: f}, nil
}

func (f *faultFile) Write(p []byte) (int, error) {
	if len(p) > 44 && f.fs.gate != nil {
		f.fs.onceBlck.Do(func() { close(f.fs.blocked) })
		<-f.fs.gate
	}
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.fs.limit >= 0 && f.fs.written+int64(len(p)) > f.fs.limit {
		return 0, &os.PathError{Op: "write", Path: "recording", Err: syscall.ENOSPC}
	}
	f.fs.written += int64(len(p))
	return f.File.Write(p)
}

func openFaultStore(t *testing.T, ffs *faultFS) (*storage.DirStore, string) {
	t.Helper()
	dir := t.TempDir()
	st, err := storage.OpenDir(dir, storage.WithFS(ffs))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st, dir
}

// Disk full: the recording fails with the reason, the partial file is gone,
// the error is counted once, and the relay side never notices.
func TestDiskFull(t *testing.T) {
	ffs := &faultFS{limit: 20000}
	st, dir := openFaultStore(t, ffs)
	var mt Metrics
	h := newHarnessStore(t, st, Defaults(), CallInfo{CallID: "full"}, WithMetrics(&mt))
	a := newParty(t, bridge.AtoB, "PCMU", 0, tone(440, 2000, 3000, 8000*3))
	h.answer(0, pcmuMedia())
	h.feed(a.packets(constDelay(5 * ms)))
	h.clock.Store(3100 * ms)
	h.rec.Event(bridge.Event{Kind: bridge.EvEnd, Mono: 3100 * ms})
	err := h.rec.Close()
	if !errors.Is(err, ErrArchive) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("close: %v", err)
	}
	m, err := st.Get(context.Background(), h.rec.ID())
	if err != nil {
		t.Fatal(err)
	}
	if m.Status != storage.StatusFailed || !strings.Contains(m.Reason, "no space left") {
		t.Fatalf("meta status %s reason %q", m.Status, m.Reason)
	}
	if mt.Failed.Load() != 1 || mt.WriteErrors.Load() != 1 || mt.Active.Load() != 0 {
		t.Fatalf("metrics failed %d write errors %d active %d", mt.Failed.Load(), mt.WriteErrors.Load(), mt.Active.Load())
	}
	if h.rec.Stats().Status != storage.StatusFailed {
		t.Fatalf("stats %+v", h.rec.Stats())
	}
	parts, _ := filepath.Glob(filepath.Join(dir, "recordings", "*", "*", "*", "*.part"))
	if len(parts) != 0 {
		t.Fatalf("partial files left: %v", parts)
	}
	if _, _, err := st.Open(context.Background(), m.ID, ""); !errors.Is(err, storage.ErrNoAudio) {
		t.Fatalf("open failed recording: %v", err)
	}
}

// A stalled disk fills the queue: the relay is never blocked, the overflow
// is counted, becomes a gap and an event.
func TestOverflow(t *testing.T) {
	ffs := &faultFS{limit: -1, gate: make(chan struct{}), blocked: make(chan struct{})}
	st, _ := openFaultStore(t, ffs)
	cfg := Defaults()
	cfg.QueuePackets = 16
	h := newHarnessStore(t, st, cfg, CallInfo{CallID: "slow"})
	a := newParty(t, bridge.AtoB, "PCMU", 0, tone(440, 2000, 3000, 8000*3))
	h.answer(0, pcmuMedia())
	items := a.packets(constDelay(5 * ms))
	i := 0
	for ; i < 40; i++ { // 800 ms: the writer starts writing and hangs
		h.send(items[i])
	}
	<-ffs.blocked
	for ; i < 80; i++ {
		h.send(items[i]) // returns although nothing drains the queue
	}
	close(ffs.gate)
	for ; i < len(items); i++ {
		h.send(items[i])
	}
	m, _, left, _ := h.end(3100 * ms)
	s := m.Near.Stream
	if s.Overflow == 0 || s.Packets+s.Overflow != uint64(len(items)) {
		t.Fatalf("overflow %d, placed %d, sent %d", s.Overflow, s.Packets, len(items))
	}
	// Drops followed by placed audio are lost sequence numbers and a gap.
	if countEvents(m, "overflow") == 0 || s.Gaps == 0 || s.Lost == 0 || s.Lost > s.Overflow {
		t.Fatalf("stats %+v events %+v", s, m.Events)
	}
	if m.Status != storage.StatusComplete || len(left) != 3100*8 {
		t.Fatalf("status %s frames %d", m.Status, len(left))
	}
}

// Mono and mixed tracks, pause/resume from the API, and Stop.
func TestTracksPauseStop(t *testing.T) {
	cfg := Defaults()
	cfg.MonoFiles, cfg.MixedFile = true, true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h := newHarness(t, cfg, CallInfo{CallID: "sel", Start: wall0, StartMono: 0})
	a := newParty(t, bridge.AtoB, "PCMU", 0, tone(440, 2000, 3000, 8000*3))
	b := newParty(t, bridge.BtoA, "PCMU", 0, tone(900, 2000, -3000, 8000*3))
	items := append(a.packets(constDelay(5*ms)), b.packets(constDelay(5*ms))...)
	slices.SortStableFunc(items, func(x, y item) int { return int(x.arrival - y.arrival) })
	for _, it := range items {
		switch {
		case it.arrival >= 1000*ms && h.clock.Load() < 1000*ms:
			h.clock.Store(1000 * ms)
			if err := h.rec.Pause(ctx); err != nil {
				t.Fatal(err)
			}
		case it.arrival >= 2000*ms && h.clock.Load() < 2000*ms:
			h.clock.Store(2000 * ms)
			if err := h.rec.Resume(ctx); err != nil {
				t.Fatal(err)
			}
		}
		h.send(it)
	}
	h.clock.Store(3100 * ms)
	if err := h.rec.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.rec.Pause(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("pause after stop: %v", err)
	}
	m, err := h.st.Get(ctx, h.rec.ID())
	if err != nil {
		t.Fatal(err)
	}
	if m.DurationMS != 3100 || countEvents(m, "recording_paused") != 1 || countEvents(m, "recording_resumed") != 1 {
		t.Fatalf("duration %d events %+v", m.DurationMS, m.Events)
	}
	_, l, r := readWAV(t, h.st, m.ID, "")
	if !allZero(l[8000:16000]) || !allZero(r[8000:16000]) || l[7999] == 0 || l[16000] == 0 {
		t.Error("paused span is not exactly silent")
	}
	_, near, _ := readWAV(t, h.st, m.ID, "near")
	_, far, _ := readWAV(t, h.st, m.ID, "far")
	_, mix, _ := readWAV(t, h.st, m.ID, "mixed")
	if !slices.Equal(near, l) || !slices.Equal(far, r) || len(mix) != len(l) {
		t.Fatal("mono tracks differ from the stereo channels")
	}
	for i := range mix {
		if want := int16((int32(l[i]) + int32(r[i])) / 2); mix[i] != want {
			t.Fatalf("mix sample %d = %d, want %d", i, mix[i], want)
		}
	}
	if len(m.Tracks) != 3 {
		t.Fatalf("tracks %+v", m.Tracks)
	}
	if probs, err := h.st.Verify(ctx); err != nil || len(probs) != 0 {
		t.Fatalf("verify: %v %+v", err, probs)
	}
}

// Close without an end event finalizes; it is idempotent.
func TestCloseIdempotent(t *testing.T) {
	h := newHarness(t, Defaults(), CallInfo{CallID: "x"})
	h.answer(0, pcmuMedia())
	h.clock.Store(500 * ms)
	if err := h.rec.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.rec.Close(); err != nil {
		t.Fatal(err)
	}
	h.rec.Event(bridge.Event{Kind: bridge.EvHold}) // after the end: ignored, does not block
	m, err := h.st.Get(context.Background(), h.rec.ID())
	if err != nil || m.Status != storage.StatusComplete || m.DurationMS != 500 {
		t.Fatalf("%v %+v", err, m)
	}
}
