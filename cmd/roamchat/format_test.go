package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	"github.com/roamfed/roamfed/internal/clientkit"
)

var t0 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func TestFormatMessages(t *testing.T) {
	m := &clientv1.Message{GroupId: "g_1", Seq: 12, SenderId: "u_1", SenderName: "alice", Body: "hello", CommittedAt: timestamppb.New(t0)}
	for _, tc := range []struct {
		name, got, want string
	}{
		{"live", formatLive("lobby", m), "[lobby #12] alice: hello"},
		{"history", formatHistory(m, time.UTC), "#12 2026-03-04 05:06:07 UTC alice: hello"},
		{"no sender name", formatLive("g_1", &clientv1.Message{Seq: 1, SenderId: "u_9", Body: "x"}), "[g_1 #1] u_9: x"},
		{"no times", formatHistory(&clientv1.Message{Seq: 3, SenderName: "b", Body: "x"}, time.UTC), "#3 - b: x"},
		{"sent time when not committed", formatHistory(&clientv1.Message{Seq: 3, SenderName: "b", Body: "x", SentAt: timestamppb.New(t0)}, time.UTC), "#3 2026-03-04 05:06:07 UTC b: x"},
		{"multi-line", formatLive("l", &clientv1.Message{Seq: 2, SenderName: "a", Body: "one\r\ntwo\nthree"}), "[l #2] a: one\n    two\n    three"},
		{"escapes", formatLive("l", &clientv1.Message{Seq: 2, SenderName: "ev\x1b[2Jil", Body: "clear\x1b[2J\rbell\a\ttab\u202e"}), `[l #2] ev\x1b[2Jil: clear\x1b[2J\rbell\a` + "\ttab" + `\u202e`},
		{"presence online", formatPresence(&clientv1.Presence{UserId: "u_2", Username: "bob", Online: true, Region: "eu"}), "* bob is online (region eu)"},
		{"presence offline", formatPresence(&clientv1.Presence{UserId: "u_2", Username: "bob"}), "* bob is offline"},
		{"presence no name", formatPresence(&clientv1.Presence{UserId: "u_2", Online: true}), "* u_2 is online"},
		{"committed", sendResult(&clientv1.SendMessageResponse{MessageId: "m_1", Seq: 7, State: clientv1.DeliveryState_DELIVERY_STATE_COMMITTED}), "committed seq=7 id=m_1"},
		{"accepted", sendResult(&clientv1.SendMessageResponse{MessageId: "m_1", State: clientv1.DeliveryState_DELIVERY_STATE_ACCEPTED}), "accepted id=m_1 (will commit when the home region is reachable)"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, tc.got, tc.want)
		}
	}
}

func TestGroupTable(t *testing.T) {
	var b bytes.Buffer
	printGroupTable(&b, []*clientv1.GroupSummary{
		{Id: "g_1", Name: "lobby", HomeRegion: "eu", MemberCount: 3, LastSeq: 10, ReadSeq: 4},
		{Id: "g_22", Name: "x", HomeRegion: "us", MemberCount: 1, LastSeq: 2, ReadSeq: 5},
	})
	want := "" +
		"ID    NAME   HOME  MEMBERS  LAST SEQ  UNREAD\n" +
		"g_1   lobby  eu    3        10        6\n" +
		"g_22  x      us    1        2         0\n"
	if b.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestPrintGroup(t *testing.T) {
	g := &clientv1.Group{
		Id: "g_1", Name: "lobby", Notice: "be nice\nno spam", HomeRegion: "eu", Version: 4, OwnerId: "u_1",
		Settings:  map[string]string{"topic": "chat", "lang": "en"},
		CreatedAt: timestamppb.New(t0),
		Members: []*clientv1.Member{
			{UserId: "u_1", Username: "alice", HomeRegion: "eu"},
			{UserId: "u_2", Username: "bob", HomeRegion: "us"},
		},
	}
	var b bytes.Buffer
	printGroup(&b, g, time.UTC, true)
	want := `id:           g_1
name:         lobby
home region:  eu
version:      4
owner:        alice (u_1)
created:      2026-03-04 05:06:07 UTC
updated:      -
notice:
  be nice
  no spam
settings:
  lang  = en
  topic = chat
members (2):
  alice  u_1  home eu
  bob    u_2  home us
`
	if b.String() != want {
		t.Errorf("group:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	printGroup(&b, &clientv1.Group{Id: "g_1", Name: "x", Notice: "one line"}, time.UTC, false)
	if strings.Contains(b.String(), "g_1") || !strings.Contains(b.String(), "notice:   one line\n") {
		t.Errorf("group without id:\n%s", b.String())
	}
}

func TestDescribe(t *testing.T) {
	quota, _ := status.New(codes.ResourceExhausted, "send_rate quota exceeded for user:u_1: at most 50 messages a second").WithDetails(
		&errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{Subject: "user:u_1", Description: "at most 50 messages a second"}}},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(1500 * time.Millisecond)},
	)
	bareQuota, _ := status.New(codes.ResourceExhausted, "over budget").WithDetails(
		&errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{Subject: "region", Description: "10000 sessions"}}},
	)
	bad, _ := status.New(codes.InvalidArgument, "invalid body: too long\ninvalid group_id: not a group id").WithDetails(
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: "body", Description: "too long"},
			{Field: "client_msg_id", Description: "over 64 bytes"},
		}},
	)
	a := &app{profile: "default", timeout: 10 * time.Second, prof: &profile{Username: "alice", Server: "eu:7100"}}
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"permission", status.Error(codes.PermissionDenied, "group g_1: not a member"), "permission denied: group g_1: not a member"},
		{"unauthenticated", status.Error(codes.Unauthenticated, "token expired"), "unauthenticated: token expired (run `roamchat login alice`)"},
		{"quota", quota.Err(), "resource exhausted: send_rate quota exceeded for user:u_1: at most 50 messages a second (retry in 1.5s)"},
		{"quota details", bareQuota.Err(), "resource exhausted: over budget (region: 10000 sessions)"},
		{"bad request", bad.Err(), "invalid argument: invalid body: too long; invalid group_id: not a group id (client_msg_id: over 64 bytes)"},
		{"unavailable", status.Error(codes.Unavailable, "connection refused"), "unavailable: connection refused (server eu:7100)"},
		{"deadline", status.Error(codes.DeadlineExceeded, "context deadline exceeded"), "deadline exceeded: context deadline exceeded (--timeout 10s)"},
		{"not a status", errNotLoggedIn, "not logged in (run `roamchat login alice`)"},
	} {
		if got := a.describe(tc.err); got != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, got, tc.want)
		}
	}
}

func TestParseSettings(t *testing.T) {
	got, err := parseSettings([]string{"a=1", "b=", "c=x=y", "a=2"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"a": "2", "b": "", "c": "x=y"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if m, err := parseSettings(nil); m != nil || err != nil {
		t.Errorf("no --set: %v, %v", m, err)
	}
}

func TestRetryable(t *testing.T) {
	for _, tc := range []struct {
		code         codes.Code
		send, stream bool
	}{
		{codes.Unavailable, true, true},
		{codes.DeadlineExceeded, true, true},
		{codes.Aborted, true, true},
		{codes.ResourceExhausted, false, true},
		{codes.Internal, false, true},
		{codes.Unauthenticated, false, false},
		{codes.PermissionDenied, false, false},
		{codes.InvalidArgument, false, false},
		{codes.NotFound, false, false},
	} {
		err := status.Error(tc.code, "x")
		if got := retryableSend(err); got != tc.send {
			t.Errorf("retryableSend(%v) = %v", tc.code, got)
		}
		if got := clientkit.Retryable(err); got != tc.stream {
			t.Errorf("clientkit.Retryable(%v) = %v", tc.code, got)
		}
	}
	if !clientkit.Retryable(clientkit.ErrSilent) {
		t.Errorf("a silent stream is not retried")
	}
	d, ok := clientkit.RetryDelay(func() error {
		st, _ := status.New(codes.ResourceExhausted, "x").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(2 * time.Second)})
		return st.Err()
	}())
	if !ok || d != 2*time.Second {
		t.Errorf("clientkit.RetryDelay = %v, %v", d, ok)
	}
}

func TestBackoff(t *testing.T) {
	b := backoff{min: 100 * time.Millisecond, max: time.Second}
	var prev time.Duration
	for i := range 10 {
		d := b.wait()
		if d > time.Second || d < 75*time.Millisecond {
			t.Fatalf("wait %d = %v, out of [75ms, 1s]", i, d)
		}
		if i < 3 && d < prev {
			t.Errorf("wait %d = %v after %v: want growth", i, d, prev)
		}
		prev = d
	}
	b.reset()
	if d := b.wait(); d > 100*time.Millisecond {
		t.Errorf("after reset: %v", d)
	}
}
