package e2e

import (
	"errors"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// tcpProxy forwards the TCP connections made to its listen address to a
// target address, and can stop forwarding the way a network that silently
// drops packets does: while paused it closes nothing and answers nothing,
// bytes already read wait in the proxy (and then in the kernel's buffers,
// until the sender's writes block), and new connections are accepted, as
// the kernel would, and then stall. Resume hands on what waited, in order,
// as TCP would after a partition that healed before its timeouts. A side
// that closes its socket while paused is heard of on the other side only
// after Resume.
//
// The test that starts a proxy owns it; it is closed when the test ends.
type tcpProxy struct {
	target string
	lis    net.Listener

	mu      sync.Mutex
	paused  bool
	resumed chan struct{} // closed by Resume; made anew by Pause
	conns   map[net.Conn]struct{}

	closeOnce sync.Once
	closed    chan struct{}
	wg        sync.WaitGroup

	accepted atomic.Int64 // connections accepted since start
	bytes    atomic.Int64 // bytes handed on, both ways
}

// startTCPProxy listens on a loopback port the kernel picks, other than
// the addresses in avoid (reserved for regions that have not started
// yet), and forwards every connection to target.
func startTCPProxy(t *testing.T, target string, avoid ...string) *tcpProxy {
	t.Helper()
	var lis net.Listener
	for attempt := 0; ; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("tcp proxy to %s: %v", target, err)
		}
		if !slices.Contains(avoid, l.Addr().String()) || attempt == 20 {
			lis = l
			break
		}
		// Keep it open while picking again, so the kernel moves on.
		defer l.Close()
	}
	p := &tcpProxy{
		target:  target,
		lis:     lis,
		resumed: make(chan struct{}),
		conns:   make(map[net.Conn]struct{}),
		closed:  make(chan struct{}),
	}
	close(p.resumed) // forwarding
	p.wg.Go(p.acceptLoop)
	t.Cleanup(p.Close)
	return p
}

// Addr is the address to dial instead of the target.
func (p *tcpProxy) Addr() string { return p.lis.Addr().String() }

// Pause stops forwarding, on the connections open now and on new ones.
func (p *tcpProxy) Pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.paused {
		p.paused = true
		p.resumed = make(chan struct{})
	}
}

// Resume forwards again, first what waited.
func (p *tcpProxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.paused {
		p.paused = false
		close(p.resumed)
	}
}

// Accepted is the number of connections accepted so far.
func (p *tcpProxy) Accepted() int64 { return p.accepted.Load() }

// Bytes is the number of bytes handed on so far, both ways.
func (p *tcpProxy) Bytes() int64 { return p.bytes.Load() }

// Close stops listening, closes every connection and waits for the
// proxy's goroutines. It may be called more than once.
func (p *tcpProxy) Close() {
	p.closeOnce.Do(func() {
		close(p.closed)
		_ = p.lis.Close()
		p.mu.Lock()
		for c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
	})
	p.wg.Wait()
}

// pass waits while the proxy is paused; false once it is closed.
func (p *tcpProxy) pass() bool {
	for {
		p.mu.Lock()
		paused, resumed := p.paused, p.resumed
		p.mu.Unlock()
		if !paused {
			select {
			case <-p.closed:
				return false
			default:
				return true
			}
		}
		select {
		case <-resumed:
		case <-p.closed:
			return false
		}
	}
}

// track adds c to the connections Close closes; false when closed already.
func (p *tcpProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.closed:
		return false
	default:
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *tcpProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

func (p *tcpProxy) acceptLoop() {
	for {
		c, err := p.lis.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			select {
			case <-p.closed:
				return
			case <-time.After(10 * time.Millisecond): // out of descriptors, say
			}
			continue
		}
		p.accepted.Add(1)
		if !p.track(c) {
			_ = c.Close()
			return
		}
		p.wg.Go(func() { p.serve(c) })
	}
}

// serve connects one accepted connection to the target and pumps both
// ways until either side ends, then closes both.
func (p *tcpProxy) serve(down net.Conn) {
	defer func() {
		_ = down.Close()
		p.untrack(down)
	}()
	// A real network would hang the handshake too; dialing at once and
	// holding the bytes is the same to the dialer.
	up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		return
	}
	if !p.track(up) {
		_ = up.Close()
		return
	}
	defer func() {
		_ = up.Close()
		p.untrack(up)
	}()
	done := make(chan struct{}, 2)
	pump := func(dst, src net.Conn) {
		defer func() { done <- struct{}{} }()
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				if !p.pass() {
					return
				}
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
				p.bytes.Add(int64(n))
			}
			if err != nil {
				// The end of the stream is news that a stalled
				// network does not pass on either.
				p.pass()
				return
			}
		}
	}
	go pump(up, down)
	go pump(down, up)
	<-done
	_ = up.Close()
	_ = down.Close()
	<-done
}
