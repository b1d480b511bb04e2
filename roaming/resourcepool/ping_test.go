package resourcepool

import (
	"fmt"
	"testing"

	"google.golang.org/grpc"

	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/internal/testnet"
)

// TestPeersNoBandwidthPings sends light traffic on a Submit stream, one
// small batch at a time, and reads every frame on the wire: with the fixed
// flow-control windows of peers.go and ServerOptions, neither side sends a
// PING. (gRPC's bandwidth estimator, on when the windows are left to it,
// answers nearly every such batch with a PING round trip.)
func TestPeersNoBandwidthPings(t *testing.T) {
	addr, _ := serve(t, "127.0.0.1:0", &business{self: "eu"})
	var taps testnet.Taps
	p := newPeers(t, Config{
		Self:        "ap",
		Addrs:       map[string]string{"eu": addr},
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(taps.Dial)},
	})
	stream, err := businessClient(t, p, "eu").Submit(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	const batches = 50
	for i := range batches {
		if err := stream.Send(&roamingv1.SubmitRequest{BatchId: uint64(i + 1)}); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	taps.WantNoPings(t, fmt.Sprintf("%d round trips of one batch each", batches))
}
