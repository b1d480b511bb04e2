package business_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	recordv1 "github.com/roamfed/roamfed/api/record/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/api/rpcstatus"
	"github.com/roamfed/roamfed/internal/ids"
	"github.com/roamfed/roamfed/roaming/business"
	"github.com/roamfed/roamfed/roaming/mesh"
	"github.com/roamfed/roamfed/roaming/resourcepool"
	"github.com/roamfed/roamfed/servicecenter/datacenter"
)

// inbox is a region's service center as the router hands it work: it
// keeps what it is given.
type inbox struct {
	mu       sync.Mutex
	fanouts  []*recordv1.Fanout
	presence []*recordv1.PresenceChange
	receipts []*recordv1.Receipt
	changed  chan struct{}
}

func newInbox() *inbox { return &inbox{changed: make(chan struct{}, 1)} }

var _ business.Local = (*inbox)(nil)

func (b *inbox) poke() {
	select {
	case b.changed <- struct{}{}:
	default:
	}
}

func (b *inbox) Deliver(items []*recordv1.Fanout) {
	b.mu.Lock()
	b.fanouts = append(b.fanouts, items...)
	b.mu.Unlock()
	b.poke()
}

func (b *inbox) ApplyPresence(chs []*recordv1.PresenceChange) {
	b.mu.Lock()
	b.presence = append(b.presence, chs...)
	b.mu.Unlock()
	b.poke()
}

func (b *inbox) Receipt(r *recordv1.Receipt) {
	b.mu.Lock()
	b.receipts = append(b.receipts, r)
	b.mu.Unlock()
	b.poke()
}

func (b *inbox) snapshot() []*recordv1.Fanout {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.fanouts)
}

// waitFor polls the inbox until cond holds, for up to 20s.
func (b *inbox) waitFor(t *testing.T, what string, cond func(fs []*recordv1.Fanout) bool) []*recordv1.Fanout {
	t.Helper()
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	for {
		fs := b.snapshot()
		if cond(fs) {
			return fs
		}
		select {
		case <-b.changed:
		case <-deadline.C:
			t.Fatalf("waiting for %s; inbox holds %s", what, showFanouts(fs))
		}
	}
}

// has reports whether fs holds a fanout of the message with that body.
func has(body string) func(fs []*recordv1.Fanout) bool {
	return func(fs []*recordv1.Fanout) bool {
		return slices.ContainsFunc(fs, func(f *recordv1.Fanout) bool { return f.GetMessage().GetBody() == body })
	}
}

func showFanouts(fs []*recordv1.Fanout) string {
	var s string
	for _, f := range fs {
		r := slices.Clone(f.GetRecipients())
		slices.Sort(r)
		s += fmt.Sprintf("\n  %q -> %v", f.GetMessage().GetBody(), r)
	}
	if s == "" {
		return "(nothing)"
	}
	return s
}

// node is one region's business module, served on loopback: a real data
// center, a Router with a Deliverer to every other node, and the
// BusinessService that takes their deliveries.
type node struct {
	name   string
	addr   string
	store  *datacenter.Store
	peers  *resourcepool.Peers
	router *business.Router
	out    map[string]*business.Deliverer
	inbox  *inbox
}

// startNodes starts one node per name, each a peer of the others.
func startNodes(t *testing.T, names ...string) map[string]*node {
	t.Helper()
	return startNodesWith(t, resourcepool.Limits{}, names...)
}

// startNodesWith is startNodes with limits for every node's peers.
func startNodesWith(t *testing.T, limits resourcepool.Limits, names ...string) map[string]*node {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	addrs := map[string]string{}
	lis := map[string]net.Listener{}
	for _, n := range names {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lis[n], addrs[n] = l, l.Addr().String()
	}
	nodes := map[string]*node{}
	for _, n := range names {
		store, err := datacenter.Open(t.TempDir(), datacenter.Options{Region: n})
		if err != nil {
			t.Fatal(err)
		}
		peers, err := resourcepool.NewPeers(resourcepool.Config{Self: n, Addrs: addrs, Logger: log, Limits: limits})
		if err != nil {
			t.Fatal(err)
		}
		nd := &node{name: n, addr: addrs[n], store: store, peers: peers, out: map[string]*business.Deliverer{}, inbox: newInbox()}
		for _, p := range peers.Names() {
			nd.out[p] = business.NewDeliverer(p, peers, log)
		}
		nd.router = business.NewRouter(n, store, nd.out, log)
		nd.router.SetLocal(nd.inbox)
		m := mesh.New(mesh.Config{Self: n, Logger: log})
		srv := grpc.NewServer(append(resourcepool.ServerOptions(n, names),
			grpc.ChainUnaryInterceptor(rpcstatus.UnaryServerInterceptor(log)),
			grpc.ChainStreamInterceptor(rpcstatus.StreamServerInterceptor(log)))...)
		// Only Deliver is served: no Home to commit to, no users to act for.
		bs := business.NewServer(n, log, nil, nd.router, m, nil, peers.Limits().MaxBatchMessages)
		roamingv1.RegisterBusinessServiceServer(srv, bs)
		served := make(chan struct{})
		go func() {
			defer close(served)
			_ = srv.Serve(lis[n])
		}()
		t.Cleanup(func() {
			bs.Close()
			srv.Stop()
			<-served
			nd.router.Stop()
			for _, d := range nd.out {
				d.Stop()
			}
			m.Close()
			_ = peers.Close()
			_ = store.Close()
		})
		nodes[n] = nd
	}
	return nodes
}

// createUser stores a user homed at s's region, and places it.
func createUser(t *testing.T, s *datacenter.Store, home, location string) string {
	t.Helper()
	id := ids.New(ids.User)
	u := &recordv1.User{Id: id, Name: "name-" + id, HomeRegion: home}
	if err := s.CreateUser(u); err != nil {
		t.Fatal(err)
	}
	if location != "" {
		if err := s.SetLocation(u.GetId(), location); err != nil {
			t.Fatal(err)
		}
	}
	return u.GetId()
}

// replicate stores records that owner publishes in s's directory, as
// replication would: as changes, so that earlier ones stay.
func replicate(t *testing.T, s *datacenter.Store, owner string, recs ...*roamingv1.DirectoryRecord) {
	t.Helper()
	var updates []*roamingv1.BatchUpdate
	for _, r := range recs {
		b := datacenter.DirectoryBatch(r.GetKind(), r.GetKey())
		updates = append(updates, &roamingv1.BatchUpdate{Version: &roamingv1.BatchVersion{Batch: b, Major: 1, Minor: r.GetMinor()}, Records: []*roamingv1.DirectoryRecord{r}})
	}
	if err := s.ApplyDirectory(owner, updates); err != nil {
		t.Fatal(err)
	}
}

func userRec(id, home, location string) *roamingv1.DirectoryRecord {
	return &roamingv1.DirectoryRecord{Kind: roamingv1.DirectoryKind_DIRECTORY_KIND_USER, Key: id, HomeRegion: home, UserId: id, Location: location, Minor: 1}
}

func groupRec(id, home string) *roamingv1.DirectoryRecord {
	return &roamingv1.DirectoryRecord{Kind: roamingv1.DirectoryKind_DIRECTORY_KIND_GROUP, Key: id, HomeRegion: home, Minor: 1}
}

func message(groupID, body string, seq uint64) *recordv1.Message {
	return &recordv1.Message{
		GroupId: groupID, Seq: seq, MessageId: ids.New(ids.Message), SenderId: "u_sender", ClientMsgId: body,
		Body: body, SentAt: timestamppb.Now(), CommittedAt: timestamppb.Now(), OriginRegion: "ap",
	}
}

func group(home string, members map[string]string) *recordv1.Group {
	g := &recordv1.Group{Id: ids.New(ids.Group), Name: "g", HomeRegion: home, Version: 1}
	for id, h := range members {
		g.Members = append(g.Members, &recordv1.Member{UserId: id, HomeRegion: h})
	}
	return g
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// TestRouteSplitsMembersByLocation has ap's router send committed messages
// of an ap group: each member goes to the region the directory places
// them in (their location, else their home), and every other region gets
// one fanout per message with its recipients.
func TestRouteSplitsMembersByLocation(t *testing.T) {
	nodes := startNodes(t, "ap", "eu", "us")
	ap := nodes["ap"].store
	a1 := createUser(t, ap, "ap", "")   // at home
	a2 := createUser(t, ap, "ap", "eu") // roaming in eu
	a3 := createUser(t, ap, "ap", "us") // roaming in us
	e1, e2, e3 := ids.New(ids.User), ids.New(ids.User), ids.New(ids.User)
	replicate(t, ap, "eu", userRec(e1, "eu", ""), userRec(e2, "eu", "us"), userRec(e3, "eu", "ap"))
	u1 := ids.New(ids.User) // not in ap's directory: its membership's home counts
	x1 := ids.New(ids.User) // homed in a region not in the federation
	g := group("ap", map[string]string{a1: "ap", a2: "ap", a3: "ap", e1: "eu", e2: "eu", e3: "eu", u1: "us", x1: "zz"})

	sentinel := group("ap", map[string]string{e1: "eu", u1: "us"})
	// The peers know the groups are ap's, so they take ap's deliveries.
	for _, peer := range []string{"eu", "us"} {
		replicate(t, nodes[peer].store, "ap", groupRec(g.GetId(), "ap"), groupRec(sentinel.GetId(), "ap"))
	}

	r := nodes["ap"].router
	for i := range 3 {
		r.Committed(g, message(g.GetId(), fmt.Sprint("m", i), uint64(i+1)))
	}
	// Deliveries to a peer keep their order: once the sentinel is in, so
	// is everything before it.
	r.Committed(sentinel, message(sentinel.GetId(), "sentinel", 1))
	want := map[string][]string{"eu": {a2, e1}, "us": {a3, e2, u1}}
	for region, recipients := range want {
		fs := nodes[region].inbox.waitFor(t, "sentinel at "+region, has("sentinel"))
		fs = fs[:len(fs)-1]
		if len(fs) != 3 {
			t.Fatalf("%s got %d fanouts before the sentinel, want 3 (one per message): %s", region, len(fs), showFanouts(fs))
		}
		for i, f := range fs {
			if f.GetMessage().GetBody() != fmt.Sprint("m", i) || !sameSet(f.GetRecipients(), recipients) {
				t.Errorf("%s fanout %d = %s; want m%d to %v", region, i, showFanouts(fs[i:i+1]), i, recipients)
			}
		}
	}
	if fs := nodes["ap"].inbox.snapshot(); len(fs) != 0 {
		t.Errorf("ap's router delivered locally: %s", showFanouts(fs))
	}

	// a2 moves from eu to us: once the router reads the directory again,
	// a2's messages go to us.
	if err := ap.SetLocation(a2, "us"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; ; i++ {
		body := fmt.Sprint("after move ", i)
		r.Committed(g, message(g.GetId(), body, uint64(10+i)))
		fs := nodes["us"].inbox.waitFor(t, body+" at us", has(body))
		if f := fs[len(fs)-1]; slices.Contains(f.GetRecipients(), a2) {
			if !sameSet(f.GetRecipients(), []string{a2, a3, e2, u1}) {
				t.Errorf("us fanout after move = %s", showFanouts(fs[len(fs)-1:]))
			}
			efs := nodes["eu"].inbox.waitFor(t, body+" at eu", has(body))
			if f := efs[len(efs)-1]; !sameSet(f.GetRecipients(), []string{e1}) {
				t.Errorf("eu fanout after move = %s", showFanouts(efs[len(efs)-1:]))
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a2's messages never went to us after the move")
		}
	}
}

// deliverStream opens a Deliver stream to n as region from.
func deliverStream(t *testing.T, n *node, from string) roamingv1.BusinessService_DeliverClient {
	t.Helper()
	conn, err := grpc.NewClient(n.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	ctx = metadata.AppendToOutgoingContext(ctx, resourcepool.RegionMetadataKey, from)
	stream, err := roamingv1.NewBusinessServiceClient(conn).Deliver(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return stream
}

// TestInboundDedup delivers the same (message, recipient) pairs to ap in
// several batches: each pair reaches ap's service center once.
func TestInboundDedup(t *testing.T) {
	nodes := startNodes(t, "ap", "eu")
	ap := nodes["ap"]
	a1 := createUser(t, ap.store, "ap", "")
	a2 := createUser(t, ap.store, "ap", "")
	e1 := ids.New(ids.User)
	gid := ids.New(ids.Group)
	replicate(t, ap.store, "eu", userRec(e1, "eu", "ap"), groupRec(gid, "eu"))
	m1, m2 := message(gid, "m1", 1), message(gid, "m2", 2)
	stream := deliverStream(t, ap, "eu")

	batches := []*roamingv1.DeliverRequest{
		{Items: []*recordv1.Fanout{{Message: m1, Recipients: []string{a1, e1}}}},
		{Items: []*recordv1.Fanout{{Message: m1, Recipients: []string{a1, e1}}}},
		{Items: []*recordv1.Fanout{{Message: m1, Recipients: []string{e1, a1}}}},
		// a2 is new for m1; a1 is not.
		{Items: []*recordv1.Fanout{{Message: m1, Recipients: []string{a1, a2}}}},
		// The same pair twice in one batch, and a new message.
		{Items: []*recordv1.Fanout{
			{Message: m1, Recipients: []string{a2}},
			{Message: m2, Recipients: []string{a1, a1}},
			{Message: m2, Recipients: []string{a1}},
		}},
	}
	for i, b := range batches {
		b.BatchId = uint64(i + 1)
		if err := stream.Send(b); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil || resp.GetBatchId() != b.GetBatchId() {
			t.Fatalf("ack of batch %d = %v, %v", b.GetBatchId(), resp, err)
		}
	}
	got := ap.inbox.snapshot()
	type pair struct{ body, user string }
	var pairs []pair
	for _, f := range got {
		for _, u := range f.GetRecipients() {
			pairs = append(pairs, pair{f.GetMessage().GetBody(), u})
		}
	}
	want := []pair{{"m1", a1}, {"m1", e1}, {"m1", a2}, {"m2", a1}}
	if len(pairs) != len(want) {
		t.Fatalf("ap's service center got %s; want each of %v once", showFanouts(got), want)
	}
	for _, w := range want {
		if n := len(slices.DeleteFunc(slices.Clone(pairs), func(p pair) bool { return p != w })); n != 1 {
			t.Errorf("pair %v delivered %d times: %s", w, n, showFanouts(got))
		}
	}
}

// TestInboundForwardsToLocation delivers to ap a message for two ap users,
// one of them roaming in us: ap forwards that one to us and keeps the
// other. A user homed elsewhere is never forwarded by ap, whatever ap's
// copy of the directory says.
func TestInboundForwardsToLocation(t *testing.T) {
	nodes := startNodes(t, "ap", "eu", "us")
	ap := nodes["ap"]
	home := createUser(t, ap.store, "ap", "")
	roamer := createUser(t, ap.store, "ap", "us")
	visitor := ids.New(ids.User) // homed in eu, placed in us by ap's copy
	gid := ids.New(ids.Group)
	replicate(t, ap.store, "eu", userRec(visitor, "eu", "us"), groupRec(gid, "eu"))
	// us knows the roamer is ap's, so it takes what ap forwards.
	replicate(t, nodes["us"].store, "ap", userRec(roamer, "ap", "us"))

	// eu's directory is behind: it thinks all three are at ap.
	nodes["eu"].out["ap"].Enqueue(&recordv1.Fanout{Message: message(gid, "m1", 1), Recipients: []string{home, roamer, visitor}}, nil)
	fs := ap.inbox.waitFor(t, "m1 at ap", has("m1"))
	if len(fs) != 1 || !sameSet(fs[0].GetRecipients(), []string{home, visitor}) {
		t.Errorf("ap's service center got %s; want m1 to home and visitor", showFanouts(fs))
	}
	fs = nodes["us"].inbox.waitFor(t, "m1 at us", has("m1"))
	if len(fs) != 1 || !sameSet(fs[0].GetRecipients(), []string{roamer}) {
		t.Errorf("us got %s; want m1 to the roamer", showFanouts(fs))
	}

	// Sent again (a retry after a broken stream), it is not forwarded
	// twice: a sentinel behind it shows us has seen all it will.
	again := &recordv1.Fanout{Message: fs[0].GetMessage(), Recipients: []string{roamer}}
	nodes["eu"].out["ap"].Enqueue(again, nil)
	nodes["eu"].out["ap"].Enqueue(&recordv1.Fanout{Message: message(gid, "sentinel", 2), Recipients: []string{roamer}}, nil)
	fs = nodes["us"].inbox.waitFor(t, "sentinel at us", has("sentinel"))
	if len(fs) != 2 {
		t.Errorf("us got %s; want m1 once, then the sentinel", showFanouts(fs))
	}
	if fs := nodes["eu"].inbox.snapshot(); len(fs) != 0 {
		t.Errorf("eu got %s; want nothing", showFanouts(fs))
	}
}

// TestInboundRefusesForgeries has eu deliver to ap what eu has no standing
// to deliver: messages of a group eu does not home, to users eu does not
// home. ap's service center gets none of it, and the rest of the batch.
func TestInboundRefusesForgeries(t *testing.T) {
	nodes := startNodes(t, "ap", "eu", "us")
	ap := nodes["ap"]
	local := createUser(t, ap.store, "ap", "")
	euUser := ids.New(ids.User)
	usGroup, euGroup := ids.New(ids.Group), ids.New(ids.Group)
	replicate(t, ap.store, "eu", userRec(euUser, "eu", "ap"), groupRec(euGroup, "eu"))
	replicate(t, ap.store, "us", groupRec(usGroup, "us"))
	unknown := ids.New(ids.Group)

	stream := deliverStream(t, ap, "eu")
	req := &roamingv1.DeliverRequest{BatchId: 1, Items: []*recordv1.Fanout{
		{Message: message(usGroup, "us group to ap user", 1), Recipients: []string{local}},
		{Message: message(unknown, "unknown group to ap user", 1), Recipients: []string{local}},
		{Message: message(usGroup, "us group to eu user", 2), Recipients: []string{euUser}},
		{Message: message(euGroup, "eu group to ap user", 1), Recipients: []string{local}},
	}}
	if err := stream.Send(req); err != nil {
		t.Fatal(err)
	}
	if resp, err := stream.Recv(); err != nil || resp.GetBatchId() != 1 {
		t.Fatalf("ack = %v, %v", resp, err)
	}
	got := ap.inbox.snapshot()
	var bodies []string
	for _, f := range got {
		bodies = append(bodies, f.GetMessage().GetBody())
	}
	if want := []string{"us group to eu user", "eu group to ap user"}; !slices.Equal(bodies, want) {
		t.Errorf("ap's service center got %s; want only %q", showFanouts(got), want)
	}
	if n := ap.router.Refused(); n != 2 {
		t.Errorf("Refused() = %d, want 2", n)
	}
}
