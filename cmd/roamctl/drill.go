package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"

	"github.com/spf13/cobra"

	adminv1 "github.com/roamfed/roamfed/api/admin/v1"
	"github.com/roamfed/roamfed/internal/cli"
)

func (a *app) drillCmd() *cobra.Command {
	return groupCmd("drill", "Cut and restore links between regions, and run drills under load",
		a.drillCutCmd(),
		a.drillRestoreCmd(),
		a.drillListCmd(),
		a.drillRunCmd(),
	)
}

func (a *app) drillCutCmd() *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "cut A B",
		Short: "Cut the link between regions A and B, as if the network between them failed",
		Long: `cut asks region A's admin API to cut its link with B; A applies the cut at
both ends. If A's admin API does not answer, B is asked instead. Traffic
between A and B then goes through a third region, or waits in the durable
outbox when there is none, until 'roamctl drill restore A B'.`,
		Args: cli.Args("A", "B"),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := a.drill(cmd.Context(), "cut", args[0], args[1], reason)
			if err != nil {
				return err
			}
			writeDrill(cmd.OutOrStdout(), d)
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the drill log")
	return cmd
}

func (a *app) drillRestoreCmd() *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "restore A B",
		Short: "End a cut of the link between regions A and B",
		Long: `restore asks region A's admin API to end the cut of its link with B, at both
ends; if A's admin API does not answer, B is asked instead.`,
		Args: cli.Args("A", "B"),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := a.drill(cmd.Context(), "restore", args[0], args[1], reason)
			if err != nil {
				return err
			}
			writeDrill(cmd.OutOrStdout(), d)
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the drill log")
	return cmd
}

// drill cuts or restores the link x-y at x, or at y when x's admin API
// does not answer.
func (a *app) drill(ctx context.Context, action, x, y, reason string) (*adminv1.Drill, error) {
	if x == y {
		return nil, cli.Usagef("A and B are both %q; a link joins two regions", x)
	}
	for _, r := range []string{x, y} {
		if _, err := a.region(r); err != nil {
			return nil, err
		}
	}
	d, err := a.drillAt(ctx, x, action, x, y, reason)
	if err == nil || !notAnswering(err) || ctx.Err() != nil || a.answers(ctx, x) {
		return d, err
	}
	fmt.Fprintf(a.stderr, "roamctl: drill %s: %s's admin API does not answer (%s); asking %s\n", action, x, describe(err), y)
	return a.drillAt(ctx, y, action, x, y, reason)
}

func (a *app) drillAt(ctx context.Context, at, action, x, y, reason string) (*adminv1.Drill, error) {
	c, err := a.admin(at)
	if err != nil {
		return nil, err
	}
	cctx, cancel := a.callCtx(ctx)
	defer cancel()
	switch action {
	case "cut":
		resp, err := c.CutLink(cctx, &adminv1.CutLinkRequest{A: x, B: y, Reason: reason})
		if err != nil {
			return nil, regionErr{at, err}
		}
		return resp.GetDrill(), nil
	default:
		resp, err := c.RestoreLink(cctx, &adminv1.RestoreLinkRequest{A: x, B: y, Reason: reason})
		if err != nil {
			return nil, regionErr{at, err}
		}
		if !resp.GetLinkUp() {
			fmt.Fprintf(a.stderr, "roamctl: the cut of %s-%s is lifted at both ends, but %s has not seen the link up yet; `roamctl status --region %s` shows when it is\n", x, y, at, at)
		}
		return resp.GetDrill(), nil
	}
}

// writeDrill prints the drill a cut or restore made.
func writeDrill(w io.Writer, d *adminv1.Drill) {
	verb := map[string]string{"cut": "cut", "restore": "restored"}[d.GetAction()]
	if verb == "" {
		verb = d.GetAction()
	}
	line := fmt.Sprintf("%s link %s-%s", verb, d.GetA(), d.GetB())
	if d.GetAt() != nil {
		line += " at " + d.GetAt().AsTime().UTC().Format(timeFormat)
	}
	if d.GetRequestedAt() != "" {
		line += " (asked at " + d.GetRequestedAt() + ")"
	}
	if d.GetReason() != "" {
		line += ": " + d.GetReason()
	}
	fmt.Fprintln(w, line)
}

const timeFormat = "2006-01-02T15:04:05.000Z"

func (a *app) drillListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the drills every region has taken part in",
		Long: `list asks every region for the drills it has taken part in and prints them
by time. A drill shows once for each region that saw it. Regions that do not
answer are reported on stderr; the exit status is 1 only if none answered.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			results, err := eachRegion(cmd.Context(), a, func(ctx context.Context, c adminv1.AdminServiceClient) (*adminv1.ListDrillsResponse, error) {
				return c.ListDrills(ctx, &adminv1.ListDrillsRequest{})
			})
			if err != nil {
				return err
			}
			answered := 0
			for _, r := range results {
				if r.err != nil {
					fmt.Fprintf(a.stderr, "roamctl: drill list: %s: %s\n", r.region, unreachable(r.err))
				} else {
					answered++
				}
			}
			writeDrills(cmd.OutOrStdout(), results)
			if answered == 0 {
				return errChecksFailed
			}
			return nil
		},
	}
}

// writeDrills prints every region's drills by time.
func writeDrills(w io.Writer, results []regionResult[*adminv1.ListDrillsResponse]) {
	type seen struct {
		region string
		d      *adminv1.Drill
	}
	var all []seen
	for _, r := range results {
		if r.err != nil {
			continue
		}
		for _, d := range r.resp.GetDrills() {
			all = append(all, seen{r.region, d})
		}
	}
	if len(all) == 0 {
		fmt.Fprintln(w, "no drills")
		return
	}
	slices.SortStableFunc(all, func(x, y seen) int {
		return cmp.Or(x.d.GetAt().AsTime().Compare(y.d.GetAt().AsTime()), cmp.Compare(x.region, y.region))
	})
	tw := table(w)
	row(tw, "AT", "SEEN AT", "ACTION", "LINK", "ASKED AT", "REASON")
	for _, s := range all {
		at := "-"
		if s.d.GetAt() != nil {
			at = s.d.GetAt().AsTime().UTC().Format(timeFormat)
		}
		reason := oneLine(s.d.GetReason())
		if reason == "" {
			reason = "-"
		}
		asked := s.d.GetRequestedAt()
		if asked == "" {
			asked = "-"
		}
		row(tw, at, s.region, s.d.GetAction(), s.d.GetA()+"-"+s.d.GetB(), asked, reason)
	}
	tw.Flush()
}
