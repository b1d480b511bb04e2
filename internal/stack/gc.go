package stack

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// DefaultHeapFloor is the heap a region may grow to before its garbage
// collector runs, whatever the live heap: 256 MiB.
const DefaultHeapFloor = 256 << 20

// maxGCPercent bounds the GOGC the tuner sets, so that a process whose live
// heap is tiny does not let garbage grow without end between the runtime's
// forced collections (every two minutes).
const maxGCPercent = 1000

// TuneGC lets the heap grow to floor bytes before the garbage collector
// runs, unless GOGC is set in the environment. stop, which is nil when it
// did not tune, ends the tuning and restores Go's default.
//
// With Go's default (GOGC=100) the collector runs whenever the heap
// doubles. A region's live heap is small (~30 MB for one region and 300
// sessions), so at 1,000 messages/s it collected every 0.8 s, and each
// mark phase (12–17 ms) takes a quarter of the Ps and assists from the
// goroutines that allocate: the messages sent meanwhile wait. That was half
// of the one-region p99 (BENCHMARKS.md). After every collection the tuner
// sets GOGC so that the next one starts when the heap reaches floor,
// never below Go's default of 100 (a live heap above floor/2 is collected
// as Go would) and never above maxGCPercent. The runtime's memory limit
// (GOMEMLIMIT) still applies.
func TuneGC(floor uint64) (stop func()) {
	if os.Getenv("GOGC") != "" || floor == 0 {
		return nil
	}
	t := &gcTuner{floor: floor, sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}, percent: 100}
	t.tune()
	t.arm()
	return t.stop
}

type gcTuner struct {
	floor  uint64
	mu     sync.Mutex
	sample []metrics.Sample
	// percent is the GOGC in effect.
	percent int
	stopped bool
}

// gcSentinel is garbage from the moment it is allocated; its cleanup runs
// after the collection that finds it. It holds a pointer so that it is not
// batched with other tiny objects, whose cleanups may never run.
type gcSentinel struct {
	_ *gcTuner
	_ [16]byte
}

func (t *gcTuner) arm() {
	runtime.AddCleanup(new(gcSentinel), func(t *gcTuner) {
		if t.tune() {
			t.arm()
		}
	}, t)
}

func (t *gcTuner) stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stopped = true
	debug.SetGCPercent(100)
	t.percent = 100
}

// tune sets GOGC from the live heap the last collection left. It reports
// false once the tuner is stopped.
func (t *gcTuner) tune() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return false
	}
	metrics.Read(t.sample)
	if t.sample[0].Value.Kind() != metrics.KindUint64 {
		return true
	}
	p := gcPercent(t.sample[0].Value.Uint64(), t.floor)
	// Small changes are not worth a call: the next collection comes at
	// nearly the same heap.
	if p == t.percent || (p > t.percent*9/10 && p < t.percent*11/10) {
		return true
	}
	debug.SetGCPercent(p)
	t.percent = p
	return true
}

// gcPercent is the GOGC at which a heap with live bytes live is next
// collected at floor bytes, within [100, maxGCPercent].
func gcPercent(live, floor uint64) int {
	if live == 0 {
		return maxGCPercent
	}
	if live >= floor/2 {
		return 100
	}
	return int(min((floor-live)*100/live, maxGCPercent))
}
