package business

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	recordv1 "github.com/roamfed/roamfed/api/record/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/roaming/resourcepool"
	"github.com/roamfed/roamfed/servicecenter/datacenter"
)

// ErrStopped is returned to calls waiting on a stopped sender.
var ErrStopped = status.Error(codes.Unavailable, "roaming: sender stopped")

// Submitter carries messages to one peer, the home of their groups, on a
// Submit stream.
type Submitter struct {
	peer    string
	peers   *resourcepool.Peers
	window  *resourcepool.Window
	limits  resourcepool.Limits
	log     *slog.Logger
	queue   chan *submitCall
	stop    chan struct{}
	done    chan struct{}
	nextID  uint64
	stopped sync.Once
}

type submitCall struct {
	msg  *recordv1.Message
	res  datacenter.Appended
	err  error
	done chan struct{}
}

// NewSubmitter starts the sender for one peer. Stop it with Stop.
func NewSubmitter(peer string, peers *resourcepool.Peers, log *slog.Logger) *Submitter {
	s := &Submitter{
		peer:   peer,
		peers:  peers,
		window: peers.Window(peer),
		limits: peers.Limits(),
		log:    log.With(slog.String("peer", peer), slog.String("stream", "submit")),
		queue:  make(chan *submitCall, 4096),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	go s.run()
	return s
}

// Submit has the peer commit m and waits for its answer. An error that the
// home gave keeps its status; a broken stream is UNAVAILABLE, and the
// caller may submit again with the same client_msg_id.
func (s *Submitter) Submit(ctx context.Context, m *recordv1.Message) (datacenter.Appended, error) {
	c := &submitCall{msg: m, done: make(chan struct{})}
	select {
	case s.queue <- c:
	case <-ctx.Done():
		return datacenter.Appended{}, ctx.Err()
	case <-s.stop:
		return datacenter.Appended{}, ErrStopped
	}
	select {
	case <-c.done:
		return c.res, c.err
	case <-ctx.Done():
		return datacenter.Appended{}, ctx.Err()
	}
}

// SubmitAll submits msgs queued in order, so that they go out in order on
// the stream, and waits for every answer.
func (s *Submitter) SubmitAll(ctx context.Context, msgs []*recordv1.Message) ([]datacenter.Appended, []error) {
	res := make([]datacenter.Appended, len(msgs))
	errs := make([]error, len(msgs))
	calls := make([]*submitCall, len(msgs))
	for i, m := range msgs {
		c := &submitCall{msg: m, done: make(chan struct{})}
		select {
		case s.queue <- c:
			calls[i] = c
		case <-ctx.Done():
			errs[i] = ctx.Err()
		case <-s.stop:
			errs[i] = ErrStopped
		}
	}
	for i, c := range calls {
		if c == nil {
			continue
		}
		select {
		case <-c.done:
			res[i], errs[i] = c.res, c.err
		case <-ctx.Done():
			errs[i] = ctx.Err()
		}
	}
	return res, errs
}

// Stop ends the stream and fails the calls still waiting.
func (s *Submitter) Stop() {
	s.stopped.Do(func() { close(s.stop) })
	<-s.done
}

func (s *Submitter) run() {
	defer close(s.done)
	backoff := 50 * time.Millisecond
	for {
		select {
		case <-s.stop:
			s.failQueued(ErrStopped)
			return
		default:
		}
		err := s.session()
		if err == nil {
			return
		}
		s.log.Debug("submit stream ended", slog.Any("err", err))
		select {
		case <-s.stop:
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

func (s *Submitter) failQueued(err error) {
	for {
		select {
		case c := <-s.queue:
			c.err = err
			close(c.done)
		default:
			return
		}
	}
}

// session runs one Submit stream until it breaks (error) or the submitter
// stops (nil). It opens the stream only when there is something to send.
func (s *Submitter) session() error {
	var first *submitCall
	select {
	case first = <-s.queue:
	case <-s.stop:
		s.failQueued(ErrStopped)
		return nil
	}
	conn, err := s.peers.Conn(s.peer)
	if err != nil {
		s.failWaiting(first, err)
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := roamingv1.NewBusinessServiceClient(conn).Submit(ctx)
	if err != nil {
		s.failWaiting(first, err)
		return err
	}
	var (
		mu       sync.Mutex
		inflight = make(map[uint64]inflightSubmit)
		recvErr  = make(chan error, 1)
	)
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				recvErr <- err
				// Wake a batch waiting for window room that only this
				// stream's answers could have freed.
				cancel()
				return
			}
			mu.Lock()
			b, ok := inflight[resp.GetBatchId()]
			delete(inflight, resp.GetBatchId())
			mu.Unlock()
			if !ok {
				continue
			}
			s.window.Release(b.bytes)
			s.complete(b.calls, resp.GetResults())
		}
	}()
	defer func() {
		cancel()
		mu.Lock()
		defer mu.Unlock()
		for id, b := range inflight {
			s.window.Release(b.bytes)
			s.fail(b.calls, s.errBroken())
			delete(inflight, id)
		}
	}()
	pending := first
	for {
		if pending == nil {
			select {
			case pending = <-s.queue:
			case err := <-recvErr:
				return err
			case <-s.stop:
				_ = stream.CloseSend()
				s.failQueued(ErrStopped)
				return nil
			}
		}
		calls := s.gather(pending)
		pending = nil
		req := &roamingv1.SubmitRequest{Messages: make([]*recordv1.Message, len(calls))}
		for i, c := range calls {
			req.Messages[i] = c.msg
		}
		s.nextID++
		req.BatchId = s.nextID
		size := int64(proto.Size(req))
		if err := s.window.Acquire(ctx, size); err != nil {
			if ctx.Err() != nil {
				// The stream ended while the batch waited for room.
				err = s.errBroken()
			}
			s.fail(calls, err)
			return err
		}
		mu.Lock()
		inflight[req.BatchId] = inflightSubmit{calls: calls, bytes: size}
		mu.Unlock()
		if err := stream.Send(req); err != nil {
			return err
		}
	}
}

type inflightSubmit struct {
	calls []*submitCall
	bytes int64
}

// gather takes first and whatever else is queued, up to a batch.
func (s *Submitter) gather(first *submitCall) []*submitCall {
	calls := []*submitCall{first}
	size := proto.Size(first.msg)
	for len(calls) < s.limits.MaxBatchMessages && size < s.limits.MaxBatchBytes {
		select {
		case c := <-s.queue:
			calls = append(calls, c)
			size += proto.Size(c.msg)
		default:
			return calls
		}
	}
	return calls
}

func (s *Submitter) complete(calls []*submitCall, results []*roamingv1.SubmitResult) {
	for i, c := range calls {
		if i >= len(results) {
			c.err = status.Errorf(codes.Internal, "roaming: %s answered %d results for %d messages", s.peer, len(results), len(calls))
			close(c.done)
			continue
		}
		r := results[i]
		switch {
		case r.GetMessageId() != c.msg.GetMessageId() && !r.GetDuplicate():
			c.err = status.Errorf(codes.Internal, "roaming: %s answered for message %s, not %s", s.peer, r.GetMessageId(), c.msg.GetMessageId())
		case r.GetCode() != 0:
			c.err = status.Error(codes.Code(r.GetCode()), r.GetError())
		default:
			m := proto.Clone(c.msg).(*recordv1.Message)
			m.MessageId = r.GetMessageId()
			m.Seq = r.GetSeq()
			m.CommittedAt = r.GetCommittedAt()
			// The home reports a duplicate also when an earlier attempt
			// of this very message (same message id: a resend after a
			// broken stream) was committed; to the sender that is the
			// first commit, not a duplicate.
			dup := r.GetDuplicate() && r.GetMessageId() != c.msg.GetMessageId()
			c.res = datacenter.Appended{Message: m, Duplicate: dup}
		}
		close(c.done)
	}
}

// errBroken is what the calls on a stream that ended without their answer
// get.
func (s *Submitter) errBroken() error {
	return status.Errorf(codes.Unavailable, "roaming: submit stream to %s broke; resubmit", s.peer)
}

// failWaiting fails first and every call queued behind it: with no stream
// to the peer, each would otherwise wait for a reconnect attempt of its
// own, one backoff after another.
func (s *Submitter) failWaiting(first *submitCall, err error) {
	calls := []*submitCall{first}
	for {
		select {
		case c := <-s.queue:
			calls = append(calls, c)
		default:
			s.fail(calls, err)
			return
		}
	}
}

func (s *Submitter) fail(calls []*submitCall, err error) {
	if _, ok := status.FromError(err); !ok && !errors.Is(err, context.Canceled) {
		err = status.Error(codes.Unavailable, fmt.Sprintf("roaming: %s: %v", s.peer, err))
	}
	for _, c := range calls {
		c.err = err
		close(c.done)
	}
}
