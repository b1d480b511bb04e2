package main

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	roamingpool "github.com/roamfed/roamfed/roaming/resourcepool"
)

// TestLoadConfigRoamingLimits: roaming_limits in the file set the roaming
// budget, the per-peer request rate included; keys left out keep their
// defaults, and a value no region can run with names the file.
func TestLoadConfigRoamingLimits(t *testing.T) {
	load := func(contents string) (config, error) {
		path := filepath.Join(t.TempDir(), "region.yaml")
		if err := os.WriteFile(path, []byte(contents), 0o600); err != nil {
			t.Fatal(err)
		}
		return loadConfig(path, config{}, func(string) bool { return false })
	}
	cfg, err := load("region: eu\n")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RoamingLimits != roamingpool.DefaultLimits() {
		t.Fatalf("no roaming_limits: %+v; want the defaults %+v", cfg.RoamingLimits, roamingpool.DefaultLimits())
	}

	cfg, err = load("region: eu\nroaming_limits:\n  peer_rate: 250.5\n  peer_burst: 400\n  call_timeout: 2s\n")
	if err != nil {
		t.Fatal(err)
	}
	want := roamingpool.DefaultLimits()
	want.PeerRate, want.PeerBurst, want.CallTimeout = 250.5, 400, 2*time.Second
	if cfg.RoamingLimits != want {
		t.Fatalf("roaming_limits = %+v; want %+v", cfg.RoamingLimits, want)
	}

	cfg, err = load("region: eu\nroaming_limits:\n  peer_rate: .inf\n")
	if err != nil || !math.IsInf(cfg.RoamingLimits.PeerRate, 1) {
		t.Fatalf("peer_rate .inf: %v, %v; want the limit disabled", cfg.RoamingLimits.PeerRate, err)
	}

	for _, bad := range []string{"peer_rate: -1", "peer_burst: -3", "peer_rate: .nan", "peer_rtae: 5"} {
		_, err := load("region: eu\nroaming_limits:\n  " + bad + "\n")
		if err == nil || !strings.Contains(err.Error(), "region.yaml") {
			t.Errorf("roaming_limits %q: %v; want an error naming the file", bad, err)
		}
	}
}
