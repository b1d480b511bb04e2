package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/roamfed/roamfed/regions"
)

// testRegions cover the three kinds of roaming host: a DNS name, an IPv4
// and an IPv6 address.
var testRegions = []regions.Region{
	{Name: "ap", RoamingAddr: "AP.roamfed.example.com.:7200", ClientAddr: "127.0.0.1:7100"},
	{Name: "eu", RoamingAddr: "10.1.2.3:7200", ClientAddr: "127.0.0.1:7101"},
	{Name: "us", RoamingAddr: "[2001:db8::7]:7200", ClientAddr: "127.0.0.1:7102"},
}

func region(t *testing.T, name string) regions.Region {
	t.Helper()
	for _, r := range testRegions {
		if r.Name == name {
			return r
		}
	}
	t.Fatalf("no test region %q", name)
	return regions.Region{}
}

// initDir runs Init for testRegions in a new directory.
func initDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "certs")
	if err := Init(dir, testRegions); err != nil {
		t.Fatal(err)
	}
	return dir
}

func load(t *testing.T, dir, region string) *Material {
	t.Helper()
	m, err := Load(dir, region)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// readLeaf parses the first certificate of a PEM file.
func readLeaf(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// snapshot reads every file of dir.
func snapshot(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := make(map[string][]byte)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = b
	}
	return out
}

func TestInitWritesFiles(t *testing.T) {
	dir := initDir(t)

	want := []string{"ap-key.pem", "ap.pem", "ca-key.pem", "ca.pem", "eu-key.pem", "eu.pem", "us-key.pem", "us.pem"}
	var got []string
	for name := range snapshot(t, dir) {
		got = append(got, name)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("files %v; want %v", got, want)
	}
	for _, name := range want {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		wantMode := fs.FileMode(0o644)
		if strings.HasSuffix(name, "-key.pem") {
			wantMode = 0o600
		}
		if fi.Mode().Perm() != wantMode {
			t.Errorf("%s has mode %v; want %v", name, fi.Mode().Perm(), wantMode)
		}
	}

	ca := readLeaf(t, filepath.Join(dir, CAFile))
	if !ca.IsCA || !ca.MaxPathLenZero || ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("CA: IsCA %v, MaxPathLenZero %v, KeyUsage %v", ca.IsCA, ca.MaxPathLenZero, ca.KeyUsage)
	}
	if life := ca.NotAfter.Sub(ca.NotBefore); life < CAValidity || life > CAValidity+2*backdate {
		t.Errorf("CA valid for %v; want about %v", life, CAValidity)
	}

	tests := []struct {
		region string
		dns    []string
		ips    []string
	}{
		{"ap", []string{"localhost", "ap.roamfed.example.com"}, []string{"127.0.0.1", "::1"}},
		{"eu", []string{"localhost"}, []string{"127.0.0.1", "::1", "10.1.2.3"}},
		{"us", []string{"localhost"}, []string{"127.0.0.1", "::1", "2001:db8::7"}},
	}
	for _, tt := range tests {
		t.Run(tt.region, func(t *testing.T) {
			c := readLeaf(t, filepath.Join(dir, CertFile(tt.region)))
			if got, err := RegionOf(c); err != nil || got != tt.region {
				t.Fatalf("RegionOf = %q, %v", got, err)
			}
			if len(c.URIs) != 1 || c.URIs[0].String() != "roamfed://region/"+tt.region {
				t.Errorf("URIs %v", c.URIs)
			}
			if !slices.Equal(c.DNSNames, tt.dns) {
				t.Errorf("DNS SANs %v; want %v", c.DNSNames, tt.dns)
			}
			var ips []string
			for _, ip := range c.IPAddresses {
				ips = append(ips, ip.String())
			}
			if !slices.Equal(ips, tt.ips) {
				t.Errorf("IP SANs %v; want %v", ips, tt.ips)
			}
			if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
				t.Errorf("ExtKeyUsage %v", c.ExtKeyUsage)
			}
			if c.IsCA {
				t.Error("a region certificate is a CA")
			}
			if err := c.CheckSignatureFrom(ca); err != nil {
				t.Errorf("not signed by the CA: %v", err)
			}
			if life := c.NotAfter.Sub(c.NotBefore); life > RegionValidity+2*backdate {
				t.Errorf("valid for %v; want at most %v", life, RegionValidity)
			}
			m := load(t, dir, tt.region)
			if m.Region() != tt.region || !m.Certificate().Equal(c) || !m.NotAfter().Equal(c.NotAfter) {
				t.Errorf("Load gave region %q, certificate %v", m.Region(), m.Certificate().Subject)
			}
		})
	}
}

func TestInitRefusesToOverwrite(t *testing.T) {
	dir := initDir(t)
	before := snapshot(t, dir)

	if err := Init(dir, testRegions); !errors.Is(err, ErrExists) {
		t.Fatalf("second Init = %v; want ErrExists", err)
	}
	if after := snapshot(t, dir); !mapsEqual(before, after) {
		t.Fatal("a refused Init changed files")
	}

	// One file in the way stops everything.
	other := filepath.Join(t.TempDir(), "certs")
	if err := os.MkdirAll(other, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(other, "eu-key.pem"), []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := Init(other, testRegions)
	if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "eu-key.pem") {
		t.Fatalf("Init over eu-key.pem = %v; want ErrExists naming it", err)
	}
	if got := snapshot(t, other); len(got) != 1 || string(got["eu-key.pem"]) != "mine" {
		t.Fatalf("a refused Init left %d files", len(got))
	}

	if err := InitWith(dir, testRegions, InitOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	after := snapshot(t, dir)
	for name := range before {
		if bytes.Equal(before[name], after[name]) {
			t.Errorf("Force left %s as it was", name)
		}
	}
	if len(after) != len(before) {
		t.Errorf("Force left %d files; want %d (no temporary files)", len(after), len(before))
	}
	load(t, dir, "eu")
}

func mapsEqual(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !bytes.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

func TestInitBadRegions(t *testing.T) {
	tests := []struct {
		name string
		rs   []regions.Region
	}{
		{"none", nil},
		{"bad name", []regions.Region{{Name: "EU", RoamingAddr: "eu:7200"}}},
		{"empty name", []regions.Region{{Name: "", RoamingAddr: "eu:7200"}}},
		{"twice", []regions.Region{{Name: "eu", RoamingAddr: "eu:7200"}, {Name: "eu", RoamingAddr: "eu2:7200"}}},
		{"no address", []regions.Region{{Name: "eu"}}},
		{"no port", []regions.Region{{Name: "eu", RoamingAddr: "eu.example.com"}}},
		{"zone", []regions.Region{{Name: "eu", RoamingAddr: "[fe80::1%eth0]:7200"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "certs")
			if err := Init(dir, tt.rs); !errors.Is(err, ErrBadRegion) {
				t.Fatalf("Init = %v; want ErrBadRegion", err)
			}
			if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("a refused Init made %s", dir)
			}
		})
	}
}

func TestIssue(t *testing.T) {
	dir := initDir(t)
	sa := regions.Region{Name: "sa", RoamingAddr: "sa.roamfed.example.com:7200"}
	if err := Issue(dir, sa, InitOptions{}); err != nil {
		t.Fatal(err)
	}
	m := load(t, dir, "sa")
	if !slices.Contains(m.Certificate().DNSNames, "sa.roamfed.example.com") {
		t.Errorf("DNS SANs %v", m.Certificate().DNSNames)
	}
	// The new region and an old one trust each other.
	handshakeOK(t, m.ServerTLS(), load(t, dir, "ap").ClientTLS("sa"))

	if err := Issue(dir, sa, InitOptions{}); !errors.Is(err, ErrExists) {
		t.Fatalf("Issue over existing files = %v; want ErrExists", err)
	}
	if err := Issue(dir, sa, InitOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if renewed := load(t, dir, "sa"); renewed.Certificate().Equal(m.Certificate()) {
		t.Error("Issue with Force kept the old certificate")
	}

	if err := Issue(t.TempDir(), sa, InitOptions{}); err == nil {
		t.Error("Issue without a CA succeeded")
	}
}

func TestLoadRefuses(t *testing.T) {
	dir := initDir(t)
	otherDir := filepath.Join(t.TempDir(), "other")
	if err := Init(otherDir, testRegions); err != nil {
		t.Fatal(err)
	}
	copyFile := func(t *testing.T, from, to string) {
		t.Helper()
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name    string
		prepare func(t *testing.T, d string)
		region  string
		wantErr error
		wantMsg string
	}{
		{name: "no such region", region: "sa", wantMsg: "no such file"},
		{name: "bad name", region: "../ap", wantErr: ErrBadRegion},
		{name: "certificate of another region", region: "eu", wantErr: ErrWrongRegion, prepare: func(t *testing.T, d string) {
			copyFile(t, filepath.Join(d, "ap.pem"), filepath.Join(d, "eu.pem"))
			copyFile(t, filepath.Join(d, "ap-key.pem"), filepath.Join(d, "eu-key.pem"))
		}},
		{name: "key of another region", region: "eu", wantMsg: "private key does not match", prepare: func(t *testing.T, d string) {
			copyFile(t, filepath.Join(d, "ap-key.pem"), filepath.Join(d, "eu-key.pem"))
		}},
		{name: "another federation's CA", region: "eu", wantMsg: "unknown authority", prepare: func(t *testing.T, d string) {
			copyFile(t, filepath.Join(otherDir, "ca.pem"), filepath.Join(d, "ca.pem"))
		}},
		{name: "region certificate as CA", region: "eu", wantMsg: "not a CA", prepare: func(t *testing.T, d string) {
			copyFile(t, filepath.Join(d, "ap.pem"), filepath.Join(d, "ca.pem"))
		}},
		{name: "empty CA file", region: "eu", wantMsg: "no certificate", prepare: func(t *testing.T, d string) {
			if err := os.WriteFile(filepath.Join(d, "ca.pem"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := filepath.Join(t.TempDir(), "certs")
			if err := os.MkdirAll(d, 0o700); err != nil {
				t.Fatal(err)
			}
			for name, b := range snapshot(t, dir) {
				if err := os.WriteFile(filepath.Join(d, name), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if tt.prepare != nil {
				tt.prepare(t, d)
			}
			m, err := Load(d, tt.region)
			if err == nil {
				t.Fatalf("Load succeeded for region %q", m.Region())
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("Load = %v; want %v", err, tt.wantErr)
			}
			if tt.wantMsg != "" && !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("Load = %v; want it to say %q", err, tt.wantMsg)
			}
		})
	}
}

// TestLoadSeveralCAs is a federation moving to a new CA: ca.pem lists the
// old CA and the new one, and regions with certificates of either talk.
func TestLoadSeveralCAs(t *testing.T) {
	oldDir, newDir := initDir(t), initDir(t)
	both := append(snapshot(t, oldDir)[CAFile], snapshot(t, newDir)[CAFile]...)
	for _, d := range []string{oldDir, newDir} {
		if err := os.WriteFile(filepath.Join(d, CAFile), both, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	handshakeOK(t, load(t, oldDir, "ap").ServerTLS(), load(t, newDir, "eu").ClientTLS("ap"))
	handshakeOK(t, load(t, newDir, "ap").ServerTLS(), load(t, oldDir, "eu").ClientTLS("ap"))
	if err := Issue(newDir, regions.Region{Name: "sa", RoamingAddr: "sa:7200"}, InitOptions{}); err != nil {
		t.Fatalf("Issue with the second CA of ca.pem: %v", err)
	}
}

func TestRegionOf(t *testing.T) {
	uris := func(ss ...string) *x509.Certificate {
		c := &x509.Certificate{}
		for _, s := range ss {
			u, err := url.Parse(s)
			if err != nil {
				t.Fatal(err)
			}
			c.URIs = append(c.URIs, u)
		}
		return c
	}
	tests := []struct {
		name    string
		cert    *x509.Certificate
		want    string
		wantErr error
	}{
		{"one", uris("roamfed://region/eu"), "eu", nil},
		{"longest name", uris("roamfed://region/a1234567890123456789012345678901"), "a1234567890123456789012345678901", nil},
		{"dashes and digits", uris("roamfed://region/us-east-2"), "us-east-2", nil},
		{"beside other schemes", uris("spiffe://example.org/eu", "roamfed://region/eu", "https://eu.example.com/"), "eu", nil},
		{"upper case scheme", uris("ROAMFED://region/eu"), "eu", nil},
		{"nil", nil, "", ErrNoRegionURI},
		{"none", uris(), "", ErrNoRegionURI},
		{"only other schemes", uris("spiffe://example.org/region/eu"), "", ErrNoRegionURI},
		{"two", uris("roamfed://region/eu", "roamfed://region/ap"), "", ErrNoRegionURI},
		{"same twice", uris("roamfed://region/eu", "roamfed://region/eu"), "", ErrNoRegionURI},
		{"other host", uris("roamfed://user/eu"), "", ErrBadRegionURI},
		{"upper case host", uris("roamfed://REGION/eu"), "", ErrBadRegionURI},
		{"port", uris("roamfed://region:1/eu"), "", ErrBadRegionURI},
		{"user", uris("roamfed://eu@region/eu"), "", ErrBadRegionURI},
		{"query", uris("roamfed://region/eu?x=1"), "", ErrBadRegionURI},
		{"empty query", uris("roamfed://region/eu?"), "", ErrBadRegionURI},
		{"fragment", uris("roamfed://region/eu#x"), "", ErrBadRegionURI},
		{"opaque", uris("roamfed:region/eu"), "", ErrBadRegionURI},
		{"no name", uris("roamfed://region/"), "", ErrBadRegionURI},
		{"no path", uris("roamfed://region"), "", ErrBadRegionURI},
		{"two segments", uris("roamfed://region/eu/ap"), "", ErrBadRegionURI},
		{"escaped slash", uris("roamfed://region/eu%2Fap"), "", ErrBadRegionURI},
		{"upper case name", uris("roamfed://region/EU"), "", ErrBadRegionURI},
		{"too long", uris("roamfed://region/a12345678901234567890123456789012"), "", ErrBadRegionURI},
		{"leading digit", uris("roamfed://region/1eu"), "", ErrBadRegionURI},
		{"good and malformed", uris("roamfed://region/eu", "roamfed://region/EU"), "", ErrBadRegionURI},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := RegionOf(tt.cert)
			if got != tt.want || !errors.Is(err, tt.wantErr) {
				t.Fatalf("RegionOf = %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// forged signs certificates for tests: with the federation's CA (or
// another), changed by edit after the usual region template is made.
func forged(t *testing.T, ca *authority, r regions.Region, edit func(*x509.Certificate)) tls.Certificate {
	t.Helper()
	tmpl, err := regionTemplate(r)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(time.Hour)
	if edit != nil {
		edit(tmpl)
	}
	certPEM, keyPEM, err := ca.sign(tmpl)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func caOf(t *testing.T, dir string) *authority {
	t.Helper()
	ca, err := loadAuthority(dir)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func otherCA(t *testing.T) *authority {
	t.Helper()
	now := time.Now()
	ca, err := newAuthority("some other CA", now.Add(-time.Hour), now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// asClient is good's ClientTLS(peer) presenting cert instead of good's own.
func asClient(good *Material, peer string, cert tls.Certificate) *tls.Config {
	cfg := good.ClientTLS(peer)
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	return cfg
}

// asServer is good's ServerTLS presenting cert instead of good's own.
func asServer(good *Material, cert tls.Certificate) *tls.Config {
	cfg := good.ServerTLS()
	cfg.Certificates = []tls.Certificate{cert}
	return cfg
}

// handshake runs one TLS handshake over TCP on loopback and returns what
// each side made of it. In TLS 1.3 the client finishes before the server
// has checked the client's certificate, so the client also reads once: a
// refusal arrives as an alert, acceptance as the server's close.
func handshake(t *testing.T, server, client *tls.Config) (serverErr, clientErr error) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	done := make(chan error, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		tc := tls.Server(c, server)
		_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
		done <- tc.Handshake()
	}()
	raw, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	tc := tls.Client(raw, client)
	_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
	clientErr = tc.Handshake()
	if clientErr == nil {
		if _, err := tc.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			clientErr = err
		}
	}
	return <-done, clientErr
}

func handshakeOK(t *testing.T, server, client *tls.Config) {
	t.Helper()
	if serr, cerr := handshake(t, server, client); serr != nil || cerr != nil {
		t.Fatalf("handshake: server %v, client %v", serr, cerr)
	}
}

// whoami is a gRPC service whose one method answers with the caller's
// region. Its server checks, as the roaming server does, that the region
// the call claims in metadata is the one its certificate names.
type whoami struct{ calls atomic.Int32 }

type whoamiServer interface{}

const whoamiMethod = "/roamfed.certs.test.Whoami/Whoami"

var whoamiDesc = grpc.ServiceDesc{
	ServiceName: "roamfed.certs.test.Whoami",
	HandlerType: (*whoamiServer)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Whoami",
		Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			handle := func(ctx context.Context, _ any) (any, error) {
				srv.(*whoami).calls.Add(1)
				region, err := PeerRegion(ctx)
				if err != nil {
					return nil, status.Error(codes.Unauthenticated, err.Error())
				}
				return wrapperspb.String(region), nil
			}
			if interceptor == nil {
				return handle(ctx, in)
			}
			return interceptor(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: whoamiMethod}, handle)
		},
	}},
}

// claimInterceptor is what the roaming server's interceptor does with
// the roamfed-region metadata.
func claimInterceptor(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("roamfed-region")
	if len(vals) != 1 {
		return nil, status.Error(codes.Unauthenticated, "name one region")
	}
	if err := CheckClaim(ctx, vals[0]); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// serveWhoami serves whoami on loopback with creds and returns its
// address.
func serveWhoami(t *testing.T, creds credentials.TransportCredentials) (string, *whoami) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(creds), grpc.ChainUnaryInterceptor(claimInterceptor))
	w := &whoami{}
	srv.RegisterService(&whoamiDesc, w)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-served
	})
	return lis.Addr().String(), w
}

// callWhoami dials target with creds, claims claim, and returns the
// region the server saw.
func callWhoami(t *testing.T, target string, creds credentials.TransportCredentials, claim string, opts ...grpc.DialOption) (string, error) {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+target, append([]grpc.DialOption{grpc.WithTransportCredentials(creds)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "roamfed-region", claim)
	out := new(wrapperspb.StringValue)
	if err := conn.Invoke(ctx, whoamiMethod, wrapperspb.String("?"), out); err != nil {
		return "", err
	}
	return out.GetValue(), nil
}

// wantRefused checks that a gRPC call failed in the handshake and never
// reached the service.
func wantRefused(t *testing.T, err error, w *whoami, msg string) {
	t.Helper()
	if status.Code(err) != codes.Unavailable {
		t.Errorf("call = %v; want Unavailable (refused in the handshake)", err)
	}
	if msg != "" && !strings.Contains(err.Error(), msg) {
		t.Errorf("call = %v; want it to say %q", err, msg)
	}
	if n := w.calls.Load(); n != 0 {
		t.Errorf("the service ran %d times", n)
	}
}

func TestMutualTLS(t *testing.T) {
	dir := initDir(t)
	ap, eu := load(t, dir, "ap"), load(t, dir, "eu")
	handshakeOK(t, ap.ServerTLS(), eu.ClientTLS("ap"))

	addr, w := serveWhoami(t, ap.ServerCredentials())
	got, err := callWhoami(t, addr, credentials.NewTLS(eu.ClientTLS("ap")), "eu")
	if err != nil || got != "eu" {
		t.Fatalf("whoami = %q, %v; want eu", got, err)
	}
	if w.calls.Load() != 1 {
		t.Fatalf("the service ran %d times", w.calls.Load())
	}
}

func TestOtherCARefused(t *testing.T) {
	dir := initDir(t)
	ap, eu := load(t, dir, "ap"), load(t, dir, "eu")
	evil := otherCA(t)
	evilEU := forged(t, evil, region(t, "eu"), nil)
	evilAP := forged(t, evil, region(t, "ap"), nil)

	t.Run("client", func(t *testing.T) {
		serr, _ := handshake(t, ap.ServerTLS(), asClient(eu, "ap", evilEU))
		var unknown x509.UnknownAuthorityError
		if !errors.As(serr, &unknown) {
			t.Fatalf("server handshake = %v; want x509.UnknownAuthorityError", serr)
		}
		addr, w := serveWhoami(t, ap.ServerCredentials())
		_, err := callWhoami(t, addr, credentials.NewTLS(asClient(eu, "ap", evilEU)), "eu")
		wantRefused(t, err, w, "")
	})
	t.Run("server", func(t *testing.T) {
		_, cerr := handshake(t, asServer(ap, evilAP), eu.ClientTLS("ap"))
		var unknown x509.UnknownAuthorityError
		if !errors.As(cerr, &unknown) {
			t.Fatalf("client handshake = %v; want x509.UnknownAuthorityError", cerr)
		}
		addr, w := serveWhoami(t, credentials.NewTLS(asServer(ap, evilAP)))
		_, err := callWhoami(t, addr, credentials.NewTLS(eu.ClientTLS("ap")), "eu")
		wantRefused(t, err, w, "unknown authority")
	})
}

func TestClaimOfAnotherRegion(t *testing.T) {
	dir := initDir(t)
	us, ap := load(t, dir, "us"), load(t, dir, "ap")
	addr, w := serveWhoami(t, us.ServerCredentials())
	creds := credentials.NewTLS(ap.ClientTLS("us"))

	// ap's certificate claiming to be eu.
	_, err := callWhoami(t, addr, creds, "eu")
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), `certificate is for "ap"`) {
		t.Fatalf("claiming eu with ap's certificate = %v; want PermissionDenied", err)
	}
	if w.calls.Load() != 0 {
		t.Fatal("the service ran")
	}
	// The same connection, claiming the truth, is served.
	if got, err := callWhoami(t, addr, creds, "ap"); err != nil || got != "ap" {
		t.Fatalf("whoami = %q, %v; want ap", got, err)
	}
}

func TestCheckClaimErrors(t *testing.T) {
	err := CheckClaim(context.Background(), "eu")
	if status.Code(err) != codes.Unauthenticated || !errors.Is(err, ErrNoPeerCert) {
		t.Fatalf("CheckClaim without a peer = %v; want Unauthenticated wrapping ErrNoPeerCert", err)
	}

	// A call over plain TCP has no certificate to speak for it.
	addr, w := serveWhoami(t, insecure.NewCredentials())
	_, err = callWhoami(t, addr, insecure.NewCredentials(), "eu")
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "not TLS") {
		t.Fatalf("call without TLS = %v; want Unauthenticated", err)
	}
	if w.calls.Load() != 0 {
		t.Fatal("the service ran")
	}
}

func TestExpiredRefused(t *testing.T) {
	dir := initDir(t)
	ap, eu := load(t, dir, "ap"), load(t, dir, "eu")
	ca := caOf(t, dir)
	expired := func(c *x509.Certificate) {
		c.NotBefore, c.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
	}
	notYet := func(c *x509.Certificate) {
		c.NotBefore, c.NotAfter = time.Now().Add(24*time.Hour), time.Now().Add(48*time.Hour)
	}
	for name, edit := range map[string]func(*x509.Certificate){"expired": expired, "not yet valid": notYet} {
		t.Run(name+" client", func(t *testing.T) {
			cert := forged(t, ca, region(t, "eu"), edit)
			serr, _ := handshake(t, ap.ServerTLS(), asClient(eu, "ap", cert))
			var invalid x509.CertificateInvalidError
			if !errors.As(serr, &invalid) || invalid.Reason != x509.Expired {
				t.Fatalf("server handshake = %v; want x509 Expired", serr)
			}
			addr, w := serveWhoami(t, ap.ServerCredentials())
			_, err := callWhoami(t, addr, credentials.NewTLS(asClient(eu, "ap", cert)), "eu")
			wantRefused(t, err, w, "")
		})
		t.Run(name+" server", func(t *testing.T) {
			cert := forged(t, ca, region(t, "ap"), edit)
			addr, w := serveWhoami(t, credentials.NewTLS(asServer(ap, cert)))
			_, err := callWhoami(t, addr, credentials.NewTLS(eu.ClientTLS("ap")), "eu")
			wantRefused(t, err, w, "certificate has expired or is not yet valid")
		})
	}
}

func TestNoRegionURIRefused(t *testing.T) {
	dir := initDir(t)
	ap, eu := load(t, dir, "ap"), load(t, dir, "eu")
	ca := caOf(t, dir)
	edits := map[string]func(*x509.Certificate){
		"no URI SAN": func(c *x509.Certificate) { c.URIs = nil },
		"two region URIs": func(c *x509.Certificate) {
			c.URIs = append(c.URIs, RegionURI("us"))
		},
		"malformed URI": func(c *x509.Certificate) {
			c.URIs = []*url.URL{{Scheme: "roamfed", Host: "region", Path: "/EU"}}
		},
		"only a SPIFFE ID": func(c *x509.Certificate) {
			c.URIs = []*url.URL{{Scheme: "spiffe", Host: "roamfed", Path: "/region/eu"}}
		},
	}
	for name, edit := range edits {
		t.Run(name+" client", func(t *testing.T) {
			cert := forged(t, ca, region(t, "eu"), edit)
			serr, _ := handshake(t, ap.ServerTLS(), asClient(eu, "ap", cert))
			if !errors.Is(serr, ErrNoRegionURI) && !errors.Is(serr, ErrBadRegionURI) {
				t.Fatalf("server handshake = %v; want a refusal for the region URI", serr)
			}
			addr, w := serveWhoami(t, ap.ServerCredentials())
			_, err := callWhoami(t, addr, credentials.NewTLS(asClient(eu, "ap", cert)), "eu")
			wantRefused(t, err, w, "")
		})
		t.Run(name+" server", func(t *testing.T) {
			cert := forged(t, ca, region(t, "ap"), edit)
			_, cerr := handshake(t, asServer(ap, cert), eu.ClientTLS("ap"))
			if !errors.Is(cerr, ErrNoRegionURI) && !errors.Is(cerr, ErrBadRegionURI) {
				t.Fatalf("client handshake = %v; want a refusal for the region URI", cerr)
			}
			addr, w := serveWhoami(t, credentials.NewTLS(asServer(ap, cert)))
			_, err := callWhoami(t, addr, credentials.NewTLS(eu.ClientTLS("ap")), "eu")
			wantRefused(t, err, w, "")
		})
	}
}

// TestWrongUsageRefused: a certificate of the federation CA that is only
// for servers cannot be a region's client certificate, and one only for
// clients cannot serve.
func TestWrongUsageRefused(t *testing.T) {
	dir := initDir(t)
	ap, eu := load(t, dir, "ap"), load(t, dir, "eu")
	ca := caOf(t, dir)
	serverOnly := forged(t, ca, region(t, "eu"), func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} })
	clientOnly := forged(t, ca, region(t, "ap"), func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth} })
	var invalid x509.CertificateInvalidError
	if serr, _ := handshake(t, ap.ServerTLS(), asClient(eu, "ap", serverOnly)); !errors.As(serr, &invalid) || invalid.Reason != x509.IncompatibleUsage {
		t.Errorf("server-only certificate as client: server handshake = %v; want IncompatibleUsage", serr)
	}
	if _, cerr := handshake(t, asServer(ap, clientOnly), eu.ClientTLS("ap")); !errors.As(cerr, &invalid) || invalid.Reason != x509.IncompatibleUsage {
		t.Errorf("client-only certificate as server: client handshake = %v; want IncompatibleUsage", cerr)
	}
}

func TestClientTLSRefusesAnotherRegion(t *testing.T) {
	dir := initDir(t)
	us, eu := load(t, dir, "us"), load(t, dir, "eu")

	// eu means to reach ap, but the server at the address is us.
	_, cerr := handshake(t, us.ServerTLS(), eu.ClientTLS("ap"))
	if !errors.Is(cerr, ErrWrongRegion) {
		t.Fatalf("client handshake = %v; want ErrWrongRegion", cerr)
	}
	addr, w := serveWhoami(t, us.ServerCredentials())
	_, err := callWhoami(t, addr, credentials.NewTLS(eu.ClientTLS("ap")), "eu")
	wantRefused(t, err, w, "certificate is for another region")

	if got, err := callWhoami(t, addr, credentials.NewTLS(eu.ClientTLS("us")), "eu"); err != nil || got != "eu" {
		t.Fatalf("whoami = %q, %v; want eu", got, err)
	}
}

// TestPeerCredentials dials as the roaming system does: by the address the
// federation file gives, which here is a name no certificate carries and
// no resolver knows, through a dialer that goes elsewhere (as a relay
// tunnel does). The region in the certificate decides.
func TestPeerCredentials(t *testing.T) {
	dir := initDir(t)
	ap, eu, us := load(t, dir, "ap"), load(t, dir, "eu"), load(t, dir, "us")
	apAddr, _ := serveWhoami(t, ap.ServerCredentials())
	usAddr, _ := serveWhoami(t, us.ServerCredentials())
	addrs := map[string]string{
		"ap": "ap.roaming.invalid:7200",
		"eu": "eu.roaming.invalid:7200",
		"us": "us.roaming.invalid:7200",
	}
	tunnel := func(to string) grpc.DialOption {
		return grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", to)
		})
	}
	creds := eu.PeerCredentials(addrs)

	if got, err := callWhoami(t, addrs["ap"], creds, "eu", tunnel(apAddr)); err != nil || got != "eu" {
		t.Fatalf("whoami at ap = %q, %v; want eu", got, err)
	}
	if got, err := callWhoami(t, addrs["us"], creds.Clone(), "eu", tunnel(usAddr)); err != nil || got != "eu" {
		t.Fatalf("whoami at us = %q, %v; want eu", got, err)
	}
	// The tunnel for ap ends at us: refused.
	if _, err := callWhoami(t, addrs["ap"], creds, "eu", tunnel(usAddr)); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "another region") {
		t.Fatalf("ap's address reaching us = %v; want Unavailable naming the wrong region", err)
	}
	// An address that is no peer's, and this region's own, are refused.
	for _, target := range []string{"nobody.invalid:7200", addrs["eu"]} {
		if _, err := callWhoami(t, target, creds, "eu", tunnel(apAddr)); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "not the roaming address of a peer") {
			t.Fatalf("dialing %s = %v; want Unavailable", target, err)
		}
	}
	if _, _, err := creds.ServerHandshake(nil); err == nil {
		t.Error("peer credentials served")
	}
}

func TestEnsureDev(t *testing.T) {
	fed, err := regions.DevFederation()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "dev-certs")
	set, err := EnsureDev(dir, fed)
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Created) != 2+2*len(fed.Regions) {
		t.Errorf("first EnsureDev created %v", set.Created)
	}
	for _, r := range fed.Regions {
		if m := set.For(r.Name); m == nil || m.Region() != r.Name {
			t.Fatalf("no material for %s", r.Name)
		}
	}
	if set.For("zz") != nil {
		t.Error("material for a region not in the federation")
	}
	handshakeOK(t, set.For("ap").ServerTLS(), set.For("eu").ClientTLS("ap"))
	before := snapshot(t, dir)

	// Everything usable is kept.
	again, err := EnsureDev(dir, fed)
	if err != nil {
		t.Fatal(err)
	}
	if len(again.Created) != 0 || !mapsEqual(before, snapshot(t, dir)) {
		t.Fatalf("second EnsureDev created %v", again.Created)
	}

	// A lost certificate, and one whose region moved, are replaced; the
	// rest stays.
	if err := os.Remove(filepath.Join(dir, "eu.pem")); err != nil {
		t.Fatal(err)
	}
	moved := *fed
	moved.Regions = slices.Clone(fed.Regions)
	moved.Regions[2].RoamingAddr = "us.dev.invalid:7203"
	again, err = EnsureDev(dir, &moved)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"eu.pem", "eu-key.pem", "us.pem", "us-key.pem"}; !slices.Equal(again.Created, want) {
		t.Fatalf("EnsureDev created %v; want %v", again.Created, want)
	}
	if !slices.Contains(again.For("us").Certificate().DNSNames, "us.dev.invalid") {
		t.Errorf("us DNS SANs %v", again.For("us").Certificate().DNSNames)
	}
	after := snapshot(t, dir)
	for _, name := range []string{"ca.pem", "ca-key.pem", "ap.pem", "ap-key.pem"} {
		if !bytes.Equal(before[name], after[name]) {
			t.Errorf("%s changed", name)
		}
	}
	handshakeOK(t, again.For("us").ServerTLS(), again.For("ap").ClientTLS("us"))

	// Without the CA key there is no CA to issue with: a new federation.
	if err := os.Remove(filepath.Join(dir, "ca-key.pem")); err != nil {
		t.Fatal(err)
	}
	again, err = EnsureDev(dir, &moved)
	if err != nil {
		t.Fatal(err)
	}
	if len(again.Created) != 2+2*len(fed.Regions) {
		t.Fatalf("EnsureDev without the CA key created %v", again.Created)
	}
	handshakeOK(t, again.For("ap").ServerTLS(), again.For("us").ClientTLS("ap"))
}
