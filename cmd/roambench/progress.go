package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// progressLine prints status lines: on a terminal one line rewritten in
// place, elsewhere plain lines.
type progressLine struct {
	w   io.Writer
	tty bool

	mu   sync.Mutex
	open bool // a rewritten line is showing and needs its newline
}

func newProgressLine(w io.Writer) *progressLine {
	p := &progressLine{w: w}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

func (p *progressLine) printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	line := fmt.Sprintf(format, args...)
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
		p.open = true
		return
	}
	fmt.Fprintln(p.w, line)
}

// end finishes a rewritten line, so that what follows starts on its own.
func (p *progressLine) end() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.open {
		fmt.Fprintln(p.w)
		p.open = false
	}
}

// follow prints the run's rates every second until the returned stop,
// which waits for it and may be called more than once.
func (p *progressLine) follow(l *ledger, start time.Duration, cfg config) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		var last struct{ sent, committed, deliveries, errs int64 }
		lastAt := l.now()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			now := l.now()
			secs := (now - lastAt).Seconds()
			lastAt = now
			sent, committed, deliveries := l.sent.Load(), l.committed.Load(), l.deliveries.Load()
			var errs int64
			for i := range l.errs {
				errs += l.errs[i].Load()
			}
			elapsed := now - start
			phase := "drain"
			switch {
			case elapsed < cfg.Warmup:
				phase = "warm-up"
			case elapsed < cfg.Warmup+cfg.Duration:
				phase = "measure"
			}
			h := l.merged()
			p.printf("%5.0fs %-7s  sent %6.0f/s  committed %6.0f/s  deliveries %7.0f/s  errors %d  p99 same %s cross %s  outstanding %d",
				elapsed.Seconds(), phase,
				float64(sent-last.sent)/secs, float64(committed-last.committed)/secs, float64(deliveries-last.deliveries)/secs,
				errs-last.errs,
				fmtMicros(h.latency[sameRegion].ValueAtQuantile(99), h.latency[sameRegion].TotalCount()),
				fmtMicros(h.latency[crossRegion].ValueAtQuantile(99), h.latency[crossRegion].TotalCount()),
				max(l.expected.Load()-l.unique.Load(), 0))
			last.sent, last.committed, last.deliveries, last.errs = sent, committed, deliveries, errs
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			<-finished
			p.end()
		})
	}
}

// fmtMicros renders a latency in microseconds as milliseconds; "-" when
// nothing was recorded.
func fmtMicros(us, count int64) string {
	if count == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fms", float64(us)/1000)
}
