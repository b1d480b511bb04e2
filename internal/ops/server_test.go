package ops_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/roamfed/roamfed/internal/ops"
	"github.com/roamfed/roamfed/internal/testnet"
)

const token = "test-admin-token"

// drillCall is one call of a fake Config.Drill.
type drillCall struct {
	Cut          bool
	A, B, Reason string
}

type fakeRegion struct {
	srv     *ops.Server
	metrics *ops.Metrics
	ready   atomic.Pointer[error]
	mu      sync.Mutex
	drills  []drillCall
	fail    error
}

func (f *fakeRegion) calls() []drillCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]drillCall(nil), f.drills...)
}

// startFake starts an ops listener for region name of a federation of
// regions whose ops listeners are at addrs, with links up to every peer.
func startFake(t *testing.T, name string, regions []string, addrs map[string]string) *fakeRegion {
	t.Helper()
	m, err := ops.NewMetrics(name)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeRegion{metrics: m}
	m.SetStatus(func() ops.RegionStatus {
		st := ops.RegionStatus{Sessions: 2, MaxSessions: 10, Refused: map[string]uint64{"send_rate": 3, "sessions": 1}}
		for _, r := range regions {
			if r != name {
				st.Links = append(st.Links, ops.LinkStatus{Peer: r, State: ops.LinkUp, RTT: 1500 * time.Microsecond, OutboxItems: 4, QueuedDeliveries: 1})
			}
		}
		return st
	})
	peers := make(map[string]string)
	for r, a := range addrs {
		if r != name {
			peers[r] = a
		}
	}
	srv, err := ops.Start(ops.Config{
		Addr: addrs[name], Region: name, Federation: "test", Regions: regions, PeerAddrs: peers,
		Metrics: m, Token: token, PeerTimeout: 300 * time.Millisecond, EventEvery: 50 * time.Millisecond,
		Ready: func() error {
			if p := f.ready.Load(); p != nil {
				return *p
			}
			return nil
		},
		Drill: func(_ context.Context, cut bool, a, b, reason string) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.drills = append(f.drills, drillCall{cut, a, b, reason})
			return f.fail
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown %s: %v", name, err)
		}
	})
	f.srv = srv
	return f
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestEndpoints(t *testing.T) {
	addrs := testnet.FreeAddrs(t, 1)
	f := startFake(t, "ap", nil, map[string]string{"ap": addrs[0]})
	base := "http://" + f.srv.Addr()

	for _, tc := range []struct {
		path     string
		code     int
		contains []string
	}{
		{"/healthz", 200, []string{"ok"}},
		{"/readyz", 200, []string{"ready"}},
		{"/metrics", 200, []string{
			`roamfed_sessions{region="ap"} 2`,
			`roamfed_sessions_limit{region="ap"} 10`,
			`roamfed_refusals_total{reason="send_rate",region="ap"} 3`,
			`roamfed_sends_total{region="ap",result="committed"} 0`,
			`roamfed_deliveries_total{attempt="first",region="ap"} 0`,
			"roamfed_commit_duration_seconds_bucket",
			"go_goroutines",
		}},
		{"/debug/pprof/", 200, []string{"goroutine"}},
		{"/debug/pprof/goroutine?debug=1", 200, []string{"goroutine profile"}},
		{"/", 200, []string{"<svg", "api/drill", "EventSource"}},
		{"/api/status?scope=region", 200, []string{`"region":"ap"`, `"sessions":2`, `"refusals":4`}},
		{"/api/status", 200, []string{`"regions":[{"name":"ap"`}},
		{"/api/status?scope=nonsense", 400, nil},
		{"/nothing-here", 404, nil},
	} {
		code, body := get(t, base+tc.path)
		if code != tc.code {
			t.Errorf("GET %s: %d, want %d\n%s", tc.path, code, tc.code, body)
		}
		for _, want := range tc.contains {
			if !strings.Contains(body, want) {
				t.Errorf("GET %s: no %q in\n%.2000s", tc.path, want, body)
			}
		}
	}

	down := errors.New("data center is closed")
	f.ready.Store(&down)
	if code, body := get(t, base+"/readyz"); code != 503 || !strings.Contains(body, "data center is closed") {
		t.Errorf("readyz while not ready: %d %q, want 503 with the reason", code, body)
	}
	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Errorf("healthz while not ready: %d, want 200", code)
	}
}

func TestEvents(t *testing.T) {
	addrs := testnet.FreeAddrs(t, 1)
	f := startFake(t, "ap", nil, map[string]string{"ap": addrs[0]})
	resp, err := http.Get("http://" + f.srv.Addr() + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	var got []ops.View
	for len(got) < 3 && sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var v ops.View
		if err := json.Unmarshal([]byte(data), &v); err != nil {
			t.Fatalf("event %q: %v", data, err)
		}
		got = append(got, v)
	}
	if len(got) < 3 {
		t.Fatalf("%d events before the stream ended: %v", len(got), sc.Err())
	}
	if got[0].Region != "ap" || len(got[0].Regions) != 1 || got[0].Regions[0].Status.Counters.Sessions != 2 {
		t.Errorf("first event %+v", got[0])
	}
}

// TestShutdownEndsEvents checks that Shutdown does not wait for a page
// that stays open.
func TestShutdownEndsEvents(t *testing.T) {
	m, err := ops.NewMetrics("ap")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ops.Start(ops.Config{Addr: "127.0.0.1:0", Region: "ap", Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + srv.Addr() + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("shutdown took %s with an event stream open", d)
	}
	if err := srv.Shutdown(ctx); err != nil {
		t.Errorf("second shutdown: %v", err)
	}
}

func TestFederationView(t *testing.T) {
	regions := []string{"ap", "eu", "us"}
	a := testnet.FreeAddrs(t, 2)
	// us never starts: it is unreachable, at an address held dead.
	addrs := map[string]string{"ap": a[0], "eu": a[1], "us": testnet.DeadAddr(t)}
	ap := startFake(t, "ap", regions, addrs)
	startFake(t, "eu", regions, addrs)

	code, body := get(t, "http://"+ap.srv.Addr()+"/api/status")
	if code != 200 {
		t.Fatalf("status %d: %s", code, body)
	}
	var v ops.View
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatal(err)
	}
	reach := make(map[string]bool)
	for _, r := range v.Regions {
		reach[r.Name] = r.Reachable
		if !r.Reachable && r.Error == "" {
			t.Errorf("%s unreachable without a reason", r.Name)
		}
	}
	if !reach["ap"] || !reach["eu"] || reach["us"] {
		t.Errorf("reachable %v, want ap and eu, not us", reach)
	}
	states := make(map[string]string)
	for _, e := range v.Links {
		states[e.ID] = e.State
		if e.ID == "eu:us" && (e.AB == nil || e.BA != nil) {
			t.Errorf("eu:us drawn from %+v and %+v; want eu's row only", e.AB, e.BA)
		}
	}
	want := map[string]string{"ap:eu": "up", "ap:us": "up", "eu:us": "up"}
	if fmt.Sprint(states) != fmt.Sprint(want) {
		t.Errorf("links %v, want %v", states, want)
	}
}

func postDrill(t *testing.T, addr, auth, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/api/drill", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestDrill(t *testing.T) {
	regions := []string{"ap", "eu", "us"}
	a := testnet.FreeAddrs(t, 3)
	addrs := map[string]string{"ap": a[0], "eu": a[1], "us": a[2]}
	ap := startFake(t, "ap", regions, addrs)
	eu := startFake(t, "eu", regions, addrs)
	us := startFake(t, "us", regions, addrs)
	bearer := "Bearer " + token
	cut := `{"action":"cut","a":"ap","b":"eu","reason":"game day"}`

	for _, tc := range []struct {
		name, auth, body string
		code             int
	}{
		{"no token", "", cut, 401},
		{"wrong token", "Bearer nope", cut, 401},
		{"token as basic", "Basic " + token, cut, 401},
		{"token prefix", "Bearer " + token[:5], cut, 401},
		{"not json", bearer, "cut ap eu", 400},
		{"bad action", bearer, `{"action":"explode","a":"ap","b":"eu"}`, 400},
		{"same ends", bearer, `{"action":"cut","a":"ap","b":"ap"}`, 400},
		{"not in the federation", bearer, `{"action":"cut","a":"ap","b":"mars"}`, 400},
		{"too big", bearer, `{"action":"cut","a":"ap","b":"eu","reason":"` + strings.Repeat("x", 5000) + `"}`, 400},
	} {
		if code, body := postDrill(t, ap.srv.Addr(), tc.auth, tc.body); code != tc.code {
			t.Errorf("%s: %d %s, want %d", tc.name, code, body, tc.code)
		}
	}
	if c := ap.calls(); len(c) != 0 {
		t.Fatalf("refused drills reached the region: %v", c)
	}

	if code, body := postDrill(t, ap.srv.Addr(), bearer, cut); code != 200 {
		t.Fatalf("cut: %d %s", code, body)
	}
	if c := ap.calls(); len(c) != 1 || c[0] != (drillCall{true, "ap", "eu", "game day"}) {
		t.Errorf("ap drills %v", c)
	}

	// A link ap is not on goes to one of its ends.
	if code, body := postDrill(t, ap.srv.Addr(), bearer, `{"action":"restore","a":"eu","b":"us"}`); code != 200 {
		t.Fatalf("restore eu-us through ap: %d %s", code, body)
	}
	if c := eu.calls(); len(c) != 1 || c[0] != (drillCall{false, "eu", "us", "status page"}) {
		t.Errorf("eu drills %v", c)
	}
	if c := us.calls(); len(c) != 0 {
		t.Errorf("us drills %v; the first end answered", c)
	}

	// The region's refusal comes back with its code.
	eu.mu.Lock()
	eu.fail = status.Error(codes.Unavailable, "peer side: deadline exceeded")
	eu.mu.Unlock()
	if code, body := postDrill(t, ap.srv.Addr(), bearer, `{"action":"cut","a":"eu","b":"us"}`); code != 503 || !strings.Contains(body, "deadline exceeded") {
		t.Errorf("failed drill: %d %s, want 503 with the reason", code, body)
	}
}

func TestDrillsOffWithoutToken(t *testing.T) {
	m, err := ops.NewMetrics("ap")
	if err != nil {
		t.Fatal(err)
	}
	called := false
	srv, err := ops.Start(ops.Config{Addr: "127.0.0.1:0", Region: "ap", Metrics: m,
		Drill: func(context.Context, bool, string, string, string) error { called = true; return nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	for _, auth := range []string{"", "Bearer ", "Bearer x"} {
		if code, _ := postDrill(t, srv.Addr(), auth, `{"action":"cut","a":"ap","b":"eu"}`); code != 403 {
			t.Errorf("authorization %q with no token configured: %d, want 403", auth, code)
		}
	}
	if called {
		t.Error("a drill ran with drills off")
	}
}

// FuzzDrillRequest sends arbitrary bodies with the right token: the
// handler answers 200 or a 4xx, never a 5xx, and runs only well-formed
// drills.
func FuzzDrillRequest(f *testing.F) {
	for _, s := range []string{
		`{"action":"cut","a":"ap","b":"eu"}`,
		`{"action":"restore","a":"eu","b":"ap","reason":"x"}`,
		`{"action":"cut","a":"ap"}`,
		`{}`, `[]`, `null`, ``, `{"action":1}`,
	} {
		f.Add([]byte(s))
	}
	m, err := ops.NewMetrics("ap")
	if err != nil {
		f.Fatal(err)
	}
	var bad atomic.Value
	srv, err := ops.Start(ops.Config{
		Addr: "127.0.0.1:0", Region: "ap", Regions: []string{"ap", "eu"}, Metrics: m, Token: token,
		Drill: func(_ context.Context, _ bool, a, b, _ string) error {
			if !(a == "ap" && b == "eu" || a == "eu" && b == "ap") {
				bad.Store(a + "-" + b)
			}
			return nil
		},
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	url := "http://" + srv.Addr() + "/api/drill"
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			t.Errorf("body %q: %d %s", body, resp.StatusCode, out)
		}
		if v := bad.Load(); v != nil {
			t.Fatalf("body %q ran a drill on %v", body, v)
		}
	})
}
