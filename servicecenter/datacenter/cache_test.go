package datacenter

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	recordv1 "github.com/roamfed/roamfed/api/record/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/internal/ids"
)

func openCacheStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.TempDir(), Options{Region: "eu"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestReadCacheDropsPutAfterInvalidate(t *testing.T) {
	c := newReadCache[int](4)
	_, gen, ok := c.get([]byte("k"))
	if ok {
		t.Fatal("empty cache has k")
	}
	c.invalidate([]byte("other"))
	c.put([]byte("k"), 1, gen)
	if _, _, ok := c.get([]byte("k")); ok {
		t.Fatal("a value read before an invalidation was cached after it")
	}
	_, gen, _ = c.get([]byte("k"))
	for i := range 5 {
		c.put(fmt.Appendf(nil, "k%d", i), i, gen)
	}
	if n := len(c.m); n > 4 {
		t.Fatalf("cache holds %d entries, max 4", n)
	}
}

// TestCachedReadsSeeWrites checks that every write that changes a cached
// record is seen by the next read: sessions revoked, locations moved,
// records a peer withdrew.
func TestCachedReadsSeeWrites(t *testing.T) {
	s := openCacheStore(t)
	now := time.Now()

	rec := &recordv1.SessionToken{UserId: "u", ExpiresAt: timestamppb.New(now.Add(time.Hour))}
	if err := s.PutSession("tok", rec); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Session("tok", now); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Session("tok", now.Add(2*time.Hour)); !errors.Is(err, ErrSessionNotFound) {
		t.Fatalf("cached session after expiry: %v, want ErrSessionNotFound", err)
	}
	if err := s.DeleteSession("tok"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Session("tok", now); !errors.Is(err, ErrSessionNotFound) {
		t.Fatalf("revoked session: %v, want ErrSessionNotFound", err)
	}

	u := &recordv1.User{Id: ids.New(ids.User), Name: "roamer", HomeRegion: "eu"}
	if err := s.CreateUser(u); err != nil {
		t.Fatal(err)
	}
	for _, loc := range []string{"", "us", "ap", ""} {
		if err := s.SetLocation(u.GetId(), loc); err != nil {
			t.Fatal(err)
		}
		got, err := s.Locate(roamingv1.DirectoryKind_DIRECTORY_KIND_USER, u.GetId())
		if err != nil || got.GetLocation() != loc {
			t.Fatalf("after SetLocation(%q): Locate = %v, %v", loc, got, err)
		}
	}

	peer := &roamingv1.DirectoryRecord{Kind: roamingv1.DirectoryKind_DIRECTORY_KIND_USER, Key: ids.New(ids.User), HomeRegion: "us", Minor: 1}
	batch := DirectoryBatch(peer.GetKind(), peer.GetKey())
	if err := s.ApplyDirectory("us", []*roamingv1.BatchUpdate{{Version: &roamingv1.BatchVersion{Batch: batch, Major: 1, Minor: 1}, Full: true, Records: []*roamingv1.DirectoryRecord{peer}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Locate(peer.GetKind(), peer.GetKey()); err != nil {
		t.Fatal(err)
	}
	if err := s.ApplyDirectory("us", []*roamingv1.BatchUpdate{{Version: &roamingv1.BatchVersion{Batch: batch, Major: 2, Minor: 1}, Full: true}}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Locate(peer.GetKind(), peer.GetKey()); !errors.Is(err, ErrNotInDirectory) {
		t.Fatalf("record the peer withdrew: Locate = %v, %v; want ErrNotInDirectory", got, err)
	}
}

// TestCachedReadsUnderConcurrentWrites has readers fill the cache while a
// writer moves a user around; once the writer stops, every read must see
// its last write, never a value a reader cached from before it.
func TestCachedReadsUnderConcurrentWrites(t *testing.T) {
	s := openCacheStore(t)
	u := &recordv1.User{Id: ids.New(ids.User), Name: "mover", HomeRegion: "eu"}
	if err := s.CreateUser(u); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := s.Locate(roamingv1.DirectoryKind_DIRECTORY_KIND_USER, u.GetId()); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	locs := []string{"us", "ap", "sa", ""}
	for i := range 200 {
		if err := s.SetLocation(u.GetId(), locs[i%len(locs)]); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	for range 3 {
		got, err := s.Locate(roamingv1.DirectoryKind_DIRECTORY_KIND_USER, u.GetId())
		if err != nil || got.GetLocation() != locs[199%len(locs)] {
			t.Fatalf("Locate after the writes = %v, %v; want location %q", got, err, locs[199%len(locs)])
		}
	}
}
