package mesh

import (
	"net"
	"sync"
)

// gate stalls a connection's reads and writes while its link is cut.
type gate struct {
	mu       sync.Mutex
	cut      bool
	restored chan struct{} // closed by Restore
}

func newGate() *gate {
	return &gate{restored: make(chan struct{})}
}

func (g *gate) set(cut bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if cut == g.cut {
		return
	}
	g.cut = cut
	if cut {
		g.restored = make(chan struct{})
	} else {
		close(g.restored)
	}
}

// wait blocks while the gate is cut, or until closed is closed. It reports
// false in the latter case.
func (g *gate) wait(closed <-chan struct{}) bool {
	for {
		g.mu.Lock()
		cut, ch := g.cut, g.restored
		g.mu.Unlock()
		if !cut {
			return true
		}
		select {
		case <-ch:
		case <-closed:
			return false
		}
	}
}

// trackedConn is a connection the mesh made: direct to peer when via is
// empty, else relayed through via. Direct ones pass through the link's
// gate.
type trackedConn struct {
	net.Conn
	m    *Mesh
	peer string
	via  string
	gate *gate // nil for relayed conns: a drill on this link does not touch them
	// traffic conns carry the region's calls; the others are heartbeats
	// and relays for other regions, which are not rerouted.
	traffic bool
	once    sync.Once
	closed  chan struct{}
}

func (c *trackedConn) Read(b []byte) (int, error) {
	if c.gate != nil && !c.gate.wait(c.closed) {
		return 0, net.ErrClosed
	}
	n, err := c.Conn.Read(b)
	// Bytes that arrived as the link was cut are held until it is
	// restored, as a real network would hold them in retransmission.
	if c.gate != nil && !c.gate.wait(c.closed) {
		return 0, net.ErrClosed
	}
	return n, err
}

func (c *trackedConn) Write(b []byte) (int, error) {
	if c.gate != nil && !c.gate.wait(c.closed) {
		return 0, net.ErrClosed
	}
	return c.Conn.Write(b)
}

func (c *trackedConn) Close() error {
	var err error
	c.once.Do(func() {
		close(c.closed)
		err = c.Conn.Close()
		c.m.untrack(c)
	})
	return err
}
