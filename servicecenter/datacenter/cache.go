package datacenter

import "sync"

// readCache keeps decoded records that are read far more often than they
// are written — directory records (looked up for every recipient of every
// message) and login sessions (looked up for every call) — so that a hot
// read is a map lookup instead of a Pebble read and a decode.
//
// A write must call invalidate after its batch is committed. A reader
// that read Pebble before that commit cannot put its stale value in the
// cache afterwards: put only stores when no invalidation happened since
// the reader's generation was taken.
type readCache[V any] struct {
	mu  sync.RWMutex
	gen uint64
	m   map[string]V
	max int
}

func newReadCache[V any](max int) *readCache[V] {
	return &readCache[V]{m: make(map[string]V), max: max}
}

// get returns the cached value for k, or the generation to give put.
func (c *readCache[V]) get(k []byte) (v V, gen uint64, ok bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	v, ok = c.m[string(k)]
	return v, c.gen, ok
}

// put caches v for k if nothing was invalidated since gen.
func (c *readCache[V]) put(k []byte, v V, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	if len(c.m) >= c.max {
		// Rarely reached (the defaults hold every record of a large
		// region); starting over is simpler than an eviction order.
		clear(c.m)
	}
	c.m[string(k)] = v
}

// invalidate forgets k, or everything when k is nil.
func (c *readCache[V]) invalidate(k []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	if k == nil {
		clear(c.m)
		return
	}
	delete(c.m, string(k))
}
