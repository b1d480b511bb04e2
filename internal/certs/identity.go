package certs

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// The URI SAN that names a region: roamfed://region/<name>.
const (
	uriScheme = "roamfed"
	uriHost   = "region"
	// URIPrefix is what every region URI starts with.
	URIPrefix = uriScheme + "://" + uriHost + "/"
)

// Errors of RegionOf, PeerRegion and CheckClaim.
var (
	// ErrNoRegionURI: the certificate has no roamfed://region/ URI SAN,
	// or more than one.
	ErrNoRegionURI = errors.New("certs: certificate names no single region")
	// ErrBadRegionURI: a roamfed:// URI SAN is not of the form
	// roamfed://region/<name> with a well-formed name.
	ErrBadRegionURI = errors.New("certs: malformed region URI")
	// ErrNoPeerCert: the call did not arrive over TLS with a verified
	// client certificate.
	ErrNoPeerCert = errors.New("certs: no verified peer certificate")
	// ErrWrongRegion: the certificate names another region than the one
	// expected or claimed.
	ErrWrongRegion = errors.New("certs: certificate is for another region")
)

// RegionURI returns roamfed://region/<name>.
func RegionURI(name string) *url.URL {
	return &url.URL{Scheme: uriScheme, Host: uriHost, Path: "/" + name}
}

// RegionOf returns the region a certificate names: the name in its one
// URI SAN roamfed://region/<name>. URIs of other schemes are ignored; a
// roamfed:// URI of any other shape, a second region URI, or a name that
// is not ^[a-z][a-z0-9-]{0,31}$ makes the certificate name no region. It
// does not verify the certificate.
func RegionOf(cert *x509.Certificate) (string, error) {
	if cert == nil {
		return "", fmt.Errorf("%w: no certificate", ErrNoRegionURI)
	}
	var names []string
	for _, u := range cert.URIs {
		if !strings.EqualFold(u.Scheme, uriScheme) {
			continue
		}
		name, err := regionFromURI(u)
		if err != nil {
			return "", err
		}
		names = append(names, name)
	}
	switch len(names) {
	case 1:
		return names[0], nil
	case 0:
		return "", fmt.Errorf("%w: %q has no URI SAN %s<name>", ErrNoRegionURI, truncate(cert.Subject.CommonName, 64), URIPrefix)
	default:
		return "", fmt.Errorf("%w: %q has %d region URIs (%s); it must have one", ErrNoRegionURI, truncate(cert.Subject.CommonName, 64), len(names), truncate(strings.Join(names, ", "), 128))
	}
}

// regionFromURI parses roamfed://region/<name>, and nothing else.
func regionFromURI(u *url.URL) (string, error) {
	shown := truncate(u.String(), 128)
	if u.Opaque != "" || u.User != nil || u.Host != uriHost || u.RawQuery != "" || u.ForceQuery ||
		u.Fragment != "" || u.RawPath != "" || !strings.HasPrefix(u.Path, "/") {
		return "", fmt.Errorf("%w: %q is not %s<name>", ErrBadRegionURI, shown, URIPrefix)
	}
	name := u.Path[1:]
	if !validName(name) {
		return "", fmt.Errorf("%w: %q: the name must match ^[a-z][a-z0-9-]{0,31}$", ErrBadRegionURI, shown)
	}
	return name, nil
}

// validName reports whether s is a region name: ^[a-z][a-z0-9-]{0,31}$,
// the rule of the federation file and of roaming metadata.
func validName(s string) bool {
	if len(s) == 0 || len(s) > 32 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// truncate keeps a value from a certificate short enough to quote.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// PeerRegion returns the region named by the verified client certificate
// of a call on a server that uses ServerTLS. It fails with ErrNoPeerCert
// when the call came over another transport or without a verified
// certificate, and with RegionOf's errors otherwise. Only a chain that the
// handshake verified counts, never a certificate merely presented.
func PeerRegion(ctx context.Context) (string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return "", fmt.Errorf("%w: the call carries no transport security information", ErrNoPeerCert)
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return "", fmt.Errorf("%w: the call came over %s, not TLS", ErrNoPeerCert, p.AuthInfo.AuthType())
	}
	chains := info.State.VerifiedChains
	if len(chains) == 0 || len(chains[0]) == 0 {
		return "", fmt.Errorf("%w: the TLS connection has no verified client certificate", ErrNoPeerCert)
	}
	return RegionOf(chains[0][0])
}

// CheckClaim checks that the region a call claims (for instance in the
// roamfed-region metadata) is the region of its verified certificate. The
// error carries its own gRPC status: codes.Unauthenticated without a
// verified certificate naming a region (wrapping ErrNoPeerCert or
// RegionOf's errors), codes.PermissionDenied when the certificate names
// another region (wrapping ErrWrongRegion).
func CheckClaim(ctx context.Context, claimed string) error {
	region, err := PeerRegion(ctx)
	if err != nil {
		return &statusError{code: codes.Unauthenticated, err: err}
	}
	if region != claimed {
		return &statusError{code: codes.PermissionDenied, err: fmt.Errorf(
			"%w: the call claims region %q but its certificate is for %q", ErrWrongRegion, truncate(claimed, 64), region)}
	}
	return nil
}

// statusError is a domain error with its own gRPC status, which
// api/rpcstatus keeps as is.
type statusError struct {
	code codes.Code
	err  error
}

func (e *statusError) Error() string              { return e.err.Error() }
func (e *statusError) Unwrap() error              { return e.err }
func (e *statusError) GRPCStatus() *status.Status { return status.New(e.code, e.err.Error()) }
