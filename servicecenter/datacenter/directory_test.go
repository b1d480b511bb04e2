package datacenter_test

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	recordv1 "github.com/roamfed/roamfed/api/record/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/internal/ids"
	"github.com/roamfed/roamfed/servicecenter/datacenter"
)

const (
	kindUser     = roamingv1.DirectoryKind_DIRECTORY_KIND_USER
	kindUsername = roamingv1.DirectoryKind_DIRECTORY_KIND_USERNAME
	kindGroup    = roamingv1.DirectoryKind_DIRECTORY_KIND_GROUP
)

// dirStore opens a store for region in dir (a fresh temp dir when dir is
// ""), closed when the test ends.
func dirStore(t *testing.T, dir, region string) *datacenter.Store {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	s, err := datacenter.Open(dir, datacenter.Options{Region: region})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func dirUser(name, home string) *recordv1.User {
	return &recordv1.User{Id: ids.New(ids.User), Name: name, HomeRegion: home}
}

func dirGroup(home string) *recordv1.Group {
	return &recordv1.Group{Id: ids.New(ids.Group), Name: "group", HomeRegion: home, Version: 1}
}

// versionsOf returns the versions of owner's batches that s holds, by batch.
func versionsOf(t *testing.T, s *datacenter.Store, owner string) map[uint32]*roamingv1.BatchVersion {
	t.Helper()
	vs, err := s.DirectoryVersions(owner)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[uint32]*roamingv1.BatchVersion, len(vs))
	for _, v := range vs {
		if _, dup := out[v.GetBatch()]; dup {
			t.Fatalf("DirectoryVersions(%s) names batch %d twice", owner, v.GetBatch())
		}
		out[v.GetBatch()] = v
	}
	return out
}

func mustLocate(t *testing.T, s *datacenter.Store, kind roamingv1.DirectoryKind, key string) *roamingv1.DirectoryRecord {
	t.Helper()
	rec, err := s.Locate(kind, key)
	if err != nil {
		t.Fatalf("Locate(%v, %s): %v", kind, key, err)
	}
	return rec
}

func wantNotInDirectory(t *testing.T, s *datacenter.Store, kind roamingv1.DirectoryKind, key string) {
	t.Helper()
	if rec, err := s.Locate(kind, key); !errors.Is(err, datacenter.ErrNotInDirectory) {
		t.Fatalf("Locate(%v, %s) = %v, %v; want ErrNotInDirectory", kind, key, rec, err)
	}
}

// keyInBatch returns a key of kind that falls in batch.
func keyInBatch(kind roamingv1.DirectoryKind, batch uint32, prefix string) string {
	for i := 0; ; i++ {
		k := fmt.Sprintf("%s%d", prefix, i)
		if datacenter.DirectoryBatch(kind, k) == batch {
			return k
		}
	}
}

// TestOwnDirectory checks that creating users and groups publishes their
// records, and that every write bumps the minor version of each batch it
// touches, once, with the records taking that minor.
func TestOwnDirectory(t *testing.T) {
	s := dirStore(t, "", "eu")
	want := map[uint32]uint64{} // batch -> minor
	type pub struct {
		kind roamingv1.DirectoryKind
		key  string
		want *roamingv1.DirectoryRecord
	}
	var pubs []pub
	publish := func(recs ...*roamingv1.DirectoryRecord) {
		touched := map[uint32]bool{}
		for _, r := range recs {
			touched[datacenter.DirectoryBatch(r.GetKind(), r.GetKey())] = true
		}
		for b := range touched {
			want[b]++
		}
		for _, r := range recs {
			r.HomeRegion = "eu"
			r.Minor = want[datacenter.DirectoryBatch(r.GetKind(), r.GetKey())]
			pubs = append(pubs, pub{r.GetKind(), r.GetKey(), r})
		}
	}
	check := func(step string) {
		t.Helper()
		got := versionsOf(t, s, "eu")
		if len(got) != len(want) {
			t.Fatalf("%s: %d batches published, want %d", step, len(got), len(want))
		}
		for b, minor := range want {
			if v := got[b]; v.GetMajor() != 1 || v.GetMinor() != minor {
				t.Fatalf("%s: batch %d at %d.%d, want 1.%d", step, b, v.GetMajor(), v.GetMinor(), minor)
			}
		}
		for _, p := range pubs {
			if got := mustLocate(t, s, p.kind, p.key); !proto.Equal(got, p.want) {
				t.Fatalf("%s: Locate(%v, %s) = %v, want %v", step, p.kind, p.key, got, p.want)
			}
		}
	}
	for i := range 40 {
		u := dirUser(fmt.Sprintf("user%d", i), "eu")
		if err := s.CreateUser(u); err != nil {
			t.Fatal(err)
		}
		publish(
			&roamingv1.DirectoryRecord{Kind: kindUser, Key: u.GetId(), UserId: u.GetId()},
			&roamingv1.DirectoryRecord{Kind: kindUsername, Key: u.GetName(), UserId: u.GetId()},
		)
		check(fmt.Sprintf("after user %d", i))
		if i%3 == 0 {
			g := dirGroup("eu")
			if err := s.CreateGroup(g); err != nil {
				t.Fatal(err)
			}
			publish(&roamingv1.DirectoryRecord{Kind: kindGroup, Key: g.GetId()})
			check(fmt.Sprintf("after group %d", i))
		}
	}
	// A batch's records are exactly those published in it.
	byBatch := map[uint32][]*roamingv1.DirectoryRecord{}
	for _, p := range pubs {
		b := datacenter.DirectoryBatch(p.kind, p.key)
		byBatch[b] = append(byBatch[b], p.want)
	}
	for b := range uint32(datacenter.DirectoryBatches) {
		v, recs, err := s.DirectoryBatchRecords("eu", b)
		if err != nil {
			t.Fatal(err)
		}
		if v.GetBatch() != b || v.GetMinor() != want[b] {
			t.Errorf("DirectoryBatchRecords(eu, %d) version %v, want minor %d", b, v, want[b])
		}
		if !sameRecords(recs, byBatch[b]) {
			t.Errorf("batch %d holds %v, want %v", b, recs, byBatch[b])
		}
	}

	// Users and groups homed elsewhere, kept here, publish nothing.
	before := versionsOf(t, s, "eu")
	other := dirUser("visitor", "ap")
	if err := s.CreateUser(other); err != nil {
		t.Fatal(err)
	}
	og := dirGroup("ap")
	if err := s.CreateGroup(og); err != nil {
		t.Fatal(err)
	}
	wantNotInDirectory(t, s, kindUser, other.GetId())
	wantNotInDirectory(t, s, kindUsername, "visitor")
	wantNotInDirectory(t, s, kindGroup, og.GetId())
	if after := versionsOf(t, s, "eu"); !maps.EqualFunc(before, after, func(a, b *roamingv1.BatchVersion) bool { return proto.Equal(a, b) }) {
		t.Errorf("versions changed by records homed elsewhere: %v -> %v", before, after)
	}
	if vs := versionsOf(t, s, "ap"); len(vs) != 0 {
		t.Errorf("store of eu publishes ap's batches: %v", vs)
	}

	// A store of no region keeps no directory of its own.
	plain := dirStore(t, "", "")
	u := dirUser("solo", "eu")
	if err := plain.CreateUser(u); err != nil {
		t.Fatal(err)
	}
	wantNotInDirectory(t, plain, kindUser, u.GetId())
}

func sameRecords(a, b []*roamingv1.DirectoryRecord) bool {
	key := func(r *roamingv1.DirectoryRecord) string { return fmt.Sprintf("%d/%s", r.GetKind(), r.GetKey()) }
	am := map[string]*roamingv1.DirectoryRecord{}
	for _, r := range a {
		am[key(r)] = r
	}
	bm := map[string]*roamingv1.DirectoryRecord{}
	for _, r := range b {
		bm[key(r)] = r
	}
	return len(am) == len(a) && len(bm) == len(b) &&
		maps.EqualFunc(am, bm, func(x, y *roamingv1.DirectoryRecord) bool { return proto.Equal(x, y) })
}

func TestSetLocation(t *testing.T) {
	s := dirStore(t, "", "eu")
	u := dirUser("roamer", "eu")
	if err := s.CreateUser(u); err != nil {
		t.Fatal(err)
	}
	batch := datacenter.DirectoryBatch(kindUser, u.GetId())
	minor := func() uint64 { return versionsOf(t, s, "eu")[batch].GetMinor() }
	nameRec := mustLocate(t, s, kindUsername, "roamer")

	steps := []struct {
		loc  string
		bump bool
	}{
		{"us", true},
		{"us", false}, // no change, no new minor
		{"ap", true},
		{"", true},
		{"", false},
	}
	for _, st := range steps {
		before := minor()
		if err := s.SetLocation(u.GetId(), st.loc); err != nil {
			t.Fatalf("SetLocation(%q): %v", st.loc, err)
		}
		wantMinor := before
		if st.bump {
			wantMinor++
		}
		if got := minor(); got != wantMinor {
			t.Errorf("SetLocation(%q): batch minor %d -> %d, want %d", st.loc, before, got, wantMinor)
		}
		rec := mustLocate(t, s, kindUser, u.GetId())
		if rec.GetLocation() != st.loc || rec.GetHomeRegion() != "eu" || rec.GetUserId() != u.GetId() {
			t.Errorf("after SetLocation(%q): Locate = %v", st.loc, rec)
		}
		if rec.GetMinor() > wantMinor || (st.bump && rec.GetMinor() != wantMinor) {
			t.Errorf("after SetLocation(%q): record minor %d, batch minor %d", st.loc, rec.GetMinor(), wantMinor)
		}
		// The change is published: a replica at the old minor gets it.
		_, recs, err := s.DirectoryBatchRecords("eu", batch)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(recs, func(r *roamingv1.DirectoryRecord) bool { return proto.Equal(r, rec) }) {
			t.Errorf("after SetLocation(%q): batch %d does not publish %v", st.loc, batch, rec)
		}
	}
	if got := mustLocate(t, s, kindUsername, "roamer"); !proto.Equal(got, nameRec) {
		t.Errorf("username record changed by SetLocation: %v -> %v", nameRec, got)
	}

	// Unknown users, and users homed elsewhere, are not this store's to
	// place.
	if err := s.SetLocation(ids.New(ids.User), "us"); !errors.Is(err, datacenter.ErrUserNotFound) {
		t.Errorf("SetLocation(unknown) = %v, want ErrUserNotFound", err)
	}
	foreign := &roamingv1.DirectoryRecord{Kind: kindUser, Key: ids.New(ids.User), HomeRegion: "ap", Minor: 1}
	fb := datacenter.DirectoryBatch(kindUser, foreign.GetKey())
	if err := s.ApplyDirectory("ap", []*roamingv1.BatchUpdate{{Version: &roamingv1.BatchVersion{Batch: fb, Major: 1, Minor: 1}, Full: true, Records: []*roamingv1.DirectoryRecord{foreign}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetLocation(foreign.GetKey(), "eu"); !errors.Is(err, datacenter.ErrUserNotFound) {
		t.Errorf("SetLocation(user homed in ap) = %v, want ErrUserNotFound", err)
	}
	if got := mustLocate(t, s, kindUser, foreign.GetKey()); !proto.Equal(got, foreign) {
		t.Errorf("ap's record changed to %v", got)
	}
}

func TestApplyDirectory(t *testing.T) {
	const batch = 17
	k1, k2, k3 := keyInBatch(kindUser, batch, "u_a"), keyInBatch(kindUser, batch, "u_b"), keyInBatch(kindGroup, batch, "g_c")
	if k1 == k2 {
		k2 = keyInBatch(kindUser, batch, "u_bb")
	}
	rec := func(kind roamingv1.DirectoryKind, key, home string, minor uint64) *roamingv1.DirectoryRecord {
		return &roamingv1.DirectoryRecord{Kind: kind, Key: key, HomeRegion: home, UserId: key, Minor: minor}
	}
	ver := func(b uint32, major, minor uint64) *roamingv1.BatchVersion {
		return &roamingv1.BatchVersion{Batch: b, Major: major, Minor: minor}
	}

	s := dirStore(t, "", "eu")
	// us publishes a record in the same batch number; ap's updates must
	// leave it alone.
	usRec := rec(kindUser, keyInBatch(kindUser, batch, "u_us"), "us", 4)
	if err := s.ApplyDirectory("us", []*roamingv1.BatchUpdate{{Version: ver(batch, 1, 4), Full: true, Records: []*roamingv1.DirectoryRecord{usRec}}}); err != nil {
		t.Fatal(err)
	}
	own := dirUser("local", "eu")
	if err := s.CreateUser(own); err != nil {
		t.Fatal(err)
	}
	ownBefore := versionsOf(t, s, "eu")

	type state struct {
		version *roamingv1.BatchVersion // nil: not held
		recs    []*roamingv1.DirectoryRecord
		gone    []string // keys of kindUser/kindGroup not in the directory
	}
	check := func(step string, want state) {
		t.Helper()
		vs := versionsOf(t, s, "ap")
		if got := vs[batch]; !proto.Equal(got, want.version) {
			t.Errorf("%s: ap batch %d version %v, want %v", step, batch, got, want.version)
		}
		if len(vs) > 1 || (len(vs) == 1 && want.version == nil) {
			t.Errorf("%s: ap versions %v", step, vs)
		}
		_, recs, err := s.DirectoryBatchRecords("ap", batch)
		if err != nil {
			t.Fatal(err)
		}
		if !sameRecords(recs, want.recs) {
			t.Errorf("%s: ap batch %d holds %v, want %v", step, batch, recs, want.recs)
		}
		for _, r := range want.recs {
			if r.GetDeleted() {
				wantNotInDirectory(t, s, r.GetKind(), r.GetKey())
				continue
			}
			if got := mustLocate(t, s, r.GetKind(), r.GetKey()); !proto.Equal(got, r) {
				t.Errorf("%s: Locate(%s) = %v, want %v", step, r.GetKey(), got, r)
			}
		}
		for _, k := range want.gone {
			kind := kindUser
			if k == k3 {
				kind = kindGroup
			}
			wantNotInDirectory(t, s, kind, k)
		}
		// Nobody else's records moved.
		if got := mustLocate(t, s, kindUser, usRec.GetKey()); !proto.Equal(got, usRec) {
			t.Errorf("%s: us record is now %v", step, got)
		}
		if got := versionsOf(t, s, "eu"); !maps.EqualFunc(got, ownBefore, func(a, b *roamingv1.BatchVersion) bool { return proto.Equal(a, b) }) {
			t.Errorf("%s: own versions changed: %v", step, got)
		}
		if r := mustLocate(t, s, kindUser, own.GetId()); r.GetHomeRegion() != "eu" {
			t.Errorf("%s: own record is now %v", step, r)
		}
	}
	apply := func(step string, updates ...*roamingv1.BatchUpdate) {
		t.Helper()
		if err := s.ApplyDirectory("ap", updates); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
	}

	check("start", state{gone: []string{k1, k2, k3}})
	r1, r2 := rec(kindUser, k1, "ap", 1), rec(kindUser, k2, "ap", 2)
	apply("full", &roamingv1.BatchUpdate{Version: ver(batch, 1, 2), Full: true, Records: []*roamingv1.DirectoryRecord{r1, r2}})
	check("full", state{version: ver(batch, 1, 2), recs: []*roamingv1.DirectoryRecord{r1, r2}, gone: []string{k3}})

	r1b := rec(kindUser, k1, "ap", 3)
	r1b.Location = "us"
	r3 := rec(kindGroup, k3, "ap", 3)
	apply("delta", &roamingv1.BatchUpdate{Version: ver(batch, 1, 3), Records: []*roamingv1.DirectoryRecord{r1b, r3}})
	check("delta", state{version: ver(batch, 1, 3), recs: []*roamingv1.DirectoryRecord{r1b, r2, r3}})

	r2del := rec(kindUser, k2, "ap", 4)
	r2del.Deleted = true
	apply("delta with a tombstone", &roamingv1.BatchUpdate{Version: ver(batch, 1, 4), Records: []*roamingv1.DirectoryRecord{r2del}})
	check("delta with a tombstone", state{version: ver(batch, 1, 4), recs: []*roamingv1.DirectoryRecord{r1b, r2del, r3}})

	// Refusals change nothing, even when an update before the bad one in
	// the same call was fine.
	good := &roamingv1.BatchUpdate{Version: ver(batch, 1, 5), Records: []*roamingv1.DirectoryRecord{rec(kindUser, k1, "ap", 5)}}
	refusals := []struct {
		name    string
		owner   string
		updates []*roamingv1.BatchUpdate
	}{
		{"own region", "eu", []*roamingv1.BatchUpdate{{Version: ver(batch, 1, 9), Full: true}}},
		{"record homed elsewhere", "ap", []*roamingv1.BatchUpdate{good, {Version: ver(batch, 1, 6), Records: []*roamingv1.DirectoryRecord{rec(kindUser, k2, "us", 6)}}}},
		{"record homed in the applying region", "ap", []*roamingv1.BatchUpdate{good, {Version: ver(batch, 1, 6), Records: []*roamingv1.DirectoryRecord{rec(kindUser, own.GetId(), "eu", 6)}}}},
		{"record homed nowhere", "ap", []*roamingv1.BatchUpdate{{Version: ver(batch, 1, 6), Records: []*roamingv1.DirectoryRecord{rec(kindUser, k2, "", 6)}}}},
		{"record in the wrong batch", "ap", []*roamingv1.BatchUpdate{good, {Version: ver(batch+1, 1, 1), Full: true, Records: []*roamingv1.DirectoryRecord{rec(kindUser, k2, "ap", 1)}}}},
		{"batch out of range", "ap", []*roamingv1.BatchUpdate{good, {Version: ver(datacenter.DirectoryBatches, 1, 1), Full: true}}},
		{"batch far out of range", "ap", []*roamingv1.BatchUpdate{{Version: ver(^uint32(0), 1, 1), Full: true}}},
	}
	for _, r := range refusals {
		if err := s.ApplyDirectory(r.owner, r.updates); err == nil {
			t.Errorf("ApplyDirectory(%s) accepted", r.name)
		}
		check("after refusing "+r.name, state{version: ver(batch, 1, 4), recs: []*roamingv1.DirectoryRecord{r1b, r2del, r3}})
	}
	if vs := versionsOf(t, s, "eu"); len(vs) == 0 {
		t.Fatal("own directory gone")
	}
	if vs := versionsOf(t, s, "ap"); vs[batch+1] != nil || vs[datacenter.DirectoryBatches] != nil {
		t.Errorf("refused batches stored: %v", vs)
	}

	// A full update replaces the batch: records it does not carry are gone.
	r2new := rec(kindUser, k2, "ap", 1)
	apply("full at a new major", &roamingv1.BatchUpdate{Version: ver(batch, 2, 1), Full: true, Records: []*roamingv1.DirectoryRecord{r2new}})
	check("full at a new major", state{version: ver(batch, 2, 1), recs: []*roamingv1.DirectoryRecord{r2new}, gone: []string{k1, k3}})

	// The owner no longer publishes the batch: everything goes, version too.
	apply("empty full at 0.0", &roamingv1.BatchUpdate{Version: &roamingv1.BatchVersion{Batch: batch}, Full: true})
	check("empty full at 0.0", state{gone: []string{k1, k2, k3}})

	// No updates, no change.
	apply("nothing")
	check("nothing", state{gone: []string{k1, k2, k3}})
}

func TestCacheDirectory(t *testing.T) {
	s := dirStore(t, "", "eu")
	own := dirUser("local", "eu")
	if err := s.CreateUser(own); err != nil {
		t.Fatal(err)
	}
	ownRec := mustLocate(t, s, kindUser, own.GetId())

	cached := &roamingv1.DirectoryRecord{Kind: kindGroup, Key: ids.New(ids.Group), HomeRegion: "ap", Minor: 3}
	if err := s.CacheDirectory(cached); err != nil {
		t.Fatal(err)
	}
	if got := mustLocate(t, s, kindGroup, cached.GetKey()); !proto.Equal(got, cached) {
		t.Errorf("Locate(cached) = %v, want %v", got, cached)
	}
	// A cached record is no batch's: no versions, nothing published.
	if vs := versionsOf(t, s, "ap"); len(vs) != 0 {
		t.Errorf("CacheDirectory made versions %v", vs)
	}
	b := datacenter.DirectoryBatch(kindGroup, cached.GetKey())
	if _, recs, err := s.DirectoryBatchRecords("ap", b); err != nil || len(recs) != 0 {
		t.Errorf("DirectoryBatchRecords(ap, %d) = %v, %v; want nothing", b, recs, err)
	}

	// A record claiming this region is never cached over the own one.
	forged := &roamingv1.DirectoryRecord{Kind: kindUser, Key: own.GetId(), HomeRegion: "eu", Location: "us", Minor: 99}
	if err := s.CacheDirectory(forged); err != nil {
		t.Fatal(err)
	}
	if got := mustLocate(t, s, kindUser, own.GetId()); !proto.Equal(got, ownRec) {
		t.Errorf("own record after CacheDirectory = %v, want %v", got, ownRec)
	}

	// Replication overwrites the cached record.
	replicated := proto.Clone(cached).(*roamingv1.DirectoryRecord)
	replicated.Minor = 5
	if err := s.ApplyDirectory("ap", []*roamingv1.BatchUpdate{{
		Version: &roamingv1.BatchVersion{Batch: b, Major: 1, Minor: 5}, Full: true, Records: []*roamingv1.DirectoryRecord{replicated},
	}}); err != nil {
		t.Fatal(err)
	}
	if got := mustLocate(t, s, kindGroup, cached.GetKey()); !proto.Equal(got, replicated) {
		t.Errorf("Locate after replication = %v, want %v", got, replicated)
	}
}

// TestDirectoryReopen closes a store and opens it again: its own batches,
// its peers' and its cached records are all there, and the next write goes
// on from the stored minor.
func TestDirectoryReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := datacenter.Open(dir, datacenter.Options{Region: "eu"})
	if err != nil {
		t.Fatal(err)
	}
	var users []*recordv1.User
	for i := range 10 {
		u := dirUser(fmt.Sprintf("user%d", i), "eu")
		if err := s.CreateUser(u); err != nil {
			t.Fatal(err)
		}
		users = append(users, u)
	}
	if err := s.SetLocation(users[0].GetId(), "ap"); err != nil {
		t.Fatal(err)
	}
	g := dirGroup("eu")
	if err := s.CreateGroup(g); err != nil {
		t.Fatal(err)
	}
	peerRec := &roamingv1.DirectoryRecord{Kind: kindUser, Key: ids.New(ids.User), HomeRegion: "ap", Location: "eu", Minor: 2}
	pb := datacenter.DirectoryBatch(kindUser, peerRec.GetKey())
	if err := s.ApplyDirectory("ap", []*roamingv1.BatchUpdate{{
		Version: &roamingv1.BatchVersion{Batch: pb, Major: 1, Minor: 2}, Full: true, Records: []*roamingv1.DirectoryRecord{peerRec},
	}}); err != nil {
		t.Fatal(err)
	}
	cached := &roamingv1.DirectoryRecord{Kind: kindGroup, Key: ids.New(ids.Group), HomeRegion: "us"}
	if err := s.CacheDirectory(cached); err != nil {
		t.Fatal(err)
	}
	keys := []*roamingv1.DirectoryKey{{Kind: kindGroup, Key: g.GetId()}, {Kind: kindUser, Key: peerRec.GetKey()}, {Kind: kindGroup, Key: cached.GetKey()}}
	for _, u := range users {
		keys = append(keys, &roamingv1.DirectoryKey{Kind: kindUser, Key: u.GetId()}, &roamingv1.DirectoryKey{Kind: kindUsername, Key: u.GetName()})
	}
	before := map[string]*roamingv1.DirectoryRecord{}
	for _, k := range keys {
		before[k.String()] = mustLocate(t, s, k.GetKind(), k.GetKey())
	}
	ownVersions, apVersions := versionsOf(t, s, "eu"), versionsOf(t, s, "ap")
	ownBatches := map[uint32][]*roamingv1.DirectoryRecord{}
	for b := range ownVersions {
		_, recs, err := s.DirectoryBatchRecords("eu", b)
		if err != nil {
			t.Fatal(err)
		}
		ownBatches[b] = recs
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = dirStore(t, dir, "eu")
	for _, k := range keys {
		if got := mustLocate(t, s, k.GetKind(), k.GetKey()); !proto.Equal(got, before[k.String()]) {
			t.Errorf("after reopen Locate(%v, %s) = %v, want %v", k.GetKind(), k.GetKey(), got, before[k.String()])
		}
	}
	eq := func(a, b *roamingv1.BatchVersion) bool { return proto.Equal(a, b) }
	if got := versionsOf(t, s, "eu"); !maps.EqualFunc(got, ownVersions, eq) {
		t.Errorf("own versions after reopen %v, want %v", got, ownVersions)
	}
	if got := versionsOf(t, s, "ap"); !maps.EqualFunc(got, apVersions, eq) {
		t.Errorf("ap versions after reopen %v, want %v", got, apVersions)
	}
	for b, want := range ownBatches {
		_, recs, err := s.DirectoryBatchRecords("eu", b)
		if err != nil || !sameRecords(recs, want) {
			t.Errorf("own batch %d after reopen = %v, %v; want %v", b, recs, err, want)
		}
	}
	// The next change to user0's batch goes on from the stored minor.
	b0 := datacenter.DirectoryBatch(kindUser, users[0].GetId())
	if err := s.SetLocation(users[0].GetId(), ""); err != nil {
		t.Fatal(err)
	}
	if got := versionsOf(t, s, "eu")[b0]; got.GetMajor() != 1 || got.GetMinor() != ownVersions[b0].GetMinor()+1 {
		t.Errorf("batch %d after a change past reopen at %v, want 1.%d", b0, got, ownVersions[b0].GetMinor()+1)
	}
	if rec := mustLocate(t, s, kindUser, users[0].GetId()); rec.GetLocation() != "" || rec.GetMinor() != ownVersions[b0].GetMinor()+1 {
		t.Errorf("user0 after reopen and SetLocation = %v", rec)
	}
}
