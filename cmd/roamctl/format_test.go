package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/roamfed/roamfed/api/admin/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/internal/checker"
)

var now = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func ts(ago time.Duration) *timestamppb.Timestamp { return timestamppb.New(now.Add(-ago)) }

// lines splits output into lines with runs of spaces squeezed, so tests
// do not depend on column widths.
func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		out = append(out, strings.Join(strings.Fields(l), " "))
	}
	return out
}

func wantLines(t *testing.T, got string, want ...string) {
	t.Helper()
	g := lines(got)
	if strings.Join(g, "\n") != strings.Join(want, "\n") {
		t.Errorf("got:\n%s\nwant:\n%s", strings.Join(g, "\n"), strings.Join(want, "\n"))
	}
}

func fakeStatus() *adminv1.StatusResponse {
	return &adminv1.StatusResponse{
		Region: "ap", Federation: "dev", StartedAt: ts(2*time.Hour + 3*time.Minute),
		Links: []*adminv1.Link{
			{Peer: "us", State: roamingv1.LinkState_LINK_STATE_CUT, Since: ts(5 * time.Second), Via: "eu", Downs: 1,
				OutboxItems: 12, OutboxBytes: 3200, QueuedDeliveries: 4, WindowBatches: 2, WindowBytes: 2048,
				RateRefused: 7, DirectoryRefused: 3, IntegrityFailures: 1,
				LastError: "connection error: desc = \"transport: Error while dialing: dial tcp 127.0.0.1:7203: connect: connection refused\""},
			{Peer: "eu", State: roamingv1.LinkState_LINK_STATE_UP, RttMicros: 420, Since: ts(2 * time.Hour), LastError: "old news"},
		},
		Resources: &adminv1.ResourceUsage{Sessions: 3, MaxSessions: 100, Refused: map[string]uint64{"send_rate": 2, "sessions": 0, "message_size": 1}},
	}
}

func TestWriteStatus(t *testing.T) {
	var b bytes.Buffer
	writeStatus(&b, fakeStatus(), now)
	wantLines(t, b.String(),
		"region ap (federation dev), up 2h3m since 2026-03-04T03:03:07Z",
		"sessions 3 of 100; refused: message_size 1, send_rate 2",
		"PEER STATE RTT ROUTE SINCE DOWNS OUTBOX QUEUED WINDOW RATE REFUSED DIR REFUSED INTEGRITY FAILS LAST ERROR",
		"eu up 420µs direct 2h0m 0 0 0 0 0 0 0 -",
		"us cut - via eu 5s 1 12 (3.1 KiB) 4 2 (2.0 KiB) 7 3 1 dial tcp 127.0.0.1:7203: connect: connection refused",
	)

	b.Reset()
	writeStatus(&b, &adminv1.StatusResponse{Region: "solo", Resources: &adminv1.ResourceUsage{}}, now)
	wantLines(t, b.String(), "region solo", "sessions 0; nothing refused", "no links (not federated)")
}

func TestWriteMesh(t *testing.T) {
	st := fakeStatus()
	eu := &adminv1.StatusResponse{Region: "eu", Links: []*adminv1.Link{
		{Peer: "ap", State: roamingv1.LinkState_LINK_STATE_UP, RttMicros: 1500},
		{Peer: "us", State: roamingv1.LinkState_LINK_STATE_DOWN, NoRoute: true, OutboxItems: 7, QueuedDeliveries: 1},
	}}
	var b bytes.Buffer
	writeMesh(&b, []regionResult[*adminv1.StatusResponse]{
		{region: "ap", resp: st},
		{region: "eu", resp: eu},
		{region: "us", err: status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:7303: connect: connection refused"`)},
	})
	wantLines(t, b.String(),
		"FROM TO STATE RTT ROUTE QUEUE",
		"ap eu up 420µs direct 0",
		"ap us cut - via eu 16",
		"eu ap up 1.5ms direct 0",
		"eu us down - no route 8",
		"us * unreachable - - -",
		"us: unreachable: unavailable: dial tcp 127.0.0.1:7303: connect: connection refused",
	)
}

func TestWriteDrills(t *testing.T) {
	d := func(sec int, action, asked, reason string) *adminv1.Drill {
		return &adminv1.Drill{A: "ap", B: "eu", Action: action, At: timestamppb.New(now.Add(time.Duration(sec) * time.Second)), RequestedAt: asked, Reason: reason}
	}
	var b bytes.Buffer
	writeDrills(&b, []regionResult[*adminv1.ListDrillsResponse]{
		{region: "ap", resp: &adminv1.ListDrillsResponse{Drills: []*adminv1.Drill{d(10, "restore", "ap", ""), d(1, "cut", "ap", "game day")}}},
		{region: "eu", resp: &adminv1.ListDrillsResponse{Drills: []*adminv1.Drill{d(1, "cut", "ap", "game day")}}},
		{region: "us", err: errors.New("down")},
	})
	wantLines(t, b.String(),
		"AT SEEN AT ACTION LINK ASKED AT REASON",
		"2026-03-04T05:06:08.000Z ap cut ap-eu ap game day",
		"2026-03-04T05:06:08.000Z eu cut ap-eu ap game day",
		"2026-03-04T05:06:17.000Z ap restore ap-eu ap -",
	)
	b.Reset()
	writeDrills(&b, nil)
	wantLines(t, b.String(), "no drills")

	b.Reset()
	writeDrill(&b, d(0, "cut", "eu", "test"))
	wantLines(t, b.String(), "cut link ap-eu at 2026-03-04T05:06:07.000Z (asked at eu): test")
}

func TestWriteResync(t *testing.T) {
	var b bytes.Buffer
	ok := writeResync(&b, []*roamingv1.ResyncResult{
		{Region: "ap", Checked: 120, Corrected: 2},
		{Region: "eu", Error: "unreachable:\n link cut"},
	})
	if ok {
		t.Error("writeResync with a failed region reported success")
	}
	wantLines(t, b.String(),
		"REGION CHECKED CORRECTED REMOVED ERROR",
		"ap 120 2 0 -",
		"eu - - - unreachable: link cut",
	)
}

func fakeReport(ok bool) *drillReport {
	start := now
	r := &drillReport{
		RunID: "abc123", Federation: "dev", X: "ap", Y: "eu", Users: 9, Groups: 6,
		Config: runConfig{rate: 20, duration: 30 * time.Second, settle: 30 * time.Second, inflight: 32},
		start:  start, cutAt: start.Add(3 * time.Second), restoredAt: start.Add(21 * time.Second),
		loadStoppedAt: start.Add(30 * time.Second), settledAt: start.Add(30*time.Second + 400*time.Millisecond),
		caughtUpAt:   start.Add(22 * time.Second),
		firstBetween: start.Add(3*time.Second + 80*time.Millisecond),
		watch: watchState{
			downX: start.Add(3*time.Second + 5*time.Millisecond), downY: start.Add(3*time.Second + 12*time.Millisecond),
			routeX: start.Add(3*time.Second + 12*time.Millisecond), viaX: "us",
			upX: start.Add(21*time.Second + 40*time.Millisecond), upY: start.Add(21*time.Second + 60*time.Millisecond),
		},
		Verify: checker.VerifyResult{Histories: 54, Messages: 5400},
	}
	c := checker.Counts{
		Messages: 600, Attempts: 603, SendErrors: 3, Committed: 580, Accepted: 20, AcceptedCommitted: 20, Receipts: 20,
		Expected: 5400, Delivered: 5400, Live: 5300, CaughtUp: 100, RawDuplicates: 7,
		LagP50: 4 * time.Millisecond, LagP99: 120 * time.Millisecond, LagMax: 1900 * time.Millisecond,
	}
	g := checker.GroupReport{Group: "g1", Home: "eu", Members: 9, LastSeq: 600, Counts: c}
	if !ok {
		c.Lost, c.LostMessages, g.Lost = 2, 1, 2
		r.Check.Problems = []checker.Problem{{Kind: checker.KindLost, Group: "g1", Member: "u1", Seq: 17, Detail: "message abc123-17 (committed at seq 17) never reached this member"}}
		r.Verify.Problems = []checker.Problem{{Kind: checker.KindMissing, Group: "g1", Member: "u1", Seq: 17, Detail: "acknowledged message abc123-17 is not in the history (history from ap)"}}
	}
	r.Check.Totals = c
	r.Check.Groups = []checker.GroupReport{g}
	return r
}

func TestWriteDrillReport(t *testing.T) {
	var b bytes.Buffer
	writeDrillReport(&b, fakeReport(true))
	wantLines(t, b.String(),
		"drill abc123: cut ap-eu under load, federation dev",
		"load 20 msg/s for 30s from 9 users in 6 groups; cut at 3s, restored at 21s",
		"link",
		"detect 12ms (ap and eu both report it cut or down)",
		"reroute 12ms (ap→eu via us)",
		"first across 80ms (first ap↔eu message sent after the cut, delivered)",
		"heal 60ms (both ends report it up after the restore)",
		"catch-up 1s (queues empty and every member has what was sent before the restore)",
		"settled 400ms after the load stopped",
		"messages",
		"sent 600 (603 attempts, 3 errors, 0 never answered)",
		"committed 580 at once",
		"accepted 20, of which 20 committed later (20 receipts, 0 refused)",
		"delivered 5400 of 5400 member deliveries (5300 live, 100 by catch-up)",
		"lag p50 4ms, p99 120ms, worst 1.9s",
		"checks",
		"lost 0 ok",
		"duplicates 0 ok",
		"out of order 0 ok",
		"gaps 0 ok",
		"history 0 ok",
		"(54 histories read back, 5400 messages; raw duplicates 7, raw reordered 0, skipped 0: information)",
		"groups",
		"GROUP HOME MEMBERS LAST SEQ SENT COMMITTED ACCEPTED DELIVERED LOST DUPS ORDER GAPS WORST LAG",
		"g1 eu 9 600 600 580 20 5400/5400 0 0 0 0 1.9s",
		"result: PASS",
	)

	b.Reset()
	r := fakeReport(false)
	r.settledAt = time.Time{}
	r.watch.routeX = time.Time{}
	r.Sessions, r.FirstSessionError, r.Busy = 2, "u1 at ap: session: unavailable", 5
	writeDrillReport(&b, r)
	out := b.String()
	for _, want := range []string{
		"reroute      no route through a third region seen",
		"settled      not settled within --settle-timeout 30s",
		"lost           2  FAIL",
		"history        1  FAIL",
		"session errors 2, first: u1 at ap: session: unavailable",
		"5 sends not made: all 32 senders were busy",
		"problems\n  lost: group g1 member u1: message abc123-17 (committed at seq 17) never reached this member",
		"history problems\n  missing: group g1 member u1: acknowledged message abc123-17 is not in the history (history from ap)",
		"result: FAIL",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestWriteDrillJSON(t *testing.T) {
	for _, ok := range []bool{true, false} {
		var b bytes.Buffer
		r := fakeReport(ok)
		r.caughtUpAt = time.Time{}
		if err := writeDrillJSON(&b, r); err != nil {
			t.Fatal(err)
		}
		var got map[string]any
		if err := json.Unmarshal(b.Bytes(), &got); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, b.String())
		}
		counts := got["counts"].(map[string]any)
		if got["ok"] != ok || got["link"] != "ap-eu" || got["detect_ms"] != 12.0 || got["reroute_via"] != "us" ||
			got["catch_up_ms"] != nil || got["lag_max_ms"] != 1900.0 || counts["delivered"] != 5400.0 {
			t.Errorf("ok=%v: JSON %s", ok, b.String())
		}
		if !ok && (counts["lost"] != 2.0 || len(got["problems"].([]any)) != 1) {
			t.Errorf("failed run: counts %v problems %v", counts, got["problems"])
		}
	}
}

func TestWriteProgress(t *testing.T) {
	var b bytes.Buffer
	writeProgress(&b, runConfig{runID: "r1", x: "ap", y: "eu"}, 2500*time.Millisecond, "cut",
		checker.Progress{Sent: 50, Committed: 40, Accepted: 10, AcceptedCommitted: 4, Expected: 450, Delivered: 400},
		watchState{stateX: "cut", routeNowX: "via us", queued: 6, unreachable: []string{"us"}}, 1)
	wantLines(t, b.String(), "roamctl: drill r1: 2.5s cut sent 50 committed 40 accepted 10 (4 committed since) delivered 400/450 | ap→eu cut, via us | queued 6 | unreachable: us | session errors 1")
}

func TestHumanUnits(t *testing.T) {
	for d, want := range map[time.Duration]string{
		-1:                        "-",
		420 * time.Microsecond:    "420µs",
		4237 * time.Microsecond:   "4.24ms",
		42370 * time.Microsecond:  "42.4ms",
		423700 * time.Microsecond: "424ms",
		4237 * time.Millisecond:   "4.24s",
		90 * time.Second:          "1m30s",
	} {
		if got := duration(d); got != want {
			t.Errorf("duration(%v) = %q, want %q", d, got, want)
		}
	}
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 3 << 20: "3.0 MiB", 5 << 30: "5.0 GiB"} {
		if got := byteSize(n); got != want {
			t.Errorf("byteSize(%d) = %q, want %q", n, got, want)
		}
	}
	if got := age(nil, now); got != "-" {
		t.Errorf("age(nil) = %q", got)
	}
	if got := age(timestamppb.New(time.Time{}), now); got != "-" {
		t.Errorf("age(zero) = %q", got)
	}
	if got := rtt(0); got != "-" {
		t.Errorf("rtt(0) = %q", got)
	}
}

func TestDescribe(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{status.Error(codes.Unauthenticated, "admin: wrong admin token"), "unauthenticated: admin: wrong admin token (give the region's admin token with --token, --token-file or $ROAMFED_ADMIN_TOKEN)"},
		{status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 1.2.3.4:5: connect: connection refused"`), "unavailable: dial tcp 1.2.3.4:5: connect: connection refused"},
		{regionErr{"eu", status.Error(codes.InvalidArgument, "bad\n  thing")}, "region eu: invalid argument: bad thing"},
		{errors.New("plain"), "plain"},
	} {
		if got := describe(tc.err); got != tc.want {
			t.Errorf("describe(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
