package storage

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"strings"
	"time"
)

// Ids are 16 bytes, 6 of them the creation time in milliseconds (big
// endian) and 10 random, in base32hex lower case: 26 characters whose
// lexical order is their creation order.
var idEncoding = base32.HexEncoding.WithPadding(base32.NoPadding)

const idLen = 26

// NewID returns a new time-sortable random id.
func NewID(t time.Time) string {
	var b [16]byte
	ms := uint64(t.UnixMilli())
	var ts [8]byte
	binary.BigEndian.PutUint64(ts[:], ms)
	copy(b[:6], ts[2:])
	_, _ = rand.Read(b[6:]) // crypto/rand.Read never fails (Go 1.24+)
	return strings.ToLower(idEncoding.EncodeToString(b[:]))
}

// ValidID reports whether id has the shape NewID produces.
func ValidID(id string) bool {
	if len(id) != idLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'v') {
			return false
		}
	}
	return true
}

// idTime returns the creation time encoded in a valid id.
func idTime(id string) time.Time {
	b, err := idEncoding.DecodeString(strings.ToUpper(id))
	if err != nil || len(b) < 6 {
		return time.Time{}
	}
	var ts [8]byte
	copy(ts[2:], b[:6])
	return time.UnixMilli(int64(binary.BigEndian.Uint64(ts[:]))).UTC()
}
