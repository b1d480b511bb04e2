package dataservice_test

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	recordv1 "github.com/roamfed/roamfed/api/record/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/internal/ids"
	"github.com/roamfed/roamfed/roaming/dataservice"
	"github.com/roamfed/roamfed/servicecenter/datacenter"
)

func bv(batch uint32, major, minor uint64) *roamingv1.BatchVersion {
	return &roamingv1.BatchVersion{Batch: batch, Major: major, Minor: minor}
}

// rec is a user record of region "ap" that changed at minor.
func rec(key string, minor uint64) *roamingv1.DirectoryRecord {
	return &roamingv1.DirectoryRecord{Kind: roamingv1.DirectoryKind_DIRECTORY_KIND_USER, Key: key, HomeRegion: "ap", UserId: key, Minor: minor}
}

// showUpdates prints updates one a line, for failure messages.
func showUpdates(us []*roamingv1.BatchUpdate) string {
	if len(us) == 0 {
		return "(none)"
	}
	var b strings.Builder
	for _, u := range us {
		fmt.Fprintf(&b, "\n  %s", prototext.MarshalOptions{}.Format(u))
	}
	return b.String()
}

func equalUpdates(a, b []*roamingv1.BatchUpdate) bool {
	return slices.EqualFunc(a, b, func(x, y *roamingv1.BatchUpdate) bool { return proto.Equal(x, y) })
}

func TestDelta(t *testing.T) {
	// The source's batches: 1 at 1.1, 3 at 1.5, 5 at 2.3.
	recs := map[uint32][]*roamingv1.DirectoryRecord{
		1: {rec("a", 1)},
		3: {rec("b", 1), rec("c", 2), rec("d", 3), rec("e", 5)},
		5: {rec("f", 2), rec("g", 3)},
	}
	own := []*roamingv1.BatchVersion{bv(1, 1, 1), bv(3, 1, 5), bv(5, 2, 3)}
	full := func(v *roamingv1.BatchVersion) *roamingv1.BatchUpdate {
		return &roamingv1.BatchUpdate{Version: v, Full: true, Records: recs[v.GetBatch()]}
	}
	drop := func(batch uint32) *roamingv1.BatchUpdate {
		return &roamingv1.BatchUpdate{Version: &roamingv1.BatchVersion{Batch: batch}, Full: true}
	}
	tests := []struct {
		name string
		own  []*roamingv1.BatchVersion
		held []*roamingv1.BatchVersion
		want []*roamingv1.BatchUpdate
		// calls are the batches whose records Delta may read.
		calls []uint32
	}{
		{
			name: "nothing published, nothing held",
		},
		{
			name:  "equal versions send nothing",
			own:   own,
			held:  []*roamingv1.BatchVersion{bv(5, 2, 3), bv(1, 1, 1), bv(3, 1, 5)},
			calls: []uint32{},
		},
		{
			name:  "batch not held is sent whole",
			own:   own[:1],
			want:  []*roamingv1.BatchUpdate{full(bv(1, 1, 1))},
			calls: []uint32{1},
		},
		{
			name:  "major changed is sent whole",
			own:   own[2:],
			held:  []*roamingv1.BatchVersion{bv(5, 1, 3)},
			want:  []*roamingv1.BatchUpdate{full(bv(5, 2, 3))},
			calls: []uint32{5},
		},
		{
			name:  "older major with a higher minor is sent whole",
			own:   own[2:],
			held:  []*roamingv1.BatchVersion{bv(5, 1, 9)},
			want:  []*roamingv1.BatchUpdate{full(bv(5, 2, 3))},
			calls: []uint32{5},
		},
		{
			name: "minor behind sends only the records changed since",
			own:  own[1:2],
			held: []*roamingv1.BatchVersion{bv(3, 1, 2)},
			want: []*roamingv1.BatchUpdate{{
				Version: bv(3, 1, 5), Records: []*roamingv1.DirectoryRecord{rec("d", 3), rec("e", 5)},
			}},
			calls: []uint32{3},
		},
		{
			name:  "minor one behind the last change sends that change",
			own:   own[1:2],
			held:  []*roamingv1.BatchVersion{bv(3, 1, 4)},
			want:  []*roamingv1.BatchUpdate{{Version: bv(3, 1, 5), Records: []*roamingv1.DirectoryRecord{rec("e", 5)}}},
			calls: []uint32{3},
		},
		{
			name:  "held minor ahead of the source (source rebuilt) is sent whole",
			own:   own[1:2],
			held:  []*roamingv1.BatchVersion{bv(3, 1, 6)},
			want:  []*roamingv1.BatchUpdate{full(bv(3, 1, 5))},
			calls: []uint32{3},
		},
		{
			name:  "held batch the source does not have is emptied at 0.0",
			held:  []*roamingv1.BatchVersion{bv(7, 1, 3)},
			want:  []*roamingv1.BatchUpdate{drop(7)},
			calls: []uint32{},
		},
		{
			name: "several batches: own order, then dropped batches by number",
			own:  own,
			held: []*roamingv1.BatchVersion{bv(9, 1, 1), bv(5, 2, 3), bv(3, 1, 1), bv(8, 4, 4), bv(2, 1, 1)},
			want: []*roamingv1.BatchUpdate{
				full(bv(1, 1, 1)),
				{Version: bv(3, 1, 5), Records: []*roamingv1.DirectoryRecord{rec("c", 2), rec("d", 3), rec("e", 5)}},
				drop(2), drop(8), drop(9),
			},
			calls: []uint32{1, 3},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls []uint32
			got, err := dataservice.Delta(tt.own, tt.held, func(batch uint32) ([]*roamingv1.DirectoryRecord, error) {
				calls = append(calls, batch)
				return recs[batch], nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if !equalUpdates(got, tt.want) {
				t.Errorf("Delta = %s\nwant %s", showUpdates(got), showUpdates(tt.want))
			}
			if tt.calls != nil && !slices.Equal(calls, tt.calls) {
				t.Errorf("records read for batches %v, want %v", calls, tt.calls)
			}
			// The same question gives the same answer, whatever order the
			// held versions come in.
			for range 10 {
				held := slices.Clone(tt.held)
				rand.Shuffle(len(held), func(i, j int) { held[i], held[j] = held[j], held[i] })
				again, err := dataservice.Delta(tt.own, held, func(b uint32) ([]*roamingv1.DirectoryRecord, error) { return recs[b], nil })
				if err != nil {
					t.Fatal(err)
				}
				if !equalUpdates(again, got) {
					t.Fatalf("Delta with held in another order = %s\nfirst %s", showUpdates(again), showUpdates(got))
				}
			}
		})
	}
}

func TestDeltaRecordsError(t *testing.T) {
	boom := errors.New("disk on fire")
	_, err := dataservice.Delta([]*roamingv1.BatchVersion{bv(1, 1, 1)}, nil, func(uint32) ([]*roamingv1.DirectoryRecord, error) {
		return nil, boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Delta = %v, want the records error", err)
	}
}

// dirModel is one region's directory as a replica holds it: each batch's
// version and records by kind/key.
type dirModel map[uint32]*modelBatch

type modelBatch struct {
	version *roamingv1.BatchVersion
	recs    map[string]*roamingv1.DirectoryRecord
}

func recKey(r *roamingv1.DirectoryRecord) string {
	return fmt.Sprintf("%d/%s", r.GetKind(), r.GetKey())
}

func (m dirModel) clone() dirModel {
	out := make(dirModel, len(m))
	for b, mb := range m {
		out[b] = &modelBatch{version: proto.Clone(mb.version).(*roamingv1.BatchVersion), recs: maps.Clone(mb.recs)}
	}
	return out
}

func (m dirModel) versions() []*roamingv1.BatchVersion {
	var out []*roamingv1.BatchVersion
	for _, b := range slices.Sorted(maps.Keys(m)) {
		out = append(out, m[b].version)
	}
	return out
}

func (m dirModel) records(batch uint32) ([]*roamingv1.DirectoryRecord, error) {
	mb, ok := m[batch]
	if !ok {
		return nil, fmt.Errorf("batch %d not published", batch)
	}
	var out []*roamingv1.DirectoryRecord
	for _, k := range slices.Sorted(maps.Keys(mb.recs)) {
		out = append(out, mb.recs[k])
	}
	return out, nil
}

// apply applies updates as roaming.v1 says a replica must: a full update
// replaces the batch, and an empty full update at 0.0 (the source does not
// publish the batch) removes it; a delta overwrites the records it carries.
func (m dirModel) apply(updates []*roamingv1.BatchUpdate) {
	for _, u := range updates {
		b := u.GetVersion().GetBatch()
		if u.GetFull() {
			if u.GetVersion().GetMajor() == 0 {
				delete(m, b)
				continue
			}
			m[b] = &modelBatch{recs: map[string]*roamingv1.DirectoryRecord{}}
		}
		mb := m[b]
		mb.version = u.GetVersion()
		for _, r := range u.GetRecords() {
			mb.recs[recKey(r)] = r
		}
	}
}

func (m dirModel) String() string {
	var b strings.Builder
	for _, batch := range slices.Sorted(maps.Keys(m)) {
		mb := m[batch]
		fmt.Fprintf(&b, "\n  batch %d at %d.%d:", batch, mb.version.GetMajor(), mb.version.GetMinor())
		for _, k := range slices.Sorted(maps.Keys(mb.recs)) {
			r := mb.recs[k]
			fmt.Fprintf(&b, " %s@%d", k, r.GetMinor())
			if r.GetLocation() != "" {
				fmt.Fprintf(&b, "(at %s)", r.GetLocation())
			}
			if r.GetDeleted() {
				b.WriteString("(deleted)")
			}
		}
	}
	return b.String()
}

func equalModels(a, b dirModel) bool {
	return maps.EqualFunc(a, b, func(x, y *modelBatch) bool {
		return proto.Equal(x.version, y.version) &&
			maps.EqualFunc(x.recs, y.recs, func(r, s *roamingv1.DirectoryRecord) bool { return proto.Equal(r, s) })
	})
}

// byteReader hands out the fuzzer's bytes, then zeros.
type byteReader []byte

func (r *byteReader) next() byte {
	if len(*r) == 0 {
		return 0
	}
	b := (*r)[0]
	*r = (*r)[1:]
	return b
}

// deltaCase builds a source's directory from data by a run of changes, and
// a replica's holding that is a snapshot of some of its batches from along
// the way, possibly spoiled as a rebuilt source would leave it: a major the
// source no longer has, a minor ahead of the source's, a batch the source
// does not publish. It returns the operations for failure messages.
func deltaCase(data []byte) (own, held dirModel, ops []string) {
	r := byteReader(data)
	own, held = dirModel{}, dirModel{}
	nOps := int(r.next() % 64)
	for range nOps {
		op := r.next()
		batch := uint32(op%8) * 7 // spread out, and not in order
		mb, ok := own[batch]
		if !ok {
			mb = &modelBatch{version: bv(batch, uint64(1+r.next()%3), 0), recs: map[string]*roamingv1.DirectoryRecord{}}
			own[batch] = mb
		}
		// One change: the batch's minor goes up and the records it names
		// take that minor, as putOwnDirectory does.
		v := proto.Clone(mb.version).(*roamingv1.BatchVersion)
		v.Minor++
		mb.version = v
		n := 1 + int(r.next()%3)
		var touched []string
		for range n {
			sel := r.next()
			kind := roamingv1.DirectoryKind(1 + sel%3)
			key := fmt.Sprintf("k%d-%d", batch, (sel>>2)%6)
			nr := &roamingv1.DirectoryRecord{Kind: kind, Key: key, HomeRegion: "ap", Minor: v.GetMinor()}
			switch (sel >> 5) % 4 {
			case 1:
				nr.Location = "eu"
			case 2:
				nr.Location = "us"
			case 3:
				nr.Deleted = true
			}
			mb.recs[recKey(nr)] = nr
			touched = append(touched, recKey(nr))
		}
		ops = append(ops, fmt.Sprintf("batch %d -> %d.%d %v", batch, v.GetMajor(), v.GetMinor(), touched))
		if r.next()%3 == 0 {
			held[batch] = &modelBatch{version: proto.Clone(v).(*roamingv1.BatchVersion), recs: maps.Clone(mb.recs)}
			ops = append(ops, fmt.Sprintf("replica takes batch %d at %d.%d", batch, v.GetMajor(), v.GetMinor()))
		}
	}
	// Spoil some of the replica's batches as a rebuilt source leaves them.
	nSpoil := int(r.next() % 4)
	for range nSpoil {
		sel := r.next()
		batch := uint32(sel%10) * 7
		mb, ok := held[batch]
		if !ok {
			mb = &modelBatch{version: bv(batch, 1, 1), recs: map[string]*roamingv1.DirectoryRecord{}}
			mb.recs["1/stale"] = &roamingv1.DirectoryRecord{Kind: 1, Key: "stale", HomeRegion: "ap", Minor: 1}
			held[batch] = mb
		}
		v := proto.Clone(mb.version).(*roamingv1.BatchVersion)
		if (sel>>4)%2 == 0 {
			// A major the source never had: its batches start at 1..3.
			v.Major = 10 + uint64(sel>>5)
		} else if o, ok := own[batch]; ok {
			v.Minor = o.version.GetMinor() + 1 + uint64(sel>>5)
		}
		mb.version = v
		ops = append(ops, fmt.Sprintf("replica's batch %d spoiled to %d.%d", batch, v.GetMajor(), v.GetMinor()))
	}
	return own, held, ops
}

// checkDelta applies Delta's answer to held and requires the source's
// directory to come out, and no further answer after that.
func checkDelta(t *testing.T, own, held dirModel, ops []string) {
	t.Helper()
	before := held.String()
	updates, err := dataservice.Delta(own.versions(), held.versions(), own.records)
	if err != nil {
		t.Fatalf("Delta: %v\nops: %s", err, strings.Join(ops, "\n  "))
	}
	// A delta carries only records changed since the held minor.
	for _, u := range updates {
		if u.GetFull() {
			continue
		}
		h := held[u.GetVersion().GetBatch()]
		for _, r := range u.GetRecords() {
			if r.GetMinor() <= h.version.GetMinor() {
				t.Errorf("delta for batch %d at held minor %d carries %s@%d", u.GetVersion().GetBatch(), h.version.GetMinor(), recKey(r), r.GetMinor())
			}
		}
	}
	got := held.clone()
	got.apply(updates)
	if !equalModels(got, own) {
		t.Fatalf("replica after Delta differs from source\nops:\n  %s\nheld:%s\nupdates:%s\ngot:%s\nwant:%s",
			strings.Join(ops, "\n  "), before, showUpdates(updates), got, own)
	}
	again, err := dataservice.Delta(own.versions(), got.versions(), own.records)
	if err != nil || len(again) > 0 {
		t.Fatalf("second Delta after applying the first = %s, %v; want nothing", showUpdates(again), err)
	}
}

func FuzzDelta(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{10, 0, 1, 2, 3, 4, 1, 1, 7, 8, 9, 0, 2})
	f.Add([]byte{40, 1, 2, 1, 0x20, 0, 1, 1, 0x44, 3, 9, 1, 2, 0x60, 0x61, 0, 2, 3, 0x10, 0x35})
	// A seeded source of longer inputs, so that a plain `go test` covers
	// rebuilt sources and long histories too.
	rng := rand.New(rand.NewPCG(20260101, 7))
	for range 64 {
		b := make([]byte, 16+rng.IntN(240))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		own, held, ops := deltaCase(data)
		checkDelta(t, own, held, ops)
	})
}

// openStore opens a data center for region in a temp dir, closed when the
// test ends.
func openStore(t *testing.T, region string) *datacenter.Store {
	t.Helper()
	s, err := datacenter.Open(t.TempDir(), datacenter.Options{Region: region})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// replicateOnce runs one replication round from src (region ap) to rep as
// the data service does: rep sends the versions it holds, src answers with
// Delta, rep applies the answer. It returns how many batches were sent.
func replicateOnce(t *testing.T, src, rep *datacenter.Store) int {
	t.Helper()
	held, err := rep.DirectoryVersions("ap")
	if err != nil {
		t.Fatal(err)
	}
	own, err := src.DirectoryVersions("ap")
	if err != nil {
		t.Fatal(err)
	}
	updates, err := dataservice.Delta(own, held, func(batch uint32) ([]*roamingv1.DirectoryRecord, error) {
		_, recs, err := src.DirectoryBatchRecords("ap", batch)
		return recs, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.ApplyDirectory("ap", updates); err != nil {
		t.Fatalf("ApplyDirectory: %v\nupdates: %s", err, showUpdates(updates))
	}
	return len(updates)
}

// TestReplicationRoundTrip changes a source region's directory at random
// and replicates it to a replica after every round of changes: the replica
// must then answer every lookup as the source does. Halfway the source is
// rebuilt empty (its data lost), which the replica must follow too.
func TestReplicationRoundTrip(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	var ops []string
	logOp := func(format string, args ...any) { ops = append(ops, fmt.Sprintf(format, args...)) }
	defer func() {
		if t.Failed() {
			t.Logf("seed %d; operations:\n  %s", seed, strings.Join(ops, "\n  "))
		}
	}()

	src, rep := openStore(t, "ap"), openStore(t, "eu")
	var keys []*roamingv1.DirectoryKey // every key ever published, and some never
	var users []string
	addKey := func(kind roamingv1.DirectoryKind, key string) {
		keys = append(keys, &roamingv1.DirectoryKey{Kind: kind, Key: key})
	}
	addKey(roamingv1.DirectoryKind_DIRECTORY_KIND_USER, ids.New(ids.User))
	addKey(roamingv1.DirectoryKind_DIRECTORY_KIND_GROUP, ids.New(ids.Group))
	nextName := 0

	mutate := func() {
		switch n := rng.IntN(10); {
		case n < 4 || len(users) == 0:
			nextName++
			u := &recordv1.User{Id: ids.New(ids.User), Name: fmt.Sprintf("user%d", nextName), HomeRegion: "ap"}
			if err := src.CreateUser(u); err != nil {
				t.Fatal(err)
			}
			users = append(users, u.GetId())
			addKey(roamingv1.DirectoryKind_DIRECTORY_KIND_USER, u.GetId())
			addKey(roamingv1.DirectoryKind_DIRECTORY_KIND_USERNAME, u.GetName())
			logOp("create user %s %s", u.GetId(), u.GetName())
		case n < 6:
			g := &recordv1.Group{Id: ids.New(ids.Group), Name: "g", HomeRegion: "ap", Version: 1}
			if err := src.CreateGroup(g); err != nil {
				t.Fatal(err)
			}
			addKey(roamingv1.DirectoryKind_DIRECTORY_KIND_GROUP, g.GetId())
			logOp("create group %s", g.GetId())
		default:
			uid := users[rng.IntN(len(users))]
			loc := []string{"", "eu", "us"}[rng.IntN(3)]
			if err := src.SetLocation(uid, loc); err != nil {
				t.Fatal(err)
			}
			logOp("set location %s %q", uid, loc)
		}
	}
	check := func(round int) {
		t.Helper()
		for _, k := range keys {
			want, werr := src.Locate(k.GetKind(), k.GetKey())
			got, gerr := rep.Locate(k.GetKind(), k.GetKey())
			if werr != nil && !errors.Is(werr, datacenter.ErrNotInDirectory) {
				t.Fatal(werr)
			}
			if !errors.Is(gerr, werr) || !proto.Equal(got, want) {
				t.Fatalf("round %d: replica Locate(%v, %s) = %v, %v; source says %v, %v", round, k.GetKind(), k.GetKey(), got, gerr, want, werr)
			}
		}
		own, _ := src.DirectoryVersions("ap")
		held, _ := rep.DirectoryVersions("ap")
		if !slices.EqualFunc(own, held, func(a, b *roamingv1.BatchVersion) bool { return proto.Equal(a, b) }) {
			t.Fatalf("round %d: replica holds versions %v, source has %v", round, held, own)
		}
		if n := replicateOnce(t, src, rep); n != 0 {
			t.Fatalf("round %d: a second replication round sent %d batches; want none", round, n)
		}
	}

	for round := range 40 {
		if round == 20 {
			// The source loses its data and starts again empty.
			if err := src.Close(); err != nil {
				t.Fatal(err)
			}
			src = openStore(t, "ap")
			users = nil
			logOp("source rebuilt empty")
			replicateOnce(t, src, rep)
			check(round)
			continue
		}
		for range 1 + rng.IntN(8) {
			mutate()
		}
		logOp("replicate (round %d)", round)
		replicateOnce(t, src, rep)
		check(round)
	}
}
