package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	adminv1 "github.com/roamfed/roamfed/api/admin/v1"
	"github.com/roamfed/roamfed/internal/cli"
	"github.com/roamfed/roamfed/internal/clientkit"
	"github.com/roamfed/roamfed/regions"
)

// federation loads the federation file once: --federation, else the
// default file in the working directory, else the built-in dev one.
func (a *app) federation() (*regions.Federation, error) {
	if a.fed != nil {
		return a.fed, nil
	}
	var fed *regions.Federation
	var err error
	switch def := filepath.Join(a.dir, defaultFederationFile); {
	case a.fedPath != "":
		fed, err = regions.Load(a.fedPath)
	case fileExists(def):
		fed, err = regions.Load(def)
	default:
		fed, err = regions.DevFederation()
	}
	if err != nil {
		return nil, err
	}
	a.fed = fed
	return fed, nil
}

func fileExists(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && !fi.IsDir()
}

// adminToken finds the admin token: --token, --token-file, the
// environment, or the dev federation's token file. Empty when none is
// configured anywhere; the regions then refuse the calls, and describe
// says what to do.
func (a *app) adminToken() (string, error) {
	switch {
	case a.token != "":
		return strings.TrimSpace(a.token), nil
	case a.tokenFile != "":
		return clientkit.ReadToken(a.tokenFile)
	}
	if t := strings.TrimSpace(a.getenv(tokenEnv)); t != "" {
		return t, nil
	}
	if def := filepath.Join(a.dir, defaultTokenFile); fileExists(def) {
		return clientkit.ReadToken(def)
	}
	return "", nil
}

// region returns the named region of the federation, or a usage error
// naming the ones there are.
func (a *app) region(name string) (regions.Region, error) {
	fed, err := a.federation()
	if err != nil {
		return regions.Region{}, err
	}
	r, ok := fed.Region(name)
	if !ok {
		return regions.Region{}, cli.Usagef("no region %q in %s (it has %s)", name, fed.Source, strings.Join(fed.Names(), ", "))
	}
	return r, nil
}

// adminPool holds one admin connection per region, made on first use.
type adminPool struct {
	fed   *regions.Federation
	opts  clientkit.DialOptions
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

// admin returns the admin client of region.
func (a *app) admin(region string) (adminv1.AdminServiceClient, error) {
	cc, err := a.adminConn(region)
	if err != nil {
		return nil, err
	}
	return adminv1.NewAdminServiceClient(cc), nil
}

func (a *app) adminConn(region string) (*grpc.ClientConn, error) {
	r, err := a.region(region)
	if err != nil {
		return nil, err
	}
	if r.AdminAddr == "" {
		return nil, fmt.Errorf("region %s has no admin_addr in %s", region, a.fed.Source)
	}
	if a.admins == nil {
		tok, err := a.adminToken()
		if err != nil {
			return nil, err
		}
		a.admins = &adminPool{fed: a.fed, conns: make(map[string]*grpc.ClientConn),
			opts: clientkit.DialOptions{TLS: a.tls, CAFile: a.caFile, Token: tok, UserAgent: "roamctl"}}
	}
	return a.admins.conn(r)
}

func (p *adminPool) conn(r regions.Region) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cc, ok := p.conns[r.Name]; ok {
		return cc, nil
	}
	cc, err := clientkit.Dial(r.AdminAddr, p.opts)
	if err != nil {
		return nil, fmt.Errorf("region %s: %w", r.Name, err)
	}
	p.conns[r.Name] = cc
	return cc, nil
}

func (p *adminPool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, cc := range p.conns {
		cc.Close()
	}
	p.conns = nil
}

// callCtx bounds one call by --timeout.
func (a *app) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, a.timeout)
}

// notAnswering reports whether err means the region's admin API could not
// be reached, as opposed to an answer that refused the call.
func notAnswering(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}

// answers reports whether region's admin listener answers a health check
// within a second. The health service needs no token.
func (a *app) answers(ctx context.Context, region string) bool {
	cc, err := a.adminConn(region)
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, min(time.Second, a.timeout))
	defer cancel()
	_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	return err == nil
}

// regionResult is one region's answer to a call made of every region.
type regionResult[T any] struct {
	region string
	resp   T
	err    error
}

// eachRegion calls fn for every region of the federation at once, each
// bounded by --timeout, and returns the results in file order.
func eachRegion[T any](ctx context.Context, a *app, fn func(ctx context.Context, c adminv1.AdminServiceClient) (T, error)) ([]regionResult[T], error) {
	fed, err := a.federation()
	if err != nil {
		return nil, err
	}
	out := make([]regionResult[T], len(fed.Regions))
	var wg sync.WaitGroup
	for i, r := range fed.Regions {
		out[i].region = r.Name
		c, err := a.admin(r.Name)
		if err != nil {
			out[i].err = err
			continue
		}
		wg.Go(func() {
			cctx, cancel := a.callCtx(ctx)
			defer cancel()
			out[i].resp, out[i].err = fn(cctx, c)
		})
	}
	wg.Wait()
	return out, nil
}
