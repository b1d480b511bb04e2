package stack

import (
	"os"
	"runtime"
)

// RaiseProcs runs more Ps than CPUs, unless GOMAXPROCS is set in the
// environment, and returns the value in effect.
//
// A region spends much of its time in Pebble's WAL fdatasync, and a thread
// in a syscall holds its P until the runtime's monitor hands the P off.
// With one P per CPU, goroutines that could run wait while a sync blocks;
// on a 2-CPU machine the process then uses ~1.4 of its cores.
// BENCHMARKS.md has the measurements (GOMAXPROCS=4 on 2 CPUs: 1.8 cores
// used, 43% more commits).
func RaiseProcs() int {
	if os.Getenv("GOMAXPROCS") != "" {
		return runtime.GOMAXPROCS(0)
	}
	n := runtime.GOMAXPROCS(0)
	runtime.GOMAXPROCS(max(4, 2*n))
	return runtime.GOMAXPROCS(0)
}
