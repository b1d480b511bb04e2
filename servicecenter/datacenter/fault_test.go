package datacenter

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// Environment of a TestWALFaultHelper child: the store's directory, and
// which WAL operation fails.
const (
	faultChildEnv = "ROAMFED_FAULT_CHILD"
	faultOpEnv    = "ROAMFED_FAULT_OP"
)

// walFaults returns an injector that, once armed, fails the given kinds of
// operation on write-ahead log files (Pebble's *.log).
func walFaults(armed *atomic.Bool, kinds ...errorfs.OpKind) errorfs.Injector {
	return errorfs.InjectorFunc(func(op errorfs.Op) error {
		if !armed.Load() || !strings.HasSuffix(op.Path, ".log") {
			return nil
		}
		for _, k := range kinds {
			if op.Kind == k {
				return errorfs.ErrInjected
			}
		}
		return nil
	})
}

var walFaultKinds = map[string][]errorfs.OpKind{
	"write": {errorfs.OpFileWrite, errorfs.OpFileWriteAt},
	"sync":  {errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo},
}

// TestWALFaultHelper is the child of TestWALFault; it does nothing on its
// own. It appends from 8 goroutines, arms the WAL faults after 300 acks,
// and reports every outcome on stdout (see appendUntilStopped).
func TestWALFaultHelper(t *testing.T) {
	dir := os.Getenv(faultChildEnv)
	if dir == "" {
		t.Skip("child process of TestWALFault")
	}
	var armed atomic.Bool
	fs := errorfs.Wrap(vfs.Default, walFaults(&armed, walFaultKinds[os.Getenv(faultOpEnv)]...))
	s, err := Open(dir, Options{FS: fs})
	if err != nil {
		fmt.Printf("err open %v\n", err)
		t.Fatal(err)
	}
	var acks atomic.Int64
	out := writerFunc(func(p []byte) (int, error) {
		if strings.HasPrefix(string(p), "ack ") && acks.Add(1) == 300 {
			armed.Store(true)
		}
		return os.Stdout.Write(p)
	})
	appendUntilStopped(s, 8, 4, out, nil, armed.Load)
	// Every appender saw an error and the process is still alive: the
	// store survived the fault. Say so and leave without Close, whose
	// outcome on a failed WAL is not under test here.
	fmt.Println("all appenders stopped")
	os.Exit(0)
}

type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestWALFault makes the write-ahead log fail (writes, or syncs) in the
// middle of concurrent appends. No append that began after the fault may
// be acknowledged; everything acknowledged before it must be on disk with
// its seq, and no log may have a gap.
//
// Pebble treats a failed WAL write or sync as fatal: DB.Apply calls
// Logger.Fatalf, which the store's logger turns into a panic on the commit
// goroutine, so the process dies (fail-stop) instead of Append returning an
// error. That runs in a child process; the test also accepts a store that
// survives and fails the appends.
func TestWALFault(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	for _, op := range []string{"write", "sync"} {
		t.Run(op, func(t *testing.T) {
			dir := t.TempDir()
			c := startChild(t, "TestWALFaultHelper", faultChildEnv+"="+dir, faultOpEnv+"="+op)
			// The child ends on its own; the limit only bounds a hang.
			acks, other := c.collect(t, 1<<30, 30*time.Second)
			waitErr := c.cmd.Wait()
			var failed []string
			survived := false
			for _, l := range other {
				switch {
				case strings.HasPrefix(l, "err "):
					failed = append(failed, l)
				case l == "all appenders stopped":
					survived = true
				}
			}
			stderr := c.stderr.String()
			t.Logf("%d acknowledged, %d failed appends, child: %v", len(acks), len(failed), waitErr)
			if i := strings.Index(stderr, "panic: "); i >= 0 {
				t.Logf("child stderr: %s", firstLine(stderr[i:]))
			}
			switch {
			case survived:
				if len(failed) == 0 {
					t.Errorf("the store survived but no append failed")
				}
				for _, l := range failed {
					if !strings.Contains(l, "injected error") {
						t.Errorf("append failed with something other than the fault: %s", l)
					}
				}
			case waitErr == nil:
				t.Fatalf("child ended cleanly without reporting; stdout:\n%s", strings.Join(other, "\n"))
			default:
				var ee interface{ ExitCode() int }
				if !errors.As(waitErr, &ee) || ee.ExitCode() == -1 {
					t.Fatalf("child was killed (%v), not stopped by the fault; stderr:\n%s", waitErr, stderr)
				}
				if !strings.Contains(stderr, "injected error") {
					t.Fatalf("child died (%v) of something other than the fault; stderr:\n%s", waitErr, stderr)
				}
			}
			if len(acks) < 300 {
				t.Fatalf("only %d appends acknowledged before the fault; stderr:\n%s", len(acks), stderr)
			}
			for _, a := range acks {
				if a.afterFault {
					t.Errorf("append that began after the WAL failed was acknowledged: %v", a)
				}
			}
			s := openStore(t, dir, Options{})
			verifyAcks(t, s, acks)
		})
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// TestOpenStorageError: a disk that refuses an operation makes Open fail
// with an error (not a panic, not a hang), and leaves the directory
// unlocked so that Open on a healthy disk succeeds afterwards.
func TestOpenStorageError(t *testing.T) {
	tests := []struct {
		name  string
		kinds []errorfs.OpKind
	}{
		{"create", []errorfs.OpKind{errorfs.OpCreate}},
		{"write", []errorfs.OpKind{errorfs.OpFileWrite, errorfs.OpFileWriteAt}},
		{"sync", []errorfs.OpKind{errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo}},
		{"lock", []errorfs.OpKind{errorfs.OpLock}},
		{"list", []errorfs.OpKind{errorfs.OpList}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inj := errorfs.InjectorFunc(func(op errorfs.Op) error {
				if slices.Contains(tt.kinds, op.Kind) {
					return errorfs.ErrInjected
				}
				return nil
			})
			dir := t.TempDir()
			s, err := Open(dir, Options{FS: errorfs.Wrap(vfs.Default, inj)})
			if err == nil {
				s.Close()
				t.Fatalf("Open succeeded on a disk that fails every %s", tt.name)
			}
			if !strings.Contains(err.Error(), "injected error") {
				t.Errorf("Open = %v, want the injected error", err)
			}
			s = openStore(t, dir, Options{})
			mustAppend(t, s, newMessage("g_1", "u_a", "c", "after a failed open"))
		})
	}
}
