package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	bolt "go.etcd.io/bbolt"
	bolterr "go.etcd.io/bbolt/errors"
)

// kv is the part of a state store the join needs: atomic, synced write
// transactions that read their own writes, read-only views, point reads
// and prefix scans. Buckets are key prefixes (bbolt: real buckets).
type kv interface {
	// Update runs fn in one transaction, durable (fsynced) when it returns.
	Update(fn func(tx) error) error
	// View runs fn over a consistent read-only snapshot.
	View(fn func(tx) error) error
	Close() error
}

type tx interface {
	Get(bucket string, key []byte) ([]byte, error) // nil when absent; valid until fn returns
	Put(bucket string, key, value []byte) error
	Delete(bucket string, key []byte) error
	Scan(bucket string, prefix []byte, fn func(k, v []byte) error) error
}

var errReadOnly = errors.New("write in a read-only transaction")

// ---- bbolt, configured as internal/statestore configures it ----

type boltKV struct{ db *bolt.DB }

func openBolt(dir string) (kv, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	db, err := bolt.Open(filepath.Join(dir, "state.db"), 0o600, &bolt.Options{
		Timeout:      200 * time.Millisecond,
		FreelistType: bolt.FreelistMapType,
	})
	if errors.Is(err, bolterr.ErrTimeout) {
		return nil, fmt.Errorf("%s is locked by another process", dir)
	}
	if err != nil {
		return nil, err
	}
	return &boltKV{db: db}, nil
}

func (s *boltKV) Update(fn func(tx) error) error {
	return s.db.Update(func(t *bolt.Tx) error { return fn(boltTx{t}) })
}

func (s *boltKV) View(fn func(tx) error) error {
	return s.db.View(func(t *bolt.Tx) error { return fn(boltTx{t}) })
}

func (s *boltKV) Close() error { return s.db.Close() }

type boltTx struct{ t *bolt.Tx }

func (t boltTx) bucket(name string, create bool) (*bolt.Bucket, error) {
	b := t.t.Bucket([]byte(name))
	if b == nil && create {
		var err error
		if b, err = t.t.CreateBucket([]byte(name)); err != nil {
			return nil, err
		}
	}
	if b != nil && t.t.Writable() {
		b.FillPercent = 0.9 // as internal/statestore
	}
	return b, nil
}

func (t boltTx) Get(bucket string, key []byte) ([]byte, error) {
	b, err := t.bucket(bucket, false)
	if err != nil || b == nil {
		return nil, err
	}
	return b.Get(key), nil
}

func (t boltTx) Put(bucket string, key, value []byte) error {
	if !t.t.Writable() {
		return errReadOnly
	}
	b, err := t.bucket(bucket, true)
	if err != nil {
		return err
	}
	return b.Put(key, value)
}

func (t boltTx) Delete(bucket string, key []byte) error {
	b, err := t.bucket(bucket, false)
	if err != nil || b == nil {
		return err
	}
	return b.Delete(key)
}

func (t boltTx) Scan(bucket string, prefix []byte, fn func(k, v []byte) error) error {
	b, err := t.bucket(bucket, false)
	if err != nil || b == nil {
		return err
	}
	c := b.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if err := fn(k, v); err != nil {
			return err
		}
	}
	return nil
}

// ---- pebble ----

type pebbleKV struct{ db *pebble.DB }

// memTableSize: big enough that a flush is not a per-second event.
const memTableSize = 16 << 20

// pebbleOptions: a bounded block cache, bloom filters for point reads on
// every level. Pebble reserves its memtables' memory in the block cache, so
// the cache is blockCacheMB plus two memtables; a 64 MB cache with 32 MB
// memtables cached nothing at all.
func pebbleOptions(blockCacheMB int, compress bool) *pebble.Options {
	cache := pebble.NewCache(int64(blockCacheMB)<<20 + 2*memTableSize)
	o := &pebble.Options{
		Cache:                       cache,
		MemTableSize:                memTableSize,
		MemTableStopWritesThreshold: 4,
		FormatMajorVersion:          pebble.FormatNewest,
		Logger:                      quietLogger{},
	}
	for i := range o.Levels {
		o.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	if !compress { // a block cache miss then costs a read, no decompression
		o.ApplyCompressionSettings(func() pebble.DBCompressionSettings { return pebble.DBCompressionNone })
	}
	return o
}

func openPebble(dir string, cacheMB int, compress bool) (kv, error) {
	o := pebbleOptions(cacheMB, compress)
	defer o.Cache.Unref() // the DB holds its own reference
	db, err := pebble.Open(dir, o)
	if err != nil {
		return nil, err
	}
	return &pebbleKV{db: db}, nil
}

func pkey(bucket string, key []byte) []byte {
	k := make([]byte, 0, len(bucket)+1+len(key))
	k = append(k, bucket...)
	k = append(k, 0)
	return append(k, key...)
}

// Update: an indexed batch reads its own writes and commits atomically
// with one WAL fsync.
func (s *pebbleKV) Update(fn func(tx) error) error {
	b := s.db.NewIndexedBatch()
	defer b.Close()
	if err := fn(pebbleTx{r: b, b: b}); err != nil {
		return err
	}
	return b.Commit(pebble.Sync)
}

func (s *pebbleKV) View(fn func(tx) error) error {
	snap := s.db.NewSnapshot()
	defer snap.Close()
	return fn(pebbleTx{r: snap})
}

func (s *pebbleKV) Close() error { return s.db.Close() }

type pebbleTx struct {
	r pebble.Reader
	b *pebble.Batch // nil: read-only
}

func (t pebbleTx) Get(bucket string, key []byte) ([]byte, error) {
	v, closer, err := t.r.Get(pkey(bucket, key))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := append([]byte{}, v...) // pebble's slice is valid only until Close
	return out, closer.Close()
}

func (t pebbleTx) Put(bucket string, key, value []byte) error {
	if t.b == nil {
		return errReadOnly
	}
	return t.b.Set(pkey(bucket, key), value, nil)
}

func (t pebbleTx) Delete(bucket string, key []byte) error {
	if t.b == nil {
		return errReadOnly
	}
	return t.b.Delete(pkey(bucket, key), nil)
}

func (t pebbleTx) Scan(bucket string, prefix []byte, fn func(k, v []byte) error) error {
	lower := pkey(bucket, prefix)
	upper := append(append([]byte{}, lower...), 0xff) // keys never hold 0xff after a prefix here
	it, err := t.r.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return err
	}
	n := len(bucket) + 1
	for ok := it.First(); ok; ok = it.Next() {
		if err := fn(it.Key()[n:], it.Value()); err != nil {
			_ = it.Close()
			return err
		}
	}
	return it.Close()
}

// quietLogger keeps pebble's informational logs off the report.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any)      {}
func (quietLogger) Errorf(f string, a ...any) { fmt.Fprintf(os.Stderr, "pebble: "+f+"\n", a...) }
func (quietLogger) Fatalf(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "pebble: "+f+"\n", a...)
	os.Exit(1)
}

// dirSize is the bytes of every file under dir.
func dirSize(dir string) (int64, int, error) {
	var n int64
	var files int
	err := filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			n += fi.Size()
			files++
		}
		return nil
	})
	return n, files, err
}
