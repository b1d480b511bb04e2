package businesscenter_test

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	"github.com/roamfed/roamfed/internal/ids"
	"github.com/roamfed/roamfed/servicecenter/resourcepool"
)

func TestSendMessage(t *testing.T) {
	t.Parallel()
	r := startRegion(t)
	alice := r.newUser(t, "alice")
	bob := r.newUser(t, "bob")
	g := r.createGroup(t, alice, bob)

	senders := []*user{alice, bob, alice, bob, bob, alice}
	for i, u := range senders {
		cmid := fmt.Sprintf("c%d", i)
		resp := r.send(t, u, g.GetId(), cmid, fmt.Sprintf("message %d from %s", i, u.name))
		if resp.GetSeq() != uint64(i+1) {
			t.Errorf("message %d: seq %d, want %d", i, resp.GetSeq(), i+1)
		}
		if resp.GetState() != clientv1.DeliveryState_DELIVERY_STATE_COMMITTED {
			t.Errorf("message %d: state %v, want COMMITTED", i, resp.GetState())
		}
		if resp.GetDuplicate() || !ids.Valid(ids.Message, resp.GetMessageId()) || resp.GetCommittedAt() == nil {
			t.Errorf("message %d: response %v", i, resp)
		}
	}

	msgs, last := r.history(t, bob, g.GetId(), 0)
	if last != uint64(len(senders)) || len(msgs) != len(senders) {
		t.Fatalf("history: %d messages, last_seq %d; want %d", len(msgs), last, len(senders))
	}
	for i, m := range msgs {
		u := senders[i]
		if m.GetSeq() != uint64(i+1) || m.GetGroupId() != g.GetId() || m.GetSenderId() != u.id ||
			m.GetSenderName() != u.name || m.GetClientMsgId() != fmt.Sprintf("c%d", i) ||
			m.GetBody() != fmt.Sprintf("message %d from %s", i, u.name) || m.GetOriginRegion() != "ap" ||
			m.GetSentAt() == nil || m.GetCommittedAt() == nil {
			t.Errorf("history[%d] = %v", i, m)
		}
	}
}

func TestSendMessageIdempotent(t *testing.T) {
	t.Parallel()
	r := startRegion(t)
	alice := r.newUser(t, "alice")
	bob := r.newUser(t, "bob")
	g := r.createGroup(t, alice, bob)

	first := r.send(t, alice, g.GetId(), "retry-me", "once")
	again := r.send(t, alice, g.GetId(), "retry-me", "once")
	if !again.GetDuplicate() || again.GetSeq() != first.GetSeq() || again.GetMessageId() != first.GetMessageId() {
		t.Errorf("retry = %v, want a duplicate of %v", again, first)
	}
	if first.GetDuplicate() {
		t.Error("first send is marked duplicate")
	}

	// The key is per sender: bob's message with the same key is new.
	other := r.send(t, bob, g.GetId(), "retry-me", "bob's")
	if other.GetDuplicate() || other.GetSeq() != 2 {
		t.Errorf("bob's send with alice's key = %v, want a new message at seq 2", other)
	}
	// Without a key the server picks one, so each send is new.
	for want := uint64(3); want <= 4; want++ {
		if resp := r.send(t, alice, g.GetId(), "", "no key"); resp.GetDuplicate() || resp.GetSeq() != want {
			t.Errorf("send without key = %v, want new message at seq %d", resp, want)
		}
	}

	msgs, last := r.history(t, alice, g.GetId(), 0)
	if last != 4 || len(msgs) != 4 {
		t.Fatalf("history: %d messages, last_seq %d; want 4", len(msgs), last)
	}
	if got := msgs[0]; got.GetClientMsgId() != "retry-me" || got.GetMessageId() != first.GetMessageId() {
		t.Errorf("history[0] = %v", got)
	}
}

func TestSendMessageRefused(t *testing.T) {
	t.Parallel()
	const maxBytes = 1024
	r := startRegion(t, withLimits(func(l *resourcepool.Limits) { l.MaxMessageBytes = maxBytes }))
	alice := r.newUser(t, "alice")
	mallory := r.newUser(t, "mallory")
	g := r.createGroup(t, alice)
	gid := g.GetId()

	// A former member is refused like any non-member.
	former := r.newUser(t, "former")
	if _, err := r.client.JoinGroup(former.ctx, &clientv1.JoinGroupRequest{GroupId: gid}); err != nil {
		t.Fatalf("JoinGroup: %v", err)
	}
	if _, err := r.client.LeaveGroup(former.ctx, &clientv1.LeaveGroupRequest{GroupId: gid}); err != nil {
		t.Fatalf("LeaveGroup: %v", err)
	}

	// The limit itself is allowed.
	r.send(t, alice, gid, "at-limit", strings.Repeat("x", maxBytes))
	wantMsgs, wantLast := r.history(t, alice, gid, 0)

	tests := []struct {
		name      string
		who       *user
		req       *clientv1.SendMessageRequest
		want      codes.Code
		wantField string // for InvalidArgument
	}{
		{"non-member", mallory, &clientv1.SendMessageRequest{GroupId: gid, Body: "let me in"}, codes.PermissionDenied, ""},
		{"former member", former, &clientv1.SendMessageRequest{GroupId: gid, Body: "still here?"}, codes.PermissionDenied, ""},
		{"body over the limit", alice, &clientv1.SendMessageRequest{GroupId: gid, Body: strings.Repeat("x", maxBytes+1)}, codes.ResourceExhausted, ""},
		{"invalid UTF-8 body", alice, &clientv1.SendMessageRequest{GroupId: gid, Body: "caf\xc3"}, codes.InvalidArgument, "body"},
		{"empty body", alice, &clientv1.SendMessageRequest{GroupId: gid, Body: ""}, codes.InvalidArgument, "body"},
		{"65-byte client_msg_id", alice, &clientv1.SendMessageRequest{GroupId: gid, ClientMsgId: strings.Repeat("k", 65), Body: "hi"}, codes.InvalidArgument, "client_msg_id"},
		{"client_msg_id with a space", alice, &clientv1.SendMessageRequest{GroupId: gid, ClientMsgId: "a b", Body: "hi"}, codes.InvalidArgument, "client_msg_id"},
		{"malformed group id", alice, &clientv1.SendMessageRequest{GroupId: "nope", Body: "hi"}, codes.InvalidArgument, "group_id"},
		{"unknown group", alice, &clientv1.SendMessageRequest{GroupId: ids.New(ids.Group), Body: "hi"}, codes.NotFound, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := r.client.SendMessage(tt.who.ctx, tt.req)
			wantCode(t, err, tt.want)
			if tt.wantField != "" {
				if got := fieldViolations(err); !slices.Equal(got, []string{tt.wantField}) {
					t.Errorf("field violations = %q, want [%q]", got, tt.wantField)
				}
			}
			if tt.want == codes.ResourceExhausted {
				qf, ok := detail[*errdetails.QuotaFailure](err)
				if !ok || len(qf.GetViolations()) != 1 {
					t.Fatalf("details %v, want one QuotaFailure violation", qf)
				}
				if v := qf.GetViolations()[0]; v.GetQuotaId() != string(resourcepool.ReasonMessageSize) || v.GetSubject() != "user:"+alice.id {
					t.Errorf("quota violation = %v", v)
				}
			}
			msgs, last := r.history(t, alice, gid, 0)
			if last != wantLast || len(msgs) != len(wantMsgs) {
				t.Errorf("after a refused send: %d messages, last_seq %d; want %d, %d", len(msgs), last, len(wantMsgs), wantLast)
			}
		})
	}
}

func TestSendRate(t *testing.T) {
	t.Parallel()
	// A slow refill, so that the test does not depend on how fast the
	// first sends are.
	const refill = 0.2 // messages per second
	r := startRegion(t, withLimits(func(l *resourcepool.Limits) {
		l.SendRate = refill
		l.SendBurst = 2
	}))
	alice := r.newUser(t, "alice")
	bob := r.newUser(t, "bob")
	g := r.createGroup(t, alice, bob)

	r.send(t, alice, g.GetId(), "1", "one")
	r.send(t, alice, g.GetId(), "2", "two")
	_, err := r.client.SendMessage(alice.ctx, &clientv1.SendMessageRequest{GroupId: g.GetId(), ClientMsgId: "3", Body: "three"})
	wantCode(t, err, codes.ResourceExhausted)
	ri, ok := detail[*errdetails.RetryInfo](err)
	if !ok {
		t.Fatalf("refusal %v has no RetryInfo", err)
	}
	if d := ri.GetRetryDelay().AsDuration(); d <= 0 || d > time.Duration(float64(time.Second)/refill) {
		t.Errorf("retry delay %v, want in (0, %v]", d, time.Duration(float64(time.Second)/refill))
	}
	qf, ok := detail[*errdetails.QuotaFailure](err)
	if !ok || len(qf.GetViolations()) != 1 || qf.GetViolations()[0].GetQuotaId() != string(resourcepool.ReasonSendRate) {
		t.Errorf("QuotaFailure = %v, want one send_rate violation", qf)
	}
	if last := r.lastSeq(t, alice, g.GetId()); last != 2 {
		t.Errorf("last_seq %d after a refused send, want 2", last)
	}

	// The budget is per user.
	if resp := r.send(t, bob, g.GetId(), "b1", "bob's"); resp.GetSeq() != 3 {
		t.Errorf("bob's send = %v, want seq 3", resp)
	}
}

func TestGetHistory(t *testing.T) {
	t.Parallel()
	r := startRegion(t)
	alice := r.newUser(t, "alice")
	bob := r.newUser(t, "bob")
	g := r.createGroup(t, alice)
	const n = 25
	for i := range n {
		r.send(t, alice, g.GetId(), fmt.Sprint(i), fmt.Sprintf("body %d", i+1))
	}

	tests := []struct {
		after    uint64
		limit    uint32
		wantSeqs []uint64
		wantMore bool
	}{
		{0, 0, seqRange(1, n), false},
		{0, 10, seqRange(1, 10), true},
		{10, 10, seqRange(11, 20), true},
		{20, 10, seqRange(21, n), false},
		{24, 1, seqRange(n, n), false},
		{0, n, seqRange(1, n), false},
		{0, n - 1, seqRange(1, n-1), true},
		{n, 10, nil, false},
		{1000, 10, nil, false},
		{math.MaxUint64, 10, nil, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("after=%d,limit=%d", tt.after, tt.limit), func(t *testing.T) {
			resp, err := r.client.GetHistory(alice.ctx, &clientv1.GetHistoryRequest{GroupId: g.GetId(), AfterSeq: tt.after, Limit: tt.limit})
			if err != nil {
				t.Fatalf("GetHistory: %v", err)
			}
			var seqs []uint64
			for _, m := range resp.GetMessages() {
				seqs = append(seqs, m.GetSeq())
				if m.GetBody() != fmt.Sprintf("body %d", m.GetSeq()) {
					t.Errorf("seq %d has body %q", m.GetSeq(), m.GetBody())
				}
			}
			if !slices.Equal(seqs, tt.wantSeqs) || resp.GetHasMore() != tt.wantMore || resp.GetLastSeq() != n {
				t.Errorf("got seqs %v has_more %v last_seq %d; want %v %v %d",
					seqs, resp.GetHasMore(), resp.GetLastSeq(), tt.wantSeqs, tt.wantMore, n)
			}
		})
	}

	refused := []struct {
		name    string
		who     *user
		groupID string
		want    codes.Code
	}{
		{"non-member", bob, g.GetId(), codes.PermissionDenied},
		{"unknown group", alice, ids.New(ids.Group), codes.NotFound},
		{"malformed id", alice, "g_0", codes.InvalidArgument},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := r.client.GetHistory(tt.who.ctx, &clientv1.GetHistoryRequest{GroupId: tt.groupID})
			wantCode(t, err, tt.want)
			if len(resp.GetMessages()) != 0 {
				t.Errorf("refused GetHistory returned messages")
			}
		})
	}
}

func TestGetHistoryLimitCap(t *testing.T) {
	t.Parallel()
	r := startRegion(t)
	alice := r.newUser(t, "alice")
	g := r.createGroup(t, alice)

	// Enough for more than one capped page; sent concurrently so that the
	// commit queue batches them.
	const n, workers = 1010, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				_, err := r.client.SendMessage(alice.ctx, &clientv1.SendMessageRequest{GroupId: g.GetId(), ClientMsgId: fmt.Sprint(i), Body: "x"})
				if err != nil {
					errs <- fmt.Errorf("send %d: %w", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	for _, tt := range []struct {
		limit uint32
		want  int
	}{
		{0, 100},
		{1000, 1000},
		{1001, 1000},
		{math.MaxUint32, 1000},
	} {
		resp, err := r.client.GetHistory(alice.ctx, &clientv1.GetHistoryRequest{GroupId: g.GetId(), Limit: tt.limit})
		if err != nil {
			t.Fatalf("GetHistory limit %d: %v", tt.limit, err)
		}
		msgs := resp.GetMessages()
		if len(msgs) != tt.want || !resp.GetHasMore() || resp.GetLastSeq() != n {
			t.Errorf("limit %d: %d messages, has_more %v, last_seq %d; want %d, true, %d",
				tt.limit, len(msgs), resp.GetHasMore(), resp.GetLastSeq(), tt.want, n)
			continue
		}
		for i, m := range msgs {
			if m.GetSeq() != uint64(i+1) {
				t.Fatalf("limit %d: message %d has seq %d", tt.limit, i, m.GetSeq())
			}
		}
	}
	// Every message is there exactly once, whatever order the workers'
	// sends were committed in.
	msgs, _ := r.history(t, alice, g.GetId(), 0)
	seen := make(map[string]bool)
	for i, m := range msgs {
		if m.GetSeq() != uint64(i+1) || seen[m.GetClientMsgId()] {
			t.Fatalf("history[%d] = seq %d key %q (seen before: %v)", i, m.GetSeq(), m.GetClientMsgId(), seen[m.GetClientMsgId()])
		}
		seen[m.GetClientMsgId()] = true
	}
	if len(seen) != n {
		t.Errorf("history holds %d messages, want %d", len(seen), n)
	}
}

func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

// TestGetHistoryWhileSending reads pages while messages are committed and
// checks that each page is consistent with its last_seq: no message past
// it, no gap, and has_more whenever the page stops short of it.
func TestGetHistoryWhileSending(t *testing.T) {
	t.Parallel()
	r := startRegion(t)
	alice := r.newUser(t, "alice")
	g := r.createGroup(t, alice)

	const workers, perWorker = 4, 75
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				_, err := r.client.SendMessage(alice.ctx, &clientv1.SendMessageRequest{GroupId: g.GetId(), ClientMsgId: fmt.Sprint(w, "-", i), Body: "x"})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	sent := make(chan struct{})
	go func() { wg.Wait(); close(sent) }()

	pages := 0
	for done := false; !done; {
		select {
		case <-sent:
			done = true // one more round after the last send
		default:
		}
		for _, limit := range []uint32{1000, 7} {
			after := uint64(pages % 5) // a few starting points, some past the end early on
			resp, err := r.client.GetHistory(alice.ctx, &clientv1.GetHistoryRequest{GroupId: g.GetId(), AfterSeq: after, Limit: limit})
			if err != nil {
				t.Fatalf("GetHistory: %v", err)
			}
			pages++
			msgs, last := resp.GetMessages(), resp.GetLastSeq()
			for i, m := range msgs {
				if m.GetSeq() != after+uint64(i)+1 || m.GetSeq() > last {
					t.Fatalf("page after %d (limit %d, last_seq %d): message %d has seq %d", after, limit, last, i, m.GetSeq())
				}
			}
			end := after
			if len(msgs) > 0 {
				end = msgs[len(msgs)-1].GetSeq()
			}
			if !resp.GetHasMore() && end < last {
				t.Fatalf("page after %d (limit %d) ends at %d without has_more; last_seq %d", after, limit, end, last)
			}
		}
	}
	close(errs)
	for err := range errs {
		t.Fatalf("send: %v", err)
	}
	if last := r.lastSeq(t, alice, g.GetId()); last != workers*perWorker {
		t.Errorf("last_seq %d, want %d", last, workers*perWorker)
	}
	t.Logf("%d pages read while sending", pages)
}
