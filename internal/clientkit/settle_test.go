package clientkit

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
)

// step is one event fed to an Inbox.
type step struct {
	kind  string // "deliver", "history", "settle", "follow"
	group string
	seq   uint64 // the message's seq; settle's upTo; follow's start
	id    uint64 // delivery id
}

func deliver(g string, seq, id uint64) step { return step{"deliver", g, seq, id} }
func hist(g string, seq uint64) step        { return step{"history", g, seq, 0} }
func settle(g string, upTo uint64) step     { return step{"settle", g, upTo, 0} }
func follow(g string, after uint64) step    { return step{"follow", g, after, 0} }

func msg(g string, seq uint64) *clientv1.Message {
	return &clientv1.Message{GroupId: g, Seq: seq, Body: fmt.Sprintf("%s-%d", g, seq)}
}

// feed runs steps and returns what was printed, as "group#seq", and the
// deliveries acknowledged, in order.
func feed(b *Inbox, steps []step) (printed []string, acked []uint64) {
	for _, s := range steps {
		var ready []Released
		var ack []uint64
		switch s.kind {
		case "deliver":
			ready, ack = b.Add(msg(s.group, s.seq), Live, s.id)
		case "history":
			ready, ack = b.Add(msg(s.group, s.seq), History)
		case "settle":
			ready, ack = b.Settle(s.group, s.seq)
		case "follow":
			b.Follow(s.group, s.seq)
		}
		for _, r := range ready {
			printed = append(printed, fmt.Sprintf("%s#%d", r.Message.GetGroupId(), r.Message.GetSeq()))
		}
		acked = append(acked, ack...)
	}
	return printed, acked
}

func TestInboxSettle(t *testing.T) {
	for _, tc := range []struct {
		name    string
		steps   []step
		printed string
		acked   []uint64
		gaps    string
	}{
		{
			name:    "in order",
			steps:   []step{follow("a", 0), deliver("a", 1, 1), deliver("a", 2, 2), deliver("a", 3, 3)},
			printed: "a#1 a#2 a#3",
			acked:   []uint64{1, 2, 3},
		},
		{
			name:    "duplicates and resends are acked, printed once",
			steps:   []step{follow("a", 0), deliver("a", 1, 1), deliver("a", 1, 2), deliver("a", 2, 3), deliver("a", 1, 4), deliver("a", 2, 5)},
			printed: "a#1 a#2",
			acked:   []uint64{1, 2, 3, 4, 5},
		},
		{
			name:    "out of order is held, then printed in order",
			steps:   []step{follow("a", 0), deliver("a", 3, 1), deliver("a", 2, 2), deliver("a", 1, 3)},
			printed: "a#1 a#2 a#3",
			acked:   []uint64{3, 2, 1},
		},
		{
			name:    "held message resent: both deliveries acked when printed",
			steps:   []step{follow("a", 0), deliver("a", 2, 1), deliver("a", 2, 2), deliver("a", 1, 3)},
			printed: "a#1 a#2",
			acked:   []uint64{3, 1, 2},
		},
		{
			name:    "gap left open",
			steps:   []step{follow("a", 0), deliver("a", 1, 1), deliver("a", 3, 2), deliver("a", 4, 3)},
			printed: "a#1",
			acked:   []uint64{1},
			gaps:    "a",
		},
		{
			name: "catch-up: history fills the gap, overlapping deliveries",
			steps: []step{
				follow("a", 5), deliver("a", 6, 1), deliver("a", 9, 2),
				hist("a", 6), hist("a", 7), hist("a", 8), hist("a", 9), hist("a", 10),
				deliver("a", 10, 3), deliver("a", 11, 4),
			},
			printed: "a#6 a#7 a#8 a#9 a#10 a#11",
			acked:   []uint64{1, 2, 3, 4},
		},
		{
			name:    "below the start is not printed",
			steps:   []step{follow("a", 10), deliver("a", 9, 1), hist("a", 10), deliver("a", 11, 2)},
			printed: "a#11",
			acked:   []uint64{1, 2},
		},
		{
			name:    "followed from the first message seen, as roamchat does",
			steps:   []step{follow("b", 40), deliver("b", 41, 1), deliver("b", 40, 2), deliver("b", 42, 3)},
			printed: "b#41 b#42",
			acked:   []uint64{1, 2, 3},
		},
		{
			name: "groups are independent",
			steps: []step{
				follow("a", 0), follow("b", 0),
				deliver("a", 2, 1), deliver("b", 1, 2), deliver("b", 2, 3), deliver("a", 1, 4),
			},
			printed: "b#1 b#2 a#1 a#2",
			acked:   []uint64{2, 3, 4, 1},
		},
		{
			name:    "settle skips holes the log does not have",
			steps:   []step{follow("a", 0), deliver("a", 1, 1), deliver("a", 4, 2), deliver("a", 7, 3), settle("a", 5)},
			printed: "a#1 a#4",
			acked:   []uint64{1, 2},
			gaps:    "a", // 5 and 6 were not read yet
		},
		{
			name:    "settle to the end prints everything held",
			steps:   []step{follow("a", 0), deliver("a", 4, 2), deliver("a", 7, 3), settle("a", math.MaxUint64), deliver("a", 5, 4)},
			printed: "a#4 a#7",
			acked:   []uint64{2, 3, 4},
		},
		{
			name:    "seq 0 is acked, never printed",
			steps:   []step{follow("a", 0), deliver("a", 0, 9), deliver("a", 1, 1)},
			printed: "a#1",
			acked:   []uint64{9, 1},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := NewInbox()
			printed, acked := feed(b, tc.steps)
			if got := strings.Join(printed, " "); got != tc.printed {
				t.Errorf("printed %q, want %q", got, tc.printed)
			}
			if !slices.Equal(acked, tc.acked) {
				t.Errorf("acked %v, want %v", acked, tc.acked)
			}
			if got := strings.Join(b.Gapped(), " "); got != tc.gaps {
				t.Errorf("gaps %q, want %q", got, tc.gaps)
			}
		})
	}
}

// TestInboxRandom delivers several groups' messages shuffled, duplicated and
// partly lost, then fills the gaps from history as a follower does: every
// message must be printed once, in order per group, and every delivery
// acknowledged once.
func TestInboxRandom(t *testing.T) {
	// INBOX_SEED=n replays a failure.
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("INBOX_SEED"); v != "" {
		fmt.Sscan(v, &seed)
	}
	for round := range 200 {
		s := seed + uint64(round)
		rng := rand.New(rand.NewPCG(s, 0))
		groups := []string{"a", "b", "c"}[:1+rng.IntN(3)]
		n := uint64(1 + rng.IntN(30))
		var follows, deliveries []step
		var id uint64
		for _, g := range groups {
			follows = append(follows, follow(g, 0))
			for seq := uint64(1); seq <= n; seq++ {
				for range rng.IntN(3) { // 0: lost; 2: resent
					id++
					deliveries = append(deliveries, deliver(g, seq, id))
				}
			}
		}
		rng.Shuffle(len(deliveries), func(i, j int) { deliveries[i], deliveries[j] = deliveries[j], deliveries[i] })
		steps := append(follows, deliveries...)

		b := NewInbox()
		printed, acked := feed(b, steps)
		// Fill: what a follower does for each group with a gap or a tail.
		for _, g := range groups {
			last := b.Last(g)
			var fill []step
			for seq := last + 1; seq <= n; seq++ {
				fill = append(fill, hist(g, seq))
			}
			fill = append(fill, settle(g, n))
			p, a := feed(b, fill)
			printed, acked = append(printed, p...), append(acked, a...)
		}

		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("INBOX_SEED=%d, round %d: %s\nsteps: %v", seed, round, fmt.Sprintf(format, args...), steps)
		}
		perGroup := make(map[string][]uint64)
		for _, p := range printed {
			g, seq, _ := strings.Cut(p, "#")
			var v uint64
			fmt.Sscan(seq, &v)
			perGroup[g] = append(perGroup[g], v)
		}
		for _, g := range groups {
			if got := perGroup[g]; len(got) != int(n) || !slices.IsSorted(got) || got[0] != 1 || got[n-1] != n {
				fail("group %s printed %v, want 1..%d", g, got, n)
			}
		}
		slices.Sort(acked)
		if len(acked) != int(id) || (id > 0 && (acked[0] != 1 || acked[id-1] != id)) || len(slices.Compact(slices.Clone(acked))) != len(acked) {
			fail("acked %v, want each of 1..%d once", acked, id)
		}
		if g := b.Gapped(); len(g) > 0 {
			fail("gaps left: %v", g)
		}
	}
}
