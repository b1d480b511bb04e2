package datacenter

import "encoding/binary"

// Table tags: the first byte of every key.
const (
	tagUser       = 'u'
	tagUsername   = 'n'
	tagToken      = 't'
	tagGroup      = 'g'
	tagMembership = 'b'
	tagMessage    = 'm'
	tagIdem       = 'i'
	tagCursor     = 'c'
	tagDirectory  = 'd'
	tagDirIndex   = 'e'
	tagDirVersion = 'v'
	tagOutbox     = 'o'
	tagGrant      = 'a'
)

func key(tag byte, parts ...string) []byte {
	n := 1
	for _, p := range parts {
		n += 1 + len(p)
	}
	k := make([]byte, 0, n+8)
	k = append(k, tag)
	for _, p := range parts {
		k = append(k, '/')
		k = append(k, p...)
	}
	return k
}

// prefix returns the key prefix that every key of tag under parts shares,
// ending in the separator.
func prefix(tag byte, parts ...string) []byte {
	return append(key(tag, parts...), '/')
}

// upperBound is the smallest key greater than every key that starts with p.
func upperBound(p []byte) []byte {
	ub := append([]byte(nil), p...)
	for i := len(ub) - 1; i >= 0; i-- {
		if ub[i] < 0xff {
			ub[i]++
			return ub[:i+1]
		}
	}
	return nil
}

func messageKey(groupID string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(prefix(tagMessage, groupID), seq)
}

func encodeSeq(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, seq)
}

func decodeSeq(b []byte) (uint64, bool) {
	if len(b) != 8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(b), true
}
