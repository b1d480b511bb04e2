package e2e

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	adminv1 "github.com/roamfed/roamfed/api/admin/v1"
	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/internal/checker"
	"github.com/roamfed/roamfed/internal/clientkit"
	"github.com/roamfed/roamfed/internal/testnet"
)

// The drills (drills_test.go) share what is here: a three-region federation
// of real regiond processes with their admin APIs on loopback, a fleet of
// users homed in every region who are members of groups homed in every
// region, each following their groups on a Session stream at their own
// region, the load they send, and the checker's verdict once the federation
// has healed and settled.

// Time limits of the drills. A healthy drill takes a small part of each,
// with -race on a loaded 2-core machine too.
const (
	// drillAdminToken is the bearer token of every drill region's admin API.
	drillAdminToken = "drill-admin-token-0123456789abcdef"
	// drillCallTimeout bounds one client or admin call.
	drillCallTimeout = 8 * time.Second
	// drillLinksUp bounds the wait for every link to be up and direct.
	drillLinksUp = 20 * time.Second
	// drillSetup bounds registering, logging in and joining.
	drillSetup = 60 * time.Second
	// drillSendPatience is how long one message is sent again (same
	// client_msg_id) before the sender gives up on it.
	drillSendPatience = 45 * time.Second
	// drillSettle bounds the wait, after the load, for every member to
	// hold every acknowledged message and every queue to be empty.
	drillSettle = 60 * time.Second
	// drillVerify bounds the final history reads.
	drillVerify = 60 * time.Second
)

// The load: drillUsersPerRegion users in each of three regions, each
// sending drillRatePerUser messages a second, round its groups; with three
// groups of six members that is 36 messages and some 216 deliveries a
// second. A user has at most drillInflight sends under way; a tick that
// finds them all busy is skipped.
const (
	drillUsersPerRegion = 2
	drillRatePerUser    = 6
	drillInflight       = 3
)

// drillRegions are the regions of every drill, in federation file order.
var drillRegions = []string{"ap", "eu", "us"}

// drillAddrs are one region's addresses.
type drillAddrs struct{ roaming, client, admin, metrics string }

// allocDrillAddrs picks addresses for every drill region with freeAddrs.
func allocDrillAddrs(t *testing.T) map[string]drillAddrs {
	t.Helper()
	free := testnet.FreeAddrs(t, 4*len(drillRegions))
	out := make(map[string]drillAddrs)
	for i, n := range drillRegions {
		out[n] = drillAddrs{roaming: free[4*i], client: free[4*i+1], admin: free[4*i+2], metrics: free[4*i+3]}
	}
	return out
}

// drillFed is a federation of real regiond processes started for a drill.
type drillFed struct {
	addrs   map[string]drillAddrs
	regions map[string]*Region
	admins  map[string]adminv1.AdminServiceClient
	files   map[string]string // each region's federation file
}

// startDrillFederation writes a federation file for each region and the
// federation's certificates (writeCerts), and starts one regiond per
// region with them, its admin API on the file's admin_addr
// with drillAdminToken. reach, when it names a region and a peer, is the
// address that region dials for that peer instead of the peer's own (a
// tcpProxy's): each region gets its own file, in which only the addresses
// it dials differ. It returns once every region serves its clients and
// every link is up and direct.
func startDrillFederation(t *testing.T, addrs map[string]drillAddrs, reach map[string]map[string]string) *drillFed {
	t.Helper()
	needBinaries(t)
	f := &drillFed{
		addrs:   addrs,
		regions: make(map[string]*Region),
		admins:  make(map[string]adminv1.AdminServiceClient),
		files:   make(map[string]string),
	}
	dir := t.TempDir()
	var rs []*Region
	for _, self := range drillRegions {
		var b strings.Builder
		fmt.Fprintf(&b, "# Written by %s for region %s.\nfederation: e2e-drill\nregions:\n", t.Name(), self)
		for _, n := range drillRegions {
			a := addrs[n]
			roaming := a.roaming
			if alt, ok := reach[self][n]; ok && n != self {
				roaming = alt
			}
			fmt.Fprintf(&b, "  - name: %s\n    roaming_addr: %s\n    client_addr: %s\n    admin_addr: %s\n    metrics_addr: %s\n",
				n, roaming, a.client, a.admin, a.metrics)
		}
		file := filepath.Join(dir, "federation-"+self+".yaml")
		if err := os.WriteFile(file, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		f.files[self] = file
	}
	// A region's certificate names the region (and loopback), not the
	// addresses its peers dial: one set serves every file.
	certDir := writeCerts(t, f.files[drillRegions[0]])
	for _, self := range drillRegions {
		r := newRegion(t, self, "--federation", f.files[self], "--certs", certDir, "--admin-token", drillAdminToken)
		f.regions[self] = r
		rs = append(rs, r)
	}
	errs := make([]error, len(rs))
	var wg sync.WaitGroup
	for i, r := range rs {
		wg.Go(func() { errs[i] = r.start(r.firstAddr()) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("start region %s: %v", rs[i].Name, err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	for _, n := range drillRegions {
		f.admins[n] = drillAdminClient(t, addrs[n].admin)
	}
	f.waitAllDirect(t, time.Now(), drillLinksUp)
	return f
}

// adminClient returns a client of the admin API at addr; the connection
// is closed when the test ends, and comes back within a second of a
// region's restart.
func drillAdminClient(t *testing.T, addr string) adminv1.AdminServiceClient {
	t.Helper()
	cc, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: 5 * time.Second,
		}))
	if err != nil {
		t.Fatalf("dial admin %s: %v", addr, err)
	}
	t.Cleanup(func() { cc.Close() })
	return adminv1.NewAdminServiceClient(cc)
}

func drillAdminCtx(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+drillAdminToken)
}

// status reads region's admin Status.
func (f *drillFed) status(ctx context.Context, region string) (*adminv1.StatusResponse, error) {
	cctx, cancel := context.WithTimeout(drillAdminCtx(ctx), drillCallTimeout)
	defer cancel()
	return f.admins[region].Status(cctx, &adminv1.StatusRequest{})
}

// link returns region's view of its link to peer; nil if Status failed or
// has no such link.
func (f *drillFed) link(ctx context.Context, region, peer string) (*adminv1.Link, error) {
	st, err := f.status(ctx, region)
	if err != nil {
		return nil, err
	}
	for _, l := range st.GetLinks() {
		if l.GetPeer() == peer {
			return l, nil
		}
	}
	return nil, fmt.Errorf("%s's Status has no link to %s", region, peer)
}

func drillLinkText(l *adminv1.Link) string {
	if l == nil {
		return "none"
	}
	via := l.GetVia()
	switch {
	case l.GetNoRoute():
		via = "no route"
	case via == "":
		via = "direct"
	default:
		via = "via " + via
	}
	return fmt.Sprintf("%s, %s, rtt %dµs, downs %d, outbox %d, queued %d, last error %q",
		strings.TrimPrefix(l.GetState().String(), "LINK_STATE_"), via, l.GetRttMicros(), l.GetDowns(),
		l.GetOutboxItems(), l.GetQueuedDeliveries(), l.GetLastError())
}

// Link conditions for waitLink.
func drillLinkIs(s roamingv1.LinkState) func(*adminv1.Link) bool {
	return func(l *adminv1.Link) bool { return l.GetState() == s }
}

func drillLinkVia(via string) func(*adminv1.Link) bool {
	return func(l *adminv1.Link) bool { return l.GetVia() == via && !l.GetNoRoute() }
}

func drillLinkDirect(l *adminv1.Link) bool {
	return l.GetState() == roamingv1.LinkState_LINK_STATE_UP && l.GetVia() == "" && !l.GetNoRoute()
}

func drillLinkNoRoute(l *adminv1.Link) bool { return l.GetNoRoute() }

func drillLinkAll(conds ...func(*adminv1.Link) bool) func(*adminv1.Link) bool {
	return func(l *adminv1.Link) bool {
		for _, c := range conds {
			if !c(l) {
				return false
			}
		}
		return true
	}
}

// waitLink polls region's Status until its link to peer meets cond, and
// returns the time from since until the answer that met it was asked for.
// It fails the test after timeout from the call.
func (f *drillFed) waitLink(t *testing.T, since time.Time, region, peer, what string, cond func(*adminv1.Link) bool, timeout time.Duration) time.Duration {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last *adminv1.Link
	var lastErr error
	for {
		asked := time.Now()
		l, err := f.link(t.Context(), region, peer)
		if err == nil && cond(l) {
			return asked.Sub(since)
		}
		last, lastErr = l, err
		if time.Now().After(deadline) {
			t.Fatalf("%s's link to %s: not %s within %s; last seen: %s (error %v)", region, peer, what, timeout, drillLinkText(last), lastErr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitAllDirect waits until every region sees every link up and direct,
// and returns the time from since.
func (f *drillFed) waitAllDirect(t *testing.T, since time.Time, timeout time.Duration) time.Duration {
	t.Helper()
	var worst time.Duration
	for _, a := range drillRegions {
		for _, b := range drillRegions {
			if a != b {
				worst = max(worst, f.waitLink(t, since, a, b, "up and direct", drillLinkDirect, timeout))
			}
		}
	}
	return worst
}

// logLinks logs every region's link table.
func (f *drillFed) logLinks(t *testing.T, when string) {
	t.Helper()
	var b strings.Builder
	for _, r := range drillRegions {
		st, err := f.status(t.Context(), r)
		if err != nil {
			fmt.Fprintf(&b, "\n  %s: Status: %v", r, err)
			continue
		}
		for _, l := range st.GetLinks() {
			fmt.Fprintf(&b, "\n  %s→%s: %s", r, l.GetPeer(), drillLinkText(l))
		}
	}
	t.Logf("links %s:%s", when, b.String())
}

// linkChange is the part of regiond's "link state changed" line that a
// drill's log shows.
var linkChange = regexp.MustCompile(`time=\S*T(\S+?)(?:Z|[+-]\d\d:\d\d) .*msg="link state changed".* peer=(\S+) from=(\S+) to=(\S+)`)

// logLinkChanges logs every link state change each region logged, in all
// its runs: the drill's own, and any a loaded machine caused.
func (f *drillFed) logLinkChanges(t *testing.T) {
	t.Helper()
	var b strings.Builder
	for _, n := range drillRegions {
		r := f.regions[n]
		r.mu.Lock()
		runs := slices.Clone(r.runs)
		r.mu.Unlock()
		for i, p := range runs {
			for _, m := range linkChange.FindAllStringSubmatch(p.out.String(), -1) {
				fmt.Fprintf(&b, "\n  %s %s (run %d) → %s: %s to %s", m[1], n, i+1, m[2], m[3], m[4])
			}
		}
	}
	t.Logf("link state changes the regions logged:%s", b.String())
}

// drill asks region's admin API to cut or restore the link a-b. A call
// answered UNAVAILABLE is made again, as an operator would, within 15s:
// the region may have applied its own side and failed to reach the
// peer's, and both calls are idempotent. Each such answer is logged.
func (f *drillFed) drill(t *testing.T, region, action, a, b string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(drillAdminCtx(t.Context()), 15*time.Second)
	defer cancel()
	reason := t.Name()
	for {
		var d *adminv1.Drill
		var err error
		cctx, ccancel := context.WithTimeout(ctx, drillCallTimeout)
		switch action {
		case "cut":
			var resp *adminv1.CutLinkResponse
			resp, err = f.admins[region].CutLink(cctx, &adminv1.CutLinkRequest{A: a, B: b, Reason: reason})
			d = resp.GetDrill()
		case "restore":
			var resp *adminv1.RestoreLinkResponse
			resp, err = f.admins[region].RestoreLink(cctx, &adminv1.RestoreLinkRequest{A: a, B: b, Reason: reason})
			d = resp.GetDrill()
		default:
			t.Fatalf("drill action %q", action)
		}
		ccancel()
		if status.Code(err) == codes.Unavailable && ctx.Err() == nil {
			t.Logf("%s %s-%s at %s answered %v; asking again", action, a, b, region, err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatalf("%s %s-%s at %s: %v", action, a, b, region, err)
		}
		if d.GetAction() != action || d.GetRequestedAt() != region {
			t.Errorf("%s %s-%s at %s answered %v", action, a, b, region, d)
		}
		return
	}
}

// queued sums the cross-region work waiting in every region: outbox
// entries and deliveries in memory. ok is false when a Status failed.
func (f *drillFed) queued(ctx context.Context) (n uint64, ok bool) {
	for _, r := range drillRegions {
		st, err := f.status(ctx, r)
		if err != nil {
			return 0, false
		}
		for _, l := range st.GetLinks() {
			n += l.GetOutboxItems() + l.GetQueuedDeliveries()
		}
	}
	return n, true
}

// checkFaultViaAP checks the eu–us link at the end of a fault (a "cut",
// a "stall") that began at start: both ends still see it in state (named
// stateWord) and route via ap, ap carried relays (more than relays before
// the fault), and a message between eu and us sent after start was
// delivered. It returns when that message was delivered.
func (f *drillFed) checkFaultViaAP(t *testing.T, fl *drillFleet, start time.Time, fault, stateWord string, state roamingv1.LinkState, relays float64) time.Time {
	t.Helper()
	for _, end := range [][2]string{{"eu", "us"}, {"us", "eu"}} {
		f.waitLink(t, time.Now(), end[0], end[1], fmt.Sprintf("%s and via ap at the end of the %s", stateWord, fault),
			drillLinkAll(drillLinkIs(state), drillLinkVia("ap")), 3*time.Second)
	}
	if got := f.relaysCarried(t, "ap"); got <= relays {
		t.Errorf("ap carried no relay during the %s (%v relays before, %v after)", fault, relays, got)
	}
	across, ok := fl.rec.FirstDelivery(start, drillBetween("eu", "us"))
	if !ok {
		t.Errorf("no message between eu and us sent after the %s was delivered during it", fault)
	}
	f.logLinks(t, "at the end of the "+fault)
	return across
}

// relaysCarried reads from region's /metrics how many relayed connections
// it has carried for others.
func (f *drillFed) relaysCarried(t *testing.T, region string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), drillCallTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+f.addrs[region].metrics+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("metrics of %s: %v", region, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "roamfed_relayed_connections_total{") || !strings.Contains(line, `role="relay"`) {
			continue
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			t.Fatalf("metrics of %s: %q: %v", region, line, err)
		}
		return v
	}
	t.Fatalf("metrics of %s: no roamfed_relayed_connections_total{role=\"relay\"} (%v)", region, sc.Err())
	return 0
}

// drillUser is a user of the fleet, logged in at its home region.
type drillUser struct {
	name, region string
	id, token    string
	api          clientv1.ClientServiceClient
	follower     *clientkit.Follower
}

func (u *drillUser) String() string { return u.name + "@" + u.region }

type drillGroup struct{ id, name, home string }

type drillKey struct{ group, cmid string }

// drillSend is what became of one message the load sent.
type drillSend struct {
	user     *drillUser
	group    drillGroup
	cmid     string
	first    time.Time // first attempt
	answered time.Time // zero until answered
	resp     *clientv1.SendMessageResponse
	attempts int
	err      error // why the sender gave up
}

// drillFleet is a drill's users and groups, with the checker that records
// what they saw.
type drillFleet struct {
	fed    *drillFed
	rec    *checker.Recorder
	users  []*drillUser
	groups []drillGroup
	rng    *rand.Rand

	// ctx outlives the load: sends under way when it stops finish
	// under it. Followers run under a context of their own, which
	// followCancel ends.
	ctx          context.Context
	cancel       context.CancelFunc
	followCancel context.CancelFunc
	followers    sync.WaitGroup
	sendSeq      atomic.Int64

	mu          sync.Mutex
	sends       map[drillKey]*drillSend
	receipts    map[drillKey]*clientv1.Receipt // the last receipt per message
	sessionErrs []string
	sessionN    int
	homeLogs    map[string][]*clientv1.Message // by group id, read by check
}

// newDrillFleet registers drillUsersPerRegion users at each region, has
// the first user of each region create a group there, has every user join
// every group, and starts a Session follower per user feeding the
// checker; it returns once every follower's stream is ready.
func newDrillFleet(t *testing.T, fed *drillFed) *drillFleet {
	t.Helper()
	seed := time.Now().UnixNano()
	t.Logf("fleet seed %d", seed)
	fl := &drillFleet{
		fed:      fed,
		rec:      checker.New(),
		rng:      rand.New(rand.NewPCG(uint64(seed), 0)),
		sends:    make(map[drillKey]*drillSend),
		receipts: make(map[drillKey]*clientv1.Receipt),
		homeLogs: make(map[string][]*clientv1.Message),
	}
	fl.ctx, fl.cancel = context.WithCancel(context.Background())
	t.Cleanup(fl.cancel)
	ctx, cancel := context.WithTimeout(t.Context(), drillSetup)
	defer cancel()

	for _, r := range drillRegions {
		api := dialRegion(t, fed.regions[r])
		for i := range drillUsersPerRegion {
			fl.users = append(fl.users, &drillUser{name: fmt.Sprintf("%s-user%d", r, i+1), region: r, api: api})
		}
	}
	if err := drillParallel(fl.users, func(u *drillUser) error { return drillSignIn(ctx, u) }); err != nil {
		t.Fatal(err)
	}
	for _, u := range fl.users {
		fl.rec.AddUser(u.id, u.region)
	}
	for _, r := range drillRegions {
		owner := fl.byRegion(r)[0]
		var resp *clientv1.CreateGroupResponse
		err := retry(ctx, func(ctx context.Context) (err error) {
			resp, err = owner.api.CreateGroup(clientkit.WithToken(ctx, owner.token), &clientv1.CreateGroupRequest{Name: "room-" + r})
			return err
		})
		if err != nil {
			t.Fatalf("create a group at %s as %s: %v", r, owner, err)
		}
		if g := resp.GetGroup(); g.GetHomeRegion() != r {
			t.Fatalf("group created at %s is homed in %q", r, g.GetHomeRegion())
		}
		fl.groups = append(fl.groups, drillGroup{id: resp.GetGroup().GetId(), name: "room-" + r, home: r})
	}
	type join struct {
		u *drillUser
		g drillGroup
	}
	var joins []join
	for _, g := range fl.groups {
		for _, u := range fl.users {
			if u != fl.byRegion(g.home)[0] {
				joins = append(joins, join{u, g})
			}
		}
	}
	if err := drillParallel(joins, func(j join) error { return drillJoin(ctx, j.u, j.g) }); err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(fl.users))
	for i, u := range fl.users {
		ids[i] = u.id
	}
	start := make(map[string]uint64)
	for _, g := range fl.groups {
		fl.rec.AddGroup(g.id, g.home, ids)
		start[g.id] = 0
	}

	fctx, fcancel := context.WithCancel(context.Background())
	fl.followCancel = fcancel
	t.Cleanup(fl.stopFollowing)
	for _, u := range fl.users {
		u.follower = clientkit.NewFollower(clientkit.FollowerConfig{
			API: u.api, Token: u.token, Start: start,
			CallTimeout: drillCallTimeout,
			RetryMin:    100 * time.Millisecond, RetryMax: time.Second,
			OnArrival: func(a clientkit.Arrival) { fl.rec.Arrived(u.id, a) },
			OnMessage: func(m *clientv1.Message, src clientkit.Source, at time.Time) {
				fl.rec.Delivered(u.id, m, src, at)
			},
			OnReceipt: func(rc *clientv1.Receipt, _ time.Time) {
				fl.rec.Receipt(u.id, rc)
				fl.mu.Lock()
				fl.receipts[drillKey{rc.GetGroupId(), rc.GetClientMsgId()}] = rc
				fl.mu.Unlock()
			},
			OnSkip: func(group string, from, to uint64) { fl.rec.Skipped(u.id, group, from, to) },
			OnError: func(err error) {
				fl.mu.Lock()
				defer fl.mu.Unlock()
				fl.sessionN++
				if len(fl.sessionErrs) < 20 {
					fl.sessionErrs = append(fl.sessionErrs, fmt.Sprintf("%s %s: %v", time.Now().Format("15:04:05.000"), u, err))
				}
			},
		})
		fl.followers.Go(func() {
			if err := u.follower.Run(fctx); err != nil {
				fl.mu.Lock()
				fl.sessionN++
				fl.sessionErrs = append(fl.sessionErrs, fmt.Sprintf("%s: the follower stopped: %v", u, err))
				fl.mu.Unlock()
			}
		})
	}
	timer := time.NewTimer(readyWait + drillCallTimeout)
	defer timer.Stop()
	for _, u := range fl.users {
		select {
		case <-u.follower.Ready():
		case <-timer.C:
			t.Fatalf("%s: no Session stream ready in time", u)
		}
	}
	return fl
}

// signIn registers u at its region and logs it in there.
func drillSignIn(ctx context.Context, u *drillUser) error {
	err := retry(ctx, func(ctx context.Context) error {
		_, err := u.api.Register(ctx, &clientv1.RegisterRequest{Username: u.name, Password: password(u.name)})
		return err
	})
	if err != nil {
		return fmt.Errorf("register %s: %w", u, err)
	}
	var resp *clientv1.LoginResponse
	err = retry(ctx, func(ctx context.Context) (err error) {
		resp, err = u.api.Login(ctx, &clientv1.LoginRequest{Username: u.name, Password: password(u.name)})
		return err
	})
	if err != nil {
		return fmt.Errorf("login %s: %w", u, err)
	}
	if resp.GetRegion() != u.region || resp.GetHomeRegion() != u.region {
		return fmt.Errorf("login %s: served by %q, home %q", u, resp.GetRegion(), resp.GetHomeRegion())
	}
	u.id, u.token = resp.GetUserId(), resp.GetToken()
	return nil
}

// joinWhenKnown has u join g, waiting while u's region does not know g's
// home yet (the home directory replicates in the background).
func drillJoin(ctx context.Context, u *drillUser, g drillGroup) error {
	wait := 50 * time.Millisecond
	for {
		cctx, cancel := context.WithTimeout(clientkit.WithToken(ctx, u.token), drillCallTimeout)
		_, err := u.api.JoinGroup(cctx, &clientv1.JoinGroupRequest{GroupId: g.id})
		cancel()
		switch {
		case err == nil:
			return nil
		case status.Code(err) != codes.NotFound && !transient(err), ctx.Err() != nil:
			return fmt.Errorf("%s joins %s (homed in %s): %w", u, g.name, g.home, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s joins %s (homed in %s): %w", u, g.name, g.home, err)
		case <-time.After(wait):
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
}

// drillParallel runs fn for every item at once and returns the first
// error.
func drillParallel[T any](items []T, fn func(T) error) error {
	errs := make([]error, len(items))
	var wg sync.WaitGroup
	for i, it := range items {
		wg.Go(func() { errs[i] = fn(it) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func (fl *drillFleet) byRegion(r string) []*drillUser {
	var out []*drillUser
	for _, u := range fl.users {
		if u.region == r {
			out = append(out, u)
		}
	}
	return out
}

func (fl *drillFleet) stopFollowing() {
	if fl.followCancel != nil {
		fl.followCancel()
	}
	fl.followers.Wait()
}

// drillLoad is the load a fleet sends.
type drillLoad struct {
	fl      *drillFleet
	cancel  context.CancelFunc
	tickers sync.WaitGroup
	sends   sync.WaitGroup
	skipped atomic.Int64
}

// startLoad has every user send drillRatePerUser messages a second round
// the groups, each with a new client_msg_id, until Stop. It is stopped
// when the test ends.
func (fl *drillFleet) startLoad(t *testing.T) *drillLoad {
	ctx, cancel := context.WithCancel(fl.ctx)
	l := &drillLoad{fl: fl, cancel: cancel}
	interval := time.Second / drillRatePerUser
	for i, u := range fl.users {
		phase := time.Duration(fl.rng.Int64N(int64(interval)))
		next := i // the group to send to next
		inflight := make(chan struct{}, drillInflight)
		l.tickers.Go(func() {
			select {
			case <-ctx.Done():
				return
			case <-time.After(phase):
			}
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for {
				select {
				case inflight <- struct{}{}:
					g := fl.groups[next%len(fl.groups)]
					next++
					l.sends.Go(func() {
						defer func() { <-inflight }()
						fl.send(u, g)
					})
				default:
					l.skipped.Add(1)
				}
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
			}
		})
	}
	t.Cleanup(func() {
		fl.cancel() // sends under way give up at once
		l.Stop()
	})
	return l
}

// Stop stops the load and waits for the sends under way, which go on
// until answered or drillSendPatience has passed. It may be called more
// than once.
func (l *drillLoad) Stop() {
	l.cancel()
	l.tickers.Wait()
	l.sends.Wait()
}

// send sends one new message from u to g, and again with the same
// client_msg_id while the region is away or the call times out.
func (fl *drillFleet) send(u *drillUser, g drillGroup) {
	n := fl.sendSeq.Add(1)
	s := &drillSend{user: u, group: g, cmid: fmt.Sprintf("%s-m%05d", u.name, n), first: time.Now()}
	fl.mu.Lock()
	fl.sends[drillKey{g.id, s.cmid}] = s
	fl.mu.Unlock()
	req := &clientv1.SendMessageRequest{GroupId: g.id, ClientMsgId: s.cmid, Body: fmt.Sprintf("%s to %s, message %d", u.name, g.name, n)}
	wait := 100 * time.Millisecond
	for {
		now := time.Now()
		fl.rec.Sent(g.id, u.id, s.cmid, now)
		cctx, cancel := context.WithTimeout(clientkit.WithToken(fl.ctx, u.token), drillCallTimeout)
		resp, err := u.api.SendMessage(cctx, req)
		err = explain(cctx, err)
		cancel()
		fl.mu.Lock()
		s.attempts++
		if err == nil {
			s.resp, s.answered = resp, time.Now()
		}
		fl.mu.Unlock()
		if err == nil {
			fl.rec.Acked(g.id, s.cmid, resp)
			return
		}
		fl.rec.SendFailed(g.id, s.cmid, err)
		if !transient(err) || fl.ctx.Err() != nil || time.Since(s.first)+wait > drillSendPatience {
			fl.mu.Lock()
			s.err = err
			fl.mu.Unlock()
			return
		}
		select {
		case <-fl.ctx.Done():
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// sendsWhere returns the sends that match, in no particular order.
func (fl *drillFleet) sendsWhere(match func(*drillSend) bool) []*drillSend {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	var out []*drillSend
	for _, s := range fl.sends {
		if match(s) {
			out = append(out, s)
		}
	}
	return out
}

func (fl *drillFleet) receipt(s *drillSend) *clientv1.Receipt {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	return fl.receipts[drillKey{s.group.id, s.cmid}]
}

// between matches a message that crossed the link a-b: sent at one end
// to a group homed at the other, or delivered at one end from a group
// homed at the other. For checker.FirstDelivery.
func drillBetween(a, b string) func(sender, member, home string) bool {
	return func(sender, member, home string) bool {
		cross := func(x, y string) bool { return x == a && y == b || x == b && y == a }
		return cross(sender, home) || cross(member, home)
	}
}

// settle waits until every member holds every acknowledged message, every
// accepted message has been seen committed and no region has cross-region
// work waiting, and returns how long that took. A fleet that does not
// settle within drillSettle fails the test.
func (fl *drillFleet) settle(t *testing.T) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(drillSettle)
	for {
		p := fl.rec.Progress()
		out := fl.rec.Outstanding(time.Time{})
		queued, ok := fl.fed.queued(t.Context())
		if out == 0 && p.Accepted == p.AcceptedCommitted && ok && queued == 0 {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			fl.fed.logLinks(t, "when the fleet did not settle")
			t.Errorf("not settled within %s: %d member deliveries outstanding, %d of %d accepted messages seen committed, %d items queued between regions (Status read: %v)",
				drillSettle, out, p.AcceptedCommitted, p.Accepted, queued, ok)
			return time.Since(start)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// check stops the followers and gives the checker's verdict: the report on
// what the members got (lost, duplicates, out of order and gaps all 0),
// then each member's full history of each group read at its own region,
// and the home's log of each group.
func (fl *drillFleet) check(t *testing.T) checker.Report {
	t.Helper()
	fl.stopFollowing()
	fl.mu.Lock()
	var gaveUp []string
	for _, s := range fl.sends {
		if s.err != nil {
			gaveUp = append(gaveUp, fmt.Sprintf("%s → %s %s: %d attempts: %v", s.user, s.group.name, s.cmid, s.attempts, s.err))
		}
	}
	sessionN, sessionErrs := fl.sessionN, slices.Clone(fl.sessionErrs)
	fl.mu.Unlock()
	slices.Sort(gaveUp)
	for _, g := range gaveUp {
		t.Errorf("send given up: %s", g)
	}
	if sessionN > 0 {
		t.Logf("%d session errors survived (streams broken, history reads failed); the first:\n  %s", sessionN, strings.Join(sessionErrs, "\n  "))
	}

	rep := fl.rec.Report()
	c := rep.Totals
	t.Logf("checker: %d messages (%d attempts, %d errors), %d committed, %d accepted (%d seen committed later), %d receipts; "+
		"%d of %d member deliveries (%d live, %d caught up); lost %d, duplicates %d, out of order %d, gaps %d; "+
		"skipped %d, raw duplicates %d, raw reordered %d, redelivered %d, foreign %d; lag p50 %s p99 %s max %s",
		c.Messages, c.Attempts, c.SendErrors, c.Committed, c.Accepted, c.AcceptedCommitted, c.Receipts,
		c.Delivered, c.Expected, c.Live, c.CaughtUp, c.Lost, c.Duplicates, c.OutOfOrder, c.Gaps,
		c.Skipped, c.RawDuplicates, c.RawReordered, c.Redelivered, c.Foreign,
		c.LagP50.Round(time.Millisecond), c.LagP99.Round(time.Millisecond), c.LagMax.Round(time.Millisecond))
	for _, g := range rep.Groups {
		t.Logf("  group %s (home %s): last seq %d, %d committed, %d accepted (%d seen committed later), lost %d, duplicates %d, out of order %d, gaps %d",
			g.Group, g.Home, g.LastSeq, g.Committed, g.Accepted, g.AcceptedCommitted, g.Lost, g.Duplicates, g.OutOfOrder, g.Gaps)
	}
	if !rep.OK() || c.Skipped != 0 || c.Foreign != 0 || c.Unacknowledged != 0 || c.ReceiptErrors != 0 || c.Accepted != c.AcceptedCommitted {
		t.Errorf("checker: lost %d (%d messages), duplicates %d, out of order %d, gaps %d, skipped %d, foreign %d, unacknowledged %d, receipt errors %d, accepted never seen committed %d",
			c.Lost, c.LostMessages, c.Duplicates, c.OutOfOrder, c.Gaps, c.Skipped, c.Foreign, c.Unacknowledged, c.ReceiptErrors, c.Accepted-c.AcceptedCommitted)
		for _, p := range rep.Problems {
			t.Errorf("  %s", p)
		}
		if rep.Unlisted > 0 {
			t.Errorf("  and %d problems more", rep.Unlisted)
		}
	}
	if c.Messages == 0 {
		t.Errorf("checker: no message was sent")
	}

	ctx, cancel := context.WithTimeout(t.Context(), drillVerify)
	defer cancel()
	var clients []checker.Client
	for _, u := range fl.users {
		clients = append(clients, checker.Client{User: u.id, Region: u.region, API: u.api, Token: u.token})
	}
	v := fl.rec.Verify(ctx, clients, drillCallTimeout)
	t.Logf("verify: %d histories, %d messages", v.Histories, v.Messages)
	if !v.OK() {
		t.Errorf("verify: problems by kind %v", v.Counts)
		for _, p := range v.Problems {
			t.Errorf("  %s", p)
		}
		if v.Unlisted > 0 {
			t.Errorf("  and %d problems more", v.Unlisted)
		}
	}

	// The home's log is the report's: 1..last, and every acknowledged
	// message in it once, at the seq the run saw (Verify checked the
	// home-region members' reads; this says so of the home directly).
	for _, g := range fl.groups {
		var gr checker.GroupReport
		for _, x := range rep.Groups {
			if x.Group == g.id {
				gr = x
			}
		}
		log := fl.homeLog(t, ctx, g)
		fl.mu.Lock()
		fl.homeLogs[g.id] = log
		fl.mu.Unlock()
		if uint64(len(log)) != gr.LastSeq {
			t.Errorf("%s's log at its home %s holds %d messages; the members saw seqs up to %d", g.name, g.home, len(log), gr.LastSeq)
		}
		at := make(map[string]*clientv1.Message)
		for i, m := range log {
			if m.GetSeq() != uint64(i+1) {
				t.Errorf("%s's log at %s: #%d at position %d", g.name, g.home, m.GetSeq(), i+1)
				break
			}
			if o, dup := at[m.GetClientMsgId()]; dup {
				t.Errorf("%s's log at %s holds %s twice: #%d and #%d", g.name, g.home, m.GetClientMsgId(), o.GetSeq(), m.GetSeq())
			}
			at[m.GetClientMsgId()] = m
		}
		for _, s := range fl.sendsWhere(func(s *drillSend) bool { return s.group.id == g.id && s.resp != nil }) {
			m, ok := at[s.cmid]
			switch {
			case !ok:
				t.Errorf("%s's log at %s lacks %s from %s, answered %s", g.name, g.home, s.cmid, s.user, s.resp.GetState())
			case s.resp.GetSeq() != 0 && (m.GetSeq() != s.resp.GetSeq() || m.GetMessageId() != s.resp.GetMessageId()):
				t.Errorf("%s's log at %s has %s at #%d %s; it was answered #%d %s", g.name, g.home, s.cmid, m.GetSeq(), m.GetMessageId(), s.resp.GetSeq(), s.resp.GetMessageId())
			}
		}
	}
	return rep
}

// checkReceipts checks, after check, that each of sends (answered
// accepted) got a Receipt on its sender's session saying it was committed,
// and that its home's log holds it at the seq the receipt gave.
func (fl *drillFleet) checkReceipts(t *testing.T, sends []*drillSend) {
	t.Helper()
	bad := 0
	for _, s := range sends {
		rc := fl.receipt(s)
		fl.mu.Lock()
		log := fl.homeLogs[s.group.id]
		fl.mu.Unlock()
		var problem string
		switch {
		case rc == nil:
			problem = "no receipt"
		case rc.GetState() != clientv1.DeliveryState_DELIVERY_STATE_COMMITTED || rc.GetSeq() == 0 || rc.GetError() != "":
			problem = fmt.Sprintf("receipt %v", rc)
		case s.resp.GetMessageId() != "" && rc.GetMessageId() != s.resp.GetMessageId():
			problem = fmt.Sprintf("receipt for message %s; the send was answered with message %s", rc.GetMessageId(), s.resp.GetMessageId())
		case rc.GetSeq() > uint64(len(log)) || log[rc.GetSeq()-1].GetClientMsgId() != s.cmid:
			problem = fmt.Sprintf("receipt says #%d, which the home's log (of %d) does not hold it at", rc.GetSeq(), len(log))
		}
		if problem != "" {
			if bad++; bad <= 20 {
				t.Errorf("%s → %s (homed in %s) %s, answered accepted: %s", s.user, s.group.name, s.group.home, s.cmid, problem)
			}
		}
	}
	if bad > 20 {
		t.Errorf("and %d accepted messages more with a missing or wrong receipt", bad-20)
	}
}

// homeLog reads g's whole log at its home, as the home's first user.
func (fl *drillFleet) homeLog(t *testing.T, ctx context.Context, g drillGroup) []*clientv1.Message {
	t.Helper()
	u := fl.byRegion(g.home)[0]
	var log []*clientv1.Message
	cctx, cancel := context.WithTimeout(clientkit.WithToken(ctx, u.token), 2*drillCallTimeout)
	defer cancel()
	if _, err := clientkit.ReadHistory(cctx, u.api, g.id, 0, func(m *clientv1.Message) { log = append(log, m) }); err != nil {
		t.Fatalf("history of %s at its home %s: %v", g.name, g.home, err)
	}
	return log
}

// drillClock logs a drill's phases with the time since it started.
type drillClock struct {
	t     *testing.T
	start time.Time
}

func newDrillClock(t *testing.T) *drillClock { return &drillClock{t: t, start: time.Now()} }

func (c *drillClock) phase(format string, args ...any) {
	c.t.Helper()
	c.t.Logf("[%6.2fs] %s", time.Since(c.start).Seconds(), fmt.Sprintf(format, args...))
}

func drillMS(d time.Duration) string { return d.Round(time.Millisecond).String() }
