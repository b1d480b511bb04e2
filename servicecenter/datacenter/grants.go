package datacenter

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// PutGrant records that region may act for a user homed here until until:
// the home verified the user's credentials for a login at that region.
func (s *Store) PutGrant(userID, region string, until time.Time) error {
	if s.isClosed() {
		return ErrClosed
	}
	v := binary.BigEndian.AppendUint64(nil, uint64(until.UnixNano()))
	if err := s.db.Set(key(tagGrant, userID, region), v, pebble.Sync); err != nil {
		return fmt.Errorf("pebble set grant: %w", err)
	}
	return nil
}

// Grant returns until when region may act for a user, and false when it
// may not (no grant, or an expired one).
func (s *Store) Grant(userID, region string, now time.Time) (time.Time, bool, error) {
	v, err := s.getRaw(key(tagGrant, userID, region))
	if err != nil || len(v) != 8 {
		return time.Time{}, false, err
	}
	until := time.Unix(0, int64(binary.BigEndian.Uint64(v)))
	return until, now.Before(until), nil
}
