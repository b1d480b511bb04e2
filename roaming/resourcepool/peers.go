package resourcepool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
)

// Errors of Peers.
var (
	// ErrUnknownPeer: the region is not a configured peer.
	ErrUnknownPeer = errors.New("resourcepool: unknown peer region")
	// ErrClosed: the Peers is closed.
	ErrClosed = errors.New("resourcepool: peers closed")
)

// Connection management of every peer conn. Keepalive pings find a dead
// link within Time+Timeout even when no call is running; the backoff keeps
// a link that comes back from waiting longer than maxDelay to be used.
var (
	clientKeepalive = keepalive.ClientParameters{
		Time:                10 * time.Second,
		Timeout:             5 * time.Second,
		PermitWithoutStream: true,
	}
	connectParams = grpc.ConnectParams{
		Backoff: backoff.Config{
			BaseDelay:  100 * time.Millisecond,
			Multiplier: backoff.DefaultConfig.Multiplier,
			Jitter:     0.2,
			MaxDelay:   3 * time.Second,
		},
		MinConnectTimeout: 2 * time.Second,
	}
	// serverKeepaliveMinTime is below the client's ping interval, so that
	// a ping that arrives a little early is not counted against the peer.
	serverKeepaliveMinTime = 5 * time.Second
)

// Config says whom Peers connects to and how.
type Config struct {
	// Self is this region's name, sent on every call as metadata
	// "roamfed-region".
	Self string
	// Addrs maps each peer region's name to its roaming address
	// (host:port). An entry for Self is skipped.
	Addrs map[string]string
	// Creds secures the conns; nil means insecure.
	Creds credentials.TransportCredentials
	// Limits is the budget per peer; zero fields mean their defaults.
	Limits Limits
	// Logger receives connection events; nil discards them.
	Logger *slog.Logger
	// DialOptions are added after the ones Peers sets, for instance a
	// test's dialer that delays or cuts a link.
	DialOptions []grpc.DialOption
}

// Peers owns one managed gRPC client conn and one Window per peer region.
type Peers struct {
	self   string
	limits Limits
	log    *slog.Logger
	names  []string
	peers  map[string]*peer // fixed after NewPeers

	mu     sync.Mutex
	closed bool
}

type peer struct {
	conn   *grpc.ClientConn
	window *Window
}

// NewPeers creates a conn for every peer in cfg.Addrs with grpc.NewClient;
// none connects before its first call. It fails if Self or a peer name is
// not a well-formed region name, an address is empty, Limits do not
// validate, or gRPC refuses a target.
func NewPeers(cfg Config) (*Peers, error) {
	if !ValidRegionName(cfg.Self) {
		return nil, fmt.Errorf("resourcepool: Self %q is not a region name (^[a-z][a-z0-9-]{0,31}$)", cfg.Self)
	}
	if err := cfg.Limits.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Peers{
		self:   cfg.Self,
		limits: cfg.Limits.sanitized(),
		log:    log,
		peers:  make(map[string]*peer, len(cfg.Addrs)),
	}
	creds := cfg.Creds
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithKeepaliveParams(clientKeepalive),
		grpc.WithConnectParams(connectParams),
		grpc.WithInitialWindowSize(StreamWindow),
		grpc.WithInitialConnWindowSize(ConnWindow),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(MaxMessageBytes),
			grpc.MaxCallSendMsgSize(MaxMessageBytes),
		),
		grpc.WithChainUnaryInterceptor(p.unaryInterceptor),
		grpc.WithChainStreamInterceptor(p.streamInterceptor),
	}
	opts = append(opts, cfg.DialOptions...)

	for _, name := range slices.Sorted(maps.Keys(cfg.Addrs)) {
		if name == cfg.Self {
			continue
		}
		addr := cfg.Addrs[name]
		err := func() error {
			if !ValidRegionName(name) {
				return fmt.Errorf("resourcepool: peer %q is not a region name (^[a-z][a-z0-9-]{0,31}$)", name)
			}
			if addr == "" {
				return fmt.Errorf("resourcepool: peer %q has no address", name)
			}
			return nil
		}()
		if err == nil {
			var conn *grpc.ClientConn
			// passthrough: the dialer gets the address as the federation
			// file spells it, which is how the mesh knows the peer.
			conn, err = grpc.NewClient("passthrough:///"+addr, opts...)
			if err != nil {
				err = fmt.Errorf("resourcepool: grpc.NewClient for peer %q at %q: %w", name, addr, err)
			} else {
				p.peers[name] = &peer{
					conn:   conn,
					window: NewWindow(p.limits.WindowBatches, p.limits.WindowBytes),
				}
				p.names = append(p.names, name)
			}
		}
		if err != nil {
			_ = p.Close() // the conns made so far; err says what went wrong
			return nil, err
		}
		p.log.Debug("roaming peer configured", slog.String("peer", name), slog.String("addr", addr))
	}
	return p, nil
}

// unaryInterceptor names this region on the call and bounds a call that has
// no deadline by CallTimeout, so that a silent peer cannot hold a caller
// forever.
func (p *Peers) unaryInterceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	ctx = withRegion(ctx, p.self)
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.limits.CallTimeout)
		defer cancel()
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

// streamInterceptor names this region on the stream.
func (p *Peers) streamInterceptor(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return streamer(withRegion(ctx, p.self), desc, cc, method, opts...)
}

// withRegion sets the region metadata to exactly self, whatever the caller
// put there: a peer refuses a call that names two regions.
func withRegion(ctx context.Context, self string) context.Context {
	md, ok := metadata.FromOutgoingContext(ctx) // a copy, ours to change
	if !ok {
		md = metadata.MD{}
	}
	md.Set(RegionMetadataKey, self)
	return metadata.NewOutgoingContext(ctx, md)
}

// Self returns this region's name.
func (p *Peers) Self() string { return p.self }

// Limits returns the limits in force, with defaults applied.
func (p *Peers) Limits() Limits { return p.limits }

// Conn returns the conn to peer. It fails with ErrUnknownPeer if peer is not
// configured and ErrClosed after Close. The conn belongs to Peers; callers
// must not close it.
func (p *Peers) Conn(peer string) (*grpc.ClientConn, error) {
	pr, ok := p.peers[peer]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownPeer, peer)
	}
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	return pr.conn, nil
}

// Names returns the configured peers' names, sorted. The caller may change
// the slice.
func (p *Peers) Names() []string { return slices.Clone(p.names) }

// Window returns the in-flight budget for peer, the same Window on every
// call, or nil if peer is not configured.
func (p *Peers) Window(peer string) *Window {
	pr, ok := p.peers[peer]
	if !ok {
		return nil
	}
	return pr.window
}

// Usage returns every peer's window usage, by peer name.
func (p *Peers) Usage() map[string]WindowUsage {
	out := make(map[string]WindowUsage, len(p.peers))
	for name, pr := range p.peers {
		out[name] = pr.window.Usage()
	}
	return out
}

// Close closes every peer's Window, waking its waiters with
// ErrWindowClosed, and then its conn, which ends the calls and streams on
// it. It returns the errors of closing the conns; a second Close does
// nothing and returns nil.
func (p *Peers) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()

	var errs []error
	for _, name := range slices.Sorted(maps.Keys(p.peers)) {
		pr := p.peers[name]
		pr.window.Close()
		if err := pr.conn.Close(); err != nil {
			errs = append(errs, fmt.Errorf("resourcepool: close conn to %q: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// ServerOptions returns the options a roaming gRPC server needs to match
// Peers on the other side: the ServerInterceptors for self and known
// (chained, so the caller may add more), a keepalive policy that lets peers
// ping every 10s without streams, and the MaxMessageBytes limit both ways.
func ServerOptions(self string, known []string, verify ...func(ctx context.Context, claimed string) error) []grpc.ServerOption {
	unary, stream := ServerInterceptors(self, known, verify...)
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(unary),
		grpc.ChainStreamInterceptor(stream),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             serverKeepaliveMinTime,
			PermitWithoutStream: true,
		}),
		grpc.MaxRecvMsgSize(MaxMessageBytes),
		grpc.MaxSendMsgSize(MaxMessageBytes),
		grpc.InitialWindowSize(StreamWindow),
		grpc.InitialConnWindowSize(ConnWindow),
	}
}
