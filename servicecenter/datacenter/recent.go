package datacenter

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"

	recordv1 "github.com/roamfed/roamfed/api/record/v1"
)

// RecentCommits returns the messages of groups homed here that were
// committed within window of the newest commit in the store, each group's
// in order, at most limit in all (the newest kept when there are more).
//
// A home hands what it commits to the other regions from memory; what was
// still on its way when the home stopped, or crashed, is found again here
// when it starts, and sent again. The window is measured from the newest
// commit, not from the clock, so a home that was down for an hour resends
// what it committed in its last moments all the same.
func (s *Store) RecentCommits(window time.Duration, limit int) ([]*recordv1.Message, error) {
	type tail struct {
		groupID string
		last    *recordv1.Message
	}
	var tails []tail
	var newest time.Time
	err := s.scan(prefix(tagGroup), func(_, v []byte) error {
		g := new(recordv1.Group)
		if err := unmarshal(v, g); err != nil {
			return err
		}
		if g.GetHomeRegion() != s.region {
			return nil
		}
		msgs, err := s.groupTail(g.GetId(), time.Time{}, 1)
		if err != nil || len(msgs) == 0 {
			return err
		}
		last := msgs[0]
		tails = append(tails, tail{g.GetId(), last})
		if at := last.GetCommittedAt().AsTime(); at.After(newest) {
			newest = at
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	cutoff := newest.Add(-window)
	var out []*recordv1.Message
	for _, t := range tails {
		if t.last.GetCommittedAt().AsTime().Before(cutoff) {
			continue
		}
		msgs, err := s.groupTail(t.groupID, cutoff, limit)
		if err != nil {
			return nil, err
		}
		out = append(out, msgs...)
	}
	if len(out) > limit {
		slices.SortStableFunc(out, func(a, b *recordv1.Message) int {
			return a.GetCommittedAt().AsTime().Compare(b.GetCommittedAt().AsTime())
		})
		out = out[len(out)-limit:]
		slices.SortStableFunc(out, func(a, b *recordv1.Message) int {
			if c := strings.Compare(a.GetGroupId(), b.GetGroupId()); c != 0 {
				return c
			}
			return cmp.Compare(a.GetSeq(), b.GetSeq())
		})
	}
	return out, nil
}

// groupTail returns up to limit of a group's newest messages committed at
// or after since, in order.
func (s *Store) groupTail(groupID string, since time.Time, limit int) ([]*recordv1.Message, error) {
	lo := prefix(tagMessage, groupID)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: upperBound(lo)})
	if err != nil {
		return nil, fmt.Errorf("pebble iter: %w", err)
	}
	defer it.Close()
	var out []*recordv1.Message
	for ok := it.Last(); ok && len(out) < limit; ok = it.Prev() {
		m := new(recordv1.Message)
		if err := unmarshal(it.Value(), m); err != nil {
			return nil, err
		}
		if m.GetCommittedAt().AsTime().Before(since) {
			break
		}
		out = append(out, m)
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("pebble iter: %w", err)
	}
	slices.Reverse(out)
	return out, nil
}
