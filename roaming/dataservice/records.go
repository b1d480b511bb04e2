package dataservice

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync/atomic"

	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/internal/ids"
	"github.com/roamfed/roamfed/internal/validate"
	"github.com/roamfed/roamfed/servicecenter/datacenter"
)

// refusals counts, per peer, the directory records refused from it.
type refusals map[string]*atomic.Uint64 // fixed at NewClient

// checkRecord says why a directory record that peer published
// (ReplicateDirectory) or answered (Locate) must not be taken, or nil. A
// region speaks only for what it homes, in well-formed records:
//
//   - the record's home is peer;
//   - its kind is a user, a username or a group, and its key is a
//     well-formed user id, username or group id;
//   - a user's record names the user itself, a username's a well-formed
//     user id, a group's no user;
//   - a location is only a user's, and names a region of the federation;
//   - the key is not homed by another region in this region's directory
//     (least of all by this region): a peer cannot take over a key.
func (c *Client) checkRecord(peer string, rec *roamingv1.DirectoryRecord) error {
	if rec.GetHomeRegion() != peer {
		return fmt.Errorf("a record homed in %q", truncate(rec.GetHomeRegion(), 64))
	}
	key, user := rec.GetKey(), rec.GetUserId()
	switch rec.GetKind() {
	case roamingv1.DirectoryKind_DIRECTORY_KIND_USER:
		if err := validate.ID("key", ids.User, key); err != nil {
			return fmt.Errorf("a user record: %w", err)
		}
		if user != key {
			return fmt.Errorf("user record %s names user %q", key, truncate(user, 64))
		}
	case roamingv1.DirectoryKind_DIRECTORY_KIND_USERNAME:
		if err := validate.Username("key", key); err != nil {
			return fmt.Errorf("a username record: %w", err)
		}
		if err := validate.ID("user_id", ids.User, user); err != nil {
			return fmt.Errorf("username record %s: %w", key, err)
		}
	case roamingv1.DirectoryKind_DIRECTORY_KIND_GROUP:
		if err := validate.ID("key", ids.Group, key); err != nil {
			return fmt.Errorf("a group record: %w", err)
		}
		if user != "" {
			return fmt.Errorf("group record %s names user %q", key, truncate(user, 64))
		}
	default:
		return fmt.Errorf("a record of kind %d", rec.GetKind())
	}
	if loc := rec.GetLocation(); loc != "" {
		if rec.GetKind() != roamingv1.DirectoryKind_DIRECTORY_KIND_USER {
			return fmt.Errorf("record %s of kind %v has a location", key, rec.GetKind())
		}
		if !c.regions[loc] {
			return fmt.Errorf("user record %s is located in %q, not a region of the federation", key, truncate(loc, 64))
		}
	}
	cur, err := c.store.Locate(rec.GetKind(), key)
	switch {
	case errors.Is(err, datacenter.ErrNotInDirectory):
	case err != nil:
		return fmt.Errorf("record %s: directory unreadable: %w", key, err)
	case cur.GetHomeRegion() != peer:
		return fmt.Errorf("%v %s, which %s homes", rec.GetKind(), key, cur.GetHomeRegion())
	}
	return nil
}

// checkUpdates returns updates without the records checkRecord refuses
// (and without updates for a batch that does not exist or records filed
// in another batch than theirs), counting and logging what it left out.
// A full update stays full: the peer's refused records are dropped with
// the rest of the batch's old content, its good ones are kept.
func (c *Client) checkUpdates(peer string, updates []*roamingv1.BatchUpdate) []*roamingv1.BatchUpdate {
	var (
		out     = make([]*roamingv1.BatchUpdate, 0, len(updates))
		refused int
		first   error
	)
	refuse := func(err error) {
		refused++
		if first == nil {
			first = err
		}
	}
	for _, u := range updates {
		batch := u.GetVersion().GetBatch()
		if batch >= datacenter.DirectoryBatches {
			// The update goes whole: counted as its records, or as one.
			refuse(fmt.Errorf("batch %d, out of [0,%d)", batch, datacenter.DirectoryBatches))
			refused += max(len(u.GetRecords()), 1) - 1
			continue
		}
		kept := &roamingv1.BatchUpdate{Version: u.GetVersion(), Full: u.GetFull()}
		for _, rec := range u.GetRecords() {
			err := c.checkRecord(peer, rec)
			if err == nil && datacenter.DirectoryBatch(rec.GetKind(), rec.GetKey()) != batch {
				err = fmt.Errorf("record %s filed in batch %d, not its own", rec.GetKey(), batch)
			}
			if err != nil {
				refuse(err)
				continue
			}
			kept.Records = append(kept.Records, rec)
		}
		out = append(out, kept)
	}
	if refused > 0 {
		c.refused.add(peer, refused)
		c.log.Warn("directory records from a peer refused", slog.String("peer", peer),
			slog.Int("refused", refused), slog.Any("first", first))
	}
	return out
}

func (r refusals) add(peer string, n int) {
	if cnt, ok := r[peer]; ok {
		cnt.Add(uint64(n))
	}
}

// Refused returns, by peer, how many directory records the peer published
// or answered that this region refused (see checkRecord); every peer is
// present.
func (c *Client) Refused() map[string]uint64 {
	out := make(map[string]uint64, len(c.refused))
	for _, peer := range slices.Sorted(maps.Keys(c.refused)) {
		out[peer] = c.refused[peer].Load()
	}
	return out
}

// truncate keeps an untrusted value short enough to quote.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
