package businesscenter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc/metadata"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	recordv1 "github.com/roamfed/roamfed/api/record/v1"
	"github.com/roamfed/roamfed/internal/ids"
	"github.com/roamfed/roamfed/internal/password"
	"github.com/roamfed/roamfed/servicecenter/datacenter"
	"github.com/roamfed/roamfed/servicecenter/resourcepool"
)

// Config is what a Server needs. Region, Store, Pool and Bus are required.
type Config struct {
	Region string
	// Node names this service-center node on the bus; empty means a
	// fresh random name.
	Node   string
	Store  *datacenter.Store
	Pool   *resourcepool.Pool
	Bus    *nats.Conn
	Logger *slog.Logger
	// Roaming reaches the other regions; nil serves a region on its own.
	Roaming Roaming

	// TokenTTL is how long a login session lasts; 0 means 24 hours.
	TokenTTL time.Duration
	// AckTimeout is how long a delivery waits for its acknowledgement
	// before it is sent again; 0 means 3 seconds.
	AckTimeout time.Duration
	// MaxAttempts bounds how often one delivery is sent; 0 means 3.
	MaxAttempts int
	// Password sets argon2id's cost; the zero value means password.Default.
	Password password.Params
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() error {
	switch {
	case c.Region == "":
		return errors.New("businesscenter: Config.Region is empty")
	case c.Store == nil:
		return errors.New("businesscenter: Config.Store is nil")
	case c.Pool == nil:
		return errors.New("businesscenter: Config.Pool is nil")
	case c.Bus == nil:
		return errors.New("businesscenter: Config.Bus is nil")
	}
	if c.Node == "" {
		c.Node = ids.New(ids.Session)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.TokenTTL <= 0 {
		c.TokenTTL = 24 * time.Hour
	}
	if c.AckTimeout <= 0 {
		c.AckTimeout = 3 * time.Second
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 3
	}
	if c.Password == (password.Params{}) {
		c.Password = password.Default
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// Server implements clientv1.ClientServiceServer for one service-center node.
type Server struct {
	clientv1.UnimplementedClientServiceServer

	cfg     Config
	log     *slog.Logger
	store   *datacenter.Store
	pool    *resourcepool.Pool
	bus     *nats.Conn
	home    *Home
	roaming Roaming

	fanoutSubject   string
	presenceSubject string
	receiptSubject  string
	subs            []*nats.Subscription

	creds *credentials

	hub      *hub
	presence *presenceTable

	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

var _ clientv1.ClientServiceServer = (*Server)(nil)

// New starts a service-center node: it subscribes to the bus and hooks the
// data center's commits.
func New(cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:             cfg,
		log:             cfg.Logger.With(slog.String("region", cfg.Region), slog.String("node", cfg.Node)),
		store:           cfg.Store,
		pool:            cfg.Pool,
		bus:             cfg.Bus,
		roaming:         cfg.Roaming,
		creds:           newCredentials(cfg.Password),
		fanoutSubject:   "roamfed." + cfg.Region + ".fanout",
		presenceSubject: "roamfed." + cfg.Region + ".presence",
		receiptSubject:  "roamfed." + cfg.Region + ".receipt",
		hub:             newHub(),
		presence:        newPresenceTable(),
		stop:            make(chan struct{}),
	}
	s.home = &Home{region: cfg.Region, store: cfg.Store, now: cfg.Now, creds: s.creds, grantTTL: cfg.TokenTTL, claims: newClaims(cfg.Now)}
	for subject, handle := range map[string]nats.MsgHandler{
		s.fanoutSubject:   s.onFanout,
		s.presenceSubject: s.onPresence,
		s.receiptSubject:  s.onReceipt,
	} {
		sub, err := s.bus.Subscribe(subject, handle)
		if err != nil {
			s.unsubscribe()
			return nil, fmt.Errorf("nats subscribe %s: %w", subject, err)
		}
		// A slow node must not stall the bus; the pending limits bound
		// its memory instead, and overflow is logged by the bus.
		_ = sub.SetPendingLimits(1<<20, 1<<30)
		s.subs = append(s.subs, sub)
	}
	if err := s.bus.Flush(); err != nil {
		s.unsubscribe()
		return nil, fmt.Errorf("nats flush: %w", err)
	}
	s.store.OnCommit(s.publishCommitted)
	s.wg.Add(1)
	go s.janitor()
	return s, nil
}

// Close ends every session, unhooks from the data center and the bus, and
// waits for its goroutines. It is idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.store.OnCommit(nil)
		close(s.stop)
		s.hub.drain()
		s.wg.Wait()
		s.unsubscribe()
	})
	return nil
}

func (s *Server) unsubscribe() {
	for _, sub := range s.subs {
		_ = sub.Unsubscribe()
	}
	s.subs = nil
}

// janitor removes expired login sessions now and then.
func (s *Server) janitor() {
	defer s.wg.Done()
	t := time.NewTicker(10 * time.Minute)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			n, err := s.store.DeleteExpiredSessions(s.cfg.Now(), 10000)
			if err != nil {
				s.log.Warn("expired session sweep failed", slog.Any("err", err))
			} else if n > 0 {
				s.log.Info("expired sessions removed", slog.Int("count", n))
			}
		}
	}
}

// caller is the authenticated user of a call.
type caller struct {
	userID   string
	username string
	home     string
	token    string
}

// member is the caller's membership record for a group it joins.
func (c caller) member() *recordv1.Member {
	return &recordv1.Member{UserId: c.userID, Name: c.username, HomeRegion: c.home}
}

// authenticate reads the bearer token of the call and returns its user.
func (s *Server) authenticate(ctx context.Context) (caller, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) != 1 {
		return caller{}, fmt.Errorf("%w: send `authorization: Bearer <token>` from Login", ErrUnauthenticated)
	}
	scheme, token, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "bearer") || token == "" || len(token) > 256 {
		return caller{}, fmt.Errorf("%w: authorization must be `Bearer <token>`", ErrUnauthenticated)
	}
	rec, err := s.store.Session(token, s.cfg.Now())
	if errors.Is(err, datacenter.ErrSessionNotFound) {
		return caller{}, ErrUnauthenticated
	}
	if err != nil {
		return caller{}, err
	}
	return caller{userID: rec.GetUserId(), username: rec.GetUsername(), home: rec.GetHomeRegion(), token: token}, nil
}

// Home is the authority for what this region homes, for the roaming system
// to answer peers with.
func (s *Server) Home() *Home { return s.home }
