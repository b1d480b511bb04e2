package e2e

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roamfed/roamfed/internal/testnet"
)

// TestOneRegionChat is the basic user story on one region: two users
// register and log in, one creates a group that the other joins; what one
// sends the other sees live, in order and once each; after a restart the
// history is intact and the sequence goes on where it stopped.
func TestOneRegionChat(t *testing.T) {
	t.Parallel()
	eu := startRegion(t, "eu")
	for _, u := range []string{"alice", "bob"} {
		out := mustRoamchat(t, eu, u, "register", u, "--password", password(u))
		if !strings.HasPrefix(out, "registered "+u+" ") || !strings.Contains(out, "home region eu") {
			t.Fatalf("register %s printed %q", u, out)
		}
		mustRoamchat(t, eu, u, "login", u, "--password", password(u))
	}
	lobby := createGroup(t, eu, "alice", "lobby")
	probe := createGroup(t, eu, "alice", "probe")
	for _, g := range []string{lobby, probe} {
		mustRoamchat(t, eu, "bob", "group", "join", g)
	}

	tail := startRoamchat(t, eu, "bob", "tail", lobby, probe)
	waitFollowing(t, tail, eu, "alice", probe, "probe")

	const n = 20
	for i := 1; i <= n; i++ {
		out := mustRoamchat(t, eu, "alice", "send", lobby, fmt.Sprintf("msg %d", i))
		if want := fmt.Sprintf("committed seq=%d id=", i); !strings.HasPrefix(out, want) {
			t.Fatalf("send msg %d printed %q, want %q...", i, out, want)
		}
	}
	checkMessages(t, "bob's tail", readLive(t, tail, "lobby", n, 30*time.Second), 1, n, "alice")

	eu.Restart(t)

	// The region's default page, and pages of 7 that --all walks through.
	for _, limit := range []string{"0", "7"} {
		out := mustRoamchat(t, eu, "alice", "history", lobby, "--all", "--limit", limit)
		checkMessages(t, "history --limit "+limit+" after restart", parseHistory(t, out), 1, n, "alice")
	}
	out := mustRoamchat(t, eu, "alice", "send", lobby, fmt.Sprintf("msg %d", n+1))
	if want := fmt.Sprintf("committed seq=%d id=", n+1); !strings.HasPrefix(out, want) {
		t.Fatalf("send after restart printed %q, want %q...", out, want)
	}
	// Bob's tail lost its stream in the restart; it reconnects by itself.
	checkMessages(t, "bob's tail after restart", readLive(t, tail, "lobby", 1, 45*time.Second), n+1, n+1, "alice")

	tail.Stop(t)
	checkMessages(t, "bob's whole tail", parseLive(t, tail.Output(), "lobby"), 1, n+1, "alice")
}

// TestRegiondFlags checks regiond's command line: bad settings are refused
// at start with a message that names where they came from, and SIGTERM
// stops a region cleanly and soon.
func TestRegiondFlags(t *testing.T) {
	t.Parallel()
	needBinaries(t)
	dir := t.TempDir()
	unknownField := filepath.Join(dir, "unknown-field.yaml")
	if err := os.WriteFile(unknownField, []byte("region: eu\nno_such_setting: 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.yaml")

	refused := []struct {
		name string
		args []string
		want []string // in the message
	}{
		{"bad client address", []string{"--client-addr", "nonsense"}, []string{"--client-addr", `"nonsense"`}},
		{"unknown field in config", []string{"--config", unknownField}, []string{unknownField, "no_such_setting"}},
		{"missing config", []string{"--config", missing}, []string{missing}},
		{"bad region name", []string{"--region", "e u"}, []string{"--region"}},
		{"bad log level", []string{"--log-level", "loud"}, []string{"loud"}},
		{"zero shutdown timeout", []string{"--shutdown-timeout", "0s"}, []string{"--shutdown-timeout"}},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"--data", filepath.Join(t.TempDir(), "data")}, tc.args...)
			code, stderr := runRegiond(t, args...)
			if code == 0 {
				t.Fatalf("regiond %s: exit 0, want a refusal; output:\n%s", strings.Join(args, " "), stderr)
			}
			if !strings.HasPrefix(stderr, "regiond: ") {
				t.Errorf("message %q does not start with %q", stderr, "regiond: ")
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("message %q does not name %q", stderr, w)
				}
			}
		})
	}

	t.Run("client address given", func(t *testing.T) {
		t.Parallel()
		addr := testnet.FreeAddrs(t, 1)[0]
		r := startRegion(t, "fixed", "--client-addr", addr)
		if r.Addr() != addr {
			t.Errorf("region serves clients on %s, want %s as --client-addr said", r.Addr(), addr)
		}
	})

	// A region stops on SIGTERM with status 0 well within its shutdown
	// timeout, idle or with a client's session stream open.
	for _, withSession := range []bool{false, true} {
		name := "SIGTERM idle"
		if withSession {
			name = "SIGTERM with a session"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := startRegion(t, "term")
			if withSession {
				mustRoamchat(t, r, "carol", "register", "carol", "--password", password("carol"))
				mustRoamchat(t, r, "carol", "login", "carol", "--password", password("carol"))
				g := createGroup(t, r, "carol", "solo")
				tail := startRoamchat(t, r, "carol", "tail", g)
				waitFollowing(t, tail, r, "carol", g, "solo")
			}
			start := time.Now()
			r.Stop(t)
			d := time.Since(start)
			t.Logf("SIGTERM to exit: %s", d.Round(time.Millisecond))
			if d > 5*time.Second {
				t.Errorf("SIGTERM to exit took %s, want under 5s", d.Round(time.Millisecond))
			}
		})
	}
}

// runRegiond runs regiond to its exit and returns its exit status and
// output.
func runRegiond(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(bin.regiond, args...)
	cmd.Env = processEnv()
	cmd.WaitDelay = time.Second
	out := newOutput()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(cliTimeout):
		cmd.Process.Kill()
		<-done
		t.Fatalf("regiond %s: still running after %s; want a refusal; output:\n%s", strings.Join(args, " "), cliTimeout, out)
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, out.String()
	case errors.As(err, &exit):
		return exit.ExitCode(), out.String()
	}
	t.Fatalf("regiond %s: %v", strings.Join(args, " "), err)
	return 0, ""
}

func password(user string) string { return "pw-of-" + user + "-0123" }

// createGroup creates a group as the user of profile and returns its id,
// which roamchat prints alone on the first line.
func createGroup(t *testing.T, r *Region, profile, name string) string {
	t.Helper()
	out := mustRoamchat(t, r, profile, "group", "create", name)
	id, _, _ := strings.Cut(out, "\n")
	if id == "" || strings.ContainsAny(id, " \t") {
		t.Fatalf("group create %s: first line %q is not a group id", name, id)
	}
	return id
}

// waitFollowing returns once tail follows its groups. roamchat tail says
// nothing when it has read where its groups stand, and a message committed
// before that is not printed, so the test sends probes to a group the tail
// follows until it prints one.
func waitFollowing(t *testing.T, tail *Client, r *Region, sender, group, label string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for i := 1; time.Now().Before(deadline); i++ {
		mustRoamchat(t, r, sender, "send", group, fmt.Sprintf("probe %d", i))
		wait := time.Now().Add(time.Second)
		for time.Now().Before(wait) {
			line, err := tail.Next(time.Until(wait))
			if errors.Is(err, errNoLine) {
				break
			}
			if err != nil {
				t.Fatalf("waiting for the tail to print a probe: %v", err)
			}
			if m, ok := parseLiveLine(line); ok && m.group == label {
				return
			}
			t.Logf("tail, before it follows: %q", line)
		}
	}
	t.Fatalf("the tail printed no probe sent to %s within 30s", label)
}

// chatLine is one message as roamchat prints it.
type chatLine struct {
	group  string // tail: the group's name; history: empty
	seq    uint64
	sender string
	body   string
}

func (m chatLine) String() string { return fmt.Sprintf("#%d %s: %s", m.seq, m.sender, m.body) }

// liveLine is how tail prints a message: "[lobby #12] alice: hello".
var liveLine = regexp.MustCompile(`^\[(.+) #(\d+)\] (\S+): (.*)$`)

func parseLiveLine(line string) (chatLine, bool) {
	m := liveLine.FindStringSubmatch(line)
	if m == nil {
		return chatLine{}, false
	}
	seq, err := strconv.ParseUint(m[2], 10, 64)
	if err != nil {
		return chatLine{}, false
	}
	return chatLine{group: m[1], seq: seq, sender: m[3], body: m[4]}, true
}

// readLive reads the tail's lines until it has printed n messages of the
// group labelled label, and returns them. Presence lines ("* bob is
// online") and other groups' messages are skipped.
func readLive(t *testing.T, tail *Client, label string, n int, timeout time.Duration) []chatLine {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var got []chatLine
	for len(got) < n {
		line, err := tail.Next(time.Until(deadline))
		if err != nil {
			t.Fatalf("tail printed %d of %d messages of %s (%v): %v", len(got), n, label, err, got)
		}
		m, ok := parseLiveLine(line)
		switch {
		case ok && m.group == label:
			got = append(got, m)
		case !ok && !strings.HasPrefix(line, "* "):
			t.Errorf("tail printed %q: neither a message nor a presence change", line)
		}
	}
	return got
}

// parseLive returns the messages of group label in a tail's output.
func parseLive(t *testing.T, out, label string) []chatLine {
	t.Helper()
	var got []chatLine
	for line := range strings.Lines(out) {
		if m, ok := parseLiveLine(strings.TrimSuffix(line, "\n")); ok && m.group == label {
			got = append(got, m)
		}
	}
	return got
}

// historyLine is how history prints a message (in UTC, as the harness
// runs roamchat): "#12 2026-01-02 15:04:05 UTC alice: hello".
var historyLine = regexp.MustCompile(`^#(\d+) \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+ (\S+): (.*)$`)

func parseHistory(t *testing.T, out string) []chatLine {
	t.Helper()
	var got []chatLine
	for line := range strings.Lines(out) {
		line = strings.TrimSuffix(line, "\n")
		m := historyLine.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("history printed %q: not a message", line)
			continue
		}
		seq, _ := strconv.ParseUint(m[1], 10, 64)
		got = append(got, chatLine{seq: seq, sender: m[2], body: m[3]})
	}
	return got
}

// checkMessages checks that got is exactly the messages "msg <seq>" from
// sender with seqs from..to, in order, once each.
func checkMessages(t *testing.T, what string, got []chatLine, from, to uint64, sender string) {
	t.Helper()
	for i := 1; i < len(got); i++ {
		if got[i].seq <= got[i-1].seq {
			t.Errorf("%s: #%d after #%d: out of order or repeated", what, got[i].seq, got[i-1].seq)
		}
	}
	var want []chatLine
	for seq := from; seq <= to; seq++ {
		want = append(want, chatLine{seq: seq, sender: sender, body: fmt.Sprintf("msg %d", seq)})
	}
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		g := got[i]
		g.group = ""
		ok = g == want[i]
	}
	if !ok {
		t.Errorf("%s:\n got %v\nwant %v", what, got, want)
	}
}

// TestRegionKillAndRestart checks what was acknowledged before a crash
// (SIGKILL) is there after it, and that a region whose port was taken
// meanwhile comes back on another.
func TestRegionKillAndRestart(t *testing.T) {
	t.Parallel()
	r := startRegion(t, "ap")
	mustRoamchat(t, r, "dave", "register", "dave", "--password", password("dave"))
	mustRoamchat(t, r, "dave", "login", "dave", "--password", password("dave"))
	g := createGroup(t, r, "dave", "notes")
	mustRoamchat(t, r, "dave", "send", g, "msg 1")

	r.Kill(t)
	old := r.Addr()
	lis, err := net.Listen("tcp", old)
	if err != nil {
		t.Fatalf("taking the killed region's port: %v", err)
	}
	defer lis.Close()
	r.Restart(t)
	if r.Addr() == old {
		t.Fatalf("region restarted on %s, which the test holds", old)
	}

	// The session Login acknowledged survives the crash too.
	checkMessages(t, "history after the crash", parseHistory(t, mustRoamchat(t, r, "dave", "history", g)), 1, 1, "dave")
	out := mustRoamchat(t, r, "dave", "send", g, "msg 2")
	if !strings.HasPrefix(out, "committed seq=2 ") {
		t.Fatalf("send after the crash printed %q, want seq 2", out)
	}
}
