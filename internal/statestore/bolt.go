package statestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterr "go.etcd.io/bbolt/errors"
)

// FileName is the store's file inside its directory.
const FileName = "state.db"

// FormatVersion is the on-disk format this build writes. Open refuses a
// directory written in a format it cannot read rather than misreading it.
//
// Format 2: cdc_join stores row states in a binary encoding (format 1:
// JSON), which a format-1 build would take for corruption. This build still
// reads format 1's JSON values, so it opens a format-1 store and re-stamps
// it 2 (values are rewritten as their rows change); from then on a format-1
// build refuses the directory instead of failing on every row.
const FormatVersion = 2

// upgradableFormat is the older format this build reads and re-stamps.
const upgradableFormat = 1

const (
	fileName   = FileName
	metaBucket = "_meta"
	formatKey  = "format"
)

// Bolt is a Store in one bbolt file under a directory. bbolt holds an
// exclusive lock on the file for as long as the store is open, so a second
// process using the same directory fails at once instead of corrupting it.
type Bolt struct {
	db  *bolt.DB
	dir string
}

// Open opens (creating if needed) the store in dir.
func Open(dir string) (*Bolt, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("state dir %s: %w", dir, err)
	}
	// A directory a LogStore owns (it may hold the migrated bbolt file
	// under another name): bbolt would create an empty store beside it.
	if _, err := os.Stat(filepath.Join(dir, formatFileName)); err == nil {
		return nil, fmt.Errorf("state dir %s holds a log store (it has a %s file): open it with OpenLog", dir, formatFileName)
	}
	path := filepath.Join(dir, fileName)
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:      200 * time.Millisecond, // the lock: fail fast, not hang
		FreelistType: bolt.FreelistMapType,   // large stores free pages faster
	})
	if errors.Is(err, bolterr.ErrTimeout) {
		return nil, fmt.Errorf("state dir %s is locked by another process (is another odsflow running with the same state_dir?)", dir)
	}
	if err != nil {
		return nil, fmt.Errorf("opening state %s: %w", path, err)
	}
	s := &Bolt{db: db, dir: dir}
	if err := s.checkFormat(); err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

// checkFormat stamps a new store with FormatVersion, re-stamps a store of
// the upgradable format, and refuses one stamped otherwise.
func (s *Bolt) checkFormat() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket([]byte(metaBucket))
		if meta == nil {
			hasData := false
			_ = tx.ForEach(func([]byte, *bolt.Bucket) error { hasData = true; return nil })
			if hasData {
				return fmt.Errorf("state dir %s holds data without a format stamp: not an odsflow state store", s.dir)
			}
			b, err := tx.CreateBucket([]byte(metaBucket))
			if err != nil {
				return fmt.Errorf("stamping state format: %w", err)
			}
			return b.Put([]byte(formatKey), []byte(strconv.Itoa(FormatVersion)))
		}
		got := string(meta.Get([]byte(formatKey)))
		if got == strconv.Itoa(upgradableFormat) {
			if err := meta.Put([]byte(formatKey), []byte(strconv.Itoa(FormatVersion))); err != nil {
				return fmt.Errorf("upgrading state format %s to %d: %w", got, FormatVersion, err)
			}
			return nil
		}
		if got != strconv.Itoa(FormatVersion) {
			return fmt.Errorf("state dir %s has on-disk format %q; this odsflow reads formats %d and %d (rebuild the state by replaying the topics into a new state_dir)", s.dir, got, upgradableFormat, FormatVersion)
		}
		return nil
	})
}

// Update implements Store. bbolt syncs the file on every commit.
func (s *Bolt) Update(ctx context.Context, fn func(Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error { return fn(boltTx{tx}) })
}

// View implements Store.
func (s *Bolt) View(ctx context.Context, fn func(Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.View(func(tx *bolt.Tx) error { return fn(boltTx{tx}) })
}

// Close implements Store.
func (s *Bolt) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("closing state %s: %w", s.dir, err)
	}
	return nil
}

// SizeOnDisk is the size of the store's file in bytes.
func (s *Bolt) SizeOnDisk() (int64, error) {
	fi, err := os.Stat(s.db.Path())
	if err != nil {
		return 0, fmt.Errorf("state size: %w", err)
	}
	return fi.Size(), nil
}

type boltTx struct{ tx *bolt.Tx }

func checkBucket(name string) error {
	if name == "" || name == metaBucket {
		return fmt.Errorf("statestore: bucket name %q is reserved", name)
	}
	return nil
}

func (t boltTx) bucket(name string, create bool) (*bolt.Bucket, error) {
	if err := checkBucket(name); err != nil {
		return nil, err
	}
	if b := t.tx.Bucket([]byte(name)); b != nil || !create {
		if b != nil && t.tx.Writable() {
			b.FillPercent = fillPercent
		}
		return b, nil
	}
	if !t.tx.Writable() {
		return nil, ErrReadOnly
	}
	b, err := t.tx.CreateBucket([]byte(name))
	if err != nil {
		return nil, fmt.Errorf("creating bucket %s: %w", name, err)
	}
	b.FillPercent = fillPercent
	return b, nil
}

// fillPercent is how full bbolt packs a page when it splits one (its
// default is 0.5). The state's keys are mostly updated in place, and the
// inserts come in ascending runs (ids in a snapshot, new rows): at 0.5
// every split left a half-empty page behind for good. 0.9 keeps a tenth
// for values that grow. Measured with BenchmarkCDCJoin (1M accounts): the
// file shrinks from 753 to 474 MB, so a random update dirties fewer branch
// pages and a batch commits ~30% faster. It only shapes new splits:
// existing files need no migration.
const fillPercent = 0.9

func (t boltTx) Get(bucket string, key []byte) ([]byte, error) {
	b, err := t.bucket(bucket, false)
	if err != nil || b == nil {
		return nil, err
	}
	return b.Get(key), nil
}

func (t boltTx) Put(bucket string, key, value []byte) error {
	if !t.tx.Writable() {
		return ErrReadOnly
	}
	b, err := t.bucket(bucket, true)
	if err != nil {
		return err
	}
	if err := b.Put(key, value); err != nil {
		return fmt.Errorf("put %s/%q: %w", bucket, key, err)
	}
	return nil
}

func (t boltTx) Delete(bucket string, key []byte) error {
	if !t.tx.Writable() {
		return ErrReadOnly
	}
	b, err := t.bucket(bucket, false)
	if err != nil || b == nil {
		return err
	}
	if err := b.Delete(key); err != nil {
		return fmt.Errorf("delete %s/%q: %w", bucket, key, err)
	}
	return nil
}

func (t boltTx) Scan(bucket string, prefix []byte, fn func(key, value []byte) error) error {
	b, err := t.bucket(bucket, false)
	if err != nil || b == nil {
		return err
	}
	c := b.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if err := fn(k, v); err != nil {
			if errors.Is(err, ErrStop) {
				return nil
			}
			return err
		}
	}
	return nil
}

func (t boltTx) Count(bucket string) (int, error) {
	b, err := t.bucket(bucket, false)
	if err != nil || b == nil {
		return 0, err
	}
	return b.Stats().KeyN, nil
}

func (t boltTx) Buckets() ([]string, error) {
	var names []string
	err := t.tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
		if string(name) != metaBucket {
			names = append(names, string(name))
		}
		return nil
	})
	return names, err
}

func (t boltTx) ScanFrom(bucket string, from []byte, fn func(key, value []byte) error) error {
	b, err := t.bucket(bucket, false)
	if err != nil || b == nil {
		return err
	}
	c := b.Cursor()
	for k, v := c.Seek(from); k != nil; k, v = c.Next() {
		if err := fn(k, v); err != nil {
			if errors.Is(err, ErrStop) {
				return nil
			}
			return err
		}
	}
	return nil
}
