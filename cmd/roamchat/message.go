package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/roamfed/roamfed/internal/cli"
	"github.com/roamfed/roamfed/internal/ids"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
)

// sendAttempts bounds how often one send is tried.
const sendAttempts = 3

func (a *app) sendCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "send GROUP TEXT...",
		Short: "Send a message to a group",
		Long: `Send a message to a group; the words of TEXT are joined with spaces. GROUP
is a group id, or the name of one of your groups.

Prints "committed seq=N id=ID" once the group's home region stored it, or
"accepted id=ID (...)" when the home region is out of reach and the message
waits, stored, in this region's outbox.`,
		Args: cli.Args("GROUP", "TEXT..."),
		RunE: func(cmd *cobra.Command, args []string) error {
			text := strings.Join(args[1:], " ")
			if strings.TrimSpace(text) == "" {
				return cli.Usagef("empty message")
			}
			ctx := cmd.Context()
			c, err := a.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			group, err := a.resolveGroup(ctx, c, args[0])
			if err != nil {
				return err
			}
			resp, err := a.send(ctx, c, group, text, newClientMsgID())
			if err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, sendResult(resp))
			return nil
		},
	}
}

// newClientMsgID is the idempotency key of one send: 128 random bits.
func newClientMsgID() string { return rand.Text() }

// send sends one message. A retry reuses clientMsgID, so a message whose
// first attempt was stored but whose answer was lost is not stored twice.
func (a *app) send(ctx context.Context, c *conn, group, text, clientMsgID string) (*clientv1.SendMessageResponse, error) {
	req := &clientv1.SendMessageRequest{GroupId: group, ClientMsgId: clientMsgID, Body: text}
	b := backoff{min: 300 * time.Millisecond, max: 2 * time.Second}
	for attempt := 1; ; attempt++ {
		cctx, cancel := a.callCtx(ctx)
		resp, err := c.api.SendMessage(cctx, req)
		cancel()
		if err == nil || attempt == sendAttempts || ctx.Err() != nil || !retryableSend(err) {
			return resp, err
		}
		fmt.Fprintf(a.stderr, "roamchat: send: %s; trying again\n", describeStatus(status.Convert(err)))
		if !sleep(ctx, b.wait()) {
			return nil, err
		}
	}
}

// retryableSend reports whether a send that failed with err may be tried
// again: the region was unreachable, or the answer did not come in time.
func retryableSend(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted:
		return true
	}
	return false
}

func sendResult(r *clientv1.SendMessageResponse) string {
	switch r.GetState() {
	case clientv1.DeliveryState_DELIVERY_STATE_COMMITTED:
		return fmt.Sprintf("committed seq=%d id=%s", r.GetSeq(), r.GetMessageId())
	case clientv1.DeliveryState_DELIVERY_STATE_ACCEPTED:
		return fmt.Sprintf("accepted id=%s (will commit when the home region is reachable)", r.GetMessageId())
	}
	return fmt.Sprintf("sent id=%s (state %s)", r.GetMessageId(), r.GetState())
}

func (a *app) historyCmd() *cobra.Command {
	var after uint64
	var limit uint32
	var all bool
	cmd := &cobra.Command{
		Use:   "history GROUP",
		Short: "Print a group's messages",
		Long: `Print a group's messages after sequence number --after, at most --limit of
them (the region's default page when 0), or with --all every one up to the
latest. GROUP is a group id, or the name of one of your groups.`,
		Args: cli.Args("GROUP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			group, err := a.resolveGroup(ctx, c, args[0])
			if err != nil {
				return err
			}
			r, err := a.history(ctx, c, group, after, limit, all, func(m *clientv1.Message) {
				fmt.Fprintln(a.stdout, formatHistory(m, a.loc))
			})
			if err != nil {
				return err
			}
			if r.more {
				fmt.Fprintf(a.stderr, "(more after #%d: --after %d, or --all)\n", r.last, r.last)
			}
			return nil
		},
	}
	cmd.Flags().Uint64Var(&after, "after", 0, "only messages after this sequence `number`")
	cmd.Flags().Uint32Var(&limit, "limit", 0, "at most this many messages (page size with --all; 0: the region's default)")
	cmd.Flags().BoolVar(&all, "all", false, "page through to the latest message")
	return cmd
}

// historyRead says how far a history read got.
type historyRead struct {
	last    uint64 // the last sequence number read; the start when none
	logLast uint64 // the group's latest sequence number, as the region last said
	more    bool   // more messages follow last
}

// history reads a group's messages after seq after, one page of limit, or
// with all every page until the region says there are no more. It hands
// each message to fn in order.
func (a *app) history(ctx context.Context, c *conn, group string, after uint64, limit uint32, all bool, fn func(*clientv1.Message)) (historyRead, error) {
	r := historyRead{last: after}
	for {
		cctx, cancel := a.callCtx(ctx)
		resp, err := c.api.GetHistory(cctx, &clientv1.GetHistoryRequest{GroupId: group, AfterSeq: r.last, Limit: limit})
		cancel()
		if err != nil {
			return r, err
		}
		from := r.last
		for _, m := range resp.GetMessages() {
			if m.GetSeq() <= r.last {
				continue // not after what was asked for: seen already
			}
			r.last = m.GetSeq()
			fn(m)
		}
		r.logLast, r.more = resp.GetLastSeq(), resp.GetHasMore()
		if !r.more || !all {
			return r, nil
		}
		if r.last == from {
			return r, errors.New("the region says more messages follow but sent none")
		}
	}
}

// resolveGroup takes a GROUP argument: a group id, or else the name of
// exactly one of the user's groups.
func (a *app) resolveGroup(ctx context.Context, c *conn, arg string) (string, error) {
	if ids.Valid(ids.Group, arg) {
		return arg, nil
	}
	cctx, cancel := a.callCtx(ctx)
	defer cancel()
	resp, err := c.api.ListGroups(cctx, &clientv1.ListGroupsRequest{})
	if err != nil {
		return "", err
	}
	var found []string
	for _, g := range resp.GetGroups() {
		if g.GetName() == arg {
			found = append(found, g.GetId())
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("%q is neither a group id nor the name of one of your groups", arg)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("%d of your groups are named %q; give the id: %s", len(found), arg, strings.Join(found, ", "))
}
