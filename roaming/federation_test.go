package roaming_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/internal/certs"
	"github.com/roamfed/roamfed/internal/password"
	"github.com/roamfed/roamfed/internal/stack"
	"github.com/roamfed/roamfed/internal/testnet"
	"github.com/roamfed/roamfed/regions"
	"github.com/roamfed/roamfed/roaming/mesh"
	"github.com/roamfed/roamfed/servicecenter/resourcepool"
)

// startFederation starts one in-process region per name, federated.
func startFederation(t *testing.T, names ...string) map[string]*stack.Stack {
	t.Helper()
	return startFederationWith(t, false, names...)
}

// startFederationWith starts one in-process region per name, federated,
// with mutually authenticated TLS links when withTLS is set.
func startFederationWith(t *testing.T, withTLS bool, names ...string) map[string]*stack.Stack {
	t.Helper()
	fed, _ := startFed(t, withTLS, names)
	return fed
}

// startFed starts the regions and returns them with their certificates
// (nil without TLS). Addresses are reserved before the federation file is
// written, so another test may take one in between: then it starts over
// with fresh ones, a few times.
func startFed(t testing.TB, withTLS bool, names []string) (map[string]*stack.Stack, *certs.Set) {
	t.Helper()
	return startFedTweaked(t, withTLS, names, nil)
}

// startFedTweaked is startFed with tweak, if not nil, called on each
// region's configuration before the region starts.
func startFedTweaked(t testing.TB, withTLS bool, names []string, tweak func(region string, cfg *stack.Config)) (map[string]*stack.Stack, *certs.Set) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		out, set, err := tryStartFed(t, withTLS, names, tweak)
		if err == nil {
			for n, st := range out {
				t.Cleanup(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					if err := st.Shutdown(ctx); err != nil {
						t.Errorf("shutdown %s: %v", n, err)
					}
				})
			}
			return out, set
		}
		if !errors.Is(err, syscall.EADDRINUSE) || attempt == 3 {
			t.Fatal(err)
		}
		t.Logf("attempt %d: %v; again with other addresses", attempt, err)
	}
}

func tryStartFed(t testing.TB, withTLS bool, names []string, tweak func(string, *stack.Config)) (map[string]*stack.Stack, *certs.Set, error) {
	addrs := testnet.FreeAddrs(t, 2*len(names))
	var b strings.Builder
	b.WriteString("federation: test\nregions:\n")
	for i, n := range names {
		fmt.Fprintf(&b, "  - name: %s\n    roaming_addr: %s\n    client_addr: %s\n", n, addrs[2*i], addrs[2*i+1])
	}
	fed, err := regions.Parse("test.yaml", []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	var set *certs.Set
	if withTLS {
		if set, err = certs.EnsureDev(t.TempDir(), fed); err != nil {
			t.Fatal(err)
		}
	}
	out := make(map[string]*stack.Stack)
	for i, n := range names {
		var tlsm *certs.Material
		if set != nil {
			tlsm = set.For(n)
		}
		cfg := stack.Config{
			Region:         n,
			DataDir:        t.TempDir(),
			ClientAddr:     addrs[2*i+1],
			Federation:     fed,
			Password:       password.Params{Memory: 64, Time: 1, Threads: 1},
			ReplicateEvery: 50 * time.Millisecond,
			// Lenient heartbeats: a test machine under load must not see
			// links flap. Drills cut links explicitly.
			Mesh: mesh.Config{HeartbeatTimeout: time.Second, MissThreshold: 5},
			TLS:  tlsm,
			// Load tests and benchmarks send as one user; the send rate
			// limit is the service center's, tested there.
			Limits: resourcepool.Limits{SendRate: math.Inf(1)},
		}
		if tweak != nil {
			tweak(n, &cfg)
		}
		st, err := stack.Start(cfg)
		if err != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			for _, started := range out {
				_ = started.Shutdown(ctx)
			}
			cancel()
			return nil, nil, fmt.Errorf("start %s: %w", n, err)
		}
		out[n] = st
	}
	return out, set, nil
}

type user struct {
	c   clientv1.ClientServiceClient
	ctx context.Context
	id  string
}

func dial(t testing.TB, st *stack.Stack) clientv1.ClientServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(st.ClientAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return clientv1.NewClientServiceClient(conn)
}

func login(t testing.TB, st *stack.Stack, name string) user {
	t.Helper()
	c := dial(t, st)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	resp, err := c.Login(ctx, &clientv1.LoginRequest{Username: name, Password: "password-" + name})
	if err != nil {
		t.Fatalf("login %s at %s: %v", name, st.Region(), err)
	}
	return user{c: c, ctx: metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+resp.GetToken()), id: resp.GetUserId()}
}

func register(t testing.TB, st *stack.Stack, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := dial(t, st).Register(ctx, &clientv1.RegisterRequest{Username: name, Password: "password-" + name}); err != nil {
		t.Fatalf("register %s at %s: %v", name, st.Region(), err)
	}
}

func TestCrossRegionGroup(t *testing.T) {
	fed := startFederation(t, "ap", "eu", "us")
	register(t, fed["ap"], "alice")
	register(t, fed["eu"], "bob")
	register(t, fed["us"], "carol")
	// A name taken in another region is taken everywhere (once replicated).
	deadline := time.Now().Add(5 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := dial(t, fed["us"]).Register(ctx, &clientv1.RegisterRequest{Username: "alice", Password: "password-x"})
		cancel()
		if status.Code(err) == codes.AlreadyExists {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("register alice at us: %v, want AlreadyExists", err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// alice, homed in ap, logs in at eu and creates a group there.
	alice := login(t, fed["eu"], "alice")
	bob := login(t, fed["eu"], "bob")
	carol := login(t, fed["us"], "carol")
	g, err := alice.c.CreateGroup(alice.ctx, &clientv1.CreateGroupRequest{Name: "lobby"})
	if err != nil {
		t.Fatal(err)
	}
	gid := g.GetGroup().GetId()
	if g.GetGroup().GetHomeRegion() != "eu" {
		t.Fatalf("group home %q, want eu", g.GetGroup().GetHomeRegion())
	}
	for _, u := range []user{bob, carol} {
		if _, err := u.c.JoinGroup(u.ctx, &clientv1.JoinGroupRequest{GroupId: gid}); err != nil {
			t.Fatalf("join: %v", err)
		}
	}
	// carol's session in us receives what bob sends in eu.
	stream, err := carol.c.Session(carol.ctx)
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || first.GetReady() == nil {
		t.Fatalf("first frame %v, %v; want Ready", first, err)
	}
	const n = 50
	for i := 1; i <= n; i++ {
		r, err := bob.c.SendMessage(bob.ctx, &clientv1.SendMessageRequest{GroupId: gid, ClientMsgId: fmt.Sprint("b", i), Body: fmt.Sprint("hello ", i)})
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		if r.GetSeq() != uint64(i) {
			t.Fatalf("send %d: seq %d", i, r.GetSeq())
		}
	}
	// carol sends from us: submitted to eu.
	r, err := carol.c.SendMessage(carol.ctx, &clientv1.SendMessageRequest{GroupId: gid, ClientMsgId: "c1", Body: "from us"})
	if err != nil || r.GetSeq() != n+1 {
		t.Fatalf("carol send: %v seq %d", err, r.GetSeq())
	}
	got := 0
	for got < n+1 {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("recv after %d: %v", got, err)
		}
		d := resp.GetDelivery()
		if d == nil {
			continue
		}
		got++
		if d.GetMessage().GetSeq() != uint64(got) {
			t.Fatalf("delivery %d has seq %d", got, d.GetMessage().GetSeq())
		}
		_ = stream.Send(&clientv1.SessionRequest{Kind: &clientv1.SessionRequest_Ack{Ack: &clientv1.Ack{DeliveryIds: []uint64{d.GetDeliveryId()}}}})
	}
	// An update from ap is seen from us with the new version.
	aliceAP := login(t, fed["ap"], "alice")
	up, err := aliceAP.c.UpdateGroup(aliceAP.ctx, &clientv1.UpdateGroupRequest{GroupId: gid, Notice: ptr("welcome")})
	if err != nil {
		t.Fatal(err)
	}
	gg, err := carol.c.GetGroup(carol.ctx, &clientv1.GetGroupRequest{GroupId: gid})
	if err != nil || gg.GetGroup().GetVersion() != up.GetGroup().GetVersion() || gg.GetGroup().GetNotice() != "welcome" {
		t.Fatalf("get from us: %v %v", gg, err)
	}
	h, err := aliceAP.c.GetHistory(aliceAP.ctx, &clientv1.GetHistoryRequest{GroupId: gid})
	if err != nil || len(h.GetMessages()) != n+1 {
		t.Fatalf("history from ap: %d messages, %v", len(h.GetMessages()), err)
	}
	lg, err := carol.c.ListGroups(carol.ctx, &clientv1.ListGroupsRequest{})
	if err != nil || len(lg.GetGroups()) != 1 || lg.GetGroups()[0].GetLastSeq() != n+1 {
		t.Fatalf("list groups at us: %v %v", lg, err)
	}
}

func ptr[T any](v T) *T { return &v }

// startFederationB starts ap, eu and us with TLS links for a benchmark,
// once every link is up.
func startFederationB(b *testing.B) map[string]*stack.Stack {
	b.Helper()
	fed, _ := startFed(b, true, []string{"ap", "eu", "us"})
	deadline := time.Now().Add(10 * time.Second)
	for a, st := range fed {
		for peer := range fed {
			for peer != a {
				if via, ok := st.Roaming().Mesh().Route(peer); ok && via == "" && linkUp(st, peer) {
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("%s: link to %s not up", a, peer)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
	return fed
}

func linkUp(st *stack.Stack, peer string) bool {
	for _, l := range st.Roaming().Mesh().Status() {
		if l.Peer == peer {
			return l.State == roamingv1.LinkState_LINK_STATE_UP
		}
	}
	return false
}
