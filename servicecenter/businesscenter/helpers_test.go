package businesscenter_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	"github.com/roamfed/roamfed/internal/password"
	"github.com/roamfed/roamfed/internal/stack"
	"github.com/roamfed/roamfed/servicecenter/resourcepool"
)

// Generous bounds: the suite runs under -race on small machines.
const (
	// waitFor bounds every poll and every wait for a frame that must come.
	waitFor = 15 * time.Second
	// shutdownTimeout bounds a region's shutdown in t.Cleanup.
	shutdownTimeout = 10 * time.Second
)

// testPassword is a valid password for every test user.
const testPassword = "correct horse battery"

// fastPassword keeps argon2id cheap in tests.
var fastPassword = password.Params{Memory: 64, Time: 1, Threads: 1}

// region is a running stack and a client connected to it.
type region struct {
	st       *stack.Stack
	client   clientv1.ClientServiceClient
	stopOnce sync.Once
	stopErr  error
}

type regionOption func(*stack.Config)

// withLimits sets the region's resource pool limits. Unset fields keep the
// defaults startRegion gives them.
func withLimits(change func(*resourcepool.Limits)) regionOption {
	return func(c *stack.Config) { change(&c.Limits) }
}

// withDelivery sets how long a delivery waits for its ack and how often it
// is sent.
func withDelivery(ackTimeout time.Duration, maxAttempts int) regionOption {
	return func(c *stack.Config) {
		c.AckTimeout = ackTimeout
		c.MaxAttempts = maxAttempts
	}
}

// startRegion starts a region with a real Pebble store in a temp dir, an
// embedded NATS and a gRPC listener on loopback, and connects a client.
// The send rate is unlimited unless an option sets it, so that tests that
// send many messages are not throttled.
func startRegion(t *testing.T, opts ...regionOption) *region {
	t.Helper()
	cfg := stack.Config{
		Region:     "ap",
		DataDir:    t.TempDir(),
		ClientAddr: "127.0.0.1:0",
		Password:   fastPassword,
		Limits:     resourcepool.Limits{SendRate: math.Inf(1)},
	}
	for _, o := range opts {
		o(&cfg)
	}
	st, err := stack.Start(cfg)
	if err != nil {
		t.Fatalf("stack.Start: %v", err)
	}
	r := &region{st: st}
	t.Cleanup(func() {
		if err := r.shutdown(); err != nil {
			t.Errorf("stack.Shutdown: %v", err)
		}
	})
	r.client = newClient(t, st.ClientAddr())
	return r
}

// shutdown stops the region once, giving in-flight calls shutdownTimeout,
// and returns what the first Shutdown returned.
func (r *region) shutdown() error {
	r.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		r.stopErr = r.st.Shutdown(ctx)
	})
	return r.stopErr
}

// newClient dials addr; the connection is closed in t.Cleanup, before the
// region it talks to is shut down.
func newClient(t *testing.T, addr string, opts ...grpc.DialOption) clientv1.ClientServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatalf("grpc.NewClient %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return clientv1.NewClientServiceClient(conn)
}

// user is a registered, logged-in user.
type user struct {
	id, name, token string
	// ctx carries `authorization: Bearer <token>`; it ends with the test.
	ctx context.Context
}

var userSeq atomic.Int64

// register registers a fresh user named after prefix and returns its id.
func (r *region) register(t *testing.T, name string) string {
	t.Helper()
	resp, err := r.client.Register(t.Context(), &clientv1.RegisterRequest{Username: name, Password: testPassword})
	if err != nil {
		t.Fatalf("Register %q: %v", name, err)
	}
	return resp.GetUserId()
}

// login logs name in and returns a context authorized with its token.
func (r *region) login(t *testing.T, name string) *user {
	t.Helper()
	resp, err := r.client.Login(t.Context(), &clientv1.LoginRequest{Username: name, Password: testPassword})
	if err != nil {
		t.Fatalf("Login %q: %v", name, err)
	}
	return &user{id: resp.GetUserId(), name: name, token: resp.GetToken(), ctx: bearer(t.Context(), resp.GetToken())}
}

// newUser registers and logs in a user with a unique name built from prefix.
func (r *region) newUser(t *testing.T, prefix string) *user {
	t.Helper()
	name := fmt.Sprintf("%s-%d", prefix, userSeq.Add(1))
	r.register(t, name)
	return r.login(t, name)
}

// bearer returns ctx with the token as outgoing authorization metadata.
func bearer(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// createGroup creates a group owned by u whose other members are others.
func (r *region) createGroup(t *testing.T, u *user, others ...*user) *clientv1.Group {
	t.Helper()
	resp, err := r.client.CreateGroup(u.ctx, &clientv1.CreateGroupRequest{Name: "group of " + u.name})
	if err != nil {
		t.Fatalf("CreateGroup: %v", err)
	}
	g := resp.GetGroup()
	for _, o := range others {
		jr, err := r.client.JoinGroup(o.ctx, &clientv1.JoinGroupRequest{GroupId: g.GetId()})
		if err != nil {
			t.Fatalf("JoinGroup %s: %v", o.name, err)
		}
		g = jr.GetGroup()
	}
	return g
}

// send sends body to the group as u and fails the test on error.
func (r *region) send(t *testing.T, u *user, groupID, clientMsgID, body string) *clientv1.SendMessageResponse {
	t.Helper()
	resp, err := r.client.SendMessage(u.ctx, &clientv1.SendMessageRequest{GroupId: groupID, ClientMsgId: clientMsgID, Body: body})
	if err != nil {
		t.Fatalf("SendMessage %q: %v", clientMsgID, err)
	}
	return resp
}

// history reads the whole of a group's log as u.
func (r *region) history(t *testing.T, u *user, groupID string, after uint64) (msgs []*clientv1.Message, last uint64) {
	t.Helper()
	for range 1000 {
		resp, err := r.client.GetHistory(u.ctx, &clientv1.GetHistoryRequest{GroupId: groupID, AfterSeq: after, Limit: 1000})
		if err != nil {
			t.Fatalf("GetHistory after %d: %v", after, err)
		}
		msgs = append(msgs, resp.GetMessages()...)
		last = resp.GetLastSeq()
		if !resp.GetHasMore() {
			return msgs, last
		}
		after = resp.GetMessages()[len(resp.GetMessages())-1].GetSeq()
	}
	t.Fatalf("GetHistory: more than 1000 pages")
	return nil, 0
}

// lastSeq returns the group's latest sequence number as u sees it.
func (r *region) lastSeq(t *testing.T, u *user, groupID string) uint64 {
	t.Helper()
	resp, err := r.client.GetHistory(u.ctx, &clientv1.GetHistoryRequest{GroupId: groupID, Limit: 1})
	if err != nil {
		t.Fatalf("GetHistory: %v", err)
	}
	return resp.GetLastSeq()
}

// summary returns u's ListGroups entry for a group.
func (r *region) summary(t *testing.T, u *user, groupID string) *clientv1.GroupSummary {
	t.Helper()
	resp, err := r.client.ListGroups(u.ctx, &clientv1.ListGroupsRequest{})
	if err != nil {
		t.Fatalf("ListGroups: %v", err)
	}
	for _, g := range resp.GetGroups() {
		if g.GetId() == groupID {
			return g
		}
	}
	t.Fatalf("ListGroups of %s: group %s missing from %v", u.name, groupID, resp.GetGroups())
	return nil
}

// wantCode fails the test unless err has the given gRPC code.
func wantCode(t *testing.T, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("got code %v (err %v), want %v", got, err, want)
	}
}

// fieldViolations returns the fields named by err's BadRequest detail.
func fieldViolations(err error) []string {
	var fields []string
	for _, d := range status.Convert(err).Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				fields = append(fields, v.GetField())
			}
		}
	}
	return fields
}

// detail returns err's first status detail of type T.
func detail[T any](err error) (T, bool) {
	for _, d := range status.Convert(err).Details() {
		if v, ok := d.(T); ok {
			return v, true
		}
	}
	var zero T
	return zero, false
}

// poll calls check until it returns nil or waitFor has passed.
func poll(t *testing.T, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, waitFor, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// session is an open Session stream whose frames a goroutine reads into a
// channel, so that tests can wait for them with a deadline.
type session struct {
	t      *testing.T
	stream grpc.BidiStreamingClient[clientv1.SessionRequest, clientv1.SessionResponse]
	cancel context.CancelFunc
	frames chan *clientv1.SessionResponse
	stop   chan struct{} // closed by close: the reader stops
	closed sync.Once
	done   chan struct{} // closed when the reader has stopped
	err    error         // why the stream ended; read after done
	// queued holds the rest of a Deliveries frame nextDelivery took.
	queued []*clientv1.Delivery

	mu sync.Mutex
	// hold, while not nil, stops the reader before its next Recv until it
	// is closed.
	hold chan struct{}
}

// sessionConfig is how openSessionWith opens a stream.
type sessionConfig struct {
	// client defaults to the region's.
	client clientv1.ClientServiceClient
	// deliveries declares that the client reads Deliveries frames.
	deliveries bool
}

// openSession starts a Session stream as u and returns it without reading
// anything; the stream is cancelled in t.Cleanup.
func (r *region) openSession(t *testing.T, u *user) *session {
	t.Helper()
	return r.openSessionWith(t, u, sessionConfig{})
}

// openSessionWith is openSession as c says.
func (r *region) openSessionWith(t *testing.T, u *user, c sessionConfig) *session {
	t.Helper()
	if c.client == nil {
		c.client = r.client
	}
	ctx, cancel := context.WithCancel(u.ctx)
	stream, err := c.client.Session(ctx)
	if err != nil {
		cancel()
		t.Fatalf("Session: %v", err)
	}
	if c.deliveries {
		err := stream.Send(&clientv1.SessionRequest{Kind: &clientv1.SessionRequest_Capabilities{Capabilities: &clientv1.Capabilities{Deliveries: true}}})
		if err != nil && !errors.Is(err, io.EOF) { // on io.EOF, Recv says why
			cancel()
			t.Fatalf("Send Capabilities: %v", err)
		}
	}
	s := &session{
		t:      t,
		stream: stream,
		cancel: cancel,
		frames: make(chan *clientv1.SessionResponse, 4096),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		for {
			s.mu.Lock()
			hold := s.hold
			s.mu.Unlock()
			if hold != nil {
				select {
				case <-hold:
				case <-s.stop:
					s.err = errors.New("closed by the test")
					return
				}
			}
			r, err := stream.Recv()
			if err != nil {
				s.err = err
				return
			}
			select {
			case s.frames <- r:
			case <-s.stop:
				s.err = errors.New("closed by the test")
				return
			}
		}
	}()
	t.Cleanup(s.close)
	return s
}

// startSession opens a Session stream as u and returns it with its Ready.
func (r *region) startSession(t *testing.T, u *user) (*session, *clientv1.Ready) {
	t.Helper()
	return r.startSessionWith(t, u, sessionConfig{})
}

// startSessionWith is startSession as c says. The capabilities c declares
// are in force when it returns.
func (r *region) startSessionWith(t *testing.T, u *user, c sessionConfig) (*session, *clientv1.Ready) {
	t.Helper()
	s := r.openSessionWith(t, u, c)
	f := s.next()
	if f.GetReady() == nil {
		t.Fatalf("first frame is %v, want Ready", f)
	}
	if c.deliveries {
		// The server applies a session's frames in order: once the Pong
		// is back, so are the capabilities.
		const nonce = 1<<64 - 1
		s.ping(nonce)
		s.nextMatching("Pong", func(f *clientv1.SessionResponse) bool { return f.GetPong().GetNonce() == nonce })
	}
	return s, f.GetReady()
}

// pause stops the reader after at most one more frame, until resume. The
// frames the server sends meanwhile wait in gRPC's flow-control windows,
// and once those are full, in the session's queue.
func (s *session) pause() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hold == nil {
		s.hold = make(chan struct{})
	}
}

// resume lets a paused reader go on.
func (s *session) resume() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hold != nil {
		close(s.hold)
		s.hold = nil
	}
}

// close cancels the stream and waits for the reader to stop.
func (s *session) close() {
	s.closed.Do(func() { close(s.stop) })
	s.cancel()
	select {
	case <-s.done:
	case <-time.After(waitFor):
		s.t.Errorf("session reader did not stop within %v", waitFor)
	}
}

// closeSend ends the client's half of the stream, as a client that leaves
// politely does, and waits for the server to end the stream.
func (s *session) closeSend() {
	s.t.Helper()
	if err := s.stream.CloseSend(); err != nil {
		s.t.Fatalf("CloseSend: %v", err)
	}
	select {
	case <-s.done:
	case <-time.After(waitFor):
		s.t.Fatalf("stream did not end within %v of CloseSend", waitFor)
	}
}

// next returns the next frame, failing the test if none comes in time.
func (s *session) next() *clientv1.SessionResponse {
	s.t.Helper()
	f, ok := s.nextWithin(waitFor)
	if !ok {
		s.t.Fatalf("no frame within %v (stream ended: %v)", waitFor, s.endErr())
	}
	return f
}

// nextWithin returns the next frame, or false when none arrives within d
// or the stream ends.
func (s *session) nextWithin(d time.Duration) (*clientv1.SessionResponse, bool) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case f := <-s.frames:
		return f, true
	case <-timer.C:
		return nil, false
	case <-s.done:
		// Frames read before the end are still in the channel.
		select {
		case f := <-s.frames:
			return f, true
		default:
			return nil, false
		}
	}
}

// nextMatching skips frames until one satisfies match.
func (s *session) nextMatching(what string, match func(*clientv1.SessionResponse) bool) *clientv1.SessionResponse {
	s.t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		f, ok := s.nextWithin(time.Until(deadline))
		if !ok {
			s.t.Fatalf("no %s within %v (stream ended: %v)", what, waitFor, s.endErr())
		}
		if match(f) {
			return f
		}
	}
}

// nextDelivery skips presence frames and returns the next delivery, of a
// Delivery frame or in a Deliveries frame; any other frame fails the test.
func (s *session) nextDelivery() *clientv1.Delivery {
	s.t.Helper()
	if len(s.queued) > 0 {
		d := s.queued[0]
		s.queued = s.queued[1:]
		return d
	}
	for {
		f := s.next()
		switch {
		case f.GetDelivery() != nil:
			return f.GetDelivery()
		case len(f.GetDeliveries().GetDeliveries()) > 0:
			s.queued = f.GetDeliveries().GetDeliveries()[1:]
			return f.GetDeliveries().GetDeliveries()[0]
		case f.GetPresence() != nil:
			continue
		default:
			s.t.Fatalf("got %v, want a Delivery", f)
		}
	}
}

// ack acknowledges deliveries.
func (s *session) ack(ids ...uint64) {
	s.t.Helper()
	err := s.stream.Send(&clientv1.SessionRequest{Kind: &clientv1.SessionRequest_Ack{Ack: &clientv1.Ack{DeliveryIds: ids}}})
	if err != nil {
		s.t.Fatalf("Send Ack: %v", err)
	}
}

// endErr is why the stream ended, or nil while it is open.
func (s *session) endErr() error {
	select {
	case <-s.done:
		if s.err == nil {
			return errors.New("ended without error")
		}
		return s.err
	default:
		return nil
	}
}

// waitEnd waits up to d for the stream to end and returns its error.
func (s *session) waitEnd(d time.Duration) error {
	s.t.Helper()
	select {
	case <-s.done:
		return s.err
	case <-time.After(d):
		s.t.Fatalf("stream still open after %v", d)
		return nil
	}
}
