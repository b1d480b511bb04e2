package mesh

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"

	"google.golang.org/grpc/credentials"

	"github.com/roamfed/roamfed/internal/certs"
)

// Credentials wraps the TLS transport credentials of the region's links,
// the dialing ones and the listener's, so that the mesh sees records that
// fail TLS's own checks. Every roaming connection is TLS 1.3 end to end
// between the two regions, also when a third region relays it, and every
// record is authenticated with keys only the two ends hold: a byte altered
// on the way (by a relay, or on the network) makes the receiving end's TLS
// refuse the record (bad_record_mac) and close the connection, before gRPC
// reads anything of it. Nothing of an altered record is ever handed to a
// handler; the calls on the connection fail, and their senders resend on
// a new connection (the outbox, the submitters and deliverers do), where
// duplicates are removed by message id.
//
// The mesh counts each such connection once, against the peer region named
// in its certificate, as an integrity failure of that link
// ([LinkStatus.IntegrityFailures], [Mesh.IntegrityFailures]), and logs it
// with the route the connection took. Only the end that found the bad
// record counts it; the other end sees the alert TLS sends, as a closed
// connection.
func (m *Mesh) Credentials(creds credentials.TransportCredentials) credentials.TransportCredentials {
	return &integrityCreds{TransportCredentials: creds, m: m}
}

type integrityCreds struct {
	credentials.TransportCredentials
	m *Mesh
}

func (c *integrityCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ClientHandshake(ctx, authority, raw)
	if err != nil {
		return nil, nil, err
	}
	via := ""
	if tc, ok := raw.(*trackedConn); ok {
		via = tc.via
	}
	return c.m.watch(conn, info, via, "dialed"), info, nil
}

func (c *integrityCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		return nil, nil, err
	}
	return c.m.watch(conn, info, "", "accepted"), info, nil
}

func (c *integrityCreds) Clone() credentials.TransportCredentials {
	return &integrityCreds{TransportCredentials: c.TransportCredentials.Clone(), m: c.m}
}

// watch wraps a TLS connection whose handshake succeeded.
func (m *Mesh) watch(conn net.Conn, info credentials.AuthInfo, via, side string) net.Conn {
	peer := ""
	if ti, ok := info.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
		peer, _ = certs.RegionOf(ti.State.PeerCertificates[0])
	}
	return &integrityConn{Conn: conn, report: func(err error) { m.integrityFailure(peer, via, side, err) }}
}

// integrityConn reports the first record of its connection that TLS
// refused.
type integrityConn struct {
	net.Conn
	once   sync.Once
	report func(error)
}

func (c *integrityConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil && BadRecord(err) {
		c.once.Do(func() { c.report(err) })
	}
	return n, err
}

// BadRecord reports whether err is crypto/tls refusing a record it read:
// a "local error" alert (bad_record_mac above all, or a record that does
// not parse). TLS's alerts are not exported as types; the net.OpError it
// wraps them in, and their "tls: " text, are its stable surface. A peer's
// own TLS never sends such records, so one means the bytes changed on the
// way. Alerts the peer sent ("remote error") are not counted: the peer
// counts those records itself.
func BadRecord(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "local error" && op.Err != nil && strings.HasPrefix(op.Err.Error(), "tls: ")
}

func (m *Mesh) integrityFailure(peer, via, side string, err error) {
	m.integrity.Add(1)
	m.mu.Lock()
	if l, ok := m.links[peer]; ok {
		l.integrity++
	}
	m.mu.Unlock()
	attrs := []any{slog.String("peer", peer), slog.String("conn", side), slog.Any("err", err)}
	switch {
	case side != "dialed":
		// An accepted connection may have come through a relay; this
		// end cannot tell.
	case via == "":
		attrs = append(attrs, slog.String("route", "direct"))
	default:
		attrs = append(attrs, slog.String("route", "via "+via))
	}
	m.log.Warn("link integrity failure: a TLS record from the peer did not authenticate; connection closed", attrs...)
}

// IntegrityFailures returns how many roaming connections, since New,
// closed on a record that failed TLS's checks (see Credentials).
func (m *Mesh) IntegrityFailures() uint64 { return m.integrity.Load() }
