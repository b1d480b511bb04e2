package dataservice

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	recordv1 "github.com/roamfed/roamfed/api/record/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/internal/ids"
	"github.com/roamfed/roamfed/roaming/resourcepool"
	"github.com/roamfed/roamfed/servicecenter/datacenter"
)

// lyingPeer is region ap gone bad: it answers ReplicateDirectory and
// Locate with whatever the test gives it.
type lyingPeer struct {
	roamingv1.UnimplementedDataServiceServer
	mu      sync.Mutex
	updates []*roamingv1.BatchUpdate
	located []*roamingv1.DirectoryRecord
}

func (p *lyingPeer) ReplicateDirectory(context.Context, *roamingv1.ReplicateDirectoryRequest) (*roamingv1.ReplicateDirectoryResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return &roamingv1.ReplicateDirectoryResponse{Region: "ap", Batches: datacenter.DirectoryBatches, Updates: p.updates}, nil
}

func (p *lyingPeer) Locate(context.Context, *roamingv1.LocateRequest) (*roamingv1.LocateResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return &roamingv1.LocateResponse{Records: p.located}, nil
}

// servePeer serves p as region ap on a fresh loopback port until the test
// ends.
func servePeer(t *testing.T, p *lyingPeer) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(resourcepool.ServerOptions("ap", []string{"ap", "eu", "us"})...)
	roamingv1.RegisterDataServiceServer(srv, p)
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(lis) })
	t.Cleanup(func() {
		srv.Stop()
		wg.Wait()
	})
	return lis.Addr().String()
}

// fullUpdates files records in full updates of the batches their keys
// hash to, at version 1.1.
func fullUpdates(recs ...*roamingv1.DirectoryRecord) []*roamingv1.BatchUpdate {
	byBatch := make(map[uint32]*roamingv1.BatchUpdate)
	var out []*roamingv1.BatchUpdate
	for _, r := range recs {
		b := datacenter.DirectoryBatch(r.GetKind(), r.GetKey())
		u, ok := byBatch[b]
		if !ok {
			u = &roamingv1.BatchUpdate{Version: &roamingv1.BatchVersion{Batch: b, Major: 1, Minor: 1}, Full: true}
			byBatch[b] = u
			out = append(out, u)
		}
		u.Records = append(u.Records, r)
	}
	return out
}

const (
	kUser     = roamingv1.DirectoryKind_DIRECTORY_KIND_USER
	kUsername = roamingv1.DirectoryKind_DIRECTORY_KIND_USERNAME
	kGroup    = roamingv1.DirectoryKind_DIRECTORY_KIND_GROUP
)

// TestPeerDirectoryRecords has region eu replicate from, and locate at, a
// region ap that publishes records it may not: homed elsewhere, malformed,
// of the wrong kind, filed in the wrong batch, or taking over a key that
// eu or us homes. Each is refused and counted, ap's good records are
// taken, and what eu held is left as it was.
func TestPeerDirectoryRecords(t *testing.T) {
	store, err := datacenter.Open(t.TempDir(), datacenter.Options{Region: "eu"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })

	// eu homes erin; us homes uma (replicated from us earlier).
	erin := ids.New(ids.User)
	if err := store.CreateUser(&recordv1.User{Id: erin, Name: "erin", HomeRegion: "eu"}); err != nil {
		t.Fatal(err)
	}
	uma := ids.New(ids.User)
	usGroup := ids.New(ids.Group)
	if err := store.ApplyDirectory("us", fullUpdates(
		&roamingv1.DirectoryRecord{Kind: kUser, Key: uma, UserId: uma, HomeRegion: "us"},
		&roamingv1.DirectoryRecord{Kind: kUsername, Key: "uma", UserId: uma, HomeRegion: "us"},
		&roamingv1.DirectoryRecord{Kind: kGroup, Key: usGroup, HomeRegion: "us"},
	)); err != nil {
		t.Fatal(err)
	}
	before := make(map[string]*roamingv1.DirectoryRecord)
	for _, k := range []struct {
		kind roamingv1.DirectoryKind
		key  string
	}{{kUser, erin}, {kUsername, "erin"}, {kUser, uma}, {kUsername, "uma"}, {kGroup, usGroup}} {
		rec, err := store.Locate(k.kind, k.key)
		if err != nil {
			t.Fatal(err)
		}
		before[k.key+"/"+k.kind.String()] = proto.Clone(rec).(*roamingv1.DirectoryRecord)
	}

	ann := ids.New(ids.User)
	apGroup := ids.New(ids.Group)
	good := []*roamingv1.DirectoryRecord{
		{Kind: kUser, Key: ann, UserId: ann, HomeRegion: "ap", Location: "us"},
		{Kind: kUsername, Key: "ann", UserId: ann, HomeRegion: "ap"},
		{Kind: kGroup, Key: apGroup, HomeRegion: "ap"},
	}
	other := ids.New(ids.User)
	bad := []struct {
		name string
		rec  *roamingv1.DirectoryRecord
	}{
		{"homed in another region", &roamingv1.DirectoryRecord{Kind: kUser, Key: other, UserId: other, HomeRegion: "us"}},
		{"homed nowhere", &roamingv1.DirectoryRecord{Kind: kGroup, Key: ids.New(ids.Group)}},
		{"malformed user id", &roamingv1.DirectoryRecord{Kind: kUser, Key: "u_not-an-id", UserId: "u_not-an-id", HomeRegion: "ap"}},
		{"group id as a user", &roamingv1.DirectoryRecord{Kind: kUser, Key: apGroup, UserId: apGroup, HomeRegion: "ap"}},
		{"user id as a group", &roamingv1.DirectoryRecord{Kind: kGroup, Key: ann, HomeRegion: "ap"}},
		{"user record naming another user", &roamingv1.DirectoryRecord{Kind: kUser, Key: other, UserId: erin, HomeRegion: "ap"}},
		{"malformed username", &roamingv1.DirectoryRecord{Kind: kUsername, Key: "no spaces", UserId: ann, HomeRegion: "ap"}},
		{"username without a user", &roamingv1.DirectoryRecord{Kind: kUsername, Key: "nobody", HomeRegion: "ap"}},
		{"group naming a user", &roamingv1.DirectoryRecord{Kind: kGroup, Key: ids.New(ids.Group), UserId: ann, HomeRegion: "ap"}},
		{"unknown kind", &roamingv1.DirectoryRecord{Kind: 42, Key: ids.New(ids.User), HomeRegion: "ap"}},
		{"no kind", &roamingv1.DirectoryRecord{Key: ids.New(ids.User), HomeRegion: "ap"}},
		{"located outside the federation", &roamingv1.DirectoryRecord{Kind: kUser, Key: other, UserId: other, HomeRegion: "ap", Location: "zz"}},
		{"group with a location", &roamingv1.DirectoryRecord{Kind: kGroup, Key: ids.New(ids.Group), HomeRegion: "ap", Location: "eu"}},
		{"eu's own user", &roamingv1.DirectoryRecord{Kind: kUser, Key: erin, UserId: erin, HomeRegion: "ap"}},
		{"eu's own username", &roamingv1.DirectoryRecord{Kind: kUsername, Key: "erin", UserId: ann, HomeRegion: "ap"}},
		{"us's user", &roamingv1.DirectoryRecord{Kind: kUser, Key: uma, UserId: uma, HomeRegion: "ap", Location: "ap"}},
		{"us's username", &roamingv1.DirectoryRecord{Kind: kUsername, Key: "uma", UserId: ann, HomeRegion: "ap"}},
		{"us's group", &roamingv1.DirectoryRecord{Kind: kGroup, Key: usGroup, HomeRegion: "ap"}},
		{"us's user, deleted", &roamingv1.DirectoryRecord{Kind: kUser, Key: uma, UserId: uma, HomeRegion: "ap", Deleted: true}},
	}
	recs := append([]*roamingv1.DirectoryRecord(nil), good...)
	for _, b := range bad {
		recs = append(recs, b.rec)
	}
	updates := fullUpdates(recs...)
	// A good record filed in another batch than its own, and an update for
	// a batch that does not exist.
	misfiled := &roamingv1.DirectoryRecord{Kind: kGroup, Key: ids.New(ids.Group), HomeRegion: "ap"}
	wrong := (datacenter.DirectoryBatch(kGroup, misfiled.GetKey()) + 1) % datacenter.DirectoryBatches
	updates = append(updates,
		&roamingv1.BatchUpdate{Version: &roamingv1.BatchVersion{Batch: wrong, Major: 1, Minor: 1}, Records: []*roamingv1.DirectoryRecord{misfiled}},
		&roamingv1.BatchUpdate{Version: &roamingv1.BatchVersion{Batch: datacenter.DirectoryBatches, Major: 1, Minor: 1}, Full: true,
			Records: []*roamingv1.DirectoryRecord{{Kind: kGroup, Key: ids.New(ids.Group), HomeRegion: "ap"}}},
	)
	wantRefused := uint64(len(bad) + 2)

	peer := &lyingPeer{updates: updates}
	addr := servePeer(t, peer)
	peers, err := resourcepool.NewPeers(resourcepool.Config{Self: "eu", Addrs: map[string]string{"ap": addr, "us": "127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = peers.Close() })
	c := NewClient("eu", peers, store, slog.New(slog.DiscardHandler))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.replicateFrom(ctx, "ap"); err != nil {
		t.Fatalf("replicate from ap: %v; the good records must still be taken", err)
	}
	if got := c.Refused(); got["ap"] != wantRefused || got["us"] != 0 {
		t.Fatalf("Refused = %v; want ap:%d us:0", got, wantRefused)
	}
	for _, r := range good {
		got, err := store.Locate(r.GetKind(), r.GetKey())
		if err != nil || !proto.Equal(got, r) {
			t.Errorf("good record %v/%s: %v, %v; want it taken", r.GetKind(), r.GetKey(), got, err)
		}
	}
	for _, b := range bad {
		if _, known := before[b.rec.GetKey()+"/"+b.rec.GetKind().String()]; known {
			continue
		}
		if got, err := store.Locate(b.rec.GetKind(), b.rec.GetKey()); !errors.Is(err, datacenter.ErrNotInDirectory) {
			t.Errorf("%s: stored as %v, %v; want refused", b.name, got, err)
		}
	}
	if got, err := store.Locate(misfiled.GetKind(), misfiled.GetKey()); !errors.Is(err, datacenter.ErrNotInDirectory) {
		t.Errorf("misfiled record: stored as %v, %v; want refused", got, err)
	}
	for k, want := range before {
		got, err := store.Locate(want.GetKind(), want.GetKey())
		if err != nil || !proto.Equal(got, want) {
			t.Errorf("%s: now %v, %v; want it left as %v", k, got, err, want)
		}
	}

	// Locate: a miss here is asked of the peers; ap's answer is checked
	// the same way.
	peer.mu.Lock()
	peer.located = []*roamingv1.DirectoryRecord{{Kind: kUsername, Key: "zed", UserId: "u_forged", HomeRegion: "ap"}}
	peer.mu.Unlock()
	if got, err := c.Locate(ctx, kUsername, "zed"); err == nil {
		t.Fatalf("Locate zed = %v; want ap's malformed answer refused", got)
	}
	if _, err := store.Locate(kUsername, "zed"); !errors.Is(err, datacenter.ErrNotInDirectory) {
		t.Fatalf("the refused answer was cached: %v", err)
	}
	if got := c.Refused()["ap"]; got != wantRefused+1 {
		t.Fatalf("Refused[ap] = %d after the bad Locate answer; want %d", got, wantRefused+1)
	}
	zed := ids.New(ids.User)
	peer.mu.Lock()
	peer.located = []*roamingv1.DirectoryRecord{{Kind: kUsername, Key: "zed", UserId: zed, HomeRegion: "ap"}}
	peer.mu.Unlock()
	if got, err := c.Locate(ctx, kUsername, "zed"); err != nil || got.GetUserId() != zed {
		t.Fatalf("Locate zed = %v, %v; want ap's good answer", got, err)
	}
}
