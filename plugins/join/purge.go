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
	var buckets, gone []string
	if err := j.store.View(ctx, func(tx statestore.Tx) error {
		names, err := tx.Buckets()
		for _, n := range names {
			switch {
			case strings.HasPrefix(n, "row."):
				buckets = append(buckets, n)
			case strings.HasPrefix(n, "gone."):
				gone = append(gone, n)
			}
		}
		return err
	}); err != nil {
		return 0, err
	}
	total := 0
	for _, b := range gone {
		n, err := j.purgeGone(ctx, b, now)
		total += n
		if err != nil {
			return total, err
		}
	}
	for _, b := range buckets {
		t := &table{name: strings.TrimPrefix(b, "row.")}
		var after []byte
		for {
			var expired [][]byte
			var index []write // index entries of expired rows
			var last []byte
			done := true
			err := j.store.Update(ctx, func(tx statestore.Tx) error {
				expired, index, last, done = expired[:0], index[:0], nil, true
				st := &state{tx: tx, now: now, retention: j.retention}
				seen := 0
				err := tx.ScanFrom(b, after, func(k, v []byte) error {
					if seen++; seen > purgeChunk {
						done = false
						return statestore.ErrStop
					}
					last = append(last[:0], k...)
					r, err := st.row(t, string(k))
					if err != nil {
						return err
					}
					if r == nil { // row() hides expired tombstones
						expired = append(expired, append([]byte{}, k...))
						// A truncated row still has its index entries.
						raw, err := decodeRow(v)
						if err != nil {
							return fmt.Errorf("state of %s %s is corrupt: %w", t.name, k, err)
						}
						for rel, parent := range raw.Parents {
							index = append(index, write{bucket: idxBucketOf(rel), key: pair(parent, string(k))})
						}
					}
					return nil
				})
				if err != nil {
					return err
				}
				for _, k := range expired {
					if err := tx.Delete(b, k); err != nil {
						return err
					}
					// Its replay record: a change this old is not replayed.
					if err := tx.Delete(replayBucket(t), k); err != nil {
						return err
					}
				}
				for _, w := range index {
					if err := tx.Delete(w.bucket, w.key); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return total, err
			}
			total += len(expired)
			if done {
				break
			}
			// Resume just after the last key seen.
			after = append(append([]byte{}, last...), 0)
		}
	}
	return total, nil
}

// purgeGone deletes the deleted-child entries of bucket (goneBucket) older
// than the retention, in chunks.
func (j *join) purgeGone(ctx context.Context, bucket string, now time.Time) (int, error) {
	horizon := now.Add(-j.retention).Unix()
	total := 0
	var after []byte
	for {
		var expired [][]byte
		var last []byte
		done := true
		err := j.store.Update(ctx, func(tx statestore.Tx) error {
			expired, last, done = expired[:0], nil, true
			seen := 0
			err := tx.ScanFrom(bucket, after, func(k, v []byte) error {
				if seen++; seen > purgeChunk {
					done = false
					return statestore.ErrStop
				}
				last = append(last[:0], k...)
				_, at, err := parseGone(v)
				if err != nil {
					return fmt.Errorf("%s %s: %w", bucket, k, err)
				}
				if at < horizon {
					expired = append(expired, append([]byte{}, k...))
				}
				return nil
			})
			if err != nil {
				return err
			}
			for _, k := range expired {
				if err := tx.Delete(bucket, k); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return total, err
		}
		total += len(expired)
		if done {
			return total, nil
		}
		after = append(append([]byte{}, last...), 0)
	}
}
