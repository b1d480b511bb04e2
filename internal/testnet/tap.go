package testnet

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"

	"golang.org/x/net/http2"
)

// Taps dials TCP conns that keep a copy of every byte they read and wrote,
// so that a test can read the HTTP/2 frames a gRPC conn carried. Its Dial
// fits grpc.WithContextDialer.
type Taps struct {
	mu    sync.Mutex
	conns []*tap
}

type tap struct {
	net.Conn
	mu          sync.Mutex
	read, wrote bytes.Buffer
}

func (c *tap) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.read.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

func (c *tap) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.mu.Lock()
	c.wrote.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

// Dial dials addr over TCP and taps the conn.
func (ts *Taps) Dial(ctx context.Context, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	tc := &tap{Conn: c}
	ts.mu.Lock()
	ts.conns = append(ts.conns, tc)
	ts.mu.Unlock()
	return tc, nil
}

// WantNoPings fails t unless the dialling side wrote something on the
// conns so far and no PING frame, acknowledgements left out, went either
// way on them; doing says what the test did, for the error.
func (ts *Taps) WantNoPings(t testing.TB, doing string) {
	t.Helper()
	sent, received, wrote := ts.Pings(t)
	if wrote == 0 {
		t.Fatal("nothing written on the conn")
	}
	if sent != 0 || received != 0 {
		t.Errorf("%s: the client sent %d PINGs, the server %d; want none", doing, sent, received)
	}
}

// Pings counts the PING frames, acknowledgements left out, that the
// dialling side sent and received on every conn so far, and the bytes it
// wrote. It fails t when nothing was dialled or a byte stream is not
// HTTP/2.
func (ts *Taps) Pings(t testing.TB) (sent, received, wrote int) {
	t.Helper()
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if len(ts.conns) == 0 {
		t.Fatal("testnet: no conn was dialled through the taps")
	}
	for _, c := range ts.conns {
		c.mu.Lock()
		sent += pings(t, c.wrote.Bytes())
		received += pings(t, c.read.Bytes())
		wrote += c.wrote.Len()
		c.mu.Unlock()
	}
	return sent, received, wrote
}

// pings counts the PING frames, acknowledgements left out, in an HTTP/2
// byte stream (a client's starts with the connection preface).
func pings(t testing.TB, stream []byte) int {
	t.Helper()
	stream = bytes.TrimPrefix(stream, []byte(http2.ClientPreface))
	fr := http2.NewFramer(nil, bytes.NewReader(stream))
	n := 0
	for {
		f, err := fr.ReadFrame()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return n // the tap may end inside a frame
		}
		if err != nil {
			t.Fatalf("testnet: parse HTTP/2 frames: %v", err)
		}
		if p, ok := f.(*http2.PingFrame); ok && !p.IsAck() {
			n++
		}
	}
}
