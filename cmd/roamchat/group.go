package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	"github.com/roamfed/roamfed/internal/cli"
)

func (a *app) groupCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "group <command>",
		Short: "Create, show, change, join, leave and list groups",
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cli.Usagef("missing group command")
			}
			return cli.UnknownCommand(cmd, args[0])
		},
	}
	cmd.AddCommand(
		a.groupCreateCmd(),
		a.groupShowCmd(),
		a.groupUpdateCmd(),
		a.groupJoinCmd(),
		a.groupLeaveCmd(),
		a.groupListCmd(),
	)
	return cmd
}

func (a *app) groupCreateCmd() *cobra.Command {
	var notice string
	var sets []string
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a group homed in the region; prints its id first",
		Long: `Create a group homed in the region, with you as owner and first member.
The new group's id is printed alone on the first line, so that a script can
take it:

  gid=$(roamchat group create lobby | head -1)`,
		Args: cli.Args("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			settings, err := parseSettings(sets)
			if err != nil {
				return err
			}
			return a.call(cmd.Context(), func(ctx context.Context, c *conn) error {
				resp, err := c.api.CreateGroup(ctx, &clientv1.CreateGroupRequest{Name: args[0], Notice: notice, Settings: settings})
				if err != nil {
					return err
				}
				// One write: `| head -1` may close the pipe once it has the id,
				// and a later write would die of SIGPIPE.
				var b bytes.Buffer
				fmt.Fprintln(&b, resp.GetGroup().GetId())
				printGroup(&b, resp.GetGroup(), a.loc, false)
				_, err = a.stdout.Write(b.Bytes())
				return err
			})
		},
	}
	cmd.Flags().StringVar(&notice, "notice", "", "the group's notice")
	cmd.Flags().StringArrayVar(&sets, "set", nil, "a setting `key=value` (repeatable)")
	return cmd
}

func (a *app) groupShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show a group's data (members only)",
		Args:  cli.Args("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd.Context(), func(ctx context.Context, c *conn) error {
				resp, err := c.api.GetGroup(ctx, &clientv1.GetGroupRequest{GroupId: args[0]})
				if err != nil {
					return err
				}
				printGroup(a.stdout, resp.GetGroup(), a.loc, true)
				return nil
			})
		},
	}
}

func (a *app) groupUpdateCmd() *cobra.Command {
	var name, notice string
	var sets []string
	var ifVersion uint64
	cmd := &cobra.Command{
		Use:   "update ID",
		Short: "Change a group's name, notice or settings (members only)",
		Long: `Change a group's name, notice or settings (members only). Settings are
merged into the group's; --set key= (empty value) removes a key. With
--if-version, the update is refused unless the group is still at that
version.`,
		Args: cli.Args("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &clientv1.UpdateGroupRequest{GroupId: args[0], ExpectedVersion: ifVersion}
			if cmd.Flags().Changed("name") {
				req.Name = &name
			}
			if cmd.Flags().Changed("notice") {
				req.Notice = &notice
			}
			var err error
			if req.Settings, err = parseSettings(sets); err != nil {
				return err
			}
			if req.Name == nil && req.Notice == nil && len(req.Settings) == 0 {
				return cli.Usagef("nothing to update: give --name, --notice or --set")
			}
			return a.call(cmd.Context(), func(ctx context.Context, c *conn) error {
				resp, err := c.api.UpdateGroup(ctx, req)
				if err != nil {
					return err
				}
				printGroup(a.stdout, resp.GetGroup(), a.loc, true)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "the new name")
	cmd.Flags().StringVar(&notice, "notice", "", "the new notice")
	cmd.Flags().StringArrayVar(&sets, "set", nil, "set `key=value`; key= removes the key (repeatable)")
	cmd.Flags().Uint64Var(&ifVersion, "if-version", 0, "refuse unless the group is at this `version`")
	return cmd
}

func (a *app) groupJoinCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "join ID",
		Short: "Join a group",
		Args:  cli.Args("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd.Context(), func(ctx context.Context, c *conn) error {
				resp, err := c.api.JoinGroup(ctx, &clientv1.JoinGroupRequest{GroupId: args[0]})
				if err != nil {
					return err
				}
				g := resp.GetGroup()
				fmt.Fprintf(a.stdout, "joined %s (%s, home region %s, %d members)\n", clean(g.GetName()), g.GetId(), clean(g.GetHomeRegion()), len(g.GetMembers()))
				return nil
			})
		},
	}
}

func (a *app) groupLeaveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "leave ID",
		Short: "Leave a group",
		Args:  cli.Args("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd.Context(), func(ctx context.Context, c *conn) error {
				if _, err := c.api.LeaveGroup(ctx, &clientv1.LeaveGroupRequest{GroupId: args[0]}); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "left %s\n", args[0])
				return nil
			})
		},
	}
}

func (a *app) groupListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List your groups",
		Args:  cli.Args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.call(cmd.Context(), func(ctx context.Context, c *conn) error {
				resp, err := c.api.ListGroups(ctx, &clientv1.ListGroupsRequest{})
				if err != nil {
					return err
				}
				printGroupTable(a.stdout, resp.GetGroups())
				return nil
			})
		},
	}
}

// parseSettings parses repeated --set key=value flags. An empty value is
// kept: for update it removes the key.
func parseSettings(sets []string) (map[string]string, error) {
	if len(sets) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(sets))
	for _, s := range sets {
		k, v, ok := strings.Cut(s, "=")
		if !ok {
			return nil, cli.Usagef("--set %q: want key=value", s)
		}
		if k == "" {
			return nil, cli.Usagef("--set %q: empty key", s)
		}
		m[k] = v
	}
	return m, nil
}
