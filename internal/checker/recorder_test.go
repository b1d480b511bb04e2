package checker

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	"github.com/roamfed/roamfed/internal/clientkit"
)

// t0 is the synthetic runs' clock origin.
var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// A step is one event of a synthetic history.
type step func(r *Recorder)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

func msg(group string, seq uint64, cmid string) *clientv1.Message {
	return &clientv1.Message{GroupId: group, Seq: seq, MessageId: "id-" + cmid, ClientMsgId: cmid}
}

// sendC sends cmid to g and gets it committed at seq.
func sendC(sender, cmid string, seq uint64) step {
	return func(r *Recorder) {
		r.Sent("g", sender, cmid, at(0))
		r.Acked("g", cmid, &clientv1.SendMessageResponse{MessageId: "id-" + cmid, Seq: seq, State: clientv1.DeliveryState_DELIVERY_STATE_COMMITTED})
	}
}

// sendA sends cmid to g and gets it accepted.
func sendA(sender, cmid string) step {
	return func(r *Recorder) {
		r.Sent("g", sender, cmid, at(0))
		r.Acked("g", cmid, &clientv1.SendMessageResponse{MessageId: "id-" + cmid, State: clientv1.DeliveryState_DELIVERY_STATE_ACCEPTED})
	}
}

// sendLost sends cmid to g and gets only errors.
func sendLost(sender, cmid string) step {
	return func(r *Recorder) {
		r.Sent("g", sender, cmid, at(0))
		r.SendFailed("g", cmid, fmt.Errorf("unavailable"))
	}
}

func receipt(member, cmid string, seq uint64) step {
	return func(r *Recorder) {
		r.Receipt(member, &clientv1.Receipt{GroupId: "g", MessageId: "id-" + cmid, ClientMsgId: cmid, Seq: seq, State: clientv1.DeliveryState_DELIVERY_STATE_COMMITTED})
	}
}

// live has member's client receive and hand over seq live, ms after t0.
func live(member string, seq uint64, cmid string, ms int) step {
	return func(r *Recorder) {
		m := msg("g", seq, cmid)
		r.Arrived(member, clientkit.Arrival{Message: m, Source: clientkit.Live, Attempt: 1, At: at(ms)})
		r.Delivered(member, m, clientkit.Live, at(ms))
	}
}

// fetched has member's client read seq from history and hand it over.
func fetched(member string, seq uint64, cmid string, ms int) step {
	return func(r *Recorder) {
		m := msg("g", seq, cmid)
		r.Arrived(member, clientkit.Arrival{Message: m, Source: clientkit.History, At: at(ms)})
		r.Delivered(member, m, clientkit.History, at(ms))
	}
}

// arrive has seq reach member's client without being handed over.
func arrive(member string, seq uint64, cmid string, src clientkit.Source) step {
	return func(r *Recorder) {
		r.Arrived(member, clientkit.Arrival{Message: msg("g", seq, cmid), Source: src, Attempt: 2, At: at(1)})
	}
}

// deliverID hands over seq with an explicit message id.
func deliverID(member string, seq uint64, cmid, id string) step {
	return func(r *Recorder) {
		m := &clientv1.Message{GroupId: "g", Seq: seq, MessageId: id, ClientMsgId: cmid}
		r.Delivered(member, m, clientkit.Live, at(1))
	}
}

func TestReport(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps []step
		want  Counts // only the fields set are compared, see compare
		ok    bool
		kinds []Kind // problems listed, in order
	}{
		{
			name: "clean",
			steps: []step{
				sendC("a", "c1", 1), sendC("b", "c2", 2), sendC("a", "c3", 3),
				live("a", 1, "c1", 10), live("a", 2, "c2", 20), live("a", 3, "c3", 30),
				live("b", 1, "c1", 10), live("b", 2, "c2", 20), fetched("b", 3, "c3", 40),
			},
			want: Counts{Messages: 3, Attempts: 3, Committed: 3, Expected: 6, Delivered: 6, Live: 5, CaughtUp: 1},
			ok:   true,
		},
		{
			name: "lost: acknowledged, never reached b",
			steps: []step{
				sendC("a", "c1", 1), sendC("a", "c2", 2),
				live("a", 1, "c1", 1), live("a", 2, "c2", 2), live("b", 1, "c1", 1),
			},
			want:  Counts{Messages: 2, Committed: 2, Expected: 4, Delivered: 3, Lost: 1, LostMessages: 1},
			kinds: []Kind{KindLost},
		},
		{
			name: "lost: accepted and never committed",
			steps: []step{
				sendA("a", "c1"),
			},
			want:  Counts{Messages: 1, Accepted: 1, Expected: 2, Lost: 2, LostMessages: 1},
			kinds: []Kind{KindLost, KindLost},
		},
		{
			name: "accepted, then committed by receipt and delivered",
			steps: []step{
				sendC("b", "c1", 1), sendA("a", "c2"), receipt("a", "c2", 2),
				live("a", 1, "c1", 1), live("a", 2, "c2", 2), live("b", 1, "c1", 1), live("b", 2, "c2", 2),
			},
			want: Counts{Messages: 2, Committed: 1, Accepted: 1, AcceptedCommitted: 1, Receipts: 1, Delivered: 4},
			ok:   true,
		},
		{
			name: "accepted, committed seen only in a delivery",
			steps: []step{
				sendA("a", "c1"), live("a", 1, "c1", 1), live("b", 1, "c1", 1),
			},
			want: Counts{Accepted: 1, AcceptedCommitted: 1, Delivered: 2},
			ok:   true,
		},
		{
			name: "unacknowledged send, committed all the same",
			steps: []step{
				sendLost("a", "c1"), live("a", 1, "c1", 1), live("b", 1, "c1", 1),
			},
			want: Counts{Messages: 1, SendErrors: 1, Unacknowledged: 1, Expected: 0, Delivered: 0, Live: 2},
			ok:   true,
		},
		{
			name: "unacknowledged and never committed is not lost",
			steps: []step{
				sendLost("a", "c1"),
			},
			want: Counts{Messages: 1, Unacknowledged: 1},
			ok:   true,
		},
		{
			name: "duplicate: one client_msg_id stored at two seqs",
			steps: []step{
				sendC("a", "c1", 1),
				live("a", 1, "c1", 1), deliverID("a", 2, "c1", "id-retry"),
				live("b", 1, "c1", 1), deliverID("b", 2, "c1", "id-retry"),
			},
			want:  Counts{Duplicates: 1, Delivered: 2},
			kinds: []Kind{KindDuplicate},
		},
		{
			name: "duplicate: one seq, two messages",
			steps: []step{
				sendC("a", "c1", 1),
				live("a", 1, "c1", 1), deliverID("b", 1, "c1", "id-other"),
			},
			want:  Counts{Duplicates: 1},
			kinds: []Kind{KindDuplicate},
		},
		{
			name: "duplicate: one message id at two seqs",
			steps: []step{
				sendC("a", "c1", 1), sendC("a", "c2", 2),
				live("a", 1, "c1", 1), live("a", 2, "c2", 2),
				live("b", 1, "c1", 1), deliverID("b", 2, "c2", "id-c1"),
			},
			want:  Counts{Duplicates: 2}, // id-c1 at 1 and 2; seq 2 holds id-c2 and id-c1
			kinds: []Kind{KindDuplicate, KindDuplicate},
		},
		{
			name: "out of order: handed over 1, 3, 2",
			steps: []step{
				sendC("a", "c1", 1), sendC("a", "c2", 2), sendC("a", "c3", 3),
				live("a", 1, "c1", 1), live("a", 2, "c2", 2), live("a", 3, "c3", 3),
				live("b", 1, "c1", 1), live("b", 3, "c3", 3), live("b", 2, "c2", 4),
			},
			want:  Counts{OutOfOrder: 1, Delivered: 6, RawReordered: 1},
			kinds: []Kind{KindOutOfOrder},
		},
		{
			name: "out of order: handed over twice",
			steps: []step{
				sendC("a", "c1", 1),
				live("a", 1, "c1", 1), deliverID("a", 1, "c1", "id-c1"), live("b", 1, "c1", 1),
			},
			want:  Counts{OutOfOrder: 1, Redelivered: 1, Delivered: 2},
			kinds: []Kind{KindOutOfOrder},
		},
		{
			name: "gap: seq 2 committed without an answer, skipped by b",
			steps: []step{
				sendC("a", "c1", 1), sendLost("a", "c2"), sendC("a", "c3", 3),
				live("a", 1, "c1", 1), live("a", 2, "c2", 2), live("a", 3, "c3", 3),
				live("b", 1, "c1", 1), live("b", 3, "c3", 3),
				func(r *Recorder) { r.Skipped("b", "g", 2, 2) },
			},
			want:  Counts{Gaps: 1, Skipped: 1, Delivered: 4, Unacknowledged: 1},
			kinds: []Kind{KindGap},
		},
		{
			name: "raw duplicates and live reorders are information",
			steps: []step{
				sendC("a", "c1", 1), sendC("a", "c2", 2),
				arrive("a", 2, "c2", clientkit.Live), live("a", 1, "c1", 1), arrive("a", 2, "c2", clientkit.Live),
				deliverID("a", 2, "c2", "id-c2"),
				live("b", 1, "c1", 1), live("b", 2, "c2", 2), arrive("b", 2, "c2", clientkit.History),
			},
			want: Counts{RawDuplicates: 2, RawReordered: 1, Delivered: 4},
			ok:   true,
		},
		{
			name: "foreign messages are counted, not judged",
			steps: []step{
				sendC("a", "c1", 1), live("a", 1, "c1", 1), live("b", 1, "c1", 1),
				func(r *Recorder) { r.Delivered("z", msg("g", 1, "c1"), clientkit.Live, at(1)) },
				func(r *Recorder) { r.Delivered("a", msg("other", 1, "x"), clientkit.Live, at(1)) },
			},
			want: Counts{Foreign: 2, Delivered: 2},
			ok:   true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := New()
			r.AddUser("a", "ap")
			r.AddUser("b", "eu")
			r.AddGroup("g", "ap", []string{"a", "b"})
			for _, s := range tc.steps {
				s(r)
			}
			rep := r.Report()
			compare(t, rep.Totals, tc.want)
			if rep.OK() != tc.ok {
				t.Errorf("OK() = %v, want %v; problems: %v", rep.OK(), tc.ok, rep.Problems)
			}
			var kinds []Kind
			for _, p := range rep.Problems {
				kinds = append(kinds, p.Kind)
			}
			if fmt.Sprint(kinds) != fmt.Sprint(tc.kinds) {
				t.Errorf("problem kinds %v, want %v; problems: %v", kinds, tc.kinds, rep.Problems)
			}
			if len(rep.Groups) != 1 || rep.Groups[0].Counts != rep.Totals && rep.Totals.Foreign == 0 {
				t.Errorf("one group's counts %+v differ from the totals %+v", rep.Groups, rep.Totals)
			}
		})
	}
}

// compare checks the non-zero fields of want, and the must-be-zero fields
// always.
func compare(t *testing.T, got, want Counts) {
	t.Helper()
	check := func(name string, g, w int, always bool) {
		if (w != 0 || always) && g != w {
			t.Errorf("%s = %d, want %d", name, g, w)
		}
	}
	check("Messages", got.Messages, want.Messages, false)
	check("Attempts", got.Attempts, want.Attempts, false)
	check("SendErrors", got.SendErrors, want.SendErrors, false)
	check("Unacknowledged", got.Unacknowledged, want.Unacknowledged, false)
	check("Committed", got.Committed, want.Committed, false)
	check("Accepted", got.Accepted, want.Accepted, false)
	check("AcceptedCommitted", got.AcceptedCommitted, want.AcceptedCommitted, false)
	check("Receipts", got.Receipts, want.Receipts, false)
	check("Expected", got.Expected, want.Expected, false)
	check("Delivered", got.Delivered, want.Delivered, false)
	check("Live", got.Live, want.Live, false)
	check("CaughtUp", got.CaughtUp, want.CaughtUp, false)
	check("Lost", got.Lost, want.Lost, true)
	check("LostMessages", got.LostMessages, want.LostMessages, true)
	check("Duplicates", got.Duplicates, want.Duplicates, true)
	check("OutOfOrder", got.OutOfOrder, want.OutOfOrder, true)
	check("Gaps", got.Gaps, want.Gaps, true)
	check("Skipped", got.Skipped, want.Skipped, true)
	check("RawDuplicates", got.RawDuplicates, want.RawDuplicates, true)
	check("RawReordered", got.RawReordered, want.RawReordered, true)
	check("Redelivered", got.Redelivered, want.Redelivered, true)
	check("Foreign", got.Foreign, want.Foreign, true)
}

func TestLagAndOutstanding(t *testing.T) {
	r := New()
	r.AddGroup("g", "ap", []string{"a", "b"})
	for i := 1; i <= 100; i++ {
		cmid := fmt.Sprint("c", i)
		r.Sent("g", "a", cmid, at(i))
		r.Acked("g", cmid, &clientv1.SendMessageResponse{MessageId: "id-" + cmid, Seq: uint64(i), State: clientv1.DeliveryState_DELIVERY_STATE_COMMITTED})
		r.Delivered("a", msg("g", uint64(i), cmid), clientkit.Live, at(i+i)) // lag i ms
	}
	if got := r.Outstanding(time.Time{}); got != 100 {
		t.Errorf("Outstanding = %d, want 100 (b has nothing)", got)
	}
	if got := r.Outstanding(at(11)); got != 10 {
		t.Errorf("Outstanding(before 11ms) = %d, want 10", got)
	}
	rep := r.Report()
	ms := time.Millisecond
	if rep.Totals.LagP50 != 50*ms || rep.Totals.LagP99 != 99*ms || rep.Totals.LagMax != 100*ms {
		t.Errorf("lags p50 %s p99 %s max %s; want 50ms 99ms 100ms", rep.Totals.LagP50, rep.Totals.LagP99, rep.Totals.LagMax)
	}
	if rep.Totals.Lost != 100 || rep.Totals.LostMessages != 100 {
		t.Errorf("lost %d (%d messages), want 100 (100)", rep.Totals.Lost, rep.Totals.LostMessages)
	}
	if len(rep.Problems) != maxListed || rep.Unlisted != 100-maxListed {
		t.Errorf("listed %d problems and %d unlisted; want %d and %d", len(rep.Problems), rep.Unlisted, maxListed, 100-maxListed)
	}
	p := r.Progress()
	if p.Sent != 100 || p.Committed != 100 || p.Expected != 200 || p.Delivered != 100 {
		t.Errorf("progress %+v", p)
	}
	// A delivery that overtakes the send's answer counts once answered.
	r.Sent("g", "b", "fast", at(0))
	r.Delivered("b", msg("g", 101, "fast"), clientkit.Live, at(1))
	if p := r.Progress(); p.Delivered != 100 || p.Expected != 200 {
		t.Errorf("progress before the answer %+v", p)
	}
	r.Acked("g", "fast", &clientv1.SendMessageResponse{MessageId: "id-fast", Seq: 101, State: clientv1.DeliveryState_DELIVERY_STATE_COMMITTED})
	if p := r.Progress(); p.Delivered != 101 || p.Expected != 202 {
		t.Errorf("progress after the answer %+v", p)
	}
}

func TestFirstDelivery(t *testing.T) {
	r := New()
	r.AddUser("a", "ap")
	r.AddUser("b", "eu")
	r.AddGroup("g", "eu", []string{"a", "b"})
	r.Sent("g", "a", "early", at(0))
	r.Delivered("b", msg("g", 1, "early"), clientkit.Live, at(5))
	r.Sent("g", "b", "local", at(10))
	r.Delivered("b", msg("g", 2, "local"), clientkit.Live, at(11))
	r.Sent("g", "a", "late", at(10))
	r.Delivered("a", msg("g", 3, "late"), clientkit.Live, at(30))
	r.Delivered("b", msg("g", 3, "late"), clientkit.Live, at(25))
	apToEU := func(s, m, home string) bool { return s == "ap" && home == "eu" }
	got, ok := r.FirstDelivery(at(10), apToEU)
	if !ok || !got.Equal(at(25)) {
		t.Errorf("FirstDelivery = %v, %v; want %v", got, ok, at(25))
	}
	if _, ok := r.FirstDelivery(at(20), apToEU); ok {
		t.Error("FirstDelivery found a message sent before since")
	}
}

// TestConcurrent records from many goroutines at once; run with -race.
func TestConcurrent(t *testing.T) {
	r := New()
	const members, perSender = 4, 200
	var names []string
	for i := range members {
		names = append(names, fmt.Sprint("u", i))
	}
	r.AddGroup("g", "ap", names)
	var seq struct {
		sync.Mutex
		n uint64
	}
	var wg sync.WaitGroup
	for _, sender := range names {
		wg.Go(func() {
			for i := range perSender {
				cmid := fmt.Sprint(sender, "-", i)
				r.Sent("g", sender, cmid, time.Now())
				seq.Lock()
				seq.n++
				s := seq.n
				seq.Unlock()
				r.Acked("g", cmid, &clientv1.SendMessageResponse{MessageId: "id-" + cmid, Seq: s, State: clientv1.DeliveryState_DELIVERY_STATE_COMMITTED})
				_ = r.Progress()
			}
		})
	}
	wg.Wait()
	// Every member receives 1..N in order, concurrently with reports.
	n := seq.n
	ids := make(map[uint64]string)
	rep := r.Report()
	_ = rep
	r.mu.Lock()
	for s, id := range r.groups["g"].bySeq {
		ids[s] = id
	}
	r.mu.Unlock()
	for _, member := range names {
		wg.Go(func() {
			for s := uint64(1); s <= n; s++ {
				m := &clientv1.Message{GroupId: "g", Seq: s, MessageId: ids[s], ClientMsgId: strings.TrimPrefix(ids[s], "id-")}
				r.Arrived(member, clientkit.Arrival{Message: m, Source: clientkit.Live, Attempt: 1, At: time.Now()})
				r.Delivered(member, m, clientkit.Live, time.Now())
			}
		})
	}
	wg.Go(func() {
		for range 20 {
			_ = r.Report()
			_ = r.Outstanding(time.Time{})
		}
	})
	wg.Wait()
	rep = r.Report()
	if !rep.OK() || rep.Totals.Delivered != members*members*perSender || rep.Totals.Messages != members*perSender {
		t.Fatalf("report %+v, problems %v", rep.Totals, rep.Problems)
	}
}
