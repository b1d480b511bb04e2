package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc/credentials"
)

// Material is what one region needs for mutual TLS with its peers: the
// federation's CAs and its own certificate and key.
type Material struct {
	region string
	cert   tls.Certificate // Leaf is set
	cas    []*x509.Certificate
	pool   *x509.CertPool
}

// Load reads region's material from dir: ca.pem, <region>.pem and
// <region>-key.pem. It fails unless the key matches the certificate, the
// certificate chains to a CA in ca.pem for both server and client use,
// is valid now, and names region in its URI SAN. It does not read the CA
// key.
func Load(dir, region string) (*Material, error) {
	if !validName(region) {
		return nil, fmt.Errorf("%w: %q is not a region name (^[a-z][a-z0-9-]{0,31}$)", ErrBadRegion, region)
	}
	cas, err := readCerts(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, err
	}
	certPath, keyPath := filepath.Join(dir, CertFile(region)), filepath.Join(dir, KeyFile(region))
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("certs: region %s: %w", region, err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("certs: region %s: %w", region, err)
	}
	return newMaterial(region, cas, certPEM, keyPEM, fmt.Sprintf("%s and %s", certPath, keyPath))
}

// newMaterial checks a region's pair against cas; where names the pair's
// origin in errors.
func newMaterial(region string, cas []*x509.Certificate, certPEM, keyPEM []byte, where string) (*Material, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("certs: %s: %w", where, err)
	}
	m := &Material{region: region, cert: cert, cas: cas, pool: x509.NewCertPool()}
	for _, ca := range cas {
		m.pool.AddCert(ca)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if err := m.verify(cert.Certificate, usage, region); err != nil {
			return nil, fmt.Errorf("certs: %s: %w", where, err)
		}
	}
	return m, nil
}

// readCerts reads every CERTIFICATE block of a PEM file; each must be a CA.
func readCerts(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certs: %s: %w", path, err)
		}
		if !c.IsCA || !c.BasicConstraintsValid {
			return nil, fmt.Errorf("certs: %s: %q is not a CA certificate", path, c.Subject.CommonName)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("certs: %s holds no certificate", path)
	}
	return out, nil
}

// verify checks a presented chain (leaf first, in DER) as the handshake
// does: it chains to one of m's CAs for usage, is valid now, and its leaf
// names region; region "" accepts any region.
func (m *Material) verify(chain [][]byte, usage x509.ExtKeyUsage, region string) error {
	if len(chain) == 0 {
		return fmt.Errorf("%w: the peer sent no certificate", ErrNoPeerCert)
	}
	certs := make([]*x509.Certificate, len(chain))
	for i, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("certs: peer certificate: %w", err)
		}
		certs[i] = c
	}
	return m.verifyParsed(certs, usage, region)
}

func (m *Material) verifyParsed(certs []*x509.Certificate, usage x509.ExtKeyUsage, region string) error {
	if len(certs) == 0 {
		return fmt.Errorf("%w: the peer sent no certificate", ErrNoPeerCert)
	}
	opts := x509.VerifyOptions{
		Roots:         m.pool,
		Intermediates: x509.NewCertPool(),
		KeyUsages:     []x509.ExtKeyUsage{usage},
	}
	for _, c := range certs[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := certs[0].Verify(opts); err != nil {
		return fmt.Errorf("certs: certificate %q: %w", truncate(certs[0].Subject.CommonName, 64), err)
	}
	got, err := RegionOf(certs[0])
	if err != nil {
		return err
	}
	if region != "" && got != region {
		return fmt.Errorf("%w: expected region %q, the certificate is for %q", ErrWrongRegion, region, got)
	}
	return nil
}

// Region is the region this material is for.
func (m *Material) Region() string { return m.region }

// Certificate is the region's own certificate.
func (m *Material) Certificate() *x509.Certificate { return m.cert.Leaf }

// NotAfter is when the region's certificate expires; a region should be
// given a new one (Issue) well before.
func (m *Material) NotAfter() time.Time { return m.cert.Leaf.NotAfter }

// ServerTLS is the configuration of the roaming listener: TLS 1.3 only,
// this region's certificate, and a required client certificate that
// chains to the federation CA (never the system roots) and names a region.
// Whether that region may call is for the server's interceptors to say
// (PeerRegion).
func (m *Material) ServerTLS() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{m.cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    m.pool,
		// Every connection proves its certificate afresh rather than
		// resuming a session verified earlier, perhaps under other CAs;
		// roaming connections are long-lived, so this costs little.
		SessionTicketsDisabled: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			// The chain was verified against ClientCAs; a certificate of
			// the federation CA must still name exactly one region.
			if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
				return fmt.Errorf("%w: the client certificate was not verified", ErrNoPeerCert)
			}
			_, err := RegionOf(cs.VerifiedChains[0][0])
			return err
		},
	}
}

// ClientTLS is the configuration for connecting to peer: TLS 1.3 only,
// this region's certificate as client certificate, and a server
// certificate that chains to the federation CA for server use and names
// peer. The dialed host name is not checked (the connection may run
// through a relay tunnel whose address names another region); the URI SAN
// is the identity.
func (m *Material) ClientTLS(peer string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Always send the certificate, even if the server asks for
		// another CA: its refusal then says what is wrong, rather than
		// that no certificate came.
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &m.cert, nil },
		RootCAs:              m.pool,
		// Go's own check would compare the certificate with the dialed
		// host name; VerifyConnection does the whole check instead: the
		// chain, the usage, the validity and the region.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return m.verifyParsed(cs.PeerCertificates, x509.ExtKeyUsageServerAuth, peer)
		},
	}
}

// ServerCredentials is ServerTLS as gRPC transport credentials, for
// grpc.Creds.
func (m *Material) ServerCredentials() credentials.TransportCredentials {
	return credentials.NewTLS(m.ServerTLS())
}

// PeerCredentials returns gRPC transport credentials for connections to
// the peers in addrs (region name to roaming address, as the federation
// file spells it and as the conn's target names it after the scheme, for
// instance "passthrough:///"+addr). Each handshake looks the dialed
// authority up in addrs and accepts only a server whose certificate names
// that region (ClientTLS); an authority not in addrs is refused. An entry
// for this region itself is ignored.
func (m *Material) PeerCredentials(addrs map[string]string) credentials.TransportCredentials {
	pc := &peerCreds{
		byAddr: make(map[string]credentials.TransportCredentials, len(addrs)),
		peers:  make(map[string]string, len(addrs)),
	}
	for name, addr := range addrs {
		if name == m.region {
			continue
		}
		pc.byAddr[addr] = credentials.NewTLS(m.ClientTLS(name))
		pc.peers[addr] = name
	}
	return pc
}

// peerCreds picks ClientTLS(peer) by the dialed address.
type peerCreds struct {
	byAddr map[string]credentials.TransportCredentials
	peers  map[string]string // addr -> region, for errors
}

var _ credentials.TransportCredentials = (*peerCreds)(nil)

func (p *peerCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	c, ok := p.byAddr[authority]
	if !ok {
		return nil, nil, fmt.Errorf("certs: %q is not the roaming address of a peer region", truncate(authority, 128))
	}
	conn, info, err := c.ClientHandshake(ctx, authority, raw)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: TLS with region %s at %s: %w", p.peers[authority], authority, err)
	}
	return conn, info, nil
}

func (p *peerCreds) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("certs: peer credentials are for dialing; serve with ServerCredentials")
}

func (p *peerCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls"}
}

func (p *peerCreds) Clone() credentials.TransportCredentials {
	c := &peerCreds{byAddr: make(map[string]credentials.TransportCredentials, len(p.byAddr)), peers: p.peers}
	for a, tc := range p.byAddr {
		c.byAddr[a] = tc.Clone()
	}
	return c
}

// OverrideServerName is part of the gRPC interface and deprecated there;
// the server name plays no part in a region's identity.
func (p *peerCreds) OverrideServerName(string) error { return nil }
