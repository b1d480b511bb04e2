package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roamfed/roamfed/regions"
)

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "missing command"},
		{[]string{"stauts"}, `unknown command "stauts" for "roamctl" (did you mean "status"?)`},
		{[]string{"status", "extra"}, `unexpected argument "extra"`},
		{[]string{"--timeout", "0s", "status"}, "--timeout: must be positive"},
		{[]string{"--timeout", "soon", "status"}, "invalid argument"},
		{[]string{"--token", "a", "--token-file", "f", "status"}, "--token and --token-file: give one"},
		{[]string{"--token", " ", "status"}, "--token: empty"},
		{[]string{"status", "--region", "mars"}, `no region "mars" in regions/dev.yaml (it has ap, eu, us)`},
		{[]string{"drill"}, "missing subcommand"},
		{[]string{"drill", "cutt"}, `did you mean "cut"?`},
		{[]string{"drill", "cut", "ap"}, "missing B"},
		{[]string{"drill", "cut", "ap", "eu", "us"}, `unexpected argument "us"`},
		{[]string{"drill", "cut", "ap", "ap"}, `A and B are both "ap"`},
		{[]string{"drill", "restore", "ap", "mars"}, `no region "mars"`},
		{[]string{"drill", "run"}, "--cut: missing"},
		{[]string{"drill", "run", "--cut", "ap"}, `--cut "ap": want A-B`},
		{[]string{"drill", "run", "--cut", "ap-ap"}, "two different regions"},
		{[]string{"drill", "run", "--cut", "ap-mars"}, `--cut "ap-mars": want A-B`},
		{[]string{"drill", "run", "--cut", "ap-eu", "--rate", "0"}, "--rate: must be positive"},
		{[]string{"drill", "run", "--cut", "ap-eu", "--duration", "-1s"}, "--duration: must be positive"},
		{[]string{"drill", "run", "--cut", "ap-eu", "--groups", "0"}, "--groups: at least 1"},
		{[]string{"drill", "run", "--cut", "ap-eu", "--users-per-region", "0"}, "--users-per-region: at least 1"},
		{[]string{"drill", "run", "--cut", "ap-eu", "--duration", "10s", "--restore-after", "11s"}, "past --duration"},
		{[]string{"drill", "run", "--cut", "ap-eu", "--duration", "10s", "--warmup", "8s"}, "must end before the restore at 7s"},
		{[]string{"drill", "run", "--cut", "ap-eu", "--run-id", "Bad_ID"}, "--run-id: only lowercase"},
		{[]string{"drill", "run", "--cut", "ap-eu", "--rate", "x"}, "invalid argument"},
		{[]string{"resync", "--region", "mars"}, `no region "mars"`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, out, errOut := runCLI(t, tc.args...)
			if code != exitUsage {
				t.Errorf("exit %d, want %d; stdout %q stderr %q", code, exitUsage, out, errOut)
			}
			if !strings.Contains(errOut, tc.want) || !strings.Contains(errOut, "--help' for usage") {
				t.Errorf("stderr %q, want it to contain %q and a usage hint", errOut, tc.want)
			}
			if out != "" {
				t.Errorf("stdout %q, want nothing", out)
			}
		})
	}
}

func TestHelpExitsZero(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"drill", "run", "--help"}, {"help", "mesh"}} {
		code, out, _ := runCLI(t, args...)
		if code != exitOK || !strings.Contains(out, "Usage:") {
			t.Errorf("%v: exit %d, stdout %q", args, code, out)
		}
	}
}

func TestMissingFederationFile(t *testing.T) {
	code, _, errOut := runCLI(t, "--federation", filepath.Join(t.TempDir(), "none.yaml"), "mesh")
	if code != exitError || !strings.Contains(errOut, "federation file") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
}

func TestAdminToken(t *testing.T) {
	dir := t.TempDir()
	devFile := filepath.Join(dir, defaultTokenFile)
	if err := os.MkdirAll(filepath.Dir(devFile), 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(path, s string) string {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	write(devFile, "dev-token\n")
	other := write(filepath.Join(dir, "other.token"), "file-token\n")
	empty := write(filepath.Join(dir, "empty.token"), "\n")

	for _, tc := range []struct {
		name      string
		token     string
		tokenFile string
		env       string
		dir       string
		want      string
		err       bool
	}{
		{name: "flag wins", token: "flag-token", env: "env-token", dir: dir, want: "flag-token"},
		{name: "token file next", tokenFile: other, env: "env-token", dir: dir, want: "file-token"},
		{name: "environment next", env: " env-token ", dir: dir, want: "env-token"},
		{name: "dev file last", dir: dir, want: "dev-token"},
		{name: "none anywhere", dir: t.TempDir(), want: ""},
		{name: "empty token file", tokenFile: empty, dir: dir, err: true},
		{name: "missing token file", tokenFile: filepath.Join(dir, "nope"), dir: dir, err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newApp(&bytes.Buffer{}, &bytes.Buffer{})
			a.token, a.tokenFile, a.dir = tc.token, tc.tokenFile, tc.dir
			a.getenv = func(k string) string {
				if k == tokenEnv {
					return tc.env
				}
				return ""
			}
			got, err := a.adminToken()
			if (err != nil) != tc.err || got != tc.want {
				t.Errorf("adminToken() = %q, %v; want %q (error %v)", got, err, tc.want, tc.err)
			}
		})
	}
}

func TestFederationDefault(t *testing.T) {
	// Without a file in the working directory: the built-in dev one.
	a := newApp(&bytes.Buffer{}, &bytes.Buffer{})
	a.dir = t.TempDir()
	fed, err := a.federation()
	if err != nil || fed.Name != "dev" || strings.Join(fed.Names(), ",") != "ap,eu,us" {
		t.Fatalf("built-in: %v, %v", fed, err)
	}
	// With regions/dev.yaml in the working directory: that one.
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "regions"), 0o755); err != nil {
		t.Fatal(err)
	}
	yaml := "federation: local\nregions:\n  - name: one\n    roaming_addr: 127.0.0.1:1\n    client_addr: 127.0.0.1:2\n  - name: two\n    roaming_addr: 127.0.0.1:3\n    client_addr: 127.0.0.1:4\n"
	if err := os.WriteFile(filepath.Join(dir, defaultFederationFile), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	a = newApp(&bytes.Buffer{}, &bytes.Buffer{})
	a.dir = dir
	fed, err = a.federation()
	if err != nil || fed.Name != "local" {
		t.Fatalf("working directory file: %v, %v", fed, err)
	}
	// A region without an admin address is an error that says so.
	var out, errOut bytes.Buffer
	a = newApp(&out, &errOut)
	a.dir = dir
	a.getenv = func(string) string { return "" }
	code := a.run(context.Background(), []string{"status", "--region", "one"})
	if code != exitError || !strings.Contains(errOut.String(), "region one has no admin_addr") {
		t.Errorf("status of a region without admin_addr: exit %d, stderr %q", code, errOut.String())
	}
}

func TestSplitLink(t *testing.T) {
	fed, err := regions.Parse("test.yaml", []byte(`federation: t
regions:
  - name: us-east
    roaming_addr: 127.0.0.1:1
    client_addr: 127.0.0.1:2
  - name: us
    roaming_addr: 127.0.0.1:3
    client_addr: 127.0.0.1:4
  - name: east-eu
    roaming_addr: 127.0.0.1:5
    client_addr: 127.0.0.1:6
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ in, x, y string }{
		{"us-east-eu", "us", "east-eu"},
		{"us-east-us", "us-east", "us"},
		{"east-eu-us-east", "east-eu", "us-east"},
	} {
		x, y, err := splitLink(tc.in, fed)
		if err != nil || x != tc.x || y != tc.y {
			t.Errorf("splitLink(%q) = %q, %q, %v; want %q, %q", tc.in, x, y, err, tc.x, tc.y)
		}
	}
	for _, bad := range []string{"", "us", "us-", "-us", "us-us", "us-mars"} {
		if _, _, err := splitLink(bad, fed); err == nil {
			t.Errorf("splitLink(%q): no error", bad)
		}
	}
}

func TestRunConfigDefaults(t *testing.T) {
	fed, err := regions.DevFederation()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		duration, warmup, restore time.Duration
	}{
		{30 * time.Second, 3 * time.Second, 21 * time.Second},
		{6 * time.Second, 1200 * time.Millisecond, 4200 * time.Millisecond},
		{time.Minute, 3 * time.Second, 42 * time.Second},
	} {
		c := runConfig{cut: "eu-us", duration: tc.duration, rate: 1, usersPerRegion: 1, groups: 1, inflight: 1, settle: time.Second}
		if err := c.resolve(fed); err != nil {
			t.Fatal(err)
		}
		if c.x != "eu" || c.y != "us" || c.warmup != tc.warmup || c.restoreAfter != tc.restore || len(c.runID) != 6 {
			t.Errorf("duration %s: %+v", tc.duration, c)
		}
	}
}
