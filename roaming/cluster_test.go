package roaming_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/internal/password"
	"github.com/roamfed/roamfed/internal/stack"
	"github.com/roamfed/roamfed/internal/testnet"
	"github.com/roamfed/roamfed/regions"
)

// cluster is a federation of in-process regions whose regions can be
// stopped and started again on the same data and addresses, as an operator
// restarts a region.
type cluster struct {
	t    *testing.T
	fed  *regions.Federation
	cfgs map[string]stack.Config

	mu     sync.Mutex
	stacks map[string]*stack.Stack // the running ones
}

// newCluster starts one region per name. tune, if not nil, adjusts each
// region's configuration before it first starts.
func newCluster(t *testing.T, tune func(*stack.Config), names ...string) *cluster {
	t.Helper()
	addrs := testnet.FreeAddrs(t, 2*len(names))
	var b strings.Builder
	b.WriteString("federation: test\nregions:\n")
	for i, n := range names {
		fmt.Fprintf(&b, "  - name: %s\n    roaming_addr: %s\n    client_addr: %s\n", n, addrs[2*i], addrs[2*i+1])
	}
	fed, err := regions.Parse("test.yaml", []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, fed: fed, cfgs: map[string]stack.Config{}, stacks: map[string]*stack.Stack{}}
	for i, n := range names {
		cfg := stack.Config{
			Region:         n,
			DataDir:        t.TempDir(),
			ClientAddr:     addrs[2*i+1],
			Federation:     fed,
			Password:       password.Params{Memory: 64, Time: 1, Threads: 1},
			ReplicateEvery: 50 * time.Millisecond,
		}
		if tune != nil {
			tune(&cfg)
		}
		c.cfgs[n] = cfg
	}
	t.Cleanup(func() {
		for _, n := range names {
			c.stop(n)
		}
	})
	for _, n := range names {
		c.start(n)
	}
	return c
}

// start starts a stopped region on its data and addresses.
func (c *cluster) start(name string) *stack.Stack {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stacks[name] != nil {
		c.t.Fatalf("%s is already running", name)
	}
	// A restarted region binds the ports it had; retry briefly in case
	// the old listener's sockets are still being torn down.
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := stack.Start(c.cfgs[name])
		if err == nil {
			c.stacks[name] = st
			return st
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("start %s: %v", name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop shuts a region down; it does nothing if the region is stopped.
func (c *cluster) stop(name string) {
	c.mu.Lock()
	st := c.stacks[name]
	delete(c.stacks, name)
	c.mu.Unlock()
	if st == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := st.Shutdown(ctx); err != nil {
		c.t.Errorf("shutdown %s: %v", name, err)
	}
}

// region returns a running region's stack.
func (c *cluster) region(name string) *stack.Stack {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.stacks[name]
	if st == nil {
		c.t.Fatalf("%s is not running", name)
	}
	return st
}

// roamingAddr is a region's roaming address from the federation file.
func (c *cluster) roamingAddr(name string) string {
	r, ok := c.fed.Region(name)
	if !ok {
		c.t.Fatalf("no region %s", name)
	}
	return r.RoamingAddr
}

// waitKnown waits until region's home directory holds every user, as it
// does once replication has run: before that, a region that has to act
// for a user homed elsewhere asks every peer, and refuses if one of them
// does not answer yet.
func (c *cluster) waitKnown(region string, userIDs ...string) {
	c.t.Helper()
	st := c.region(region)
	waitFor(c.t, region+" to know users "+strings.Join(userIDs, ", "), 20*time.Second, func() bool {
		for _, id := range userIDs {
			if _, err := st.Store().Locate(roamingv1.DirectoryKind_DIRECTORY_KIND_USER, id); err != nil {
				return false
			}
		}
		return true
	})
}

// waitFor polls cond until it holds, failing the test after within.
func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
