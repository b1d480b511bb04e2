package resourcepool

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/status"

	"github.com/roamfed/roamfed/internal/quota"
)

// Limits is the budget of one region's service center. The zero value of a
// field means its default; see [DefaultLimits].
type Limits struct {
	MaxSessions         int     `yaml:"max_sessions"`           // concurrent Session streams in the region; default 10000
	MaxMessageBytes     int     `yaml:"max_message_bytes"`      // body size limit; default 64 << 10
	SendRate            float64 `yaml:"send_rate"`              // per-user token bucket refill, messages/second; default 50; +Inf disables the limit
	SendBurst           int     `yaml:"send_burst"`             // per-user bucket size; default 100
	MaxQueuedPerSession int     `yaml:"max_queued_per_session"` // deliveries queued for one session before it must catch up; default 1024
	LoginRate           float64 `yaml:"login_rate"`             // login attempts per minute per username; default 10
	LoginBurst          int     `yaml:"login_burst"`            // login attempts at once per username; default 10
	LoginSourceRate     float64 `yaml:"login_source_rate"`      // login attempts per minute per source address; default 300
	LoginSourceBurst    int     `yaml:"login_source_burst"`     // login attempts at once per source address; default 300
}

// DefaultLimits returns the limits a region runs with when nothing is configured.
func DefaultLimits() Limits {
	return Limits{
		MaxSessions:         10000,
		MaxMessageBytes:     64 << 10,
		SendRate:            50,
		SendBurst:           100,
		MaxQueuedPerSession: 1024,
		LoginRate:           10,
		LoginBurst:          10,
		LoginSourceRate:     300,
		LoginSourceBurst:    300,
	}
}

// WithDefaults returns l with every zero field set to its default.
// Negative values are kept; Validate reports them.
func (l Limits) WithDefaults() Limits {
	d := DefaultLimits()
	if l.MaxSessions == 0 {
		l.MaxSessions = d.MaxSessions
	}
	if l.MaxMessageBytes == 0 {
		l.MaxMessageBytes = d.MaxMessageBytes
	}
	if l.SendRate == 0 {
		l.SendRate = d.SendRate
	}
	if l.SendBurst == 0 {
		l.SendBurst = d.SendBurst
	}
	if l.MaxQueuedPerSession == 0 {
		l.MaxQueuedPerSession = d.MaxQueuedPerSession
	}
	if l.LoginRate == 0 {
		l.LoginRate = d.LoginRate
	}
	if l.LoginBurst == 0 {
		l.LoginBurst = d.LoginBurst
	}
	if l.LoginSourceRate == 0 {
		l.LoginSourceRate = d.LoginSourceRate
	}
	if l.LoginSourceBurst == 0 {
		l.LoginSourceBurst = d.LoginSourceBurst
	}
	return l
}

// Validate reports every field that no Pool can run with: negative values,
// and a SendRate that is not a number. Zero fields are valid (they mean the
// default).
func (l Limits) Validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		v    int
	}{
		{"MaxSessions", l.MaxSessions},
		{"MaxMessageBytes", l.MaxMessageBytes},
		{"SendBurst", l.SendBurst},
		{"MaxQueuedPerSession", l.MaxQueuedPerSession},
		{"LoginBurst", l.LoginBurst},
		{"LoginSourceBurst", l.LoginSourceBurst},
	} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("resourcepool: %s is %d; it must be positive, or 0 for the default", f.name, f.v))
		}
	}
	if math.IsNaN(l.SendRate) || l.SendRate < 0 {
		errs = append(errs, fmt.Errorf("resourcepool: SendRate is %v; it must be positive, or 0 for the default", l.SendRate))
	}
	if math.IsNaN(l.LoginRate) || l.LoginRate < 0 {
		errs = append(errs, fmt.Errorf("resourcepool: LoginRate is %v; it must be positive, or 0 for the default", l.LoginRate))
	}
	if math.IsNaN(l.LoginSourceRate) || l.LoginSourceRate < 0 {
		errs = append(errs, fmt.Errorf("resourcepool: LoginSourceRate is %v; it must be positive, or 0 for the default", l.LoginSourceRate))
	}
	return errors.Join(errs...)
}

// sanitized returns l with defaults applied and every value Validate would
// reject replaced by its default, so that a bad configuration that slipped
// past Validate never makes the Pool refuse everything.
func (l Limits) sanitized() Limits {
	l = l.WithDefaults()
	d := DefaultLimits()
	if l.MaxSessions < 0 {
		l.MaxSessions = d.MaxSessions
	}
	if l.MaxMessageBytes < 0 {
		l.MaxMessageBytes = d.MaxMessageBytes
	}
	if math.IsNaN(l.SendRate) || l.SendRate < 0 {
		l.SendRate = d.SendRate
	}
	if l.SendBurst < 0 {
		l.SendBurst = d.SendBurst
	}
	if l.MaxQueuedPerSession < 0 {
		l.MaxQueuedPerSession = d.MaxQueuedPerSession
	}
	if math.IsNaN(l.LoginRate) || l.LoginRate < 0 {
		l.LoginRate = d.LoginRate
	}
	if l.LoginBurst < 0 {
		l.LoginBurst = d.LoginBurst
	}
	if math.IsNaN(l.LoginSourceRate) || l.LoginSourceRate < 0 {
		l.LoginSourceRate = d.LoginSourceRate
	}
	if l.LoginSourceBurst < 0 {
		l.LoginSourceBurst = d.LoginSourceBurst
	}
	return l
}

// Reason names the budget a refused piece of work was over.
type Reason string

// The reasons a Pool refuses work.
const (
	ReasonSessions     Reason = "sessions"      // the region has MaxSessions open sessions
	ReasonMessageSize  Reason = "message_size"  // a body is larger than MaxMessageBytes
	ReasonSendRate     Reason = "send_rate"     // a user sends faster than SendRate/SendBurst
	ReasonSessionQueue Reason = "session_queue" // a session has MaxQueuedPerSession deliveries queued
	ReasonLoginRate    Reason = "login_rate"    // logins for one username or from one address come faster than LoginRate/LoginBurst
)

// reasons lists every Reason in a fixed order; the index is the counter slot.
var reasons = [...]Reason{ReasonSessions, ReasonMessageSize, ReasonSendRate, ReasonSessionQueue, ReasonLoginRate}

func (r Reason) index() int {
	switch r {
	case ReasonSessions:
		return 0
	case ReasonMessageSize:
		return 1
	case ReasonSendRate:
		return 2
	case ReasonLoginRate:
		return 4
	default:
		return 3
	}
}

// QuotaError is a refusal: the work was over the budget named by Reason.
// Return it from an RPC handler as is; its GRPCStatus tells the client
// which limit it hit.
type QuotaError struct {
	Reason      Reason
	Subject     string        // whom the limit applies to: "user:<id>" or "region"
	Description string        // the limit and its value, in words
	RetryAfter  time.Duration // for send_rate: when a token is available; otherwise 0
}

func (e *QuotaError) message() string {
	return fmt.Sprintf("%s quota exceeded for %s: %s", e.Reason, e.Subject, e.Description)
}

func (e *QuotaError) Error() string { return "resourcepool: " + e.message() }

// GRPCStatus returns codes.ResourceExhausted with an errdetails.QuotaFailure
// (QuotaId is the Reason) and, when RetryAfter is set, an errdetails.RetryInfo.
func (e *QuotaError) GRPCStatus() *status.Status {
	return quota.Status(e.message(), quota.Violation{
		Subject: e.Subject, ID: string(e.Reason), Description: e.Description, RetryAfter: e.RetryAfter,
	})
}

// Pool enforces Limits. The zero Pool is not usable; call New.
type Pool struct {
	limits Limits
	now    func() time.Time // time.Now; tests replace it

	sessions atomic.Int64
	refused  [len(reasons)]atomic.Uint64

	mu        sync.Mutex
	senders   map[string]*sender
	lastSweep time.Time
	sweptSize int // len(senders) after the last sweep
}

type sender struct {
	lim      *rate.Limiter
	lastSeen time.Time
}

const (
	// sweepInterval is how often AllowSend looks for idle limiters.
	sweepInterval = time.Minute
	// idleAfter is how long a full limiter stays unused before it goes.
	idleAfter = time.Minute
	// minSweepSize keeps small maps from being swept for growth alone.
	minSweepSize = 1024
)

// New returns a Pool enforcing l.WithDefaults(). Values that l.Validate
// rejects are replaced by their defaults.
func New(l Limits) *Pool {
	p := &Pool{
		limits:  l.sanitized(),
		now:     time.Now,
		senders: make(map[string]*sender),
	}
	p.lastSweep = p.now()
	return p
}

// Limits returns the limits the Pool enforces, defaults applied.
func (p *Pool) Limits() Limits { return p.limits }

func subjectOr(s string) string {
	if s == "" {
		return "region"
	}
	return s
}

// refuse counts a refusal and returns it.
func (p *Pool) refuse(r Reason, subject, description string, retryAfter time.Duration) *QuotaError {
	p.refused[r.index()].Add(1)
	return &QuotaError{Reason: r, Subject: subjectOr(subject), Description: description, RetryAfter: retryAfter}
}

// SessionRetryAfter is the wait a refused Session stream is asked for
// (RetryInfo): when a slot frees cannot be known, and a full region must
// not be asked again at once by every client it refused.
const SessionRetryAfter = time.Second

// AcquireSession takes one of the region's MaxSessions session slots.
// The caller must call release when the session ends; release is never nil
// (a no-op after a refusal) and may be called more than once.
func (p *Pool) AcquireSession(subject string) (release func(), err error) {
	limit := int64(p.limits.MaxSessions)
	for {
		n := p.sessions.Load()
		if n >= limit {
			return func() {}, p.refuse(ReasonSessions, subject,
				fmt.Sprintf("the region has %d open sessions; the limit is %d", n, limit), SessionRetryAfter)
		}
		if p.sessions.CompareAndSwap(n, n+1) {
			break
		}
	}
	var once sync.Once
	return func() { once.Do(func() { p.sessions.Add(-1) }) }, nil
}

// CheckMessageSize refuses a message body of n bytes if n is over MaxMessageBytes.
func (p *Pool) CheckMessageSize(subject string, n int) error {
	if n <= p.limits.MaxMessageBytes {
		return nil
	}
	return p.refuse(ReasonMessageSize, subject,
		fmt.Sprintf("message body is %d bytes; the limit is %d", n, p.limits.MaxMessageBytes), 0)
}

// AllowSend takes one token from userID's bucket, which refills at SendRate
// per second up to SendBurst. An empty bucket is a refusal whose RetryAfter
// is the time until the next token.
func (p *Pool) AllowSend(userID string) error {
	return p.allow(ReasonSendRate, "user:"+userID, p.limits.SendRate, p.limits.SendBurst, "messages/s")
}

// AllowLogin spends one login attempt of the username's budget and one of
// the source address's, so that neither guessing one user's password from
// many places nor many users' from one place goes fast.
func (p *Pool) AllowLogin(username, source string) error {
	if err := p.allow(ReasonLoginRate, "username:"+username, p.limits.LoginRate/60, p.limits.LoginBurst, "login attempts/s"); err != nil {
		return err
	}
	return p.allow(ReasonLoginRate, "source:"+source, p.limits.LoginSourceRate/60, p.limits.LoginSourceBurst, "login attempts/s")
}

// allow spends one token of subject's bucket.
func (p *Pool) allow(reason Reason, subject string, perSecond float64, burst int, unit string) error {
	if math.IsInf(perSecond, 1) {
		return nil
	}
	now := p.now()
	p.mu.Lock()
	s := p.senders[subject]
	if s == nil {
		s = &sender{lim: rate.NewLimiter(rate.Limit(perSecond), burst)}
		p.senders[subject] = s
	}
	s.lastSeen = now
	ok := s.lim.AllowN(now, 1)
	var wait time.Duration
	if !ok {
		wait = untilToken(s.lim.TokensAt(now), perSecond)
	}
	p.sweepLocked(now)
	p.mu.Unlock()

	if ok {
		return nil
	}
	return p.refuse(reason, subject,
		fmt.Sprintf("more than %s %s (burst %d); the next is allowed in %v",
			strconv.FormatFloat(perSecond, 'g', 3, 64), unit, burst, wait.Round(time.Millisecond)), wait)
}

// untilToken is how long a bucket holding tokens takes to reach one token at
// r tokens per second, rounded up to the nanosecond.
func untilToken(tokens, r float64) time.Duration {
	ns := math.Ceil((1 - tokens) / r * float64(time.Second))
	switch {
	case ns < 1:
		return 1
	case ns >= math.MaxInt64:
		return math.MaxInt64
	}
	return time.Duration(ns)
}

// sweepLocked drops limiters that are full and unused for idleAfter: a full
// limiter behaves like a new one, so nobody notices. It runs once per
// sweepInterval, or earlier when the map has doubled since the last sweep,
// which bounds both the map and the work per AllowSend (amortized O(1)).
// p.mu must be held.
func (p *Pool) sweepLocked(now time.Time) {
	if now.Sub(p.lastSweep) < sweepInterval && len(p.senders) < max(2*p.sweptSize, minSweepSize) {
		return
	}
	burst := float64(p.limits.SendBurst)
	for id, s := range p.senders {
		if now.Sub(s.lastSeen) >= idleAfter && s.lim.TokensAt(now) >= burst {
			delete(p.senders, id)
		}
	}
	p.lastSweep = now
	p.sweptSize = len(p.senders)
}

// RefuseQueue records that a session's delivery queue is full and returns
// the refusal to hand to the client. The caller owns the queue and decides
// when it is full, normally at MaxQueuedPerSession entries.
func (p *Pool) RefuseQueue(subject string) error {
	return p.refuse(ReasonSessionQueue, subject,
		fmt.Sprintf("the session has %d deliveries queued, the limit; catch up from the group history",
			p.limits.MaxQueuedPerSession), 0)
}

// Usage is a snapshot of a Pool's budgets for operators.
type Usage struct {
	Sessions       int               // open sessions
	MaxSessions    int               // the session limit
	TrackedSenders int               // per-user limiters held in memory
	Refused        map[Reason]uint64 // refusals since New, by reason; every Reason is present
}

// Usage returns the current usage. The fields are read one by one, so under
// load they may be a moment apart.
func (p *Pool) Usage() Usage {
	u := Usage{
		Sessions:    int(p.sessions.Load()),
		MaxSessions: p.limits.MaxSessions,
		Refused:     make(map[Reason]uint64, len(reasons)),
	}
	for i, r := range reasons {
		u.Refused[r] = p.refused[i].Load()
	}
	p.mu.Lock()
	u.TrackedSenders = len(p.senders)
	p.mu.Unlock()
	return u
}
