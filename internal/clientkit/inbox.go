package clientkit

import (
	"maps"
	"slices"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
)

// inbox puts each group's messages in sequence order, once each, whatever
// order deliveries, their resends and history reads bring them in.
//
// Per group it keeps the last seq released to the application. A message
// at or below it is a duplicate and is dropped; the next one is released
// with the held ones that follow it; one beyond a gap is held until the gap
// is filled or skipped. A delivery is given back for acknowledgement when
// its message is released, or at once when it is a duplicate: a held
// message stays unacknowledged, so the region still counts it as not
// received.
//
// inbox is not safe for concurrent use.
type inbox struct {
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
type released struct {
	msg *clientv1.Message
	src Source
}

func newInbox() *inbox { return &inbox{groups: make(map[string]*groupInbox)} }

// follow starts following group after seq; a followed group keeps its
// place.
func (b *inbox) follow(group string, after uint64) *groupInbox {
	g, ok := b.groups[group]
	if !ok {
		g = &groupInbox{last: after, held: make(map[uint64]*heldMsg)}
		b.groups[group] = g
	}
	return g
}

// last is the last seq released for group (0 when not followed).
func (b *inbox) last(group string) uint64 {
	if g, ok := b.groups[group]; ok {
		return g.last
	}
	return 0
}

func (b *inbox) followed() []string { return slices.Sorted(maps.Keys(b.groups)) }

// add takes one message, delivered under the given delivery ids (none
// when it came from history). It returns the messages to release now, in
// order, and the deliveries to acknowledge. A group not followed yet is
// followed from its start.
func (b *inbox) add(m *clientv1.Message, src Source, deliveries ...uint64) (ready []released, ack []uint64) {
	seq := m.GetSeq()
	if seq == 0 {
		return nil, deliveries // not committed: in no order
	}
	g := b.follow(m.GetGroupId(), 0)
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

func (g *groupInbox) release() (ready []released, ack []uint64) {
	for {
		h, ok := g.held[g.last+1]
		if !ok {
			return ready, ack
		}
		delete(g.held, g.last+1)
		g.last++
		ready = append(ready, released{h.msg, h.src})
		ack = append(ack, h.deliveries...)
	}
}

// gapped returns the groups holding messages beyond a gap, sorted.
func (b *inbox) gapped() []string {
	var out []string
	for id, g := range b.groups {
		if len(g.held) > 0 {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// skip gives up on group's first gap: the messages after it are released.
// It returns the skipped range [from, to] (from > to when there was none).
func (b *inbox) skip(group string) (from, to uint64, ready []released, ack []uint64) {
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
