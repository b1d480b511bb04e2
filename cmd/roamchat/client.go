package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	"github.com/roamfed/roamfed/internal/clientkit"
)

// conn is an open connection to one region.
type conn struct {
	cc     *grpc.ClientConn
	api    clientv1.ClientServiceClient
	server string
	prof   *profile // nil for register and login
}

func (c *conn) Close() error { return c.cc.Close() }

// connectAnon connects for the calls that need no session: Register, Login.
func (a *app) connectAnon() (*conn, error) {
	_, p, err := a.loadProfile()
	if err != nil {
		return nil, err
	}
	return a.dial(a.serverFor(p), "")
}

// connect connects as the logged-in user of the profile.
func (a *app) connect() (*conn, error) {
	_, p, err := a.loadProfile()
	if err != nil {
		return nil, err
	}
	if p == nil || p.Token == "" {
		return nil, fmt.Errorf("%w with profile %q", errNotLoggedIn, a.profile)
	}
	c, err := a.dial(a.serverFor(p), p.Token)
	if err != nil {
		return nil, err
	}
	c.prof = p
	return c, nil
}

// dial makes a client for server that sends token on every call but
// Register and Login. grpc.NewClient connects lazily, so a region that is
// down shows up as UNAVAILABLE on the first call.
func (a *app) dial(server, token string) (*conn, error) {
	var creds credentials.TransportCredentials
	switch {
	case a.caFile != "":
		c, err := credentials.NewClientTLSFromFile(a.caFile, "")
		if err != nil {
			return nil, fmt.Errorf("--ca: %w", err)
		}
		creds = c
	case a.tls:
		creds = credentials.NewClientTLSFromCert(nil, "") // system roots
	default:
		creds = insecure.NewCredentials()
	}
	auth := bearer(token)
	cc, err := grpc.NewClient(server, append(clientkit.Windows(),
		grpc.WithTransportCredentials(creds),
		grpc.WithUserAgent("roamchat"),
		grpc.WithChainUnaryInterceptor(auth.unary),
		grpc.WithChainStreamInterceptor(auth.stream),
	)...)
	if err != nil {
		return nil, fmt.Errorf("server %q: %w", server, err)
	}
	return &conn{cc: cc, api: clientv1.NewClientServiceClient(cc), server: server}, nil
}

// bearer attaches the session token as `authorization: Bearer <token>`.
type bearer string

// needsToken reports whether method is one that takes the session token.
func needsToken(method string) bool {
	return method != clientv1.ClientService_Register_FullMethodName &&
		method != clientv1.ClientService_Login_FullMethodName
}

func (b bearer) attach(ctx context.Context, method string) context.Context {
	if b == "" || !needsToken(method) {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+string(b))
}

func (b bearer) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return invoker(b.attach(ctx, method), method, req, reply, cc, opts...)
}

func (b bearer) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return streamer(b.attach(ctx, method), desc, cc, method, opts...)
}

// callCtx bounds one call by --timeout.
func (a *app) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if a.timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, a.timeout)
}

// backoff yields growing waits between retries, with jitter so that many
// clients cut off together do not come back together.
type backoff struct {
	min, max time.Duration
	next     time.Duration
}

func (b *backoff) wait() time.Duration {
	if b.next < b.min {
		b.next = b.min
	}
	d := b.next
	b.next = min(2*b.next, b.max)
	// Up to 25% less, never more than max.
	return d - time.Duration(rand.Int64N(int64(d/4)+1))
}

func (b *backoff) reset() { b.next = 0 }

// sleep waits d or until ctx is done; false when ctx ended it.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// call connects as the profile's user and runs fn with the connection and
// a context bounded by --timeout: the shape of a command that makes one
// call to the region.
func (a *app) call(ctx context.Context, fn func(ctx context.Context, c *conn) error) error {
	c, err := a.connect()
	if err != nil {
		return err
	}
	defer c.Close()
	cctx, cancel := a.callCtx(ctx)
	defer cancel()
	return fn(cctx, c)
}
