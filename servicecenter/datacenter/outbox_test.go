package datacenter

import (
	"fmt"
	"sync"
	"testing"

	recordv1 "github.com/roamfed/roamfed/api/record/v1"
)

// TestOutboxUnsyncedPowerLoss queues entries without syncing them, from
// several goroutines, and counts an entry as acknowledged only once a
// SyncWAL begun after it has returned. The file system then loses some or
// all of what was not synced: every acknowledged entry must be in the
// outbox after reopening, whole, and the queue must take new entries after
// the ones that survived.
func TestOutboxUnsyncedPowerLoss(t *testing.T) {
	powerLoss(t, func(t *testing.T, s *Store, lose func() *Store) {
		var (
			mu    sync.Mutex
			acked = make(map[string]bool) // message id: its entry was synced
		)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				var queued []string
				for i := range 100_000 {
					select {
					case <-stop:
						return
					default:
					}
					id := fmt.Sprintf("m_W%dN%d", w, i)
					m := newMessage("g_OUTBOX", "u_W", id, "queued")
					m.MessageId = id
					if _, err := s.EnqueueUnsynced("eu", &recordv1.OutboxEntry{Work: &recordv1.OutboxEntry_Submit{Submit: m}}); err != nil {
						t.Errorf("EnqueueUnsynced: %v", err)
						return
					}
					queued = append(queued, id)
					if i%8 != 7 {
						continue
					}
					if err := s.SyncWAL(); err != nil {
						t.Errorf("SyncWAL: %v", err)
						return
					}
					mu.Lock()
					for _, id := range queued {
						acked[id] = true
					}
					mu.Unlock()
					queued = queued[:0]
				}
			})
		}
		waitFor(t, "500 synced entries", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(acked) >= 500
		})
		// Entries acknowledged before the loss were synced before it.
		mu.Lock()
		before := make([]string, 0, len(acked))
		for id := range acked {
			before = append(before, id)
		}
		mu.Unlock()
		s2 := lose()
		close(stop)
		wg.Wait()

		entries, err := s2.Outbox("eu", 0, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		found := make(map[string]bool, len(entries))
		var last uint64
		for _, e := range entries {
			if e.GetSubmit().GetBody() != "queued" {
				t.Errorf("entry %d: %v", e.GetSeq(), e)
			}
			found[e.GetSubmit().GetMessageId()] = true
			last = max(last, e.GetSeq())
		}
		missing := 0
		for _, id := range before {
			if !found[id] {
				missing++
			}
		}
		if missing > 0 {
			t.Errorf("%d of %d synced entries lost (%d entries survived)", missing, len(before), len(entries))
		}
		t.Logf("%d synced before the loss, %d survived", len(before), len(entries))
		seq, err := s2.Enqueue("eu", &recordv1.OutboxEntry{Work: &recordv1.OutboxEntry_Submit{Submit: newMessage("g_OUTBOX", "u_W", "after", "queued")}})
		if err != nil || seq <= last {
			t.Errorf("Enqueue after reopening = %d, %v; want a seq after %d", seq, err, last)
		}
	})
}
