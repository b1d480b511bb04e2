package netem

import (
	"context"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
)

// Link is this process's side of the connection to one peer: the delay and
// the cut state that every conn dialled through it shares. The zero value is
// not usable; call NewLink.
type Link struct {
	mu    sync.Mutex
	delay time.Duration
	cut   bool
	// changed is closed and replaced whenever delay or cut changes, to
	// wake the delay lines waiting on the old state.
	changed chan struct{}
	conns   map[*conn]struct{}
	// cuts counts Cut calls: a chunk queued before the latest one was
	// held by it, and its lateness is the cut's, not the timer's.
	cuts uint64
	late *Lateness
}

// NewLink returns a link with no delay, not cut.
func NewLink() *Link { return newLink(new(Lateness)) }

func newLink(late *Lateness) *Link {
	return &Link{changed: make(chan struct{}), conns: make(map[*conn]struct{}), late: late}
}

// Lateness is how late the link's delay lines handed chunks on.
func (l *Link) Lateness() *Lateness { return l.late }

// SetDelay sets the one-way delay for bytes that enter the link from now on,
// in either direction. A negative d means 0.
func (l *Link) SetDelay(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.delay = max(d, 0)
	l.changedLocked()
}

// Delay returns the one-way delay.
func (l *Link) Delay() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.delay
}

// Cut stops every conn of the link, current and future, from forwarding
// bytes in either direction, until Restore. Conns stay open.
func (l *Link) Cut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut = true
	l.cuts++
	l.changedLocked()
}

// Restore lets the link's conns forward again, the bytes held during the
// cut first.
func (l *Link) Restore() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut = false
	l.changedLocked()
}

// IsCut reports whether the link is cut.
func (l *Link) IsCut() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cut
}

// Conns is the number of the link's conns that are not closed.
func (l *Link) Conns() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

// Dialer returns a dialer for grpc.WithContextDialer that dials addr over
// TCP and wraps the conn in this link.
func (l *Link) Dialer() func(ctx context.Context, addr string) (net.Conn, error) {
	return l.dial
}

func (l *Link) dial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return l.Wrap(raw), nil
}

// Wrap makes raw a conn of this link. The returned conn owns raw: closing it
// closes raw.
func (l *Link) Wrap(raw net.Conn) net.Conn {
	c := newConn(raw, l)
	l.mu.Lock()
	l.conns[c] = struct{}{}
	l.mu.Unlock()
	c.start()
	return c
}

// linkState is what a delay line needs to decide, and the channel that is
// closed when any of it changes.
type linkState struct {
	delay   time.Duration
	cut     bool
	cuts    uint64
	changed <-chan struct{}
}

func (l *Link) state() linkState {
	l.mu.Lock()
	defer l.mu.Unlock()
	return linkState{delay: l.delay, cut: l.cut, cuts: l.cuts, changed: l.changed}
}

func (l *Link) changedLocked() {
	close(l.changed)
	l.changed = make(chan struct{})
}

func (l *Link) remove(c *conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.conns, c)
}

// Net is the links of one process (one region) to all its peers, by the
// address dialled.
type Net struct {
	mu    sync.Mutex
	links map[string]*Link
	late  Lateness
}

// NewNet returns a Net with no links; Link creates them on first use.
func NewNet() *Net {
	return &Net{links: make(map[string]*Link)}
}

// Lateness is how late the delay lines of all its links handed chunks on.
func (n *Net) Lateness() *Lateness { return &n.late }

// Link returns the link to addr, creating it (no delay, not cut) if needed.
func (n *Net) Link(addr string) *Link {
	n.mu.Lock()
	defer n.mu.Unlock()
	l, ok := n.links[addr]
	if !ok {
		l = newLink(&n.late)
		n.links[addr] = l
	}
	return l
}

// Dial dials addr over TCP through its link. It fits
// grpc.WithContextDialer and the Dial of stack.Config.
func (n *Net) Dial(ctx context.Context, addr string) (net.Conn, error) {
	return n.Link(addr).dial(ctx, addr)
}

// DialOption is a grpc.WithContextDialer that dials every address through
// its link.
func (n *Net) DialOption() grpc.DialOption {
	return grpc.WithContextDialer(n.Dial)
}
