package validate_test

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/roamfed/roamfed/internal/validate"
)

// The validators without a fuzz target in validate_test.go: Password and
// Body. (Username, Text with Name, Settings, ID and ClientMsgID have theirs
// there.)

// refusal checks that err is a *validate.Error for field with a reason,
// and that its text is like's, the refusal of a value that differs from the
// refused one in everything but what made it wrong: the text never depends
// on a password or a message body, so that neither can end up in an error,
// a log line or a status message.
func refusal(t *testing.T, err, like error, field string) {
	t.Helper()
	var ve *validate.Error
	if !errors.As(err, &ve) || ve.Field != field || ve.Reason == "" {
		t.Fatalf("error %v (%T) is not a *validate.Error for %q with a reason", err, err, field)
	}
	if like == nil || err.Error() != like.Error() {
		t.Fatalf("error %q depends on the refused value (a value like it gives %v)", err.Error(), like)
	}
}

func FuzzPassword(f *testing.F) {
	for _, s := range []string{"", "short", "1234567", "12345678", "correct horse battery staple",
		"pässwörd", "\x00\x00\x00\x00\x00\x00\x00\x00", "\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8",
		strings.Repeat("p", validate.MaxPasswordBytes), strings.Repeat("p", validate.MaxPasswordBytes+1)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := validate.Password("password", s)
		want := len(s) >= validate.MinPasswordBytes && len(s) <= validate.MaxPasswordBytes
		if (err == nil) != want {
			t.Fatalf("Password(%d bytes) = %v; want accepted %v", len(s), err, want)
		}
		if err != nil {
			refusal(t, err, validate.Password("password", strings.Repeat("\x00", len(s))), "password")
		}
	})
}

func FuzzBody(f *testing.F) {
	for _, s := range []string{"", "hi", "line\nline\ttab", "🍜 ramen", "\x00", "\xff", "a\xc3", "\u2028", strings.Repeat("x", 70<<10)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := validate.Body("body", s)
		want := s != "" && utf8.ValidString(s)
		if (err == nil) != want {
			t.Fatalf("Body(%q) = %v; want accepted %v", s, err, want)
		}
		if err != nil {
			like := "\xff" // as invalid as s, since s is not empty
			if s == "" {
				like = ""
			}
			refusal(t, err, validate.Body("body", like), "body")
		}
	})
}
