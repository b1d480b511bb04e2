package validate_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/roamfed/roamfed/internal/ids"
	"github.com/roamfed/roamfed/internal/validate"
)

// check runs a table of inputs through fn and checks which are accepted and
// that every refusal is an *Error naming the field.
func check(t *testing.T, field string, fn func(string) error, tests []struct {
	in string
	ok bool
}) {
	t.Helper()
	for _, tt := range tests {
		err := fn(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("%q: err = %v, want ok %v", truncate(tt.in), err, tt.ok)
			continue
		}
		if err != nil {
			checkError(t, err, field)
		}
	}
}

func checkError(t *testing.T, err error, field string) {
	t.Helper()
	var ve *validate.Error
	if !errors.As(err, &ve) {
		t.Fatalf("error %v (%T) is not a *validate.Error", err, err)
	}
	if ve.Field != field || ve.Reason == "" {
		t.Errorf("error names field %q, reason %q; want field %q and a reason", ve.Field, ve.Reason, field)
	}
	if !strings.Contains(err.Error(), field) {
		t.Errorf("error text %q does not name the field %q", err.Error(), field)
	}
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

type cases = []struct {
	in string
	ok bool
}

func TestUsername(t *testing.T) {
	check(t, "username", func(s string) error { return validate.Username("username", s) }, cases{
		{"a", true},
		{"Alice.B_c-9", true},
		{strings.Repeat("a", 64), true},
		{"", false},
		{strings.Repeat("a", 65), false},
		{"a b", false},
		{"é", false},
		{"ü", false},
		{"a/b", false},
		{"a@b", false},
		{"a\x00", false},
		{"a\n", false},
		{"\xff", false},
	})
}

func TestPassword(t *testing.T) {
	check(t, "password", func(s string) error { return validate.Password("password", s) }, cases{
		{"", false},
		{"1234567", false},
		{"12345678", true},
		{"\x00\xff\n \t\r\x01\x02", true}, // any content
		{strings.Repeat("p", 1024), true},
		{strings.Repeat("p", 1025), false},
	})
}

func TestText(t *testing.T) {
	const limit = 16
	optional := func(s string) error { return validate.Text("notice", s, limit, false) }
	check(t, "notice", optional, cases{
		{"", true},
		{"hello", true},
		{"line\nline\ttab", true},
		{"日本語🍜", true},
		{strings.Repeat("x", limit), true},
		{strings.Repeat("x", limit+1), false},
		{strings.Repeat("é", limit/2), true},
		{strings.Repeat("é", limit/2) + "x", false}, // the limit is in bytes
		{"\xff", false},
		{"caf\xc3", false},
		{"\xed\xa0\x80", false}, // a surrogate half
		{"a\x00b", false},
		{"a\rb", false},
		{"\x1b[31m", false},
		{"\x7f", false},
		{"a\u0085b", false}, // C1 control
		{"a\u2028b", true},  // a line separator is not a control character
	})
	required := func(s string) error { return validate.Text("notice", s, limit, true) }
	check(t, "notice", required, cases{{"", false}, {"x", true}})
}

func TestName(t *testing.T) {
	required := func(s string) error { return validate.Name("name", s, true) }
	check(t, "name", required, cases{
		{"Ramen 🍜", true},
		{strings.Repeat("n", 64), true},
		{"", false},
		{strings.Repeat("n", 65), false},
		{"two\nlines", false},
		{"tab\there", false},
		{"\xff", false},
		{"a\x00", false},
	})
	optional := func(s string) error { return validate.Name("display_name", s, false) }
	check(t, "display_name", optional, cases{{"", true}, {"Bob", true}, {"a\nb", false}})
}

func TestSettings(t *testing.T) {
	many := func(n int) map[string]string {
		m := make(map[string]string, n)
		for i := range n {
			m[fmt.Sprintf("k%d", i)] = "v"
		}
		return m
	}
	tests := []struct {
		name      string
		in        map[string]string
		wantField string // empty: accepted
	}{
		{"nil", nil, ""},
		{"empty value", map[string]string{"mute": ""}, ""},
		{"text values", map[string]string{"lang": "日本語", "motd": "a\nb"}, ""},
		{"32 keys", many(32), ""},
		{"33 keys", many(33), "settings"},
		{"64-byte key", map[string]string{strings.Repeat("k", 64): "v"}, ""},
		{"65-byte key", map[string]string{strings.Repeat("k", 65): "v"}, "settings"},
		{"empty key", map[string]string{"": "v"}, "settings key"},
		{"key with a space", map[string]string{"a b": "v"}, "settings key"},
		{"non-ASCII key", map[string]string{"é": "v"}, "settings key"},
		{"1024-byte value", map[string]string{"k": strings.Repeat("v", 1024)}, ""},
		{"1025-byte value", map[string]string{"k": strings.Repeat("v", 1025)}, "settings[k]"},
		{"invalid UTF-8 value", map[string]string{"k": "\xff"}, "settings[k]"},
		{"control character in value", map[string]string{"k": "\x00"}, "settings[k]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := validate.Settings("settings", tt.in)
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("err = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted, want a refusal naming %q", tt.wantField)
			}
			checkError(t, err, tt.wantField)
		})
	}
}

func TestID(t *testing.T) {
	g := ids.New(ids.Group)
	check(t, "group_id", func(s string) error { return validate.ID("group_id", ids.Group, s) }, cases{
		{g, true},
		{"", false},
		{ids.New(ids.User), false},
		{strings.ToLower(g), false},
		{g[:len(g)-1], false},
		{g + "0", false},
		{"g_8" + g[3:], false}, // the first digit holds 3 bits
		{g[:5] + "I" + g[6:], false},
		{"g_" + strings.Repeat("\xff", 26), false},
		{strings.Repeat("x", 10000), false},
	})
}

func TestBody(t *testing.T) {
	check(t, "body", func(s string) error { return validate.Body("body", s) }, cases{
		{"hello", true},
		{"multi\nline\ttext 🍜", true},
		{strings.Repeat("x", 1<<20), true}, // the size limit is the resource pool's
		{"", false},
		{"\xff", false},
		{"ok then \xc3", false},
	})
}

func TestClientMsgID(t *testing.T) {
	check(t, "client_msg_id", func(s string) error { return validate.ClientMsgID("client_msg_id", s) }, cases{
		{"", true},
		{"a", true},
		{"!~", true},
		{strings.Repeat("k", 64), true},
		{strings.Repeat("k", 65), false},
		{"a b", false},
		{"a\x00", false},
		{"\x7f", false},
		{"é", false},
	})
}

// textOK is an independent statement of Text's contract.
func textOK(s string, limit int, required bool) bool {
	if s == "" {
		return !required
	}
	if len(s) > limit || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) && r != '\n' && r != '\t' {
			return false
		}
	}
	return true
}

func FuzzUsername(f *testing.F) {
	for _, s := range []string{"", "a", "alice.b_c-9", "a b", "é", strings.Repeat("a", 65), "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := validate.Username("username", s)
		if err != nil {
			checkError(t, err, "username")
			return
		}
		if len(s) == 0 || len(s) > validate.MaxNameBytes {
			t.Fatalf("accepted %d bytes", len(s))
		}
		for i := 0; i < len(s); i++ {
			c := s[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._-", c) >= 0) {
				t.Fatalf("accepted %q with byte %q", s, c)
			}
		}
		if !utf8.ValidString(s) {
			t.Fatalf("accepted invalid UTF-8 %q", s)
		}
	})
}

func FuzzText(f *testing.F) {
	for _, s := range []string{"", "hello", "a\nb\tc", "\xff", "a\x00", "\u0085", "🍜", "é"} {
		f.Add(s, 16, false)
		f.Add(s, 1, true)
	}
	f.Fuzz(func(t *testing.T, s string, limit int, required bool) {
		limit = min(max(limit, 0), 1<<16)
		err := validate.Text("text", s, limit, required)
		if want := textOK(s, limit, required); (err == nil) != want {
			t.Fatalf("Text(%q, %d, %v) = %v; want accepted %v", s, limit, required, err, want)
		}
		if err != nil {
			checkError(t, err, "text")
			return
		}
		if !utf8.ValidString(s) || len(s) > limit || (required && s == "") {
			t.Fatalf("accepted %q (limit %d, required %v)", s, limit, required)
		}
		for _, r := range s {
			if unicode.IsControl(r) && r != '\n' && r != '\t' {
				t.Fatalf("accepted control character %U in %q", r, s)
			}
		}

		// A name is text of at most 64 bytes on one line.
		nameErr := validate.Name("name", s, required)
		wantName := textOK(s, validate.MaxNameBytes, required) && !strings.ContainsAny(s, "\n\t")
		if (nameErr == nil) != wantName {
			t.Fatalf("Name(%q, %v) = %v; want accepted %v", s, required, nameErr, wantName)
		}
	})
}

// FuzzSettings decodes the fuzzer's string as entries separated by '\x1e',
// each a key, '=' and a value.
func FuzzSettings(f *testing.F) {
	f.Add("mute=true")
	f.Add("a=1\x1eb=\x1ec=日本語")
	f.Add("a b=1")
	f.Add("=v")
	f.Add("k=\xff")
	f.Add("k=line\nline")
	f.Add(strings.Repeat("k", 65) + "=v")
	f.Fuzz(func(t *testing.T, entries string) {
		m := make(map[string]string)
		for e := range strings.SplitSeq(entries, "\x1e") {
			k, v, _ := strings.Cut(e, "=")
			m[k] = v
		}
		err := validate.Settings("settings", m)

		want := len(m) <= validate.MaxSettings
		for k, v := range m {
			if validate.Username("k", k) != nil || !textOK(v, validate.MaxSettingValBytes, false) {
				want = false
			}
		}
		if (err == nil) != want {
			t.Fatalf("Settings(%q) = %v; want accepted %v", m, err, want)
		}
		if err != nil {
			var ve *validate.Error
			if !errors.As(err, &ve) || !strings.HasPrefix(ve.Field, "settings") {
				t.Fatalf("error %v does not name the settings", err)
			}
			return
		}
		for k, v := range m {
			if len(k) == 0 || len(k) > validate.MaxSettingKeyBytes || len(v) > validate.MaxSettingValBytes || !utf8.ValidString(v) {
				t.Fatalf("accepted %q=%q", k, v)
			}
		}
	})
}

func FuzzID(f *testing.F) {
	f.Add(ids.New(ids.Group))
	f.Add(ids.New(ids.User))
	f.Add("")
	f.Add("g_" + strings.Repeat("Z", 26))
	f.Fuzz(func(t *testing.T, s string) {
		err := validate.ID("group_id", ids.Group, s)
		if err != nil {
			checkError(t, err, "group_id")
			if len(err.Error()) > 200 {
				t.Fatalf("error of %d bytes echoes the input: %q", len(err.Error()), err.Error())
			}
			return
		}
		if len(s) != ids.Len || !strings.HasPrefix(s, "g_") || !utf8.ValidString(s) {
			t.Fatalf("accepted %q", s)
		}
	})
}

func FuzzClientMsgID(f *testing.F) {
	f.Add("")
	f.Add("retry-1")
	f.Add("a b")
	f.Fuzz(func(t *testing.T, s string) {
		err := validate.ClientMsgID("client_msg_id", s)
		if err != nil {
			checkError(t, err, "client_msg_id")
			return
		}
		if len(s) > validate.MaxClientMsgIDBytes {
			t.Fatalf("accepted %d bytes", len(s))
		}
		for i := 0; i < len(s); i++ {
			if s[i] <= ' ' || s[i] >= 0x7f {
				t.Fatalf("accepted %q", s)
			}
		}
	})
}
