package mesh

import (
	"context"
	"io"
	"net"
	"sync"
	"time"

	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
)

// clientStreamConn is a net.Conn over the client side of a Relay stream.
type clientStreamConn struct {
	stream roamingv1.BusinessService_RelayClient
	cancel context.CancelFunc
	via    string

	rmu  sync.Mutex
	rbuf []byte

	wmu  sync.Mutex
	once sync.Once
}

func newClientStreamConn(stream roamingv1.BusinessService_RelayClient, cancel context.CancelFunc, via string) *clientStreamConn {
	return &clientStreamConn{stream: stream, cancel: cancel, via: via}
}

func (c *clientStreamConn) Read(b []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for len(c.rbuf) == 0 {
		resp, err := c.stream.Recv()
		if err != nil {
			// The relay's own status (often CANCELED when the mesh
			// closes a rerouted connection) must not reach the calls
			// inside the tunnel: to them this is a closed connection.
			if err == io.EOF {
				return 0, io.EOF
			}
			return 0, net.ErrClosed
		}
		c.rbuf = resp.GetData()
	}
	n := copy(b, c.rbuf)
	c.rbuf = c.rbuf[n:]
	return n, nil
}

// maxFrame keeps relay frames well under gRPC's message limits.
const maxFrame = 64 << 10

func (c *clientStreamConn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	written := 0
	for len(b) > 0 {
		n := min(len(b), maxFrame)
		// The frame must not alias b, which the caller may reuse.
		data := append([]byte(nil), b[:n]...)
		if err := c.stream.Send(&roamingv1.RelayRequest{Kind: &roamingv1.RelayRequest_Data{Data: data}}); err != nil {
			return written, err
		}
		written += n
		b = b[n:]
	}
	return written, nil
}

func (c *clientStreamConn) Close() error {
	c.once.Do(c.cancel)
	return nil
}

func (c *clientStreamConn) LocalAddr() net.Addr  { return relayAddr("local") }
func (c *clientStreamConn) RemoteAddr() net.Addr { return relayAddr("via " + c.via) }

// Deadlines are not supported on a relayed connection; gRPC bounds its own
// calls with contexts and keepalives.
func (c *clientStreamConn) SetDeadline(time.Time) error      { return nil }
func (c *clientStreamConn) SetReadDeadline(time.Time) error  { return nil }
func (c *clientStreamConn) SetWriteDeadline(time.Time) error { return nil }

type relayAddr string

func (a relayAddr) Network() string { return "roamfed-relay" }
func (a relayAddr) String() string  { return string(a) }
