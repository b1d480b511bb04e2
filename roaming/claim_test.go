package roaming_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
)

// TestUsernameRace registers each of several names at all three regions
// at once: at most one registration of a name may succeed, the others are
// refused with ALREADY_EXISTS or ABORTED, and a name once registered is
// taken at every region.
func TestUsernameRace(t *testing.T) {
	fed := startFederation(t, "ap", "eu", "us")
	regions := []string{"ap", "eu", "us"}
	clients := map[string]clientv1.ClientServiceClient{}
	for _, r := range regions {
		clients[r] = dial(t, fed[r])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	const names = 12
	won := 0
	for i := range names {
		name := fmt.Sprintf("racer%d", i)
		errs := make([]error, len(regions))
		var wg sync.WaitGroup
		start := make(chan struct{})
		for j, r := range regions {
			wg.Go(func() {
				<-start
				_, errs[j] = clients[r].Register(ctx, &clientv1.RegisterRequest{Username: name, Password: "password-" + r})
			})
		}
		close(start)
		wg.Wait()
		var winners []string
		for j, err := range errs {
			switch status.Code(err) {
			case codes.OK:
				winners = append(winners, regions[j])
			case codes.AlreadyExists, codes.Aborted:
			default:
				t.Errorf("%s at %s: %v; want OK, AlreadyExists or Aborted", name, regions[j], err)
			}
		}
		if len(winners) > 1 {
			t.Errorf("%s registered at %v", name, winners)
		}
		if len(winners) == 0 {
			t.Logf("%s: every region was refused (%v)", name, errs)
			continue
		}
		won++
		// Taken everywhere now, the winner included.
		for _, r := range regions {
			_, err := clients[r].Register(ctx, &clientv1.RegisterRequest{Username: name, Password: "another-password"})
			if status.Code(err) != codes.AlreadyExists {
				t.Errorf("%s again at %s after %s registered it: %v; want AlreadyExists", name, r, winners[0], err)
			}
		}
	}
	t.Logf("%d of %d names registered by one region, the others by none", won, names)
	if won == 0 {
		t.Error("no race had a winner")
	}
}

// TestRegisterWithRegionCutOff cuts us off from ap and eu: a name can
// still be registered at ap, without us's leave, after the short wait for
// a route rather than a call timeout, and is then taken at eu.
func TestRegisterWithRegionCutOff(t *testing.T) {
	fed := startFederation(t, "ap", "eu", "us")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, r := range []string{"ap", "eu"} {
		if err := fed[r].Roaming().CutLink(ctx, "us", "test"); err != nil {
			t.Fatalf("cut %s-us: %v", r, err)
		}
	}
	t.Cleanup(func() {
		for _, r := range []string{"ap", "eu"} {
			if _, err := fed[r].Roaming().RestoreLink(context.Background(), "us", "test"); err != nil {
				t.Errorf("restore %s-us: %v", r, err)
			}
		}
	})
	start := time.Now()
	_, err := dial(t, fed["ap"]).Register(ctx, &clientv1.RegisterRequest{Username: "island", Password: "password-ap"})
	took := time.Since(start)
	if err != nil {
		t.Fatalf("register at ap with us cut off: %v", err)
	}
	t.Logf("registered at ap, us cut off, in %s", took.Round(time.Millisecond))
	if took >= 5*time.Second {
		t.Errorf("registering took %s: waited for us's call timeout, not for a route", took)
	}
	if _, err := dial(t, fed["eu"]).Register(ctx, &clientv1.RegisterRequest{Username: "island", Password: "password-eu"}); status.Code(err) != codes.AlreadyExists {
		t.Errorf("register at eu after ap: %v; want AlreadyExists", err)
	}
}
