package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
)

// DirStore is the default Store: files under dir/recordings/YYYY/MM/DD and
// an SQLite index at dir/index.db.
type DirStore struct {
	dir    string
	fs     FS        // new recordings are written through it
	plain  FS        // recordings stored in clear are read through it
	sealed *SealedFS // encrypted recordings are read through it (ciphertext)
	idx    *index
	now    func() time.Time
	log    *slog.Logger
	closed atomic.Bool
}

var _ Store = (*DirStore)(nil)

// DirOption configures OpenDir.
type DirOption func(*DirStore)

// WithFS replaces the file system recording bytes are written through.
func WithFS(f FS) DirOption { return func(s *DirStore) { s.fs = f } }

// WithNow injects the wall clock used for new ids.
func WithNow(now func() time.Time) DirOption { return func(s *DirStore) { s.now = now } }

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) DirOption { return func(s *DirStore) { s.log = l } }

const (
	partSuffix    = ".part"
	reasonCrashed = "bib stopped before the recording was finalized; repaired at start-up"
	reasonSealed  = "bib stopped before the recording was finalized; the encrypted file was kept as it was " +
		"(the server does not hold the key): it has no final chunk, and its WAV header sizes are fixed when it is decrypted"
)

// OpenDir opens (creating if needed) the archive under dir.
func OpenDir(dir string, opts ...DirOption) (*DirStore, error) {
	s := &DirStore{dir: dir, fs: OSFS{}, now: time.Now, log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(s)
	}
	// Every archive can hold both kinds (encryption switched on or off
	// later): each recording says which, and is read through its own layout.
	if sf, ok := s.fs.(*SealedFS); ok {
		s.plain, s.sealed = sf.Base, sf
	} else {
		s.plain, s.sealed = s.fs, &SealedFS{Base: s.fs}
	}
	if err := os.MkdirAll(filepath.Join(dir, "recordings"), 0o750); err != nil {
		return nil, fmt.Errorf("open archive %s: %w", dir, err)
	}
	idx, err := openIndex(context.Background(), filepath.Join(dir, "index.db"))
	if err != nil {
		return nil, err
	}
	s.idx = idx
	return s, nil
}

// Dir returns the archive's root directory.
func (s *DirStore) Dir() string { return s.dir }

// Close closes the index. Blobs still open stay writable but cannot commit.
func (s *DirStore) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	return s.idx.close()
}

func (s *DirStore) abs(rel string) string { return filepath.Join(s.dir, filepath.FromSlash(rel)) }

// encrypts reports whether new recordings are encrypted.
func (s *DirStore) encrypts() bool { return s.fs == FS(s.sealed) }

// fsOf returns the FS a recording's files are stored through: the sealed
// layout (NAME.enc + NAME.esk, read as ciphertext) for an encrypted one,
// the plain one otherwise, whatever new recordings use.
func (s *DirStore) fsOf(encrypted bool) FS {
	if encrypted {
		return s.sealed
	}
	return s.plain
}

// namer is an FS that stores a logical file under other names on disk
// (SealedFS: NAME.enc + NAME.esk). DirStore asks it instead of assuming a
// file is on disk under its own name.
type namer interface {
	// DiskNames returns the on-disk names of a logical file, data first.
	DiskNames(name string) []string
	// LogicalName maps an on-disk name back to its logical file.
	LogicalName(disk string) (string, bool)
}

func diskNames(fsys FS, name string) []string {
	if n, ok := fsys.(namer); ok {
		return n.DiskNames(name)
	}
	return []string{name}
}

func logicalName(fsys FS, disk string) (string, bool) {
	if n, ok := fsys.(namer); ok {
		return n.LogicalName(disk)
	}
	return disk, true
}

// exists reports whether the logical file name is there (its data file).
func exists(fsys FS, name string) bool {
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return false
	}
	_ = f.Close()
	return true
}

// trackRel returns the relative path of a recording's track ("" = main).
func trackRel(mainRel, track string) string {
	if track == "" {
		return mainRel
	}
	return strings.TrimSuffix(mainRel, ".wav") + "." + track + ".wav"
}

func sidecarRel(mainRel string) string { return strings.TrimSuffix(mainRel, ".wav") + ".json" }

func validTrack(name string) bool {
	if name == "" || len(name) > 16 {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// Create implements Store.
func (s *DirStore) Create(ctx context.Context, m Meta) (Blob, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	if m.ID == "" {
		m.ID = NewID(s.now())
	}
	if !ValidID(m.ID) {
		return nil, fmt.Errorf("create %q: %w", m.ID, ErrInvalidID)
	}
	if m.Status == "" {
		m.Status = StatusRecording
	}
	m.Encrypted = s.encrypts()
	day := idTime(m.ID)
	rel := fmt.Sprintf("recordings/%04d/%02d/%02d/%s.wav", day.Year(), day.Month(), day.Day(), m.ID)
	if err := os.MkdirAll(filepath.Dir(s.abs(rel)), 0o750); err != nil {
		return nil, fmt.Errorf("create %s: %w", m.ID, err)
	}
	f, err := s.fs.OpenFile(s.abs(rel)+partSuffix, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", m.ID, err)
	}
	if err := s.writeSidecar(rel, m); err != nil {
		f.Close()
		_ = s.fs.Remove(s.abs(rel) + partSuffix)
		return nil, fmt.Errorf("create %s: %w", m.ID, err)
	}
	if err := s.idx.insert(ctx, m, rel); err != nil {
		f.Close()
		_ = s.fs.Remove(s.abs(rel) + partSuffix)
		_ = s.fs.Remove(s.abs(sidecarRel(rel)))
		return nil, err
	}
	return &dirBlob{File: f, st: s, fs: s.fs, id: m.ID, rel: rel, encrypted: m.Encrypted}, nil
}

// writeSidecar writes meta next to the audio, atomically (temp + rename),
// encrypted if the recording is.
func (s *DirStore) writeSidecar(rel string, m Meta) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	fsys := s.fsOf(m.Encrypted)
	p := s.abs(sidecarRel(rel))
	tmp := p + ".tmp"
	f, err := fsys.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("write metadata: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fsys.Rename(tmp, p)
	}
	if err != nil {
		_ = fsys.Remove(tmp)
		return fmt.Errorf("write metadata: %w", err)
	}
	return nil
}

// readSidecar reads a recording's metadata sidecar. The sidecar of an
// encrypted recording cannot be read here (ErrSealed).
func (s *DirStore) readSidecar(rel string, encrypted bool) (Meta, error) {
	var m Meta
	if encrypted {
		return m, ErrSealed
	}
	f, err := s.plain.OpenFile(s.abs(sidecarRel(rel)), os.O_RDONLY, 0)
	if err != nil {
		return m, err
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return m, err
	}
	return m, json.Unmarshal(b, &m)
}

// save stores meta in the sidecar and the index.
func (s *DirStore) save(ctx context.Context, rel string, m Meta) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if err := s.writeSidecar(rel, m); err != nil {
		return fmt.Errorf("save %s: %w", m.ID, err)
	}
	return s.idx.update(ctx, m)
}

// Get implements Store.
func (s *DirStore) Get(ctx context.Context, id string) (Meta, error) {
	if !ValidID(id) {
		return Meta{}, fmt.Errorf("%q: %w", id, ErrInvalidID)
	}
	if s.closed.Load() {
		return Meta{}, ErrClosed
	}
	m, _, err := s.idx.get(ctx, id)
	return m, err
}

// List implements Store.
func (s *DirStore) List(ctx context.Context, q Query) ([]Meta, string, error) {
	if s.closed.Load() {
		return nil, "", ErrClosed
	}
	return s.idx.list(ctx, q)
}

// Open implements Store.
func (s *DirStore) Open(ctx context.Context, id, track string) (io.ReadSeekCloser, Meta, error) {
	if !ValidID(id) {
		return nil, Meta{}, fmt.Errorf("%q: %w", id, ErrInvalidID)
	}
	if track != "" && !validTrack(track) {
		return nil, Meta{}, fmt.Errorf("%q: %w", track, ErrInvalidTrack)
	}
	if s.closed.Load() {
		return nil, Meta{}, ErrClosed
	}
	m, rel, err := s.idx.get(ctx, id)
	if err != nil {
		return nil, Meta{}, err
	}
	if m.Status != StatusComplete && m.Status != StatusInterrupted {
		return nil, m, fmt.Errorf("%s is %s: %w", id, m.Status, ErrNoAudio)
	}
	if track != "" && !hasTrack(m, track) {
		return nil, m, fmt.Errorf("%s track %q: %w", id, track, ErrNotFound)
	}
	f, err := s.fsOf(m.Encrypted).OpenFile(s.abs(trackRel(rel, track)), os.O_RDONLY, 0)
	if err != nil {
		return nil, m, fmt.Errorf("open %s: %w", id, err)
	}
	return f, m, nil
}

// Key returns the wrapped content key (the .esk) of an encrypted
// recording's audio file (track "" is the main file): with the private key,
// it opens what Open returns. ErrNotEncrypted for a recording in clear.
func (s *DirStore) Key(ctx context.Context, id, track string) ([]byte, Meta, error) {
	if !ValidID(id) {
		return nil, Meta{}, fmt.Errorf("%q: %w", id, ErrInvalidID)
	}
	if track != "" && !validTrack(track) {
		return nil, Meta{}, fmt.Errorf("%q: %w", track, ErrInvalidTrack)
	}
	if s.closed.Load() {
		return nil, Meta{}, ErrClosed
	}
	m, rel, err := s.idx.get(ctx, id)
	if err != nil {
		return nil, Meta{}, err
	}
	if !m.Encrypted {
		return nil, m, fmt.Errorf("%s: %w", id, ErrNotEncrypted)
	}
	if m.Status != StatusComplete && m.Status != StatusInterrupted {
		return nil, m, fmt.Errorf("%s is %s: %w", id, m.Status, ErrNoAudio)
	}
	if track != "" && !hasTrack(m, track) {
		return nil, m, fmt.Errorf("%s track %q: %w", id, track, ErrNotFound)
	}
	b, err := s.sealed.ReadKey(s.abs(trackRel(rel, track)))
	if err != nil {
		return nil, m, fmt.Errorf("key of %s: %w", id, err)
	}
	return b, m, nil
}

// Sidecar returns a recording's stored metadata sidecar: the JSON, or for
// an encrypted recording its ciphertext and wrapped key (the full metadata,
// of which the index keeps only a part).
func (s *DirStore) Sidecar(ctx context.Context, id string) (data, esk []byte, err error) {
	if !ValidID(id) {
		return nil, nil, fmt.Errorf("%q: %w", id, ErrInvalidID)
	}
	if s.closed.Load() {
		return nil, nil, ErrClosed
	}
	m, rel, err := s.idx.get(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	p := s.abs(sidecarRel(rel))
	f, err := s.fsOf(m.Encrypted).OpenFile(p, os.O_RDONLY, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("metadata of %s: %w", id, err)
	}
	defer f.Close()
	if data, err = io.ReadAll(io.LimitReader(f, 16<<20)); err != nil {
		return nil, nil, fmt.Errorf("metadata of %s: %w", id, err)
	}
	if m.Encrypted {
		if esk, err = s.sealed.ReadKey(p); err != nil {
			return nil, nil, fmt.Errorf("metadata key of %s: %w", id, err)
		}
	}
	return data, esk, nil
}

func hasTrack(m Meta, name string) bool {
	for _, t := range m.Tracks {
		if t.Name == name {
			return true
		}
	}
	return false
}

// Update implements Store. The file size, hash and tracks are the store's
// and are kept.
func (s *DirStore) Update(ctx context.Context, m Meta) error {
	if !ValidID(m.ID) {
		return fmt.Errorf("update %q: %w", m.ID, ErrInvalidID)
	}
	if s.closed.Load() {
		return ErrClosed
	}
	old, rel, err := s.idx.get(ctx, m.ID)
	if err != nil {
		return err
	}
	m.SizeBytes, m.SHA256, m.Tracks, m.Encrypted = old.SizeBytes, old.SHA256, old.Tracks, old.Encrypted
	return s.save(ctx, rel, m)
}

// hashFile returns the size and SHA-256 of an open file.
func hashFile(f io.ReaderAt, size int64) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, size)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func hashPath(fsys FS, p string) (int64, string, error) {
	f, err := fsys.OpenFile(p, os.O_RDONLY, 0)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, "", err
	}
	sum, err := hashFile(f, fi.Size())
	return fi.Size(), sum, err
}

// errorsText shortens a path error to its cause.
func errorsText(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// syncDir makes renames in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Repair implements Store.
func (s *DirStore) Repair(ctx context.Context, fix Fixer) ([]Meta, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	rows, err := s.idx.byStatus(ctx, StatusRecording)
	if err != nil {
		return nil, err
	}
	var out []Meta
	var errs []error
	for _, r := range rows {
		m, err := s.repairOne(r, fix)
		if err != nil {
			m.Status, m.Reason = StatusFailed, "repair: "+err.Error()
			s.log.Error("repair recording failed", "recording_id", m.ID, "err", err)
		}
		// The sidecar of an encrypted recording cannot be read here, and the
		// index holds only part of it: keep the sidecar as the recorder last
		// wrote it, update the index only.
		if m.Encrypted {
			if err := s.idx.update(ctx, m); err != nil {
				errs = append(errs, err)
				continue
			}
		} else if err := s.save(ctx, r.path, m); err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, m)
	}
	return out, errors.Join(errs...)
}

// finishedStatus is what a file found already published (renamed) at Repair
// is marked: complete if its sidecar says so, else interrupted.
func (s *DirStore) finishedStatus(r row) (Status, string) {
	if sc, err := s.readSidecar(r.path, r.meta.Encrypted); err == nil && sc.Status == StatusComplete {
		return StatusComplete, ""
	}
	return StatusInterrupted, reasonCrashed
}

func (s *DirStore) repairOne(r row, fix Fixer) (Meta, error) {
	m := r.meta
	fsys := s.fsOf(m.Encrypted)
	m.Status, m.Reason = s.finishedStatus(r)
	tracks, err := s.partTracks(fsys, r.path)
	if err != nil {
		return m, err
	}
	m.Tracks = m.Tracks[:0]
	for _, track := range append([]string{""}, tracks...) {
		final := s.abs(trackRel(r.path, track))
		part := final + partSuffix
		if exists(fsys, part) {
			m.Status, m.Reason = StatusInterrupted, reasonCrashed
			sealed, err := s.fixPart(fsys, part, final, fix, &m, track == "")
			if err != nil {
				return m, err
			}
			if sealed {
				m.Reason = reasonSealed
			}
		} else if !exists(fsys, final) {
			if track == "" {
				return m, errors.New("no audio file found")
			}
			continue
		}
		size, sum, err := hashPath(fsys, final)
		if err != nil {
			return m, err
		}
		if track == "" {
			m.SizeBytes, m.SHA256 = size, sum
		} else {
			m.Tracks = append(m.Tracks, Track{Name: track, SizeBytes: size, SHA256: sum})
		}
	}
	if len(m.Tracks) == 0 {
		m.Tracks = nil
	}
	return m, syncDir(filepath.Dir(s.abs(r.path)))
}

// fixPart repairs one partial file and publishes it under its final name.
// Only the main file's repair may change the metadata. A file the FS cannot
// reopen for writing (encrypted: the key is not kept) is published as it is
// (sealed true); fix then sees a read-only view whose Stat gives the
// plaintext size, and may only derive metadata from it.
func (s *DirStore) fixPart(fsys FS, part, final string, fix Fixer, m *Meta, main bool) (sealed bool, err error) {
	scratch := *m
	target := &scratch
	if main {
		target = m
	}
	f, err := fsys.OpenFile(part, os.O_RDWR, 0)
	if errors.Is(err, ErrSealed) {
		sf, ok := fsys.(*SealedFS)
		if !ok {
			return true, err
		}
		v, err := sf.openView(part)
		if err != nil {
			return true, err
		}
		if err := fix(v, target); err != nil {
			s.log.Warn("encrypted recording kept as it was; its metadata could not be derived", "file", part, "err", err)
		}
		_ = v.Close()
		return true, fsys.Rename(part, final)
	}
	if err != nil {
		return false, err
	}
	err = fix(f, target)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return false, err
	}
	return false, fsys.Rename(part, final)
}

// partTracks lists the extra tracks present (partial or final) for a
// recording, found by name next to its main file.
func (s *DirStore) partTracks(fsys FS, rel string) ([]string, error) {
	dir := filepath.Dir(s.abs(rel))
	base := strings.TrimSuffix(filepath.Base(rel), ".wav") + "."
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []string
	for _, e := range ents {
		name, ok := logicalName(fsys, e.Name())
		if !ok {
			continue
		}
		name = strings.TrimSuffix(name, partSuffix)
		if !strings.HasPrefix(name, base) || !strings.HasSuffix(name, ".wav") {
			continue
		}
		t := strings.TrimSuffix(strings.TrimPrefix(name, base), ".wav")
		if validTrack(t) && !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	return out, nil
}

// Verify implements Store.
func (s *DirStore) Verify(ctx context.Context) ([]Problem, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	rows, err := s.idx.byStatus(ctx, StatusComplete, StatusInterrupted)
	if err != nil {
		return nil, err
	}
	var probs []Problem
	check := func(id string, encrypted bool, rel string, size int64, sum string) {
		fsys := s.fsOf(encrypted)
		p := s.abs(rel)
		for _, n := range diskNames(fsys, p)[1:] { // an encrypted file's key
			if _, err := os.Stat(n); err != nil {
				probs = append(probs, Problem{ID: id, Path: rel, Kind: "missing", Detail: fmt.Sprintf("%s: %v", filepath.Base(n), errorsText(err))})
			}
		}
		gotSize, gotSum, err := hashPath(fsys, p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			probs = append(probs, Problem{ID: id, Path: rel, Kind: "missing", Detail: "file not found"})
		case err != nil:
			probs = append(probs, Problem{ID: id, Path: rel, Kind: "unreadable", Detail: err.Error()})
		case gotSize != size:
			probs = append(probs, Problem{ID: id, Path: rel, Kind: "size", Detail: fmt.Sprintf("size %d, index says %d", gotSize, size)})
		case gotSum != sum:
			probs = append(probs, Problem{ID: id, Path: rel, Kind: "corrupt", Detail: fmt.Sprintf("sha256 %s, index says %s", gotSum, sum)})
		}
	}
	for _, r := range rows {
		if err := ctx.Err(); err != nil {
			return probs, err
		}
		check(r.meta.ID, r.meta.Encrypted, r.path, r.meta.SizeBytes, r.meta.SHA256)
		for _, t := range r.meta.Tracks {
			check(r.meta.ID, r.meta.Encrypted, trackRel(r.path, t.Name), t.SizeBytes, t.SHA256)
		}
	}
	known, err := s.idx.all(ctx)
	if err != nil {
		return probs, err
	}
	root := filepath.Join(s.dir, "recordings")
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		name := d.Name()
		if n, ok := s.sealed.LogicalName(name); ok { // NAME.enc, NAME.esk
			name = n
		}
		if !strings.HasSuffix(name, ".wav") && !strings.HasSuffix(name, ".wav"+partSuffix) {
			return nil
		}
		rel, _ := filepath.Rel(s.dir, p)
		rel = filepath.ToSlash(rel)
		if len(name) < idLen || known[name[:idLen]] == "" {
			probs = append(probs, Problem{Path: rel, Kind: "orphan", Detail: "file not in the index"})
		}
		return nil
	})
	return probs, err
}

// dirBlob is a DirStore recording being written.
type dirBlob struct {
	File
	st        *DirStore
	fs        FS // what the files are written through
	id        string
	rel       string
	encrypted bool
	extras    []extraFile
	done      bool
}

type extraFile struct {
	name string
	f    File
}

func (b *dirBlob) ID() string { return b.id }

func (b *dirBlob) Extra(name string) (File, error) {
	if b.done {
		return nil, ErrFinished
	}
	if !validTrack(name) {
		return nil, fmt.Errorf("%q: %w", name, ErrInvalidTrack)
	}
	f, err := b.fs.OpenFile(b.st.abs(trackRel(b.rel, name))+partSuffix, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return nil, fmt.Errorf("create track %s of %s: %w", name, b.id, err)
	}
	b.extras = append(b.extras, extraFile{name: name, f: f})
	return f, nil
}

// publish syncs, closes and renames one file, then hashes what reached the
// disk (read back through the FS, so an encrypting FS hashes its ciphertext
// and Verify later sees the same bytes).
func (b *dirBlob) publish(f File, track string) (int64, string, error) {
	err := f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, "", err
	}
	final := b.st.abs(trackRel(b.rel, track))
	if err := b.fs.Rename(final+partSuffix, final); err != nil {
		return 0, "", err
	}
	return hashPath(b.fs, final)
}

func (b *dirBlob) Commit(ctx context.Context, m Meta) error {
	if b.done {
		return ErrFinished
	}
	b.done = true
	m.ID, m.Encrypted = b.id, b.encrypted
	if m.Status == "" || m.Status == StatusRecording {
		m.Status = StatusComplete
	}
	size, sum, err := b.publish(b.File, "")
	if err != nil {
		b.closeAll()
		return b.fail(ctx, m, fmt.Errorf("commit %s: %w", b.id, err))
	}
	m.SizeBytes, m.SHA256, m.Tracks = size, sum, nil
	for _, x := range b.extras {
		size, sum, err := b.publish(x.f, x.name)
		if err != nil {
			b.closeAll()
			return b.fail(ctx, m, fmt.Errorf("commit %s track %s: %w", b.id, x.name, err))
		}
		m.Tracks = append(m.Tracks, Track{Name: x.name, SizeBytes: size, SHA256: sum})
	}
	if err := syncDir(filepath.Dir(b.st.abs(b.rel))); err != nil {
		return b.fail(ctx, m, fmt.Errorf("commit %s: %w", b.id, err))
	}
	return b.st.save(ctx, b.rel, m)
}

// fail records a commit that could not complete and returns err.
func (b *dirBlob) fail(ctx context.Context, m Meta, err error) error {
	m.Encrypted = b.encrypted
	m.Status, m.Reason = StatusFailed, err.Error()
	m.SizeBytes, m.SHA256, m.Tracks = 0, "", nil
	return errors.Join(err, b.st.save(ctx, b.rel, m))
}

func (b *dirBlob) closeAll() {
	_ = b.File.Close()
	for _, x := range b.extras {
		_ = x.f.Close()
	}
}

func (b *dirBlob) Abort(ctx context.Context, m Meta, reason string) error {
	if b.done {
		return ErrFinished
	}
	b.done = true
	m.ID, m.Encrypted = b.id, b.encrypted
	b.closeAll()
	var errs []error
	for _, track := range append([]string{""}, b.extraNames()...) {
		if err := b.fs.Remove(b.st.abs(trackRel(b.rel, track)) + partSuffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	m.Status, m.Reason = StatusFailed, reason
	m.SizeBytes, m.SHA256, m.Tracks = 0, "", nil
	errs = append(errs, b.st.save(ctx, b.rel, m))
	return errors.Join(errs...)
}

func (b *dirBlob) extraNames() []string {
	out := make([]string, len(b.extras))
	for i, x := range b.extras {
		out[i] = x.name
	}
	return out
}
