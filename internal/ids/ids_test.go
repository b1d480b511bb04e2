package ids

import (
	"strings"
	"testing"
	"time"
)

func TestNewIsValidAndUnique(t *testing.T) {
	seen := make(map[string]bool)
	for i := 0; i < 10000; i++ {
		id := New(Message)
		if !Valid(Message, id) {
			t.Fatalf("New produced invalid id %q", id)
		}
		if Valid(Group, id) {
			t.Fatalf("id %q valid for the wrong kind", id)
		}
		if seen[id] {
			t.Fatalf("duplicate id %q after %d", id, i)
		}
		seen[id] = true
	}
}

func TestIDsSortByTime(t *testing.T) {
	a := newAt(User, time.UnixMilli(1_700_000_000_000))
	b := newAt(User, time.UnixMilli(1_700_000_000_001))
	if strings.Compare(a[:12], b[:12]) >= 0 {
		t.Fatalf("time prefix does not sort: %s >= %s", a, b)
	}
}

func TestValid(t *testing.T) {
	good := New(Group)
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{good, true},
		{"", false},
		{"g_", false},
		{"x" + good[1:], false},
		{good[:Len-1], false},
		{good + "0", false},
		{good[:Len-1] + "I", false},
		{good[:Len-1] + "a", false},
		{good[:2] + "8" + good[3:], false},
		{good[:Len-1] + "/", false},
	} {
		if got := Valid(Group, tc.in); got != tc.want {
			t.Errorf("Valid(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func FuzzValid(f *testing.F) {
	f.Add(New(User))
	f.Add("u_00000000000000000000000000")
	f.Add("u_/")
	f.Fuzz(func(t *testing.T, s string) {
		if Valid(User, s) {
			// Every valid id is plain ASCII without separators, which the
			// data center's key layout relies on.
			if strings.ContainsAny(s, "/\x00") || len(s) != Len {
				t.Fatalf("Valid accepted %q", s)
			}
		}
	})
}
