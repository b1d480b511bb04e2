package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/roamfed/roamfed/internal/cli"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // the command ran and failed
	exitUsage = 2 // the command line was wrong; nothing was attempted
)

// defaultServer is the region address used when neither the --server flag,
// the saved profile nor $ROAMCHAT_SERVER names one.
const defaultServer = "127.0.0.1:7100"

const defaultTimeout = 10 * time.Second

// app is what every command shares: the I/O streams, the global flags, and
// what was learned while running (the profile in use, for error hints).
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	loc            *time.Location // timestamps are printed in it

	server  string // --server, as given
	profile string
	timeout time.Duration
	tls     bool
	caFile  string

	serverSet bool     // --server was given explicitly
	prof      *profile // the loaded profile, once a command loaded it
}

func newApp(stdin io.Reader, stdout, stderr io.Writer) *app {
	return &app{stdin: stdin, stdout: stdout, stderr: stderr, loc: time.Local}
}

// run runs roamchat with args (without the program name) and returns the
// process exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return newApp(stdin, stdout, stderr).run(ctx, args)
}

func (a *app) run(ctx context.Context, args []string) int {
	root := a.rootCmd()
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	return a.report(cmd, err)
}

// rootCmd builds the command tree, writing to the app's streams.
func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "roamchat [flags] <command>",
		Short: "Client for a roamfed group chat federation",
		Long: `roamchat talks to one region of a roamfed federation as a user.

The region address comes from --server, else from the saved profile, else
from $ROAMCHAT_SERVER, else ` + defaultServer + `. Login saves the session
in a profile under $ROAMCHAT_CONFIG_DIR/profiles (by default the user config
directory's roamfed/profiles); --profile picks another one.`,
		Args:          cobra.ArbitraryArgs,
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			a.serverSet = cmd.Flags().Changed("server")
			return a.validateGlobals()
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cli.Usagef("missing command")
			}
			return cli.UnknownCommand(cmd, args[0])
		},
	}
	root.SetIn(a.stdin)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return cli.UsageError{Err: err} })

	f := root.PersistentFlags()
	f.StringVar(&a.server, "server", "", "region address `host:port` (default: profile's server, $ROAMCHAT_SERVER, or "+defaultServer+")")
	f.StringVar(&a.profile, "profile", "default", "saved session to use")
	f.DurationVar(&a.timeout, "timeout", defaultTimeout, "time limit for each call to the region (0: none)")
	f.BoolVar(&a.tls, "tls", false, "connect with TLS, verifying the region against the system roots")
	f.StringVar(&a.caFile, "ca", "", "verify the region against the CA certificates in `FILE` (implies --tls)")

	root.AddCommand(
		a.registerCmd(),
		a.loginCmd(),
		a.logoutCmd(),
		a.whoamiCmd(),
		a.groupCmd(),
		a.sendCmd(),
		a.historyCmd(),
		a.tailCmd(),
		a.chatCmd(),
	)
	return root
}

func (a *app) validateGlobals() error {
	if err := validProfileName(a.profile); err != nil {
		return cli.UsageError{Err: fmt.Errorf("--profile: %w", err)}
	}
	if a.timeout < 0 {
		return cli.Usagef("--timeout: must not be negative")
	}
	if a.serverSet && strings.TrimSpace(a.server) == "" {
		return cli.Usagef("--server: empty address")
	}
	if a.caFile != "" {
		a.tls = true
	}
	return nil
}

// report prints err for the command that failed and returns the exit code.
func (a *app) report(cmd *cobra.Command, err error) int {
	if ue, ok := errors.AsType[cli.UsageError](err); ok {
		path := "roamchat"
		if cmd != nil {
			path = cmd.CommandPath()
		}
		fmt.Fprintf(a.stderr, "roamchat: %v\nRun '%s --help' for usage.\n", ue.Err, path)
		return exitUsage
	}
	prefix := "roamchat: "
	if op := cli.OpName(cmd); op != "" {
		prefix += op + ": "
	}
	fmt.Fprintln(a.stderr, prefix+a.describe(err))
	return exitError
}
