package business

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	recordv1 "github.com/roamfed/roamfed/api/record/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/roaming/resourcepool"
)

// Deliverer carries committed messages and presence changes to one peer on
// a Deliver stream. What was in flight when a stream breaks is sent again,
// first, on the next one; the peer removes duplicates.
type Deliverer struct {
	peer    string
	peers   *resourcepool.Peers
	window  *resourcepool.Window
	limits  resourcepool.Limits
	log     *slog.Logger
	queue   chan deliverItem
	dropped atomic.Uint64
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once

	nextID uint64
	// retry holds batches to send again before anything new.
	retry []*roamingv1.DeliverRequest
}

type deliverItem struct {
	fanout   *recordv1.Fanout
	presence *recordv1.PresenceChange
}

// NewDeliverer starts the sender for one peer. Stop it with Stop.
func NewDeliverer(peer string, peers *resourcepool.Peers, log *slog.Logger) *Deliverer {
	d := &Deliverer{
		peer:   peer,
		peers:  peers,
		window: peers.Window(peer),
		limits: peers.Limits(),
		log:    log.With(slog.String("peer", peer), slog.String("stream", "deliver")),
		queue:  make(chan deliverItem, peers.Limits().DeliverQueue),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	go d.run()
	return d
}

// Enqueue queues a delivery without blocking and reports whether it did.
// When the queue is full the delivery is not queued, and counted; the
// Router sends refused messages again from their group's log once the
// queue has room.
func (d *Deliverer) Enqueue(f *recordv1.Fanout, p *recordv1.PresenceChange) bool {
	select {
	case d.queue <- deliverItem{fanout: f, presence: p}:
		return true
	default:
		if d.dropped.Add(1)%1000 == 1 {
			d.log.Warn("delivery queue full; its messages will be sent from the log when it has room", slog.Uint64("refused", d.dropped.Load()))
		}
		return false
	}
}

// Refused counts deliveries that found the queue full.
func (d *Deliverer) Refused() uint64 { return d.dropped.Load() }

// Queued is how many deliveries wait for the peer.
func (d *Deliverer) Queued() int { return len(d.queue) }

// Room reports whether the queue is at most half full.
func (d *Deliverer) Room() bool { return len(d.queue) <= cap(d.queue)/2 }

// Stop ends the stream; what is still queued is abandoned to catch-up.
func (d *Deliverer) Stop() {
	d.once.Do(func() { close(d.stop) })
	<-d.done
}

func (d *Deliverer) run() {
	defer close(d.done)
	backoff := 50 * time.Millisecond
	for {
		ok, err := d.session()
		if err == nil {
			return
		}
		if ok {
			backoff = 50 * time.Millisecond
		}
		d.log.Debug("deliver stream ended", slog.Any("err", err))
		select {
		case <-d.stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

// session runs one Deliver stream. It reports whether any batch was
// acknowledged, and returns nil only when the deliverer stops.
func (d *Deliverer) session() (progressed bool, _ error) {
	// Wait for work before opening a stream.
	if len(d.retry) == 0 {
		select {
		case it := <-d.queue:
			d.retry = append(d.retry, d.batch(it))
		case <-d.stop:
			return false, nil
		}
	}
	conn, err := d.peers.Conn(d.peer)
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := roamingv1.NewBusinessServiceClient(conn).Deliver(ctx)
	if err != nil {
		return false, err
	}
	var (
		mu       sync.Mutex
		inflight = make(map[uint64]*roamingv1.DeliverRequest)
		order    []uint64 // batch ids in send order, to resend in order
		acked    atomic.Bool
		recvErr  = make(chan error, 1)
	)
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				recvErr <- err
				// Wake a batch waiting for window room that only this
				// stream's acknowledgements could have freed.
				cancel()
				return
			}
			mu.Lock()
			if req, ok := inflight[resp.GetBatchId()]; ok {
				delete(inflight, resp.GetBatchId())
				d.window.Release(int64(proto.Size(req)))
				acked.Store(true)
			}
			mu.Unlock()
		}
	}()
	defer func() {
		cancel()
		mu.Lock()
		defer mu.Unlock()
		var again []*roamingv1.DeliverRequest
		for _, id := range order {
			if req, ok := inflight[id]; ok {
				d.window.Release(int64(proto.Size(req)))
				again = append(again, req)
			}
		}
		d.retry = append(again, d.retry...)
	}()
	for {
		var req *roamingv1.DeliverRequest
		if len(d.retry) > 0 {
			req, d.retry = d.retry[0], d.retry[1:]
		} else {
			select {
			case it := <-d.queue:
				req = d.batch(it)
			case err := <-recvErr:
				return acked.Load(), err
			case <-d.stop:
				_ = stream.CloseSend()
				return acked.Load(), nil
			}
		}
		size := int64(proto.Size(req))
		if err := d.window.Acquire(ctx, size); err != nil {
			d.retry = append([]*roamingv1.DeliverRequest{req}, d.retry...)
			return acked.Load(), err
		}
		mu.Lock()
		inflight[req.GetBatchId()] = req
		order = append(order, req.GetBatchId())
		if len(order) > 4*d.limits.WindowBatches {
			order = compact(order, inflight)
		}
		mu.Unlock()
		if err := stream.Send(req); err != nil {
			return acked.Load(), err
		}
	}
}

// compact drops acknowledged ids from order.
func compact(order []uint64, inflight map[uint64]*roamingv1.DeliverRequest) []uint64 {
	out := order[:0]
	for _, id := range order {
		if _, ok := inflight[id]; ok {
			out = append(out, id)
		}
	}
	return out
}

// batch builds a request from first and whatever else is queued.
func (d *Deliverer) batch(first deliverItem) *roamingv1.DeliverRequest {
	d.nextID++
	req := &roamingv1.DeliverRequest{BatchId: d.nextID}
	size := 0
	add := func(it deliverItem) {
		if it.fanout != nil {
			req.Items = append(req.Items, it.fanout)
			size += proto.Size(it.fanout)
		}
		if it.presence != nil {
			req.Presence = append(req.Presence, it.presence)
			size += proto.Size(it.presence)
		}
	}
	add(first)
	for len(req.Items)+len(req.Presence) < d.limits.MaxBatchMessages && size < d.limits.MaxBatchBytes {
		select {
		case it := <-d.queue:
			add(it)
		default:
			return req
		}
	}
	return req
}
