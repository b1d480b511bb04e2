package roaming

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"

	recordv1 "github.com/roamfed/roamfed/api/record/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/api/rpcstatus"
	"github.com/roamfed/roamfed/regions"
	"github.com/roamfed/roamfed/roaming/business"
	"github.com/roamfed/roamfed/roaming/dataservice"
	"github.com/roamfed/roamfed/roaming/resourcepool"
	"github.com/roamfed/roamfed/servicecenter/businesscenter"
	"github.com/roamfed/roamfed/servicecenter/datacenter"
)

// Config is what a System needs.
type Config struct {
	// Federation lists every region; Self names this one.
	Federation *regions.Federation
	Self       string
	Store      *datacenter.Store
	Limits     resourcepool.Limits
	Logger     *slog.Logger
	// ListenAddr overrides the roaming address from the federation file
	// (tests use 127.0.0.1:0).
	ListenAddr string
	// ReplicateEvery is the directory replication interval; 0 means 500ms.
	ReplicateEvery time.Duration
	// DialOptions are added to every peer connection (a test's dialer that
	// delays or cuts links).
	DialOptions []grpc.DialOption
}

// System is a running roaming system.
type System struct {
	cfg    Config
	log    *slog.Logger
	peers  *resourcepool.Peers
	data   *dataservice.Client
	router *business.Router

	submitters map[string]*business.Submitter
	deliverers map[string]*business.Deliverer

	lis      net.Listener
	server   *grpc.Server
	business *business.Server

	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

var _ businesscenter.Roaming = (*System)(nil)

// New prepares a roaming system; it does not listen until Start.
func New(cfg Config) (*System, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ReplicateEvery <= 0 {
		cfg.ReplicateEvery = 500 * time.Millisecond
	}
	self, ok := cfg.Federation.Region(cfg.Self)
	if !ok {
		return nil, fmt.Errorf("roaming: region %q is not in federation file %s", cfg.Self, cfg.Federation.Source)
	}
	if cfg.ListenAddr == "" {
		cfg.ListenAddr = self.RoamingAddr
	}
	addrs := make(map[string]string)
	for _, p := range cfg.Federation.Peers(cfg.Self) {
		addrs[p.Name] = p.RoamingAddr
	}
	log := cfg.Logger.With(slog.String("region", cfg.Self))
	peers, err := resourcepool.NewPeers(resourcepool.Config{
		Self:        cfg.Self,
		Addrs:       addrs,
		Limits:      cfg.Limits,
		Logger:      log,
		DialOptions: cfg.DialOptions,
	})
	if err != nil {
		return nil, err
	}
	s := &System{
		cfg:        cfg,
		log:        log,
		peers:      peers,
		data:       dataservice.NewClient(cfg.Self, peers, cfg.Store, log),
		submitters: make(map[string]*business.Submitter),
		deliverers: make(map[string]*business.Deliverer),
	}
	for _, name := range peers.Names() {
		s.submitters[name] = business.NewSubmitter(name, peers, log)
		s.deliverers[name] = business.NewDeliverer(name, peers, log)
	}
	s.router = business.NewRouter(cfg.Self, cfg.Store, s.deliverers, log)
	return s, nil
}

// Start serves the roaming API and starts replicating the home directory.
// home answers peers for what this region homes; local takes deliveries.
func (s *System) Start(home *businesscenter.Home, local business.Local) error {
	s.router.SetLocal(local)
	lis, err := net.Listen("tcp", s.cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", s.cfg.ListenAddr, err)
	}
	s.lis = lis
	opts := resourcepool.ServerOptions(s.cfg.Self, s.cfg.Federation.Names())
	opts = append(opts,
		grpc.ChainUnaryInterceptor(rpcstatus.UnaryServerInterceptor(s.log)),
		grpc.ChainStreamInterceptor(rpcstatus.StreamServerInterceptor(s.log)),
	)
	s.server = grpc.NewServer(opts...)
	roamingv1.RegisterDataServiceServer(s.server, dataservice.NewServer(s.cfg.Self, s.cfg.Store, home))
	s.business = business.NewServer(s.cfg.Self, s.log, home, s.router, s.peers.Limits().MaxBatchMessages)
	roamingv1.RegisterBusinessServiceServer(s.server, s.business)
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		if err := s.server.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			s.log.Error("roaming listener failed", slog.Any("err", err))
		}
	}()
	go func() {
		defer s.wg.Done()
		s.data.Run(ctx, s.cfg.ReplicateEvery)
	}()
	s.log.Info("roaming system serving", slog.String("addr", lis.Addr().String()), slog.Any("peers", s.peers.Names()))
	return nil
}

// Addr is the roaming listener's address.
func (s *System) Addr() string { return s.lis.Addr().String() }

// Replicate runs one directory replication round now.
func (s *System) Replicate(ctx context.Context) error { return s.data.Replicate(ctx) }

// Close stops serving and sending and waits. It is idempotent.
func (s *System) Close() error {
	s.once.Do(func() {
		if s.cancel != nil {
			s.cancel()
		}
		if s.server != nil {
			s.business.Close()
			stopped := make(chan struct{})
			go func() { s.server.GracefulStop(); close(stopped) }()
			select {
			case <-stopped:
			case <-time.After(5 * time.Second):
				s.server.Stop()
			}
		}
		s.wg.Wait()
		s.router.Stop()
		for _, d := range s.deliverers {
			d.Stop()
		}
		for _, sb := range s.submitters {
			sb.Stop()
		}
		_ = s.peers.Close()
	})
	return nil
}

// Locate implements businesscenter.Roaming.
func (s *System) Locate(ctx context.Context, kind roamingv1.DirectoryKind, key string) (*roamingv1.DirectoryRecord, error) {
	return s.data.Locate(ctx, kind, key)
}

// GetGroup implements businesscenter.Roaming.
func (s *System) GetGroup(ctx context.Context, home string, req *roamingv1.GetGroupRequest) (*recordv1.Group, error) {
	return s.data.GetGroup(ctx, home, req)
}

// StoreGroup implements businesscenter.Roaming.
func (s *System) StoreGroup(ctx context.Context, home string, req *roamingv1.StoreGroupRequest) (*recordv1.Group, error) {
	return s.data.StoreGroup(ctx, home, req)
}

// Submit implements businesscenter.Roaming.
func (s *System) Submit(ctx context.Context, home string, m *recordv1.Message) (datacenter.Appended, error) {
	sb, ok := s.submitters[home]
	if !ok {
		return datacenter.Appended{}, fmt.Errorf("%w: %s", resourcepool.ErrUnknownPeer, home)
	}
	return sb.Submit(ctx, m)
}

// FetchHistory implements businesscenter.Roaming.
func (s *System) FetchHistory(ctx context.Context, home string, req *roamingv1.FetchHistoryRequest) (*roamingv1.FetchHistoryResponse, error) {
	return s.data.FetchHistory(ctx, home, req)
}

// VerifyLogin implements businesscenter.Roaming.
func (s *System) VerifyLogin(ctx context.Context, home string, req *roamingv1.VerifyLoginRequest) (*recordv1.User, error) {
	return s.data.VerifyLogin(ctx, home, req)
}

// UpdateLocation implements businesscenter.Roaming.
func (s *System) UpdateLocation(ctx context.Context, home string, req *roamingv1.UpdateLocationRequest) error {
	return s.data.UpdateLocation(ctx, home, req)
}

// ListUserGroups implements businesscenter.Roaming.
func (s *System) ListUserGroups(ctx context.Context, userID string) ([]*roamingv1.UserGroup, error) {
	return s.data.ListUserGroups(ctx, userID)
}

// Committed implements businesscenter.Roaming.
func (s *System) Committed(g *recordv1.Group, m *recordv1.Message) { s.router.Committed(g, m) }

// Presence implements businesscenter.Roaming.
func (s *System) Presence(ch *recordv1.PresenceChange) { s.router.Presence(ch) }
