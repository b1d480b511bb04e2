package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// UsageError marks a wrong command line: nothing was attempted, and the
// program exits with its usage code and a pointer to --help.
type UsageError struct{ Err error }

func (e UsageError) Error() string { return e.Err.Error() }
func (e UsageError) Unwrap() error { return e.Err }

// Usagef returns a UsageError saying what is wrong with the command line.
func Usagef(format string, args ...any) error {
	return UsageError{fmt.Errorf(format, args...)}
}

// UnknownCommand is the UsageError for a subcommand name cmd does not
// have, with cobra's suggestion when one is close.
func UnknownCommand(cmd *cobra.Command, name string) error {
	msg := fmt.Sprintf("unknown command %q for %q", name, cmd.CommandPath())
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2 // cobra's own default, set lazily
	}
	if s := cmd.SuggestionsFor(name); len(s) > 0 {
		msg += fmt.Sprintf(" (did you mean %q?)", s[0])
	}
	return UsageError{errors.New(msg)}
}

// OpName is the command path without the program name ("group create"),
// for error messages; "" for the root command.
func OpName(cmd *cobra.Command) string {
	if cmd == nil || !cmd.HasParent() {
		return ""
	}
	_, op, _ := strings.Cut(cmd.CommandPath(), " ")
	return op
}

// Args checks the positional arguments: exactly the names given, the last
// of which may end in "..." to take one or more; a name in brackets is
// optional ("[GROUP...]"). A wrong count is a UsageError naming what is
// missing or unexpected.
func Args(names ...string) cobra.PositionalArgs {
	return func(_ *cobra.Command, got []string) error {
		min, max := 0, len(names)
		for _, n := range names {
			if !strings.HasPrefix(n, "[") {
				min++
			}
		}
		if len(names) > 0 && strings.HasSuffix(strings.Trim(names[len(names)-1], "[]"), "...") {
			max = -1
		}
		switch {
		case len(got) < min:
			return Usagef("missing %s", strings.Trim(names[len(got)], "[]."))
		case max >= 0 && len(got) > max:
			return Usagef("unexpected argument %q", got[max])
		}
		return nil
	}
}
