package clientkit

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
)

func TestBackoff(t *testing.T) {
	const ms = time.Millisecond
	for _, tc := range []struct {
		name string
		min  time.Duration
		max  time.Duration
		// ops is a run of "n" (next) and "r" (reset); want holds the wait
		// before jitter that each "n" must return.
		ops  string
		want []time.Duration
	}{
		{"doubles up to max", 100 * ms, 1000 * ms, "nnnnnn", []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, 1000 * ms, 1000 * ms}},
		{"reset starts over at min", 100 * ms, 1000 * ms, "nnnnnrnn", []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, 1000 * ms, 100 * ms, 200 * ms}},
		{"reset before any wait", 100 * ms, 1000 * ms, "rnrnrn", []time.Duration{100 * ms, 100 * ms, 100 * ms}},
		{"min equals max", 50 * ms, 50 * ms, "nnrn", []time.Duration{50 * ms, 50 * ms, 50 * ms}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := backoff{min: tc.min, max: tc.max}
			var got []time.Duration
			for _, op := range tc.ops {
				if op == 'r' {
					b.reset()
					continue
				}
				d := b.next()
				if d > b.wait || d < b.wait-b.wait/4 {
					t.Errorf("wait %d: %s, not within a quarter below %s", len(got), d, b.wait)
				}
				got = append(got, b.wait)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("waits %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("waits %v, want %v", got, tc.want)
				}
			}
		})
	}
}

// connTracker dials for a gRPC client conn and can break every conn it
// dialled, as a network failure would.
type connTracker struct {
	mu    sync.Mutex
	conns []net.Conn
}

func (c *connTracker) dial(ctx context.Context, addr string) (net.Conn, error) {
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.conns = append(c.conns, conn)
	c.mu.Unlock()
	return conn, nil
}

func (c *connTracker) breakAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.conns {
		conn.Close()
	}
	c.conns = nil
}

// TestFollowerBackoffResets breaks a healthy stream again and again and
// checks that each reconnect comes after about RetryMin: the backoff starts
// over after a stream that reached Ready instead of doubling on to
// RetryMax.
func TestFollowerBackoffResets(t *testing.T) {
	st := startRegion(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	bob := signIn(t, ctx, st.ClientAddr(), "bob")

	var tr connTracker
	cc, err := grpc.NewClient(st.ClientAddr(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(tr.dial))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })

	// Without the reset, the waits would be 20ms, 40ms, ... and the
	// eighth 2.56s less up to a quarter: well over the limit below.
	const (
		breaks   = 8
		retryMin = 20 * time.Millisecond
		limit    = time.Second
	)
	readies := make(chan time.Time, breaks+2)
	broken := make(chan time.Time, breaks+2)
	f := NewFollower(FollowerConfig{
		API: clientv1.NewClientServiceClient(cc), Token: bob.token,
		RetryMin: retryMin, RetryMax: 10 * time.Second,
		OnReady: func(*clientv1.Ready) { readies <- time.Now() },
		OnError: func(error) { broken <- time.Now() },
	})
	defer runFollower(t, ctx, f)()

	nextTime(t, ctx, readies, "first Ready")
	for i := range breaks {
		tr.breakAll()
		at := nextTime(t, ctx, broken, "error after the break")
		back := nextTime(t, ctx, readies, "Ready after the break").Sub(at)
		t.Logf("break %d: Ready again after %s", i+1, back)
		if back > limit {
			t.Errorf("break %d: Ready again after %s, want under %s (RetryMin %s)", i+1, back, limit, retryMin)
		}
	}
}
