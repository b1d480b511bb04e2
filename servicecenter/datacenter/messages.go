package datacenter

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"

	recordv1 "github.com/roamfed/roamfed/api/record/v1"
)

// Appended is the outcome of an Append.
type Appended struct {
	// Message is the stored message, with its sequence number. For a
	// duplicate it is the message first stored under the same key.
	Message *recordv1.Message
	// Duplicate is true when the idempotency key had been appended before
	// and nothing new was stored.
	Duplicate bool
}

// Append commits a message to its group's log: it assigns the next sequence
// number, stores the message and its idempotency key, and syncs. m must carry
// group_id, message_id, sender_id and client_msg_id; Append sets seq. The
// store takes ownership of m.
//
// If ctx ends first Append returns its error, and the message may or may
// not have been committed; appending it again with the same key is safe.
func (s *Store) Append(ctx context.Context, m *recordv1.Message) (Appended, error) {
	req := &appendReq{msg: m, done: make(chan struct{})}
	if err := s.commits.enqueue(ctx, req); err != nil {
		return Appended{}, err
	}
	select {
	case <-req.done:
		return req.res, req.err
	case <-ctx.Done():
		return Appended{}, ctx.Err()
	}
}

// OnCommit sets the function that sees every batch of newly committed
// messages, after their sync and before their Appends return. It is called
// from one goroutine, in commit order, so each group's messages arrive in
// sequence order; it must not block and must not modify the messages.
// Duplicates are not passed. A nil fn removes the hook.
func (s *Store) OnCommit(fn func([]*recordv1.Message)) {
	if fn == nil {
		s.onCommit.Store(nil)
		return
	}
	s.onCommit.Store(&fn)
}

// AppendAll appends msgs as Append does, queued together and in order, so
// that the messages of one group among them get increasing sequence
// numbers in slice order. It returns each message's outcome.
func (s *Store) AppendAll(ctx context.Context, msgs []*recordv1.Message) ([]Appended, []error) {
	return s.StartAppendAll(ctx, msgs)()
}

// StartAppendAll queues msgs as AppendAll does and returns at once with a
// function that waits for their outcomes. Callers that must keep the order
// of several batches (a peer's Submit stream) start them in order and wait
// for them together.
func (s *Store) StartAppendAll(ctx context.Context, msgs []*recordv1.Message) func() ([]Appended, []error) {
	res := make([]Appended, len(msgs))
	errs := make([]error, len(msgs))
	reqs := make([]*appendReq, len(msgs))
	for i, m := range msgs {
		reqs[i] = &appendReq{msg: m, done: make(chan struct{})}
	}
	if err := s.commits.enqueue(ctx, reqs...); err != nil {
		for i := range errs {
			errs[i] = err
		}
		return func() ([]Appended, []error) { return res, errs }
	}
	return func() ([]Appended, []error) {
		for i, r := range reqs {
			select {
			case <-r.done:
				res[i], errs[i] = r.res, r.err
			case <-ctx.Done():
				errs[i] = ctx.Err()
			}
		}
		return res, errs
	}
}

// LastSeq returns the sequence number of the group's newest message, 0 for
// an empty log.
func (s *Store) LastSeq(groupID string) (uint64, error) {
	if s.isClosed() {
		return 0, ErrClosed
	}
	return s.commits.lastSeq(groupID)
}

// History returns up to limit messages of a group with seq > after, in
// order, and whether more follow.
func (s *Store) History(groupID string, after uint64, limit int) ([]*recordv1.Message, bool, error) {
	if s.isClosed() {
		return nil, false, ErrClosed
	}
	lo := messageKey(groupID, after+1)
	if after == ^uint64(0) {
		return nil, false, nil
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: upperBound(prefix(tagMessage, groupID))})
	if err != nil {
		return nil, false, fmt.Errorf("pebble iter: %w", err)
	}
	defer it.Close()
	var out []*recordv1.Message
	more := false
	for ok := it.First(); ok; ok = it.Next() {
		if len(out) == limit {
			more = true
			break
		}
		m := new(recordv1.Message)
		if err := unmarshal(it.Value(), m); err != nil {
			return nil, false, err
		}
		out = append(out, m)
	}
	if err := it.Error(); err != nil {
		return nil, false, fmt.Errorf("pebble iter: %w", err)
	}
	return out, more, nil
}

// message reads one message of a group's log.
func (s *Store) message(groupID string, seq uint64) (*recordv1.Message, error) {
	m := new(recordv1.Message)
	ok, err := s.get(messageKey(groupID, seq), m)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: idempotency key points at missing message %s #%d", ErrCorrupt, groupID, seq)
	}
	return m, nil
}

type appendReq struct {
	msg  *recordv1.Message
	res  Appended
	err  error
	done chan struct{}
}

// committer is the commit queue. One goroutine takes every append waiting
// in the queue, assigns sequence numbers, writes them in one batch and syncs
// once; appends that arrive during the sync form the next batch.
type committer struct {
	s        *Store
	maxBatch int

	mu      sync.Mutex
	queue   []*appendReq
	wake    chan struct{} // one token: the queue is not empty
	stopped bool

	seqMu sync.Mutex
	seqs  map[string]uint64 // last committed seq per group, loaded lazily

	quit chan struct{}
	done chan struct{}
}

// errCommitterStopped is what appends see after Close.
var errCommitterStopped = fmt.Errorf("%w: commit queue stopped", ErrClosed)

func startCommitter(s *Store, maxBatch int) *committer {
	c := &committer{
		s:        s,
		maxBatch: maxBatch,
		wake:     make(chan struct{}, 1),
		seqs:     make(map[string]uint64),
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	go c.run()
	return c
}

func (c *committer) enqueue(ctx context.Context, rs ...*appendReq) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return errCommitterStopped
	}
	c.queue = append(c.queue, rs...)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return nil
}

// stop refuses new appends, commits those already queued, and waits.
func (c *committer) stop() {
	c.mu.Lock()
	c.stopped = true
	c.mu.Unlock()
	close(c.quit)
	<-c.done
}

func (c *committer) run() {
	defer close(c.done)
	for {
		select {
		case <-c.wake:
		case <-c.quit:
			// Drain what was queued before stop.
			for c.commitQueued() {
			}
			return
		}
		for c.commitQueued() {
		}
	}
}

// commitQueued commits up to maxBatch queued appends and reports whether
// it found any.
func (c *committer) commitQueued() bool {
	c.mu.Lock()
	n := min(len(c.queue), c.maxBatch)
	batch := c.queue[:n:n]
	c.queue = c.queue[n:]
	if len(c.queue) == 0 {
		c.queue = nil
	}
	c.mu.Unlock()
	if n == 0 {
		return false
	}
	c.commit(batch)
	return true
}

func (c *committer) commit(reqs []*appendReq) {
	b := c.s.db.NewBatch()
	defer b.Close()
	next := make(map[string]uint64)     // tentative last seq per group in this batch
	keys := make(map[string]*appendReq) // idempotency keys written in this batch
	var written []*appendReq
	var dups []*appendReq
	for _, r := range reqs {
		m := r.msg
		ik := key(tagIdem, m.GetGroupId(), m.GetSenderId(), m.GetClientMsgId())
		if first, ok := keys[string(ik)]; ok {
			r.res = Appended{Message: first.msg, Duplicate: true}
			dups = append(dups, r)
			continue
		}
		prev, err := c.s.getRaw(ik)
		if err != nil {
			r.err = err
			close(r.done)
			continue
		}
		if prev != nil {
			seq, ok := decodeSeq(prev)
			var stored *recordv1.Message
			if ok {
				stored, err = c.s.message(m.GetGroupId(), seq)
			} else {
				err = fmt.Errorf("%w: idempotency value %x", ErrCorrupt, prev)
			}
			r.res, r.err = Appended{Message: stored, Duplicate: true}, err
			close(r.done)
			continue
		}
		last, ok := next[m.GetGroupId()]
		if !ok {
			if last, err = c.lastSeq(m.GetGroupId()); err != nil {
				r.err = err
				close(r.done)
				continue
			}
		}
		m.Seq = last + 1
		v, err := marshal(m)
		if err != nil {
			m.Seq = 0 // as when a commit fails: no number was taken
			r.err = err
			close(r.done)
			continue
		}
		next[m.GetGroupId()] = m.Seq
		keys[string(ik)] = r
		_ = b.Set(messageKey(m.GetGroupId(), m.Seq), v, nil)
		_ = b.Set(ik, encodeSeq(m.Seq), nil)
		written = append(written, r)
	}
	var err error
	if len(written) > 0 {
		start := time.Now()
		err = b.Commit(pebble.Sync)
		if c.s.observe != nil {
			c.s.observe(len(written), time.Since(start))
		}
		if err != nil {
			err = fmt.Errorf("pebble commit messages: %w", err)
			c.s.log.Error("commit failed", slog.Any("err", err), slog.Int("messages", len(written)))
		}
	}
	if err == nil {
		c.seqMu.Lock()
		for g, seq := range next {
			c.seqs[g] = seq
		}
		c.seqMu.Unlock()
		if hook := c.s.onCommit.Load(); hook != nil && len(written) > 0 {
			msgs := make([]*recordv1.Message, len(written))
			for i, r := range written {
				msgs[i] = r.msg
			}
			(*hook)(msgs)
		}
	}
	for _, r := range written {
		if err != nil {
			// No sequence number was taken: the in-memory counters still
			// hold the last committed ones.
			r.msg.Seq = 0
			r.err = err
		} else {
			r.res = Appended{Message: r.msg}
		}
		close(r.done)
	}
	for _, r := range dups {
		if err != nil {
			r.res, r.err = Appended{}, err
		}
		close(r.done)
	}
}

// lastSeq returns the group's last committed sequence number, reading it
// from the log the first time.
func (c *committer) lastSeq(groupID string) (uint64, error) {
	c.seqMu.Lock()
	defer c.seqMu.Unlock()
	if seq, ok := c.seqs[groupID]; ok {
		return seq, nil
	}
	if c.s.isClosed() {
		return 0, ErrClosed
	}
	lo := prefix(tagMessage, groupID)
	it, err := c.s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: upperBound(lo)})
	if err != nil {
		return 0, fmt.Errorf("pebble iter: %w", err)
	}
	defer it.Close()
	var seq uint64
	if it.Last() {
		var ok bool
		if seq, ok = decodeSeq(it.Key()[len(lo):]); !ok {
			return 0, fmt.Errorf("%w: message key %q", ErrCorrupt, it.Key())
		}
	}
	if err := it.Error(); err != nil {
		return 0, fmt.Errorf("pebble iter: %w", err)
	}
	c.seqs[groupID] = seq
	return seq, nil
}
