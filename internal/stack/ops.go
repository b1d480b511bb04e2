package stack

import (
	"context"
	"errors"
	"fmt"

	adminv1 "github.com/roamfed/roamfed/api/admin/v1"
	"github.com/roamfed/roamfed/internal/ops"
)

// startOps starts the ops listener: metrics, health, pprof and the status
// page, which reaches the other regions at their metrics_addr.
func (s *Stack) startOps() error {
	cfg := ops.Config{
		Addr:    s.cfg.MetricsAddr,
		Region:  s.cfg.Region,
		Metrics: s.metrics,
		Ready:   s.opsReady,
		Token:   s.cfg.AdminToken,
		Logger:  s.log,
	}
	if s.roam != nil {
		cfg.Drill = s.opsDrill
	}
	if fed := s.cfg.Federation; fed != nil {
		cfg.Federation = fed.Name
		cfg.Regions = fed.Names()
		cfg.PeerAddrs = make(map[string]string)
		for _, p := range fed.Peers(s.cfg.Region) {
			cfg.PeerAddrs[p.Name] = p.MetricsAddr
		}
	}
	o, err := ops.Start(cfg)
	if err != nil {
		return err
	}
	s.ops = o
	return nil
}

// MetricsAddr is the ops listener's address; empty when there is none.
func (s *Stack) MetricsAddr() string {
	if s.ops == nil {
		return ""
	}
	return s.ops.Addr()
}

// Metrics is the region's metrics registry and counters.
func (s *Stack) Metrics() *ops.Metrics { return s.metrics }

// opsReady says why the region does not serve: before Start returns and
// from Shutdown on, or when its data center is closed.
func (s *Stack) opsReady() error {
	switch {
	case !s.ready.Load():
		return errors.New("region is starting or stopping")
	case s.store.Closed():
		return errors.New("data center is closed")
	}
	return nil
}

// opsStatus reads what the region already keeps for metrics and the
// status page.
func (s *Stack) opsStatus() ops.RegionStatus {
	u := s.pool.Usage()
	st := ops.RegionStatus{Sessions: u.Sessions, MaxSessions: u.MaxSessions, Refused: make(map[string]uint64, len(u.Refused))}
	for r, n := range u.Refused {
		st.Refused[string(r)] = n
	}
	if s.roam == nil {
		return st
	}
	st.RelaysOpened, st.RelaysCarried = s.roam.Mesh().Relays()
	st.RoamingDropped = s.roam.Dropped()
	for _, p := range s.roam.Status() {
		st.Links = append(st.Links, ops.LinkStatus{
			Peer: p.Peer, State: ops.LinkState(p.State), RTT: p.RTT, LastError: p.LastError, Since: p.Since,
			Via: p.Via, NoRoute: p.NoRoute, Downs: p.Downs,
			OutboxItems: p.OutboxItems, OutboxBytes: p.OutboxBytes, QueuedDeliveries: p.QueuedDeliveries,
			RateRefused: p.RateRefused, DirectoryRefused: p.DirectoryRefused, IntegrityFailures: p.IntegrityFailures,
		})
	}
	if st.Links == nil {
		st.Links = []ops.LinkStatus{}
	}
	return st
}

// opsDrill runs a drill from the status page as the admin API would, with
// the same checks and logs.
func (s *Stack) opsDrill(ctx context.Context, cut bool, a, b, reason string) error {
	adm := &adminServer{st: s}
	var err error
	if cut {
		_, err = adm.CutLink(ctx, &adminv1.CutLinkRequest{A: a, B: b, Reason: reason})
	} else {
		_, err = adm.RestoreLink(ctx, &adminv1.RestoreLinkRequest{A: a, B: b, Reason: reason})
	}
	if err != nil {
		return fmt.Errorf("drill %s-%s: %w", a, b, err)
	}
	return nil
}
