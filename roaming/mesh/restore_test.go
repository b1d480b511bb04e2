package mesh

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
)

// heartbeatServer answers heartbeats as a region's BusinessService does.
type heartbeatServer struct {
	roamingv1.UnimplementedBusinessServiceServer
	region string
	m      *Mesh
}

func (h *heartbeatServer) Heartbeat(context.Context, *roamingv1.HeartbeatRequest) (*roamingv1.HeartbeatResponse, error) {
	return &roamingv1.HeartbeatResponse{Region: h.region, ReceivedAt: timestamppb.Now(), Links: h.m.Views()}, nil
}

// startPair starts two meshes, ap and eu, each serving heartbeats on
// loopback and sending its own over DirectDial, every `every`. changed
// receives eu's Changed calls.
func startPair(t *testing.T, every time.Duration, changed chan<- string) (ap, eu *Mesh) {
	t.Helper()
	lis := map[string]net.Listener{}
	for _, name := range []string{"ap", "eu"} {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() }) // the server closes it too, once serving
		lis[name] = l
	}
	ap = New(Config{Self: "ap", Peers: map[string]string{"eu": lis["eu"].Addr().String()}, HeartbeatEvery: every})
	eu = New(Config{Self: "eu", Peers: map[string]string{"ap": lis["ap"].Addr().String()}, HeartbeatEvery: every,
		Changed: func(peer string) {
			select {
			case changed <- peer:
			default: // the test looks at the link table anyway
			}
		}})
	meshes := map[string]*Mesh{"ap": ap, "eu": eu}
	for self, m := range meshes {
		srv := grpc.NewServer()
		roamingv1.RegisterBusinessServiceServer(srv, &heartbeatServer{region: self, m: m})
		go func() { _ = srv.Serve(lis[self]) }()
		t.Cleanup(srv.Stop) // last: after both meshes stopped beating
	}
	for self, m := range meshes {
		peer := map[string]string{"ap": "eu", "eu": "ap"}[self]
		cc, err := grpc.NewClient(lis[peer].Addr().String(),
			grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithContextDialer(m.DirectDial))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		m.Start(func(string) (roamingv1.BusinessServiceClient, error) {
			return roamingv1.NewBusinessServiceClient(cc), nil
		})
		t.Cleanup(m.Close)
	}
	return ap, eu
}

func linkState(m *Mesh, peer string) roamingv1.LinkState {
	for _, l := range m.Status() {
		if l.Peer == peer {
			return l.State
		}
	}
	return roamingv1.LinkState_LINK_STATE_UNSPECIFIED
}

// TestRestoreSeenUpAtOnce cuts a link at both ends and restores it, with a
// heartbeat interval far longer than the test: the link is seen up again
// after about one round trip, by WaitLinkUp at the end that restored
// first, and at the other end without anyone waiting, since a restore
// sends a heartbeat at once instead of at the next tick.
func TestRestoreSeenUpAtOnce(t *testing.T) {
	const every = time.Minute // no tick after the first heartbeat
	changed := make(chan string, 16)
	ap, eu := startPair(t, every, changed)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The first heartbeats go out at Start; one that found the peer not
	// yet serving is sent again by WaitLinkUp.
	for _, x := range []struct {
		m    *Mesh
		peer string
	}{{ap, "eu"}, {eu, "ap"}} {
		if err := x.m.WaitLinkUp(ctx, x.peer); err != nil {
			t.Fatalf("before the drill: %v", err)
		}
	}

	// A drill, as roaming.System runs it: the peer cuts first, then this
	// region; this region restores first, then the peer.
	if err := eu.Cut("ap", "test"); err != nil {
		t.Fatal(err)
	}
	if err := ap.Cut("eu", "test"); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelShort()
	if err := ap.WaitLinkUp(short, "eu"); err == nil {
		t.Fatal("WaitLinkUp on a cut link: nil error")
	}
	for len(changed) > 0 {
		<-changed
	}

	const within = 2 * time.Second // far below the next tick
	start := time.Now()
	if err := ap.Restore("eu", "test"); err != nil {
		t.Fatal(err)
	}
	if err := eu.Restore("ap", "test"); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, within)
	defer wcancel()
	if err := ap.WaitLinkUp(wctx, "eu"); err != nil {
		t.Fatalf("ap after the restore: %v", err)
	}
	apUp := time.Since(start)
	if s := linkState(ap, "eu"); s != roamingv1.LinkState_LINK_STATE_UP {
		t.Errorf("ap: WaitLinkUp returned with the link %v", s)
	}
	if via, ok := ap.Route("eu"); !ok || via != "" {
		t.Errorf("ap: route to eu %q, %v; want direct", via, ok)
	}
	// eu: nobody waits; the heartbeat its restore sent brings it up.
	for linkState(eu, "ap") != roamingv1.LinkState_LINK_STATE_UP {
		select {
		case <-changed:
		case <-wctx.Done():
			t.Fatalf("eu: link to ap still %v %s after the restore", linkState(eu, "ap"), time.Since(start))
		}
	}
	euUp := time.Since(start)
	t.Logf("restore to up: ap (WaitLinkUp) %s, eu (its own restore's heartbeat) %s; heartbeat interval %s", apUp, euUp, every)
}
