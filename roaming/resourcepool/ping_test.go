package resourcepool

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"

	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
)

// tappedConn keeps a copy of the bytes a conn read and wrote.
type tappedConn struct {
	net.Conn
	mu          sync.Mutex
	read, wrote bytes.Buffer
}

func (c *tappedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.read.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

func (c *tappedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.mu.Lock()
	c.wrote.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

// pings counts the PING frames, acknowledgements left out, in an HTTP/2
// byte stream (the client's starts with the connection preface).
func pings(t *testing.T, stream []byte) int {
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
			t.Fatalf("parse HTTP/2 frames: %v", err)
		}
		if p, ok := f.(*http2.PingFrame); ok && !p.IsAck() {
			n++
		}
	}
}

// TestPeersNoBandwidthPings sends light traffic on a Submit stream, one
// small batch at a time, and reads every frame on the wire: with the fixed
// flow-control windows of peers.go and ServerOptions, neither side sends a
// PING. (gRPC's bandwidth estimator, on when the windows are left to it,
// answers nearly every such batch with a PING round trip.)
func TestPeersNoBandwidthPings(t *testing.T) {
	addr, _ := serve(t, "127.0.0.1:0", &business{self: "eu"})
	var mu sync.Mutex
	var taps []*tappedConn
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		tc := &tappedConn{Conn: c}
		mu.Lock()
		taps = append(taps, tc)
		mu.Unlock()
		return tc, nil
	}
	p := newPeers(t, Config{
		Self:        "ap",
		Addrs:       map[string]string{"eu": addr},
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(dial)},
	})
	stream, err := businessClient(t, p, "eu").Submit(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	const batches = 50
	for i := range batches {
		if err := stream.Send(&roamingv1.SubmitRequest{BatchId: uint64(i + 1)}); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(taps) == 0 {
		t.Fatal("no conn was dialled")
	}
	for _, tc := range taps {
		tc.mu.Lock()
		sent, received := pings(t, tc.wrote.Bytes()), pings(t, tc.read.Bytes())
		frames := tc.wrote.Len()
		tc.mu.Unlock()
		if frames == 0 {
			t.Fatal("nothing written on the conn")
		}
		if sent != 0 || received != 0 {
			t.Errorf("%d round trips of one batch each: the client sent %d PINGs, the server %d; want none", batches, sent, received)
		}
	}
}
