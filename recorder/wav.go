package recorder

import (
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
)

// WAV layout written here: the canonical 44-byte RIFF header (fmt chunk of
// 16 bytes, PCM format 1, 16 bits) followed by the data chunk.
const wavHeaderLen = 44

// WAVWriter writes 16-bit PCM WAV to a seekable sink. Sizes in the header
// are provisional until Flush, which rewrites them in place.
type WAVWriter struct {
	w        io.WriteSeeker
	rate     int
	channels int
	data     int64 // data chunk bytes written
	buf      []byte
	hdr      [wavHeaderLen]byte
}

// NewWAVWriter writes a header for an empty file and returns the writer.
// rate is 8000 or 16000, channels 1 or 2.
func NewWAVWriter(w io.WriteSeeker, rate, channels int) (*WAVWriter, error) {
	if (rate != 8000 && rate != 16000) || (channels != 1 && channels != 2) {
		return nil, fmt.Errorf("%w: %d Hz, %d channels", ErrFormat, rate, channels)
	}
	ww := &WAVWriter{w: w, rate: rate, channels: channels, buf: make([]byte, 8192)}
	putHeader(ww.hdr[:], rate, channels, 0)
	if _, err := w.Write(ww.hdr[:]); err != nil {
		return nil, fmt.Errorf("write wav header: %w", err)
	}
	return ww, nil
}

func putHeader(h []byte, rate, channels int, data int64) {
	align := channels * 2
	copy(h[0:], "RIFF")
	binary.LittleEndian.PutUint32(h[4:], uint32(36+data))
	copy(h[8:], "WAVEfmt ")
	binary.LittleEndian.PutUint32(h[16:], 16)
	binary.LittleEndian.PutUint16(h[20:], 1)
	binary.LittleEndian.PutUint16(h[22:], uint16(channels))
	binary.LittleEndian.PutUint32(h[24:], uint32(rate))
	binary.LittleEndian.PutUint32(h[28:], uint32(rate*align))
	binary.LittleEndian.PutUint16(h[32:], uint16(align))
	binary.LittleEndian.PutUint16(h[34:], 16)
	copy(h[36:], "data")
	binary.LittleEndian.PutUint32(h[40:], uint32(data))
}

// Write appends interleaved samples (len a multiple of the channel count).
func (w *WAVWriter) Write(pcm []int16) error {
	for len(pcm) > 0 {
		n := min(len(pcm), len(w.buf)/2)
		b := w.buf[:2*n]
		for i, s := range pcm[:n] {
			binary.LittleEndian.PutUint16(b[2*i:], uint16(s))
		}
		if _, err := w.w.Write(b); err != nil {
			return fmt.Errorf("write wav data: %w", err)
		}
		w.data += int64(len(b))
		pcm = pcm[n:]
	}
	return nil
}

// Frames returns how many sample frames were written.
func (w *WAVWriter) Frames() int64 { return w.data / int64(2*w.channels) }

// Bytes returns the file size so far.
func (w *WAVWriter) Bytes() int64 { return wavHeaderLen + w.data }

// Flush rewrites the header sizes for the data written so far and returns to
// the end of the file.
func (w *WAVWriter) Flush() error {
	binary.LittleEndian.PutUint32(w.hdr[4:], uint32(36+w.data))
	binary.LittleEndian.PutUint32(w.hdr[40:], uint32(w.data))
	if _, err := w.w.Seek(4, io.SeekStart); err != nil {
		return fmt.Errorf("wav header: %w", err)
	}
	if _, err := w.w.Write(w.hdr[4:8]); err != nil {
		return fmt.Errorf("wav header: %w", err)
	}
	if _, err := w.w.Seek(40, io.SeekStart); err != nil {
		return fmt.Errorf("wav header: %w", err)
	}
	if _, err := w.w.Write(w.hdr[40:44]); err != nil {
		return fmt.Errorf("wav header: %w", err)
	}
	if _, err := w.w.Seek(0, io.SeekEnd); err != nil {
		return fmt.Errorf("wav header: %w", err)
	}
	return nil
}

// WAVInfo describes a PCM WAV file.
type WAVInfo struct {
	Rate       int
	Channels   int
	DataOffset int64 // where the samples start
	DataBytes  int64
}

// Frames returns the number of sample frames.
func (i WAVInfo) Frames() int64 { return i.DataBytes / int64(2*i.Channels) }

// DurationMS returns the playing time in milliseconds.
func (i WAVInfo) DurationMS() int64 { return i.Frames() * 1000 / int64(i.Rate) }

// ParseWAVHeader reads the RIFF header of a 16-bit PCM WAV and returns its
// format and where the data chunk starts. DataBytes is what the header says.
func ParseWAVHeader(r io.ReaderAt) (WAVInfo, error) {
	var h [12]byte
	if _, err := r.ReadAt(h[:], 0); err != nil {
		return WAVInfo{}, fmt.Errorf("%w: %v", ErrNotWAV, err)
	}
	if string(h[0:4]) != "RIFF" || string(h[8:12]) != "WAVE" {
		return WAVInfo{}, fmt.Errorf("%w: no RIFF/WAVE magic", ErrNotWAV)
	}
	var info WAVInfo
	off := int64(12)
	gotFmt := false
	for range 16 { // a handful of chunks at most before data
		var ch [8]byte
		if _, err := r.ReadAt(ch[:], off); err != nil {
			return WAVInfo{}, fmt.Errorf("%w: chunk at %d: %v", ErrNotWAV, off, err)
		}
		size := int64(binary.LittleEndian.Uint32(ch[4:]))
		switch string(ch[0:4]) {
		case "fmt ":
			var f [16]byte
			if size < 16 {
				return WAVInfo{}, fmt.Errorf("%w: fmt chunk of %d bytes", ErrNotWAV, size)
			}
			if _, err := r.ReadAt(f[:], off+8); err != nil {
				return WAVInfo{}, fmt.Errorf("%w: fmt chunk: %v", ErrNotWAV, err)
			}
			if binary.LittleEndian.Uint16(f[0:]) != 1 || binary.LittleEndian.Uint16(f[14:]) != 16 {
				return WAVInfo{}, fmt.Errorf("%w: not 16-bit PCM", ErrNotWAV)
			}
			info.Channels = int(binary.LittleEndian.Uint16(f[2:]))
			info.Rate = int(binary.LittleEndian.Uint32(f[4:]))
			if info.Channels < 1 || info.Channels > 8 || info.Rate < 1000 || info.Rate > 192000 {
				return WAVInfo{}, fmt.Errorf("%w: %d Hz, %d channels", ErrNotWAV, info.Rate, info.Channels)
			}
			gotFmt = true
		case "data":
			if !gotFmt {
				return WAVInfo{}, fmt.Errorf("%w: data before fmt", ErrNotWAV)
			}
			info.DataOffset = off + 8
			info.DataBytes = size
			return info, nil
		}
		off += 8 + size + size&1
	}
	return WAVInfo{}, fmt.Errorf("%w: no data chunk", ErrNotWAV)
}

// RepairFile is what RepairWAV needs of a file; *os.File and storage.File
// satisfy it.
type RepairFile interface {
	io.ReaderAt
	io.WriterAt
	Truncate(size int64) error
	Stat() (fs.FileInfo, error)
}

// RepairWAV makes a WAV file whose writer died playable: it drops a
// trailing partial sample frame and rewrites the RIFF and data sizes from
// the file's length. It returns the repaired format.
func RepairWAV(f RepairFile) (WAVInfo, error) {
	info, err := ParseWAVHeader(f)
	if err != nil {
		return WAVInfo{}, err
	}
	fi, err := f.Stat()
	if err != nil {
		return WAVInfo{}, fmt.Errorf("repair wav: %w", err)
	}
	align := int64(2 * info.Channels)
	data := max(fi.Size()-info.DataOffset, 0)
	data -= data % align
	if data > 0xFFFFFFFF-info.DataOffset {
		data = (0xFFFFFFFF - info.DataOffset) / align * align
	}
	if err := f.Truncate(info.DataOffset + data); err != nil {
		return WAVInfo{}, fmt.Errorf("repair wav: %w", err)
	}
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], uint32(info.DataOffset-8+data))
	if _, err := f.WriteAt(b[:], 4); err != nil {
		return WAVInfo{}, fmt.Errorf("repair wav: %w", err)
	}
	binary.LittleEndian.PutUint32(b[:], uint32(data))
	if _, err := f.WriteAt(b[:], info.DataOffset-4); err != nil {
		return WAVInfo{}, fmt.Errorf("repair wav: %w", err)
	}
	info.DataBytes = data
	return info, nil
}
