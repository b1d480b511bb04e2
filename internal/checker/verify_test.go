package checker

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	"github.com/roamfed/roamfed/internal/clientkit"
	"github.com/roamfed/roamfed/internal/password"
	"github.com/roamfed/roamfed/internal/stack"
)

func TestCheckLog(t *testing.T) {
	m := func(seq uint64, cmid string) *clientv1.Message {
		return &clientv1.Message{Seq: seq, MessageId: "id-" + cmid, ClientMsgId: cmid}
	}
	acked := func(cmids ...string) map[string]expectation {
		out := make(map[string]expectation)
		for i, c := range cmids {
			out[c] = expectation{seq: uint64(i + 1), messageID: "id-" + c}
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		log     []*clientv1.Message
		logLast uint64
		acked   map[string]expectation
		want    []string // "kind@seq"
	}{
		{"clean", []*clientv1.Message{m(1, "a"), m(2, "b"), m(3, "c")}, 3, acked("a", "b", "c"), nil},
		{"clean with an unacknowledged message", []*clientv1.Message{m(1, "a"), m(2, "x"), m(3, "c")}, 3,
			map[string]expectation{"a": {1, "id-a"}, "c": {3, "id-c"}}, nil},
		{"empty", nil, 0, nil, nil},
		{"gap", []*clientv1.Message{m(1, "a"), m(4, "d")}, 4, nil, []string{"gap@2"}},
		{"tail missing", []*clientv1.Message{m(1, "a"), m(2, "b")}, 5, nil, []string{"gap@3"}},
		{"starts late", []*clientv1.Message{m(2, "b")}, 2, nil, []string{"gap@1"}},
		{"reorder", []*clientv1.Message{m(1, "a"), m(3, "c"), m(2, "b")}, 3, nil, []string{"gap@2", "out_of_order@2"}},
		{"seq twice", []*clientv1.Message{m(1, "a"), m(1, "b"), m(2, "c")}, 2, nil, []string{"duplicate@1", "out_of_order@1"}},
		{"stored twice", []*clientv1.Message{m(1, "a"), {Seq: 2, MessageId: "id-a2", ClientMsgId: "a"}}, 2, acked("a"),
			[]string{"duplicate@2"}},
		{"id at two seqs", []*clientv1.Message{m(1, "a"), {Seq: 2, MessageId: "id-a", ClientMsgId: "b"}}, 2, nil,
			[]string{"duplicate@2"}},
		{"acknowledged but missing", []*clientv1.Message{m(1, "a")}, 1, acked("a", "b"), []string{"missing@2"}},
		{"at another seq", []*clientv1.Message{m(1, "b"), m(2, "a")}, 2, acked("a", "b"),
			[]string{"mismatch@1", "mismatch@2"}},
		{"with another id", []*clientv1.Message{{Seq: 1, MessageId: "id-other", ClientMsgId: "a"}}, 1, acked("a"),
			[]string{"mismatch@1"}},
		{"seq unknown to the run is not a mismatch", []*clientv1.Message{m(1, "a")}, 1,
			map[string]expectation{"a": {}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ps := checkLog(tc.log, tc.logLast, tc.acked)
			sortProblems(ps)
			var got []string
			for _, p := range ps {
				got = append(got, fmt.Sprintf("%s@%d", p.Kind, p.Seq))
			}
			gotKinds := fmt.Sprint(sorted(got))
			if gotKinds != fmt.Sprint(sorted(tc.want)) {
				t.Errorf("problems %v, want %v; %v", got, tc.want, ps)
			}
		})
	}
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// TestVerifyAgainstRegion runs Verify against a real region in-process.
func TestVerifyAgainstRegion(t *testing.T) {
	addr := freeAddr(t)
	st, err := stack.Start(stack.Config{
		Region: "ap", DataDir: t.TempDir(), ClientAddr: addr,
		Password: password.Params{Memory: 64, Time: 1, Threads: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := st.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	cc, err := grpc.NewClient(st.ClientAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	api := clientv1.NewClientServiceClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)

	var clients []Client
	for _, name := range []string{"alice", "bob"} {
		if _, err := api.Register(ctx, &clientv1.RegisterRequest{Username: name, Password: "password-" + name}); err != nil {
			t.Fatal(err)
		}
		l, err := api.Login(ctx, &clientv1.LoginRequest{Username: name, Password: "password-" + name})
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, Client{User: l.GetUserId(), Region: "ap", API: api, Token: l.GetToken()})
	}
	alice, bob := clients[0], clients[1]
	actx := clientkit.WithToken(ctx, alice.Token)
	g, err := api.CreateGroup(actx, &clientv1.CreateGroupRequest{Name: "g"})
	if err != nil {
		t.Fatal(err)
	}
	gid := g.GetGroup().GetId()
	if _, err := api.JoinGroup(clientkit.WithToken(ctx, bob.Token), &clientv1.JoinGroupRequest{GroupId: gid}); err != nil {
		t.Fatal(err)
	}
	r := New()
	r.AddGroup(gid, "ap", []string{alice.User, bob.User})
	const n = 12
	for i := range n {
		cmid := fmt.Sprint("m", i)
		r.Sent(gid, alice.User, cmid, time.Now())
		resp, err := api.SendMessage(actx, &clientv1.SendMessageRequest{GroupId: gid, ClientMsgId: cmid, Body: "hi"})
		if err != nil {
			t.Fatal(err)
		}
		r.Acked(gid, cmid, resp)
	}
	v := r.Verify(ctx, clients, 0)
	if !v.OK() || v.Histories != 2 || v.Messages != 2*n {
		t.Fatalf("verify %+v", v)
	}

	// A message the run thinks was acknowledged but the region never
	// stored is missing from both histories; a client without a session
	// cannot read at all.
	r.Sent(gid, alice.User, "ghost", time.Now())
	r.Acked(gid, "ghost", &clientv1.SendMessageResponse{MessageId: "ghost-id", State: clientv1.DeliveryState_DELIVERY_STATE_ACCEPTED})
	bad := append(clients, Client{User: bob.User, Region: "ap", API: api, Token: "not-a-token"})
	v = r.Verify(ctx, bad, 0)
	if v.Counts[KindMissing] != 2 || v.Counts[KindUnreadable] != 1 || len(v.Problems) != 3 {
		t.Fatalf("verify with a ghost message and a bad token: %+v", v)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
