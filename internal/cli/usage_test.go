package cli

import "testing"

func TestArgs(t *testing.T) {
	for _, tc := range []struct {
		names []string
		got   []string
		ok    bool
	}{
		{nil, nil, true},
		{nil, []string{"x"}, false},
		{[]string{"A"}, []string{"x"}, true},
		{[]string{"A"}, nil, false},
		{[]string{"A", "B..."}, []string{"x"}, false},
		{[]string{"A", "B..."}, []string{"x", "y", "z"}, true},
		{[]string{"[A...]"}, nil, true},
		{[]string{"[A...]"}, []string{"x", "y"}, true},
	} {
		err := Args(tc.names...)(nil, tc.got)
		if (err == nil) != tc.ok {
			t.Errorf("Args(%v)(%v) = %v, want ok=%v", tc.names, tc.got, err, tc.ok)
		}
	}
}
