package stack_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	adminv1 "github.com/roamfed/roamfed/api/admin/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/internal/password"
	"github.com/roamfed/roamfed/internal/stack"
	"github.com/roamfed/roamfed/regions"
)

const token = "test-admin-token"

// startPair starts regions ap and eu, federated, each with an admin API.
// Addresses are reserved before the federation file is written, so another
// process may take one in between: then it starts over with fresh ones, a
// few times.
func startPair(t *testing.T) map[string]*stack.Stack {
	t.Helper()
	for attempt := 1; ; attempt++ {
		out, err := tryStartPair(t)
		if err == nil {
			for _, st := range out {
				t.Cleanup(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					_ = st.Shutdown(ctx)
				})
			}
			return out
		}
		if !errors.Is(err, syscall.EADDRINUSE) || attempt == 3 {
			t.Fatal(err)
		}
		t.Logf("attempt %d: %v; again with other addresses", attempt, err)
	}
}

func tryStartPair(t *testing.T) (map[string]*stack.Stack, error) {
	addrs := func() []string {
		var out []string
		for range 4 {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			// Held open until all are found, so that none comes twice.
			defer l.Close()
			out = append(out, l.Addr().String())
		}
		return out
	}()
	var b strings.Builder
	b.WriteString("federation: admin-test\nregions:\n")
	names := []string{"ap", "eu"}
	for i, n := range names {
		fmt.Fprintf(&b, "  - name: %s\n    roaming_addr: %s\n    client_addr: %s\n", n, addrs[2*i], addrs[2*i+1])
	}
	fed, err := regions.Parse("test.yaml", []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]*stack.Stack)
	for i, n := range names {
		st, err := stack.Start(stack.Config{
			Region: n, DataDir: t.TempDir(), ClientAddr: addrs[2*i+1], Federation: fed,
			AdminAddr: "127.0.0.1:0", AdminToken: token,
			Password: password.Params{Memory: 64, Time: 1, Threads: 1},
		})
		if err != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			for _, started := range out {
				_ = started.Shutdown(ctx)
			}
			cancel()
			return nil, fmt.Errorf("start %s: %w", n, err)
		}
		out[n] = st
	}
	return out, nil
}

func adminClient(t *testing.T, st *stack.Stack) adminv1.AdminServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(st.AdminAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return adminv1.NewAdminServiceClient(conn)
}

func TestAdminAPI(t *testing.T) {
	fed := startPair(t)
	ap := adminClient(t, fed["ap"])
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	for _, bad := range []string{"", "Bearer wrong", "Basic " + token} {
		c := ctx
		if bad != "" {
			c = metadata.AppendToOutgoingContext(ctx, "authorization", bad)
		}
		if _, err := ap.Status(c, &adminv1.StatusRequest{}); status.Code(err) != codes.Unauthenticated {
			t.Errorf("Status with authorization %q: %v, want Unauthenticated", bad, err)
		}
	}
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	linkState := func(c adminv1.AdminServiceClient, want roamingv1.LinkState) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			st, err := c.Status(ctx, &adminv1.StatusRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if len(st.GetLinks()) == 1 && st.GetLinks()[0].GetState() == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: link %v, want %v", st.GetRegion(), st.GetLinks(), want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	eu := adminClient(t, fed["eu"])
	linkState(ap, roamingv1.LinkState_LINK_STATE_UP)

	if _, err := ap.CutLink(ctx, &adminv1.CutLinkRequest{A: "eu", B: "us"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("cut of a link ap is not on: %v, want InvalidArgument", err)
	}
	if _, err := ap.CutLink(ctx, &adminv1.CutLinkRequest{A: "ap", B: "eu", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	linkState(ap, roamingv1.LinkState_LINK_STATE_CUT)
	linkState(eu, roamingv1.LinkState_LINK_STATE_CUT)
	if _, err := ap.RestoreLink(ctx, &adminv1.RestoreLinkRequest{A: "eu", B: "ap"}); err != nil {
		t.Fatal(err)
	}
	linkState(ap, roamingv1.LinkState_LINK_STATE_UP)
	linkState(eu, roamingv1.LinkState_LINK_STATE_UP)
	d, err := eu.ListDrills(ctx, &adminv1.ListDrillsRequest{})
	if err != nil || len(d.GetDrills()) != 2 || d.GetDrills()[0].GetAction() != "cut" || d.GetDrills()[1].GetAction() != "restore" {
		t.Fatalf("eu drills: %v, %v", d, err)
	}
	r, err := eu.Resync(ctx, &adminv1.ResyncRequest{})
	if err != nil || len(r.GetResults()) != 2 {
		t.Fatalf("resync: %v, %v", r, err)
	}
	for _, res := range r.GetResults() {
		if res.GetError() != "" || res.GetCorrected() != 0 {
			t.Errorf("resync result %v; want no error and nothing to correct", res)
		}
	}
}
