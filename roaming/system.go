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
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	recordv1 "github.com/roamfed/roamfed/api/record/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/api/rpcstatus"
	"github.com/roamfed/roamfed/internal/certs"
	"github.com/roamfed/roamfed/regions"
	"github.com/roamfed/roamfed/roaming/business"
	"github.com/roamfed/roamfed/roaming/dataservice"
	"github.com/roamfed/roamfed/roaming/mesh"
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
	// AcceptWait is how long a send to a group homed elsewhere waits for
	// the home to commit before it is answered as accepted; 0 means 1.5s.
	AcceptWait time.Duration
	// Dial makes the underlying connections to peers; nil means TCP.
	// Tests and benchmarks pass one that delays or breaks links.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// Mesh tunes heartbeats and relays; Self, Peers, Dial, Changed and
	// Logger are filled in.
	Mesh mesh.Config
	// TLS is this region's certificate and the federation CA. With it,
	// every link is mutually authenticated and a peer's claimed region
	// must match its certificate; relayed connections carry the same TLS
	// end to end, so a relaying region cannot read or alter them. Nil runs
	// links in plaintext, which only in-process tests do: regiond always
	// sets it.
	TLS *certs.Material
	// OnInbound, if set, sees every batch of messages a peer delivers
	// here (business.Router.OnInbound); metrics use it.
	OnInbound func(peer string, items []*recordv1.Fanout)
}

// System is a running roaming system.
type System struct {
	cfg    Config
	log    *slog.Logger
	mesh   *mesh.Mesh
	direct *resourcepool.Peers // heartbeats and relays: always direct
	peers  *resourcepool.Peers // traffic: over the mesh's best route
	// limiter is the listener's request budget per peer.
	limiter *resourcepool.RateLimiter
	data    *dataservice.Client
	router  *business.Router

	submitters map[string]*business.Submitter
	deliverers map[string]*business.Deliverer
	outboxes   map[string]*business.Outbox

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
	if cfg.AcceptWait <= 0 {
		cfg.AcceptWait = 1500 * time.Millisecond
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
	var peers *resourcepool.Peers
	mc := cfg.Mesh
	mc.Self, mc.Peers, mc.Dial, mc.Logger = cfg.Self, addrs, cfg.Dial, log
	mc.Changed = func(peer string) {
		// A route appeared or changed: connect now. (Not
		// ResetConnectBackoff: in grpc-go 1.85 it races with the
		// connection's own bookkeeping.)
		if conn, err := peers.Conn(peer); err == nil {
			conn.Connect()
		}
	}
	m := mesh.New(mc)
	var creds credentials.TransportCredentials
	if cfg.TLS != nil {
		if cfg.TLS.Region() != cfg.Self {
			return nil, fmt.Errorf("roaming: the certificate is region %s's, not %s's", cfg.TLS.Region(), cfg.Self)
		}
		creds = m.Credentials(cfg.TLS.PeerCredentials(addrs))
	} else {
		log.Warn("roaming links run without TLS: peers are not authenticated (tests only)")
	}
	direct, err := resourcepool.NewPeers(resourcepool.Config{
		Self:        cfg.Self,
		Addrs:       addrs,
		Creds:       creds,
		Limits:      cfg.Limits,
		Logger:      log,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(m.DirectDial)},
	})
	if err != nil {
		return nil, err
	}
	peers, err = resourcepool.NewPeers(resourcepool.Config{
		Self:        cfg.Self,
		Addrs:       addrs,
		Creds:       creds,
		Limits:      cfg.Limits,
		Logger:      log,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(m.RoutedDial)},
	})
	if err != nil {
		_ = direct.Close()
		return nil, err
	}
	s := &System{
		cfg:        cfg,
		log:        log,
		mesh:       m,
		direct:     direct,
		peers:      peers,
		limiter:    resourcepool.NewRateLimiter(cfg.Self, cfg.Federation.Names(), cfg.Limits),
		data:       dataservice.NewClient(cfg.Self, peers, cfg.Store, log),
		submitters: make(map[string]*business.Submitter),
		deliverers: make(map[string]*business.Deliverer),
		outboxes:   make(map[string]*business.Outbox),
	}
	for _, name := range peers.Names() {
		s.submitters[name] = business.NewSubmitter(name, peers, log)
		s.deliverers[name] = business.NewDeliverer(name, peers, log)
	}
	s.router = business.NewRouter(cfg.Self, cfg.Store, s.deliverers, log)
	s.router.OnInbound(cfg.OnInbound)
	return s, nil
}

// Start serves the roaming API and starts replicating the home directory.
// home answers peers for what this region homes; local takes deliveries.
func (s *System) Start(home *businesscenter.Home, local business.Local) error {
	s.router.SetLocal(local)
	for _, name := range s.peers.Names() {
		s.outboxes[name] = business.NewOutbox(business.OutboxConfig{
			Peer:      name,
			Store:     s.cfg.Store,
			Submitter: s.submitters[name],
			Location: func(ctx context.Context, req *roamingv1.UpdateLocationRequest) error {
				return s.data.UpdateLocation(ctx, name, req)
			},
			Receipt: s.router.Receipt,
			Logger:  s.log,
		})
	}
	lis, err := net.Listen("tcp", s.cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", s.cfg.ListenAddr, err)
	}
	s.lis = lis
	var opts []grpc.ServerOption
	if s.cfg.TLS != nil {
		opts = append(resourcepool.ServerOptions(s.cfg.Self, s.cfg.Federation.Names(), certs.CheckClaim),
			grpc.Creds(s.mesh.Credentials(s.cfg.TLS.ServerCredentials())))
	} else {
		opts = resourcepool.ServerOptions(s.cfg.Self, s.cfg.Federation.Names())
	}
	// The request budget counts only callers the identity check let in.
	opts = append(opts, s.limiter.ServerOptions()...)
	opts = append(opts,
		grpc.ChainUnaryInterceptor(rpcstatus.UnaryServerInterceptor(s.log)),
		grpc.ChainStreamInterceptor(rpcstatus.StreamServerInterceptor(s.log)),
	)
	s.server = grpc.NewServer(opts...)
	auth := dataservice.NewAuthorizer(s.cfg.Self, s.cfg.Store, home, s.data)
	roamingv1.RegisterDataServiceServer(s.server, dataservice.NewServer(s.cfg.Self, s.cfg.Store, home, auth))
	s.business = business.NewServer(s.cfg.Self, s.log, home, s.router, s.mesh, auth.Check, s.peers.Limits().MaxBatchMessages)
	roamingv1.RegisterBusinessServiceServer(s.server, s.business)
	s.mesh.Start(func(peer string) (roamingv1.BusinessServiceClient, error) {
		conn, err := s.direct.Conn(peer)
		if err != nil {
			return nil, err
		}
		return roamingv1.NewBusinessServiceClient(conn), nil
	})
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
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.resendRecent()
	}()
	s.log.Info("roaming system serving", slog.String("addr", lis.Addr().String()), slog.Any("peers", s.peers.Names()))
	return nil
}

// Deliveries to other regions are handed over from memory; what was still
// on its way when this region last stopped is sent again at start: the
// messages committed within resendWindow of the newest commit, at most
// resendLimit. The receiving regions drop what they already had.
const (
	resendWindow = 10 * time.Second
	resendLimit  = 50_000
)

// resendRecent queues the latest commits of the groups homed here for the
// regions their members are at, as they were queued when committed.
func (s *System) resendRecent() {
	msgs, err := s.cfg.Store.RecentCommits(resendWindow, resendLimit)
	if err != nil {
		s.log.Error("recent commits unreadable; remote members catch up from history", slog.Any("err", err))
		return
	}
	groups := make(map[string]*recordv1.Group)
	for _, m := range msgs {
		g, ok := groups[m.GetGroupId()]
		if !ok {
			if g, err = s.cfg.Store.Group(m.GetGroupId()); err != nil {
				s.log.Warn("recent commit of an unreadable group", slog.String("group", m.GetGroupId()), slog.Any("err", err))
				continue
			}
			groups[m.GetGroupId()] = g
		}
		s.router.Committed(g, m)
	}
	if len(msgs) > 0 {
		s.log.Info("sending the latest commits to the other regions again", slog.Int("messages", len(msgs)), slog.Int("groups", len(groups)))
	}
}

// Mesh is the region's link table and router.
func (s *System) Mesh() *mesh.Mesh { return s.mesh }

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
		for _, o := range s.outboxes {
			o.Stop()
		}
		for _, d := range s.deliverers {
			d.Stop()
		}
		for _, sb := range s.submitters {
			sb.Stop()
		}
		s.mesh.Close()
		_ = s.peers.Close()
		_ = s.direct.Close()
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

// Submit implements businesscenter.Roaming: the message is synced in the
// home's outbox first, then waits for the home to commit it, up to
// AcceptWait (not at all when no route to the home exists).
func (s *System) Submit(ctx context.Context, home string, m *recordv1.Message) (datacenter.Appended, error) {
	o, ok := s.outboxes[home]
	if !ok {
		return datacenter.Appended{}, fmt.Errorf("%w: %s", resourcepool.ErrUnknownPeer, home)
	}
	wait := s.cfg.AcceptWait
	if _, routed := s.mesh.Route(home); !routed {
		wait = 0
	}
	return o.Submit(ctx, m, wait)
}

// FetchHistory implements businesscenter.Roaming.
func (s *System) FetchHistory(ctx context.Context, home string, req *roamingv1.FetchHistoryRequest) (*roamingv1.FetchHistoryResponse, error) {
	return s.data.FetchHistory(ctx, home, req)
}

// VerifyLogin implements businesscenter.Roaming.
func (s *System) VerifyLogin(ctx context.Context, home string, req *roamingv1.VerifyLoginRequest) (*recordv1.User, error) {
	return s.data.VerifyLogin(ctx, home, req)
}

// UpdateLocation implements businesscenter.Roaming: the update is queued in
// the home's outbox and sent in order with the region's other work.
func (s *System) UpdateLocation(_ context.Context, home string, req *roamingv1.UpdateLocationRequest) error {
	o, ok := s.outboxes[home]
	if !ok {
		return fmt.Errorf("%w: %s", resourcepool.ErrUnknownPeer, home)
	}
	return o.UpdateLocation(req)
}

// ClaimUsername implements businesscenter.Roaming.
func (s *System) ClaimUsername(ctx context.Context, username string) error {
	return s.data.ClaimUsername(ctx, username, s.mesh.WaitRoute)
}

// ListUserGroups implements businesscenter.Roaming.
func (s *System) ListUserGroups(ctx context.Context, userID string) ([]*roamingv1.UserGroup, error) {
	return s.data.ListUserGroups(ctx, userID)
}

// Committed implements businesscenter.Roaming.
func (s *System) Committed(g *recordv1.Group, m *recordv1.Message) { s.router.Committed(g, m) }

// Presence implements businesscenter.Roaming.
func (s *System) Presence(ch *recordv1.PresenceChange) { s.router.Presence(ch) }

// CutLink runs a drill on the link between this region and peer: the peer
// cuts its side first (over the link itself, while it still works), then
// this region cuts its own. Traffic between the two then stops in both
// directions, heartbeats included, until RestoreLink.
func (s *System) CutLink(ctx context.Context, peer, reason string) error {
	if err := s.drillPeer(ctx, peer, true, reason); err != nil {
		return fmt.Errorf("cut %s-%s: peer side: %w", s.cfg.Self, peer, err)
	}
	return s.mesh.Cut(peer, reason)
}

// restoreWait bounds how long RestoreLink waits for the link to be seen
// up once both sides are restored: a healthy link takes a round trip.
const restoreWait = 5 * time.Second

// RestoreLink ends a drill: this region restores its side, then tells
// the peer over the link, now open in this direction, to restore its own.
// Then it waits until this region's heartbeat sees the link up, so that a
// status read next shows it up: within restoreWait, and early enough
// before ctx's deadline for the answer to reach the caller. It reports
// whether it did. A link not up yet is no error: the drill is over at both
// ends and the link comes up when a heartbeat passes; restoring again
// would change nothing.
func (s *System) RestoreLink(ctx context.Context, peer, reason string) (bool, error) {
	if err := s.mesh.Restore(peer, reason); err != nil {
		return false, err
	}
	// The direct connection may have been stalled across a restart of the
	// peer; the first call then finds it dead, and gRPC redials for the
	// next. A few tries, a little apart.
	var err error
	for attempt := range 5 {
		if err = s.drillPeer(ctx, peer, false, reason); status.Code(err) != codes.Unavailable {
			break
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(time.Duration(attempt+1) * 100 * time.Millisecond):
		}
	}
	if err != nil {
		return false, fmt.Errorf("restore %s-%s: peer side: %w", s.cfg.Self, peer, err)
	}
	wait := restoreWait
	if dl, ok := ctx.Deadline(); ok {
		// A restore answered after the caller gave up looks failed, and
		// would be made again.
		wait = min(wait, time.Until(dl)*3/4)
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	return s.mesh.WaitLinkUp(wctx, peer) == nil, nil
}

func (s *System) drillPeer(ctx context.Context, peer string, cut bool, reason string) error {
	conn, err := s.direct.Conn(peer)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = roamingv1.NewBusinessServiceClient(conn).Drill(ctx, &roamingv1.DrillRequest{Cut: cut, Reason: reason}, grpc.WaitForReady(true))
	return err
}

// PeerStatus is one peer's row in the region's status: the link, the
// route, the work waiting for the peer, and what was refused of the peer.
type PeerStatus struct {
	mesh.LinkStatus
	OutboxItems int
	OutboxBytes int64
	// QueuedDeliveries counts what waits in memory for the peer: its
	// delivery queue, and forwards and presence changes held while the
	// queue was full.
	QueuedDeliveries int
	Window           resourcepool.WindowUsage
	// RateRefused counts the peer's requests refused by the per-peer
	// rate limit (Limits.PeerRate, PeerBurst).
	RateRefused uint64
	// DirectoryRefused counts the directory records the peer published
	// or answered that this region refused: not homed by the peer,
	// malformed, or taking over a key another region homes.
	DirectoryRefused uint64
}

// Status returns a row per peer, by name.
func (s *System) Status() []PeerStatus {
	links := s.mesh.Status()
	usage := s.peers.Usage()
	refused := s.limiter.Refused()
	dirRefused := s.data.Refused()
	out := make([]PeerStatus, len(links))
	for i, l := range links {
		items, bytes, err := s.cfg.Store.OutboxDepth(l.Peer)
		if err != nil {
			s.log.Warn("outbox depth unreadable", slog.String("peer", l.Peer), slog.Any("err", err))
		}
		out[i] = PeerStatus{LinkStatus: l, OutboxItems: items, OutboxBytes: bytes, Window: usage[l.Peer],
			RateRefused: refused[l.Peer], DirectoryRefused: dirRefused[l.Peer]}
		if d, ok := s.deliverers[l.Peer]; ok {
			out[i].QueuedDeliveries = d.Queued() + s.router.Held(l.Peer)
		}
	}
	return out
}

// Dropped counts, by reason, deliveries the roaming system did not push:
// routing_queue_full (committed batches let go when the routing queue was
// full) and held_forward_lost (forwards to roaming users beyond what is
// held for full queues), whose recipients catch up from history; and
// no_standing, items a peer delivered for a group and recipient it does
// not home, refused.
func (s *System) Dropped() map[string]uint64 {
	return map[string]uint64{
		"routing_queue_full": s.router.Dropped(),
		"held_forward_lost":  s.router.HeldLost(),
		"no_standing":        s.router.Refused(),
	}
}

// ResyncAll has every region check and republish its home records. A
// peer without a route is waited for a moment (a link restored just now
// comes up at its next heartbeat), then reported with the error.
func (s *System) ResyncAll(ctx context.Context) []*roamingv1.ResyncResult {
	return s.data.ResyncAll(ctx, s.mesh.WaitRoute)
}

// Federation is the federation this system belongs to.
func (s *System) Federation() *regions.Federation { return s.cfg.Federation }
