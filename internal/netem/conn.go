package netem

import (
	"errors"
	"net"
	"os"
	"sync"
	"time"
)

// Buffering bounds of one conn.
const (
	// maxQueued is how many bytes one direction's delay line holds before
	// its producer waits: Write for outgoing bytes, the socket reader for
	// incoming ones (so that a stalled reader pushes back on the peer
	// through TCP flow control).
	maxQueued = 4 << 20
	// maxChunk is the most bytes one chunk carries, and the socket read
	// size.
	maxChunk = 64 << 10
)

// conn is a net.Conn whose bytes pass through two delay lines: out, from
// Write to the socket, and in, from the socket to Read. Two goroutines move
// them: pumpOut writes due chunks to the socket, pumpIn reads the socket
// into the in line.
type conn struct {
	raw  net.Conn
	link *Link
	in   *line
	out  *line

	wg        sync.WaitGroup
	closeOnce sync.Once
}

func newConn(raw net.Conn, l *Link) *conn {
	return &conn{raw: raw, link: l, in: newLine(l), out: newLine(l)}
}

func (c *conn) start() {
	c.wg.Add(2)
	go c.pumpOut()
	go c.pumpIn()
}

func (c *conn) pumpOut() {
	defer c.wg.Done()
	for {
		b, err := c.out.take(nil)
		if err != nil {
			return // closed
		}
		if _, err := c.raw.Write(b); err != nil {
			c.out.fail(err)
			return
		}
	}
}

func (c *conn) pumpIn() {
	defer c.wg.Done()
	buf := make([]byte, maxChunk)
	for {
		n, err := c.raw.Read(buf)
		if n > 0 {
			if c.in.push(append([]byte(nil), buf[:n]...), nil, false) != nil {
				return // closed
			}
		}
		if err != nil {
			// The error (EOF, reset) reaches Read in order, after the
			// bytes before it, with the same delay.
			_ = c.in.push(nil, err, false)
			return
		}
	}
}

// Read returns bytes from the peer once they are due and the link is not
// cut.
func (c *conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil // a nil p would mean the pump's whole-chunk take
	}
	b, err := c.in.take(p)
	if err != nil {
		return 0, c.opError("read", err)
	}
	return len(b), nil
}

// Write queues p for the peer and returns; it waits only while the out
// line is full.
func (c *conn) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		k := min(len(p)-n, maxChunk)
		if err := c.out.push(append([]byte(nil), p[n:n+k]...), nil, true); err != nil {
			return n, c.opError("write", err)
		}
		n += k
	}
	return n, nil
}

// Close closes the socket, drops what the delay lines still hold, and
// waits for the conn's goroutines.
func (c *conn) Close() error {
	err := net.ErrClosed
	c.closeOnce.Do(func() {
		c.in.close()
		c.out.close()
		err = c.raw.Close()
		c.wg.Wait()
		c.link.remove(c)
	})
	return err
}

func (c *conn) LocalAddr() net.Addr  { return c.raw.LocalAddr() }
func (c *conn) RemoteAddr() net.Addr { return c.raw.RemoteAddr() }

func (c *conn) SetDeadline(t time.Time) error {
	c.in.setDeadline(t)
	c.out.setDeadline(t)
	return nil
}

func (c *conn) SetReadDeadline(t time.Time) error {
	c.in.setDeadline(t)
	return nil
}

func (c *conn) SetWriteDeadline(t time.Time) error {
	c.out.setDeadline(t)
	return nil
}

// opError wraps the wrapper's own errors as the socket would; the socket's
// errors (io.EOF, a reset) pass through as they came.
func (c *conn) opError(op string, err error) error {
	if !errors.Is(err, net.ErrClosed) && !errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.raw.LocalAddr(), Addr: c.raw.RemoteAddr(), Err: err}
}

// line is one direction's delay line: a FIFO of chunks, each held until its
// due time and while the link is cut.
type line struct {
	link *Link

	mu   sync.Mutex
	q    []chunk
	off  int // bytes of q[0] already taken
	size int // bytes queued
	// deadline bounds the caller-facing wait: Read's on the in line,
	// Write's on the out line.
	deadline time.Time
	closed   bool
	failed   error // the socket refused a write; later Writes get it
	// changed is closed and replaced on every change above.
	changed chan struct{}
}

type chunk struct {
	b   []byte
	err error // the last chunk of an in line: the socket's read error
	due time.Time
	// delayed is set when the chunk waits for a delay, not for a cut;
	// cuts is the link's count of cuts when it was queued. Only delayed
	// chunks that no cut held count in the link's Lateness.
	delayed bool
	cuts    uint64
}

func newLine(l *Link) *line {
	return &line{link: l, changed: make(chan struct{})}
}

func (l *line) changedLocked() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// waitLocked releases l.mu until the line or the link changes, or until
// until if it is not zero, and takes l.mu again.
func (l *line) waitLocked(until time.Time, link <-chan struct{}) {
	changed := l.changed
	l.mu.Unlock()
	var timeout <-chan time.Time
	if !until.IsZero() {
		t := time.NewTimer(time.Until(until))
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-changed:
	case <-link:
	case <-timeout:
	}
	l.mu.Lock()
}

// push appends b (or a final err) due one link delay from now. It waits
// while the line is full, within the deadline if useDeadline.
func (l *line) push(b []byte, err error, useDeadline bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		if l.closed {
			return net.ErrClosed
		}
		if l.failed != nil {
			return l.failed
		}
		if l.size == 0 || l.size+len(b) <= maxQueued {
			break
		}
		var until time.Time
		if useDeadline && !l.deadline.IsZero() {
			if !time.Now().Before(l.deadline) {
				return os.ErrDeadlineExceeded
			}
			until = l.deadline
		}
		l.waitLocked(until, nil)
	}
	st := l.link.state()
	l.q = append(l.q, chunk{b: b, err: err, due: time.Now().Add(st.delay), delayed: st.delay > 0 && !st.cut, cuts: st.cuts})
	l.size += len(b)
	l.changedLocked()
	return nil
}

// take waits for the first chunk to be due with the link not cut. With p
// it copies what fits into p and returns that part of p, within the
// deadline; with nil p it returns the rest of the chunk and waits without
// a deadline (the pump). A final error chunk stays queued, so every later
// take returns the error too.
func (l *line) take(p []byte) ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		if l.closed {
			return nil, net.ErrClosed
		}
		st := l.link.state()
		now := time.Now()
		var until time.Time
		if p != nil && !l.deadline.IsZero() {
			if !now.Before(l.deadline) {
				return nil, os.ErrDeadlineExceeded
			}
			until = l.deadline
		}
		if len(l.q) > 0 && !st.cut {
			c := &l.q[0]
			if !now.Before(c.due) {
				if c.err != nil {
					return nil, c.err
				}
				if l.off == 0 && c.delayed && c.cuts == st.cuts {
					l.link.late.record(now.Sub(c.due))
				}
				var out []byte
				if p == nil {
					out = c.b[l.off:]
				} else {
					out = p[:copy(p, c.b[l.off:])]
				}
				l.off += len(out)
				l.size -= len(out)
				if l.off == len(c.b) {
					l.q[0] = chunk{}
					l.q = l.q[1:]
					l.off = 0
				}
				l.changedLocked()
				return out, nil
			}
			if until.IsZero() || c.due.Before(until) {
				until = c.due
			}
		}
		l.waitLocked(until, st.changed)
	}
}

func (l *line) setDeadline(t time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.deadline = t
	l.changedLocked()
}

func (l *line) fail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failed = err
	l.changedLocked()
}

func (l *line) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	l.q = nil
	l.size = 0
	l.changedLocked()
}
