package ops

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	recordv1 "github.com/roamfed/roamfed/api/record/v1"
)

// LinkState is a link's state as metrics report it; the values are those
// of roaming.v1.LinkState.
type LinkState int

// The link states.
const (
	LinkUnknown LinkState = 0
	LinkUp      LinkState = 1
	LinkDown    LinkState = 2
	LinkCut     LinkState = 3
)

func (s LinkState) String() string {
	switch s {
	case LinkUp:
		return "up"
	case LinkDown:
		return "down"
	case LinkCut:
		return "cut"
	}
	return "unknown"
}

// RegionStatus is the state a region already keeps, read when metrics are
// scraped or the status page asks.
type RegionStatus struct {
	Sessions    int
	MaxSessions int
	// Refused counts the resource pool's refusals by reason.
	Refused map[string]uint64
	// Links has a row per peer, by name; nil for a region on its own.
	Links []LinkStatus
	// RelaysOpened counts this region's connections that went through a
	// third region; RelaysCarried the relays it carried for others.
	RelaysOpened  uint64
	RelaysCarried uint64
	// RoamingDropped counts, by reason, deliveries the roaming system did
	// not push (roaming.System.Dropped); nil for a region on its own.
	RoamingDropped map[string]uint64
}

// LinkStatus is one peer's row: the link, the route, the work waiting.
type LinkStatus struct {
	Peer      string
	State     LinkState
	RTT       time.Duration
	LastError string
	Since     time.Time
	// Via is the region traffic to Peer goes through; empty for direct
	// and for no route (NoRoute).
	Via              string
	NoRoute          bool
	Downs            uint64
	OutboxItems      int
	OutboxBytes      int64
	QueuedDeliveries int
	// RateRefused counts the peer's requests the roaming listener refused
	// over the per-peer rate limit; DirectoryRefused the directory
	// records the peer published that this region refused.
	RateRefused      uint64
	DirectoryRefused uint64
	// IntegrityFailures counts connections with the peer closed on a TLS
	// record from it that failed authentication (altered on the way).
	IntegrityFailures uint64
}

// Send results, the values of roamfed_sends_total's result label.
const (
	sendCommitted = iota // committed at the home
	sendDuplicate        // a retry of a message already committed
	sendAccepted         // synced in the outbox; the home commits it later
	sendRefused          // over a resource pool budget (RESOURCE_EXHAUSTED)
	sendRejected         // the caller's mistake: bad request, no such group, not a member, not logged in
	sendFailed           // anything else
	numSendResults
)

var sendResults = [numSendResults]string{"committed", "duplicate", "accepted", "refused", "rejected", "failed"}

// Metrics is one region's registry and the counters its parts feed. Its
// methods are safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	sends      [numSendResults]atomic.Uint64
	deliveries atomic.Uint64 // first attempts
	resends    atomic.Uint64
	catchUps   atomic.Uint64
	committed  atomic.Uint64

	sendSeconds   prometheus.Histogram
	commitSeconds prometheus.Histogram
	remoteLatency *prometheus.HistogramVec

	status atomic.Pointer[func() RegionStatus]
}

// NewMetrics makes the registry of region. Every metric carries a region
// label, so that one dashboard can show several regions.
func NewMetrics(region string) (*Metrics, error) {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.sendSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "roamfed_send_duration_seconds",
		Help:    "Time to answer a client's SendMessage, whatever the result.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14), // 0.5ms to 4s
	})
	m.commitSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "roamfed_commit_duration_seconds",
		Help:    "Time the data center took to write and sync one batch of committed messages.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16), // 0.1ms to 3.3s
	})
	m.remoteLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "roamfed_remote_delivery_latency_seconds",
		Help: "For messages a peer delivers here: this region's clock at arrival minus the home's committed_at. " +
			"Skewed by the difference of the two clocks. peer is the region that delivered.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12), // 1ms to 24s
	}, []string{"peer"})
	r := prometheus.WrapRegistererWith(prometheus.Labels{"region": region}, m.reg)
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.sendSeconds, m.commitSeconds, m.remoteLatency,
		pulled{m},
	} {
		if err := r.Register(c); err != nil {
			return nil, fmt.Errorf("ops: register metrics of %s: %w", region, err)
		}
	}
	return m, nil
}

// Registry is the region's registry, which /metrics serves.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// SetStatus sets the function that reads the region's state at scrape
// time. It must be safe to call from any goroutine and should be quick.
func (m *Metrics) SetStatus(fn func() RegionStatus) { m.status.Store(&fn) }

// Status reads the region's state; zero before SetStatus.
func (m *Metrics) Status() RegionStatus {
	if fn := m.status.Load(); fn != nil {
		return (*fn)()
	}
	return RegionStatus{}
}

// ObserveCommit records one data center commit batch; it fits
// datacenter.Options.CommitObserver.
func (m *Metrics) ObserveCommit(messages int, took time.Duration) {
	m.committed.Add(uint64(messages))
	m.commitSeconds.Observe(took.Seconds())
}

// ObserveInbound records the messages a peer delivered here; it fits
// roaming.Config.OnInbound.
func (m *Metrics) ObserveInbound(peer string, items []*recordv1.Fanout) {
	h := m.remoteLatency.WithLabelValues(peer)
	now := time.Now()
	for _, f := range items {
		at := f.GetMessage().GetCommittedAt()
		if at == nil {
			continue
		}
		h.Observe(max(now.Sub(at.AsTime()), 0).Seconds())
	}
}

// UnaryServerInterceptor counts the client service's sends by result and
// times them. It reads status codes, so chain it outside (before) the
// interceptor that maps domain errors to them.
func (m *Metrics) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if info.FullMethod != clientv1.ClientService_SendMessage_FullMethodName {
			return handler(ctx, req)
		}
		start := time.Now()
		resp, err := handler(ctx, req)
		m.sendSeconds.Observe(time.Since(start).Seconds())
		m.sends[sendResult(resp, err)].Add(1)
		return resp, err
	}
}

func sendResult(resp any, err error) int {
	if err == nil {
		r, _ := resp.(*clientv1.SendMessageResponse)
		switch {
		case r.GetState() == clientv1.DeliveryState_DELIVERY_STATE_ACCEPTED:
			return sendAccepted
		case r.GetDuplicate():
			return sendDuplicate
		}
		return sendCommitted
	}
	switch status.Code(err) {
	case codes.ResourceExhausted:
		return sendRefused
	case codes.InvalidArgument, codes.NotFound, codes.PermissionDenied, codes.Unauthenticated,
		codes.FailedPrecondition, codes.AlreadyExists, codes.OutOfRange:
		return sendRejected
	}
	return sendFailed
}

// StreamServerInterceptor counts what client sessions are sent: messages
// delivered (first attempts and resends apart) and catch-up notices.
func (m *Metrics) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if info.FullMethod != clientv1.ClientService_Session_FullMethodName {
			return handler(srv, ss)
		}
		return handler(srv, &countingStream{ServerStream: ss, m: m})
	}
}

// deliveryFrame is a Session frame of deliveries sent already encoded
// (businesscenter's); it says what it holds.
type deliveryFrame interface {
	DeliveryCounts() (first, resends int)
}

type countingStream struct {
	grpc.ServerStream
	m *Metrics
}

func (c *countingStream) SendMsg(msg any) error {
	err := c.ServerStream.SendMsg(msg)
	if err != nil {
		return err
	}
	if f, ok := msg.(deliveryFrame); ok {
		first, resends := f.DeliveryCounts()
		c.m.deliveries.Add(uint64(first))
		c.m.resends.Add(uint64(resends))
		return nil
	}
	r, ok := msg.(*clientv1.SessionResponse)
	if !ok {
		return nil
	}
	switch k := r.GetKind().(type) {
	case *clientv1.SessionResponse_Delivery:
		c.m.countDelivery(k.Delivery)
	case *clientv1.SessionResponse_Deliveries:
		for _, d := range k.Deliveries.GetDeliveries() {
			c.m.countDelivery(d)
		}
	case *clientv1.SessionResponse_CatchUp:
		c.m.catchUps.Add(1)
	}
	return nil
}

func (m *Metrics) countDelivery(d *clientv1.Delivery) {
	if d.GetAttempt() > 1 {
		m.resends.Add(1)
	} else {
		m.deliveries.Add(1)
	}
}

// Counters are the region's running totals, as the status page shows them.
type Counters struct {
	Sessions      int               `json:"sessions"`
	MaxSessions   int               `json:"max_sessions"`
	Sends         uint64            `json:"sends"`
	SendsBy       map[string]uint64 `json:"sends_by_result"`
	Deliveries    uint64            `json:"deliveries"`
	Resends       uint64            `json:"resends"`
	CatchUps      uint64            `json:"catch_ups"`
	Committed     uint64            `json:"committed"`
	Refusals      uint64            `json:"refusals"`
	RefusalsBy    map[string]uint64 `json:"refusals_by_reason"`
	RelaysOpened  uint64            `json:"relays_opened"`
	RelaysCarried uint64            `json:"relays_carried"`
}

func (m *Metrics) counters(st RegionStatus) Counters {
	c := Counters{
		Sessions: st.Sessions, MaxSessions: st.MaxSessions,
		SendsBy:    make(map[string]uint64, numSendResults),
		Deliveries: m.deliveries.Load(), Resends: m.resends.Load(), CatchUps: m.catchUps.Load(),
		Committed:    m.committed.Load(),
		RefusalsBy:   make(map[string]uint64, len(st.Refused)),
		RelaysOpened: st.RelaysOpened, RelaysCarried: st.RelaysCarried,
	}
	for i := range m.sends {
		n := m.sends[i].Load()
		c.SendsBy[sendResults[i]] = n
		c.Sends += n
	}
	for r, n := range st.Refused {
		c.RefusalsBy[r] = n
		c.Refusals += n
	}
	return c
}

// pulled reads the region's state and the interceptors' counters at
// scrape time.
type pulled struct{ m *Metrics }

var (
	descSessions      = prometheus.NewDesc("roamfed_sessions", "Client sessions open in the region.", nil, nil)
	descSessionsLimit = prometheus.NewDesc("roamfed_sessions_limit", "The most client sessions the region takes (resource pool).", nil, nil)
	descSends         = prometheus.NewDesc("roamfed_sends_total", "Client SendMessage calls by result: committed, duplicate, accepted, refused, rejected, failed.", []string{"result"}, nil)
	descDeliveries    = prometheus.NewDesc("roamfed_deliveries_total", "Messages pushed to client sessions; attempt is first or resend.", []string{"attempt"}, nil)
	descCatchUps      = prometheus.NewDesc("roamfed_catch_ups_total", "Catch-up notices sent to client sessions (messages left for GetHistory).", nil, nil)
	descCommitted     = prometheus.NewDesc("roamfed_committed_messages_total", "Messages committed by this region as the home of their group.", nil, nil)
	descRefusals      = prometheus.NewDesc("roamfed_refusals_total", "Work the resource pool refused, by the budget it was over.", []string{"reason"}, nil)
	descLinkState     = prometheus.NewDesc("roamfed_link_state", "State of the link to peer: 0 unknown, 1 up, 2 down, 3 cut by a drill.", []string{"peer"}, nil)
	descLinkRTT       = prometheus.NewDesc("roamfed_link_rtt_seconds", "Moving average of heartbeat round trips to peer.", []string{"peer"}, nil)
	descLinkDowns     = prometheus.NewDesc("roamfed_link_downs_total", "Times the link to peer went down.", []string{"peer"}, nil)
	descRelayed       = prometheus.NewDesc("roamfed_link_relayed", "1 when traffic to peer goes through a third region.", []string{"peer"}, nil)
	descNoRoute       = prometheus.NewDesc("roamfed_link_no_route", "1 when no route reaches peer; its work waits in the outbox.", []string{"peer"}, nil)
	descOutboxItems   = prometheus.NewDesc("roamfed_outbox_items", "Entries in the durable outbox for peer.", []string{"peer"}, nil)
	descOutboxBytes   = prometheus.NewDesc("roamfed_outbox_bytes", "Bytes in the durable outbox for peer.", []string{"peer"}, nil)
	descQueued        = prometheus.NewDesc("roamfed_queued_deliveries", "Deliveries queued in memory for peer.", []string{"peer"}, nil)
	descRelays        = prometheus.NewDesc("roamfed_relayed_connections_total", "Connections relayed through a third region; role origin: this region's own, relay: carried for others.", []string{"role"}, nil)
	descPeerRefusals  = prometheus.NewDesc("roamfed_peer_refusals_total", "What this region refused of peer: rate (requests over the per-peer rate limit), directory_record (directory records the peer may not publish).", []string{"peer", "reason"}, nil)
	descRoamDropped   = prometheus.NewDesc("roamfed_roaming_dropped_total", "Deliveries the roaming system did not push, by reason: routing_queue_full and held_forward_lost (the recipients catch up from history), no_standing (a peer delivered for a group and recipient it does not home; refused).", []string{"reason"}, nil)
	descIntegrity     = prometheus.NewDesc("roamfed_link_integrity_failures_total", "Connections with peer closed on a TLS record from it that failed authentication: bytes altered on the way.", []string{"peer"}, nil)
)

func (pulled) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descSessions, descSessionsLimit, descSends, descDeliveries, descCatchUps, descCommitted, descRefusals,
		descLinkState, descLinkRTT, descLinkDowns, descRelayed, descNoRoute,
		descOutboxItems, descOutboxBytes, descQueued, descRelays, descPeerRefusals, descIntegrity, descRoamDropped,
	} {
		ch <- d
	}
}

func (p pulled) Collect(ch chan<- prometheus.Metric) {
	m := p.m
	st := m.Status()
	emit := func(d *prometheus.Desc, t prometheus.ValueType, v float64, labels []string) {
		// Errors would be a label count that does not match its Desc,
		// which the fixed calls below rule out.
		if mt, err := prometheus.NewConstMetric(d, t, v, labels...); err == nil {
			ch <- mt
		}
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) { emit(d, prometheus.GaugeValue, v, labels) }
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		emit(d, prometheus.CounterValue, float64(v), labels)
	}
	gauge(descSessions, float64(st.Sessions))
	gauge(descSessionsLimit, float64(st.MaxSessions))
	for i := range m.sends {
		counter(descSends, m.sends[i].Load(), sendResults[i])
	}
	counter(descDeliveries, m.deliveries.Load(), "first")
	counter(descDeliveries, m.resends.Load(), "resend")
	counter(descCatchUps, m.catchUps.Load())
	counter(descCommitted, m.committed.Load())
	for r, n := range st.Refused {
		counter(descRefusals, n, r)
	}
	for _, l := range st.Links {
		gauge(descLinkState, float64(l.State), l.Peer)
		gauge(descLinkRTT, l.RTT.Seconds(), l.Peer)
		counter(descLinkDowns, l.Downs, l.Peer)
		gauge(descRelayed, b2f(l.Via != ""), l.Peer)
		gauge(descNoRoute, b2f(l.NoRoute), l.Peer)
		gauge(descOutboxItems, float64(l.OutboxItems), l.Peer)
		gauge(descOutboxBytes, float64(l.OutboxBytes), l.Peer)
		gauge(descQueued, float64(l.QueuedDeliveries), l.Peer)
		counter(descPeerRefusals, l.RateRefused, l.Peer, "rate")
		counter(descPeerRefusals, l.DirectoryRefused, l.Peer, "directory_record")
		counter(descIntegrity, l.IntegrityFailures, l.Peer)
	}
	if st.Links != nil {
		counter(descRelays, st.RelaysOpened, "origin")
		counter(descRelays, st.RelaysCarried, "relay")
	}
	for r, n := range st.RoamingDropped {
		counter(descRoamDropped, n, r)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
