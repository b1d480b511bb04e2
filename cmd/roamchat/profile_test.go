package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestProfileRoundTrip(t *testing.T) {
	s := profileStore{dir: filepath.Join(t.TempDir(), "roamfed", "profiles")}
	want := &profile{
		Server:     "eu.example:7100",
		Token:      "tok",
		UserID:     "u_01",
		Username:   "alice",
		HomeRegion: "eu",
		ExpiresAt:  time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC),
	}
	if err := s.save("work", want); err != nil {
		t.Fatal(err)
	}
	got, err := s.load("work")
	if err != nil {
		t.Fatal(err)
	}
	if *got != *want {
		t.Errorf("load = %+v, want %+v", got, want)
	}
	// A second save replaces the first.
	want.Token = "tok2"
	if err := s.save("work", want); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.load("work"); got.Token != "tok2" {
		t.Errorf("token after second save = %q", got.Token)
	}
	entries, _ := os.ReadDir(s.dir)
	if len(entries) != 1 {
		t.Errorf("profile dir holds %d entries, want only work.json (no temp files)", len(entries))
	}
}

func TestProfilePermissions(t *testing.T) {
	base := t.TempDir()
	s := profileStore{dir: filepath.Join(base, "roamfed", "profiles")}
	// A file left world-readable by something else is replaced by a private one.
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.path("default"), []byte(`{}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.save("default", &profile{Server: "x:1", Token: "secret"}); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{
		s.dir:             0o700,
		s.path("default"): 0o600,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %v, want %v", path, got, want)
		}
	}

	// Directories save creates are private too.
	s2 := profileStore{dir: filepath.Join(base, "fresh", "roamfed", "profiles")}
	if err := s2.save("p", &profile{}); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{s2.dir, filepath.Dir(s2.dir)} {
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got&0o077 != 0 {
			t.Errorf("%s: mode %v, want no group or other access", dir, got)
		}
	}
}

func TestProfileMissingAndBroken(t *testing.T) {
	s := profileStore{dir: t.TempDir()}
	if _, err := s.load("nobody"); !errors.Is(err, errNoProfile) {
		t.Errorf("load of a missing profile: %v, want errNoProfile", err)
	}
	if err := os.WriteFile(s.path("broken"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := s.load("broken")
	if err == nil || errors.Is(err, errNoProfile) {
		t.Errorf("load of a broken profile: %v, want a decoding error", err)
	}
}

func TestDefaultProfileStore(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("ROAMCHAT_CONFIG_DIR", dir)
	s, err := defaultProfileStore()
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "profiles"); s.dir != want {
		t.Errorf("dir = %q, want %q", s.dir, want)
	}

	t.Setenv("ROAMCHAT_CONFIG_DIR", "")
	t.Setenv("XDG_CONFIG_HOME", dir) // os.UserConfigDir on Unix
	t.Setenv("HOME", dir)
	s, err = defaultProfileStore()
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := os.UserConfigDir()
	if want := filepath.Join(cfg, "roamfed", "profiles"); s.dir != want {
		t.Errorf("dir = %q, want %q", s.dir, want)
	}
}

func TestValidProfileName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"default", true},
		{"alice.eu-2_x", true},
		{"", false},
		{".hidden", false},
		{"-flag", false},
		{"../escape", false},
		{"a/b", false},
		{"sp ace", false},
		{string(make([]byte, 65)), false},
	} {
		if err := validProfileName(tc.name); (err == nil) != tc.ok {
			t.Errorf("validProfileName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func TestServerFor(t *testing.T) {
	saved := &profile{Server: "saved:7100"}
	for _, tc := range []struct {
		name string
		flag string // "" when --server is not given
		env  string
		prof *profile
		want string
	}{
		{"default", "", "", nil, defaultServer},
		{"env over default", "", "env:7100", nil, "env:7100"},
		{"profile over env", "", "env:7100", saved, "saved:7100"},
		{"profile without server", "", "env:7100", &profile{}, "env:7100"},
		{"flag over all", "flag:7100", "env:7100", saved, "flag:7100"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("ROAMCHAT_SERVER", tc.env)
			a := &app{server: tc.flag, serverSet: tc.flag != ""}
			if got := a.serverFor(tc.prof); got != tc.want {
				t.Errorf("serverFor = %q, want %q", got, tc.want)
			}
		})
	}
}
