package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	recordv1 "github.com/roamfed/roamfed/api/record/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/internal/clientkit"
	"github.com/roamfed/roamfed/internal/netem"
	"github.com/roamfed/roamfed/roaming/resourcepool"
)

// The transport floor is roambench's load with nothing of roamfed in the
// path but the gRPC hops its flows make. --regions bare gRPC servers on
// loopback stand for the regions; user u is at region u mod regions and
// group g's home is region g mod regions, so a group's members are spread
// over the regions as in the real run. A send goes to the sender's region.
// When the group's home is elsewhere it travels on that region's Submit
// stream to the home (DESIGN.md flow 4), and the send is answered when the
// home's answer comes back. The home numbers the message, hands it to the
// sessions of its own recipients, and sends one batch per other region that
// has recipients on its Deliver stream there (flow 5); that region hands it
// to its sessions. Sessions batch what is queued into one frame, and clients
// acknowledge each frame in one Ack, as roamfed's do.
//
// The links between regions use mutual TLS, as roamfed's must, unless
// --plaintext-links. Left out is all the rest: storage and fsync, the bus,
// the directory, outboxes, authentication of users, metrics, retries. What the floor sustains on a
// machine is therefore more than any implementation of the design can
// there, with its clients beside it; its latency at a given rate is less.

// floorUserKey is the metadata key that names a floor client's user.
const floorUserKey = "floor-user"

// floorBatch is the most items a floor stream puts in one frame.
const floorBatch = 256

// floorReport is what --transport-floor measured.
type floorReport struct {
	Date      string  `json:"date"`
	Regions   int     `json:"regions"`
	Users     int     `json:"users"`
	Conns     int     `json:"conns"`
	GroupSize int     `json:"group_size"`
	Senders   int     `json:"senders"`
	TargetMsg float64 `json:"target_msg_per_sec,omitempty"`
	// Links is how the links between regions are secured: "mtls" or
	// "plaintext".
	Links     string  `json:"links"`
	DurationS float64 `json:"duration_sec"`
	MsgPerSec float64 `json:"msg_per_sec"`
	DelivPerS float64 `json:"deliveries_per_sec"`
	// SameRegion and CrossRegion are send-to-delivery latencies of the
	// deliveries that arrived in the measured window, by whether the
	// recipient is at the sender's region.
	SameRegion  *latency `json:"same_region"`
	CrossRegion *latency `json:"cross_region"`
	// With a link delay: latency minus the delay of the links crossed
	// (sender's region to home, home to recipient's region), over the
	// deliveries that crossed one or more.
	LinkDelayMs float64  `json:"link_delay_ms,omitempty"`
	Overhead    *latency `json:"overhead,omitempty"`
	Sent        int64    `json:"sent"`
	Enqueued    int64    `json:"enqueued"`
	Delivered   int64    `json:"delivered"`
	Missing     int64    `json:"missing"`
	Machine     machine  `json:"machine"`
}

func (r *floorReport) writeJSON(w io.Writer) error { return writeJSON(w, r) }

func (r *floorReport) writeText(w io.Writer) error {
	load := "as fast as possible"
	if r.TargetMsg > 0 {
		load = fmt.Sprintf("target %.0f msg/s", r.TargetMsg)
	}
	row := func(name string, l *latency) string {
		return fmt.Sprintf("  %-14s %10d %9.3f %9.3f %9.3f %9.3f", name, l.Count, l.P50Ms, l.P99Ms, l.P999Ms, l.MaxMs)
	}
	rows := row("same-region", r.SameRegion) + "\n" + row("cross-region", r.CrossRegion)
	if r.Overhead != nil {
		load += fmt.Sprintf(", link delay %gms one way", r.LinkDelayMs)
		rows += "\n" + row("overhead", r.Overhead) + "  (latency minus links crossed × delay)"
	}
	_, err := fmt.Fprintf(w, `roambench %s: transport floor: %d bare gRPC server(s) on loopback, only the hops of the design's flows
load: %s, %d users on %d conns, groups of %d, %d senders, %.1fs measured; links %s

latency (ms)          count       p50       p99     p99.9       max
%s

throughput  %.0f msg/s, %.0f deliveries/s (every delivery acknowledged)
deliveries  %d messages sent, %d deliveries handed to sessions, %d received, %d missing
machine     %s
`, r.Date, r.Regions, load, r.Users, r.Conns, r.GroupSize, r.Senders, r.DurationS, r.Links, rows,
		r.MsgPerSec, r.DelivPerS, r.Sent, r.Enqueued, r.Delivered, r.Missing, r.Machine)
	return err
}

// floorFed is the floor's regions and what they share: the sequence
// numbers, the delivery ids and the counts.
type floorFed struct {
	regions   []*floorRegion
	addrs     []string // client address of each region
	groupSize int
	users     int
	ready     chan struct{} // closed when every user has a session
	// linkErrs has the first error of a link that failed before stop.
	linkErrs chan error
	opened   atomic.Int64
	seq      atomic.Uint64
	nextID   atomic.Uint64
	// enqueued counts deliveries handed to sessions.
	enqueued atomic.Int64
}

func (f *floorFed) regionOf(user int) int   { return user % len(f.regions) }
func (f *floorFed) homeOf(group int) int    { return group % len(f.regions) }
func (f *floorFed) regionAddr(i int) string { return f.addrs[i] }

// floorRegion is one bare server: the client API for its users, and the
// Submit and Deliver streams to and from the others.
type floorRegion struct {
	clientv1.UnimplementedClientServiceServer
	roamingv1.UnimplementedBusinessServiceServer
	fed *floorFed
	idx int

	mu       sync.Mutex
	sessions map[int]chan *clientv1.Delivery
	// submit[h] and deliver[r] are this region's streams to region h and
	// r; nil for itself.
	submit  []*floorLink[*recordv1.Message]
	deliver []*floorLink[*recordv1.Fanout]
}

func floorUser(ctx context.Context) (int, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	v := md.Get(floorUserKey)
	if len(v) != 1 {
		return 0, status.Error(codes.Unauthenticated, "no "+floorUserKey)
	}
	u, err := strconv.Atoi(v[0])
	if err != nil || u < 0 {
		return 0, status.Errorf(codes.InvalidArgument, "bad %s %q", floorUserKey, v[0])
	}
	return u, nil
}

func floorGroup(id string) (int, error) {
	g, err := strconv.Atoi(strings.TrimPrefix(id, "g"))
	if err != nil || g < 0 {
		return 0, status.Errorf(codes.NotFound, "no group %q", id)
	}
	return g, nil
}

func (r *floorRegion) SendMessage(ctx context.Context, req *clientv1.SendMessageRequest) (*clientv1.SendMessageResponse, error) {
	u, err := floorUser(ctx)
	if err != nil {
		return nil, err
	}
	g, err := floorGroup(req.GetGroupId())
	if err != nil {
		return nil, err
	}
	msg := &recordv1.Message{
		GroupId: req.GetGroupId(), MessageId: req.GetClientMsgId(), SenderId: strconv.Itoa(u),
		ClientMsgId: req.GetClientMsgId(), Body: req.GetBody(), SentAt: timestamppb.Now(),
		OriginRegion: strconv.Itoa(r.idx),
	}
	home := r.fed.homeOf(g)
	if home == r.idx {
		if err := r.commit(ctx, g, msg); err != nil {
			return nil, err
		}
		return &clientv1.SendMessageResponse{Seq: msg.GetSeq(), State: clientv1.DeliveryState_DELIVERY_STATE_COMMITTED}, nil
	}
	seq, err := r.submit[home].call(ctx, msg)
	if err != nil {
		return nil, err
	}
	return &clientv1.SendMessageResponse{Seq: seq, State: clientv1.DeliveryState_DELIVERY_STATE_COMMITTED}, nil
}

// commit numbers msg of group g at its home and sends it on: to this
// region's recipients' sessions, and in one item per other region with
// recipients to that region's Deliver stream.
func (r *floorRegion) commit(ctx context.Context, g int, msg *recordv1.Message) error {
	msg.Seq = r.fed.seq.Add(1)
	msg.CommittedAt = timestamppb.Now()
	byRegion := make([][]string, len(r.fed.regions))
	for m := g * r.fed.groupSize; m < (g+1)*r.fed.groupSize; m++ {
		at := r.fed.regionOf(m)
		byRegion[at] = append(byRegion[at], strconv.Itoa(m))
	}
	for at, recipients := range byRegion {
		switch {
		case len(recipients) == 0:
		case at == r.idx:
			if err := r.handOut(ctx, msg, recipients); err != nil {
				return err
			}
		default:
			if err := r.deliver[at].enqueue(ctx, &recordv1.Fanout{Message: msg, Recipients: recipients}); err != nil {
				return err
			}
		}
	}
	return nil
}

// handOut queues msg on the sessions of recipients, all of them users at
// this region.
func (r *floorRegion) handOut(ctx context.Context, msg *recordv1.Message, recipients []string) error {
	cm := &clientv1.Message{
		GroupId: msg.GetGroupId(), Seq: msg.GetSeq(), MessageId: msg.GetMessageId(), SenderId: msg.GetSenderId(),
		ClientMsgId: msg.GetClientMsgId(), Body: msg.GetBody(), CommittedAt: msg.GetCommittedAt(),
	}
	for _, id := range recipients {
		u, err := strconv.Atoi(id)
		if err != nil || r.fed.regionOf(u) != r.idx {
			return status.Errorf(codes.FailedPrecondition, "recipient %q is not at region %d", id, r.idx)
		}
		r.mu.Lock()
		out, ok := r.sessions[u]
		r.mu.Unlock()
		if !ok {
			continue
		}
		d := &clientv1.Delivery{DeliveryId: r.fed.nextID.Add(1), Message: cm, Attempt: 1}
		// Counted before it can arrive, so that no more arrive than were
		// counted.
		r.fed.enqueued.Add(1)
		select {
		case out <- d:
		case <-ctx.Done():
			r.fed.enqueued.Add(-1)
			return status.FromContextError(ctx.Err()).Err()
		}
	}
	return nil
}

// Submit takes messages for groups homed here from another region and
// answers each batch once its messages are numbered and sent on.
func (r *floorRegion) Submit(stream grpc.BidiStreamingServer[roamingv1.SubmitRequest, roamingv1.SubmitResponse]) error {
	for {
		req, err := stream.Recv()
		if err != nil {
			return ignoreEOF(err)
		}
		resp := &roamingv1.SubmitResponse{BatchId: req.GetBatchId(), Results: make([]*roamingv1.SubmitResult, 0, len(req.GetMessages()))}
		for _, m := range req.GetMessages() {
			g, err := floorGroup(m.GetGroupId())
			if err == nil && r.fed.homeOf(g) != r.idx {
				err = status.Errorf(codes.FailedPrecondition, "group %q is not homed at region %d", m.GetGroupId(), r.idx)
			}
			if err == nil {
				err = r.commit(stream.Context(), g, m)
			}
			if err != nil {
				return err
			}
			resp.Results = append(resp.Results, &roamingv1.SubmitResult{MessageId: m.GetMessageId(), Seq: m.GetSeq()})
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

// Deliver takes committed messages for this region's users from their
// group's home and acknowledges each batch once it is handed out.
func (r *floorRegion) Deliver(stream grpc.BidiStreamingServer[roamingv1.DeliverRequest, roamingv1.DeliverResponse]) error {
	for {
		req, err := stream.Recv()
		if err != nil {
			return ignoreEOF(err)
		}
		for _, it := range req.GetItems() {
			if err := r.handOut(stream.Context(), it.GetMessage(), it.GetRecipients()); err != nil {
				return err
			}
		}
		if err := stream.Send(&roamingv1.DeliverResponse{BatchId: req.GetBatchId()}); err != nil {
			return err
		}
	}
}

func ignoreEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

func (r *floorRegion) Session(stream clientv1.ClientService_SessionServer) error {
	u, err := floorUser(stream.Context())
	if err != nil {
		return err
	}
	if r.fed.regionOf(u) != r.idx {
		return status.Errorf(codes.FailedPrecondition, "user %d is not at region %d", u, r.idx)
	}
	out := make(chan *clientv1.Delivery, 4096)
	r.mu.Lock()
	if _, dup := r.sessions[u]; dup {
		r.mu.Unlock()
		return status.Errorf(codes.AlreadyExists, "user %d has a session", u)
	}
	r.sessions[u] = out
	r.mu.Unlock()
	if r.fed.opened.Add(1) == int64(r.fed.users) {
		close(r.fed.ready)
	}
	errc := make(chan error, 1)
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				errc <- err
				return
			}
		}
	}()
	for {
		var first *clientv1.Delivery
		select {
		case first = <-out:
		case err := <-errc:
			return ignoreEOF(err)
		}
		batch := drainQueued(out, first)
		var resp *clientv1.SessionResponse
		if len(batch) == 1 {
			resp = &clientv1.SessionResponse{Kind: &clientv1.SessionResponse_Delivery{Delivery: first}}
		} else {
			resp = &clientv1.SessionResponse{Kind: &clientv1.SessionResponse_Deliveries{Deliveries: &clientv1.Deliveries{Deliveries: batch}}}
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

// drainQueued returns first and whatever else is queued on ch, up to floorBatch.
func drainQueued[T any](ch <-chan T, first T) []T {
	batch := []T{first}
	for len(batch) < floorBatch {
		select {
		case v := <-ch:
			batch = append(batch, v)
		default:
			return batch
		}
	}
	return batch
}

// floorLink is one region's stream to another: a sender that puts what
// was queued meanwhile in one request, and a reader of the answers that
// wakes whoever waits for an item of the answered batch.
type floorLink[T any] struct {
	queue chan floorItem[T]
	mu    sync.Mutex
	// waiting holds, per unanswered batch, its items' answer channels
	// (nil for an item no one waits for).
	waiting map[uint64][]chan uint64
}

type floorItem[T any] struct {
	v    T
	done chan uint64 // receives the item's sequence number
}

func newFloorLink[T any]() *floorLink[T] {
	return &floorLink[T]{queue: make(chan floorItem[T], 4096), waiting: make(map[uint64][]chan uint64)}
}

// enqueue queues v and does not wait for its answer.
func (l *floorLink[T]) enqueue(ctx context.Context, v T) error {
	select {
	case l.queue <- floorItem[T]{v: v}:
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
}

// call queues v and returns the sequence number its answer carries.
func (l *floorLink[T]) call(ctx context.Context, v T) (uint64, error) {
	done := make(chan uint64, 1)
	select {
	case l.queue <- floorItem[T]{v: v, done: done}:
	case <-ctx.Done():
		return 0, status.FromContextError(ctx.Err()).Err()
	}
	select {
	case seq := <-done:
		return seq, nil
	case <-ctx.Done():
		return 0, status.FromContextError(ctx.Err()).Err()
	}
}

// runFloorLink sends l's batches on stream until ctx ends or the stream
// fails; stream must end with ctx. request makes a request of a batch;
// answered reads an answer's batch id and the sequence number of each of
// its items (nil when it has none).
func runFloorLink[T, Req, Resp any](ctx context.Context, l *floorLink[T], stream grpc.BidiStreamingClient[Req, Resp],
	request func(id uint64, vs []T) *Req, answered func(*Resp) (uint64, []uint64)) error {
	errc := make(chan error, 1)
	recvDone := make(chan struct{})
	// The stream ends with ctx or with a failed Send, and so does Recv.
	defer func() { <-recvDone }()
	go func() {
		defer close(recvDone)
		for {
			resp, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			id, seqs := answered(resp)
			l.mu.Lock()
			dones := l.waiting[id]
			delete(l.waiting, id)
			l.mu.Unlock()
			for i, done := range dones {
				if done != nil && i < len(seqs) {
					done <- seqs[i]
				}
			}
		}
	}()
	var id uint64
	for {
		var first floorItem[T]
		select {
		case first = <-l.queue:
		case err := <-errc:
			return err
		case <-ctx.Done():
			return nil
		}
		items := drainQueued(l.queue, first)
		vs := make([]T, len(items))
		dones := make([]chan uint64, len(items))
		for i, it := range items {
			vs[i], dones[i] = it.v, it.done
		}
		id++
		l.mu.Lock()
		l.waiting[id] = dones
		l.mu.Unlock()
		if err := stream.Send(request(id, vs)); err != nil {
			return err
		}
	}
}

// floorLatency collects send-to-delivery latencies, in shards to keep the
// receivers from contending.
type floorLatency struct {
	shards [16]struct {
		mu                     sync.Mutex
		same, across, overhead *hdrhistogram.Histogram
	}
	fed      *floorFed
	delay    time.Duration // one way, on every link between regions
	base     time.Time
	from, to atomic.Int64 // the measured window, as nanoseconds since base
}

func newFloorLatency(fed *floorFed, delay time.Duration) *floorLatency {
	l := &floorLatency{fed: fed, delay: delay, base: time.Now()}
	for i := range l.shards {
		l.shards[i].same = hdrhistogram.New(histMin, histMax, histDigits)
		l.shards[i].across = hdrhistogram.New(histMin, histMax, histDigits)
		l.shards[i].overhead = hdrhistogram.New(histMin, histMax, histDigits)
	}
	l.from.Store(-1)
	l.to.Store(-1)
	return l
}

func (l *floorLatency) now() time.Duration { return time.Since(l.base) }

// record notes d's latency for recipient user, if it arrived in the
// measured window.
func (l *floorLatency) record(user int, d *clientv1.Delivery) {
	now := l.now()
	m := d.GetMessage()
	sent, ok := decodeBody(m.GetBody())
	if !ok || int64(now) < l.from.Load() || (l.to.Load() >= 0 && int64(now) >= l.to.Load()) {
		return
	}
	sender, err1 := strconv.Atoi(m.GetSenderId())
	g, err2 := floorGroup(m.GetGroupId())
	if err1 != nil || err2 != nil {
		return
	}
	from, home, to := l.fed.regionOf(sender), l.fed.homeOf(g), l.fed.regionOf(user)
	links := 0
	if from != home {
		links++
	}
	if home != to {
		links++
	}
	s := &l.shards[user%len(l.shards)]
	h := s.same
	if from != to {
		h = s.across
	}
	s.mu.Lock()
	record(h, now-sent)
	if links > 0 {
		record(s.overhead, now-sent-time.Duration(links)*l.delay)
	}
	s.mu.Unlock()
}

// summaries returns the latencies recorded, and the overhead when links
// were delayed.
func (l *floorLatency) summaries() (same, across, overhead *latency) {
	hs, ha, ho := hdrhistogram.New(histMin, histMax, histDigits), hdrhistogram.New(histMin, histMax, histDigits), hdrhistogram.New(histMin, histMax, histDigits)
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		hs.Merge(s.same)
		ha.Merge(s.across)
		ho.Merge(s.overhead)
		s.mu.Unlock()
	}
	if l.delay > 0 {
		overhead = summarize(ho)
	}
	return summarize(hs), summarize(ha), overhead
}

// startFloor starts n floor regions on loopback and connects their links,
// with mutual TLS from a throwaway CA in a temporary directory unless
// plaintext. stop stops them all.
func startFloor(ctx context.Context, n, groupSize, users int, delay time.Duration, plaintext bool) (_ *floorFed, stop func(), err error) {
	fed := &floorFed{groupSize: groupSize, users: users, ready: make(chan struct{}), linkErrs: make(chan error, 1)}
	var stops []func()
	stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	linkCtx, cancelLinks := context.WithCancel(ctx)
	var links sync.WaitGroup
	stops = append(stops, func() { cancelLinks(); links.Wait() })

	// Each region has a client listener and a roaming listener, as
	// regiond does.
	names := regionNames[:n]
	clientLis, roamLis := make([]net.Listener, n), make([]net.Listener, n)
	roamAddrs := make(map[string]string, n)
	for i, name := range names {
		for _, l := range []*net.Listener{&clientLis[i], &roamLis[i]} {
			if *l, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
				return nil, nil, err
			}
			stops = append(stops, func() { _ = (*l).Close() })
		}
		fed.addrs = append(fed.addrs, clientLis[i].Addr().String())
		roamAddrs[name] = roamLis[i].Addr().String()
	}
	serverCreds := func(string) grpc.ServerOption { return grpc.Creds(insecure.NewCredentials()) }
	peerCreds := func(string) grpc.DialOption { return grpc.WithTransportCredentials(insecure.NewCredentials()) }
	if !plaintext && n > 1 {
		dir, err := os.MkdirTemp("", "roambench-floor-")
		if err != nil {
			return nil, nil, err
		}
		stops = append(stops, func() { _ = os.RemoveAll(dir) })
		roam, client := make([]string, n), make([]string, n)
		for i, name := range names {
			roam[i], client[i] = roamAddrs[name], fed.addrs[i]
		}
		rf, err := federationFile(names, roam, client)
		if err != nil {
			return nil, nil, err
		}
		set, err := devCerts(dir, rf)
		if err != nil {
			return nil, nil, err
		}
		serverCreds = func(name string) grpc.ServerOption { return grpc.Creds(set.For(name).ServerCredentials()) }
		peerCreds = func(name string) grpc.DialOption {
			return grpc.WithTransportCredentials(set.For(name).PeerCredentials(roamAddrs))
		}
	}
	for i, name := range names {
		r := &floorRegion{fed: fed, idx: i, sessions: make(map[int]chan *clientv1.Delivery),
			submit: make([]*floorLink[*recordv1.Message], n), deliver: make([]*floorLink[*recordv1.Fanout], n)}
		cs := grpc.NewServer(grpc.InitialWindowSize(clientkit.StreamWindow), grpc.InitialConnWindowSize(clientkit.ConnWindow))
		clientv1.RegisterClientServiceServer(cs, r)
		rs := grpc.NewServer(serverCreds(name), grpc.InitialWindowSize(resourcepool.StreamWindow), grpc.InitialConnWindowSize(resourcepool.ConnWindow))
		roamingv1.RegisterBusinessServiceServer(rs, r)
		for _, srv := range []struct {
			gs  *grpc.Server
			lis net.Listener
		}{{cs, clientLis[i]}, {rs, roamLis[i]}} {
			go func() { _ = srv.gs.Serve(srv.lis) }()
			stops = append(stops, srv.gs.Stop)
		}
		fed.regions = append(fed.regions, r)
	}
	for _, r := range fed.regions {
		// This region's side of its links: each delayed one way by delay,
		// in both directions, as roambench's --link-delay does.
		wan := netem.NewNet()
		for j, peer := range names {
			if j == r.idx {
				continue
			}
			addr := roamAddrs[peer]
			wan.Link(addr).SetDelay(delay)
			cc, err := grpc.NewClient("passthrough:///"+addr, wan.DialOption(), peerCreds(names[r.idx]),
				grpc.WithInitialWindowSize(resourcepool.StreamWindow), grpc.WithInitialConnWindowSize(resourcepool.ConnWindow))
			if err != nil {
				return nil, nil, err
			}
			stops = append(stops, func() { _ = cc.Close() })
			bs := roamingv1.NewBusinessServiceClient(cc)
			sub, err := bs.Submit(linkCtx)
			if err != nil {
				return nil, nil, err
			}
			del, err := bs.Deliver(linkCtx)
			if err != nil {
				return nil, nil, err
			}
			r.submit[j], r.deliver[j] = newFloorLink[*recordv1.Message](), newFloorLink[*recordv1.Fanout]()
			failed := func(err error) {
				if err != nil && linkCtx.Err() == nil {
					select {
					case fed.linkErrs <- fmt.Errorf("link from region %d to %d: %w", r.idx, j, err):
					default:
					}
				}
			}
			links.Go(func() {
				failed(runFloorLink(linkCtx, r.submit[j], sub,
					func(id uint64, ms []*recordv1.Message) *roamingv1.SubmitRequest {
						return &roamingv1.SubmitRequest{BatchId: id, Messages: ms}
					},
					func(resp *roamingv1.SubmitResponse) (uint64, []uint64) {
						seqs := make([]uint64, len(resp.GetResults()))
						for i, res := range resp.GetResults() {
							seqs[i] = res.GetSeq()
						}
						return resp.GetBatchId(), seqs
					}))
			})
			links.Go(func() {
				failed(runFloorLink(linkCtx, r.deliver[j], del,
					func(id uint64, fs []*recordv1.Fanout) *roamingv1.DeliverRequest {
						return &roamingv1.DeliverRequest{BatchId: id, Items: fs}
					},
					func(resp *roamingv1.DeliverResponse) (uint64, []uint64) { return resp.GetBatchId(), nil }))
			})
		}
	}
	return fed, stop, nil
}

// measureFloor runs the transport floor: cfg's regions, users, groups,
// senders and conns per region, at cfg.Rate or as fast as the senders go.
func measureFloor(ctx context.Context, cfg config, progress *progressLine) (_ *floorReport, err error) {
	users := cfg.Groups * cfg.GroupSize
	fed, stopFed, err := startFloor(ctx, cfg.Regions, cfg.GroupSize, users, cfg.LinkDelay, cfg.PlaintextLinks)
	if err != nil {
		return nil, err
	}
	defer stopFed()

	// clients[i] are region i's conns.
	clients := make([][]clientv1.ClientServiceClient, cfg.Regions)
	for i := range clients {
		for range cfg.ConnsPerRegion {
			cc, err := grpc.NewClient(fed.regionAddr(i), append(clientkit.Windows(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
			if err != nil {
				return nil, err
			}
			defer cc.Close()
			clients[i] = append(clients[i], clientv1.NewClientServiceClient(cc))
		}
	}
	clientOf := func(u int) clientv1.ClientServiceClient {
		cs := clients[fed.regionOf(u)]
		return cs[(u/cfg.Regions)%len(cs)]
	}
	userCtx := func(ctx context.Context, u int) context.Context {
		return metadata.AppendToOutgoingContext(ctx, floorUserKey, strconv.Itoa(u))
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	lat := newFloorLatency(fed, cfg.LinkDelay)
	var delivered atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, users+cfg.Senders)
	for u := range users {
		stream, err := clientOf(u).Session(userCtx(runCtx, u))
		if err != nil {
			return nil, err
		}
		wg.Go(func() {
			for {
				r, err := stream.Recv()
				if err != nil {
					if runCtx.Err() == nil {
						errs <- fmt.Errorf("user %d session: %w", u, err)
					}
					return
				}
				ds := r.GetDeliveries().GetDeliveries()
				if d := r.GetDelivery(); d != nil {
					ds = []*clientv1.Delivery{d}
				}
				if len(ds) == 0 {
					continue
				}
				ids := make([]uint64, len(ds))
				for i, d := range ds {
					ids[i] = d.GetDeliveryId()
					lat.record(u, d)
				}
				delivered.Add(int64(len(ds)))
				ack := &clientv1.SessionRequest{Kind: &clientv1.SessionRequest_Ack{Ack: &clientv1.Ack{DeliveryIds: ids}}}
				if err := stream.Send(ack); err != nil {
					return
				}
			}
		})
	}
	defer wg.Wait()
	defer cancel()
	select {
	case <-fed.ready:
	case err := <-errs:
		return nil, err
	case <-time.After(10 * time.Second):
		return nil, errors.New("transport floor: sessions not all open within 10 s")
	case <-ctx.Done():
		return nil, ctx.Err()
	}

	var sent, sendSeq atomic.Int64
	sendCtx, stopSending := context.WithCancel(runCtx)
	var tickets chan struct{}
	var senders sync.WaitGroup
	if cfg.Rate > 0 {
		tickets = make(chan struct{}, cfg.Senders)
		senders.Go(func() { pace(sendCtx, cfg.Rate, tickets) })
	}
	for range cfg.Senders {
		senders.Go(func() {
			for sendCtx.Err() == nil {
				if tickets != nil {
					select {
					case <-tickets:
					case <-sendCtx.Done():
						return
					}
				}
				i := int(sendSeq.Add(1))
				g := i % cfg.Groups
				u := g*cfg.GroupSize + (i/cfg.Groups)%cfg.GroupSize
				req := &clientv1.SendMessageRequest{GroupId: "g" + strconv.Itoa(g), ClientMsgId: strconv.Itoa(i), Body: encodeBody(lat.now(), cfg.BodyBytes)}
				if _, err := clientOf(u).SendMessage(userCtx(sendCtx, u), req); err != nil {
					if sendCtx.Err() == nil {
						errs <- fmt.Errorf("send: %w", err)
					}
					return
				}
				sent.Add(1)
			}
		})
	}
	if progress != nil {
		progress.printf("transport floor: warming up %s, then measuring %s...", cfg.Warmup, cfg.Duration)
	}
	select {
	case <-time.After(cfg.Warmup):
	case <-ctx.Done():
	}
	sent0, del0 := sent.Load(), delivered.Load()
	probe, start := probeMachine(), time.Now()
	lat.from.Store(int64(lat.now()))
	select {
	case <-time.After(cfg.Duration):
	case <-ctx.Done():
	}
	lat.to.Store(int64(lat.now()))
	wall := time.Since(start)
	sent1, del1 := sent.Load(), delivered.Load()
	rep := &floorReport{
		Date: start.UTC().Format(time.RFC3339), Regions: cfg.Regions, Users: users, Conns: cfg.ConnsPerRegion * cfg.Regions,
		GroupSize: cfg.GroupSize, Senders: cfg.Senders, TargetMsg: cfg.Rate, Links: "mtls", DurationS: wall.Seconds(),
		MsgPerSec: float64(sent1-sent0) / wall.Seconds(), DelivPerS: float64(del1-del0) / wall.Seconds(),
		Machine: probe.since(wall),
	}
	if cfg.PlaintextLinks || cfg.Regions == 1 {
		rep.Links = "plaintext"
	}
	stopSending()
	senders.Wait()
	// Wait for the deliveries still on their way: every answered send's,
	// and any other handed to a session.
	rep.Sent = sent.Load()
	deadline := time.Now().Add(cfg.Drain)
	for delivered.Load() < max(fed.enqueued.Load(), rep.Sent*int64(cfg.GroupSize)) && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	rep.Delivered = delivered.Load()
	rep.Enqueued = fed.enqueued.Load()
	rep.Missing = rep.Enqueued - rep.Delivered
	rep.SameRegion, rep.CrossRegion, rep.Overhead = lat.summaries()
	rep.LinkDelayMs = ms(cfg.LinkDelay)
	select {
	case err := <-errs:
		return rep, err
	case err := <-fed.linkErrs:
		return rep, err
	default:
	}
	return rep, nil
}
