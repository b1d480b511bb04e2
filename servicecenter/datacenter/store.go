package datacenter

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
	"google.golang.org/protobuf/proto"

	recordv1 "github.com/roamfed/roamfed/api/record/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
)

// Domain errors. The RPC boundary maps them to gRPC status codes
// (api/rpcstatus); inside the process compare them with errors.Is.
var (
	// ErrClosed is returned by every call on a closed Store.
	ErrClosed = errors.New("datacenter: closed")
	// ErrUserExists means the username is taken.
	ErrUserExists = errors.New("datacenter: user already exists")
	// ErrUserNotFound means no user has that id or name.
	ErrUserNotFound = errors.New("datacenter: user not found")
	// ErrGroupExists means a group with that id is already stored.
	ErrGroupExists = errors.New("datacenter: group already exists")
	// ErrGroupNotFound means no group has that id here.
	ErrGroupNotFound = errors.New("datacenter: group not found")
	// ErrSessionNotFound means the token is unknown, revoked or expired.
	ErrSessionNotFound = errors.New("datacenter: session not found")
	// ErrCorrupt means a stored record did not decode.
	ErrCorrupt = errors.New("datacenter: corrupt record")
)

// Options tune a Store.
type Options struct {
	// Region is the region this store belongs to: users and groups homed
	// there are published in its home directory. Empty keeps no directory
	// of its own.
	Region string
	// Logger receives Pebble's events and the store's own; nil discards.
	Logger *slog.Logger
	// FS replaces the disk, for fault-injection tests.
	FS vfs.FS
	// MaxBatch caps how many appends share one sync; 0 means 512.
	MaxBatch int
	// Cache is the block cache size in bytes; 0 means 32 MiB.
	Cache int64
	// MaxOutbox bounds each destination's outbox; 0 means
	// DefaultMaxOutbox.
	MaxOutbox int
	// CommitObserver, if set, is told how many messages each commit batch
	// wrote and how long their write and sync took (failed ones too). It
	// is called from the commit goroutine and must not block; metrics use
	// it.
	CommitObserver func(messages int, took time.Duration)
}

// Store is a region's data center. It is safe for concurrent use.
type Store struct {
	db     *pebble.DB
	log    *slog.Logger
	region string

	// writeMu serializes read-modify-write of users and groups, which are
	// rare next to message appends.
	writeMu sync.Mutex

	groupsMu sync.RWMutex
	groups   map[string]*recordv1.Group // decoded group records; never modified in place

	// dirCache holds directory records by key, shared with callers of
	// Locate, who must not modify them; sessions holds login sessions by
	// token key.
	dirCache *readCache[*roamingv1.DirectoryRecord]
	sessions *readCache[*recordv1.SessionToken]

	// sweepFrom is where the next DeleteExpiredSessions starts reading.
	sweepMu   sync.Mutex
	sweepFrom []byte

	commits  *committer
	outbox   outbox
	onCommit atomic.Pointer[func([]*recordv1.Message)]
	observe  func(messages int, took time.Duration)

	closeOnce sync.Once
	closed    chan struct{}
	closeErr  error
}

// Open opens (creating if needed) the store in dir.
func Open(dir string, opts Options) (*Store, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 512
	}
	if opts.Cache <= 0 {
		opts.Cache = 32 << 20
	}
	cache := pebble.NewCache(opts.Cache)
	defer cache.Unref()
	po := &pebble.Options{
		FS:     opts.FS,
		Cache:  cache,
		Logger: pebbleLogger{opts.Logger},
		// The message log and the idempotency table see many point
		// lookups for keys that do not exist; bloom filters answer those
		// without reading blocks.
		Levels: [7]pebble.LevelOptions{},
	}
	for i := range po.Levels {
		po.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	po.EnsureDefaults()
	db, err := openPebble(dir, po)
	if err != nil {
		return nil, fmt.Errorf("pebble open %s: %w", dir, err)
	}
	s := &Store{
		db:     db,
		log:    opts.Logger,
		region: opts.Region,
		groups: make(map[string]*recordv1.Group),
		closed: make(chan struct{}),

		dirCache: newReadCache[*roamingv1.DirectoryRecord](1 << 18),
		sessions: newReadCache[*recordv1.SessionToken](1 << 16),
	}
	s.observe = opts.CommitObserver
	s.outbox = outbox{max: opts.MaxOutbox, peers: make(map[string]*outboxQueue)}
	if s.outbox.max <= 0 {
		s.outbox.max = DefaultMaxOutbox
	}
	s.commits = startCommitter(s, opts.MaxBatch)
	return s, nil
}

// openPebble is pebble.Open, except that a fatal error Pebble raises while
// opening (a failed MANIFEST write, say) is returned rather than panicking
// out of Open. Pebble releases the lock and what it allocated before it
// re-panics.
func openPebble(dir string, po *pebble.Options) (db *pebble.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(pebbleFatal)
			if !ok {
				panic(r)
			}
			db, err = nil, f
		}
	}()
	return pebble.Open(dir, po)
}

// Close stops the commit queue, waits for the appends in it, and closes the
// database. It is idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		// The commit queue still reads the database while it drains.
		s.commits.stop()
		close(s.closed)
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("pebble close: %w", err)
		}
	})
	return s.closeErr
}

// Closed reports whether Close has been called; readiness checks use it.
func (s *Store) Closed() bool { return s.isClosed() }

func (s *Store) isClosed() bool {
	select {
	case <-s.closed:
		return true
	default:
		return false
	}
}

// get reads key into m. It returns false when the key is absent.
func (s *Store) get(k []byte, m proto.Message) (bool, error) {
	if s.isClosed() {
		return false, ErrClosed
	}
	v, closer, err := s.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("pebble get: %w", err)
	}
	defer closer.Close()
	if err := proto.Unmarshal(v, m); err != nil {
		return false, fmt.Errorf("%w: %q: %v", ErrCorrupt, k, err)
	}
	return true, nil
}

// getRaw returns a copy of the value at k, or nil when it is absent.
func (s *Store) getRaw(k []byte) ([]byte, error) {
	if s.isClosed() {
		return nil, ErrClosed
	}
	v, closer, err := s.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pebble get: %w", err)
	}
	defer closer.Close()
	return append([]byte{}, v...), nil
}

// marshal encodes a record. It fails only on a string field that is not
// valid UTF-8, which callers validate before they get here.
func marshal(m proto.Message) ([]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("datacenter: encode %T: %w", m, err)
	}
	return b, nil
}

// pebbleLogger routes Pebble's log lines to slog.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Debug(fmt.Sprintf(format, args...), slog.String("component", "pebble"))
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...), slog.String("component", "pebble"))
}

// Fatalf must not return (Pebble's state is unknown after it), so it
// panics; openPebble turns a panic during Open into an error.
func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error(msg, slog.String("component", "pebble"))
	panic(pebbleFatal{msg})
}

// pebbleFatal is what pebbleLogger.Fatalf panics with.
type pebbleFatal struct{ msg string }

func (f pebbleFatal) Error() string { return f.msg }

func unmarshal(v []byte, m proto.Message) error {
	if err := proto.Unmarshal(v, m); err != nil {
		return fmt.Errorf("%w: %T: %v", ErrCorrupt, m, err)
	}
	return nil
}
