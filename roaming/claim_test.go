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
