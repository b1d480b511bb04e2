package certs

import (
	"crypto/x509"
	"errors"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

var regionNameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)

// FuzzRegionOf gives RegionOf certificates whose URI SANs are the
// fuzzer's lines, as a peer could put them in a certificate, and checks it
// against an independent statement of the rule: exactly one roamfed URI,
// and it prints as roamfed://region/<name> with a well-formed name.
func FuzzRegionOf(f *testing.F) {
	for _, s := range []string{
		"roamfed://region/eu",
		"roamfed://region/eu\nroamfed://region/ap",
		"spiffe://example.org/eu\nroamfed://region/us-east-1",
		"roamfed://region/EU",
		"ROAMFED://region/eu",
		"roamfed://REGION/eu",
		"roamfed://region:7200/eu",
		"roamfed://eu@region/eu",
		"roamfed://region/eu?",
		"roamfed://region/eu#",
		"roamfed://region/eu%2Fap",
		"roamfed:region/eu",
		"roamfed:///eu",
		"roamfed://region/a1234567890123456789012345678901",
		"roamfed://region/a12345678901234567890123456789012",
		"https://eu.example.com/",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, lines string) {
		cert := &x509.Certificate{}
		for line := range strings.SplitSeq(lines, "\n") {
			if u, err := url.Parse(line); err == nil {
				cert.URIs = append(cert.URIs, u)
			}
		}
		var names []string
		malformed := false
		for _, u := range cert.URIs {
			if u.Scheme != "roamfed" {
				continue
			}
			name, ok := strings.CutPrefix(u.String(), URIPrefix)
			if !ok || !regionNameRE.MatchString(name) {
				malformed = true
				continue
			}
			names = append(names, name)
		}

		got, err := RegionOf(cert)
		switch {
		case malformed:
			if !errors.Is(err, ErrBadRegionURI) {
				t.Fatalf("RegionOf(%q) = %q, %v; want ErrBadRegionURI", lines, got, err)
			}
		case len(names) != 1:
			if !errors.Is(err, ErrNoRegionURI) {
				t.Fatalf("RegionOf(%q) = %q, %v; want ErrNoRegionURI (%d region URIs)", lines, got, err, len(names))
			}
		default:
			if err != nil || got != names[0] {
				t.Fatalf("RegionOf(%q) = %q, %v; want %q", lines, got, err, names[0])
			}
			if RegionURI(got).String() != URIPrefix+got {
				t.Fatalf("RegionURI(%q) = %s", got, RegionURI(got))
			}
		}
		// Errors quote what the certificate says, but not all of it.
		if err != nil && len(err.Error()) > 512 {
			t.Fatalf("error of %d bytes: %.100q...", len(err.Error()), err.Error())
		}
	})
}
