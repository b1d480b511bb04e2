package business

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	recordv1 "github.com/roamfed/roamfed/api/record/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/servicecenter/datacenter"
)

// Local is the region's own service center as the router hands it work.
type Local interface {
	// Deliver hands messages to the sessions of their recipients here.
	Deliver(items []*recordv1.Fanout)
	// ApplyPresence hands other regions' presence changes to the sessions
	// here.
	ApplyPresence(chs []*recordv1.PresenceChange)
	// Receipt tells a sender's sessions here what became of a message
	// accepted into the outbox.
	Receipt(r *recordv1.Receipt)
}

// Router decides which region each committed message goes to, and takes
// what peers deliver here.
type Router struct {
	region string
	store  *datacenter.Store
	out    map[string]*Deliverer
	log    *slog.Logger
	local  atomic.Pointer[Local]

	commits chan committed
	dropped atomic.Uint64
	refused atomic.Uint64
	inbound atomic.Pointer[func(peer string, items []*recordv1.Fanout)]

	locMu    sync.Mutex
	locCache map[string]locEntry

	seen *recentSet

	// behind holds, per region, the groups some of whose messages that
	// region's Deliverer refused (its queue was full), each with the
	// first such seq: they are sent again from the group's log once the
	// queue has room. Only run uses it.
	behind map[string]map[string]uint64

	// held holds, per region, deliveries forwarded to roaming users that
	// the region's full queue refused, in order; catchUp sends them when
	// the queue has room. This region does not home those messages'
	// groups, so it cannot read them again from a log, and the home's
	// resends are de-duplicated here: a forward dropped would be lost to
	// the live stream. At most maxHeld are held.
	heldMu   sync.Mutex
	held     map[string][]*recordv1.Fanout
	nHeld    int
	heldLost atomic.Uint64
	// heldPresence holds, per region, the latest presence change per user
	// and node that the region's full queue refused; an older one for the
	// same user and node is superseded.
	heldPresence map[string]map[presenceKey]*recordv1.PresenceChange
	nPresence    int

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

type committed struct {
	g *recordv1.Group
	m *recordv1.Message
}

type locEntry struct {
	region  string
	expires time.Time
}

// locTTL is how long a member's region is reused before the directory is
// read again. Replication already lags by its interval; this adds little.
const locTTL = 250 * time.Millisecond

// NewRouter starts a router sending through out (one Deliverer per peer).
func NewRouter(region string, store *datacenter.Store, out map[string]*Deliverer, log *slog.Logger) *Router {
	r := &Router{
		region:   region,
		store:    store,
		out:      out,
		log:      log,
		commits:  make(chan committed, 1<<16),
		locCache: make(map[string]locEntry),
		seen:     newRecentSet(1 << 18),
		behind:   make(map[string]map[string]uint64),
		held:     make(map[string][]*recordv1.Fanout),

		heldPresence: make(map[string]map[presenceKey]*recordv1.PresenceChange),
		stop:         make(chan struct{}),
		done:         make(chan struct{}),
	}
	go r.run()
	return r
}

// Receipt hands a receipt to the local service center.
func (r *Router) Receipt(rc *recordv1.Receipt) {
	if lp := r.local.Load(); lp != nil {
		(*lp).Receipt(rc)
	}
}

// SetLocal names the service center that takes inbound deliveries.
func (r *Router) SetLocal(l Local) { r.local.Store(&l) }

// OnInbound sets a function that sees every batch of messages a peer
// delivers here, resends included, before they are de-duplicated; metrics
// use it. It must not block or modify the items. Nil removes it.
func (r *Router) OnInbound(fn func(peer string, items []*recordv1.Fanout)) {
	if fn == nil {
		r.inbound.Store(nil)
		return
	}
	r.inbound.Store(&fn)
}

// Stop ends the routing goroutine.
func (r *Router) Stop() {
	r.once.Do(func() { close(r.stop) })
	<-r.done
}

// Committed queues a message just committed here for the other regions. It
// never blocks; when the queue is full the message is left to catch-up.
func (r *Router) Committed(g *recordv1.Group, m *recordv1.Message) {
	select {
	case r.commits <- committed{g: g, m: m}:
	default:
		if r.dropped.Add(1)%1000 == 1 {
			r.log.Warn("routing queue full; remote recipients will catch up from history", slog.Uint64("dropped", r.dropped.Load()))
		}
	}
}

// Presence sends a local user's presence change to every peer. A peer
// whose queue is full gets it later, unless a newer change of the same
// user on the same node supersedes it.
func (r *Router) Presence(ch *recordv1.PresenceChange) {
	r.heldMu.Lock()
	defer r.heldMu.Unlock()
	for region, d := range r.out {
		held := r.heldPresence[region]
		if len(held) == 0 && d.Enqueue(nil, ch) {
			continue
		}
		if held == nil {
			held = make(map[presenceKey]*recordv1.PresenceChange)
			r.heldPresence[region] = held
		}
		k := presenceKey{ch.GetUserId(), ch.GetNode()}
		if _, ok := held[k]; !ok {
			if r.nPresence >= maxHeld {
				r.heldLost.Add(1)
				continue
			}
			r.nPresence++
		}
		held[k] = ch
	}
}

type presenceKey struct{ user, node string }

func (r *Router) run() {
	defer close(r.done)
	tick := time.NewTicker(catchUpEvery)
	defer tick.Stop()
	for {
		select {
		case <-r.stop:
			return
		case c := <-r.commits:
			r.route(c.g, c.m)
		case <-tick.C:
			r.catchUp()
		}
	}
}

// catchUpEvery is how often the router looks for room to send what a
// full queue refused; catchUpBatch is how much of a group's log it reads
// at a time.
const (
	catchUpEvery = 250 * time.Millisecond
	catchUpBatch = 256
)

// catchUp sends again, from the groups' logs, the messages a peer's full
// queue refused, and the held forwards, while the queue has room.
func (r *Router) catchUp() {
	r.sendHeld()
	for region, groups := range r.behind {
		d := r.out[region]
		for gid, from := range groups {
			if !d.Room() {
				break
			}
			g, err := r.store.Group(gid)
			if err != nil {
				r.log.Warn("group of refused deliveries unreadable; its members catch up from history", slog.String("group", gid), slog.Any("err", err))
				delete(groups, gid)
				continue
			}
			msgs, more, err := r.store.History(gid, from-1, catchUpBatch)
			if err != nil {
				r.log.Warn("log of refused deliveries unreadable; trying again", slog.String("group", gid), slog.Any("err", err))
				continue
			}
			recipients := r.split(g)[region]
			next, full := from, false
			for _, m := range msgs {
				if len(recipients) > 0 && !d.Enqueue(&recordv1.Fanout{Message: m, Recipients: recipients}, nil) {
					full = true
					break
				}
				next = m.GetSeq() + 1
			}
			if !full && !more {
				delete(groups, gid)
				continue
			}
			groups[gid] = next
		}
		if len(groups) == 0 {
			delete(r.behind, region)
		}
	}
}

// maxHeld bounds the forwards held for full queues, all regions together,
// and apart from them the presence changes.
const maxHeld = 4096

// forward queues a delivery for users roaming in region, behind any held
// for it; a full queue holds it for catchUp.
func (r *Router) forward(region string, f *recordv1.Fanout) {
	d, ok := r.out[region]
	if !ok {
		return
	}
	r.heldMu.Lock()
	defer r.heldMu.Unlock()
	if len(r.held[region]) == 0 && d.Enqueue(f, nil) {
		return
	}
	if r.nHeld >= maxHeld {
		if r.heldLost.Add(1)%1000 == 1 {
			r.log.Warn("forwarding queue full and too much held; roaming recipients will find the gap and read it from history",
				slog.String("region", region), slog.Uint64("lost", r.heldLost.Load()))
		}
		return
	}
	r.held[region] = append(r.held[region], f)
	r.nHeld++
}

// Held returns how many forwards and presence changes are held for
// region's full queue.
func (r *Router) Held(region string) int {
	r.heldMu.Lock()
	defer r.heldMu.Unlock()
	return len(r.held[region]) + len(r.heldPresence[region])
}

// sendHeld sends the held forwards, in order, and presence changes while
// their queues have room.
func (r *Router) sendHeld() {
	r.heldMu.Lock()
	defer r.heldMu.Unlock()
	for region, held := range r.heldPresence {
		d := r.out[region]
		for k, ch := range held {
			if !d.Room() || !d.Enqueue(nil, ch) {
				break
			}
			delete(held, k)
			r.nPresence--
		}
		if len(held) == 0 {
			delete(r.heldPresence, region)
		}
	}
	for region, fs := range r.held {
		d := r.out[region]
		n := 0
		for n < len(fs) && d.Room() && d.Enqueue(fs[n], nil) {
			n++
		}
		r.nHeld -= n
		if n == len(fs) {
			delete(r.held, region)
			continue
		}
		clear(fs[:n])
		r.held[region] = fs[n:]
	}
}

// fellBehind records that region's queue refused seq of a group.
func (r *Router) fellBehind(region, groupID string, seq uint64) {
	groups := r.behind[region]
	if groups == nil {
		groups = make(map[string]uint64)
		r.behind[region] = groups
	}
	if cur, ok := groups[groupID]; !ok || seq < cur {
		groups[groupID] = seq
	}
}

// route splits a group's members by the region each is at and sends each
// other region one fanout.
func (r *Router) route(g *recordv1.Group, m *recordv1.Message) {
	for region, recipients := range r.split(g) {
		d, ok := r.out[region]
		if !ok {
			r.log.Warn("members in a region not in the federation", slog.String("region", region), slog.Int("members", len(recipients)))
			continue
		}
		if !d.Enqueue(&recordv1.Fanout{Message: m, Recipients: recipients}, nil) {
			r.fellBehind(region, g.GetId(), m.GetSeq())
		}
	}
}

// split returns a group's members by the region each is at now, other
// than this one.
func (r *Router) split(g *recordv1.Group) map[string][]string {
	byRegion := make(map[string][]string)
	for _, mem := range g.GetMembers() {
		where := r.where(mem.GetUserId(), mem.GetHomeRegion())
		if where != r.region {
			byRegion[where] = append(byRegion[where], mem.GetUserId())
		}
	}
	return byRegion
}

// where returns the region a user is connected to now, as far as the home
// directory knows, else the user's home.
func (r *Router) where(userID, home string) string {
	now := time.Now()
	r.locMu.Lock()
	e, ok := r.locCache[userID]
	r.locMu.Unlock()
	if ok && now.Before(e.expires) {
		return e.region
	}
	region := home
	if rec, err := r.store.Locate(roamingv1.DirectoryKind_DIRECTORY_KIND_USER, userID); err == nil {
		region = rec.GetHomeRegion()
		if rec.GetLocation() != "" {
			region = rec.GetLocation()
		}
	}
	r.locMu.Lock()
	if len(r.locCache) > 1<<20 {
		clear(r.locCache)
	}
	r.locCache[userID] = locEntry{region: region, expires: now.Add(locTTL)}
	r.locMu.Unlock()
	return region
}

// Inbound takes a batch a peer delivered: duplicates are dropped, recipients
// homed here but connected elsewhere are forwarded there, the rest are
// handed to the local service center.
func (r *Router) Inbound(peer string, req *roamingv1.DeliverRequest) {
	if fn := r.inbound.Load(); fn != nil && len(req.GetItems()) > 0 {
		(*fn)(peer, req.GetItems())
	}
	lp := r.local.Load()
	var items []*recordv1.Fanout
	for _, f := range req.GetItems() {
		var here []string
		forward := make(map[string][]string)
		// A peer delivers messages of the groups it homes, and forwards
		// them to the users it homes; anything else is a forgery.
		groupHome := r.homeOf(roamingv1.DirectoryKind_DIRECTORY_KIND_GROUP, f.GetMessage().GetGroupId())
		for _, uid := range f.GetRecipients() {
			if groupHome != peer && r.homeOf(roamingv1.DirectoryKind_DIRECTORY_KIND_USER, uid) != peer {
				if r.refused.Add(1)%1000 == 1 {
					r.log.Warn("refused a delivery the peer has no standing to make", slog.String("peer", peer),
						slog.String("group", f.GetMessage().GetGroupId()), slog.String("recipient", uid), slog.Uint64("refused", r.refused.Load()))
				}
				continue
			}
			if !r.seen.add(f.GetMessage().GetMessageId(), uid) {
				continue
			}
			if loc := r.forwardTo(uid); loc != "" && loc != r.region {
				forward[loc] = append(forward[loc], uid)
				continue
			}
			here = append(here, uid)
		}
		if len(here) > 0 {
			items = append(items, &recordv1.Fanout{Message: f.GetMessage(), Recipients: here})
		}
		for region, uids := range forward {
			r.forward(region, &recordv1.Fanout{Message: f.GetMessage(), Recipients: uids})
		}
	}
	if lp == nil {
		return
	}
	if len(items) > 0 {
		(*lp).Deliver(items)
	}
	if len(req.GetPresence()) > 0 {
		(*lp).ApplyPresence(req.GetPresence())
	}
}

// homeOf returns the home region of a user or group as the directory
// knows it, or "" when it does not.
func (r *Router) homeOf(kind roamingv1.DirectoryKind, key string) string {
	rec, err := r.store.Locate(kind, key)
	if err != nil {
		return ""
	}
	return rec.GetHomeRegion()
}

// Refused counts delivered items refused because the peer had no standing
// to deliver them.
func (r *Router) Refused() uint64 { return r.refused.Load() }

// Dropped counts committed batches let go because the routing queue was
// full; their remote recipients catch up from history.
func (r *Router) Dropped() uint64 { return r.dropped.Load() }

// HeldLost counts forwards to roaming users lost because too many were
// already held for full queues; those users catch up from history.
func (r *Router) HeldLost() uint64 { return r.heldLost.Load() }

// forwardTo returns where a user homed here is connected, if elsewhere.
func (r *Router) forwardTo(userID string) string {
	rec, err := r.store.Locate(roamingv1.DirectoryKind_DIRECTORY_KIND_USER, userID)
	if err != nil || rec.GetHomeRegion() != r.region {
		return ""
	}
	return rec.GetLocation()
}

// recentSet remembers the last n (message, recipient) pairs seen.
type recentSet struct {
	mu   sync.Mutex
	set  map[string]struct{}
	ring []string
	next int
}

func newRecentSet(n int) *recentSet {
	return &recentSet{set: make(map[string]struct{}, n), ring: make([]string, n)}
}

// add records a pair and reports whether it was new.
func (s *recentSet) add(msgID, recipient string) bool {
	k := msgID + "/" + recipient
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.set[k]; ok {
		return false
	}
	if old := s.ring[s.next]; old != "" {
		delete(s.set, old)
	}
	s.ring[s.next] = k
	s.next = (s.next + 1) % len(s.ring)
	s.set[k] = struct{}{}
	return true
}
