package main

// Tests against a real region, started in this process by internal/stack:
// a Pebble store in a temp dir, an embedded NATS bus, gRPC on loopback.

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roamfed/roamfed/internal/ids"
	"github.com/roamfed/roamfed/internal/password"
	"github.com/roamfed/roamfed/internal/stack"
	"github.com/roamfed/roamfed/servicecenter/resourcepool"
)

// region is a running region and how to restart it in place.
type region struct {
	t   *testing.T
	cfg stack.Config
	st  *stack.Stack
}

func startRegion(t *testing.T, cfg stack.Config) *region {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a region")
	}
	cfg.Region = "local"
	cfg.DataDir = t.TempDir()
	if cfg.ClientAddr == "" {
		cfg.ClientAddr = "127.0.0.1:0"
	}
	cfg.Password = password.Params{Memory: 64, Time: 1, Threads: 1}
	r := &region{t: t, cfg: cfg}
	r.start()
	// Fix the address so that a restart comes back where clients look.
	r.cfg.ClientAddr = r.st.ClientAddr()
	t.Setenv("ROAMCHAT_SERVER", r.addr())
	t.Cleanup(r.stop)
	return r
}

func (r *region) addr() string { return r.cfg.ClientAddr }

func (r *region) start() {
	r.t.Helper()
	st, err := stack.Start(r.cfg)
	if err != nil {
		r.t.Fatalf("start region: %v", err)
	}
	r.st = st
}

func (r *region) stop() {
	if r.st == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.st.Shutdown(ctx); err != nil {
		r.t.Errorf("region shutdown: %v", err)
	}
	r.st = nil
}

// must runs roamchat and fails the test unless it exits 0.
func must(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	code, out, errOut := roamchat(t, stdin, args...)
	if code != exitOK {
		t.Fatalf("roamchat %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// fails runs roamchat, wants exit code 1, and returns stderr.
func fails(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errOut := roamchat(t, "", args...)
	if code != exitError {
		t.Fatalf("roamchat %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, exitError, out, errOut)
	}
	if strings.Count(errOut, "\n") != 1 {
		t.Errorf("roamchat %s: error is not one line: %q", strings.Join(args, " "), errOut)
	}
	return errOut
}

// background is a roamchat command running until stopped.
type background struct {
	out, errOut *syncBuffer
	cancel      context.CancelFunc
	done        chan int
}

func startBackground(t *testing.T, stdin io.Reader, args ...string) *background {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	b := &background{out: new(syncBuffer), errOut: new(syncBuffer), cancel: cancel, done: make(chan int, 1)}
	a := newApp(stdin, b.out, b.errOut)
	a.loc = time.UTC
	go func() { b.done <- a.run(ctx, args) }()
	t.Cleanup(func() { b.stop(t) })
	return b
}

// stop interrupts the command, as Ctrl-C does, and returns its exit code.
func (b *background) stop(t *testing.T) int {
	t.Helper()
	b.cancel()
	select {
	case code := <-b.done:
		b.done <- code
		return code
	case <-time.After(10 * time.Second):
		t.Fatalf("command did not stop on interrupt\nstdout:\n%s\nstderr:\n%s", b.out, b.errOut)
		return -1
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// messageLine matches what tail and chat print for a message.
var messageLine = regexp.MustCompile(`^\[(.+) #(\d+)\] (\S+): (.*)$`)

// seqsOf returns the seqs of the message lines of group label in out.
func seqsOf(out, label string) []int {
	var seqs []int
	for _, l := range strings.Split(out, "\n") {
		if m := messageLine.FindStringSubmatch(l); m != nil && m[1] == label {
			var n int
			fmt.Sscan(m[2], &n)
			seqs = append(seqs, n)
		}
	}
	return seqs
}

// account registers and logs in user with its own profile, named after it.
func account(t *testing.T, user string) {
	t.Helper()
	out := must(t, "secret-"+user+"\n", "register", user, "--display-name", strings.ToUpper(user))
	if !strings.HasPrefix(out, "registered "+user+" (user id u_") {
		t.Errorf("register output %q", out)
	}
	out = must(t, "", "--profile", user, "login", user, "--password", "secret-"+user)
	if !strings.HasPrefix(out, "logged in as "+user) {
		t.Errorf("login output %q", out)
	}
}

func TestRegionCommands(t *testing.T) {
	isolate(t)
	r := startRegion(t, stack.Config{})
	account(t, "alice")
	account(t, "bob")

	if e := fails(t, "register", "alice", "--password", "another-pw"); !strings.Contains(e, "already exists") {
		t.Errorf("second register: %q", e)
	}
	if e := fails(t, "login", "alice", "--password", "wrong-password"); !strings.HasPrefix(e, "roamchat: login: unauthenticated") {
		t.Errorf("bad password: %q", e)
	}
	if e := fails(t, "register", "x", "--password", "short"); !strings.Contains(e, "invalid argument") || !strings.Contains(e, "password") {
		t.Errorf("short password: %q", e)
	}

	if e := fails(t, "--profile", "alice", "--tls", "group", "list"); !strings.Contains(e, "drop --tls") {
		t.Errorf("--tls to a plaintext region: %q", e)
	}

	out := must(t, "", "--profile", "alice", "whoami")
	if !strings.Contains(out, "alice") || !strings.Contains(out, r.addr()) {
		t.Errorf("whoami:\n%s", out)
	}

	// The id comes first, alone, for scripts.
	out = must(t, "", "--profile", "alice", "group", "create", "lobby", "--notice", "be nice", "--set", "topic=chat")
	gid, details, _ := strings.Cut(out, "\n")
	if !ids.Valid(ids.Group, gid) {
		t.Fatalf("group create: first line %q is not a group id\n%s", gid, out)
	}
	for _, want := range []string{"lobby", "be nice", "topic = chat", "members (1)", "alice"} {
		if !strings.Contains(details, want) {
			t.Errorf("group create details lack %q:\n%s", want, details)
		}
	}

	if e := fails(t, "--profile", "bob", "send", gid, "hi"); !strings.HasPrefix(e, "roamchat: send: permission denied: ") {
		t.Errorf("send by a non-member: %q", e)
	}
	if e := fails(t, "--profile", "bob", "group", "show", gid); !strings.Contains(e, "permission denied") {
		t.Errorf("show by a non-member: %q", e)
	}
	if out := must(t, "", "--profile", "bob", "group", "join", gid); !strings.HasPrefix(out, "joined lobby ("+gid) {
		t.Errorf("join: %q", out)
	}
	out = must(t, "", "--profile", "bob", "group", "show", gid)
	if !strings.Contains(out, "members (2)") || !strings.Contains(out, "id:") {
		t.Errorf("show:\n%s", out)
	}
	if e := fails(t, "--profile", "bob", "group", "update", gid, "--name", "x", "--if-version", "999"); !strings.Contains(e, "failed precondition") {
		t.Errorf("update at a stale version: %q", e)
	}
	out = must(t, "", "--profile", "bob", "group", "update", gid, "--name", "plaza", "--set", "topic=", "--set", "lang=en")
	if !strings.Contains(out, "plaza") || strings.Contains(out, "topic") || !strings.Contains(out, "lang = en") {
		t.Errorf("update:\n%s", out)
	}

	// Names work where the commands take GROUP.
	for i, who := range []string{"alice", "bob", "alice"} {
		out := must(t, "", "--profile", who, "send", "plaza", fmt.Sprintf("hello %d", i+1))
		if want := fmt.Sprintf("committed seq=%d id=m_", i+1); !strings.HasPrefix(out, want) {
			t.Errorf("send: %q, want %q...", out, want)
		}
	}
	if e := fails(t, "--profile", "bob", "send", "nowhere", "hi"); !strings.Contains(e, "neither a group id nor the name") {
		t.Errorf("send to an unknown name: %q", e)
	}

	out = must(t, "", "--profile", "bob", "history", gid)
	hist := regexp.MustCompile(`(?m)^#(\d) \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC (\S+): hello (\d)$`).FindAllStringSubmatch(out, -1)
	if len(hist) != 3 || hist[0][2] != "alice" || hist[1][2] != "bob" {
		t.Errorf("history:\n%s", out)
	}
	code, out, errOut := roamchat(t, "", "--profile", "bob", "history", gid, "--limit", "2")
	if code != 0 || strings.Count(out, "\n") != 2 || !strings.Contains(errOut, "--after 2") {
		t.Errorf("history --limit 2: code %d\n%s\n%s", code, out, errOut)
	}
	out = must(t, "", "--profile", "bob", "history", gid, "--limit", "1", "--all", "--after", "1")
	if strings.Count(out, "\n") != 2 || !strings.HasPrefix(out, "#2 ") {
		t.Errorf("history --all --after 1:\n%s", out)
	}

	out = must(t, "", "--profile", "bob", "group", "list")
	if !regexp.MustCompile(`(?m)^` + gid + `\s+plaza\s+local\s+2\s+3\s+3$`).MatchString(out) {
		t.Errorf("group list:\n%s", out)
	}

	if out := must(t, "", "--profile", "bob", "group", "leave", gid); out != "left "+gid+"\n" {
		t.Errorf("leave: %q", out)
	}
	if e := fails(t, "--profile", "bob", "history", gid); !strings.Contains(e, "permission denied") {
		t.Errorf("history after leaving: %q", e)
	}

	// A token the region does not know.
	store, _ := defaultProfileStore()
	p, _ := store.load("bob")
	p.Token = "forged"
	if err := store.save("forged", p); err != nil {
		t.Fatal(err)
	}
	if e := fails(t, "--profile", "forged", "group", "list"); !strings.Contains(e, "unauthenticated") || !strings.Contains(e, "(run `roamchat --profile forged login bob`)") {
		t.Errorf("forged token: %q", e)
	}

	if out := must(t, "", "--profile", "bob", "logout"); out != "logged out bob\n" {
		t.Errorf("logout: %q", out)
	}
	if e := fails(t, "--profile", "bob", "whoami"); !strings.Contains(e, "not logged in") {
		t.Errorf("whoami after logout: %q", e)
	}
	// The revoked token is refused by the region, too.
	p.Token = mustLoad(t, "alice").Token
	must(t, "", "--profile", "alice", "logout")
	if err := store.save("revoked", p); err != nil {
		t.Fatal(err)
	}
	if e := fails(t, "--profile", "revoked", "group", "list"); !strings.Contains(e, "unauthenticated") {
		t.Errorf("revoked token: %q", e)
	}
}

func mustLoad(t *testing.T, name string) *profile {
	t.Helper()
	store, err := defaultProfileStore()
	if err != nil {
		t.Fatal(err)
	}
	p, err := store.load(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// syncTail sends markers until the running tail prints one: from then on,
// everything sent is after the tail's start.
func syncTail(t *testing.T, tail *background, who, gid string) {
	t.Helper()
	i := 0
	waitFor(t, "tail to start", func() bool {
		i++
		must(t, "", "--profile", who, "send", gid, fmt.Sprintf("sync %d", i))
		time.Sleep(50 * time.Millisecond)
		return strings.Contains(tail.out.String(), ": sync ")
	})
}

func TestRegionTail(t *testing.T) {
	isolate(t)
	r := startRegion(t, stack.Config{
		// A queue of one delivery and no resends: the region often gives up
		// on live delivery and sends CatchUp, which tail must fill.
		Limits:      resourcepool.Limits{MaxQueuedPerSession: 1},
		AckTimeout:  time.Millisecond,
		MaxAttempts: 1,
	})
	account(t, "alice")
	account(t, "bob")
	gid := strings.SplitN(must(t, "", "--profile", "alice", "group", "create", "lobby"), "\n", 2)[0]
	must(t, "", "--profile", "bob", "group", "join", gid)
	other := strings.SplitN(must(t, "", "--profile", "alice", "group", "create", "other"), "\n", 2)[0]
	must(t, "", "--profile", "bob", "group", "join", other)

	// bob tails lobby only; "other" must not show.
	tail := startBackground(t, strings.NewReader(""), "--profile", "bob", "tail", "lobby")
	syncTail(t, tail, "alice", gid)

	// Presence: alice comes online with a session of her own, then leaves.
	aliceTail := startBackground(t, strings.NewReader(""), "--profile", "alice", "tail")
	waitFor(t, "alice online", func() bool { return strings.Contains(tail.out.String(), "* alice is online (region local)\n") })
	if code := aliceTail.stop(t); code != exitOK {
		t.Errorf("alice's tail exit %d on interrupt", code)
	}
	waitFor(t, "alice offline", func() bool { return strings.Contains(tail.out.String(), "* alice is offline\n") })

	const n = 30
	for i := range n {
		must(t, "", "--profile", "alice", "send", gid, fmt.Sprintf("burst %d", i))
		if i%10 == 0 {
			must(t, "", "--profile", "alice", "send", other, "elsewhere")
		}
	}
	_, last := lastSeq(t, "alice", gid)
	waitFor(t, "the burst", func() bool { s := seqsOf(tail.out.String(), "lobby"); return len(s) > 0 && s[len(s)-1] == last })

	// The region goes away and comes back while tail runs; messages sent
	// meanwhile arrive, once each and in order.
	r.stop()
	waitFor(t, "tail to notice", func() bool { return strings.Contains(tail.errOut.String(), "reconnecting") })
	r.start()
	for i := range 5 {
		must(t, "", "--profile", "alice", "send", gid, fmt.Sprintf("after restart %d", i))
	}
	_, last = lastSeq(t, "alice", gid)
	waitFor(t, "messages after the restart", func() bool { s := seqsOf(tail.out.String(), "lobby"); return len(s) > 0 && s[len(s)-1] == last })

	if code := tail.stop(t); code != exitOK {
		t.Errorf("tail exit %d on interrupt; stderr:\n%s", code, tail.errOut)
	}
	out := tail.out.String()
	t.Logf("tail stdout:\n%s\ntail stderr:\n%s", out, tail.errOut)
	seqs := seqsOf(out, "lobby")
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			t.Fatalf("tail printed seqs %v: want consecutive, each once\n%s", seqs, out)
		}
	}
	if strings.Contains(out, "elsewhere") || strings.Contains(out, "[other") {
		t.Errorf("tail of lobby printed another group:\n%s", out)
	}
	if !strings.Contains(out, "[lobby #"+fmt.Sprint(last)+"] alice: after restart 4\n") {
		t.Errorf("tail output lacks the last message:\n%s", out)
	}
}

// lastSeq returns the group's latest seq as user sees it in group list.
func lastSeq(t *testing.T, user, gid string) (string, int) {
	t.Helper()
	out := must(t, "", "--profile", user, "group", "list")
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) == 6 && f[0] == gid {
			var n int
			fmt.Sscan(f[4], &n)
			return f[1], n
		}
	}
	t.Fatalf("group %s not in list:\n%s", gid, out)
	return "", 0
}

func TestRegionChat(t *testing.T) {
	isolate(t)
	startRegion(t, stack.Config{})
	account(t, "alice")
	account(t, "bob")
	gid := strings.SplitN(must(t, "", "--profile", "alice", "group", "create", "lobby"), "\n", 2)[0]
	must(t, "", "--profile", "bob", "group", "join", gid)
	for i := 1; i <= 25; i++ {
		must(t, "", "--profile", "alice", "send", gid, fmt.Sprintf("old %d", i))
	}

	// Lines, then /quit: the backlog first, then bob's lines as committed.
	code, out, errOut := roamchat(t, "first line\n\n  \nsecond line\n/quit\nnot sent\n", "--profile", "bob", "chat", "lobby")
	if code != exitOK {
		t.Fatalf("chat: exit %d\n%s\n%s", code, out, errOut)
	}
	seqs := seqsOf(out, "lobby")
	want := []int{6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27}
	if !slices.Equal(seqs, want) {
		t.Errorf("chat printed seqs %v, want %v\n%s", seqs, want, out)
	}
	for _, line := range []string{"[lobby #6] alice: old 6\n", "[lobby #26] bob: first line\n", "[lobby #27] bob: second line\n"} {
		if !strings.Contains(out, line) {
			t.Errorf("chat output lacks %q:\n%s", line, out)
		}
	}
	if hist := must(t, "", "--profile", "alice", "history", gid, "--after", "25"); strings.Contains(hist, "not sent") || strings.Count(hist, "\n") != 2 {
		t.Errorf("history after chat:\n%s", hist)
	}

	// End of input ends chat too; messages from others show while it runs.
	pr, pw := io.Pipe()
	chat := startBackground(t, pr, "--profile", "bob", "chat", gid)
	waitFor(t, "chat backlog", func() bool { return strings.Contains(chat.out.String(), "bob: second line") })
	syncTail(t, chat, "alice", gid)
	fmt.Fprintln(pw, "third line")
	waitFor(t, "bob's line", func() bool { return strings.Contains(chat.out.String(), "bob: third line\n") })
	pw.Close()
	select {
	case code := <-chat.done:
		chat.done <- code
		if code != exitOK {
			t.Errorf("chat exit %d at EOF; stderr:\n%s", code, chat.errOut)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("chat did not end at EOF")
	}
}
