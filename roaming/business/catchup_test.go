package business_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	recordv1 "github.com/roamfed/roamfed/api/record/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/internal/ids"
	"github.com/roamfed/roamfed/roaming/resourcepool"
)

// TestRefusedDeliveriesSentFromLog commits a burst of messages to an ap
// group, far more than ap's tiny queue for eu holds: what the full queue
// refuses is sent later from the group's log, so eu gets every message.
func TestRefusedDeliveriesSentFromLog(t *testing.T) {
	nodes := startNodesWith(t, resourcepool.Limits{DeliverQueue: 8, WindowBatches: 1, MaxBatchMessages: 2}, "ap", "eu")
	ap := nodes["ap"].store
	member := ids.New(ids.User)
	replicate(t, ap, "eu", userRec(member, "eu", ""))
	g := group("ap", map[string]string{member: "eu"})
	if err := ap.CreateGroup(g); err != nil {
		t.Fatal(err)
	}
	replicate(t, nodes["eu"].store, "ap", groupRec(g.GetId(), "ap"))

	const n = 100
	msgs := make([]*recordv1.Message, n)
	for i := range n {
		msgs[i] = &recordv1.Message{
			GroupId: g.GetId(), MessageId: ids.New(ids.Message), SenderId: member,
			ClientMsgId: fmt.Sprint("c", i), Body: fmt.Sprint("m", i),
		}
	}
	res, errs := ap.AppendAll(t.Context(), msgs)
	for i, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
		msgs[i] = res[i].Message
	}
	// Committed as one burst, as a busy home commits them.
	for _, m := range msgs {
		nodes["ap"].router.Committed(g, m)
	}
	fs := nodes["eu"].inbox.waitFor(t, "every message at eu", func(fs []*recordv1.Fanout) bool {
		seen := map[uint64]bool{}
		for _, f := range fs {
			seen[f.GetMessage().GetSeq()] = true
		}
		return len(seen) == n
	})
	if refused := nodes["ap"].out["eu"].Refused(); refused == 0 {
		t.Fatalf("the queue of 8 refused nothing of %d messages; the test did not exercise the catch-up", n)
	}
	counts := map[uint64]int{}
	for _, f := range fs {
		counts[f.GetMessage().GetSeq()]++
		if got := f.GetRecipients(); len(got) != 1 || got[0] != member {
			t.Errorf("seq %d went to %v, want [%s]", f.GetMessage().GetSeq(), got, member)
		}
	}
	for seq, c := range counts {
		if c > 1 {
			t.Errorf("seq %d delivered %d times; eu drops what it already had", seq, c)
		}
	}
	t.Logf("the full queue refused %d times; all %d messages delivered, each once", nodes["ap"].out["eu"].Refused(), n)
}

// TestRefusedForwardsSentLater has eu deliver to ap, in one batch, many
// messages for an ap user roaming in us, far more than ap's tiny queue for
// us holds: ap holds what the full queue refuses and sends it when the
// queue has room, so us gets every message, in order.
func TestRefusedForwardsSentLater(t *testing.T) {
	nodes := startNodesWith(t, resourcepool.Limits{DeliverQueue: 8}, "ap", "eu", "us")
	ap := nodes["ap"]
	roamer := createUser(t, ap.store, "ap", "us")
	gid := ids.New(ids.Group)
	replicate(t, ap.store, "eu", groupRec(gid, "eu"))
	replicate(t, nodes["us"].store, "ap", userRec(roamer, "ap", "us"))

	const n = 100
	req := &roamingv1.DeliverRequest{BatchId: 1}
	for i := range n {
		req.Items = append(req.Items, &recordv1.Fanout{Message: message(gid, fmt.Sprint("m", i), uint64(i+1)), Recipients: []string{roamer}})
	}
	stream := deliverStream(t, ap, "eu")
	if err := stream.Send(req); err != nil {
		t.Fatal(err)
	}
	if resp, err := stream.Recv(); err != nil || resp.GetBatchId() != 1 {
		t.Fatalf("ack = %v, %v", resp, err)
	}
	// Acknowledged once routed: most of the batch is held now.
	if held := ap.router.Held("us"); held == 0 {
		t.Error("nothing held for us right after the batch")
	}
	fs := nodes["us"].inbox.waitFor(t, "every message at us", func(fs []*recordv1.Fanout) bool {
		return len(fs) >= n
	})
	if held := ap.router.Held("us"); held != 0 {
		t.Errorf("%d still held for us after every message arrived", held)
	}
	if refused := ap.out["us"].Refused(); refused == 0 {
		t.Fatalf("ap's queue of 8 to us refused nothing of %d forwards; the test did not exercise holding", n)
	}
	for i, f := range fs {
		if f.GetMessage().GetSeq() != uint64(i+1) || !slices.Equal(f.GetRecipients(), []string{roamer}) {
			t.Fatalf("us got %s; want seq 1..%d in order, each to the roamer once", showFanouts(fs), n)
		}
	}
}

// TestRefusedPresenceSentLater has ap announce many users' presence at
// once to eu through a tiny queue: what the full queue refuses is held and
// sent when it has room, the latest change of each user and node
// superseding older ones, so eu ends with every user's last state.
func TestRefusedPresenceSentLater(t *testing.T) {
	nodes := startNodesWith(t, resourcepool.Limits{DeliverQueue: 8}, "ap", "eu")
	const n = 60
	change := func(i int, online bool) *recordv1.PresenceChange {
		return &recordv1.PresenceChange{UserId: fmt.Sprint("u_P", i), Username: fmt.Sprint("p", i), Online: online, Region: "ap", Node: "n1", Recipients: []string{"u_EU"}}
	}
	for i := range n {
		nodes["ap"].router.Presence(change(i, true))
	}
	for i := range n {
		nodes["ap"].router.Presence(change(i, i%2 == 0)) // the odd ones go offline
	}
	if nodes["ap"].out["eu"].Refused() == 0 {
		t.Fatalf("ap's queue of 8 refused nothing of %d changes; the test did not exercise holding", 2*n)
	}
	in := nodes["eu"].inbox
	last := func() map[string]bool {
		in.mu.Lock()
		defer in.mu.Unlock()
		m := map[string]bool{}
		for _, ch := range in.presence {
			m[ch.GetUserId()] = ch.GetOnline()
		}
		return m
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := last()
		ok := len(got) == n
		for i := range n {
			if online, seen := got[fmt.Sprint("u_P", i)]; !seen || online != (i%2 == 0) {
				ok = false
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("eu's last presence of %d users: %v; want all %d, the odd ones offline", len(got), got, n)
		}
		select {
		case <-in.changed:
		case <-time.After(100 * time.Millisecond):
		}
	}
}
