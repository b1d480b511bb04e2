package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	adminv1 "github.com/roamfed/roamfed/api/admin/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
)

func (a *app) statusCmd() *cobra.Command {
	var region string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show regions' links, queues and resource usage",
		Long: `status asks one region (--region) or every region of the federation for its
status: when it started, and per peer link its state, heartbeat round trip,
route (direct, through another region, or none), the cross-region work
waiting for the peer (durable outbox, queued deliveries) and in flight
(window), what the region refused of the peer (requests over the per-peer
rate limit, directory records the peer may not publish), and connections
with the peer closed on a TLS record altered on the way (integrity
failures); and the service center's sessions and refusals.

A region that does not answer is reported, and makes the exit status 1.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.runStatus(cmd.Context(), cmd.OutOrStdout(), region, asJSON)
		},
	}
	cmd.Flags().StringVar(&region, "region", "", "only this `region`")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the answers as JSON, one object per region")
	return cmd
}

func (a *app) runStatus(ctx context.Context, out io.Writer, region string, asJSON bool) error {
	var results []regionResult[*adminv1.StatusResponse]
	if region != "" {
		c, err := a.admin(region)
		if err != nil {
			return err
		}
		cctx, cancel := a.callCtx(ctx)
		resp, err := c.Status(cctx, &adminv1.StatusRequest{})
		cancel()
		if err != nil {
			return regionErr{region, err}
		}
		results = append(results, regionResult[*adminv1.StatusResponse]{region: region, resp: resp})
	} else {
		var err error
		results, err = eachRegion(ctx, a, func(ctx context.Context, c adminv1.AdminServiceClient) (*adminv1.StatusResponse, error) {
			return c.Status(ctx, &adminv1.StatusRequest{})
		})
		if err != nil {
			return err
		}
	}
	failed := 0
	for i, r := range results {
		if r.err != nil {
			failed++
		}
		if asJSON {
			if r.err != nil {
				fmt.Fprintf(a.stderr, "roamctl: status: %v\n", regionErr{r.region, r.err})
				continue
			}
			b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(r.resp)
			if err != nil {
				return err
			}
			fmt.Fprintln(out, string(b))
			continue
		}
		if i > 0 {
			fmt.Fprintln(out)
		}
		if r.err != nil {
			fmt.Fprintf(out, "region %s: %s\n", r.region, unreachable(r.err))
			continue
		}
		writeStatus(out, r.resp, a.now())
	}
	if failed > 0 {
		return errChecksFailed
	}
	return nil
}

// unreachable says why a region gave no answer.
func unreachable(err error) string {
	if notAnswering(err) {
		return "unreachable: " + describe(err)
	}
	return "error: " + describe(err)
}

// writeStatus prints one region's status.
func writeStatus(w io.Writer, s *adminv1.StatusResponse, now time.Time) {
	head := "region " + s.GetRegion()
	if s.GetFederation() != "" {
		head += " (federation " + s.GetFederation() + ")"
	}
	if st := s.GetStartedAt(); st != nil && st.AsTime().Year() >= 2000 {
		head += fmt.Sprintf(", up %s since %s", age(st, now), st.AsTime().UTC().Format(time.RFC3339))
	}
	fmt.Fprintln(w, head)
	res := s.GetResources()
	line := fmt.Sprintf("sessions %d", res.GetSessions())
	if res.GetMaxSessions() > 0 {
		line += fmt.Sprintf(" of %d", res.GetMaxSessions())
	}
	var refused []string
	for _, k := range slices.Sorted(maps.Keys(res.GetRefused())) {
		if n := res.GetRefused()[k]; n > 0 {
			refused = append(refused, fmt.Sprintf("%s %d", k, n))
		}
	}
	if len(refused) > 0 {
		line += "; refused: " + strings.Join(refused, ", ")
	} else {
		line += "; nothing refused"
	}
	fmt.Fprintln(w, line)
	if len(s.GetLinks()) == 0 {
		fmt.Fprintln(w, "no links (not federated)")
		return
	}
	tw := table(w)
	row(tw, "PEER", "STATE", "RTT", "ROUTE", "SINCE", "DOWNS", "OUTBOX", "QUEUED", "WINDOW",
		"RATE REFUSED", "DIR REFUSED", "INTEGRITY FAILS", "LAST ERROR")
	for _, l := range sortedLinks(s.GetLinks()) {
		// A link that is up again keeps its last error; it is news only
		// while the link is not up.
		lastErr := "-"
		if e := l.GetLastError(); e != "" && l.GetState() != roamingv1.LinkState_LINK_STATE_UP {
			lastErr = shortError(e)
		}
		row(tw, l.GetPeer(), linkState(l.GetState()), rtt(l.GetRttMicros()), route(l), age(l.GetSince(), now), l.GetDowns(),
			itemsBytes(l.GetOutboxItems(), l.GetOutboxBytes()), l.GetQueuedDeliveries(),
			itemsBytes(uint64(l.GetWindowBatches()), l.GetWindowBytes()),
			l.GetRateRefused(), l.GetDirectoryRefused(), l.GetIntegrityFailures(), lastErr)
	}
	tw.Flush()
}

func sortedLinks(links []*adminv1.Link) []*adminv1.Link {
	out := slices.Clone(links)
	slices.SortFunc(out, func(x, y *adminv1.Link) int { return strings.Compare(x.GetPeer(), y.GetPeer()) })
	return out
}
