package datacenter

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// Cursor is one user's acknowledged position in one group's log.
type Cursor struct {
	UserID  string
	GroupID string
	Seq     uint64
}

// AdvanceCursors moves each cursor forward to its Seq; a cursor never moves
// back. Cursors are hints for unread counts and catch-up, so they are
// written without a sync.
func (s *Store) AdvanceCursors(cs []Cursor) error {
	if len(cs) == 0 {
		return nil
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	b := s.db.NewBatch()
	defer b.Close()
	// The batch is not readable, so a cursor named twice in cs is compared
	// with what this call already set for it.
	set := make(map[string]uint64, len(cs))
	for _, c := range cs {
		k := key(tagCursor, c.UserID, c.GroupID)
		if prev, ok := set[string(k)]; ok && prev >= c.Seq {
			continue
		}
		old, err := s.getRaw(k)
		if err != nil {
			return err
		}
		if prev, ok := decodeSeq(old); ok && prev >= c.Seq {
			continue
		}
		set[string(k)] = c.Seq
		_ = b.Set(k, encodeSeq(c.Seq), nil)
	}
	if b.Empty() {
		return nil
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("pebble commit cursors: %w", err)
	}
	return nil
}

// CursorOf returns the last sequence number the user acknowledged in the
// group, 0 when none.
func (s *Store) CursorOf(userID, groupID string) (uint64, error) {
	v, err := s.getRaw(key(tagCursor, userID, groupID))
	if err != nil {
		return 0, err
	}
	seq, _ := decodeSeq(v)
	return seq, nil
}
