package resourcepool

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// RegionMetadataKey is the gRPC metadata key in which a region names itself
// on every call to a peer.
const RegionMetadataKey = "roamfed-region"

// MaxRegionNameBytes is the longest region name.
const MaxRegionNameBytes = 32

// Errors of RegionFromContext.
var (
	// ErrNoRegion: the call names no region, or more than one.
	ErrNoRegion = errors.New("resourcepool: calling region not named")
	// ErrBadRegionName: the name is not of the form ^[a-z][a-z0-9-]{0,31}$.
	ErrBadRegionName = errors.New("resourcepool: malformed region name")
)

// ValidRegionName reports whether s is a well-formed region name: a lower
// case ASCII letter, then up to 31 lower case letters, digits or '-'.
func ValidRegionName(s string) bool {
	if len(s) == 0 || len(s) > MaxRegionNameBytes {
		return false
	}
	if s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// RegionFromContext returns the calling region named in the incoming
// metadata of a server-side ctx. It fails with an error that wraps
// ErrNoRegion unless the key holds exactly one value, and ErrBadRegionName
// unless that value is a well-formed name. It does not check that the
// region is a member of the federation; ServerInterceptors do.
func RegionFromContext(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get(RegionMetadataKey)
	switch len(vals) {
	case 1:
	case 0:
		return "", fmt.Errorf("%w: metadata %q is missing", ErrNoRegion, RegionMetadataKey)
	default:
		return "", fmt.Errorf("%w: metadata %q has %d values; it must have one", ErrNoRegion, RegionMetadataKey, len(vals))
	}
	if !ValidRegionName(vals[0]) {
		return "", fmt.Errorf("%w: %q must match ^[a-z][a-z0-9-]{0,31}$", ErrBadRegionName, truncate(vals[0], 64))
	}
	return vals[0], nil
}

// truncate keeps an untrusted value short enough to quote in an error.
func truncate(s string, max int) string {
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}

// healthPrefix is the method prefix of the standard health service, which
// probes that are not regions call; it answers without a region name.
var healthPrefix = "/" + healthpb.Health_ServiceDesc.ServiceName + "/"

// ServerInterceptors returns unary and stream server interceptors that admit
// only calls from a known peer region. A call whose roamfed-region metadata
// is missing, repeated or malformed is refused with codes.Unauthenticated;
// one that names a region not in known, or names self, is refused with
// codes.PermissionDenied. known may include self. Calls to the standard
// health service (grpc.health.v1.Health) are let through unchecked, so that
// load balancers and probes can use it.
//
// Each verify, if given, must also accept the claimed region: with mutual
// TLS, certs.CheckClaim makes the claim match the region named in the
// caller's certificate.
func ServerInterceptors(self string, known []string, verify ...func(ctx context.Context, claimed string) error) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	peers := make(map[string]bool, len(known))
	for _, r := range known {
		if r != self {
			peers[r] = true
		}
	}
	check := func(ctx context.Context, method string) error {
		if strings.HasPrefix(method, healthPrefix) {
			return nil
		}
		region, err := RegionFromContext(ctx)
		if err != nil {
			return status.Error(codes.Unauthenticated, err.Error())
		}
		if region == self {
			return status.Errorf(codes.PermissionDenied, "region %q: a call naming the serving region itself is refused", region)
		}
		if !peers[region] {
			return status.Errorf(codes.PermissionDenied, "region %q is not in the federation of region %q", region, self)
		}
		for _, v := range verify {
			if err := v(ctx, region); err != nil {
				return err
			}
		}
		return nil
	}
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := check(ctx, info.FullMethod); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := check(ss.Context(), info.FullMethod); err != nil {
			return err
		}
		return handler(srv, ss)
	}
	return unary, stream
}
