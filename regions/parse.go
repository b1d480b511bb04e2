package regions

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"

	"go.yaml.in/yaml/v3"
)

// The fields a file may hold. Anything else is a mistake worth stopping for:
// a misspelt optional field would otherwise be silently absent.
var (
	topFields    = []string{"federation", "self", "regions"}
	regionFields = []string{"name", "roaming_addr", "client_addr", "admin_addr", "metrics_addr"}
)

// Parse decodes and validates a federation file. source names the file in
// errors, which also give the line and the field of every problem; the
// returned Federation has Source set to it and always passes Validate.
//
// The file is walked as a yaml.Node tree rather than decoded into the struct,
// because only the tree knows the line of each field.
func Parse(source string, data []byte) (*Federation, error) {
	p := &parser{source: source, lines: make(map[string]int)}
	f := p.parse(data)
	if err := p.errs.err(); err != nil {
		return nil, err
	}
	f.Source = source
	f.lines = p.lines
	if err := f.Validate(); err != nil {
		return nil, err
	}
	return f, nil
}

type parser struct {
	source string
	lines  map[string]int
	errs   errorList
}

func (p *parser) fail(line int, field, format string, args ...any) {
	p.errs = append(p.errs, &Error{Source: p.source, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)})
}

func (p *parser) parse(data []byte) *Federation {
	f := &Federation{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			p.fail(0, "", "the file is empty; want federation and regions")
		} else {
			p.yamlError(err)
		}
		return f
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		p.yamlError(err)
		return f
	default:
		p.fail(extra.Line, "", "a second YAML document; the file holds one federation")
		return f
	}

	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			p.fail(root.Line, "", "the file is empty; want federation and regions")
			return f
		}
		root = root.Content[0]
	}
	if isNull(root) {
		p.fail(root.Line, "", "the file is empty; want federation and regions")
		return f
	}
	if !p.kind(root, "", yaml.MappingNode) {
		return f
	}
	p.fields(root, "", topFields, func(key string, v *yaml.Node) {
		switch key {
		case "federation":
			f.Name = p.scalar(key, v)
		case "self":
			f.Self = p.scalar(key, v)
		case "regions":
			f.Regions = p.regions(v)
		}
	})
	return f
}

// regions reads the regions sequence. An entry that is not a mapping is
// reported and kept as an empty Region so that indexes in later messages
// match the file.
func (p *parser) regions(seq *yaml.Node) []Region {
	if isNull(seq) {
		return nil // Validate reports the missing regions at the key's line
	}
	if !p.kind(seq, "regions", yaml.SequenceNode) {
		return nil
	}
	regions := make([]Region, len(seq.Content))
	for i, item := range seq.Content {
		path := "regions[" + strconv.Itoa(i) + "]"
		p.lines[path] = item.Line
		if isNull(item) {
			p.fail(item.Line, path, "empty entry; want name, roaming_addr and client_addr")
			continue
		}
		if !p.kind(item, path, yaml.MappingNode) {
			continue
		}
		r := &regions[i]
		p.fields(item, path+".", regionFields, func(key string, v *yaml.Node) {
			field := path + "." + key
			switch key {
			case "name":
				r.Name = p.scalar(field, v)
			case "roaming_addr":
				r.RoamingAddr = p.scalar(field, v)
			case "client_addr":
				r.ClientAddr = p.scalar(field, v)
			case "admin_addr":
				r.AdminAddr = p.scalar(field, v)
			case "metrics_addr":
				r.MetricsAddr = p.scalar(field, v)
			}
		})
	}
	return regions
}

// fields calls set for each key of m that is in known, recording its line
// under prefix+key, and reports unknown and repeated keys.
func (p *parser) fields(m *yaml.Node, prefix string, known []string, set func(key string, v *yaml.Node)) {
	seen := make(map[string]int)
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			p.fail(k.Line, prefix+"?", "a key must be a plain name, one of %s", joinList(known, "or"))
			continue
		}
		field := prefix + k.Value
		if k.Tag == "!!merge" {
			p.fail(k.Line, field, "merge keys are not supported; write each field out")
			continue
		}
		if !slices.Contains(known, k.Value) {
			p.fail(k.Line, field, "unknown field; want one of %s", joinList(known, "or"))
			continue
		}
		if first, ok := seen[k.Value]; ok {
			p.fail(k.Line, field, "repeated; first given at line %d", first)
			continue
		}
		seen[k.Value] = k.Line
		p.lines[field] = k.Line
		set(k.Value, v)
	}
}

// scalar returns the text of a scalar value; null stands for absent.
func (p *parser) scalar(field string, v *yaml.Node) string {
	if !p.kind(v, field, yaml.ScalarNode) || isNull(v) {
		return ""
	}
	return v.Value
}

// kind reports whether n is of the wanted kind, and says what is wrong if not.
// Anchors are harmless, but aliases are refused: names and addresses are
// unique in the file, so an alias there is a copy-paste slip, and errors
// about it would point at the anchor's line instead of the alias's.
func (p *parser) kind(n *yaml.Node, field string, want yaml.Kind) bool {
	if n.Kind == want {
		return true
	}
	if n.Kind == yaml.AliasNode {
		p.fail(n.Line, field, "aliases (*%s) are not supported; write the value out", n.Value)
		return false
	}
	p.fail(n.Line, field, "want %s, got %s", kindName(want), kindName(n.Kind))
	return false
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.ScalarNode:
		return "a single value"
	case yaml.MappingNode:
		return "a mapping (key: value lines)"
	case yaml.SequenceNode:
		return "a list (- lines)"
	case yaml.AliasNode:
		return "an alias"
	case yaml.DocumentNode:
		return "a document"
	}
	return "nothing"
}

// yamlLine matches the "yaml: line N: " that the YAML library puts before
// the syntax errors it can place.
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func (p *parser) yamlError(err error) {
	msg := err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		p.fail(line, "", "%s", "yaml: "+m[2])
		return
	}
	p.fail(0, "", "%s", msg)
}
