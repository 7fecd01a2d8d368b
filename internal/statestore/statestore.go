// Package statestore keeps the state of stateful processors (cdc_join) on
// disk: buckets of keys and values, changed only by atomic transactions
// that are synced to disk before they return, so that a batch's state is
// durable before any offset of that batch can be committed.
//
// The Store interface is what the join logic sees. The embedded
// implementations are a log-structured store (OpenLog: an append-only log
// with an in-memory index, one fsync per commit) and bbolt (Open), which
// OpenLog migrates from; a store shared by several odsflow instances must
// implement the same interface.
package statestore

import (
	"context"
	"errors"
)

// Store is a transactional key-value store of named buckets.
type Store interface {
	// Update runs fn in one read-write transaction. When Update returns
	// nil, every change fn made is on disk (synced); when fn or the commit
	// fails, none is. Reads inside fn see fn's own writes.
	Update(ctx context.Context, fn func(Tx) error) error
	// View runs fn in a read-only transaction over a consistent snapshot.
	View(ctx context.Context, fn func(Tx) error) error
	// Close releases the store (and its lock).
	Close() error
}

// Tx is a transaction. Keys and values it returns are valid only until
// the transaction ends: copy them to keep them.
type Tx interface {
	// Get returns the value of key, or nil when absent.
	Get(bucket string, key []byte) ([]byte, error)
	// Put sets key to value. A read-only transaction returns ErrReadOnly.
	Put(bucket string, key, value []byte) error
	// Delete removes key; removing an absent key is not an error.
	Delete(bucket string, key []byte) error
	// Scan calls fn for each key starting with prefix, in key order, until
	// fn returns an error (returned by Scan) or ErrStop (Scan returns nil).
	// fn must not change the bucket being scanned.
	Scan(bucket string, prefix []byte, fn func(key, value []byte) error) error
	// ScanFrom is Scan over every key ≥ from, in key order.
	ScanFrom(bucket string, from []byte, fn func(key, value []byte) error) error
	// Count returns the number of keys in bucket.
	Count(bucket string) (int, error)
	// Buckets returns the names of the buckets, sorted.
	Buckets() ([]string, error)
}

// ErrStop ends a Scan early without error.
var ErrStop = errors.New("stop scan")

// ErrReadOnly is returned by writes in a View.
var ErrReadOnly = errors.New("statestore: write in a read-only transaction")
