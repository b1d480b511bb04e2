package resourcepool

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fakeClock is a clock that tests move by hand; safe for concurrent use.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// newTestPool returns a Pool whose clock only moves when the test says so.
func newTestPool(t testing.TB, l Limits) (*Pool, *fakeClock) {
	t.Helper()
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	p := New(l)
	p.now = c.now
	p.lastSweep = c.now()
	return p, c
}

func TestLimitsWithDefaults(t *testing.T) {
	d := DefaultLimits()
	tests := []struct {
		name string
		in   Limits
		want Limits
	}{
		{"zero is the defaults", Limits{}, d},
		{"set fields are kept", Limits{MaxSessions: 3, SendRate: 0.5}, Limits{
			MaxSessions: 3, MaxMessageBytes: d.MaxMessageBytes, SendRate: 0.5,
			SendBurst: d.SendBurst, MaxQueuedPerSession: d.MaxQueuedPerSession,
			LoginRate: d.LoginRate, LoginBurst: d.LoginBurst, LoginSourceRate: d.LoginSourceRate, LoginSourceBurst: d.LoginSourceBurst,
		}},
		{"negatives are kept for Validate", Limits{SendBurst: -1}, Limits{
			MaxSessions: d.MaxSessions, MaxMessageBytes: d.MaxMessageBytes, SendRate: d.SendRate,
			SendBurst: -1, MaxQueuedPerSession: d.MaxQueuedPerSession,
			LoginRate: d.LoginRate, LoginBurst: d.LoginBurst, LoginSourceRate: d.LoginSourceRate, LoginSourceBurst: d.LoginSourceBurst,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.in.WithDefaults(); got != tt.want {
				t.Errorf("WithDefaults() = %+v, want %+v", got, tt.want)
			}
		})
	}
	want := Limits{MaxSessions: 10000, MaxMessageBytes: 65536, SendRate: 50, SendBurst: 100, MaxQueuedPerSession: 1024, LoginRate: 10, LoginBurst: 10, LoginSourceRate: 300, LoginSourceBurst: 300}
	if d != want {
		t.Errorf("DefaultLimits() = %+v, want %+v", d, want)
	}
}

func TestLimitsValidate(t *testing.T) {
	tests := []struct {
		name    string
		in      Limits
		wantErr []string // substrings; nil means valid
	}{
		{"zero", Limits{}, nil},
		{"defaults", DefaultLimits(), nil},
		{"infinite rate", Limits{SendRate: math.Inf(1)}, nil},
		{"negative sessions", Limits{MaxSessions: -1}, []string{"MaxSessions is -1"}},
		{"negative size", Limits{MaxMessageBytes: -5}, []string{"MaxMessageBytes is -5"}},
		{"negative rate", Limits{SendRate: -2}, []string{"SendRate is -2"}},
		{"NaN rate", Limits{SendRate: math.NaN()}, []string{"SendRate is NaN"}},
		{"negative burst", Limits{SendBurst: -1}, []string{"SendBurst is -1"}},
		{"negative queue", Limits{MaxQueuedPerSession: -1}, []string{"MaxQueuedPerSession is -1"}},
		{"all reported", Limits{MaxSessions: -1, SendBurst: -2}, []string{"MaxSessions is -1", "SendBurst is -2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.in.Validate()
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want an error containing %q", tt.wantErr)
			}
			for _, s := range tt.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("Validate() = %q, want it to contain %q", err, s)
				}
			}
		})
	}
}

func TestNewReplacesInvalidLimits(t *testing.T) {
	p := New(Limits{MaxSessions: -1, SendRate: math.NaN(), SendBurst: 7})
	got := p.Limits()
	want := DefaultLimits()
	want.SendBurst = 7
	if got != want {
		t.Errorf("Limits() = %+v, want %+v", got, want)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Limits().Validate() = %v", err)
	}
}

func TestAcquireSession(t *testing.T) {
	p, _ := newTestPool(t, Limits{MaxSessions: 2})

	r1, err := p.AcquireSession("user:a")
	if err != nil {
		t.Fatalf("first AcquireSession: %v", err)
	}
	r2, err := p.AcquireSession("user:b")
	if err != nil {
		t.Fatalf("second AcquireSession: %v", err)
	}
	r3, err := p.AcquireSession("user:c")
	var qe *QuotaError
	if !errors.As(err, &qe) || qe.Reason != ReasonSessions || qe.Subject != "user:c" {
		t.Fatalf("third AcquireSession = %v, want a sessions QuotaError for user:c", err)
	}
	if want := "the region has 2 open sessions; the limit is 2"; qe.Description != want {
		t.Errorf("Description = %q, want %q", qe.Description, want)
	}
	r3() // a refusal's release is a harmless no-op

	r1()
	r1() // idempotent: must not free r2's slot
	if u := p.Usage(); u.Sessions != 1 || u.MaxSessions != 2 {
		t.Fatalf("Usage() = %+v, want 1 of 2 sessions", u)
	}
	r4, err := p.AcquireSession("")
	if err != nil {
		t.Fatalf("AcquireSession after release: %v", err)
	}
	if _, err := p.AcquireSession(""); !errors.As(err, &qe) || qe.Subject != "region" {
		t.Fatalf("AcquireSession(\"\") = %v, want a refusal with subject region", err)
	}
	r2()
	r4()
	u := p.Usage()
	if u.Sessions != 0 || u.Refused[ReasonSessions] != 2 {
		t.Errorf("Usage() = %+v, want 0 sessions and 2 session refusals", u)
	}
}

func TestAcquireSessionConcurrent(t *testing.T) {
	const limit, callers = 50, 400
	p, _ := newTestPool(t, Limits{MaxSessions: limit})

	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		releases []func()
		refused  atomic.Int64
		start    = make(chan struct{})
	)
	for range callers {
		wg.Go(func() {
			<-start
			release, err := p.AcquireSession("user:x")
			if err != nil {
				refused.Add(1)
				return
			}
			mu.Lock()
			releases = append(releases, release)
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()

	if len(releases) != limit || refused.Load() != callers-limit {
		t.Fatalf("got %d sessions and %d refusals, want %d and %d", len(releases), refused.Load(), limit, callers-limit)
	}
	if u := p.Usage(); u.Sessions != limit || u.Refused[ReasonSessions] != callers-limit {
		t.Fatalf("Usage() = %+v", u)
	}
	// Release every session twice, concurrently.
	for _, release := range releases {
		wg.Go(release)
		wg.Go(release)
	}
	wg.Wait()
	if u := p.Usage(); u.Sessions != 0 {
		t.Fatalf("after release Usage().Sessions = %d, want 0", u.Sessions)
	}
}

func TestCheckMessageSize(t *testing.T) {
	p, _ := newTestPool(t, Limits{MaxMessageBytes: 65536})
	tests := []struct {
		n    int
		want string // Description; empty means allowed
	}{
		{0, ""},
		{65535, ""},
		{65536, ""},
		{65537, "message body is 65537 bytes; the limit is 65536"},
		{70000, "message body is 70000 bytes; the limit is 65536"},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.n), func(t *testing.T) {
			err := p.CheckMessageSize("user:a", tt.n)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("CheckMessageSize(%d) = %v, want nil", tt.n, err)
				}
				return
			}
			var qe *QuotaError
			if !errors.As(err, &qe) {
				t.Fatalf("CheckMessageSize(%d) = %v, want a QuotaError", tt.n, err)
			}
			if qe.Reason != ReasonMessageSize || qe.Subject != "user:a" || qe.Description != tt.want {
				t.Errorf("CheckMessageSize(%d) = %+v, want message_size for user:a: %q", tt.n, qe, tt.want)
			}
		})
	}
	if got := p.Usage().Refused[ReasonMessageSize]; got != 2 {
		t.Errorf("Refused[message_size] = %d, want 2", got)
	}
}

func TestAllowSend(t *testing.T) {
	p, clock := newTestPool(t, Limits{SendRate: 10, SendBurst: 3})

	// steps run in order against one pool; after advances the clock first.
	steps := []struct {
		after     time.Duration
		user      string
		wantRetry time.Duration // 0: allowed; else refused with this RetryAfter
	}{
		{0, "alice", 0},
		{0, "alice", 0},
		{0, "alice", 0},
		{0, "alice", 100 * time.Millisecond}, // burst used up
		{0, "bob", 0},                        // buckets are per user
		{40 * time.Millisecond, "alice", 60 * time.Millisecond},
		{60 * time.Millisecond, "alice", 0}, // one token refilled
		{0, "alice", 100 * time.Millisecond},
		{time.Second, "alice", 0}, // refilled to the burst, not beyond
		{0, "alice", 0},
		{0, "alice", 0},
		{0, "alice", 100 * time.Millisecond},
	}
	refusals := 0
	for i, s := range steps {
		clock.advance(s.after)
		err := p.AllowSend(s.user)
		if s.wantRetry == 0 {
			if err != nil {
				t.Fatalf("step %d: AllowSend(%s) = %v, want nil", i, s.user, err)
			}
			continue
		}
		refusals++
		var qe *QuotaError
		if !errors.As(err, &qe) {
			t.Fatalf("step %d: AllowSend(%s) = %v, want a QuotaError", i, s.user, err)
		}
		if qe.Reason != ReasonSendRate || qe.Subject != "user:"+s.user {
			t.Errorf("step %d: got %s for %s, want send_rate for user:%s", i, qe.Reason, qe.Subject, s.user)
		}
		if d := qe.RetryAfter - s.wantRetry; d < -time.Microsecond || d > time.Microsecond {
			t.Errorf("step %d: RetryAfter = %v, want %v", i, qe.RetryAfter, s.wantRetry)
		}
		if !strings.Contains(qe.Description, "more than 10 messages/s (burst 3)") {
			t.Errorf("step %d: Description = %q", i, qe.Description)
		}
	}
	u := p.Usage()
	if u.Refused[ReasonSendRate] != uint64(refusals) || u.TrackedSenders != 2 {
		t.Errorf("Usage() = %+v, want %d send_rate refusals and 2 senders", u, refusals)
	}
}

func TestAllowSendInfiniteRate(t *testing.T) {
	p, _ := newTestPool(t, Limits{SendRate: math.Inf(1), SendBurst: 1})
	for i := range 1000 {
		if err := p.AllowSend("alice"); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	if n := p.Usage().TrackedSenders; n != 0 {
		t.Errorf("TrackedSenders = %d, want 0 when the rate is unlimited", n)
	}
}

func TestAllowSendConcurrent(t *testing.T) {
	const burst, workers, perWorker = 100, 16, 50
	p, _ := newTestPool(t, Limits{SendRate: 1, SendBurst: burst})

	var allowed, refused atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				// Everyone hammers "shared"; each worker also has its own user.
				for _, u := range []string{"shared", fmt.Sprintf("own-%d", w)} {
					err := p.AllowSend(u)
					switch {
					case err == nil:
						allowed.Add(1)
					case errors.As(err, new(*QuotaError)):
						refused.Add(1)
					default:
						t.Errorf("AllowSend(%s) = %v", u, err)
					}
				}
				if i%10 == 0 {
					_ = p.Usage()
				}
			}
		})
	}
	wg.Wait()

	// The clock does not move: "shared" gets exactly one burst, and each
	// worker's own user gets its whole perWorker (< burst).
	wantAllowed := int64(burst + workers*perWorker)
	if allowed.Load() != wantAllowed {
		t.Errorf("allowed %d sends, want %d", allowed.Load(), wantAllowed)
	}
	u := p.Usage()
	if uint64(refused.Load()) != u.Refused[ReasonSendRate] || u.TrackedSenders != workers+1 {
		t.Errorf("Usage() = %+v, refused %d", u, refused.Load())
	}
}

func TestAllowSendEvictsIdleLimiters(t *testing.T) {
	p, clock := newTestPool(t, Limits{SendRate: 10, SendBurst: 5})
	slow, slowClock := newTestPool(t, Limits{SendRate: 0.001, SendBurst: 2})

	for i := range 10 {
		if err := p.AllowSend(fmt.Sprintf("u%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	clock.advance(30 * time.Second)
	_ = p.AllowSend("u0") // u0 is still active
	clock.advance(31 * time.Second)
	_ = p.AllowSend("u1") // a minute since New: this call sweeps

	if n := p.Usage().TrackedSenders; n != 2 {
		t.Errorf("after the sweep TrackedSenders = %d, want 2 (u0 and u1)", n)
	}
	clock.advance(2 * time.Minute)
	_ = p.AllowSend("u2")
	if n := p.Usage().TrackedSenders; n != 1 {
		t.Errorf("after the second sweep TrackedSenders = %d, want 1 (u2)", n)
	}

	// A drained bucket is not full after a long idle time, so it stays:
	// dropping it would hand the user a fresh burst.
	_ = slow.AllowSend("drained")
	_ = slow.AllowSend("drained")
	slowClock.advance(2 * time.Minute)
	_ = slow.AllowSend("other")
	if n := slow.Usage().TrackedSenders; n != 2 {
		t.Errorf("TrackedSenders = %d, want 2: a drained limiter must survive the sweep", n)
	}
	if err := slow.AllowSend("drained"); err == nil {
		t.Error("drained user got a fresh burst after the sweep")
	}
}

// TestAllowSendMemoryBounded drives a stream of one-off senders and checks
// the map stays near the number of senders seen in the idle window.
func TestAllowSendMemoryBounded(t *testing.T) {
	p, clock := newTestPool(t, Limits{})
	const perSecond = 200
	maxTracked := 0
	for s := range 10 * 60 { // ten minutes
		for i := range perSecond {
			if err := p.AllowSend(fmt.Sprintf("user-%d-%d", s, i)); err != nil {
				t.Fatal(err)
			}
		}
		maxTracked = max(maxTracked, p.Usage().TrackedSenders)
		clock.advance(time.Second)
	}
	// Senders stay tracked for idleAfter, and the sweep may come up to
	// sweepInterval later: at most two minutes' worth, plus one second.
	if limit := perSecond * (2*60 + 1); maxTracked > limit {
		t.Errorf("tracked up to %d senders, want at most %d", maxTracked, limit)
	}
}

// TestAllowSendSweepsOnGrowth checks the map is swept when it doubles, even
// before sweepInterval has passed.
func TestAllowSendSweepsOnGrowth(t *testing.T) {
	p, _ := newTestPool(t, Limits{})
	for i := range 5000 {
		_ = p.AllowSend(strconv.Itoa(i))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	// Sweeps ran at 1024, 2048 and 4096 senders; none was idle.
	if p.sweptSize != 4096 {
		t.Errorf("last sweep saw %d senders, want 4096", p.sweptSize)
	}
}

func TestRefuseQueue(t *testing.T) {
	p, _ := newTestPool(t, Limits{MaxQueuedPerSession: 8})
	err := p.RefuseQueue("user:a")
	var qe *QuotaError
	if !errors.As(err, &qe) || qe.Reason != ReasonSessionQueue || qe.Subject != "user:a" {
		t.Fatalf("RefuseQueue = %v, want a session_queue QuotaError for user:a", err)
	}
	if !strings.Contains(qe.Description, "8 deliveries queued") {
		t.Errorf("Description = %q, want it to name the limit", qe.Description)
	}
	_ = p.RefuseQueue("user:b")
	if got := p.Usage().Refused[ReasonSessionQueue]; got != 2 {
		t.Errorf("Refused[session_queue] = %d, want 2", got)
	}
}

func TestUsageListsEveryReason(t *testing.T) {
	p, _ := newTestPool(t, Limits{})
	u := p.Usage()
	for _, r := range []Reason{ReasonSessions, ReasonMessageSize, ReasonSendRate, ReasonSessionQueue} {
		if n, ok := u.Refused[r]; !ok || n != 0 {
			t.Errorf("Refused[%s] = %d, %v; want 0, true", r, n, ok)
		}
	}
	u.Refused[ReasonSessions] = 99 // the snapshot is the caller's
	if p.Usage().Refused[ReasonSessions] != 0 {
		t.Error("changing a snapshot changed the pool")
	}
}

func TestQuotaErrorStatus(t *testing.T) {
	p, _ := newTestPool(t, Limits{MaxSessions: 1, MaxMessageBytes: 10, SendRate: 2, SendBurst: 1})
	if _, err := p.AcquireSession("user:a"); err != nil {
		t.Fatal(err)
	}
	if err := p.AllowSend("a"); err != nil {
		t.Fatal(err)
	}
	_, sessionsErr := p.AcquireSession("user:b")

	tests := []struct {
		name      string
		err       error
		reason    Reason
		subject   string
		desc      string
		wantRetry time.Duration
	}{
		{"sessions", sessionsErr, ReasonSessions, "user:b", "the region has 1 open sessions; the limit is 1", SessionRetryAfter},
		{"message size", p.CheckMessageSize("user:a", 11), ReasonMessageSize, "user:a", "message body is 11 bytes; the limit is 10", 0},
		{"send rate", p.AllowSend("a"), ReasonSendRate, "user:a", "", 500 * time.Millisecond},
		{"session queue", p.RefuseQueue("region"), ReasonSessionQueue, "region", "", 0},
		{"wrapped", fmt.Errorf("send: %w", p.CheckMessageSize("user:c", 12)), ReasonMessageSize, "user:c", "message body is 12 bytes; the limit is 10", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, ok := status.FromError(tt.err)
			if !ok {
				t.Fatalf("status.FromError(%v) found no status", tt.err)
			}
			if st.Code() != codes.ResourceExhausted {
				t.Errorf("Code() = %v, want ResourceExhausted", st.Code())
			}
			if !strings.Contains(st.Message(), string(tt.reason)) {
				t.Errorf("Message() = %q, want it to name %s", st.Message(), tt.reason)
			}
			var (
				qf *errdetails.QuotaFailure
				ri *errdetails.RetryInfo
			)
			for _, d := range st.Details() {
				switch d := d.(type) {
				case *errdetails.QuotaFailure:
					qf = d
				case *errdetails.RetryInfo:
					ri = d
				default:
					t.Errorf("unexpected detail %T: %v", d, d)
				}
			}
			if qf == nil || len(qf.GetViolations()) != 1 {
				t.Fatalf("Details() = %v, want one QuotaFailure with one violation", st.Details())
			}
			v := qf.GetViolations()[0]
			if v.GetSubject() != tt.subject || v.GetQuotaId() != string(tt.reason) {
				t.Errorf("violation = %v, want subject %q and quota id %q", v, tt.subject, tt.reason)
			}
			if v.GetDescription() == "" || (tt.desc != "" && v.GetDescription() != tt.desc) {
				t.Errorf("violation description = %q, want %q", v.GetDescription(), tt.desc)
			}
			if tt.wantRetry == 0 {
				if ri != nil {
					t.Errorf("RetryInfo = %v, want none", ri)
				}
				return
			}
			if ri == nil {
				t.Fatal("no RetryInfo")
			}
			if got := ri.GetRetryDelay().AsDuration(); got != tt.wantRetry {
				t.Errorf("RetryDelay = %v, want %v", got, tt.wantRetry)
			}
		})
	}
}

func TestQuotaErrorError(t *testing.T) {
	e := &QuotaError{Reason: ReasonMessageSize, Subject: "user:a", Description: "message body is 70000 bytes; the limit is 65536"}
	want := "resourcepool: message_size quota exceeded for user:a: message body is 70000 bytes; the limit is 65536"
	if got := e.Error(); got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func BenchmarkAllowSend(b *testing.B) {
	b.Run("one user", func(b *testing.B) {
		p := New(Limits{SendRate: math.MaxFloat64 / 2, SendBurst: math.MaxInt32})
		for b.Loop() {
			_ = p.AllowSend("alice")
		}
	})
	b.Run("many users parallel", func(b *testing.B) {
		p := New(Limits{})
		users := make([]string, 10000)
		for i := range users {
			users[i] = "user-" + strconv.Itoa(i)
		}
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				_ = p.AllowSend(users[i%len(users)])
				i++
			}
		})
	})
}

func TestAllowLogin(t *testing.T) {
	p, clock := newTestPool(t, Limits{LoginRate: 60, LoginBurst: 2, LoginSourceRate: 60, LoginSourceBurst: 2})
	for i := range 2 {
		if err := p.AllowLogin("alice", "10.0.0.1"); err != nil {
			t.Fatalf("attempt %d: %v", i+1, err)
		}
	}
	err := p.AllowLogin("alice", "10.0.0.2")
	var qe *QuotaError
	if !errors.As(err, &qe) || qe.Reason != ReasonLoginRate || qe.Subject != "username:alice" {
		t.Fatalf("third attempt for alice: %v, want a login_rate refusal for username:alice", err)
	}
	// Another user from the same source is limited by the source's budget.
	if err := p.AllowLogin("bob", "10.0.0.1"); !errors.As(err, &qe) || qe.Subject != "source:10.0.0.1" {
		t.Fatalf("bob from a busy source: %v, want a refusal for source:10.0.0.1", err)
	}
	clock.advance(time.Second)
	if err := p.AllowLogin("alice", "10.0.0.3"); err != nil {
		t.Fatalf("after a second: %v", err)
	}
	if got := p.Usage().Refused[ReasonLoginRate]; got != 2 {
		t.Fatalf("login_rate refusals = %d, want 2", got)
	}
}
