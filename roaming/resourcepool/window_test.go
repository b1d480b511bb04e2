package resourcepool

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"
)

var windowSeed = flag.Uint64("window.seed", 0, "seed for TestWindowConcurrent; 0 picks one")

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// acquireAsync starts Acquire in a goroutine owned by the test and returns
// the channel its result arrives on.
func acquireAsync(t *testing.T, ctx context.Context, w *Window, n int64) <-chan error {
	t.Helper()
	ch := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Go(func() { ch <- w.Acquire(ctx, n) })
	t.Cleanup(func() {
		w.Close() // unblocks an Acquire the test left waiting
		wg.Wait()
	})
	return ch
}

func waiters(w *Window, n int) func() bool {
	return func() bool { return w.Usage().Waiters == n }
}

func recvErr(t *testing.T, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Acquire did not return")
		return nil
	}
}

func assertBlocked(t *testing.T, ch <-chan error) {
	t.Helper()
	select {
	case err := <-ch:
		t.Fatalf("Acquire returned %v; want it still waiting", err)
	default:
	}
}

func assertUsage(t *testing.T, w *Window, batches int, bytes int64, nwaiters int) {
	t.Helper()
	u := w.Usage()
	if u.Batches != batches || u.Bytes != bytes || u.Waiters != nwaiters {
		t.Fatalf("usage = %+v; want %d batches, %d bytes, %d waiters", u, batches, bytes, nwaiters)
	}
}

func TestNewWindowDefaults(t *testing.T) {
	u := NewWindow(0, -1).Usage()
	d := DefaultLimits()
	if u.MaxBatches != d.WindowBatches || u.MaxBytes != d.WindowBytes {
		t.Fatalf("usage = %+v; want defaults %d batches, %d bytes", u, d.WindowBatches, d.WindowBytes)
	}
}

func TestWindowBlocksUntilRelease(t *testing.T) {
	tests := []struct {
		name     string
		batches  int
		bytes    int64
		held, n  int64 // held is acquired first, then n waits
		wantHeld int
	}{
		{name: "batch budget", batches: 1, bytes: 100, held: 10, n: 10},
		{name: "byte budget", batches: 10, bytes: 100, held: 60, n: 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := NewWindow(tt.batches, tt.bytes)
			if err := w.Acquire(t.Context(), tt.held); err != nil {
				t.Fatal(err)
			}
			if w.TryAcquire(tt.n) {
				t.Fatal("TryAcquire succeeded over budget")
			}
			ch := acquireAsync(t, t.Context(), w, tt.n)
			waitFor(t, "a waiter", waiters(w, 1))
			assertBlocked(t, ch)
			if got := w.Usage().Waited; got != 1 {
				t.Fatalf("Waited = %d; want 1", got)
			}

			w.Release(tt.held)
			if err := recvErr(t, ch); err != nil {
				t.Fatal(err)
			}
			assertUsage(t, w, 1, tt.n, 0)
			w.Release(tt.n)
			assertUsage(t, w, 0, 0, 0)
		})
	}
}

func TestWindowCancelWhileWaitingReleasesNothing(t *testing.T) {
	w := NewWindow(1, 100)
	if err := w.Acquire(t.Context(), 50); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	ch := acquireAsync(t, ctx, w, 10)
	waitFor(t, "a waiter", waiters(w, 1))

	cancel()
	if err := recvErr(t, ch); !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire = %v; want context.Canceled", err)
	}
	assertUsage(t, w, 1, 50, 0)

	w.Release(50)
	assertUsage(t, w, 0, 0, 0)
	if !w.TryAcquire(100) {
		t.Fatal("TryAcquire of the whole budget failed after release")
	}
}

// TestWindowGrantAfterCancelIsGivenBack makes a waiter's ctx end and then,
// before the waiter can take the lock, grants it the budget. The waiter must
// give the budget back and pass it on to the next waiter.
func TestWindowGrantAfterCancelIsGivenBack(t *testing.T) {
	w := NewWindow(1, 100)
	if err := w.Acquire(t.Context(), 10); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	first := acquireAsync(t, ctx, w, 20)
	waitFor(t, "the first waiter", waiters(w, 1))
	second := acquireAsync(t, t.Context(), w, 30)
	waitFor(t, "the second waiter", waiters(w, 2))

	w.mu.Lock()
	cancel() // wakes the first waiter, which then waits for w.mu
	w.give(10)
	w.grant() // grants the first waiter, whose ctx is already done
	w.mu.Unlock()

	if err := recvErr(t, first); !errors.Is(err, context.Canceled) {
		t.Fatalf("first Acquire = %v; want context.Canceled", err)
	}
	if err := recvErr(t, second); err != nil {
		t.Fatalf("second Acquire = %v; the given-back budget did not reach it", err)
	}
	assertUsage(t, w, 1, 30, 0)
}

func TestWindowDoneContextFailsEvenWhenItFits(t *testing.T) {
	w := NewWindow(1, 100)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := w.Acquire(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire = %v; want context.Canceled", err)
	}
	assertUsage(t, w, 0, 0, 0)
}

func TestWindowCancelledHeadLetsOthersIn(t *testing.T) {
	w := NewWindow(10, 100)
	if err := w.Acquire(t.Context(), 60); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	big := acquireAsync(t, ctx, w, 80) // head; would need everything released
	waitFor(t, "the big waiter", waiters(w, 1))
	small := acquireAsync(t, t.Context(), w, 30) // fits, but must not overtake
	waitFor(t, "the small waiter", waiters(w, 2))
	assertBlocked(t, small)

	cancel()
	if err := recvErr(t, big); !errors.Is(err, context.Canceled) {
		t.Fatalf("big Acquire = %v; want context.Canceled", err)
	}
	if err := recvErr(t, small); err != nil {
		t.Fatalf("small Acquire = %v", err)
	}
	assertUsage(t, w, 2, 90, 0)
}

func TestWindowFIFO(t *testing.T) {
	w := NewWindow(1, 1000)
	if err := w.Acquire(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	var chans []<-chan error
	for i := range 5 {
		chans = append(chans, acquireAsync(t, t.Context(), w, int64(i+1)))
		waitFor(t, "one more waiter", waiters(w, i+1))
	}
	if w.TryAcquire(0) {
		t.Fatal("TryAcquire overtook waiters")
	}
	for i, ch := range chans {
		w.Release(w.Usage().Bytes)
		if err := recvErr(t, ch); err != nil {
			t.Fatalf("waiter %d: %v", i, err)
		}
		for _, later := range chans[i+1:] {
			assertBlocked(t, later)
		}
		if got, want := w.Usage().Bytes, int64(i+1); got != want {
			t.Fatalf("after waiter %d: %d bytes in flight; want %d", i, got, want)
		}
	}
}

func TestWindowOversizeBatchAdmittedAlone(t *testing.T) {
	w := NewWindow(4, 100)

	// Alone: admitted at once, and nothing joins it.
	if err := w.Acquire(t.Context(), 500); err != nil {
		t.Fatal(err)
	}
	assertUsage(t, w, 1, 500, 0)
	if w.TryAcquire(1) {
		t.Fatal("TryAcquire joined an oversize batch")
	}
	small := acquireAsync(t, t.Context(), w, 1)
	waitFor(t, "the small waiter", waiters(w, 1))
	w.Release(500)
	if err := recvErr(t, small); err != nil {
		t.Fatal(err)
	}

	// Not alone: waits until everything else is released.
	big := acquireAsync(t, t.Context(), w, 500)
	waitFor(t, "the big waiter", waiters(w, 1))
	assertBlocked(t, big)
	w.Release(1)
	if err := recvErr(t, big); err != nil {
		t.Fatal(err)
	}
	assertUsage(t, w, 1, 500, 0)
	if w.TryAcquire(500) {
		t.Fatal("a second oversize batch was admitted")
	}
	w.Release(500)
	if !w.TryAcquire(500) {
		t.Fatal("TryAcquire of an oversize batch into an empty window failed")
	}
}

func TestWindowCloseWakesWaiters(t *testing.T) {
	w := NewWindow(1, 100)
	if err := w.Acquire(t.Context(), 10); err != nil {
		t.Fatal(err)
	}
	var chans []<-chan error
	for i := range 3 {
		chans = append(chans, acquireAsync(t, t.Context(), w, 10))
		waitFor(t, "one more waiter", waiters(w, i+1))
	}
	w.Close()
	for i, ch := range chans {
		if err := recvErr(t, ch); !errors.Is(err, ErrWindowClosed) {
			t.Fatalf("waiter %d: %v; want ErrWindowClosed", i, err)
		}
	}
	if err := w.Acquire(t.Context(), 1); !errors.Is(err, ErrWindowClosed) {
		t.Fatalf("Acquire after Close = %v; want ErrWindowClosed", err)
	}
	if w.TryAcquire(1) {
		t.Fatal("TryAcquire succeeded after Close")
	}
	assertUsage(t, w, 1, 10, 0)
	w.Release(10) // in-flight work still ends after Close
	assertUsage(t, w, 0, 0, 0)
	w.Close() // idempotent
}

func TestWindowBadSizes(t *testing.T) {
	w := NewWindow(2, 100)
	if err := w.Acquire(t.Context(), -1); err == nil {
		t.Fatal("Acquire(-1) succeeded")
	}
	if w.TryAcquire(-1) {
		t.Fatal("TryAcquire(-1) succeeded")
	}
	// Releasing more than was acquired stops at zero.
	if err := w.Acquire(t.Context(), 10); err != nil {
		t.Fatal(err)
	}
	w.Release(30)
	w.Release(30)
	assertUsage(t, w, 0, 0, 0)
	// The full budget is usable again, and no more.
	if !w.TryAcquire(100) {
		t.Fatal("TryAcquire of the whole budget failed")
	}
	if w.TryAcquire(1) {
		t.Fatal("TryAcquire over the byte budget succeeded")
	}
}

// TestWindowConcurrent runs many goroutines that acquire, hold and release
// random sizes, some with short deadlines or TryAcquire, and checks that
// what they hold together never exceeds the budget. The goroutines count
// what they hold after Acquire returns and before Release, so their count
// is never above the window's own.
func TestWindowConcurrent(t *testing.T) {
	seed := *windowSeed
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("replay with -window.seed=%d", seed)
		}
	})
	const (
		maxBatches = 8
		maxBytes   = 1000
		goroutines = 64
		ops        = 300
	)
	w := NewWindow(maxBatches, maxBytes)

	var (
		mu                     sync.Mutex
		batches                int
		bytes                  int64
		oversize               int // oversize batches held
		peakBatches            int
		peakBytes              int64
		granted, timedOut, try int
	)
	hold := func(n int64) error {
		mu.Lock()
		defer mu.Unlock()
		batches++
		bytes += n
		if n > maxBytes {
			oversize++
		}
		peakBatches = max(peakBatches, batches)
		if n <= maxBytes {
			peakBytes = max(peakBytes, bytes)
		}
		switch {
		case batches > maxBatches:
			return errors.New("batch budget exceeded")
		case oversize > 0 && batches > 1:
			return errors.New("an oversize batch is in flight with others")
		case oversize == 0 && bytes > maxBytes:
			return errors.New("byte budget exceeded")
		}
		return nil
	}
	drop := func(n int64) {
		mu.Lock()
		defer mu.Unlock()
		batches--
		bytes -= n
		if n > maxBytes {
			oversize--
		}
	}

	errc := make(chan error, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		rng := rand.New(rand.NewPCG(seed, uint64(g)))
		wg.Go(func() {
			for op := range ops {
				n := rng.Int64N(maxBytes/3) + 1
				if rng.IntN(200) == 0 {
					n = maxBytes + rng.Int64N(maxBytes)
				}
				var err error
				switch k := rng.IntN(10); {
				case k == 0:
					if !w.TryAcquire(n) {
						continue
					}
					mu.Lock()
					try++
					mu.Unlock()
				case k <= 2:
					ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rng.IntN(200))*time.Microsecond)
					err = w.Acquire(ctx, n)
					cancel()
					if errors.Is(err, context.DeadlineExceeded) {
						mu.Lock()
						timedOut++
						mu.Unlock()
						continue
					}
				default:
					err = w.Acquire(context.Background(), n)
				}
				if err != nil {
					errc <- err
					return
				}
				mu.Lock()
				granted++
				mu.Unlock()
				if err := hold(n); err != nil {
					errc <- fmt.Errorf("goroutine %d op %d, %d bytes: %w", g, op, n, err)
					drop(n)
					w.Release(n)
					return
				}
				for range rng.IntN(3) {
					runtime.Gosched()
				}
				drop(n)
				w.Release(n)
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	assertUsage(t, w, 0, 0, 0)
	t.Logf("seed %d: %d granted (%d by TryAcquire), %d timed out, %d waited; peak %d batches, %d bytes",
		seed, granted, try, timedOut, w.Usage().Waited, peakBatches, peakBytes)
	if peakBatches < 2 {
		t.Errorf("peak of %d batches in flight; the test did not run concurrently", peakBatches)
	}
}

func BenchmarkWindowAcquireRelease(b *testing.B) {
	w := NewWindow(64, 8<<20)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := w.Acquire(ctx, 1024); err != nil {
			b.Fatal(err)
		}
		w.Release(1024)
	}
}

func BenchmarkWindowAcquireReleaseParallel(b *testing.B) {
	w := NewWindow(1<<20, 1<<40)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := w.Acquire(ctx, 1024); err != nil {
				b.Error(err)
				return
			}
			w.Release(1024)
		}
	})
}
