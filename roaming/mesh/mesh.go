package mesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
)

// Config tunes a Mesh.
type Config struct {
	Self string
	// Peers maps each peer's name to its roaming address.
	Peers map[string]string
	// HeartbeatEvery is the heartbeat interval; 0 means 200ms.
	HeartbeatEvery time.Duration
	// HeartbeatTimeout bounds one heartbeat; 0 means 300ms.
	HeartbeatTimeout time.Duration
	// MissThreshold is how many heartbeats in a row a link may miss
	// before it is down; 0 means 3. With the defaults a dead link is
	// detected within 1 s.
	MissThreshold int
	// HopLimit bounds the regions a relayed connection passes; 0 means 3.
	HopLimit int
	// Dial makes the underlying connections; nil means net.Dialer. Tests
	// pass a dialer that can delay or cut links.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// Changed is called, without locks held, after a link changes state
	// or a route changes.
	Changed func(peer string)
	Logger  *slog.Logger
}

// Mesh is a region's link table and router.
type Mesh struct {
	cfg    Config
	log    *slog.Logger
	byAddr map[string]string

	mu     sync.Mutex
	links  map[string]*link
	conns  map[*trackedConn]struct{}
	drills []Drill
	// recorded is closed, and replaced, whenever a heartbeat outcome or a
	// drill is applied: a route may then have appeared, or a link come up
	// (WaitRoute, WaitLinkUp).
	recorded chan struct{}

	client func(peer string) (roamingv1.BusinessServiceClient, error)

	// relaysOpened counts this region's connections that went through a
	// relay; relaysCarried the relays this region carried for others.
	relaysOpened, relaysCarried atomic.Uint64
	// integrity counts connections closed on a record that failed TLS's
	// checks (Credentials), whichever the peer.
	integrity atomic.Uint64

	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

type link struct {
	peer      string
	state     roamingv1.LinkState
	cut       bool
	gate      *gate
	rtt       time.Duration // moving average
	misses    int
	lastErr   string
	since     time.Time
	view      map[string]*roamingv1.LinkView // the peer's links, from its last answer
	inFlight  int
	downCount uint64
	integrity uint64 // connections with the peer closed on a bad record
	// known is set by the first heartbeat outcome; until then traffic
	// goes direct, as it would have without a mesh.
	known bool
	// kick asks the link's heartbeat loop for a heartbeat now rather than
	// at the next tick; it holds at most one request.
	kick chan struct{}
}

// New makes a mesh; links start down until their first heartbeat.
func New(cfg Config) *Mesh {
	if cfg.HeartbeatEvery <= 0 {
		cfg.HeartbeatEvery = 200 * time.Millisecond
	}
	if cfg.HeartbeatTimeout <= 0 {
		cfg.HeartbeatTimeout = 300 * time.Millisecond
	}
	if cfg.MissThreshold <= 0 {
		cfg.MissThreshold = 3
	}
	if cfg.HopLimit <= 0 {
		cfg.HopLimit = 3
	}
	if cfg.Dial == nil {
		var d net.Dialer
		cfg.Dial = func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Mesh{
		cfg:    cfg,
		log:    cfg.Logger,
		byAddr: make(map[string]string),
		links:  make(map[string]*link),
		conns:  make(map[*trackedConn]struct{}),
		stop:   make(chan struct{}),

		recorded: make(chan struct{}),
	}
	now := time.Now()
	for name, addr := range cfg.Peers {
		m.byAddr[addr] = name
		m.links[name] = &link{peer: name, state: roamingv1.LinkState_LINK_STATE_DOWN, gate: newGate(), kick: make(chan struct{}, 1), since: now}
	}
	return m
}

// Start begins heartbeats. client returns the BusinessService client of a
// peer, on a connection made with DirectDial.
func (m *Mesh) Start(client func(peer string) (roamingv1.BusinessServiceClient, error)) {
	m.client = client
	for peer := range m.cfg.Peers {
		m.wg.Add(1)
		go m.heartbeats(peer)
	}
}

// Close stops heartbeats and closes every connection the mesh made.
func (m *Mesh) Close() {
	m.once.Do(func() {
		close(m.stop)
		m.wg.Wait()
		m.mu.Lock()
		conns := make([]*trackedConn, 0, len(m.conns))
		for c := range m.conns {
			conns = append(conns, c)
		}
		m.mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
}

func (m *Mesh) heartbeats(peer string) {
	defer m.wg.Done()
	kick := m.links[peer].kick // the links map and a link's kick never change
	t := time.NewTicker(m.cfg.HeartbeatEvery)
	defer t.Stop()
	for {
		m.mu.Lock()
		l := m.links[peer]
		// Heartbeats go out on the interval whether or not earlier ones
		// have answered, so that a silent link is noticed in time; a few
		// outstanding are enough.
		send := l.inFlight < m.cfg.MissThreshold+1
		if send {
			l.inFlight++
		}
		m.mu.Unlock()
		if send {
			m.wg.Add(1)
			go m.beat(peer)
		}
		select {
		case <-m.stop:
			return
		case <-t.C:
		case <-kick:
		}
	}
}

// beatSoonLocked asks for a heartbeat to peer's link now, unless one was
// asked for already. It goes out as a tick's would, within the limit on
// heartbeats outstanding.
func (l *link) beatSoonLocked() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

func (m *Mesh) beat(peer string) {
	defer m.wg.Done()
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.HeartbeatTimeout)
	defer cancel()
	go func() {
		select {
		case <-m.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	start := time.Now()
	var resp *roamingv1.HeartbeatResponse
	c, err := m.client(peer)
	if err == nil {
		resp, err = c.Heartbeat(ctx, &roamingv1.HeartbeatRequest{SentAt: timestamppb.New(start)}, grpc.WaitForReady(false))
	}
	if err == nil && resp.GetRegion() != peer {
		err = fmt.Errorf("peer answered as %q", resp.GetRegion())
	}
	m.record(peer, time.Since(start), resp, err)
}

// record applies one heartbeat's outcome to the link table.
func (m *Mesh) record(peer string, rtt time.Duration, resp *roamingv1.HeartbeatResponse, err error) {
	m.mu.Lock()
	l := m.links[peer]
	l.inFlight--
	old := l.state
	wasKnown := l.known
	if err != nil {
		l.misses++
		l.lastErr = status.Convert(err).Message()
		if l.misses >= m.cfg.MissThreshold && l.state == roamingv1.LinkState_LINK_STATE_UP {
			l.state = roamingv1.LinkState_LINK_STATE_DOWN
			l.downCount++
		}
	} else {
		l.misses = 0
		if l.rtt == 0 {
			l.rtt = rtt
		} else {
			l.rtt = (l.rtt*7 + rtt) / 8
		}
		l.view = make(map[string]*roamingv1.LinkView)
		for _, v := range resp.GetLinks() {
			l.view[v.GetPeer()] = v
		}
		if !l.cut {
			l.state = roamingv1.LinkState_LINK_STATE_UP
		}
	}
	if l.cut {
		l.state = roamingv1.LinkState_LINK_STATE_CUT
	}
	// A link is known once it has answered, or has missed enough to be
	// called down.
	l.known = l.known || err == nil || l.misses >= m.cfg.MissThreshold
	changed := old != l.state || wasKnown != l.known
	if changed {
		l.since = time.Now()
	}
	m.notifyLocked()
	state, lastErr, avg, downs := l.state, l.lastErr, l.rtt, l.downCount
	m.mu.Unlock()
	if changed {
		m.log.Info("link state changed", slog.String("peer", peer), slog.String("from", stateName(old)),
			slog.String("to", stateName(state)), slog.Float64("rtt_ms", float64(avg.Microseconds())/1000), slog.Uint64("downs", downs),
			slog.String("last_error", lastErr))
		m.reroute(peer, state == roamingv1.LinkState_LINK_STATE_UP)
	}
}

// reroute closes the traffic connections to peer that no longer take the
// best route, so that gRPC redials them. A link that went down also ends
// the relays through that peer.
func (m *Mesh) reroute(peer string, up bool) {
	m.mu.Lock()
	var stale []*trackedConn
	for c := range m.conns {
		switch {
		case c.traffic && c.peer == peer && (c.via == "") != up:
			stale = append(stale, c)
		case !up && c.via == peer:
			stale = append(stale, c)
		}
	}
	routes := m.routesLocked()
	m.mu.Unlock()
	for _, c := range stale {
		_ = c.Close()
	}
	m.log.Info("reroute", slog.String("peer", peer), slog.Bool("up", up),
		slog.Int("closed_conns", len(stale)), slog.String("routes", routes))
	if m.cfg.Changed == nil {
		return
	}
	// Any route may have changed: relays pass through peer.
	for other := range m.cfg.Peers {
		m.cfg.Changed(other)
	}
}

// routesLocked renders the route to every peer for logs:
// "eu=direct us=via:eu".
func (m *Mesh) routesLocked() string {
	names := make([]string, 0, len(m.links))
	for name := range m.links {
		names = append(names, name)
	}
	sort.Strings(names)
	var b strings.Builder
	for i, name := range names {
		if i > 0 {
			b.WriteByte(' ')
		}
		switch via, ok := m.routeLocked(name, nil); {
		case !ok:
			b.WriteString(name + "=none")
		case via == "":
			b.WriteString(name + "=direct")
		default:
			b.WriteString(name + "=via:" + via)
		}
	}
	return b.String()
}

// Relays returns how many of this region's connections went through a
// relay, and how many relays this region carried for others, since New.
func (m *Mesh) Relays() (opened, carried uint64) {
	return m.relaysOpened.Load(), m.relaysCarried.Load()
}

func stateName(s roamingv1.LinkState) string {
	switch s {
	case roamingv1.LinkState_LINK_STATE_UP:
		return "up"
	case roamingv1.LinkState_LINK_STATE_DOWN:
		return "down"
	case roamingv1.LinkState_LINK_STATE_CUT:
		return "cut"
	}
	return "unknown"
}

// Views returns this region's link views, for heartbeat answers.
func (m *Mesh) Views() []*roamingv1.LinkView {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*roamingv1.LinkView, 0, len(m.links))
	for _, l := range m.links {
		out = append(out, &roamingv1.LinkView{Peer: l.peer, State: l.state, RttMicros: uint64(l.rtt.Microseconds())})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Peer < out[j].Peer })
	return out
}

// LinkStatus is one row of the link table.
type LinkStatus struct {
	Peer      string
	State     roamingv1.LinkState
	RTT       time.Duration
	LastError string
	Since     time.Time
	// Via is the region traffic goes through; empty for direct, and for
	// no route (NoRoute then is true).
	Via     string
	NoRoute bool
	// Downs counts transitions to down.
	Downs uint64
	// IntegrityFailures counts this region's connections with the peer,
	// direct or relayed, that closed on a record from the peer that
	// failed TLS's checks: bytes altered on the way (see Credentials).
	IntegrityFailures uint64
}

// Status returns the link table, by peer name.
func (m *Mesh) Status() []LinkStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]LinkStatus, 0, len(m.links))
	for _, l := range m.links {
		via, ok := m.routeLocked(l.peer, nil)
		out = append(out, LinkStatus{
			Peer: l.peer, State: l.state, RTT: l.rtt, LastError: l.lastErr, Since: l.since,
			Via: via, NoRoute: !ok, Downs: l.downCount, IntegrityFailures: l.integrity,
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Peer < out[j].Peer })
	return out
}

// Route returns how traffic reaches peer now: "" for direct, a region name
// for a relay, or false when there is no route.
func (m *Mesh) Route(peer string) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.routeLocked(peer, nil)
}

// WaitRoute returns once traffic has a route to peer (see Route), or an
// error wrapping ErrNoRoute when ctx ends first. A link restored by a
// drill, for one, is routable only after its next heartbeat passes.
func (m *Mesh) WaitRoute(ctx context.Context, peer string) error {
	for {
		m.mu.Lock()
		_, isPeer := m.links[peer]
		_, ok := m.routeLocked(peer, nil)
		recorded := m.recorded
		m.mu.Unlock()
		switch {
		case !isPeer:
			return fmt.Errorf("mesh: %q is not a peer of %s", peer, m.cfg.Self)
		case ok:
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w %s from %s (waited: %w)", ErrNoRoute, peer, m.cfg.Self, ctx.Err())
		case <-m.stop:
			return fmt.Errorf("%w %s from %s (mesh closed)", ErrNoRoute, peer, m.cfg.Self)
		case <-recorded:
		}
	}
}

// WaitLinkUp returns once the direct link to peer is up: a heartbeat
// passed since it was last down or cut. A link that is neither up nor cut
// is sent a heartbeat at once instead of at the next tick, so a link
// restored by a drill is seen up after about one round trip. It returns an
// error when ctx ends first, or the mesh closes.
func (m *Mesh) WaitLinkUp(ctx context.Context, peer string) error {
	asked := false
	for {
		m.mu.Lock()
		l, ok := m.links[peer]
		var state roamingv1.LinkState
		if ok {
			state = l.state
			if state == roamingv1.LinkState_LINK_STATE_DOWN && !asked {
				l.beatSoonLocked()
				asked = true
			}
		}
		recorded := m.recorded
		m.mu.Unlock()
		switch {
		case !ok:
			return fmt.Errorf("mesh: %q is not a peer of %s", peer, m.cfg.Self)
		case state == roamingv1.LinkState_LINK_STATE_UP:
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("mesh: link %s-%s still %s (waited: %w)", m.cfg.Self, peer, stateName(state), ctx.Err())
		case <-m.stop:
			return fmt.Errorf("mesh: link %s-%s still %s (mesh closed)", m.cfg.Self, peer, stateName(state))
		case <-recorded:
		}
	}
}

// notifyLocked wakes WaitRoute's and WaitLinkUp's waiters to look at the
// links again.
func (m *Mesh) notifyLocked() {
	close(m.recorded)
	m.recorded = make(chan struct{})
}

// routeLocked picks direct, else the up third region (not in avoid) with
// the least round trip sum whose own link to peer is up.
func (m *Mesh) routeLocked(peer string, avoid []string) (string, bool) {
	l, ok := m.links[peer]
	if !ok {
		return "", false
	}
	if l.state == roamingv1.LinkState_LINK_STATE_UP || !l.known && !l.cut {
		return "", true
	}
	best, bestRTT := "", time.Duration(-1)
	for name, x := range m.links {
		if name == peer || x.state != roamingv1.LinkState_LINK_STATE_UP || slices.Contains(avoid, name) {
			continue
		}
		v, ok := x.view[peer]
		if !ok || v.GetState() != roamingv1.LinkState_LINK_STATE_UP {
			continue
		}
		sum := x.rtt + time.Duration(v.GetRttMicros())*time.Microsecond
		if bestRTT < 0 || sum < bestRTT || sum == bestRTT && name < best {
			best, bestRTT = name, sum
		}
	}
	return best, best != ""
}

// Drill is one cut or restore applied to this region's side of a link.
type Drill struct {
	Peer   string
	Cut    bool
	At     time.Time
	Reason string
}

// Drills returns the drills applied here, oldest first.
func (m *Mesh) Drills() []Drill {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.drills)
}

// maxDrills bounds the drill log.
const maxDrills = 1000

// Cut applies this region's side of a drill on the link with peer.
func (m *Mesh) Cut(peer, reason string) error { return m.setCut(peer, true, reason) }

// Restore undoes Cut.
func (m *Mesh) Restore(peer, reason string) error { return m.setCut(peer, false, reason) }

func (m *Mesh) setCut(peer string, cut bool, reason string) error {
	m.mu.Lock()
	l, ok := m.links[peer]
	if !ok {
		m.mu.Unlock()
		return fmt.Errorf("mesh: %q is not a peer of %s", peer, m.cfg.Self)
	}
	m.drills = append(m.drills, Drill{Peer: peer, Cut: cut, At: time.Now(), Reason: reason})
	if len(m.drills) > maxDrills {
		m.drills = slices.Delete(m.drills, 0, len(m.drills)-maxDrills)
	}
	old := l.state
	l.cut = cut
	l.gate.set(cut)
	if cut {
		l.state = roamingv1.LinkState_LINK_STATE_CUT
	} else if l.state == roamingv1.LinkState_LINK_STATE_CUT {
		// Up again only when a heartbeat passes: one now, not at the next
		// tick, so that the restore is seen within a round trip.
		l.state = roamingv1.LinkState_LINK_STATE_DOWN
		l.misses = m.cfg.MissThreshold
		l.beatSoonLocked()
	}
	changed := old != l.state
	if changed {
		l.since = time.Now()
	}
	m.notifyLocked()
	state := l.state
	m.mu.Unlock()
	m.log.Info("link drill", slog.String("peer", peer), slog.Bool("cut", cut), slog.String("reason", reason))
	if changed {
		m.reroute(peer, state == roamingv1.LinkState_LINK_STATE_UP)
	}
	return nil
}

// IsCut reports whether a drill has cut the link with peer.
func (m *Mesh) IsCut(peer string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, ok := m.links[peer]
	return ok && l.cut
}

// ErrNoRoute means no healthy path reaches the peer now.
var ErrNoRoute = errors.New("mesh: no route to region")

func (m *Mesh) track(c *trackedConn) {
	m.mu.Lock()
	m.conns[c] = struct{}{}
	m.mu.Unlock()
}

func (m *Mesh) untrack(c *trackedConn) {
	m.mu.Lock()
	delete(m.conns, c)
	m.mu.Unlock()
}

// peerOf maps a dialed address to its peer.
func (m *Mesh) peerOf(addr string) (string, error) {
	p, ok := m.byAddr[addr]
	if !ok {
		return "", fmt.Errorf("mesh: %s is not a peer's roaming address", addr)
	}
	return p, nil
}

// DirectDial dials a peer's roaming address directly. Heartbeats use it.
func (m *Mesh) DirectDial(ctx context.Context, addr string) (net.Conn, error) {
	peer, err := m.peerOf(addr)
	if err != nil {
		return nil, err
	}
	return m.dialDirect(ctx, peer, addr, false)
}

func (m *Mesh) dialDirect(ctx context.Context, peer, addr string, traffic bool) (net.Conn, error) {
	m.mu.Lock()
	g := m.links[peer].gate
	m.mu.Unlock()
	// A cut link hangs new connections as a failed network would.
	if !g.wait(ctx.Done()) {
		return nil, ctx.Err()
	}
	raw, err := m.cfg.Dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	c := &trackedConn{Conn: raw, m: m, peer: peer, gate: g, traffic: traffic, closed: make(chan struct{})}
	m.track(c)
	return c, nil
}

// RoutedDial dials a peer for traffic over the best route now.
func (m *Mesh) RoutedDial(ctx context.Context, addr string) (net.Conn, error) {
	peer, err := m.peerOf(addr)
	if err != nil {
		return nil, err
	}
	return m.dialRoute(ctx, peer, []string{m.cfg.Self}, true)
}

// dialRoute reaches peer directly when the link is up, else through a
// relay; hops are the regions the connection has passed, this one last.
func (m *Mesh) dialRoute(ctx context.Context, peer string, hops []string, traffic bool) (net.Conn, error) {
	m.mu.Lock()
	via, ok := m.routeLocked(peer, hops)
	m.mu.Unlock()
	switch {
	case !ok:
		return nil, fmt.Errorf("%w %s from %s", ErrNoRoute, peer, m.cfg.Self)
	case via == "":
		return m.dialDirect(ctx, peer, m.cfg.Peers[peer], traffic)
	case len(hops)+1 > m.cfg.HopLimit:
		return nil, fmt.Errorf("%w %s from %s within %d hops", ErrNoRoute, peer, m.cfg.Self, m.cfg.HopLimit)
	}
	raw, err := m.openRelay(ctx, via, peer, hops)
	if err != nil {
		return nil, err
	}
	c := &trackedConn{Conn: raw, m: m, peer: peer, via: via, traffic: traffic, closed: make(chan struct{})}
	m.track(c)
	m.relaysOpened.Add(1)
	m.log.Debug("relayed connection", slog.String("peer", peer), slog.String("via", via))
	return c, nil
}

// openRelay opens a Relay stream to via for a connection to dest.
func (m *Mesh) openRelay(ctx context.Context, via, dest string, hops []string) (net.Conn, error) {
	c, err := m.client(via)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(context.Background())
	stream, err := c.Relay(sctx)
	if err != nil {
		cancel()
		return nil, err
	}
	open := &roamingv1.RelayRequest{Kind: &roamingv1.RelayRequest_Open{Open: &roamingv1.RelayOpen{
		Origin: hops[0], Destination: dest, Hops: hops, HopLimit: uint32(m.cfg.HopLimit),
	}}}
	if err := stream.Send(open); err != nil {
		cancel()
		return nil, err
	}
	return newClientStreamConn(stream, cancel, via), nil
}

// ServeRelay carries one Relay stream from caller to its destination.
func (m *Mesh) ServeRelay(caller string, stream roamingv1.BusinessService_RelayServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	open := first.GetOpen()
	switch {
	case open == nil:
		return status.Error(codes.InvalidArgument, "relay: the first frame must open the relay")
	case len(open.GetHops()) == 0 || open.GetHops()[0] != open.GetOrigin() || open.GetHops()[len(open.GetHops())-1] != caller:
		return status.Errorf(codes.PermissionDenied, "relay: hops %v must start at origin %q and end at the caller %s", open.GetHops(), open.GetOrigin(), caller)
	case slices.Contains(open.GetHops(), m.cfg.Self):
		return status.Errorf(codes.FailedPrecondition, "relay: loop: %s is already in hops %v", m.cfg.Self, open.GetHops())
	case open.GetDestination() == m.cfg.Self:
		return status.Error(codes.InvalidArgument, "relay: destination is the relaying region itself")
	case uint32(len(open.GetHops())+1) > min(open.GetHopLimit(), uint32(m.cfg.HopLimit)):
		return status.Errorf(codes.FailedPrecondition, "relay: hop limit %d reached", open.GetHopLimit())
	}
	if _, ok := m.cfg.Peers[open.GetDestination()]; !ok {
		return status.Errorf(codes.NotFound, "relay: %q is not a region of the federation", open.GetDestination())
	}
	ctx := stream.Context()
	hops := append(slices.Clone(open.GetHops()), m.cfg.Self)
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	conn, err := m.dialRoute(dctx, open.GetDestination(), hops, false)
	cancel()
	if err != nil {
		return status.Errorf(codes.Unavailable, "relay to %s: %v", open.GetDestination(), err)
	}
	defer conn.Close()
	m.relaysCarried.Add(1)
	// The handler may return only when nothing sends on the stream any
	// more: the conn reader is waited for; the stream reader only writes
	// to conn and ends when the stream does.
	done := make(chan struct{}, 2)
	go func() {
		defer func() { done <- struct{}{} }()
		for {
			f, err := stream.Recv()
			if err != nil {
				return
			}
			if _, err := conn.Write(f.GetData()); err != nil {
				return
			}
		}
	}()
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		defer func() { done <- struct{}{} }()
		buf := make([]byte, 32<<10)
		for {
			n, err := conn.Read(buf)
			if n > 0 {
				if serr := stream.Send(&roamingv1.RelayResponse{Data: slices.Clone(buf[:n])}); serr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	select {
	case <-done:
	case <-ctx.Done():
	case <-m.stop:
	}
	_ = conn.Close()
	<-sent
	return nil
}
