package resourcepool

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/internal/quota"
)

// ReasonPeerRate is the QuotaId of a refusal by [RateLimiter]: a peer
// region made requests faster than Limits.PeerRate and PeerBurst allow.
const ReasonPeerRate = "peer_rate"

// QuotaError is a request a peer region made over its budget. Its
// GRPCStatus is RESOURCE_EXHAUSTED with an errdetails.QuotaFailure naming
// the peer and the limit, and an errdetails.RetryInfo saying when the next
// request would be taken.
type QuotaError struct {
	Peer        string
	Description string
	RetryAfter  time.Duration
}

func (e *QuotaError) message() string {
	return fmt.Sprintf("%s quota exceeded for region:%s: %s", ReasonPeerRate, e.Peer, e.Description)
}

func (e *QuotaError) Error() string { return "resourcepool: " + e.message() }

// GRPCStatus implements the interface status.FromError looks for.
func (e *QuotaError) GRPCStatus() *status.Status {
	return quota.Status(e.message(), quota.Violation{
		Subject: "region:" + e.Peer, ID: ReasonPeerRate, Description: e.Description, RetryAfter: e.RetryAfter,
	})
}

// RateLimiter is the roaming listener's request budget per peer region: a
// token bucket per peer (Limits.PeerRate per second, up to
// Limits.PeerBurst). Its interceptors take one token for every unary call,
// every stream opened, and every message received on a Submit or Deliver
// stream; a request that finds the bucket empty is refused with a
// [QuotaError] and counted. A refused stream message ends its stream; the
// peer's sender resends what was not acknowledged, as after any broken
// stream.
//
// Two kinds of request take no token. Heartbeats, like the health service,
// are answered from memory, and refusing one would make a busy link look
// dead and push its traffic through a third region. The data frames of a
// Relay stream are another region's TLS connection cut in pieces: refusing
// one would break every call inside the tunnel, and those calls are
// counted where they end, at the destination, against the region that
// made them. Opening a relay takes a token.
//
// A RateLimiter is safe for concurrent use. It starts no goroutines.
type RateLimiter struct {
	now   func() time.Time // time.Now; tests replace it
	rate  rate.Limit
	burst int
	peers map[string]*peerBucket // fixed at NewRateLimiter
}

type peerBucket struct {
	lim     *rate.Limiter
	refused atomic.Uint64
}

// NewRateLimiter makes a bucket, full, for every region in known except
// self, with l's PeerRate and PeerBurst (defaults applied; values
// Validate rejects are replaced by their defaults).
func NewRateLimiter(self string, known []string, l Limits) *RateLimiter {
	l = l.sanitized()
	r := &RateLimiter{now: time.Now, rate: rate.Limit(l.PeerRate), burst: l.PeerBurst, peers: make(map[string]*peerBucket, len(known))}
	if math.IsInf(l.PeerRate, 1) {
		r.rate = rate.Inf
	}
	for _, name := range known {
		if name != self {
			r.peers[name] = &peerBucket{lim: rate.NewLimiter(r.rate, r.burst)}
		}
	}
	return r
}

// Allow takes one token from peer's bucket. It returns nil, or a
// *QuotaError (counted) when the bucket is empty. A peer without a bucket
// is refused with PERMISSION_DENIED; the identity interceptors refuse it
// first.
func (r *RateLimiter) Allow(peer string) error {
	b, ok := r.peers[peer]
	if !ok {
		return status.Errorf(codes.PermissionDenied, "region %q has no request budget here; it is not a peer", truncate(peer, 64))
	}
	now := r.now()
	if b.lim.AllowN(now, 1) {
		return nil
	}
	b.refused.Add(1)
	// The bucket holds less than one token; the next is whole in
	// (1-tokens)/rate.
	wait := time.Duration((1 - b.lim.TokensAt(now)) / float64(r.rate) * float64(time.Second))
	return &QuotaError{
		Peer:        peer,
		Description: fmt.Sprintf("region %s may make %g requests/s here, in bursts of %d", peer, float64(r.rate), r.burst),
		RetryAfter:  max(wait, time.Millisecond),
	}
}

// Refused returns, by peer, how many requests were refused since
// NewRateLimiter; every peer is present.
func (r *RateLimiter) Refused() map[string]uint64 {
	out := make(map[string]uint64, len(r.peers))
	for name, b := range r.peers {
		out[name] = b.refused.Load()
	}
	return out
}

// Peers returns the regions that have a bucket, sorted.
func (r *RateLimiter) Peers() []string { return slices.Sorted(maps.Keys(r.peers)) }

// unlimited reports the methods that take no token (see RateLimiter).
func unlimited(method string) bool {
	return strings.HasPrefix(method, healthPrefix) || method == roamingv1.BusinessService_Heartbeat_FullMethodName
}

// ServerInterceptors returns the unary and stream interceptors that
// enforce the budget. Chain them after the identity interceptors
// ([ServerInterceptors], [ServerOptions]), which make sure the caller is a
// peer.
func (r *RateLimiter) ServerInterceptors() (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if unlimited(info.FullMethod) {
			return handler(ctx, req)
		}
		if err := r.allowCtx(ctx); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if unlimited(info.FullMethod) {
			return handler(srv, ss)
		}
		peer, err := RegionFromContext(ss.Context())
		if err != nil {
			return status.Error(codes.Unauthenticated, err.Error())
		}
		if err := r.Allow(peer); err != nil {
			return err
		}
		if info.FullMethod == roamingv1.BusinessService_Relay_FullMethodName {
			return handler(srv, ss)
		}
		return handler(srv, &limitedStream{ServerStream: ss, allow: func() error { return r.Allow(peer) }})
	}
	return unary, stream
}

// ServerOptions returns ServerInterceptors as server options, to follow
// the identity interceptors'.
func (r *RateLimiter) ServerOptions() []grpc.ServerOption {
	unary, stream := r.ServerInterceptors()
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(unary), grpc.ChainStreamInterceptor(stream)}
}

func (r *RateLimiter) allowCtx(ctx context.Context) error {
	peer, err := RegionFromContext(ctx)
	if err != nil {
		return status.Error(codes.Unauthenticated, err.Error())
	}
	return r.Allow(peer)
}

// limitedStream takes a token for every message received. A refused
// message is dropped and the refusal ends the stream (the handler returns
// the error of its Recv).
type limitedStream struct {
	grpc.ServerStream
	allow func() error
}

func (s *limitedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return s.allow()
}
