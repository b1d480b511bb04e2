package clientkit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	"github.com/roamfed/roamfed/internal/quota"
)

var (
	// ErrSessionEnded reports that the region closed the Session stream.
	ErrSessionEnded = errors.New("the region ended the session")
	// ErrNoReady reports that the region did not open the stream with
	// Ready in time.
	ErrNoReady = errors.New("no Ready from the region")
	// ErrSilent reports a stream that stopped answering pings.
	ErrSilent = errors.New("no word from the region; the stream looks dead")
)

// Stream is one open Session stream: a goroutine receives its frames and
// hands them over in order on Frames; the stream's end follows on Ended.
// The stream's owner reads both from one goroutine, sends on it with Ack
// and Ping, and calls Close.
type Stream struct {
	stream clientv1.ClientService_SessionClient
	frames chan *clientv1.SessionResponse
	ended  chan error
	heard  atomic.Int64 // unix nanoseconds of the last frame received
	cancel context.CancelFunc
	wg     sync.WaitGroup
	nonce  uint64
}

// OpenStream opens a Session stream under ctx, which carries the user's
// token, asks for Deliveries frames, and waits for the region's Ready,
// which it returns: within readyWithin, or without limit when it is 0.
//
// The stream is registered with the region before OpenStream returns, so
// a history read after it misses nothing committed in between.
func OpenStream(ctx context.Context, api clientv1.ClientServiceClient, readyWithin time.Duration) (*Stream, *clientv1.Ready, error) {
	ctx, cancel := context.WithCancel(ctx)
	stream, err := api.Session(ctx)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	// A region that predates Deliveries frames ignores the request. On
	// io.EOF the stream has ended, and Recv says why.
	caps := &clientv1.SessionRequest{Kind: &clientv1.SessionRequest_Capabilities{Capabilities: &clientv1.Capabilities{Deliveries: true}}}
	if err := stream.Send(caps); err != nil && !errors.Is(err, io.EOF) {
		cancel()
		return nil, nil, fmt.Errorf("capabilities: %w", err)
	}
	s := &Stream{
		stream: stream,
		frames: make(chan *clientv1.SessionResponse),
		ended:  make(chan error, 1),
		cancel: cancel,
	}
	s.heard.Store(time.Now().UnixNano())
	s.wg.Go(func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = ErrSessionEnded
				}
				s.ended <- err
				return
			}
			s.heard.Store(time.Now().UnixNano())
			select {
			case s.frames <- r:
			case <-ctx.Done():
				return
			}
		}
	})

	var timeout <-chan time.Time
	if readyWithin > 0 {
		t := time.NewTimer(readyWithin)
		defer t.Stop()
		timeout = t.C
	}
	var first *clientv1.SessionResponse
	select {
	case <-ctx.Done():
		err = ctx.Err()
	case err = <-s.ended:
	case <-timeout:
		err = fmt.Errorf("%w within %s", ErrNoReady, readyWithin)
	case first = <-s.frames:
		if first.GetReady() == nil {
			err = fmt.Errorf("the region sent %T before Ready", first.GetKind())
		}
	}
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	return s, first.GetReady(), nil
}

// Frames yields the frames after Ready, in the order the region sent
// them.
func (s *Stream) Frames() <-chan *clientv1.SessionResponse { return s.frames }

// Ended yields the stream's end once every frame before it was taken from
// Frames: ErrSessionEnded when the region closed it, else the error Recv
// returned.
func (s *Stream) Ended() <-chan error { return s.ended }

// Ack acknowledges deliveries; none is no frame.
func (s *Stream) Ack(ids []uint64) error {
	if len(ids) == 0 {
		return nil
	}
	if err := s.stream.Send(&clientv1.SessionRequest{Kind: &clientv1.SessionRequest_Ack{Ack: &clientv1.Ack{DeliveryIds: ids}}}); err != nil {
		return fmt.Errorf("ack: %w", err)
	}
	return nil
}

// Ping sends a keepalive. It returns ErrSilent instead when nothing came
// from the region for longer than quiet: the stream looks dead.
func (s *Stream) Ping(quiet time.Duration) error {
	if time.Since(time.Unix(0, s.heard.Load())) > quiet {
		return ErrSilent
	}
	s.nonce++
	if err := s.stream.Send(&clientv1.SessionRequest{Kind: &clientv1.SessionRequest_Ping{Ping: &clientv1.Ping{Nonce: s.nonce}}}); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	return nil
}

// Close ends the stream and waits for its receiving goroutine.
func (s *Stream) Close() {
	s.cancel()
	s.wg.Wait()
}

// Deliveries returns the deliveries a frame carries: one for a Delivery,
// several for a Deliveries frame, none for any other.
func Deliveries(r *clientv1.SessionResponse) []*clientv1.Delivery {
	switch k := r.GetKind().(type) {
	case *clientv1.SessionResponse_Delivery:
		return []*clientv1.Delivery{k.Delivery}
	case *clientv1.SessionResponse_Deliveries:
		return k.Deliveries.GetDeliveries()
	}
	return nil
}

// Retryable reports whether a new stream may cure err: not when the region
// refused the user or the request, nor when the caller canceled.
func Retryable(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false
	}
	if _, ok := status.FromError(err); !ok {
		return true // not from the region: a dead or broken stream
	}
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied, codes.InvalidArgument,
		codes.Unimplemented, codes.NotFound, codes.FailedPrecondition:
		return false
	}
	return true
}

// RetryDelay is the wait a refusal asks for in its errdetails.RetryInfo
// (a RESOURCE_EXHAUSTED quota refusal, say); false when it names none.
func RetryDelay(err error) (time.Duration, bool) {
	st, ok := status.FromError(err)
	if !ok {
		return 0, false
	}
	if _, ri := quota.Details(st); ri.GetRetryDelay() != nil {
		return ri.GetRetryDelay().AsDuration(), true
	}
	return 0, false
}
