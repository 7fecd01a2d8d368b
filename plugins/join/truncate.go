package join

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/redpanda-data/benthos/v4/public/service"
)

// A TRUNCATE of a source table (cdc_op t, an empty body) empties it. The
// join keeps it as one entry per table, the truncation's version and time,
// rather than rewriting every row: a stored row of that table whose
// version is not newer reads as a tombstone of the truncation (row), and
// the purge removes such rows, with their index entries, once the
// truncation is older than the tombstone retention. The target rows it
// implies go with one message per relation, ods_op "truncate", whose body
// holds the truncated side's version column: the ODS deletes the rows whose
// version there is not newer (rows of changes that came after the
// truncation stay, whichever partition they came through).

func truncBucket() string { return "truncated" }

// truncation is a table's latest truncation.
type truncation struct {
	version int64
	at      int64 // unix seconds
}

func encodeTruncation(tr truncation) []byte {
	b := binary.AppendVarint(nil, tr.version)
	return binary.AppendVarint(b, tr.at)
}

func decodeTruncation(b []byte) (truncation, error) {
	v, n := binary.Varint(b)
	if n <= 0 {
		return truncation{}, errors.New("bad version")
	}
	at, m := binary.Varint(b[n:])
	if m <= 0 || n+m != len(b) {
		return truncation{}, errors.New("bad time")
	}
	return truncation{version: v, at: at}, nil
}

// truncation returns t's latest truncation, or nil; read once per batch.
func (s *state) truncation(t *table) (*truncation, error) {
	if tr, ok := s.truncs[t.name]; ok {
		return tr, nil
	}
	if s.truncs == nil {
		s.truncs = map[string]*truncation{}
	}
	b, err := s.tx.Get(truncBucket(), []byte(t.name))
	if err != nil {
		return nil, err
	}
	var tr *truncation
	if b != nil {
		got, err := decodeTruncation(b)
		if err != nil {
			return nil, fmt.Errorf("truncation of %s is corrupt: %w", t.name, err)
		}
		tr = &got
	}
	s.truncs[t.name] = tr
	return tr, nil
}

// truncate applies a TRUNCATE of t at version.
func (j *join) truncate(s *state, src int, msg *service.Message, t *table, version int64) ([]output, error) {
	s.counts.truncates++
	s.warnings = append(s.warnings, fmt.Sprintf("cdc_join: TRUNCATE of %s at version %d: its rows up to that version are deleted, with the target rows they imply", t.name, version))
	c := &change{src: src}
	var newer *truncation
	cur, err := s.truncation(t)
	if err != nil {
		return nil, err
	}
	// A replayed (or older) truncation changes nothing, but its outputs
	// are emitted again: they may have been lost.
	if cur == nil || version > cur.version {
		tr := &truncation{version: version, at: s.now.Unix()}
		c.writes = append(c.writes, write{bucket: truncBucket(), key: []byte(t.name), value: encodeTruncation(*tr)})
		newer = tr
	}
	for _, r := range j.relations {
		body := map[string]any{}
		switch {
		case r.child == t:
			if r.childVersionColumn != "" {
				body[r.childVersionColumn] = version
			}
			if r.kind == "lookup" {
				if err := dropHeldUpTo(s, c, r, version); err != nil {
					return nil, err
				}
			}
		case r.parent == t && r.kind == "latest_state":
			if r.parentVersionColumn != "" {
				body[r.parentVersionColumn] = version
			}
		default:
			continue // a lookup's rows do not go with their parents
		}
		c.emit(msg, r.name, "truncate", body)
	}
	if err := applyWrites(s, c); err != nil {
		return nil, err
	}
	if newer != nil {
		s.truncs[t.name] = newer // the batch's later messages see it
	}
	return c.out, nil
}

// dropHeldUpTo drops the held events of a truncated lookup child that are
// not newer than the truncation: their rows are gone from the source.
func dropHeldUpTo(s *state, c *change, r *relation, version int64) error {
	return s.tx.Scan(heldBucket(r), nil, func(k, v []byte) error {
		var h heldEvent
		if err := decodeJSON(v, &h); err != nil {
			return fmt.Errorf("held event %q of %s is corrupt: %w", k, r.name, err)
		}
		if h.Version <= version {
			c.del(heldBucket(r), append([]byte{}, k...))
			if i := bytes.IndexByte(k, 0); i >= 0 {
				c.del(heldKeyBucket(r), append([]byte{}, k[i+1:]...))
			}
		}
		return nil
	})
}
