package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/roamfed/roamfed/regions"
)

// Lifetimes of what Init and Issue create.
const (
	CAValidity     = 10 * 365 * 24 * time.Hour
	RegionValidity = 365 * 24 * time.Hour
)

// backdate is how far before now a new certificate becomes valid, so that
// a peer whose clock is a little behind accepts it at once.
const backdate = time.Hour

// File names in a certificate directory.
const (
	CAFile    = "ca.pem"
	CAKeyFile = "ca-key.pem"
)

// CertFile and KeyFile name a region's certificate and key files.
func CertFile(region string) string { return region + ".pem" }

// KeyFile names a region's private key file.
func KeyFile(region string) string { return region + "-key.pem" }

// Errors of Init, Issue and Load.
var (
	// ErrExists: a file Init or Issue would write exists, and Force is off.
	ErrExists = errors.New("certs: file exists")
	// ErrBadRegion: a region's name or roaming address cannot go into a
	// certificate.
	ErrBadRegion = errors.New("certs: bad region")
)

// InitOptions change what Init and Issue may do.
type InitOptions struct {
	// Force replaces files that exist. Without it, nothing is written
	// when any target exists.
	Force bool
}

// Init creates a federation CA and a certificate and key for every region
// in dir (made 0700 if missing). It refuses, writing nothing, if any file
// it would write exists; see InitWith.
func Init(dir string, rs []regions.Region) error {
	return InitWith(dir, rs, InitOptions{})
}

// InitWith is Init with options. With Force, a new CA replaces the old
// one, and every region must get the new ca.pem and its new pair.
func InitWith(dir string, rs []regions.Region, o InitOptions) error {
	if len(rs) == 0 {
		return fmt.Errorf("%w: no regions to issue certificates for", ErrBadRegion)
	}
	seen := make(map[string]bool, len(rs))
	for _, r := range rs {
		if _, err := regionTemplate(r); err != nil {
			return err
		}
		if seen[r.Name] {
			return fmt.Errorf("%w: region %q is listed twice", ErrBadRegion, r.Name)
		}
		seen[r.Name] = true
	}
	now := time.Now()
	ca, err := newAuthority("roamfed federation CA", now.Add(-backdate), now.Add(CAValidity))
	if err != nil {
		return err
	}
	files := []file{
		{CAFile, ca.certPEM(), 0o644},
		{CAKeyFile, ca.keyPEM, 0o600},
	}
	for _, r := range rs {
		certPEM, keyPEM, err := ca.issueRegion(r, now)
		if err != nil {
			return err
		}
		files = append(files, file{CertFile(r.Name), certPEM, 0o644}, file{KeyFile(r.Name), keyPEM, 0o600})
	}
	return writeFiles(dir, files, o.Force)
}

// Issue creates a certificate and key for one region with the CA in dir
// (ca.pem and ca-key.pem): for a region that joins the federation, or to
// renew one. It refuses to replace the region's files unless Force.
func Issue(dir string, r regions.Region, o InitOptions) error {
	if _, err := regionTemplate(r); err != nil {
		return err
	}
	ca, err := loadAuthority(dir)
	if err != nil {
		return err
	}
	certPEM, keyPEM, err := ca.issueRegion(r, time.Now())
	if err != nil {
		return err
	}
	return writeFiles(dir, []file{
		{CertFile(r.Name), certPEM, 0o644},
		{KeyFile(r.Name), keyPEM, 0o600},
	}, o.Force)
}

// authority is a CA that can sign.
type authority struct {
	cert   *x509.Certificate
	key    crypto.Signer
	keyPEM []byte
}

func (a *authority) certPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.cert.Raw})
}

// newKey returns a fresh P-256 key and its PKCS #8 PEM.
func newKey() (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: marshal key: %w", err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// serial returns a random positive 128-bit serial number.
func serial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("certs: serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// newAuthority creates a self-signed CA valid from notBefore to notAfter.
func newAuthority(name string, notBefore, notAfter time.Time) (*authority, error) {
	key, keyPEM, err := newKey()
	if err != nil {
		return nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"roamfed"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		// The CA signs region certificates directly; it cannot make
		// intermediate CAs.
		MaxPathLen:     0,
		MaxPathLenZero: true,
		KeyUsage:       x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("certs: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("certs: parse CA certificate: %w", err)
	}
	return &authority{cert: cert, key: key, keyPEM: keyPEM}, nil
}

// loadAuthority reads the CA of dir, certificate and key.
func loadAuthority(dir string) (*authority, error) {
	certs, err := readCerts(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("certs: CA key: %w", err)
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("certs: %s: %w", filepath.Join(dir, CAKeyFile), err)
	}
	// ca.pem may list several CAs; the key says which one signs.
	for _, c := range certs {
		if c.IsCA && publicKeysEqual(c.PublicKey, key.Public()) {
			return &authority{cert: c, key: key, keyPEM: keyPEM}, nil
		}
	}
	return nil, fmt.Errorf("certs: %s matches no CA certificate in %s", filepath.Join(dir, CAKeyFile), filepath.Join(dir, CAFile))
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ka, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ka.Equal(b)
}

// parseKey reads a PKCS #8 (or SEC 1 EC) private key in PEM.
func parseKey(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key", block.Type)
	}
	if err != nil {
		return nil, err
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key of type %T cannot sign", key)
	}
	return s, nil
}

// regionTemplate is the certificate template for r, without serial number
// and validity: the identity URI and the names of its roaming host.
func regionTemplate(r regions.Region) (*x509.Certificate, error) {
	if !validName(r.Name) {
		return nil, fmt.Errorf("%w: %q is not a region name (^[a-z][a-z0-9-]{0,31}$)", ErrBadRegion, r.Name)
	}
	dns, ips, err := hostNames(r.RoamingAddr)
	if err != nil {
		return nil, fmt.Errorf("%w: region %s: %w", ErrBadRegion, r.Name, err)
	}
	return &x509.Certificate{
		Subject:     pkix.Name{CommonName: r.Name, Organization: []string{"roamfed"}},
		URIs:        []*url.URL{RegionURI(r.Name)},
		DNSNames:    dns,
		IPAddresses: ips,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		// One certificate for both ends of every region-to-region
		// connection: the roaming listener, and the region's calls out.
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}, nil
}

// hostNames returns the SANs for a roaming address: its host, as a DNS
// name or an IP, and always localhost, 127.0.0.1 and ::1 for development.
func hostNames(addr string) ([]string, []net.IP, error) {
	dns := []string{"localhost"}
	ips := []net.IP{net.IPv4(127, 0, 0, 1).To4(), net.IPv6loopback}
	if addr == "" {
		return nil, nil, errors.New("no roaming_addr")
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("roaming_addr %q: %w", addr, err)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Zone() != "" {
			return nil, nil, fmt.Errorf("roaming_addr %q: an IP with a zone cannot be a certificate name", addr)
		}
		nip := net.IP(ip.Unmap().AsSlice())
		if !slices.ContainsFunc(ips, nip.Equal) {
			ips = append(ips, nip)
		}
		return dns, ips, nil
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if host == "" {
		return nil, nil, fmt.Errorf("roaming_addr %q has no host", addr)
	}
	if host != "localhost" {
		dns = append(dns, host)
	}
	return dns, ips, nil
}

// issueRegion signs a certificate for r, valid for RegionValidity from now
// but never past the CA, and returns it and its new key in PEM.
func (a *authority) issueRegion(r regions.Region, now time.Time) (certPEM, keyPEM []byte, err error) {
	tmpl, err := regionTemplate(r)
	if err != nil {
		return nil, nil, err
	}
	tmpl.NotBefore = now.Add(-backdate)
	tmpl.NotAfter = now.Add(RegionValidity)
	if tmpl.NotAfter.After(a.cert.NotAfter) {
		tmpl.NotAfter = a.cert.NotAfter
	}
	if !tmpl.NotAfter.After(now) {
		return nil, nil, fmt.Errorf("certs: the CA expired at %s; create a new one", a.cert.NotAfter.Format(time.RFC3339))
	}
	return a.sign(tmpl)
}

// sign completes tmpl with a serial number, signs it with a new key, and
// returns both in PEM.
func (a *authority) sign(tmpl *x509.Certificate) (certPEM, keyPEM []byte, err error) {
	key, keyPEM, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	if tmpl.SerialNumber, err = serial(); err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, key.Public(), a.key)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: sign certificate for %q: %w", tmpl.Subject.CommonName, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

// file is one file to write.
type file struct {
	name string
	data []byte
	mode fs.FileMode
}

// writeFiles writes files into dir. Without force it first checks that
// none exists and then creates each exclusively, removing what it made if
// one fails; with force it replaces each by a rename, so that a reader
// never sees half a file.
func writeFiles(dir string, files []file, force bool) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	if force {
		for _, f := range files {
			if err := replaceFile(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
				return err
			}
		}
		return nil
	}
	var exist []string
	for _, f := range files {
		if _, err := os.Lstat(filepath.Join(dir, f.name)); err == nil {
			exist = append(exist, f.name)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("certs: %w", err)
		}
	}
	if len(exist) > 0 {
		return fmt.Errorf("%w in %s: %s; nothing was written (force replaces them)", ErrExists, dir, strings.Join(exist, ", "))
	}
	var made []string
	for _, f := range files {
		path := filepath.Join(dir, f.name)
		if err := createFile(path, f.data, f.mode); err != nil {
			for _, p := range made {
				_ = os.Remove(p)
			}
			return err
		}
		made = append(made, path)
	}
	return nil
}

// createFile writes a new file, failing if it exists.
func createFile(path string, data []byte, mode fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%w: %s", ErrExists, path)
	}
	if err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		_ = os.Remove(path)
		return fmt.Errorf("certs: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		_ = os.Remove(path)
		return fmt.Errorf("certs: sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("certs: close %s: %w", path, err)
	}
	return nil
}

// replaceFile writes data to a temporary file beside path and renames it
// over path.
func replaceFile(path string, data []byte, mode fs.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	name := tmp.Name()
	fail := func(err error) error {
		tmp.Close()
		_ = os.Remove(name)
		return fmt.Errorf("certs: write %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		return fail(err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fail(err)
	}
	if err := tmp.Sync(); err != nil {
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		_ = os.Remove(name)
		return fmt.Errorf("certs: write %s: %w", path, err)
	}
	if err := os.Rename(name, path); err != nil {
		_ = os.Remove(name)
		return fmt.Errorf("certs: %w", err)
	}
	return nil
}
