package datacenter

import (
	"crypto/sha256"
	"fmt"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"

	recordv1 "github.com/roamfed/roamfed/api/record/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
)

// CreateUser stores a new user. It fails with ErrUserExists when the name is
// taken. The caller has validated the record's fields.
func (s *Store) CreateUser(u *recordv1.User) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	taken, err := s.getRaw(key(tagUsername, u.GetName()))
	if err != nil {
		return err
	}
	if taken != nil {
		return ErrUserExists
	}
	v, err := marshal(u)
	if err != nil {
		return err
	}
	b := s.db.NewBatch()
	defer b.Close()
	_ = b.Set(key(tagUser, u.GetId()), v, nil)
	_ = b.Set(key(tagUsername, u.GetName()), []byte(u.GetId()), nil)
	if s.region != "" && u.GetHomeRegion() == s.region {
		if err := s.putOwnDirectory(b,
			&roamingv1.DirectoryRecord{Kind: roamingv1.DirectoryKind_DIRECTORY_KIND_USER, Key: u.GetId(), UserId: u.GetId()},
			&roamingv1.DirectoryRecord{Kind: roamingv1.DirectoryKind_DIRECTORY_KIND_USERNAME, Key: u.GetName(), UserId: u.GetId()},
		); err != nil {
			return err
		}
	}
	err = b.Commit(pebble.Sync)
	s.dirCache.invalidate(nil)
	if err != nil {
		return fmt.Errorf("pebble commit user: %w", err)
	}
	return nil
}

// User returns the user with the given id.
func (s *Store) User(id string) (*recordv1.User, error) {
	u := new(recordv1.User)
	ok, err := s.get(key(tagUser, id), u)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, ErrUserNotFound
	}
	return u, nil
}

// UserByName returns the user with the given username.
func (s *Store) UserByName(name string) (*recordv1.User, error) {
	id, err := s.getRaw(key(tagUsername, name))
	if err != nil {
		return nil, err
	}
	if id == nil {
		return nil, ErrUserNotFound
	}
	return s.User(string(id))
}

// TokenKey is how a session token is looked up: its SHA-256, so that the
// store never holds a usable token.
func TokenKey(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return key(tagToken, string(sum[:]))
}

// PutSession stores a login session under the token's hash.
func (s *Store) PutSession(token string, rec *recordv1.SessionToken) error {
	if s.isClosed() {
		return ErrClosed
	}
	v, err := marshal(rec)
	if err != nil {
		return err
	}
	err = s.db.Set(TokenKey(token), v, pebble.Sync)
	s.sessions.invalidate(TokenKey(token))
	if err != nil {
		return fmt.Errorf("pebble set session: %w", err)
	}
	return nil
}

// Session returns the live session for a token. An expired one is
// ErrSessionNotFound.
func (s *Store) Session(token string, now time.Time) (*recordv1.SessionToken, error) {
	tk := TokenKey(token)
	rec, gen, ok := s.sessions.get(tk)
	if !ok {
		rec = new(recordv1.SessionToken)
		found, err := s.get(tk, rec)
		if err != nil {
			return nil, err
		}
		if !found {
			return nil, ErrSessionNotFound
		}
		s.sessions.put(tk, rec, gen)
	}
	if !now.Before(rec.GetExpiresAt().AsTime()) {
		return nil, ErrSessionNotFound
	}
	return rec, nil
}

// DeleteSession revokes a token. Revoking an unknown token is not an error.
func (s *Store) DeleteSession(token string) error {
	if s.isClosed() {
		return ErrClosed
	}
	err := s.db.Delete(TokenKey(token), pebble.Sync)
	s.sessions.invalidate(TokenKey(token))
	if err != nil {
		return fmt.Errorf("pebble delete session: %w", err)
	}
	return nil
}

// DeleteExpiredSessions removes sessions that expired before now and
// returns how many it removed. It reads at most limit sessions, starting
// where the previous call stopped and going round to the start, so that
// repeated calls reach every session however many are live.
func (s *Store) DeleteExpiredSessions(now time.Time, limit int) (int, error) {
	if s.isClosed() {
		return 0, ErrClosed
	}
	lo := []byte{tagToken, '/'}
	hi := upperBound(lo)
	s.sweepMu.Lock()
	defer s.sweepMu.Unlock()
	start := lo
	if s.sweepFrom != nil {
		start = slices.Clone(s.sweepFrom)
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return 0, fmt.Errorf("pebble iter: %w", err)
	}
	defer it.Close()
	b := s.db.NewBatch()
	defer b.Close()
	n, seen := 0, 0
	ok := it.SeekGE(start)
	wrapped := false
	for seen < limit {
		if !ok {
			// Past the last session: go round once, up to where this
			// sweep started.
			if wrapped || string(start) == string(lo) {
				s.sweepFrom = nil
				break
			}
			wrapped = true
			ok = it.First()
			continue
		}
		if wrapped && string(it.Key()) >= string(start) {
			break
		}
		seen++
		rec := new(recordv1.SessionToken)
		if err := unmarshal(it.Value(), rec); err != nil || !rec.GetExpiresAt().AsTime().After(now) {
			_ = b.Delete(it.Key(), nil)
			n++
		}
		s.sweepFrom = append(append(s.sweepFrom[:0], it.Key()...), 0) // the next key after this one
		ok = it.Next()
	}
	if err := it.Error(); err != nil {
		return 0, fmt.Errorf("pebble iter: %w", err)
	}
	if n == 0 {
		return 0, nil
	}
	err = b.Commit(pebble.NoSync)
	s.sessions.invalidate(nil)
	if err != nil {
		return 0, fmt.Errorf("pebble commit: %w", err)
	}
	return n, nil
}
