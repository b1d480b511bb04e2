package clientkit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
)

// Source says how a message reached a client.
type Source int

const (
	// Live is a delivery on the Session stream.
	Live Source = iota + 1
	// History is a message read with GetHistory: a catch-up the region
	// asked for, a gap filled, or what was missed while reconnecting.
	History
)

func (s Source) String() string {
	switch s {
	case Live:
		return "live"
	case History:
		return "history"
	}
	return fmt.Sprintf("Source(%d)", int(s))
}

// Arrival is one message as it reached the client, before ordering and
// deduplication: every delivery (resends too) and every message a history
// read returned.
type Arrival struct {
	Message *clientv1.Message
	Source  Source
	// Attempt is the delivery's attempt (1 first, 2 the first resend);
	// 0 for history.
	Attempt uint32
	At      time.Time
}

// FollowerConfig sets up a Follower. API and Token are required; the
// callbacks may be nil. Callbacks run on the follower's goroutine, one at a
// time, and must not block for long: the stream waits meanwhile.
type FollowerConfig struct {
	API   clientv1.ClientServiceClient
	Token string
	// Start holds, per group, the seq after which to follow it. A group
	// that is not in Start is followed from its first message when it is
	// first seen.
	Start map[string]uint64

	// CallTimeout bounds each GetHistory and the wait for Ready; default
	// 10s.
	CallTimeout time.Duration
	// GapGrace is how long a gap may stay open before its history is read:
	// a delivery overtaken by the next one usually arrives within it.
	// Default 300ms.
	GapGrace time.Duration
	// FillTries is how many complete history reads may leave a gap open
	// before the follower skips it. Default 5.
	FillTries int
	// PingEvery is the keepalive interval; default 15s. A stream silent for
	// two intervals and a CallTimeout is taken as dead.
	PingEvery time.Duration
	// RetryMin and RetryMax bound the backoff between streams; default
	// 100ms and 5s.
	RetryMin, RetryMax time.Duration

	// OnReady is called for each stream's Ready.
	OnReady func(*clientv1.Ready)
	// OnArrival is called for every message that arrives.
	OnArrival func(Arrival)
	// OnMessage is called once per message, in sequence order per group:
	// what the application gets.
	OnMessage func(m *clientv1.Message, src Source, at time.Time)
	// OnReceipt is called for each Receipt.
	OnReceipt func(*clientv1.Receipt, time.Time)
	// OnCatchUp is called for each CatchUp, before the history is read.
	OnCatchUp func(*clientv1.CatchUp)
	// OnSkip is called when the follower gives up on a gap: messages from
	// through to were never found.
	OnSkip func(group string, from, to uint64)
	// OnError is called for errors the follower survives: a broken stream
	// (before it reconnects) or a failed history read (retried later).
	OnError func(error)
}

// Follower keeps one user's Session stream open, acknowledges deliveries,
// reads history when the region asks for a catch-up or a gap stays open,
// passes receipts on, and reconnects with backoff when the stream breaks.
type Follower struct {
	cfg   FollowerConfig
	box   *inbox
	fill  map[string]bool // groups whose history must be read
	tries map[string]int
	ready chan struct{}
	once  sync.Once
	// last is the highest seq released per group, for Last; guarded by mu
	// since Last may be called from any goroutine.
	mu   sync.Mutex
	last map[string]uint64
}

// NewFollower returns a follower; Run starts it.
func NewFollower(cfg FollowerConfig) *Follower {
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 10 * time.Second
	}
	if cfg.GapGrace <= 0 {
		cfg.GapGrace = 300 * time.Millisecond
	}
	if cfg.FillTries <= 0 {
		cfg.FillTries = 5
	}
	if cfg.PingEvery <= 0 {
		cfg.PingEvery = 15 * time.Second
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = 100 * time.Millisecond
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = max(5*time.Second, cfg.RetryMin)
	}
	f := &Follower{
		cfg:   cfg,
		box:   newInbox(),
		fill:  make(map[string]bool),
		tries: make(map[string]int),
		ready: make(chan struct{}),
		last:  make(map[string]uint64),
	}
	for g, after := range cfg.Start {
		f.box.follow(g, after)
		f.last[g] = after
	}
	return f
}

// Ready is closed when the first stream has sent Ready.
func (f *Follower) Ready() <-chan struct{} { return f.ready }

// Last returns the last seq released to the application for group.
func (f *Follower) Last(group string) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last[group]
}

// Run follows until ctx ends, then returns nil; or until an error a new
// stream would not cure (UNAUTHENTICATED, say), which it returns.
func (f *Follower) Run(ctx context.Context) error {
	wait := time.Duration(0)
	for {
		err := f.runStream(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if !retryable(err) {
			return err
		}
		if f.cfg.OnError != nil {
			f.cfg.OnError(fmt.Errorf("session: %w", err))
		}
		wait = min(max(2*wait, f.cfg.RetryMin), f.cfg.RetryMax)
		d := wait - time.Duration(rand.Int64N(int64(wait/4)+1))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// errSilent ends a stream that stopped answering pings.
var errSilent = errors.New("no word from the region; the stream looks dead")

// runStream runs one Session stream to its end.
func (f *Follower) runStream(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	stream, err := f.cfg.API.Session(WithToken(ctx, f.cfg.Token))
	if err != nil {
		cancel()
		return err
	}
	// The follower reads Deliveries frames; a region that predates them
	// ignores the frame. On io.EOF the stream has ended, and Recv says why.
	caps := &clientv1.SessionRequest{Kind: &clientv1.SessionRequest_Capabilities{Capabilities: &clientv1.Capabilities{Deliveries: true}}}
	if err := stream.Send(caps); err != nil && !errors.Is(err, io.EOF) {
		cancel()
		return fmt.Errorf("capabilities: %w", err)
	}
	events := make(chan *clientv1.SessionResponse)
	recvErr := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case events <- r:
			case <-ctx.Done():
				return
			}
		}
	})
	defer func() {
		cancel()
		wg.Wait()
	}()
	endErr := func(err error) error {
		if errors.Is(err, io.EOF) {
			return errors.New("the region ended the session")
		}
		return err
	}

	readyTimer := time.NewTimer(f.cfg.CallTimeout)
	defer readyTimer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case err := <-recvErr:
		return endErr(err)
	case <-readyTimer.C:
		return fmt.Errorf("no Ready within %s", f.cfg.CallTimeout)
	case r := <-events:
		rd := r.GetReady()
		if rd == nil {
			return fmt.Errorf("the region sent %T before Ready", r.GetKind())
		}
		if f.cfg.OnReady != nil {
			f.cfg.OnReady(rd)
		}
	}
	send := func(r *clientv1.SessionRequest) error { return stream.Send(r) }
	ack := func(ids []uint64) error {
		if len(ids) == 0 {
			return nil
		}
		if err := send(&clientv1.SessionRequest{Kind: &clientv1.SessionRequest_Ack{Ack: &clientv1.Ack{DeliveryIds: ids}}}); err != nil {
			return fmt.Errorf("ack: %w", err)
		}
		return nil
	}
	// Whatever was committed while no stream was open is read now; the
	// stream is registered first, so nothing falls in between.
	for _, g := range f.box.followed() {
		f.fill[g] = true
	}
	f.once.Do(func() { close(f.ready) })

	ping := time.NewTicker(f.cfg.PingEvery)
	defer ping.Stop()
	heard := time.Now()
	gap := time.NewTimer(0) // fill at once what the loop above marked
	defer gap.Stop()
	armed := true
	var nonce uint64
	for {
		if !armed && len(f.due()) > 0 {
			gap.Reset(f.cfg.GapGrace)
			armed = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-recvErr:
			return endErr(err)
		case r := <-events:
			heard = time.Now()
			if err := f.handle(ctx, r, ack); err != nil {
				return err
			}
		case <-ping.C:
			if time.Since(heard) > 2*f.cfg.PingEvery+f.cfg.CallTimeout {
				return errSilent
			}
			nonce++
			if err := send(&clientv1.SessionRequest{Kind: &clientv1.SessionRequest_Ping{Ping: &clientv1.Ping{Nonce: nonce}}}); err != nil {
				return fmt.Errorf("ping: %w", err)
			}
		case <-gap.C:
			armed = false
			for _, g := range f.due() {
				if err := f.fillGroup(ctx, g, ack); err != nil {
					return err
				}
			}
		}
	}
}

// handle acts on one frame of the stream.
func (f *Follower) handle(ctx context.Context, r *clientv1.SessionResponse, ack func([]uint64) error) error {
	now := time.Now()
	switch k := r.GetKind().(type) {
	case *clientv1.SessionResponse_Delivery:
		return ack(f.live(k.Delivery, now, nil))
	case *clientv1.SessionResponse_Deliveries:
		var ids []uint64
		for _, d := range k.Deliveries.GetDeliveries() {
			ids = f.live(d, now, ids)
		}
		return ack(ids)
	case *clientv1.SessionResponse_CatchUp:
		if f.cfg.OnCatchUp != nil {
			f.cfg.OnCatchUp(k.CatchUp)
		}
		f.box.follow(k.CatchUp.GetGroupId(), 0)
		return f.fillGroup(ctx, k.CatchUp.GetGroupId(), ack)
	case *clientv1.SessionResponse_Receipt:
		if f.cfg.OnReceipt != nil {
			f.cfg.OnReceipt(k.Receipt, now)
		}
	case *clientv1.SessionResponse_Ready:
		if f.cfg.OnReady != nil {
			f.cfg.OnReady(k.Ready)
		}
	}
	return nil
}

// live takes one delivery from the stream and returns ids with those to
// acknowledge now appended.
func (f *Follower) live(d *clientv1.Delivery, now time.Time, ids []uint64) []uint64 {
	if f.cfg.OnArrival != nil {
		f.cfg.OnArrival(Arrival{Message: d.GetMessage(), Source: Live, Attempt: d.GetAttempt(), At: now})
	}
	ready, a := f.box.add(d.GetMessage(), Live, d.GetDeliveryId())
	f.release(ready, now)
	return append(ids, a...)
}

// due returns the groups whose history should be read now.
func (f *Follower) due() []string {
	out := f.box.gapped()
	for g := range f.fill {
		if !contains(out, g) {
			out = append(out, g)
		}
	}
	return out
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// fillGroup reads group's history after the last message released. A
// failed read is reported and left for the next round; only a failure of
// the stream itself (an ack that cannot be sent) is returned.
func (f *Follower) fillGroup(ctx context.Context, group string, ack func([]uint64) error) error {
	cctx, cancel := context.WithTimeout(WithToken(ctx, f.cfg.Token), f.cfg.CallTimeout)
	defer cancel()
	var ids []uint64
	_, err := ReadHistory(cctx, f.cfg.API, group, f.box.last(group), func(m *clientv1.Message) {
		now := time.Now()
		if f.cfg.OnArrival != nil {
			f.cfg.OnArrival(Arrival{Message: m, Source: History, At: now})
		}
		ready, a := f.box.add(m, History)
		f.release(ready, now)
		ids = append(ids, a...)
	})
	if aerr := ack(ids); aerr != nil {
		return aerr
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		f.fill[group] = true
		if f.cfg.OnError != nil {
			f.cfg.OnError(fmt.Errorf("history of %s: %w", group, err))
		}
		return nil
	}
	delete(f.fill, group)
	if !contains(f.box.gapped(), group) {
		delete(f.tries, group)
		return nil
	}
	// The whole log was read and the gap is still there.
	if f.tries[group]++; f.tries[group] < f.cfg.FillTries {
		return nil
	}
	delete(f.tries, group)
	from, to, ready, a := f.box.skip(group)
	if f.cfg.OnSkip != nil && from <= to {
		f.cfg.OnSkip(group, from, to)
	}
	f.release(ready, time.Now())
	return ack(a)
}

func (f *Follower) release(ready []released, at time.Time) {
	if len(ready) == 0 {
		return
	}
	for _, r := range ready {
		if f.cfg.OnMessage != nil {
			f.cfg.OnMessage(r.msg, r.src, at)
		}
	}
	last := ready[len(ready)-1].msg
	f.mu.Lock()
	f.last[last.GetGroupId()] = last.GetSeq()
	f.mu.Unlock()
}

// retryable reports whether a new stream may cure err.
func retryable(err error) bool {
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
