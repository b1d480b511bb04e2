package ops_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	"github.com/roamfed/roamfed/internal/password"
	"github.com/roamfed/roamfed/internal/stack"
	"github.com/roamfed/roamfed/internal/testnet"
	"github.com/roamfed/roamfed/regions"
)

// startFederation runs the named regions in this process, each with its
// ops listener at the federation file's metrics_addr, as regiond would.
func startFederation(t *testing.T, names ...string) map[string]*stack.Stack {
	t.Helper()
	addrs := testnet.FreeAddrs(t, 3*len(names))
	var b strings.Builder
	b.WriteString("federation: ops-test\nregions:\n")
	for i, n := range names {
		fmt.Fprintf(&b, "  - name: %s\n    roaming_addr: %s\n    client_addr: %s\n    metrics_addr: %s\n",
			n, addrs[3*i], addrs[3*i+1], addrs[3*i+2])
	}
	fed, err := regions.Parse("ops-test.yaml", []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]*stack.Stack)
	for i, n := range names {
		self, err := fed.WithSelf(n)
		if err != nil {
			t.Fatal(err)
		}
		st, err := stack.Start(stack.Config{
			Region: n, DataDir: t.TempDir(), ClientAddr: addrs[3*i+1], Federation: self,
			AdminAddr: "127.0.0.1:0", AdminToken: token, MetricsAddr: addrs[3*i+2],
			Password: password.Params{Memory: 64, Time: 1, Threads: 1},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := st.Shutdown(ctx); err != nil {
				t.Errorf("shutdown %s: %v", n, err)
			}
		})
		out[n] = st
	}
	return out
}

// scrape returns the samples of /metrics, keyed by name and labels as
// written ("roamfed_link_state{peer=\"eu\",region=\"ap\"}").
func scrape(t *testing.T, st *stack.Stack) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + st.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := make(map[string]float64)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// waitMetric polls st's /metrics until sample satisfies ok.
func waitMetric(t *testing.T, st *stack.Stack, sample string, ok func(float64) bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		v, found := scrape(t, st)[sample]
		if found && ok(v) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s = %v (found %v)", st.Region(), sample, v, found)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func atLeast(n float64) func(float64) bool { return func(v float64) bool { return v >= n } }
func equal(n float64) func(float64) bool   { return func(v float64) bool { return v == n } }

type user struct {
	c   clientv1.ClientServiceClient
	ctx context.Context
	id  string
}

func newUser(t *testing.T, ctx context.Context, st *stack.Stack, name string) user {
	t.Helper()
	conn, err := grpc.NewClient(st.ClientAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := clientv1.NewClientServiceClient(conn)
	if _, err := c.Register(ctx, &clientv1.RegisterRequest{Username: name, Password: name + "-password"}); err != nil {
		t.Fatalf("register %s at %s: %v", name, st.Region(), err)
	}
	lr, err := c.Login(ctx, &clientv1.LoginRequest{Username: name, Password: name + "-password"})
	if err != nil {
		t.Fatalf("login %s: %v", name, err)
	}
	return user{c: c, ctx: metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+lr.GetToken()), id: lr.GetUserId()}
}

// TestFederationMetrics checks the metrics of a real federation: the link
// table, a drill, sends, commits and cross-region deliveries, readiness.
func TestFederationMetrics(t *testing.T) {
	fed := startFederation(t, "ap", "eu")
	ap, eu := fed["ap"], fed["eu"]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	waitMetric(t, ap, `roamfed_link_state{peer="eu",region="ap"}`, equal(1))
	waitMetric(t, eu, `roamfed_link_state{peer="ap",region="eu"}`, equal(1))

	alice := newUser(t, ctx, ap, "alice")
	bob := newUser(t, ctx, eu, "bob")
	g, err := alice.c.CreateGroup(alice.ctx, &clientv1.CreateGroupRequest{Name: "lobby"})
	if err != nil {
		t.Fatal(err)
	}
	gid := g.GetGroup().GetId()
	if _, err := bob.c.JoinGroup(bob.ctx, &clientv1.JoinGroupRequest{GroupId: gid}); err != nil {
		t.Fatalf("bob joins from eu: %v", err)
	}
	if _, err := alice.c.SendMessage(alice.ctx, &clientv1.SendMessageRequest{GroupId: gid, ClientMsgId: "m1", Body: "hello"}); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.c.SendMessage(alice.ctx, &clientv1.SendMessageRequest{GroupId: "g_nonsense", Body: "x"}); err == nil {
		t.Fatal("send to a bad group id succeeded")
	}

	waitMetric(t, ap, `roamfed_sends_total{region="ap",result="committed"}`, equal(1))
	waitMetric(t, ap, `roamfed_sends_total{region="ap",result="rejected"}`, equal(1))
	waitMetric(t, ap, `roamfed_send_duration_seconds_count{region="ap"}`, equal(2))
	waitMetric(t, ap, `roamfed_committed_messages_total{region="ap"}`, equal(1))
	waitMetric(t, ap, `roamfed_roaming_dropped_total{reason="routing_queue_full",region="ap"}`, equal(0))
	waitMetric(t, eu, `roamfed_roaming_dropped_total{reason="no_standing",region="eu"}`, equal(0))
	waitMetric(t, ap, `roamfed_commit_duration_seconds_count{region="ap"}`, atLeast(1))
	// bob is homed in eu, so the home sends eu the message.
	waitMetric(t, eu, `roamfed_remote_delivery_latency_seconds_count{peer="ap",region="eu"}`, atLeast(1))

	resp, err := http.Get("http://" + ap.MetricsAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("readyz %d", resp.StatusCode)
	}

	if err := ap.Roaming().CutLink(ctx, "eu", "test"); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, ap, `roamfed_link_state{peer="eu",region="ap"}`, equal(3))
	waitMetric(t, eu, `roamfed_link_state{peer="ap",region="eu"}`, equal(3))
	waitMetric(t, ap, `roamfed_link_no_route{peer="eu",region="ap"}`, equal(1))
	if _, err := ap.Roaming().RestoreLink(ctx, "eu", "test"); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, ap, `roamfed_link_state{peer="eu",region="ap"}`, equal(1))

	// Stopping a region stops its ops listener first.
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	addr := eu.MetricsAddr()
	if err := eu.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
		resp.Body.Close()
		t.Errorf("ops listener still answers after Shutdown: %s", resp.Status)
	}
}
