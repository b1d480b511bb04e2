package businesscenter

import (
	"errors"
	"testing"
	"time"
)

func TestClaims(t *testing.T) {
	type step struct {
		op      string // take, confirm, drop, wait
		name    string
		region  string
		wait    time.Duration
		wantErr bool // take: refused; confirm: not held
	}
	take := func(name, region string, refused bool) step {
		return step{op: "take", name: name, region: region, wantErr: refused}
	}
	confirm := func(name, region string, lost bool) step {
		return step{op: "confirm", name: name, region: region, wantErr: lost}
	}
	drop := func(name, region string) step { return step{op: "drop", name: name, region: region} }
	wait := func(d time.Duration) step { return step{op: "wait", wait: d} }

	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"a free name", []step{take("n", "eu", false), confirm("n", "eu", false)}},
		{"the same region again", []step{take("n", "eu", false), take("n", "eu", false), confirm("n", "eu", false)}},
		{"a later region is refused", []step{take("n", "ap", false), take("n", "eu", true), confirm("n", "ap", false)}},
		{"an earlier region takes over, and the loser's confirm fails", []step{
			take("n", "eu", false), take("n", "ap", false), confirm("n", "eu", true), confirm("n", "ap", false),
		}},
		{"a committing claim is never taken over", []step{
			take("n", "eu", false), confirm("n", "eu", false), take("n", "ap", true), take("n", "us", true),
		}},
		{"an expired claim no longer counts", []step{
			take("n", "ap", false), wait(claimTTL), take("n", "eu", false), confirm("n", "ap", true), confirm("n", "eu", false),
		}},
		{"an expired committing claim no longer counts", []step{
			take("n", "eu", false), confirm("n", "eu", false), wait(claimTTL), take("n", "us", false),
		}},
		{"a claim just short of expiry still counts", []step{
			take("n", "ap", false), wait(claimTTL - time.Millisecond), take("n", "eu", true),
		}},
		{"drop frees the name for anyone", []step{take("n", "ap", false), drop("n", "ap"), take("n", "us", false)}},
		{"a claim taken twice ends with the second drop", []step{
			take("n", "eu", false), take("n", "eu", false), confirm("n", "eu", false), drop("n", "eu"),
			confirm("n", "eu", false), take("n", "us", true), drop("n", "eu"), take("n", "us", false),
		}},
		{"drop by another region changes nothing", []step{take("n", "ap", false), drop("n", "eu"), take("n", "eu", true)}},
		{"names are apart", []step{take("n", "ap", false), take("m", "us", false), confirm("n", "ap", false), confirm("m", "us", false)}},
		{"confirm without a claim fails", []step{confirm("n", "eu", true)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
			c := newClaims(func() time.Time { return now })
			for i, s := range tc.steps {
				switch s.op {
				case "take":
					err := c.take(s.name, s.region)
					if (err != nil) != s.wantErr || (err != nil && !errors.Is(err, ErrUsernameClaimed)) {
						t.Fatalf("step %d: take(%s, %s) = %v; want refused %v", i, s.name, s.region, err, s.wantErr)
					}
				case "confirm":
					if got := c.confirm(s.name, s.region); got == s.wantErr {
						t.Fatalf("step %d: confirm(%s, %s) = %v; want %v", i, s.name, s.region, got, !s.wantErr)
					}
				case "drop":
					c.drop(s.name, s.region)
				case "wait":
					now = now.Add(s.wait)
				}
			}
		})
	}

	t.Run("expired claims are swept", func(t *testing.T) {
		now := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
		c := newClaims(func() time.Time { return now })
		for _, n := range []string{"a", "b", "c"} {
			if err := c.take(n, "ap"); err != nil {
				t.Fatal(err)
			}
		}
		now = now.Add(claimTTL)
		if err := c.take("d", "eu"); err != nil {
			t.Fatal(err)
		}
		if len(c.byName) != 1 {
			t.Errorf("%d claims held after a sweep; want only d's", len(c.byName))
		}
	})
}
