package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/roamfed/roamfed/internal/admintoken"
	"github.com/roamfed/roamfed/internal/certs"
	"github.com/roamfed/roamfed/internal/stack"
	"github.com/roamfed/roamfed/regions"
)

func newDevCmd() *cobra.Command {
	var data, logLevel, logFormat string
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run the three-region dev federation (ap, eu, us) of regions/dev.yaml in one process",
		Long: `dev starts ap, eu and us from regions/dev.yaml on loopback, each with its own
data directory under --data and its own embedded NATS, federated over gRPC
exactly as separate processes would be. Ctrl-C stops them all.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(os.Stderr, logLevel, logFormat)
			if err != nil {
				return fmt.Errorf("--log-level, --log-format: %w", err)
			}
			return runDev(cmd.Context(), data, log, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&data, "data", filepath.Join("data", "dev"), "parent of the regions' data directories")
	cmd.Flags().StringVar(&logLevel, "log-level", "warn", "debug, info, warn or error")
	cmd.Flags().StringVar(&logFormat, "log-format", "text", "text or json")
	return cmd
}

func runDev(ctx context.Context, data string, log *slog.Logger, out io.Writer) error {
	fed, err := regions.DevFederation()
	if err != nil {
		return err
	}
	tokenFile := filepath.Join(data, "admin.token")
	token, err := admintoken.Load(tokenFile)
	if err != nil {
		return fmt.Errorf("admin token: %w", err)
	}
	// Dev is mutual TLS too, with a CA of its own kept beside the data.
	set, err := certs.EnsureDev(filepath.Join(data, "certs"), fed)
	if err != nil {
		return fmt.Errorf("dev certificates: %w", err)
	}
	var started []*stack.Stack
	stopAll := func() error {
		sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		var errs []error
		for i := len(started) - 1; i >= 0; i-- {
			errs = append(errs, started[i].Shutdown(sctx))
		}
		return errors.Join(errs...)
	}
	for _, r := range fed.Regions {
		self, err := fed.WithSelf(r.Name)
		if err != nil {
			return errors.Join(err, stopAll())
		}
		st, err := stack.Start(stack.Config{
			Region:      r.Name,
			DataDir:     filepath.Join(data, r.Name),
			ClientAddr:  r.ClientAddr,
			AdminAddr:   r.AdminAddr,
			AdminToken:  token,
			TLS:         set.For(r.Name),
			MetricsAddr: r.MetricsAddr,
			Federation:  self,
			Logger:      log,
		})
		if err != nil {
			return errors.Join(fmt.Errorf("start region %s: %w", r.Name, err), stopAll())
		}
		started = append(started, st)
	}
	fmt.Fprintf(out, "roamfed dev federation is up (data in %s, admin token in %s):\n", data, tokenFile)
	for _, st := range started {
		fmt.Fprintf(out, "  %-3s clients %-16s roaming %-16s admin %-16s status http://%s/\n",
			st.Region(), st.ClientAddr(), st.RoamingAddr(), st.AdminAddr(), st.MetricsAddr())
	}
	fmt.Fprintf(out, `
Try it across regions, in another terminal:
  go run ./cmd/roamchat --server %[1]s --profile alice register alice --password alice-secret
  go run ./cmd/roamchat --server %[1]s --profile alice login alice --password alice-secret
  go run ./cmd/roamchat --profile alice group create lobby        # homed in ap; prints the group id
  go run ./cmd/roamchat --server %[2]s --profile bob register bob --password bob-secret
  go run ./cmd/roamchat --server %[2]s --profile bob login bob --password bob-secret
  go run ./cmd/roamchat --profile bob group join GROUP_ID         # bob is in eu
  go run ./cmd/roamchat --profile bob chat GROUP_ID
  go run ./cmd/roamchat --profile alice chat GROUP_ID

Press Ctrl-C to stop all three regions.
`, started[0].ClientAddr(), started[1].ClientAddr())
	<-ctx.Done()
	fmt.Fprintln(out, "stopping...")
	start := time.Now()
	err = stopAll()
	fmt.Fprintf(out, "stopped in %s\n", time.Since(start).Round(time.Millisecond))
	return err
}
