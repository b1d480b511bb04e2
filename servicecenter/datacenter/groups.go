package datacenter

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	recordv1 "github.com/roamfed/roamfed/api/record/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
)

// CreateGroup stores a new group and indexes its members. The store takes
// ownership of g.
func (s *Store) CreateGroup(g *recordv1.Group) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	old, err := s.getRaw(key(tagGroup, g.GetId()))
	if err != nil {
		return err
	}
	if old != nil {
		return ErrGroupExists
	}
	var dir *roamingv1.DirectoryRecord
	if s.region != "" && g.GetHomeRegion() == s.region {
		dir = &roamingv1.DirectoryRecord{Kind: roamingv1.DirectoryKind_DIRECTORY_KIND_GROUP, Key: g.GetId()}
	}
	return s.writeGroup(nil, g, dir)
}

// Group returns the group with the given id. The record is shared with the
// store's cache: callers must not modify it (proto.Clone it first).
func (s *Store) Group(id string) (*recordv1.Group, error) {
	// Without this, a cached group would be returned, and UpdateGroup and
	// PutGroup would go on to commit to the closed database, which panics.
	if s.isClosed() {
		return nil, ErrClosed
	}
	s.groupsMu.RLock()
	g, ok := s.groups[id]
	s.groupsMu.RUnlock()
	if ok {
		return g, nil
	}
	g = new(recordv1.Group)
	found, err := s.get(key(tagGroup, id), g)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, ErrGroupNotFound
	}
	s.groupsMu.Lock()
	// A writer may have cached a newer record while we read.
	if cur, ok := s.groups[id]; ok {
		g = cur
	} else {
		s.groups[id] = g
	}
	s.groupsMu.Unlock()
	return g, nil
}

// UpdateGroup applies change to a copy of the group and stores the result
// with its version increased by one. An error from change is returned as is
// and stores nothing. The returned record must not be modified.
func (s *Store) UpdateGroup(id string, change func(g *recordv1.Group) error) (*recordv1.Group, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	old, err := s.Group(id)
	if err != nil {
		return nil, err
	}
	g := proto.Clone(old).(*recordv1.Group)
	if err := change(g); err != nil {
		return nil, err
	}
	g.Version = old.GetVersion() + 1
	if err := s.writeGroup(old, g); err != nil {
		return nil, err
	}
	return g, nil
}

// PutGroup stores a group record as given (the store takes ownership of g), replacing any older version. It
// is how a region keeps copies of groups homed elsewhere; a record older
// than the stored one is ignored.
func (s *Store) PutGroup(g *recordv1.Group) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	old, err := s.Group(g.GetId())
	switch {
	case errors.Is(err, ErrGroupNotFound):
		old = nil
	case err != nil:
		return err
	case old.GetVersion() >= g.GetVersion():
		return nil
	}
	return s.writeGroup(old, g)
}

// writeGroup stores g and moves the membership index from old's members to
// g's. It sorts g's members by user id, which IsMember relies on; from here
// on g belongs to the store's cache. The caller holds writeMu.
func (s *Store) writeGroup(old, g *recordv1.Group, dir ...*roamingv1.DirectoryRecord) error {
	slices.SortFunc(g.Members, func(a, b *recordv1.Member) int { return strings.Compare(a.GetUserId(), b.GetUserId()) })
	v, err := marshal(g)
	if err != nil {
		return err
	}
	b := s.db.NewBatch()
	defer b.Close()
	_ = b.Set(key(tagGroup, g.GetId()), v, nil)
	if len(dir) > 0 && dir[0] != nil {
		if err := s.putOwnDirectory(b, dir...); err != nil {
			return err
		}
	}
	was := memberIDs(old)
	now := memberIDs(g)
	for _, u := range was {
		if _, ok := slices.BinarySearch(now, u); !ok {
			_ = b.Delete(key(tagMembership, u, g.GetId()), nil)
		}
	}
	for _, u := range now {
		if _, ok := slices.BinarySearch(was, u); !ok {
			_ = b.Set(key(tagMembership, u, g.GetId()), nil, nil)
		}
	}
	err = b.Commit(pebble.Sync)
	if len(dir) > 0 && dir[0] != nil {
		s.dirCache.invalidate(nil)
	}
	if err != nil {
		return fmt.Errorf("pebble commit group: %w", err)
	}
	s.groupsMu.Lock()
	s.groups[g.GetId()] = g
	s.groupsMu.Unlock()
	return nil
}

func memberIDs(g *recordv1.Group) []string {
	ids := make([]string, 0, len(g.GetMembers()))
	for _, m := range g.GetMembers() {
		ids = append(ids, m.GetUserId())
	}
	slices.Sort(ids)
	return ids
}

// GroupsOf returns the ids of the groups a user is a member of, in id order.
func (s *Store) GroupsOf(userID string) ([]string, error) {
	if s.isClosed() {
		return nil, ErrClosed
	}
	lo := prefix(tagMembership, userID)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: upperBound(lo)})
	if err != nil {
		return nil, fmt.Errorf("pebble iter: %w", err)
	}
	defer it.Close()
	var ids []string
	for ok := it.First(); ok; ok = it.Next() {
		ids = append(ids, string(it.Key()[len(lo):]))
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("pebble iter: %w", err)
	}
	return ids, nil
}

// IsMember reports whether userID is a member of g, a record read from the
// store (whose members are sorted by user id).
func IsMember(g *recordv1.Group, userID string) bool {
	return FindMember(g, userID) != nil
}

// FindMember returns userID's membership of g, a record read from the
// store, or nil.
func FindMember(g *recordv1.Group, userID string) *recordv1.Member {
	i, ok := slices.BinarySearchFunc(g.GetMembers(), userID, func(m *recordv1.Member, id string) int {
		return strings.Compare(m.GetUserId(), id)
	})
	if !ok {
		return nil
	}
	return g.GetMembers()[i]
}
