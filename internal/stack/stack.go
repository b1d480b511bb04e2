// Package stack assembles one region's stack in a process: the data center,
// the bus, the business center and the client gRPC listener. regiond runs
// one; tests and `regiond dev` can run several in one process, since
// nothing here is process-wide.
//
// Start brings the parts up in dependency order and Shutdown takes them
// down in reverse: stop the ops listener (metrics, health, status page),
// stop taking calls, end sessions, then close the business center, the bus
// and the data center, each after its users.
package stack

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	"github.com/roamfed/roamfed/api/rpcstatus"
	"github.com/roamfed/roamfed/internal/bus"
	"github.com/roamfed/roamfed/internal/certs"
	"github.com/roamfed/roamfed/internal/ops"
	"github.com/roamfed/roamfed/internal/password"
	"github.com/roamfed/roamfed/regions"
	"github.com/roamfed/roamfed/roaming"
	"github.com/roamfed/roamfed/roaming/mesh"
	roamingpool "github.com/roamfed/roamfed/roaming/resourcepool"
	"github.com/roamfed/roamfed/servicecenter/businesscenter"
	"github.com/roamfed/roamfed/servicecenter/datacenter"
	"github.com/roamfed/roamfed/servicecenter/resourcepool"
)

// Config is one region's settings.
type Config struct {
	Region     string
	DataDir    string
	ClientAddr string
	// NATSURL names an external bus; empty embeds one.
	NATSURL string
	Limits  resourcepool.Limits
	Logger  *slog.Logger

	// Federation lists every region; nil runs the region on its own.
	Federation *regions.Federation
	// RoamingAddr overrides the federation file's roaming address for
	// this region (tests use 127.0.0.1:0).
	RoamingAddr string
	// RoamingLimits is the budget for cross-region work.
	RoamingLimits roamingpool.Limits
	// ReplicateEvery is the home directory replication interval.
	ReplicateEvery time.Duration
	// Dial makes the connections to peers; nil means TCP. Tests and
	// benchmarks pass one that delays or breaks links (internal/netem).
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// Mesh tunes link heartbeats and relays.
	Mesh mesh.Config
	// TLS is the region's certificate for mutually authenticated links;
	// nil runs them in plaintext (in-process tests only).
	TLS *certs.Material
	// AcceptWait is how long a send to a group homed elsewhere waits for
	// its home before it is answered as accepted.
	AcceptWait time.Duration

	// ClientTLS, when set, serves clients over TLS with it.
	ClientTLS *tls.Config

	// AdminAddr is where the operator API listens; empty for none.
	AdminAddr string
	// AdminToken is the bearer token the operator API requires. Required
	// with AdminAddr.
	AdminToken string
	// MetricsAddr is where metrics, health, pprof and the status page
	// listen (internal/ops); empty for none. The status page reaches the
	// other regions at their federation file metrics_addr.
	MetricsAddr string

	// Tuning for tests; zero values are the production defaults.
	AckTimeout  time.Duration
	MaxAttempts int
	Password    password.Params
}

// Stack is a running region.
type Stack struct {
	cfg    Config
	log    *slog.Logger
	store  *datacenter.Store
	bus    *bus.Bus
	bc     *businesscenter.Server
	roam   *roaming.System
	grpc   *grpc.Server
	health *health.Server
	lis    net.Listener
	served chan error
	pool   *resourcepool.Pool

	admin    *grpc.Server
	adminLis net.Listener

	metrics *ops.Metrics
	ops     *ops.Server
	ready   atomic.Bool
}

// Start opens the region's data and starts serving clients.
func Start(cfg Config) (st *Stack, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Limits.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger.With(slog.String("region", cfg.Region))
	s := &Stack{cfg: cfg, log: log, served: make(chan error, 1)}
	if s.metrics, err = ops.NewMetrics(cfg.Region); err != nil {
		return nil, err
	}
	// On failure, close what was opened, newest first.
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()

	s.store, err = datacenter.Open(filepath.Clean(cfg.DataDir), datacenter.Options{
		Region: cfg.Region, Logger: log, CommitObserver: s.metrics.ObserveCommit,
	})
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() { _ = s.store.Close() })

	s.bus, err = bus.Open(bus.Options{URL: cfg.NATSURL, Name: "roamfed-" + cfg.Region, Logger: log})
	if err != nil {
		return nil, err
	}
	undo = append(undo, s.bus.Close)

	s.pool = resourcepool.New(cfg.Limits)
	var roam businesscenter.Roaming
	if cfg.Federation != nil {
		s.roam, err = roaming.New(roaming.Config{
			Federation:     cfg.Federation,
			Self:           cfg.Region,
			Store:          s.store,
			Limits:         cfg.RoamingLimits,
			Logger:         cfg.Logger,
			ListenAddr:     cfg.RoamingAddr,
			ReplicateEvery: cfg.ReplicateEvery,
			Dial:           cfg.Dial,
			Mesh:           cfg.Mesh,
			AcceptWait:     cfg.AcceptWait,
			TLS:            cfg.TLS,
			OnInbound:      s.metrics.ObserveInbound,
		})
		if err != nil {
			return nil, err
		}
		undo = append(undo, func() { _ = s.roam.Close() })
		roam = s.roam
	}

	s.bc, err = businesscenter.New(businesscenter.Config{
		Region:      cfg.Region,
		Store:       s.store,
		Pool:        s.pool,
		Bus:         s.bus.Conn(),
		Logger:      log,
		AckTimeout:  cfg.AckTimeout,
		MaxAttempts: cfg.MaxAttempts,
		Password:    cfg.Password,
		Roaming:     roam,
	})
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() { _ = s.bc.Close() })
	if s.roam != nil {
		// Peers may call as soon as this listens; the service center
		// is ready for them.
		if err := s.roam.Start(s.bc.Home(), s.bc); err != nil {
			return nil, err
		}
	}

	s.lis, err = net.Listen("tcp", cfg.ClientAddr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", cfg.ClientAddr, err)
	}
	undo = append(undo, func() { _ = s.lis.Close() })

	clientOpts := []grpc.ServerOption{}
	if cfg.ClientTLS != nil {
		clientOpts = append(clientOpts, grpc.Creds(credentials.NewTLS(cfg.ClientTLS)))
	}
	s.grpc = grpc.NewServer(append(clientOpts,
		businesscenter.ServerCodec(),
		// Fixed windows, the same as clientkit.Windows on the clients'
		// side: no bandwidth-estimator PING round trip per request.
		grpc.InitialWindowSize(1<<20), grpc.InitialConnWindowSize(4<<20),
		// Metrics first: they read the status codes rpcstatus maps.
		grpc.ChainUnaryInterceptor(s.metrics.UnaryServerInterceptor(), rpcstatus.UnaryServerInterceptor(log)),
		grpc.ChainStreamInterceptor(s.metrics.StreamServerInterceptor(), rpcstatus.StreamServerInterceptor(log)),
		// Messages are at most 64 KiB by default; leave room for the
		// largest configured body plus its envelope.
		grpc.MaxRecvMsgSize(max(cfg.Limits.WithDefaults().MaxMessageBytes+64<<10, 4<<20)),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)...)
	clientv1.RegisterClientServiceServer(s.grpc, s.bc)
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)
	s.health.SetServingStatus(clientv1.ClientService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	reflection.Register(s.grpc)
	if cfg.AdminAddr != "" {
		if cfg.AdminToken == "" {
			return nil, errors.New("stack: an admin listener needs an admin token")
		}
		if err := s.startAdmin(); err != nil {
			return nil, err
		}
		undo = append(undo, s.admin.Stop)
	}
	s.metrics.SetStatus(s.opsStatus)
	if cfg.MetricsAddr != "" {
		if err := s.startOps(); err != nil {
			return nil, err
		}
		undo = append(undo, func() { _ = s.ops.Shutdown(context.Background()) })
	}
	go func() { s.served <- s.grpc.Serve(s.lis) }()
	s.ready.Store(true)
	log.Info("region serving clients", slog.String("addr", s.lis.Addr().String()),
		slog.String("data", cfg.DataDir), slog.Bool("embedded_nats", s.bus.Embedded()))
	return s, nil
}

// RoamingAddr is the address peers connect to; empty when not federated.
func (s *Stack) RoamingAddr() string {
	if s.roam == nil {
		return ""
	}
	return s.roam.Addr()
}

// Roaming is the region's roaming system; nil when not federated.
func (s *Stack) Roaming() *roaming.System { return s.roam }

// Region is the region's name.
func (s *Stack) Region() string { return s.cfg.Region }

// ClientAddr is the address clients connect to.
func (s *Stack) ClientAddr() string { return s.lis.Addr().String() }

// Store is the region's data center.
func (s *Stack) Store() *datacenter.Store { return s.store }

// Served reports the gRPC server's exit; it receives one value.
func (s *Stack) Served() <-chan error { return s.served }

// Shutdown stops the region: no new calls, sessions ended, in-flight calls
// given until ctx ends to finish, then everything closed.
func (s *Stack) Shutdown(ctx context.Context) error {
	s.ready.Store(false)
	if s.ops != nil {
		// A second is plenty for a scrape in flight; event streams end
		// at once.
		octx, cancel := context.WithTimeout(ctx, time.Second)
		_ = s.ops.Shutdown(octx)
		cancel()
	}
	s.health.Shutdown()
	if s.admin != nil {
		s.admin.Stop()
	}
	stopped := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(stopped)
	}()
	s.bc.Drain()
	select {
	case <-stopped:
	case <-ctx.Done():
		s.log.Warn("graceful stop timed out; closing remaining calls")
		s.grpc.Stop()
		<-stopped
	}
	var errs []error
	if s.roam != nil {
		errs = append(errs, s.roam.Close())
	}
	errs = append(errs, s.bc.Close())
	s.bus.Close()
	errs = append(errs, s.store.Close())
	s.log.Info("region stopped")
	return errors.Join(errs...)
}
