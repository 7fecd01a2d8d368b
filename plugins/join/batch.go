package join

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"

	"github.com/odsflow/odsflow/internal/statestore"
)

// A batch goes through three phases. Only the second touches the state,
// and it runs alone (the state is one sequence of changes); the other two
// are the Bloblang work, which needs no state and runs on every core:
//
//  1. prepare (parallel): each message's table (the checks), op, version,
//     body, key, and per relation its parent key and target key columns;
//  2. apply (sequential, in one store transaction): the state changes, and
//     the outputs they imply, with joined rows left to map;
//  3. map (parallel, before the transaction commits): the relations'
//     mappings build the joined rows. A mapping that fails makes its
//     message errored; since the state must then not hold that message's
//     change, the transaction is abandoned and the batch applied again
//     without it (rare: bad input).

// prepared is a message as phase 1 read it.
type prepared struct {
	msg     *service.Message
	t       *table
	op      string
	version int64
	body    map[string]any
	key     string
	deleted bool
	links   []link // per relation (j.relations), where t is its child
	err     error  // the message is bad input: errored, no state change
	// passthrough: the message came errored; it is passed on unchanged.
	passthrough bool
	// tombstone: a tombstone debezium_unwrap marked: counted in the
	// state's progress (its offset), dropped.
	tombstone bool
}

// link is what a child change needs of one relation.
type link struct {
	parentKey string         // not for deletes
	keyCols   map[string]any // lookup deletes: the target key columns
	keyJSON   string         // latest_state upserts: the target key (JSON)
}

// output is one message the batch emits, in order: a ready row, a joined
// row still to map (rel set), or the source message errored (err set).
type output struct {
	src int // index of the source message in the batch
	msg *service.Message
	// table and op become the row's ods_table and ods_op: strings, held
	// as metadata values (a relation's name is boxed once, not per row).
	table, op     any
	row           map[string]any
	rel           *relation
	parent, child *rowState
	// derived: a joined row emitted for a change of another row than the
	// child (its parent's change, a release, a replay); childKey names it.
	derived     bool
	childKey    string
	err         error
	passthrough bool // the source message, unchanged
}

// prepare is phase 1 for one message.
func (j *join) prepare(msg *service.Message) *prepared {
	p := &prepared{msg: msg}
	p.err = j.prepareInto(p)
	return p
}

func (j *join) prepareInto(p *prepared) error {
	msg := p.msg
	if msg.GetError() != nil {
		p.passthrough = true // an earlier processor failed it: not ours to apply
		return nil
	}
	if t, _ := msg.MetaGetMut("cdc_tombstone"); t == true {
		if _, hasOp := msg.MetaGetMut("cdc_op"); !hasOp {
			p.tombstone = true // debezium_unwrap's tombstones: mark
			return nil
		}
	}
	for _, cand := range j.tables {
		match, err := cand.check.matches(msg)
		if err != nil {
			return fmt.Errorf("cdc_join: check of table %s: %w", cand.name, err)
		}
		if match {
			p.t = cand
			break
		}
	}
	t := p.t
	if t == nil {
		return errors.New("cdc_join: the message matches no table")
	}
	p.op, _ = msg.MetaGet("cdc_op")
	var ok bool
	if p.version, ok = metaInt(msg, "cdc_version"); !ok {
		return fmt.Errorf("cdc_join: %s message without an integer cdc_version", t.name)
	}
	if p.version < 1 {
		return fmt.Errorf("cdc_join: %s message with cdc_version %d: versions start at 1", t.name, p.version)
	}
	switch p.op {
	case "t":
		return nil // a truncate has no body, no key
	case "r", "c", "u":
	case "d":
		p.deleted = true
	default:
		return fmt.Errorf("cdc_join: unsupported cdc_op %q on %s", p.op, t.name)
	}
	raw, err := msg.AsStructured()
	if err != nil {
		return fmt.Errorf("cdc_join: %s body is not structured: %w", t.name, err)
	}
	if p.body, ok = raw.(map[string]any); !ok {
		return fmt.Errorf("cdc_join: %s body is not an object", t.name)
	}
	kv, err := t.key.value(p.body)
	if err != nil {
		return fmt.Errorf("cdc_join: key of %s: %w", t.name, err)
	}
	if p.key, err = keyString(kv); err != nil {
		return fmt.Errorf("cdc_join: key of %s: %w", t.name, err)
	}
	p.links = make([]link, len(j.relations))
	for i, r := range j.relations {
		if r.child != t {
			continue
		}
		l := &p.links[i]
		if p.deleted {
			if r.kind == "lookup" {
				if l.keyCols, _, err = r.targetKey(p.body); err != nil {
					return err
				}
			}
			continue
		}
		pkv, err := r.parentKey.value(p.body)
		if err != nil {
			return fmt.Errorf("cdc_join: parent_key of %s: %w", r.name, err)
		}
		if l.parentKey, err = keyString(pkv); err != nil {
			return fmt.Errorf("cdc_join: parent_key of %s: %w", r.name, err)
		}
		if r.kind == "latest_state" {
			if _, l.keyJSON, err = r.targetKey(p.body); err != nil {
				return err
			}
		}
	}
	return nil
}

// errRemap abandons a batch's transaction after a mapping failed.
var errRemap = errors.New("a mapping failed: applying the batch again without its message")

// ProcessBatch applies the batch to the state in one transaction, and
// returns the rows it implies once that transaction is on disk.
func (j *join) ProcessBatch(ctx context.Context, batch service.MessageBatch) ([]service.MessageBatch, error) {
	j.mu.Lock()
	defer j.mu.Unlock()

	parts, cluster := partitionsOf(batch)
	if err := j.checkHistory(ctx, parts, cluster); err != nil {
		return nil, err
	}

	preps := make([]*prepared, len(batch))
	parallel(len(batch), func(i int) { preps[i] = j.prepare(batch[i]) })
	pre := j.prefetch(ctx, preps)

	// Most messages emit one row; a parent's change, one per child.
	outs := make([]output, 0, len(preps)+len(preps)/4)
	backoff := 100 * time.Millisecond
	for {
		outs = outs[:0]
		var failed map[int]error
		var st *state
		err := j.store.Update(ctx, func(tx statestore.Tx) error {
			st = &state{tx: tx, now: time.Now(), retention: j.retention, pre: pre, written: map[string]struct{}{}}
			for i, p := range preps {
				if p.tombstone {
					continue
				}
				if p.passthrough {
					outs = append(outs, output{src: i, msg: p.msg, passthrough: true})
					continue
				}
				if p.err != nil {
					outs = append(outs, output{src: i, msg: p.msg, err: p.err})
					continue
				}
				emitted, err := j.apply(st, i, p)
				if err != nil && !messageFault(err) {
					// The state's (a read that failed, a corrupt entry):
					// not the message's. The batch waits, as for a write.
					return err
				}
				if err != nil {
					// Some of the message's writes may be in the
					// transaction already: apply the batch again without it.
					failed = map[int]error{i: err}
					return errRemap
				}
				outs = append(outs, emitted...)
			}
			if err := j.recordProgress(tx, parts, cluster); err != nil {
				return err
			}
			var err error
			if failed, err = st.flushRows(); err != nil || len(failed) > 0 {
				return cmp.Or(err, errRemap)
			}
			if failed = j.mapRows(outs); len(failed) > 0 {
				return errRemap
			}
			return nil
		})
		if errors.Is(err, errRemap) {
			for i, e := range failed {
				preps[i].err = e
			}
			continue
		}
		if err == nil {
			j.rows.forget(st.writtenKeys)
			j.count(st)
			if j.history.cluster == "" {
				j.history.cluster = cluster // recorded with the batch
			}
			break
		}
		// The state must be read and written before anything is passed
		// on: hold the batch (back-pressure) until the store works again.
		j.log.Errorf("cdc_join: reading or writing the state failed, retrying in %v: %v", backoff, err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("cdc_join: state not written: %w", err)
		case <-time.After(backoff):
		}
		if backoff *= 2; backoff > 5*time.Second {
			backoff = 5 * time.Second
		}
	}
	outs = oneDeadLetterPerSource(outs)
	if len(outs) == 0 {
		return nil, nil
	}
	// A source message whose one output is a row becomes that row: a copy
	// would clone its metadata, the largest part of a message. Copies go
	// first, since they share the source's metadata until they write their
	// own.
	outputsOf := make([]int, len(batch))
	for i := range outs {
		outputsOf[outs[i].src]++
	}
	takesOver := func(o *output) bool { return outputsOf[o.src] == 1 && o.err == nil && !o.passthrough }
	out := make(service.MessageBatch, len(outs))
	parallel(len(outs), func(i int) {
		if !takesOver(&outs[i]) {
			out[i] = j.message(&outs[i])
		}
	})
	parallel(len(outs), func(i int) {
		if o := &outs[i]; takesOver(o) {
			o.msg.SetStructuredMut(o.row)
			o.msg.MetaSetMut("ods_table", o.table)
			o.msg.MetaSetMut("ods_op", o.op)
			out[i] = o.msg
		}
	})
	return []service.MessageBatch{out}, nil
}

// messageFault tells an error of applying a message that is the message's
// own: its values cannot be encoded into the state (a NaN, a value JSON
// cannot hold). Any other (a read of the state failing, a stored entry
// that does not decode) is the state's.
func messageFault(err error) bool {
	var unsupported *json.UnsupportedValueError
	var badType *json.UnsupportedTypeError
	var marshaler *json.MarshalerError
	return errors.As(err, &unsupported) || errors.As(err, &badType) || errors.As(err, &marshaler)
}

// oneDeadLetterPerSource keeps, of the rows re-emitted for one source
// message whose mappings failed (a parent's change, for each child), the
// first, its error counting the others: each becomes a copy of the source
// record on the dead-letter path, and one copy is what a replay needs (it
// emits every row again).
func oneDeadLetterPerSource(outs []output) []output {
	var first, more map[int]int // source → its first failed row (in kept); how many more
	kept := outs[:0]
	for _, o := range outs {
		if o.err != nil && o.derived {
			if first == nil {
				first, more = map[int]int{}, map[int]int{}
			}
			if _, seen := first[o.src]; seen {
				more[o.src]++
				continue
			}
			first[o.src] = len(kept)
		}
		kept = append(kept, o)
	}
	for src, n := range more {
		f := &kept[first[src]]
		f.err = fmt.Errorf("%w (and %d more of its rows)", f.err, n)
	}
	return kept
}

// mapRows runs the mappings of the joined rows in outs (phase 3), and
// returns, per source message, the first mapping error.
func (j *join) mapRows(outs []output) map[int]error {
	var mu sync.Mutex
	var failed map[int]error
	parallel(len(outs), func(i int) {
		o := &outs[i]
		if o.rel == nil || o.row != nil {
			return
		}
		row, err := o.rel.row(o.parent, o.child)
		if err != nil && o.derived {
			// A stored child's row re-emitted for another message (its
			// parent's change, a release): that message is fine, the row is
			// not. It goes to the dead-letter path on its own, naming the
			// child; the source message's other rows go on.
			o.err = fmt.Errorf("cdc_join: the %s row of %s %v, emitted for this change of its parent, cannot be mapped: %w",
				o.rel.name, o.rel.child.name, o.childKey, err)
			return
		}
		if err != nil {
			mu.Lock()
			if failed == nil {
				failed = map[int]error{}
			}
			if failed[o.src] == nil {
				failed[o.src] = err
			}
			mu.Unlock()
			return
		}
		o.row = row
	})
	return failed
}

// message builds an output's message.
func (j *join) message(o *output) *service.Message {
	if o.passthrough {
		return o.msg
	}
	if o.err != nil && o.derived {
		j.errored.Incr(1)
		m := o.msg.Copy() // the source message's other rows go on
		m.SetError(o.err)
		return m
	}
	if o.err != nil {
		j.errored.Incr(1)
		o.msg.SetError(o.err)
		return o.msg // unchanged, errored: to the dead-letter path
	}
	m := o.msg.Copy()
	m.SetStructuredMut(o.row)
	m.MetaSetMut("ods_table", o.table)
	m.MetaSetMut("ods_op", o.op)
	return m
}

// parallelMin is the fewest items worth spreading over goroutines.
const parallelMin = 64

// parallel calls fn(i) for i in [0, n) on up to GOMAXPROCS goroutines, in
// contiguous chunks, and returns when every call has.
func parallel(n int, fn func(i int)) {
	parallelChunks(n, func(start, end int) {
		for i := start; i < end; i++ {
			fn(i)
		}
	})
}

// parallelChunks calls fn on contiguous chunks covering [0, n), one per
// goroutine (up to GOMAXPROCS, at least parallelMin items each), and
// returns when every call has; fn(0, n) on the caller's goroutine when n
// is small.
func parallelChunks(n int, fn func(start, end int)) {
	workers := min(runtime.GOMAXPROCS(0), n/parallelMin)
	if workers <= 1 {
		if n > 0 {
			fn(0, n)
		}
		return
	}
	var wg sync.WaitGroup
	chunk := (n + workers - 1) / workers
	for start := 0; start < n; start += chunk {
		end := min(start+chunk, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(start, end)
		}()
	}
	wg.Wait()
}

// count adds a committed batch's counts to the metrics and logs its
// warnings (once: a batch may have been applied more than once).
func (j *join) count(st *state) {
	j.stale.Incr(st.counts.stale)
	j.held.Incr(st.counts.held)
	j.truncates.Incr(st.counts.truncates)
	for _, w := range st.warnings {
		j.log.Warn(w)
	}
}
