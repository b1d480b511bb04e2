package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// rssReport is what --idle-rss measured.
type rssReport struct {
	Date    string  `json:"date"`
	Binary  string  `json:"binary"`
	IdleSec float64 `json:"idle_sec"`
	// RSSMiB is VmRSS after the idle wait; PeakMiB is VmHWM, the most
	// the process was resident at any time.
	RSSMiB  float64 `json:"rss_mib"`
	PeakMiB float64 `json:"peak_mib"`
}

// readyLine is what regiond logs once it serves clients.
const readyLine = "region serving clients"

// measureIdleRSS builds regiond (unless cfg.Regiond names one), runs it
// alone with a fresh data directory and a client port of its choosing,
// waits cfg.IdleWait after it is ready, reads its resident memory from
// /proc, and stops it with SIGTERM.
func measureIdleRSS(ctx context.Context, cfg config, progress *progressLine) (_ *rssReport, err error) {
	dir, err := os.MkdirTemp("", "roambench-rss-")
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, os.RemoveAll(dir)) }()
	bin := cfg.Regiond
	if bin == "" {
		bin = filepath.Join(dir, "regiond")
		if progress != nil {
			progress.printf("building regiond...")
		}
		build := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/roamfed/roamfed/cmd/regiond")
		if out, err := build.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build regiond (run roambench inside the roamfed module, or give --regiond): %w\n%s", err, out)
		}
	}
	cmd := exec.Command(bin, "--region", "bench", "--data", filepath.Join(dir, "data"), "--client-addr", "127.0.0.1:0", "--log-level", "info")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	// From here on regiond is stopped on every path, and its log read to
	// the end so that it never blocks writing it.
	logs := newTail(20)
	ready := make(chan struct{})
	var readers sync.WaitGroup
	readers.Go(func() { logs.scan(stderr, readyLine, ready) })
	exited := make(chan error, 1)
	go func() {
		readers.Wait() // Wait closes the pipe; read it all first
		exited <- cmd.Wait()
	}()
	defer func() { err = errors.Join(err, stop(cmd, exited)) }()

	select {
	case <-ready:
	case err := <-exited:
		exited <- err
		return nil, fmt.Errorf("regiond exited before serving (%v):\n%s", err, logs)
	case <-time.After(30 * time.Second):
		return nil, fmt.Errorf("regiond did not log %q within 30s:\n%s", readyLine, logs)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if progress != nil {
		progress.printf("regiond (pid %d) is up; idling %s...", cmd.Process.Pid, cfg.IdleWait)
	}
	select {
	case <-time.After(cfg.IdleWait):
	case err := <-exited:
		exited <- err
		return nil, fmt.Errorf("regiond exited while idle (%v):\n%s", err, logs)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	st, err := procStatus(cmd.Process.Pid)
	if err != nil {
		return nil, err
	}
	if progress != nil {
		progress.end()
	}
	return &rssReport{
		Date:    time.Now().UTC().Format(time.RFC3339),
		Binary:  bin,
		IdleSec: cfg.IdleWait.Seconds(),
		RSSMiB:  float64(st["VmRSS"]) / 1024,
		PeakMiB: float64(st["VmHWM"]) / 1024,
	}, nil
}

// stop ends regiond with SIGTERM, then SIGKILL if it has not exited within
// its shutdown grace.
func stop(cmd *exec.Cmd, exited <-chan error) error {
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case err := <-exited:
		if ee, ok := errors.AsType[*exec.ExitError](err); ok && !ee.Exited() {
			return nil // ended by the signal itself
		}
		return err // nil when it exited 0
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
		return errors.New("regiond ignored SIGTERM for 15s; killed")
	}
}

// procStatus reads the kB fields of /proc/<pid>/status.
func procStatus(pid int) (map[string]int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, fmt.Errorf("read memory of regiond (needs Linux /proc): %w", err)
	}
	out := make(map[string]int64)
	for line := range strings.SplitSeq(string(raw), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 2 && f[1] == "kB" {
			if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
				out[k] = n
			}
		}
	}
	if _, ok := out["VmRSS"]; !ok {
		return nil, fmt.Errorf("/proc/%d/status has no VmRSS", pid)
	}
	return out, nil
}

// tail keeps the last lines of a log for error messages.
type tail struct {
	mu    sync.Mutex
	n     int
	lines []string
}

func newTail(n int) *tail { return &tail{n: n} }

// scan reads r to its end, keeping the last lines, and closes ready at the
// first line containing marker.
func (t *tail) scan(r io.Reader, marker string, ready chan<- struct{}) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	seen := false
	for sc.Scan() {
		line := sc.Text()
		t.mu.Lock()
		t.lines = append(t.lines, line)
		if len(t.lines) > t.n {
			t.lines = t.lines[1:]
		}
		t.mu.Unlock()
		if !seen && strings.Contains(line, marker) {
			seen = true
			close(ready)
		}
	}
	_, _ = io.Copy(io.Discard, r) // a line too long for the scanner
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}

func (r *rssReport) writeJSON(w io.Writer) error { return writeJSON(w, r) }

func (r *rssReport) writeText(w io.Writer) error {
	_, err := fmt.Fprintf(w, "roambench %s: idle regiond, %.0fs after it was ready: VmRSS %.1f MiB (peak VmHWM %.1f MiB)\n",
		r.Date, r.IdleSec, r.RSSMiB, r.PeakMiB)
	return err
}
