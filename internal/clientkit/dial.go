package clientkit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// DialOptions says how to reach a region.
type DialOptions struct {
	// TLS verifies the region against the system roots; CAFile, when set,
	// against the certificates in that file instead (and implies TLS).
	TLS    bool
	CAFile string
	// Token, when set, is sent on every call as `authorization: Bearer`.
	// Leave it empty for connections shared by several users, and give
	// each call its user's token with WithToken.
	Token string
	// UserAgent names the program; empty means "roamfed-clientkit".
	UserAgent string
}

// The HTTP/2 flow-control windows a client asks for, per stream and per
// conn; the server (internal/stack) sets the same for its side. Fixed
// windows turn off gRPC's bandwidth estimator, which otherwise answers
// nearly every delivery that arrives on a lightly loaded session with a
// PING round trip of its own.
const (
	StreamWindow = 1 << 20
	ConnWindow   = 4 << 20
)

// Windows are the dial options that set StreamWindow and ConnWindow.
func Windows() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithInitialWindowSize(StreamWindow), grpc.WithInitialConnWindowSize(ConnWindow)}
}

// Dial makes a client connection to addr. Like grpc.NewClient it connects
// lazily: a region that is down shows up as UNAVAILABLE on the first call.
func Dial(addr string, o DialOptions) (*grpc.ClientConn, error) {
	if strings.TrimSpace(addr) == "" {
		return nil, errors.New("dial: empty address")
	}
	var creds credentials.TransportCredentials
	switch {
	case o.CAFile != "":
		c, err := credentials.NewClientTLSFromFile(o.CAFile, "")
		if err != nil {
			return nil, fmt.Errorf("dial %s: CA file: %w", addr, err)
		}
		creds = c
	case o.TLS:
		creds = credentials.NewClientTLSFromCert(nil, "")
	default:
		creds = insecure.NewCredentials()
	}
	ua := o.UserAgent
	if ua == "" {
		ua = "roamfed-clientkit"
	}
	opts := append(Windows(), grpc.WithTransportCredentials(creds), grpc.WithUserAgent(ua))
	if o.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(Bearer{Token: o.Token, Secure: o.TLS || o.CAFile != ""}))
	}
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return cc, nil
}

// Bearer sends a token as `authorization: Bearer <token>` on every call.
type Bearer struct {
	Token string
	// Secure refuses to send the token over a connection without
	// transport security. Regions listen on loopback without TLS by
	// default, so it is off unless the connection uses TLS.
	Secure bool
}

var _ credentials.PerRPCCredentials = Bearer{}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (b Bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.Token}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (b Bearer) RequireTransportSecurity() bool { return b.Secure }

// WithToken returns ctx carrying token as the call's bearer token.
func WithToken(ctx context.Context, token string) context.Context {
	if token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// ReadToken reads a token file: the token is its first line, without
// surrounding space. An empty file is an error.
func ReadToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	tok := strings.TrimSpace(line)
	if tok == "" {
		return "", fmt.Errorf("token file %s: empty", path)
	}
	return tok, nil
}
