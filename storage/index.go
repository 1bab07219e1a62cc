package storage

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"

	_ "modernc.org/sqlite" // registers driver "sqlite"
)

// index is the SQLite catalogue of a DirStore. The metadata JSON is the
// record; the other columns exist to filter and sort. For an encrypted
// recording the JSON is indexMeta's subset: nothing the encrypted sidecar
// protects is kept in clear.
type index struct{ db *sql.DB }

// indexMeta is what the index keeps of an encrypted recording: ids, times,
// lines, devices and directory numbers (search), status, format and
// duration (listing), and the ciphertext sizes and hashes (Verify). Display
// names, per-direction statistics, events (DTMF), codecs, leg ids and the
// gate verdict stay in the encrypted sidecar only.
func indexMeta(m Meta) Meta {
	if !m.Encrypted {
		return m
	}
	party := func(p Party) Party { return Party{Side: p.Side, Device: p.Device, Line: p.Line, Addr: p.Addr} }
	return Meta{
		ID: m.ID, CallID: m.CallID, Near: party(m.Near), Far: party(m.Far),
		StartTime: m.StartTime, AnswerTime: m.AnswerTime, EndTime: m.EndTime, DurationMS: m.DurationMS,
		SampleRate: m.SampleRate, Channels: m.Channels, Status: m.Status, Reason: m.Reason,
		SizeBytes: m.SizeBytes, SHA256: m.SHA256, Tracks: m.Tracks, Encrypted: true,
	}
}

const schema = `
CREATE TABLE IF NOT EXISTS recordings (
	id          TEXT PRIMARY KEY,
	call_id     TEXT NOT NULL,
	near_device TEXT NOT NULL,
	near_line   TEXT NOT NULL,
	near_addr   TEXT NOT NULL,
	far_device  TEXT NOT NULL,
	far_line    TEXT NOT NULL,
	far_addr    TEXT NOT NULL,
	start_ns    INTEGER NOT NULL,
	status      TEXT NOT NULL,
	path        TEXT NOT NULL,
	meta        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS recordings_start ON recordings(start_ns);
CREATE INDEX IF NOT EXISTS recordings_status ON recordings(status);
`

func openIndex(ctx context.Context, path string) (*index, error) {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(5000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open index %s: %w", path, err)
	}
	db.SetMaxOpenConns(1) // one writer; SQLite serializes writers anyway
	if _, err := db.ExecContext(ctx, schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("create index schema %s: %w", path, err)
	}
	return &index{db: db}, nil
}

func (x *index) close() error { return x.db.Close() }

func startNS(m Meta) int64 {
	if m.StartTime.IsZero() {
		return 0
	}
	return m.StartTime.UnixNano()
}

func (x *index) insert(ctx context.Context, m Meta, path string) error {
	b, err := json.Marshal(indexMeta(m))
	if err != nil {
		return err
	}
	_, err = x.db.ExecContext(ctx, `INSERT INTO recordings
		(id, call_id, near_device, near_line, near_addr, far_device, far_line, far_addr, start_ns, status, path, meta)
		VALUES (?,?,?,?,?,?,?,?,?,?,?,?)`,
		m.ID, m.CallID, m.Near.Device, m.Near.Line, m.Near.Addr, m.Far.Device, m.Far.Line, m.Far.Addr,
		startNS(m), string(m.Status), path, string(b))
	if err != nil {
		return fmt.Errorf("index insert %s: %w", m.ID, err)
	}
	return nil
}

func (x *index) update(ctx context.Context, m Meta) error {
	b, err := json.Marshal(indexMeta(m))
	if err != nil {
		return err
	}
	res, err := x.db.ExecContext(ctx, `UPDATE recordings SET
		call_id=?, near_device=?, near_line=?, near_addr=?, far_device=?, far_line=?, far_addr=?, start_ns=?, status=?, meta=?
		WHERE id=?`,
		m.CallID, m.Near.Device, m.Near.Line, m.Near.Addr, m.Far.Device, m.Far.Line, m.Far.Addr,
		startNS(m), string(m.Status), string(b), m.ID)
	if err != nil {
		return fmt.Errorf("index update %s: %w", m.ID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("index update %s: %w", m.ID, ErrNotFound)
	}
	return nil
}

func (x *index) get(ctx context.Context, id string) (Meta, string, error) {
	var raw, path string
	err := x.db.QueryRowContext(ctx, `SELECT meta, path FROM recordings WHERE id=?`, id).Scan(&raw, &path)
	if errors.Is(err, sql.ErrNoRows) {
		return Meta{}, "", fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Meta{}, "", fmt.Errorf("index get %s: %w", id, err)
	}
	var m Meta
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		return Meta{}, "", fmt.Errorf("index get %s: decode metadata: %w", id, err)
	}
	return m, path, nil
}

// row is one index entry as Repair and Verify walk them.
type row struct {
	meta Meta
	path string
}

func (x *index) byStatus(ctx context.Context, statuses ...Status) ([]row, error) {
	ph := strings.TrimSuffix(strings.Repeat("?,", len(statuses)), ",")
	args := make([]any, len(statuses))
	for i, s := range statuses {
		args[i] = string(s)
	}
	rows, err := x.db.QueryContext(ctx, `SELECT meta, path FROM recordings WHERE status IN (`+ph+`) ORDER BY id`, args...)
	if err != nil {
		return nil, fmt.Errorf("index scan: %w", err)
	}
	defer rows.Close()
	var out []row
	for rows.Next() {
		var raw string
		var r row
		if err := rows.Scan(&raw, &r.path); err != nil {
			return nil, fmt.Errorf("index scan: %w", err)
		}
		if err := json.Unmarshal([]byte(raw), &r.meta); err != nil {
			return nil, fmt.Errorf("index scan: decode metadata: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

func (x *index) has(ctx context.Context, id string) (bool, error) {
	var n int
	err := x.db.QueryRowContext(ctx, `SELECT count(*) FROM recordings WHERE id=?`, id).Scan(&n)
	return n > 0, err
}

const (
	defaultLimit = 100
	maxLimit     = 1000
)

func encodeCursor(id string) string { return base64.RawURLEncoding.EncodeToString([]byte(id)) }

func decodeCursor(c string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || !ValidID(string(b)) {
		return "", fmt.Errorf("%q: %w", c, ErrInvalidCursor)
	}
	return string(b), nil
}

func (x *index) list(ctx context.Context, q Query) ([]Meta, string, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = defaultLimit
	}
	limit = min(limit, maxLimit)
	var where []string
	var args []any
	if q.Line != "" {
		where = append(where, "(near_line=? OR far_line=? OR near_addr=? OR far_addr=?)")
		args = append(args, q.Line, q.Line, q.Line, q.Line)
	}
	if q.Device != "" {
		where = append(where, "(near_device=? OR far_device=?)")
		args = append(args, q.Device, q.Device)
	}
	if !q.Since.IsZero() {
		where = append(where, "start_ns>=?")
		args = append(args, q.Since.UnixNano())
	}
	if !q.Until.IsZero() {
		where = append(where, "start_ns<?")
		args = append(args, q.Until.UnixNano())
	}
	if q.Cursor != "" {
		after, err := decodeCursor(q.Cursor)
		if err != nil {
			return nil, "", err
		}
		where = append(where, "id<?")
		args = append(args, after)
	}
	stmt := `SELECT meta FROM recordings`
	if len(where) > 0 {
		stmt += ` WHERE ` + strings.Join(where, " AND ")
	}
	stmt += ` ORDER BY id DESC LIMIT ?`
	args = append(args, limit+1)
	rows, err := x.db.QueryContext(ctx, stmt, args...)
	if err != nil {
		return nil, "", fmt.Errorf("index list: %w", err)
	}
	defer rows.Close()
	out := make([]Meta, 0, limit)
	next := ""
	for rows.Next() {
		if len(out) == limit {
			next = encodeCursor(out[len(out)-1].ID)
			break
		}
		var raw string
		if err := rows.Scan(&raw); err != nil {
			return nil, "", fmt.Errorf("index list: %w", err)
		}
		var m Meta
		if err := json.Unmarshal([]byte(raw), &m); err != nil {
			return nil, "", fmt.Errorf("index list: decode metadata: %w", err)
		}
		out = append(out, m)
	}
	return out, next, rows.Err()
}

func (x *index) all(ctx context.Context) (map[string]string, error) {
	rows, err := x.db.QueryContext(ctx, `SELECT id, path FROM recordings`)
	if err != nil {
		return nil, fmt.Errorf("index scan: %w", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var id, p string
		if err := rows.Scan(&id, &p); err != nil {
			return nil, err
		}
		out[id] = p
	}
	return out, rows.Err()
}
