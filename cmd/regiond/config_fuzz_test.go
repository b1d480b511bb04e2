package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/roamfed/roamfed/internal/validate"
)

// FuzzLoadConfig feeds loadConfig arbitrary config files (no flags
// given). Whatever the file says, loadConfig must return either an error
// that names the file or a configuration that run can start with.
func FuzzLoadConfig(f *testing.F) {
	for _, s := range []string{
		"",
		"region: eu\n",
		"region: eu\nfederation: regions/dev.yaml\nlog_level: debug\n",
		"region: ap\ndata: /var/lib/roamfed\nclient_addr: 0.0.0.0:7100\nnats_url: nats://127.0.0.1:4222\nshutdown_timeout: 30s\n",
		"admin_addr: 127.0.0.1:7300\nadmin_token_file: /etc/roamfed/admin.token\n",
		"limits:\n  maxsessions: 10\n  maxmessagebytes: 1024\n  sendrate: 2.5\n  sendburst: 5\n  maxqueuedpersession: 16\n",
		"limits:\n  sendrate: .nan\n",
		"limits:\n  maxsessions: -1\n",
		"roaming_limits:\n  peer_rate: 100\n  peer_burst: 200\n  call_timeout: 2s\n",
		"roaming_limits:\n  peer_rate: -1\n",
		"roaming_limits:\n  peer_rate: .inf\n  max_batch_bytes: 16777216\n",
		"shutdown_timeout: 0s\n",
		"shutdown_timeout: -5s\n",
		"region: \"a b\"\n",
		"client_addr: nohost\n",
		"regoin: eu\n",
		"region: [eu]\n",
		"region: &a eu\ndata: *a\n",
		"region: eu\n---\nregion: ap\n",
		"\t",
		"{region: eu, log_level: warn}",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, contents string) {
		path := filepath.Join(t.TempDir(), "region.yaml")
		if err := os.WriteFile(path, []byte(contents), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := loadConfig(path, config{}, func(string) bool { return false })
		if err != nil {
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if err := validate.Username("region", cfg.Region); err != nil {
			t.Fatalf("accepted region %q: %v", cfg.Region, err)
		}
		if cfg.Data == "" || cfg.AdminTokenFile == "" {
			t.Fatalf("accepted without data dir (%q) or admin token file (%q)", cfg.Data, cfg.AdminTokenFile)
		}
		if cfg.Federation == "" {
			// Alone, the region must know where to listen.
			if cfg.ClientAddr == "" || cfg.AdminAddr == "" {
				t.Fatalf("accepted a lone region without client (%q) or admin (%q) address", cfg.ClientAddr, cfg.AdminAddr)
			}
		}
		if cfg.ClientAddr != "" {
			if _, _, err := net.SplitHostPort(cfg.ClientAddr); err != nil {
				t.Fatalf("accepted client_addr %q: %v", cfg.ClientAddr, err)
			}
		}
		if cfg.ShutdownTimeout <= 0 {
			t.Fatalf("accepted shutdown_timeout %v", cfg.ShutdownTimeout)
		}
		if err := cfg.Limits.Validate(); err != nil {
			t.Fatalf("accepted limits: %v", err)
		}
		if err := cfg.RoamingLimits.Validate(); err != nil {
			t.Fatalf("accepted roaming_limits: %v", err)
		}
	})
}
