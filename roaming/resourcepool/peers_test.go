package resourcepool

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
)

// federation is the region list every test server knows.
var federation = []string{"ap", "eu", "us"}

// business is a BusinessService whose Heartbeat and Submit record the
// calling region.
type business struct {
	roamingv1.UnimplementedBusinessServiceServer
	self  string
	stall bool // Heartbeat waits for its ctx to end

	mu   sync.Mutex
	seen []string
}

var _ roamingv1.BusinessServiceServer = (*business)(nil)

func (b *business) record(ctx context.Context) error {
	region, err := RegionFromContext(ctx)
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seen = append(b.seen, region)
	return nil
}

func (b *business) callers() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.seen)
}

func (b *business) Heartbeat(ctx context.Context, _ *roamingv1.HeartbeatRequest) (*roamingv1.HeartbeatResponse, error) {
	if err := b.record(ctx); err != nil {
		return nil, err
	}
	if b.stall {
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return &roamingv1.HeartbeatResponse{Region: b.self, ReceivedAt: timestamppb.Now()}, nil
}

func (b *business) Submit(stream roamingv1.BusinessService_SubmitServer) error {
	if err := b.record(stream.Context()); err != nil {
		return err
	}
	for {
		req, err := stream.Recv()
		if err != nil {
			return nil // the client closed its side, or left
		}
		if err := stream.Send(&roamingv1.SubmitResponse{BatchId: req.GetBatchId()}); err != nil {
			return err
		}
	}
}

// serve starts a roaming gRPC server for region self on addr ("127.0.0.1:0"
// for a new port), polling while a restarted server's port is still taken,
// and stops it when the test ends or stop is called.
func serve(t *testing.T, addr string, b *business) (bound string, stop func()) {
	t.Helper()
	var lis net.Listener
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		lis, err = net.Listen("tcp", addr)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("listen %s: %v", addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	srv := grpc.NewServer(ServerOptions(b.self, federation)...)
	roamingv1.RegisterBusinessServiceServer(srv, b)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis) // returns when stopped
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			srv.Stop()
			<-done
		})
	}
	t.Cleanup(stop)
	return lis.Addr().String(), stop
}

func newPeers(t *testing.T, cfg Config) *Peers {
	t.Helper()
	p, err := NewPeers(cfg)
	if err != nil {
		t.Fatalf("NewPeers: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p
}

func businessClient(t *testing.T, p *Peers, peer string) roamingv1.BusinessServiceClient {
	t.Helper()
	conn, err := p.Conn(peer)
	if err != nil {
		t.Fatalf("Conn(%q): %v", peer, err)
	}
	return roamingv1.NewBusinessServiceClient(conn)
}

func heartbeat(ctx context.Context, c roamingv1.BusinessServiceClient) (*roamingv1.HeartbeatResponse, error) {
	return c.Heartbeat(ctx, &roamingv1.HeartbeatRequest{SentAt: timestamppb.Now()})
}

func wantCode(t *testing.T, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("error %v has code %v; want %v", err, got, want)
	}
}

func TestPeersHeartbeatNamesSelf(t *testing.T) {
	eu := &business{self: "eu"}
	addr, _ := serve(t, "127.0.0.1:0", eu)
	var dials atomic.Int32
	dialer := func(ctx context.Context, addr string) (net.Conn, error) {
		dials.Add(1)
		return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	}
	p := newPeers(t, Config{
		Self:        "ap",
		Addrs:       map[string]string{"eu": addr, "ap": "127.0.0.1:1"},
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(dialer)},
	})
	if got := p.Names(); !slices.Equal(got, []string{"eu"}) {
		t.Fatalf("Names = %v; want [eu] (self is skipped)", got)
	}
	c := businessClient(t, p, "eu")

	// A caller's own region metadata is replaced, not added to.
	ctx := metadata.AppendToOutgoingContext(t.Context(), RegionMetadataKey, "us")
	resp, err := heartbeat(ctx, c)
	if err != nil {
		t.Fatalf("Heartbeat: %v", err)
	}
	if resp.GetRegion() != "eu" {
		t.Fatalf("Heartbeat answered by %q; want eu", resp.GetRegion())
	}

	stream, err := c.Submit(t.Context())
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	if err := stream.Send(&roamingv1.SubmitRequest{BatchId: 7}); err != nil {
		t.Fatalf("Send: %v", err)
	}
	got, err := stream.Recv()
	if err != nil || got.GetBatchId() != 7 {
		t.Fatalf("Recv = %v, %v; want batch 7", got, err)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}

	if got := eu.callers(); !slices.Equal(got, []string{"ap", "ap"}) {
		t.Fatalf("server saw callers %v; want [ap ap]", got)
	}
	if dials.Load() == 0 {
		t.Fatal("the dial option from Config.DialOptions was not used")
	}
}

func TestPeersCallerNotInFederation(t *testing.T) {
	addr, _ := serve(t, "127.0.0.1:0", &business{self: "eu"})
	p := newPeers(t, Config{Self: "zz", Addrs: map[string]string{"eu": addr}})
	c := businessClient(t, p, "eu")

	_, err := heartbeat(t.Context(), c)
	wantCode(t, err, codes.PermissionDenied)

	stream, err := c.Submit(t.Context())
	if err == nil {
		_, err = stream.Recv()
	}
	wantCode(t, err, codes.PermissionDenied)
}

// TestServerInterceptorsRawClient calls a roaming server from a plain gRPC
// client that sets the region metadata by hand, or not at all.
func TestServerInterceptorsRawClient(t *testing.T) {
	eu := &business{self: "eu"}
	addr, _ := serve(t, "127.0.0.1:0", eu)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	c := roamingv1.NewBusinessServiceClient(conn)

	tests := []struct {
		name    string
		regions []string
		want    codes.Code
	}{
		{name: "missing", want: codes.Unauthenticated},
		{name: "malformed", regions: []string{"EU!"}, want: codes.Unauthenticated},
		{name: "two values", regions: []string{"ap", "us"}, want: codes.Unauthenticated},
		{name: "not in federation", regions: []string{"zz"}, want: codes.PermissionDenied},
		{name: "claims to be self", regions: []string{"eu"}, want: codes.PermissionDenied},
		{name: "known peer", regions: []string{"us"}, want: codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			for _, r := range tt.regions {
				ctx = metadata.AppendToOutgoingContext(ctx, RegionMetadataKey, r)
			}
			_, err := heartbeat(ctx, c)
			wantCode(t, err, tt.want)

			stream, err := c.Submit(ctx)
			if err == nil {
				// A Send on a stream the server ended says only io.EOF;
				// Recv has the status.
				if err = stream.Send(&roamingv1.SubmitRequest{BatchId: 1}); err == nil || errors.Is(err, io.EOF) {
					_, err = stream.Recv()
				}
			}
			wantCode(t, err, tt.want)
		})
	}

	// Probes name no region and still get an answer.
	resp, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health Check = %v, %v; want SERVING", resp, err)
	}
}

func TestPeersCallTimeout(t *testing.T) {
	addr, _ := serve(t, "127.0.0.1:0", &business{self: "eu", stall: true})
	p := newPeers(t, Config{
		Self:   "ap",
		Addrs:  map[string]string{"eu": addr},
		Limits: Limits{CallTimeout: 200 * time.Millisecond},
	})
	start := time.Now()
	_, err := heartbeat(context.Background(), businessClient(t, p, "eu"))
	wantCode(t, err, codes.DeadlineExceeded)
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("a call without deadline took %v; CallTimeout is 200ms", took)
	}
}

func TestPeersReconnectsAfterRestart(t *testing.T) {
	addr, stop := serve(t, "127.0.0.1:0", &business{self: "eu"})
	p := newPeers(t, Config{Self: "ap", Addrs: map[string]string{"eu": addr}})
	c := businessClient(t, p, "eu")
	if _, err := heartbeat(t.Context(), c); err != nil {
		t.Fatalf("Heartbeat before restart: %v", err)
	}

	stop()
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	_, err := heartbeat(ctx, c)
	cancel()
	if err == nil {
		t.Fatal("Heartbeat succeeded with the server stopped")
	}

	eu := &business{self: "eu"}
	serve(t, addr, eu)
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		_, err := heartbeat(ctx, c)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no reconnect to the restarted server: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// gRPC hands a call the new transport a moment before the connection
	// reports READY; the report must follow.
	conn, _ := p.Conn("eu")
	sctx, scancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer scancel()
	for s := conn.GetState(); s != connectivity.Ready; s = conn.GetState() {
		if !conn.WaitForStateChange(sctx, s) {
			t.Fatalf("conn state %v 5s after a successful call; want READY", s)
		}
	}
	if got := eu.callers(); len(got) == 0 || got[0] != "ap" {
		t.Fatalf("restarted server saw callers %v; want ap", got)
	}
}

func TestPeersUnknownPeer(t *testing.T) {
	p := newPeers(t, Config{Self: "ap", Addrs: map[string]string{"eu": "127.0.0.1:1"}})
	if _, err := p.Conn("mars"); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("Conn(mars) = %v; want ErrUnknownPeer", err)
	}
	if _, err := p.Conn("ap"); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("Conn(self) = %v; want ErrUnknownPeer", err)
	}
	if w := p.Window("mars"); w != nil {
		t.Fatal("Window(mars) is not nil")
	}
}

func TestNewPeersRefusesBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{name: "no self", cfg: Config{}},
		{name: "malformed self", cfg: Config{Self: "AP"}},
		{name: "malformed peer", cfg: Config{Self: "ap", Addrs: map[string]string{"eu": "127.0.0.1:1", "E U": "127.0.0.1:2"}}},
		{name: "empty address", cfg: Config{Self: "ap", Addrs: map[string]string{"eu": ""}}},
		{name: "negative limit", cfg: Config{Self: "ap", Limits: Limits{WindowBytes: -1}}},
		{name: "batch over message size", cfg: Config{Self: "ap", Limits: Limits{MaxBatchBytes: MaxMessageBytes}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if p, err := NewPeers(tt.cfg); err == nil {
				_ = p.Close()
				t.Fatal("NewPeers succeeded")
			}
		})
	}
}

func TestPeersWindowsAndUsage(t *testing.T) {
	p := newPeers(t, Config{
		Self:   "ap",
		Addrs:  map[string]string{"eu": "127.0.0.1:1", "us": "127.0.0.1:2"},
		Limits: Limits{WindowBatches: 2, WindowBytes: 100},
	})
	if first, again := p.Window("eu"), p.Window("eu"); first != again {
		t.Fatal("Window(eu) returned different windows")
	}
	if p.Window("eu") == p.Window("us") {
		t.Fatal("eu and us share a window")
	}
	if err := p.Window("eu").Acquire(t.Context(), 40); err != nil {
		t.Fatal(err)
	}
	got := p.Usage()
	want := map[string]WindowUsage{
		"eu": {Batches: 1, Bytes: 40, MaxBatches: 2, MaxBytes: 100},
		"us": {MaxBatches: 2, MaxBytes: 100},
	}
	if len(got) != len(want) || got["eu"] != want["eu"] || got["us"] != want["us"] {
		t.Fatalf("Usage = %+v; want %+v", got, want)
	}
	if l := p.Limits(); l.MaxBatchMessages != DefaultLimits().MaxBatchMessages {
		t.Fatalf("Limits = %+v; want defaults for zero fields", l)
	}
}

func TestPeersClose(t *testing.T) {
	p, err := NewPeers(Config{
		Self:   "ap",
		Addrs:  map[string]string{"eu": "127.0.0.1:1"},
		Limits: Limits{WindowBatches: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	w := p.Window("eu")
	if err := w.Acquire(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	ch := acquireAsync(t, t.Context(), w, 1)
	waitFor(t, "a waiter", waiters(w, 1))

	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := recvErr(t, ch); !errors.Is(err, ErrWindowClosed) {
		t.Fatalf("waiting Acquire = %v; want ErrWindowClosed", err)
	}
	if _, err := p.Conn("eu"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Conn after Close = %v; want ErrClosed", err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestLimitsDefaults(t *testing.T) {
	if got, want := (Limits{}).WithDefaults(), DefaultLimits(); got != want {
		t.Fatalf("zero Limits WithDefaults = %+v; want %+v", got, want)
	}
	custom := Limits{WindowBatches: 3, CallTimeout: time.Second}
	got := custom.WithDefaults()
	if got.WindowBatches != 3 || got.CallTimeout != time.Second || got.WindowBytes != DefaultLimits().WindowBytes {
		t.Fatalf("WithDefaults = %+v; want set fields kept, zero ones defaulted", got)
	}
	if err := DefaultLimits().Validate(); err != nil {
		t.Fatalf("DefaultLimits do not validate: %v", err)
	}
	if err := (Limits{WindowBatches: -1, CallTimeout: -1}).Validate(); err == nil {
		t.Fatal("negative limits validated")
	}
}
