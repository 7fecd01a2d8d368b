package join

import (
	"context"

	"github.com/odsflow/odsflow/internal/statestore"
)

// Reading and decoding the rows a batch needs is most of what its
// sequential phase would otherwise spend, and needs no order: phase 1
// reads them (in read transactions, on every core) before the batch's
// transaction starts. The batch's transaction then reads a key from the
// prefetched values unless the batch itself has written it since (state
// tracks its writes), in which case it reads it from the transaction. Only
// this join writes its store while it holds the batch lock; the purge loop
// may run in between, but only removes what row() already hides (expired
// tombstones, truncated rows and their index entries), so a prefetched
// value of such a key reads the same.

// prefetched holds what phase 1 read: cacheKey → decoded row or raw value;
// a nil value: the key is absent.
type prefetched struct {
	rows map[string]*rowState
	raw  map[string][]byte
}

func cacheKey(bucket, key string) string { return bucket + "\x00" + key }

type prefetchHit struct {
	key   string
	row   *rowState // for row buckets
	raw   []byte    // for others
	isRow bool
}

// prefetch reads, for every prepared message, its key's row and replay
// record (stored tables), and the rows of its parents. A read that fails
// is left out: the transaction then reads that key itself.
func (j *join) prefetch(ctx context.Context, preps []*prepared) *prefetched {
	chunks := make([][]prefetchHit, 0, 4)
	results := make(chan []prefetchHit, len(preps)/parallelMin+1)
	parallelChunks(len(preps), func(start, end int) {
		// A message reads its row, its replay record and its parent or
		// children: one allocation for a chunk's usual count.
		hits := make([]prefetchHit, 0, 3*(end-start))
		_ = j.store.View(ctx, func(tx statestore.Tx) error {
			for _, p := range preps[start:end] {
				hits = j.prefetchOne(tx, p, hits)
			}
			return nil
		})
		results <- hits
	})
	close(results)
	n := 0
	for h := range results {
		chunks = append(chunks, h)
		n += len(h)
	}
	pre := &prefetched{rows: make(map[string]*rowState, n), raw: map[string][]byte{}}
	for _, hits := range chunks {
		for _, h := range hits {
			if h.isRow {
				pre.rows[h.key] = h.row
			} else {
				pre.raw[h.key] = h.raw
			}
		}
	}
	return pre
}

func (j *join) prefetchOne(tx statestore.Tx, p *prepared, hits []prefetchHit) []prefetchHit {
	if p.err != nil || p.passthrough || p.tombstone || p.op == "t" {
		return hits
	}
	readRow := func(t *table, key string) {
		ck := cacheKey(rowBucket(t), key)
		if r, ok := j.rows.get(ck); ok {
			hits = append(hits, prefetchHit{key: ck, row: r, isRow: true})
			return
		}
		b, err := tx.Get(rowBucket(t), []byte(key))
		if err != nil {
			return
		}
		var r *rowState
		if b != nil {
			if r, err = decodeRow(b); err != nil {
				return // the transaction reads it again, and reports it
			}
		}
		j.rows.put(ck, r)
		hits = append(hits, prefetchHit{key: ck, row: r, isRow: true})
	}
	if p.t.stored {
		readRow(p.t, p.key)
		if b, err := tx.Get(replayBucket(p.t), []byte(p.key)); err == nil {
			hits = append(hits, prefetchHit{key: cacheKey(replayBucket(p.t), p.key), raw: append([]byte(nil), b...)})
		}
	}
	for i, r := range j.relations {
		if r.child == p.t && !p.deleted {
			readRow(r.parent, p.links[i].parentKey)
		}
		if r.parent == p.t && r.kind == "latest_state" {
			// A parent change reads every child it has.
			prefix := pair(p.key, "")
			_ = tx.Scan(idxBucket(r), prefix, func(k, _ []byte) error {
				readRow(r.child, string(k[len(prefix):]))
				return nil
			})
		}
	}
	return hits
}

// get reads a raw value: prefetched, unless the batch wrote the key.
func (s *state) get(bucket, key string) ([]byte, error) {
	if s.pre != nil {
		ck := cacheKey(bucket, key)
		if _, w := s.written[ck]; !w {
			if v, ok := s.pre.raw[ck]; ok {
				return v, nil
			}
		}
	}
	return s.tx.Get(bucket, []byte(key))
}

// cachedRow returns a copy of a prefetched row (nil: absent), unless the
// batch wrote the key. The copy keeps the prefetched one as read: a batch
// applied again (after a mapping failed) must start from it.
func (s *state) cachedRow(bucket, key string) (r *rowState, ok bool) {
	if s.pre == nil {
		return nil, false
	}
	ck := cacheKey(bucket, key)
	if _, w := s.written[ck]; w {
		return nil, false
	}
	cached, ok := s.pre.rows[ck]
	if !ok || cached == nil {
		return nil, ok
	}
	cp := *cached
	return &cp, true
}
