package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	adminv1 "github.com/roamfed/roamfed/api/admin/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/internal/checker"
	"github.com/roamfed/roamfed/internal/cli"
	"github.com/roamfed/roamfed/regions"
)

// runConfig is a drill run's command line.
type runConfig struct {
	cut            string // as given: "A-B"
	x, y           string // its ends, once resolved
	duration       time.Duration
	warmup         time.Duration // 0: min(3s, 20% of duration)
	restoreAfter   time.Duration // 0: 70% of duration
	settle         time.Duration
	rate           float64
	usersPerRegion int
	groups         int
	inflight       int
	json           bool
	runID          string
	progressEvery  time.Duration
}

func (a *app) drillRunCmd() *cobra.Command {
	cfg := runConfig{}
	cmd := &cobra.Command{
		Use:   "run --cut A-B",
		Short: "Cut a link under load and check that no message was lost, duplicated or reordered",
		Long: `run registers throwaway users in every region (--users-per-region, named
drill-<run id>-<region>-<n>), creates --groups groups homed in turn in each
region with every user as a member, opens a Session for every user, and
sends --rate messages a second spread over users and groups. After the
warmup it cuts link A-B, keeps the load running, restores the link after
--restore-after, stops the load after --duration, and waits until every
member has every acknowledged message and the regions' queues are empty
(or --settle-timeout passes). Then it checks the history each member got,
and each member's history as its region serves it, and prints a report:

  detect    from the cut until A and B both report the link cut or down
  reroute   until A routes to B through a third region, and until the first
            message between A and B (sent by a user at one to a group homed
            at the other, or delivered to a user at one from a group homed at
            the other) sent after the cut was delivered
  heal      from the restore until both ends report the link up
  catch-up  from the restore until the queues are empty and every message
            sent before the restore has reached every member

with the messages sent, committed, accepted (and later committed),
delivered, and the checks: lost, duplicates, out of order and gaps must all
be 0, or the exit status is 1. A progress line goes to stderr every second.
The users and groups stay in the federation afterwards.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fed, err := a.federation()
			if err != nil {
				return err
			}
			if err := cfg.resolve(fed); err != nil {
				return err
			}
			rep, err := a.runDrill(cmd.Context(), fed, cfg)
			if rep != nil {
				if cfg.json {
					if werr := writeDrillJSON(cmd.OutOrStdout(), rep); werr != nil {
						return werr
					}
				} else {
					writeDrillReport(cmd.OutOrStdout(), rep)
				}
			}
			if err != nil {
				return err
			}
			if !rep.OK() {
				return errChecksFailed
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.cut, "cut", "", "the link to cut, as `A-B` (two region names)")
	f.DurationVar(&cfg.duration, "duration", 30*time.Second, "how long the load runs")
	f.DurationVar(&cfg.warmup, "warmup", 0, "load before the cut (default: 20% of --duration, at most 3s)")
	f.DurationVar(&cfg.restoreAfter, "restore-after", 0, "when to restore the link, from the start of the load (default: 70% of --duration)")
	f.DurationVar(&cfg.settle, "settle-timeout", 30*time.Second, "how long to wait after the load for every member to catch up")
	f.Float64Var(&cfg.rate, "rate", 10, "messages a second, over all users and groups")
	f.IntVar(&cfg.usersPerRegion, "users-per-region", 3, "throwaway users to register in each region")
	f.IntVar(&cfg.groups, "groups", 6, "groups to create, homed in turn in each region")
	f.IntVar(&cfg.inflight, "inflight", 32, "sends under way at once, at most")
	f.BoolVar(&cfg.json, "json", false, "print the report as JSON")
	f.StringVar(&cfg.runID, "run-id", "", "name for the run's users and groups (default: random)")
	cfg.progressEvery = time.Second
	return cmd
}

// resolve checks the run's flags against the federation and fills in the
// defaults.
func (c *runConfig) resolve(fed *regions.Federation) error {
	x, y, err := splitLink(c.cut, fed)
	if err != nil {
		return err
	}
	c.x, c.y = x, y
	switch {
	case c.duration <= 0:
		return cli.Usagef("--duration: must be positive")
	case c.rate <= 0:
		return cli.Usagef("--rate: must be positive")
	case c.rate > 100_000:
		return cli.Usagef("--rate: at most 100000 messages a second")
	case c.usersPerRegion < 1:
		return cli.Usagef("--users-per-region: at least 1")
	case c.groups < 1:
		return cli.Usagef("--groups: at least 1")
	case c.inflight < 1:
		return cli.Usagef("--inflight: at least 1")
	case c.settle <= 0:
		return cli.Usagef("--settle-timeout: must be positive")
	case c.warmup < 0:
		return cli.Usagef("--warmup: must not be negative")
	}
	if c.warmup == 0 {
		c.warmup = min(3*time.Second, c.duration/5)
	}
	if c.restoreAfter == 0 {
		c.restoreAfter = c.duration * 7 / 10
	}
	switch {
	case c.warmup >= c.restoreAfter:
		return cli.Usagef("--warmup %s must end before the restore at %s", c.warmup, c.restoreAfter)
	case c.restoreAfter > c.duration:
		return cli.Usagef("--restore-after %s is past --duration %s", c.restoreAfter, c.duration)
	}
	if c.runID == "" {
		c.runID = randomHex(3)
	} else if err := validRunID(c.runID); err != nil {
		return err
	}
	return nil
}

// validRunID keeps the names made from the run id valid usernames.
func validRunID(s string) error {
	if len(s) > 24 {
		return cli.Usagef("--run-id: at most 24 characters")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return cli.Usagef("--run-id: only lowercase letters, digits and '-'")
		}
	}
	return nil
}

// splitLink parses "A-B" into two different regions of fed. Region names
// may hold '-', so every split is tried.
func splitLink(s string, fed *regions.Federation) (string, string, error) {
	if s == "" {
		return "", "", cli.Usagef("--cut: missing; name the link as A-B")
	}
	for i := strings.Index(s, "-"); i >= 0; {
		x, y := s[:i], s[i+1:]
		_, okX := fed.Region(x)
		_, okY := fed.Region(y)
		if okX && okY {
			if x == y {
				return "", "", cli.Usagef("--cut %s: a link joins two different regions", s)
			}
			return x, y, nil
		}
		j := strings.Index(s[i+1:], "-")
		if j < 0 {
			break
		}
		i += j + 1
	}
	return "", "", cli.Usagef("--cut %q: want A-B, two regions of %s (%s)", s, fed.Source, strings.Join(fed.Names(), ", "))
}

// preflightPatience is how long a drill waits for the link to be up
// before it starts.
const preflightPatience = 10 * time.Second

// runDrill runs the drill and returns its report; a report with an error
// is a run that failed part way, and says how far it got.
func (a *app) runDrill(ctx context.Context, fed *regions.Federation, cfg runConfig) (*drillReport, error) {
	rep := &drillReport{RunID: cfg.runID, Federation: fed.Name, X: cfg.x, Y: cfg.y, Config: cfg}
	progress := func(format string, args ...any) {
		fmt.Fprintf(a.stderr, "roamctl: drill %s: "+format+"\n", append([]any{cfg.runID}, args...)...)
	}
	for _, r := range []string{cfg.x, cfg.y} {
		if reg, _ := fed.Region(r); reg.AdminAddr == "" {
			return nil, fmt.Errorf("region %s has no admin_addr in %s", r, fed.Source)
		}
	}
	if err := a.waitLinkUp(ctx, cfg.x, cfg.y); err != nil {
		return nil, err
	}

	rec := checker.New()
	fl := newFleet(a, cfg, rec)
	defer fl.close()
	progress("setting up %d users in each of %s and %d groups", cfg.usersPerRegion, strings.Join(fed.Names(), ", "), cfg.groups)
	setupStart := time.Now()
	if err := fl.setup(ctx, fed); err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	if err := fl.follow(ctx); err != nil {
		return nil, fmt.Errorf("sessions: %w", err)
	}
	rep.Users, rep.Groups = len(fl.users), len(fl.groups)
	progress("%d users, %d groups and %d sessions ready in %s; load at %g msg/s for %s, cut %s-%s at %s, restore at %s",
		len(fl.users), len(fl.groups), len(fl.users), duration(time.Since(setupStart)), cfg.rate, cfg.duration,
		cfg.x, cfg.y, cfg.warmup, cfg.restoreAfter)

	w := newWatcher(a, fed.Names(), cfg.x, cfg.y)
	wctx, stopWatch := context.WithCancel(ctx)
	var bg sync.WaitGroup
	defer func() {
		stopWatch()
		bg.Wait()
	}()
	bg.Go(func() { w.run(wctx) })

	start := time.Now()
	rep.start = start
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		fl.load(loadCtx, ctx)
	}()
	phase := &phaseBox{}
	phase.set("warmup")
	bg.Go(func() { a.progressLoop(wctx, cfg, start, phase, rec, w, fl) })

	// The link is restored whatever happens once it was cut.
	cut, restored := false, false
	defer func() {
		if cut && !restored {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if _, err := a.drill(rctx, "restore", cfg.x, cfg.y, "roamctl drill run "+cfg.runID+" ended early"); err != nil {
				fmt.Fprintf(a.stderr, "roamctl: drill %s: could not restore %s-%s: %v; run 'roamctl drill restore %s %s'\n",
					cfg.runID, cfg.x, cfg.y, describe(err), cfg.x, cfg.y)
			}
		}
	}()
	fail := func(err error) (*drillReport, error) {
		stopLoad()
		<-loadDone
		return rep, err
	}

	if !sleepUntil(ctx, start.Add(cfg.warmup)) {
		return fail(ctx.Err())
	}
	rep.cutAt = time.Now()
	w.cut(rep.cutAt)
	if _, err := a.drill(ctx, "cut", cfg.x, cfg.y, "roamctl drill run "+cfg.runID); err != nil {
		return fail(fmt.Errorf("cut: %w", err))
	}
	cut = true
	phase.set("cut")

	if !sleepUntil(ctx, start.Add(cfg.restoreAfter)) {
		return fail(ctx.Err())
	}
	rep.restoredAt = time.Now()
	w.restore(rep.restoredAt)
	if _, err := a.drill(ctx, "restore", cfg.x, cfg.y, "roamctl drill run "+cfg.runID); err != nil {
		return fail(fmt.Errorf("restore: %w", err))
	}
	restored = true
	phase.set("restored")
	catchUp := make(chan time.Time, 1)
	bg.Go(func() { watchCatchUp(wctx, rep.restoredAt, rec, w, catchUp) })

	if !sleepUntil(ctx, start.Add(cfg.duration)) {
		return fail(ctx.Err())
	}
	stopLoad()
	<-loadDone
	rep.loadStoppedAt = time.Now()
	phase.set("settling")

	// Settle: every member has everything, every queue is empty.
	deadline := time.Now().Add(cfg.settle)
	for {
		if rec.Outstanding(time.Time{}) == 0 && w.drainedSince(rep.loadStoppedAt) && w.linkUp() {
			rep.settledAt = time.Now()
			break
		}
		if time.Now().After(deadline) {
			progress("not settled within --settle-timeout %s; checking what there is", cfg.settle)
			break
		}
		if !sleepCtx(ctx, 100*time.Millisecond) {
			return rep, ctx.Err()
		}
	}
	select {
	case t := <-catchUp:
		rep.caughtUpAt = t
	default:
	}
	stopWatch()
	bg.Wait()
	rep.watch = w.state()
	fl.stopFollowing()

	progress("checking the histories")
	rep.Check = rec.Report()
	rep.Verify = rec.Verify(ctx, fl.clients(), a.timeout)
	// Verify records what the histories show; the report counts conflicts
	// between regions too.
	rep.Check = rec.Report()
	if t, ok := rec.FirstDelivery(rep.cutAt, betweenEnds(cfg.x, cfg.y)); ok {
		rep.firstBetween = t
	}
	rep.Sessions = fl.sessionErrs.Load()
	if p := fl.firstErr.Load(); p != nil {
		rep.FirstSessionError = *p
	}
	rep.Busy = fl.busy.Load()
	return rep, ctx.Err()
}

// betweenEnds matches the messages that cross link x-y: sent by a user at
// one end to a group homed at the other, or delivered to a user at one end
// from a group homed at the other.
func betweenEnds(x, y string) func(sender, member, home string) bool {
	cross := func(a, b string) bool { return a == x && b == y || a == y && b == x }
	return func(sender, member, home string) bool {
		return cross(sender, home) || cross(member, home)
	}
}

// watchCatchUp reports on out when, after restoredAt, the regions' queues
// were empty and every message sent before restoredAt had reached every
// member.
func watchCatchUp(ctx context.Context, restoredAt time.Time, rec *checker.Recorder, w *watcher, out chan<- time.Time) {
	t := time.NewTicker(watchEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if w.drainedSince(restoredAt) && rec.Outstanding(restoredAt) == 0 {
			out <- time.Now()
			return
		}
	}
}

// waitLinkUp waits until both ends report link x-y up.
func (a *app) waitLinkUp(ctx context.Context, x, y string) error {
	deadline := time.Now().Add(preflightPatience)
	for {
		sx, errX := a.linkState(ctx, x, y)
		sy, errY := a.linkState(ctx, y, x)
		if err := errors.Join(errX, errY); err != nil {
			return err
		}
		if sx == roamingv1.LinkState_LINK_STATE_UP && sy == roamingv1.LinkState_LINK_STATE_UP {
			return nil
		}
		if time.Now().After(deadline) {
			hint := ""
			if sx == roamingv1.LinkState_LINK_STATE_CUT || sy == roamingv1.LinkState_LINK_STATE_CUT {
				hint = fmt.Sprintf("; it is cut: run 'roamctl drill restore %s %s' first", x, y)
			}
			return fmt.Errorf("link %s-%s is not up (%s sees %s, %s sees %s)%s", x, y, x, linkState(sx), y, linkState(sy), hint)
		}
		if !sleepCtx(ctx, 100*time.Millisecond) {
			return ctx.Err()
		}
	}
}

// linkState asks region for its view of its link to peer.
func (a *app) linkState(ctx context.Context, region, peer string) (roamingv1.LinkState, error) {
	c, err := a.admin(region)
	if err != nil {
		return 0, err
	}
	cctx, cancel := a.callCtx(ctx)
	defer cancel()
	resp, err := c.Status(cctx, &adminv1.StatusRequest{})
	if err != nil {
		return 0, regionErr{region, err}
	}
	l := linkTo(resp, peer)
	if l == nil {
		return 0, fmt.Errorf("region %s reports no link to %s", region, peer)
	}
	return l.GetState(), nil
}

// sleepUntil waits until t or until ctx ends; false when ctx ended it.
func sleepUntil(ctx context.Context, t time.Time) bool {
	return sleepCtx(ctx, time.Until(t))
}

// phaseBox holds the drill's phase for the progress line.
type phaseBox struct {
	mu sync.Mutex
	s  string
}

func (p *phaseBox) set(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.s = s
}

func (p *phaseBox) get() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.s
}

// progressLoop prints a progress line every cfg.progressEvery until ctx
// ends.
func (a *app) progressLoop(ctx context.Context, cfg runConfig, start time.Time, phase *phaseBox, rec *checker.Recorder, w *watcher, fl *fleet) {
	t := time.NewTicker(cfg.progressEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		writeProgress(a.stderr, cfg, time.Since(start), phase.get(), rec.Progress(), w.state(), fl.sessionErrs.Load())
	}
}

// writeProgress prints one progress line.
func writeProgress(out io.Writer, cfg runConfig, elapsed time.Duration, phase string, p checker.Progress, ws watchState, sessionErrs int64) {
	line := fmt.Sprintf("roamctl: drill %s: %5.1fs %-8s sent %d committed %d accepted %d (%d committed since) delivered %d/%d",
		cfg.runID, elapsed.Seconds(), phase, p.Sent, p.Committed, p.Accepted, p.AcceptedCommitted, p.Delivered, p.Expected)
	if ws.stateX != "" {
		line += fmt.Sprintf(" | %s→%s %s, %s", cfg.x, cfg.y, ws.stateX, ws.routeNowX)
	}
	line += fmt.Sprintf(" | queued %d", ws.queued)
	if len(ws.unreachable) > 0 {
		line += " | unreachable: " + strings.Join(slices.Clone(ws.unreachable), ", ")
	}
	if sessionErrs > 0 {
		line += fmt.Sprintf(" | session errors %d", sessionErrs)
	}
	fmt.Fprintln(out, line)
}
