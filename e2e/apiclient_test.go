package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
)

// Time limits of the client-API helpers. As with the harness's, a healthy
// run takes a small part of each.
const (
	// callTimeout bounds one unary call.
	callTimeout = 15 * time.Second
	// retryTimeout bounds the retries of a call whose region or route
	// is away for a moment (a restart, links still coming up).
	retryTimeout = 45 * time.Second
	// readyWait bounds the wait for a Session stream's Ready.
	readyWait = 15 * time.Second
)

// dialRegion returns a client of r's client API; the connection is closed
// when the test ends. A region that restarts keeps its address, and the
// connection comes back to it within a second of its return.
func dialRegion(t *testing.T, r *Region) clientv1.ClientServiceClient {
	t.Helper()
	cc, err := grpc.NewClient(r.Addr(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: 5 * time.Second,
		}))
	if err != nil {
		t.Fatalf("dial region %s: %v", r.Name, err)
	}
	t.Cleanup(func() { cc.Close() })
	return clientv1.NewClientServiceClient(cc)
}

// transient reports whether a failed call may succeed when made again: the
// region or the route to a group's home is away for a moment, or a budget
// is spent for now.
func transient(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted:
		return true
	}
	return false
}

// explain adds what the test knows to a call's error: a region that
// answers CANCELED to a call whose context was not canceled passes on the
// cancellation of a call of its own, which the client cannot tell from
// its own and will not retry.
func explain(ctx context.Context, err error) error {
	if status.Code(err) == codes.Canceled && ctx.Err() == nil {
		return fmt.Errorf("the region answered CANCELED to a call the client did not cancel: %w", err)
	}
	return err
}

// retry calls f, with a fresh callTimeout each time, until it succeeds,
// fails for good (not transient), or retryTimeout has passed since the
// first call. It returns f's last error.
func retry(ctx context.Context, f func(ctx context.Context) error) error {
	deadline := time.Now().Add(retryTimeout)
	wait := 50 * time.Millisecond
	for {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		err := explain(cctx, f(cctx))
		cancel()
		if err == nil || !transient(err) || ctx.Err() != nil || time.Now().Add(wait).After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// apiUser is a user logged in at one region over the client API.
type apiUser struct {
	name  string
	id    string
	home  string // the user's home region
	at    *Region
	api   clientv1.ClientServiceClient
	token string
}

func (u *apiUser) String() string { return u.name + "@" + u.at.Name }

// auth returns ctx carrying the user's token.
func (u *apiUser) auth(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+u.token)
}

// registerAPI registers name at region r over the client API and checks
// that r is the account's home.
func registerAPI(t *testing.T, r *Region, name string) {
	t.Helper()
	api := dialRegion(t, r)
	var resp *clientv1.RegisterResponse
	err := retry(t.Context(), func(ctx context.Context) (err error) {
		resp, err = api.Register(ctx, &clientv1.RegisterRequest{Username: name, Password: password(name)})
		return err
	})
	if err != nil {
		t.Fatalf("register %s at %s: %v", name, r.Name, err)
	}
	if resp.GetHomeRegion() != r.Name {
		t.Fatalf("register %s at %s: home region %q, want %q", name, r.Name, resp.GetHomeRegion(), r.Name)
	}
}

// loginAPI logs name in at region r over the client API, and checks that
// r served the login and that the user's home is home.
func loginAPI(t *testing.T, r *Region, name, home string) *apiUser {
	t.Helper()
	u := &apiUser{name: name, at: r, api: dialRegion(t, r)}
	var resp *clientv1.LoginResponse
	err := retry(t.Context(), func(ctx context.Context) (err error) {
		resp, err = u.api.Login(ctx, &clientv1.LoginRequest{Username: name, Password: password(name)})
		return err
	})
	if err != nil {
		t.Fatalf("login %s: %v", u, err)
	}
	if resp.GetRegion() != r.Name || resp.GetHomeRegion() != home {
		t.Fatalf("login %s: served by %q, home %q; want %q, %q", u, resp.GetRegion(), resp.GetHomeRegion(), r.Name, home)
	}
	u.id, u.home, u.token = resp.GetUserId(), resp.GetHomeRegion(), resp.GetToken()
	return u
}

// history reads a group's whole log through u's region, page by page.
func (u *apiUser) history(ctx context.Context, group string, after uint64) ([]*clientv1.Message, error) {
	var all []*clientv1.Message
	empty := 0 // pages in a row with no message
	for {
		var page *clientv1.GetHistoryResponse
		err := retry(ctx, func(ctx context.Context) (err error) {
			page, err = u.api.GetHistory(u.auth(ctx), &clientv1.GetHistoryRequest{GroupId: group, AfterSeq: after, Limit: 1000})
			return err
		})
		if err != nil {
			return all, fmt.Errorf("history of %s as %s after #%d: %w", group, u, after, err)
		}
		for _, m := range page.GetMessages() {
			if m.GetSeq() <= after {
				return all, fmt.Errorf("history of %s as %s: #%d in a page after #%d", group, u, m.GetSeq(), after)
			}
			after = m.GetSeq()
			all = append(all, m)
		}
		if !page.GetHasMore() {
			return all, nil
		}
		// A page may be empty and still say more follows: the home
		// reads the log's end before the page, and leaves what was
		// committed in between for the next one.
		if len(page.GetMessages()) > 0 {
			empty = 0
		} else if empty++; empty > 100 {
			return all, fmt.Errorf("history of %s as %s: %d empty pages after #%d in a row say more follows", group, u, empty, after)
		}
	}
}

// receiver is a client that follows one group on Session streams, the way
// a careful app would: it acknowledges every delivery, keeps the group's
// messages in sequence order once each, and fills what it lacks from
// GetHistory when a stream (re)starts, on CatchUp, and when a delivery
// comes past a gap. A broken stream is reopened at once, and again every
// 200ms while the region is away.
type receiver struct {
	u     *apiUser
	group string

	mu      sync.Mutex
	held    []*clientv1.Message            // seqs 1..len(held), in order
	ahead   map[uint64]*clientv1.Message   // live deliveries past a gap
	streams int                            // Session streams that got Ready
	region  string                         // Ready.region of the latest stream
	stats   receiverStats                  //
	bad     []string                       // what a correct region never does
	changed chan struct{}                  // closed at the next change
	cancel  context.CancelFunc             //
	done    chan struct{}                  // closed when run returned
	lastErr error                          // why the latest stream ended
	breaks  []string                       // why each stream ended, and when
	byID    map[string]*clientv1.Message   // message id -> message, of held
	seen    map[uint64]map[string]struct{} // seq -> message ids seen, for bad
}

// receiverStats counts what a receiver saw.
type receiverStats struct {
	Live     int // messages held that came on the stream
	Filled   int // messages held that came from GetHistory
	Dup      int // deliveries of messages already held or waiting
	Resent   int // deliveries with attempt > 1
	Reorder  int // first deliveries below an earlier one of the same stream
	CatchUps int
	Gaps     int // deliveries that came past a gap
	Fills    int // GetHistory reads
	Breaks   int // streams that ended
}

// startReceiver starts following group as u; it stops when the test ends.
func startReceiver(t *testing.T, u *apiUser, group string) *receiver {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &receiver{
		u: u, group: group,
		ahead:   make(map[uint64]*clientv1.Message),
		byID:    make(map[string]*clientv1.Message),
		seen:    make(map[uint64]map[string]struct{}),
		changed: make(chan struct{}),
		cancel:  cancel,
		done:    make(chan struct{}),
	}
	go r.run(ctx)
	t.Cleanup(r.stop)
	return r
}

func (r *receiver) stop() {
	r.cancel()
	<-r.done
}

func (r *receiver) run(ctx context.Context) {
	defer close(r.done)
	for ctx.Err() == nil {
		err := r.runStream(ctx)
		r.mu.Lock()
		r.stats.Breaks++
		r.lastErr = err
		if ctx.Err() == nil {
			r.breaks = append(r.breaks, fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), err))
		}
		r.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// runStream runs one Session stream until it breaks.
func (r *receiver) runStream(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := r.u.api.Session(r.u.auth(ctx))
	if err != nil {
		return err
	}
	if err := stream.Send(&clientv1.SessionRequest{Kind: &clientv1.SessionRequest_Capabilities{
		Capabilities: &clientv1.Capabilities{Deliveries: true},
	}}); err != nil && !errors.Is(err, io.EOF) { // on io.EOF, Recv says why
		return err
	}
	noReady := time.AfterFunc(readyWait, cancel)
	first, err := stream.Recv()
	if !noReady.Stop() {
		return fmt.Errorf("no Ready within %s", readyWait)
	}
	if err != nil {
		return err
	}
	ready := first.GetReady()
	if ready == nil {
		r.note("stream began with %T, not Ready", first.GetKind())
		return errors.New("no Ready first")
	}
	r.mu.Lock()
	r.streams++
	r.region = ready.GetRegion()
	r.mu.Unlock()
	r.signal()
	// Registered before Ready: what was committed before is in the
	// history, what after comes on the stream.
	if err := r.fill(ctx); err != nil {
		return err
	}
	var lastLive uint64
	for {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		switch k := resp.GetKind().(type) {
		case *clientv1.SessionResponse_Delivery:
			if err := r.live(ctx, stream, []*clientv1.Delivery{k.Delivery}, &lastLive); err != nil {
				return err
			}
		case *clientv1.SessionResponse_Deliveries:
			if err := r.live(ctx, stream, k.Deliveries.GetDeliveries(), &lastLive); err != nil {
				return err
			}
		case *clientv1.SessionResponse_CatchUp:
			if k.CatchUp.GetGroupId() != r.group {
				continue
			}
			r.mu.Lock()
			r.stats.CatchUps++
			r.mu.Unlock()
			if err := r.fill(ctx); err != nil {
				return err
			}
		}
	}
}

// live takes the deliveries of one frame: it acknowledges them in one Ack,
// holds those of the group, and reads the history when they came past a
// gap. lastLive is the highest seq the stream has brought.
func (r *receiver) live(ctx context.Context, stream clientv1.ClientService_SessionClient, ds []*clientv1.Delivery, lastLive *uint64) error {
	ids := make([]uint64, len(ds))
	for i, d := range ds {
		ids[i] = d.GetDeliveryId()
	}
	if err := stream.Send(&clientv1.SessionRequest{Kind: &clientv1.SessionRequest_Ack{
		Ack: &clientv1.Ack{DeliveryIds: ids},
	}}); err != nil {
		return err
	}
	r.mu.Lock()
	for _, d := range ds {
		m := d.GetMessage()
		if m.GetGroupId() != r.group {
			continue
		}
		if d.GetAttempt() > 1 {
			r.stats.Resent++
		} else if m.GetSeq() < *lastLive {
			r.stats.Reorder++
		}
		*lastLive = max(*lastLive, m.GetSeq())
		r.addLocked(m, true)
		if len(r.ahead) > 0 {
			r.stats.Gaps++
		}
	}
	gap := len(r.ahead) > 0
	r.mu.Unlock()
	r.signal()
	if gap {
		return r.fill(ctx)
	}
	return nil
}

// fill reads the group's history after the last message held.
func (r *receiver) fill(ctx context.Context) error {
	r.mu.Lock()
	after := uint64(len(r.held))
	r.stats.Fills++
	r.mu.Unlock()
	msgs, err := r.u.history(ctx, r.group, after)
	r.mu.Lock()
	for _, m := range msgs {
		r.addLocked(m, false)
	}
	r.mu.Unlock()
	r.signal()
	return err
}

// addLocked takes one message, from the stream (live) or the history.
func (r *receiver) addLocked(m *clientv1.Message, live bool) {
	seq := m.GetSeq()
	ids := r.seen[seq]
	if ids == nil {
		ids = make(map[string]struct{})
		r.seen[seq] = ids
	}
	if _, ok := ids[m.GetMessageId()]; !ok {
		ids[m.GetMessageId()] = struct{}{}
		if len(ids) == 2 {
			r.badLocked("#%d came as two different messages", seq)
		}
	}
	if seq == 0 {
		r.badLocked("a message without a sequence number: %v", m)
		return
	}
	if _, waiting := r.ahead[seq]; waiting || seq <= uint64(len(r.held)) {
		if live {
			r.stats.Dup++
		}
		return
	}
	if seq > uint64(len(r.held))+1 {
		r.ahead[seq] = m
		return
	}
	r.holdLocked(m, live)
	for {
		next, ok := r.ahead[uint64(len(r.held))+1]
		if !ok {
			break
		}
		delete(r.ahead, next.GetSeq())
		r.holdLocked(next, true)
	}
}

func (r *receiver) holdLocked(m *clientv1.Message, live bool) {
	r.held = append(r.held, m)
	r.byID[m.GetMessageId()] = m
	if live {
		r.stats.Live++
	} else {
		r.stats.Filled++
	}
}

func (r *receiver) note(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.badLocked(format, args...)
}

func (r *receiver) badLocked(format string, args ...any) {
	r.bad = append(r.bad, fmt.Sprintf(format, args...))
}

func (r *receiver) signal() {
	r.mu.Lock()
	defer r.mu.Unlock()
	close(r.changed)
	r.changed = make(chan struct{})
}

// waitFor waits until cond, called with the receiver locked, holds.
func (r *receiver) waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		ok, ch := cond(), r.changed
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			r.mu.Lock()
			defer r.mu.Unlock()
			t.Fatalf("%s's receiver: %s: not within %s; it holds %d, %d waiting past a gap, %d streams, %+v, last stream error: %v",
				r.u, what, timeout, len(r.held), len(r.ahead), r.streams, r.stats, r.lastErr)
		}
	}
}

// waitReady waits for the receiver's first Ready and returns the region
// it named.
func (r *receiver) waitReady(t *testing.T) string {
	t.Helper()
	r.waitFor(t, "a Session stream's Ready", readyWait+callTimeout, func() bool { return r.streams > 0 })
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.region
}

// waitHeld waits until the receiver holds n messages.
func (r *receiver) waitHeld(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	r.waitFor(t, fmt.Sprintf("holding %d messages", n), timeout, func() bool { return len(r.held) >= n })
}

// check compares what the receiver holds with the group's log at its home:
// the same messages, in the same order, once each.
func (r *receiver) check(t *testing.T, log []*clientv1.Message) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, b := range r.bad {
		t.Errorf("%s's receiver: %s", r.u, b)
	}
	if len(r.held) != len(log) || len(r.ahead) != 0 {
		t.Errorf("%s's receiver holds %d messages (%d more waiting past a gap), want %d", r.u, len(r.held), len(r.ahead), len(log))
	}
	for i := range min(len(r.held), len(log)) {
		if g, w := r.held[i], log[i]; g.GetSeq() != uint64(i+1) || g.GetMessageId() != w.GetMessageId() || g.GetBody() != w.GetBody() {
			t.Errorf("%s's receiver: message %d is #%d %s %q, want #%d %s %q", r.u, i+1,
				g.GetSeq(), g.GetMessageId(), g.GetBody(), w.GetSeq(), w.GetMessageId(), w.GetBody())
		}
	}
}

// Breaks says why each stream ended, and when.
func (r *receiver) Breaks() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.breaks...)
}

// Stats returns the receiver's counts so far.
func (r *receiver) Stats() receiverStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// sender sends n messages to a group as one user, one after another, each
// with its own client_msg_id. A send that fails for the moment, or that
// the region answers as accepted but not committed yet, is sent again with
// the same client_msg_id until the home commits it, within
// retryTimeout; the home stores it once however many times it came.
type sender struct {
	u     *apiUser
	group string
	n     int

	mu       sync.Mutex
	acks     []sendAck // one per message committed, in send order
	accepted int       // answers "accepted, not committed yet"
	failures map[codes.Code]int
	err      error // the send that failed for good, if any
}

// sendAck is the region's answer that committed a message.
type sendAck struct {
	clientMsgID string
	body        string
	messageID   string
	seq         uint64
	duplicate   bool
	tries       int
}

func newSender(u *apiUser, group string, n int) *sender {
	return &sender{u: u, group: group, n: n, failures: make(map[codes.Code]int)}
}

func (s *sender) clientMsgID(i int) string { return fmt.Sprintf("%s-%03d", s.u.name, i) }
func (s *sender) body(i int) string        { return fmt.Sprintf("%s says %d", s.u.name, i) }

// run sends the messages; committed is called after each commit.
func (s *sender) run(ctx context.Context, committed func()) {
	for i := 1; i <= s.n; i++ {
		ack, err := s.send(ctx, s.clientMsgID(i), s.body(i))
		s.mu.Lock()
		if err != nil {
			s.err = fmt.Errorf("%s: send %s: %w", s.u, s.clientMsgID(i), err)
			s.mu.Unlock()
			return
		}
		s.acks = append(s.acks, ack)
		s.mu.Unlock()
		committed()
	}
}

func (s *sender) send(ctx context.Context, id, body string) (sendAck, error) {
	deadline := time.Now().Add(retryTimeout)
	wait := 50 * time.Millisecond
	for tries := 1; ; tries++ {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		resp, err := s.u.api.SendMessage(s.u.auth(cctx), &clientv1.SendMessageRequest{GroupId: s.group, ClientMsgId: id, Body: body})
		err = explain(cctx, err)
		cancel()
		switch {
		case err == nil && resp.GetState() == clientv1.DeliveryState_DELIVERY_STATE_COMMITTED:
			if resp.GetSeq() == 0 {
				return sendAck{}, fmt.Errorf("committed without a sequence number: %v", resp)
			}
			return sendAck{clientMsgID: id, body: body, messageID: resp.GetMessageId(), seq: resp.GetSeq(),
				duplicate: resp.GetDuplicate(), tries: tries}, nil
		case err == nil && resp.GetState() == clientv1.DeliveryState_DELIVERY_STATE_ACCEPTED:
			s.mu.Lock()
			s.accepted++
			s.mu.Unlock()
		case err == nil:
			return sendAck{}, fmt.Errorf("answer in state %s: %v", resp.GetState(), resp)
		case transient(err) && ctx.Err() == nil:
			s.mu.Lock()
			s.failures[status.Code(err)]++
			s.mu.Unlock()
		default:
			return sendAck{}, err
		}
		if time.Now().Add(wait).After(deadline) {
			return sendAck{}, fmt.Errorf("not committed after %d tries in %s (last: %v)", tries, retryTimeout, err)
		}
		select {
		case <-ctx.Done():
			return sendAck{}, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
}

// summary says how the sends went, for the test log.
func (s *sender) summary() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	retried, dups := 0, 0
	for _, a := range s.acks {
		if a.tries > 1 {
			retried++
		}
		if a.duplicate {
			dups++
		}
	}
	var fails []string
	for c, n := range s.failures {
		fails = append(fails, fmt.Sprintf("%s×%d", c, n))
	}
	sort.Strings(fails)
	return fmt.Sprintf("%s: %d committed, %d retried (%d answered as duplicates), %d answers accepted-not-committed, transient failures [%s]",
		s.u, len(s.acks), retried, dups, s.accepted, strings.Join(fails, " "))
}
