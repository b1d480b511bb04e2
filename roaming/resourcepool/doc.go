// Package resourcepool is the roaming system's budget for cross-region work:
// one managed gRPC client connection per peer region, and a [Window] per
// peer that bounds the batches and bytes sent to it and not yet
// acknowledged. It also holds the peer-identity check that the roaming gRPC
// server runs on every call ([ServerInterceptors]).
//
// # Peers
//
// [NewPeers] creates one *grpc.ClientConn per configured peer with
// grpc.NewClient; nothing is dialled until the first call (or until a caller
// asks a conn to Connect). The target uses the passthrough resolver, so the
// dialer (a Config.DialOptions dialer, or gRPC's own) gets the address as
// configured and resolves a host name on every connect. Each conn keeps
// itself connected: keepalive pings
// every 10s even without streams, reconnects with exponential backoff (base
// 100ms, max 3s, jitter 0.2), and allows messages up to [MaxMessageBytes]
// both ways. Every call it carries names this region in the metadata key
// [RegionMetadataKey], replacing any value the caller set. A unary call whose
// context has no deadline gets Limits.CallTimeout; streams get none, since
// they live as long as their caller wants.
//
// Peer names in Config.Addrs must be well-formed region names (see
// [ValidRegionName]). An entry for Config.Self is skipped, so the caller may
// pass the federation's whole address table.
//
// # Windows
//
// [Peers.Window] returns the peer's Window, the same one on every call. A
// sender calls [Window.Acquire] with a batch's encoded size before sending
// it and [Window.Release] with the same size when the peer acknowledges it
// (or the stream that carried it ends). Acquire blocks while the batch does
// not fit, which is how backpressure reaches the outbox; waiters are served
// in arrival order, so a large batch is not starved by small ones. A batch
// larger than the whole byte budget is admitted alone, once nothing else is
// in flight, so that no batch is refused forever. [Window.Usage] and
// [Peers.Usage] report what is in flight and how often senders had to wait.
//
// # Identity on the server side
//
// A region names itself in the metadata key "roamfed-region"; with mutual
// TLS, a verify function (certs.CheckClaim) makes the name match the
// caller's certificate. [ServerInterceptors] refuse a call whose
// name is missing or malformed (codes.Unauthenticated) or is not a known
// peer, including a call claiming to come from the serving region itself
// (codes.PermissionDenied). Handlers read the caller with
// [RegionFromContext]. [ServerOptions] bundles the interceptors with the
// keepalive policy and message sizes that match the client side; a server
// that uses its own options must at least permit keepalive pings every 10s
// without streams, or it will close idle peer connections.
//
// # Request rate per peer on the server side
//
// [RateLimiter] is the roaming listener's budget for the requests each peer
// region makes: a token bucket per peer (Limits.PeerRate per second, bursts
// of Limits.PeerBurst; defaults 5,000/s and 10,000). A unary call, a stream
// opened and each Submit or Deliver batch received take one token;
// heartbeats, health checks and the data frames of a relay take none. Over
// the budget a request is refused with RESOURCE_EXHAUSTED, an
// errdetails.QuotaFailure (quota "peer_rate", subject "region:<peer>") and
// an errdetails.RetryInfo, and counted ([RateLimiter.Refused]). Its server
// options go after [ServerOptions], so that only callers the identity
// check admitted spend a budget.
//
// # Lifecycle
//
// NewPeers returns ready Peers and starts no goroutines of its own (gRPC
// runs its own per conn). [Peers.Close] closes every conn and every Window,
// waking blocked Acquires with [ErrWindowClosed]; it is idempotent. The
// caller that acquired window budget owns it and must release it, also
// after Close. All methods are safe for concurrent use.
package resourcepool
