package statestore

import (
	"bytes"
	"context"
	"errors"
	"sort"
	"sync"

	"github.com/google/btree"
)

// Memory is a Store held in memory only: nothing survives Close. It exists
// for config unit tests (cdc_join's `state_dir: ":memory:"`), which need a
// fresh state per test case and nothing left behind on disk.
//
// Each bucket is a copy-on-write B-tree: Update works on clones and swaps
// them in when fn succeeds, so a failed Update changes nothing and a View
// sees a consistent snapshot.
type Memory struct {
	mu      sync.RWMutex // writers: Update's swap; readers: snapshots
	writer  sync.Mutex   // one Update at a time
	buckets map[string]*btree.BTreeG[memEntry]
	closed  bool
}

type memEntry struct {
	key   string
	value []byte
}

func memLess(a, b memEntry) bool { return a.key < b.key }

// errClosed is returned by a Memory used after Close.
var errClosed = errors.New("statestore: the store is closed")

// OpenMemory returns an empty in-memory store.
func OpenMemory() *Memory {
	return &Memory{buckets: map[string]*btree.BTreeG[memEntry]{}}
}

// snapshot clones every bucket (cheap: the trees are copy-on-write).
func (m *Memory) snapshot() (map[string]*btree.BTreeG[memEntry], error) {
	m.mu.Lock() // Clone marks the tree shared, which is a write
	defer m.mu.Unlock()
	if m.closed {
		return nil, errClosed
	}
	snap := make(map[string]*btree.BTreeG[memEntry], len(m.buckets))
	for name, t := range m.buckets {
		snap[name] = t.Clone()
	}
	return snap, nil
}

// Update implements Store.
func (m *Memory) Update(ctx context.Context, fn func(Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.writer.Lock()
	defer m.writer.Unlock()
	snap, err := m.snapshot()
	if err != nil {
		return err
	}
	if err := fn(&memTx{buckets: snap, writable: true}); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errClosed
	}
	m.buckets = snap
	return nil
}

// View implements Store.
func (m *Memory) View(ctx context.Context, fn func(Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	snap, err := m.snapshot()
	if err != nil {
		return err
	}
	return fn(&memTx{buckets: snap})
}

// Close implements Store: the state is gone.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed, m.buckets = true, nil
	return nil
}

type memTx struct {
	buckets  map[string]*btree.BTreeG[memEntry]
	writable bool
}

func (t *memTx) bucket(name string, create bool) (*btree.BTreeG[memEntry], error) {
	if err := checkBucket(name); err != nil {
		return nil, err
	}
	b := t.buckets[name]
	if b == nil && create {
		b = btree.NewG(32, memLess)
		t.buckets[name] = b
	}
	return b, nil
}

func (t *memTx) Get(bucket string, key []byte) ([]byte, error) {
	b, err := t.bucket(bucket, false)
	if err != nil || b == nil {
		return nil, err
	}
	e, ok := b.Get(memEntry{key: string(key)})
	if !ok {
		return nil, nil
	}
	return e.value, nil
}

func (t *memTx) Put(bucket string, key, value []byte) error {
	if !t.writable {
		return ErrReadOnly
	}
	b, err := t.bucket(bucket, true)
	if err != nil {
		return err
	}
	b.ReplaceOrInsert(memEntry{key: string(key), value: bytes.Clone(value)})
	return nil
}

func (t *memTx) Delete(bucket string, key []byte) error {
	if !t.writable {
		return ErrReadOnly
	}
	b, err := t.bucket(bucket, false)
	if err != nil || b == nil {
		return err
	}
	b.Delete(memEntry{key: string(key)})
	if b.Len() == 0 {
		delete(t.buckets, bucket)
	}
	return nil
}

func (t *memTx) Scan(bucket string, prefix []byte, fn func(key, value []byte) error) error {
	return t.scan(bucket, prefix, func(k string) bool { return len(k) >= len(prefix) && k[:len(prefix)] == string(prefix) }, fn)
}

func (t *memTx) ScanFrom(bucket string, from []byte, fn func(key, value []byte) error) error {
	return t.scan(bucket, from, func(string) bool { return true }, fn)
}

// scan collects first: fn may write to other buckets, and a B-tree must
// not change while it is iterated.
func (t *memTx) scan(bucket string, from []byte, in func(string) bool, fn func(key, value []byte) error) error {
	b, err := t.bucket(bucket, false)
	if err != nil || b == nil {
		return err
	}
	var hits []memEntry
	b.AscendGreaterOrEqual(memEntry{key: string(from)}, func(e memEntry) bool {
		if !in(e.key) {
			return false
		}
		hits = append(hits, e)
		return true
	})
	for _, e := range hits {
		if err := fn([]byte(e.key), e.value); err != nil {
			if errors.Is(err, ErrStop) {
				return nil
			}
			return err
		}
	}
	return nil
}

func (t *memTx) Count(bucket string) (int, error) {
	b, err := t.bucket(bucket, false)
	if err != nil || b == nil {
		return 0, err
	}
	return b.Len(), nil
}

func (t *memTx) Buckets() ([]string, error) {
	names := make([]string, 0, len(t.buckets))
	for name, b := range t.buckets {
		if b.Len() > 0 {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names, nil
}
