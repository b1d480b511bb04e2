package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/roamfed/roamfed/internal/certs"
	"github.com/roamfed/roamfed/internal/netem"
	"github.com/roamfed/roamfed/internal/password"
	"github.com/roamfed/roamfed/internal/stack"
	"github.com/roamfed/roamfed/regions"
	"github.com/roamfed/roamfed/servicecenter/resourcepool"
)

// benchPassword is the hashing cost of in-process regions: the benchmark
// measures messaging, not logins.
var benchPassword = password.Params{Memory: 64, Time: 1, Threads: 1}

// localFederation is regions started in this process, federated over
// loopback gRPC as separate processes would be.
type localFederation struct {
	stacks  []*stack.Stack
	dataDir string
	// nets are the regions' delayed links, with --link-delay.
	nets []*netem.Net
}

// startLocal starts n regions (one alone, unfederated, when n is 1), each
// with its own data directory and embedded NATS, their roaming links
// mutually authenticated with TLS from a throwaway CA unless plaintext.
// With delay > 0 every roaming link gets that one-way delay.
func startLocal(n int, delay time.Duration, plaintext bool, log *slog.Logger) (_ *localFederation, err error) {
	dir, err := os.MkdirTemp("", "roambench-")
	if err != nil {
		return nil, err
	}
	f := &localFederation{dataDir: dir}
	defer func() {
		if err != nil {
			err = errors.Join(err, f.close())
		}
	}()
	names := regionNames[:n]
	var (
		fed   *regions.Federation
		creds *certs.Set
	)
	if n > 1 {
		if fed, err = loopbackFederation(names); err != nil {
			return nil, err
		}
		if !plaintext {
			if creds, err = devCerts(filepath.Join(dir, "certs"), fed); err != nil {
				return nil, err
			}
		}
	}
	for i, name := range names {
		cfg := stack.Config{
			Region:     name,
			DataDir:    filepath.Join(dir, name),
			ClientAddr: "127.0.0.1:0",
			Logger:     log,
			Password:   benchPassword,
			// The benchmark is the only client; the per-user send rate
			// limit would measure the limit, not the region.
			Limits: resourcepool.Limits{SendRate: math.Inf(1)},
		}
		if fed != nil {
			if cfg.Federation, err = fed.WithSelf(name); err != nil {
				return nil, err
			}
			cfg.RoamingAddr = fed.Regions[i].RoamingAddr
			if creds != nil {
				cfg.TLS = creds.For(name)
			}
			if delay > 0 {
				n := delayedLinks(fed, name, delay)
				f.nets = append(f.nets, n)
				cfg.Dial = n.Dial
			}
		}
		st, err := stack.Start(cfg)
		if err != nil {
			return nil, fmt.Errorf("start region %s: %w", name, err)
		}
		f.stacks = append(f.stacks, st)
	}
	return f, nil
}

// loopbackFederation is a federation file for names on free loopback
// ports. The ports are free when chosen; another process could take one
// before the region listens, which fails the start plainly.
func loopbackFederation(names []string) (*regions.Federation, error) {
	roam, client := make([]string, len(names)), make([]string, len(names))
	for i := range names {
		var err error
		if roam[i], err = freeAddr(); err != nil {
			return nil, err
		}
		if client[i], err = freeAddr(); err != nil {
			return nil, err
		}
	}
	return federationFile(names, roam, client)
}

// federationFile is the federation file of names at the roaming and client
// addresses given, in order.
func federationFile(names, roam, client []string) (*regions.Federation, error) {
	var b strings.Builder
	b.WriteString("federation: roambench\nregions:\n")
	for i, n := range names {
		fmt.Fprintf(&b, "  - name: %s\n    roaming_addr: %s\n    client_addr: %s\n", n, roam[i], client[i])
	}
	return regions.Parse("roambench.yaml", []byte(b.String()))
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// devCerts issues a CA and a certificate for every region into dir.
func devCerts(dir string, fed *regions.Federation) (*certs.Set, error) {
	set, err := certs.EnsureDev(dir, fed)
	if err != nil {
		return nil, fmt.Errorf("region certificates: %w", err)
	}
	return set, nil
}

// delayedLinks is self's view of the network: every link to a peer delayed
// one way by d.
func delayedLinks(fed *regions.Federation, self string, d time.Duration) *netem.Net {
	n := netem.NewNet()
	for _, p := range fed.Peers(self) {
		n.Link(p.RoamingAddr).SetDelay(d)
	}
	return n
}

// linkLateness summarises how late the delayed links handed bytes on
// after their delay, over the whole run; nil without delayed links.
func (f *localFederation) linkLateness() *latency {
	var all netem.Lateness
	for _, n := range f.nets {
		all.Merge(n.Lateness())
	}
	if all.Count() == 0 {
		return nil
	}
	q := func(q float64) float64 { return ms(all.Quantile(q)) }
	return &latency{Count: int64(all.Count()), P50Ms: q(0.5), P99Ms: q(0.99), P999Ms: q(0.999), MaxMs: q(1)}
}

// targets are the regions' client addresses, in order.
func (f *localFederation) targets() []regionAddr {
	out := make([]regionAddr, len(f.stacks))
	for i, st := range f.stacks {
		out[i] = regionAddr{Name: st.Region(), Addr: st.ClientAddr()}
	}
	return out
}

// close stops the regions, newest first, and removes their data.
func (f *localFederation) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var errs []error
	for i := len(f.stacks) - 1; i >= 0; i-- {
		if err := f.stacks[i].Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop region %s: %w", f.stacks[i].Region(), err))
		}
	}
	f.stacks = nil
	errs = append(errs, os.RemoveAll(f.dataDir))
	return errors.Join(errs...)
}
