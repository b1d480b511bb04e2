package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
)

// authProbe answers Register and ListGroups, checking the authorization
// metadata of each.
type authProbe struct {
	clientv1.UnimplementedClientServiceServer
}

func authOf(ctx context.Context) []string {
	md, _ := metadata.FromIncomingContext(ctx)
	return md.Get("authorization")
}

func (authProbe) Register(ctx context.Context, _ *clientv1.RegisterRequest) (*clientv1.RegisterResponse, error) {
	if a := authOf(ctx); len(a) != 0 {
		return nil, status.Errorf(codes.InvalidArgument, "Register got authorization %q", a)
	}
	return &clientv1.RegisterResponse{UserId: "u_1", HomeRegion: "tls"}, nil
}

func (authProbe) ListGroups(ctx context.Context, _ *clientv1.ListGroupsRequest) (*clientv1.ListGroupsResponse, error) {
	if a := authOf(ctx); len(a) != 1 || a[0] != "Bearer tok-123" {
		return nil, status.Errorf(codes.Unauthenticated, "got authorization %q", a)
	}
	return &clientv1.ListGroupsResponse{Groups: []*clientv1.GroupSummary{{Id: "g_1", Name: "secure"}}}, nil
}

// startTLSServer serves authProbe over TLS with a fresh self-signed
// certificate for 127.0.0.1, and returns its address and the CA file.
func startTLSServer(t *testing.T) (addr, caFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "roamchat test region"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewServerTLSFromCert(&cert)))
	clientv1.RegisterClientServiceServer(srv, authProbe{})
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), caFile
}

func TestTLSAndToken(t *testing.T) {
	isolate(t)
	addr, caFile := startTLSServer(t)
	store, _ := defaultProfileStore()
	if err := store.save("default", &profile{Server: addr, Token: "tok-123", Username: "alice"}); err != nil {
		t.Fatal(err)
	}

	// Verified against --ca; the token goes on ListGroups.
	code, out, errOut := roamchat(t, "", "--ca", caFile, "group", "list")
	if code != exitOK || !strings.Contains(out, "secure") {
		t.Fatalf("--ca: code %d\n%s%s", code, out, errOut)
	}
	// No token on Register, even with a profile that has one.
	code, out, errOut = roamchat(t, "", "--ca", caFile, "register", "bob", "--password", "long-enough")
	if code != exitOK || !strings.Contains(out, "home region tls") {
		t.Fatalf("register: code %d\n%s%s", code, out, errOut)
	}
	// --tls alone trusts the system roots, which do not know this region;
	// plaintext does not get through either, and says why it may be.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls"}, "certificate signed by unknown authority"},
		{nil, "(does the region want --tls?)"},
	} {
		code, _, errOut = roamchat(t, "", append(tc.args, "--timeout", "5s", "group", "list")...)
		if code != exitError || !strings.HasPrefix(errOut, "roamchat: group list: unavailable: ") || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: code %d, stderr %q; want %q in it", tc.args, code, errOut, tc.want)
		}
	}
}
