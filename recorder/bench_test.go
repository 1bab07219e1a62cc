package recorder

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/bib-project/bib/bridge"
	"github.com/bib-project/bib/storage"
	"github.com/pion/rtp"
)

// discardStore hands out blobs that drop their bytes, to measure the
// recorder without the disk.
type discardStore struct{ storage.Store }

type discardBlob struct{ memFile }

func (discardStore) Create(context.Context, storage.Meta) (storage.Blob, error) {
	return &discardBlob{}, nil
}
func (discardStore) Update(context.Context, storage.Meta) error { return nil }

func (b *discardBlob) Write(p []byte) (int, error)                       { return len(p), nil }
func (b *discardBlob) ID() string                                        { return storage.NewID(wall0) }
func (b *discardBlob) Extra(string) (storage.File, error)                { return &discardBlob{}, nil }
func (b *discardBlob) Commit(context.Context, storage.Meta) error        { return nil }
func (b *discardBlob) Abort(context.Context, storage.Meta, string) error { return nil }

// BenchmarkPacket is the recorder's whole cost per RTP packet: the relay's
// non-blocking copy into the queue, then on the writer side the merge, the
// jitter buffer, decoding, placement and the stereo WAV write. "jitter":
// the first packets 5 ms late, then 0-4 ms of arrival jitter, so a pending
// anchor correction is checked on every packet (continuous audio never
// gives it room).
func BenchmarkPacket(b *testing.B) {
	for _, bc := range []struct {
		name  string
		delay func(i int) int64
	}{
		{"steady", func(int) int64 { return 0 }},
		{"jitter", func(i int) int64 {
			if i < 100 {
				return 5 * ms
			}
			return int64(i*7%5) * ms
		}},
	} {
		b.Run(bc.name, func(b *testing.B) { benchPacket(b, bc.delay, bc.name == "jitter") })
	}
}

func benchPacket(b *testing.B, delay func(i int) int64, jitter bool) {
	r, err := newRecorder(Defaults(), CallInfo{CallID: "bench", Start: wall0}, discardStore{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	r.media = pcmuMedia()
	r.rebind()
	payload := make([]byte, 160)
	for i := range payload {
		payload[i] = byte(i)
	}
	pkt := bridge.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SSRC: 1}, Payload: payload}
	var seq [2]uint16
	var ts [2]uint32
	sent := int64(0)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		d := bridge.Direction(i & 1)
		sent += 10 * ms
		seq[d]++
		ts[d] += 160
		arrival := max(sent+delay(i), r.now) // no reordering
		i++
		pkt.Header.SequenceNumber, pkt.Header.Timestamp, pkt.Header.SSRC, pkt.Arrival = seq[d], ts[d], uint32(d)+1, arrival
		r.RTP(d, &pkt)
		r.drain(false)
		r.advance(arrival)
	}
	for _, s := range r.streams {
		if st := s.stats; st.Late+st.Discarded+st.Resyncs+r.overflow[0].Load()+r.overflow[1].Load() != 0 {
			b.Fatalf("steady path dropped packets: %+v", st)
		}
		if pending := s.offset - s.best; i > 200 && (pending > 0) != jitter {
			b.Fatalf("pending anchor correction %d samples", pending)
		}
	}
}

// BenchmarkTapRTP is the relay goroutine's share: copy into the queue.
func BenchmarkTapRTP(b *testing.B) {
	r, err := newRecorder(Defaults(), CallInfo{CallID: "bench"}, discardStore{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	pkt := bridge.Packet{Header: rtp.Header{Version: 2, SSRC: 1}, Payload: make([]byte, 160)}
	b.ReportAllocs()
	for b.Loop() {
		r.RTP(bridge.AtoB, &pkt)
		r.q[0].peek()
		r.q[0].pop()
	}
}

// BenchmarkWAVWrite measures stereo WAV throughput to a real file.
func BenchmarkWAVWrite(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "bench.wav"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	w, err := NewWAVWriter(f, 8000, 2)
	if err != nil {
		b.Fatal(err)
	}
	pcm := tone(440, 3000, 0, 2*1600) // 200 ms of stereo
	b.SetBytes(int64(2 * len(pcm)))
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if err := w.Write(pcm); err != nil {
			b.Fatal(err)
		}
		if n++; n%5 == 0 {
			if err := w.Flush(); err != nil {
				b.Fatal(err)
			}
		}
		if n%5000 == 0 { // keep the file small
			_ = f.Truncate(wavHeaderLen)
			_, _ = f.Seek(wavHeaderLen, io.SeekStart)
		}
	}
}
