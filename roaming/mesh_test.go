package roaming_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/internal/stack"
)

// waitLink polls until region's view of its link to peer is in state.
func waitLink(t *testing.T, st *stack.Stack, peer string, state roamingv1.LinkState, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < within {
		for _, l := range st.Roaming().Mesh().Status() {
			if l.Peer == peer && l.State == state {
				return time.Since(start)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s: link to %s not %v within %s: %+v", st.Region(), peer, state, within, st.Roaming().Mesh().Status())
	return 0
}

// waitRoute polls until region routes traffic for peer via the given
// region ("" for direct).
func waitRoute(t *testing.T, st *stack.Stack, peer, via string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got, ok := st.Roaming().Mesh().Route(peer)
		if ok && got == via {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: route to %s = %q, %v; want via %q: %+v", st.Region(), peer, got, ok, via, st.Roaming().Mesh().Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitMesh waits until every region sees every link up.
func waitMesh(t *testing.T, fed map[string]*stack.Stack) {
	t.Helper()
	for a, st := range fed {
		for b := range fed {
			if a != b {
				waitLink(t, st, b, roamingv1.LinkState_LINK_STATE_UP, 10*time.Second)
			}
		}
	}
}

func TestCutLinkReroutesThroughThirdRegion(t *testing.T) {
	fed := startFederation(t, "ap", "eu", "us")
	for _, a := range []string{"ap", "eu", "us"} {
		for _, b := range []string{"ap", "eu", "us"} {
			if a != b {
				waitLink(t, fed[a], b, roamingv1.LinkState_LINK_STATE_UP, 5*time.Second)
			}
		}
	}
	register(t, fed["eu"], "erin")
	register(t, fed["us"], "uma")
	erin := login(t, fed["eu"], "erin")
	uma := login(t, fed["us"], "uma")
	g, err := uma.c.CreateGroup(uma.ctx, &clientv1.CreateGroupRequest{Name: "us-group"})
	if err != nil {
		t.Fatal(err)
	}
	gid := g.GetGroup().GetId()
	if _, err := erin.c.JoinGroup(erin.ctx, &clientv1.JoinGroupRequest{GroupId: gid}); err != nil {
		t.Fatal(err)
	}
	stream, err := erin.c.Session(erin.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := fed["eu"].Roaming().CutLink(ctx, "us", "test"); err != nil {
		t.Fatal(err)
	}
	waitLink(t, fed["eu"], "us", roamingv1.LinkState_LINK_STATE_CUT, time.Second)
	waitLink(t, fed["us"], "eu", roamingv1.LinkState_LINK_STATE_CUT, time.Second)
	waitRoute(t, fed["eu"], "us", "ap", 3*time.Second)
	// erin (eu) sends to the us-homed group: submitted through ap; and
	// uma's messages reach erin through ap.
	const n = 20
	for i := 1; i <= n; i++ {
		u := erin
		if i%2 == 0 {
			u = uma
		}
		sctx, scancel := context.WithTimeout(u.ctx, 10*time.Second)
		r, err := u.c.SendMessage(sctx, &clientv1.SendMessageRequest{GroupId: gid, ClientMsgId: fmt.Sprint("m", i), Body: fmt.Sprint("msg ", i)})
		scancel()
		if err != nil {
			t.Fatalf("send %d during cut: %v", i, err)
		}
		if r.GetSeq() != uint64(i) {
			t.Fatalf("send %d: seq %d", i, r.GetSeq())
		}
	}
	for got := 0; got < n; {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("recv after %d: %v", got, err)
		}
		if d := resp.GetDelivery(); d != nil {
			got++
			if d.GetMessage().GetSeq() != uint64(got) {
				t.Fatalf("delivery %d: seq %d", got, d.GetMessage().GetSeq())
			}
			_ = stream.Send(&clientv1.SessionRequest{Kind: &clientv1.SessionRequest_Ack{Ack: &clientv1.Ack{DeliveryIds: []uint64{d.GetDeliveryId()}}}})
		}
	}
	if _, err := fed["eu"].Roaming().RestoreLink(ctx, "us", "test"); err != nil {
		t.Fatal(err)
	}
	waitLink(t, fed["eu"], "us", roamingv1.LinkState_LINK_STATE_UP, 3*time.Second)
	waitLink(t, fed["us"], "eu", roamingv1.LinkState_LINK_STATE_UP, 3*time.Second)
	waitRoute(t, fed["eu"], "us", "", 3*time.Second)
}

func TestIsolatedRegionAcceptsThenCommits(t *testing.T) {
	fed := startFederation(t, "ap", "eu", "us")
	for _, a := range []string{"ap", "eu", "us"} {
		for _, b := range []string{"ap", "eu", "us"} {
			if a != b {
				waitLink(t, fed[a], b, roamingv1.LinkState_LINK_STATE_UP, 5*time.Second)
			}
		}
	}
	register(t, fed["eu"], "erin")
	register(t, fed["us"], "uma")
	register(t, fed["us"], "ursula")
	erin := login(t, fed["eu"], "erin")
	uma := login(t, fed["us"], "uma")
	ursula := login(t, fed["us"], "ursula")
	euGroup, err := erin.c.CreateGroup(erin.ctx, &clientv1.CreateGroupRequest{Name: "eu-group"})
	if err != nil {
		t.Fatal(err)
	}
	usGroup, err := uma.c.CreateGroup(uma.ctx, &clientv1.CreateGroupRequest{Name: "us-group"})
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range []struct {
		u   user
		gid string
	}{{uma, euGroup.GetGroup().GetId()}, {ursula, usGroup.GetGroup().GetId()}} {
		if _, err := j.u.c.JoinGroup(j.u.ctx, &clientv1.JoinGroupRequest{GroupId: j.gid}); err != nil {
			t.Fatal(err)
		}
	}
	stream, err := uma.c.Session(uma.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, peer := range []string{"ap", "eu"} {
		if err := fed["us"].Roaming().CutLink(ctx, peer, "test"); err != nil {
			t.Fatal(err)
		}
	}
	// Local service goes on: ursula and uma chat in the us group.
	for i := 1; i <= 5; i++ {
		r, err := ursula.c.SendMessage(ursula.ctx, &clientv1.SendMessageRequest{GroupId: usGroup.GetGroup().GetId(), Body: fmt.Sprint("local ", i)})
		if err != nil || r.GetState() != clientv1.DeliveryState_DELIVERY_STATE_COMMITTED {
			t.Fatalf("local send during partition: %v %v", r, err)
		}
	}
	// A send to the eu group is accepted, not committed.
	r, err := uma.c.SendMessage(uma.ctx, &clientv1.SendMessageRequest{GroupId: euGroup.GetGroup().GetId(), ClientMsgId: "x1", Body: "to eu while cut off"})
	if err != nil || r.GetState() != clientv1.DeliveryState_DELIVERY_STATE_ACCEPTED {
		t.Fatalf("remote send during partition: %v %v; want accepted", r, err)
	}
	if items, _, _ := fed["us"].Store().OutboxDepth("eu"); items != 1 {
		t.Fatalf("outbox for eu holds %d entries, want 1", items)
	}
	for _, peer := range []string{"ap", "eu"} {
		if _, err := fed["us"].Roaming().RestoreLink(ctx, peer, "test"); err != nil {
			t.Fatal(err)
		}
	}
	// uma's session is told it was committed.
	for {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("waiting for receipt: %v", err)
		}
		if rc := resp.GetReceipt(); rc != nil {
			if rc.GetMessageId() != r.GetMessageId() || rc.GetState() != clientv1.DeliveryState_DELIVERY_STATE_COMMITTED || rc.GetSeq() != 1 {
				t.Fatalf("receipt %v", rc)
			}
			break
		}
	}
	h, err := erin.c.GetHistory(erin.ctx, &clientv1.GetHistoryRequest{GroupId: euGroup.GetGroup().GetId()})
	if err != nil || len(h.GetMessages()) != 1 || h.GetMessages()[0].GetBody() != "to eu while cut off" {
		t.Fatalf("eu history after heal: %v %v", h, err)
	}
	if items, _, _ := fed["us"].Store().OutboxDepth("eu"); items != 0 {
		t.Fatalf("outbox for eu holds %d entries after heal", items)
	}
}

// TestResyncRightAfterRestore is an operator who restores a cut link and
// at once asks for a resync: it must not fail on the link it just
// restored, although the link comes up only at its next heartbeat and the
// traffic connection, which failed to dial during the cut, redials only
// after its backoff. During the cut, the resync reports the peer it cannot
// reach, after a short wait.
func TestResyncRightAfterRestore(t *testing.T) {
	fed := startFederation(t, "ap", "eu")
	waitMesh(t, fed)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for round := range 2 {
		if err := fed["ap"].Roaming().CutLink(ctx, "eu", "test"); err != nil {
			t.Fatal(err)
		}
		// Directory replication dials eu in vain meanwhile, as does this
		// resync, which gives up after a moment.
		start := time.Now()
		res := fed["eu"].Roaming().ResyncAll(ctx)
		if len(res) != 2 || !strings.Contains(res[1].GetError(), "no route to region ap") {
			t.Fatalf("round %d: resync during the cut: %v; want ap reported without a route", round, res)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Fatalf("round %d: resync during the cut took %v", round, took)
		}
		if _, err := fed["ap"].Roaming().RestoreLink(ctx, "eu", "test"); err != nil {
			t.Fatal(err)
		}
		for _, region := range []string{"eu", "ap"} {
			for _, r := range fed[region].Roaming().ResyncAll(ctx) {
				if r.GetError() != "" {
					t.Fatalf("round %d: resync at %s right after the restore: %v", round, region, r)
				}
			}
		}
	}
}
