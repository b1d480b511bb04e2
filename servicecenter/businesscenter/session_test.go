package businesscenter_test

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	"github.com/roamfed/roamfed/internal/ids"
	"github.com/roamfed/roamfed/servicecenter/resourcepool"
)

func TestSessionReady(t *testing.T) {
	t.Parallel()
	r := startRegion(t)
	alice := r.newUser(t, "alice")

	_, ready := r.startSession(t, alice)
	if !ids.Valid(ids.Session, ready.GetSessionId()) || ready.GetUserId() != alice.id || ready.GetRegion() != "ap" {
		t.Errorf("Ready = %v", ready)
	}
	if len(ready.GetOnline()) != 0 {
		t.Errorf("Ready.online = %v with nobody else online", ready.GetOnline())
	}
	_, second := r.startSession(t, alice)
	if second.GetSessionId() == ready.GetSessionId() {
		t.Errorf("two sessions share the id %s", ready.GetSessionId())
	}
}

func TestSessionPing(t *testing.T) {
	t.Parallel()
	r := startRegion(t)
	alice := r.newUser(t, "alice")
	s, _ := r.startSession(t, alice)

	for _, nonce := range []uint64{0, 1, 42, 1<<64 - 1} {
		s.ping(nonce)
		f := s.nextMatching("Pong", func(f *clientv1.SessionResponse) bool { return f.GetPresence() == nil })
		if f.GetPong() == nil || f.GetPong().GetNonce() != nonce {
			t.Errorf("Ping %d answered with %v", nonce, f)
		}
	}
}

// TestSessionDeliveryOrder sends 200 messages one after another and checks
// that a member's session receives each once, in sequence order, and that
// acknowledged deliveries are not sent again.
func TestSessionDeliveryOrder(t *testing.T) {
	t.Parallel()
	// Short enough to see a resend within the test, long enough that a
	// client that acks at once is not sent CatchUps on a loaded machine.
	const ackTimeout = 500 * time.Millisecond
	r := startRegion(t, withDelivery(ackTimeout, 5))
	alice := r.newUser(t, "alice")
	bob := r.newUser(t, "bob")
	g := r.createGroup(t, alice, bob)
	s, _ := r.startSession(t, alice)

	const n = 200
	sent := make(chan error, 1)
	go func() {
		for i := range n {
			_, err := r.client.SendMessage(bob.ctx, &clientv1.SendMessageRequest{
				GroupId: g.GetId(), ClientMsgId: fmt.Sprint(i), Body: fmt.Sprintf("body %d", i+1),
			})
			if err != nil {
				sent <- fmt.Errorf("send %d: %w", i, err)
				return
			}
		}
		sent <- nil
	}()

	seqOf := make(map[uint64]uint64) // delivery id → seq
	var lastID uint64
	for want := uint64(1); want <= n; {
		d := s.nextDelivery()
		if seq, seen := seqOf[d.GetDeliveryId()]; seen {
			// A resend of a delivery whose ack was still on its way.
			if d.GetAttempt() < 2 || d.GetMessage().GetSeq() != seq {
				t.Fatalf("delivery %d came again as %v", d.GetDeliveryId(), d)
			}
			s.ack(d.GetDeliveryId())
			continue
		}
		m := d.GetMessage()
		if m.GetSeq() != want || d.GetAttempt() != 1 || d.GetDeliveryId() <= lastID {
			t.Fatalf("got delivery %d attempt %d of seq %d after delivery %d; want seq %d, attempt 1",
				d.GetDeliveryId(), d.GetAttempt(), m.GetSeq(), lastID, want)
		}
		if m.GetGroupId() != g.GetId() || m.GetSenderId() != bob.id || m.GetBody() != fmt.Sprintf("body %d", want) {
			t.Fatalf("delivery of seq %d carries %v", want, m)
		}
		seqOf[d.GetDeliveryId()] = m.GetSeq()
		lastID = d.GetDeliveryId()
		s.ack(d.GetDeliveryId())
		want++
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}

	// The server handles a session's frames in order, so once the Pong is
	// back every ack has been applied; resends queued before that are
	// tolerated, any after it are not.
	s.ping(7)
	for {
		f := s.next()
		if f.GetPong() != nil {
			break
		}
		if d := f.GetDelivery(); d != nil {
			if _, seen := seqOf[d.GetDeliveryId()]; !seen || d.GetAttempt() < 2 {
				t.Fatalf("unexpected delivery %v", d)
			}
		}
	}
	s.expectNoDelivery(3 * ackTimeout)
	poll(t, "read_seq", func() error {
		if got := r.summary(t, alice, g.GetId()).GetReadSeq(); got != n {
			return fmt.Errorf("read_seq %d, want %d", got, n)
		}
		return nil
	})
}

// TestSessionResend leaves a delivery unacknowledged and checks that it is
// sent again with the same id until its attempts are used, that the client
// is then told to catch up, and that live delivery resumes afterwards.
func TestSessionResend(t *testing.T) {
	t.Parallel()
	const ackTimeout, maxAttempts = 200 * time.Millisecond, 3
	r := startRegion(t, withDelivery(ackTimeout, maxAttempts))
	alice := r.newUser(t, "alice")
	bob := r.newUser(t, "bob")
	g := r.createGroup(t, alice, bob)
	s, _ := r.startSession(t, alice)

	// Attempt k is sent no earlier than k-1 ack timeouts after the first,
	// which is sent after this.
	start := time.Now()
	r.send(t, bob, g.GetId(), "lost", "please ack me")
	first := s.nextDelivery()
	if first.GetAttempt() != 1 || first.GetMessage().GetSeq() != 1 {
		t.Fatalf("first delivery = %v", first)
	}
	for attempt := uint32(2); attempt <= maxAttempts; attempt++ {
		d := s.nextDelivery()
		if d.GetDeliveryId() != first.GetDeliveryId() || d.GetAttempt() != attempt || d.GetMessage().GetSeq() != 1 {
			t.Fatalf("resend = %v, want delivery %d attempt %d", d, first.GetDeliveryId(), attempt)
		}
		if took, least := time.Since(start), time.Duration(attempt-1)*ackTimeout; took < least {
			t.Errorf("attempt %d came %v after the send; want at least %v", attempt, took, least)
		}
	}
	f := s.nextMatching("CatchUp", func(f *clientv1.SessionResponse) bool { return f.GetPresence() == nil })
	if took, least := time.Since(start), maxAttempts*ackTimeout; took < least {
		t.Errorf("CatchUp came %v after the send; want at least %v", took, least)
	}
	cu := f.GetCatchUp()
	if cu == nil || cu.GetGroupId() != g.GetId() || cu.GetAfterSeq() != 0 {
		t.Fatalf("after the last attempt got %v, want CatchUp{%s, 0}", f, g.GetId())
	}
	s.expectNoDelivery(3 * ackTimeout)

	// The catch-up covers what was not acknowledged.
	msgs, _ := r.history(t, alice, g.GetId(), cu.GetAfterSeq())
	if len(msgs) != 1 || msgs[0].GetMessageId() != first.GetMessage().GetMessageId() {
		t.Errorf("history after %d = %v, want the unacknowledged message", cu.GetAfterSeq(), msgs)
	}

	// Live delivery resumes, and an ack on a resend stops it.
	r.send(t, bob, g.GetId(), "next", "second")
	d := s.nextDelivery()
	if d.GetMessage().GetSeq() != 2 || d.GetAttempt() != 1 || d.GetDeliveryId() == first.GetDeliveryId() {
		t.Fatalf("delivery after catch-up = %v, want seq 2 attempt 1 with a new id", d)
	}
	re := s.nextDelivery()
	if re.GetDeliveryId() != d.GetDeliveryId() || re.GetAttempt() != 2 {
		t.Fatalf("resend = %v, want delivery %d attempt 2", re, d.GetDeliveryId())
	}
	s.ack(d.GetDeliveryId())
	s.ping(1)
	for {
		f := s.next()
		if f.GetPong() != nil {
			break
		}
		if f.GetCatchUp() != nil {
			t.Fatalf("got %v for a delivery acknowledged on its second attempt", f)
		}
	}
	s.expectNoDelivery(maxAttempts * ackTimeout)
	poll(t, "read_seq", func() error {
		if got := r.summary(t, alice, g.GetId()).GetReadSeq(); got != 2 {
			return fmt.Errorf("read_seq %d, want 2", got)
		}
		return nil
	})
}

// TestSessionQueueOverflow fills a session's delivery queue and checks that
// the client is told to catch up and finds every message in the history.
func TestSessionQueueOverflow(t *testing.T) {
	t.Parallel()
	const maxQueued, n = 8, 50

	t.Run("client that never acks", func(t *testing.T) {
		t.Parallel()
		r := startRegion(t,
			withLimits(func(l *resourcepool.Limits) { l.MaxQueuedPerSession = maxQueued }),
			withDelivery(200*time.Millisecond, 2))
		alice := r.newUser(t, "alice")
		bob := r.newUser(t, "bob")
		g := r.createGroup(t, alice, bob)
		s, _ := r.startSession(t, alice)
		for i := range n {
			r.send(t, bob, g.GetId(), fmt.Sprint(i), fmt.Sprintf("body %d", i+1))
		}
		// The client never acks; it keeps what it is sent and what it
		// fetches on each CatchUp until it has the whole log.
		have := make(map[uint64]bool)
		catchUps := 0
		for len(have) < n {
			f := s.nextMatching("Delivery or CatchUp", func(f *clientv1.SessionResponse) bool {
				return f.GetDelivery() != nil || f.GetCatchUp() != nil
			})
			if d := f.GetDelivery(); d != nil {
				have[d.GetMessage().GetSeq()] = true
				continue
			}
			catchUps++
			cu := f.GetCatchUp()
			checkCatchUp(t, cu, g.GetId(), have)
			msgs, _ := r.history(t, alice, g.GetId(), cu.GetAfterSeq())
			for _, m := range msgs {
				have[m.GetSeq()] = true
			}
		}
		if catchUps == 0 {
			t.Errorf("got all %d messages with a queue of %d and no CatchUp", n, maxQueued)
		}
		for seq := uint64(1); seq <= n; seq++ {
			if !have[seq] {
				t.Errorf("seq %d lost", seq)
			}
		}
	})

	t.Run("client that acks late", func(t *testing.T) {
		t.Parallel()
		// Long enough that no delivery runs out of attempts while bob sends.
		r := startRegion(t,
			withLimits(func(l *resourcepool.Limits) { l.MaxQueuedPerSession = maxQueued }),
			withDelivery(time.Second, 30))
		alice := r.newUser(t, "alice")
		bob := r.newUser(t, "bob")
		g := r.createGroup(t, alice, bob)
		s, _ := r.startSession(t, alice)
		for i := range n {
			r.send(t, bob, g.GetId(), fmt.Sprint(i), fmt.Sprintf("body %d", i+1))
		}
		// Only maxQueued deliveries fit; acknowledging them makes room,
		// and the client is told to catch up on what did not fit. No
		// delivery runs out of attempts within waitFor, so the CatchUp
		// comes from the acks.
		have := make(map[uint64]bool)
		catchUps := 0
		for len(have) < n {
			f := s.nextMatching("Delivery or CatchUp", func(f *clientv1.SessionResponse) bool {
				return f.GetDelivery() != nil || f.GetCatchUp() != nil
			})
			if d := f.GetDelivery(); d != nil {
				have[d.GetMessage().GetSeq()] = true
				s.ack(d.GetDeliveryId())
				continue
			}
			catchUps++
			cu := f.GetCatchUp()
			checkCatchUp(t, cu, g.GetId(), have)
			msgs, last := r.history(t, alice, g.GetId(), cu.GetAfterSeq())
			if last != n || len(msgs) != int(n-cu.GetAfterSeq()) {
				t.Fatalf("history after %d: %d messages, last_seq %d; want %d, %d", cu.GetAfterSeq(), len(msgs), last, n-cu.GetAfterSeq(), n)
			}
			for _, m := range msgs {
				have[m.GetSeq()] = true
			}
			t.Logf("CatchUp after %d", cu.GetAfterSeq())
		}
		if catchUps == 0 {
			t.Fatalf("got all %d messages with a queue of %d and no CatchUp", n, maxQueued)
		}

		// Live delivery resumes after the catch-up. (A resend of an
		// earlier delivery whose ack crossed it may come first.)
		r.send(t, bob, g.GetId(), "after", "after the catch-up")
		for {
			d := s.nextDelivery()
			s.ack(d.GetDeliveryId())
			if seq := d.GetMessage().GetSeq(); seq > n {
				if seq != n+1 || d.GetAttempt() != 1 {
					t.Errorf("delivery after catch-up = %v, want seq %d, attempt 1", d, n+1)
				}
				break
			}
		}
	})
}

// checkCatchUp checks that a CatchUp names the group and does not skip
// anything the client has not got.
func checkCatchUp(t *testing.T, cu *clientv1.CatchUp, groupID string, have map[uint64]bool) {
	t.Helper()
	if cu.GetGroupId() != groupID {
		t.Fatalf("CatchUp for group %s, want %s", cu.GetGroupId(), groupID)
	}
	for seq := uint64(1); seq <= cu.GetAfterSeq(); seq++ {
		if !have[seq] {
			t.Fatalf("CatchUp after %d, but seq %d was never delivered", cu.GetAfterSeq(), seq)
		}
	}
}

func TestSessionPresence(t *testing.T) {
	t.Parallel()
	r := startRegion(t)
	alice := r.newUser(t, "alice")
	bob := r.newUser(t, "bob")
	carol := r.newUser(t, "carol") // shares no group with bob
	r.createGroup(t, alice, bob)
	r.createGroup(t, carol, alice)

	as, _ := r.startSession(t, alice)
	cs, _ := r.startSession(t, carol)
	bs, _ := r.startSession(t, bob)

	isBob := func(online bool) func(*clientv1.SessionResponse) bool {
		return func(f *clientv1.SessionResponse) bool {
			p := f.GetPresence()
			return p != nil && p.GetUserId() == bob.id && p.GetOnline() == online
		}
	}
	on := as.nextMatching("bob online", isBob(true)).GetPresence()
	if on.GetUsername() != bob.name || on.GetRegion() != "ap" || on.GetAt() == nil {
		t.Errorf("online presence = %v", on)
	}

	bs.closeSend()
	off := as.nextMatching("bob offline", isBob(false)).GetPresence()
	if off.GetUsername() != bob.name || off.GetRegion() != "" || off.GetAt() == nil {
		t.Errorf("offline presence = %v", off)
	}

	// carol is alice's co-member, not bob's: she hears nothing of him.
	cs.ping(9)
	for {
		f := cs.next()
		if p := f.GetPresence(); p != nil && p.GetUserId() == bob.id {
			t.Fatalf("carol was told of bob: %v", p)
		}
		if f.GetPong() != nil {
			break
		}
	}
}

func TestSessionReadyOnline(t *testing.T) {
	t.Parallel()
	r := startRegion(t)
	alice := r.newUser(t, "alice")
	bob := r.newUser(t, "bob")
	r.createGroup(t, alice, bob)

	s, ready := r.startSession(t, bob)
	if len(ready.GetOnline()) != 0 {
		t.Errorf("Ready.online = %v before anyone else is online", ready.GetOnline())
	}
	s.closeSend()

	r.startSession(t, alice)
	// alice's presence reaches the region over the bus, so a session that
	// starts right after hers may not list her yet.
	poll(t, "alice in bob's Ready.online", func() error {
		s, ready := r.startSession(t, bob)
		defer s.closeSend()
		online := ready.GetOnline()
		if len(online) != 1 {
			return fmt.Errorf("Ready.online = %v", online)
		}
		if p := online[0]; p.GetUserId() != alice.id || p.GetUsername() != alice.name || !p.GetOnline() || p.GetRegion() != "ap" {
			t.Fatalf("Ready.online = %v", online)
		}
		return nil
	})
}

func TestSessionLimit(t *testing.T) {
	t.Parallel()
	r := startRegion(t, withLimits(func(l *resourcepool.Limits) { l.MaxSessions = 1 }))
	alice := r.newUser(t, "alice")
	bob := r.newUser(t, "bob")

	first, _ := r.startSession(t, alice)
	refused := r.openSession(t, bob)
	err := refused.waitEnd(waitFor)
	wantCode(t, err, codes.ResourceExhausted)
	qf, ok := detail[*errdetails.QuotaFailure](err)
	if !ok || len(qf.GetViolations()) != 1 || qf.GetViolations()[0].GetQuotaId() != string(resourcepool.ReasonSessions) {
		t.Errorf("QuotaFailure = %v, want one sessions violation", qf)
	}
	select {
	case f := <-refused.frames:
		t.Errorf("refused session sent %v", f)
	default:
	}

	// The slot comes back when the session ends.
	first.closeSend()
	r.startSession(t, bob)
}

func TestSessionCursors(t *testing.T) {
	t.Parallel()
	r := startRegion(t, withDelivery(300*time.Millisecond, 3))
	alice := r.newUser(t, "alice")
	bob := r.newUser(t, "bob")
	g := r.createGroup(t, alice, bob)
	other := r.createGroup(t, bob, alice)

	s, _ := r.startSession(t, alice)
	for i := range 5 {
		r.send(t, bob, g.GetId(), fmt.Sprint(i), "m")
	}
	r.send(t, bob, other.GetId(), "o", "m")
	// Acknowledge seqs 1 to 3 of g and nothing of other.
	acked := 0
	for acked < 3 {
		d := s.nextDelivery()
		if d.GetMessage().GetGroupId() == g.GetId() && d.GetMessage().GetSeq() <= 3 && d.GetAttempt() == 1 {
			s.ack(d.GetDeliveryId())
			acked++
		}
	}
	// Make sure the acks are in before the stream ends.
	s.ping(3)
	s.nextMatching("Pong", func(f *clientv1.SessionResponse) bool { return f.GetPong() != nil })
	s.closeSend()

	poll(t, "read_seq after close", func() error {
		gs, os := r.summary(t, alice, g.GetId()), r.summary(t, alice, other.GetId())
		if gs.GetReadSeq() != 3 || gs.GetLastSeq() != 5 || os.GetReadSeq() != 0 || os.GetLastSeq() != 1 {
			return fmt.Errorf("summaries %v and %v; want read 3 of 5 and 0 of 1", gs, os)
		}
		return nil
	})
	if bs := r.summary(t, bob, g.GetId()); bs.GetReadSeq() != 0 {
		t.Errorf("bob's read_seq = %d; alice's acks moved it", bs.GetReadSeq())
	}

	// A later session moves the cursor on.
	s2, _ := r.startSession(t, alice)
	r.send(t, bob, g.GetId(), "6", "m")
	d := s2.nextDelivery()
	if d.GetMessage().GetSeq() != 6 {
		t.Fatalf("delivery = %v, want seq 6", d)
	}
	s2.ack(d.GetDeliveryId())
	poll(t, "read_seq while open", func() error {
		if got := r.summary(t, alice, g.GetId()).GetReadSeq(); got != 6 {
			return fmt.Errorf("read_seq %d, want 6", got)
		}
		return nil
	})
	s2.closeSend()
	if got := r.summary(t, alice, g.GetId()).GetReadSeq(); got != 6 {
		t.Errorf("read_seq after close = %d, want 6", got)
	}
}

func TestSessionEndsWhenCancelled(t *testing.T) {
	t.Parallel()
	r := startRegion(t)
	alice := r.newUser(t, "alice")
	s, _ := r.startSession(t, alice)
	s.cancel()
	if err := s.waitEnd(waitFor); status.Code(err) != codes.Canceled {
		t.Errorf("stream ended with %v, want Canceled", err)
	}
	// The region still serves the user.
	r.startSession(t, alice)
}

// ping sends a Ping.
func (s *session) ping(nonce uint64) {
	s.t.Helper()
	err := s.stream.Send(&clientv1.SessionRequest{Kind: &clientv1.SessionRequest_Ping{Ping: &clientv1.Ping{Nonce: nonce}}})
	if err != nil {
		s.t.Fatalf("Send Ping: %v", err)
	}
}

// expectNoDelivery fails the test if a delivery or catch-up arrives within
// d. Presence and pongs are ignored.
func (s *session) expectNoDelivery(d time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(d)
	for {
		f, ok := s.nextWithin(time.Until(deadline))
		if !ok {
			if err := s.endErr(); err != nil {
				s.t.Fatalf("stream ended: %v", err)
			}
			return
		}
		if f.GetDelivery() != nil || f.GetDeliveries() != nil || f.GetCatchUp() != nil {
			s.t.Fatalf("got %v; want nothing more", f)
		}
	}
}

// TestSessionPresenceAfterJoin checks that a member who learns of a user's
// presence from Ready is also told when that user goes offline, even when
// they came to share a group after the user's session began.
func TestSessionPresenceAfterJoin(t *testing.T) {
	t.Parallel()
	r := startRegion(t)
	alice := r.newUser(t, "alice")
	bob := r.newUser(t, "bob")
	g := r.createGroup(t, alice)
	as, _ := r.startSession(t, alice)
	if _, err := r.client.JoinGroup(bob.ctx, &clientv1.JoinGroupRequest{GroupId: g.GetId()}); err != nil {
		t.Fatalf("JoinGroup: %v", err)
	}

	var bs *session
	poll(t, "alice in bob's Ready.online", func() error {
		s, ready := r.startSession(t, bob)
		if len(ready.GetOnline()) != 1 || ready.GetOnline()[0].GetUserId() != alice.id {
			s.closeSend()
			return fmt.Errorf("Ready.online = %v", ready.GetOnline())
		}
		bs = s
		return nil
	})

	as.closeSend()
	bs.nextMatching("alice offline", func(f *clientv1.SessionResponse) bool {
		p := f.GetPresence()
		return p != nil && p.GetUserId() == alice.id && !p.GetOnline()
	})
}

// TestSessionPresenceOfNewMember checks that a member whose session is open
// when another user joins one of their groups hears of that user's
// presence from then on.
func TestSessionPresenceOfNewMember(t *testing.T) {
	t.Parallel()
	r := startRegion(t)
	alice := r.newUser(t, "alice")
	bob := r.newUser(t, "bob")
	g := r.createGroup(t, alice)
	as, _ := r.startSession(t, alice)
	if _, err := r.client.JoinGroup(bob.ctx, &clientv1.JoinGroupRequest{GroupId: g.GetId()}); err != nil {
		t.Fatalf("JoinGroup: %v", err)
	}

	bs, _ := r.startSession(t, bob)
	as.nextMatching("bob online", func(f *clientv1.SessionResponse) bool {
		p := f.GetPresence()
		return p != nil && p.GetUserId() == bob.id && p.GetOnline()
	})
	bs.closeSend()
	as.nextMatching("bob offline", func(f *clientv1.SessionResponse) bool {
		p := f.GetPresence()
		return p != nil && p.GetUserId() == bob.id && !p.GetOnline()
	})
}
