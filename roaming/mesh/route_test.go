package mesh

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestWaitRoute: WaitRoute answers at once while a route exists, wakes a
// waiter when a drill is undone, and gives up with ErrNoRoute when the
// caller's context ends first. No heartbeats run, so only drills change
// the link.
func TestWaitRoute(t *testing.T) {
	m := New(Config{Self: "ap", Peers: map[string]string{"eu": "127.0.0.1:1"}})
	t.Cleanup(m.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	// Before its first heartbeat a link is taken as direct.
	if err := m.WaitRoute(ctx, "eu"); err != nil {
		t.Fatalf("WaitRoute before any heartbeat: %v", err)
	}
	if err := m.WaitRoute(ctx, "us"); err == nil {
		t.Fatal("WaitRoute for a region that is not a peer: nil error")
	}

	if err := m.Cut("eu", "test"); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelShort()
	if err := m.WaitRoute(short, "eu"); !errors.Is(err, ErrNoRoute) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitRoute on a cut link = %v; want ErrNoRoute after the deadline", err)
	}

	done := make(chan error, 1)
	go func() { done <- m.WaitRoute(ctx, "eu") }()
	select {
	case err := <-done:
		t.Fatalf("WaitRoute returned %v while the link is cut", err)
	case <-time.After(50 * time.Millisecond):
	}
	if err := m.Restore("eu", "test"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("WaitRoute after Restore: %v", err)
	}
}
