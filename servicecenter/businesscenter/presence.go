package businesscenter

import (
	"context"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	recordv1 "github.com/roamfed/roamfed/api/record/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
)

// coMembers returns the users who share a group with userID, in any
// region, excluding userID, sorted.
func (s *Server) coMembers(ctx context.Context, userID string) ([]string, error) {
	groups, err := s.userGroups(ctx, userID)
	if err != nil {
		return nil, err
	}
	seen := make(map[string]struct{})
	for _, ug := range groups {
		for _, m := range ug.GetGroup().GetMembers() {
			if m.GetUserId() != userID {
				seen[m.GetUserId()] = struct{}{}
			}
		}
	}
	out := make([]string, 0, len(seen))
	for u := range seen {
		out = append(out, u)
	}
	sort.Strings(out)
	return out, nil
}

// watchGroup lets a user who just joined a group and the group's members
// see each other's presence in the sessions open on this node.
func (s *Server) watchGroup(userID string, g *recordv1.Group) {
	var peers []string
	for _, m := range g.GetMembers() {
		if m.GetUserId() == userID {
			continue
		}
		peers = append(peers, m.GetUserId())
		for _, ss := range s.hub.sessionsOf(m.GetUserId()) {
			s.hub.watch(ss, []string{userID})
		}
	}
	for _, ss := range s.hub.sessionsOf(userID) {
		s.hub.watch(ss, peers)
	}
}

// announce publishes that a user's sessions on this node began or ended,
// to this region's nodes and through the roaming system to the others, and
// tells a roaming user's home where the user is.
func (s *Server) announce(ss *session, online bool) {
	ch := &recordv1.PresenceChange{
		UserId:   ss.userID,
		Username: ss.username,
		Online:   online,
		Region:   s.cfg.Region,
		Node:     s.cfg.Node,
		At:       timestamppb.New(s.cfg.Now()),
	}
	s.publish(s.presenceSubject, ch)
	if s.roaming == nil {
		return
	}
	s.roaming.Presence(ch)
	if ss.home == s.cfg.Region {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := s.roaming.UpdateLocation(ctx, ss.home, &roamingv1.UpdateLocationRequest{
			UserId: ss.userID, Region: s.cfg.Region, Online: online,
		})
		if err != nil {
			s.log.Warn("location update failed", slog.String("user", ss.userID),
				slog.String("home", ss.home), slog.Bool("online", online), slog.Any("err", err))
		}
	}()
}

// ApplyPresence publishes presence changes of other regions' users to this
// region's nodes. The roaming system calls it.
func (s *Server) ApplyPresence(chs []*recordv1.PresenceChange) {
	for _, ch := range chs {
		s.publish(s.presenceSubject, ch)
	}
}

// onPresence applies a presence change from the bus and, when the user's
// presence changed, tells the sessions here that watch the user.
func (s *Server) onPresence(msg *nats.Msg) {
	ch := new(recordv1.PresenceChange)
	if err := proto.Unmarshal(msg.Data, ch); err != nil {
		s.log.Warn("presence: undecodable bus message", slog.Any("err", err))
		return
	}
	if !s.presence.apply(ch) {
		return
	}
	p := &clientv1.Presence{UserId: ch.GetUserId(), Username: ch.GetUsername(), Online: ch.GetOnline(), At: ch.GetAt()}
	if p.Online {
		p.Region = ch.GetRegion()
	}
	r := &clientv1.SessionResponse{Kind: &clientv1.SessionResponse_Presence{Presence: p}}
	for _, ss := range s.hub.watchersOf(ch.GetUserId()) {
		// Presence is state, not history: when a client is too slow
		// to take it, it sees the next change or the next Ready.
		ss.control(r)
	}
}

// presenceTable tracks which users have sessions on which nodes, in every
// region.
type presenceTable struct {
	mu    sync.Mutex
	nodes map[string]map[string]struct{} // user → nodes with sessions
	info  map[string]*clientv1.Presence
}

func newPresenceTable() *presenceTable {
	return &presenceTable{nodes: make(map[string]map[string]struct{}), info: make(map[string]*clientv1.Presence)}
}

// apply records a change and reports whether the user's presence changed.
func (t *presenceTable) apply(ch *recordv1.PresenceChange) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	nodes := t.nodes[ch.GetUserId()]
	wasOnline := len(nodes) > 0
	if ch.GetOnline() {
		if nodes == nil {
			nodes = make(map[string]struct{})
			t.nodes[ch.GetUserId()] = nodes
		}
		nodes[ch.GetNode()] = struct{}{}
		t.info[ch.GetUserId()] = &clientv1.Presence{
			UserId: ch.GetUserId(), Username: ch.GetUsername(), Online: true, Region: ch.GetRegion(), At: ch.GetAt(),
		}
	} else {
		delete(nodes, ch.GetNode())
		if len(nodes) == 0 {
			delete(t.nodes, ch.GetUserId())
			delete(t.info, ch.GetUserId())
		}
	}
	return wasOnline != (len(t.nodes[ch.GetUserId()]) > 0)
}

// onlineAmong returns the presence of the users in ids that are online.
func (t *presenceTable) onlineAmong(ids []string) []*clientv1.Presence {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*clientv1.Presence
	for _, id := range ids {
		if p, ok := t.info[id]; ok {
			out = append(out, p)
		}
	}
	return out
}
