package business

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	recordv1 "github.com/roamfed/roamfed/api/record/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/api/rpcstatus"
	"github.com/roamfed/roamfed/internal/ids"
	"github.com/roamfed/roamfed/internal/validate"
	"github.com/roamfed/roamfed/roaming/mesh"
	"github.com/roamfed/roamfed/roaming/resourcepool"
	"github.com/roamfed/roamfed/servicecenter/businesscenter"
)

// Server answers other regions' BusinessService calls.
type Server struct {
	roamingv1.UnimplementedBusinessServiceServer
	region string
	log    *slog.Logger
	home   *businesscenter.Home
	router *Router
	mesh   *mesh.Mesh
	// actsFor checks that a peer may act for a user (a message's sender).
	actsFor func(ctx context.Context, caller, userID string) error
	// maxBatch bounds the messages of one Submit or Deliver batch.
	maxBatch int
	// closing ends the long-lived streams, so that a graceful stop of the
	// gRPC server does not wait for peers to hang up.
	closing chan struct{}
	once    sync.Once
}

// errClosing ends peer streams when the region stops; peers reconnect.
var errClosing = status.Error(codes.Unavailable, "region is shutting down")

// Close ends the open Submit and Deliver streams. It is idempotent.
func (s *Server) Close() { s.once.Do(func() { close(s.closing) }) }

// recv runs stream.Recv in a goroutine so that a handler can also wait for
// closing; the goroutine ends when the stream does.
func recv[T any](stream interface{ Recv() (*T, error) }) <-chan recvResult[T] {
	ch := make(chan recvResult[T])
	go func() {
		for {
			m, err := stream.Recv()
			ch <- recvResult[T]{m, err}
			if err != nil {
				close(ch)
				return
			}
		}
	}()
	return ch
}

type recvResult[T any] struct {
	msg *T
	err error
}

var _ roamingv1.BusinessServiceServer = (*Server)(nil)

// NewServer returns a BusinessService server.
func NewServer(region string, log *slog.Logger, home *businesscenter.Home, router *Router, m *mesh.Mesh,
	actsFor func(ctx context.Context, caller, userID string) error, maxBatch int) *Server {
	return &Server{region: region, log: log, home: home, router: router, mesh: m, actsFor: actsFor, maxBatch: maxBatch, closing: make(chan struct{})}
}

// Submit commits the messages a peer submits to groups homed here. Batches
// are committed concurrently, so that they share the data center's syncs;
// each is answered when all its messages have a result.
func (s *Server) Submit(stream roamingv1.BusinessService_SubmitServer) error {
	peer, err := resourcepool.RegionFromContext(stream.Context())
	if err != nil {
		return err
	}
	ctx := stream.Context()
	var (
		sendMu sync.Mutex
		wg     sync.WaitGroup
	)
	defer wg.Wait()
	in := recv[roamingv1.SubmitRequest](stream)
	for {
		var r recvResult[roamingv1.SubmitRequest]
		select {
		case r = <-in:
		case <-s.closing:
			return errClosing
		}
		req, err := r.msg, r.err
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if n := len(req.GetMessages()); n > s.maxBatch {
			return status.Errorf(codes.InvalidArgument, "submit batch of %d messages; at most %d", n, s.maxBatch)
		}
		// Batches are queued for commit here, in the order they arrived,
		// so that a stream's messages keep their order across batches;
		// their syncs are awaited together.
		wait := s.startCommitAll(ctx, peer, req.GetMessages())
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp := &roamingv1.SubmitResponse{BatchId: req.GetBatchId(), Results: wait()}
			sendMu.Lock()
			defer sendMu.Unlock()
			_ = stream.Send(resp) // a failed send ends the stream; the peer resubmits
		}()
	}
}

// startCommitAll queues a batch for commit in order and returns a function
// that waits for its results; a message whose origin is not the
// submitting region is refused.
func (s *Server) startCommitAll(ctx context.Context, peer string, msgs []*recordv1.Message) func() []*roamingv1.SubmitResult {
	results := make([]*roamingv1.SubmitResult, len(msgs))
	var ok []*recordv1.Message
	var at []int
	for i, m := range msgs {
		results[i] = &roamingv1.SubmitResult{MessageId: m.GetMessageId()}
		// The home de-duplicates by client_msg_id and every region by
		// message_id: without them a message would pass for a duplicate
		// of another and be lost.
		if err := errors.Join(
			validate.ID("message_id", ids.Message, m.GetMessageId()),
			requireClientMsgID(m.GetClientMsgId()),
		); err != nil {
			st := status.Convert(rpcstatus.Convert(s.log, "roaming.v1.BusinessService/Submit", err))
			results[i].Code, results[i].Error = int32(st.Code()), st.Message()
			continue
		}
		if m.GetOriginRegion() != peer {
			results[i].Code = int32(codes.PermissionDenied)
			results[i].Error = "message origin " + m.GetOriginRegion() + " is not the submitting region " + peer
			continue
		}
		if err := s.actsFor(ctx, peer, m.GetSenderId()); err != nil {
			st := status.Convert(err)
			results[i].Code, results[i].Error = int32(st.Code()), st.Message()
			continue
		}
		ok = append(ok, m)
		at = append(at, i)
	}
	waitCommits := s.home.StartCommitAll(ctx, ok)
	return func() []*roamingv1.SubmitResult {
		res, errs := waitCommits()
		for j, i := range at {
			r := results[i]
			if err := errs[j]; err != nil {
				st := status.Convert(rpcstatus.Convert(s.log, "roaming.v1.BusinessService/Submit", err))
				r.Code, r.Error = int32(st.Code()), st.Message()
				continue
			}
			r.MessageId = res[j].Message.GetMessageId()
			r.Seq = res[j].Message.GetSeq()
			r.Duplicate = res[j].Duplicate
			r.CommittedAt = res[j].Message.GetCommittedAt()
		}
		return results
	}
}

// requireClientMsgID refuses an empty idempotency key, which clients may
// leave out but a submitting region has always filled in.
func requireClientMsgID(s string) error {
	if s == "" {
		return &validate.Error{Field: "client_msg_id", Reason: "must not be empty"}
	}
	return nil
}

// Deliver takes committed messages and presence changes from a peer.
func (s *Server) Deliver(stream roamingv1.BusinessService_DeliverServer) error {
	peer, err := resourcepool.RegionFromContext(stream.Context())
	if err != nil {
		return err
	}
	in := recv[roamingv1.DeliverRequest](stream)
	for {
		var r recvResult[roamingv1.DeliverRequest]
		select {
		case r = <-in:
		case <-s.closing:
			return errClosing
		}
		req, err := r.msg, r.err
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if n := len(req.GetItems()) + len(req.GetPresence()); n > s.maxBatch {
			return status.Errorf(codes.InvalidArgument, "deliver batch of %d items; at most %d", n, s.maxBatch)
		}
		s.router.Inbound(peer, req)
		if err := stream.Send(&roamingv1.DeliverResponse{BatchId: req.GetBatchId()}); err != nil {
			return err
		}
	}
}

// Heartbeat answers a peer's link probe with this region's link views.
func (s *Server) Heartbeat(context.Context, *roamingv1.HeartbeatRequest) (*roamingv1.HeartbeatResponse, error) {
	return &roamingv1.HeartbeatResponse{Region: s.region, ReceivedAt: timestamppb.Now(), Links: s.mesh.Views()}, nil
}

// Relay carries a connection for a region whose direct link is down.
func (s *Server) Relay(stream roamingv1.BusinessService_RelayServer) error {
	caller, err := resourcepool.RegionFromContext(stream.Context())
	if err != nil {
		return err
	}
	return s.mesh.ServeRelay(caller, stream)
}

// Drill applies a drill on the link between the caller and this region.
func (s *Server) Drill(ctx context.Context, req *roamingv1.DrillRequest) (*roamingv1.DrillResponse, error) {
	caller, err := resourcepool.RegionFromContext(ctx)
	if err != nil {
		return nil, err
	}
	reason := fmt.Sprintf("requested by %s: %s", caller, req.GetReason())
	if req.GetCut() {
		err = s.mesh.Cut(caller, reason)
	} else {
		err = s.mesh.Restore(caller, reason)
	}
	if err != nil {
		return nil, status.Error(codes.NotFound, err.Error())
	}
	state := roamingv1.LinkState_LINK_STATE_DOWN
	if req.GetCut() {
		state = roamingv1.LinkState_LINK_STATE_CUT
	}
	s.log.Info("link drill applied at peer's request", slog.String("peer", caller), slog.Bool("cut", req.GetCut()), slog.String("reason", req.GetReason()))
	return &roamingv1.DrillResponse{State: state}, nil
}
