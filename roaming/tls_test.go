package roaming_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/internal/certs"
	"github.com/roamfed/roamfed/regions"
)

// TestMutualTLSFederation runs the cross-region flow over mTLS links, and
// through a relay, whose tunnel carries the origin's TLS end to end.
func TestMutualTLSFederation(t *testing.T) {
	fed := startFederationWith(t, true, "ap", "eu", "us")
	waitMesh(t, fed)
	register(t, fed["eu"], "erin")
	register(t, fed["us"], "uma")
	erin := login(t, fed["eu"], "erin")
	uma := login(t, fed["us"], "uma")
	g, err := uma.c.CreateGroup(uma.ctx, &clientv1.CreateGroupRequest{Name: "tls"})
	if err != nil {
		t.Fatal(err)
	}
	gid := g.GetGroup().GetId()
	if _, err := erin.c.JoinGroup(erin.ctx, &clientv1.JoinGroupRequest{GroupId: gid}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := fed["eu"].Roaming().CutLink(ctx, "us", "tls test"); err != nil {
		t.Fatal(err)
	}
	waitLink(t, fed["eu"], "us", roamingv1.LinkState_LINK_STATE_CUT, time.Second)
	waitRoute(t, fed["eu"], "us", "ap", 3*time.Second)
	r, err := erin.c.SendMessage(erin.ctx, &clientv1.SendMessageRequest{GroupId: gid, ClientMsgId: "t1", Body: "through ap, over TLS"})
	if err != nil || r.GetState() != clientv1.DeliveryState_DELIVERY_STATE_COMMITTED {
		t.Fatalf("send through the relay: %v, %v", r, err)
	}
}

// TestRoamingRefusesStrangers dials a region's roaming listener with a
// certificate from another CA, and with a good certificate claiming to be
// another region.
func TestRoamingRefusesStrangers(t *testing.T) {
	fed, set := startFed(t, true, []string{"ap", "eu"})
	target := fed["eu"].RoamingAddr()

	other, err := regions.Parse("other.yaml", []byte("regions:\n  - name: ap\n    roaming_addr: 127.0.0.1:1\n    client_addr: 127.0.0.1:2\n  - name: eu\n    roaming_addr: "+target+"\n    client_addr: 127.0.0.1:3\n"))
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := certs.EnsureDev(t.TempDir(), other)
	if err != nil {
		t.Fatal(err)
	}
	call := func(m *certs.Material, claim string) error {
		cfg := m.ClientTLS("eu")
		conn, err := grpc.NewClient("passthrough:///"+target, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, "roamfed-region", claim)
		_, err = roamingv1.NewBusinessServiceClient(conn).Heartbeat(ctx, &roamingv1.HeartbeatRequest{})
		return err
	}
	// Another CA: the server refuses the handshake (and the client would
	// refuse the server's certificate too).
	if err := call(foreign.For("ap"), "ap"); status.Code(err) != codes.Unavailable {
		t.Fatalf("foreign CA: %v, want the connection refused", err)
	}
	// ap's real certificate claiming to be another region: the claim must
	// match the certificate.
	if err := call(set.For("ap"), "eu"); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("ap's certificate claiming eu: %v, want PermissionDenied", err)
	}
	// And the honest claim works.
	if err := call(set.For("ap"), "ap"); err != nil {
		t.Fatalf("ap's certificate as ap: %v", err)
	}
}
