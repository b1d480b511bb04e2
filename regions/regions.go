package regions

import (
	_ "embed"
	"fmt"
	"os"
	"slices"
	"strings"
)

// Region is one region of the federation and the addresses of its services.
type Region struct {
	Name        string `yaml:"name"`
	RoamingAddr string `yaml:"roaming_addr"`
	ClientAddr  string `yaml:"client_addr"`
	AdminAddr   string `yaml:"admin_addr"`   // optional
	MetricsAddr string `yaml:"metrics_addr"` // optional
}

// Federation is the contents of a federation file: every region, in file
// order, and optionally which one this process is.
type Federation struct {
	Name    string   `yaml:"federation"`
	Self    string   `yaml:"self"`
	Regions []Region `yaml:"regions"`
	Source  string   `yaml:"-"` // file path it was loaded from

	// lines maps a field path ("regions[1].client_addr") to the line it was
	// read from, so that Validate can say where a bad value is. Nil for a
	// Federation built in code; never changed once Parse returns it.
	lines map[string]int
}

// Load reads, parses and validates the federation file at path. Errors name
// the file, the line and the field.
func Load(path string) (*Federation, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("federation file: %w", err)
	}
	return Parse(path, data)
}

//go:embed dev.yaml
var devYAML []byte

// DevFederation returns the three loopback regions (ap, eu, us) of
// regions/dev.yaml, which is embedded in the binary for `regiond dev`. Self is
// empty; see WithSelf. Every call returns a new Federation that the caller may
// change.
func DevFederation() (*Federation, error) {
	return Parse("regions/dev.yaml", devYAML)
}

// Region returns the region called name.
func (f *Federation) Region(name string) (Region, bool) {
	for _, r := range f.Regions {
		if r.Name == name {
			return r, true
		}
	}
	return Region{}, false
}

// Names returns the region names in file order.
func (f *Federation) Names() []string {
	names := make([]string, len(f.Regions))
	for i, r := range f.Regions {
		names[i] = r.Name
	}
	return names
}

// Peers returns every region but self, in file order: the regions that self's
// roaming system links to. The slice is the caller's.
func (f *Federation) Peers(self string) []Region {
	peers := make([]Region, 0, len(f.Regions))
	for _, r := range f.Regions {
		if r.Name != self {
			peers = append(peers, r)
		}
	}
	return peers
}

// WithSelf returns a copy of f whose Self is name, for a process told which
// region it is (regiond's --region flag, which wins over the file's self).
// It fails if the file has no region called name. f is not changed.
func (f *Federation) WithSelf(name string) (*Federation, error) {
	if _, ok := f.Region(name); !ok {
		return nil, &Error{Source: f.Source, Msg: fmt.Sprintf("no region named %q (the file has %s)", name, joinList(f.Names(), "and"))}
	}
	c := *f
	c.Regions = slices.Clone(f.Regions)
	c.Self = name
	if _, ok := f.lines["self"]; ok {
		// Self no longer comes from the file, so errors about it must not
		// point at the file's self line.
		c.lines = make(map[string]int, len(f.lines))
		for k, v := range f.lines {
			if k != "self" {
				c.lines[k] = v
			}
		}
	}
	return &c, nil
}

// joinList renders a list for a message: "ap, eu and us".
func joinList(list []string, conj string) string {
	switch len(list) {
	case 0:
		return "nothing"
	case 1:
		return list[0]
	}
	return strings.Join(list[:len(list)-1], ", ") + " " + conj + " " + list[len(list)-1]
}
