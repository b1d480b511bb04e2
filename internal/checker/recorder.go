package checker

import (
	"fmt"
	"slices"
	"sync"
	"time"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	"github.com/roamfed/roamfed/internal/clientkit"
)

// Recorder records a load run; it is safe for concurrent use. The zero
// value is not usable: call New.
type Recorder struct {
	mu        sync.Mutex
	users     map[string]string // user id -> region
	groups    map[string]*group
	msgs      map[msgKey]*message
	conflicts map[string]Problem // by a key naming the conflict, so each counts once
	foreign   int                // messages received that no recorded send explains

	// Running totals for Progress.
	sent, committed, accepted, acceptedCommitted int
	expected, delivered                          int
}

type msgKey struct{ group, clientMsgID string }

type group struct {
	id, home string
	members  []string
	holds    map[string]*holding // by member
	bySeq    map[uint64]string   // seq -> message id
	byID     map[string]uint64   // message id -> seq
	byClient map[string]uint64   // client_msg_id -> seq
	maxSeq   uint64
}

// message is one logical message: one client_msg_id in one group,
// whatever the number of attempts.
type message struct {
	key       msgKey
	sender    string
	firstSent time.Time
	attempts  int
	failures  int
	lastErr   string

	acked          bool // some attempt was answered
	ackedCommitted bool // some attempt was answered committed
	accepted       bool // some attempt was answered accepted
	committedLater bool // accepted, then seen committed
	receipts       int
	receiptErr     string

	seq       uint64 // committed seq, once known
	messageID string // committed message id, once known
}

// holding is what one member got of one group.
type holding struct {
	held     map[uint64]heldMsg // what the application got, by seq
	byClient map[string]uint64  // client_msg_id -> seq, of held
	prev     uint64             // seq of the application's previous message
	outOfOrder,
	redelivered int
	outOfOrderSeqs []uint64
	skipped        uint64

	arrived    map[uint64]int // raw arrivals by seq
	maxLive    uint64
	rawDup     int
	rawReorder int
}

type heldMsg struct {
	messageID, clientMsgID string
	at                     time.Time
	src                    clientkit.Source
}

// New returns an empty recorder.
func New() *Recorder {
	return &Recorder{
		users:     make(map[string]string),
		groups:    make(map[string]*group),
		msgs:      make(map[msgKey]*message),
		conflicts: make(map[string]Problem),
	}
}

// AddUser declares a user and the region it is connected to, for reports.
func (r *Recorder) AddUser(id, region string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.users[id] = region
}

// AddGroup declares a group, its home and its members. Every member is
// expected to get every message of the group. Adding a group again adds
// the members it did not have.
func (r *Recorder) AddGroup(id, home string, members []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	g, ok := r.groups[id]
	if !ok {
		g = &group{
			id: id, home: home,
			holds:    make(map[string]*holding),
			bySeq:    make(map[uint64]string),
			byID:     make(map[string]uint64),
			byClient: make(map[string]uint64),
		}
		r.groups[id] = g
	}
	for _, m := range members {
		if _, ok := g.holds[m]; ok {
			continue
		}
		g.members = append(g.members, m)
		g.holds[m] = &holding{
			held:     make(map[uint64]heldMsg),
			byClient: make(map[string]uint64),
			arrived:  make(map[uint64]int),
		}
		for _, msg := range r.msgs {
			if msg.key.group == id && msg.acked {
				r.expected++
			}
		}
	}
}

// Groups returns the declared groups' ids, sorted.
func (r *Recorder) Groups() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.groups))
	for id := range r.groups {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// Sent records one attempt to send a message. Attempts with the same
// group and client_msg_id are one message.
func (r *Recorder) Sent(group, sender, clientMsgID string, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.message(group, clientMsgID)
	if m.attempts == 0 {
		m.sender, m.firstSent = sender, at
		r.sent++
	}
	m.attempts++
}

// SendFailed records that an attempt got an error instead of an answer.
func (r *Recorder) SendFailed(group, clientMsgID string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.message(group, clientMsgID)
	m.failures++
	if err != nil {
		m.lastErr = err.Error()
	}
}

// Acked records the answer to an attempt: committed with a seq, or
// accepted.
func (r *Recorder) Acked(group, clientMsgID string, resp *clientv1.SendMessageResponse) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.message(group, clientMsgID)
	if !m.acked {
		m.acked = true
		if g, ok := r.groups[group]; ok {
			r.expected += len(g.members)
			// Deliveries often overtake the answer to the send.
			for _, h := range g.holds {
				if _, ok := h.byClient[clientMsgID]; ok {
					r.delivered++
				}
			}
		}
	}
	switch resp.GetState() {
	case clientv1.DeliveryState_DELIVERY_STATE_COMMITTED:
		if !m.ackedCommitted && !m.accepted {
			r.committed++
		}
		m.ackedCommitted = true
		r.observe(group, resp.GetSeq(), resp.GetMessageId(), clientMsgID, "send answer")
	case clientv1.DeliveryState_DELIVERY_STATE_ACCEPTED:
		if !m.accepted && !m.ackedCommitted {
			m.accepted = true
			r.accepted++
		}
	}
}

// Receipt records a receipt that member's session got.
func (r *Recorder) Receipt(member string, rc *clientv1.Receipt) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.message(rc.GetGroupId(), rc.GetClientMsgId())
	m.receipts++
	if rc.GetError() != "" {
		m.receiptErr = rc.GetError()
		return
	}
	if rc.GetState() == clientv1.DeliveryState_DELIVERY_STATE_COMMITTED {
		r.observe(rc.GetGroupId(), rc.GetSeq(), rc.GetMessageId(), rc.GetClientMsgId(), "receipt to "+member)
	}
}

// Arrived records a message as it reached member's client, before the
// client ordered and deduplicated it.
func (r *Recorder) Arrived(member string, a clientkit.Arrival) {
	r.mu.Lock()
	defer r.mu.Unlock()
	msg := a.Message
	r.observe(msg.GetGroupId(), msg.GetSeq(), msg.GetMessageId(), msg.GetClientMsgId(), a.Source.String()+" to "+member)
	h := r.holding(msg.GetGroupId(), member)
	if h == nil {
		return
	}
	seq := msg.GetSeq()
	if h.arrived[seq]++; h.arrived[seq] > 1 {
		h.rawDup++
		return
	}
	if a.Source == clientkit.Live {
		if seq < h.maxLive {
			h.rawReorder++
		}
		h.maxLive = max(h.maxLive, seq)
	}
}

// Delivered records a message that member's client handed to its
// application. A client hands each message over once, in seq order; the
// checker counts where it did not.
func (r *Recorder) Delivered(member string, msg *clientv1.Message, src clientkit.Source, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.observe(msg.GetGroupId(), msg.GetSeq(), msg.GetMessageId(), msg.GetClientMsgId(), src.String()+" to "+member)
	h := r.holding(msg.GetGroupId(), member)
	if h == nil {
		return
	}
	seq := msg.GetSeq()
	if seq <= h.prev {
		h.outOfOrder++
		if len(h.outOfOrderSeqs) < maxListed {
			h.outOfOrderSeqs = append(h.outOfOrderSeqs, seq)
		}
	}
	h.prev = seq
	if _, ok := h.held[seq]; ok {
		h.redelivered++
		return
	}
	cmid := msg.GetClientMsgId()
	h.held[seq] = heldMsg{messageID: msg.GetMessageId(), clientMsgID: cmid, at: at, src: src}
	if _, ok := h.byClient[cmid]; ok {
		return // the same message at a second seq: a conflict observe counted
	}
	h.byClient[cmid] = seq
	if m, ok := r.msgs[msgKey{msg.GetGroupId(), cmid}]; ok && m.acked {
		r.delivered++
	}
}

// Skipped records that member's client gave up waiting for seqs from
// through to of group.
func (r *Recorder) Skipped(member, group string, from, to uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if h := r.holding(group, member); h != nil && to >= from {
		h.skipped += to - from + 1
	}
}

// message returns the record of a logical message, creating it.
func (r *Recorder) message(group, clientMsgID string) *message {
	k := msgKey{group, clientMsgID}
	m, ok := r.msgs[k]
	if !ok {
		m = &message{key: k}
		r.msgs[k] = m
	}
	return m
}

// holding returns what member holds of group; nil (and a foreign message
// counted) when the group or member was not declared.
func (r *Recorder) holding(groupID, member string) *holding {
	g, ok := r.groups[groupID]
	if !ok {
		r.foreign++
		return nil
	}
	h, ok := g.holds[member]
	if !ok {
		r.foreign++
		return nil
	}
	return h
}

// observe takes one sighting of a committed message — from a send
// answer, a receipt, a delivery or a history read — and records a conflict
// when it disagrees with an earlier one.
func (r *Recorder) observe(groupID string, seq uint64, id, clientMsgID, where string) {
	if seq == 0 {
		return
	}
	g, ok := r.groups[groupID]
	if !ok {
		return
	}
	g.maxSeq = max(g.maxSeq, seq)
	if prev, ok := g.bySeq[seq]; ok && id != "" && prev != id {
		r.conflict(Problem{Kind: KindDuplicate, Group: groupID, Seq: seq,
			Detail: fmt.Sprintf("seq %d holds message %s and message %s (seen in %s)", seq, prev, id, where)},
			fmt.Sprint("seq/", groupID, "/", seq, "/", min(prev, id), "/", max(prev, id)))
	} else if !ok && id != "" {
		g.bySeq[seq] = id
	}
	if id != "" {
		if prev, ok := g.byID[id]; ok && prev != seq {
			r.conflict(Problem{Kind: KindDuplicate, Group: groupID, Seq: seq,
				Detail: fmt.Sprintf("message %s is at seq %d and seq %d (seen in %s)", id, prev, seq, where)},
				fmt.Sprint("id/", groupID, "/", id, "/", min(prev, seq), "/", max(prev, seq)))
		} else if !ok {
			g.byID[id] = seq
		}
	}
	if clientMsgID != "" {
		if prev, ok := g.byClient[clientMsgID]; ok && prev != seq {
			r.conflict(Problem{Kind: KindDuplicate, Group: groupID, Seq: seq,
				Detail: fmt.Sprintf("client_msg_id %s was committed twice, at seq %d and seq %d (seen in %s)", clientMsgID, prev, seq, where)},
				fmt.Sprint("cmid/", groupID, "/", clientMsgID, "/", min(prev, seq), "/", max(prev, seq)))
		} else if !ok {
			g.byClient[clientMsgID] = seq
		}
		if m, ok := r.msgs[msgKey{groupID, clientMsgID}]; ok {
			if m.seq == 0 {
				m.seq, m.messageID = seq, id
			}
			if m.accepted && !m.ackedCommitted && !m.committedLater {
				m.committedLater = true
				r.acceptedCommitted++
			}
		}
	}
}

func (r *Recorder) conflict(p Problem, key string) {
	if _, ok := r.conflicts[key]; !ok {
		r.conflicts[key] = p
	}
}

// Progress is a cheap snapshot of the run's totals.
type Progress struct {
	// Messages sent (distinct), acknowledged committed, acknowledged
	// accepted, and accepted ones committed since.
	Sent, Committed, Accepted, AcceptedCommitted int
	// Member deliveries of acknowledged messages: expected and done.
	Expected, Delivered int
}

// Progress returns the running totals.
func (r *Recorder) Progress() Progress {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Progress{
		Sent: r.sent, Committed: r.committed, Accepted: r.accepted, AcceptedCommitted: r.acceptedCommitted,
		Expected: r.expected, Delivered: r.delivered,
	}
}

// Outstanding counts the member deliveries still missing of acknowledged
// messages first sent before before; the zero time counts them all.
func (r *Recorder) Outstanding(before time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.msgs {
		if !m.acked || (!before.IsZero() && !m.firstSent.Before(before)) {
			continue
		}
		g, ok := r.groups[m.key.group]
		if !ok {
			continue
		}
		for _, h := range g.holds {
			if _, ok := h.byClient[m.key.clientMsgID]; !ok {
				n++
			}
		}
	}
	return n
}

// FirstDelivery returns when the first message matching match, first sent
// at or after since, was handed to a member's application; false when none
// was. match gets the sender's and the member's regions and the group's
// home.
func (r *Recorder) FirstDelivery(since time.Time, match func(senderRegion, memberRegion, home string) bool) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var first time.Time
	for _, g := range r.groups {
		for member, h := range g.holds {
			for _, hm := range h.held {
				if !first.IsZero() && !hm.at.Before(first) {
					continue
				}
				m, ok := r.msgs[msgKey{g.id, hm.clientMsgID}]
				if !ok || m.firstSent.Before(since) {
					continue
				}
				if match(r.users[m.sender], r.users[member], g.home) {
					first = hm.at
				}
			}
		}
	}
	return first, !first.IsZero()
}
