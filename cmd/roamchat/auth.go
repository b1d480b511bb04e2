package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	"github.com/roamfed/roamfed/internal/cli"
)

// errSessionExpired reports that the saved session token has expired.
var errSessionExpired = errors.New("session expired")

func (a *app) registerCmd() *cobra.Command {
	var password, displayName string
	cmd := &cobra.Command{
		Use:   "register USER",
		Short: "Create an account homed in the region",
		Long: `Create an account homed in the region. Without --password, the password is
read from the terminal (not echoed), or as one line from standard input.`,
		Args: cli.Args("USER"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if !cmd.Flags().Changed("password") {
				var err error
				if password, err = a.readPassword(ctx, true); err != nil {
					return err
				}
			}
			c, err := a.connectAnon()
			if err != nil {
				return err
			}
			defer c.Close()
			cctx, cancel := a.callCtx(ctx)
			defer cancel()
			resp, err := c.api.Register(cctx, &clientv1.RegisterRequest{
				Username:    args[0],
				Password:    password,
				DisplayName: displayName,
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "registered %s (user id %s, home region %s)\n", args[0], resp.GetUserId(), resp.GetHomeRegion())
			return nil
		},
	}
	cmd.Flags().StringVar(&password, "password", "", "the password (visible to other users of this machine; prefer the prompt)")
	cmd.Flags().StringVar(&displayName, "display-name", "", "name shown to others")
	return cmd
}

func (a *app) loginCmd() *cobra.Command {
	var password string
	cmd := &cobra.Command{
		Use:   "login USER",
		Short: "Log in and save the session in the profile",
		Long: `Log in and save the session (server, token, user) in the profile. Without
--password, the password is read from the terminal (not echoed), or as one
line from standard input.`,
		Args: cli.Args("USER"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if !cmd.Flags().Changed("password") {
				var err error
				if password, err = a.readPassword(ctx, false); err != nil {
					return err
				}
			}
			store, err := defaultProfileStore()
			if err != nil {
				return err
			}
			c, err := a.connectAnon()
			if err != nil {
				return err
			}
			defer c.Close()
			cctx, cancel := a.callCtx(ctx)
			defer cancel()
			resp, err := c.api.Login(cctx, &clientv1.LoginRequest{Username: args[0], Password: password})
			if err != nil {
				return err
			}
			p := &profile{
				Server:     c.server,
				Token:      resp.GetToken(),
				UserID:     resp.GetUserId(),
				Username:   args[0],
				HomeRegion: resp.GetHomeRegion(),
			}
			if resp.GetExpiresAt() != nil {
				p.ExpiresAt = resp.GetExpiresAt().AsTime()
			}
			if err := store.save(a.profile, p); err != nil {
				return err
			}
			a.prof = p
			where := "region " + resp.GetRegion()
			if resp.GetRegion() != "" && resp.GetHomeRegion() != "" && resp.GetRegion() != resp.GetHomeRegion() {
				where += ", roaming from home " + resp.GetHomeRegion()
			}
			fmt.Fprintf(a.stdout, "logged in as %s (%s) at %s\n", args[0], resp.GetUserId(), where)
			if !p.ExpiresAt.IsZero() {
				fmt.Fprintf(a.stdout, "session expires %s\n", p.ExpiresAt.In(a.loc).Format(timeLayout))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&password, "password", "", "the password (visible to other users of this machine; prefer the prompt)")
	return cmd
}

func (a *app) logoutCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "logout",
		Short: "End the session and forget its token",
		Args:  cli.Args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.call(cmd.Context(), func(ctx context.Context, c *conn) error {
				_, callErr := c.api.Logout(ctx, &clientv1.LogoutRequest{})
				// The token goes whatever the region said: the user asked to be
				// logged out here, and a token the region no longer knows
				// (UNAUTHENTICATED) is as good as revoked.
				store, err := defaultProfileStore()
				if err != nil {
					return err
				}
				p := *c.prof
				p.Token, p.ExpiresAt = "", time.Time{}
				if err := store.save(a.profile, &p); err != nil {
					return err
				}
				if callErr != nil && status.Code(callErr) != codes.Unauthenticated {
					return fmt.Errorf("token removed here, but the region may still accept it: %s", describeStatus(status.Convert(callErr)))
				}
				fmt.Fprintf(a.stdout, "logged out %s\n", c.prof.Username)
				return nil
			})
		},
	}
}

func (a *app) whoamiCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Show the user of the saved session",
		Args:  cli.Args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, p, err := a.loadProfile()
			if err != nil {
				return err
			}
			if p == nil || p.Token == "" {
				return fmt.Errorf("%w with profile %q", errNotLoggedIn, a.profile)
			}
			if !p.ExpiresAt.IsZero() && !p.ExpiresAt.After(time.Now()) {
				return fmt.Errorf("%w at %s", errSessionExpired, p.ExpiresAt.In(a.loc).Format(timeLayout))
			}
			writeFields(a.stdout,
				"user", p.Username,
				"user id", p.UserID,
				"home region", p.HomeRegion,
				"server", a.serverFor(p),
				"profile", a.profile,
				"expires", formatTime(p.ExpiresAt, a.loc),
			)
			return nil
		},
	}
}

// readPassword reads the password from the terminal without echo, or else
// one line from stdin. With confirm, a terminal user types it twice.
func (a *app) readPassword(ctx context.Context, confirm bool) (string, error) {
	if f, ok := a.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		pw, err := a.promptPassword(ctx, f, "Password: ")
		if err != nil {
			return "", err
		}
		if confirm {
			again, err := a.promptPassword(ctx, f, "Password again: ")
			if err != nil {
				return "", err
			}
			if again != pw {
				return "", errors.New("the passwords do not match")
			}
		}
		return pw, nil
	}
	line, err := bufio.NewReader(a.stdin).ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		if errors.Is(err, io.EOF) {
			return "", cli.Usagef("no password: give --password, or one line on standard input")
		}
		return "", fmt.Errorf("read password: %w", err)
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		return "", cli.Usagef("empty password on standard input")
	}
	return pw, nil
}

// promptPassword reads a password from the terminal f. Ctrl-C arrives as
// a cancelled ctx (main traps SIGINT), so the read runs aside and the
// terminal's echo is put back before giving up on it.
func (a *app) promptPassword(ctx context.Context, f *os.File, prompt string) (string, error) {
	fd := int(f.Fd())
	state, err := term.GetState(fd)
	if err != nil {
		return "", fmt.Errorf("terminal: %w", err)
	}
	fmt.Fprint(a.stderr, prompt)
	type result struct {
		pw  []byte
		err error
	}
	// The reader goroutine is left blocked if ctx ends first; the process
	// is about to exit then.
	done := make(chan result, 1)
	go func() {
		pw, err := term.ReadPassword(fd)
		done <- result{pw, err}
	}()
	select {
	case r := <-done:
		fmt.Fprintln(a.stderr)
		if r.err != nil {
			return "", fmt.Errorf("read password: %w", r.err)
		}
		return string(r.pw), nil
	case <-ctx.Done():
		term.Restore(fd, state)
		fmt.Fprintln(a.stderr)
		return "", ctx.Err()
	}
}
