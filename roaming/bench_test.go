package roaming_test

import (
	"context"
	"flag"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
)

var backlog = flag.Int("backlog", 10_000, "messages queued for BenchmarkDrainBacklog")

// sendMany sends n messages to gid from u with 64 concurrent senders and
// returns how many were committed and accepted.
func sendMany(b *testing.B, u user, gid, tag string, n int) (committed, accepted int64) {
	b.Helper()
	var c, a atomic.Int64
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				ctx, cancel := context.WithTimeout(u.ctx, 30*time.Second)
				r, err := u.c.SendMessage(ctx, &clientv1.SendMessageRequest{GroupId: gid, ClientMsgId: fmt.Sprint(tag, i), Body: "benchmark message body"})
				cancel()
				switch {
				case err != nil:
					b.Errorf("send %d: %v", i, err)
					return
				case r.GetState() == clientv1.DeliveryState_DELIVERY_STATE_COMMITTED:
					c.Add(1)
				default:
					a.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return c.Load(), a.Load()
}

// BenchmarkRelayThroughput measures committed cross-region sends per
// second from eu to a us-homed group, direct and through ap with the eu-us
// link cut, and reports their ratio.
func BenchmarkRelayThroughput(b *testing.B) {
	fed := startFederationB(b)
	register(b, fed["eu"], "erin")
	register(b, fed["us"], "uma")
	erin := login(b, fed["eu"], "erin")
	uma := login(b, fed["us"], "uma")
	g, err := uma.c.CreateGroup(uma.ctx, &clientv1.CreateGroupRequest{Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	gid := g.GetGroup().GetId()
	if _, err := erin.c.JoinGroup(erin.ctx, &clientv1.JoinGroupRequest{GroupId: gid}); err != nil {
		b.Fatal(err)
	}
	const n = 4000
	rate := func(tag string) float64 {
		start := time.Now()
		c, a := sendMany(b, erin, gid, tag, n)
		if a != 0 || c != n {
			b.Fatalf("%s: %d committed, %d accepted of %d", tag, c, a, n)
		}
		return n / time.Since(start).Seconds()
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		direct := rate(fmt.Sprint("d", i, "-"))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := fed["eu"].Roaming().CutLink(ctx, "us", "benchmark"); err != nil {
			b.Fatal(err)
		}
		cancel()
		if via, _ := fed["eu"].Roaming().Mesh().Route("us"); via != "ap" {
			b.Fatalf("eu→us via %q, want ap", via)
		}
		relayed := rate(fmt.Sprint("r", i, "-"))
		ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
		if _, err := fed["eu"].Roaming().RestoreLink(ctx, "us", "benchmark"); err != nil {
			b.Fatal(err)
		}
		cancel()
		b.ReportMetric(direct, "direct-msgs/s")
		b.ReportMetric(relayed, "relayed-msgs/s")
		b.ReportMetric(relayed/direct, "relay/direct")
	}
}

// BenchmarkDrainBacklog isolates us, queues -backlog sends from us to an
// eu-homed group (accepted into us's outbox), restores the links and
// measures how long the outbox takes to drain.
func BenchmarkDrainBacklog(b *testing.B) {
	fed := startFederationB(b)
	register(b, fed["eu"], "erin")
	register(b, fed["us"], "uma")
	erin := login(b, fed["eu"], "erin")
	uma := login(b, fed["us"], "uma")
	g, err := erin.c.CreateGroup(erin.ctx, &clientv1.CreateGroupRequest{Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	gid := g.GetGroup().GetId()
	if _, err := uma.c.JoinGroup(uma.ctx, &clientv1.JoinGroupRequest{GroupId: gid}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		for _, p := range []string{"ap", "eu"} {
			if err := fed["us"].Roaming().CutLink(ctx, p, "benchmark"); err != nil {
				b.Fatal(err)
			}
		}
		cancel()
		b.StopTimer()
		fill := time.Now()
		c, a := sendMany(b, uma, gid, fmt.Sprint("q", i, "-"), *backlog)
		b.Logf("queued %d sends in %s (%d accepted, %d committed)", *backlog, time.Since(fill).Round(time.Millisecond), a, c)
		b.StartTimer()
		start := time.Now()
		ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
		for _, p := range []string{"ap", "eu"} {
			if _, err := fed["us"].Roaming().RestoreLink(ctx, p, "benchmark"); err != nil {
				b.Fatal(err)
			}
		}
		cancel()
		deadline := time.Now().Add(5 * time.Minute)
		for {
			items, _, _ := fed["us"].Store().OutboxDepth("eu")
			if items == 0 {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("outbox still holds %d after 5 minutes", items)
			}
			time.Sleep(10 * time.Millisecond)
		}
		d := time.Since(start)
		b.ReportMetric(d.Seconds(), "drain-s")
		b.ReportMetric(float64(*backlog)/d.Seconds(), "drained-msgs/s")
	}
}
