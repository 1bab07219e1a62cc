package storage

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"
)

// Suffixes of the two files an encrypted NAME is stored as.
const (
	EncSuffix = ".enc"
	ESKSuffix = ".esk"
)

// SealedFS is an FS that encrypts at rest: a file NAME opened for writing
// is stored as NAME.enc (the chunked AES-256-GCM format, see seal.go) and
// NAME.esk (its random content key wrapped with RSA-OAEP for To). No
// plaintext reaches Base.
//
// Files opened for writing accept sequential writes, rewrites of their first
// 64 bytes (a WAV header) and of data not yet sealed, Seek, Sync (which seals
// what was written so far, then syncs) and Close (final chunk, sync, close).
// A rewrite of the first 64 bytes after more data was written also seals
// what was written so far (without syncing): see Write.
// Read, ReadAt and Truncate need the plaintext and fail with ErrSealed, as
// does reopening an existing file for writing (the key is not kept).
//
// A file opened read-only reads as its ciphertext (NAME.enc): that is what
// hashes, verification and an API serving encrypted recordings as they are
// want. Decrypt with OpenSealedFile and the private key.
type SealedFS struct {
	Base FS
	To   *Recipient
	// ChunkSize is the data chunk size in bytes (0: 64 KiB).
	ChunkSize int
	// Now stamps the .esk (nil: time.Now).
	Now func() time.Time
}

var _ FS = (*SealedFS)(nil)

// OpenFile implements FS.
func (s *SealedFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	if flag&(os.O_WRONLY|os.O_RDWR) == 0 {
		return s.Base.OpenFile(name+EncSuffix, flag, perm)
	}
	if flag&os.O_CREATE == 0 {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fmt.Errorf("%w: an encrypted file cannot be reopened for writing", ErrSealed)}
	}
	if flag&os.O_APPEND != 0 {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fmt.Errorf("%w: O_APPEND is not supported", ErrSealed)}
	}
	if s.To == nil || s.To.Key == nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: errors.New("encrypted file system without a certificate")}
	}
	excl := flag & os.O_EXCL
	enc, err := s.Base.OpenFile(name+EncSuffix, os.O_RDWR|os.O_CREATE|os.O_TRUNC|excl, perm)
	if err != nil {
		return nil, err
	}
	f, err := s.create(name, enc, perm)
	if err != nil {
		_ = enc.Close()
		_ = s.Base.Remove(name + EncSuffix)
		_ = s.Base.Remove(name + ESKSuffix)
		return nil, err
	}
	return f, nil
}

func (s *SealedFS) create(name string, enc File, perm fs.FileMode) (*sealedFile, error) {
	key, id := NewContentKey()
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	esk, err := WrapKey(s.To, key, id, now())
	if err != nil {
		return nil, err
	}
	kf, err := s.Base.OpenFile(name+ESKSuffix, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return nil, err
	}
	_, err = kf.Write(esk)
	if err == nil {
		err = kf.Sync()
	}
	if cerr := kf.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("write %s%s: %w", name, ESKSuffix, err)
	}
	var opts []SealOption
	if s.ChunkSize > 0 {
		opts = append(opts, WithChunkSize(s.ChunkSize))
	}
	w, err := NewSealWriter(enc, key, id, opts...)
	if err != nil {
		return nil, err
	}
	clear(key)
	return &sealedFile{w: w, base: enc, name: name}, nil
}

// Rename implements FS: NAME.esk first, then NAME.enc (the .enc appearing
// under its new name is the commit point). A rename that a crash cut
// between the two (the .esk already moved) completes.
func (s *SealedFS) Rename(oldname, newname string) error {
	if err := s.Base.Rename(oldname+ESKSuffix, newname+ESKSuffix); err != nil {
		if !errors.Is(err, fs.ErrNotExist) || !s.exists(newname+ESKSuffix) {
			return err
		}
	}
	return s.Base.Rename(oldname+EncSuffix, newname+EncSuffix)
}

func (s *SealedFS) exists(name string) bool {
	f, err := s.Base.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return false
	}
	_ = f.Close()
	return true
}

// DiskNames returns the files a logical NAME is stored as: NAME.enc (the
// data) and NAME.esk (its key).
func (s *SealedFS) DiskNames(name string) []string {
	return []string{name + EncSuffix, name + ESKSuffix}
}

// LogicalName maps NAME.enc or NAME.esk back to NAME.
func (s *SealedFS) LogicalName(disk string) (string, bool) {
	for _, suf := range []string{EncSuffix, ESKSuffix} {
		if n, ok := strings.CutSuffix(disk, suf); ok && n != "" {
			return n, true
		}
	}
	return "", false
}

// ReadKey returns the content of NAME.esk.
func (s *SealedFS) ReadKey(name string) ([]byte, error) {
	f, err := s.Base.OpenFile(name+ESKSuffix, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, 64<<10))
}

// openView opens NAME read-only for a repair that cannot decrypt: Stat
// reports the plaintext size its whole chunks declare (not authenticated),
// every read or write fails with ErrSealed.
func (s *SealedFS) openView(name string) (File, error) {
	f, err := s.Base.OpenFile(name+EncSuffix, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil {
		var pt int64
		pt, err = SealedSize(f, fi.Size())
		fi = sealedInfo{FileInfo: fi, size: pt}
	}
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &sealedView{base: f, info: fi, name: name}, nil
}

// sealedView is an encrypted file opened by openView.
type sealedView struct {
	base File
	info fs.FileInfo
	name string
}

func (v *sealedView) err(op string) error { return &fs.PathError{Op: op, Path: v.name, Err: ErrSealed} }

func (v *sealedView) Read([]byte) (int, error)           { return 0, v.err("read") }
func (v *sealedView) ReadAt([]byte, int64) (int, error)  { return 0, v.err("read") }
func (v *sealedView) Write([]byte) (int, error)          { return 0, v.err("write") }
func (v *sealedView) WriteAt([]byte, int64) (int, error) { return 0, v.err("write") }
func (v *sealedView) Seek(int64, int) (int64, error)     { return 0, v.err("seek") }
func (v *sealedView) Truncate(int64) error               { return v.err("truncate") }
func (v *sealedView) Sync() error                        { return nil }
func (v *sealedView) Stat() (fs.FileInfo, error)         { return v.info, nil }
func (v *sealedView) Close() error                       { return v.base.Close() }

// Remove implements FS: both files; the error is the .enc's (fs.ErrNotExist
// when there was none).
func (s *SealedFS) Remove(name string) error {
	err := s.Base.Remove(name + EncSuffix)
	if kerr := s.Base.Remove(name + ESKSuffix); kerr != nil && !errors.Is(kerr, fs.ErrNotExist) && err == nil {
		err = kerr
	}
	return err
}

// sealedFile is an encrypted file being written.
type sealedFile struct {
	w      *SealWriter
	base   File
	name   string
	closed bool
}

var _ File = (*sealedFile)(nil)

func (f *sealedFile) sealedErr(op string) error {
	return &fs.PathError{Op: op, Path: f.name, Err: ErrSealed}
}

func (f *sealedFile) Read([]byte) (int, error)          { return 0, f.sealedErr("read") }
func (f *sealedFile) ReadAt([]byte, int64) (int, error) { return 0, f.sealedErr("read") }
func (f *sealedFile) Truncate(int64) error              { return f.sealedErr("truncate") }

// Write and WriteAt treat a rewrite of the header chunk once data follows
// it (a WAV header's sizes, which the recorder refreshes every second) as a
// checkpoint: everything written so far is sealed to the file (no fsync),
// so a killed process loses no more than with a file in clear, the audio
// since the last header refresh.
func (f *sealedFile) Write(p []byte) (int, error) {
	pos, _ := f.w.Seek(0, io.SeekCurrent)
	checkpoint := f.isCheckpoint(pos)
	n, err := f.w.Write(p)
	if err == nil && checkpoint {
		err = f.w.Flush()
	}
	return n, err
}

func (f *sealedFile) WriteAt(p []byte, off int64) (int, error) {
	checkpoint := f.isCheckpoint(off)
	n, err := f.w.WriteAt(p, off)
	if err == nil && checkpoint {
		err = f.w.Flush()
	}
	return n, err
}

func (f *sealedFile) isCheckpoint(off int64) bool {
	return off < sealHeadChunk && f.w.Size() > sealHeadChunk
}
func (f *sealedFile) Seek(off int64, whence int) (int64, error) {
	return f.w.Seek(off, whence)
}

// Sync seals what was written (a short chunk, and the header chunk if it
// changed) and syncs the ciphertext file.
func (f *sealedFile) Sync() error {
	if err := f.w.Flush(); err != nil {
		return err
	}
	return f.base.Sync()
}

// Stat returns the ciphertext file's info with the plaintext size and name.
func (f *sealedFile) Stat() (fs.FileInfo, error) {
	fi, err := f.base.Stat()
	if err != nil {
		return nil, err
	}
	return sealedInfo{FileInfo: fi, size: f.w.Size()}, nil
}

// Close seals the final chunk, syncs and closes the ciphertext file.
func (f *sealedFile) Close() error {
	if f.closed {
		return nil
	}
	f.closed = true
	err := f.w.Close()
	if err == nil {
		err = f.base.Sync()
	}
	return errors.Join(err, f.base.Close())
}

type sealedInfo struct {
	fs.FileInfo
	size int64
}

func (i sealedInfo) Size() int64 { return i.size }

// Compile-time checks.
var (
	_ io.WriteSeeker = (*SealWriter)(nil)
	_ io.ReadSeeker  = (*SealedReader)(nil)
	_ io.ReaderAt    = (*SealedReader)(nil)
)
