package dataservice

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	recordv1 "github.com/roamfed/roamfed/api/record/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/roaming/resourcepool"
	"github.com/roamfed/roamfed/servicecenter/businesscenter"
	"github.com/roamfed/roamfed/servicecenter/datacenter"
)

// Client makes DataService calls to peer regions for this region.
type Client struct {
	region  string
	peers   *resourcepool.Peers
	store   *datacenter.Store
	log     *slog.Logger
	regions map[string]bool // this one and its peers
	refused refusals
}

// NewClient returns a Client that reaches peers through peers and keeps
// the home directory copies in store.
func NewClient(region string, peers *resourcepool.Peers, store *datacenter.Store, log *slog.Logger) *Client {
	c := &Client{region: region, peers: peers, store: store, log: log,
		regions: map[string]bool{region: true}, refused: make(refusals)}
	for _, p := range peers.Names() {
		c.regions[p] = true
		c.refused[p] = new(atomic.Uint64)
	}
	return c
}

func (c *Client) stub(peer string) (roamingv1.DataServiceClient, error) {
	conn, err := c.peers.Conn(peer)
	if err != nil {
		return nil, err
	}
	return roamingv1.NewDataServiceClient(conn), nil
}

// callCtx bounds one unary call to a peer.
func (c *Client) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.peers.Limits().CallTimeout)
}

// Locate finds where a user, username or group lives: in the local
// directory, else by asking every peer at once and caching the answer.
func (c *Client) Locate(ctx context.Context, kind roamingv1.DirectoryKind, key string) (*roamingv1.DirectoryRecord, error) {
	rec, err := c.store.Locate(kind, key)
	if !errors.Is(err, datacenter.ErrNotInDirectory) {
		return rec, err
	}
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	type answer struct {
		rec *roamingv1.DirectoryRecord
		err error
	}
	names := c.peers.Names()
	answers := make(chan answer, len(names))
	for _, peer := range names {
		go func() {
			stub, err := c.stub(peer)
			if err != nil {
				answers <- answer{err: err}
				return
			}
			req := &roamingv1.LocateRequest{Keys: []*roamingv1.DirectoryKey{{Kind: kind, Key: key}}}
			resp, err := stub.Locate(ctx, req)
			if status.Code(err) == codes.Unavailable {
				// Once more: the route to the peer may be changing.
				select {
				case <-time.After(100 * time.Millisecond):
					resp, err = stub.Locate(ctx, req)
				case <-ctx.Done():
				}
			}
			if err != nil {
				answers <- answer{err: fmt.Errorf("locate at %s: %w", peer, err)}
				return
			}
			for _, r := range resp.GetRecords() {
				// Only the home's word is taken: a peer's copy of a third
				// region's record may be stale.
				if r.GetKind() == kind && r.GetKey() == key && r.GetHomeRegion() == peer {
					if err := c.checkRecord(peer, r); err != nil {
						c.refused.add(peer, 1)
						c.log.Warn("directory record from a peer refused", slog.String("peer", peer), slog.Any("err", err))
						break
					}
					answers <- answer{rec: r}
					return
				}
			}
			answers <- answer{}
		}()
	}
	var errs []error
	for range names {
		a := <-answers
		if a.rec != nil {
			if err := c.store.CacheDirectory(a.rec); err != nil {
				c.log.Warn("directory cache write failed", slog.Any("err", err))
			}
			return a.rec, nil
		}
		if a.err != nil {
			errs = append(errs, a.err)
		}
	}
	if len(errs) > 0 {
		// Some peer could not answer: the record may exist there.
		c.log.Debug("locate incomplete", slog.String("key", key), slog.Any("err", errors.Join(errs...)))
		return nil, datacenter.ErrDirectoryIncomplete
	}
	return nil, datacenter.ErrNotInDirectory
}

// GetGroup asks a group's home for its data.
func (c *Client) GetGroup(ctx context.Context, home string, req *roamingv1.GetGroupRequest) (*recordv1.Group, error) {
	stub, err := c.stub(home)
	if err != nil {
		return nil, err
	}
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	resp, err := stub.GetGroup(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.GetGroup(), nil
}

// StoreGroup asks a group's home to apply a change.
func (c *Client) StoreGroup(ctx context.Context, home string, req *roamingv1.StoreGroupRequest) (*recordv1.Group, error) {
	stub, err := c.stub(home)
	if err != nil {
		return nil, err
	}
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	resp, err := stub.StoreGroup(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.GetGroup(), nil
}

// FetchHistory asks a group's home for messages.
func (c *Client) FetchHistory(ctx context.Context, home string, req *roamingv1.FetchHistoryRequest) (*roamingv1.FetchHistoryResponse, error) {
	stub, err := c.stub(home)
	if err != nil {
		return nil, err
	}
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	return stub.FetchHistory(ctx, req)
}

// VerifyLogin asks a user's home to check credentials.
func (c *Client) VerifyLogin(ctx context.Context, home string, req *roamingv1.VerifyLoginRequest) (*recordv1.User, error) {
	stub, err := c.stub(home)
	if err != nil {
		return nil, err
	}
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	resp, err := stub.VerifyLogin(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.GetUser(), nil
}

// UpdateLocation tells a user's home where the user is connected.
func (c *Client) UpdateLocation(ctx context.Context, home string, req *roamingv1.UpdateLocationRequest) error {
	stub, err := c.stub(home)
	if err != nil {
		return err
	}
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	_, err = stub.UpdateLocation(ctx, req)
	return err
}

// ClaimUsername asks every peer at once to let this region register a
// username. A peer that knows a user by that name makes it fail with
// datacenter.ErrUserExists; one that let another region claim the name,
// with businesscenter.ErrUsernameClaimed. A peer that does not answer is
// logged and passed over, as Locate passes over it: a region cut off from
// another still registers users, at the risk that the name turns out to
// be taken there.
//
// A peer that would answer must not be passed over: that is how two
// regions would both register a name. So, as in ResyncAll, a peer without
// a route is given up to routeSettle to get one (waitRoute, the mesh's
// WaitRoute; at start, until the first heartbeat), and its connection the
// call timeout to be ready. A peer the mesh knows to be unreachable costs
// a registration routeSettle.
func (c *Client) ClaimUsername(ctx context.Context, username string, waitRoute func(context.Context, string) error) error {
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	peers := c.peers.Names()
	errs := make([]error, len(peers))
	var wg sync.WaitGroup
	for i, peer := range peers {
		wg.Go(func() {
			stub, err := c.stub(peer)
			if err == nil && waitRoute != nil {
				wctx, cancel := context.WithTimeout(ctx, routeSettle)
				err = waitRoute(wctx, peer)
				cancel()
			}
			if err == nil {
				_, err = stub.ClaimUsername(ctx, &roamingv1.ClaimUsernameRequest{Username: username}, grpc.WaitForReady(true))
			}
			switch status.Code(err) {
			case codes.OK:
			case codes.AlreadyExists:
				errs[i] = fmt.Errorf("username %q: %w (in %s)", username, datacenter.ErrUserExists, peer)
			case codes.Aborted:
				errs[i] = fmt.Errorf("username %q: %w (%s)", username, businesscenter.ErrUsernameClaimed, peer)
			default:
				c.log.Warn("claim username: peer did not answer; registering without it", slog.String("peer", peer), slog.Any("err", err))
			}
		})
	}
	wg.Wait()
	// A name taken somewhere outranks a claim in progress elsewhere.
	var claimed error
	for _, err := range errs {
		if errors.Is(err, datacenter.ErrUserExists) {
			return err
		}
		if claimed == nil {
			claimed = err
		}
	}
	return claimed
}

// ListUserGroups asks every peer for the user's groups homed there. A peer
// that cannot answer is logged and left out: the list is then partial,
// which is better than none while a link is down.
func (c *Client) ListUserGroups(ctx context.Context, userID string) ([]*roamingv1.UserGroup, error) {
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	var (
		mu  sync.Mutex
		out []*roamingv1.UserGroup
		wg  sync.WaitGroup
	)
	for _, peer := range c.peers.Names() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stub, err := c.stub(peer)
			if err != nil {
				return
			}
			resp, err := stub.ListUserGroups(ctx, &roamingv1.ListUserGroupsRequest{UserId: userID})
			if err != nil {
				c.log.Warn("list user groups: peer did not answer", slog.String("peer", peer), slog.Any("err", err))
				return
			}
			mu.Lock()
			out = append(out, resp.GetGroups()...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out, nil
}

// Replicate runs one round of directory replication against every peer.
func (c *Client) Replicate(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, len(c.peers.Names()))
	for i, peer := range c.peers.Names() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.replicateFrom(ctx, peer)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (c *Client) replicateFrom(ctx context.Context, peer string) error {
	held, err := c.store.DirectoryVersions(peer)
	if err != nil {
		return err
	}
	stub, err := c.stub(peer)
	if err != nil {
		return err
	}
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	resp, err := stub.ReplicateDirectory(ctx, &roamingv1.ReplicateDirectoryRequest{Held: held})
	if err != nil {
		return fmt.Errorf("replicate from %s: %w", peer, err)
	}
	if resp.GetRegion() != peer {
		return fmt.Errorf("replicate from %s: peer answered as %q", peer, resp.GetRegion())
	}
	if len(resp.GetUpdates()) == 0 {
		return nil
	}
	updates := c.checkUpdates(peer, resp.GetUpdates())
	if err := c.store.ApplyDirectory(peer, updates); err != nil {
		return fmt.Errorf("replicate from %s: %w", peer, err)
	}
	n := 0
	for _, u := range updates {
		n += len(u.GetRecords())
	}
	c.log.Debug("directory replicated", slog.String("peer", peer), slog.Int("batches", len(resp.GetUpdates())), slog.Int("records", n))
	return nil
}

// Run replicates every interval until ctx ends. A peer that keeps failing
// is logged once it has failed for failGrace (regions start one by one, so
// early failures are normal), and again when it recovers.
func (c *Client) Run(ctx context.Context, every time.Duration) {
	const failGrace = 3 * time.Second
	t := time.NewTicker(every)
	defer t.Stop()
	var failingSince time.Time
	warned := false
	for {
		err := c.Replicate(ctx)
		switch {
		case ctx.Err() != nil:
		case err != nil && failingSince.IsZero():
			failingSince = time.Now()
		case err != nil && !warned && time.Since(failingSince) > failGrace:
			c.log.Warn("directory replication failing", slog.Any("err", err))
			warned = true
		case err == nil:
			if warned {
				c.log.Info("directory replication recovered")
			}
			failingSince, warned = time.Time{}, false
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ResyncAll runs a resync here and at every peer at once (DESIGN.md flow
// 9) and returns each region's result, this one first; a peer that cannot
// be reached is reported with its error.
//
// waitRoute, if not nil, waits until traffic has a route to a peer (the
// mesh's WaitRoute); a peer is then given up to routeSettle to get one,
// and, with one, its connection the call timeout to be ready. So a resync
// asked for just after a link is restored waits for the link instead of
// failing on it: the link is routable only after its next heartbeat, and
// until its connection redials (after a backoff of up to 3 s) gRPC fails a
// call at once with the error of the last dial, made while the link was
// cut.
func (c *Client) ResyncAll(ctx context.Context, waitRoute func(ctx context.Context, peer string) error) []*roamingv1.ResyncResult {
	names := c.peers.Names()
	out := make([]*roamingv1.ResyncResult, len(names)+1)
	var wg sync.WaitGroup
	for i, peer := range names {
		wg.Go(func() {
			res, err := c.resyncAt(ctx, peer, waitRoute)
			if err != nil {
				res = &roamingv1.ResyncResult{Region: peer, Error: err.Error()}
			}
			out[i+1] = res
		})
	}
	out[0] = ResyncLocal(c.region, c.store)
	wg.Wait()
	return out
}

// routeSettle bounds how long a resync waits for a peer without a route:
// long enough for a link restored a moment ago to pass a heartbeat (every
// 200 ms by default), short enough not to keep an operator waiting on a
// peer that is down.
const routeSettle = 2 * time.Second

// resyncAt has peer resync (see ResyncAll).
func (c *Client) resyncAt(ctx context.Context, peer string, waitRoute func(context.Context, string) error) (*roamingv1.ResyncResult, error) {
	stub, err := c.stub(peer)
	if err != nil {
		return nil, err
	}
	var opts []grpc.CallOption
	if waitRoute != nil {
		wctx, cancel := context.WithTimeout(ctx, routeSettle)
		err := waitRoute(wctx, peer)
		cancel()
		if err != nil {
			return nil, err
		}
		opts = append(opts, grpc.WaitForReady(true))
	}
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	resp, err := stub.Resync(ctx, &roamingv1.ResyncRequest{}, opts...)
	if err != nil {
		return nil, err
	}
	return resp.GetResult(), nil
}

// AuthorizeUser asks a user's home whether a region may act for the user.
func (c *Client) AuthorizeUser(ctx context.Context, home string, req *roamingv1.AuthorizeUserRequest) (*roamingv1.AuthorizeUserResponse, error) {
	stub, err := c.stub(home)
	if err != nil {
		return nil, err
	}
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	return stub.AuthorizeUser(ctx, req)
}
