package roaming_test

import (
	"context"
	"testing"
	"time"

	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/internal/stack"
)

// TestRestoreLinkSeenUp runs drills between two regions whose heartbeat
// interval is far longer than the test, and checks that when RestoreLink
// returns, this region's status already shows the link up and direct: the
// restore sent its heartbeat at once and waited for it, where an operator
// would otherwise read the link down until the next tick.
func TestRestoreLinkSeenUp(t *testing.T) {
	fed, _ := startFedTweaked(t, false, []string{"ap", "eu"}, func(_ string, cfg *stack.Config) {
		cfg.Mesh.HeartbeatEvery = time.Minute // no tick after the first heartbeat
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// ap's first heartbeat went out before eu listened, so ap may not have
	// seen the link up yet; the drill does not mind.
	for round := 1; round <= 3; round++ {
		if err := fed["ap"].Roaming().CutLink(ctx, "eu", "test"); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		up, err := fed["ap"].Roaming().RestoreLink(ctx, "eu", "test")
		took := time.Since(start)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		l := fed["ap"].Roaming().Mesh().Status()[0]
		t.Logf("round %d: RestoreLink returned up=%v after %s; ap's link to eu %v, via %q", round, up, took, l.State, l.Via)
		if !up || l.State != roamingv1.LinkState_LINK_STATE_UP || l.Via != "" || l.NoRoute {
			t.Errorf("round %d: RestoreLink returned up=%v; ap's link to eu then: %+v", round, up, l)
		}
	}
}
