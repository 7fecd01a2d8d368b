package join

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"

	"github.com/odsflow/odsflow/internal/statestore"
)

// rowState is a stored row of a table: its latest version and body, or a
// tombstone (Deleted) that keeps the version of the delete.
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
}

func rowBucket(t *table) string     { return "row." + t.name }
func idxBucket(r *relation) string  { return "idx." + r.name }
func heldBucket(r *relation) string { return "held." + r.name }

// pair is the key of an index or held entry: parent key, then child key.
// Keys never hold a NUL byte (keyString refuses them).
func pair(parent, child string) []byte { return []byte(parent + "\x00" + child) }

func (s *state) row(t *table, key string) (*rowState, error) {
	b, err := s.tx.Get(rowBucket(t), []byte(key))
	if err != nil || b == nil {
		return nil, err
	}
	var r rowState
	if err := decodeJSON(b, &r); err != nil {
		return nil, fmt.Errorf("state of %s %s is corrupt: %w", t.name, key, err)
	}
	if r.Deleted && s.retention > 0 && s.now.Sub(time.Unix(r.DeletedAt, 0)) > s.retention {
		return nil, nil // an expired tombstone is no longer a version guard
	}
	return &r, nil
}

// writes are staged per message and applied only when the whole message
// succeeded, so a message that fails halfway changes nothing.
type write struct {
	bucket string
	key    []byte
	value  []byte // nil: delete
}

type change struct {
	writes []write
	out    service.MessageBatch
}

func (c *change) put(bucket string, key []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding state: %w", err)
	}
	c.writes = append(c.writes, write{bucket, key, b})
	return nil
}

func (c *change) del(bucket string, key []byte) {
	c.writes = append(c.writes, write{bucket: bucket, key: key})
}

func (c *change) emit(src *service.Message, target, op string, row any) {
	m := src.Copy()
	m.SetStructuredMut(row)
	m.MetaSetMut("ods_table", target)
	m.MetaSetMut("ods_op", op)
	c.out = append(c.out, m)
}

// keyString turns a key value into the store's key.
func keyString(v any) (string, error) {
	switch k := v.(type) {
	case string:
		if k == "" {
			return "", errors.New("empty key")
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

// apply applies one message and returns what it emits.
func (j *join) apply(s *state, msg *service.Message) (service.MessageBatch, error) {
	var t *table
	for _, cand := range j.tables {
		// BloblangQuery (not QueryValue): checks read metadata with @.
		res, err := msg.BloblangQuery(cand.check)
		if err != nil {
			return nil, fmt.Errorf("cdc_join: check of table %s: %w", cand.name, err)
		}
		if v, err := res.AsStructured(); err == nil && v == true {
			t = cand
			break
		}
	}
	if t == nil {
		return nil, errors.New("cdc_join: the message matches no table")
	}
	op, _ := msg.MetaGet("cdc_op")
	version, ok := metaInt(msg, "cdc_version")
	if !ok {
		return nil, fmt.Errorf("cdc_join: %s message without an integer cdc_version", t.name)
	}
	raw, err := msg.AsStructured()
	if err != nil {
		return nil, fmt.Errorf("cdc_join: %s body is not structured: %w", t.name, err)
	}
	body, ok := raw.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("cdc_join: %s body is not an object", t.name)
	}
	kv, err := t.key.Query(body)
	if err != nil {
		return nil, fmt.Errorf("cdc_join: key of %s: %w", t.name, err)
	}
	key, err := keyString(kv)
	if err != nil {
		return nil, fmt.Errorf("cdc_join: key of %s: %w", t.name, err)
	}
	var deleted bool
	switch op {
	case "r", "c", "u":
	case "d":
		deleted = true
	default:
		return nil, fmt.Errorf("cdc_join: unsupported cdc_op %q on %s", op, t.name)
	}

	c := &change{}
	var prev *rowState
	if t.stored {
		if prev, err = s.row(t, key); err != nil {
			return nil, err
		}
		if prev != nil && version < prev.Version {
			j.stale.Incr(1)
			return nil, nil // older than what we have: a replay or a reordering
		}
	}
	next := &rowState{Version: version, Body: body}
	if deleted {
		next = &rowState{Version: version, Deleted: true, DeletedAt: s.now.Unix()}
	}
	if prev != nil {
		next.Parents, next.Emitted = prev.Parents, prev.Emitted
	}

	for _, r := range j.relations {
		var err error
		switch {
		case r.child == t && r.kind == "latest_state":
			err = j.childOfLatest(s, c, msg, r, key, prev, next)
		case r.child == t:
			err = j.childOfLookup(s, c, msg, r, key, version, body, deleted)
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
		if err := c.put(rowBucket(t), []byte(key), next); err != nil {
			return nil, err
		}
	}
	for _, w := range c.writes {
		var err error
		if w.value == nil {
			err = s.tx.Delete(w.bucket, w.key)
		} else {
			err = s.tx.Put(w.bucket, w.key, w.value)
		}
		if err != nil {
			return nil, err
		}
	}
	return c.out, nil
}

// row builds a target row with the relation's mapping.
func (r *relation) row(parent, child *rowState) (map[string]any, error) {
	v, err := r.mapping.Query(map[string]any{
		"parent": parent.Body, "child": child.Body,
		"parent_version": parent.Version, "child_version": child.Version,
	})
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
	v, err := r.keyMapper.Query(map[string]any{"child": child})
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
func (j *join) childOfLatest(s *state, c *change, msg *service.Message, r *relation, key string, prev, next *rowState) error {
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
			if err := emitDelete(c, msg, r, emitted); err != nil {
				return err
			}
			delete(next.Emitted, r.name)
		}
		return nil
	}

	pkv, err := r.parentKey.Query(next.Body)
	if err != nil {
		return fmt.Errorf("cdc_join: parent_key of %s: %w", r.name, err)
	}
	parentKey, err := keyString(pkv)
	if err != nil {
		return fmt.Errorf("cdc_join: parent_key of %s: %w", r.name, err)
	}
	_, newKeyJSON, err := r.targetKey(next.Body)
	if err != nil {
		return err
	}
	if hadParent && oldParent != parentKey {
		c.del(idxBucket(r), pair(oldParent, key))
	}
	c.writes = append(c.writes, write{idxBucket(r), pair(parentKey, key), []byte{}})
	next.Parents[r.name] = parentKey

	// A row emitted under another key (its key columns changed) goes.
	if emitted != "" && emitted != newKeyJSON {
		if err := emitDelete(c, msg, r, emitted); err != nil {
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
		j.held.Incr(1)
		if emitted != "" {
			if err := emitDelete(c, msg, r, emitted); err != nil {
				return err
			}
			delete(next.Emitted, r.name)
		}
		return nil
	}
	row, err := r.row(parent, next)
	if err != nil {
		return err
	}
	c.emit(msg, r.name, "upsert", row)
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
		if child == nil {
			continue
		}
		child.Emitted = copyMap(child.Emitted)
		if next.Deleted {
			if e := child.Emitted[r.name]; e != "" {
				if err := emitDelete(c, msg, r, e); err != nil {
					return err
				}
				delete(child.Emitted, r.name)
			}
		} else {
			row, err := r.row(next, child)
			if err != nil {
				return err
			}
			_, keyJSON, err := r.targetKey(child.Body)
			if err != nil {
				return err
			}
			c.emit(msg, r.name, "upsert", row)
			child.Emitted[r.name] = keyJSON
		}
		if err := c.put(rowBucket(r.child), []byte(ck), child); err != nil {
			return err
		}
	}
	return nil
}

// childOfLookup enriches a lookup child from its parent, or holds it.
func (j *join) childOfLookup(s *state, c *change, msg *service.Message, r *relation, key string, version int64, body map[string]any, deleted bool) error {
	if deleted {
		keyCols, _, err := r.targetKey(body)
		if err != nil {
			return err
		}
		c.emit(msg, r.name, "delete", keyCols)
		// A held event of this key never arrives now: find and drop it.
		return s.tx.Scan(heldBucket(r), nil, func(k, _ []byte) error {
			if i := len(k) - len(key); i > 0 && k[i-1] == 0 && string(k[i:]) == key {
				c.del(heldBucket(r), append([]byte{}, k...))
			}
			return nil
		})
	}
	pkv, err := r.parentKey.Query(body)
	if err != nil {
		return fmt.Errorf("cdc_join: parent_key of %s: %w", r.name, err)
	}
	parentKey, err := keyString(pkv)
	if err != nil {
		return fmt.Errorf("cdc_join: parent_key of %s: %w", r.name, err)
	}
	parent, err := s.live(r.parent, parentKey)
	if err != nil {
		return err
	}
	if parent == nil {
		j.held.Incr(1)
		return c.put(heldBucket(r), pair(parentKey, key), heldEvent{Version: version, Body: body})
	}
	row, err := r.row(parent, &rowState{Version: version, Body: body})
	if err != nil {
		return err
	}
	c.emit(msg, r.name, "upsert", row)
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
		row, err := r.row(parent, &rowState{Version: h.Version, Body: h.Body})
		if err != nil {
			return err
		}
		c.emit(msg, r.name, "upsert", row)
		c.del(heldBucket(r), append([]byte{}, k...))
		return nil
	})
}

func emitDelete(c *change, msg *service.Message, r *relation, keyJSON string) error {
	var keyCols map[string]any
	if err := json.Unmarshal([]byte(keyJSON), &keyCols); err != nil {
		return fmt.Errorf("cdc_join: stored key of %s is corrupt: %w", r.name, err)
	}
	c.emit(msg, r.name, "delete", keyCols)
	return nil
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
