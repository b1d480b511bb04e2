package e2e

import (
	"github.com/roamfed/roamfed/internal/certs"
	"github.com/roamfed/roamfed/internal/testnet"
	"github.com/roamfed/roamfed/regions"

	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Federation is a set of regiond processes, one per region, that run with
// the same federation file and so peer with each other.
type Federation struct {
	// File is the federation file every region runs with.
	File    string
	Regions []*Region // in the order the test named them
}

// Region returns the region called name; it fails the test when there is
// none.
func (f *Federation) Region(t *testing.T, name string) *Region {
	t.Helper()
	for _, r := range f.Regions {
		if r.Name == name {
			return r
		}
	}
	t.Fatalf("no region %q in the federation", name)
	return nil
}

// startFederation writes a federation file naming one region per name,
// each with a roaming and a client address from freeAddrs, and starts one
// regiond per region with --federation and --region. The regions start
// side by side, and startFederation returns once every one is serving its
// clients; links between them come up on their own soon after. Each
// region keeps its data directory and addresses across Restart and Kill,
// and is stopped when the test ends, as startRegion says.
func startFederation(t *testing.T, names ...string) *Federation {
	t.Helper()
	needBinaries(t)
	addrs := testnet.FreeAddrs(t, 2*len(names))
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by %s.\nfederation: e2e\nregions:\n", t.Name())
	for i, n := range names {
		fmt.Fprintf(&b, "  - name: %s\n    roaming_addr: %s\n    client_addr: %s\n", n, addrs[2*i], addrs[2*i+1])
	}
	f := &Federation{File: filepath.Join(t.TempDir(), "federation.yaml")}
	if err := os.WriteFile(f.File, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	certDir := writeCerts(t, f.File)
	for _, n := range names {
		f.Regions = append(f.Regions, newRegion(t, n, "--federation", f.File, "--certs", certDir))
	}
	errs := make([]error, len(f.Regions))
	var wg sync.WaitGroup
	for i, r := range f.Regions {
		wg.Go(func() { errs[i] = r.start(r.firstAddr()) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("start region %s: %v", f.Regions[i].Name, err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	for i, r := range f.Regions {
		if want := addrs[2*i+1]; r.Addr() != want {
			t.Fatalf("region %s serves clients on %s, want %s from %s", r.Name, r.Addr(), want, f.File)
		}
	}
	return f
}

// writeCerts creates a federation CA and a certificate per region of the
// federation file, as an operator would with roamctl certs init, and
// returns their directory.
func writeCerts(t *testing.T, federationFile string) string {
	t.Helper()
	fed, err := regions.Load(federationFile)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "certs")
	if err := certs.Init(dir, fed.Regions); err != nil {
		t.Fatal(err)
	}
	return dir
}
