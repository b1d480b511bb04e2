package clientkit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/roamfed/roamfed/api/admin/v1"
	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	"github.com/roamfed/roamfed/internal/quota"
	"github.com/roamfed/roamfed/internal/stack"
	"github.com/roamfed/roamfed/servicecenter/resourcepool"
)

// refusal is the RESOURCE_EXHAUSTED a region sends, built as the region
// builds it, asking for retryAfter (none when 0).
func refusal(retryAfter time.Duration) error {
	return quota.Status("sessions quota exceeded for user:u", quota.Violation{
		Subject: "user:u", ID: string(resourcepool.ReasonSessions), Description: "full", RetryAfter: retryAfter,
	}).Err()
}

func TestBackoffAfter(t *testing.T) {
	const ms = time.Millisecond
	negative, err := status.New(codes.ResourceExhausted, "full").
		WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(-time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		err  error
		// The wait after err, as the first after a reset with min 100ms
		// and max 1s, must be within [lo, hi].
		lo, hi time.Duration
	}{
		{"no status: the backoff", errors.New("connection reset"), 75 * ms, 100 * ms},
		{"refusal without RetryInfo: the backoff", refusal(0), 75 * ms, 100 * ms},
		{"RetryInfo shorter than the backoff: the backoff", refusal(10 * ms), 75 * ms, 100 * ms},
		{"RetryInfo: at least its delay, up to a quarter more", refusal(2 * time.Second), 2 * time.Second, 2500 * ms},
		{"RetryInfo in a wrapped error", fmt.Errorf("session: %w", refusal(400*ms)), 400 * ms, 500 * ms},
		{"bogus RetryInfo: capped at maxRetryDelay", refusal(72 * time.Hour), maxRetryDelay, maxRetryDelay + maxRetryDelay/4},
		{"negative RetryInfo: the backoff", negative.Err(), 75 * ms, 100 * ms},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seen := map[time.Duration]bool{}
			for range 200 {
				b := backoff{min: 100 * ms, max: time.Second}
				d := b.after(tc.err)
				if d < tc.lo || d > tc.hi {
					t.Fatalf("wait %s, want within [%s, %s]", d, tc.lo, tc.hi)
				}
				if b.wait != 100*ms {
					t.Fatalf("backoff wait %s after one attempt, want 100ms: the backoff must advance", b.wait)
				}
				seen[d] = true
			}
			if len(seen) < 2 {
				t.Errorf("200 waits, all %v: no jitter", seen)
			}
		})
	}
}

// withRetryInfo makes every RESOURCE_EXHAUSTED that ends a Session stream
// ask for delay in an errdetails.RetryInfo, in place of any it had.
func withRetryInfo(delay time.Duration) grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		cs, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil || method != clientv1.ClientService_Session_FullMethodName {
			return cs, err
		}
		return retryInfoStream{ClientStream: cs, delay: delay}, nil
	}
}

type retryInfoStream struct {
	grpc.ClientStream
	delay time.Duration
}

func (s retryInfoStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if status.Code(err) != codes.ResourceExhausted {
		return err
	}
	p := status.Convert(err).Proto()
	p.Details = slices.DeleteFunc(p.Details, func(a *anypb.Any) bool { return a.MessageIs((*errdetails.RetryInfo)(nil)) })
	st, werr := status.FromProto(p).WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(s.delay)})
	if werr != nil {
		return err
	}
	return st.Err()
}

// TestFollowerHonoursRetryInfo fills the region's only session slot, so
// that the region refuses the follower's stream with RESOURCE_EXHAUSTED,
// and checks that the follower waits the delay the refusal's RetryInfo
// asks for between attempts (its own backoff would retry after 20ms,
// 40ms, ...), and gets in once the slot is free.
//
// The region's sessions refusal asks for resourcepool.SessionRetryAfter
// (1s); the follower's link replaces that with a shorter delay, to keep
// the test short.
func TestFollowerHonoursRetryInfo(t *testing.T) {
	const (
		delay    = 300 * time.Millisecond
		retryMin = 20 * time.Millisecond
		refusals = 3
		token    = "admin-token"
	)
	st := startRegionWith(t, func(c *stack.Config) {
		c.Limits.MaxSessions = 1
		c.AdminAddr, c.AdminToken = "127.0.0.1:0", token
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	alice := signIn(t, ctx, st.ClientAddr(), "alice")
	bob := signIn(t, ctx, st.ClientAddr(), "bob")

	ac, err := grpc.NewClient(st.AdminAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ac.Close() })
	admin := adminv1.NewAdminServiceClient(ac)
	regionRefused := func() uint64 {
		t.Helper()
		resp, err := admin.Status(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token), &adminv1.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetResources().GetRefused()[string(resourcepool.ReasonSessions)]
	}

	// alice takes the region's only slot.
	hold, _, err := OpenStream(WithToken(ctx, alice.token), alice.api, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var closeHold sync.Once
	defer closeHold.Do(hold.Close)

	cc, err := grpc.NewClient(st.ClientAddr(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStreamInterceptor(withRetryInfo(delay)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })

	refused := make(chan time.Time, 64)
	readies := make(chan time.Time, 4)
	f := NewFollower(FollowerConfig{
		API: clientv1.NewClientServiceClient(cc), Token: bob.token,
		RetryMin: retryMin, RetryMax: 10 * time.Second,
		OnReady: func(*clientv1.Ready) { readies <- time.Now() },
		OnError: func(err error) {
			if d, ok := RetryDelay(err); status.Code(err) != codes.ResourceExhausted || !ok || d != delay {
				t.Errorf("follower error %v, want RESOURCE_EXHAUSTED asking for %s", err, delay)
			}
			select {
			case refused <- time.Now():
			default:
			}
		},
	})
	defer runFollower(t, ctx, f)()

	var at []time.Time
	for range refusals {
		at = append(at, nextTime(t, ctx, refused, "refusal"))
	}
	for i := 1; i < len(at); i++ {
		if gap := at[i].Sub(at[i-1]); gap < delay {
			t.Errorf("refusal %d came %s after the one before; the region asked for %s", i+1, gap, delay)
		}
	}
	// The region's own count: no attempt the follower did not report, and
	// no more than one per delay.
	elapsed := time.Since(at[0])
	n, most := regionRefused(), uint64(1+elapsed/delay)
	if n < refusals {
		t.Errorf("the region refused %d sessions; the follower saw %d refusals", n, refusals)
	}
	if n > most {
		t.Errorf("the region refused %d sessions in %s, want at most %d (one per %s)", n, elapsed.Round(time.Millisecond), most, delay)
	}
	select {
	case <-readies:
		t.Fatal("Ready while the region's only slot is taken")
	default:
	}

	closeHold.Do(hold.Close)
	freed := time.Now()
	back := nextTime(t, ctx, readies, "Ready once the slot is free").Sub(freed)
	t.Logf("Ready %s after the slot was freed", back.Round(time.Millisecond))
	if limit := delay + delay/4 + time.Second; back > limit {
		t.Errorf("Ready %s after the slot was freed, want within %s", back, limit)
	}
}
