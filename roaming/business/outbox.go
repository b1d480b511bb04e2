package business

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	recordv1 "github.com/roamfed/roamfed/api/record/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/servicecenter/businesscenter"
	"github.com/roamfed/roamfed/servicecenter/datacenter"
)

// Outbox drains one destination's durable outbox (datacenter.Enqueue) in
// order: submits go through the Submitter, location updates through the
// data service. An entry leaves the outbox when the destination has
// answered it for good: committed, or refused. Transient failures are
// retried with backoff and jitter.
type Outbox struct {
	peer     string
	store    *datacenter.Store
	sub      *Submitter
	location func(ctx context.Context, req *roamingv1.UpdateLocationRequest) error
	receipt  func(*recordv1.Receipt)
	log      *slog.Logger

	mu      sync.Mutex
	waiters map[string]chan outcome // by message id

	wake chan struct{}
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

type outcome struct {
	res datacenter.Appended
	err error
}

// OutboxConfig wires an Outbox.
type OutboxConfig struct {
	Peer      string
	Store     *datacenter.Store
	Submitter *Submitter
	// Location sends a location update to the peer.
	Location func(ctx context.Context, req *roamingv1.UpdateLocationRequest) error
	// Receipt is told the outcome of a submit nobody waits for any more.
	Receipt func(*recordv1.Receipt)
	Logger  *slog.Logger
}

// NewOutbox starts draining peer's outbox, beginning with what an earlier
// run left in it.
func NewOutbox(cfg OutboxConfig) *Outbox {
	o := &Outbox{
		peer:     cfg.Peer,
		store:    cfg.Store,
		sub:      cfg.Submitter,
		location: cfg.Location,
		receipt:  cfg.Receipt,
		log:      cfg.Logger.With(slog.String("peer", cfg.Peer), slog.String("component", "outbox")),
		waiters:  make(map[string]chan outcome),
		wake:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	go o.run()
	return o
}

// Stop ends draining; the outbox keeps what is left for the next start.
func (o *Outbox) Stop() {
	o.once.Do(func() { close(o.stop) })
	<-o.done
}

func (o *Outbox) poke() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// Submit queues m for the peer and waits up to wait for the home to commit
// it. When the wait ends first, it returns ErrAccepted: the message is safe
// in the outbox and its outcome goes to the receipt hook.
//
// The entry is written without waiting for the disk, so the sender's sync
// is not on the way to the home: the client learns nothing until the home
// has committed the message (synced there) or the outbox is synced, just
// before ErrAccepted. A crash in between loses an entry nobody was told
// of; the client's retry with the same client message id finds it
// committed at the home or queues it again.
func (o *Outbox) Submit(ctx context.Context, m *recordv1.Message, wait time.Duration) (datacenter.Appended, error) {
	ch := make(chan outcome, 1)
	id := m.GetMessageId()
	// Wait before queueing: the drainer may answer at once.
	o.mu.Lock()
	o.waiters[id] = ch
	o.mu.Unlock()
	if _, err := o.store.EnqueueUnsynced(o.peer, &recordv1.OutboxEntry{Work: &recordv1.OutboxEntry_Submit{Submit: m}}); err != nil {
		o.mu.Lock()
		delete(o.waiters, id)
		o.mu.Unlock()
		return datacenter.Appended{}, err
	}
	o.poke()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case r := <-ch:
		return r.res, r.err
	case <-t.C:
	case <-ctx.Done():
	}
	o.mu.Lock()
	// The outcome may have come as the wait ended.
	select {
	case r := <-ch:
		o.mu.Unlock()
		return r.res, r.err
	default:
	}
	delete(o.waiters, id)
	o.mu.Unlock()
	if err := o.store.SyncWAL(); err != nil {
		return datacenter.Appended{}, status.Errorf(codes.Unavailable, "message %s queued for %s but not synced: %v; retry with the same client message id", id, o.peer, err)
	}
	return datacenter.Appended{Message: m}, businesscenter.ErrAccepted
}

// UpdateLocation queues a location update for the peer.
func (o *Outbox) UpdateLocation(req *roamingv1.UpdateLocationRequest) error {
	_, err := o.store.Enqueue(o.peer, &recordv1.OutboxEntry{Work: &recordv1.OutboxEntry_Location{Location: &recordv1.LocationUpdate{
		UserId: req.GetUserId(), Region: req.GetRegion(), Online: req.GetOnline(),
	}}})
	if err == nil {
		o.poke()
	}
	return err
}

// drainBatch is how many entries one round sends.
const drainBatch = 1024

// A message that arrives while rounds are out goes in a round of its own
// at once instead of waiting a round trip for those before it; the Submit
// stream keeps them in order and the peer's window bounds the bytes
// outstanding. What is read from the outbox but not yet answered is
// bounded too: at most maxRounds rounds and maxInFlight entries. Under
// light load rounds hold a message or two each, so maxRounds must cover
// what arrives in a round trip over the slowest link.
const (
	maxRounds   = 256
	maxInFlight = 4 * drainBatch
)

// round is one read of the outbox on its way to the peer.
type round struct {
	entries []*recordv1.OutboxEntry
	// barrier rounds carry location updates: they go out alone, after
	// everything before them was answered and before anything after.
	barrier  bool
	outcomes []outcome
	done     chan struct{}
}

func (o *Outbox) run() {
	defer close(o.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-o.stop
		cancel()
	}()
	backoff := 50 * time.Millisecond
	// after is where the next read starts: everything up to it is in
	// flight or has been answered for good and removed, so reads do not
	// wade through the deletions of a long drain.
	var after uint64
	var inflight []*round
	var inflightEntries int
	// retryFrom, while failed, is the first seq a failed round left in
	// the outbox; no round starts until those in flight are settled.
	var failed bool
	var retryFrom uint64
	// behind is when a round last failed to drain, zero while the outbox
	// keeps up; caughtUp counts what went out since.
	var behind time.Time
	var caughtUp int
	for {
		room := min(drainBatch, maxInFlight-inflightEntries)
		if !failed && len(inflight) < maxRounds && room > 0 && (len(inflight) == 0 || !inflight[len(inflight)-1].barrier) {
			entries, err := o.store.Outbox(o.peer, after, room)
			if err != nil {
				o.log.Error("outbox unreadable", slog.Any("err", err))
			}
			if len(entries) > 0 {
				r := &round{entries: entries, barrier: hasLocation(entries), done: make(chan struct{})}
				if !r.barrier || len(inflight) == 0 {
					go o.send(ctx, r)
					inflight = append(inflight, r)
					inflightEntries += len(entries)
					after = entries[len(entries)-1].GetSeq()
					continue
				}
			}
		}
		var head <-chan struct{}
		var idle <-chan time.Time
		if len(inflight) > 0 {
			head = inflight[0].done
		} else {
			idle = time.After(time.Second)
		}
		select {
		case <-o.stop:
			for _, r := range inflight {
				<-r.done
			}
			return
		case <-o.wake:
			continue
		case <-idle:
			continue
		case <-head:
		}
		r := inflight[0]
		inflight = inflight[1:]
		inflightEntries -= len(r.entries)
		all, firstLeft := o.settle(r)
		if !all && (!failed || firstLeft < retryFrom) {
			retryFrom = firstLeft
		}
		failed = failed || !all
		if all && !behind.IsZero() {
			caughtUp += len(r.entries)
		}
		if len(inflight) > 0 {
			continue
		}
		if !failed {
			backoff = 50 * time.Millisecond
			if !behind.IsZero() {
				if items, _, _ := o.store.OutboxDepth(o.peer); items == 0 {
					o.log.Info("outbox caught up", slog.Int("sent", caughtUp), slog.Float64("behind_s", time.Since(behind).Seconds()))
					behind, caughtUp = time.Time{}, 0
				}
			}
			continue
		}
		// Every round is settled and one failed: read again from the
		// first entry left, after a pause.
		after, failed = retryFrom-1, false
		if behind.IsZero() {
			behind = time.Now()
			items, bytes, _ := o.store.OutboxDepth(o.peer)
			o.log.Info("outbox behind; retrying with backoff", slog.Int("items", items), slog.Int64("bytes", bytes))
		}
		// Jitter spreads the retries of many regions after a heal.
		d := backoff/2 + rand.N(backoff)
		select {
		case <-o.stop:
			return
		case <-time.After(d):
		case <-o.wake:
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

func hasLocation(entries []*recordv1.OutboxEntry) bool {
	for _, e := range entries {
		if e.GetLocation() != nil {
			return true
		}
	}
	return false
}

// send sends one round of entries, in order, and records each outcome.
func (o *Outbox) send(ctx context.Context, r *round) {
	defer close(r.done)
	entries := r.entries
	r.outcomes = make([]outcome, len(entries))
	// Runs of submits go to the submitter together, in order; a location
	// update waits for the submits before it.
	var run []int
	flush := func() {
		if len(run) == 0 {
			return
		}
		msgs := make([]*recordv1.Message, len(run))
		for j, i := range run {
			msgs[j] = entries[i].GetSubmit()
		}
		res, errs := o.sub.SubmitAll(ctx, msgs)
		for j, i := range run {
			r.outcomes[i] = outcome{res: res[j], err: errs[j]}
		}
		run = run[:0]
	}
	for i, e := range entries {
		switch w := e.GetWork().(type) {
		case *recordv1.OutboxEntry_Submit:
			run = append(run, i)
		case *recordv1.OutboxEntry_Location:
			flush()
			r.outcomes[i].err = o.location(ctx, &roamingv1.UpdateLocationRequest{
				UserId: w.Location.GetUserId(), Region: w.Location.GetRegion(), Online: w.Location.GetOnline(),
			})
		}
	}
	flush()
}

// settle removes the entries of a sent round that were answered for good
// and hands out their outcomes. It reports whether all were, and the
// first seq the round left in the outbox.
func (o *Outbox) settle(r *round) (bool, uint64) {
	entries := r.entries
	var done []uint64
	all := true
	firstLeft := entries[len(entries)-1].GetSeq() + 1
	for i, e := range entries {
		if transient(r.outcomes[i].err) {
			if all {
				firstLeft = e.GetSeq()
			}
			all = false
			continue
		}
		done = append(done, e.GetSeq())
		o.finish(e, r.outcomes[i])
	}
	if err := o.store.Dequeue(o.peer, done...); err != nil {
		o.log.Error("outbox dequeue failed", slog.Any("err", err))
		// Read the round again rather than skip what stayed.
		return false, entries[0].GetSeq()
	}
	return all, firstLeft
}

// finish hands an entry's outcome to its waiter, or to the receipt hook.
func (o *Outbox) finish(e *recordv1.OutboxEntry, r outcome) {
	m := e.GetSubmit()
	if m == nil {
		if r.err != nil {
			o.log.Warn("location update refused", slog.String("user", e.GetLocation().GetUserId()), slog.Any("err", r.err))
		}
		return
	}
	o.mu.Lock()
	ch, waiting := o.waiters[m.GetMessageId()]
	delete(o.waiters, m.GetMessageId())
	o.mu.Unlock()
	if waiting {
		ch <- r
		return
	}
	rc := &recordv1.Receipt{
		UserId: m.GetSenderId(), GroupId: m.GetGroupId(), MessageId: m.GetMessageId(), ClientMsgId: m.GetClientMsgId(),
	}
	if r.err != nil {
		st := status.Convert(r.err)
		rc.Code, rc.Error = int32(st.Code()), st.Message()
	} else {
		rc.MessageId = r.res.Message.GetMessageId()
		rc.Seq = r.res.Message.GetSeq()
		rc.CommittedAt = r.res.Message.GetCommittedAt()
	}
	if o.receipt != nil {
		o.receipt(rc)
	}
}

// transient reports whether an error may go away by sending again.
func transient(err error) bool {
	if err == nil {
		return false
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Aborted, codes.ResourceExhausted, codes.Unknown:
		return true
	}
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
