// Command regiond runs one roamfed region: its service center, and (as the
// federation grows) its roaming system.
//
//	regiond                         region "local", data in ./data/local, clients on 127.0.0.1:7100
//	regiond --region eu --data /var/lib/roamfed --client-addr :7100
//	regiond --config region.yaml    file values, overridden by any flag given
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/roamfed/roamfed/internal/admintoken"
	"github.com/roamfed/roamfed/internal/certs"
	"github.com/roamfed/roamfed/internal/stack"
	"github.com/roamfed/roamfed/regions"
)

func main() {
	stack.RaiseProcs()
	stack.TuneGC(stack.DefaultHeapFloor)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "regiond:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	var flags config
	var configFile string
	cmd := &cobra.Command{
		Use:           "regiond",
		Short:         "Run one roamfed region",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(configFile, flags, cmd.Flags().Changed)
			if err != nil {
				return err
			}
			return run(cmd.Context(), cfg)
		},
	}
	def := defaultConfig()
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "YAML file of settings; flags given override it")
	f.StringVar(&flags.Region, "region", def.Region, "this region's name")
	f.StringVar(&flags.Data, "data", "", "data directory (default ./data/<region>)")
	f.StringVar(&flags.ClientAddr, "client-addr", "", "address the client gRPC service listens on (default "+defaultClientAddr+", or the federation file's)")
	f.StringVar(&flags.NATSURL, "nats-url", "", "external NATS server or cluster; empty embeds one in the process")
	f.StringVar(&flags.Federation, "federation", "", "federation file (regions/*.yaml) naming every region; empty runs this region alone")
	f.StringVar(&flags.Certs, "certs", "", "directory with ca.pem, <region>.pem and <region>-key.pem (roamctl certs init); required with --federation")
	f.StringVar(&flags.ClientTLSCert, "client-tls-cert", "", "PEM certificate for serving clients over TLS (with --client-tls-key)")
	f.StringVar(&flags.ClientTLSKey, "client-tls-key", "", "PEM key for --client-tls-cert")
	f.StringVar(&flags.AdminAddr, "admin-addr", "", "address of the operator API (default "+defaultAdminAddr+", or the federation file's; keep it on loopback or a private network)")
	f.StringVar(&flags.AdminToken, "admin-token", "", "bearer token the operator API requires (default: read from --admin-token-file)")
	f.StringVar(&flags.AdminTokenFile, "admin-token-file", "", "file holding the admin token, created with a random one if missing (default <data>/admin.token)")
	f.StringVar(&flags.RoamingAddr, "roaming-addr", "", "address the roaming system listens on (default: this region's roaming_addr in the federation file, which peers dial; set it to listen on another address, such as 0.0.0.0:7200 in a container)")
	f.StringVar(&flags.MetricsAddr, "metrics-addr", "", "address of /metrics, /healthz, /readyz, pprof and the status page (default "+defaultMetricsAddr+", or the federation file's; keep it on loopback or a private network)")
	f.StringVar(&flags.LogLevel, "log-level", def.LogLevel, "debug, info, warn or error")
	f.StringVar(&flags.LogFormat, "log-format", def.LogFormat, "text or json")
	f.DurationVar(&flags.ShutdownTimeout, "shutdown-timeout", def.ShutdownTimeout, "how long calls in flight get to finish on SIGTERM")
	cmd.AddCommand(newDevCmd())
	return cmd
}

func run(ctx context.Context, cfg config) error {
	log, err := newLogger(os.Stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return err
	}
	sc := stack.Config{
		Region:     cfg.Region,
		DataDir:    cfg.Data,
		ClientAddr: cfg.ClientAddr,
		NATSURL:    cfg.NATSURL,
		Limits:     cfg.Limits,
		Logger:     log,
		// Only a federated region uses them.
		RoamingLimits: cfg.RoamingLimits,
	}
	if cfg.ClientTLSCert != "" {
		kp, err := tls.LoadX509KeyPair(cfg.ClientTLSCert, cfg.ClientTLSKey)
		if err != nil {
			return fmt.Errorf("client TLS: %w", err)
		}
		sc.ClientTLS = &tls.Config{Certificates: []tls.Certificate{kp}, MinVersion: tls.VersionTLS12}
	}
	if cfg.Federation != "" {
		fed, err := regions.Load(cfg.Federation)
		if err != nil {
			return err
		}
		if fed, err = fed.WithSelf(cfg.Region); err != nil {
			return err
		}
		sc.Federation = fed
		if sc.TLS, err = certs.Load(cfg.Certs, cfg.Region); err != nil {
			return err
		}
		log.Info("region certificate loaded", slog.String("dir", cfg.Certs), slog.Time("not_after", sc.TLS.NotAfter()))
		self, _ := fed.Region(cfg.Region)
		if sc.ClientAddr == "" {
			sc.ClientAddr = self.ClientAddr
		}
		if cfg.AdminAddr == "" {
			cfg.AdminAddr = self.AdminAddr
		}
		if cfg.MetricsAddr == "" {
			cfg.MetricsAddr = self.MetricsAddr
		}
	}
	sc.MetricsAddr, sc.RoamingAddr = cfg.MetricsAddr, cfg.RoamingAddr
	if cfg.AdminAddr != "" {
		sc.AdminAddr, sc.AdminToken = cfg.AdminAddr, cfg.AdminToken
		if sc.AdminToken == "" {
			tok, err := admintoken.Load(cfg.AdminTokenFile)
			if err != nil {
				return fmt.Errorf("admin token: %w", err)
			}
			sc.AdminToken = tok
		}
	}
	st, err := stack.Start(sc)
	if err != nil {
		return err
	}
	log.Info("ready", slog.String("connect", "go run ./cmd/roamchat --server "+st.ClientAddr()+" register NAME"),
		slog.String("admin", st.AdminAddr()), slog.String("admin_token_file", cfg.AdminTokenFile),
		slog.String("metrics", st.MetricsAddr()))
	var served error
	select {
	case <-ctx.Done():
		log.Info("shutting down", slog.Duration("timeout", cfg.ShutdownTimeout))
	case served = <-st.Served():
		log.Error("client listener failed", slog.Any("err", served))
	}
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	return errors.Join(served, st.Shutdown(sctx))
}

// newLogger makes the process's logger: level is debug, info, warn or
// error; format is text or json.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}

// shutdownGrace is the default of --shutdown-timeout.
const shutdownGrace = 10 * time.Second
