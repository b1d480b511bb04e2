package datacenter

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/types/known/timestamppb"

	recordv1 "github.com/roamfed/roamfed/api/record/v1"
)

// ErrOutboxFull means a destination's outbox holds as much as it may; new
// cross-region work for it is refused until it drains.
var ErrOutboxFull = errors.New("datacenter: outbox full")

// DefaultMaxOutbox bounds each destination's outbox when Options.MaxOutbox
// is zero.
const DefaultMaxOutbox = 100_000

// outbox tracks each destination's queue: the next position to assign and
// what is in it.
type outbox struct {
	mu    sync.Mutex
	max   int
	peers map[string]*outboxQueue
}

type outboxQueue struct {
	loaded bool
	next   uint64 // next seq to assign
	items  int
	bytes  int64
	// writing holds the seqs assigned but not yet on disk. Readers see
	// only entries below the lowest of them, so that the outbox is read
	// in order even though concurrent enqueues finish out of order.
	writing map[uint64]struct{}
}

// horizon is the first seq readers may not see yet. The caller holds o.mu.
func (q *outboxQueue) horizon() uint64 {
	h := q.next
	for seq := range q.writing {
		h = min(h, seq)
	}
	return h
}

func outboxKey(peer string, seq uint64) []byte {
	return encodeSeqAppend(prefix(tagOutbox, peer), seq)
}

func encodeSeqAppend(b []byte, seq uint64) []byte {
	return append(b, encodeSeq(seq)...)
}

// queue returns peer's queue, loading its position and size from disk the
// first time. The caller holds o.mu.
func (s *Store) outboxQueueLocked(peer string) (*outboxQueue, error) {
	q := s.outbox.peers[peer]
	if q == nil {
		q = &outboxQueue{next: 1, writing: make(map[uint64]struct{})}
		s.outbox.peers[peer] = q
	}
	if q.loaded {
		return q, nil
	}
	err := s.scan(prefix(tagOutbox, peer), func(k, v []byte) error {
		seq, ok := decodeSeq(k[len(k)-8:])
		if !ok {
			return fmt.Errorf("%w: outbox key %q", ErrCorrupt, k)
		}
		q.next = max(q.next, seq+1)
		q.items++
		q.bytes += int64(len(v))
		return nil
	})
	if err != nil {
		return nil, err
	}
	q.loaded = true
	return q, nil
}

// Enqueue stores work for a destination region, synced, and returns its
// position. It fails with ErrOutboxFull when the destination's outbox is at
// its bound. e.Seq and e.QueuedAt are set here.
func (s *Store) Enqueue(peer string, e *recordv1.OutboxEntry) (uint64, error) {
	return s.enqueue(peer, e, pebble.Sync)
}

// EnqueueUnsynced is Enqueue without waiting for the disk: the entry is
// readable at once and becomes durable with the next synced write (every
// sync covers all writes before it), or with SyncWAL. A crash before then
// may lose it and whatever was queued after it, never an earlier entry
// alone, so the caller may tell no one the work is queued until it has
// called SyncWAL.
func (s *Store) EnqueueUnsynced(peer string, e *recordv1.OutboxEntry) (uint64, error) {
	return s.enqueue(peer, e, pebble.NoSync)
}

// SyncWAL makes every write made before it durable.
func (s *Store) SyncWAL() error {
	if s.isClosed() {
		return ErrClosed
	}
	if err := s.db.LogData(nil, pebble.Sync); err != nil {
		return fmt.Errorf("pebble sync: %w", err)
	}
	return nil
}

func (s *Store) enqueue(peer string, e *recordv1.OutboxEntry, opts *pebble.WriteOptions) (uint64, error) {
	if s.isClosed() {
		return 0, ErrClosed
	}
	s.outbox.mu.Lock()
	q, err := s.outboxQueueLocked(peer)
	if err != nil {
		s.outbox.mu.Unlock()
		return 0, err
	}
	if q.items >= s.outbox.max {
		s.outbox.mu.Unlock()
		return 0, fmt.Errorf("%w: %d items for %s", ErrOutboxFull, q.items, peer)
	}
	e.Seq = q.next
	e.QueuedAt = timestamppb.Now()
	v, err := marshal(e)
	if err != nil {
		s.outbox.mu.Unlock()
		return 0, err
	}
	q.next++
	q.items++
	q.bytes += int64(len(v))
	q.writing[e.Seq] = struct{}{}
	s.outbox.mu.Unlock()
	// Concurrent enqueues share syncs in Pebble's commit pipeline.
	err = s.db.Set(outboxKey(peer, e.Seq), v, opts)
	s.outbox.mu.Lock()
	delete(q.writing, e.Seq)
	if err != nil {
		q.items--
		q.bytes -= int64(len(v))
	}
	s.outbox.mu.Unlock()
	if err != nil {
		return 0, fmt.Errorf("pebble set outbox: %w", err)
	}
	return e.Seq, nil
}

// Outbox returns up to limit entries for peer with seq > after, in order.
func (s *Store) Outbox(peer string, after uint64, limit int) ([]*recordv1.OutboxEntry, error) {
	if s.isClosed() {
		return nil, ErrClosed
	}
	s.outbox.mu.Lock()
	q, err := s.outboxQueueLocked(peer)
	var horizon uint64
	if q != nil {
		horizon = q.horizon()
	}
	s.outbox.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if after+1 >= horizon {
		return nil, nil
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: outboxKey(peer, after+1), UpperBound: outboxKey(peer, horizon)})
	if err != nil {
		return nil, fmt.Errorf("pebble iter: %w", err)
	}
	defer it.Close()
	var out []*recordv1.OutboxEntry
	for ok := it.First(); ok && len(out) < limit; ok = it.Next() {
		e := new(recordv1.OutboxEntry)
		if err := unmarshal(it.Value(), e); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("pebble iter: %w", err)
	}
	return out, nil
}

// Dequeue removes delivered entries. Losing a removal in a crash only
// sends the work again, which the destination de-duplicates, so it is not
// synced.
func (s *Store) Dequeue(peer string, seqs ...uint64) error {
	if s.isClosed() {
		return ErrClosed
	}
	b := s.db.NewBatch()
	defer b.Close()
	s.outbox.mu.Lock()
	defer s.outbox.mu.Unlock()
	q, err := s.outboxQueueLocked(peer)
	if err != nil {
		return err
	}
	for _, seq := range seqs {
		k := outboxKey(peer, seq)
		v, closer, err := s.db.Get(k)
		if errors.Is(err, pebble.ErrNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("pebble get: %w", err)
		}
		q.items--
		q.bytes -= int64(len(v))
		closer.Close()
		_ = b.Delete(k, nil)
	}
	if b.Empty() {
		return nil
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("pebble commit outbox: %w", err)
	}
	return nil
}

// OutboxDepth returns how many entries and bytes wait for peer.
func (s *Store) OutboxDepth(peer string) (items int, bytes int64, err error) {
	s.outbox.mu.Lock()
	defer s.outbox.mu.Unlock()
	q, err := s.outboxQueueLocked(peer)
	if err != nil {
		return 0, 0, err
	}
	return q.items, q.bytes, nil
}
