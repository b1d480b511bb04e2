package business_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc"

	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/internal/netem"
	"github.com/roamfed/roamfed/roaming/business"
	"github.com/roamfed/roamfed/roaming/resourcepool"
	"github.com/roamfed/roamfed/servicecenter/datacenter"
)

// TestOutboxPipelinesRounds checks that a message queued while an earlier
// round is still out goes to the home at once rather than a round trip
// later: over a link with a 300 ms one-way delay, the second message is
// committed at the home before the answer for the first is back.
func TestOutboxPipelinesRounds(t *testing.T) {
	eu := startPeerRegion(t)
	st := eu.stack()
	groupID, senderID := euGroup(t, st)

	link := netem.NewLink()
	peers, err := resourcepool.NewPeers(resourcepool.Config{
		Self:        "ap",
		Addrs:       map[string]string{"eu": eu.euAddr},
		Limits:      resourcepool.Limits{CallTimeout: 10 * time.Second},
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(link.Dialer())},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = peers.Close() })
	log := slog.New(slog.DiscardHandler)
	sub := business.NewSubmitter("eu", peers, log)
	t.Cleanup(func() { stopWithin(t, "submitter", sub.Stop) })
	apStore, err := datacenter.Open(t.TempDir(), datacenter.Options{Region: "ap"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = apStore.Close() })
	ob := business.NewOutbox(business.OutboxConfig{
		Peer: "eu", Store: apStore, Submitter: sub, Logger: log,
		Location: func(context.Context, *roamingv1.UpdateLocationRequest) error { return nil },
	})
	t.Cleanup(func() { stopWithin(t, "outbox", ob.Stop) })
	ctx := t.Context()

	// The first message opens the stream without delay.
	if _, err := ob.Submit(ctx, submission(groupID, senderID, 0), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	const oneWay = 300 * time.Millisecond
	link.SetDelay(oneWay)

	type answer struct {
		seq uint64
		err error
	}
	first := make(chan answer, 1)
	go func() {
		res, err := ob.Submit(ctx, submission(groupID, senderID, 1), 10*time.Second)
		first <- answer{res.Message.GetSeq(), err}
	}()
	// Let the first message's round leave before the second is queued,
	// so that the two cannot share a round.
	time.Sleep(oneWay / 5)
	second := make(chan answer, 1)
	go func() {
		res, err := ob.Submit(ctx, submission(groupID, senderID, 2), 10*time.Second)
		second <- answer{res.Message.GetSeq(), err}
	}()

	a := <-first
	if a.err != nil || a.seq != 2 {
		t.Fatalf("first message: seq %d, %v; want seq 2", a.seq, a.err)
	}
	// The first answer took a round trip; a second message that waited
	// for it would reach the home only one way later.
	if last, err := st.Store().LastSeq(groupID); err != nil || last != 3 {
		t.Fatalf("when the first answer came back, the home's log ended at %d (%v); want 3: the second message waited for the first round", last, err)
	}
	if b := <-second; b.err != nil || b.seq != 3 {
		t.Fatalf("second message: seq %d, %v; want seq 3", b.seq, b.err)
	}
}
