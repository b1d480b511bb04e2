package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	"github.com/roamfed/roamfed/internal/cli"
)

func (a *app) tailCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "tail [GROUP...]",
		Short: "Print new messages and presence changes as they come",
		Long: `Print the new messages of the given groups (of all your groups when none is
given) as "[group #seq] sender: body", and presence changes, until
interrupted. Each message is printed once and in order; one the region
could not push is fetched from the group's history. When the stream breaks,
tail reconnects and fills the gap. GROUP is a group id, or the name of one
of your groups.`,
		Args: cli.Args("[GROUP...]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			f := a.newFollower(c, "tail")
			if len(args) > 0 {
				f.only = make(map[string]bool)
				for _, arg := range args {
					g, err := a.resolveGroup(ctx, c, arg)
					if err != nil {
						return err
					}
					f.only[g] = true
				}
			}
			f.start = f.startAtEnd
			return f.run(ctx)
		},
	}
}

// startAtEnd follows each group from its latest message on.
func (f *follower) startAtEnd(ctx context.Context, _ func([]uint64) error) error {
	cctx, cancel := f.a.callCtx(ctx)
	defer cancel()
	resp, err := f.c.api.ListGroups(cctx, &clientv1.ListGroupsRequest{})
	if err != nil {
		return err
	}
	for _, g := range resp.GetGroups() {
		f.labels[g.GetId()] = g.GetName()
		if f.wants(g.GetId()) {
			f.box.Follow(g.GetId(), g.GetLastSeq())
		}
	}
	for g := range f.only {
		if !f.box.Follows(g) {
			return fmt.Errorf("%s is not one of your groups", g)
		}
	}
	return nil
}
