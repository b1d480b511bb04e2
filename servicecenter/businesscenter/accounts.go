package businesscenter

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"

	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/types/known/timestamppb"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	recordv1 "github.com/roamfed/roamfed/api/record/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/internal/ids"
	"github.com/roamfed/roamfed/internal/password"
	"github.com/roamfed/roamfed/internal/validate"
	"github.com/roamfed/roamfed/servicecenter/datacenter"
)

// Register creates an account homed in this region. Usernames are unique
// across the federation as far as the home directory knows: two regions
// registering one name within a replication interval of each other is not
// detected.
func (s *Server) Register(ctx context.Context, req *clientv1.RegisterRequest) (*clientv1.RegisterResponse, error) {
	if err := errors.Join(
		validate.Username("username", req.GetUsername()),
		validate.Password("password", req.GetPassword()),
		validate.Name("display_name", req.GetDisplayName(), false),
	); err != nil {
		return nil, err
	}
	switch _, err := s.locate(ctx, roamingv1.DirectoryKind_DIRECTORY_KIND_USERNAME, req.GetUsername()); {
	case err == nil:
		return nil, fmt.Errorf("username %q: %w", req.GetUsername(), datacenter.ErrUserExists)
	case errors.Is(err, datacenter.ErrDirectoryIncomplete):
		// A region that could hold the name is unreachable. Registering
		// keeps the region useful while cut off, at the risk that the
		// name turns out to be taken there.
		s.log.Warn("registering while a region is unreachable; the name may be taken there", slog.String("username", req.GetUsername()))
	case !errors.Is(err, datacenter.ErrNotInDirectory):
		return nil, err
	}
	// Hashing may wait for a slot; it comes before the claim, which must
	// not lapse (claimTTL) while the user is stored.
	hash, err := s.creds.hash(ctx, req.GetPassword())
	if err != nil {
		return nil, err
	}
	// Claim the name here and at every peer, so that no other region
	// registers it before this one's directory record says it is taken.
	if err := s.home.ClaimUsername(req.GetUsername(), s.cfg.Region); err != nil {
		return nil, err
	}
	defer s.home.DropClaim(req.GetUsername(), s.cfg.Region)
	if s.roaming != nil {
		if err := s.roaming.ClaimUsername(ctx, req.GetUsername()); err != nil {
			return nil, err
		}
	}
	if err := s.home.ConfirmClaim(req.GetUsername()); err != nil {
		return nil, err
	}
	u := &recordv1.User{
		Id:             ids.New(ids.User),
		Name:           req.GetUsername(),
		DisplayName:    req.GetDisplayName(),
		CredentialHash: hash,
		HomeRegion:     s.cfg.Region,
		CreatedAt:      timestamppb.New(s.cfg.Now()),
	}
	if err := s.store.CreateUser(u); err != nil {
		return nil, fmt.Errorf("username %q: %w", req.GetUsername(), err)
	}
	s.log.Info("user registered", slog.String("user", u.GetId()))
	return &clientv1.RegisterResponse{UserId: u.GetId(), HomeRegion: u.GetHomeRegion()}, nil
}

// Login checks a user's credentials at the user's home region and opens a
// login session here.
func (s *Server) Login(ctx context.Context, req *clientv1.LoginRequest) (*clientv1.LoginResponse, error) {
	if err := errors.Join(
		validate.Username("username", req.GetUsername()),
		validate.Password("password", req.GetPassword()),
	); err != nil {
		return nil, err
	}
	if err := s.pool.AllowLogin(req.GetUsername(), sourceOf(ctx)); err != nil {
		return nil, err
	}
	var u *recordv1.User
	rec, err := s.locate(ctx, roamingv1.DirectoryKind_DIRECTORY_KIND_USERNAME, req.GetUsername())
	switch {
	case errors.Is(err, datacenter.ErrNotInDirectory):
		// Spend the same time as a wrong password, so that timing does
		// not tell which usernames exist.
		_ = s.creds.verify(ctx, req.GetPassword(), s.creds.dummy())
		return nil, ErrBadCredentials
	case err != nil:
		return nil, err
	case rec.GetHomeRegion() == s.cfg.Region:
		u, err = s.home.VerifyLogin(ctx, req.GetUsername(), req.GetPassword())
	default:
		u, err = s.roaming.VerifyLogin(ctx, rec.GetHomeRegion(), &roamingv1.VerifyLoginRequest{
			Username: req.GetUsername(), Password: req.GetPassword(),
		})
	}
	if err != nil {
		return nil, err
	}
	token := newToken()
	now := s.cfg.Now()
	session := &recordv1.SessionToken{
		UserId:     u.GetId(),
		IssuedAt:   timestamppb.New(now),
		ExpiresAt:  timestamppb.New(now.Add(s.cfg.TokenTTL)),
		Region:     s.cfg.Region,
		Username:   u.GetName(),
		HomeRegion: u.GetHomeRegion(),
	}
	if err := s.store.PutSession(token, session); err != nil {
		return nil, err
	}
	return &clientv1.LoginResponse{
		Token:      token,
		UserId:     u.GetId(),
		HomeRegion: u.GetHomeRegion(),
		ExpiresAt:  session.GetExpiresAt(),
		Region:     s.cfg.Region,
	}, nil
}

// Logout revokes the calling token.
func (s *Server) Logout(ctx context.Context, _ *clientv1.LogoutRequest) (*clientv1.LogoutResponse, error) {
	c, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.store.DeleteSession(c.token); err != nil {
		return nil, err
	}
	return &clientv1.LogoutResponse{}, nil
}

// credentials hashes and verifies passwords, bounding how many argon2id
// computations (each costs Params.Memory) run at once.
type credentials struct {
	params password.Params
	slots  chan struct{}
	dummy  func() string
}

func newCredentials(p password.Params) *credentials {
	return &credentials{
		params: p,
		slots:  make(chan struct{}, 4),
		// A hash to verify against when a login names no known user.
		dummy: sync.OnceValue(func() string { return password.Hash("roamfed: no such user", p) }),
	}
}

func (c *credentials) hash(ctx context.Context, pw string) (string, error) {
	if err := c.acquire(ctx); err != nil {
		return "", err
	}
	defer func() { <-c.slots }()
	return password.Hash(pw, c.params), nil
}

func (c *credentials) verify(ctx context.Context, pw, phc string) error {
	if err := c.acquire(ctx); err != nil {
		return err
	}
	defer func() { <-c.slots }()
	return password.Verify(pw, phc)
}

func (c *credentials) acquire(ctx context.Context) error {
	select {
	case c.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// newToken returns 256 random bits, base64url without padding.
func newToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// sourceOf is the address a call came from, without the port: the unit a
// login rate limit counts per source.
func sourceOf(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return "unknown"
	}
	host, _, err := net.SplitHostPort(p.Addr.String())
	if err != nil {
		return p.Addr.String()
	}
	return host
}
