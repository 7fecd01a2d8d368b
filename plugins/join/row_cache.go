package join

import "sync"

// rowCacheEntries bounds the row cache: two generations of half as many.
// With row bodies of ~1 KB decoded, ~32 MB.
const rowCacheEntries = 1 << 15

// rowCache keeps row states decoded across batches (cacheKey → row; nil:
// absent), so that a row read by batch after batch, say the account that
// every one of its transactions looks up, is read from the store and
// decoded once. It holds only what the store holds, as of the last commit:
// filled from phase 1's reads of committed state, and a key a batch wrote
// is forgotten once that batch commits, and so is a key the purge loop
// deletes (a purged truncated row, cached, would otherwise come back as a
// fresh tombstone with its old parents after a later truncation). Row states are never changed in place (state.cachedRow hands out copies
// whose maps are replaced, not written), so the cache shares them.
//
// Eviction is by generation: when the current one is full it becomes the
// old one, and a hit in the old one moves the row to the current one.
type rowCache struct {
	mu       sync.Mutex
	cur, old map[string]*rowState
}

func newRowCache() *rowCache {
	return &rowCache{cur: make(map[string]*rowState, rowCacheEntries/2)}
}

func (c *rowCache) get(key string) (*rowState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.cur[key]; ok {
		return r, true
	}
	r, ok := c.old[key]
	if ok {
		c.putLocked(key, r)
	}
	return r, ok
}

func (c *rowCache) put(key string, r *rowState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.putLocked(key, r)
}

func (c *rowCache) putLocked(key string, r *rowState) {
	if len(c.cur) >= rowCacheEntries/2 {
		c.old, c.cur = c.cur, make(map[string]*rowState, rowCacheEntries/2)
	}
	c.cur[key] = r
}

// forget drops keys a committed batch wrote.
func (c *rowCache) forget(keys func(yield func(string) bool)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range keys {
		delete(c.cur, k)
		delete(c.old, k)
	}
}
