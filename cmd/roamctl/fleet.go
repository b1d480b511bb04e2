package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	"github.com/roamfed/roamfed/internal/checker"
	"github.com/roamfed/roamfed/internal/clientkit"
	"github.com/roamfed/roamfed/regions"
)

// A fleet is a drill's throwaway users and groups: users in every region,
// groups homed in different regions with every user as a member, a Session
// follower per user feeding the checker, and the senders of the load.
type fleet struct {
	a   *app
	cfg runConfig
	rec *checker.Recorder

	conns    map[string]*grpc.ClientConn // client connections by region
	users    []*fleetUser
	byRegion map[string][]*fleetUser
	groups   []fleetGroup
	pairs    []sendPair // who sends to which group, in send order

	followers  sync.WaitGroup
	closeOnce  sync.Once
	stopFollow context.CancelFunc

	seq         atomic.Int64 // messages started
	busy        atomic.Int64 // ticks dropped because every sender was busy
	sessionErrs atomic.Int64
	skips       atomic.Int64
	firstErr    atomic.Pointer[string]
}

type fleetUser struct {
	name, region string
	id, token    string
	api          clientv1.ClientServiceClient
	follower     *clientkit.Follower
}

type fleetGroup struct{ id, home string }

type sendPair struct {
	u *fleetUser
	g fleetGroup
}

// Fleet setup is bounded by these.
const (
	setupParallel = 4                // registrations and logins at once (password hashing is heavy)
	joinParallel  = 8                // joins at once
	joinPatience  = 20 * time.Second // how long a group may stay unknown to a member's region
	readyPatience = 20 * time.Second // how long all sessions may take to open
)

func newFleet(a *app, cfg runConfig, rec *checker.Recorder) *fleet {
	return &fleet{a: a, cfg: cfg, rec: rec, conns: make(map[string]*grpc.ClientConn), byRegion: make(map[string][]*fleetUser)}
}

// setup registers and logs in the users, creates the groups and has every
// user join every group.
func (fl *fleet) setup(ctx context.Context, fed *regions.Federation) error {
	for _, r := range fed.Regions {
		cc, err := clientkit.Dial(r.ClientAddr, clientkit.DialOptions{TLS: fl.a.tls, CAFile: fl.a.caFile, UserAgent: "roamctl-drill"})
		if err != nil {
			return fmt.Errorf("region %s: %w", r.Name, err)
		}
		fl.conns[r.Name] = cc
		api := clientv1.NewClientServiceClient(cc)
		for i := range fl.cfg.usersPerRegion {
			u := &fleetUser{name: fmt.Sprintf("drill-%s-%s-%d", fl.cfg.runID, r.Name, i+1), region: r.Name, api: api}
			fl.users = append(fl.users, u)
			fl.byRegion[r.Name] = append(fl.byRegion[r.Name], u)
		}
	}
	password := randomHex(16)
	if err := parallel(ctx, setupParallel, fl.users, func(ctx context.Context, u *fleetUser) error {
		return fl.signIn(ctx, u, password)
	}); err != nil {
		return err
	}
	for _, u := range fl.users {
		fl.rec.AddUser(u.id, u.region)
	}

	names := fed.Names()
	for i := range fl.cfg.groups {
		home := names[i%len(names)]
		owner := fl.byRegion[home][0]
		cctx, cancel := fl.a.callCtx(ctx)
		resp, err := owner.api.CreateGroup(clientkit.WithToken(cctx, owner.token), &clientv1.CreateGroupRequest{
			Name:   fmt.Sprintf("drill-%s-%d", fl.cfg.runID, i+1),
			Notice: "roamctl drill run " + fl.cfg.runID,
		})
		cancel()
		if err != nil {
			return fmt.Errorf("create group at %s as %s: %w", home, owner.name, err)
		}
		g := resp.GetGroup()
		if g.GetHomeRegion() != home {
			return fmt.Errorf("group created at %s is homed at %q", home, g.GetHomeRegion())
		}
		fl.groups = append(fl.groups, fleetGroup{id: g.GetId(), home: home})
	}
	type join struct {
		u *fleetUser
		g fleetGroup
	}
	var joins []join
	for _, g := range fl.groups {
		for _, u := range fl.users {
			if u != fl.byRegion[g.home][0] {
				joins = append(joins, join{u, g})
			}
		}
	}
	if err := parallel(ctx, joinParallel, joins, func(ctx context.Context, j join) error {
		return fl.join(ctx, j.u, j.g)
	}); err != nil {
		return err
	}
	ids := make([]string, len(fl.users))
	for i, u := range fl.users {
		ids[i] = u.id
	}
	for _, g := range fl.groups {
		fl.rec.AddGroup(g.id, g.home, ids)
		for _, u := range fl.users {
			fl.pairs = append(fl.pairs, sendPair{u, g})
		}
	}
	// Every user sends to every group in turn, in an order mixing regions.
	rng := mrand.New(mrand.NewPCG(uint64(len(fl.cfg.runID)), hashString(fl.cfg.runID)))
	rng.Shuffle(len(fl.pairs), func(i, j int) { fl.pairs[i], fl.pairs[j] = fl.pairs[j], fl.pairs[i] })
	return nil
}

func (fl *fleet) signIn(ctx context.Context, u *fleetUser, password string) error {
	cctx, cancel := fl.a.callCtx(ctx)
	defer cancel()
	if _, err := u.api.Register(cctx, &clientv1.RegisterRequest{Username: u.name, Password: password, DisplayName: "drill " + fl.cfg.runID}); err != nil {
		return fmt.Errorf("register %s at %s: %w", u.name, u.region, err)
	}
	resp, err := u.api.Login(cctx, &clientv1.LoginRequest{Username: u.name, Password: password})
	if err != nil {
		return fmt.Errorf("login %s at %s: %w", u.name, u.region, err)
	}
	u.id, u.token = resp.GetUserId(), resp.GetToken()
	return nil
}

// join has u join g, waiting while g's home is not yet known in u's region.
func (fl *fleet) join(ctx context.Context, u *fleetUser, g fleetGroup) error {
	deadline := time.Now().Add(joinPatience)
	wait := 50 * time.Millisecond
	for {
		cctx, cancel := fl.a.callCtx(ctx)
		_, err := u.api.JoinGroup(clientkit.WithToken(cctx, u.token), &clientv1.JoinGroupRequest{GroupId: g.id})
		cancel()
		switch status.Code(err) {
		case codes.OK:
			return nil
		case codes.NotFound, codes.Unavailable:
			if time.Now().Add(wait).Before(deadline) && ctx.Err() == nil {
				if !sleepCtx(ctx, wait) {
					return ctx.Err()
				}
				wait = min(2*wait, time.Second)
				continue
			}
		}
		return fmt.Errorf("%s at %s joins group %s homed at %s: %w", u.name, u.region, g.id, g.home, err)
	}
}

// follow opens a Session follower for every user and waits until all are
// ready.
func (fl *fleet) follow(ctx context.Context) error {
	fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	fl.stopFollow = cancel
	start := make(map[string]uint64, len(fl.groups))
	for _, g := range fl.groups {
		start[g.id] = 0
	}
	for _, u := range fl.users {
		u.follower = clientkit.NewFollower(clientkit.FollowerConfig{
			API: u.api, Token: u.token, Start: start,
			CallTimeout: fl.a.timeout,
			OnArrival:   func(a clientkit.Arrival) { fl.rec.Arrived(u.id, a) },
			OnMessage: func(m *clientv1.Message, src clientkit.Source, at time.Time) {
				fl.rec.Delivered(u.id, m, src, at)
			},
			OnReceipt: func(rc *clientv1.Receipt, _ time.Time) { fl.rec.Receipt(u.id, rc) },
			OnSkip: func(group string, from, to uint64) {
				fl.skips.Add(int64(to - from + 1))
				fl.rec.Skipped(u.id, group, from, to)
			},
			OnError: func(err error) { fl.noteErr(fmt.Errorf("%s at %s: %w", u.name, u.region, err)) },
		})
		fl.followers.Go(func() {
			if err := u.follower.Run(fctx); err != nil {
				fl.noteErr(fmt.Errorf("%s at %s: session: %w", u.name, u.region, err))
			}
		})
	}
	timer := time.NewTimer(readyPatience)
	defer timer.Stop()
	for _, u := range fl.users {
		select {
		case <-u.follower.Ready():
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			return fmt.Errorf("%s at %s: no session within %s", u.name, u.region, readyPatience)
		}
	}
	return nil
}

func (fl *fleet) noteErr(err error) {
	fl.sessionErrs.Add(1)
	s := err.Error()
	fl.firstErr.CompareAndSwap(nil, &s)
}

// load sends at rate messages a second, round the (user, group) pairs,
// until ctx ends; at most inflight sends are under way at once, and a tick
// that finds every sender busy is dropped and counted. Sends under way when
// ctx ends are finished (bounded by --timeout and their retries) under
// callCtx, which outlives ctx.
func (fl *fleet) load(ctx, callCtx context.Context) {
	interval := time.Duration(float64(time.Second) / fl.cfg.rate)
	per := 1
	if interval < 5*time.Millisecond {
		per = int(math.Ceil(float64(5*time.Millisecond) / float64(interval)))
		interval = time.Duration(float64(time.Second) * float64(per) / fl.cfg.rate)
	}
	jobs := make(chan sendPair)
	var wg sync.WaitGroup
	for range fl.cfg.inflight {
		wg.Go(func() {
			for p := range jobs {
				fl.send(ctx, callCtx, p)
			}
		})
	}
	defer func() {
		close(jobs)
		wg.Wait()
	}()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var n int
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for range per {
			p := fl.pairs[n%len(fl.pairs)]
			select {
			case jobs <- p:
				n++
			default:
				fl.busy.Add(1)
			}
		}
	}
}

// maxSendAttempts bounds the retries of one message.
const maxSendAttempts = 4

// send sends one message with retries under the same client_msg_id. New
// attempts stop when loadCtx ends; calls run under callCtx.
func (fl *fleet) send(loadCtx, callCtx context.Context, p sendPair) {
	n := fl.seq.Add(1)
	cmid := fmt.Sprintf("%s-%d", fl.cfg.runID, n)
	req := &clientv1.SendMessageRequest{GroupId: p.g.id, ClientMsgId: cmid,
		Body: fmt.Sprintf("drill %s message %d from %s", fl.cfg.runID, n, p.u.name)}
	wait := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		fl.rec.Sent(p.g.id, p.u.id, cmid, time.Now())
		cctx, cancel := context.WithTimeout(clientkit.WithToken(callCtx, p.u.token), fl.a.timeout)
		resp, err := p.u.api.SendMessage(cctx, req)
		cancel()
		if err == nil {
			fl.rec.Acked(p.g.id, cmid, resp)
			return
		}
		fl.rec.SendFailed(p.g.id, cmid, err)
		if attempt >= maxSendAttempts || !retryableSend(err) || loadCtx.Err() != nil {
			return
		}
		if !sleepCtx(loadCtx, clientkit.RetryWait(err, wait)) {
			return
		}
		wait = min(2*wait, 2*time.Second)
	}
}

func retryableSend(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted:
		return true
	}
	return errors.Is(err, context.DeadlineExceeded)
}

// clients returns every user's way to its region, for the checker's
// Verify.
func (fl *fleet) clients() []checker.Client {
	out := make([]checker.Client, len(fl.users))
	for i, u := range fl.users {
		out[i] = checker.Client{User: u.id, Region: u.region, API: u.api, Token: u.token}
	}
	return out
}

// stopFollowing ends the Session followers and waits for them.
func (fl *fleet) stopFollowing() {
	if fl.stopFollow != nil {
		fl.stopFollow()
	}
	fl.followers.Wait()
}

// close stops the followers, logs the users out (best effort) and closes
// the connections. It may be called more than once.
func (fl *fleet) close() {
	fl.closeOnce.Do(fl.closeNow)
}

func (fl *fleet) closeNow() {
	fl.stopFollowing()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, u := range fl.users {
		if u.token != "" {
			wg.Go(func() { _, _ = u.api.Logout(clientkit.WithToken(ctx, u.token), &clientv1.LogoutRequest{}) })
		}
	}
	wg.Wait()
	for _, cc := range fl.conns {
		cc.Close()
	}
}

// parallel runs fn for every item, at most n at once, and returns the
// first error; after one, the items not started are not started.
func parallel[T any](ctx context.Context, n int, items []T, fn func(context.Context, T) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for _, it := range items {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := fn(ctx, it); err != nil {
				once.Do(func() { first = err; cancel() })
			}
		})
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

// sleepCtx waits d or until ctx ends; false when ctx ended it.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * 1099511628211
	}
	return h
}
