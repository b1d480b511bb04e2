package businesscenter_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
)

// maxBatchBytes is the server's bound on a Deliveries frame.
const maxBatchBytes = 1 << 20

// TestSessionDeliveriesBatched lets deliveries pile up behind a session
// that stops reading, with a Pong and a presence change queued between
// them, and checks what the session gets when it reads again: a client
// that declared Capabilities.deliveries gets them in fewer frames than
// messages, none over the size bound; one that did not gets a Delivery
// frame each; both get every message once, in order, with the Pong and
// the presence change where they were queued. Acknowledging each frame
// with one Ack stops every resend.
func TestSessionDeliveriesBatched(t *testing.T) {
	t.Parallel()
	const ackTimeout = time.Second
	// Resends while the readers are paused are tolerated; giving up on a
	// delivery (and a CatchUp) is not.
	r := startRegion(t, withDelivery(ackTimeout, 30))
	alice := r.newUser(t, "alice")
	bob := r.newUser(t, "bob")
	carol := r.newUser(t, "carol")
	g := r.createGroup(t, bob, alice, carol)

	// An explicit window turns gRPC's window estimation off: 64 KiB are
	// all a paused reader's connection takes before the server's writer
	// blocks and the session's queue fills.
	small := newClient(t, r.st.ClientAddr(), grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	batched, _ := r.startSessionWith(t, alice, sessionConfig{client: small, deliveries: true})
	single, _ := r.startSessionWith(t, alice, sessionConfig{client: small})
	// A message reaches a user's sessions in the order they opened: when
	// watch has one, the paused sessions have it queued.
	watch, _ := r.startSession(t, alice)
	batched.pause()
	single.pause()

	const n = 60
	body := strings.Repeat("x", 32<<10) // 30 fit in a batch
	var watched uint64
	send := func(from, to int) {
		t.Helper()
		for i := from; i <= to; i++ {
			r.send(t, bob, g.GetId(), strconv.Itoa(i), fmt.Sprintf("%d %s", i, body))
		}
		for watched < uint64(to) {
			d := watch.nextDelivery()
			watch.ack(d.GetDeliveryId())
			watched = max(watched, d.GetMessage().GetSeq())
		}
	}
	send(1, 20)
	batched.ping(20)
	single.ping(20)
	send(21, 40)
	r.startSession(t, carol)
	watch.nextMatching("carol's presence", func(f *clientv1.SessionResponse) bool {
		return f.GetPresence().GetUserId() == carol.id
	})
	send(41, n)
	batched.resume()
	single.resume()

	for _, tt := range []struct {
		name    string
		s       *session
		batched bool
	}{
		{"deliveries", batched, true},
		{"delivery", single, false},
	} {
		var (
			got       []string // first deliveries' seqs, "pong" and "carol", as read
			frames    int      // frames that carry deliveries
			delivered int      // deliveries, resends too
			seqOf     = make(map[uint64]uint64)
		)
		for len(got) < n+2 {
			f := tt.s.next()
			var ds []*clientv1.Delivery
			switch {
			case f.GetDelivery() != nil:
				ds = []*clientv1.Delivery{f.GetDelivery()}
			case f.GetDeliveries() != nil:
				if !tt.batched {
					t.Fatalf("%s: a session that did not declare Capabilities.deliveries got %v", tt.name, f)
				}
				if size := proto.Size(f.GetDeliveries()); size > maxBatchBytes {
					t.Errorf("%s: a Deliveries frame of %d bytes; the bound is %d", tt.name, size, maxBatchBytes)
				}
				ds = f.GetDeliveries().GetDeliveries()
			case f.GetPong() != nil:
				got = append(got, "pong")
			case f.GetPresence().GetUserId() == carol.id:
				got = append(got, "carol")
			case f.GetCatchUp() != nil:
				t.Fatalf("%s: got %v", tt.name, f)
			}
			if len(ds) == 0 {
				continue
			}
			frames++
			delivered += len(ds)
			ids := make([]uint64, 0, len(ds))
			for _, d := range ds {
				ids = append(ids, d.GetDeliveryId())
				seq := d.GetMessage().GetSeq()
				if d.GetAttempt() > 1 {
					if seqOf[d.GetDeliveryId()] != seq {
						t.Fatalf("%s: delivery %d of seq %d is a resend of nothing sent", tt.name, d.GetDeliveryId(), seq)
					}
					continue
				}
				seqOf[d.GetDeliveryId()] = seq
				got = append(got, strconv.FormatUint(seq, 10))
			}
			tt.s.ack(ids...)
		}
		var want []string
		for i := 1; i <= n; i++ {
			want = append(want, strconv.Itoa(i))
		}
		// Each was queued after the deliveries before it and, the
		// server taking microseconds for it, before the next message
		// was even sent.
		want = append(want[:40], append([]string{"carol"}, want[40:]...)...)
		want = append(want[:20], append([]string{"pong"}, want[20:]...)...)
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Fatalf("%s: read\n%s\nwant\n%s", tt.name, strings.Join(got, " "), strings.Join(want, " "))
		}
		if tt.batched && frames >= n/2 {
			t.Errorf("%s: %d deliveries came in %d frames; want fewer than %d", tt.name, delivered, frames, n/2)
		}
		if !tt.batched && frames != delivered {
			t.Errorf("%s: %d deliveries came in %d frames; want one each", tt.name, delivered, frames)
		}
		t.Logf("%s: %d deliveries (%d resends) in %d frames", tt.name, delivered, delivered-n, frames)

		// Once the Pong is back every Ack has been applied; a resend
		// queued before that is acknowledged, any later one fails.
		tt.s.ping(7)
		for {
			f := tt.s.next()
			if f.GetPong().GetNonce() == 7 {
				break
			}
			ds := append(f.GetDeliveries().GetDeliveries(), f.GetDelivery())
			for _, d := range ds {
				if d == nil {
					continue
				}
				if _, seen := seqOf[d.GetDeliveryId()]; !seen || d.GetAttempt() < 2 {
					t.Fatalf("%s: unexpected delivery %v", tt.name, d)
				}
				tt.s.ack(d.GetDeliveryId())
			}
		}
		tt.s.expectNoDelivery(3 * ackTimeout)
	}
}
