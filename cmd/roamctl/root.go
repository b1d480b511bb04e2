package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/roamfed/roamfed/internal/cli"

	"github.com/roamfed/roamfed/regions"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // the command failed, or a check it ran found problems
	exitUsage = 2 // the command line was wrong; nothing was attempted
)

const defaultTimeout = 10 * time.Second

// Where roamctl looks when --federation and --token-file are not given,
// relative to the working directory.
const (
	defaultFederationFile = "regions/dev.yaml"
	defaultTokenFile      = "data/dev/admin.token"
	tokenEnv              = "ROAMFED_ADMIN_TOKEN"
)

// app is what every command shares: the output streams, the global flags
// and what was loaded from them.
type app struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	dir            string // the working directory default files are found in
	now            func() time.Time

	fedPath   string
	token     string
	tokenFile string
	timeout   time.Duration
	tls       bool
	caFile    string

	fed    *regions.Federation
	admins *adminPool
}

func newApp(stdout, stderr io.Writer) *app {
	return &app{stdout: stdout, stderr: stderr, getenv: os.Getenv, dir: ".", now: time.Now}
}

// run runs roamctl with args (without the program name) and returns the
// process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return newApp(stdout, stderr).run(ctx, args)
}

func (a *app) run(ctx context.Context, args []string) int {
	root := a.rootCmd()
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if a.admins != nil {
		a.admins.Close()
	}
	if err == nil {
		return exitOK
	}
	return a.report(cmd, err)
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "roamctl [flags] <command>",
		Short: "Operator CLI for a roamfed federation",
		Long: `roamctl talks to the regions of a roamfed federation through their admin
API: it shows their status and links, cuts and restores links, and runs
drills under load whose message history it checks.

The regions and their admin addresses come from --federation, else from
` + defaultFederationFile + ` in the working directory, else from the built-in dev
federation (the one 'regiond dev' runs). The admin token comes from --token,
else --token-file, else $` + tokenEnv + `, else ` + defaultTokenFile + ` (which
'regiond dev' writes).`,
		Args:          cobra.ArbitraryArgs,
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return a.validateGlobals(cmd)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cli.Usagef("missing command")
			}
			return cli.UnknownCommand(cmd, args[0])
		},
	}
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return cli.UsageError{Err: err} })

	f := root.PersistentFlags()
	f.StringVar(&a.fedPath, "federation", "", "federation `FILE` (default: "+defaultFederationFile+" if present, else the built-in dev federation)")
	f.StringVar(&a.token, "token", "", "admin token (default: --token-file, $"+tokenEnv+", or "+defaultTokenFile+")")
	f.StringVar(&a.tokenFile, "token-file", "", "read the admin token from `FILE`")
	f.DurationVar(&a.timeout, "timeout", defaultTimeout, "time limit for each call to a region")
	f.BoolVar(&a.tls, "tls", false, "connect with TLS, verifying regions against the system roots")
	f.StringVar(&a.caFile, "ca", "", "verify regions against the CA certificates in `FILE` (implies --tls)")

	root.AddCommand(
		a.statusCmd(),
		a.meshCmd(),
		a.drillCmd(),
		a.resyncCmd(),
		a.certsCmd(),
	)
	for _, c := range root.Commands() {
		setArgsUsage(c)
	}
	return root
}

// setArgsUsage makes a subcommand without its own Args check refuse
// arguments, and turns cobra's flag errors into usage errors, through the
// whole tree.
func setArgsUsage(c *cobra.Command) {
	if c.Args == nil {
		c.Args = cli.Args()
	}
	for _, sub := range c.Commands() {
		setArgsUsage(sub)
	}
}

func (a *app) validateGlobals(cmd *cobra.Command) error {
	if a.timeout <= 0 {
		return cli.Usagef("--timeout: must be positive")
	}
	if cmd.Flags().Changed("token") && strings.TrimSpace(a.token) == "" {
		return cli.Usagef("--token: empty")
	}
	if a.token != "" && a.tokenFile != "" {
		return cli.Usagef("--token and --token-file: give one")
	}
	if a.caFile != "" {
		a.tls = true
	}
	return nil
}

// report prints err for the command that failed and returns the exit code.
func (a *app) report(cmd *cobra.Command, err error) int {
	if ue, ok := errors.AsType[cli.UsageError](err); ok {
		path := "roamctl"
		if cmd != nil {
			path = cmd.CommandPath()
		}
		fmt.Fprintf(a.stderr, "roamctl: %v\nRun '%s --help' for usage.\n", ue.Err, path)
		return exitUsage
	}
	if errors.Is(err, errChecksFailed) {
		return exitError // the report said why
	}
	prefix := "roamctl: "
	if op := cli.OpName(cmd); op != "" {
		prefix += op + ": "
	}
	fmt.Fprintln(a.stderr, prefix+describe(err))
	return exitError
}

// errChecksFailed ends a command whose output already says what failed.
var errChecksFailed = errors.New("checks failed")

// groupCmd is a command that only holds subcommands.
func groupCmd(use, short string, subs ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cli.Usagef("missing subcommand")
			}
			return cli.UnknownCommand(cmd, args[0])
		},
	}
	c.AddCommand(subs...)
	return c
}
