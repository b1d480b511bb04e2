package roaming_test

import (
	"context"
	"testing"
	"time"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
)

// TestHomeResendsWhatItHadNotDelivered stops a home while a message it
// committed is still on its way to another region (the home is cut off
// from every peer), and starts it again: the member in the other region
// gets the message live on the session it kept open, without asking for
// history.
func TestHomeResendsWhatItHadNotDelivered(t *testing.T) {
	c := newCluster(t, nil, "ap", "eu", "us")
	register(t, c.region("eu"), "erin")
	register(t, c.region("us"), "uma")
	erin := login(t, c.region("eu"), "erin")
	uma := login(t, c.region("us"), "uma")
	g, err := erin.c.CreateGroup(erin.ctx, &clientv1.CreateGroupRequest{Name: "resend"})
	if err != nil {
		t.Fatal(err)
	}
	gid := g.GetGroup().GetId()
	c.waitKnown("eu", uma.id)
	if _, err := uma.c.JoinGroup(uma.ctx, &clientv1.JoinGroupRequest{GroupId: gid}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream, err := uma.c.Session(withAuth(ctx, uma.ctx))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	got := make(chan *clientv1.Message, 16)
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				close(got)
				return
			}
			if d := resp.GetDelivery(); d != nil {
				got <- d.GetMessage()
				_ = stream.Send(&clientv1.SessionRequest{Kind: &clientv1.SessionRequest_Ack{Ack: &clientv1.Ack{DeliveryIds: []uint64{d.GetDeliveryId()}}}})
			}
		}
	}()

	// A message delivered while the links are up arrives live.
	if _, err := erin.c.SendMessage(erin.ctx, &clientv1.SendMessageRequest{GroupId: gid, Body: "before"}); err != nil {
		t.Fatal(err)
	}
	waitMessage(t, got, "before")

	eu := c.region("eu")
	for _, peer := range []string{"ap", "us"} {
		if err := eu.Roaming().CutLink(ctx, peer, "test"); err != nil {
			t.Fatal(err)
		}
	}
	r, err := erin.c.SendMessage(erin.ctx, &clientv1.SendMessageRequest{GroupId: gid, Body: "while cut off"})
	if err != nil || r.GetState() != clientv1.DeliveryState_DELIVERY_STATE_COMMITTED {
		t.Fatalf("send at the home while cut off: %v, %v; want committed", r, err)
	}
	select {
	case m := <-got:
		t.Fatalf("uma got %q while eu was cut off", m.GetBody())
	case <-time.After(300 * time.Millisecond):
	}
	// The delivery waits in eu's memory; a restart loses it there. A cut
	// is not kept across a restart, so eu comes back with its links.
	c.stop("eu")
	c.start("eu")
	waitMessage(t, got, "while cut off")
}

func waitMessage(t *testing.T, got <-chan *clientv1.Message, body string) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case m, ok := <-got:
			if !ok {
				t.Fatalf("session ended before %q arrived", body)
			}
			if m.GetBody() == body {
				return
			}
		case <-deadline:
			t.Fatalf("%q did not arrive within 20s", body)
		}
	}
}
