package main

import (
	"context"
	"sync"
	"time"

	adminv1 "github.com/roamfed/roamfed/api/admin/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
)

// watchEvery is how often a drill polls every region's Status.
const watchEvery = 50 * time.Millisecond

// A watcher polls every region's Status during a drill and notes when the
// cut link was seen down at each end, when traffic between its ends was
// routed through a third region, when the link came back, and when the
// regions' queues drained.
type watcher struct {
	a       *app
	regions []string
	x, y    string // the link's ends

	mu       sync.Mutex
	latest   map[string]snapshot
	cutAt    time.Time
	restored time.Time
	// Seen at x (of its link to y) and at y (of its link to x).
	downX, downY time.Time
	routeX       time.Time // x routes to y through viaX
	routeY       time.Time
	viaX, viaY   string
	noRoute      bool // an end had no route at some point during the cut
	upX, upY     time.Time
	polls, fails int
}

// snapshot is one region's latest answer.
type snapshot struct {
	at   time.Time
	resp *adminv1.StatusResponse
	err  error
}

func newWatcher(a *app, regions []string, x, y string) *watcher {
	return &watcher{a: a, regions: regions, x: x, y: y, latest: make(map[string]snapshot)}
}

// run polls until ctx ends.
func (w *watcher) run(ctx context.Context) {
	t := time.NewTicker(watchEvery)
	defer t.Stop()
	for {
		w.poll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// poll asks every region once, in parallel.
func (w *watcher) poll(ctx context.Context) {
	var wg sync.WaitGroup
	for _, r := range w.regions {
		c, err := w.a.admin(r)
		if err != nil {
			w.note(r, nil, err)
			continue
		}
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, min(w.a.timeout, time.Second))
			resp, err := c.Status(cctx, &adminv1.StatusRequest{})
			cancel()
			if ctx.Err() == nil {
				w.note(r, resp, err)
			}
		})
	}
	wg.Wait()
}

func (w *watcher) note(region string, resp *adminv1.StatusResponse, err error) {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.polls++
	if err != nil {
		w.fails++
		prev := w.latest[region]
		w.latest[region] = snapshot{at: prev.at, resp: prev.resp, err: err}
		return
	}
	w.latest[region] = snapshot{at: now, resp: resp}
	var peer string
	switch region {
	case w.x:
		peer = w.y
	case w.y:
		peer = w.x
	default:
		return
	}
	l := linkTo(resp, peer)
	if l == nil || w.cutAt.IsZero() {
		return
	}
	down := l.GetState() == roamingv1.LinkState_LINK_STATE_CUT || l.GetState() == roamingv1.LinkState_LINK_STATE_DOWN
	during := w.restored.IsZero()
	set := func(t *time.Time, cond bool) {
		if cond && t.IsZero() {
			*t = now
		}
	}
	if region == w.x {
		set(&w.downX, down)
		if during && l.GetVia() != "" && w.routeX.IsZero() {
			w.routeX, w.viaX = now, l.GetVia()
		}
		set(&w.upX, !during && l.GetState() == roamingv1.LinkState_LINK_STATE_UP)
	} else {
		set(&w.downY, down)
		if during && l.GetVia() != "" && w.routeY.IsZero() {
			w.routeY, w.viaY = now, l.GetVia()
		}
		set(&w.upY, !during && l.GetState() == roamingv1.LinkState_LINK_STATE_UP)
	}
	if during && l.GetNoRoute() {
		w.noRoute = true
	}
}

func linkTo(resp *adminv1.StatusResponse, peer string) *adminv1.Link {
	for _, l := range resp.GetLinks() {
		if l.GetPeer() == peer {
			return l
		}
	}
	return nil
}

// cut and restore tell the watcher when the drill acted.
func (w *watcher) cut(at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.cutAt = at
}

func (w *watcher) restore(at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.restored = at
}

// linkUp reports whether both ends last said the link is up.
func (w *watcher) linkUp() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	lx := linkTo(w.latest[w.x].resp, w.y)
	ly := linkTo(w.latest[w.y].resp, w.x)
	return w.latest[w.x].err == nil && w.latest[w.y].err == nil &&
		lx.GetState() == roamingv1.LinkState_LINK_STATE_UP && ly.GetState() == roamingv1.LinkState_LINK_STATE_UP
}

// drainedSince reports whether every region answered after t and its last
// answer shows nothing waiting for any peer.
func (w *watcher) drainedSince(t time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range w.regions {
		s := w.latest[r]
		if s.resp == nil || !s.at.After(t) {
			return false
		}
		if queued(s.resp) > 0 {
			return false
		}
	}
	return true
}

// queued is the cross-region work a region holds for its peers.
func queued(resp *adminv1.StatusResponse) uint64 {
	var n uint64
	for _, l := range resp.GetLinks() {
		n += l.GetOutboxItems() + l.GetQueuedDeliveries()
	}
	return n
}

// watchState is what the watcher saw, for the report and the progress
// line.
type watchState struct {
	downX, downY   time.Time
	routeX, routeY time.Time
	viaX, viaY     string
	noRoute        bool
	upX, upY       time.Time
	polls, fails   int
	// Now: the link as x sees it, and the regions' queues.
	stateX, routeNowX string
	queued            uint64
	unreachable       []string
}

func (w *watcher) state() watchState {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := watchState{
		downX: w.downX, downY: w.downY, routeX: w.routeX, routeY: w.routeY, viaX: w.viaX, viaY: w.viaY,
		noRoute: w.noRoute, upX: w.upX, upY: w.upY, polls: w.polls, fails: w.fails,
	}
	if l := linkTo(w.latest[w.x].resp, w.y); l != nil {
		s.stateX, s.routeNowX = linkState(l.GetState()), route(l)
	}
	for _, r := range w.regions {
		snap := w.latest[r]
		if snap.err != nil {
			s.unreachable = append(s.unreachable, r)
		}
		if snap.resp != nil {
			s.queued += queued(snap.resp)
		}
	}
	return s
}
