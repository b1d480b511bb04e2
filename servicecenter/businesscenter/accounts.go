package businesscenter

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"

	"google.golang.org/protobuf/types/known/timestamppb"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	recordv1 "github.com/roamfed/roamfed/api/record/v1"
	"github.com/roamfed/roamfed/internal/ids"
	"github.com/roamfed/roamfed/internal/password"
	"github.com/roamfed/roamfed/internal/validate"
	"github.com/roamfed/roamfed/servicecenter/datacenter"
)

// Register creates an account homed in this region.
func (s *Server) Register(ctx context.Context, req *clientv1.RegisterRequest) (*clientv1.RegisterResponse, error) {
	if err := errors.Join(
		validate.Username("username", req.GetUsername()),
		validate.Password("password", req.GetPassword()),
		validate.Name("display_name", req.GetDisplayName(), false),
	); err != nil {
		return nil, err
	}
	if _, err := s.store.UserByName(req.GetUsername()); err == nil {
		return nil, fmt.Errorf("username %q: %w", req.GetUsername(), datacenter.ErrUserExists)
	}
	hash, err := s.hash(ctx, req.GetPassword())
	if err != nil {
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

// Login checks a user's credentials and opens a login session.
func (s *Server) Login(ctx context.Context, req *clientv1.LoginRequest) (*clientv1.LoginResponse, error) {
	if err := errors.Join(
		validate.Username("username", req.GetUsername()),
		validate.Password("password", req.GetPassword()),
	); err != nil {
		return nil, err
	}
	u, err := s.store.UserByName(req.GetUsername())
	if errors.Is(err, datacenter.ErrUserNotFound) {
		// Spend the same time as a wrong password, so that timing does
		// not tell which usernames exist.
		_ = s.verify(ctx, req.GetPassword(), s.dummyHash())
		return nil, ErrBadCredentials
	}
	if err != nil {
		return nil, err
	}
	if err := s.verify(ctx, req.GetPassword(), u.GetCredentialHash()); err != nil {
		if errors.Is(err, password.ErrMismatch) {
			return nil, ErrBadCredentials
		}
		return nil, err
	}
	token := newToken()
	now := s.cfg.Now()
	rec := &recordv1.SessionToken{
		UserId:    u.GetId(),
		IssuedAt:  timestamppb.New(now),
		ExpiresAt: timestamppb.New(now.Add(s.cfg.TokenTTL)),
		Region:    s.cfg.Region,
	}
	if err := s.store.PutSession(token, rec); err != nil {
		return nil, err
	}
	return &clientv1.LoginResponse{
		Token:      token,
		UserId:     u.GetId(),
		HomeRegion: u.GetHomeRegion(),
		ExpiresAt:  rec.GetExpiresAt(),
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

func (s *Server) hash(ctx context.Context, pw string) (string, error) {
	if err := s.acquireHashing(ctx); err != nil {
		return "", err
	}
	defer func() { <-s.hashing }()
	return password.Hash(pw, s.cfg.Password), nil
}

func (s *Server) verify(ctx context.Context, pw, phc string) error {
	if err := s.acquireHashing(ctx); err != nil {
		return err
	}
	defer func() { <-s.hashing }()
	return password.Verify(pw, phc)
}

func (s *Server) acquireHashing(ctx context.Context) error {
	select {
	case s.hashing <- struct{}{}:
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
