package join

import "fmt"

// Row states written by a batch are staged in memory rather than encoded
// and put one by one: later messages of the batch read them from there
// (no decoding), and flushRows encodes the last state of each key on every
// core and puts it once.

type stagedRow struct {
	src int // the message that wrote it last
	// bodySrc: the message whose body the row holds (-1: a body read from
	// the state, which encoded before): an encoding failure is its fault.
	bodySrc int
	bucket  string
	key     string
	row     *rowState
	value   []byte
	err     error
}

func (s *state) stageRow(src int, bucket, key string, r *rowState, ownBody bool) {
	if s.staged == nil {
		s.staged = map[string]*stagedRow{}
	}
	ck := cacheKey(bucket, key)
	if st := s.staged[ck]; st != nil {
		st.src, st.row = src, r
		if ownBody {
			st.bodySrc = src
		}
		return
	}
	st := &stagedRow{src: src, bodySrc: -1, bucket: bucket, key: key, row: r}
	if ownBody {
		st.bodySrc = src
	}
	s.staged[ck] = st
	s.stagedOrder = append(s.stagedOrder, st)
}

// stagedRow returns a copy of the row state the batch wrote for key (the
// copy: callers replace its maps and fields, never the staged one's).
func (s *state) stagedRow(bucket, key string) (*rowState, bool) {
	st := s.staged[cacheKey(bucket, key)]
	if st == nil {
		return nil, false
	}
	cp := *st.row
	return &cp, true
}

// flushRows encodes the staged row states (in parallel) and puts them in
// the transaction. It returns, per source message, the encoding errors:
// such a message must be errored and the batch applied again without it.
func (s *state) flushRows() (map[int]error, error) {
	parallel(len(s.stagedOrder), func(i int) {
		st := s.stagedOrder[i]
		st.value, st.err = encodeRow(st.row)
	})
	var failed map[int]error
	for _, st := range s.stagedOrder {
		if st.err != nil {
			if failed == nil {
				failed = map[int]error{}
			}
			blame := st.bodySrc
			if blame < 0 {
				blame = st.src
			}
			failed[blame] = fmt.Errorf("cdc_join: encoding the state of %s %s: %w", st.bucket, st.key, st.err)
		}
	}
	if failed != nil {
		return failed, nil
	}
	for _, st := range s.stagedOrder {
		if err := s.tx.Put(st.bucket, []byte(st.key), st.value); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// writtenKeys yields the cacheKey of every key the batch wrote: staged row
// states and the other writes.
func (s *state) writtenKeys(yield func(string) bool) {
	for ck := range s.staged {
		if !yield(ck) {
			return
		}
	}
	for ck := range s.written {
		if !yield(ck) {
			return
		}
	}
}
