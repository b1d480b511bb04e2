package businesscenter

import (
	"log/slog"
	"sort"
	"sync"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	recordv1 "github.com/roamfed/roamfed/api/record/v1"
)

// coMembers returns the users who share a group with userID, excluding
// userID, sorted.
func (s *Server) coMembers(userID string) ([]string, error) {
	gids, err := s.store.GroupsOf(userID)
	if err != nil {
		return nil, err
	}
	seen := make(map[string]struct{})
	for _, gid := range gids {
		g, err := s.store.Group(gid)
		if err != nil {
			return nil, err
		}
		for _, m := range g.GetMembers() {
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

// announce publishes that a user's sessions on this node began or ended.
func (s *Server) announce(ss *session, online bool, peers []string) {
	s.publish(s.presenceSubject, &recordv1.PresenceChange{
		UserId:     ss.userID,
		Username:   ss.username,
		Online:     online,
		Region:     s.cfg.Region,
		Node:       s.cfg.Node,
		Recipients: peers,
		At:         timestamppb.New(s.cfg.Now()),
	})
}

// onPresence applies a presence change from the bus and, when the user's
// region-wide presence changed, tells the co-members connected here.
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
	for _, uid := range ch.GetRecipients() {
		for _, ss := range s.hub.sessionsOf(uid) {
			// Presence is state, not history: when a client is too slow
			// to take it, it sees the next change or the next Ready.
			ss.control(r)
		}
	}
}

// presenceTable tracks which users have sessions on which nodes.
type presenceTable struct {
	mu    sync.Mutex
	nodes map[string]map[string]struct{} // user → nodes with sessions
	info  map[string]*clientv1.Presence
}

func newPresenceTable() *presenceTable {
	return &presenceTable{nodes: make(map[string]map[string]struct{}), info: make(map[string]*clientv1.Presence)}
}

// apply records a change and reports whether the user's presence in the
// region changed.
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
