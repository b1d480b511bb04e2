package clientkit

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

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
	// 100ms and 5s. The backoff starts over at RetryMin after a stream
	// that reached Ready. A refusal whose errdetails.RetryInfo asks for a
	// longer wait gets at least that wait, even past RetryMax, but counts
	// as a minute at most (maxRetryDelay); up to a quarter more is added
	// at random.
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
	box   *Inbox
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
		box:   NewInbox(),
		fill:  make(map[string]bool),
		tries: make(map[string]int),
		ready: make(chan struct{}),
		last:  make(map[string]uint64),
	}
	for g, after := range cfg.Start {
		f.box.Follow(g, after)
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
	b := backoff{min: f.cfg.RetryMin, max: f.cfg.RetryMax}
	for {
		ready, err := f.runStream(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if !Retryable(err) {
			return err
		}
		if f.cfg.OnError != nil {
			f.cfg.OnError(fmt.Errorf("session: %w", err))
		}
		if ready {
			// The region was healthy until this break: what broke the
			// stream (a restart, a network blip) is news, not the latest
			// of a run of failures, so the wait starts over.
			b.reset()
		}
		t := time.NewTimer(b.after(err))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// backoff spaces the attempts to open a stream: min after the first
// failure, then twice the last wait up to max, each less up to a quarter
// at random. reset starts over after a stream that reached Ready.
//
// Starting over means min again, not an immediate retry: the first
// reconnect after a long healthy stream still comes quickly (a user does
// not notice 100ms), but the clients a region restart cut off all at once
// do not all come back in the same instant, and the jitter has a wait to
// spread.
type backoff struct {
	min, max time.Duration
	wait     time.Duration // the last wait before jitter; 0 after reset
}

// next returns the wait before the next attempt.
func (b *backoff) next() time.Duration {
	b.wait = min(max(2*b.wait, b.min), b.max)
	return b.wait - time.Duration(rand.Int64N(int64(b.wait/4)+1))
}

func (b *backoff) reset() { b.wait = 0 }

// maxRetryDelay caps the wait a refusal's RetryInfo can ask for. A region
// asks for the time until its budget has room, seconds as a rule; a bogus
// value (hours, days) must not park a client that its own backoff would
// bring back within RetryMax.
const maxRetryDelay = time.Minute

// after returns the wait before the next attempt once err ended the last
// one: RetryWait of the backoff's next wait. The backoff advances either
// way, so a run of refusals still doubles its own wait.
func (b *backoff) after(err error) time.Duration { return RetryWait(err, b.next()) }

// RetryWait returns how long to wait before trying again after err: wait,
// or longer when err is a refusal (a RESOURCE_EXHAUSTED quota refusal,
// say) whose errdetails.RetryInfo asks for longer. Then the wait is the
// delay asked for, capped at maxRetryDelay, plus up to a quarter more at
// random: never sooner than asked, and the clients one refusal turned away
// at the same moment do not all come back at the same moment.
func RetryWait(err error, wait time.Duration) time.Duration {
	d, ok := RetryDelay(err)
	if !ok || d <= 0 {
		return wait
	}
	d = min(d, maxRetryDelay)
	return max(wait, d+time.Duration(rand.Int64N(int64(d/4)+1)))
}

// runStream runs one Session stream to its end, and says whether the
// stream got as far as the region's Ready.
func (f *Follower) runStream(ctx context.Context) (bool, error) {
	s, ready, err := OpenStream(WithToken(ctx, f.cfg.Token), f.cfg.API, f.cfg.CallTimeout)
	if err != nil {
		return false, err
	}
	defer s.Close()
	if f.cfg.OnReady != nil {
		f.cfg.OnReady(ready)
	}
	// Whatever was committed while no stream was open is read now; the
	// stream is registered first, so nothing falls in between.
	for _, g := range f.box.Followed() {
		f.fill[g] = true
	}
	f.once.Do(func() { close(f.ready) })

	ping := time.NewTicker(f.cfg.PingEvery)
	defer ping.Stop()
	gap := time.NewTimer(0) // fill at once what the loop above marked
	defer gap.Stop()
	armed := true
	for {
		if !armed && len(f.due()) > 0 {
			gap.Reset(f.cfg.GapGrace)
			armed = true
		}
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case err := <-s.Ended():
			return true, err
		case r := <-s.Frames():
			if err := f.handle(ctx, r, s.Ack); err != nil {
				return true, err
			}
		case <-ping.C:
			if err := s.Ping(2*f.cfg.PingEvery + f.cfg.CallTimeout); err != nil {
				return true, err
			}
		case <-gap.C:
			armed = false
			for _, g := range f.due() {
				if err := f.fillGroup(ctx, g, s.Ack); err != nil {
					return true, err
				}
			}
		}
	}
}

// handle acts on one frame of the stream.
func (f *Follower) handle(ctx context.Context, r *clientv1.SessionResponse, ack func([]uint64) error) error {
	now := time.Now()
	if ds := Deliveries(r); len(ds) > 0 {
		var ids []uint64
		for _, d := range ds {
			ids = f.live(d, now, ids)
		}
		return ack(ids)
	}
	switch k := r.GetKind().(type) {
	case *clientv1.SessionResponse_CatchUp:
		if f.cfg.OnCatchUp != nil {
			f.cfg.OnCatchUp(k.CatchUp)
		}
		f.box.Follow(k.CatchUp.GetGroupId(), 0)
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
	ready, a := f.box.Add(d.GetMessage(), Live, d.GetDeliveryId())
	f.release(ready, now)
	return append(ids, a...)
}

// due returns the groups whose history should be read now.
func (f *Follower) due() []string {
	out := f.box.Gapped()
	for g := range f.fill {
		if !slices.Contains(out, g) {
			out = append(out, g)
		}
	}
	return out
}

// fillGroup reads group's history after the last message released. A
// failed read is reported and left for the next round; only a failure of
// the stream itself (an ack that cannot be sent) is returned.
func (f *Follower) fillGroup(ctx context.Context, group string, ack func([]uint64) error) error {
	cctx, cancel := context.WithTimeout(WithToken(ctx, f.cfg.Token), f.cfg.CallTimeout)
	defer cancel()
	var ids []uint64
	_, err := ReadHistory(cctx, f.cfg.API, group, f.box.Last(group), func(m *clientv1.Message) {
		now := time.Now()
		if f.cfg.OnArrival != nil {
			f.cfg.OnArrival(Arrival{Message: m, Source: History, At: now})
		}
		ready, a := f.box.Add(m, History)
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
	if !slices.Contains(f.box.Gapped(), group) {
		delete(f.tries, group)
		return nil
	}
	// The whole log was read and the gap is still there.
	if f.tries[group]++; f.tries[group] < f.cfg.FillTries {
		return nil
	}
	delete(f.tries, group)
	from, to, ready, a := f.box.Skip(group)
	if f.cfg.OnSkip != nil && from <= to {
		f.cfg.OnSkip(group, from, to)
	}
	f.release(ready, time.Now())
	return ack(a)
}

func (f *Follower) release(ready []Released, at time.Time) {
	if len(ready) == 0 {
		return
	}
	for _, r := range ready {
		if f.cfg.OnMessage != nil {
			f.cfg.OnMessage(r.Message, r.Source, at)
		}
	}
	last := ready[len(ready)-1].Message
	f.mu.Lock()
	f.last[last.GetGroupId()] = last.GetSeq()
	f.mu.Unlock()
}
