package businesscenter

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	"github.com/roamfed/roamfed/internal/ids"
	"github.com/roamfed/roamfed/servicecenter/datacenter"
)

// ErrDraining ends Session streams when the node shuts down; clients
// reconnect, to this region's other nodes or to this one when it is back.
var ErrDraining = status.Error(codes.Unavailable, "service-center node is shutting down; reconnect")

// Session is the live stream of one client.
func (s *Server) Session(stream clientv1.ClientService_SessionServer) error {
	c, err := s.authenticate(stream.Context())
	if err != nil {
		return err
	}
	release, err := s.pool.AcquireSession("user:" + c.userID)
	if err != nil {
		return err
	}
	defer release()

	ctx, cancel := context.WithCancelCause(stream.Context())
	defer cancel(nil)
	ss := &session{
		id:        ids.New(ids.Session),
		userID:    c.userID,
		username:  c.username,
		home:      c.home,
		srv:       s,
		cancel:    cancel,
		maxQueued: s.pool.Limits().MaxQueuedPerSession,
		out:       make(chan outFrame, s.pool.Limits().MaxQueuedPerSession+controlSlots),
		pending:   make(map[uint64]*pendingDelivery),
		lagging:   make(map[string]uint64),
		acked:     make(map[string]uint64),
	}
	peers, err := s.coMembers(ctx, ss.userID)
	if err != nil {
		return err
	}
	// Register before Ready so that nothing committed after Ready is
	// missed; deliveries queue in out until the writer starts.
	first, err := s.hub.add(ss, peers)
	if err != nil {
		return err
	}
	defer func() {
		if s.hub.remove(ss) {
			s.announce(ss, false)
		}
		ss.flushCursors()
	}()
	if err := stream.Send(&clientv1.SessionResponse{Kind: &clientv1.SessionResponse_Ready{Ready: &clientv1.Ready{
		SessionId: ss.id,
		UserId:    ss.userID,
		Region:    s.cfg.Region,
		Online:    s.presence.onlineAmong(peers),
	}}}); err != nil {
		return err
	}
	if first {
		s.announce(ss, true)
	}

	errc := make(chan error, 2)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := ss.write(ctx, stream); err != nil {
			errc <- err
		}
	}()
	// The reader blocks in Recv until the stream ends, which happens only
	// after this handler returns; it owns no state but the session's.
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			ss.handle(req)
		}
	}()

	tick := time.NewTicker(max(s.cfg.AckTimeout/3, 20*time.Millisecond))
	defer tick.Stop()
	var result error
loop:
	for {
		select {
		case <-ctx.Done():
			result = context.Cause(ctx)
			if errors.Is(result, context.Canceled) {
				result = nil
			}
			break loop
		case err := <-errc:
			if !errors.Is(err, io.EOF) {
				result = err
			}
			break loop
		case now := <-tick.C:
			ss.tick(now)
		}
	}
	cancel(nil)
	wg.Wait()
	ss.close()
	return result
}

// controlSlots is room in a session's queue for frames that are not
// deliveries: presence, catch-up notices, pongs.
const controlSlots = 64

// A Deliveries frame holds at most maxBatchDeliveries deliveries and
// maxBatchBytes of them (a delivery larger than that goes alone, in a
// Delivery frame). The server sets no send limit; the bound is the 4 MiB a
// gRPC client receives by default, with room to spare.
const (
	maxBatchDeliveries = 256
	maxBatchBytes      = 1 << 20
)

// outFrame is one entry of a session's queue: a delivery, or a frame that
// is not one (ctl).
type outFrame struct {
	d   queuedDelivery
	ctl *clientv1.SessionResponse
}

// write sends the session's queued frames in order until ctx ends or a Send
// fails. For a client that reads Deliveries frames, the deliveries queued
// behind the one taken go in the same frame, up to the first frame that is
// not a delivery, which follows the batch.
func (ss *session) write(ctx context.Context, stream clientv1.ClientService_SessionServer) error {
	var (
		held    *outFrame
		pending outFrame
		batch   []queuedDelivery
		frame   encodedFrame
	)
	for {
		if held != nil {
			pending, held = *held, nil
		} else {
			select {
			case <-ctx.Done():
				return nil
			case pending = <-ss.out:
			}
		}
		if pending.ctl != nil {
			if err := stream.Send(pending.ctl); err != nil {
				return err
			}
			continue
		}
		batch = append(batch[:0], pending.d)
		if ss.batching.Load() {
			batch, held = ss.batch(batch)
		}
		frame.set(batch)
		if err := stream.SendMsg(&frame); err != nil {
			return err
		}
		clear(batch) // let go of the messages
	}
}

// batch appends to ds, without waiting, the deliveries queued behind it,
// and returns them with the frame taken that did not fit (nil when none
// was).
func (ss *session) batch(ds []queuedDelivery) ([]queuedDelivery, *outFrame) {
	size := ds[0].batchedSize()
	for len(ds) < maxBatchDeliveries {
		select {
		case r := <-ss.out:
			if r.ctl != nil {
				return ds, &r
			}
			n := r.d.batchedSize()
			if size+n > maxBatchBytes {
				return ds, &r
			}
			ds = append(ds, r.d)
			size += n
		default:
			return ds, nil
		}
	}
	return ds, nil
}

type session struct {
	id, userID, username string
	home                 string
	srv                  *Server
	cancel               context.CancelCauseFunc
	maxQueued            int
	out                  chan outFrame
	// batching is set when the client declared that it reads Deliveries
	// frames.
	batching atomic.Bool

	mu      sync.Mutex
	closed  bool
	nextID  uint64
	pending map[uint64]*pendingDelivery
	// lagging holds, per group, the last sequence number the client is
	// known to have been sent in order, for groups whose live delivery is
	// paused until the client is told to catch up.
	lagging map[string]uint64
	// acked is the highest acknowledged sequence per group since the last
	// cursor flush.
	acked map[string]uint64
}

type pendingDelivery struct {
	id      uint64
	msg     *encodedMessage
	attempt uint32
	sentAt  time.Time
}

// deliver queues a committed message for the client.
func (ss *session) deliver(em *encodedMessage) {
	m := em.msg
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.closed {
		return
	}
	if _, paused := ss.lagging[m.GetGroupId()]; paused {
		return
	}
	if len(ss.pending) >= ss.maxQueued {
		ss.pauseLocked(m.GetGroupId(), m.GetSeq()-1)
		_ = ss.srv.pool.RefuseQueue("user:" + ss.userID)
		return
	}
	ss.nextID++
	d := &pendingDelivery{id: ss.nextID, msg: em, attempt: 1, sentAt: time.Now()}
	if !ss.sendLocked(d) {
		ss.pauseLocked(m.GetGroupId(), m.GetSeq()-1)
		return
	}
	ss.pending[d.id] = d
}

// sendLocked queues one attempt of a delivery without blocking.
func (ss *session) sendLocked(d *pendingDelivery) bool {
	select {
	case ss.out <- outFrame{d: queuedDelivery{id: d.id, attempt: d.attempt, m: d.msg}}:
		return true
	default:
		return false
	}
}

// pauseLocked stops live delivery of a group until the client has been
// told to fetch what follows after.
func (ss *session) pauseLocked(groupID string, after uint64) {
	if cur, ok := ss.lagging[groupID]; !ok || after < cur {
		ss.lagging[groupID] = after
	}
}

// control queues a frame that is not a delivery; it reports false when the
// queue is full.
func (ss *session) control(r *clientv1.SessionResponse) bool {
	select {
	case ss.out <- outFrame{ctl: r}:
		return true
	default:
		return false
	}
}

// handle applies one frame from the client.
func (ss *session) handle(req *clientv1.SessionRequest) {
	switch k := req.GetKind().(type) {
	case *clientv1.SessionRequest_Ack:
		ss.mu.Lock()
		for _, id := range k.Ack.GetDeliveryIds() {
			d, ok := ss.pending[id]
			if !ok {
				continue
			}
			delete(ss.pending, id)
			if g := d.msg.msg.GetGroupId(); d.msg.msg.GetSeq() > ss.acked[g] {
				ss.acked[g] = d.msg.msg.GetSeq()
			}
		}
		resume := len(ss.lagging) > 0 && len(ss.pending) <= ss.maxQueued/2
		ss.mu.Unlock()
		if resume {
			ss.resume()
		}
	case *clientv1.SessionRequest_Capabilities:
		ss.batching.Store(k.Capabilities.GetDeliveries())
	case *clientv1.SessionRequest_Ping:
		ss.control(&clientv1.SessionResponse{Kind: &clientv1.SessionResponse_Pong{Pong: &clientv1.Pong{Nonce: k.Ping.GetNonce()}}})
	}
}

// tick resends deliveries whose acknowledgement is overdue, gives up on
// those that used their attempts, tells the client what to catch up on,
// and flushes delivery cursors.
func (ss *session) tick(now time.Time) {
	timeout := ss.srv.cfg.AckTimeout
	ss.mu.Lock()
	for id, d := range ss.pending {
		if now.Sub(d.sentAt) < timeout {
			continue
		}
		if int(d.attempt) >= ss.srv.cfg.MaxAttempts {
			delete(ss.pending, id)
			ss.pauseLocked(d.msg.msg.GetGroupId(), d.msg.msg.GetSeq()-1)
			continue
		}
		d.attempt++
		d.sentAt = now
		if !ss.sendLocked(d) {
			delete(ss.pending, id)
			ss.pauseLocked(d.msg.msg.GetGroupId(), d.msg.msg.GetSeq()-1)
		}
	}
	ss.mu.Unlock()
	ss.resume()
	ss.flushCursors()
}

// resume sends a CatchUp for every paused group while there is room, and
// lets live delivery of those groups start again.
func (ss *session) resume() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(ss.pending) > ss.maxQueued/2 {
		return
	}
	for g, after := range ss.lagging {
		// A delivery still pending for this group is superseded by the
		// catch-up: the client fetches everything after `after`.
		for id, d := range ss.pending {
			if d.msg.msg.GetGroupId() == g && d.msg.msg.GetSeq() > after {
				delete(ss.pending, id)
			}
		}
		if !ss.control(&clientv1.SessionResponse{Kind: &clientv1.SessionResponse_CatchUp{CatchUp: &clientv1.CatchUp{GroupId: g, AfterSeq: after}}}) {
			return
		}
		delete(ss.lagging, g)
	}
}

// flushCursors writes the acknowledged positions to the data center.
func (ss *session) flushCursors() {
	ss.mu.Lock()
	if len(ss.acked) == 0 {
		ss.mu.Unlock()
		return
	}
	acked := ss.acked
	ss.acked = make(map[string]uint64)
	ss.mu.Unlock()
	cs := make([]datacenter.Cursor, 0, len(acked))
	for g, seq := range acked {
		cs = append(cs, datacenter.Cursor{UserID: ss.userID, GroupID: g, Seq: seq})
	}
	if err := ss.srv.store.AdvanceCursors(cs); err != nil {
		ss.srv.log.Warn("cursor flush failed", slog.String("user", ss.userID), slog.Any("err", err))
	}
}

func (ss *session) close() {
	ss.mu.Lock()
	ss.closed = true
	ss.pending = nil
	ss.mu.Unlock()
}

// hub is the node's registry of open sessions: by user, and by the users
// whose presence each session watches.
type hub struct {
	mu       sync.RWMutex
	draining bool
	byUser   map[string][]*session
	watchers map[string]map[*session]struct{}
	watching map[*session][]string
}

func newHub() *hub {
	return &hub{
		byUser:   make(map[string][]*session),
		watchers: make(map[string]map[*session]struct{}),
		watching: make(map[*session][]string),
	}
}

// add registers a session watching peers and reports whether it is its
// user's first on this node.
func (h *hub) add(ss *session, peers []string) (bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.draining {
		return false, ErrDraining
	}
	cur := h.byUser[ss.userID]
	// Copy on write: sessionsOf hands out the slice without a lock.
	next := make([]*session, len(cur), len(cur)+1)
	copy(next, cur)
	h.byUser[ss.userID] = append(next, ss)
	h.watchLocked(ss, peers)
	return len(cur) == 0, nil
}

// watch adds peers to what a registered session watches.
func (h *hub) watch(ss *session, peers []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.watching[ss]; ok {
		h.watchLocked(ss, peers)
	}
}

func (h *hub) watchLocked(ss *session, peers []string) {
	for _, p := range peers {
		w := h.watchers[p]
		if w == nil {
			w = make(map[*session]struct{})
			h.watchers[p] = w
		}
		if _, dup := w[ss]; !dup {
			w[ss] = struct{}{}
			h.watching[ss] = append(h.watching[ss], p)
		}
	}
	if h.watching[ss] == nil {
		h.watching[ss] = []string{}
	}
}

// remove unregisters a session and reports whether it was its user's last
// on this node.
func (h *hub) remove(ss *session) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range h.watching[ss] {
		delete(h.watchers[p], ss)
		if len(h.watchers[p]) == 0 {
			delete(h.watchers, p)
		}
	}
	delete(h.watching, ss)
	cur := h.byUser[ss.userID]
	next := make([]*session, 0, len(cur))
	for _, o := range cur {
		if o != ss {
			next = append(next, o)
		}
	}
	if len(next) == 0 {
		delete(h.byUser, ss.userID)
		return len(cur) > 0
	}
	h.byUser[ss.userID] = next
	return false
}

// watchersOf returns the sessions that watch a user's presence.
func (h *hub) watchersOf(userID string) []*session {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]*session, 0, len(h.watchers[userID]))
	for ss := range h.watchers[userID] {
		out = append(out, ss)
	}
	return out
}

func (h *hub) sessionsOf(userID string) []*session {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.byUser[userID]
}

// drain refuses new sessions and ends the open ones.
func (h *hub) drain() {
	h.mu.Lock()
	h.draining = true
	var all []*session
	for _, ss := range h.byUser {
		all = append(all, ss...)
	}
	h.mu.Unlock()
	for _, ss := range all {
		ss.cancel(ErrDraining)
	}
}

// Drain ends every open Session stream with UNAVAILABLE and refuses new
// ones, so that a graceful stop of the gRPC server does not wait for
// streams that never end on their own.
func (s *Server) Drain() { s.hub.drain() }
