package business_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	recordv1 "github.com/roamfed/roamfed/api/record/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/internal/ids"
	"github.com/roamfed/roamfed/internal/password"
	"github.com/roamfed/roamfed/internal/stack"
	"github.com/roamfed/roamfed/internal/testnet"
	"github.com/roamfed/roamfed/regions"
	"github.com/roamfed/roamfed/roaming/business"
	"github.com/roamfed/roamfed/roaming/resourcepool"
	"github.com/roamfed/roamfed/servicecenter/datacenter"
)

// peerRegion is a real region, eu, that the test talks to as region ap
// through its own Peers. It can be stopped and started again on the same
// data and addresses.
type peerRegion struct {
	t       *testing.T
	cfg     stack.Config
	apAddr  string // ap's roaming address: in the federation, held dead
	euAddr  string // eu's roaming address
	mu      sync.Mutex
	current *stack.Stack // nil while stopped
}

// stopWithin calls stop and fails the test if it has not returned in 10s:
// a sender stuck on a dead stream never returns.
func stopWithin(t *testing.T, what string, stop func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		stop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Errorf("%s did not stop within 10s", what)
	}
}

func startPeerRegion(t *testing.T) *peerRegion {
	t.Helper()
	// ap's address is held dead for the whole test: were it only free,
	// a parallel test's region could take the port and answer as ap,
	// replacing the directory this test gave eu.
	addrs := append([]string{testnet.DeadAddr(t)}, testnet.FreeAddrs(t, 2)...)
	fed, err := regions.Parse("test.yaml", fmt.Appendf(nil,
		"federation: test\nregions:\n  - name: ap\n    roaming_addr: %s\n    client_addr: 127.0.0.1:1\n  - name: eu\n    roaming_addr: %s\n    client_addr: %s\n",
		addrs[0], addrs[1], addrs[2]))
	if err != nil {
		t.Fatal(err)
	}
	p := &peerRegion{t: t, apAddr: addrs[0], euAddr: addrs[1], cfg: stack.Config{
		Region:         "eu",
		DataDir:        t.TempDir(),
		ClientAddr:     addrs[2],
		Federation:     fed,
		Password:       password.Params{Memory: 64, Time: 1, Threads: 1},
		ReplicateEvery: 50 * time.Millisecond,
	}}
	p.start()
	t.Cleanup(p.stop)
	return p
}

func (p *peerRegion) start() *stack.Stack {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.current != nil {
		p.t.Fatal("eu is already running")
	}
	// The addresses were free a moment ago, or were eu's own; a port
	// still held by the stopped stack's closing sockets may need a moment.
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := stack.Start(p.cfg)
		if err == nil {
			p.current = st
			return st
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("start eu: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop shuts eu down; it does nothing when eu is stopped.
func (p *peerRegion) stop() {
	p.mu.Lock()
	st := p.current
	p.current = nil
	p.mu.Unlock()
	if st == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := st.Shutdown(ctx); err != nil {
		p.t.Errorf("shutdown eu: %v", err)
	}
}

func (p *peerRegion) stack() *stack.Stack {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.current
}

// apPeers is region ap's connection to eu, with a window of one batch of
// at most four messages, so that a stream always has work waiting on it.
func (p *peerRegion) apPeers(t *testing.T, opts ...grpc.DialOption) *resourcepool.Peers {
	t.Helper()
	peers, err := resourcepool.NewPeers(resourcepool.Config{
		Self:        "ap",
		Addrs:       map[string]string{"eu": p.euAddr},
		Limits:      resourcepool.Limits{WindowBatches: 1, MaxBatchMessages: 4, CallTimeout: 5 * time.Second},
		DialOptions: opts,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = peers.Close() })
	return peers
}

// euGroup creates a group homed in eu with one member, homed in ap, whom
// eu knows from ap's directory.
func euGroup(t *testing.T, st *stack.Stack) (groupID, senderID string) {
	t.Helper()
	senderID = ids.New(ids.User)
	rec := &roamingv1.DirectoryRecord{Kind: roamingv1.DirectoryKind_DIRECTORY_KIND_USER, Key: senderID, HomeRegion: "ap", UserId: senderID, Minor: 1}
	if err := st.Store().ApplyDirectory("ap", []*roamingv1.BatchUpdate{{
		Version: &roamingv1.BatchVersion{Batch: datacenter.DirectoryBatch(rec.GetKind(), rec.GetKey()), Major: 1, Minor: 1},
		Full:    true, Records: []*roamingv1.DirectoryRecord{rec},
	}}); err != nil {
		t.Fatal(err)
	}
	g := &recordv1.Group{
		Id: ids.New(ids.Group), Name: "lobby", HomeRegion: "eu", Version: 1,
		Members: []*recordv1.Member{{UserId: senderID, Name: "sender", HomeRegion: "ap"}},
	}
	if err := st.Store().CreateGroup(g); err != nil {
		t.Fatal(err)
	}
	return g.GetId(), senderID
}

// apGroup makes eu know a group homed in ap, whose messages ap may then
// deliver to eu.
func apGroup(t *testing.T, st *stack.Stack) string {
	t.Helper()
	rec := &roamingv1.DirectoryRecord{Kind: roamingv1.DirectoryKind_DIRECTORY_KIND_GROUP, Key: ids.New(ids.Group), HomeRegion: "ap", Minor: 1}
	if err := st.Store().ApplyDirectory("ap", []*roamingv1.BatchUpdate{{
		Version: &roamingv1.BatchVersion{Batch: datacenter.DirectoryBatch(rec.GetKind(), rec.GetKey()), Major: 1, Minor: 1},
		Records: []*roamingv1.DirectoryRecord{rec},
	}}); err != nil {
		t.Fatal(err)
	}
	return rec.GetKey()
}

func submission(groupID, senderID string, i int) *recordv1.Message {
	return &recordv1.Message{
		GroupId: groupID, MessageId: ids.New(ids.Message), SenderId: senderID,
		ClientMsgId: fmt.Sprint("c", i), Body: fmt.Sprint("body ", i), SentAt: timestamppb.Now(), OriginRegion: "ap",
	}
}

// checkLog requires eu's log of the group to be 1..n with no gaps, each
// client_msg_id once, and each committed seq to hold its message.
func checkLog(t *testing.T, st *stack.Stack, groupID string, n int, committed map[string]uint64) {
	t.Helper()
	msgs, more, err := st.Store().History(groupID, 0, n+100)
	if err != nil || more {
		t.Fatalf("History: %v (more %v)", err, more)
	}
	if len(msgs) != n {
		t.Errorf("eu's log holds %d messages, want %d", len(msgs), n)
	}
	seen := map[string]uint64{}
	for i, m := range msgs {
		if m.GetSeq() != uint64(i+1) {
			t.Fatalf("log position %d holds seq %d: a gap", i+1, m.GetSeq())
		}
		if prev, dup := seen[m.GetClientMsgId()]; dup {
			t.Errorf("client_msg_id %s stored twice: seq %d and %d", m.GetClientMsgId(), prev, m.GetSeq())
		}
		seen[m.GetClientMsgId()] = m.GetSeq()
	}
	for cid, seq := range committed {
		if seen[cid] != seq {
			t.Errorf("%s was answered committed at seq %d; the log has it at %d", cid, seq, seen[cid])
		}
	}
}

// TestSubmitterPeerRestart stops the home region while submits stream to
// it: every pending call ends promptly, committed or UNAVAILABLE. The home
// started again on the same data and address takes the resubmissions, and
// nothing is stored twice.
func TestSubmitterPeerRestart(t *testing.T) {
	eu := startPeerRegion(t)
	gid, sender := euGroup(t, eu.stack())
	sub := business.NewSubmitter("eu", eu.apPeers(t), slog.New(slog.DiscardHandler))
	t.Cleanup(func() { stopWithin(t, "submitter", sub.Stop) })

	committed := map[string]uint64{}
	for i := 1; i <= 5; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		res, err := sub.Submit(ctx, submission(gid, sender, i))
		cancel()
		if err != nil || res.Message.GetSeq() != uint64(i) {
			t.Fatalf("submit %d: seq %d, %v", i, res.Message.GetSeq(), err)
		}
		committed[fmt.Sprint("c", i)] = uint64(i)
	}

	const n = 200
	type outcome struct {
		i   int
		seq uint64
		err error
	}
	outcomes := make(chan outcome, n)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i := 6; i < 6+n; i++ {
		go func() {
			res, err := sub.Submit(ctx, submission(gid, sender, i))
			outcomes <- outcome{i, res.Message.GetSeq(), err}
		}()
	}
	// Stop eu while the stream is busy.
	deadline := time.Now().Add(30 * time.Second)
	for {
		last, err := eu.stack().Store().LastSeq(gid)
		if err != nil {
			t.Fatal(err)
		}
		if last >= 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("eu committed only %d messages in 30s", last)
		}
		time.Sleep(5 * time.Millisecond)
	}
	eu.stop()
	stoppedAt := time.Now()

	var failed []int
	limit := time.NewTimer(30 * time.Second)
	defer limit.Stop()
	for range n {
		select {
		case o := <-outcomes:
			switch {
			case o.err == nil:
				committed[fmt.Sprint("c", o.i)] = o.seq
			case status.Code(o.err) == codes.Unavailable:
				failed = append(failed, o.i)
			default:
				t.Errorf("submit %d: %v; want committed or UNAVAILABLE", o.i, o.err)
				failed = append(failed, o.i)
			}
		case <-limit.C:
			t.Fatalf("%d submit calls still pending 30s after eu stopped", n-len(failed)-(len(committed)-5))
		}
	}
	t.Logf("all calls answered %v after eu stopped: %d committed, %d unavailable", time.Since(stoppedAt).Round(time.Millisecond), len(committed), len(failed))
	if len(failed) == 0 {
		t.Log("eu stopped after every submit was committed; the restart is not exercised")
	}

	st := eu.start()
	for _, i := range failed {
		deadline := time.Now().Add(60 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			res, err := sub.Submit(ctx, submission(gid, sender, i))
			cancel()
			if err == nil {
				committed[fmt.Sprint("c", i)] = res.Message.GetSeq()
				break
			}
			if c := status.Code(err); c != codes.Unavailable && c != codes.DeadlineExceeded {
				t.Fatalf("resubmit %d: %v", i, err)
			}
			if time.Now().After(deadline) {
				t.Fatalf("resubmit %d: still failing after 60s: %v", i, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	checkLog(t, st, gid, n+5, committed)
}

// session is a user's session at eu: the messages it is delivered, by
// body, acknowledged as they come.
type session struct {
	mu   sync.Mutex
	got  map[string]bool
	poke chan struct{}
}

// openSession logs name in at eu and opens a session.
func openSession(t *testing.T, st *stack.Stack, name string, register bool) (*session, string) {
	t.Helper()
	conn, err := grpc.NewClient(st.ClientAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := clientv1.NewClientServiceClient(conn)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if register {
		if _, err := c.Register(ctx, &clientv1.RegisterRequest{Username: name, Password: "password-" + name}); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := c.Login(ctx, &clientv1.LoginRequest{Username: name, Password: "password-" + name})
	if err != nil {
		t.Fatal(err)
	}
	stream, err := c.Session(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+resp.GetToken()))
	if err != nil {
		t.Fatal(err)
	}
	if first, err := stream.Recv(); err != nil || first.GetReady() == nil {
		t.Fatalf("first session frame %v, %v; want Ready", first, err)
	}
	s := &session{got: map[string]bool{}, poke: make(chan struct{}, 1)}
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				return
			}
			d := r.GetDelivery()
			if d == nil {
				continue
			}
			s.mu.Lock()
			s.got[d.GetMessage().GetBody()] = true
			s.mu.Unlock()
			select {
			case s.poke <- struct{}{}:
			default:
			}
			_ = stream.Send(&clientv1.SessionRequest{Kind: &clientv1.SessionRequest_Ack{Ack: &clientv1.Ack{DeliveryIds: []uint64{d.GetDeliveryId()}}}})
		}
	}()
	return s, resp.GetUserId()
}

// waitAll waits until the session has been delivered every body.
func (s *session) waitAll(t *testing.T, bodies []string, within time.Duration) {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		var missing []string
		for _, b := range bodies {
			if !s.got[b] {
				missing = append(missing, b)
			}
		}
		s.mu.Unlock()
		if len(missing) == 0 {
			return
		}
		select {
		case <-s.poke:
		case <-deadline.C:
			t.Fatalf("%d of %d deliveries missing after %v, first %q", len(missing), len(bodies), within, missing[0])
		}
	}
}

// TestDelivererPeerRestart stops the region a Deliverer sends to while
// batches are in flight, and starts it again on the same data and
// address: deliveries reach it again.
func TestDelivererPeerRestart(t *testing.T) {
	eu := startPeerRegion(t)
	bob, bobID := openSession(t, eu.stack(), "bob", true)
	d := business.NewDeliverer("eu", eu.apPeers(t), slog.New(slog.DiscardHandler))
	t.Cleanup(func() { stopWithin(t, "deliverer", d.Stop) })
	gid := apGroup(t, eu.stack())
	send := func(from, to int) []string {
		var bodies []string
		for i := from; i < to; i++ {
			m := &recordv1.Message{GroupId: gid, Seq: uint64(i), MessageId: ids.New(ids.Message), SenderId: "u_x",
				Body: fmt.Sprint("m", i), SentAt: timestamppb.Now(), CommittedAt: timestamppb.Now(), OriginRegion: "ap"}
			d.Enqueue(&recordv1.Fanout{Message: m, Recipients: []string{bobID}}, nil)
			bodies = append(bodies, m.GetBody())
		}
		return bodies
	}
	bob.waitAll(t, send(1, 21), 20*time.Second)

	// Stop eu with deliveries queued and in flight.
	send(21, 500)
	eu.stop()
	eu.start()
	bob, _ = openSession(t, eu.stack(), "bob", false)
	bob.waitAll(t, send(500, 520), 30*time.Second)
}

// breaker dials TCP and can break every connection it made at once, as a
// network failure that resets them would.
type breaker struct {
	mu    sync.Mutex
	conns []net.Conn
}

func (b *breaker) dialOption() grpc.DialOption {
	return grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			b.mu.Lock()
			b.conns = append(b.conns, c)
			b.mu.Unlock()
		}
		return c, err
	})
}

// breakAll closes every connection made so far; new ones work.
func (b *breaker) breakAll() {
	b.mu.Lock()
	conns := b.conns
	b.conns = nil
	b.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// TestSubmitterLinkBreak breaks the connection under a Submit stream while
// a batch is in flight and the next waits for window room: the calls end
// committed or UNAVAILABLE, and the submitter goes on on a new connection.
func TestSubmitterLinkBreak(t *testing.T) {
	eu := startPeerRegion(t)
	gid, sender := euGroup(t, eu.stack())
	var br breaker
	sub := business.NewSubmitter("eu", eu.apPeers(t, br.dialOption()), slog.New(slog.DiscardHandler))
	t.Cleanup(func() { stopWithin(t, "submitter", sub.Stop) })

	committed := map[string]uint64{}
	var failed []int
	for round := range 3 {
		const n = 100
		type outcome struct {
			i   int
			seq uint64
			err error
		}
		outcomes := make(chan outcome, n)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		first := 1 + round*n
		for i := first; i < first+n; i++ {
			go func() {
				res, err := sub.Submit(ctx, submission(gid, sender, i))
				outcomes <- outcome{i, res.Message.GetSeq(), err}
			}()
		}
		// Break the link once the stream is busy.
		for {
			last, err := eu.stack().Store().LastSeq(gid)
			if err != nil {
				t.Fatal(err)
			}
			if last >= uint64(first+10) {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("round %d: eu committed only %d messages", round, last)
			case <-time.After(2 * time.Millisecond):
			}
		}
		br.breakAll()
		limit := time.NewTimer(30 * time.Second)
		for range n {
			select {
			case o := <-outcomes:
				switch {
				case o.err == nil:
					committed[fmt.Sprint("c", o.i)] = o.seq
				case status.Code(o.err) == codes.Unavailable:
					failed = append(failed, o.i)
				default:
					t.Errorf("submit %d: %v; want committed or UNAVAILABLE", o.i, o.err)
					failed = append(failed, o.i)
				}
			case <-limit.C:
				t.Fatalf("round %d: submit calls still pending 30s after the link broke", round)
			}
		}
		limit.Stop()
	}
	t.Logf("%d committed, %d unavailable", len(committed), len(failed))
	for _, i := range failed {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		res, err := sub.Submit(ctx, submission(gid, sender, i))
		cancel()
		if err != nil {
			t.Fatalf("resubmit %d: %v", i, err)
		}
		committed[fmt.Sprint("c", i)] = res.Message.GetSeq()
	}
	checkLog(t, eu.stack(), gid, 300, committed)
}

// TestDelivererLinkBreak breaks the connection under a Deliver stream
// while batches are in flight: the deliverer resends on a new connection,
// and every delivery arrives.
func TestDelivererLinkBreak(t *testing.T) {
	eu := startPeerRegion(t)
	bob, bobID := openSession(t, eu.stack(), "bob", true)
	var br breaker
	d := business.NewDeliverer("eu", eu.apPeers(t, br.dialOption()), slog.New(slog.DiscardHandler))
	t.Cleanup(func() { stopWithin(t, "deliverer", d.Stop) })
	gid := apGroup(t, eu.stack())
	next := 1
	send := func(n int) []string {
		var bodies []string
		for range n {
			m := &recordv1.Message{GroupId: gid, Seq: uint64(next), MessageId: ids.New(ids.Message), SenderId: "u_x",
				Body: fmt.Sprint("m", next), SentAt: timestamppb.Now(), CommittedAt: timestamppb.Now(), OriginRegion: "ap"}
			next++
			d.Enqueue(&recordv1.Fanout{Message: m, Recipients: []string{bobID}}, nil)
			bodies = append(bodies, m.GetBody())
		}
		return bodies
	}
	for range 3 {
		bodies := send(300)
		br.breakAll()
		bob.waitAll(t, bodies, 30*time.Second)
	}
}
