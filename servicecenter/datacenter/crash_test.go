package datacenter

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// crashChildEnv names the directory a TestCrashHelper child appends in.
const crashChildEnv = "ROAMFED_CRASH_CHILD"

// ack is one acknowledged append, as a child process reports it.
type ack struct {
	group, id, sender, client string
	seq                       uint64
	// afterFault: the append began after storage faults were switched on.
	afterFault bool
}

func (a ack) String() string {
	return fmt.Sprintf("%s #%d %s (%s/%s)", a.group, a.seq, a.id, a.sender, a.client)
}

// appendUntilStopped has workers goroutines append to nGroups groups until
// an append fails, stop is closed, or each has made 1e6 appends. Each
// acknowledged append is written to out as one line,
//
//	ack <group> <seq> <message_id> <sender_id> <client_msg_id> <after_fault 0|1>
//
// and each failure as "err <worker> <error>". faulty, if not nil, tells
// whether storage faults are on.
func appendUntilStopped(s *Store, workers, nGroups int, out io.Writer, stop <-chan struct{}, faulty func() bool) {
	var mu sync.Mutex
	emit := func(line string) error {
		mu.Lock()
		defer mu.Unlock()
		// One Write per line: a line is either out whole or not at all
		// when the process dies.
		_, err := io.WriteString(out, line)
		return err
	}
	groups := make([]string, nGroups)
	for i := range groups {
		groups[i] = fmt.Sprintf("g_CRASH%02d", i)
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			sender := fmt.Sprintf("u_W%02d", w)
			for i := range 1_000_000 {
				select {
				case <-stop:
					return
				default:
				}
				after := faulty != nil && faulty()
				m := newMessage(groups[(w+i)%nGroups], sender, strconv.Itoa(i), "crash test")
				res, err := s.Append(context.Background(), m)
				if err != nil {
					_ = emit(fmt.Sprintf("err %d %v\n", w, strings.ReplaceAll(err.Error(), "\n", " ")))
					return
				}
				f := 0
				if after {
					f = 1
				}
				line := fmt.Sprintf("ack %s %d %s %s %s %d\n", m.GetGroupId(), res.Message.GetSeq(), m.GetMessageId(), sender, m.GetClientMsgId(), f)
				if emit(line) != nil {
					return // the parent is gone
				}
			}
		})
	}
	wg.Wait()
}

func parseAck(line string) (ack, bool) {
	f := strings.Fields(line)
	if len(f) != 7 || f[0] != "ack" {
		return ack{}, false
	}
	seq, err := strconv.ParseUint(f[2], 10, 64)
	if err != nil {
		return ack{}, false
	}
	return ack{group: f[1], seq: seq, id: f[3], sender: f[4], client: f[5], afterFault: f[6] == "1"}, true
}

// child is a running copy of the test binary.
type child struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	lines  chan string // closed at the end of the child's stdout
}

// startChild runs this test binary's test named run with env added, and
// kills it when the test ends.
func startChild(t *testing.T, run string, env ...string) *child {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^"+run+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	c := &child{cmd: cmd, stderr: new(bytes.Buffer), lines: make(chan string, 1024)}
	cmd.Stderr = c.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		cancel()
		for range c.lines { // let Wait close the pipe only after reading it
		}
		_ = cmd.Wait()
	})
	return c
}

// collect reads the child's lines until it has want acks or the time is
// up, then SIGKILLs the child and reads the rest of its output. It returns
// the acks and the other lines.
func (c *child) collect(t *testing.T, want int, limit time.Duration) (acks []ack, other []string) {
	t.Helper()
	timer := time.NewTimer(limit)
	defer timer.Stop()
	killed := false
	kill := func() {
		if !killed {
			killed = true
			if err := c.cmd.Process.Kill(); err != nil {
				t.Logf("kill child: %v", err)
			}
		}
	}
	for {
		select {
		case line, ok := <-c.lines:
			if !ok {
				return acks, other
			}
			if a, ok := parseAck(line); ok {
				acks = append(acks, a)
				if len(acks) >= want {
					kill()
				}
			} else {
				other = append(other, line)
			}
		case <-timer.C:
			kill()
		}
	}
}

// verifyAcks checks, on a reopened store, that each acknowledged
// message is stored at its seq, that each group's log has no gaps, and
// that each acknowledged key is still a duplicate.
func verifyAcks(t *testing.T, s *Store, acks []ack) {
	t.Helper()
	byGroup := map[string][]ack{}
	for _, a := range acks {
		byGroup[a.group] = append(byGroup[a.group], a)
	}
	bad := 0
	report := func(format string, args ...any) {
		t.Helper()
		if bad++; bad <= 10 {
			t.Errorf(format, args...)
		}
	}
	for g, as := range byGroup {
		log := readLog(t, s, g)
		t.Logf("group %s: %d acknowledged, %d stored", g, len(as), len(log))
		for _, a := range as {
			if a.seq == 0 || a.seq > uint64(len(log)) {
				report("acknowledged %v is missing: the log ends at %d", a, len(log))
				continue
			}
			if m := log[a.seq-1]; m.GetMessageId() != a.id || m.GetSenderId() != a.sender || m.GetClientMsgId() != a.client {
				report("acknowledged %v, but seq %d holds %s (%s/%s)", a, a.seq, m.GetMessageId(), m.GetSenderId(), m.GetClientMsgId())
			}
			res, err := s.Append(context.Background(), newMessage(g, a.sender, a.client, "retry"))
			if err != nil || !res.Duplicate || res.Message.GetSeq() != a.seq {
				report("retry of %v = %+v, %v; want the duplicate", a, res, err)
			}
		}
	}
	if bad > 10 {
		t.Errorf("... %d problems in all, of %d acknowledged appends", bad, len(acks))
	}
}

// TestCrashHelper is the child of TestCrash; it does nothing on its own.
func TestCrashHelper(t *testing.T) {
	dir := os.Getenv(crashChildEnv)
	if dir == "" {
		t.Skip("child process of TestCrash")
	}
	s, err := Open(dir, Options{})
	if err != nil {
		fmt.Printf("err open %v\n", err)
		t.Fatal(err)
	}
	// The parent kills this process; nothing here closes the store.
	appendUntilStopped(s, 16, 4, os.Stdout, nil, nil)
}

// TestCrash SIGKILLs a process in the middle of appends and checks that
// every append it acknowledged survives, with its seq, and no log has a
// gap.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	dir := t.TempDir()
	c := startChild(t, "TestCrashHelper", crashChildEnv+"="+dir)
	acks, other := c.collect(t, 2000, 10*time.Second)
	for _, l := range other {
		if strings.HasPrefix(l, "err") {
			t.Errorf("child: %s", l)
		}
	}
	t.Logf("%d appends acknowledged before SIGKILL", len(acks))
	if len(acks) == 0 {
		t.Fatalf("child acknowledged nothing; stderr:\n%s\nstdout:\n%s", c.stderr, strings.Join(other, "\n"))
	}
	if len(acks) < 2000 {
		t.Logf("fewer than 2000 acknowledged in 10s (slow machine?); checking those")
	}
	s := openStore(t, dir, Options{})
	verifyAcks(t, s, acks)
}

// powerLoss runs work, for each share of unsynced data that survives a
// power loss, on a store on a file system that can lose what was not
// synced. work calls lose at the moment of its choice; lose returns the
// store as it opens after a power loss at that moment.
func powerLoss(t *testing.T, work func(t *testing.T, s *Store, lose func() *Store)) {
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	for _, unsynced := range []int{0, 30, 100} {
		t.Run(fmt.Sprintf("unsynced %d%%", unsynced), func(t *testing.T) {
			fs := vfs.NewCrashableMem()
			s, err := Open("/db", Options{FS: fs})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			work(t, s, func() *Store {
				crashed := fs.CrashClone(vfs.CrashCloneCfg{
					UnsyncedDataPercent: unsynced,
					RNG:                 rand.New(rand.NewPCG(uint64(seed), uint64(unsynced))),
				})
				s2, err := Open("/db", Options{FS: crashed})
				if err != nil {
					t.Fatalf("open after power loss: %v", err)
				}
				t.Cleanup(func() { _ = s2.Close() })
				return s2
			})
		})
	}
}

// TestPowerLoss appends on a file system that can lose what was not
// synced, and takes its state at a moment while appends are in flight:
// every append acknowledged before that moment must be there, and the logs
// must have no gaps whatever part of the unsynced data survived.
func TestPowerLoss(t *testing.T) {
	powerLoss(t, func(t *testing.T, s *Store, lose func() *Store) {
		pr, pw := io.Pipe()
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			appendUntilStopped(s, 16, 4, pw, stop, nil)
			pw.Close()
		}()
		var (
			mu   sync.Mutex
			acks []ack
			n    atomic.Int64
		)
		readDone := make(chan struct{})
		go func() {
			defer close(readDone)
			sc := bufio.NewScanner(pr)
			for sc.Scan() {
				if a, ok := parseAck(sc.Text()); ok {
					mu.Lock()
					acks = append(acks, a)
					mu.Unlock()
					n.Add(1)
				} else {
					t.Errorf("appender: %s", sc.Text())
				}
			}
		}()
		waitFor(t, "500 acknowledged appends", func() bool { return n.Load() >= 500 })
		// Acks read before the loss were synced before it.
		mu.Lock()
		before := append([]ack(nil), acks...)
		mu.Unlock()
		s2 := lose()
		close(stop)
		<-done
		<-readDone
		verifyAcks(t, s2, before)
	})
}
