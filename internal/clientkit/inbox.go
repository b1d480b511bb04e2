package clientkit

import (
	"maps"
	"slices"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
)

// Inbox puts each group's messages in sequence order, once each, whatever
// order deliveries, their resends and history reads bring them in. A
// Follower keeps one; roamchat's tail and chat keep one to print from.
//
// Per group it keeps the last seq released to the application. A message
// at or below it is a duplicate and is dropped; the next one is released
// with the held ones that follow it; one beyond a gap is held until the gap
// is filled, skipped or settled. A delivery is given back for
// acknowledgement when its message is released, or at once when it is a
// duplicate: a held message stays unacknowledged, so the region still
// counts it as not received.
//
// An Inbox is not safe for concurrent use.
type Inbox struct {
	groups map[string]*groupInbox
}

type groupInbox struct {
	last uint64
	held map[uint64]*heldMsg
}

type heldMsg struct {
	msg        *clientv1.Message
	src        Source
	deliveries []uint64
}

// Released is a message handed to the application.
type Released struct {
	Message *clientv1.Message
	Source  Source
}

// NewInbox returns an empty inbox.
func NewInbox() *Inbox { return &Inbox{groups: make(map[string]*groupInbox)} }

// Follow starts following group after seq: the message numbered seq+1 is
// the first to be released. A followed group keeps its place.
func (b *Inbox) Follow(group string, after uint64) {
	if _, ok := b.groups[group]; !ok {
		b.groups[group] = &groupInbox{last: after, held: make(map[uint64]*heldMsg)}
	}
}

// Follows reports whether group is followed.
func (b *Inbox) Follows(group string) bool {
	_, ok := b.groups[group]
	return ok
}

// Last is the last seq released for group (0 when not followed).
func (b *Inbox) Last(group string) uint64 {
	if g, ok := b.groups[group]; ok {
		return g.last
	}
	return 0
}

// Followed returns the followed groups, sorted.
func (b *Inbox) Followed() []string { return slices.Sorted(maps.Keys(b.groups)) }

// Add takes one message, delivered under the given delivery ids (none
// when it came from history). It returns the messages to release now, in
// order, and the deliveries to acknowledge. A group not followed yet is
// followed from its start; Follow it first to start elsewhere.
func (b *Inbox) Add(m *clientv1.Message, src Source, deliveries ...uint64) (ready []Released, ack []uint64) {
	seq := m.GetSeq()
	if seq == 0 {
		return nil, deliveries // not committed: in no order
	}
	b.Follow(m.GetGroupId(), 0)
	g := b.groups[m.GetGroupId()]
	if seq <= g.last {
		return nil, deliveries
	}
	if h, ok := g.held[seq]; ok {
		h.deliveries = append(h.deliveries, deliveries...)
		return nil, nil
	}
	g.held[seq] = &heldMsg{msg: m, src: src, deliveries: deliveries}
	return g.release()
}

func (g *groupInbox) release() (ready []Released, ack []uint64) {
	for {
		h, ok := g.held[g.last+1]
		if !ok {
			return ready, ack
		}
		delete(g.held, g.last+1)
		g.last++
		ready = append(ready, Released{h.msg, h.src})
		ack = append(ack, h.deliveries...)
	}
}

// Gapped returns the groups holding messages beyond a gap, sorted: their
// history should be read.
func (b *Inbox) Gapped() []string {
	var out []string
	for id, g := range b.groups {
		if len(g.held) > 0 {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// Skip gives up on group's first gap: the messages after it are released.
// It returns the skipped range [from, to] (from > to when there was none).
func (b *Inbox) Skip(group string) (from, to uint64, ready []Released, ack []uint64) {
	g, ok := b.groups[group]
	if !ok || len(g.held) == 0 {
		return 1, 0, nil, nil
	}
	next := slices.Min(slices.Collect(maps.Keys(g.held)))
	from, to = g.last+1, next-1
	g.last = next - 1
	ready, ack = g.release()
	return from, to, ready, ack
}

// Settle says that group's log has been read through seq upTo: a seq up
// to it that is still missing will not come, so the held messages beyond
// such holes are released now, in order. A hole that reaches past upTo
// stays open.
func (b *Inbox) Settle(group string, upTo uint64) (ready []Released, ack []uint64) {
	g, ok := b.groups[group]
	if !ok {
		return nil, nil
	}
	for len(g.held) > 0 {
		next := slices.Min(slices.Collect(maps.Keys(g.held)))
		if next-1 > upTo {
			break // the hole reaches past what was read; it may yet fill
		}
		g.last = next - 1
		r, a := g.release()
		ready, ack = append(ready, r...), append(ack, a...)
	}
	return ready, ack
}
