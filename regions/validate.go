package regions

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// namePattern is the shape of region and federation names. Region names
// travel in gRPC metadata, TLS certificate names, NATS subjects, Pebble keys
// and metric labels, so they stay short and plain.
var namePattern = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)

const nameRule = "lowercase letters, digits and '-', starting with a letter, at most 32 characters"

// Validate checks the rules every federation file must follow:
//
//   - at least one region;
//   - region names match ^[a-z][a-z0-9-]{0,31}$ and are unique, and the
//     federation name, if given, has the same shape;
//   - every region has roaming_addr and client_addr; admin_addr and
//     metrics_addr are optional;
//   - every address is host:port with a host others can dial (a name or IP,
//     not empty, 0.0.0.0 or [::]) and a port from 0 to 65535, 0 meaning any
//     free port (for tests);
//   - no two addresses in the file are the same, port 0 aside;
//   - self, if set, names a region.
//
// For a Federation from Load or Parse every error gives the file, the line
// and the field. It reports every problem it finds, not just the first.
func (f *Federation) Validate() error {
	if f == nil {
		return errors.New("regions: nil federation")
	}
	v := validator{f: f}
	if f.Name != "" && !namePattern.MatchString(f.Name) {
		v.fail("federation", "%q is not a valid federation name (want %s)", f.Name, nameRule)
	}
	if len(f.Regions) == 0 {
		v.fail("regions", "no regions; a federation needs at least one")
	}
	names := make(map[string]string) // name -> field path of its first use
	addrs := make(map[string]string) // normalized address -> field path of its first use
	for i, r := range f.Regions {
		path := "regions[" + strconv.Itoa(i) + "]"
		field := path + ".name"
		switch first, dup := names[r.Name]; {
		case r.Name == "":
			v.fail(field, "missing; every region needs a name")
		case !namePattern.MatchString(r.Name):
			v.fail(field, "%q is not a valid region name (want %s)", r.Name, nameRule)
		case dup:
			v.fail(field, "%q is already the name of %s%s", r.Name, strings.TrimSuffix(first, ".name"), v.at(first))
		default:
			names[r.Name] = field
		}
		for _, a := range []struct {
			key, value string
			required   bool
		}{
			{"roaming_addr", r.RoamingAddr, true},
			{"client_addr", r.ClientAddr, true},
			{"admin_addr", r.AdminAddr, false},
			{"metrics_addr", r.MetricsAddr, false},
		} {
			field := path + "." + a.key
			if a.value == "" {
				if a.required {
					v.fail(field, "missing; every region needs one")
				}
				continue
			}
			key, err := addrKey(a.value)
			var he hostError
			switch {
			case errors.As(err, &he):
				v.fail(field, "%q: %v", a.value, err)
				continue
			case err != nil:
				v.fail(field, "%q is not host:port (%v)", a.value, err)
				continue
			}
			if key == "" {
				continue // port 0: every listener gets its own port
			}
			if first, dup := addrs[key]; dup {
				v.fail(field, "%q is already %s%s; two listeners cannot share an address", a.value, first, v.at(first))
				continue
			}
			addrs[key] = field
		}
	}
	if f.Self != "" {
		if _, ok := f.Region(f.Self); !ok {
			v.fail("self", "%q is not a region in this file (it has %s)", f.Self, joinList(f.Names(), "and"))
		}
	}
	return v.errs.err()
}

type validator struct {
	f    *Federation
	errs errorList
}

func (v *validator) fail(field, format string, args ...any) {
	v.errs = append(v.errs, &Error{Source: v.f.Source, Line: v.line(field), Field: field, Msg: fmt.Sprintf(format, args...)})
}

// line returns the line of field, or of the nearest enclosing thing the file
// has: a missing regions[1].client_addr is reported at the line of regions[1].
func (v *validator) line(field string) int {
	for p := field; p != ""; p = parent(p) {
		if l, ok := v.f.lines[p]; ok {
			return l
		}
	}
	return 0
}

// at renders " (line N)" for the first of two clashing fields, when known.
func (v *validator) at(field string) string {
	if l := v.line(field); l > 0 {
		return fmt.Sprintf(" (line %d)", l)
	}
	return ""
}

// parent strips the last step of a field path: "regions[1].name" ->
// "regions[1]" -> "regions" -> "".
func parent(field string) string {
	if i := strings.LastIndexByte(field, '.'); i >= 0 {
		return field[:i]
	}
	if strings.HasSuffix(field, "]") {
		if i := strings.LastIndexByte(field, '['); i >= 0 {
			return field[:i]
		}
	}
	return ""
}

// addrKey checks a host:port address and returns the form used to find
// duplicates: lowercase name or canonical IP, and the port as a number, so
// that "LOCALHOST:080" and "localhost:80" clash. It returns "" for port 0,
// which never clashes. Names are not resolved: a name and its IP do not
// clash here.
func addrKey(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			msg := strings.TrimSuffix(ae.Err, " in address")
			if msg == "too many colons" {
				msg += "; write an IPv6 address as [addr]:port"
			}
			return "", errors.New(msg)
		}
		return "", err
	}
	if port == "" {
		return "", errors.New("missing port")
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return "", fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	if host == "" {
		return "", hostError("missing host; write a name or IP that others can dial")
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.IsUnspecified() {
			return "", hostError(host + " means every interface, which others cannot dial; write the host's name or IP")
		}
		host = ip.Unmap().String()
	} else {
		if err := checkHostname(host); err != nil {
			return "", err
		}
		host = strings.ToLower(strings.TrimSuffix(host, "."))
	}
	if n == 0 {
		return "", nil
	}
	return net.JoinHostPort(host, strconv.FormatUint(n, 10)), nil
}

// hostError is an address that is host:port but whose host will not do.
type hostError string

func (e hostError) Error() string { return string(e) }

// checkHostname accepts DNS names, plus '_', which Docker Compose service
// names may contain.
func checkHostname(host string) error {
	name := strings.TrimSuffix(host, ".")
	if name == "" || len(name) > 253 {
		return hostError(fmt.Sprintf("host %q is not a valid name or IP", host))
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return hostError(fmt.Sprintf("host %q is not a valid name or IP", host))
		}
		for _, c := range []byte(l) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return hostError(fmt.Sprintf("host %q is not a valid name or IP", host))
			}
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		// All digits at the end: a mistyped IPv4 address, not a name.
		return hostError(fmt.Sprintf("host %q is not a valid IP address", host))
	}
	return nil
}
