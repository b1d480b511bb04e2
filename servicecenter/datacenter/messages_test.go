package datacenter

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	recordv1 "github.com/roamfed/roamfed/api/record/v1"
	"github.com/roamfed/roamfed/internal/ids"
)

// waitFor polls cond until it holds, failing the test after ten seconds.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// queuedLen is how many appends wait in the commit queue.
func (c *committer) queuedLen() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue)
}

// holdCommits stalls the commit queue, so that the appends a test starts
// next pile up in the queue and are committed as one batch. It holds the
// committer's seqMu and hands it a blocker message for a group it has not
// seen: the committer stops in lastSeq, which loads that group's counter
// under seqMu. The returned release waits until n appends are queued, then
// lets the queue go.
func holdCommits(t *testing.T, s *Store) (release func(n int)) {
	t.Helper()
	c := s.commits
	c.seqMu.Lock()
	var once sync.Once
	unlock := func() { once.Do(c.seqMu.Unlock) }
	t.Cleanup(unlock)
	blocker := &appendReq{
		msg:  newMessage(ids.New(ids.Group), "u_blocker", "block", "block"),
		done: make(chan struct{}),
	}
	if err := c.enqueue(context.Background(), blocker); err != nil {
		t.Fatalf("enqueue blocker: %v", err)
	}
	waitFor(t, "the committer to take the blocker", func() bool { return c.queuedLen() == 0 })
	return func(n int) {
		t.Helper()
		waitFor(t, fmt.Sprintf("%d queued appends", n), func() bool { return c.queuedLen() >= n })
		unlock()
		<-blocker.done
		if blocker.err != nil {
			t.Fatalf("blocker append: %v", blocker.err)
		}
	}
}

// recordCommits chains an OnCommit hook that records every batch, and
// returns a function that reports the batches seen so far.
func recordCommits(s *Store) func() [][]*recordv1.Message {
	var (
		mu      sync.Mutex
		batches [][]*recordv1.Message
	)
	prev := s.onCommit.Load()
	s.OnCommit(func(msgs []*recordv1.Message) {
		if prev != nil {
			(*prev)(msgs)
		}
		mu.Lock()
		batches = append(batches, slices.Clone(msgs))
		mu.Unlock()
	})
	return func() [][]*recordv1.Message {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(batches)
	}
}

// appendAsync starts Appends of msgs, one goroutine each, and returns a
// function that waits for them and returns their outcomes in msgs' order.
func appendAsync(ctx context.Context, s *Store, msgs ...*recordv1.Message) func() ([]Appended, []error) {
	res := make([]Appended, len(msgs))
	errs := make([]error, len(msgs))
	var wg sync.WaitGroup
	for i, m := range msgs {
		wg.Go(func() { res[i], errs[i] = s.Append(ctx, m) })
	}
	return func() ([]Appended, []error) {
		wg.Wait()
		return res, errs
	}
}

func TestAppendAssignsSequence(t *testing.T) {
	s := openStore(t, "", Options{})
	ga, gb := ids.New(ids.Group), ids.New(ids.Group)
	if last, err := s.LastSeq(ga); err != nil || last != 0 {
		t.Fatalf("LastSeq(empty) = %d, %v; want 0", last, err)
	}
	want := map[string][]*recordv1.Message{}
	for i := range 30 {
		for _, g := range []string{ga, gb} {
			if g == gb && i%3 != 0 {
				continue
			}
			m := newMessage(g, "u_a", fmt.Sprintf("c%d", i), fmt.Sprintf("message %d", i))
			sent := proto.Clone(m).(*recordv1.Message)
			res := mustAppend(t, s, m)
			wantSeq := uint64(len(want[g]) + 1)
			if res.Duplicate || res.Message.GetSeq() != wantSeq {
				t.Fatalf("Append #%d in %s = seq %d dup %v, want seq %d", i, g, res.Message.GetSeq(), res.Duplicate, wantSeq)
			}
			sent.Seq = wantSeq
			if !proto.Equal(res.Message, sent) {
				t.Fatalf("Append returned %v, want %v", res.Message, sent)
			}
			want[g] = append(want[g], sent)
		}
	}
	for g, msgs := range want {
		if last, err := s.LastSeq(g); err != nil || last != uint64(len(msgs)) {
			t.Errorf("LastSeq(%s) = %d, %v; want %d", g, last, err, len(msgs))
		}
		for i, m := range readLog(t, s, g) {
			if !proto.Equal(m, msgs[i]) {
				t.Errorf("stored %v, want %v", m, msgs[i])
			}
		}
	}
}

func TestAppendIdempotent(t *testing.T) {
	t.Run("sequential", func(t *testing.T) {
		s := openStore(t, "", Options{})
		g, other := ids.New(ids.Group), ids.New(ids.Group)
		first := mustAppend(t, s, newMessage(g, "u_a", "k1", "first")).Message
		tests := []struct {
			name    string
			msg     *recordv1.Message
			wantDup bool
			wantSeq uint64
		}{
			{"same key, new body and id", newMessage(g, "u_a", "k1", "second"), true, 1},
			{"same key again", newMessage(g, "u_a", "k1", "third"), true, 1},
			{"other sender, same client id", newMessage(g, "u_b", "k1", "b"), false, 2},
			{"other group, same sender and client id", newMessage(other, "u_a", "k1", "o"), false, 1},
			{"same sender, other client id", newMessage(g, "u_a", "k2", "k2"), false, 3},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				res := mustAppend(t, s, tt.msg)
				if res.Duplicate != tt.wantDup || res.Message.GetSeq() != tt.wantSeq {
					t.Fatalf("Append = seq %d dup %v, want seq %d dup %v", res.Message.GetSeq(), res.Duplicate, tt.wantSeq, tt.wantDup)
				}
				if tt.wantDup && !proto.Equal(res.Message, first) {
					t.Errorf("duplicate returned %v, want the first message %v", res.Message, first)
				}
			})
		}
		if log := readLog(t, s, g); len(log) != 3 || log[0].GetBody() != "first" {
			t.Errorf("log = %v, want 3 messages starting with the first body", log)
		}
	})

	t.Run("same batch", func(t *testing.T) {
		s := openStore(t, "", Options{})
		release := holdCommits(t, s)
		batches := recordCommits(s)
		g := ids.New(ids.Group)
		a, b := newMessage(g, "u_a", "k1", "a"), newMessage(g, "u_a", "k1", "b")
		c := newMessage(g, "u_a", "k2", "c")
		wait := appendAsync(context.Background(), s, a, b, c)
		release(3)
		res, errs := wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("Append %d: %v", i, err)
			}
		}
		var ofG [][]*recordv1.Message // the blocker's batch is not of interest
		for _, b := range batches() {
			if b[0].GetGroupId() == g {
				ofG = append(ofG, b)
			}
		}
		if len(ofG) != 1 || len(ofG[0]) != 2 {
			t.Fatalf("committed batches %v, want one batch of two new messages (the duplicate is not passed)", ofG)
		}
		if res[0].Duplicate == res[1].Duplicate {
			t.Fatalf("Duplicate = %v and %v, want exactly one true", res[0].Duplicate, res[1].Duplicate)
		}
		orig, dup := res[0], res[1]
		if orig.Duplicate {
			orig, dup = dup, orig
		}
		if dup.Message.GetSeq() != orig.Message.GetSeq() || dup.Message.GetMessageId() != orig.Message.GetMessageId() {
			t.Errorf("duplicate = %v, want the first message %v", dup.Message, orig.Message)
		}
		if res[2].Duplicate {
			t.Errorf("the message with its own key was reported a duplicate")
		}
		seqs := []uint64{orig.Message.GetSeq(), res[2].Message.GetSeq()}
		slices.Sort(seqs)
		if !slices.Equal(seqs, []uint64{1, 2}) {
			t.Errorf("seqs %v, want [1 2]", seqs)
		}
		log := readLog(t, s, g)
		if len(log) != 2 {
			t.Fatalf("log has %d messages, want 2", len(log))
		}
		if m := log[orig.Message.GetSeq()-1]; m.GetMessageId() != orig.Message.GetMessageId() {
			t.Errorf("stored %v at seq %d, want %v", m, orig.Message.GetSeq(), orig.Message)
		}
	})

	t.Run("many at once", func(t *testing.T) {
		s := openStore(t, "", Options{})
		g := ids.New(ids.Group)
		var msgs []*recordv1.Message
		for i := range 32 {
			msgs = append(msgs, newMessage(g, "u_a", "same", fmt.Sprint(i)))
		}
		res, errs := appendAsync(context.Background(), s, msgs...)()
		originals := 0
		for i := range res {
			if errs[i] != nil {
				t.Fatalf("Append %d: %v", i, errs[i])
			}
			if !res[i].Duplicate {
				originals++
			}
			if res[i].Message.GetSeq() != 1 || res[i].Message.GetMessageId() != res[0].Message.GetMessageId() {
				t.Errorf("Append %d returned %v, want seq 1 and one message id", i, res[i].Message)
			}
		}
		if originals != 1 {
			t.Errorf("%d appends were not duplicates, want 1", originals)
		}
		if log := readLog(t, s, g); len(log) != 1 {
			t.Errorf("log has %d messages, want 1", len(log))
		}
	})
}

// TestAppendConcurrent has 64 goroutines append to a few shared groups,
// retrying some messages, and checks each group's log is exactly the
// acknowledged messages, numbered 1..n, and that OnCommit saw each once in
// order.
func TestAppendConcurrent(t *testing.T) {
	const (
		workers = 64
		each    = 40
		nGroups = 4
	)
	s := openStore(t, "", Options{})
	batches := recordCommits(s)
	groups := make([]string, nGroups)
	for i := range groups {
		groups[i] = ids.New(ids.Group)
	}
	type ack struct {
		seq uint64
		id  string
	}
	var (
		mu    sync.Mutex
		acked = map[string][]ack{}
	)
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			sender := fmt.Sprintf("u_%d", w)
			lastSeq := map[string]uint64{}
			for i := range each {
				g := groups[(w+i)%nGroups]
				m := newMessage(g, sender, fmt.Sprintf("c%d", i), fmt.Sprintf("%d/%d", w, i))
				res, err := s.Append(context.Background(), m)
				if err != nil {
					errc <- fmt.Errorf("worker %d append %d: %w", w, i, err)
					return
				}
				if res.Duplicate || res.Message.GetSeq() <= lastSeq[g] {
					errc <- fmt.Errorf("worker %d append %d: seq %d dup %v after seq %d", w, i, res.Message.GetSeq(), res.Duplicate, lastSeq[g])
					return
				}
				lastSeq[g] = res.Message.GetSeq()
				mu.Lock()
				acked[g] = append(acked[g], ack{res.Message.GetSeq(), m.GetMessageId()})
				mu.Unlock()
				if i%10 == 0 { // a retry, as after a lost reply
					retry := newMessage(g, sender, fmt.Sprintf("c%d", i), "retry")
					res, err := s.Append(context.Background(), retry)
					if err != nil || !res.Duplicate || res.Message.GetSeq() != lastSeq[g] || res.Message.GetMessageId() != m.GetMessageId() {
						errc <- fmt.Errorf("worker %d retry %d = %+v, %v; want duplicate of seq %d", w, i, res, err, lastSeq[g])
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if t.Failed() {
		return
	}

	total := 0
	for _, g := range groups {
		log := readLog(t, s, g)
		total += len(log)
		if len(log) != len(acked[g]) {
			t.Errorf("group %s: log has %d messages, %d were acknowledged", g, len(log), len(acked[g]))
		}
		seen := map[string]bool{}
		for _, m := range log {
			if seen[m.GetMessageId()] {
				t.Errorf("group %s: message %s stored twice", g, m.GetMessageId())
			}
			seen[m.GetMessageId()] = true
		}
		for _, a := range acked[g] {
			if a.seq > uint64(len(log)) || log[a.seq-1].GetMessageId() != a.id {
				t.Errorf("group %s: acknowledged %s at seq %d is not stored there", g, a.id, a.seq)
			}
		}
	}
	if total != workers*each {
		t.Errorf("%d messages stored, want %d", total, workers*each)
	}

	// OnCommit saw every new message once, each group in sequence order.
	next := map[string]uint64{}
	n := 0
	for _, b := range batches() {
		for _, m := range b {
			n++
			if m.GetSeq() != next[m.GetGroupId()]+1 {
				t.Fatalf("OnCommit: group %s seq %d after %d", m.GetGroupId(), m.GetSeq(), next[m.GetGroupId()])
			}
			next[m.GetGroupId()] = m.GetSeq()
		}
	}
	if n != workers*each {
		t.Errorf("OnCommit saw %d messages, want %d", n, workers*each)
	}
}

func TestHistory(t *testing.T) {
	s := openStore(t, "", Options{})
	// One id is a prefix of the other: their logs must not run together.
	g, longer := "g_1", "g_10"
	for i := range 10 {
		mustAppend(t, s, newMessage(g, "u_a", fmt.Sprint(i), fmt.Sprint(i)))
		mustAppend(t, s, newMessage(longer, "u_a", fmt.Sprint(i), fmt.Sprint(i)))
	}
	tests := []struct {
		name     string
		group    string
		after    uint64
		limit    int
		wantSeqs []uint64
		wantMore bool
	}{
		{"first page", g, 0, 3, []uint64{1, 2, 3}, true},
		{"middle page", g, 3, 3, []uint64{4, 5, 6}, true},
		{"page ending at the last", g, 7, 3, []uint64{8, 9, 10}, false},
		{"short last page", g, 9, 3, []uint64{10}, false},
		{"all in one", g, 0, 10, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, false},
		{"limit beyond the log", g, 0, 100, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, false},
		{"after the last", g, 10, 3, nil, false},
		{"after beyond the end", g, 1000, 3, nil, false},
		{"after the largest seq", g, math.MaxUint64, 3, nil, false},
		{"empty group", ids.New(ids.Group), 0, 3, nil, false},
		{"the longer id", longer, 8, 5, []uint64{9, 10}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msgs, more, err := s.History(tt.group, tt.after, tt.limit)
			if err != nil {
				t.Fatalf("History: %v", err)
			}
			var seqs []uint64
			for _, m := range msgs {
				seqs = append(seqs, m.GetSeq())
				if m.GetGroupId() != tt.group {
					t.Errorf("seq %d is from group %s", m.GetSeq(), m.GetGroupId())
				}
			}
			if !slices.Equal(seqs, tt.wantSeqs) || more != tt.wantMore {
				t.Errorf("History(%d, %d) = %v more %v, want %v more %v", tt.after, tt.limit, seqs, more, tt.wantSeqs, tt.wantMore)
			}
		})
	}

	// Paging through by has-more visits every message once.
	for _, limit := range []int{1, 3, 4, 10, 11} {
		var seqs []uint64
		after, pages := uint64(0), 0
		for pages = 1; pages <= 20; pages++ {
			msgs, more, err := s.History(g, after, limit)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range msgs {
				seqs = append(seqs, m.GetSeq())
				after = m.GetSeq()
			}
			if !more {
				break
			}
		}
		if len(seqs) != 10 || seqs[0] != 1 || seqs[9] != 10 || pages != (10+limit-1)/limit {
			t.Errorf("paging by %d: %d pages, seqs %v", limit, pages, seqs)
		}
	}
}

func TestAppendContext(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), time.Unix(0, 0))
	t.Cleanup(cancel2)
	tests := []struct {
		name string
		ctx  context.Context
		want error
	}{
		{"cancelled", cancelled, context.Canceled},
		{"deadline passed", expired, context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t, "", Options{})
			g := ids.New(ids.Group)
			if _, err := s.Append(tt.ctx, newMessage(g, "u_a", "k1", "x")); !errors.Is(err, tt.want) {
				t.Fatalf("Append = %v, want %v", err, tt.want)
			}
			if last, err := s.LastSeq(g); err != nil || last != 0 {
				t.Errorf("LastSeq = %d, %v; want nothing stored", last, err)
			}
			// The key was never stored: sending it again is not a duplicate.
			if res := mustAppend(t, s, newMessage(g, "u_a", "k1", "x")); res.Duplicate || res.Message.GetSeq() != 1 {
				t.Errorf("next Append = seq %d dup %v, want seq 1", res.Message.GetSeq(), res.Duplicate)
			}
		})
	}

	t.Run("ends while queued", func(t *testing.T) {
		s := openStore(t, "", Options{})
		release := holdCommits(t, s)
		g := ids.New(ids.Group)
		ctx, cancel := context.WithCancel(context.Background())
		m := newMessage(g, "u_a", "k1", "x")
		wait := appendAsync(ctx, s, m)
		waitFor(t, "the append to be queued", func() bool { return s.commits.queuedLen() == 1 })
		cancel()
		if _, errs := wait(); !errors.Is(errs[0], context.Canceled) {
			t.Fatalf("Append = %v, want context.Canceled", errs[0])
		}
		release(0)
		// The message may have been committed; the retry the contract
		// asks for must not store it twice.
		res := mustAppend(t, s, newMessage(g, "u_a", "k1", "x again"))
		if res.Message.GetSeq() != 1 || res.Duplicate && res.Message.GetMessageId() != m.GetMessageId() {
			t.Errorf("retry = %+v, want seq 1, the first message if a duplicate", res)
		}
		if log := readLog(t, s, g); len(log) != 1 {
			t.Errorf("log has %d messages, want 1", len(log))
		}
	})
}

func TestAppendInvalidUTF8(t *testing.T) {
	bad := func(g, client string) []*recordv1.Message {
		body := newMessage(g, "u_a", client, "bad \xff body")
		name := newMessage(g, "u_a", client, "ok")
		name.SenderName = "\xc3\x28"
		return []*recordv1.Message{body, name}
	}

	t.Run("alone", func(t *testing.T) {
		s := openStore(t, "", Options{})
		batches := recordCommits(s)
		g := ids.New(ids.Group)
		mustAppend(t, s, newMessage(g, "u_a", "k1", "one"))
		for _, m := range bad(g, "k2") {
			if res, err := s.Append(context.Background(), m); err == nil {
				t.Fatalf("Append(invalid UTF-8) = %+v, want an error", res)
			}
			if m.GetSeq() != 0 {
				t.Errorf("refused message carries seq %d, want 0", m.GetSeq())
			}
			if last, err := s.LastSeq(g); err != nil || last != 1 {
				t.Fatalf("LastSeq after refused append = %d, %v; want 1", last, err)
			}
		}
		// The refused key was not stored, so a corrected retry is new.
		if res := mustAppend(t, s, newMessage(g, "u_a", "k2", "fixed")); res.Duplicate || res.Message.GetSeq() != 2 {
			t.Errorf("next Append = seq %d dup %v, want seq 2", res.Message.GetSeq(), res.Duplicate)
		}
		readLog(t, s, g)
		for _, b := range batches() {
			for _, m := range b {
				if m.GetClientMsgId() == "k2" && m.GetBody() != "fixed" {
					t.Errorf("OnCommit saw the refused message %v", m)
				}
			}
		}
	})

	t.Run("in a batch", func(t *testing.T) {
		s := openStore(t, "", Options{})
		release := holdCommits(t, s)
		g := ids.New(ids.Group)
		b := bad(g, "bad")
		msgs := []*recordv1.Message{newMessage(g, "u_a", "k1", "one"), b[0], newMessage(g, "u_a", "k2", "two"), b[1]}
		wait := appendAsync(context.Background(), s, msgs...)
		release(len(msgs))
		res, errs := wait()
		var seqs []uint64
		for i := range msgs {
			if msgs[i].GetClientMsgId() == "bad" {
				if errs[i] == nil {
					t.Errorf("Append(invalid UTF-8) = %+v, want an error", res[i])
				}
				continue
			}
			if errs[i] != nil {
				t.Fatalf("Append(%s): %v", msgs[i].GetClientMsgId(), errs[i])
			}
			seqs = append(seqs, res[i].Message.GetSeq())
		}
		slices.Sort(seqs)
		if !slices.Equal(seqs, []uint64{1, 2}) {
			t.Errorf("valid messages got seqs %v, want [1 2]", seqs)
		}
		if res := mustAppend(t, s, newMessage(g, "u_a", "k3", "three")); res.Message.GetSeq() != 3 {
			t.Errorf("next Append = seq %d, want 3", res.Message.GetSeq())
		}
		readLog(t, s, g)
	})
}

// TestCloseDrains closes the store while appends are in flight: each
// Append either succeeded, and its message is there after reopening, or
// failed with ErrClosed.
func TestCloseDrains(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	g := ids.New(ids.Group)
	type ack struct {
		seq uint64
		id  string
	}
	var (
		mu    sync.Mutex
		acked []ack
		wg    sync.WaitGroup
	)
	errc := make(chan error, 16)
	for w := range 16 {
		wg.Go(func() {
			for i := range 100_000 {
				m := newMessage(g, fmt.Sprintf("u_%d", w), fmt.Sprint(i), "x")
				res, err := s.Append(context.Background(), m)
				if err != nil {
					errc <- err
					return
				}
				mu.Lock()
				acked = append(acked, ack{res.Message.GetSeq(), m.GetMessageId()})
				mu.Unlock()
			}
			errc <- nil
		})
	}
	waitFor(t, "some appends", func() bool { mu.Lock(); defer mu.Unlock(); return len(acked) >= 200 })
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("Append during Close = %v, want ErrClosed", err)
		}
	}
	s2 := openStore(t, dir, Options{})
	log := readLog(t, s2, g)
	for _, a := range acked {
		if a.seq > uint64(len(log)) || log[a.seq-1].GetMessageId() != a.id {
			t.Errorf("acknowledged %s at seq %d is not stored there", a.id, a.seq)
		}
	}
	if len(log) != len(acked) {
		t.Errorf("log has %d messages, %d were acknowledged", len(log), len(acked))
	}
}
