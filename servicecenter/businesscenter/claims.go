package businesscenter

import (
	"errors"
	"fmt"
	"sync"
	"time"

	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/servicecenter/datacenter"
)

// ErrUsernameClaimed means another region is registering the username at
// this moment; asking again in a few seconds finds it taken or free.
var ErrUsernameClaimed = errors.New("the username is being registered in another region; try again in a few seconds")

// claimTTL is how long a region's claim on a username holds: long enough
// for the claimer to hear from every peer and store the user, whose
// directory record then answers for the name.
const claimTTL = 10 * time.Second

// A username is unique across the federation, but each region registers
// its own users. Before storing a user, the registering region claims the
// name here and at every peer (Roaming.ClaimUsername), and stores the user
// only if every peer that answered let it and its own claim still stands.
//
// A region holds one claim per name. A claim is let when the name is free
// here, or the claim held is the same region's, or it is another's that
// has expired, or it is another's that is not committing and the new
// claimer's name sorts first. So when regions register one name at once,
// the one whose name sorts first wins at every region, its own included,
// and the others find their claim gone when they confirm it. A claim that
// is committing (its region confirmed it and is storing the user) is never
// taken over; the stored user then answers for the name. No claim binds
// for longer than claimTTL, so a claimer that fails or dies blocks the name
// for a few seconds at most.
type claims struct {
	mu        sync.Mutex
	now       func() time.Time
	byName    map[string]claim
	lastSweep time.Time
}

type claim struct {
	region     string
	until      time.Time
	committing bool
	// holders counts this region's registrations of the name in
	// progress, which drop the claim one by one.
	holders int
}

func newClaims(now func() time.Time) *claims {
	return &claims{now: now, byName: make(map[string]claim)}
}

// take gives region the claim on name unless another region's claim
// stands against it.
func (c *claims) take(name, region string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if cl, ok := c.byName[name]; ok && cl.region != region && now.Before(cl.until) && (cl.committing || cl.region < region) {
		return fmt.Errorf("username %q: %w (%s)", name, ErrUsernameClaimed, cl.region)
	}
	// Expired claims go once per claimTTL, so the table holds at most
	// what two claimTTLs bring (and peers' calls are rate-limited).
	if now.Sub(c.lastSweep) >= claimTTL {
		for n, cl := range c.byName {
			if !now.Before(cl.until) {
				delete(c.byName, n)
			}
		}
		c.lastSweep = now
	}
	cl, ok := c.byName[name]
	if !ok || cl.region != region || !now.Before(cl.until) {
		cl = claim{region: region}
	}
	cl.until = now.Add(claimTTL)
	cl.holders++
	c.byName[name] = cl
	return nil
}

// confirm marks region's claim on name committing and reports whether it
// still held it.
func (c *claims) confirm(name, region string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	cl, ok := c.byName[name]
	if !ok || cl.region != region || !now.Before(cl.until) {
		return false
	}
	cl.until, cl.committing = now.Add(claimTTL), true
	c.byName[name] = cl
	return true
}

// drop ends one of region's registrations of name; the claim ends with
// the last.
func (c *claims) drop(name, region string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl, ok := c.byName[name]
	if !ok || cl.region != region {
		return
	}
	if cl.holders--; cl.holders > 0 {
		c.byName[name] = cl
		return
	}
	delete(c.byName, name)
}

// ClaimUsername lets region register name, unless this region knows a
// user by that name (ErrUserExists) or another region claimed it moments
// ago (ErrUsernameClaimed).
func (h *Home) ClaimUsername(name, region string) error {
	switch _, err := h.store.Locate(roamingv1.DirectoryKind_DIRECTORY_KIND_USERNAME, name); {
	case err == nil:
		return fmt.Errorf("username %q: %w", name, datacenter.ErrUserExists)
	case !errors.Is(err, datacenter.ErrNotInDirectory):
		return err
	}
	return h.claims.take(name, region)
}

// ConfirmClaim marks this region's claim on name committing, or fails with
// ErrUsernameClaimed when another region's claim has taken it over.
func (h *Home) ConfirmClaim(name string) error {
	if !h.claims.confirm(name, h.region) {
		return fmt.Errorf("username %q: %w", name, ErrUsernameClaimed)
	}
	return nil
}

// DropClaim ends region's claim on name.
func (h *Home) DropClaim(name, region string) { h.claims.drop(name, region) }
