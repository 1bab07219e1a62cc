package storage

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
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
// under its new name is the commit point).
func (s *SealedFS) Rename(oldname, newname string) error {
	if err := s.Base.Rename(oldname+ESKSuffix, newname+ESKSuffix); err != nil {
		return err
	}
	return s.Base.Rename(oldname+EncSuffix, newname+EncSuffix)
}

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

func (f *sealedFile) Write(p []byte) (int, error)              { return f.w.Write(p) }
func (f *sealedFile) WriteAt(p []byte, off int64) (int, error) { return f.w.WriteAt(p, off) }
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
