package recorder

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/bib-project/bib/storage"
)

// Fix is the storage.Fixer for recordings written by this package: it
// repairs the WAV sizes (or, when a crash left not even a header, writes an
// empty one in the recording's format) and derives duration and end time.
//
// An encrypted file cannot be repaired without the key: the store hands Fix
// a view that refuses reads and writes (storage.ErrSealed) but whose Stat
// gives the plaintext size; Fix then only estimates the duration from that
// size and the recording's format, and the sizes in the WAV header are
// fixed when the file is decrypted (WAVView).
func Fix(f storage.File, m *storage.Meta) error {
	var probe [1]byte
	if _, err := f.ReadAt(probe[:], 0); errors.Is(err, storage.ErrSealed) {
		return estimateSealed(f, m)
	}
	info, err := RepairWAV(f)
	if errors.Is(err, ErrNotWAV) {
		rate, ch := m.SampleRate, m.Channels
		if rate != 8000 && rate != 16000 {
			rate = 8000
		}
		if ch != 1 && ch != 2 {
			ch = 2
		}
		var h [wavHeaderLen]byte
		putHeader(h[:], rate, ch, 0)
		if err := f.Truncate(0); err != nil {
			return fmt.Errorf("rewrite wav header: %w", err)
		}
		if _, err := f.WriteAt(h[:], 0); err != nil {
			return fmt.Errorf("rewrite wav header: %w", err)
		}
		info = WAVInfo{Rate: rate, Channels: ch, DataOffset: wavHeaderLen}
	} else if err != nil {
		return err
	}
	setDuration(m, info)
	return nil
}

func setDuration(m *storage.Meta, info WAVInfo) {
	m.SampleRate, m.Channels = info.Rate, info.Channels
	m.DurationMS = info.DurationMS()
	if !m.StartTime.IsZero() {
		m.EndTime = m.StartTime.Add(time.Duration(info.Frames() * 1e9 / int64(info.Rate)))
	}
}

// estimateSealed derives the duration of an encrypted WAV this package
// wrote (canonical 44-byte header) from its plaintext size, when the
// recording's format is known.
func estimateSealed(f storage.File, m *storage.Meta) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if (m.SampleRate != 8000 && m.SampleRate != 16000) || (m.Channels != 1 && m.Channels != 2) {
		return fmt.Errorf("%w: format unknown (%d Hz, %d channels): duration not estimated", ErrFormat, m.SampleRate, m.Channels)
	}
	align := int64(2 * m.Channels)
	data := max(fi.Size()-wavHeaderLen, 0)
	setDuration(m, WAVInfo{Rate: m.SampleRate, Channels: m.Channels, DataOffset: wavHeaderLen, DataBytes: data - data%align})
	return nil
}

// Repair finalizes the recordings a crash left unfinished in st (run it at
// start-up before recording anything) and returns them, marked interrupted.
func Repair(ctx context.Context, st storage.Store) ([]storage.Meta, error) {
	return st.Repair(ctx, Fix)
}

// WAVView presents the size bytes of a WAV whose writer died (r: for
// example the authenticated part of an interrupted encrypted recording) as
// a well-formed file, without copying or modifying it: a trailing partial
// sample frame is left out and the RIFF and data sizes in the header are
// the ones the length implies, as RepairWAV would write them. It returns
// the view (seekable, io.ReaderAt) and the repaired format; ErrNotWAV when
// the bytes do not start with a PCM WAV header.
func WAVView(r io.ReaderAt, size int64) (*io.SectionReader, WAVInfo, error) {
	info, err := ParseWAVHeader(io.NewSectionReader(r, 0, size))
	if err != nil {
		return nil, WAVInfo{}, err
	}
	align := int64(2 * info.Channels)
	data := max(size-info.DataOffset, 0)
	data -= data % align
	if data > 0xFFFFFFFF-info.DataOffset {
		data = (0xFFFFFFFF - info.DataOffset) / align * align
	}
	info.DataBytes = data
	hdr := make([]byte, info.DataOffset)
	if _, err := r.ReadAt(hdr, 0); err != nil {
		return nil, WAVInfo{}, fmt.Errorf("%w: %v", ErrNotWAV, err)
	}
	binary.LittleEndian.PutUint32(hdr[4:], uint32(info.DataOffset-8+data))
	binary.LittleEndian.PutUint32(hdr[info.DataOffset-4:], uint32(data))
	v := &headerOverlay{hdr: hdr, r: r}
	return io.NewSectionReader(v, 0, info.DataOffset+data), info, nil
}

// headerOverlay reads hdr in place of the first len(hdr) bytes of r.
type headerOverlay struct {
	hdr []byte
	r   io.ReaderAt
}

func (o *headerOverlay) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	if off < int64(len(o.hdr)) {
		n = copy(p, o.hdr[off:])
		if n == len(p) {
			return n, nil
		}
	}
	k, err := o.r.ReadAt(p[n:], off+int64(n))
	return n + k, err
}
