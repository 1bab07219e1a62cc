package main

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/bib-project/bib/storage"
)

// registerRecordingRoutes serves the archive under /api/v1/recordings.
func registerRecordingRoutes(mux *http.ServeMux, st storage.Store, log *slog.Logger) {
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
		recJSON(w, http.StatusOK, m)
	})
	mux.HandleFunc("GET /api/v1/recordings/{id}/audio", func(w http.ResponseWriter, r *http.Request) {
		f, m, err := st.Open(r.Context(), r.PathValue("id"), r.URL.Query().Get("track"))
		if err != nil {
			recLookupErr(w, log, err)
			return
		}
		defer f.Close()
		w.Header().Set("Content-Type", "audio/wav")
		if m.SHA256 != "" && r.URL.Query().Get("track") == "" {
			w.Header().Set("ETag", `"`+m.SHA256+`"`)
		}
		// ServeContent answers Range and If-* requests, so an audio element can seek.
		http.ServeContent(w, r, m.ID+".wav", m.EndTime, f)
	})
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
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// recErr writes a JSON error {"error": code, "reason": sentence}.
func recErr(w http.ResponseWriter, status int, code, reason string) {
	recJSON(w, status, map[string]string{"error": code, "reason": reason})
}
