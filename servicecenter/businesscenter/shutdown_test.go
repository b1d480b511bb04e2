package businesscenter_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	"github.com/roamfed/roamfed/servicecenter/businesscenter"
)

// TestShutdownEndsSessions checks that open Session streams do not hold a
// region's shutdown up: they end with UNAVAILABLE, so that clients
// reconnect, and Shutdown returns well before its deadline.
func TestShutdownEndsSessions(t *testing.T) {
	t.Parallel()
	r := startRegion(t, withDelivery(time.Hour, 3))
	alice := r.newUser(t, "alice")
	bob := r.newUser(t, "bob")
	g := r.createGroup(t, alice, bob)
	as, _ := r.startSession(t, alice)
	bs, _ := r.startSession(t, bob)
	// alice holds an unacknowledged delivery when the region stops.
	r.send(t, bob, g.GetId(), "m", "unacknowledged")
	as.nextDelivery()

	start := time.Now()
	if err := r.shutdown(); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	// shutdownTimeout is twice this: a Shutdown that waited for the
	// streams and fell back to a hard stop would take longer.
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Shutdown took %v with open sessions", took)
	}
	for name, s := range map[string]*session{"alice": as, "bob": bs} {
		err := s.waitEnd(waitFor)
		// The node's own drain notice, not a transport failure.
		if st, want := status.Convert(err), status.Convert(businesscenter.ErrDraining); st.Code() != codes.Unavailable || st.Message() != want.Message() {
			t.Errorf("%s's stream ended with %v, want %v", name, err, want.Err())
		}
	}

	// The region is gone: calls fail and do not hang.
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	_, err := r.client.ListGroups(bearer(ctx, alice.token), &clientv1.ListGroupsRequest{})
	wantCode(t, err, codes.Unavailable)

	// Shutdown is idempotent.
	again := make(chan error, 1)
	go func() { again <- r.st.Shutdown(ctx) }()
	select {
	case err := <-again:
		if err != nil {
			t.Errorf("second Shutdown: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatalf("second Shutdown did not return within %v", waitFor)
	}
}
