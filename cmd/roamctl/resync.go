package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	adminv1 "github.com/roamfed/roamfed/api/admin/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
)

func (a *app) resyncCmd() *cobra.Command {
	var region string
	cmd := &cobra.Command{
		Use:   "resync",
		Short: "Have every region check and republish the home records it owns",
		Long: `resync asks one region (--region; by default the first in the federation
file whose admin API answers) to resync. It fans the instruction out to
every region; each checks the home records it publishes against its data
center and republishes corrections. One line per region says what it
checked, corrected and removed. The exit status is 1 if any region failed.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			results, err := a.resync(cmd.Context(), region)
			if err != nil {
				return err
			}
			if !writeResync(cmd.OutOrStdout(), results) {
				return errChecksFailed
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&region, "region", "", "the `region` to ask")
	return cmd
}

func (a *app) resync(ctx context.Context, region string) ([]*roamingv1.ResyncResult, error) {
	fed, err := a.federation()
	if err != nil {
		return nil, err
	}
	candidates := fed.Names()
	if region != "" {
		if _, err := a.region(region); err != nil {
			return nil, err
		}
		candidates = []string{region}
	}
	var last error
	for _, r := range candidates {
		c, err := a.admin(r)
		if err != nil {
			last = err
			continue
		}
		cctx, cancel := a.callCtx(ctx)
		resp, err := c.Resync(cctx, &adminv1.ResyncRequest{})
		cancel()
		if err == nil {
			return resp.GetResults(), nil
		}
		last = regionErr{r, err}
		if !notAnswering(err) || ctx.Err() != nil {
			break
		}
		if region == "" {
			fmt.Fprintf(a.stderr, "roamctl: resync: %v; trying the next region\n", last)
		}
	}
	return nil, last
}

// writeResync prints the per-region results; false if any failed.
func writeResync(w io.Writer, results []*roamingv1.ResyncResult) bool {
	ok := true
	tw := table(w)
	row(tw, "REGION", "CHECKED", "CORRECTED", "REMOVED", "ERROR")
	for _, r := range results {
		if r.GetError() != "" {
			ok = false
			row(tw, r.GetRegion(), "-", "-", "-", oneLine(r.GetError()))
			continue
		}
		row(tw, r.GetRegion(), r.GetChecked(), r.GetCorrected(), r.GetRemoved(), "-")
	}
	tw.Flush()
	return ok
}
