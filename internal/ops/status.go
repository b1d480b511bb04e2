package ops

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"
)

// Status is one region's answer to /api/status?scope=region.
type Status struct {
	Region     string     `json:"region"`
	Federation string     `json:"federation,omitempty"`
	At         time.Time  `json:"at"`
	Ready      bool       `json:"ready"`
	NotReady   string     `json:"not_ready,omitempty"`
	Counters   Counters   `json:"counters"`
	Links      []LinkJSON `json:"links"`
}

// LinkJSON is one row of a region's link table, as JSON.
type LinkJSON struct {
	Peer             string  `json:"peer"`
	State            string  `json:"state"`
	RTTMillis        float64 `json:"rtt_ms"`
	Via              string  `json:"via,omitempty"`
	NoRoute          bool    `json:"no_route,omitempty"`
	Downs            uint64  `json:"downs"`
	OutboxItems      int     `json:"outbox_items"`
	OutboxBytes      int64   `json:"outbox_bytes"`
	QueuedDeliveries int     `json:"queued_deliveries"`
	// What this region refused of the peer, and the peer's connections
	// closed on an altered TLS record.
	RateRefused       uint64    `json:"rate_refused"`
	DirectoryRefused  uint64    `json:"directory_refused"`
	IntegrityFailures uint64    `json:"integrity_failures"`
	Since             time.Time `json:"since"`
	LastError         string    `json:"last_error,omitempty"`
}

// View is the federation as one region sees it: /api/status and /events.
type View struct {
	// Region is the region that answered.
	Region     string       `json:"region"`
	Federation string       `json:"federation,omitempty"`
	At         time.Time    `json:"at"`
	Regions    []RegionView `json:"regions"`
	Links      []Edge       `json:"links"`
}

// RegionView is one region of a View: its Status, or why there is none.
type RegionView struct {
	Name      string  `json:"name"`
	Reachable bool    `json:"reachable"`
	Error     string  `json:"error,omitempty"`
	Status    *Status `json:"status,omitempty"`
}

// Edge is one link of the federation, drawn from both ends' rows. A and B
// are in name order; ID is "A:B" (region names have no colon).
type Edge struct {
	ID    string `json:"id"`
	A     string `json:"a"`
	B     string `json:"b"`
	State string `json:"state"` // up, down, cut, or unknown when neither end answered
	// AB is A's row for B, BA is B's row for A; nil when that end did not
	// answer.
	AB *LinkJSON `json:"ab,omitempty"`
	BA *LinkJSON `json:"ba,omitempty"`
}

func (s *Server) localStatus() Status {
	rs := s.cfg.Metrics.Status()
	st := Status{
		Region:     s.cfg.Region,
		Federation: s.cfg.Federation,
		At:         time.Now().UTC(),
		Counters:   s.cfg.Metrics.counters(rs),
		Links:      make([]LinkJSON, 0, len(rs.Links)),
	}
	if err := s.ready(); err != nil {
		st.NotReady = err.Error()
	} else {
		st.Ready = true
	}
	for _, l := range rs.Links {
		st.Links = append(st.Links, LinkJSON{
			Peer: l.Peer, State: l.State.String(), RTTMillis: float64(l.RTT.Microseconds()) / 1000,
			Via: l.Via, NoRoute: l.NoRoute, Downs: l.Downs,
			OutboxItems: l.OutboxItems, OutboxBytes: l.OutboxBytes, QueuedDeliveries: l.QueuedDeliveries,
			RateRefused: l.RateRefused, DirectoryRefused: l.DirectoryRefused, IntegrityFailures: l.IntegrityFailures,
			Since: l.Since.UTC(),
		})
		if l.State != LinkUp {
			// The last error of a link that is up is history.
			st.Links[len(st.Links)-1].LastError = l.LastError
		}
	}
	return st
}

// view returns the federation View, reusing one made in the last half
// event interval so that several open pages cost one round of peer calls.
func (s *Server) view(ctx context.Context) View {
	s.viewMu.Lock()
	defer s.viewMu.Unlock()
	if !s.viewAt.IsZero() && time.Since(s.viewAt) < s.cfg.EventEvery/2 {
		return s.lastView
	}
	v := View{Region: s.cfg.Region, Federation: s.cfg.Federation, At: time.Now().UTC()}
	names := s.cfg.Regions
	if len(names) == 0 {
		names = []string{s.cfg.Region}
	}
	v.Regions = make([]RegionView, len(names))
	// Other pages share this view: one that goes away must not cut the
	// calls short for them. PeerTimeout bounds each call.
	ctx = context.WithoutCancel(ctx)
	var wg sync.WaitGroup
	for i, name := range names {
		if name == s.cfg.Region {
			st := s.localStatus()
			v.Regions[i] = RegionView{Name: name, Reachable: true, Status: &st}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := s.peerStatus(ctx, name)
			if err != nil {
				v.Regions[i] = RegionView{Name: name, Error: err.Error()}
				return
			}
			v.Regions[i] = RegionView{Name: name, Reachable: true, Status: st}
		}()
	}
	wg.Wait()
	v.Links = edges(v.Regions)
	s.lastView, s.viewAt = v, time.Now()
	return v
}

// peerStatus asks another region's ops listener for its Status.
func (s *Server) peerStatus(ctx context.Context, name string) (*Status, error) {
	addr := s.cfg.PeerAddrs[name]
	if addr == "" {
		return nil, fmt.Errorf("no metrics_addr for %s in the federation file", name)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.PeerTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/api/status?scope=region", nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("unreachable: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %s", addr, resp.Status)
	}
	st := new(Status)
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(st); err != nil {
		return nil, fmt.Errorf("%s: status unreadable: %w", addr, err)
	}
	if st.Region != name {
		return nil, fmt.Errorf("%s answered as region %q, not %s", addr, st.Region, name)
	}
	return st, nil
}

// edges pairs every two regions and draws their link from both ends' rows:
// cut when either end is cut, up when every end that answered says up,
// else down.
func edges(regions []RegionView) []Edge {
	rows := make(map[[2]string]*LinkJSON)
	for _, r := range regions {
		if r.Status == nil {
			continue
		}
		for i := range r.Status.Links {
			l := &r.Status.Links[i]
			rows[[2]string{r.Name, l.Peer}] = l
		}
	}
	names := make([]string, len(regions))
	for i, r := range regions {
		names[i] = r.Name
	}
	sort.Strings(names)
	var out []Edge
	for i, a := range names {
		for _, b := range names[i+1:] {
			e := Edge{ID: a + ":" + b, A: a, B: b, AB: rows[[2]string{a, b}], BA: rows[[2]string{b, a}]}
			var states []string
			for _, l := range []*LinkJSON{e.AB, e.BA} {
				if l != nil {
					states = append(states, l.State)
				}
			}
			switch {
			case len(states) == 0:
				e.State = "unknown"
			case slices.Contains(states, "cut"):
				e.State = "cut"
			case !slices.ContainsFunc(states, func(s string) bool { return s != "up" }):
				e.State = "up"
			default:
				e.State = "down"
			}
			out = append(out, e)
		}
	}
	return out
}
