package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
	"sync"
	"time"
)

// bench runs one benchmark against the regions at targets: set up users,
// groups and sessions, send for warm-up plus duration, wait for the
// deliveries still on their way, and account for every one. progress, if
// not nil, gets a line a second. When ctx ends during the load the report
// covers what was measured and says it was interrupted.
func bench(ctx context.Context, cfg config, targets []regionAddr, progress *progressLine) (*report, error) {
	setupStart := time.Now()
	if progress != nil {
		progress.printf("setting up %d users in %d groups over %d regions...", cfg.Groups*cfg.GroupSize, cfg.Groups, len(targets))
	}
	pop, err := populate(ctx, cfg, targets)
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	defer pop.close()
	l := newLedger(pop, cfg.LinkDelay)
	ss, err := openSessions(ctx, pop, l)
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	sessionsOpen := true
	defer func() {
		if sessionsOpen {
			ss.close()
		}
	}()
	setup := time.Since(setupStart)

	start := l.now()
	l.setWindow(start+cfg.Warmup, start+cfg.Warmup+cfg.Duration)
	loadCtx, stopLoad := context.WithTimeout(ctx, cfg.Warmup+cfg.Duration)
	defer stopLoad()

	stopProgress := func() {}
	if progress != nil {
		stopProgress = progress.follow(l, start, cfg)
	}
	defer stopProgress() // idempotent; the normal path stops it after the drain
	stopProfile := func() error { return nil }
	if cfg.CPUProfile != "" {
		if stopProfile, err = startCPUProfile(cfg.CPUProfile); err != nil {
			return nil, err
		}
	}
	probe := probeMachine()
	(&load{cfg: cfg, pop: pop, ledger: l}).run(loadCtx)
	if err := stopProfile(); err != nil {
		return nil, err
	}
	end := l.now()
	m := probe.since(end - start)

	drained := drain(ctx, l, cfg.Drain)
	stopProgress()
	ss.close()
	sessionsOpen = false

	measured := min(end, start+cfg.Warmup+cfg.Duration) - (start + cfg.Warmup)
	return newReport(cfg, pop, l, reportTimes{setup: setup, measured: measured}, m, drained, ctx.Err() != nil), nil
}

// drain waits until every member has received every committed message, at
// most limit, and reports whether they had.
func drain(ctx context.Context, l *ledger, limit time.Duration) bool {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for l.unique.Load() < l.expected.Load() {
		select {
		case <-ctx.Done():
			return false
		case <-deadline.C:
			return false
		case <-tick.C:
		}
	}
	return true
}

// startCPUProfile profiles the process into file until the returned stop.
func startCPUProfile(file string) (stop func() error, _ error) {
	f, err := os.Create(file)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		return nil, errors.Join(fmt.Errorf("--cpuprofile: %w", err), f.Close())
	}
	var once sync.Once
	return func() error {
		var err error
		once.Do(func() {
			pprof.StopCPUProfile()
			err = f.Close()
		})
		return err
	}, nil
}
