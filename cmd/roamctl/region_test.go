package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/internal/password"
	"github.com/roamfed/roamfed/internal/stack"
	"github.com/roamfed/roamfed/internal/testnet"
	"github.com/roamfed/roamfed/regions"
)

const testToken = "test-admin-token"

// testFed is a federation of in-process regions on loopback, and the file
// that describes it.
type testFed struct {
	file   string
	stacks map[string]*stack.Stack
	addrs  map[string][3]string // roaming, client, admin
}

// writeFed writes a federation file with the given addresses.
func writeFed(t *testing.T, names []string, addrs map[string][3]string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("federation: test\nregions:\n")
	for _, n := range names {
		a := addrs[n]
		fmt.Fprintf(&b, "  - name: %s\n    roaming_addr: %s\n    client_addr: %s\n    admin_addr: %s\n", n, a[0], a[1], a[2])
	}
	path := filepath.Join(t.TempDir(), "federation.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// startFed starts one region per name, federated, each with its admin API,
// and waits until every link is up.
func startFed(t *testing.T, names ...string) *testFed {
	t.Helper()
	all := testnet.FreeAddrs(t, 3*len(names))
	f := &testFed{stacks: make(map[string]*stack.Stack), addrs: make(map[string][3]string)}
	for i, n := range names {
		f.addrs[n] = [3]string{all[3*i], all[3*i+1], all[3*i+2]}
	}
	f.file = writeFed(t, names, f.addrs)
	fed, err := regions.Load(f.file)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		st, err := stack.Start(stack.Config{
			Region:         n,
			DataDir:        t.TempDir(),
			ClientAddr:     f.addrs[n][1],
			AdminAddr:      f.addrs[n][2],
			AdminToken:     testToken,
			Federation:     fed,
			Password:       password.Params{Memory: 64, Time: 1, Threads: 1},
			ReplicateEvery: 50 * time.Millisecond,
		})
		if err != nil {
			t.Fatalf("start %s: %v", n, err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := st.Shutdown(ctx); err != nil {
				t.Errorf("shutdown %s: %v", n, err)
			}
		})
		f.stacks[n] = st
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, a := range names {
		for _, b := range names {
			if a == b {
				continue
			}
			for !f.linkIs(a, b, roamingv1.LinkState_LINK_STATE_UP) {
				if time.Now().After(deadline) {
					t.Fatalf("link %s→%s not up: %+v", a, b, f.stacks[a].Roaming().Mesh().Status())
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	return f
}

func (f *testFed) linkIs(a, b string, s roamingv1.LinkState) bool {
	for _, l := range f.stacks[a].Roaming().Mesh().Status() {
		if l.Peer == b {
			return l.State == s
		}
	}
	return false
}

// roamctl runs the command line against the federation and returns the
// exit code and outputs.
func (f *testFed) roamctl(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return runCLI(t, append([]string{"--federation", f.file, "--token", testToken}, args...)...)
}

// runCLI runs roamctl in a directory without default files and an empty
// environment.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	a := newApp(&out, &errOut)
	a.dir = t.TempDir()
	a.getenv = func(string) string { return "" }
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code := a.run(ctx, args)
	return code, out.String(), errOut.String()
}

func TestStatusAndMesh(t *testing.T) {
	f := startFed(t, "ap", "eu", "us")

	code, out, errOut := f.roamctl(t, "status")
	if code != exitOK {
		t.Fatalf("status: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"region ap (federation test)", "region eu", "region us", "PEER", "direct", "nothing refused"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	if n := len(regexp.MustCompile(`(?m)^[a-z]+ +up `).FindAllString(out, -1)); n != 6 {
		t.Errorf("status shows %d links up, want 6:\n%s", n, out)
	}

	code, out, _ = f.roamctl(t, "status", "--region", "eu", "--json")
	var st struct {
		Region string `json:"region"`
		Links  []struct {
			Peer  string `json:"peer"`
			State string `json:"state"`
		} `json:"links"`
	}
	if code != exitOK || json.Unmarshal([]byte(out), &st) != nil || st.Region != "eu" || len(st.Links) != 2 {
		t.Fatalf("status --region eu --json: exit %d, %+v\n%s", code, st, out)
	}

	code, out, errOut = f.roamctl(t, "mesh")
	if code != exitOK || strings.Count(out, "direct") != 6 {
		t.Fatalf("mesh: exit %d\n%s%s", code, out, errOut)
	}

	// A wrong token is refused, and the message says what to do.
	code, _, errOut = runCLI(t, "--federation", f.file, "--token", "wrong", "status", "--region", "ap")
	if code != exitError || !strings.Contains(errOut, "unauthenticated") || !strings.Contains(errOut, "--token") {
		t.Errorf("wrong token: exit %d, stderr %q", code, errOut)
	}

	// A region whose admin API is away shows as unreachable in the mesh,
	// which is still a success; status fails.
	addrs := map[string][3]string{}
	for n, a := range f.addrs {
		addrs[n] = a
	}
	dead := testnet.DeadAddr(t)
	us := addrs["us"]
	us[2] = dead
	addrs["us"] = us
	file := writeFed(t, []string{"ap", "eu", "us"}, addrs)
	code, out, _ = runCLI(t, "--federation", file, "--token", testToken, "mesh")
	if code != exitOK || !strings.Contains(out, "unreachable") || strings.Count(out, "direct") != 4 {
		t.Errorf("mesh with us away: exit %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, "--federation", file, "--token", testToken, "status")
	if code != exitError || !strings.Contains(out, "region us: unreachable") || !strings.Contains(out, "region ap") {
		t.Errorf("status with us away: exit %d\n%s", code, out)
	}
}

func TestDrillCutRestoreList(t *testing.T) {
	f := startFed(t, "ap", "eu", "us")

	code, out, errOut := f.roamctl(t, "drill", "cut", "ap", "eu", "--reason", "test cut")
	if code != exitOK || !strings.Contains(out, "cut link ap-eu") || !strings.Contains(out, "test cut") {
		t.Fatalf("drill cut: exit %d\n%s%s", code, out, errOut)
	}
	if !f.linkIs("ap", "eu", roamingv1.LinkState_LINK_STATE_CUT) || !f.linkIs("eu", "ap", roamingv1.LinkState_LINK_STATE_CUT) {
		t.Fatalf("after drill cut: ap %+v eu %+v", f.stacks["ap"].Roaming().Mesh().Status(), f.stacks["eu"].Roaming().Mesh().Status())
	}
	_, out, _ = f.roamctl(t, "mesh")
	if !strings.Contains(out, "via us") || strings.Count(out, " cut ") != 2 {
		t.Errorf("mesh after the cut:\n%s", out)
	}

	code, out, errOut = f.roamctl(t, "drill", "restore", "ap", "eu")
	if code != exitOK || !strings.Contains(out, "restored link ap-eu") {
		t.Fatalf("drill restore: exit %d\n%s%s", code, out, errOut)
	}

	code, out, errOut = f.roamctl(t, "drill", "list")
	if code != exitOK || strings.Count(out, " cut ") != 2 || strings.Count(out, " restore ") != 2 {
		t.Fatalf("drill list: exit %d\n%s%s", code, out, errOut)
	}

	// Asked of a region that is neither end, the region refuses.
	code, _, errOut = f.roamctl(t, "drill", "cut", "ap", "ap")
	if code != exitUsage {
		t.Errorf("drill cut ap ap: exit %d, stderr %q", code, errOut)
	}
	code, _, errOut = f.roamctl(t, "drill", "cut", "ap", "mars")
	if code != exitUsage || !strings.Contains(errOut, `no region "mars"`) {
		t.Errorf("drill cut ap mars: exit %d, stderr %q", code, errOut)
	}

	// When A's admin API does not answer, B is asked.
	addrs := map[string][3]string{}
	for n, a := range f.addrs {
		addrs[n] = a
	}
	ap := addrs["ap"]
	ap[2] = testnet.DeadAddr(t)
	addrs["ap"] = ap
	file := writeFed(t, []string{"ap", "eu", "us"}, addrs)
	code, out, errOut = runCLI(t, "--federation", file, "--token", testToken, "--timeout", "2s", "drill", "cut", "ap", "us")
	if code != exitOK || !strings.Contains(errOut, "asking us") || !strings.Contains(out, "asked at us") {
		t.Fatalf("drill cut with ap's admin away: exit %d\n%s%s", code, out, errOut)
	}
	if !f.linkIs("ap", "us", roamingv1.LinkState_LINK_STATE_CUT) {
		t.Errorf("link ap-us not cut at ap")
	}
	code, _, errOut = runCLI(t, "--federation", file, "--token", testToken, "--timeout", "2s", "drill", "restore", "ap", "us")
	if code != exitOK {
		t.Fatalf("drill restore with ap's admin away: exit %d\n%s", code, errOut)
	}
}

func TestResync(t *testing.T) {
	f := startFed(t, "ap", "eu", "us")
	// Links report up before every peer connection is ready; a resync
	// that cannot reach a region says so and fails until then.
	var code int
	var out, errOut string
	for deadline := time.Now().Add(10 * time.Second); ; {
		code, out, errOut = f.roamctl(t, "resync", "--region", "eu")
		if code == exitOK || time.Now().After(deadline) {
			break
		}
		if !strings.Contains(out, "unreachable") && !strings.Contains(out, "Unavailable") {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if code != exitOK {
		t.Fatalf("resync: exit %d\n%s%s", code, out, errOut)
	}
	for _, r := range []string{"ap", "eu", "us"} {
		if !strings.Contains(out, "\n"+r+" ") {
			t.Errorf("resync output lacks region %s:\n%s", r, out)
		}
	}
}

// TestDrillRun runs a short drill under load against three regions and
// checks the report: nothing lost, duplicated or out of order.
func TestDrillRun(t *testing.T) {
	if testing.Short() {
		t.Skip("drill run takes several seconds")
	}
	f := startFed(t, "ap", "eu", "us")
	code, out, errOut := f.roamctl(t, "drill", "run", "--cut", "ap-eu", "--duration", "6s", "--rate", "8",
		"--users-per-region", "2", "--groups", "3", "--settle-timeout", "20s", "--run-id", "t1", "--json")
	t.Logf("stderr:\n%s", errOut)
	var rep drillJSON
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("drill run: exit %d, output not JSON (%v):\n%s", code, err, out)
	}
	c := rep.Counts
	if code != exitOK || !rep.OK {
		t.Errorf("drill run: exit %d, ok %v\n%s", code, rep.OK, out)
	}
	if c.Lost != 0 || c.Duplicates != 0 || c.OutOfOrder != 0 || c.Gaps != 0 || len(rep.Verify.Problems) != 0 {
		t.Errorf("lost %d, duplicates %d, out of order %d, gaps %d, history problems %v",
			c.Lost, c.Duplicates, c.OutOfOrder, c.Gaps, rep.Verify.Problems)
	}
	if c.Messages < 20 || c.Delivered != c.Expected || c.Expected != (c.Committed+c.Accepted)*6 {
		t.Errorf("messages %d, delivered %d of %d, committed %d, accepted %d", c.Messages, c.Delivered, c.Expected, c.Committed, c.Accepted)
	}
	if rep.DetectMS == nil || rep.HealMS == nil || rep.SettledMS == nil || rep.CatchUpMS == nil {
		t.Errorf("detect %v, heal %v, settled %v, catch-up %v: want all observed", rep.DetectMS, rep.HealMS, rep.SettledMS, rep.CatchUpMS)
	}
	if rep.RerouteMS == nil || rep.RerouteVia != "us" || rep.FirstAcrossMS == nil {
		t.Errorf("reroute %v via %q, first across %v: want through us", rep.RerouteMS, rep.RerouteVia, rep.FirstAcrossMS)
	}
	if rep.Verify.Histories != 6*3 {
		t.Errorf("histories read back %d, want 18", rep.Verify.Histories)
	}
	if !strings.Contains(errOut, "delivered") {
		t.Errorf("no progress lines on stderr")
	}
	// The link is up again.
	if !f.linkIs("ap", "eu", roamingv1.LinkState_LINK_STATE_UP) {
		t.Errorf("link ap-eu not up after the drill")
	}
}
