package resourcepool

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// MaxMessageBytes is the largest gRPC message a roaming conn sends or
// receives. It is above MaxBatchBytes so that a full batch plus its
// envelope always fits.
const MaxMessageBytes = 16 << 20

// The HTTP/2 flow-control windows of a roaming conn: per stream and for
// the whole conn. Fixing them turns off gRPC's bandwidth estimator, which
// otherwise sends a PING, and gets one back, for nearly every data frame
// that arrives while traffic is light: on loopback at 100 messages/s it
// doubled the writes and reads of a three-region federation (BENCHMARKS.md).
// 4 MiB in flight per stream keeps a 150 ms link at 27 MB/s a stream, far
// above what the in-flight budget (Limits) lets through.
const (
	StreamWindow = 4 << 20
	ConnWindow   = 16 << 20
)

// Limits is the budget for the work this region sends to each peer, and
// for the requests it takes from each peer (PeerRate, PeerBurst; see
// [RateLimiter]). The zero value of a field means its default; see
// [DefaultLimits].
type Limits struct {
	WindowBatches    int           `yaml:"window_batches"`     // unacknowledged batches in flight per peer; default 64
	WindowBytes      int64         `yaml:"window_bytes"`       // unacknowledged bytes in flight per peer; default 8 MiB
	MaxBatchMessages int           `yaml:"max_batch_messages"` // messages per batch; default 256
	MaxBatchBytes    int           `yaml:"max_batch_bytes"`    // bytes per batch (encoded); default 1 MiB
	CallTimeout      time.Duration `yaml:"call_timeout"`       // deadline for unary peer calls that have none; default 5s
	// PeerRate is how many requests per second each peer region may make
	// to this one, refilling a bucket of PeerBurst: a unary call, a stream
	// opened, and every message received on a Submit or Deliver stream
	// (a batch) each take one. Default 5,000/s; +Inf disables the limit.
	PeerRate float64 `yaml:"peer_rate"`
	// PeerBurst is the size of each peer's bucket; default 10,000.
	PeerBurst int `yaml:"peer_burst"`
	// DeliverQueue is how many committed messages and presence changes
	// may wait in memory for one peer; default 65,536. Messages that find
	// it full are sent later from the group's log.
	DeliverQueue int `yaml:"deliver_queue"`
}

// DefaultLimits returns the limits a region runs with when nothing is configured.
func DefaultLimits() Limits {
	return Limits{
		WindowBatches:    64,
		WindowBytes:      8 << 20,
		MaxBatchMessages: 256,
		MaxBatchBytes:    1 << 20,
		CallTimeout:      5 * time.Second,
		// A federation under a heavy load (roambench: 3 regions, 2,000
		// messages/s) makes a few hundred requests per second to each
		// peer; the limit is there against a peer gone wrong, not to pace
		// a healthy one.
		PeerRate:     5000,
		PeerBurst:    10000,
		DeliverQueue: 1 << 16,
	}
}

// WithDefaults returns l with every zero field set to its default.
// Negative values are kept; Validate reports them.
func (l Limits) WithDefaults() Limits {
	d := DefaultLimits()
	if l.WindowBatches == 0 {
		l.WindowBatches = d.WindowBatches
	}
	if l.WindowBytes == 0 {
		l.WindowBytes = d.WindowBytes
	}
	if l.MaxBatchMessages == 0 {
		l.MaxBatchMessages = d.MaxBatchMessages
	}
	if l.MaxBatchBytes == 0 {
		l.MaxBatchBytes = d.MaxBatchBytes
	}
	if l.CallTimeout == 0 {
		l.CallTimeout = d.CallTimeout
	}
	if l.PeerRate == 0 {
		l.PeerRate = d.PeerRate
	}
	if l.PeerBurst == 0 {
		l.PeerBurst = d.PeerBurst
	}
	if l.DeliverQueue == 0 {
		l.DeliverQueue = d.DeliverQueue
	}
	return l
}

// Validate reports every field no Peers can run with: negative values, and
// a MaxBatchBytes that does not fit in one gRPC message. Zero fields are
// valid (they mean the default).
func (l Limits) Validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"WindowBatches", int64(l.WindowBatches)},
		{"WindowBytes", l.WindowBytes},
		{"MaxBatchMessages", int64(l.MaxBatchMessages)},
		{"MaxBatchBytes", int64(l.MaxBatchBytes)},
		{"CallTimeout", int64(l.CallTimeout)},
		{"PeerBurst", int64(l.PeerBurst)},
		{"DeliverQueue", int64(l.DeliverQueue)},
	} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("resourcepool: %s is %d; it must be positive, or 0 for the default", f.name, f.v))
		}
	}
	// Leave room for the batch's envelope (ids, recipient lists) within
	// the message limit.
	if l.MaxBatchBytes > MaxMessageBytes/2 {
		errs = append(errs, fmt.Errorf("resourcepool: MaxBatchBytes is %d; it must be at most %d", l.MaxBatchBytes, MaxMessageBytes/2))
	}
	if math.IsNaN(l.PeerRate) || l.PeerRate < 0 {
		errs = append(errs, fmt.Errorf("resourcepool: PeerRate is %v; it must be positive, or 0 for the default", l.PeerRate))
	}
	return errors.Join(errs...)
}

// sanitized returns l with defaults applied and every value Validate would
// reject replaced by its default, so that a bad configuration that slipped
// past Validate never stalls all cross-region work.
func (l Limits) sanitized() Limits {
	l = l.WithDefaults()
	d := DefaultLimits()
	if l.WindowBatches < 0 {
		l.WindowBatches = d.WindowBatches
	}
	if l.WindowBytes < 0 {
		l.WindowBytes = d.WindowBytes
	}
	if l.MaxBatchMessages < 0 {
		l.MaxBatchMessages = d.MaxBatchMessages
	}
	if l.MaxBatchBytes < 0 || l.MaxBatchBytes > MaxMessageBytes/2 {
		l.MaxBatchBytes = d.MaxBatchBytes
	}
	if l.CallTimeout < 0 {
		l.CallTimeout = d.CallTimeout
	}
	if math.IsNaN(l.PeerRate) || l.PeerRate < 0 {
		l.PeerRate = d.PeerRate
	}
	if l.PeerBurst < 0 {
		l.PeerBurst = d.PeerBurst
	}
	if l.DeliverQueue < 0 {
		l.DeliverQueue = d.DeliverQueue
	}
	return l
}
