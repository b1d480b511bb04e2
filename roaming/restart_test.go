package roaming_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
)

// ack is what a sender was told of one of its messages.
type ack struct {
	seq uint64
	id  string
}

// sendUntilCommitted sends n messages with client_msg_ids prefix1..prefixn,
// each again with the same id until the answer is COMMITTED: an error
// that a restarting region gives (UNAVAILABLE, DEADLINE_EXCEEDED), or an
// answer of ACCEPTED (queued in the outbox), is followed by another try. It
// returns the committed answers by client_msg_id, and counts the tries.
func sendUntilCommitted(t *testing.T, u user, gid, prefix string, n int, committed func(), deadline time.Time) (map[string]ack, int) {
	acks := map[string]ack{}
	tries := 0
	for i := 1; i <= n; i++ {
		cid := fmt.Sprint(prefix, i)
		for {
			tries++
			ctx, cancel := context.WithTimeout(u.ctx, 15*time.Second)
			r, err := u.c.SendMessage(ctx, &clientv1.SendMessageRequest{GroupId: gid, ClientMsgId: cid, Body: "body of " + cid})
			cancel()
			if err == nil && r.GetState() == clientv1.DeliveryState_DELIVERY_STATE_COMMITTED {
				if r.GetSeq() == 0 {
					t.Errorf("%s committed without a seq: %v", cid, r)
				}
				acks[cid] = ack{r.GetSeq(), r.GetMessageId()}
				committed()
				break
			}
			if err != nil {
				switch status.Code(err) {
				case codes.Unavailable, codes.DeadlineExceeded:
				default:
					t.Errorf("send %s: %v", cid, err)
					return acks, tries
				}
			}
			if time.Now().After(deadline) {
				t.Errorf("send %s: not committed by the deadline; last answer %v, %v", cid, r, err)
				return acks, tries
			}
			time.Sleep(100 * time.Millisecond) // a client's retry pause
		}
	}
	return acks, tries
}

// TestHomeRestartWhileSending restarts eu, the home of a group, while ap,
// us and eu itself send to the group, each retrying with the same
// client_msg_id until its message is committed. Afterwards eu's log holds
// every message once, numbered 1..n without gaps, each at the seq its
// sender was told.
func TestHomeRestartWhileSending(t *testing.T) {
	c := newCluster(t, nil, "ap", "eu", "us")
	for _, r := range []struct{ region, name string }{{"eu", "erin"}, {"ap", "anna"}, {"us", "uma"}} {
		register(t, c.region(r.region), r.name)
	}
	erin := login(t, c.region("eu"), "erin")
	g, err := erin.c.CreateGroup(erin.ctx, &clientv1.CreateGroupRequest{Name: "restart"})
	if err != nil {
		t.Fatal(err)
	}
	gid := g.GetGroup().GetId()
	senders := map[string]user{"erin": erin, "anna": login(t, c.region("ap"), "anna"), "uma": login(t, c.region("us"), "uma")}
	c.waitKnown("eu", senders["anna"].id, senders["uma"].id)
	for _, name := range []string{"anna", "uma"} {
		u := senders[name]
		if _, err := u.c.JoinGroup(u.ctx, &clientv1.JoinGroupRequest{GroupId: gid}); err != nil {
			t.Fatalf("%s joins: %v", name, err)
		}
	}
	// The login contexts run out after 30s; the senders need longer.
	for name, u := range senders {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		t.Cleanup(cancel)
		u.ctx = withAuth(ctx, u.ctx)
		senders[name] = u
	}

	const perSender = 40
	var (
		mu       sync.Mutex
		count    int
		progress = make(chan struct{}, 1)
		all      = map[string]ack{}
		wg       sync.WaitGroup
	)
	deadline := time.Now().Add(2 * time.Minute)
	for name, u := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			acks, tries := sendUntilCommitted(t, u, gid, name+"-", perSender, func() {
				mu.Lock()
				count++
				mu.Unlock()
				select {
				case progress <- struct{}{}:
				default:
				}
			}, deadline)
			t.Logf("%s: %d messages committed in %d tries", name, len(acks), tries)
			mu.Lock()
			for cid, a := range acks {
				all[cid] = a
			}
			mu.Unlock()
		}()
	}
	// Restart eu once the traffic is flowing.
	for {
		mu.Lock()
		n := count
		mu.Unlock()
		if n >= 15 {
			break
		}
		select {
		case <-progress:
		case <-time.After(30 * time.Second):
			t.Fatalf("only %d messages committed before the restart", n)
		}
	}
	c.stop("eu")
	c.start("eu")
	wg.Wait()
	if t.Failed() {
		return
	}

	// What was accepted while eu was down drains from the outboxes; only
	// then is the log final.
	for _, r := range []string{"ap", "us"} {
		st := c.region(r)
		waitFor(t, r+"'s outbox for eu to drain", 60*time.Second, func() bool {
			items, _, err := st.Store().OutboxDepth("eu")
			return err == nil && items == 0
		})
	}
	eu := c.region("eu")
	msgs, more, err := eu.Store().History(gid, 0, 10*perSender)
	if err != nil || more {
		t.Fatalf("History: %v, more %v", err, more)
	}
	if want := 3 * perSender; len(msgs) != want {
		t.Errorf("eu's log holds %d messages, want %d", len(msgs), want)
	}
	stored := map[string]uint64{}
	for i, m := range msgs {
		if m.GetSeq() != uint64(i+1) {
			t.Fatalf("log position %d holds seq %d: a gap", i+1, m.GetSeq())
		}
		if prev, dup := stored[m.GetClientMsgId()]; dup {
			t.Errorf("%s stored twice, at %d and %d", m.GetClientMsgId(), prev, m.GetSeq())
		}
		stored[m.GetClientMsgId()] = m.GetSeq()
		if m.GetBody() != "body of "+m.GetClientMsgId() {
			t.Errorf("seq %d: body %q for %s", m.GetSeq(), m.GetBody(), m.GetClientMsgId())
		}
	}
	for cid, a := range all {
		seq, ok := stored[cid]
		if !ok || seq != a.seq {
			t.Errorf("%s was acknowledged committed at seq %d; the log has it at %d (present %v)", cid, a.seq, seq, ok)
			continue
		}
		if m := msgs[seq-1]; m.GetMessageId() != a.id {
			t.Errorf("%s: acknowledged as message %s, stored as %s", cid, a.id, m.GetMessageId())
		}
	}
}

// withAuth returns ctx carrying from's outgoing metadata (the session
// token).
func withAuth(ctx, from context.Context) context.Context {
	md, _ := metadata.FromOutgoingContext(from)
	return metadata.NewOutgoingContext(ctx, md)
}
