package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/roamfed/roamfed/internal/validate"
	roamingpool "github.com/roamfed/roamfed/roaming/resourcepool"
	"github.com/roamfed/roamfed/servicecenter/resourcepool"
)

// config is regiond's settings, from flags and an optional YAML file.
type config struct {
	Region          string              `yaml:"region"`
	Federation      string              `yaml:"federation"`
	AdminAddr       string              `yaml:"admin_addr"`
	AdminToken      string              `yaml:"admin_token"`
	AdminTokenFile  string              `yaml:"admin_token_file"`
	Certs           string              `yaml:"certs"`
	ClientTLSCert   string              `yaml:"client_tls_cert"`
	ClientTLSKey    string              `yaml:"client_tls_key"`
	MetricsAddr     string              `yaml:"metrics_addr"`
	RoamingAddr     string              `yaml:"roaming_addr"`
	Data            string              `yaml:"data"`
	ClientAddr      string              `yaml:"client_addr"`
	NATSURL         string              `yaml:"nats_url"`
	LogLevel        string              `yaml:"log_level"`
	LogFormat       string              `yaml:"log_format"`
	ShutdownTimeout time.Duration       `yaml:"shutdown_timeout"`
	Limits          resourcepool.Limits `yaml:"limits"`
	// RoamingLimits is the budget for cross-region work, the rate of
	// requests each peer may make here (peer_rate, peer_burst) included.
	RoamingLimits roamingpool.Limits `yaml:"roaming_limits"`
}

// Where a region on its own listens by default; in a federation the file
// says.
const (
	defaultClientAddr  = "127.0.0.1:7100"
	defaultAdminAddr   = "127.0.0.1:7300"
	defaultMetricsAddr = "127.0.0.1:7400"
)

func defaultConfig() config {
	return config{
		Region:          "local",
		LogLevel:        "info",
		LogFormat:       "text",
		ShutdownTimeout: shutdownGrace,
		Limits:          resourcepool.DefaultLimits(),
		RoamingLimits:   roamingpool.DefaultLimits(),
	}
}

// loadConfig merges defaults, the file (if any) and the flags that were
// given, in that order, and validates the result.
func loadConfig(file string, flags config, changed func(string) bool) (config, error) {
	cfg := defaultConfig()
	if file != "" {
		raw, err := os.ReadFile(file)
		if err != nil {
			return config{}, err
		}
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
			return config{}, fmt.Errorf("%s: %w", file, err)
		}
	}
	for name, apply := range map[string]func(){
		"region":           func() { cfg.Region = flags.Region },
		"data":             func() { cfg.Data = flags.Data },
		"client-addr":      func() { cfg.ClientAddr = flags.ClientAddr },
		"nats-url":         func() { cfg.NATSURL = flags.NATSURL },
		"federation":       func() { cfg.Federation = flags.Federation },
		"admin-addr":       func() { cfg.AdminAddr = flags.AdminAddr },
		"admin-token":      func() { cfg.AdminToken = flags.AdminToken },
		"admin-token-file": func() { cfg.AdminTokenFile = flags.AdminTokenFile },
		"certs":            func() { cfg.Certs = flags.Certs },
		"client-tls-cert":  func() { cfg.ClientTLSCert = flags.ClientTLSCert },
		"client-tls-key":   func() { cfg.ClientTLSKey = flags.ClientTLSKey },
		"log-level":        func() { cfg.LogLevel = flags.LogLevel },
		"log-format":       func() { cfg.LogFormat = flags.LogFormat },
		"metrics-addr":     func() { cfg.MetricsAddr = flags.MetricsAddr },
		"roaming-addr":     func() { cfg.RoamingAddr = flags.RoamingAddr },
		"shutdown-timeout": func() { cfg.ShutdownTimeout = flags.ShutdownTimeout },
	} {
		if changed(name) {
			apply()
		}
	}
	// In a federation the file says where this region listens; alone, the
	// default is the local port.
	if cfg.ClientAddr == "" && cfg.Federation == "" {
		cfg.ClientAddr = defaultClientAddr
	}
	if cfg.Data == "" {
		cfg.Data = filepath.Join("data", cfg.Region)
	}
	if cfg.AdminAddr == "" && cfg.Federation == "" {
		cfg.AdminAddr = defaultAdminAddr
	}
	if cfg.MetricsAddr == "" && cfg.Federation == "" {
		cfg.MetricsAddr = defaultMetricsAddr
	}
	if cfg.AdminTokenFile == "" {
		cfg.AdminTokenFile = filepath.Join(cfg.Data, "admin.token")
	}
	origin := "default"
	if file != "" {
		origin = file
	}
	if (cfg.ClientTLSCert == "") != (cfg.ClientTLSKey == "") {
		return config{}, fmt.Errorf("client TLS needs both client_tls_cert and client_tls_key (from %s or --client-tls-cert/--client-tls-key)", origin)
	}
	// Links between regions are always mutually authenticated: there is
	// no plaintext fallback.
	if cfg.Federation != "" && cfg.Certs == "" {
		return config{}, fmt.Errorf("a federated region needs certificates: certs (from %s or --certs DIR); create them with: roamctl --federation %s certs init --out DIR", origin, cfg.Federation)
	}
	if err := validate.Username("region", cfg.Region); err != nil {
		return config{}, fmt.Errorf("%s (from %s or --region)", err, origin)
	}
	if _, _, err := net.SplitHostPort(cfg.ClientAddr); cfg.ClientAddr != "" && err != nil {
		return config{}, fmt.Errorf("client_addr %q (from %s or --client-addr): %w", cfg.ClientAddr, origin, err)
	}
	if _, _, err := net.SplitHostPort(cfg.MetricsAddr); cfg.MetricsAddr != "" && err != nil {
		return config{}, fmt.Errorf("metrics_addr %q (from %s or --metrics-addr): %w", cfg.MetricsAddr, origin, err)
	}
	if _, _, err := net.SplitHostPort(cfg.RoamingAddr); cfg.RoamingAddr != "" && err != nil {
		return config{}, fmt.Errorf("roaming_addr %q (from %s or --roaming-addr): %w", cfg.RoamingAddr, origin, err)
	}
	if cfg.RoamingAddr != "" && cfg.Federation == "" {
		return config{}, fmt.Errorf("roaming_addr (from %s or --roaming-addr) needs a federation file (--federation)", origin)
	}
	if cfg.LogFormat != "text" && cfg.LogFormat != "json" {
		return config{}, fmt.Errorf("log_format %q (from %s or --log-format): want text or json", cfg.LogFormat, origin)
	}
	if cfg.ShutdownTimeout <= 0 {
		return config{}, fmt.Errorf("shutdown_timeout must be positive (from %s or --shutdown-timeout)", origin)
	}
	if err := cfg.Limits.Validate(); err != nil {
		return config{}, fmt.Errorf("limits in %s: %w", origin, err)
	}
	if err := cfg.RoamingLimits.Validate(); err != nil {
		return config{}, fmt.Errorf("roaming_limits in %s: %w", origin, err)
	}
	return cfg, nil
}
