package recorder

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bib-project/bib/storage"
)

// Fix is the storage.Fixer for recordings written by this package: it
// repairs the WAV sizes (or, when a crash left not even a header, writes an
// empty one in the recording's format) and derives duration and end time.
func Fix(f storage.File, m *storage.Meta) error {
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
	m.SampleRate, m.Channels = info.Rate, info.Channels
	m.DurationMS = info.DurationMS()
	if !m.StartTime.IsZero() {
		m.EndTime = m.StartTime.Add(time.Duration(info.Frames() * 1e9 / int64(info.Rate)))
	}
	return nil
}

// Repair finalizes the recordings a crash left unfinished in st (run it at
// start-up before recording anything) and returns them, marked interrupted.
func Repair(ctx context.Context, st storage.Store) ([]storage.Meta, error) {
	return st.Repair(ctx, Fix)
}
