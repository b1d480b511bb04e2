// Command roambench drives a roamfed federation with group messages and
// measures send-to-delivery latency (same-region and cross-region, in HDR
// histograms), throughput, and whether every member received every message
// exactly once.
//
//	go run ./cmd/roambench                           ap, eu and us in this process
//	go run ./cmd/roambench --regions 1 --rate 1000   one region
//	go run ./cmd/roambench --link-delay 20ms         20ms one way on every roaming link
//	go run ./cmd/roambench --connect ap=127.0.0.1:7101,eu=127.0.0.1:7102,us=127.0.0.1:7103
//	go run ./cmd/roambench --idle-rss                memory of one idle regiond process
//	go run ./cmd/roambench --transport-floor         the same load through bare gRPC hops: the machine's ceiling
//
// Senders and recipients share this process's clock: a message's send time
// travels in its body and each recipient subtracts it from its arrival time.
// See BENCHMARKS.md for results.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/roamfed/roamfed/internal/stack"
)

func main() {
	// The regions roambench starts in its process run as regiond does.
	stack.RaiseProcs()
	stack.TuneGC(stack.DefaultHeapFloor)
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "roambench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "roambench:", err)
		stop()
		os.Exit(1)
	}
}

// errInterrupted ends a run whose load was cut short; its partial report
// has been printed.
var errInterrupted = errors.New("interrupted; the report covers the load until then")

// run runs the benchmark cfg asks for and prints its report to stdout;
// progress and region logs go to stderr.
func run(ctx context.Context, cfg config, stdout, stderr io.Writer) (err error) {
	var progress *progressLine
	if cfg.Progress {
		progress = newProgressLine(stderr)
	}
	if cfg.IdleRSS {
		r, err := measureIdleRSS(ctx, cfg, progress)
		if err != nil {
			return err
		}
		if cfg.JSON {
			return r.writeJSON(stdout)
		}
		return r.writeText(stdout)
	}
	if cfg.TransportFloor {
		r, err := measureFloor(ctx, cfg, progress)
		if r != nil {
			if cfg.JSON {
				err = errors.Join(err, r.writeJSON(stdout))
			} else {
				err = errors.Join(err, r.writeText(stdout))
			}
		}
		return err
	}

	if cfg.PprofAddr != "" {
		stopPprof, err := servePprof(cfg.PprofAddr, stderr)
		if err != nil {
			return err
		}
		defer stopPprof()
	}
	targets := cfg.Connect
	var fed *localFederation
	if targets == nil {
		log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
		if fed, err = startLocal(cfg.Regions, cfg.LinkDelay, cfg.PlaintextLinks, log); err != nil {
			return err
		}
		defer func() { err = errors.Join(err, fed.close()) }()
		targets = fed.targets()
	}
	rep, err := bench(ctx, cfg, targets, progress)
	if err != nil {
		return err
	}
	if fed != nil {
		rep.LinkLateness = fed.linkLateness()
	}
	if cfg.JSON {
		err = rep.writeJSON(stdout)
	} else {
		err = rep.writeText(stdout)
	}
	if err == nil && rep.Interrupted {
		err = errInterrupted
	}
	return err
}
