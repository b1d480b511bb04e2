package roaming_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	recordv1 "github.com/roamfed/roamfed/api/record/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/internal/ids"
	"github.com/roamfed/roamfed/servicecenter/datacenter"
)

// asRegion returns a context whose calls name region (none when region is
// "", and each value when several are given).
func asRegion(t *testing.T, regions ...string) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	for _, r := range regions {
		ctx = metadata.AppendToOutgoingContext(ctx, "roamfed-region", r)
	}
	return ctx
}

func wantCode(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Errorf("%s: %v; want %v", what, err, want)
	}
}

// TestRoamingBadInput calls eu's roaming API as its peers and as strangers
// would, with requests a correct peer never sends: each is refused with a
// status that says why, and eu's data is as it was.
func TestRoamingBadInput(t *testing.T) {
	c := newCluster(t, nil, "ap", "eu", "us")
	ap, eu := c.region("ap"), c.region("eu")
	register(t, ap, "alice")
	register(t, ap, "carol")
	register(t, eu, "bob")
	alice := login(t, ap, "alice")
	carol := login(t, ap, "carol")
	bob := login(t, eu, "bob")

	// bob's group at eu, which alice (from ap) joins; three messages.
	cg, err := bob.c.CreateGroup(bob.ctx, &clientv1.CreateGroupRequest{Name: "lobby"})
	if err != nil {
		t.Fatal(err)
	}
	gid := cg.GetGroup().GetId()
	// eu acts for ap's users once it knows they are ap's.
	c.waitKnown("eu", alice.id, carol.id)
	if _, err := alice.c.JoinGroup(alice.ctx, &clientv1.JoinGroupRequest{GroupId: gid}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := bob.c.SendMessage(bob.ctx, &clientv1.SendMessageRequest{GroupId: gid, ClientMsgId: fmt.Sprint("b", i), Body: "hi"}); err != nil {
			t.Fatal(err)
		}
	}
	// A group homed in ap, which eu only knows from the directory; and a
	// stale copy at eu of another group homed in ap.
	apg, err := alice.c.CreateGroup(alice.ctx, &clientv1.CreateGroupRequest{Name: "ap-only"})
	if err != nil {
		t.Fatal(err)
	}
	apGroup := apg.GetGroup().GetId()
	copied := &recordv1.Group{Id: ids.New(ids.Group), Name: "copy", HomeRegion: "ap", Version: 1,
		Members: []*recordv1.Member{{UserId: alice.id, Name: "alice", HomeRegion: "ap"}}}
	if err := eu.Store().CreateGroup(copied); err != nil {
		t.Fatal(err)
	}

	type state struct {
		version, lastSeq uint64
		members          int
		bobRec           *roamingv1.DirectoryRecord
		copyVersion      uint64
	}
	snapshot := func() state {
		t.Helper()
		g, err := eu.Store().Group(gid)
		if err != nil {
			t.Fatal(err)
		}
		last, err := eu.Store().LastSeq(gid)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := eu.Store().Locate(roamingv1.DirectoryKind_DIRECTORY_KIND_USER, bob.id)
		if err != nil {
			t.Fatal(err)
		}
		cp, err := eu.Store().Group(copied.GetId())
		if err != nil {
			t.Fatal(err)
		}
		return state{g.GetVersion(), last, len(g.GetMembers()), rec, cp.GetVersion()}
	}
	before := snapshot()
	if before.lastSeq != 3 || before.members != 2 {
		t.Fatalf("setup: eu's group at %+v", before)
	}
	unchanged := func(t *testing.T) {
		t.Helper()
		after := snapshot()
		if after.version != before.version || after.lastSeq != before.lastSeq || after.members != before.members ||
			!proto.Equal(after.bobRec, before.bobRec) || after.copyVersion != before.copyVersion {
			t.Errorf("eu's data changed: %+v, was %+v", after, before)
		}
	}

	conn, err := grpc.NewClient(c.roamingAddr("eu"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	data := roamingv1.NewDataServiceClient(conn)
	biz := roamingv1.NewBusinessServiceClient(conn)

	msg := func(sender, origin, cid string) *recordv1.Message {
		return &recordv1.Message{GroupId: gid, MessageId: ids.New(ids.Message), SenderId: sender, ClientMsgId: cid,
			Body: "from a peer", SentAt: timestamppb.Now(), OriginRegion: origin}
	}
	// submit sends one Submit batch as caller and returns the answer.
	submit := func(t *testing.T, ctx context.Context, msgs ...*recordv1.Message) (*roamingv1.SubmitResponse, error) {
		t.Helper()
		stream, err := biz.Submit(ctx)
		if err != nil {
			return nil, err
		}
		if err := stream.Send(&roamingv1.SubmitRequest{BatchId: 7, Messages: msgs}); err != nil {
			// The refusal comes with Recv.
			_, err = stream.Recv()
			return nil, err
		}
		resp, err := stream.Recv()
		_ = stream.CloseSend()
		return resp, err
	}
	update := func(user string) *roamingv1.StoreGroupRequest {
		return &roamingv1.StoreGroupRequest{GroupId: gid, UserId: user, Change: &roamingv1.StoreGroupRequest_Update{Update: &roamingv1.GroupChange{Name: ptr("renamed")}}}
	}

	t.Run("identity", func(t *testing.T) {
		for _, tc := range []struct {
			name    string
			regions []string
			want    codes.Code
		}{
			{"no region", nil, codes.Unauthenticated},
			{"empty region", []string{""}, codes.Unauthenticated},
			{"malformed region", []string{"AP!"}, codes.Unauthenticated},
			{"two regions", []string{"ap", "us"}, codes.Unauthenticated},
			{"unknown region", []string{"zz"}, codes.PermissionDenied},
			{"the region itself", []string{"eu"}, codes.PermissionDenied},
		} {
			ctx := asRegion(t, tc.regions...)
			_, err := data.Locate(ctx, &roamingv1.LocateRequest{Keys: []*roamingv1.DirectoryKey{{Kind: roamingv1.DirectoryKind_DIRECTORY_KIND_GROUP, Key: gid}}})
			wantCode(t, tc.name+": Locate", err, tc.want)
			_, err = data.StoreGroup(ctx, update(alice.id))
			wantCode(t, tc.name+": StoreGroup", err, tc.want)
			_, err = data.UpdateLocation(ctx, &roamingv1.UpdateLocationRequest{UserId: bob.id, Region: "ap", Online: true})
			wantCode(t, tc.name+": UpdateLocation", err, tc.want)
			_, err = submit(t, ctx, msg(alice.id, "ap", "id-"+tc.name))
			wantCode(t, tc.name+": Submit", err, tc.want)
			unchanged(t)
		}
	})

	t.Run("submit batch over the limit", func(t *testing.T) {
		var msgs []*recordv1.Message
		for i := range 257 {
			msgs = append(msgs, msg(alice.id, "ap", fmt.Sprint("big", i)))
		}
		_, err := submit(t, asRegion(t, "ap"), msgs...)
		wantCode(t, "Submit of 257 messages", err, codes.InvalidArgument)
		unchanged(t)
	})

	t.Run("submit refusals per message", func(t *testing.T) {
		noID := msg(alice.id, "ap", "no-message-id")
		noID.MessageId = ""
		badID := msg(alice.id, "ap", "bad-message-id")
		badID.MessageId = "m_1"
		resp, err := submit(t, asRegion(t, "ap"),
			msg(alice.id, "us", "forged-origin"), // ap says it comes from us
			msg(bob.id, "ap", "forged-sender"),   // bob never logged in at ap
			msg(carol.id, "ap", "not-a-member"),  // ap's user, not in the group
			// Without an idempotency key or a message id, one message
			// would pass for a duplicate of another.
			msg(alice.id, "ap", ""),
			msg(alice.id, "ap", ""),
			noID,
			badID,
			msg(alice.id, "ap", "spaces are not allowed"),
		)
		if err != nil {
			t.Fatal(err)
		}
		want := []codes.Code{codes.PermissionDenied, codes.PermissionDenied, codes.PermissionDenied,
			codes.InvalidArgument, codes.InvalidArgument, codes.InvalidArgument, codes.InvalidArgument, codes.InvalidArgument}
		if resp.GetBatchId() != 7 || len(resp.GetResults()) != len(want) {
			t.Fatalf("Submit answered %v", resp)
		}
		for i, r := range resp.GetResults() {
			if codes.Code(r.GetCode()) != want[i] || r.GetSeq() != 0 || r.GetError() == "" {
				t.Errorf("result %d = %v; want %v, nothing committed", i, r, want[i])
			}
		}
		unchanged(t)
	})

	t.Run("group not homed here", func(t *testing.T) {
		ctx := asRegion(t, "ap")
		for _, tc := range []struct {
			name string
			gid  string
			want codes.Code
		}{
			{"copy of a group homed in ap", copied.GetId(), codes.FailedPrecondition},
			{"group eu knows only from the directory", apGroup, codes.NotFound},
			{"unknown group", ids.New(ids.Group), codes.NotFound},
		} {
			_, err := data.GetGroup(ctx, &roamingv1.GetGroupRequest{GroupId: tc.gid, UserId: alice.id})
			wantCode(t, tc.name+": GetGroup", err, tc.want)
			req := update(alice.id)
			req.GroupId = tc.gid
			_, err = data.StoreGroup(ctx, req)
			wantCode(t, tc.name+": StoreGroup", err, tc.want)
			_, err = data.FetchHistory(ctx, &roamingv1.FetchHistoryRequest{GroupId: tc.gid, UserId: alice.id})
			wantCode(t, tc.name+": FetchHistory", err, tc.want)
			m := msg(alice.id, "ap", "elsewhere-"+ids.New(ids.Message))
			m.GroupId = tc.gid
			resp, err := submit(t, ctx, m)
			if err != nil || len(resp.GetResults()) != 1 || codes.Code(resp.GetResults()[0].GetCode()) != tc.want {
				t.Errorf("%s: Submit = %v, %v; want one %v result", tc.name, resp, err, tc.want)
			}
		}
		unchanged(t)
	})

	t.Run("history past the end", func(t *testing.T) {
		for _, after := range []uint64{3, 4, 1000, math.MaxUint64} {
			resp, err := data.FetchHistory(asRegion(t, "ap"), &roamingv1.FetchHistoryRequest{GroupId: gid, UserId: alice.id, AfterSeq: after})
			if err != nil || len(resp.GetMessages()) != 0 || resp.GetLastSeq() != 3 || resp.GetHasMore() {
				t.Errorf("FetchHistory after %d = %v, %v; want an empty page at last_seq 3", after, resp, err)
			}
		}
		// The same call from the start is served.
		resp, err := data.FetchHistory(asRegion(t, "ap"), &roamingv1.FetchHistoryRequest{GroupId: gid, UserId: alice.id})
		if err != nil || len(resp.GetMessages()) != 3 {
			t.Errorf("FetchHistory from 0 = %v, %v; want 3 messages", resp, err)
		}
		unchanged(t)
	})

	t.Run("non-member", func(t *testing.T) {
		ctx := asRegion(t, "ap")
		_, err := data.GetGroup(ctx, &roamingv1.GetGroupRequest{GroupId: gid, UserId: carol.id})
		wantCode(t, "GetGroup", err, codes.PermissionDenied)
		_, err = data.FetchHistory(ctx, &roamingv1.FetchHistoryRequest{GroupId: gid, UserId: carol.id})
		wantCode(t, "FetchHistory", err, codes.PermissionDenied)
		_, err = data.StoreGroup(ctx, update(carol.id))
		wantCode(t, "StoreGroup update", err, codes.PermissionDenied)
		_, err = data.StoreGroup(ctx, &roamingv1.StoreGroupRequest{GroupId: gid, UserId: carol.id, Change: &roamingv1.StoreGroupRequest_Leave{Leave: true}})
		wantCode(t, "StoreGroup leave", err, codes.PermissionDenied)
		// ap may not act for bob, who is eu's and never logged in at ap.
		_, err = data.GetGroup(ctx, &roamingv1.GetGroupRequest{GroupId: gid, UserId: bob.id})
		wantCode(t, "GetGroup for eu's user", err, codes.PermissionDenied)
		_, err = data.StoreGroup(ctx, update(bob.id))
		wantCode(t, "StoreGroup for eu's user", err, codes.PermissionDenied)
		_, err = data.StoreGroup(ctx, &roamingv1.StoreGroupRequest{GroupId: gid, UserId: ""})
		wantCode(t, "StoreGroup for no user", err, codes.InvalidArgument)
		// A join naming someone else than the acting user.
		_, err = data.StoreGroup(ctx, &roamingv1.StoreGroupRequest{GroupId: gid, UserId: carol.id,
			Change: &roamingv1.StoreGroupRequest_Join{Join: &recordv1.Member{UserId: alice.id, Name: "x", HomeRegion: "ap"}}})
		wantCode(t, "StoreGroup join for another user", err, codes.InvalidArgument)
		unchanged(t)
	})

	t.Run("claim username", func(t *testing.T) {
		claim := func(region, name string) error {
			_, err := data.ClaimUsername(asRegion(t, region), &roamingv1.ClaimUsernameRequest{Username: name})
			return err
		}
		for _, name := range []string{"", "has space", strings.Repeat("x", 65), "tab\there"} {
			wantCode(t, fmt.Sprintf("ClaimUsername(%q)", name), claim("ap", name), codes.InvalidArgument)
		}
		// Taken here, and taken at ap as eu knows from the directory.
		wantCode(t, "ClaimUsername(bob)", claim("us", "bob"), codes.AlreadyExists)
		wantCode(t, "ClaimUsername(alice)", claim("us", "alice"), codes.AlreadyExists)
		// One region at a time; the same region again is fine.
		wantCode(t, "ap claims dave", claim("ap", "dave"), codes.OK)
		wantCode(t, "us claims dave after ap", claim("us", "dave"), codes.Aborted)
		wantCode(t, "ap claims dave again", claim("ap", "dave"), codes.OK)
		// Of two regions claiming at once, the one whose name sorts first
		// takes the claim over.
		wantCode(t, "us claims erin", claim("us", "erin"), codes.OK)
		wantCode(t, "ap takes erin over", claim("ap", "erin"), codes.OK)
		wantCode(t, "us claims erin again", claim("us", "erin"), codes.Aborted)
		// Nothing is registered by a claim.
		if _, err := eu.Store().Locate(roamingv1.DirectoryKind_DIRECTORY_KIND_USERNAME, "dave"); !errors.Is(err, datacenter.ErrNotInDirectory) {
			t.Errorf("dave after claims: %v; want not in the directory", err)
		}
		unchanged(t)
	})

	t.Run("replicate batch out of range", func(t *testing.T) {
		for _, b := range []uint32{datacenter.DirectoryBatches, math.MaxUint32} {
			_, err := data.ReplicateDirectory(asRegion(t, "ap"), &roamingv1.ReplicateDirectoryRequest{
				Held: []*roamingv1.BatchVersion{{Batch: 1, Major: 1, Minor: 1}, {Batch: b, Major: 1, Minor: 1}},
			})
			wantCode(t, fmt.Sprint("ReplicateDirectory holding batch ", b), err, codes.InvalidArgument)
		}
		unchanged(t)
	})

	t.Run("locate too many keys", func(t *testing.T) {
		keys := make([]*roamingv1.DirectoryKey, 1025)
		for i := range keys {
			keys[i] = &roamingv1.DirectoryKey{Kind: roamingv1.DirectoryKind_DIRECTORY_KIND_USER, Key: ids.New(ids.User)}
		}
		_, err := data.Locate(asRegion(t, "ap"), &roamingv1.LocateRequest{Keys: keys})
		wantCode(t, "Locate of 1025 keys", err, codes.InvalidArgument)
		resp, err := data.Locate(asRegion(t, "ap"), &roamingv1.LocateRequest{Keys: append(keys[:1023:1023], &roamingv1.DirectoryKey{Kind: roamingv1.DirectoryKind_DIRECTORY_KIND_GROUP, Key: gid})})
		if err != nil || len(resp.GetRecords()) != 1 || resp.GetRecords()[0].GetHomeRegion() != "eu" {
			t.Errorf("Locate of 1024 keys = %v, %v; want eu's group", resp, err)
		}
		unchanged(t)
	})

	t.Run("deliver batch over the limit", func(t *testing.T) {
		stream, err := biz.Deliver(asRegion(t, "ap"))
		if err != nil {
			t.Fatal(err)
		}
		req := &roamingv1.DeliverRequest{BatchId: 1}
		for i := range 257 {
			req.Items = append(req.Items, &recordv1.Fanout{Message: msg(alice.id, "ap", fmt.Sprint("d", i)), Recipients: []string{bob.id}})
		}
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
		_, err = stream.Recv()
		wantCode(t, "Deliver of 257 items", err, codes.InvalidArgument)
		unchanged(t)
	})

	t.Run("update location", func(t *testing.T) {
		ctx := asRegion(t, "ap")
		for _, tc := range []struct {
			name string
			req  *roamingv1.UpdateLocationRequest
			want codes.Code
		}{
			{"naming another region", &roamingv1.UpdateLocationRequest{UserId: bob.id, Region: "us", Online: true}, codes.PermissionDenied},
			{"naming no region", &roamingv1.UpdateLocationRequest{UserId: bob.id, Online: true}, codes.PermissionDenied},
			{"for a user never logged in there", &roamingv1.UpdateLocationRequest{UserId: bob.id, Region: "ap", Online: true}, codes.PermissionDenied},
		} {
			_, err := data.UpdateLocation(ctx, tc.req)
			wantCode(t, tc.name, err, tc.want)
		}
		unchanged(t)
	})

	// After all that, eu still serves its peers.
	t.Run("a correct peer is served", func(t *testing.T) {
		resp, err := submit(t, asRegion(t, "ap"), msg(alice.id, "ap", "fine"))
		if err != nil || len(resp.GetResults()) != 1 || resp.GetResults()[0].GetCode() != 0 || resp.GetResults()[0].GetSeq() != 4 {
			t.Fatalf("Submit = %v, %v; want committed at seq 4", resp, err)
		}
		g, err := data.GetGroup(asRegion(t, "ap"), &roamingv1.GetGroupRequest{GroupId: gid, UserId: alice.id})
		if err != nil || g.GetGroup().GetVersion() != before.version || !strings.Contains(g.GetGroup().GetName(), "lobby") {
			t.Fatalf("GetGroup = %v, %v", g, err)
		}
	})
}
