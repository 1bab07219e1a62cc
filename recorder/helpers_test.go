package recorder

import (
	"bytes"
	"context"
	"io"
	"math"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bib-project/bib/bridge"
	"github.com/bib-project/bib/bridge/codec"
	"github.com/bib-project/bib/storage"
	"github.com/pion/rtp"
)

const ms = int64(time.Millisecond)

var wall0 = time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)

// harness feeds a Recorder the way the relay does: packets marshalled into
// one reused buffer, parsed with pion/rtp, handed over with their arrival
// time on an injected call clock.
type harness struct {
	t     *testing.T
	st    *storage.DirStore
	rec   *Recorder
	clock atomic.Int64
	buf   []byte
}

func newHarness(t *testing.T, cfg Config, info CallInfo, opts ...Option) *harness {
	t.Helper()
	st, err := storage.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return newHarnessStore(t, st, cfg, info, opts...)
}

func newHarnessStore(t *testing.T, st *storage.DirStore, cfg Config, info CallInfo, opts ...Option) *harness {
	t.Helper()
	h := &harness{t: t, st: st, buf: make([]byte, 1501)}
	opts = append([]Option{WithClock(h.clock.Load), WithWallClock(func() time.Time { return wall0 })}, opts...)
	rec, err := New(cfg, info, st, nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	h.rec = rec
	t.Cleanup(func() { rec.Close() })
	return h
}

func (h *harness) send(it item) {
	h.t.Helper()
	p := rtp.Packet{Header: it.hdr, Payload: it.payload}
	n, err := p.MarshalTo(h.buf)
	if err != nil {
		h.t.Fatal(err)
	}
	var parsed rtp.Packet
	if err := parsed.Unmarshal(h.buf[:n]); err != nil {
		h.t.Fatal(err)
	}
	h.rec.RTP(it.dir, &bridge.Packet{Header: parsed.Header, Payload: parsed.Payload, Raw: h.buf[:n], Arrival: it.arrival})
	clear(h.buf) // the relay reuses its read buffer
	if it.arrival > h.clock.Load() {
		h.clock.Store(it.arrival)
	}
}

func (h *harness) feed(items []item) {
	slices.SortStableFunc(items, func(a, b item) int {
		switch {
		case a.arrival < b.arrival:
			return -1
		case a.arrival > b.arrival:
			return 1
		}
		return 0
	})
	for _, it := range items {
		h.send(it)
	}
}

func (h *harness) answer(mono int64, media [2]bridge.MediaDesc) {
	h.rec.Event(bridge.Event{Kind: bridge.EvMedia, Media: media})
	h.rec.Event(bridge.Event{Kind: bridge.EvAnswer, Mono: mono, At: wall0.Add(time.Duration(mono))})
}

// end finishes the call at mono and returns the stored metadata and audio.
func (h *harness) end(mono int64) (storage.Meta, WAVInfo, []int16, []int16) {
	h.t.Helper()
	h.clock.Store(mono)
	h.rec.Event(bridge.Event{Kind: bridge.EvEnd, Mono: mono, At: wall0.Add(time.Duration(mono)), Reason: "bye from a"})
	if err := h.rec.Close(); err != nil {
		h.t.Fatalf("close: %v", err)
	}
	m, err := h.st.Get(context.Background(), h.rec.ID())
	if err != nil {
		h.t.Fatal(err)
	}
	info, l, r := readWAV(h.t, h.st, m.ID, "")
	return m, info, l, r
}

// readWAV returns a stored recording's format and channels (r is nil for mono).
func readWAV(t *testing.T, st storage.Store, id, track string) (WAVInfo, []int16, []int16) {
	t.Helper()
	f, _, err := st.Open(context.Background(), id, track)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return decodeWAV(t, b)
}

func decodeWAV(t *testing.T, b []byte) (WAVInfo, []int16, []int16) {
	t.Helper()
	info, err := ParseWAVHeader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	data := b[info.DataOffset:]
	if int64(len(data)) != info.DataBytes {
		t.Fatalf("data chunk says %d bytes, file has %d", info.DataBytes, len(data))
	}
	frames := len(data) / (2 * info.Channels)
	l := make([]int16, frames)
	var r []int16
	if info.Channels == 2 {
		r = make([]int16, frames)
	}
	for i := range frames {
		o := i * 2 * info.Channels
		l[i] = int16(uint16(data[o]) | uint16(data[o+1])<<8)
		if r != nil {
			r[i] = int16(uint16(data[o+2]) | uint16(data[o+3])<<8)
		}
	}
	return info, l, r
}

// item is one packet to deliver.
type item struct {
	dir     bridge.Direction
	hdr     rtp.Header
	payload []byte
	arrival int64
	k       int   // packet index within its party's stream
	sent    int64 // sender time of its first sample
}

// party is one talker: a signal sent as 20 ms G.711 packets.
type party struct {
	dir   bridge.Direction
	ssrc  uint32
	seq   uint16
	ts    uint32
	pt    uint8
	start int64   // sender time of the first sample (call clock)
	pcm   []int16 // the signal at 8 kHz
	enc   codec.Encoder
	dec   codec.Decoder
}

func newParty(t *testing.T, dir bridge.Direction, name string, start int64, pcm []int16) *party {
	t.Helper()
	enc, err := codec.NewEncoder(name)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := codec.NewDecoder(name)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := codec.Lookup(name)
	return &party{dir: dir, ssrc: 0x1000 + uint32(dir)*77, seq: 1000 + uint16(dir)*30000, ts: 5000 + uint32(dir)*900000,
		pt: uint8(info.StaticPT), start: start, pcm: pcm, enc: enc, dec: dec}
}

// packets cuts the signal into 20 ms packets, each arriving delay(k) after
// it was sent.
func (p *party) packets(delay func(k int) int64) []item {
	var out []item
	for k := 0; (k+1)*160 <= len(p.pcm); k++ {
		payload := make([]byte, 160)
		p.enc.Encode(payload, p.pcm[k*160:(k+1)*160])
		sent := p.start + int64(k)*20*ms
		out = append(out, item{
			dir: p.dir,
			hdr: rtp.Header{Version: 2, PayloadType: p.pt, SequenceNumber: p.seq + uint16(k),
				Timestamp: p.ts + uint32(k*160), SSRC: p.ssrc, Marker: k == 0},
			payload: payload, arrival: sent + delay(k), k: k, sent: sent,
		})
	}
	return out
}

// decoded is what a receiver of the party's packets hears.
func (p *party) decoded() []int16 {
	out := make([]int16, 0, len(p.pcm))
	buf := make([]byte, 160)
	pcm := make([]int16, 160)
	for k := 0; (k+1)*160 <= len(p.pcm); k++ {
		p.enc.Encode(buf, p.pcm[k*160:(k+1)*160])
		n := p.dec.Decode(pcm, buf)
		out = append(out, pcm[:n]...)
	}
	return out
}

// tone is dc + amp*sin(2 pi f t) at 8 kHz: never zero when dc > amp, so
// written silence is told apart from the signal.
func tone(freq, amp, dc float64, n int) []int16 {
	out := make([]int16, n)
	for i := range out {
		out[i] = int16(dc + amp*math.Sin(2*math.Pi*freq*float64(i)/8000))
	}
	return out
}

// addMarker puts a loud 10-sample burst at sample i.
func addMarker(pcm []int16, i int) {
	for j := range 10 {
		pcm[i+j] = 30000
	}
}

// findMarker returns the first sample louder than any test tone, or -1.
func findMarker(x []int16, from int) int {
	for i := from; i < len(x); i++ {
		if x[i] > 20000 {
			return i
		}
	}
	return -1
}

func pcmuMedia() [2]bridge.MediaDesc {
	d := bridge.MediaDesc{Codecs: []bridge.Codec{
		{PT: 0, Name: "PCMU", Rate: 8000, Channels: 1},
		{PT: 8, Name: "PCMA", Rate: 8000, Channels: 1},
		{PT: 101, Name: "telephone-event", Rate: 8000, Channels: 1, Fmtp: "0-15"},
		{PT: 13, Name: "CN", Rate: 8000, Channels: 1},
	}}
	return [2]bridge.MediaDesc{d, d}
}

func constDelay(d int64) func(int) int64 { return func(int) int64 { return d } }

// samplePos is the recording position of call-clock instant t.
func samplePos(t, origin int64) int { return int((t - origin) * 8000 / 1e9) }

func allZero(x []int16) bool {
	for _, v := range x {
		if v != 0 {
			return false
		}
	}
	return true
}

func countEvents(m storage.Meta, kind string) int {
	n := 0
	for _, e := range m.Events {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

type rtpHeader struct{ rtp.Header }
