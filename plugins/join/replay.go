package join

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"
)

// A batch's state is written before its rows reach the output, so a crash
// in between makes Kafka deliver the batch again while the state already
// holds its changes. Upserts are recomputed from the state on that replay,
// but what the change took away cannot be: the deletes it emitted (the row
// it deleted is gone from the state) and the held lookup events it
// released (no longer held). Each stored row therefore keeps, beside its
// state, a replay record of those outputs of its last few changes, each
// under its version; a change delivered again emits what its version
// recorded, even when a later change of the key (in the same lost batch)
// has made it stale. Deletes carry the row's versions (child_version_column,
// parent_version_column), so a delete emitted again cannot take a row that a
// later change wrote: the ODS refuses a delete older than its row.
//
// Which records a replay can need: those of the changes whose offsets were
// not committed when the process died, that is of the last moments of
// processing before it did (offsets are committed every second or so). A
// record is therefore kept for replayWindow of processing time after it was
// written, and the last replayMinDepth records of a key are kept whatever
// their age; replayMaxDepth bounds a key that changes without pause. Records
// are only pruned when the key records a new one, which a replay does after
// the older changes of the same lost batches have been replayed.

const (
	replayWindow   = 10 * time.Minute
	replayMinDepth = 8
	replayMaxDepth = 1000
)

func replayBucket(t *table) string { return "replay." + t.name }

// replayEntry holds the outputs of one change that cannot be recomputed.
type replayEntry struct {
	Version int64       `json:"v"`
	At      int64       `json:"t,omitempty"` // unix seconds it was recorded
	Out     []replayOut `json:"o"`
}

// replayOut is one such output.
type replayOut struct {
	Relation string `json:"r"`
	// Delete: the target row's key columns (JSON).
	Delete string `json:"d,omitempty"`
	// A released lookup child: its version and body, and the parent's it
	// was joined with (the parent may be gone when the release is
	// replayed).
	Version       int64          `json:"v,omitempty"`
	Body          map[string]any `json:"b,omitempty"`
	ParentVersion int64          `json:"pv,omitempty"`
	ParentBody    map[string]any `json:"pb,omitempty"`
	ChildKey      string         `json:"k,omitempty"`
}

func (c *change) recordDelete(r *relation, keyJSON string) {
	c.recorded = append(c.recorded, replayOut{Relation: r.name, Delete: keyJSON})
}

func (c *change) recordRelease(r *relation, version int64, body map[string]any, parent *rowState, childKey string) {
	c.recorded = append(c.recorded, replayOut{Relation: r.name, Version: version, Body: body,
		ParentVersion: parent.Version, ParentBody: parent.Body, ChildKey: childKey})
}

// A replay record is stored as a sequence of entries, each a header (its
// version and time, varints) and its outputs as JSON: deciding which
// entries to keep, and whether one has a version, reads only the headers,
// so the record of a key that changes often costs little to carry along.
// The outputs are decoded only when a change is delivered again.
//
//	record := replayFormat entry*
//	entry  := varint(version) varint(at) uvarint(len(outs)) outs
//
// Records of earlier builds are a JSON array of replayEntry; they are read
// as such and written back in this format.
const replayFormat = 0x01

// rawReplayEntry is one entry of a stored replay record, its outputs still
// encoded (JSON of []replayOut).
type rawReplayEntry struct {
	version int64
	at      int64
	outs    []byte
}

func (e rawReplayEntry) decode() ([]replayOut, error) {
	var outs []replayOut
	if err := decodeJSON(e.outs, &outs); err != nil {
		return nil, err
	}
	return outs, nil
}

func parseReplayRecord(b []byte) ([]rawReplayEntry, error) {
	if len(b) == 0 {
		return nil, nil
	}
	if b[0] != replayFormat {
		var legacy []replayEntry
		if err := decodeJSON(b, &legacy); err != nil {
			return nil, err
		}
		entries := make([]rawReplayEntry, 0, len(legacy))
		for _, e := range legacy {
			outs, err := json.Marshal(e.Out)
			if err != nil {
				return nil, err
			}
			entries = append(entries, rawReplayEntry{version: e.Version, at: e.At, outs: outs})
		}
		return entries, nil
	}
	var entries []rawReplayEntry
	for rest := b[1:]; len(rest) > 0; {
		v, n1 := binary.Varint(rest)
		if n1 <= 0 {
			return nil, errors.New("bad entry version")
		}
		rest = rest[n1:]
		at, n2 := binary.Varint(rest)
		if n2 <= 0 {
			return nil, errors.New("bad entry time")
		}
		rest = rest[n2:]
		l, n3 := binary.Uvarint(rest)
		if n3 <= 0 || l > uint64(len(rest)-n3) {
			return nil, errors.New("bad entry length")
		}
		rest = rest[n3:]
		entries = append(entries, rawReplayEntry{version: v, at: at, outs: rest[:l:l]})
		rest = rest[l:]
	}
	return entries, nil
}

func encodeReplayRecord(entries []rawReplayEntry) []byte {
	n := 1
	for _, e := range entries {
		n += 3*binary.MaxVarintLen64 + len(e.outs)
	}
	b := make([]byte, 1, n)
	b[0] = replayFormat
	for _, e := range entries {
		b = binary.AppendVarint(b, e.version)
		b = binary.AppendVarint(b, e.at)
		b = binary.AppendUvarint(b, uint64(len(e.outs)))
		b = append(b, e.outs...)
	}
	return b
}

func (s *state) replayEntries(t *table, key string) ([]rawReplayEntry, error) {
	b, err := s.get(replayBucket(t), key)
	if err != nil || b == nil {
		return nil, err
	}
	entries, err := parseReplayRecord(b)
	if err != nil {
		return nil, fmt.Errorf("replay record of %s %s is corrupt: %w", t.name, key, err)
	}
	return entries, nil
}

// replay emits again what the change of version recorded; parent is the
// row's current state (for released lookup children).
func (j *join) replay(s *state, c *change, msg *service.Message, entries []rawReplayEntry, version int64, parent *rowState) error {
	for _, e := range entries {
		if e.version != version {
			continue
		}
		outs, err := e.decode()
		if err != nil {
			return fmt.Errorf("cdc_join: replay record of version %d is corrupt: %w", version, err)
		}
		for _, o := range outs {
			r := j.relation(o.Relation)
			if r == nil {
				continue // a relation no longer configured
			}
			if o.Delete != "" {
				if err := emitDeleteOnly(c, msg, r, o.Delete); err != nil {
					return err
				}
				continue
			}
			joined := parent
			if o.ParentBody != nil {
				joined = &rowState{Version: o.ParentVersion, Body: o.ParentBody}
			}
			if joined == nil || joined.Deleted {
				continue // a record of an earlier build, without its parent
			}
			if gone, err := s.deletedSince(r, o.ChildKey, o.Version); err != nil {
				return err
			} else if gone {
				continue // deleted since it was released: it must not come back
			}
			if tr, err := s.truncation(r.child); err != nil {
				return err
			} else if tr != nil && o.Version <= tr.version {
				continue // its table was truncated since: likewise
			}
			c.emitDerived(msg, r, joined, &rowState{Version: o.Version, Body: o.Body}, o.ChildKey)
		}
	}
	return nil
}

// replayAndRecord, for a change being applied, emits again what this very
// version recorded (a replay of the same change: prev is then at this
// version), and records what this delivery emitted that a later replay
// could not recompute. next is the row's new state. A change newer than
// prev was never applied, so it has nothing to replay, and one that emits
// nothing to record leaves the record alone: neither reads it.
func (j *join) replayAndRecord(s *state, c *change, msg *service.Message, t *table, key string, version int64, prev, next *rowState) error {
	redelivered := prev != nil && prev.Version == version
	recorded := c.recorded
	if !redelivered && len(recorded) == 0 {
		return nil
	}
	entries, err := s.replayEntries(t, key)
	if err != nil {
		return err
	}
	if redelivered {
		// What the first delivery emitted came before what this one
		// recomputed: keep that order.
		again := &change{src: c.src}
		if err := j.replay(s, again, msg, entries, version, next); err != nil {
			return err
		}
		if len(again.out) > 0 {
			c.out = append(again.out, c.out...)
		}
	}
	if len(recorded) == 0 {
		return nil
	}
	kept := make([]rawReplayEntry, 0, len(entries)+1)
	merged := false
	horizon := s.now.Add(-replayWindow).Unix()
	for i, e := range entries {
		if e.version == version {
			outs, err := e.decode()
			if err != nil {
				return fmt.Errorf("cdc_join: replay record of %s %s is corrupt: %w", t.name, key, err)
			}
			if e.outs, err = json.Marshal(append(outs, recorded...)); err != nil {
				return fmt.Errorf("encoding replay record: %w", err)
			}
			e.at = s.now.Unix()
			merged = true
		} else if e.at < horizon && len(entries)-i > replayMinDepth {
			continue // too old to be replayed
		}
		kept = append(kept, e)
	}
	if !merged {
		outs, err := json.Marshal(recorded)
		if err != nil {
			return fmt.Errorf("encoding replay record: %w", err)
		}
		kept = append(kept, rawReplayEntry{version: version, at: s.now.Unix(), outs: outs})
	}
	if len(kept) > replayMaxDepth {
		kept = kept[len(kept)-replayMaxDepth:]
	}
	c.writes = append(c.writes, write{bucket: replayBucket(t), key: []byte(key), value: encodeReplayRecord(kept)})
	return nil
}

func (j *join) relation(name string) *relation {
	for _, r := range j.relations {
		if r.name == name {
			return r
		}
	}
	return nil
}

// emitDeleteOnly emits a delete without recording it again.
func emitDeleteOnly(c *change, msg *service.Message, r *relation, keyJSON string) error {
	var keyCols map[string]any
	if err := json.Unmarshal([]byte(keyJSON), &keyCols); err != nil {
		return fmt.Errorf("cdc_join: recorded key of %s is corrupt: %w", r.name, err)
	}
	c.emit(msg, r.name, "delete", keyCols)
	return nil
}
