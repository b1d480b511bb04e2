package certs

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/roamfed/roamfed/regions"
)

// renewBefore is how long before expiry EnsureDev replaces a certificate.
const renewBefore = 30 * 24 * time.Hour

// Set is the material of every region of a federation, for processes and
// tests that run several regions.
type Set struct {
	// Dir is where the files are.
	Dir string
	// Created lists the files EnsureDev wrote this time, empty when it
	// reused everything.
	Created []string

	regions map[string]*Material
}

// For returns the material of region, or nil if the Set has none.
func (s *Set) For(region string) *Material { return s.regions[region] }

// EnsureDev makes dir hold a CA and a certificate for every region of
// fed, for `regiond dev` and tests, and loads them. It keeps what is
// usable and replaces the rest: a missing, unreadable or soon expiring CA
// (then every region's certificate too), and any region certificate that
// is missing, does not load, expires within 30 days, or does not name its
// region's current roaming host. Never use it for a production
// federation: it keeps the CA key beside the regions' keys.
func EnsureDev(dir string, fed *regions.Federation) (*Set, error) {
	if fed == nil || len(fed.Regions) == 0 {
		return nil, fmt.Errorf("%w: no regions to issue certificates for", ErrBadRegion)
	}
	now := time.Now()
	s := &Set{Dir: dir, regions: make(map[string]*Material, len(fed.Regions))}
	ca, err := loadAuthority(dir)
	if err != nil || ca.cert.NotAfter.Before(now.Add(renewBefore)) {
		ca, err = newAuthority("roamfed dev federation CA", now.Add(-backdate), now.Add(CAValidity))
		if err != nil {
			return nil, err
		}
		if err := writeFiles(dir, []file{{CAFile, ca.certPEM(), 0o644}, {CAKeyFile, ca.keyPEM, 0o600}}, true); err != nil {
			return nil, err
		}
		s.Created = append(s.Created, CAFile, CAKeyFile)
	}
	for _, r := range fed.Regions {
		m, err := Load(dir, r.Name)
		if err == nil && usable(m, r, now) {
			s.regions[r.Name] = m
			continue
		}
		certPEM, keyPEM, err := ca.issueRegion(r, now)
		if err != nil {
			return nil, err
		}
		if err := writeFiles(dir, []file{{CertFile(r.Name), certPEM, 0o644}, {KeyFile(r.Name), keyPEM, 0o600}}, true); err != nil {
			return nil, err
		}
		s.Created = append(s.Created, CertFile(r.Name), KeyFile(r.Name))
		if m, err = Load(dir, r.Name); err != nil {
			return nil, errors.Join(errors.New("certs: a certificate just issued does not load"), err)
		}
		s.regions[r.Name] = m
	}
	return s, nil
}

// usable reports whether m can serve r for a while yet: it covers r's
// roaming host and does not expire soon.
func usable(m *Material, r regions.Region, now time.Time) bool {
	if m.NotAfter().Before(now.Add(renewBefore)) {
		return false
	}
	dns, ips, err := hostNames(r.RoamingAddr)
	if err != nil {
		return false
	}
	leaf := m.Certificate()
	for _, d := range dns {
		if !slices.Contains(leaf.DNSNames, d) {
			return false
		}
	}
	for _, ip := range ips {
		if !slices.ContainsFunc(leaf.IPAddresses, func(x net.IP) bool { return x.Equal(ip) }) {
			return false
		}
	}
	return true
}
