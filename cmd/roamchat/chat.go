package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	"github.com/roamfed/roamfed/internal/cli"
)

// chatBacklog is how many earlier messages chat shows first.
const chatBacklog = 20

func (a *app) chatCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "chat GROUP",
		Short: "Talk in a group: print its messages as they come, send each line typed",
		Long: `Talk in a group. Prints the last 20 messages, then each new one as it comes,
like tail; each line read from standard input is sent. /quit or end of
input leaves. GROUP is a group id, or the name of one of your groups.`,
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
			f := a.newFollower(c, "chat")
			f.only = map[string]bool{group: true}
			f.start = func(ctx context.Context, ack func([]uint64) error) error {
				return f.startBack(ctx, group, chatBacklog, ack)
			}
			// Ends the line reader's sends when chat returns.
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			f.lines = readLines(ctx, a.stdin)
			f.onLine = func(ctx context.Context, line string) error { return f.say(ctx, group, line) }
			return f.run(ctx)
		},
	}
}

// startBack follows group from n messages before its latest, and prints
// those.
func (f *follower) startBack(ctx context.Context, group string, n uint64, ack func([]uint64) error) error {
	cctx, cancel := f.a.callCtx(ctx)
	defer cancel()
	g, err := f.c.api.GetGroup(cctx, &clientv1.GetGroupRequest{GroupId: group})
	if err != nil {
		return err
	}
	f.labels[group] = g.GetGroup().GetName()
	h, err := f.c.api.GetHistory(cctx, &clientv1.GetHistoryRequest{GroupId: group, Limit: 1})
	if err != nil {
		return err
	}
	from := uint64(0)
	if h.GetLastSeq() > n {
		from = h.GetLastSeq() - n
	}
	f.box.Follow(group, from)
	fmt.Fprintf(f.a.stderr, "* chatting in %s (%s); /quit to leave\n", clean(g.GetGroup().GetName()), group)
	return f.fill(ctx, group, ack)
}

// say sends one line the user typed. The message is printed when it comes
// back, by delivery or, failing that, from the history.
func (f *follower) say(ctx context.Context, group, line string) error {
	line = strings.TrimRight(line, "\r\n")
	switch strings.TrimSpace(line) {
	case "":
		return nil
	case "/quit":
		return errQuit
	}
	resp, err := f.a.send(ctx, f.c, group, line, newClientMsgID())
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// One failed line does not end the chat.
		fmt.Fprintf(f.a.stderr, "roamchat: chat: send: %s\n", f.a.describe(err))
		return nil
	}
	switch resp.GetState() {
	case clientv1.DeliveryState_DELIVERY_STATE_COMMITTED:
		f.expect[group] = max(f.expect[group], resp.GetSeq())
	default:
		fmt.Fprintf(f.a.stdout, "* %s\n", sendResult(resp))
	}
	return nil
}

// readLines reads r line by line into the returned channel, closed at the
// end of input or when ctx is done. The reading goroutine cannot be
// interrupted while it waits for input: it ends at the next line, at the
// end of input, or with the process.
func readLines(ctx context.Context, r io.Reader) <-chan string {
	lines := make(chan string)
	go func() {
		defer close(lines)
		br := bufio.NewReader(r)
		for {
			line, err := br.ReadString('\n')
			if line != "" {
				select {
				case lines <- line:
				case <-ctx.Done():
					return
				}
			}
			if err != nil {
				return // a read error ends the input as EOF does
			}
		}
	}()
	return lines
}
