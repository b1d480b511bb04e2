package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
)

// sessions are every user's Session stream. Each has three goroutines: the
// receive loop records deliveries in the ledger and hands their ids to the
// acker, which acknowledges everything received since its last Ack in one
// frame (so acks keep up however fast deliveries come), and the catch-up
// loop, which fetches with GetHistory what a CatchUp says was not pushed.
type sessions struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// capabilities is the first frame of every session: the receive loop
// reads Deliveries frames.
var capabilities = &clientv1.SessionRequest{Kind: &clientv1.SessionRequest_Capabilities{Capabilities: &clientv1.Capabilities{Deliveries: true}}}

// catchUpQueue bounds the CatchUp notices waiting for one session's fetcher;
// the server sends at most one per group at a time.
const catchUpQueue = 64

// openSessions opens a session for every user and waits for each to be
// Ready. The sessions live until close, not ctx: ctx bounds the opening.
func openSessions(ctx context.Context, pop *population, l *ledger) (*sessions, error) {
	sctx, cancel := context.WithCancel(context.Background())
	ss := &sessions{cancel: cancel}
	streams := make([]clientv1.ClientService_SessionClient, len(pop.users))
	err := forEach(ctx, len(pop.users), func(ctx context.Context, i int) error {
		u := pop.users[i]
		return retry(ctx, func(ctx context.Context, _ int) error {
			stream, err := u.client.Session(u.authed(sctx))
			if err != nil {
				return fmt.Errorf("session of %s at %s: %w", u.name, pop.regions[u.region], err)
			}
			// On io.EOF the stream has ended, and Recv says why.
			if err := stream.Send(capabilities); err != nil && !errors.Is(err, io.EOF) {
				_ = stream.CloseSend()
				return fmt.Errorf("session of %s at %s: capabilities: %w", u.name, pop.regions[u.region], err)
			}
			ready := make(chan error, 1)
			go func() {
				first, err := stream.Recv()
				if err == nil && first.GetReady() == nil {
					err = fmt.Errorf("first frame is %T, not Ready", first.GetKind())
				}
				ready <- err
			}()
			select {
			case err = <-ready:
			case <-ctx.Done():
				err = ctx.Err()
			}
			if err != nil {
				_ = stream.CloseSend()
				return fmt.Errorf("session of %s at %s: %w", u.name, pop.regions[u.region], err)
			}
			streams[i] = stream
			return nil
		})
	})
	if err != nil {
		cancel() // ends every stream, and any Recv still waiting for Ready
		return nil, err
	}
	for i, stream := range streams {
		s := &session{u: pop.users[i], stream: stream, ledger: l, wake: make(chan struct{}, 1), catchUps: make(chan *clientv1.CatchUp, catchUpQueue)}
		ss.wg.Add(3)
		go func() { defer ss.wg.Done(); s.receive(sctx) }()
		go func() { defer ss.wg.Done(); s.ack(sctx) }()
		go func() { defer ss.wg.Done(); s.catchUp(sctx) }()
	}
	return ss, nil
}

// close ends every session and waits for its goroutines.
func (ss *sessions) close() {
	ss.cancel()
	ss.wg.Wait()
}

type session struct {
	u        *user
	stream   clientv1.ClientService_SessionClient
	ledger   *ledger
	catchUps chan *clientv1.CatchUp

	mu   sync.Mutex
	ids  []uint64 // received, not yet acknowledged
	wake chan struct{}
}

func (s *session) receive(ctx context.Context) {
	for {
		resp, err := s.stream.Recv()
		if err != nil {
			if ctx.Err() == nil && status.Code(err) != codes.Canceled {
				s.ledger.sessionFailed(fmt.Errorf("session of %s: %w", s.u.name, err))
			}
			return
		}
		switch k := resp.GetKind().(type) {
		case *clientv1.SessionResponse_Delivery:
			s.delivered(k.Delivery)
		case *clientv1.SessionResponse_Deliveries:
			s.delivered(k.Deliveries.GetDeliveries()...)
		case *clientv1.SessionResponse_CatchUp:
			select {
			case s.catchUps <- k.CatchUp:
			default:
				s.ledger.catchUpDropped.Add(1)
			}
		}
	}
}

// delivered records the deliveries of one frame and hands their ids to the
// acker.
func (s *session) delivered(ds ...*clientv1.Delivery) {
	for _, d := range ds {
		s.ledger.delivered(s.u, d)
	}
	s.mu.Lock()
	for _, d := range ds {
		s.ids = append(s.ids, d.GetDeliveryId())
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// ack is the only goroutine that sends on the stream once it is open.
func (s *session) ack(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
		s.mu.Lock()
		ids := s.ids
		s.ids = nil
		s.mu.Unlock()
		if len(ids) == 0 {
			continue
		}
		if err := s.stream.Send(&clientv1.SessionRequest{Kind: &clientv1.SessionRequest_Ack{Ack: &clientv1.Ack{DeliveryIds: ids}}}); err != nil {
			return // the receive loop sees the stream's end and reports it
		}
	}
}

// catchUpPage is the GetHistory page size, the server's largest.
const catchUpPage = 1000

func (s *session) catchUp(ctx context.Context) {
	for {
		var cu *clientv1.CatchUp
		select {
		case <-ctx.Done():
			return
		case cu = <-s.catchUps:
		}
		after := cu.GetAfterSeq()
		for {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			page, err := s.u.client.GetHistory(s.u.authed(cctx), &clientv1.GetHistoryRequest{GroupId: cu.GetGroupId(), AfterSeq: after, Limit: catchUpPage})
			cancel()
			if err != nil {
				if ctx.Err() == nil && !errors.Is(err, context.Canceled) {
					s.ledger.sessionFailed(fmt.Errorf("catch-up of %s: %w", s.u.name, err))
				}
				break
			}
			for _, m := range page.GetMessages() {
				s.ledger.caughtUpMsg(s.u, m)
				after = max(after, m.GetSeq())
			}
			if !page.GetHasMore() || len(page.GetMessages()) == 0 {
				break
			}
		}
	}
}
