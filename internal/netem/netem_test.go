package netem

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// checkGoroutines fails the test if, once its cleanups have run, more
// goroutines are left than when it started. Call it first, so that its
// cleanup runs last.
func checkGoroutines(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Errorf("goroutines: %d after, %d before\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// echoServer serves TCP on loopback, writing back whatever it reads. It
// stops, and waits for its conns, in cleanup.
func echoServer(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Go(func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { _, _ = io.Copy(c, c) })
		}
	})
	t.Cleanup(func() {
		lis.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return lis.Addr().String()
}

func dial(t *testing.T, l *Link, addr string) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := l.Dialer()(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip writes msg and reads it back, returning how long it took.
func roundTrip(t *testing.T, c net.Conn, msg []byte) time.Duration {
	t.Helper()
	start := time.Now()
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("read %q, want %q", got, msg)
	}
	return time.Since(start)
}

func TestDelay(t *testing.T) {
	checkGoroutines(t)
	addr := echoServer(t)
	for _, tc := range []struct {
		name     string
		delay    time.Duration
		min, max time.Duration
	}{
		{"none", 0, 0, 20 * time.Millisecond},
		{"20ms", 20 * time.Millisecond, 40 * time.Millisecond, 140 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := NewLink()
			l.SetDelay(tc.delay)
			c := dial(t, l, addr)
			for i := range 5 {
				rtt := roundTrip(t, c, []byte("ping"))
				if rtt < tc.min || rtt > tc.max {
					t.Errorf("round trip %d took %v, want %v to %v", i, rtt, tc.min, tc.max)
				}
			}
			// Each ping is a chunk out and a chunk back; without a delay
			// nothing waits, so nothing counts.
			want := uint64(0)
			if tc.delay > 0 {
				want = 10
			}
			if n := l.Lateness().Count(); n != want {
				t.Errorf("lateness counted %d chunks, want %d", n, want)
			}
			if late := l.Lateness().Quantile(1); late > tc.max-2*tc.delay {
				t.Errorf("the latest chunk was %v late; the round trips allow at most %v", late, tc.max-2*tc.delay)
			}
		})
	}
}

// TestLatenessSkipsCuts: a chunk held by a cut is late because of the cut,
// not the timer, and is not counted.
func TestLatenessSkipsCuts(t *testing.T) {
	checkGoroutines(t)
	addr := echoServer(t)
	n := NewNet()
	l := n.Link(addr)
	l.SetDelay(2 * time.Millisecond)
	c := dial(t, l, addr)
	roundTrip(t, c, []byte("before"))
	if got := n.Lateness().Count(); got != 2 {
		t.Fatalf("after one round trip the net counted %d chunks, want 2", got)
	}
	// Queued before the cut, and during it.
	if _, err := c.Write([]byte("held")); err != nil {
		t.Fatal(err)
	}
	l.Cut()
	if _, err := c.Write([]byte("during")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	l.Restore()
	got := make([]byte, len("heldduring"))
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "heldduring" {
		t.Fatalf("read %q, %v", got, err)
	}
	// The two out chunks were held; the echo's answer came back after the
	// cut, delayed only (as one chunk or two).
	if got := n.Lateness().Count(); got < 3 || got > 4 {
		t.Errorf("net counted %d chunks, want 3 or 4", got)
	}
	if late := n.Lateness().Quantile(1); late >= 40*time.Millisecond {
		t.Errorf("a chunk counted %v late: the cut's 50 ms were counted", late)
	}
}

func TestLatenessQuantile(t *testing.T) {
	var l Lateness
	if got := l.Quantile(0.5); got != 0 {
		t.Errorf("empty: %v", got)
	}
	for i := range 100 {
		l.record(time.Duration(i) * 100 * time.Microsecond) // 0 to 9.9 ms
	}
	l.record(-time.Millisecond) // a timer cannot fire early; counted as 0
	l.record(time.Hour)         // beyond the last bucket
	if n := l.Count(); n != 102 {
		t.Errorf("count %d", n)
	}
	for q, want := range map[float64]time.Duration{
		0:    10 * time.Microsecond,
		0.5:  5010 * time.Microsecond, // the bucket of 5.0 ms, by its upper bound
		0.98: 9810 * time.Microsecond,
		1:    latenessMax,
	} {
		if got := l.Quantile(q); got != want {
			t.Errorf("Quantile(%v) = %v, want %v", q, got, want)
		}
	}
}

// TestPipelining checks that writes return at once and travel together:
// many messages written back to back all arrive one round trip later, not
// one round trip each.
func TestPipelining(t *testing.T) {
	checkGoroutines(t)
	l := NewLink()
	l.SetDelay(20 * time.Millisecond)
	c := dial(t, l, echoServer(t))
	const n = 50
	start := time.Now()
	for i := range n {
		if _, err := c.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > 10*time.Millisecond {
		t.Errorf("%d writes took %v; Write should not wait for the delay", n, d)
	}
	got := make([]byte, n)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 40*time.Millisecond || d > 200*time.Millisecond {
		t.Errorf("all %d echoed after %v, want about 40ms", n, d)
	}
	for i, b := range got {
		if int(b) != i {
			t.Fatalf("byte %d is %d", i, b)
		}
	}
}

// TestOrder sends numbered records of many sizes while the delay changes
// (shorter delays must not let later bytes overtake earlier ones) and checks
// that they come back in order.
func TestOrder(t *testing.T) {
	checkGoroutines(t)
	l := NewLink()
	l.SetDelay(10 * time.Millisecond)
	c := dial(t, l, echoServer(t))
	const n = 2000
	errc := make(chan error, 1)
	go func() {
		for i := range n {
			switch i {
			case n / 3:
				l.SetDelay(0)
			case 2 * n / 3:
				l.SetDelay(5 * time.Millisecond)
			}
			rec := make([]byte, 4+i%300)
			binary.BigEndian.PutUint32(rec, uint32(i))
			if _, err := c.Write(rec); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	for i := range n {
		rec := make([]byte, 4+i%300)
		if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, rec); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if got := binary.BigEndian.Uint32(rec); got != uint32(i) {
			t.Fatalf("record %d arrived as number %d", i, got)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestCutAndRestore(t *testing.T) {
	checkGoroutines(t)
	addr := echoServer(t)
	l := NewLink()
	c := dial(t, l, addr)
	roundTrip(t, c, []byte("before"))

	l.Cut()
	if !l.IsCut() {
		t.Fatal("IsCut is false after Cut")
	}
	// Writes are taken and held; nothing comes back.
	if _, err := c.Write([]byte("during")); err != nil {
		t.Fatalf("write while cut: %v", err)
	}
	// A conn dialled during the cut connects and stalls too.
	fresh := dial(t, l, addr)
	if _, err := fresh.Write([]byte("fresh")); err != nil {
		t.Fatal(err)
	}
	for _, conn := range []net.Conn{c, fresh} {
		if err := conn.SetReadDeadline(time.Now().Add(150 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		n, err := conn.Read(make([]byte, 16))
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read while cut: %d bytes, %v; want a timeout", n, err)
		}
	}

	l.Restore()
	for conn, want := range map[net.Conn]string{c: "during", fresh: "fresh"} {
		got := make([]byte, len(want))
		if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(conn, got); err != nil || string(got) != want {
			t.Fatalf("after restore read %q, %v; want %q", got, err, want)
		}
	}
	roundTrip(t, c, []byte("after"))
}

// TestCutBlocksFullWriter checks that a cut conn pushes back once its
// buffer is full instead of growing without bound.
func TestCutBlocksFullWriter(t *testing.T) {
	checkGoroutines(t)
	l := NewLink()
	c := dial(t, l, echoServer(t))
	l.Cut()
	if err := c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, maxQueued+maxChunk)
	n, err := c.Write(big)
	if !errors.Is(err, os.ErrDeadlineExceeded) || n > maxQueued {
		t.Fatalf("write of %d bytes to a cut link: %d written, %v; want at most %d and a timeout", len(big), n, err, maxQueued)
	}
	l.Restore()
}

func TestClose(t *testing.T) {
	checkGoroutines(t)
	addr := echoServer(t)
	l := NewLink()
	l.SetDelay(50 * time.Millisecond)
	c := dial(t, l, addr)
	if _, err := c.Write([]byte("held in the delay line")); err != nil {
		t.Fatal(err)
	}
	// A Read waiting for those bytes is woken by Close.
	readErr := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 8))
		readErr <- err
	}()
	time.Sleep(10 * time.Millisecond)
	if err := c.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := <-readErr; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("pending read got %v, want net.ErrClosed", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
	if err := c.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second close: %v", err)
	}
	if n := l.Conns(); n != 0 {
		t.Fatalf("link has %d conns after close", n)
	}
}

// TestPeerClose checks that the peer's EOF reaches Read after the bytes
// before it.
func TestPeerClose(t *testing.T) {
	checkGoroutines(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s, err := lis.Accept()
		if err != nil {
			return
		}
		_, _ = s.Write([]byte("bye"))
		s.Close()
	}()
	l := NewLink()
	l.SetDelay(10 * time.Millisecond)
	c := dial(t, l, lis.Addr().String())
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "bye" {
		t.Fatalf("read %q, %v; want \"bye\" then EOF", got, err)
	}
	<-done
}

// TestGRPC runs a gRPC health check through a Net: calls work, and a
// unary round trip takes at least twice the one-way delay.
func TestGRPC(t *testing.T) {
	checkGoroutines(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-served })

	n := NewNet()
	addr := lis.Addr().String()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), n.DialOption())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	hc := healthpb.NewHealthClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	n.Link(addr).SetDelay(25 * time.Millisecond)
	start := time.Now()
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 50*time.Millisecond || d > 500*time.Millisecond {
		t.Errorf("call over a 25ms link took %v, want about 50ms", d)
	}
	if got := n.Link(addr).Conns(); got != 1 {
		t.Errorf("link has %d conns, want 1", got)
	}

	// A cut link stalls the call until its deadline.
	n.Link(addr).Cut()
	short, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	_, err = hc.Check(short, &healthpb.HealthCheckRequest{})
	cancelShort()
	if err == nil {
		t.Fatal("call over a cut link succeeded")
	}
	n.Link(addr).Restore()
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("call after restore: %v", err)
	}
	cc.Close()
	deadline := time.Now().Add(5 * time.Second)
	for n.Link(addr).Conns() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("gRPC's conn still open after the client closed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
