package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
)

// Time limits of the harness. They are generous because the binaries may
// run with the race detector on a loaded machine; a healthy run takes a
// small part of each.
const (
	buildTimeout = 10 * time.Minute
	// readyTimeout runs from exec to a SERVING health check.
	readyTimeout = 15 * time.Second
	// stopTimeout runs from SIGTERM to exit; regiond's own
	// --shutdown-timeout is 10s by default.
	stopTimeout = 20 * time.Second
	killTimeout = 10 * time.Second
	// cliTimeout bounds one roamchat command.
	cliTimeout = 30 * time.Second
)

// bin holds the binaries TestMain built.
var bin struct{ regiond, roamchat string }

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		return m.Run() // the tests skip themselves
	}
	dir, err := os.MkdirTemp("", "roamfed-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	start := time.Now()
	if err := build(dir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "e2e: built regiond and roamchat (race %v) in %s\n", raceEnabled, time.Since(start).Round(time.Millisecond))
	}
	return m.Run()
}

// build builds the binaries under test into dir, with -race when the tests
// have it, so that a data race in a region fails the test that caused it.
func build(dir string) error {
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	args := []string{"build", "-o", dir + string(os.PathSeparator)}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "github.com/roamfed/roamfed/cmd/regiond", "github.com/roamfed/roamfed/cmd/roamchat")
	// go test puts its own go first in PATH.
	out, err := exec.CommandContext(ctx, "go", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	bin.regiond = filepath.Join(dir, "regiond")
	bin.roamchat = filepath.Join(dir, "roamchat")
	return nil
}

func needBinaries(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("e2e tests start processes; skipped with -short")
	}
	if bin.regiond == "" {
		t.Fatal("binaries not built: TestMain did not run")
	}
}

// Region is one region of a test: a regiond process and its data
// directory, which outlives the process across Restart and Kill.
type Region struct {
	Name    string
	DataDir string
	args    []string // extra flags; they come last, so they win
	// pinned is set when extra flags choose the client address (a
	// federation file may): the harness then never picks one.
	pinned bool

	mu   sync.Mutex
	addr string     // client address of the current or last run
	cur  *process   // nil when not running
	runs []*process // every run, for the logs
}

// servingLine is what regiond logs once its client listener is up.
var servingLine = regexp.MustCompile(`(?m)msg="region serving clients".*\baddr=(\S+)`)

// startRegion starts regiond as region name, with a new data directory, and
// waits until it is serving. It is stopped with SIGTERM when the test ends;
// a region that does not exit cleanly then, or whose log reports a data
// race, fails the test, and a failed test gets the region's log.
//
// extraArgs are added to the command line after the harness's own flags.
// Unless they name the client address (--client-addr, or --federation,
// whose file has one), the region listens on a loopback port the kernel
// picks. Either way Addr is the address it reported. A region on its own
// (no --federation) also gets kernel-picked ports for its operator and
// metrics listeners, whose defaults are fixed.
func startRegion(t *testing.T, name string, extraArgs ...string) *Region {
	t.Helper()
	r := newRegion(t, name, extraArgs...)
	if err := r.start(r.firstAddr()); err != nil {
		t.Fatalf("start region %s: %v", name, err)
	}
	return r
}

// newRegion prepares region name, with a new data directory, without
// starting it; it is stopped, checked and its log shown as startRegion
// says once the test ends.
func newRegion(t *testing.T, name string, extraArgs ...string) *Region {
	t.Helper()
	needBinaries(t)
	r := &Region{
		Name:    name,
		DataDir: filepath.Join(t.TempDir(), "data-"+name),
		args:    extraArgs,
		pinned:  hasFlag(extraArgs, "--client-addr") || hasFlag(extraArgs, "--federation"),
	}
	t.Cleanup(func() { r.cleanup(t) })
	return r
}

// firstAddr is the client address of a first start: a port the kernel
// picks, unless the extra flags choose one.
func (r *Region) firstAddr() string {
	if r.pinned {
		return ""
	}
	return "127.0.0.1:0"
}

func hasFlag(args []string, name string) bool {
	for _, a := range args {
		if a == name || strings.HasPrefix(a, name+"=") {
			return true
		}
	}
	return false
}

// Addr is the region's client address (of its last run, when stopped).
func (r *Region) Addr() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.addr
}

// Log is the output of the region's current or last run.
func (r *Region) Log() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.runs) == 0 {
		return ""
	}
	return r.runs[len(r.runs)-1].out.String()
}

// WaitLog waits until a line of the current run's log matches re, and
// returns the match and its submatches.
func (r *Region) WaitLog(t *testing.T, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	r.mu.Lock()
	p := r.cur
	r.mu.Unlock()
	if p == nil {
		t.Fatalf("region %s is not running", r.Name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	m, err := p.out.waitMatch(ctx, re, p.done)
	if err != nil {
		t.Fatalf("region %s: waiting for a log line matching %q: %v", r.Name, re, err)
	}
	return m
}

// Restart stops the region with SIGTERM, which must succeed (after Kill
// there is nothing to stop), and starts it again on the same data
// directory and, if it is still free, the same port; else, unless extra
// flags chose the address, on a new one, which Addr then returns.
func (r *Region) Restart(t *testing.T) {
	t.Helper()
	if err := r.stop(); err != nil {
		t.Fatalf("restart region %s: %v", r.Name, err)
	}
	err := r.start(r.Addr())
	if err != nil && !r.pinned && strings.Contains(r.Log(), "address already in use") {
		t.Logf("region %s: %s is taken; restarting on a new port", r.Name, r.Addr())
		err = r.start("127.0.0.1:0")
	}
	if err != nil {
		t.Fatalf("restart region %s: %v", r.Name, err)
	}
}

// Stop stops the region with SIGTERM. Anything but a clean exit in time
// fails the test.
func (r *Region) Stop(t *testing.T) {
	t.Helper()
	if err := r.stop(); err != nil {
		t.Errorf("stop region %s: %v", r.Name, err)
	}
}

// Kill kills the region with SIGKILL, as a crash would. Restart brings it
// back.
func (r *Region) Kill(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	p := r.cur
	r.cur = nil
	r.mu.Unlock()
	if p == nil {
		t.Fatalf("kill region %s: not running", r.Name)
	}
	if err := p.kill(); err != nil {
		t.Fatalf("kill region %s: %v", r.Name, err)
	}
}

// start starts a run listening on addr (empty: where the extra flags say)
// and waits until it is serving.
func (r *Region) start(addr string) error {
	args := []string{"--region", r.Name, "--data", r.DataDir}
	if addr != "" {
		args = append(args, "--client-addr", addr)
	}
	if !hasFlag(r.args, "--federation") {
		// Alone, a region's operator and metrics listeners default to
		// fixed ports, which regions of parallel tests would share. In
		// a federation the file says, and ours say nothing.
		args = append(args, "--admin-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0")
	}
	args = append(args, r.args...)
	r.mu.Lock()
	name := fmt.Sprintf("regiond %s, run %d", r.Name, len(r.runs)+1)
	r.mu.Unlock()
	p, err := startProcess(name, bin.regiond, args, processEnv())
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.runs = append(r.runs, p)
	r.cur = p
	r.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	got, err := waitReady(ctx, p)
	if err != nil {
		p.kill()
		r.mu.Lock()
		r.cur = nil
		r.mu.Unlock()
		return fmt.Errorf("%s: %w", name, err)
	}
	r.mu.Lock()
	r.addr = got
	r.mu.Unlock()
	return nil
}

// stop stops the current run with SIGTERM; nil when it exited 0 in time
// or was not running.
func (r *Region) stop() error {
	r.mu.Lock()
	p := r.cur
	r.cur = nil
	r.mu.Unlock()
	if p == nil {
		return nil
	}
	return p.stop(stopTimeout)
}

func (r *Region) cleanup(t *testing.T) {
	if err := r.stop(); err != nil {
		t.Errorf("stop region %s: %v", r.Name, err)
	}
	r.mu.Lock()
	runs := r.runs
	r.mu.Unlock()
	for _, p := range runs {
		if strings.Contains(p.out.String(), "WARNING: DATA RACE") {
			t.Errorf("%s: data race; see its log", p.name)
		}
	}
	if t.Failed() {
		for _, p := range runs {
			t.Logf("--- %s (%s) ---\n%s", p.name, p.exitStatus(), p.out.String())
		}
	}
}

// waitReady waits for p's "region serving clients" line, then for its
// health service to say SERVING, and returns the client address.
func waitReady(ctx context.Context, p *process) (string, error) {
	m, err := p.out.waitMatch(ctx, servingLine, p.done)
	if err != nil {
		return "", fmt.Errorf("waiting for %q in the log: %w", "region serving clients", err)
	}
	addr := m[1]
	if err := waitHealthy(ctx, addr, p.done); err != nil {
		return "", fmt.Errorf("health of %s: %w", addr, err)
	}
	return addr, nil
}

// waitHealthy polls the client service's health on addr until it is
// SERVING, the process exits or ctx ends.
func waitHealthy(ctx context.Context, addr string, exited <-chan struct{}) error {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	hc := healthpb.NewHealthClient(cc)
	req := &healthpb.HealthCheckRequest{Service: clientv1.ClientService_ServiceDesc.ServiceName}
	var last error
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := hc.Check(cctx, req)
		cancel()
		switch {
		case err != nil:
			last = err
		case resp.GetStatus() == healthpb.HealthCheckResponse_SERVING:
			return nil
		default:
			last = fmt.Errorf("status %s", resp.GetStatus())
		}
		select {
		case <-exited:
			return errExited
		case <-ctx.Done():
			return fmt.Errorf("%w (last check: %v)", ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// errExited reports a process that exited while the harness waited on it.
var errExited = errors.New("the process exited")

// process is one run of a daemon; its output is collected.
type process struct {
	name string
	cmd  *exec.Cmd
	out  *output
	done chan struct{} // closed once the process exited and its output is in
	err  error         // from Wait, once done is closed
}

func startProcess(name, path string, args, env []string) (*process, error) {
	p := &process{name: name, out: newOutput(), done: make(chan struct{})}
	p.cmd = exec.Command(path, args...)
	p.cmd.Env = env
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	// os/exec copies the output; a child that left the pipe open would
	// hold Wait past the exit without this.
	p.cmd.WaitDelay = 5 * time.Second
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits up to timeout for the exit, then kills. Its
// error is nil only for an exit with status 0 in time.
func (p *process) stop(timeout time.Duration) error {
	if p.exited() {
		return fmt.Errorf("%s had exited by itself (%s)", p.name, p.exitStatus())
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !p.exited() {
		return fmt.Errorf("%s: SIGTERM: %w", p.name, err)
	}
	select {
	case <-p.done:
		if p.err != nil {
			return fmt.Errorf("%s: exit after SIGTERM: %w", p.name, p.err)
		}
		return nil
	case <-time.After(timeout):
	}
	if err := p.kill(); err != nil {
		return err
	}
	return fmt.Errorf("%s: still running %s after SIGTERM; killed", p.name, timeout)
}

// kill sends SIGKILL and waits for the exit.
func (p *process) kill() error {
	if err := p.cmd.Process.Kill(); err != nil && !p.exited() {
		return fmt.Errorf("%s: SIGKILL: %w", p.name, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(killTimeout):
		return fmt.Errorf("%s: no exit %s after SIGKILL", p.name, killTimeout)
	}
}

func (p *process) exitStatus() string {
	if !p.exited() {
		return "running"
	}
	if p.err != nil {
		return p.err.Error()
	}
	return "exit status 0"
}

// output collects what a process writes, and lets a test wait for a line.
type output struct {
	mu      sync.Mutex
	buf     []byte
	changed chan struct{} // closed at the next write
}

func newOutput() *output { return &output{changed: make(chan struct{})} }

func (o *output) Write(b []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf = append(o.buf, b...)
	close(o.changed)
	o.changed = make(chan struct{})
	return len(b), nil
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return string(o.buf)
}

// lines returns the complete lines written so far, and a channel closed at
// the next write.
func (o *output) lines() (string, <-chan struct{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	end := bytes.LastIndexByte(o.buf, '\n') + 1
	return string(o.buf[:end]), o.changed
}

// waitMatch waits until re matches the complete lines written so far,
// exited is closed or ctx ends. After exited, the whole output is searched
// once more, a last line without its newline too.
func (o *output) waitMatch(ctx context.Context, re *regexp.Regexp, exited <-chan struct{}) ([]string, error) {
	for {
		text, changed := o.lines()
		if m := re.FindStringSubmatch(text); m != nil {
			return m, nil
		}
		select {
		case <-changed:
		case <-exited:
			if m := re.FindStringSubmatch(o.String()); m != nil {
				return m, nil
			}
			return nil, errExited
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// clientDirs maps each test to the directory that holds its roamchat
// profiles, so that tests running in parallel do not share sessions.
var clientDirs sync.Map // *testing.T -> string

func clientConfigDir(t *testing.T) string {
	if d, ok := clientDirs.Load(t); ok {
		return d.(string)
	}
	d, loaded := clientDirs.LoadOrStore(t, t.TempDir())
	if !loaded {
		t.Cleanup(func() { clientDirs.Delete(t) })
	}
	return d.(string)
}

// processEnv is the environment of the processes under test: the test's,
// but a binary built with -race does not sleep a second before it exits
// (GORACE's atexit_sleep_ms) unless the caller's GORACE asks for it: over
// many roamchat runs that adds up.
func processEnv() []string {
	var env []string
	gorace := "atexit_sleep_ms=0"
	for _, kv := range os.Environ() {
		if v, ok := strings.CutPrefix(kv, "GORACE="); ok {
			gorace += " " + v // the caller's settings come later, and win
			continue
		}
		env = append(env, kv)
	}
	return append(env, "GORACE="+gorace)
}

// clientEnv is the environment of roamchat: the test's own profile
// directory, UTC timestamps, and nothing from the caller's ROAMCHAT_*.
func clientEnv(t *testing.T) []string {
	var env []string
	for _, kv := range processEnv() {
		if !strings.HasPrefix(kv, "ROAMCHAT_") && !strings.HasPrefix(kv, "TZ=") {
			env = append(env, kv)
		}
	}
	return append(env, "ROAMCHAT_CONFIG_DIR="+clientConfigDir(t), "TZ=UTC")
}

// roamchatArgs puts the global flags first: --server when a region is
// given (else the profile's server is used), and --profile.
func roamchatArgs(r *Region, profile string, args []string) []string {
	var argv []string
	if r != nil {
		argv = append(argv, "--server", r.Addr())
	}
	argv = append(argv, "--profile", profile)
	return append(argv, args...)
}

// cliError is a roamchat command that failed or did not finish in time.
type cliError struct {
	args   []string
	err    error
	stderr string
}

func (e *cliError) Error() string {
	return fmt.Sprintf("roamchat %s: %v: %s", strings.Join(e.args, " "), e.err, strings.TrimSpace(e.stderr))
}

func (e *cliError) Unwrap() error { return e.err }

// roamchat runs one roamchat command as the user of profile, against
// region r (nil: the server the profile saved), and returns its standard
// output. A failure is a *cliError that holds the standard error.
func roamchat(t *testing.T, r *Region, profile string, args ...string) (string, error) {
	t.Helper()
	needBinaries(t)
	argv := roamchatArgs(r, profile, args)
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin.roamchat, argv...)
	cmd.Env = clientEnv(t)
	cmd.WaitDelay = time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	t.Logf("$ roamchat %s  (%s, %s)\n%s%s", strings.Join(argv, " "), exitText(err),
		time.Since(start).Round(time.Millisecond), stdout.String(), stderr.String())
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("no exit within %s: %w", cliTimeout, err)
		}
		return stdout.String(), &cliError{args: argv, err: err, stderr: stderr.String()}
	}
	return stdout.String(), nil
}

// mustRoamchat is roamchat for a command that has to succeed.
func mustRoamchat(t *testing.T, r *Region, profile string, args ...string) string {
	t.Helper()
	out, err := roamchat(t, r, profile, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// Client is a long-running roamchat command, such as tail. Its standard
// output arrives a line at a time on Lines; a test that stops reading
// eventually blocks the command.
type Client struct {
	name     string
	cmd      *exec.Cmd
	lines    chan string
	stdout   *output // all of it, also what was read from lines
	stderr   *output
	stopOnce sync.Once
	stopping chan struct{}
	done     chan struct{} // closed once the command exited and its output is in
	err      error         // from Wait, once done is closed
}

// startRoamchat starts a long-running roamchat command as the user of
// profile against region r; it is stopped with SIGTERM when the test ends.
func startRoamchat(t *testing.T, r *Region, profile string, args ...string) *Client {
	t.Helper()
	needBinaries(t)
	argv := roamchatArgs(r, profile, args)
	c := &Client{
		name:     "roamchat " + strings.Join(argv, " "),
		lines:    make(chan string, 1024),
		stdout:   newOutput(),
		stderr:   newOutput(),
		stopping: make(chan struct{}),
		done:     make(chan struct{}),
	}
	c.cmd = exec.Command(bin.roamchat, argv...)
	c.cmd.Env = clientEnv(t)
	c.cmd.Stderr = c.stderr
	c.cmd.WaitDelay = 5 * time.Second
	pipe, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
	// The reader owns the pipe and Wait: a pipe must be read to its end
	// before Wait.
	go func() {
		defer close(c.done)
		sc := bufio.NewScanner(pipe)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			line := sc.Text()
			c.stdout.Write([]byte(line + "\n"))
			select {
			case c.lines <- line:
			case <-c.stopping:
			}
		}
		io.Copy(c.stdout, pipe) // after a line too long to scan
		close(c.lines)
		c.err = c.cmd.Wait()
	}()
	t.Cleanup(func() {
		if err := c.stop(); err != nil {
			t.Errorf("stop %s: %v", c.name, err)
		}
		if t.Failed() {
			t.Logf("--- %s (%s) ---\nstdout:\n%s\nstderr:\n%s", c.name, exitText(c.err), c.stdout.String(), c.stderr.String())
		}
	})
	return c
}

// errNoLine reports that no line came in time.
var errNoLine = errors.New("no line in time")

// Next returns the next line of output. It fails with errNoLine when none
// came within timeout, and with errExited once the output has ended.
func (c *Client) Next(timeout time.Duration) (string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case line, ok := <-c.lines:
		if !ok {
			<-c.done
			return "", fmt.Errorf("%w (%s): %s", errExited, exitText(c.err), strings.TrimSpace(c.stderr.String()))
		}
		return line, nil
	case <-t.C:
		return "", errNoLine
	}
}

// Output is all of the standard output so far, lines already read from
// Next included.
func (c *Client) Output() string { return c.stdout.String() }

// Stop stops the command with SIGTERM; anything but a clean exit in time
// fails the test.
func (c *Client) Stop(t *testing.T) {
	t.Helper()
	if err := c.stop(); err != nil {
		t.Errorf("stop %s: %v", c.name, err)
	}
}

func (c *Client) stop() error {
	first := false
	c.stopOnce.Do(func() {
		first = true
		close(c.stopping)
	})
	select {
	case <-c.done:
		if first && c.err != nil {
			return fmt.Errorf("had exited by itself: %w", c.err)
		}
		return nil
	default:
	}
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("SIGTERM: %w", err)
	}
	select {
	case <-c.done:
		if c.err != nil {
			return fmt.Errorf("exit after SIGTERM: %w", c.err)
		}
		return nil
	case <-time.After(stopTimeout):
	}
	c.cmd.Process.Kill()
	select {
	case <-c.done:
		return fmt.Errorf("still running %s after SIGTERM; killed", stopTimeout)
	case <-time.After(killTimeout):
		return fmt.Errorf("no exit %s after SIGKILL", killTimeout)
	}
}
