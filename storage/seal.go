package storage

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Encryption at rest: the format of NAME.enc and NAME.esk. The README's "Encryption at rest" section
// is the normative description; this file implements it.
//
//	NAME.enc = file header (32 bytes) || chunk 0 (header chunk) || chunk 1 || ... || chunk k (final)
//	file header = "BIBENC" || version 0x01 || 0x00 || u32 header-chunk size (64)
//	              || u32 max data-chunk size (65536) || 16-byte random file id
//	chunk       = u32 n (plaintext bytes) || 12-byte random nonce || AES-256-GCM(ciphertext || 16-byte tag)
//	              the ciphertext is n bytes, except chunk 0 whose ciphertext is always
//	              header-chunk-size bytes (content zero-padded)
//	AAD         = file header (32) || u64 chunk index || u8 final (1 on the last chunk) || u32 n
//
// All integers are big endian. Chunk 0 is never final; the last chunk (index
// >= 1, possibly empty) is. Chunk 0 sits at a fixed offset and size, so the
// writer re-seals it in place (fresh nonce) when the first bytes of the
// plaintext change (a WAV header's sizes). Data chunks are written once.

// errAuth is a chunk that failed GCM authentication (mapped to ErrTampered).
var errAuth = errors.New("chunk authentication failed")

// Sentinel errors of the sealed format. Match with errors.Is.
var (
	// ErrSealed: an operation that needs the plaintext of an encrypted file
	// being written (read, truncate, rewrite of data already sealed).
	ErrSealed = errors.New("encrypted file: operation not possible without decrypting")
	// ErrNotSealed: the file is not in bib's encrypted format.
	ErrNotSealed = errors.New("not a bib encrypted file")
	// ErrTampered: a chunk failed authentication: the file was modified (or
	// the key is not the file's).
	ErrTampered = errors.New("encrypted file failed authentication: it was modified or corrupted")
	// ErrTruncated: the file ends before its final chunk.
	ErrTruncated = errors.New("encrypted file is truncated")
	// ErrKeyMismatch: the .esk belongs to another encrypted file.
	ErrKeyMismatch = errors.New("the key file (.esk) belongs to a different encrypted file")
	// ErrWrongKey: the private key is not the one the file was encrypted for.
	ErrWrongKey = errors.New("wrong private key: the file was encrypted for another key")
	// ErrWrongPassword: the password does not open the private key.
	ErrWrongPassword = errors.New("wrong password for the private key")
	// ErrKeyFile: a certificate, public or private key file that cannot be used.
	ErrKeyFile = errors.New("unusable key file")
	// ErrBadESK: a .esk file that cannot be parsed or unwrapped.
	ErrBadESK = errors.New("invalid key file (.esk)")
	// ErrNotEncrypted: a recording stored in clear has no key file.
	ErrNotEncrypted = errors.New("recording is not encrypted")
)

const (
	sealMagic        = "BIBENC"
	sealVersion      = 1
	sealHeaderLen    = 32
	sealHeadChunk    = 64       // plaintext bytes in chunk 0
	sealDataChunk    = 64 << 10 // default max plaintext bytes in a data chunk
	sealMaxDataChunk = 16 << 20 // largest chunk a reader accepts
	sealNonceLen     = 12
	sealTagLen       = 16
	sealChunkOver    = 4 + sealNonceLen + sealTagLen // per-chunk overhead
	sealKeyLen       = 32                            // AES-256
	sealIDLen        = 16
	sealAADLen       = sealHeaderLen + 8 + 1 + 4
	eskFormat        = "bib-esk-1"
	eskCipher        = "AES-256-GCM-CHUNKED-1"
	eskWrap          = "RSA-OAEP-SHA256-MGF1-SHA256"
)

// sealHeader encodes the file header.
func sealHeader(id [sealIDLen]byte, headChunk, dataChunk int) [sealHeaderLen]byte {
	var h [sealHeaderLen]byte
	copy(h[:], sealMagic)
	h[6] = sealVersion
	binary.BigEndian.PutUint32(h[8:], uint32(headChunk))
	binary.BigEndian.PutUint32(h[12:], uint32(dataChunk))
	copy(h[16:], id[:])
	return h
}

// NewContentKey returns a fresh random AES-256 key and file id.
func NewContentKey() (key []byte, id [sealIDLen]byte) {
	key = make([]byte, sealKeyLen)
	_, _ = rand.Read(key) // crypto/rand.Read never fails (Go 1.24+)
	_, _ = rand.Read(id[:])
	return key, id
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != sealKeyLen {
		return nil, fmt.Errorf("%w: content key is %d bytes, want %d", ErrBadESK, len(key), sealKeyLen)
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// SealWriter encrypts a stream into the chunked format. It accepts
// sequential writes, and rewrites anywhere in the first 64 bytes (the header
// chunk) or in the data not yet sealed; everything else is ErrSealed.
// Memory use is one data chunk, whatever the length of the stream.
// It is not safe for concurrent use.
type SealWriter struct {
	dst  io.WriterAt
	aead cipher.AEAD
	hdr  [sealHeaderLen]byte
	aad  [sealAADLen]byte

	head      [sealHeadChunk]byte
	headN     int  // plaintext bytes in head
	headDirty bool // head changed since it was last sealed

	pend      []byte // data not yet sealed (cap = max data chunk)
	pendStart int64  // plaintext offset of pend[0]
	next      uint64 // index of the next data chunk
	ctEnd     int64  // ciphertext offset of the next data chunk
	pos       int64  // plaintext position for Write and Seek
	out       []byte // sealing scratch
	err       error  // sticky write error
	closed    bool
}

// SealOption configures NewSealWriter.
type SealOption func(*SealWriter)

// WithChunkSize sets the data chunk size in bytes (default 64 KiB; tests use
// small ones to exercise many chunks).
func WithChunkSize(n int) SealOption {
	return func(w *SealWriter) {
		if n > 0 && n <= sealMaxDataChunk {
			w.pend = make([]byte, 0, n)
		}
	}
}

// NewSealWriter writes the file header and an empty header chunk to dst at
// offset 0 and returns a writer of the plaintext stream. key is 32 bytes, id
// the file id (both from NewContentKey).
func NewSealWriter(dst io.WriterAt, key []byte, id [sealIDLen]byte, opts ...SealOption) (*SealWriter, error) {
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	w := &SealWriter{dst: dst, aead: aead, next: 1, ctEnd: sealHeaderLen + sealChunkOver + sealHeadChunk}
	for _, o := range opts {
		o(w)
	}
	if w.pend == nil {
		w.pend = make([]byte, 0, sealDataChunk)
	}
	w.out = make([]byte, 0, sealChunkOver+cap(w.pend))
	w.hdr = sealHeader(id, sealHeadChunk, cap(w.pend))
	copy(w.aad[:], w.hdr[:])
	if _, err := dst.WriteAt(w.hdr[:], 0); err != nil {
		return nil, fmt.Errorf("write encrypted header: %w", err)
	}
	if err := w.sealHead(); err != nil {
		return nil, err
	}
	return w, nil
}

// Size returns the plaintext size written so far.
func (w *SealWriter) Size() int64 {
	if w.pendStart+int64(len(w.pend)) > 0 {
		return sealHeadChunk + w.pendStart + int64(len(w.pend))
	}
	return int64(w.headN)
}

// seal encrypts pt as chunk idx into w.out (the whole chunk record).
func (w *SealWriter) seal(idx uint64, final bool, n int, pt []byte) []byte {
	binary.BigEndian.PutUint64(w.aad[sealHeaderLen:], idx)
	w.aad[sealHeaderLen+8] = 0
	if final {
		w.aad[sealHeaderLen+8] = 1
	}
	binary.BigEndian.PutUint32(w.aad[sealHeaderLen+9:], uint32(n))
	out := w.out[:4+sealNonceLen]
	binary.BigEndian.PutUint32(out, uint32(n))
	_, _ = rand.Read(out[4:])
	out = w.aead.Seal(out, out[4:4+sealNonceLen], pt, w.aad[:])
	w.out = out[:0]
	return out
}

func (w *SealWriter) sealHead() error {
	rec := w.seal(0, false, w.headN, w.head[:])
	if _, err := w.dst.WriteAt(rec, sealHeaderLen); err != nil {
		w.err = fmt.Errorf("write encrypted header chunk: %w", err)
		return w.err
	}
	w.headDirty = false
	return nil
}

func (w *SealWriter) sealData(final bool) error {
	rec := w.seal(w.next, final, len(w.pend), w.pend)
	if _, err := w.dst.WriteAt(rec, w.ctEnd); err != nil {
		w.err = fmt.Errorf("write encrypted chunk %d: %w", w.next, err)
		return w.err
	}
	w.ctEnd += int64(len(rec))
	w.next++
	w.pendStart += int64(len(w.pend))
	w.pend = w.pend[:0]
	return nil
}

// Write writes p at the current position.
func (w *SealWriter) Write(p []byte) (int, error) {
	n, err := w.WriteAt(p, w.pos)
	w.pos += int64(n)
	return n, err
}

// WriteAt writes p at plaintext offset off: in the header chunk (the first
// 64 bytes), in the data not yet sealed, or at the end.
func (w *SealWriter) WriteAt(p []byte, off int64) (int, error) {
	if w.closed {
		return 0, ErrClosed
	}
	if w.err != nil {
		return 0, w.err
	}
	if off < 0 {
		return 0, errors.New("encrypted file: negative offset")
	}
	if off > w.Size() {
		return 0, fmt.Errorf("%w: write at %d leaves a gap (size %d)", ErrSealed, off, w.Size())
	}
	done := 0
	for len(p) > 0 {
		if off < sealHeadChunk {
			k := copy(w.head[off:], p)
			w.headN = max(w.headN, int(off)+k)
			w.headDirty = true
			p, off, done = p[k:], off+int64(k), done+k
			continue
		}
		d := off - sealHeadChunk // offset in the data region
		if d < w.pendStart {
			return done, fmt.Errorf("%w: rewrite at offset %d of data already encrypted", ErrSealed, off)
		}
		i := int(d - w.pendStart)
		room := cap(w.pend) - i
		k := min(room, len(p))
		if end := i + k; end > len(w.pend) {
			w.pend = w.pend[:end]
		}
		copy(w.pend[i:], p[:k])
		p, off, done = p[k:], off+int64(k), done+k
		if len(w.pend) == cap(w.pend) && len(p) > 0 {
			if err := w.sealData(false); err != nil {
				return done, err
			}
		}
	}
	return done, nil
}

// Seek sets the plaintext position (io.Seeker).
func (w *SealWriter) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = w.pos + offset
	case io.SeekEnd:
		abs = w.Size() + offset
	default:
		return w.pos, errors.New("encrypted file: invalid whence")
	}
	if abs < 0 {
		return w.pos, errors.New("encrypted file: negative position")
	}
	w.pos = abs
	return abs, nil
}

// Flush seals the pending data (a short chunk) and the header chunk if it
// changed, so that everything written so far is on dst. Call it before
// syncing dst; a crash then loses nothing written before the Flush.
func (w *SealWriter) Flush() error {
	if w.closed {
		return ErrClosed
	}
	if w.err != nil {
		return w.err
	}
	if len(w.pend) > 0 {
		if err := w.sealData(false); err != nil {
			return err
		}
	}
	if w.headDirty {
		return w.sealHead()
	}
	return nil
}

// Close seals the remaining data as the final chunk (possibly empty) and
// the header chunk. It does not close or sync dst.
func (w *SealWriter) Close() error {
	if w.closed {
		return nil
	}
	if w.err != nil {
		w.closed = true
		return w.err
	}
	err := w.sealData(true)
	if err == nil && w.headDirty {
		err = w.sealHead()
	}
	w.closed = true
	return err
}

// chunkRef locates one chunk of a sealed file.
type chunkRef struct {
	off int64 // ciphertext offset of the chunk record
	n   int   // plaintext bytes
	pt  int64 // plaintext offset of the chunk's first byte
}

// SealedReader decrypts a sealed file with random access (io.ReadSeeker,
// io.ReaderAt). Every chunk is authenticated when it is read; OpenSealed
// already checked the structure, the header chunk and the final chunk, so a
// truncated file or a wrong key fails at open.
type SealedReader struct {
	src    io.ReaderAt
	aead   cipher.AEAD
	hdr    [sealHeaderLen]byte
	id     [sealIDLen]byte
	headSz int
	chunks []chunkRef
	size   int64
	pos    int64

	cur int // index in chunks of the decrypted chunk in buf, -1 none
	// lastFinal: the last chunk is sealed as final (false only for a file
	// opened by RecoverSealed whose end is missing).
	lastFinal bool
	truncated bool
	dropped   int64 // ciphertext bytes after the last whole chunk
	buf       []byte
	rec       []byte
	aad       [sealAADLen]byte
	hbuf      [sealNonceLen + 4]byte
}

// ReadSealedHeader returns the file id of a sealed file (to match it with its
// .esk) after checking the magic and version.
func ReadSealedHeader(src io.ReaderAt) (id [sealIDLen]byte, err error) {
	var h [sealHeaderLen]byte
	if _, err := src.ReadAt(h[:], 0); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return id, fmt.Errorf("%w: shorter than its header", ErrNotSealed)
		}
		return id, err
	}
	if string(h[:6]) != sealMagic {
		return id, fmt.Errorf("%w: bad magic", ErrNotSealed)
	}
	if h[6] != sealVersion {
		return id, fmt.Errorf("%w: format version %d, this bib reads version %d", ErrNotSealed, h[6], sealVersion)
	}
	copy(id[:], h[16:])
	return id, nil
}

// OpenSealed opens the sealed file src of size bytes with its content key.
func OpenSealed(src io.ReaderAt, size int64, key []byte) (*SealedReader, error) {
	return openSealed(src, size, key, false)
}

// RecoverSealed opens a sealed file whose writer may have died before
// sealing the final chunk (a crash). A complete file opens as with
// OpenSealed. Otherwise the plaintext is the chunks that reached the disk
// whole, each authenticated as a non-final chunk, and Truncated reports it;
// a partial chunk record at the end (shorter than one chunk) is dropped
// unread. Any chunk that is whole but does not authenticate is still
// ErrTampered: only a missing end is tolerated.
func RecoverSealed(src io.ReaderAt, size int64, key []byte) (*SealedReader, error) {
	return openSealed(src, size, key, true)
}

func openSealed(src io.ReaderAt, size int64, key []byte, recover bool) (*SealedReader, error) {
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	id, err := ReadSealedHeader(src)
	if err != nil {
		return nil, err
	}
	r := &SealedReader{src: src, aead: aead, id: id, cur: -1}
	if _, err := src.ReadAt(r.hdr[:], 0); err != nil {
		return nil, err
	}
	copy(r.aad[:], r.hdr[:])
	var dataMax int
	r.headSz, dataMax, err = chunkSizes(r.hdr)
	if err != nil {
		return nil, err
	}
	var end int64
	r.chunks, r.size, end, err = walkChunks(src, size, r.headSz, dataMax)
	if err != nil && !(recover && errors.Is(err, ErrTruncated) && size-end < int64(sealChunkOver+dataMax)) {
		return nil, err
	}
	r.dropped = size - end
	if len(r.chunks) == 0 {
		return nil, fmt.Errorf("%w: no chunks", ErrTruncated)
	}
	r.buf = make([]byte, 0, max(dataMax, r.headSz))
	r.rec = make([]byte, sealChunkOver+max(dataMax, r.headSz))
	r.lastFinal = true
	// The header chunk authenticates the key; the last chunk must be final.
	if err := r.load(0); err != nil {
		return nil, err
	}
	last := len(r.chunks) - 1
	if last == 0 {
		if !recover {
			return nil, fmt.Errorf("%w: no data chunk after the header chunk", ErrTruncated)
		}
		r.lastFinal, r.truncated = false, true
		return r, nil
	}
	if err := r.load(last); err != nil {
		if !errors.Is(err, ErrTampered) || r.open(last, false) != nil {
			return nil, err
		}
		if !recover {
			return nil, fmt.Errorf("%w: it ends after chunk %d, which is not the final chunk", ErrTruncated, last)
		}
		r.lastFinal, r.truncated = false, true
	}
	if r.dropped > 0 { // a partial record after a final chunk is not a crash
		if !r.truncated {
			return nil, fmt.Errorf("%w: %d bytes after the final chunk", ErrTampered, r.dropped)
		}
	}
	return r, nil
}

// chunkSizes reads the header-chunk and max data-chunk sizes of a header.
func chunkSizes(hdr [sealHeaderLen]byte) (head, data int, err error) {
	head = int(binary.BigEndian.Uint32(hdr[8:]))
	data = int(binary.BigEndian.Uint32(hdr[12:]))
	if head <= 0 || head > 4096 || data <= 0 || data > sealMaxDataChunk {
		return 0, 0, fmt.Errorf("%w: chunk sizes %d/%d out of range", ErrNotSealed, head, data)
	}
	return head, data, nil
}

// walkChunks reads the chunk length fields (not authenticated). It returns
// the whole chunks, the plaintext size they hold and where the last whole
// chunk ends; an ErrTruncated error when a partial record follows them.
func walkChunks(src io.ReaderAt, size int64, headSz, dataMax int) ([]chunkRef, int64, int64, error) {
	var chunks []chunkRef
	off := int64(sealHeaderLen)
	var pt int64
	for i := 0; off < size; i++ {
		if size-off < sealChunkOver {
			return chunks, pt, off, fmt.Errorf("%w: partial chunk %d at offset %d", ErrTruncated, i, off)
		}
		var lb [4]byte
		if _, err := src.ReadAt(lb[:], off); err != nil {
			return nil, 0, off, err
		}
		n := int(binary.BigEndian.Uint32(lb[:]))
		ctLen := n
		if i == 0 {
			if n > headSz {
				return nil, 0, off, fmt.Errorf("%w: header chunk length %d", ErrTampered, n)
			}
			ctLen = headSz
		} else if n > dataMax {
			return nil, 0, off, fmt.Errorf("%w: chunk %d length %d exceeds %d", ErrTampered, i, n, dataMax)
		}
		end := off + int64(sealChunkOver+ctLen)
		if end > size {
			return chunks, pt, off, fmt.Errorf("%w: chunk %d is cut short (%d of %d bytes)", ErrTruncated, i, size-off, end-off)
		}
		chunks = append(chunks, chunkRef{off: off, n: n, pt: pt})
		pt += int64(n)
		off = end
	}
	return chunks, pt, off, nil
}

// SealedSize returns the plaintext size a sealed file's chunk lengths add
// up to, counting whole chunks only. The lengths are not authenticated (no
// key is needed): it is an estimate for a file that cannot be decrypted
// here, e.g. the duration of an encrypted recording repaired after a crash.
func SealedSize(src io.ReaderAt, size int64) (int64, error) {
	if _, err := ReadSealedHeader(src); err != nil {
		return 0, err
	}
	var hdr [sealHeaderLen]byte
	if _, err := src.ReadAt(hdr[:], 0); err != nil {
		return 0, err
	}
	head, data, err := chunkSizes(hdr)
	if err != nil {
		return 0, err
	}
	_, pt, _, err := walkChunks(src, size, head, data)
	if errors.Is(err, ErrTruncated) {
		err = nil
	}
	return pt, err
}

// ID returns the file id from the header.
func (r *SealedReader) ID() [sealIDLen]byte { return r.id }

// Size returns the plaintext size.
func (r *SealedReader) Size() int64 { return r.size }

// Chunks returns the number of chunks (header chunk included).
func (r *SealedReader) Chunks() int { return len(r.chunks) }

// Truncated reports that the file has no final chunk (RecoverSealed only):
// its writer stopped before closing it, and the plaintext is what reached
// the disk whole.
func (r *SealedReader) Truncated() bool { return r.truncated }

// Dropped returns how many bytes of a partial chunk record at the end of a
// truncated file were left unread.
func (r *SealedReader) Dropped() int64 { return r.dropped }

// open decrypts chunk i as final or not into r.buf.
func (r *SealedReader) open(i int, final bool) error {
	c := r.chunks[i]
	ctLen := c.n
	if i == 0 {
		ctLen = r.headSz
	}
	rec := r.rec[:sealChunkOver+ctLen]
	if _, err := r.src.ReadAt(rec, c.off); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: chunk %d", ErrTruncated, i)
		}
		return err
	}
	binary.BigEndian.PutUint64(r.aad[sealHeaderLen:], uint64(i))
	r.aad[sealHeaderLen+8] = 0
	if final {
		r.aad[sealHeaderLen+8] = 1
	}
	binary.BigEndian.PutUint32(r.aad[sealHeaderLen+9:], uint32(c.n))
	out, err := r.aead.Open(r.buf[:0], rec[4:4+sealNonceLen], rec[4+sealNonceLen:], r.aad[:])
	if err != nil {
		r.cur = -1
		return errAuth
	}
	r.buf = out[:c.n]
	r.cur = i
	return nil
}

// load decrypts chunk i (final iff it is the last one).
func (r *SealedReader) load(i int) error {
	if r.cur == i {
		return nil
	}
	if err := r.open(i, r.lastFinal && i > 0 && i == len(r.chunks)-1); err != nil {
		if err != errAuth {
			return err
		}
		if i == 0 {
			return fmt.Errorf("%w (header chunk; or the .esk is not this file's key)", ErrTampered)
		}
		return fmt.Errorf("%w (chunk %d at offset %d)", ErrTampered, i, r.chunks[i].off)
	}
	return nil
}

// ReadAt implements io.ReaderAt over the plaintext.
func (r *SealedReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("encrypted file: negative offset")
	}
	done := 0
	for len(p) > 0 {
		if off >= r.size {
			return done, io.EOF
		}
		i := r.find(off)
		if err := r.load(i); err != nil {
			return done, err
		}
		k := copy(p, r.buf[off-r.chunks[i].pt:])
		p, off, done = p[k:], off+int64(k), done+k
	}
	return done, nil
}

// find returns the chunk holding plaintext offset off (< size).
func (r *SealedReader) find(off int64) int {
	lo, hi := 0, len(r.chunks)-1
	for lo < hi { // last chunk with pt <= off and n > 0
		mid := (lo + hi + 1) / 2
		if r.chunks[mid].pt <= off {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	for r.chunks[lo].n == 0 || off >= r.chunks[lo].pt+int64(r.chunks[lo].n) {
		lo--
	}
	return lo
}

// Read implements io.Reader.
func (r *SealedReader) Read(p []byte) (int, error) {
	n, err := r.ReadAt(p, r.pos)
	r.pos += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

// Seek implements io.Seeker.
func (r *SealedReader) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = r.pos + offset
	case io.SeekEnd:
		abs = r.size + offset
	default:
		return r.pos, errors.New("encrypted file: invalid whence")
	}
	if abs < 0 {
		return r.pos, errors.New("encrypted file: negative position")
	}
	r.pos = abs
	return abs, nil
}

// ESK is the content of a NAME.esk file (JSON): the content key of NAME.enc
// wrapped for one RSA key.
type ESK struct {
	Format string `json:"format"` // "bib-esk-1"
	Cipher string `json:"cipher"` // "AES-256-GCM-CHUNKED-1" (see the README, "The format")
	Wrap   string `json:"wrap"`   // "RSA-OAEP-SHA256-MGF1-SHA256", empty label
	// KeySHA256 is the hex SHA-256 of the RSA public key's
	// SubjectPublicKeyInfo DER: which private key opens the file.
	KeySHA256 string `json:"key_sha256"`
	// CertSHA256 is the hex SHA-256 of the certificate DER, when the key
	// came from a certificate.
	CertSHA256 string `json:"cert_sha256,omitempty"`
	// CertSubject names the certificate, for humans.
	CertSubject string `json:"cert_subject,omitempty"`
	// FileID is the hex file id of the .enc this key belongs to.
	FileID string `json:"file_id"`
	// WrappedKey is the RSA-OAEP ciphertext of the 32-byte AES key (base64).
	WrappedKey []byte    `json:"wrapped_key"`
	Created    time.Time `json:"created"`
}

// WrapKey wraps a content key for rcpt and returns the .esk content.
func WrapKey(rcpt *Recipient, key []byte, id [sealIDLen]byte, now time.Time) ([]byte, error) {
	wk, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, rcpt.Key, key, nil)
	if err != nil {
		return nil, fmt.Errorf("wrap content key: %w", err)
	}
	e := ESK{
		Format: eskFormat, Cipher: eskCipher, Wrap: eskWrap,
		KeySHA256: rcpt.KeySHA256, CertSHA256: rcpt.CertSHA256, CertSubject: rcpt.Subject,
		FileID: hex.EncodeToString(id[:]), WrappedKey: wk, Created: now.UTC(),
	}
	b, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// ParseESK parses a .esk file.
func ParseESK(b []byte) (ESK, error) {
	var e ESK
	if err := json.Unmarshal(b, &e); err != nil {
		return e, fmt.Errorf("%w: %v", ErrBadESK, err)
	}
	if e.Format != eskFormat {
		return e, fmt.Errorf("%w: format %q, want %q", ErrBadESK, e.Format, eskFormat)
	}
	if e.Wrap != eskWrap || e.Cipher != eskCipher {
		return e, fmt.Errorf("%w: unsupported algorithms %s / %s", ErrBadESK, e.Wrap, e.Cipher)
	}
	if len(e.WrappedKey) == 0 {
		return e, fmt.Errorf("%w: no wrapped_key", ErrBadESK)
	}
	return e, nil
}

// Unwrap recovers the content key with priv, after checking that priv is
// the key the file was encrypted for.
func (e ESK) Unwrap(priv *rsa.PrivateKey) ([]byte, error) {
	fp, err := KeyFingerprint(&priv.PublicKey)
	if err != nil {
		return nil, err
	}
	if e.KeySHA256 != "" && !strings.EqualFold(fp, e.KeySHA256) {
		return nil, fmt.Errorf("%w (file key sha256 %.16s…, given key sha256 %.16s…)", ErrWrongKey, e.KeySHA256, fp)
	}
	key, err := rsa.DecryptOAEP(sha256.New(), nil, priv, e.WrappedKey, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: the wrapped key does not decrypt with this private key (modified .esk?)", ErrBadESK)
	}
	if len(key) != sealKeyLen {
		return nil, fmt.Errorf("%w: unwrapped key is %d bytes", ErrBadESK, len(key))
	}
	return key, nil
}

// CheckFile reports ErrKeyMismatch when the .esk names another file id
// than the .enc header carries.
func (e ESK) CheckFile(id [sealIDLen]byte) error {
	if e.FileID != "" && !strings.EqualFold(e.FileID, hex.EncodeToString(id[:])) {
		return fmt.Errorf("%w (esk file_id %s, enc file id %x)", ErrKeyMismatch, e.FileID, id)
	}
	return nil
}

// OpenSealedFile opens NAME.enc (src, size bytes) with the content of its
// NAME.esk and the private key: the checks in order are the .esk format, the
// file pairing, the key fingerprint, the unwrap, then the chunks.
func OpenSealedFile(src io.ReaderAt, size int64, esk []byte, priv *rsa.PrivateKey) (*SealedReader, error) {
	return openSealedFile(src, size, esk, priv, false)
}

// RecoverSealedFile is OpenSealedFile for a file that may lack its final
// chunk (see RecoverSealed).
func RecoverSealedFile(src io.ReaderAt, size int64, esk []byte, priv *rsa.PrivateKey) (*SealedReader, error) {
	return openSealedFile(src, size, esk, priv, true)
}

func openSealedFile(src io.ReaderAt, size int64, esk []byte, priv *rsa.PrivateKey, recover bool) (*SealedReader, error) {
	e, err := ParseESK(esk)
	if err != nil {
		return nil, err
	}
	id, err := ReadSealedHeader(src)
	if err != nil {
		return nil, err
	}
	if err := e.CheckFile(id); err != nil {
		return nil, err
	}
	key, err := e.Unwrap(priv)
	if err != nil {
		return nil, err
	}
	return openSealed(src, size, key, recover)
}
