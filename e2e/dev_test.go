package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/roamfed/roamfed/regions"
)

// TestDevCommand runs `regiond dev` as its help says: the three regions of
// regions/dev.yaml in one process, on their fixed loopback ports. It
// prints where each serves; a user of ap and a user of eu chat across them
// with roamchat; SIGINT stops the lot soon and cleanly.
//
// The ports are fixed, so the test skips when any of them is taken (by
// another `regiond dev`, say).
func TestDevCommand(t *testing.T) {
	t.Parallel()
	needBinaries(t)
	fed, err := regions.DevFederation()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range fed.Regions {
		for _, addr := range []string{r.ClientAddr, r.RoamingAddr, r.AdminAddr, r.MetricsAddr} {
			if addr == "" {
				continue
			}
			l, err := net.Listen("tcp", addr)
			if err != nil {
				t.Skipf("port of region %s in regions/dev.yaml is busy: %v", r.Name, err)
			}
			l.Close()
		}
	}

	data := filepath.Join(t.TempDir(), "dev")
	p, err := startProcess("regiond dev", bin.regiond, []string{"dev", "--data", data}, processEnv())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !p.exited() {
			if err := p.kill(); err != nil {
				t.Error(err)
			}
		}
		if strings.Contains(p.out.String(), "WARNING: DATA RACE") {
			t.Errorf("%s: data race; see its output", p.name)
		}
		if t.Failed() {
			t.Logf("--- %s (%s) ---\n%s", p.name, p.exitStatus(), p.out.String())
		}
	})

	// It says where each region serves, then how to use them.
	ctx, cancel := context.WithTimeout(t.Context(), 3*readyTimeout)
	defer cancel()
	if _, err := p.out.waitMatch(ctx, regexp.MustCompile(`(?m)^Press Ctrl-C`), p.done); err != nil {
		t.Fatalf("regiond dev: waiting for it to say it is up: %v", err)
	}
	served := make(map[string]*Region)
	for _, m := range regexp.MustCompile(`(?m)^\s+(\S+)\s+clients\s+(\S+)\s+roaming\s+(\S+)`).FindAllStringSubmatch(p.out.String(), -1) {
		want, ok := fed.Region(m[1])
		if !ok {
			t.Errorf("regiond dev serves region %q, which regions/dev.yaml lacks", m[1])
			continue
		}
		if m[2] != want.ClientAddr || m[3] != want.RoamingAddr {
			t.Errorf("regiond dev serves %s on clients %s, roaming %s; regions/dev.yaml says %s, %s", m[1], m[2], m[3], want.ClientAddr, want.RoamingAddr)
		}
		served[m[1]] = &Region{Name: m[1], addr: m[2]}
	}
	if len(served) != len(fed.Regions) {
		t.Fatalf("regiond dev printed client addresses for %d regions, want %d", len(served), len(fed.Regions))
	}
	for name, r := range served {
		if err := waitHealthy(ctx, r.Addr(), p.done); err != nil {
			t.Fatalf("region %s at %s: %v", name, r.Addr(), err)
		}
	}
	ap, eu := served["ap"], served["eu"]

	// alice, at home in ap, creates a group there; bob, at home in eu,
	// joins it from eu. Each sends from their region, and each reads both
	// messages in the history from theirs.
	for _, u := range []struct {
		name string
		r    *Region
	}{{"alice", ap}, {"bob", eu}} {
		out := mustRoamchat(t, u.r, u.name, "register", u.name, "--password", password(u.name))
		if !strings.Contains(out, "home region "+u.r.Name) {
			t.Fatalf("register %s at %s printed %q", u.name, u.r.Name, out)
		}
		mustRoamchat(t, u.r, u.name, "login", u.name, "--password", password(u.name))
	}
	g := createGroup(t, nil, "alice", "lobby")
	mustRoamchat(t, nil, "bob", "group", "join", g)
	for i, sender := range []string{"bob", "alice"} {
		out := mustRoamchat(t, nil, sender, "send", g, "hello from "+sender)
		if want := fmt.Sprintf("committed seq=%d ", i+1); !strings.HasPrefix(out, want) {
			t.Fatalf("%s's send printed %q, want %q...", sender, out, want)
		}
	}
	for _, reader := range []string{"alice", "bob"} {
		got := parseHistory(t, mustRoamchat(t, nil, reader, "history", g))
		want := []chatLine{{seq: 1, sender: "bob", body: "hello from bob"}, {seq: 2, sender: "alice", body: "hello from alice"}}
		if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
			t.Errorf("%s's history: got %v, want %v", reader, got, want)
		}
	}

	// Ctrl-C stops all three, soon and cleanly.
	start := time.Now()
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		t.Fatalf("regiond dev still running %s after SIGINT", stopTimeout)
	}
	d := time.Since(start)
	t.Logf("SIGINT to exit: %s", d.Round(time.Millisecond))
	if p.err != nil {
		t.Errorf("regiond dev: exit after SIGINT: %v", p.err)
	}
	if d > 5*time.Second {
		t.Errorf("SIGINT to exit took %s, want under 5s", d.Round(time.Millisecond))
	}
	if !strings.Contains(p.out.String(), "stopped in ") {
		t.Errorf("regiond dev did not say it stopped")
	}
	for _, r := range fed.Regions {
		if _, err := os.Stat(filepath.Join(data, r.Name)); err != nil {
			t.Errorf("data of region %s: %v", r.Name, err)
		}
	}
}
