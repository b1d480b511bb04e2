package clientkit

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	"github.com/roamfed/roamfed/internal/password"
	"github.com/roamfed/roamfed/internal/stack"
	"github.com/roamfed/roamfed/servicecenter/resourcepool"
)

// startRegion starts a lone region whose sessions may queue only a few
// deliveries, so that a burst makes the region send catch-ups.
func startRegion(t *testing.T) *stack.Stack {
	t.Helper()
	return startRegionWith(t, nil)
}

// startRegionWith starts the region startRegion does, its configuration
// changed by tune first when tune is not nil.
func startRegionWith(t *testing.T, tune func(*stack.Config)) *stack.Stack {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg := stack.Config{
		Region: "ap", DataDir: t.TempDir(), ClientAddr: addr,
		Password:   password.Params{Memory: 64, Time: 1, Threads: 1},
		Limits:     resourcepool.Limits{MaxQueuedPerSession: 4, SendBurst: 1000, SendRate: 1000},
		AckTimeout: 200 * time.Millisecond,
	}
	if tune != nil {
		tune(&cfg)
	}
	st, err := stack.Start(cfg)
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
	return st
}

type testUser struct {
	api   clientv1.ClientServiceClient
	token string
	id    string
}

func signIn(t *testing.T, ctx context.Context, addr, name string) testUser {
	t.Helper()
	cc, err := Dial(addr, DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	api := clientv1.NewClientServiceClient(cc)
	if _, err := api.Register(ctx, &clientv1.RegisterRequest{Username: name, Password: "password-" + name}); err != nil {
		t.Fatal(err)
	}
	l, err := api.Login(ctx, &clientv1.LoginRequest{Username: name, Password: "password-" + name})
	if err != nil {
		t.Fatal(err)
	}
	return testUser{api: api, token: l.GetToken(), id: l.GetUserId()}
}

// aliceAndBob signs alice and bob in at addr and returns them with the id
// of a group alice created and bob joined.
func aliceAndBob(t *testing.T, ctx context.Context, addr string) (alice, bob testUser, gid string) {
	t.Helper()
	alice = signIn(t, ctx, addr, "alice")
	bob = signIn(t, ctx, addr, "bob")
	g, err := alice.api.CreateGroup(WithToken(ctx, alice.token), &clientv1.CreateGroupRequest{Name: "g"})
	if err != nil {
		t.Fatal(err)
	}
	gid = g.GetGroup().GetId()
	if _, err := bob.api.JoinGroup(WithToken(ctx, bob.token), &clientv1.JoinGroupRequest{GroupId: gid}); err != nil {
		t.Fatal(err)
	}
	return alice, bob, gid
}

// TestFollowerInOrderOnce sends a burst far beyond the session's queue
// while the follower's application is slow, and checks that every message
// reaches the application once, in order, some of them by catch-up.
func TestFollowerInOrderOnce(t *testing.T) {
	st := startRegion(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	alice, bob, gid := aliceAndBob(t, ctx, st.ClientAddr())

	var mu sync.Mutex
	var got []uint64
	bySource := map[Source]int{}
	catchUps := 0
	done := make(chan struct{})
	sent := make(chan struct{})
	const n = 150
	f := NewFollower(FollowerConfig{
		API: bob.api, Token: bob.token, Start: map[string]uint64{gid: 0},
		GapGrace: 50 * time.Millisecond,
		OnMessage: func(m *clientv1.Message, src Source, _ time.Time) {
			if m.GetSeq() == 1 {
				<-sent // the application is stuck until the burst is over
			}
			mu.Lock()
			defer mu.Unlock()
			got = append(got, m.GetSeq())
			bySource[src]++
			if len(got) == n {
				close(done)
			}
		},
		OnCatchUp: func(*clientv1.CatchUp) {
			mu.Lock()
			catchUps++
			mu.Unlock()
		},
		OnSkip: func(g string, from, to uint64) { t.Errorf("skipped %s %d-%d", g, from, to) },
	})
	stop := runFollower(t, ctx, f)
	defer func() {
		stop()
		if f.Last(gid) != n {
			t.Errorf("Last = %d, want %d", f.Last(gid), n)
		}
	}()
	select {
	case <-f.Ready():
	case <-ctx.Done():
		t.Fatal("no Ready")
	}
	actx := WithToken(ctx, alice.token)
	for i := range n {
		if _, err := alice.api.SendMessage(actx, &clientv1.SendMessageRequest{GroupId: gid, ClientMsgId: fmt.Sprint("m", i), Body: "hi"}); err != nil {
			t.Fatal(err)
		}
	}
	close(sent)
	select {
	case <-done:
	case <-ctx.Done():
		mu.Lock()
		t.Fatalf("got %d of %d messages", len(got), n)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, seq := range got {
		if seq != uint64(i+1) {
			t.Fatalf("message %d has seq %d; got %v", i, seq, got)
		}
	}
	t.Logf("live %d, history %d, catch-ups %d", bySource[Live], bySource[History], catchUps)
	// Whether the region's catch-up or the follower's own read of the
	// open group comes first, a stuck client behind a queue of 4 gets most
	// of the burst from history.
	if bySource[History] == 0 {
		t.Errorf("a burst of %d for a stuck client behind a queue of 4: nothing came from history", n)
	}
}

func TestReadHistoryPages(t *testing.T) {
	st := startRegion(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	alice := signIn(t, ctx, st.ClientAddr(), "alice")
	actx := WithToken(ctx, alice.token)
	g, err := alice.api.CreateGroup(actx, &clientv1.CreateGroupRequest{Name: "g"})
	if err != nil {
		t.Fatal(err)
	}
	gid := g.GetGroup().GetId()
	const n = HistoryPage + 20
	for i := range n {
		if _, err := alice.api.SendMessage(actx, &clientv1.SendMessageRequest{GroupId: gid, ClientMsgId: fmt.Sprint("m", i), Body: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	var seqs []uint64
	end, err := ReadHistory(actx, alice.api, gid, 10, func(m *clientv1.Message) { seqs = append(seqs, m.GetSeq()) })
	if err != nil {
		t.Fatal(err)
	}
	if len(seqs) != n-10 || seqs[0] != 11 || end.Last != n || end.LogLast != n || end.Pages != 2 {
		t.Errorf("read %d messages from %d, end %+v", len(seqs), seqs[0], end)
	}
	// Without the token the region refuses, and the error says so.
	if _, err := ReadHistory(ctx, alice.api, gid, 0, func(*clientv1.Message) {}); err == nil {
		t.Error("history without a token: no error")
	}
}

func TestReadToken(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		content, want string
		err           bool
	}{
		{"abc\n", "abc", false},
		{"  abc  \nsecond line\n", "abc", false},
		{"", "", true},
		{"\n\n", "", true},
	} {
		path := dir + "/tok"
		if err := writeFile(path, tc.content); err != nil {
			t.Fatal(err)
		}
		got, err := ReadToken(path)
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("ReadToken(%q) = %q, %v", tc.content, got, err)
		}
	}
	if _, err := ReadToken(dir + "/missing"); err == nil {
		t.Error("missing file: no error")
	}
}

// runFollower runs f until the returned stop is called, which waits for
// Run to return; Run returning an error fails the test.
func runFollower(t *testing.T, ctx context.Context, f *Follower) (stop func()) {
	t.Helper()
	fctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := f.Run(fctx); err != nil {
			t.Errorf("follower: %v", err)
		}
	})
	return func() {
		cancel()
		wg.Wait()
	}
}

// nextTime takes the next time from c, failing the test when ctx ends
// first.
func nextTime(t *testing.T, ctx context.Context, c <-chan time.Time, what string) time.Time {
	t.Helper()
	select {
	case at := <-c:
		return at
	case <-ctx.Done():
		t.Fatalf("no %s", what)
		return time.Time{}
	}
}
