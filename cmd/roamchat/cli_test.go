package main

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer that a running command may write while the
// test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// isolate points roamchat at a fresh profile directory and clears the
// environment that would change its choices.
func isolate(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("ROAMCHAT_CONFIG_DIR", dir)
	t.Setenv("ROAMCHAT_SERVER", "")
	return dir
}

// roamchat runs the CLI with stdin and returns its exit code and output.
func roamchat(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb syncBuffer
	a := newApp(strings.NewReader(stdin), &out, &errb)
	a.loc = time.UTC
	code = a.run(t.Context(), args)
	return code, out.String(), errb.String()
}

func TestUsageErrors(t *testing.T) {
	isolate(t)
	for _, tc := range []struct {
		args []string
		want string // in stderr
	}{
		{nil, "missing command"},
		{[]string{"bogus"}, `unknown command "bogus"`},
		{[]string{"regster"}, `did you mean "register"?`},
		{[]string{"--bogus"}, "unknown flag: --bogus"},
		{[]string{"register"}, "missing USER"},
		{[]string{"register", "a", "b"}, `unexpected argument "b"`},
		{[]string{"login"}, "missing USER"},
		{[]string{"logout", "x"}, `unexpected argument "x"`},
		{[]string{"whoami", "x"}, `unexpected argument "x"`},
		{[]string{"group"}, "missing group command"},
		{[]string{"group", "bogus"}, `unknown command "bogus" for "roamchat group"`},
		{[]string{"group", "create"}, "missing NAME"},
		{[]string{"group", "create", "x", "--set", "novalue"}, `--set "novalue": want key=value`},
		{[]string{"group", "create", "x", "--set", "=v"}, "empty key"},
		{[]string{"group", "show"}, "missing ID"},
		{[]string{"group", "update", "g_x"}, "nothing to update"},
		{[]string{"group", "update", "g_x", "--if-version", "-1"}, "invalid argument"},
		{[]string{"group", "join"}, "missing ID"},
		{[]string{"group", "leave", "a", "b"}, "unexpected argument"},
		{[]string{"group", "list", "x"}, "unexpected argument"},
		{[]string{"send"}, "missing GROUP"},
		{[]string{"send", "g"}, "missing TEXT"},
		{[]string{"send", "g", "  "}, "empty message"},
		{[]string{"history"}, "missing GROUP"},
		{[]string{"history", "g", "--limit", "many"}, "invalid argument"},
		{[]string{"chat"}, "missing GROUP"},
		{[]string{"chat", "a", "b"}, "unexpected argument"},
		{[]string{"--timeout", "-1s", "whoami"}, "--timeout: must not be negative"},
		{[]string{"--timeout", "soon", "whoami"}, "invalid argument"},
		{[]string{"--profile", "../etc", "whoami"}, "--profile"},
		{[]string{"--server", "", "whoami"}, "--server: empty address"},
		{[]string{"register", "bob"}, "no password"}, // stdin is empty
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, stdout, stderr := roamchat(t, "", tc.args...)
			if code != exitUsage {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, exitUsage, stderr)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Errorf("stderr %q does not contain %q", stderr, tc.want)
			}
			if !strings.HasPrefix(stderr, "roamchat: ") || !strings.Contains(stderr, "--help' for usage") {
				t.Errorf("stderr %q: want 'roamchat: ...' and a pointer to --help", stderr)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	isolate(t)
	code, stdout, _ := roamchat(t, "", "--help")
	if code != exitOK {
		t.Fatalf("exit code %d", code)
	}
	for _, cmd := range []string{"register", "login", "logout", "whoami", "group", "send", "history", "tail", "chat"} {
		if !strings.Contains(stdout, "\n  "+cmd+" ") {
			t.Errorf("help does not list %q:\n%s", cmd, stdout)
		}
	}
	if strings.Contains(stdout, "completion") {
		t.Errorf("help lists the completion command; roamchat has a fixed command set")
	}
	code, stdout, _ = roamchat(t, "", "group", "--help")
	if code != exitOK || !strings.Contains(stdout, "create") || !strings.Contains(stdout, "--server") {
		t.Errorf("group --help: code %d\n%s", code, stdout)
	}
}

func TestNotLoggedIn(t *testing.T) {
	isolate(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"whoami"}, "roamchat: whoami: not logged in with profile \"default\" (run `roamchat login USER`)\n"},
		{[]string{"--profile", "work", "group", "list"}, "roamchat: group list: not logged in with profile \"work\" (run `roamchat --profile work login USER`)\n"},
		{[]string{"logout"}, "roamchat: logout: not logged in"},
		{[]string{"send", "g", "hi"}, "roamchat: send: not logged in"},
		{[]string{"tail"}, "roamchat: tail: not logged in"},
	} {
		code, stdout, stderr := roamchat(t, "", tc.args...)
		if code != exitError || !strings.HasPrefix(stderr, tc.want) || stdout != "" {
			t.Errorf("%v: code %d, stdout %q, stderr %q; want code 1 and stderr starting %q", tc.args, code, stdout, stderr, tc.want)
		}
	}
}

func TestWhoamiFromProfile(t *testing.T) {
	isolate(t)
	store, err := defaultProfileStore()
	if err != nil {
		t.Fatal(err)
	}
	p := &profile{Server: "eu:7100", Token: "t", UserID: "u_1", Username: "alice", HomeRegion: "eu",
		ExpiresAt: time.Now().Add(time.Hour).UTC().Truncate(time.Second)}
	if err := store.save("default", p); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := roamchat(t, "", "whoami")
	if code != exitOK {
		t.Fatalf("code %d: %s", code, stderr)
	}
	for _, want := range []string{"user:", "alice", "u_1", "eu:7100", p.ExpiresAt.Format(timeLayout)} {
		if !strings.Contains(stdout, want) {
			t.Errorf("whoami output lacks %q:\n%s", want, stdout)
		}
	}

	p.ExpiresAt = time.Now().Add(-time.Minute)
	if err := store.save("default", p); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = roamchat(t, "", "whoami")
	if code != exitError || !strings.Contains(stderr, "session expired") || !strings.Contains(stderr, "roamchat login alice") {
		t.Errorf("expired: code %d, stderr %q", code, stderr)
	}
}

func TestUnreachableServer(t *testing.T) {
	isolate(t)
	store, _ := defaultProfileStore()
	// Port 1 on loopback: nothing listens there.
	if err := store.save("default", &profile{Server: "127.0.0.1:1", Token: "t", Username: "alice"}); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := roamchat(t, "", "--timeout", "5s", "group", "list")
	if code != exitError || !strings.HasPrefix(stderr, "roamchat: group list: unavailable: ") || !strings.Contains(stderr, "(server 127.0.0.1:1)") {
		t.Errorf("code %d, stderr %q", code, stderr)
	}
	if strings.Count(stderr, "\n") != 1 {
		t.Errorf("error is not one line: %q", stderr)
	}
}

func TestLogoutWhileUnreachable(t *testing.T) {
	isolate(t)
	store, _ := defaultProfileStore()
	if err := store.save("default", &profile{Server: "127.0.0.1:1", Token: "t", Username: "alice", UserID: "u_1"}); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := roamchat(t, "", "logout")
	if code != exitError || !strings.Contains(stderr, "token removed here, but the region may still accept it: unavailable") {
		t.Errorf("code %d, stderr %q", code, stderr)
	}
	p, err := store.load("default")
	if err != nil {
		t.Fatal(err)
	}
	if p.Token != "" || p.Username != "alice" || p.Server != "127.0.0.1:1" {
		t.Errorf("profile after logout: %+v; want the token gone, the rest kept", p)
	}
}

func TestBadCAFile(t *testing.T) {
	isolate(t)
	store, _ := defaultProfileStore()
	if err := store.save("default", &profile{Server: "127.0.0.1:1", Token: "t"}); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := roamchat(t, "", "--ca", "/nonexistent/ca.pem", "group", "list")
	if code != exitError || !strings.HasPrefix(stderr, "roamchat: group list: --ca: ") {
		t.Errorf("code %d, stderr %q", code, stderr)
	}
}
