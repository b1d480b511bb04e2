package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	adminv1 "github.com/roamfed/roamfed/api/admin/v1"
)

func (a *app) meshCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "mesh",
		Short: "Show every link as every region sees it",
		Long: `mesh asks every region for its links and prints one row per link end:
from, to, state, round trip, route (direct, via a third region, or no route)
and queue (outbox entries and deliveries waiting for the peer). The two
ends of a link may disagree for a moment; both are shown.

A region that does not answer is shown as unreachable; that is not an
error.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			results, err := eachRegion(cmd.Context(), a, func(ctx context.Context, c adminv1.AdminServiceClient) (*adminv1.StatusResponse, error) {
				return c.Status(ctx, &adminv1.StatusRequest{})
			})
			if err != nil {
				return err
			}
			writeMesh(cmd.OutOrStdout(), results)
			return nil
		},
	}
}

// writeMesh prints the link table of every region, in federation order.
func writeMesh(w io.Writer, results []regionResult[*adminv1.StatusResponse]) {
	tw := table(w)
	row(tw, "FROM", "TO", "STATE", "RTT", "ROUTE", "QUEUE")
	var notes []string
	for _, r := range results {
		if r.err != nil {
			row(tw, r.region, "*", "unreachable", "-", "-", "-")
			notes = append(notes, r.region+": "+unreachable(r.err))
			continue
		}
		for _, l := range sortedLinks(r.resp.GetLinks()) {
			row(tw, r.region, l.GetPeer(), linkState(l.GetState()), rtt(l.GetRttMicros()), route(l),
				l.GetOutboxItems()+l.GetQueuedDeliveries())
		}
	}
	tw.Flush()
	for _, n := range notes {
		fmt.Fprintln(w, n)
	}
}
