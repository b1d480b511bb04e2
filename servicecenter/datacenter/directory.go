package datacenter

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strconv"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	recordv1 "github.com/roamfed/roamfed/api/record/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
)

// DirectoryBatches is how many batches each region's home records are
// published in. A record's batch is a hash of its kind and key.
const DirectoryBatches = 64

// ErrNotInDirectory means the directory holds no record for the key.
var ErrNotInDirectory = errors.New("datacenter: not in the home directory")

// ErrDirectoryIncomplete means no record was found, but some region that
// might have it could not be asked: the key may exist.
var ErrDirectoryIncomplete = errors.New("not found in the reachable regions; a region that may home it is unreachable")

// DirectoryBatch returns the batch a record belongs to.
func DirectoryBatch(kind roamingv1.DirectoryKind, key string) uint32 {
	h := fnv.New32a()
	h.Write([]byte{byte(kind)})
	h.Write([]byte(key))
	return h.Sum32() % DirectoryBatches
}

func kindPart(kind roamingv1.DirectoryKind) string { return strconv.Itoa(int(kind)) }

func batchPart(batch uint32) string {
	return string(binary.BigEndian.AppendUint32(nil, batch))
}

func dirKey(kind roamingv1.DirectoryKind, k string) []byte {
	return key(tagDirectory, kindPart(kind), k)
}

func dirIndexKey(owner string, batch uint32, kind roamingv1.DirectoryKind, k string) []byte {
	return key(tagDirIndex, owner, batchPart(batch), kindPart(kind), k)
}

func dirVersionKey(owner string, batch uint32) []byte {
	return key(tagDirVersion, owner, batchPart(batch))
}

// Locate returns the directory record of a user, username or group. The
// record is shared: callers must not modify it.
func (s *Store) Locate(kind roamingv1.DirectoryKind, k string) (*roamingv1.DirectoryRecord, error) {
	dk := dirKey(kind, k)
	rec, gen, ok := s.dirCache.get(dk)
	if !ok {
		rec = new(roamingv1.DirectoryRecord)
		found, err := s.get(dk, rec)
		if err != nil {
			return nil, err
		}
		if !found {
			return nil, ErrNotInDirectory
		}
		s.dirCache.put(dk, rec, gen)
	}
	if rec.GetDeleted() {
		return nil, ErrNotInDirectory
	}
	return rec, nil
}

// DirectoryVersions returns the versions of the batches of owner's records
// that this store holds.
func (s *Store) DirectoryVersions(owner string) ([]*roamingv1.BatchVersion, error) {
	lo := prefix(tagDirVersion, owner)
	var out []*roamingv1.BatchVersion
	err := s.scan(lo, func(_, v []byte) error {
		bv := new(roamingv1.BatchVersion)
		if err := unmarshal(v, bv); err != nil {
			return err
		}
		out = append(out, bv)
		return nil
	})
	return out, err
}

// DirectoryBatchRecords returns the records of one of owner's batches,
// tombstones included, with the batch's version.
func (s *Store) DirectoryBatchRecords(owner string, batch uint32) (*roamingv1.BatchVersion, []*roamingv1.DirectoryRecord, error) {
	bv := &roamingv1.BatchVersion{Batch: batch}
	if _, err := s.get(dirVersionKey(owner, batch), bv); err != nil {
		return nil, nil, err
	}
	lo := prefix(tagDirIndex, owner, batchPart(batch))
	var out []*roamingv1.DirectoryRecord
	err := s.scan(lo, func(k, _ []byte) error {
		kind, rk, ok := splitIndexKey(k[len(lo):])
		if !ok {
			return fmt.Errorf("%w: directory index key %q", ErrCorrupt, k)
		}
		rec := new(roamingv1.DirectoryRecord)
		found, err := s.get(dirKey(kind, rk), rec)
		if err != nil {
			return err
		}
		if found && rec.GetHomeRegion() == owner {
			out = append(out, rec)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return bv, out, nil
}

func splitIndexKey(rest []byte) (roamingv1.DirectoryKind, string, bool) {
	for i, c := range rest {
		if c == '/' {
			n, err := strconv.Atoi(string(rest[:i]))
			if err != nil {
				return 0, "", false
			}
			return roamingv1.DirectoryKind(n), string(rest[i+1:]), true
		}
	}
	return 0, "", false
}

// putOwnDirectory adds this region's own records to b, bumping the minor
// version of each batch they touch. The caller holds writeMu.
func (s *Store) putOwnDirectory(b *pebble.Batch, recs ...*roamingv1.DirectoryRecord) error {
	versions := make(map[uint32]*roamingv1.BatchVersion)
	for _, rec := range recs {
		batch := DirectoryBatch(rec.GetKind(), rec.GetKey())
		bv, ok := versions[batch]
		if !ok {
			bv = &roamingv1.BatchVersion{Batch: batch}
			found, err := s.get(dirVersionKey(s.region, batch), bv)
			if err != nil {
				return err
			}
			if !found {
				bv.Major = 1
			}
			bv.Minor++
			versions[batch] = bv
		}
		rec.HomeRegion = s.region
		rec.Minor = bv.GetMinor()
		v, err := marshal(rec)
		if err != nil {
			return err
		}
		_ = b.Set(dirKey(rec.GetKind(), rec.GetKey()), v, nil)
		_ = b.Set(dirIndexKey(s.region, batch, rec.GetKind(), rec.GetKey()), nil, nil)
	}
	for batch, bv := range versions {
		v, err := marshal(bv)
		if err != nil {
			return err
		}
		_ = b.Set(dirVersionKey(s.region, batch), v, nil)
	}
	return nil
}

// SetLocation records where one of this region's users is connected now;
// an empty location means at home or offline. It is published with the
// user's directory record.
func (s *Store) SetLocation(userID, location string) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	rec := new(roamingv1.DirectoryRecord)
	ok, err := s.get(dirKey(roamingv1.DirectoryKind_DIRECTORY_KIND_USER, userID), rec)
	if err != nil {
		return err
	}
	if !ok || rec.GetHomeRegion() != s.region {
		return fmt.Errorf("user %s: %w", userID, ErrUserNotFound)
	}
	if rec.GetLocation() == location {
		return nil
	}
	rec.Location = location
	b := s.db.NewBatch()
	defer b.Close()
	if err := s.putOwnDirectory(b, rec); err != nil {
		return err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("pebble commit location: %w", err)
	}
	s.dirCache.invalidate(dirKey(roamingv1.DirectoryKind_DIRECTORY_KIND_USER, userID))
	return nil
}

// ApplyDirectory stores what a peer region published about its records. A
// full update replaces the batch; a delta updates the records it carries.
// Records whose home is not owner are refused: a region speaks only for
// what it owns.
func (s *Store) ApplyDirectory(owner string, updates []*roamingv1.BatchUpdate) error {
	if owner == s.region {
		return fmt.Errorf("datacenter: region %s cannot apply its own directory from a peer", owner)
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	b := s.db.NewBatch()
	defer b.Close()
	for _, u := range updates {
		batch := u.GetVersion().GetBatch()
		if batch >= DirectoryBatches {
			return fmt.Errorf("datacenter: directory batch %d out of range", batch)
		}
		if u.GetFull() {
			lo := prefix(tagDirIndex, owner, batchPart(batch))
			if err := s.scan(lo, func(k, _ []byte) error {
				_ = b.Delete(k, nil)
				if kind, rk, ok := splitIndexKey(k[len(lo):]); ok && s.homedAt(kind, rk, owner) {
					_ = b.Delete(dirKey(kind, rk), nil)
				}
				return nil
			}); err != nil {
				return err
			}
		}
		for _, rec := range u.GetRecords() {
			if rec.GetHomeRegion() != owner {
				return fmt.Errorf("datacenter: region %s sent a record homed in %q", owner, rec.GetHomeRegion())
			}
			if DirectoryBatch(rec.GetKind(), rec.GetKey()) != batch {
				return fmt.Errorf("datacenter: record %v/%q is not in batch %d", rec.GetKind(), rec.GetKey(), batch)
			}
			// A region speaks only for its own records: it may not take
			// over a key another region homes (least of all one homed
			// here). Two regions that registered one username at the
			// same moment both keep theirs; the conflict is logged.
			cur := new(roamingv1.DirectoryRecord)
			found, err := s.get(dirKey(rec.GetKind(), rec.GetKey()), cur)
			if err != nil {
				return err
			}
			if found && !cur.GetDeleted() && cur.GetHomeRegion() != owner {
				s.log.Warn("directory conflict: a peer published a key another region homes; kept the existing record",
					slog.String("peer", owner), slog.String("key", rec.GetKey()), slog.String("home", cur.GetHomeRegion()))
				continue
			}
			v, err := marshal(rec)
			if err != nil {
				return err
			}
			_ = b.Set(dirKey(rec.GetKind(), rec.GetKey()), v, nil)
			_ = b.Set(dirIndexKey(owner, batch, rec.GetKind(), rec.GetKey()), nil, nil)
		}
		if u.GetFull() && u.GetVersion().GetMajor() == 0 {
			// The owner no longer publishes the batch (an empty full
			// update at 0.0): forget its version too, or every round
			// would send the batch again.
			_ = b.Delete(dirVersionKey(owner, batch), nil)
			continue
		}
		v, err := marshal(proto.Clone(u.GetVersion()))
		if err != nil {
			return err
		}
		_ = b.Set(dirVersionKey(owner, batch), v, nil)
	}
	if b.Empty() {
		return nil
	}
	// Peer records can always be fetched again; no sync needed.
	err := b.Commit(pebble.NoSync)
	// A full update may have deleted any record of the batch.
	s.dirCache.invalidate(nil)
	if err != nil {
		return fmt.Errorf("pebble commit directory: %w", err)
	}
	return nil
}

// homedAt reports whether the stored record for a key names owner as home.
func (s *Store) homedAt(kind roamingv1.DirectoryKind, k, owner string) bool {
	cur := new(roamingv1.DirectoryRecord)
	found, err := s.get(dirKey(kind, k), cur)
	return err == nil && found && cur.GetHomeRegion() == owner
}

// CacheDirectory stores a record learned by asking a peer (a directory
// miss), without touching batch versions; replication overwrites it.
func (s *Store) CacheDirectory(rec *roamingv1.DirectoryRecord) error {
	if rec.GetHomeRegion() == s.region {
		return nil
	}
	cur := new(roamingv1.DirectoryRecord)
	if found, err := s.get(dirKey(rec.GetKind(), rec.GetKey()), cur); err != nil || found && !cur.GetDeleted() {
		// Never replace what replication or this region wrote.
		return err
	}
	v, err := marshal(rec)
	if err != nil {
		return err
	}
	err = s.db.Set(dirKey(rec.GetKind(), rec.GetKey()), v, pebble.NoSync)
	s.dirCache.invalidate(dirKey(rec.GetKind(), rec.GetKey()))
	if err != nil {
		return fmt.Errorf("pebble set directory: %w", err)
	}
	return nil
}

// scan calls fn for every key with the given prefix, in order.
func (s *Store) scan(lo []byte, fn func(k, v []byte) error) error {
	if s.isClosed() {
		return ErrClosed
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: upperBound(lo)})
	if err != nil {
		return fmt.Errorf("pebble iter: %w", err)
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		if err := fn(it.Key(), it.Value()); err != nil {
			return err
		}
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("pebble iter: %w", err)
	}
	return nil
}

// ResyncResult counts what ResyncDirectory found.
type ResyncResult struct {
	Checked, Corrected, Removed int
}

// ResyncDirectory checks this region's published home records against its
// users and groups (DESIGN.md flow 9): a missing or wrong record is
// rewritten, a record naming nothing here is removed (a tombstone, so that
// replicas drop it too), and every batch that changed gets a new major
// version, so that peers fetch it whole.
func (s *Store) ResyncDirectory() (ResyncResult, error) {
	if s.region == "" {
		return ResyncResult{}, errors.New("datacenter: no region: the store keeps no directory")
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	type dk struct {
		kind roamingv1.DirectoryKind
		key  string
	}
	want := make(map[dk]*roamingv1.DirectoryRecord)
	err := s.scan([]byte{tagUser, '/'}, func(_, v []byte) error {
		u := new(recordv1.User)
		if err := unmarshal(v, u); err != nil {
			return err
		}
		if u.GetHomeRegion() == s.region {
			want[dk{roamingv1.DirectoryKind_DIRECTORY_KIND_USER, u.GetId()}] = &roamingv1.DirectoryRecord{
				Kind: roamingv1.DirectoryKind_DIRECTORY_KIND_USER, Key: u.GetId(), UserId: u.GetId(), HomeRegion: s.region}
			want[dk{roamingv1.DirectoryKind_DIRECTORY_KIND_USERNAME, u.GetName()}] = &roamingv1.DirectoryRecord{
				Kind: roamingv1.DirectoryKind_DIRECTORY_KIND_USERNAME, Key: u.GetName(), UserId: u.GetId(), HomeRegion: s.region}
		}
		return nil
	})
	if err != nil {
		return ResyncResult{}, err
	}
	err = s.scan([]byte{tagGroup, '/'}, func(_, v []byte) error {
		g := new(recordv1.Group)
		if err := unmarshal(v, g); err != nil {
			return err
		}
		if g.GetHomeRegion() == s.region {
			want[dk{roamingv1.DirectoryKind_DIRECTORY_KIND_GROUP, g.GetId()}] = &roamingv1.DirectoryRecord{
				Kind: roamingv1.DirectoryKind_DIRECTORY_KIND_GROUP, Key: g.GetId(), HomeRegion: s.region}
		}
		return nil
	})
	if err != nil {
		return ResyncResult{}, err
	}
	var res ResyncResult
	var fix []*roamingv1.DirectoryRecord
	seen := make(map[dk]bool)
	lo := prefix(tagDirIndex, s.region)
	err = s.scan(lo, func(k, _ []byte) error {
		rest := k[len(lo)+5:] // past the batch and its separator
		kind, key, ok := splitIndexKey(rest)
		if !ok {
			return fmt.Errorf("%w: directory index key %q", ErrCorrupt, k)
		}
		d := dk{kind, key}
		seen[d] = true
		res.Checked++
		cur := new(roamingv1.DirectoryRecord)
		found, err := s.get(dirKey(kind, key), cur)
		if err != nil {
			return err
		}
		w, expected := want[d]
		switch {
		case !expected && found && !cur.GetDeleted() && cur.GetHomeRegion() == s.region:
			cur.Deleted = true
			fix = append(fix, cur)
			res.Removed++
		case expected && (!found || cur.GetDeleted() || cur.GetHomeRegion() != s.region || cur.GetUserId() != w.GetUserId()):
			fix = append(fix, w)
			res.Corrected++
		}
		return nil
	})
	if err != nil {
		return ResyncResult{}, err
	}
	for d, w := range want {
		if !seen[d] {
			res.Checked++
			fix = append(fix, w)
			res.Corrected++
		}
	}
	if len(fix) == 0 {
		return res, nil
	}
	b := s.db.NewBatch()
	defer b.Close()
	if err := s.putOwnDirectory(b, fix...); err != nil {
		return ResyncResult{}, err
	}
	// A new major version makes every replica fetch the changed batches
	// whole, whatever it held.
	batches := make(map[uint32]bool)
	for _, r := range fix {
		batches[DirectoryBatch(r.GetKind(), r.GetKey())] = true
	}
	for batch := range batches {
		bv := &roamingv1.BatchVersion{Batch: batch}
		if _, err := s.get(dirVersionKey(s.region, batch), bv); err != nil {
			return ResyncResult{}, err
		}
		bv.Major++
		bv.Minor++
		v, err := marshal(bv)
		if err != nil {
			return ResyncResult{}, err
		}
		_ = b.Set(dirVersionKey(s.region, batch), v, nil)
	}
	err = b.Commit(pebble.Sync)
	s.dirCache.invalidate(nil)
	if err != nil {
		return ResyncResult{}, fmt.Errorf("pebble commit resync: %w", err)
	}
	return res, nil
}
