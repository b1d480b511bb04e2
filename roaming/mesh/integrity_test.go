package mesh

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roamfed/roamfed/internal/certs"
	"github.com/roamfed/roamfed/regions"
)

// flipConn alters a byte in the middle of the next Write once armed.
type flipConn struct {
	net.Conn
	armed atomic.Bool
}

func (c *flipConn) Write(b []byte) (int, error) {
	if len(b) > 10 && c.armed.CompareAndSwap(true, false) {
		b = append([]byte(nil), b...)
		b[len(b)/2] ^= 1
	}
	return c.Conn.Write(b)
}

// TestBadRecord runs TLS 1.3 with region certificates over loopback, alters
// one byte of a record after the handshake, and checks that the reader's
// error is a bad record (crypto/tls's bad_record_mac, which BadRecord must
// keep recognizing across Go releases), while the writer's, the alert it
// is sent, and a clean close are not.
func TestBadRecord(t *testing.T) {
	fed, err := regions.Parse("t.yaml", []byte("regions:\n  - name: ap\n    roaming_addr: 127.0.0.1:1\n    client_addr: 127.0.0.1:2\n  - name: eu\n    roaming_addr: 127.0.0.1:3\n    client_addr: 127.0.0.1:4\n"))
	if err != nil {
		t.Fatal(err)
	}
	set, err := certs.EnsureDev(t.TempDir(), fed)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	serverErr := make(chan error, 1)
	go func() {
		raw, err := lis.Accept()
		if err != nil {
			serverErr <- err
			return
		}
		defer raw.Close()
		conn := tls.Server(raw, set.For("eu").ServerTLS())
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 64)
		_, err = io.ReadFull(conn, buf) // fails on the altered record
		serverErr <- err
	}()
	raw, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fc := &flipConn{Conn: raw}
	conn := tls.Client(fc, set.For("ap").ClientTLS("eu"))
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := conn.Handshake(); err != nil {
		t.Fatal(err)
	}
	fc.armed.Store(true)
	if _, err := conn.Write(make([]byte, 64)); err != nil {
		t.Fatal(err)
	}
	err = <-serverErr
	if !BadRecord(err) {
		t.Fatalf("reader of the altered record: %v (%T); want a bad record", err, err)
	}
	// The writer is told by an alert: not counted at its end.
	_, err = conn.Read(make([]byte, 1))
	if err == nil || BadRecord(err) {
		t.Fatalf("writer's end: %v; want the peer's alert, not a bad record", err)
	}
	for _, e := range []error{io.EOF, net.ErrClosed, errors.New("tls: bad record MAC"), &net.OpError{Op: "read", Err: io.ErrUnexpectedEOF}} {
		if BadRecord(e) {
			t.Errorf("BadRecord(%v) = true", e)
		}
	}
}
