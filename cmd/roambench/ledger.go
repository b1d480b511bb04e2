package main

import (
	"math/bits"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"google.golang.org/grpc/codes"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
)

// The ledger is the run's accounting: what was sent and committed, what
// every recipient received, and the latency of each delivery. Senders, the
// sessions' receive loops and catch-up fetches write it concurrently; the
// report reads it when they have stopped.
type ledger struct {
	pop   *population
	base  time.Time // the process clock that send times are taken from
	delay time.Duration

	// The measured window, as offsets from base: sends stamped in it count
	// towards latency, commits and deliveries that happen in it towards
	// throughput.
	from, to atomic.Int64

	shards [histShards]histShard
	groups []groupLedger
	users  []userLedger

	sent, committed, committedInWindow atomic.Int64
	accepted                           atomic.Int64                            // answered ACCEPTED, not COMMITTED
	errs                               [codes.Unauthenticated + 2]atomic.Int64 // by code; the last slot for other errors
	deliveries, deliveriesInWindow     atomic.Int64
	// unique counts (recipient, group, seq) received for the first time,
	// live or by catch-up; expected counts what every member of the group
	// of each committed message should receive.
	unique, expected                        atomic.Int64
	duplicates, caughtUp, reordered, resent atomic.Int64
	foreign, catchUpDropped                 atomic.Int64
	sessionErrs                             atomic.Int64
	firstSessionErr                         atomic.Pointer[string]
}

// histShards spreads latency recording over locks.
const histShards = 8

// Histogram range: 1µs to 60s at 3 significant digits.
const (
	histMin    = 1
	histMax    = 60_000_000
	histDigits = 3
)

// Path classes: whether sender and recipient are in the same region.
const (
	sameRegion = iota
	crossRegion
	classes
)

// maxHops is the most links a delivery crosses: the submit to the group's
// home, and the delivery from the home to the recipient's region.
const maxHops = 2

// hists are the latency histograms, in microseconds.
type hists struct {
	latency  [classes]*hdrhistogram.Histogram
	overhead [classes]*hdrhistogram.Histogram // latency minus hops × link delay
	byHops   [maxHops + 1]*hdrhistogram.Histogram
	// commit is SendMessage's round trip, by whether the group is homed
	// in the sender's region.
	commit [classes]*hdrhistogram.Histogram
}

type histShard struct {
	mu sync.Mutex
	h  hists
}

func newHists() hists {
	var h hists
	for i := range h.latency {
		h.latency[i] = hdrhistogram.New(histMin, histMax, histDigits)
		h.overhead[i] = hdrhistogram.New(histMin, histMax, histDigits)
		h.commit[i] = hdrhistogram.New(histMin, histMax, histDigits)
	}
	for i := range h.byHops {
		h.byHops[i] = hdrhistogram.New(histMin, histMax, histDigits)
	}
	return h
}

func (h hists) merge(o hists) {
	for i := range h.latency {
		h.latency[i].Merge(o.latency[i])
		h.overhead[i].Merge(o.overhead[i])
		h.commit[i].Merge(o.commit[i])
	}
	for i := range h.byHops {
		h.byHops[i].Merge(o.byHops[i])
	}
}

type groupLedger struct {
	mu        sync.Mutex
	committed bitset // by seq
}

// userLedger is one recipient's receipts in its groups.
type userLedger struct {
	mu     sync.Mutex
	groups map[int]*receipts
}

type receipts struct {
	live bitset // received on the session stream
	any  bitset // live or by catch-up
	last uint64 // highest seq received live
}

func newLedger(pop *population, delay time.Duration) *ledger {
	l := &ledger{
		pop:    pop,
		base:   time.Now(),
		delay:  delay,
		groups: make([]groupLedger, len(pop.groups)),
		users:  make([]userLedger, len(pop.users)),
	}
	for i := range l.shards {
		l.shards[i].h = newHists()
	}
	for i := range l.users {
		l.users[i].groups = make(map[int]*receipts)
	}
	l.from.Store(int64(time.Hour * 24 * 365)) // nothing is measured until setWindow
	l.to.Store(int64(time.Hour * 24 * 365))
	return l
}

// now is the time since base on the monotonic clock.
func (l *ledger) now() time.Duration { return time.Since(l.base) }

func (l *ledger) setWindow(from, to time.Duration) {
	l.from.Store(int64(from))
	l.to.Store(int64(to))
}

func (l *ledger) inWindow(t time.Duration) bool {
	return int64(t) >= l.from.Load() && int64(t) < l.to.Load()
}

// The body of a benchmark message starts with its send time, as
// nanoseconds since base, then '|', then padding.
func encodeBody(sentAt time.Duration, size int) string {
	var b strings.Builder
	b.Grow(size)
	b.WriteString(strconv.FormatInt(int64(sentAt), 10))
	b.WriteByte('|')
	for b.Len() < size {
		b.WriteByte('.')
	}
	return b.String()
}

func decodeBody(body string) (time.Duration, bool) {
	ts, _, ok := strings.Cut(body, "|")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(ts, 10, 64)
	return time.Duration(n), err == nil
}

// sendFailed counts a send that returned err.
func (l *ledger) sendFailed(c codes.Code) {
	if int(c) < len(l.errs)-1 {
		l.errs[c].Add(1)
	} else {
		l.errs[len(l.errs)-1].Add(1)
	}
}

// committedMsg records a send's successful answer.
func (l *ledger) committedMsg(g *group, sender *user, seq uint64, sentAt, at time.Duration) {
	l.committed.Add(1)
	if l.inWindow(at) {
		l.committedInWindow.Add(1)
	}
	if l.inWindow(sentAt) {
		class := crossRegion
		if sender.region == g.home {
			class = sameRegion
		}
		s := &l.shards[sender.idx%histShards]
		s.mu.Lock()
		record(s.h.commit[class], at-sentAt)
		s.mu.Unlock()
	}
	gl := &l.groups[g.idx]
	gl.mu.Lock()
	dup := gl.committed.set(seq)
	gl.mu.Unlock()
	if !dup {
		l.expected.Add(int64(len(g.members)))
	}
}

// delivered records a message received live by recipient u.
func (l *ledger) delivered(u *user, d *clientv1.Delivery) {
	at := l.now()
	l.deliveries.Add(1)
	if l.inWindow(at) {
		l.deliveriesInWindow.Add(1)
	}
	if d.GetAttempt() > 1 {
		l.resent.Add(1)
	}
	m := d.GetMessage()
	g, sender := l.pop.groupByID[m.GetGroupId()], l.pop.userByID[m.GetSenderId()]
	sentAt, ok := decodeBody(m.GetBody())
	if g == nil || sender == nil || !ok {
		l.foreign.Add(1)
		return
	}
	ul := &l.users[u.idx]
	ul.mu.Lock()
	r := ul.receipts(g.idx)
	dup := r.live.set(m.GetSeq())
	first := !r.any.set(m.GetSeq())
	reordered := !dup && m.GetSeq() < r.last
	r.last = max(r.last, m.GetSeq())
	ul.mu.Unlock()
	switch {
	case dup:
		l.duplicates.Add(1)
		return
	case reordered:
		l.reordered.Add(1)
	}
	if !first {
		return // caught up before it arrived live
	}
	l.unique.Add(1)
	if !l.inWindow(sentAt) {
		return
	}
	lat := at - sentAt
	class := crossRegion
	if sender.region == u.region {
		class = sameRegion
	}
	hops := 0
	if sender.region != g.home {
		hops++
	}
	if g.home != u.region {
		hops++
	}
	overhead := max(lat-time.Duration(hops)*l.delay, 0)
	s := &l.shards[u.idx%histShards]
	s.mu.Lock()
	record(s.h.latency[class], lat)
	record(s.h.overhead[class], overhead)
	record(s.h.byHops[hops], lat)
	s.mu.Unlock()
}

// caughtUpMsg records a message recipient u fetched with GetHistory after
// a CatchUp.
func (l *ledger) caughtUpMsg(u *user, m *clientv1.Message) {
	g := l.pop.groupByID[m.GetGroupId()]
	if g == nil {
		l.foreign.Add(1)
		return
	}
	ul := &l.users[u.idx]
	ul.mu.Lock()
	had := ul.receipts(g.idx).any.set(m.GetSeq())
	ul.mu.Unlock()
	if !had {
		l.unique.Add(1)
		l.caughtUp.Add(1)
	}
}

func (l *ledger) sessionFailed(err error) {
	l.sessionErrs.Add(1)
	msg := err.Error()
	l.firstSessionErr.CompareAndSwap(nil, &msg)
}

func (ul *userLedger) receipts(g int) *receipts {
	r := ul.groups[g]
	if r == nil {
		r = new(receipts)
		ul.groups[g] = r
	}
	return r
}

func record(h *hdrhistogram.Histogram, d time.Duration) {
	_ = h.RecordValue(min(max(d.Microseconds(), histMin), histMax))
}

// merged returns the histograms of all shards together.
func (l *ledger) merged() hists {
	out := newHists()
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		out.merge(s.h)
		s.mu.Unlock()
	}
	return out
}

// tally compares, for every member of every group, what it received with
// what was committed. Call it once nothing writes the ledger.
func (l *ledger) tally() (missing, unconfirmed int64) {
	for _, g := range l.pop.groups {
		committed := l.groups[g.idx].committed
		for _, u := range g.members {
			var got bitset
			if r := l.users[u.idx].groups[g.idx]; r != nil {
				got = r.any
			}
			missing += committed.countNotIn(got)
			unconfirmed += got.countNotIn(committed)
		}
	}
	return missing, unconfirmed
}

// bitset is a growable set of small integers.
type bitset []uint64

// set adds i and reports whether it was there already.
func (b *bitset) set(i uint64) bool {
	w := int(i / 64)
	if w >= len(*b) {
		*b = append(*b, make([]uint64, w-len(*b)+1)...)
	}
	mask := uint64(1) << (i % 64)
	had := (*b)[w]&mask != 0
	(*b)[w] |= mask
	return had
}

// countNotIn counts the members of b that o lacks.
func (b bitset) countNotIn(o bitset) int64 {
	var n int64
	for w, x := range b {
		if w < len(o) {
			x &^= o[w]
		}
		n += int64(bits.OnesCount64(x))
	}
	return n
}
