package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
)

// The transport floor is roambench's load with nothing of roamfed in the
// path: a bare gRPC server on loopback implements SendMessage and Session
// by handing each message straight to its group's members' streams, and
// the clients acknowledge every delivery as roambench's do. No storage, no
// bus, no routing, no authentication. What it sustains on a machine is the
// most any server built on gRPC can deliver there with its clients beside
// it, and so a bound on what roamfed can.

// floorUserKey is the metadata key that names a floor client's user.
const floorUserKey = "floor-user"

// floorReport is what --transport-floor measured.
type floorReport struct {
	Date      string  `json:"date"`
	Users     int     `json:"users"`
	Conns     int     `json:"conns"`
	GroupSize int     `json:"group_size"`
	Senders   int     `json:"senders"`
	DurationS float64 `json:"duration_sec"`
	MsgPerSec float64 `json:"msg_per_sec"`
	DelivPerS float64 `json:"deliveries_per_sec"`
	Sent      int64   `json:"sent"`
	Enqueued  int64   `json:"enqueued"`
	Delivered int64   `json:"delivered"`
	Missing   int64   `json:"missing"`
	Machine   machine `json:"machine"`
}

func (r *floorReport) writeJSON(w io.Writer) error { return writeJSON(w, r) }

func (r *floorReport) writeText(w io.Writer) error {
	_, err := fmt.Fprintf(w, `roambench %s: transport floor: bare gRPC on loopback, nothing of roamfed in the path
load: %d users on %d conns, groups of %d, %d senders, %.1fs measured

throughput  %.0f msg/s, %.0f deliveries/s (every delivery acknowledged)
deliveries  %d messages sent, %d deliveries handed to sessions, %d received, %d missing
machine     %s
`, r.Date, r.Users, r.Conns, r.GroupSize, r.Senders, r.DurationS, r.MsgPerSec, r.DelivPerS,
		r.Sent, r.Enqueued, r.Delivered, r.Missing, r.Machine)
	return err
}

// floorServer hands every message to its group's members' sessions.
type floorServer struct {
	clientv1.UnimplementedClientServiceServer
	groupSize int

	mu       sync.Mutex
	sessions map[int]chan *clientv1.SessionResponse
	ready    chan struct{} // closed when every user has a session
	users    int
	nextID   atomic.Uint64
	// enqueued counts deliveries handed to sessions.
	enqueued atomic.Int64
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

func (s *floorServer) SendMessage(ctx context.Context, req *clientv1.SendMessageRequest) (*clientv1.SendMessageResponse, error) {
	u, err := floorUser(ctx)
	if err != nil {
		return nil, err
	}
	g, err := strconv.Atoi(strings.TrimPrefix(req.GetGroupId(), "g"))
	if err != nil || g < 0 {
		return nil, status.Errorf(codes.NotFound, "no group %q", req.GetGroupId())
	}
	msg := &clientv1.Message{
		GroupId: req.GetGroupId(), MessageId: req.GetClientMsgId(), SenderId: strconv.Itoa(u),
		ClientMsgId: req.GetClientMsgId(), Body: req.GetBody(), CommittedAt: timestamppb.Now(),
	}
	s.mu.Lock()
	outs := make([]chan *clientv1.SessionResponse, 0, s.groupSize)
	for m := g * s.groupSize; m < (g+1)*s.groupSize; m++ {
		if out, ok := s.sessions[m]; ok {
			outs = append(outs, out)
		}
	}
	s.mu.Unlock()
	for _, out := range outs {
		d := &clientv1.Delivery{DeliveryId: s.nextID.Add(1), Message: msg, Attempt: 1}
		// Counted before it can arrive, so that no more arrive than were
		// counted.
		s.enqueued.Add(1)
		select {
		case out <- &clientv1.SessionResponse{Kind: &clientv1.SessionResponse_Delivery{Delivery: d}}:
		case <-ctx.Done():
			s.enqueued.Add(-1)
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	return &clientv1.SendMessageResponse{}, nil
}

func (s *floorServer) Session(stream clientv1.ClientService_SessionServer) error {
	u, err := floorUser(stream.Context())
	if err != nil {
		return err
	}
	out := make(chan *clientv1.SessionResponse, 1024)
	s.mu.Lock()
	if _, dup := s.sessions[u]; dup {
		s.mu.Unlock()
		return status.Errorf(codes.AlreadyExists, "user %d has a session", u)
	}
	s.sessions[u] = out
	if len(s.sessions) == s.users {
		close(s.ready)
	}
	s.mu.Unlock()
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
		select {
		case r := <-out:
			if err := stream.Send(r); err != nil {
				return err
			}
		case err := <-errc:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// measureFloor runs the transport floor: cfg's users, groups, senders and
// conns (--conns per region, times --regions), as fast as the senders go.
func measureFloor(ctx context.Context, cfg config, progress *progressLine) (_ *floorReport, err error) {
	users := cfg.Groups * cfg.GroupSize
	srv := &floorServer{groupSize: cfg.GroupSize, sessions: make(map[int]chan *clientv1.SessionResponse),
		ready: make(chan struct{}), users: users}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	gs := grpc.NewServer()
	clientv1.RegisterClientServiceServer(gs, srv)
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()

	nconns := cfg.ConnsPerRegion * cfg.Regions
	clients := make([]clientv1.ClientServiceClient, nconns)
	for i := range clients {
		cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, err
		}
		defer cc.Close()
		clients[i] = clientv1.NewClientServiceClient(cc)
	}
	userCtx := func(ctx context.Context, u int) context.Context {
		return metadata.AppendToOutgoingContext(ctx, floorUserKey, strconv.Itoa(u))
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var delivered atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, users)
	for u := range users {
		stream, err := clients[u%nconns].Session(userCtx(runCtx, u))
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
				d := r.GetDelivery()
				if d == nil {
					continue
				}
				delivered.Add(1)
				ack := &clientv1.SessionRequest{Kind: &clientv1.SessionRequest_Ack{Ack: &clientv1.Ack{DeliveryIds: []uint64{d.GetDeliveryId()}}}}
				if err := stream.Send(ack); err != nil {
					return
				}
			}
		})
	}
	defer wg.Wait()
	defer cancel()
	select {
	case <-srv.ready:
	case err := <-errs:
		return nil, err
	case <-time.After(10 * time.Second):
		return nil, errors.New("transport floor: sessions not all open within 10 s")
	case <-ctx.Done():
		return nil, ctx.Err()
	}

	body := strings.Repeat("x", cfg.BodyBytes)
	var sent, sendSeq atomic.Int64
	sendCtx, stopSending := context.WithCancel(runCtx)
	var senders sync.WaitGroup
	for range cfg.Senders {
		senders.Go(func() {
			for sendCtx.Err() == nil {
				i := int(sendSeq.Add(1))
				g := i % cfg.Groups
				u := g*cfg.GroupSize + (i/cfg.Groups)%cfg.GroupSize
				req := &clientv1.SendMessageRequest{GroupId: "g" + strconv.Itoa(g), ClientMsgId: strconv.Itoa(i), Body: body}
				if _, err := clients[u%nconns].SendMessage(userCtx(sendCtx, u), req); err != nil {
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
	select {
	case <-time.After(cfg.Duration):
	case <-ctx.Done():
	}
	wall := time.Since(start)
	sent1, del1 := sent.Load(), delivered.Load()
	rep := &floorReport{
		Date: start.UTC().Format(time.RFC3339), Users: users, Conns: nconns, GroupSize: cfg.GroupSize,
		Senders: cfg.Senders, DurationS: wall.Seconds(),
		MsgPerSec: float64(sent1-sent0) / wall.Seconds(), DelivPerS: float64(del1-del0) / wall.Seconds(),
		Machine: probe.since(wall),
	}
	stopSending()
	senders.Wait()
	// Wait for the deliveries still on their way.
	rep.Sent = sent.Load()
	deadline := time.Now().Add(cfg.Drain)
	for delivered.Load() < srv.enqueued.Load() && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	rep.Delivered = delivered.Load()
	rep.Enqueued = srv.enqueued.Load()
	rep.Missing = rep.Enqueued - rep.Delivered
	select {
	case err := <-errs:
		return rep, err
	default:
	}
	return rep, nil
}
