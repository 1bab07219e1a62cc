package storage

import (
	"context"
	"io"
	"io/fs"
	"os"
)

// Store is an archive backend. Implementations are safe for concurrent use.
type Store interface {
	// Create registers a new recording (status recording unless set) and
	// returns the blob its audio is written to. An empty meta.ID gets a new
	// time-sortable id.
	Create(ctx context.Context, meta Meta) (Blob, error)
	// Get returns a recording's metadata.
	Get(ctx context.Context, id string) (Meta, error)
	// List returns recordings newest first, and a cursor for the next page
	// ("" when there is none).
	List(ctx context.Context, q Query) ([]Meta, string, error)
	// Open returns a recording's audio file (track "" is the main file).
	Open(ctx context.Context, id, track string) (io.ReadSeekCloser, Meta, error)
	// Update replaces a recording's metadata (id, file and hash stay).
	Update(ctx context.Context, meta Meta) error
	// Repair finalizes the recordings a crash left unfinished: fix makes each
	// partial file well-formed, then the recording is hashed, renamed and
	// marked interrupted. It returns the recordings it touched.
	Repair(ctx context.Context, fix Fixer) ([]Meta, error)
	// Verify re-hashes every finished recording and reports missing, corrupt
	// and orphaned files.
	Verify(ctx context.Context) ([]Problem, error)
	Close() error
}

// Blob is one recording being written: the main file plus optional extra
// tracks. Exactly one of Commit or Abort finishes it.
type Blob interface {
	File
	// ID is the recording's id.
	ID() string
	// Extra opens an additional track file of this recording (name: [a-z0-9]{1,16}).
	Extra(name string) (File, error)
	// Commit flushes, hashes and publishes the files and stores meta
	// (status complete unless meta says otherwise).
	Commit(ctx context.Context, meta Meta) error
	// Abort discards the files and stores meta with status failed and reason.
	Abort(ctx context.Context, meta Meta, reason string) error
}

// File is a recording file as the writer and Repair see it. *os.File
// satisfies it.
type File interface {
	io.Reader
	io.Writer
	io.Seeker
	io.ReaderAt
	io.WriterAt
	Sync() error
	Truncate(size int64) error
	Stat() (fs.FileInfo, error)
	Close() error
}

// FS is the one place where recording bytes hit the disk. The default is the
// operating system; an encrypting implementation (or a fault-injecting one in
// tests) wraps it.
type FS interface {
	OpenFile(name string, flag int, perm fs.FileMode) (File, error)
	Rename(oldname, newname string) error
	Remove(name string) error
}

// Fixer repairs one partial file in place after a crash and may fill in
// fields of m it can derive from the bytes (duration, end time, format).
type Fixer func(f File, m *Meta) error

// OSFS is the FS of the operating system.
type OSFS struct{}

func (OSFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return f, nil
}

func (OSFS) Rename(oldname, newname string) error { return os.Rename(oldname, newname) }
func (OSFS) Remove(name string) error             { return os.Remove(name) }
