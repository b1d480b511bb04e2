package stack

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func TestGCPercent(t *testing.T) {
	const floor = 256 << 20
	for _, tc := range []struct {
		live uint64
		want int
	}{
		{0, maxGCPercent},
		{1 << 20, maxGCPercent},          // 255 MiB of garbage would be 25,500%
		{32 << 20, 700},                  // 32 + 224 = 256
		{64 << 20, 300},                  // 64 + 192 = 256
		{100 << 20, 156},                 // 100 + 156 = 256
		{128 << 20, 100},                 // half the floor: Go's default
		{200 << 20, 100},                 // more: as Go would
		{4 << 30, 100},                   // far more: as Go would
		{(256 << 20) / 11, maxGCPercent}, // exactly 1,000% is within bounds
	} {
		if got := gcPercent(tc.live, floor); got != tc.want {
			t.Errorf("gcPercent(%d MiB, 256 MiB) = %d, want %d", tc.live>>20, got, tc.want)
		}
	}
}

// TestTuneGC runs the tuner in this process: GOGC follows the live heap
// from one collection to the next, and stop restores Go's default.
func TestTuneGC(t *testing.T) {
	t.Setenv("GOGC", "")
	const floor = 64 << 20
	// Over this test binary's few MiB of live heap, a floor of 64 MiB asks
	// for the largest GOGC the tuner sets.
	stop := TuneGC(floor)
	if stop == nil {
		t.Fatal("TuneGC did not tune with GOGC unset")
	}
	defer debug.SetGCPercent(100)
	gogc := func() int {
		s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
		metrics.Read(s)
		return int(s[0].Value.Uint64())
	}
	if got := gogc(); got != maxGCPercent {
		t.Fatalf("GOGC right after TuneGC = %d, want %d", got, maxGCPercent)
	}
	waitGOGC := func(want int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for gogc() != want {
			if time.Now().After(deadline) {
				t.Fatalf("GOGC = %d after 10 s of collections, want %d", gogc(), want)
			}
			runtime.GC()
			time.Sleep(10 * time.Millisecond)
		}
	}
	// More than half the floor live: collected as Go would.
	live := make([]byte, floor/2+(8<<20))
	for i := range live {
		live[i] = byte(i)
	}
	waitGOGC(100)
	runtime.KeepAlive(live)
	// Garbage again: the next collection starts near the floor.
	waitGOGC(maxGCPercent)

	stop()
	if got := gogc(); got != 100 {
		t.Fatalf("GOGC after stop = %d, want 100", got)
	}
	runtime.GC()
	time.Sleep(50 * time.Millisecond)
	if got := gogc(); got != 100 {
		t.Fatalf("GOGC after stop and a collection = %d, want 100", got)
	}

	t.Setenv("GOGC", "50")
	if stop := TuneGC(floor); stop != nil {
		stop()
		t.Fatal("TuneGC tuned although GOGC is set in the environment")
	}
}
