package ops_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/roamfed/roamfed/internal/ops"
	"github.com/roamfed/roamfed/internal/testnet"
)

// TestPeerRefusalsAndIntegrity: what a region refused of each peer (over
// the per-peer rate limit, directory records it may not publish), the
// connections closed on an altered TLS record, and the deliveries the
// roaming system let go are in /metrics and in the link rows of
// /api/status.
func TestPeerRefusalsAndIntegrity(t *testing.T) {
	m, err := ops.NewMetrics("ap")
	if err != nil {
		t.Fatal(err)
	}
	m.SetStatus(func() ops.RegionStatus {
		return ops.RegionStatus{Links: []ops.LinkStatus{
			{Peer: "eu", State: ops.LinkUp, RateRefused: 7, DirectoryRefused: 2, IntegrityFailures: 1},
			{Peer: "us", State: ops.LinkUp},
		}, RoamingDropped: map[string]uint64{"routing_queue_full": 3, "held_forward_lost": 0, "no_standing": 5}}
	})
	addr := testnet.FreeAddrs(t, 1)[0]
	srv, err := ops.Start(ops.Config{Addr: addr, Region: "ap", Metrics: m, Token: token, Ready: func() error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	base := "http://" + srv.Addr()
	for path, want := range map[string][]string{
		"/metrics": {
			`roamfed_peer_refusals_total{peer="eu",reason="rate",region="ap"} 7`,
			`roamfed_peer_refusals_total{peer="eu",reason="directory_record",region="ap"} 2`,
			`roamfed_peer_refusals_total{peer="us",reason="rate",region="ap"} 0`,
			`roamfed_link_integrity_failures_total{peer="eu",region="ap"} 1`,
			`roamfed_link_integrity_failures_total{peer="us",region="ap"} 0`,
			`roamfed_roaming_dropped_total{reason="routing_queue_full",region="ap"} 3`,
			`roamfed_roaming_dropped_total{reason="held_forward_lost",region="ap"} 0`,
			`roamfed_roaming_dropped_total{reason="no_standing",region="ap"} 5`,
		},
		"/api/status?scope=region": {
			`"peer":"eu"`, `"rate_refused":7`, `"directory_refused":2`, `"integrity_failures":1`,
		},
	} {
		code, body := get(t, base+path)
		if code != 200 {
			t.Fatalf("%s: %d", path, code)
		}
		for _, w := range want {
			if !strings.Contains(body, w) {
				t.Errorf("%s lacks %s", path, w)
			}
		}
	}
}
