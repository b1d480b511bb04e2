// Package validate checks the fields of requests that come from outside a
// region. Every check returns nil or an *Error naming the field, which the
// RPC boundary turns into INVALID_ARGUMENT with a field violation.
package validate

import (
	"fmt"
	"unicode"
	"unicode/utf8"

	"github.com/roamfed/roamfed/internal/ids"
)

// Limits on request fields. They are part of the API contract
// (api/client/v1/client.proto documents them).
const (
	MaxNameBytes        = 64
	MinPasswordBytes    = 8
	MaxPasswordBytes    = 1024
	MaxNoticeBytes      = 4096
	MaxSettings         = 32
	MaxSettingKeyBytes  = 64
	MaxSettingValBytes  = 1024
	MaxClientMsgIDBytes = 64
)

// Error is a field that failed validation.
type Error struct {
	Field  string
	Reason string
}

func (e *Error) Error() string { return fmt.Sprintf("invalid %s: %s", e.Field, e.Reason) }

func errorf(field, format string, args ...any) *Error {
	return &Error{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Username: 1 to 64 bytes of ASCII letters, digits, '.', '_' or '-'.
func Username(field, s string) error {
	if s == "" {
		return errorf(field, "must not be empty")
	}
	if len(s) > MaxNameBytes {
		return errorf(field, "is %d bytes; at most %d", len(s), MaxNameBytes)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return errorf(field, "may contain only letters, digits, '.', '_' and '-'")
		}
	}
	return nil
}

// Password: 8 to 1024 bytes, any content.
func Password(field, s string) error {
	if len(s) < MinPasswordBytes {
		return errorf(field, "must be at least %d bytes", MinPasswordBytes)
	}
	if len(s) > MaxPasswordBytes {
		return errorf(field, "is %d bytes; at most %d", len(s), MaxPasswordBytes)
	}
	return nil
}

// Text checks UTF-8 text of at most max bytes without control characters
// other than newline and tab; empty is allowed unless required.
func Text(field, s string, max int, required bool) error {
	if s == "" {
		if required {
			return errorf(field, "must not be empty")
		}
		return nil
	}
	if len(s) > max {
		return errorf(field, "is %d bytes; at most %d", len(s), max)
	}
	if !utf8.ValidString(s) {
		return errorf(field, "is not valid UTF-8")
	}
	for _, r := range s {
		if unicode.IsControl(r) && r != '\n' && r != '\t' {
			return errorf(field, "contains control character %U", r)
		}
	}
	return nil
}

// Name is a display or group name: 1 to 64 bytes of single-line text.
func Name(field, s string, required bool) error {
	if err := Text(field, s, MaxNameBytes, required); err != nil {
		return err
	}
	for _, r := range s {
		if r == '\n' || r == '\t' {
			return errorf(field, "must be a single line")
		}
	}
	return nil
}

// Settings: at most 32 keys of the username alphabet, values of text.
func Settings(field string, m map[string]string) error {
	if len(m) > MaxSettings {
		return errorf(field, "has %d keys; at most %d", len(m), MaxSettings)
	}
	for k, v := range m {
		if len(k) > MaxSettingKeyBytes {
			return errorf(field, "key of %d bytes; at most %d", len(k), MaxSettingKeyBytes)
		}
		if err := Username(field+" key", k); err != nil {
			return err
		}
		if err := Text(field+"["+k+"]", v, MaxSettingValBytes, false); err != nil {
			return err
		}
	}
	return nil
}

// ID checks an id of the given kind.
func ID(field string, k ids.Kind, s string) error {
	if s == "" {
		return errorf(field, "must not be empty")
	}
	if !ids.Valid(k, s) {
		return errorf(field, "%q is not a %c_ id", truncate(s, 40), k)
	}
	return nil
}

// Body checks a message body against the region's size limit. The size
// limit itself is the resource pool's; this checks the text.
func Body(field, s string) error {
	if s == "" {
		return errorf(field, "must not be empty")
	}
	if !utf8.ValidString(s) {
		return errorf(field, "is not valid UTF-8")
	}
	return nil
}

// ClientMsgID: at most 64 bytes of printable ASCII.
func ClientMsgID(field, s string) error {
	if len(s) > MaxClientMsgIDBytes {
		return errorf(field, "is %d bytes; at most %d", len(s), MaxClientMsgIDBytes)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return errorf(field, "may contain only printable ASCII")
		}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
