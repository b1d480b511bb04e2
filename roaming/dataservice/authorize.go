package dataservice

import (
	"context"
	"errors"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/servicecenter/businesscenter"
	"github.com/roamfed/roamfed/servicecenter/datacenter"
)

// Authorizer decides whether a peer region may act for a user: it is the
// user's home, or the user's home verified a login there. A home checks
// this before it serves a peer's request made for a user, so that a peer
// cannot read or change what its own users could not (DESIGN.md, and
// SECURITY.md on Synapse CVE-2022-39335).
type Authorizer struct {
	region string
	store  *datacenter.Store
	home   *businesscenter.Home
	client *Client

	mu    sync.Mutex
	cache map[grantKey]grantEntry
}

type grantKey struct{ region, user string }

type grantEntry struct {
	allowed bool
	until   time.Time // an allowed answer holds until then
	checked time.Time
}

// How long answers are reused: a grant lasts as long as the login that
// made it, but a revocation should take effect soon; a refusal is
// rechecked quickly because the login that grants it may be under way.
const (
	allowFor = time.Minute
	denyFor  = 2 * time.Second
)

// NewAuthorizer returns an Authorizer for region.
func NewAuthorizer(region string, store *datacenter.Store, home *businesscenter.Home, client *Client) *Authorizer {
	return &Authorizer{region: region, store: store, home: home, client: client, cache: make(map[grantKey]grantEntry)}
}

// Check returns nil when caller may act for userID, else PERMISSION_DENIED.
func (a *Authorizer) Check(ctx context.Context, caller, userID string) error {
	if userID == "" {
		return status.Error(codes.InvalidArgument, "the request names no user")
	}
	rec, err := a.client.Locate(ctx, roamingv1.DirectoryKind_DIRECTORY_KIND_USER, userID)
	switch {
	case errors.Is(err, datacenter.ErrNotInDirectory):
		return status.Errorf(codes.PermissionDenied, "user %s is not known here; region %s may not act for it", userID, caller)
	case errors.Is(err, datacenter.ErrDirectoryIncomplete):
		return status.Errorf(codes.Unavailable, "user %s: %v", userID, err)
	case err != nil:
		return err
	}
	if rec.GetHomeRegion() == caller {
		return nil
	}
	now := time.Now()
	k := grantKey{caller, userID}
	a.mu.Lock()
	e, ok := a.cache[k]
	a.mu.Unlock()
	if !ok || e.allowed && (now.After(e.until) || now.Sub(e.checked) > allowFor) || !e.allowed && now.Sub(e.checked) > denyFor {
		e, err = a.ask(ctx, rec.GetHomeRegion(), caller, userID)
		if err != nil {
			return err
		}
		e.checked = now
		a.mu.Lock()
		if len(a.cache) > 1<<20 {
			clear(a.cache)
		}
		a.cache[k] = e
		a.mu.Unlock()
	}
	if !e.allowed {
		return status.Errorf(codes.PermissionDenied, "region %s may not act for user %s: the user's home (%s) verified no login there", caller, userID, rec.GetHomeRegion())
	}
	return nil
}

// ask has the user's home answer.
func (a *Authorizer) ask(ctx context.Context, home, caller, userID string) (grantEntry, error) {
	if home == a.region {
		until, ok, err := a.home.Authorize(userID, caller)
		return grantEntry{allowed: ok, until: until}, err
	}
	resp, err := a.client.AuthorizeUser(ctx, home, &roamingv1.AuthorizeUserRequest{UserId: userID, Region: caller})
	if err != nil {
		return grantEntry{}, err
	}
	return grantEntry{allowed: resp.GetAllowed(), until: resp.GetUntil().AsTime()}, nil
}
