package main

import (
	"bytes"
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/bib-project/bib/storage"
)

// sealedArchive is what the API needs of an archive beyond storage.Store to
// serve encrypted recordings (storage.DirStore implements it).
type sealedArchive interface {
	// Key returns the .esk of an encrypted recording's audio file.
	Key(ctx context.Context, id, track string) ([]byte, storage.Meta, error)
	// Sidecar returns the stored metadata sidecar (ciphertext and .esk when
	// encrypted).
	Sidecar(ctx context.Context, id string) (data, esk []byte, err error)
}

var _ sealedArchive = (*storage.DirStore)(nil)

// registerRecordingRoutes serves the archive under /api/v1/recordings.
// priv, when set, is the private key of the archive's certificate: the
// server then serves encrypted recordings decrypted (and their full
// metadata); without it they are served as stored.
func registerRecordingRoutes(mux *http.ServeMux, st storage.Store, priv *rsa.PrivateKey, log *slog.Logger) {
	sealed, _ := st.(sealedArchive)
	mux.HandleFunc("GET /api/v1/recordings", func(w http.ResponseWriter, r *http.Request) {
		v := r.URL.Query()
		q := storage.Query{Line: v.Get("line"), Device: v.Get("device"), Cursor: v.Get("cursor")}
		var err error
		if q.Since, err = recParseTime(v.Get("since")); err != nil {
			recErr(w, http.StatusBadRequest, "bad_since", "since: "+err.Error())
			return
		}
		if q.Until, err = recParseTime(v.Get("until")); err != nil {
			recErr(w, http.StatusBadRequest, "bad_until", "until: "+err.Error())
			return
		}
		if s := v.Get("limit"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 || n > 1000 {
				recErr(w, http.StatusBadRequest, "bad_limit", "limit must be a number from 1 to 1000.")
				return
			}
			q.Limit = n
		}
		list, next, err := st.List(r.Context(), q)
		if errors.Is(err, storage.ErrInvalidCursor) {
			recErr(w, http.StatusBadRequest, "bad_cursor", "cursor is not one this server handed out.")
			return
		}
		if err != nil {
			log.Error("list recordings", "err", err)
			recErr(w, http.StatusInternalServerError, "archive_error", "The archive index could not be read.")
			return
		}
		recJSON(w, http.StatusOK, map[string]any{"recordings": list, "next_cursor": next})
	})
	mux.HandleFunc("GET /api/v1/recordings/{id}", func(w http.ResponseWriter, r *http.Request) {
		m, err := st.Get(r.Context(), r.PathValue("id"))
		if err != nil {
			recLookupErr(w, log, err)
			return
		}
		if m.Encrypted && priv != nil && sealed != nil {
			m = fullMeta(r.Context(), sealed, m, priv, log)
		}
		recJSON(w, http.StatusOK, m)
	})
	mux.HandleFunc("GET /api/v1/recordings/{id}/audio", func(w http.ResponseWriter, r *http.Request) {
		id, track := r.PathValue("id"), r.URL.Query().Get("track")
		f, m, err := st.Open(r.Context(), id, track)
		if err != nil {
			recLookupErr(w, log, err)
			return
		}
		defer f.Close()
		name := m.ID + ".wav"
		if track != "" {
			name = m.ID + "." + track + ".wav"
		}
		etag := ""
		if m.SHA256 != "" && track == "" {
			etag = m.SHA256
		}
		if !m.Encrypted {
			w.Header().Set("Content-Type", "audio/wav")
			setETag(w, etag, "")
			// ServeContent answers Range and If-* requests, so an audio element can seek.
			http.ServeContent(w, r, name, m.EndTime, f)
			return
		}
		if priv == nil || sealed == nil || r.URL.Query().Get("stored") != "" {
			// As stored: the .enc; /esk has its key.
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Header().Set("X-Bib-Encryption", "stored")
			w.Header().Set("Content-Disposition", `attachment; filename="`+name+storage.EncSuffix+`"`)
			setETag(w, etag, "")
			http.ServeContent(w, r, name+storage.EncSuffix, m.EndTime, f)
			return
		}
		view, info, err := openRecordingPlain(r.Context(), sealed, f, id, track, priv)
		if err != nil {
			recDecryptErr(w, log, id, err)
			return
		}
		w.Header().Set("Content-Type", "audio/wav")
		w.Header().Set("X-Bib-Encryption", "decrypted")
		if info.truncated {
			w.Header().Set("X-Bib-Truncated", "true")
		}
		setETag(w, etag, ".wav")
		http.ServeContent(w, r, name, m.EndTime, view)
	})
	mux.HandleFunc("GET /api/v1/recordings/{id}/esk", func(w http.ResponseWriter, r *http.Request) {
		id, track := r.PathValue("id"), r.URL.Query().Get("track")
		if sealed == nil {
			recErr(w, http.StatusConflict, "not_encrypted", "This archive does not store encrypted recordings.")
			return
		}
		esk, m, err := sealed.Key(r.Context(), id, track)
		if errors.Is(err, storage.ErrNotEncrypted) {
			recErr(w, http.StatusConflict, "not_encrypted", "The recording is stored in clear: it has no key file.")
			return
		}
		if err != nil {
			recLookupErr(w, log, err)
			return
		}
		name := m.ID + ".wav"
		if track != "" {
			name = m.ID + "." + track + ".wav"
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Disposition", `attachment; filename="`+name+storage.ESKSuffix+`"`)
		_, _ = w.Write(esk)
	})
}

// openRecordingPlain decrypts an encrypted recording's file f (as Open
// returned it) with its key from the archive. An interrupted recording (no
// final chunk) reads as its authenticated part with the WAV sizes fixed.
func openRecordingPlain(ctx context.Context, sealed sealedArchive, f io.ReadSeeker, id, track string, priv *rsa.PrivateKey) (*io.SectionReader, plainInfo, error) {
	ra, ok := f.(io.ReaderAt)
	if !ok {
		return nil, plainInfo{}, errors.New("archive file does not support random access")
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, plainInfo{}, err
	}
	esk, _, err := sealed.Key(ctx, id, track)
	if err != nil {
		return nil, plainInfo{}, err
	}
	return openPlain(ra, size, esk, priv)
}

// fullMeta returns the metadata of an encrypted recording from its
// encrypted sidecar, with the index's word on status, sizes and hashes (the
// index is updated last, and Repair cannot rewrite an encrypted sidecar).
// On any failure it logs and returns the index's part.
func fullMeta(ctx context.Context, sealed sealedArchive, idx storage.Meta, priv *rsa.PrivateKey, log *slog.Logger) storage.Meta {
	data, esk, err := sealed.Sidecar(ctx, idx.ID)
	if err == nil {
		var r *storage.SealedReader
		if r, err = storage.OpenSealedFile(bytes.NewReader(data), int64(len(data)), esk, priv); err == nil {
			var full storage.Meta
			dec := json.NewDecoder(io.NewSectionReader(r, 0, r.Size()))
			if err = dec.Decode(&full); err == nil && full.ID == idx.ID {
				full.Status, full.Reason, full.Encrypted = idx.Status, idx.Reason, true
				full.SizeBytes, full.SHA256, full.Tracks = idx.SizeBytes, idx.SHA256, idx.Tracks
				full.DurationMS, full.EndTime, full.SampleRate, full.Channels = idx.DurationMS, idx.EndTime, idx.SampleRate, idx.Channels
				return full
			}
		}
	}
	log.Warn("encrypted recording metadata could not be decrypted; serving the index's part", "recording_id", idx.ID, "err", err)
	return idx
}

func setETag(w http.ResponseWriter, sum, suffix string) {
	if sum != "" {
		w.Header().Set("ETag", `"`+sum+suffix+`"`)
	}
}

func recDecryptErr(w http.ResponseWriter, log *slog.Logger, id string, err error) {
	switch {
	case errors.Is(err, storage.ErrWrongKey):
		recErr(w, http.StatusConflict, "other_key", "The recording was encrypted for another certificate than this server's private key; "+
			"download it as stored (?stored=1) with its /esk and decrypt it with that certificate's key.")
	case errors.Is(err, storage.ErrTampered), errors.Is(err, storage.ErrTruncated), errors.Is(err, storage.ErrKeyMismatch),
		errors.Is(err, storage.ErrBadESK), errors.Is(err, storage.ErrNotSealed):
		log.Error("encrypted recording does not decrypt", "recording_id", id, "err", err)
		recErr(w, http.StatusInternalServerError, "decrypt_failed", "The encrypted recording failed to decrypt: "+err.Error())
	default:
		recLookupErr(w, log, err)
	}
}

func recLookupErr(w http.ResponseWriter, log *slog.Logger, err error) {
	switch {
	case errors.Is(err, storage.ErrInvalidID):
		recErr(w, http.StatusBadRequest, "bad_id", "That is not a recording id.")
	case errors.Is(err, storage.ErrInvalidTrack):
		recErr(w, http.StatusBadRequest, "bad_track", "track must be near, far or mixed.")
	case errors.Is(err, storage.ErrNotFound):
		recErr(w, http.StatusNotFound, "unknown_recording", "No recording (or track) has that id.")
	case errors.Is(err, storage.ErrNoAudio):
		recErr(w, http.StatusConflict, "no_audio", "The recording has no audio: it is still being written or it failed.")
	default:
		log.Error("open recording", "err", err)
		recErr(w, http.StatusInternalServerError, "archive_error", "The recording could not be read from the archive.")
	}
}

func recJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// recErr writes a JSON error {"error": code, "reason": sentence}.
func recErr(w http.ResponseWriter, status int, code, reason string) {
	recJSON(w, status, map[string]string{"error": code, "reason": reason})
}
