package resourcepool

import (
	"context"
	"errors"
	"io"
	"math"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/internal/certs"
	"github.com/roamfed/roamfed/internal/quota"
	"github.com/roamfed/roamfed/regions"
)

// Drill answers at once; the rate limit tests use it as an ordinary unary
// call (Heartbeat takes no token).
func (b *business) Drill(ctx context.Context, _ *roamingv1.DrillRequest) (*roamingv1.DrillResponse, error) {
	if err := b.record(ctx); err != nil {
		return nil, err
	}
	return &roamingv1.DrillResponse{}, nil
}

// Relay echoes every data frame after the opening one.
func (b *business) Relay(stream roamingv1.BusinessService_RelayServer) error {
	for {
		f, err := stream.Recv()
		if err != nil {
			return nil
		}
		if f.GetOpen() != nil {
			continue
		}
		if err := stream.Send(&roamingv1.RelayResponse{Data: f.GetData()}); err != nil {
			return err
		}
	}
}

// clock is a time that moves only when a test says.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(lim *RateLimiter) *clock {
	c := &clock{t: time.Now()}
	lim.now = c.now
	return c
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// strictBusiness is business whose Submit ends with the error of its
// Recv, as the roaming business server's does, and keeps the batch ids it
// was handed.
type strictBusiness struct {
	*business
	mu      sync.Mutex
	batches []uint64
}

func (b *strictBusiness) Submit(stream roamingv1.BusinessService_SubmitServer) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		b.mu.Lock()
		b.batches = append(b.batches, req.GetBatchId())
		b.mu.Unlock()
		if err := stream.Send(&roamingv1.SubmitResponse{BatchId: req.GetBatchId()}); err != nil {
			return err
		}
	}
}

func (b *strictBusiness) handed() []uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.batches)
}

// tlsFederation is the federation of the rate limit tests, with a dev CA
// and a certificate per region.
func tlsFederation(t *testing.T) *certs.Set {
	t.Helper()
	fed, err := regions.Parse("rate.yaml", []byte(`regions:
  - name: ap
    roaming_addr: 127.0.0.1:1
    client_addr: 127.0.0.1:2
  - name: eu
    roaming_addr: 127.0.0.1:3
    client_addr: 127.0.0.1:4
  - name: us
    roaming_addr: 127.0.0.1:5
    client_addr: 127.0.0.1:6
`))
	if err != nil {
		t.Fatal(err)
	}
	set, err := certs.EnsureDev(t.TempDir(), fed)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// serveLimited starts eu's roaming server over mutual TLS, with the
// identity check and lim, on a fresh loopback port; it stops when the test
// ends.
func serveLimited(t *testing.T, set *certs.Set, lim *RateLimiter) (string, *strictBusiness) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts := append(ServerOptions("eu", federation, certs.CheckClaim), grpc.Creds(set.For("eu").ServerCredentials()))
	srv := grpc.NewServer(append(opts, lim.ServerOptions()...)...)
	b := &strictBusiness{business: &business{self: "eu"}}
	roamingv1.RegisterBusinessServiceServer(srv, b)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(lis) })
	t.Cleanup(func() {
		srv.Stop()
		wg.Wait()
	})
	return lis.Addr().String(), b
}

// peerClient is region from's BusinessService client to eu at addr.
func peerClient(t *testing.T, set *certs.Set, from, addr string) roamingv1.BusinessServiceClient {
	t.Helper()
	addrs := map[string]string{"eu": addr}
	p := newPeers(t, Config{Self: from, Addrs: addrs, Creds: set.For(from).PeerCredentials(addrs)})
	return businessClient(t, p, "eu")
}

func drill(c roamingv1.BusinessServiceClient) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.Drill(ctx, &roamingv1.DrillRequest{})
	return err
}

// wantQuota checks that err is a peer_rate refusal of peer with its
// details, and returns its retry delay.
func wantQuota(t *testing.T, err error, peer string) time.Duration {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted {
		t.Fatalf("error %v has code %v; want ResourceExhausted", err, st.Code())
	}
	qf, ri := quota.Details(st)
	if qf == nil || len(qf.GetViolations()) != 1 {
		t.Fatalf("details %v: want one QuotaFailure violation", st.Details())
	}
	if v := qf.GetViolations()[0]; v.GetQuotaId() != ReasonPeerRate || v.GetSubject() != "region:"+peer {
		t.Fatalf("violation %v; want quota %s for region:%s", v, ReasonPeerRate, peer)
	}
	if ri == nil || ri.GetRetryDelay().AsDuration() <= 0 {
		t.Fatalf("RetryInfo %v; want a delay", ri)
	}
	return ri.GetRetryDelay().AsDuration()
}

// TestRateLimitUnary spends ap's bucket on unary calls over real mutual
// TLS: the call past the burst is refused with its details and counted,
// ap's heartbeats and health checks still pass, eu's other peer keeps its
// own budget, and ap is let in again once a token has come back.
func TestRateLimitUnary(t *testing.T) {
	set := tlsFederation(t)
	lim := NewRateLimiter("eu", federation, Limits{PeerRate: 2, PeerBurst: 3})
	clk := newClock(lim)
	addr, _ := serveLimited(t, set, lim)
	ap := peerClient(t, set, "ap", addr)
	us := peerClient(t, set, "us", addr)

	// The bucket holds 3 and refills every 500 ms of the limiter's clock,
	// which stands still: 3 calls pass and the fourth finds it empty.
	for i := range 3 {
		if err := drill(ap); err != nil {
			t.Fatalf("call %d within the burst: %v", i+1, err)
		}
	}
	wait := wantQuota(t, drill(ap), "ap")
	if wait != 500*time.Millisecond {
		t.Fatalf("RetryInfo delay %v; want 500ms, one token at 2/s", wait)
	}
	if got := lim.Refused(); got["ap"] != 1 || got["us"] != 0 {
		t.Fatalf("Refused = %v; want ap:1 us:0", got)
	}

	if _, err := heartbeat(t.Context(), ap); err != nil {
		t.Fatalf("heartbeat over the limit: %v; heartbeats take no token", err)
	}
	if err := drill(us); err != nil {
		t.Fatalf("us, within its own budget: %v", err)
	}

	// Just before RetryInfo's delay the bucket is still empty; at it,
	// ap is let in again, once.
	clk.advance(wait - time.Millisecond)
	wantQuota(t, drill(ap), "ap")
	clk.advance(time.Millisecond)
	if err := drill(ap); err != nil {
		t.Fatalf("after RetryInfo's delay: %v", err)
	}
	wantQuota(t, drill(ap), "ap")
	if got := lim.Refused()["ap"]; got != 3 {
		t.Fatalf("Refused[ap] = %d; want 3", got)
	}
}

// TestRateLimitStream spends ap's bucket on Submit batches: the stream
// takes a token to open and one per batch; the batch past the burst is
// never handed to the handler, and the stream ends with the refusal.
func TestRateLimitStream(t *testing.T) {
	set := tlsFederation(t)
	lim := NewRateLimiter("eu", federation, Limits{PeerRate: 2, PeerBurst: 4})
	newClock(lim)
	addr, eu := serveLimited(t, set, lim)
	ap := peerClient(t, set, "ap", addr)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := ap.Submit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// One token opened the stream; batches 1 to 3 take the rest.
	for id := uint64(1); id <= 3; id++ {
		if err := stream.Send(&roamingv1.SubmitRequest{BatchId: id}); err != nil {
			t.Fatalf("send batch %d: %v", id, err)
		}
		resp, err := stream.Recv()
		if err != nil || resp.GetBatchId() != id {
			t.Fatalf("batch %d: answer %v, %v", id, resp, err)
		}
	}
	if err := stream.Send(&roamingv1.SubmitRequest{BatchId: 4}); err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("send batch 4: %v", err)
	}
	resp, err := stream.Recv()
	if err == nil {
		t.Fatalf("batch 4 over the limit was answered: %v", resp)
	}
	wantQuota(t, err, "ap")
	if got := lim.Refused()["ap"]; got != 1 {
		t.Fatalf("Refused[ap] = %d; want 1", got)
	}
	if got := eu.handed(); !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Fatalf("the handler was handed batches %v; want [1 2 3], not the refused one", got)
	}
}

// TestRateLimitRelayFrames: opening a relay takes a token, its data
// frames do not (they are another region's connection, limited at its
// destination).
func TestRateLimitRelayFrames(t *testing.T) {
	set := tlsFederation(t)
	lim := NewRateLimiter("eu", federation, Limits{PeerRate: 2, PeerBurst: 2})
	newClock(lim)
	addr, _ := serveLimited(t, set, lim)
	ap := peerClient(t, set, "ap", addr)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := ap.Relay(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&roamingv1.RelayRequest{Kind: &roamingv1.RelayRequest_Open{Open: &roamingv1.RelayOpen{Origin: "ap", Destination: "us", Hops: []string{"ap"}}}}); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		data := []byte{byte(i)}
		if err := stream.Send(&roamingv1.RelayRequest{Kind: &roamingv1.RelayRequest_Data{Data: data}}); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		resp, err := stream.Recv()
		if err != nil || len(resp.GetData()) != 1 || resp.GetData()[0] != byte(i) {
			t.Fatalf("frame %d echoed as %v, %v", i, resp, err)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	// The relay took one token of two: one call passes, the next does not.
	if err := drill(ap); err != nil {
		t.Fatalf("the token left after the relay: %v", err)
	}
	if err := drill(ap); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("third request: %v; want ResourceExhausted", err)
	}
}

// TestRateLimitDisabled: +Inf takes every request.
func TestRateLimitDisabled(t *testing.T) {
	lim := NewRateLimiter("eu", federation, Limits{PeerRate: math.Inf(1), PeerBurst: 1})
	for i := range 10000 {
		if err := lim.Allow("ap"); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if err := lim.Allow("zz"); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a region with no bucket: %v; want PermissionDenied", err)
	}
	if err := lim.Allow("eu"); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("the serving region itself: %v; want PermissionDenied", err)
	}
}

func TestPeerRateLimits(t *testing.T) {
	d := DefaultLimits()
	if d.PeerRate < 1000 || d.PeerBurst < int(d.PeerRate) {
		t.Fatalf("default PeerRate %v, PeerBurst %d: the defaults must be generous", d.PeerRate, d.PeerBurst)
	}
	for _, l := range []Limits{{PeerRate: -1}, {PeerRate: math.NaN()}, {PeerBurst: -1}} {
		if err := l.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil; want an error", l)
		}
		if s := l.sanitized(); s.PeerRate != d.PeerRate || s.PeerBurst != d.PeerBurst {
			t.Errorf("sanitized(%+v) = %v, %d; want the defaults", l, s.PeerRate, s.PeerBurst)
		}
	}
	if err := (Limits{PeerRate: math.Inf(1)}).Validate(); err != nil {
		t.Errorf("+Inf PeerRate: %v; it disables the limit", err)
	}
}
