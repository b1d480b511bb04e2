package regions

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Error is one problem with a federation file, located as precisely as the
// file allows. Parse, Load and Validate return one *Error, or several joined
// with errors.Join (one per line of the message); errors.As finds the first.
type Error struct {
	Source string // the file, as given to Load or Parse; empty for a Federation built in code
	Line   int    // 1-based line in Source; 0 when unknown
	Field  string // path of the field, like "regions[1].roaming_addr"; empty for YAML syntax errors
	Msg    string
}

// Error renders "source:line: field: msg", leaving out the parts that are
// unknown.
func (e *Error) Error() string {
	var b strings.Builder
	switch {
	case e.Source != "" && e.Line > 0:
		fmt.Fprintf(&b, "%s:%d: ", e.Source, e.Line)
	case e.Source != "":
		b.WriteString(e.Source + ": ")
	case e.Line > 0:
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// errorList collects problems so that an operator can fix a file in one go
// instead of one start-up failure at a time.
type errorList []*Error

// err returns nil, the one error, or all of them joined in line order.
func (l errorList) err() error {
	switch len(l) {
	case 0:
		return nil
	case 1:
		return l[0]
	}
	slices.SortStableFunc(l, func(a, b *Error) int { return cmp.Compare(a.Line, b.Line) })
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errors.Join(errs...)
}
