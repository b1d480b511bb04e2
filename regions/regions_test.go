package regions

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

const valid = `# three regions
federation: test
regions:
  - name: ap
    roaming_addr: 127.0.0.1:7201
    client_addr: 127.0.0.1:7101
    admin_addr: 127.0.0.1:7301
    metrics_addr: 127.0.0.1:7401
  - name: eu
    roaming_addr: eu.example.com:7200
    client_addr: "[::1]:7102"
  - name: us
    roaming_addr: 127.0.0.1:0
    client_addr: 127.0.0.1:0
`

func TestParseValid(t *testing.T) {
	f, err := Parse("fed.yaml", []byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	want := []Region{
		{Name: "ap", RoamingAddr: "127.0.0.1:7201", ClientAddr: "127.0.0.1:7101", AdminAddr: "127.0.0.1:7301", MetricsAddr: "127.0.0.1:7401"},
		{Name: "eu", RoamingAddr: "eu.example.com:7200", ClientAddr: "[::1]:7102"},
		{Name: "us", RoamingAddr: "127.0.0.1:0", ClientAddr: "127.0.0.1:0"},
	}
	if f.Name != "test" || f.Self != "" || f.Source != "fed.yaml" || !slices.Equal(f.Regions, want) {
		t.Fatalf("got %+v", f)
	}
	if got := f.Names(); !slices.Equal(got, []string{"ap", "eu", "us"}) {
		t.Errorf("Names() = %v", got)
	}
	if r, ok := f.Region("eu"); !ok || r != want[1] {
		t.Errorf(`Region("eu") = %+v, %v`, r, ok)
	}
	if _, ok := f.Region("mars"); ok {
		t.Error(`Region("mars") found`)
	}
	if err := f.Validate(); err != nil {
		t.Errorf("Validate after Parse: %v", err)
	}
}

// TestParseErrors breaks one rule at a time. Every case checks the whole
// "file:line: field: " prefix, since pointing at the right place is the
// point.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		file string
		want []string // substrings of the error, in order of lines
	}{
		{
			name: "empty file",
			file: "",
			want: []string{"f.yaml: the file is empty"},
		},
		{
			name: "only comments",
			file: "# nothing yet\n",
			want: []string{"f.yaml: the file is empty"},
		},
		{
			name: "yaml syntax",
			file: "federation: x\nregions:\n  - name: ap\n    roaming_addr: a: 1\n",
			want: []string{"f.yaml:4: yaml: mapping values are not allowed in this context"},
		},
		{
			name: "two documents",
			file: "regions: []\n---\nregions: []\n",
			want: []string{"f.yaml:2: a second YAML document"},
		},
		{
			name: "top level is a list",
			file: "- name: ap\n",
			want: []string{"f.yaml:1: want a mapping"},
		},
		{
			name: "unknown top-level field",
			file: "federation: x\nregion:\n  - name: ap\n",
			want: []string{`f.yaml:2: region: unknown field; want one of federation, self or regions`},
		},
		{
			name: "no regions key",
			file: "federation: x\n",
			want: []string{`f.yaml: regions: no regions`},
		},
		{
			name: "empty regions",
			file: "federation: x\nregions: []\n",
			want: []string{`f.yaml:2: regions: no regions`},
		},
		{
			name: "null regions",
			file: "federation: x\nregions:\n",
			want: []string{`f.yaml:2: regions: no regions`},
		},
		{
			name: "regions is a mapping",
			file: "regions:\n  ap:\n    roaming_addr: a:1\n",
			want: []string{`f.yaml:2: regions: want a list`},
		},
		{
			name: "region entry is a string",
			file: "regions:\n  - ap\n",
			want: []string{`f.yaml:2: regions[0]: want a mapping`},
		},
		{
			name: "empty region entry",
			file: "regions:\n  -\n",
			want: []string{`f.yaml:2: regions[0]: empty entry`},
		},
		{
			name: "unknown region field",
			file: "regions:\n  - name: ap\n    roaming_addr: a:1\n    client_addr: a:2\n    metric_addr: a:3\n",
			want: []string{`f.yaml:5: regions[0].metric_addr: unknown field; want one of name, roaming_addr, client_addr, admin_addr or metrics_addr`},
		},
		{
			name: "repeated field",
			file: "regions:\n  - name: ap\n    roaming_addr: a:1\n    client_addr: a:2\n    name: eu\n",
			want: []string{`f.yaml:5: regions[0].name: repeated; first given at line 2`},
		},
		{
			name: "field is a list",
			file: "regions:\n  - name: [ap]\n    roaming_addr: a:1\n    client_addr: a:2\n",
			want: []string{`f.yaml:2: regions[0].name: want a single value, got a list`},
		},
		{
			name: "alias",
			file: "federation: &f x\nregions:\n  - name: *f\n    roaming_addr: a:1\n    client_addr: a:2\n",
			want: []string{`f.yaml:3: regions[0].name: aliases (*f) are not supported`},
		},
		{
			name: "merge key",
			file: "regions:\n  - &r\n    roaming_addr: a:1\n  - <<: *r\n    name: eu\n",
			want: []string{`f.yaml:4: regions[1].<<: merge keys are not supported`},
		},
		{
			name: "bad federation name",
			file: "federation: Prod\nregions:\n  - name: ap\n    roaming_addr: a:1\n    client_addr: a:2\n",
			want: []string{`f.yaml:1: federation: "Prod" is not a valid federation name`},
		},
		{
			name: "missing name",
			file: "regions:\n  - name: ap\n    roaming_addr: a:1\n    client_addr: a:2\n  - roaming_addr: b:1\n    client_addr: b:2\n",
			want: []string{`f.yaml:5: regions[1].name: missing`},
		},
		{
			name: "null name",
			file: "regions:\n  - name: ~\n    roaming_addr: a:1\n    client_addr: a:2\n",
			want: []string{`f.yaml:2: regions[0].name: missing`},
		},
		{
			name: "bad name",
			file: "regions:\n  - name: ap\n    roaming_addr: a:1\n    client_addr: a:2\n  - name: EU_west\n    roaming_addr: b:1\n    client_addr: b:2\n",
			want: []string{`f.yaml:5: regions[1].name: "EU_west" is not a valid region name`},
		},
		{
			name: "name too long",
			file: "regions:\n  - name: a" + strings.Repeat("b", 32) + "\n    roaming_addr: a:1\n    client_addr: a:2\n",
			want: []string{`f.yaml:2: regions[0].name: "ab`},
		},
		{
			name: "duplicate name",
			file: "regions:\n  - name: eu\n    roaming_addr: a:1\n    client_addr: a:2\n  - name: eu\n    roaming_addr: b:1\n    client_addr: b:2\n",
			want: []string{`f.yaml:5: regions[1].name: "eu" is already the name of regions[0] (line 2)`},
		},
		{
			name: "missing roaming_addr",
			file: "regions:\n  - name: ap\n    client_addr: a:2\n",
			want: []string{`f.yaml:2: regions[0].roaming_addr: missing`},
		},
		{
			name: "missing client_addr",
			file: "regions:\n  - name: ap\n    roaming_addr: a:1\n",
			want: []string{`f.yaml:2: regions[0].client_addr: missing`},
		},
		{
			name: "missing port",
			file: "regions:\n  - name: ap\n    roaming_addr: a:1\n    client_addr: a:2\n  - name: eu\n    roaming_addr: 127.0.0.1\n    client_addr: b:2\n",
			want: []string{`f.yaml:6: regions[1].roaming_addr: "127.0.0.1" is not host:port (missing port)`},
		},
		{
			name: "empty port",
			file: "regions:\n  - name: ap\n    roaming_addr: 'a:'\n    client_addr: a:2\n",
			want: []string{`f.yaml:3: regions[0].roaming_addr: "a:" is not host:port (missing port)`},
		},
		{
			name: "port out of range",
			file: "regions:\n  - name: ap\n    roaming_addr: a:1\n    client_addr: a:65536\n",
			want: []string{`f.yaml:4: regions[0].client_addr: "a:65536" is not host:port (port "65536" is not a number from 0 to 65535)`},
		},
		{
			name: "named port",
			file: "regions:\n  - name: ap\n    roaming_addr: a:https\n    client_addr: a:2\n",
			want: []string{`f.yaml:3: regions[0].roaming_addr: "a:https" is not host:port (port "https"`},
		},
		{
			name: "bare IPv6",
			file: "regions:\n  - name: ap\n    roaming_addr: a:1\n    client_addr: ::1:7100\n",
			want: []string{`f.yaml:4: regions[0].client_addr: "::1:7100" is not host:port (too many colons; write an IPv6 address as [addr]:port)`},
		},
		{
			name: "missing host",
			file: "regions:\n  - name: ap\n    roaming_addr: :7200\n    client_addr: a:2\n",
			want: []string{`f.yaml:3: regions[0].roaming_addr: ":7200": missing host`},
		},
		{
			name: "wildcard host",
			file: "regions:\n  - name: ap\n    roaming_addr: a:1\n    client_addr: 0.0.0.0:7100\n",
			want: []string{`f.yaml:4: regions[0].client_addr: "0.0.0.0:7100": 0.0.0.0 means every interface`},
		},
		{
			name: "bad host",
			file: "regions:\n  - name: ap\n    roaming_addr: a b:1\n    client_addr: a:2\n",
			want: []string{`f.yaml:3: regions[0].roaming_addr: "a b:1": host "a b" is not a valid name or IP`},
		},
		{
			name: "bad IPv4",
			file: "regions:\n  - name: ap\n    roaming_addr: 10.0.0.256:1\n    client_addr: a:2\n",
			want: []string{`f.yaml:3: regions[0].roaming_addr: "10.0.0.256:1": host "10.0.0.256" is not a valid IP address`},
		},
		{
			name: "bad admin_addr",
			file: "regions:\n  - name: ap\n    roaming_addr: a:1\n    client_addr: a:2\n    admin_addr: a\n",
			want: []string{`f.yaml:5: regions[0].admin_addr: "a" is not host:port (missing port)`},
		},
		{
			name: "bad metrics_addr",
			file: "regions:\n  - name: ap\n    roaming_addr: a:1\n    client_addr: a:2\n    metrics_addr: a:-1\n",
			want: []string{`f.yaml:5: regions[0].metrics_addr: "a:-1" is not host:port (port "-1"`},
		},
		{
			name: "same address twice in a region",
			file: "regions:\n  - name: ap\n    roaming_addr: a:1\n    client_addr: a:1\n",
			want: []string{`f.yaml:4: regions[0].client_addr: "a:1" is already regions[0].roaming_addr (line 3)`},
		},
		{
			name: "same address across regions, spelt differently",
			file: "regions:\n  - name: ap\n    roaming_addr: Host.Example.:7200\n    client_addr: a:2\n  - name: eu\n    roaming_addr: b:1\n    client_addr: b:2\n    metrics_addr: host.example:07200\n",
			want: []string{`f.yaml:8: regions[1].metrics_addr: "host.example:07200" is already regions[0].roaming_addr (line 3)`},
		},
		{
			name: "same IPv6 address spelt differently",
			file: "regions:\n  - name: ap\n    roaming_addr: '[::1]:1'\n    client_addr: '[0:0::1]:1'\n",
			want: []string{`f.yaml:4: regions[0].client_addr: "[0:0::1]:1" is already regions[0].roaming_addr (line 3)`},
		},
		{
			name: "self not a region",
			file: "self: mars\nregions:\n  - name: ap\n    roaming_addr: a:1\n    client_addr: a:2\n",
			want: []string{`f.yaml:1: self: "mars" is not a region in this file (it has ap)`},
		},
		{
			name: "every problem at once, in line order",
			file: "regions:\n  - name: ap\n    roaming_addr: a\n    client_addr: a:2\nself: mars\n",
			want: []string{
				`f.yaml:3: regions[0].roaming_addr: "a" is not host:port`,
				`f.yaml:5: self: "mars" is not a region`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Parse("f.yaml", []byte(tt.file))
			if err == nil {
				t.Fatalf("Parse accepted it: %+v", f)
			}
			if f != nil {
				t.Errorf("Parse returned a Federation with an error")
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tt.want) {
				t.Fatalf("got %d errors, want %d:\n%v", len(lines), len(tt.want), err)
			}
			for i, want := range tt.want {
				if !strings.HasPrefix(lines[i], want) {
					t.Errorf("error %d:\n got: %s\nwant: %s...", i, lines[i], want)
				}
			}
			var e *Error
			if !errors.As(err, &e) || e.Source != "f.yaml" {
				t.Errorf("errors.As(*Error) = %+v", e)
			}
		})
	}
}

func TestPortZeroNeverClashes(t *testing.T) {
	f := &Federation{Regions: []Region{
		{Name: "a", RoamingAddr: "127.0.0.1:0", ClientAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0"},
		{Name: "b", RoamingAddr: "127.0.0.1:0", ClientAddr: "127.0.0.1:0"},
	}}
	if err := f.Validate(); err != nil {
		t.Fatal(err)
	}
}

// A Federation built in code has no file or lines; errors still name the
// field.
func TestValidateInCode(t *testing.T) {
	tests := []struct {
		name string
		f    *Federation
		want string
	}{
		{"nil", nil, "regions: nil federation"},
		{"empty", &Federation{}, "regions: no regions"},
		{"bad addr", &Federation{Regions: []Region{{Name: "a", RoamingAddr: "x", ClientAddr: "y:1"}}},
			`regions[0].roaming_addr: "x" is not host:port (missing port)`},
		{"with source", &Federation{Source: "s.yaml", Regions: []Region{{Name: "a", RoamingAddr: "x:1", ClientAddr: "y:1"}, {Name: "a", RoamingAddr: "x:2", ClientAddr: "y:2"}}},
			`s.yaml: regions[1].name: "a" is already the name of regions[0]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.f.Validate()
			if err == nil || err.Error() != tt.want && !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("got %v, want %s", err, tt.want)
			}
		})
	}
}

// Changing a parsed Federation and validating again still points at the
// field's line in the file.
func TestValidateAfterChange(t *testing.T) {
	f, err := Parse("fed.yaml", []byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	f.Regions[1].ClientAddr = f.Regions[0].ClientAddr
	err = f.Validate()
	want := `fed.yaml:11: regions[1].client_addr: "127.0.0.1:7101" is already regions[0].client_addr (line 6); two listeners cannot share an address`
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
}

func TestSelf(t *testing.T) {
	f, err := Parse("fed.yaml", []byte("self: eu\n"+valid))
	if err != nil {
		t.Fatal(err)
	}
	if f.Self != "eu" {
		t.Fatalf("Self = %q", f.Self)
	}

	// The flag wins over the file.
	g, err := f.WithSelf("us")
	if err != nil {
		t.Fatal(err)
	}
	if g.Self != "us" || f.Self != "eu" {
		t.Fatalf("WithSelf: copy has %q, original %q", g.Self, f.Self)
	}
	g.Regions[0].Name = "changed"
	if f.Regions[0].Name != "ap" {
		t.Fatal("WithSelf copy shares Regions with the original")
	}

	// Self from WithSelf has no line in the file.
	g.Regions[0].Name = "ap"
	g.Self = "mars"
	if err := g.Validate(); err == nil || !strings.HasPrefix(err.Error(), `fed.yaml: self: "mars"`) {
		t.Errorf("Validate: %v", err)
	}

	_, err = f.WithSelf("mars")
	want := `fed.yaml: no region named "mars" (the file has ap, eu and us)`
	if err == nil || err.Error() != want {
		t.Errorf("WithSelf(mars) = %v\nwant %s", err, want)
	}
	if _, err := f.WithSelf(""); err == nil {
		t.Error(`WithSelf("") succeeded`)
	}
}

func TestPeers(t *testing.T) {
	f, err := Parse("fed.yaml", []byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		self string
		want []string
	}{
		{"ap", []string{"eu", "us"}},
		{"eu", []string{"ap", "us"}},
		{"us", []string{"ap", "eu"}},
		{"mars", []string{"ap", "eu", "us"}},
	} {
		peers := f.Peers(tt.self)
		var got []string
		for _, p := range peers {
			got = append(got, p.Name)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("Peers(%q) = %v, want %v", tt.self, got, tt.want)
		}
		if len(peers) > 0 {
			peers[0].Name = "changed"
		}
		if !slices.Equal(f.Names(), []string{"ap", "eu", "us"}) {
			t.Fatalf("changing Peers' result changed the federation")
		}
	}
}

func TestDevFederation(t *testing.T) {
	f, err := DevFederation()
	if err != nil {
		t.Fatal(err)
	}
	if f.Name != "dev" || f.Self != "" || !slices.Equal(f.Names(), []string{"ap", "eu", "us"}) {
		t.Fatalf("got %+v", f)
	}
	for _, r := range f.Regions {
		for _, a := range []string{r.RoamingAddr, r.ClientAddr, r.AdminAddr, r.MetricsAddr} {
			if !strings.HasPrefix(a, "127.0.0.1:") {
				t.Errorf("%s: %q is not on loopback", r.Name, a)
			}
		}
	}
	// Each call is the caller's own.
	f.Regions[0].Name = "changed"
	g, err := DevFederation()
	if err != nil || g.Regions[0].Name != "ap" {
		t.Fatalf("second DevFederation: %v, %+v", err, g)
	}
	if _, err := f.WithSelf("eu"); err != nil {
		t.Error(err)
	}
}

// Every example file in the package directory must load.
func TestExampleFiles(t *testing.T) {
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 2 {
		t.Fatalf("found %v", files)
	}
	for _, file := range files {
		f, err := Load(file)
		if err != nil {
			t.Errorf("Load: %v", err)
			continue
		}
		if f.Source != file || len(f.Regions) == 0 {
			t.Errorf("%s: got %+v", file, f)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "fed.yaml")
	if err := os.WriteFile(path, []byte(strings.Replace(valid, "127.0.0.1:7201", "127.0.0.1", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	want := path + `:5: regions[0].roaming_addr: "127.0.0.1" is not host:port (missing port)`
	if err == nil || err.Error() != want {
		t.Errorf("Load = %v\nwant %s", err, want)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v", err)
	}
}

func FuzzParse(f *testing.F) {
	seeds := []string{valid, "", "regions: []\n", "self: ap\n" + valid, "regions:\n  - name: ap\n"}
	for _, file := range []string{"dev.yaml", "example-3-regions.yaml"} {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, string(data))
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fed, err := Parse("fuzz.yaml", data)
		if err != nil {
			if fed != nil {
				t.Fatal("Federation and error both returned")
			}
			if !strings.HasPrefix(err.Error(), "fuzz.yaml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if err := fed.Validate(); err != nil {
			t.Fatalf("accepted, then Validate failed: %v", err)
		}
		if len(fed.Names()) != len(fed.Regions) {
			t.Fatal("Names and Regions differ in length")
		}
		if fed.Self != "" {
			if _, ok := fed.Region(fed.Self); !ok {
				t.Fatalf("self %q is not a region", fed.Self)
			}
			if len(fed.Peers(fed.Self)) != len(fed.Regions)-1 {
				t.Fatal("Peers(self) does not leave out exactly self")
			}
		}
		// What was accepted survives a round trip through YAML.
		out, err := yaml.Marshal(fed)
		if err != nil {
			t.Fatal(err)
		}
		again, err := Parse("again.yaml", out)
		if err != nil {
			t.Fatalf("re-parse of\n%s\nfailed: %v", out, err)
		}
		if again.Name != fed.Name || again.Self != fed.Self || !slices.Equal(again.Regions, fed.Regions) {
			t.Fatalf("round trip changed it:\n%+v\n%+v", fed, again)
		}
	})
}
