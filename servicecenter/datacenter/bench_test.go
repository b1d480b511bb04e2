package datacenter

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	recordv1 "github.com/roamfed/roamfed/api/record/v1"
)

// benchBody is a typical chat line.
const benchBody = "on my way, see you at the station in ten minutes"

// countBatches counts the batches the commit queue commits, each with one
// synced Pebble commit.
func countBatches(s *Store) *atomic.Int64 {
	var n atomic.Int64
	s.OnCommit(func([]*recordv1.Message) { n.Add(1) })
	return &n
}

// reportRate reports committed messages per second and per batch.
func reportRate(b *testing.B, n int, batches *atomic.Int64) {
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
	if k := batches.Load(); k > 0 {
		b.ReportMetric(float64(n)/float64(k), "msgs/batch")
	}
}

// BenchmarkAppendSequential is one client: every Append waits for its own
// sync.
func BenchmarkAppendSequential(b *testing.B) {
	s := openStore(b, "", Options{})
	batches := countBatches(s)
	ctx := context.Background()
	i := 0
	for b.Loop() {
		m := newMessage("g_BENCH", "u_a", strconv.Itoa(i), benchBody)
		if _, err := s.Append(ctx, m); err != nil {
			b.Fatal(err)
		}
		i++
	}
	reportRate(b, i, batches)
}

// BenchmarkAppendParallel64 is 64 concurrent clients, each appending as
// soon as its last append returned, either each to a group of its own or
// all to 4 shared groups.
func BenchmarkAppendParallel64(b *testing.B) {
	const clients = 64
	for _, tc := range []struct {
		name   string
		groups int
	}{
		{"distinct-groups", clients},
		{"shared-4-groups", 4},
	} {
		b.Run(tc.name, func(b *testing.B) {
			s := openStore(b, "", Options{})
			batches := countBatches(s)
			groups := make([]string, tc.groups)
			for i := range groups {
				groups[i] = fmt.Sprintf("g_BENCH%02d", i)
			}
			ctx := context.Background()
			var (
				next   atomic.Int64 // hands out the b.N appends
				failed atomic.Value
				wg     sync.WaitGroup
			)
			b.ResetTimer()
			for c := range clients {
				wg.Go(func() {
					sender := fmt.Sprintf("u_%02d", c)
					g := groups[c%len(groups)]
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						m := newMessage(g, sender, strconv.FormatInt(i, 10), benchBody)
						if _, err := s.Append(ctx, m); err != nil {
							failed.CompareAndSwap(nil, err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			if err := failed.Load(); err != nil {
				b.Fatal(err)
			}
			reportRate(b, b.N, batches)
		})
	}
}
