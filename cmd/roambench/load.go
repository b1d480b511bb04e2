package main

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/status"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
)

// sendTimeout bounds one SendMessage.
const sendTimeout = 10 * time.Second

// load sends messages until ctx ends: cfg.Senders concurrent senders, each
// sending when the pacer gives it a ticket (cfg.Rate > 0) or as soon as its
// last send returned (cfg.Rate == 0). Message n goes to group n mod groups,
// from its members in turn, so that every member of every group sends and
// senders are in every region.
type load struct {
	cfg    config
	pop    *population
	ledger *ledger
	next   atomic.Uint64
}

func (ld *load) run(ctx context.Context) {
	var tickets chan struct{}
	var wg sync.WaitGroup
	if ld.cfg.Rate > 0 {
		tickets = make(chan struct{}, ld.cfg.Senders)
		wg.Go(func() { pace(ctx, ld.cfg.Rate, tickets) })
	}
	for range ld.cfg.Senders {
		wg.Go(func() {
			for {
				if tickets != nil {
					select {
					case <-tickets:
					case <-ctx.Done():
						return
					}
				} else if ctx.Err() != nil {
					return
				}
				ld.send(ctx)
			}
		})
	}
	wg.Wait()
}

// pace issues rate tickets a second into tickets, until ctx ends. When every
// sender is busy it waits, and then issues what fell due meanwhile: the
// achieved rate shows in the report.
func pace(ctx context.Context, rate float64, tickets chan<- struct{}) {
	start := time.Now()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	issued := int64(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		due := int64(time.Since(start).Seconds() * rate)
		for ; issued < due; issued++ {
			select {
			case tickets <- struct{}{}:
			case <-ctx.Done():
				return
			}
		}
	}
}

// send sends the next message and records the outcome. The send time is
// taken just before the call and travels in the body.
func (ld *load) send(ctx context.Context) {
	n := ld.next.Add(1) - 1
	groups := uint64(len(ld.pop.groups))
	g := ld.pop.groups[n%groups]
	u := g.members[(n/groups)%uint64(len(g.members))]
	// Not ctx: a send that started finishes, so that its outcome is known.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sendTimeout)
	defer cancel()
	sentAt := ld.ledger.now()
	ld.ledger.sent.Add(1)
	resp, err := u.client.SendMessage(u.authed(sctx), &clientv1.SendMessageRequest{
		GroupId:     g.id,
		ClientMsgId: "rb" + strconv.FormatUint(n, 10),
		Body:        encodeBody(sentAt, ld.cfg.BodyBytes),
	})
	if err != nil {
		ld.ledger.sendFailed(status.Code(err))
		return
	}
	if resp.GetState() != clientv1.DeliveryState_DELIVERY_STATE_COMMITTED {
		// Accepted into the outbox: committed later, if the run lasts.
		ld.ledger.accepted.Add(1)
		return
	}
	ld.ledger.committedMsg(g, u, resp.GetSeq(), sentAt, ld.ledger.now())
}
