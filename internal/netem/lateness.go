package netem

import (
	"sync/atomic"
	"time"
)

// Lateness counts how late delay lines handed chunks on after their due
// time. A delay line waits with a timer, and a timer fires late: the
// runtime's poller sleeps in whole milliseconds, and an idle VM takes its
// time to wake. A benchmark that subtracts the delay it asked for from a
// latency counts that lateness as its own; this is how much to take off.
// Chunks held by a cut are not counted. Safe for concurrent use.
type Lateness struct {
	buckets [latenessBuckets + 1]atomic.Uint64 // the last: latenessMax and beyond
}

const (
	latenessBucket  = 10 * time.Microsecond
	latenessBuckets = 2000 // up to 20 ms
	latenessMax     = latenessBucket * latenessBuckets
)

func (l *Lateness) record(d time.Duration) {
	i := min(int(max(d, 0)/latenessBucket), latenessBuckets)
	l.buckets[i].Add(1)
}

// Merge adds o's counts to l's.
func (l *Lateness) Merge(o *Lateness) {
	for i := range o.buckets {
		l.buckets[i].Add(o.buckets[i].Load())
	}
}

// Count is how many chunks were counted.
func (l *Lateness) Count() uint64 {
	var n uint64
	for i := range l.buckets {
		n += l.buckets[i].Load()
	}
	return n
}

// Quantile returns the lateness below which a fraction q of the chunks
// were handed on, to 10 µs; 20 ms or more reads as 20 ms. It is 0 when
// nothing was counted.
func (l *Lateness) Quantile(q float64) time.Duration {
	var counts [latenessBuckets + 1]uint64
	var n uint64
	for i := range l.buckets {
		counts[i] = l.buckets[i].Load()
		n += counts[i]
	}
	if n == 0 {
		return 0
	}
	rank := uint64(q * float64(n))
	if rank >= n {
		rank = n - 1
	}
	var seen uint64
	for i, c := range counts {
		seen += c
		if seen > rank {
			return min(time.Duration(i+1)*latenessBucket, latenessMax)
		}
	}
	return latenessMax
}
