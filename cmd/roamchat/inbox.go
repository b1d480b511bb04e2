package main

import (
	"maps"
	"slices"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
)

// inbox puts the messages of the followed groups in order for printing,
// each exactly once, whatever order the deliveries, their resends and the
// history fetched to fill gaps come in.
//
// Per group it keeps the last sequence number printed. A message at or
// below it has been printed and is dropped; the next one is printed at once
// together with the held ones that follow it; one beyond a gap is held
// until the gap is filled, by deliveries or by history the caller fetches
// (gaps says which groups need it), or until the caller settles the gap as
// one that cannot be filled.
//
// A delivery is given back for acknowledgement when its message is
// printed, or at once if it was printed before: a held message stays
// unacknowledged, so if this client goes away before printing it the
// region still counts it as not received.
//
// inbox is not safe for concurrent use.
type inbox struct {
	groups map[string]*groupInbox
}

type groupInbox struct {
	last uint64 // the last seq printed; all before it are printed or skipped
	held map[uint64]*heldMsg
}

type heldMsg struct {
	msg        *clientv1.Message
	deliveries []uint64
}

func newInbox() *inbox {
	return &inbox{groups: make(map[string]*groupInbox)}
}

// follow starts following group after seq: the message numbered seq+1 is
// the first to be printed. A group already followed keeps its place.
func (b *inbox) follow(group string, seq uint64) {
	if _, ok := b.groups[group]; !ok {
		b.groups[group] = &groupInbox{last: seq, held: make(map[uint64]*heldMsg)}
	}
}

// last returns the last sequence number printed for group, and whether the
// group is followed at all.
func (b *inbox) last(group string) (uint64, bool) {
	g, ok := b.groups[group]
	if !ok {
		return 0, false
	}
	return g.last, true
}

// followed returns the followed groups, sorted.
func (b *inbox) followed() []string {
	return slices.Sorted(maps.Keys(b.groups))
}

// add takes one message, delivered under the given delivery ids (none when
// it came from history). It returns the messages to print now, in order,
// and the deliveries to acknowledge. A group not yet followed is followed
// from this message on.
func (b *inbox) add(m *clientv1.Message, deliveries ...uint64) (ready []*clientv1.Message, ack []uint64) {
	gid, seq := m.GetGroupId(), m.GetSeq()
	if seq == 0 {
		// Not committed, so not in the group's order: nothing to print it
		// between. Deliveries carry committed messages only.
		return nil, deliveries
	}
	b.follow(gid, seq-1)
	g := b.groups[gid]
	switch h, held := g.held[seq]; {
	case seq <= g.last:
		return nil, deliveries
	case held:
		h.deliveries = append(h.deliveries, deliveries...)
		return nil, nil
	}
	g.held[seq] = &heldMsg{msg: m, deliveries: deliveries}
	return g.release()
}

// release takes the held messages that follow the last printed one.
func (g *groupInbox) release() (ready []*clientv1.Message, ack []uint64) {
	for {
		h, ok := g.held[g.last+1]
		if !ok {
			return ready, ack
		}
		delete(g.held, g.last+1)
		g.last++
		ready = append(ready, h.msg)
		ack = append(ack, h.deliveries...)
	}
}

// gaps returns the groups that hold messages beyond a gap, sorted: the
// caller should fetch their history after last.
func (b *inbox) gaps() []string {
	var out []string
	for gid, g := range b.groups {
		if len(g.held) > 0 {
			out = append(out, gid)
		}
	}
	slices.Sort(out)
	return out
}

// settle says that group's log has been read through seq upTo: a sequence
// number up to it that is still missing will not come, so the held
// messages beyond such holes are printed now, in order.
func (b *inbox) settle(group string, upTo uint64) (ready []*clientv1.Message, ack []uint64) {
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
