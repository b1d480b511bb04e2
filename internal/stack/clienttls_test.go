package stack_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	"github.com/roamfed/roamfed/internal/certs"
	"github.com/roamfed/roamfed/internal/password"
	"github.com/roamfed/roamfed/internal/stack"
	"github.com/roamfed/roamfed/regions"
)

// TestClientTLS serves clients over TLS: a client that trusts the CA
// registers; a plaintext client gets nowhere.
func TestClientTLS(t *testing.T) {
	dir := t.TempDir()
	if err := certs.Init(dir, []regions.Region{{Name: "local", RoamingAddr: "127.0.0.1:0"}}); err != nil {
		t.Fatal(err)
	}
	kp, err := tls.LoadX509KeyPair(filepath.Join(dir, certs.CertFile("local")), filepath.Join(dir, certs.KeyFile("local")))
	if err != nil {
		t.Fatal(err)
	}
	st, err := stack.Start(stack.Config{
		Region: "local", DataDir: t.TempDir(), ClientAddr: "127.0.0.1:0",
		ClientTLS: &tls.Config{Certificates: []tls.Certificate{kp}, MinVersion: tls.VersionTLS12},
		Password:  password.Params{Memory: 64, Time: 1, Threads: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = st.Shutdown(ctx)
	})
	caPEM, err := os.ReadFile(filepath.Join(dir, certs.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	register := func(creds credentials.TransportCredentials) error {
		conn, err := grpc.NewClient(st.ClientAddr(), grpc.WithTransportCredentials(creds))
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = clientv1.NewClientServiceClient(conn).Register(ctx, &clientv1.RegisterRequest{Username: "tina", Password: "tina-secret"})
		return err
	}
	if err := register(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "localhost"})); err != nil {
		t.Fatalf("register over TLS: %v", err)
	}
	if err := register(insecure.NewCredentials()); err == nil {
		t.Fatal("a plaintext client was served by a TLS listener")
	}
}
