package resourcepool

import (
	"errors"
	"fmt"
	"time"
)

// MaxMessageBytes is the largest gRPC message a roaming conn sends or
// receives. It is above MaxBatchBytes so that a full batch plus its
// envelope always fits.
const MaxMessageBytes = 16 << 20

// Limits is the budget for the work this region sends to each peer. The
// zero value of a field means its default; see [DefaultLimits].
type Limits struct {
	WindowBatches    int           // unacknowledged batches in flight per peer; default 64
	WindowBytes      int64         // unacknowledged bytes in flight per peer; default 8 MiB
	MaxBatchMessages int           // messages per batch; default 256
	MaxBatchBytes    int           // bytes per batch (encoded); default 1 MiB
	CallTimeout      time.Duration // deadline for unary peer calls that have none; default 5s
}

// DefaultLimits returns the limits a region runs with when nothing is configured.
func DefaultLimits() Limits {
	return Limits{
		WindowBatches:    64,
		WindowBytes:      8 << 20,
		MaxBatchMessages: 256,
		MaxBatchBytes:    1 << 20,
		CallTimeout:      5 * time.Second,
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
	return l
}
