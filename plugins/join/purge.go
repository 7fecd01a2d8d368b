package join

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/odsflow/odsflow/internal/statestore"
)

// purgeChunk bounds one purge transaction, so that a purge never holds the
// store's writer lock long enough to stall batches noticeably.
const purgeChunk = 10_000

// purgeLoop removes tombstones older than the retention: once at start,
// then every quarter of the retention (at most hourly). It is owned by the
// join and stops when ctx ends (Close).
func (j *join) purgeLoop(ctx context.Context) {
	every := j.retention / 4
	if every > time.Hour {
		every = time.Hour
	}
	for {
		n, err := j.purge(ctx, time.Now())
		switch {
		case err != nil && ctx.Err() == nil:
			j.log.Errorf("cdc_join: purging expired tombstones: %v", err)
		case n > 0:
			j.log.Infof("cdc_join: purged %d tombstones older than %v", n, j.retention)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// purge deletes every tombstone that expired by now, in chunks, and
// returns how many it deleted.
func (j *join) purge(ctx context.Context, now time.Time) (int, error) {
	var buckets []string
	if err := j.store.View(ctx, func(tx statestore.Tx) error {
		names, err := tx.Buckets()
		for _, n := range names {
			if strings.HasPrefix(n, "row.") || strings.HasPrefix(n, "gone.") {
				buckets = append(buckets, n)
			}
		}
		return err
	}); err != nil {
		return 0, err
	}
	horizon := now.Add(-j.retention).Unix()
	total := 0
	var unreadable skipped
	for _, b := range buckets {
		var expired func(st *state, k, v []byte) ([]write, error)
		if strings.HasPrefix(b, "gone.") {
			// A deleted lookup child: forgotten after the retention.
			expired = func(_ *state, k, v []byte) ([]write, error) {
				_, at, err := parseGone(v)
				if err != nil {
					return nil, fmt.Errorf("%s %s: %w", b, k, err)
				}
				if at >= horizon {
					return nil, nil
				}
				return []write{{bucket: b, key: k}}, nil
			}
		} else {
			t := &table{name: strings.TrimPrefix(b, "row.")}
			expired = func(st *state, k, v []byte) ([]write, error) {
				r, err := st.row(t, string(k))
				if err != nil || r != nil { // row() hides expired tombstones
					return nil, err
				}
				// Its replay record (a change this old is not replayed), and
				// the index entries a truncated row still has.
				dels := []write{{bucket: b, key: k}, {bucket: replayBucket(t), key: k}}
				raw, err := decodeRow(v)
				if err != nil {
					return nil, fmt.Errorf("state of %s %s is corrupt: %w", t.name, k, err)
				}
				for rel, parent := range raw.Parents {
					dels = append(dels, write{bucket: idxBucketOf(rel), key: pair(parent, string(k))})
				}
				return dels, nil
			}
		}
		n, err := j.purgeBucket(ctx, b, now, expired, &unreadable)
		total += n
		if err != nil {
			return total, err
		}
	}
	if unreadable.n > 0 {
		return total, fmt.Errorf("%d state entries could not be read, and were kept (the others were purged): e.g. %w", unreadable.n, unreadable.first)
	}
	return total, nil
}

// skipped counts the entries a purge could not read: each is kept and
// reported, and the purge goes on with the others.
type skipped struct {
	n     int
	first error
}

// purgeBucket visits bucket's entries in chunks of purgeChunk, one store
// transaction each, deleting what expired returns for an expired entry
// (nil: keep it). It returns how many entries expired. An entry expired
// cannot read (corrupt) is kept and counted in unreadable: one must not
// stop the purge of everything after it.
func (j *join) purgeBucket(ctx context.Context, bucket string, now time.Time, expired func(st *state, k, v []byte) ([]write, error), unreadable *skipped) (int, error) {
	total := 0
	var after []byte
	for {
		var dels []write
		n := 0
		var last []byte
		done := true
		err := j.store.Update(ctx, func(tx statestore.Tx) error {
			dels, n, last, done = dels[:0], 0, nil, true
			st := &state{tx: tx, now: now, retention: j.retention}
			seen := 0
			err := tx.ScanFrom(bucket, after, func(k, v []byte) error {
				if seen++; seen > purgeChunk {
					done = false
					return statestore.ErrStop
				}
				last = append(last[:0], k...)
				d, err := expired(st, append([]byte{}, k...), v)
				if err != nil {
					if unreadable.first == nil {
						unreadable.first = err
					}
					unreadable.n++
					return nil
				}
				if len(d) > 0 {
					n++
					dels = append(dels, d...)
				}
				return nil
			})
			if err != nil {
				return err
			}
			for _, w := range dels {
				if err := tx.Delete(w.bucket, w.key); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return total, err
		}
		// The row cache must not keep what the store no longer holds: a
		// later truncation would make a purged row read as a fresh
		// tombstone with its old parents. No prefetch can put it back: its
		// read transaction and this commit exclude each other.
		j.rows.forget(func(yield func(string) bool) {
			for _, w := range dels {
				if !yield(cacheKey(w.bucket, string(w.key))) {
					return
				}
			}
		})
		total += n
		if done {
			return total, nil
		}
		// Resume just after the last key seen.
		after = append(append([]byte{}, last...), 0)
	}
}
