package clientkit

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	"github.com/roamfed/roamfed/internal/testnet"
)

// TestSessionNoBandwidthPings delivers messages one at a time to a session
// on a conn with Windows, against a region's client listener, and reads
// every frame on the wire: neither side sends a PING. (gRPC's bandwidth
// estimator, on when the windows are left to it, answers nearly every
// delivery on such a session with a PING round trip.)
func TestSessionNoBandwidthPings(t *testing.T) {
	st := startRegion(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	alice, bob, gid := aliceAndBob(t, ctx, st.ClientAddr())

	var taps testnet.Taps
	cc, err := grpc.NewClient(st.ClientAddr(), append(Windows(),
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithContextDialer(taps.Dial))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	session, err := clientv1.NewClientServiceClient(cc).Session(WithToken(ctx, bob.token))
	if err != nil {
		t.Fatal(err)
	}
	if r, err := session.Recv(); err != nil || r.GetReady() == nil {
		t.Fatalf("first frame %v, %v; want Ready", r, err)
	}
	const messages = 30
	for i := range messages {
		if _, err := alice.api.SendMessage(WithToken(ctx, alice.token), &clientv1.SendMessageRequest{
			GroupId: gid, ClientMsgId: "m" + strconv.Itoa(i), Body: "hello " + strconv.Itoa(i),
		}); err != nil {
			t.Fatal(err)
		}
		var d *clientv1.Delivery
		for d == nil {
			r, err := session.Recv()
			if err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
			d = r.GetDelivery() // presence and the like come too
		}
		if got := d.GetMessage().GetBody(); got != "hello "+strconv.Itoa(i) {
			t.Fatalf("delivery %d is %q", i, got)
		}
		ack := &clientv1.SessionRequest{Kind: &clientv1.SessionRequest_Ack{Ack: &clientv1.Ack{DeliveryIds: []uint64{d.GetDeliveryId()}}}}
		if err := session.Send(ack); err != nil {
			t.Fatal(err)
		}
	}
	if err := session.CloseSend(); err != nil {
		t.Fatal(err)
	}
	taps.WantNoPings(t, fmt.Sprintf("%d deliveries one at a time", messages))
}
