// Package ids makes the identifiers of users, groups, messages and sessions.
//
// An id is a one-letter kind, an underscore, and 26 characters of Crockford
// base32 over 128 bits: 48 bits of milliseconds since the Unix epoch followed
// by 80 random bits. Ids are globally unique without coordination between
// regions, sort roughly by creation time, and say nothing about where their
// subject lives: the home region is always looked up, never parsed from an id.
package ids

import (
	"crypto/rand"
	"encoding/binary"
	"time"
)

// Kind is the one-letter prefix that tells what an id names.
type Kind byte

// The kinds of id.
const (
	User    Kind = 'u'
	Group   Kind = 'g'
	Message Kind = 'm'
	Session Kind = 's'
)

// Len is the length of every id.
const Len = 2 + 26

const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// New returns a fresh id of the given kind.
func New(k Kind) string {
	return newAt(k, time.Now())
}

func newAt(k Kind, t time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(t.UnixMilli())<<16)
	// crypto/rand.Read never fails (Go 1.24+).
	rand.Read(b[6:])
	return encode(k, b)
}

func encode(k Kind, b [16]byte) string {
	out := make([]byte, Len)
	out[0] = byte(k)
	out[1] = '_'
	hi := binary.BigEndian.Uint64(b[:8])
	lo := binary.BigEndian.Uint64(b[8:])
	// 128 bits in 26 five-bit digits: the first digit holds the top 3 bits.
	for i := Len - 1; i >= 2; i-- {
		out[i] = alphabet[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out)
}

// Valid reports whether s is a well-formed id of kind k.
func Valid(k Kind, s string) bool {
	if len(s) != Len || s[0] != byte(k) || s[1] != '_' {
		return false
	}
	// The first digit carries only 3 bits.
	if s[2] > '7' || s[2] < '0' {
		return false
	}
	for i := 3; i < Len; i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'Z') || c == 'I' || c == 'L' || c == 'O' || c == 'U' {
			return false
		}
	}
	return true
}
