package join

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/redpanda-data/benthos/v4/public/service"

	"github.com/odsflow/odsflow/internal/statestore"
)

// rowState is a stored row of a table: its latest version and body, or a
// tombstone (Deleted) that keeps the version of the delete.
//
// It is stored by encodeRow (binary) when encodeRow knows every field
// (binaryRowFields); a rowState with a field it does not know is stored as
// JSON instead, so a new field is never lost, only slower to store until
// encodeRow and decodeRow learn it (TestRowCodecMatchesJSON says so).
type rowState struct {
	Version   int64          `json:"v"`
	Deleted   bool           `json:"d,omitempty"`
	DeletedAt int64          `json:"t,omitempty"` // unix seconds
	Body      map[string]any `json:"b,omitempty"`
	// Parents holds, per latest_state relation, the parent key this child
	// is indexed under.
	Parents map[string]string `json:"p,omitempty"`
	// Emitted holds, per latest_state relation, the key columns (JSON) of
	// the target row last emitted for this child, so it can be deleted.
	Emitted map[string]string `json:"e,omitempty"`
}

// heldEvent is a lookup child waiting for its parent.
type heldEvent struct {
	Version int64          `json:"v"`
	Body    map[string]any `json:"b"`
}

// state reads and writes the store within one batch's transaction.
type state struct {
	tx        statestore.Tx
	now       time.Time
	retention time.Duration
	truncs    map[string]*truncation // per table, once read (truncate.go)
	// pre: values read before the transaction (prefetch.go); written: the
	// keys (cacheKey) the batch has written since, read from tx instead.
	pre     *prefetched
	written map[string]struct{}
	// staged: the row states the batch wrote (cacheKey → last one), in
	// the order of their first write; written to tx by flushRows.
	staged      map[string]*stagedRow
	stagedOrder []*stagedRow
	// counts are added to the metrics once the batch is committed (a batch
	// may be applied more than once).
	counts   struct{ stale, held, truncates int64 }
	warnings []string
}

func rowBucket(t *table) string          { return "row." + t.name }
func idxBucket(r *relation) string       { return idxBucketOf(r.name) }
func idxBucketOf(relation string) string { return "idx." + relation }
func heldBucket(r *relation) string      { return "held." + r.name }

// heldKeyBucket maps a held lookup child's key to the parent key it is
// held under.
func heldKeyBucket(r *relation) string { return "heldkey." + r.name }

// goneBucket keeps, for a tombstone_retention, the version at which each
// lookup child was deleted. Lookup children are not stored, so without it
// nothing would tell a replayed release (a parent's change delivered again
// after a crash, re-emitting a child it once released) that the child has
// been deleted since: the ODS keeps no tombstones, so the re-emitted row
// would come back. A child's own changes need no such guard: its create
// and delete share a partition, and come again in order.
func goneBucket(r *relation) string { return "gone." + r.name }

// goneEntry is a goneBucket value: the delete's version and when it was
// applied (unix seconds), 16 bytes.
func goneEntry(version int64, at time.Time) []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint64(b, uint64(version))
	binary.BigEndian.PutUint64(b[8:], uint64(at.Unix()))
	return b
}

func parseGone(b []byte) (version, at int64, err error) {
	if len(b) != 16 {
		return 0, 0, fmt.Errorf("deleted-child entry of %d bytes, want 16", len(b))
	}
	return int64(binary.BigEndian.Uint64(b)), int64(binary.BigEndian.Uint64(b[8:])), nil
}

// deletedSince tells whether a lookup child was deleted by a change newer
// than version.
func (s *state) deletedSince(r *relation, childKey string, version int64) (bool, error) {
	b, err := s.get(goneBucket(r), childKey)
	if err != nil || b == nil {
		return false, err
	}
	gone, _, err := parseGone(b)
	if err != nil {
		return false, fmt.Errorf("cdc_join: %s %s: %w", r.name, childKey, err)
	}
	return gone > version, nil
}

// dropHeld drops the event held for a lookup child's key under parentKey
// (none: nil).
func dropHeld(c *change, r *relation, key string, parentKey []byte) {
	if parentKey == nil {
		return
	}
	c.del(heldBucket(r), pair(string(parentKey), key))
	c.del(heldKeyBucket(r), []byte(key))
}

// heldOf is the parent key under which an event of a lookup child's key is
// held (nil: none), and that event's version.
func heldOf(s *state, r *relation, key string) (parentKey []byte, version int64, err error) {
	parentKey, err = s.tx.Get(heldKeyBucket(r), []byte(key))
	if err != nil || parentKey == nil {
		return nil, 0, err
	}
	b, err := s.tx.Get(heldBucket(r), pair(string(parentKey), key))
	if err != nil || b == nil {
		return parentKey, 0, err
	}
	var h heldEvent
	if err := decodeJSON(b, &h); err != nil {
		return nil, 0, fmt.Errorf("held event %s of %s is corrupt: %w", key, r.name, err)
	}
	return parentKey, h.Version, nil
}

// pair is the key of an index or held entry: parent key, then child key.
// Keys never hold a NUL byte (keyString refuses them).
func pair(parent, child string) []byte { return []byte(parent + "\x00" + child) }

func (s *state) row(t *table, key string) (*rowState, error) {
	r, ok := s.stagedRow(rowBucket(t), key)
	if !ok {
		r, ok = s.cachedRow(rowBucket(t), key)
	}
	if !ok {
		b, err := s.tx.Get(rowBucket(t), []byte(key))
		if err != nil || b == nil {
			return nil, err
		}
		if r, err = decodeRow(b); err != nil {
			return nil, fmt.Errorf("state of %s %s is corrupt: %w", t.name, key, err)
		}
	}
	if r == nil {
		return nil, nil
	}
	tr, err := s.truncation(t)
	if err != nil {
		return nil, err
	}
	if tr != nil && r.Version <= tr.version {
		// Truncated since: a tombstone of the truncation, which keeps the
		// row's index entries so that its next change removes them.
		r = &rowState{Version: tr.version, Deleted: true, DeletedAt: tr.at, Parents: r.Parents}
	}
	if r.Deleted && s.retention > 0 && s.now.Sub(time.Unix(r.DeletedAt, 0)) > s.retention {
		return nil, nil // an expired tombstone is no longer a version guard
	}
	return r, nil
}

// writes are staged per message and applied when the message's change is
// complete; if applying them fails, ProcessBatch applies the batch again
// without the message, so a message that fails halfway changes nothing.
type write struct {
	bucket string
	key    []byte
	value  []byte    // nil: delete (unless row is set)
	row    *rowState // a row state, encoded at the end of the batch
	// ownBody: the row's body is the message's (not one read from the
	// state), so an encoding failure is the message's fault.
	ownBody bool
}

type change struct {
	src      int // the message's index in its batch
	writes   []write
	out      []output
	recorded []replayOut // outputs a replay of this change must repeat (replay.go)
}

func (c *change) put(bucket string, key []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding state: %w", err)
	}
	c.writes = append(c.writes, write{bucket: bucket, key: key, value: b})
	return nil
}

// putRow stages a row state; it is encoded and written when the batch's
// changes are all applied (flushRows), on every core.
func (c *change) putRow(bucket string, key []byte, r *rowState) error {
	c.writes = append(c.writes, write{bucket: bucket, key: key, row: r})
	return nil
}

func (c *change) del(bucket string, key []byte) {
	c.writes = append(c.writes, write{bucket: bucket, key: key})
}

func (c *change) emit(src *service.Message, target, op string, row map[string]any) {
	c.out = append(c.out, output{src: c.src, msg: src, table: target, op: op, row: row})
}

// emitJoined emits the upsert of a joined row for a change of its child,
// mapped later (output).
func (c *change) emitJoined(src *service.Message, r *relation, parent, child *rowState) {
	c.out = append(c.out, output{src: c.src, msg: src, table: r.metaName, op: "upsert", rel: r, parent: parent, child: child})
}

// emitDerived emits the upsert of a joined row for a change of another row
// than its child: a mapping failure is the row's, not the message's.
func (c *change) emitDerived(src *service.Message, r *relation, parent, child *rowState, childKey string) {
	c.out = append(c.out, output{src: c.src, msg: src, table: r.metaName, op: "upsert", rel: r, parent: parent, child: child,
		derived: true, childKey: childKey})
}

// maxKeyLen bounds a key, so that any index entry (two keys) fits the
// store.
const maxKeyLen = 1024

// keyString turns a key value into the store's key.
func keyString(v any) (string, error) {
	switch k := v.(type) {
	case string:
		if k == "" {
			return "", errors.New("empty key")
		}
		if len(k) > maxKeyLen {
			return "", fmt.Errorf("key of %d bytes: at most %d", len(k), maxKeyLen)
		}
		for i := 0; i < len(k); i++ {
			if k[i] == 0 {
				return "", errors.New("key holds a NUL byte")
			}
		}
		return k, nil
	case int64:
		return strconv.FormatInt(k, 10), nil
	case int:
		return strconv.Itoa(k), nil
	case int32:
		return strconv.FormatInt(int64(k), 10), nil
	case uint64:
		return strconv.FormatUint(k, 10), nil
	case float64:
		if k == float64(int64(k)) {
			return strconv.FormatInt(int64(k), 10), nil
		}
		return "", fmt.Errorf("key %v is not an integer", k)
	case json.Number:
		if i, err := k.Int64(); err == nil {
			return strconv.FormatInt(i, 10), nil
		}
		return "", fmt.Errorf("key %v is not an integer", k)
	case nil:
		return "", errors.New("no key (null)")
	default:
		return "", fmt.Errorf("key of type %T: want a string or an integer", v)
	}
}

func metaInt(m *service.Message, k string) (int64, bool) {
	v, ok := m.MetaGetMut(k)
	if !ok {
		return 0, false
	}
	switch n := v.(type) {
	case int64:
		return n, true
	case int:
		return int64(n), true
	case string:
		i, err := strconv.ParseInt(n, 10, 64)
		return i, err == nil
	case float64:
		return int64(n), n == float64(int64(n))
	}
	return 0, false
}

// apply applies one prepared message to the state and returns what it
// emits (joined rows still to be mapped: see output).
func (j *join) apply(s *state, src int, p *prepared) ([]output, error) {
	t, msg, key, version, body, deleted := p.t, p.msg, p.key, p.version, p.body, p.deleted
	if p.op == "t" {
		return j.truncate(s, src, msg, t, version)
	}
	var err error
	c := &change{src: src}
	// A change no newer than a truncation of its table is gone with it,
	// whether or not the state holds its key (it may come through another
	// partition than the truncate, after it).
	if tr, err := s.truncation(t); err != nil {
		return nil, err
	} else if tr != nil && version <= tr.version {
		s.counts.stale++
		if !t.stored {
			return nil, nil
		}
		// Perhaps the replay of a change applied before the truncation,
		// whose outputs were lost: what it took away (the lookups it
		// released, the deletes it emitted) is emitted again, as for any
		// stale change; the truncation does not take released lookups.
		return j.replayStale(s, c, msg, t, key, version, nil)
	}
	var prev *rowState
	if t.stored {
		if prev, err = s.row(t, key); err != nil {
			return nil, err
		}
		if prev != nil && version < prev.Version {
			// Older than what we have: a reordering, or the replay of a batch
			// whose outputs were lost after its state was written. Its upserts
			// are stale (the newer state's are what count), but what it took
			// away must be emitted again: its recorded deletes, versioned, so
			// that they cannot take a newer row, and its released lookups.
			s.counts.stale++
			return j.replayStale(s, c, msg, t, key, version, prev)
		}
	}
	next := &rowState{Version: version, Body: body}
	if deleted {
		next = &rowState{Version: version, Deleted: true, DeletedAt: s.now.Unix()}
	}
	if prev != nil {
		next.Parents, next.Emitted = prev.Parents, prev.Emitted
	}

	for i, r := range j.relations {
		var err error
		switch {
		case r.child == t && r.kind == "latest_state":
			err = j.childOfLatest(s, c, msg, r, p.links[i], key, prev, next)
		case r.child == t:
			err = j.childOfLookup(s, c, msg, r, p.links[i], key, version, body, deleted)
		}
		if err != nil {
			return nil, err
		}
	}
	for _, r := range j.relations {
		if r.parent != t {
			continue
		}
		var err error
		if r.kind == "latest_state" {
			err = j.parentOfLatest(s, c, msg, r, key, next)
		} else if !deleted {
			err = j.releaseHeld(s, c, msg, r, key, next)
		}
		if err != nil {
			return nil, err
		}
	}
	if t.stored {
		if err := j.replayAndRecord(s, c, msg, t, key, version, prev, next); err != nil {
			return nil, err
		}
		c.writes = append(c.writes, write{bucket: rowBucket(t), key: []byte(key), row: next, ownBody: true})
	}
	if err := applyWrites(s, c); err != nil {
		return nil, err
	}
	return c.out, nil
}

// replayStale emits again what a stale change of key recorded under its
// version (replay), and nothing else.
func (j *join) replayStale(s *state, c *change, msg *service.Message, t *table, key string, version int64, prev *rowState) ([]output, error) {
	entries, err := s.replayEntries(t, key)
	if err != nil {
		return nil, err
	}
	if err := j.replay(s, c, msg, entries, version, prev); err != nil {
		return nil, err
	}
	return c.out, nil
}

// applyWrites applies a message's staged writes to the batch's transaction.
func applyWrites(s *state, c *change) error {
	for _, w := range c.writes {
		if w.row != nil {
			s.stageRow(c.src, w.bucket, string(w.key), w.row, w.ownBody)
			continue
		}
		if s.pre != nil {
			s.written[cacheKey(w.bucket, string(w.key))] = struct{}{}
		}
		var err error
		if w.value == nil {
			err = s.tx.Delete(w.bucket, w.key)
		} else {
			err = s.tx.Put(w.bucket, w.key, w.value)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// row builds a target row with the relation's mapping.
func (r *relation) row(parent, child *rowState) (map[string]any, error) {
	v, err := r.mapping.run(mappingInput{parent: parent.Body, child: child.Body, parentVersion: parent.Version, childVersion: child.Version})
	if err != nil {
		return nil, fmt.Errorf("cdc_join: mapping of %s: %w", r.name, err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("cdc_join: mapping of %s gave %T, want an object", r.name, v)
	}
	return m, nil
}

// targetKey builds the key columns of a child's target row, and their JSON.
func (r *relation) targetKey(child map[string]any) (map[string]any, string, error) {
	v, err := r.keyMapper.run(mappingInput{child: child, childOnly: true})
	if err != nil {
		return nil, "", fmt.Errorf("cdc_join: key_mapping of %s: %w", r.name, err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, "", fmt.Errorf("cdc_join: key_mapping of %s gave %T, want an object", r.name, v)
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, "", fmt.Errorf("cdc_join: key_mapping of %s: %w", r.name, err)
	}
	return m, string(b), nil
}

func (s *state) live(t *table, key string) (*rowState, error) {
	p, err := s.row(t, key)
	if err != nil || p == nil || p.Deleted {
		return nil, err
	}
	return p, nil
}

// childOfLatest handles a change of a latest_state child.
func (j *join) childOfLatest(s *state, c *change, msg *service.Message, r *relation, l link, key string, prev, next *rowState) error {
	oldParent, hadParent := "", false
	if prev != nil && prev.Parents != nil {
		oldParent, hadParent = prev.Parents[r.name]
	}
	emitted := ""
	if prev != nil && prev.Emitted != nil {
		emitted = prev.Emitted[r.name]
	}
	next.Parents = copyMap(next.Parents)
	next.Emitted = copyMap(next.Emitted)

	if next.Deleted {
		if hadParent {
			c.del(idxBucket(r), pair(oldParent, key))
		}
		delete(next.Parents, r.name)
		if emitted != "" {
			if err := emitDelete(c, msg, r, emitted, next.Version, unknownParentVersion); err != nil {
				return err
			}
			delete(next.Emitted, r.name)
		}
		return nil
	}

	parentKey, newKeyJSON := l.parentKey, l.keyJSON
	// The index entry is written only when it changes: rewriting an
	// unchanged one would cost a page write at commit.
	if !hadParent || oldParent != parentKey {
		if hadParent {
			c.del(idxBucket(r), pair(oldParent, key))
		}
		c.writes = append(c.writes, write{bucket: idxBucket(r), key: pair(parentKey, key), value: []byte{}})
	}
	next.Parents[r.name] = parentKey

	// A row emitted under another key (its key columns changed) goes.
	if emitted != "" && emitted != newKeyJSON {
		if err := emitDelete(c, msg, r, emitted, next.Version, unknownParentVersion); err != nil {
			return err
		}
		delete(next.Emitted, r.name)
		emitted = ""
	}
	parent, err := s.live(r.parent, parentKey)
	if err != nil {
		return err
	}
	if parent == nil {
		// Held until its parent arrives; a row it had under its old parent
		// leaves with it.
		s.counts.held++
		if emitted != "" {
			if err := emitDelete(c, msg, r, emitted, next.Version, unknownParentVersion); err != nil {
				return err
			}
			delete(next.Emitted, r.name)
		}
		return nil
	}
	c.emitJoined(msg, r, parent, next)
	next.Emitted[r.name] = newKeyJSON
	return nil
}

// parentOfLatest re-emits (or deletes) the rows of every child of a parent
// that changed.
func (j *join) parentOfLatest(s *state, c *change, msg *service.Message, r *relation, key string, next *rowState) error {
	var children []string
	prefix := pair(key, "")
	err := s.tx.Scan(idxBucket(r), prefix, func(k, _ []byte) error {
		children = append(children, string(k[len(prefix):]))
		return nil
	})
	if err != nil {
		return err
	}
	for _, ck := range children {
		child, err := s.live(r.child, ck)
		if err != nil {
			return err
		}
		if child == nil || child.Parents[r.name] != key {
			continue // deleted, truncated, or an index entry it has left
		}
		emitted := child.Emitted[r.name]
		if next.Deleted {
			if emitted == "" {
				continue
			}
			// The child's own version, and the parent's delete as parent
			// version: newer than the row's, older than any row the parent
			// brings back later.
			if err := emitDelete(c, msg, r, emitted, child.Version, next.Version); err != nil {
				return err
			}
			child.Emitted = copyMap(child.Emitted)
			delete(child.Emitted, r.name)
		} else {
			// The child's body has not changed since its row was last
			// emitted (a change of it re-emits it), so neither has its key.
			keyJSON := emitted
			if keyJSON == "" {
				var err error
				if _, keyJSON, err = r.targetKey(child.Body); err != nil {
					return err
				}
			}
			c.emitDerived(msg, r, next, child, ck)
			if emitted == keyJSON {
				continue // the child's state is unchanged: no write
			}
			child.Emitted = copyMap(child.Emitted)
			child.Emitted[r.name] = keyJSON
		}
		if err := c.putRow(rowBucket(r.child), []byte(ck), child); err != nil {
			return err
		}
	}
	return nil
}

// childOfLookup enriches a lookup child from its parent, or holds it.
func (j *join) childOfLookup(s *state, c *change, msg *service.Message, r *relation, l link, key string, version int64, body map[string]any, deleted bool) error {
	// A newer event of this key is held (a redelivered batch after a later
	// one, with two in flight): this change is stale, and must neither drop
	// nor replace it.
	heldUnder, heldVersion, err := heldOf(s, r, key)
	if err != nil {
		return err
	}
	newerHeld := heldUnder != nil && heldVersion > version
	if deleted {
		keyCols := l.keyCols
		r.deleteVersions(keyCols, version, unknownParentVersion)
		c.emit(msg, r.name, "delete", keyCols)
		if gone, err := s.deletedSince(r, key, version-1); err != nil {
			return err
		} else if !gone {
			c.writes = append(c.writes, write{bucket: goneBucket(r), key: []byte(key), value: goneEntry(version, s.now)})
		}
		if !newerHeld {
			dropHeld(c, r, key, heldUnder) // it never arrives now
		}
		return nil
	}
	if newerHeld {
		s.counts.stale++
		return nil
	}
	// A change older than the child's delete (a batch of an ended
	// ownership, or any other reordering) must not bring it back.
	if gone, err := s.deletedSince(r, key, version); err != nil {
		return err
	} else if gone {
		s.counts.stale++
		return nil
	}
	parentKey := l.parentKey
	parent, err := s.live(r.parent, parentKey)
	if err != nil {
		return err
	}
	if parent == nil {
		s.counts.held++
		// Held under its parent key, with a reverse entry (child → parent
		// key) so that a delete or a move finds it without a scan.
		if heldUnder != nil && string(heldUnder) != parentKey {
			c.del(heldBucket(r), pair(string(heldUnder), key))
		}
		c.writes = append(c.writes, write{bucket: heldKeyBucket(r), key: []byte(key), value: []byte(parentKey)})
		return c.put(heldBucket(r), pair(parentKey, key), heldEvent{Version: version, Body: body})
	}
	dropHeld(c, r, key, heldUnder) // it was held under another parent
	c.emitJoined(msg, r, parent, &rowState{Version: version, Body: body})
	return nil
}

// releaseHeld emits the lookup children waiting for a parent that arrived.
func (j *join) releaseHeld(s *state, c *change, msg *service.Message, r *relation, key string, parent *rowState) error {
	prefix := pair(key, "")
	return s.tx.Scan(heldBucket(r), prefix, func(k, v []byte) error {
		var h heldEvent
		if err := decodeJSON(v, &h); err != nil {
			return fmt.Errorf("held event %q of %s is corrupt: %w", k, r.name, err)
		}
		child := string(k[len(prefix):])
		c.emitDerived(msg, r, parent, &rowState{Version: h.Version, Body: h.Body}, child)
		c.recordRelease(r, h.Version, h.Body, parent, child)
		c.del(heldBucket(r), append([]byte{}, k...))
		c.del(heldKeyBucket(r), []byte(child))
		return nil
	})
}

// emitDelete emits the delete of a target row, given its key columns
// (JSON), carrying the version columns (deleteVersions), and records it for
// replays.
func emitDelete(c *change, msg *service.Message, r *relation, keyJSON string, childVersion, parentVersion int64) error {
	var row map[string]any
	if err := json.Unmarshal([]byte(keyJSON), &row); err != nil {
		return fmt.Errorf("cdc_join: stored key of %s is corrupt: %w", r.name, err)
	}
	r.deleteVersions(row, childVersion, parentVersion)
	recorded, err := json.Marshal(row)
	if err != nil {
		return fmt.Errorf("cdc_join: delete of %s: %w", r.name, err)
	}
	c.emit(msg, r.name, "delete", row)
	c.recordDelete(r, string(recorded))
	return nil
}

// unknownParentVersion is the parent version a delete caused by a child's
// own change carries. Such a delete must take the child's older rows, whose
// child version is lower, and nothing the same child version emits later
// (its row under a parent that arrives afterwards): the lowest parent
// version does both, as cdc_version is at least 1.
const unknownParentVersion int64 = 0

// deleteVersions adds the relation's version columns to a delete's key
// columns, so that the ODS deletes the row only if it is not newer than
// the delete (design §3): a delete emitted again by a replay cannot take a
// row that a later change wrote.
func (r *relation) deleteVersions(row map[string]any, childVersion, parentVersion int64) {
	if r.childVersionColumn != "" {
		row[r.childVersionColumn] = childVersion
	}
	if r.parentVersionColumn != "" {
		row[r.parentVersionColumn] = parentVersion
	}
}

// decodeJSON keeps numbers exact (json.Number): a body read back from the
// state must give the mapping the same values as one fresh off the wire.
func decodeJSON(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	return d.Decode(v)
}

func copyMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Row states are stored in a compact binary encoding (store format 2):
//
//	0x02 | varint version | flags (1: deleted) | [varint deleted_at]
//	     | parents | emitted      (each: uvarint n, then n × (string, string))
//	     | body                   (a value; null when the row has none)
//
// A value is a tag byte and its payload: null, false, true; a string or a
// number (JSON text, decoded as json.Number) as uvarint length + bytes; an
// object (uvarint n, n × (key string, value)); an array (uvarint n, n ×
// value); or raw JSON (uvarint length + bytes) for anything else. Decoding
// gives exactly what the format-1 JSON round trip gave (strings, json.Number,
// bools, nil, maps, slices; empty maps omitted), so the mappings see the
// same values; values that JSON would change (invalid UTF-8, floats, types
// with their own JSON form) are stored as their JSON. Format-1 stores hold
// JSON row states (first byte '{'); they are still read, and rewritten in
// this encoding when their row next changes.
const rowBinary byte = 0x02

const (
	tagNull byte = iota
	tagFalse
	tagTrue
	tagString
	tagNumber
	tagObject
	tagArray
	tagJSON
)

// binaryRowFields are the rowState fields the binary encoding holds.
var binaryRowFields = []string{"Version", "Deleted", "DeletedAt", "Body", "Parents", "Emitted"}

// rowBinaryComplete: the binary encoding holds every field of rowState
// (computed once; never changes at run time).
var rowBinaryComplete = func() bool {
	t := reflect.TypeOf(rowState{})
	if t.NumField() != len(binaryRowFields) {
		return false
	}
	for i, name := range binaryRowFields {
		if t.Field(i).Name != name {
			return false
		}
	}
	return true
}()

func encodeRow(r *rowState) ([]byte, error) {
	if !rowBinaryComplete {
		return json.Marshal(r) // format 1's encoding: decodeRow still reads it
	}
	b := make([]byte, 0, 64+16*len(r.Body)+32*(len(r.Parents)+len(r.Emitted)))
	b = append(b, rowBinary)
	b = binary.AppendVarint(b, r.Version)
	if r.Deleted {
		b = append(b, 1)
		b = binary.AppendVarint(b, r.DeletedAt)
	} else {
		b = append(b, 0)
	}
	b = appendStringMap(b, r.Parents)
	b = appendStringMap(b, r.Emitted)
	if len(r.Body) == 0 { // omitempty in format 1: an empty body reads back as none
		return append(b, tagNull), nil
	}
	return appendValue(b, r.Body)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendStringMap(b []byte, m map[string]string) []byte {
	b = binary.AppendUvarint(b, uint64(len(m)))
	for k, v := range m {
		b = appendString(appendString(b, k), v)
	}
	return b
}

func appendValue(b []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(b, tagNull), nil
	case bool:
		if x {
			return append(b, tagTrue), nil
		}
		return append(b, tagFalse), nil
	case string:
		if !utf8.ValidString(x) {
			break // JSON replaces invalid bytes: store what it would give
		}
		return appendString(append(b, tagString), x), nil
	case json.Number:
		if x == "" {
			x = "0" // as encoding/json writes it
		}
		if !validNumber(string(x)) {
			return nil, fmt.Errorf("json: invalid number literal %q", string(x))
		}
		return appendString(append(b, tagNumber), string(x)), nil
	case int:
		return appendInt(b, int64(x)), nil
	case int64:
		return appendInt(b, x), nil
	case int32:
		return appendInt(b, int64(x)), nil
	case int16:
		return appendInt(b, int64(x)), nil
	case int8:
		return appendInt(b, int64(x)), nil
	case uint:
		return appendUint(b, uint64(x)), nil
	case uint64:
		return appendUint(b, x), nil
	case uint32:
		return appendUint(b, uint64(x)), nil
	case uint16:
		return appendUint(b, uint64(x)), nil
	case uint8:
		return appendUint(b, uint64(x)), nil
	case float64, float32:
		js, err := json.Marshal(x) // JSON's own float text; NaN and ±Inf are errors, as in format 1
		if err != nil {
			return nil, err
		}
		return appendNumber(b, js), nil
	case map[string]any:
		for k := range x {
			if !utf8.ValidString(k) {
				return appendJSON(b, x)
			}
		}
		b = append(b, tagObject)
		b = binary.AppendUvarint(b, uint64(len(x)))
		var err error
		for k, e := range x {
			b = appendString(b, k)
			if b, err = appendValue(b, e); err != nil {
				return nil, err
			}
		}
		return b, nil
	case []any:
		if x == nil {
			return append(b, tagNull), nil // JSON writes a nil slice as null
		}
		b = append(b, tagArray)
		b = binary.AppendUvarint(b, uint64(len(x)))
		var err error
		for _, e := range x {
			if b, err = appendValue(b, e); err != nil {
				return nil, err
			}
		}
		return b, nil
	}
	return appendJSON(b, v)
}

func appendInt(b []byte, i int64) []byte {
	var tmp [20]byte
	return appendNumber(b, strconv.AppendInt(tmp[:0], i, 10))
}

func appendUint(b []byte, u uint64) []byte {
	var tmp [20]byte
	return appendNumber(b, strconv.AppendUint(tmp[:0], u, 10))
}

func appendNumber(b, text []byte) []byte {
	b = append(b, tagNumber)
	b = binary.AppendUvarint(b, uint64(len(text)))
	return append(b, text...)
}

// appendJSON stores a value as its JSON, to be decoded as format 1 did.
func appendJSON(b []byte, v any) ([]byte, error) {
	js, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	b = append(b, tagJSON)
	b = binary.AppendUvarint(b, uint64(len(js)))
	return append(b, js...), nil
}

// validNumber reports whether s is a JSON number (what encoding/json
// accepts in a json.Number).
func validNumber(s string) bool {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && s[i] >= '1' && s[i] <= '9':
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
	default:
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if i == len(s) || s[i] < '0' || s[i] > '9' {
			return false
		}
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if i == len(s) || s[i] < '0' || s[i] > '9' {
			return false
		}
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
	}
	return i == len(s)
}

// decodeRow reads a row state in either store format.
func decodeRow(b []byte) (*rowState, error) {
	if len(b) > 0 && b[0] == '{' { // format 1: JSON
		var r rowState
		if err := decodeJSON(b, &r); err != nil {
			return nil, err
		}
		return &r, nil
	}
	if len(b) == 0 || b[0] != rowBinary {
		return nil, errors.New("unknown row state encoding")
	}
	// One copy out of the store's memory (valid only during the
	// transaction); every string of the row is a slice of it.
	d := rowDecoder{s: string(b), pos: 1}
	r := &rowState{Version: d.varint()}
	if d.byte() == 1 {
		r.Deleted = true
		r.DeletedAt = d.varint()
	}
	r.Parents = d.stringMap()
	r.Emitted = d.stringMap()
	body, err := d.value(0)
	if err == nil && d.err == nil && d.pos != len(d.s) {
		d.err = errors.New("trailing bytes")
	}
	if err == nil {
		err = d.err
	}
	if err != nil {
		return nil, fmt.Errorf("binary row state at byte %d: %w", d.pos, err)
	}
	if body != nil {
		m, ok := body.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("binary row state: body is a %T, not an object", body)
		}
		r.Body = m
	}
	return r, nil
}

type rowDecoder struct {
	s   string
	pos int
	err error
}

var errTruncated = errors.New("truncated")

func (d *rowDecoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
	d.pos = len(d.s)
}

func (d *rowDecoder) byte() byte {
	if d.pos >= len(d.s) {
		d.fail(errTruncated)
		return 0
	}
	d.pos++
	return d.s[d.pos-1]
}

func (d *rowDecoder) uvarint() uint64 {
	var x uint64
	for shift := uint(0); shift < 64; shift += 7 {
		if d.pos >= len(d.s) {
			d.fail(errTruncated)
			return 0
		}
		c := d.s[d.pos]
		d.pos++
		if c < 0x80 {
			return x | uint64(c)<<shift
		}
		x |= uint64(c&0x7f) << shift
	}
	d.fail(errors.New("varint overflows 64 bits"))
	return 0
}

func (d *rowDecoder) varint() int64 {
	u := d.uvarint()
	return int64(u>>1) ^ -int64(u&1)
}

// count reads a length or an element count, which cannot exceed the bytes
// left (each element takes at least one).
func (d *rowDecoder) count() int {
	n := d.uvarint()
	if n > uint64(len(d.s)-d.pos) {
		d.fail(errTruncated)
		return 0
	}
	return int(n)
}

func (d *rowDecoder) string() string {
	n := d.count()
	s := d.s[d.pos : d.pos+n]
	d.pos += n
	return s
}

func (d *rowDecoder) stringMap() map[string]string {
	n := d.count()
	if n == 0 {
		return nil // omitempty in format 1: an empty map reads back as none
	}
	m := make(map[string]string, n)
	for i := 0; i < n && d.err == nil; i++ {
		k := d.string()
		m[k] = d.string()
	}
	return m
}

// maxDepth bounds the nesting a corrupt value could ask the decoder for.
const maxDepth = 10_000

func (d *rowDecoder) value(depth int) (any, error) {
	if depth > maxDepth {
		return nil, errors.New("nested too deeply")
	}
	switch tag := d.byte(); tag {
	case tagNull:
		return nil, nil
	case tagFalse:
		return false, nil
	case tagTrue:
		return true, nil
	case tagString:
		return d.string(), nil
	case tagNumber:
		return json.Number(d.string()), nil
	case tagObject:
		n := d.count()
		m := make(map[string]any, n)
		for i := 0; i < n && d.err == nil; i++ {
			k := d.string()
			v, err := d.value(depth + 1)
			if err != nil {
				return nil, err
			}
			m[k] = v
		}
		return m, nil
	case tagArray:
		n := d.count()
		a := make([]any, n)
		for i := 0; i < n && d.err == nil; i++ {
			v, err := d.value(depth + 1)
			if err != nil {
				return nil, err
			}
			a[i] = v
		}
		return a, nil
	case tagJSON:
		var v any
		if err := decodeJSON([]byte(d.string()), &v); err != nil {
			return nil, err
		}
		return v, nil
	default:
		if d.err != nil {
			return nil, nil
		}
		return nil, fmt.Errorf("unknown value tag %d", tag)
	}
}
