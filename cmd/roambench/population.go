package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	"github.com/roamfed/roamfed/internal/clientkit"
)

// user is one benchmark account, homed in and connected to one region.
type user struct {
	idx    int
	name   string
	id     string
	region int // index into population.regions
	token  string
	client clientv1.ClientServiceClient
}

// authed returns ctx carrying the user's token.
func (u *user) authed(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+u.token)
}

// group is one benchmark group; its home is its first member's region.
type group struct {
	idx     int
	id      string
	home    int
	members []*user
}

// population is the users and groups of a run, and the client conns they
// share. Built once by populate, read-only afterwards.
type population struct {
	regions   []string
	conns     []*grpc.ClientConn
	users     []*user
	groups    []*group
	userByID  map[string]*user
	groupByID map[string]*group
}

// setupParallel bounds the setup calls in flight.
const setupParallel = 16

// setupTimeout bounds one setup call, retries included.
const setupTimeout = 30 * time.Second

// populate registers groups×size users, member j of group g homed in region
// (g+j) mod regions, logs each in at its home, creates each group at its
// first member's region (so group homes rotate over the regions too) and
// has the other members join. Names carry a random run id, so runs against
// the same federation do not collide.
func populate(ctx context.Context, cfg config, targets []regionAddr) (_ *population, err error) {
	p := &population{userByID: make(map[string]*user), groupByID: make(map[string]*group)}
	defer func() {
		if err != nil {
			p.close()
		}
	}()
	perRegion := make([][]clientv1.ClientServiceClient, len(targets))
	for i, t := range targets {
		p.regions = append(p.regions, t.Name)
		for range cfg.ConnsPerRegion {
			conn, err := grpc.NewClient(t.Addr, append(clientkit.Windows(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
			if err != nil {
				return nil, fmt.Errorf("client for %s at %s: %w", t.Name, t.Addr, err)
			}
			p.conns = append(p.conns, conn)
			perRegion[i] = append(perRegion[i], clientv1.NewClientServiceClient(conn))
		}
	}
	run := make([]byte, 3)
	_, _ = rand.Read(run)
	runID := "rb" + hex.EncodeToString(run)
	pw := "roambench-" + runID
	for g := range cfg.Groups {
		grp := &group{idx: g, home: g % len(targets)}
		for j := range cfg.GroupSize {
			r := (g + j) % len(targets)
			u := &user{
				idx:    len(p.users),
				name:   fmt.Sprintf("%s-g%d-m%d", runID, g, j),
				region: r,
			}
			u.client = perRegion[r][u.idx%cfg.ConnsPerRegion]
			p.users = append(p.users, u)
			grp.members = append(grp.members, u)
		}
		p.groups = append(p.groups, grp)
	}

	err = forEach(ctx, len(p.users), func(ctx context.Context, i int) error {
		u := p.users[i]
		return retry(ctx, func(ctx context.Context, attempt int) error {
			resp, err := u.client.Register(ctx, &clientv1.RegisterRequest{Username: u.name, Password: pw})
			if status.Code(err) == codes.AlreadyExists && attempt > 1 {
				return nil // an earlier attempt got through
			}
			if err != nil {
				return fmt.Errorf("register %s at %s: %w", u.name, p.regions[u.region], err)
			}
			if resp.GetHomeRegion() != p.regions[u.region] {
				return fmt.Errorf("register %s at %s: home is %s; is --connect's name for that address right?", u.name, p.regions[u.region], resp.GetHomeRegion())
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	err = forEach(ctx, len(p.users), func(ctx context.Context, i int) error {
		u := p.users[i]
		return retry(ctx, func(ctx context.Context, attempt int) error {
			resp, err := u.client.Login(ctx, &clientv1.LoginRequest{Username: u.name, Password: pw})
			if err != nil {
				return fmt.Errorf("login %s at %s: %w", u.name, p.regions[u.region], err)
			}
			u.id, u.token = resp.GetUserId(), resp.GetToken()
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	for _, u := range p.users {
		p.userByID[u.id] = u
	}
	err = forEach(ctx, len(p.groups), func(ctx context.Context, i int) error {
		g := p.groups[i]
		owner := g.members[0]
		return retry(ctx, func(ctx context.Context, attempt int) error {
			resp, err := owner.client.CreateGroup(owner.authed(ctx), &clientv1.CreateGroupRequest{Name: fmt.Sprintf("bench-%d", g.idx)})
			if err != nil {
				return fmt.Errorf("create group %d at %s: %w", g.idx, p.regions[owner.region], err)
			}
			g.id = resp.GetGroup().GetId()
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	for _, g := range p.groups {
		p.groupByID[g.id] = g
	}
	type join struct {
		g *group
		u *user
	}
	var joins []join
	for _, g := range p.groups {
		for _, u := range g.members[1:] {
			joins = append(joins, join{g, u})
		}
	}
	err = forEach(ctx, len(joins), func(ctx context.Context, i int) error {
		j := joins[i]
		return retry(ctx, func(ctx context.Context, attempt int) error {
			_, err := j.u.client.JoinGroup(j.u.authed(ctx), &clientv1.JoinGroupRequest{GroupId: j.g.id})
			if status.Code(err) == codes.AlreadyExists && attempt > 1 {
				return nil
			}
			if err != nil {
				return fmt.Errorf("%s joins group %d (home %s) at %s: %w", j.u.name, j.g.idx, p.regions[j.g.home], p.regions[j.u.region], err)
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// close closes the client conns.
func (p *population) close() {
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

// forEach calls fn for 0..n-1, setupParallel at a time, and returns the
// first error; after one it starts no more calls.
func forEach(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
		sem   = make(chan struct{}, setupParallel)
	)
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := fn(ctx, i); err != nil {
				once.Do(func() { first = err; cancel() })
			}
		})
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// retry calls fn until it succeeds, fails for good, or setupTimeout
// passes; fn learns which attempt it is, to accept what an earlier attempt
// that timed out may have done. Errors that a moment can fix are retried: a peer not reached yet,
// a group not yet in the home directory.
func retry(ctx context.Context, fn func(ctx context.Context, attempt int) error) error {
	ctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	backoff := 20 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := fn(ctx, attempt)
		if err == nil {
			return nil
		}
		switch status.Code(err) {
		case codes.Unavailable, codes.NotFound, codes.ResourceExhausted, codes.Aborted:
		default:
			return err
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}
