package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The machine's state beside the results: on a shared or small machine a
// benchmark's numbers mean little without how much CPU it got.

// cpuTime is the user plus system CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loadAvg1 is the one-minute load average, or -1 where /proc has none.
func loadAvg1() float64 {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(raw))
	if len(f) == 0 {
		return -1
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return -1
	}
	return v
}

// clockTicks is USER_HZ, the unit of /proc/stat; 100 on every Linux
// architecture Go supports.
const clockTicks = 100

// busyCPU is the time all CPUs of the machine have spent not idle (nor
// waiting for I/O), from /proc/stat; ok is false where there is none.
func busyCPU() (_ time.Duration, ok bool) {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, false
	}
	var busy int64
	for i, v := range f[1:8] { // user nice system idle iowait irq softirq
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, false
		}
		if i != 3 && i != 4 {
			busy += n
		}
	}
	return time.Duration(busy) * time.Second / clockTicks, true
}

// gcPercent is the GOGC in effect.
func gcPercent() int { return int(readMetric("/gc/gogc:percent")) }

// gcCycles counts the collections this process has completed.
func gcCycles() uint64 { return readMetric("/gc/cycles/total:gc-cycles") }

// readMetric reads one of the runtime's uint64 metrics, 0 if it has none.
func readMetric(name string) uint64 {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// machineProbe is the machine's counters when a load starts.
type machineProbe struct {
	cpu    time.Duration
	busy   time.Duration
	busyOK bool
	load   float64
	gcs    uint64
}

func probeMachine() machineProbe {
	p := machineProbe{cpu: cpuTime(), load: loadAvg1(), gcs: gcCycles()}
	p.busy, p.busyOK = busyCPU()
	return p
}

// since is what the machine gave a load that has run for wall since p.
func (p machineProbe) since(wall time.Duration) machine {
	w := float64(max(wall, 1))
	m := machine{
		CPUs:              runtime.NumCPU(),
		GOMAXPROCS:        runtime.GOMAXPROCS(0),
		GOGC:              gcPercent(),
		GCs:               gcCycles() - p.gcs,
		LoadAvgBefore:     p.load,
		LoadAvgAfter:      loadAvg1(),
		CoresUsed:         float64(cpuTime()-p.cpu) / w,
		OtherProcessCores: -1,
	}
	if busy, ok := busyCPU(); ok && p.busyOK {
		m.OtherProcessCores = max(float64(busy-p.busy)/w-m.CoresUsed, 0)
	}
	return m
}

// String is the report's machine line, without its label.
func (m machine) String() string {
	return fmt.Sprintf("%d CPUs, GOMAXPROCS %d, GOGC %d (%d collections); during the load this process used %.2f cores, other processes %.2f; load average %.2f before, %.2f after",
		m.CPUs, m.GOMAXPROCS, m.GOGC, m.GCs, m.CoresUsed, m.OtherProcessCores, m.LoadAvgBefore, m.LoadAvgAfter)
}
