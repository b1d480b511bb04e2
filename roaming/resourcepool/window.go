package resourcepool

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"
)

// ErrWindowClosed is returned by Acquire on a Window that is closed, also to
// callers that were waiting when it closed.
var ErrWindowClosed = errors.New("resourcepool: window closed")

// Window bounds what is in flight to one peer: a count of batches and a
// count of bytes. The zero Window is not usable; call NewWindow.
type Window struct {
	mu         sync.Mutex
	maxBatches int
	maxBytes   int64
	batches    int
	bytes      int64
	waiters    list.List // of *waiter, oldest first
	waited     uint64
	closed     bool
}

// waiter is one blocked Acquire. Its fields are guarded by Window.mu; ready
// is closed once the waiter is granted (err nil) or the window closes (err
// ErrWindowClosed), and the waiter has then left the list.
type waiter struct {
	n     int64
	ready chan struct{}
	err   error
}

// NewWindow returns a Window that admits at most batches batches and bytes
// bytes at once. A value of 0 or less means the default of [DefaultLimits].
func NewWindow(batches int, bytes int64) *Window {
	d := DefaultLimits()
	if batches <= 0 {
		batches = d.WindowBatches
	}
	if bytes <= 0 {
		bytes = d.WindowBytes
	}
	return &Window{maxBatches: batches, maxBytes: bytes}
}

// fits reports whether one more batch of n bytes may go now. A batch larger
// than the whole byte budget goes when nothing else is in flight; otherwise
// it could never go. w.mu must be held.
func (w *Window) fits(n int64) bool {
	if w.batches >= w.maxBatches {
		return false
	}
	return w.batches == 0 || w.bytes+n <= w.maxBytes
}

// Acquire blocks until one batch of n bytes fits, then counts it as in
// flight. A batch larger than the whole byte budget is admitted alone when
// nothing else is in flight. Waiters are admitted in the order they came, and
// a new batch does not overtake them even if it would fit.
//
// Acquire returns ctx.Err() if ctx ends first, ErrWindowClosed if the window
// is or becomes closed; either way nothing is acquired. A ctx that is done
// already fails even when the batch would fit.
func (w *Window) Acquire(ctx context.Context, n int64) error {
	if n < 0 {
		return fmt.Errorf("resourcepool: acquire %d bytes: size must not be negative", n)
	}
	done := ctx.Done()
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return ErrWindowClosed
	}
	select {
	case <-done:
		w.mu.Unlock()
		return ctx.Err()
	default:
	}
	if w.waiters.Len() == 0 && w.fits(n) {
		w.take(n)
		w.mu.Unlock()
		return nil
	}
	wt := &waiter{n: n, ready: make(chan struct{})}
	elem := w.waiters.PushBack(wt)
	w.waited++
	w.mu.Unlock()

	select {
	case <-wt.ready:
		return wt.err
	case <-done:
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	select {
	case <-wt.ready:
		// Granted or closed while ctx ended. A grant is given back, so
		// that a caller that sees an error never owns budget.
		if wt.err != nil {
			return wt.err
		}
		w.give(n)
		w.grant()
	default:
		front := w.waiters.Front() == elem
		w.waiters.Remove(elem)
		// The waiters behind the head were held back only by it.
		if front {
			w.grant()
		}
	}
	return ctx.Err()
}

// TryAcquire counts one batch of n bytes as in flight if it fits now and
// nobody is waiting, and reports whether it did. It never blocks.
func (w *Window) TryAcquire(n int64) bool {
	if n < 0 {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || w.waiters.Len() > 0 || !w.fits(n) {
		return false
	}
	w.take(n)
	return true
}

// Release ends one batch of n bytes, which must be what was acquired, and
// admits the waiters that now fit. It may be called after Close. Releasing
// more than is in flight is a caller's bug; the counts stop at zero rather
// than lend budget that was never taken.
func (w *Window) Release(n int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.give(n)
	w.grant()
}

// take counts a batch of n bytes in. w.mu must be held.
func (w *Window) take(n int64) {
	w.batches++
	w.bytes += n
}

// give counts a batch of n bytes out, never below zero. w.mu must be held.
func (w *Window) give(n int64) {
	if w.batches > 0 {
		w.batches--
	}
	if n > 0 {
		w.bytes -= n
	}
	if w.bytes < 0 || w.batches == 0 {
		// With no batch in flight no byte is either; resetting also heals
		// a mismatched Release instead of carrying it forever.
		w.bytes = 0
	}
}

// grant admits waiters from the head of the queue while they fit. It stops
// at the first that does not, so that a large batch is not overtaken
// forever. w.mu must be held.
func (w *Window) grant() {
	for {
		front := w.waiters.Front()
		if front == nil {
			return
		}
		wt := front.Value.(*waiter)
		if w.closed || !w.fits(wt.n) {
			return
		}
		w.take(wt.n)
		w.waiters.Remove(front)
		close(wt.ready)
	}
}

// WindowUsage is a snapshot of a Window.
type WindowUsage struct {
	Batches    int    // batches in flight
	Bytes      int64  // bytes in flight
	MaxBatches int    // the batch budget
	MaxBytes   int64  // the byte budget
	Waiters    int    // Acquires blocked now
	Waited     uint64 // Acquires that had to wait, ever: backpressure events
}

// Usage returns what is in flight now.
func (w *Window) Usage() WindowUsage {
	w.mu.Lock()
	defer w.mu.Unlock()
	return WindowUsage{
		Batches:    w.batches,
		Bytes:      w.bytes,
		MaxBatches: w.maxBatches,
		MaxBytes:   w.maxBytes,
		Waiters:    w.waiters.Len(),
		Waited:     w.waited,
	}
}

// Close wakes every waiting Acquire with ErrWindowClosed and makes later
// Acquires fail the same way and TryAcquires report false. Batches in flight
// stay counted until released. Close is idempotent.
func (w *Window) Close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	w.closed = true
	for e := w.waiters.Front(); e != nil; e = w.waiters.Front() {
		wt := w.waiters.Remove(e).(*waiter)
		wt.err = ErrWindowClosed
		close(wt.ready)
	}
}
