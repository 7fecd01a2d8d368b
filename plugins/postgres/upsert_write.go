package postgres

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redpanda-data/benthos/v4/public/service"
)

// rowChange is one message as a change of one table's row.
type rowChange struct {
	idx   int // in the batch
	table *tableConf
	op    byte // 'u' upsert, 'd' delete, 't' truncate
	key   string
	// vals: for an upsert, per table column; for a delete, per delColumns;
	// for a truncate, per truncCols. nil: NULL.
	vals      []*string
	truncCols []string
}

// prepareChange reads a message into a change, or says why it cannot be.
func (u *upsert) prepareChange(idx int, msg *service.Message) (*rowChange, error) {
	c := &rowChange{idx: idx}
	// MetaGetMut: the join sets these as strings, which MetaGet would
	// render again.
	odsTable := metaString(msg, "ods_table")
	for _, t := range u.tables {
		if t.check != nil {
			res, err := msg.BloblangQuery(t.check)
			if err != nil {
				return nil, fmt.Errorf("pg_upsert: check of table %s: %w", t.name, err)
			}
			if v, err := res.AsStructured(); err == nil && v == true {
				c.table = t
				break
			}
			continue
		}
		if odsTable == t.odsTable {
			c.table = t
			break
		}
	}
	t := c.table
	if t == nil {
		return nil, fmt.Errorf("pg_upsert: no table for ods_table %q", odsTable)
	}
	if u.deleteQ != nil {
		res, err := msg.BloblangQuery(u.deleteQ)
		if err != nil {
			return nil, fmt.Errorf("pg_upsert: delete_check: %w", err)
		}
		v, err := res.AsStructured()
		if b, ok := v.(bool); err != nil || !ok {
			return nil, fmt.Errorf("pg_upsert: delete_check gave %v, want a boolean", v)
		} else if b {
			c.op = 'd'
		} else {
			c.op = 'u'
		}
	} else {
		switch op := metaString(msg, "ods_op"); op {
		case "", "upsert":
			c.op = 'u'
		case "delete":
			c.op = 'd'
		case "truncate":
			c.op = 't'
		default:
			return nil, fmt.Errorf("pg_upsert: unknown ods_op %q (want upsert, delete or truncate)", op)
		}
	}
	var raw any
	var err error
	if t.argsMap != nil {
		res, qerr := msg.BloblangQuery(t.argsMap)
		if qerr != nil {
			return nil, fmt.Errorf("pg_upsert: args_mapping of %s: %w", t.name, qerr)
		}
		raw, err = res.AsStructured()
	} else {
		raw, err = msg.AsStructured()
	}
	if err != nil {
		return nil, fmt.Errorf("pg_upsert: %s: the body is not structured: %w", t.name, err)
	}
	row, ok := raw.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("pg_upsert: %s: the row is a %T, want an object", t.name, raw)
	}
	switch c.op {
	case 't':
		for col, v := range row {
			if !contains(t.versions, col) {
				return nil, fmt.Errorf("pg_upsert: truncate of %s: %q is not a version column", t.name, col)
			}
			s, ok, err := textFor(v, t.types[col])
			if err != nil || !ok {
				return nil, fmt.Errorf("pg_upsert: truncate of %s: version %s: want a value, got %v", t.name, col, v)
			}
			c.truncCols = append(c.truncCols, col)
			c.vals = append(c.vals, &s)
		}
		return c, nil
	case 'd':
		if c.vals, err = values(t, row, t.delColumns, false); err != nil {
			return nil, err
		}
	default:
		if c.vals, err = values(t, row, t.columns, true); err != nil {
			return nil, err
		}
		for _, v := range t.versions {
			if c.vals[indexOf(t.columns, v)] == nil {
				return nil, fmt.Errorf("pg_upsert: upsert of %s without its version column %s", t.name, v)
			}
		}
	}
	var key strings.Builder
	for i, k := range t.keys {
		v := c.vals[indexOf(colsOf(t, c.op), k)]
		if v == nil {
			return nil, fmt.Errorf("pg_upsert: %s of %s without its key column %s", opName(c.op), t.name, k)
		}
		if i > 0 {
			key.WriteByte(0)
		}
		key.WriteString(canonicalKey(*v, t.types[k]))
	}
	c.key = key.String()
	return c, nil
}

// metaString is a metadata value as MetaGet renders it: "" when missing.
func metaString(msg *service.Message, key string) string {
	v, ok := msg.MetaGetMut(key)
	if !ok {
		return ""
	}
	if s, ok := v.(string); ok {
		return s
	}
	s, _ := msg.MetaGet(key)
	return s
}

func opName(op byte) string {
	switch op {
	case 'd':
		return "delete"
	case 't':
		return "truncate"
	}
	return "upsert"
}

func colsOf(t *tableConf, op byte) []string {
	if op == 'd' {
		return t.delColumns
	}
	return t.columns
}

func values(t *tableConf, row map[string]any, cols []string, strict bool) ([]*string, error) {
	out := make([]*string, len(cols))
	texts := make([]string, len(cols)) // one allocation for the row's values
	for i, c := range cols {
		v, present := row[c]
		if !present && strict {
			// Most likely a misspelt or forgotten mapping line: writing
			// NULL would blank the column of every row without a word.
			return nil, fmt.Errorf("pg_upsert: %s: the row has no %s (a column of the table's columns; set it to null to write NULL)", t.name, c)
		}
		s, ok, err := textFor(v, t.types[c])
		if err != nil {
			return nil, fmt.Errorf("pg_upsert: %s.%s: %w", t.name, c, err)
		}
		if ok {
			texts[i] = s
			out[i] = &texts[i]
		}
	}
	return out, nil
}

func contains(list []string, s string) bool { return indexOf(list, s) >= 0 }

func indexOf(list []string, s string) int {
	for i, x := range list {
		if x == s {
			return i
		}
	}
	return -1
}

// textFor renders a value as the text input of a column of type typ: JSON
// for json/jsonb (a string is taken as JSON text already, as Debezium
// sends json columns), an array literal for arrays, else textOf. ok is
// false for NULL.
func textFor(v any, typ colType) (s string, ok bool, err error) {
	if v == nil {
		return "", false, nil
	}
	if typ.json() {
		if s, ok := v.(string); ok {
			return s, true, nil
		}
		b, err := json.Marshal(v)
		if err != nil {
			return "", false, fmt.Errorf("value of type %T: %w", v, err)
		}
		return string(b), true, nil
	}
	if typ.name == "timestamp" {
		if str, ok := v.(string); ok && hasUTCOffset(str) {
			// A timestamp without time zone ignores an offset in its
			// input: the UTC wall clock, as a time.Time value gets.
			if t, err := time.Parse(time.RFC3339Nano, str); err == nil {
				return t.UTC().Format(time.RFC3339Nano), true, nil
			}
		}
	}
	if typ.category == 'A' {
		if list, ok := v.([]any); ok {
			var b strings.Builder
			if err := arrayLiteral(&b, list); err != nil {
				return "", false, err
			}
			return b.String(), true, nil
		}
	}
	return textOf(v)
}

// hasUTCOffset: s ends in a numeric UTC offset (±hh:mm), as an RFC 3339
// time not in Z does.
func hasUTCOffset(s string) bool {
	n := len(s)
	return n > 6 && (s[n-6] == '+' || s[n-6] == '-') && s[n-3] == ':'
}

// arrayLiteral writes list as a PostgreSQL array literal: {"a","b",NULL}.
func arrayLiteral(b *strings.Builder, list []any) error {
	b.WriteByte('{')
	for i, e := range list {
		if i > 0 {
			b.WriteByte(',')
		}
		if inner, ok := e.([]any); ok {
			if err := arrayLiteral(b, inner); err != nil {
				return err
			}
			continue
		}
		s, ok, err := textOf(e)
		if err != nil {
			return err
		}
		if !ok {
			b.WriteString("NULL")
			continue
		}
		b.WriteByte('"')
		for _, r := range s {
			if r == '"' || r == '\\' {
				b.WriteByte('\\')
			}
			b.WriteRune(r)
		}
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return nil
}

// textOf renders a value as PostgreSQL's text input for it; the column's
// input function reads it (COPY), so a value the type refuses is a data
// exception (22xxx) of its row. ok is false for NULL.
func textOf(v any) (s string, ok bool, err error) {
	switch x := v.(type) {
	case nil:
		return "", false, nil
	case string:
		s = x
	case json.Number:
		s = x.String()
	case bool:
		s = strconv.FormatBool(x)
	case int:
		s = strconv.Itoa(x)
	case int64:
		s = strconv.FormatInt(x, 10)
	case int32:
		s = strconv.FormatInt(int64(x), 10)
	case int16:
		s = strconv.FormatInt(int64(x), 10)
	case int8:
		s = strconv.FormatInt(int64(x), 10)
	case uint64:
		s = strconv.FormatUint(x, 10)
	case uint32:
		s = strconv.FormatUint(uint64(x), 10)
	case uint:
		s = strconv.FormatUint(uint64(x), 10)
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			s = strconv.FormatFloat(x, 'g', -1, 64) // NaN, +Inf: PostgreSQL's float input takes them
		} else {
			s = strconv.FormatFloat(x, 'f', -1, 64)
		}
	case float32:
		s = strconv.FormatFloat(float64(x), 'f', -1, 32)
	case time.Time:
		s = x.UTC().Format(time.RFC3339Nano) // a timestamp without time zone gets the UTC wall clock
	case []byte:
		s = `\x` + hex.EncodeToString(x)
	default:
		b, err := json.Marshal(x)
		if err != nil {
			return "", false, fmt.Errorf("value of type %T: %w", v, err)
		}
		s = string(b)
	}
	if strings.IndexByte(s, 0) >= 0 {
		return "", false, errors.New("a text value holds a NUL byte, which PostgreSQL cannot store")
	}
	return s, true, nil
}

// WriteBatch writes the batch in one transaction, retrying transient
// failures until ctx ends; rows PostgreSQL refuses come back as a
// service.BatchError naming their messages.
func (u *upsert) WriteBatch(ctx context.Context, batch service.MessageBatch) error {
	pool := u.currentPool()
	if pool == nil {
		return service.ErrNotConnected
	}
	failed := map[int]error{}
	changes := make([]*rowChange, 0, len(batch))
	for i, msg := range batch {
		c, err := u.prepareChange(i, msg)
		if err != nil {
			failed[i] = err
			continue
		}
		changes = append(changes, c)
	}
	backoff := u.retry.initial
	bisect := false
	for {
		res, err := u.writeOnce(ctx, pool, changes, bisect)
		if err == nil {
			u.metrics.written.Incr(res.written)
			u.metrics.deleted.Incr(res.deleted)
			u.metrics.refused.Incr(res.refused)
			for i, e := range res.failed {
				failed[i] = e
			}
			break
		}
		if errors.Is(err, errRowRefused) {
			bisect = true // find the rows, in a new transaction
			continue
		}
		if ctx.Err() != nil {
			return fmt.Errorf("pg_upsert: batch not written: %w", err)
		}
		if !transient(err) && !environmental(err) && !bisect {
			// Not a known row error, but perhaps one message's doing (a
			// statement timeout on a large batch, an error class of a
			// user's trigger): bisecting tells (see writeOnce).
			bisect = true
			continue
		}
		if pool = u.currentPool(); pool == nil {
			return service.ErrNotConnected // closed meanwhile
		}
		u.metrics.retries.Incr(1)
		u.retriesSeen.Add(1)
		// Not a row's fault, so not the dead-letter path's business: the
		// batch waits (and its offsets with it) until it can be written.
		if transient(err) {
			u.log.Warnf("pg_upsert: transient failure, retrying the batch in %v: %v", backoff, err)
		} else {
			u.log.Errorf("pg_upsert: the batch (%s) cannot be written, retrying in %v until it can (this needs an operator): %v", describeBatch(batch), backoff, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pg_upsert: batch not written: %w", err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, u.retry.max)
	}
	u.recordFreshness(batch, failed)
	if len(failed) == 0 {
		return nil
	}
	u.metrics.rowErrors.Incr(int64(len(failed)))
	var first error
	for _, e := range failed {
		first = e
		break
	}
	berr := service.NewBatchError(batch, fmt.Errorf("pg_upsert: %d of %d rows refused, e.g.: %w", len(failed), len(batch), first))
	for i, e := range failed {
		berr = berr.Failed(i, e)
	}
	return berr
}

// errRowRefused: a row error in a transaction that was not bisecting.
var errRowRefused = errors.New("a row was refused")

// writeResult is what a committed write did.
type writeResult struct {
	written, deleted, refused int64
	failed                    map[int]error
	// unattributed: the failed messages whose failure is not known to be
	// their data's (an error outside rowError's classes).
	unattributed map[int]bool
	collected    map[*tableConf]map[string]map[string]struct{} // table → column → values
}

func newWriteResult() *writeResult {
	return &writeResult{failed: map[int]error{}, unattributed: map[int]bool{}, collected: map[*tableConf]map[string]map[string]struct{}{}}
}

func (r *writeResult) merge(o *writeResult) {
	r.written += o.written
	r.deleted += o.deleted
	r.refused += o.refused
	for t, cols := range o.collected {
		for c, vals := range cols {
			for v := range vals {
				r.collect(t, c, v)
			}
		}
	}
}

func (r *writeResult) collect(t *tableConf, col, v string) {
	cols := r.collected[t]
	if cols == nil {
		cols = map[string]map[string]struct{}{}
		r.collected[t] = cols
	}
	vals := cols[col]
	if vals == nil {
		vals = map[string]struct{}{}
		cols[col] = vals
	}
	vals[v] = struct{}{}
}

// writeOnce writes the changes in one transaction. Not bisecting, a row
// error aborts it (errRowRefused); bisecting, the rows are isolated.
func (u *upsert) writeOnce(ctx context.Context, pool *pgxpool.Pool, changes []*rowChange, bisect bool) (*writeResult, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Release()
	if err := u.ensureTemps(ctx, conn); err != nil {
		return nil, err
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { _ = tx.Rollback(context.Background()) }() // after Commit: a no-op
	delete(conn.Conn().PgConn().CustomData(), dirtyTemps)    // a new transaction: every temp table is empty
	// A deferred constraint would only fail at COMMIT, where no row can be
	// told from the others: check every constraint at its statement.
	if _, err := tx.Exec(ctx, "SET CONSTRAINTS ALL IMMEDIATE"); err != nil {
		return nil, err
	}
	res := newWriteResult()
	if bisect {
		// Only the changes a batch writes are split: a change and the one
		// that supersedes it must not land in different parts.
		changes = winners(changes)
		if err := u.applyBisect(ctx, tx, changes, res); err != nil {
			return nil, err
		}
		if len(changes) > 0 && len(res.failed) == len(changes) && len(res.unattributed) == len(changes) {
			// No message could be written, and no failure is of a row
			// error's class: the database's or the configuration's
			// problem (a missing function), not the messages'. Hold the
			// batch. (A batch of one message failing so is held too:
			// there is nothing to compare it with.)
			for _, err := range res.failed {
				return nil, fmt.Errorf("no message of the batch can be written, and not for its data: %w", err)
			}
		}
	} else if err := u.apply(ctx, tx, changes, res); err != nil {
		if rowError(err) {
			return nil, fmt.Errorf("%w: %w", errRowRefused, err)
		}
		return nil, err
	}
	if !bisect { // bisecting, each part ran them in its savepoint
		if err := u.runAfter(ctx, tx, res); err != nil {
			if rowError(err) { // a message's data made one fail: find it
				return nil, fmt.Errorf("%w: %w", errRowRefused, err)
			}
			return nil, err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	return res, nil
}

// describeBatch names a held batch's messages for the operator: where
// each came from (kafka_topic, kafka_partition, kafka_offset) when there
// are few, else how many. A batch of one message is held when its failure
// cannot be told from the database's (writeOnce): its origin says which
// record to look at.
func describeBatch(batch service.MessageBatch) string {
	if len(batch) > 3 {
		return fmt.Sprintf("%d messages", len(batch))
	}
	names := make([]string, len(batch))
	for i, msg := range batch {
		topic, _ := msg.MetaGet("kafka_topic")
		part, _ := msg.MetaGet("kafka_partition")
		off, _ := msg.MetaGet("kafka_offset")
		if topic == "" {
			names[i] = fmt.Sprintf("message %d", i)
			continue
		}
		names[i] = fmt.Sprintf("%s/%s@%s", topic, part, off)
	}
	return strings.Join(names, ", ")
}

// runAfter runs the after_batch statements for what res collected.
func (u *upsert) runAfter(ctx context.Context, tx pgx.Tx, res *writeResult) error {
	for i, a := range u.after {
		vals := map[string]struct{}{}
		for _, t := range a.tables {
			for v := range res.collected[t][a.column] {
				vals[v] = struct{}{}
			}
		}
		if len(vals) == 0 {
			continue
		}
		list := make([]string, 0, len(vals))
		for v := range vals {
			list = append(list, v)
		}
		args := make([]any, 0, 1+len(a.args))
		args = append(args, list)
		for _, arg := range a.args {
			args = append(args, arg)
		}
		if _, err := tx.Exec(ctx, a.statement, args...); err != nil {
			return fmt.Errorf("after_batch[%d]: %w", i, err)
		}
	}
	return nil
}

// ensureTemps creates the temporary tables once per connection.
func (u *upsert) ensureTemps(ctx context.Context, conn *pgxpool.Conn) error {
	data := conn.Conn().PgConn().CustomData()
	if data["odsflow_pg_upsert_temps"] == u {
		return nil
	}
	var sql []string
	for _, t := range u.tables {
		sql = append(sql, t.createTemps)
	}
	if _, err := conn.Exec(ctx, strings.Join(sql, "; ")); err != nil {
		return fmt.Errorf("creating temporary tables: %w", err)
	}
	data["odsflow_pg_upsert_temps"] = u
	return nil
}

// applyBisect applies the changes, and runs the after_batch statements for
// them, in a savepoint; when PostgreSQL refuses a row (or an after_batch
// statement fails on what the rows hold), it rolls the savepoint back and
// applies each half the same way, down to the single messages it then
// reports as failed. A value both halves affect is refreshed after each,
// the last time with both applied.
func (u *upsert) applyBisect(ctx context.Context, tx pgx.Tx, changes []*rowChange, res *writeResult) error {
	if len(changes) == 0 {
		return nil
	}
	sp, err := tx.Begin(ctx)
	if err != nil {
		return err
	}
	part := newWriteResult()
	err = u.apply(ctx, sp, changes, part)
	if err == nil {
		err = u.runAfter(ctx, sp, part)
	}
	if err == nil {
		if err := sp.Commit(ctx); err != nil {
			return err
		}
		res.merge(part)
		return nil
	}
	if rerr := sp.Rollback(ctx); rerr != nil {
		return fmt.Errorf("%w (and rolling back to the savepoint: %w)", err, rerr)
	}
	if transient(err) || environmental(err) {
		return err // the connection's, the server's: the whole transaction again
	}
	if len(changes) == 1 {
		res.failed[changes[0].idx] = fmt.Errorf("pg_upsert: %s of %s refused: %w", opName(changes[0].op), changes[0].table.name, err)
		if !rowError(err) {
			res.unattributed[changes[0].idx] = true
		}
		return nil
	}
	mid := len(changes) / 2
	if err := u.applyBisect(ctx, tx, changes[:mid], res); err != nil {
		return err
	}
	return u.applyBisect(ctx, tx, changes[mid:], res)
}

// apply writes changes: per table, in the order tables first appear, the
// last change per key, truncates in their place.
func (u *upsert) apply(ctx context.Context, tx pgx.Tx, changes []*rowChange, res *writeResult) error {
	var order []*tableConf
	byTable := map[*tableConf][]*rowChange{}
	for _, c := range changes {
		if _, ok := byTable[c.table]; !ok {
			order = append(order, c.table)
		}
		byTable[c.table] = append(byTable[c.table], c)
	}
	for _, t := range order {
		var segment []*rowChange
		for _, c := range byTable[t] {
			if c.op != 't' {
				segment = append(segment, c)
				continue
			}
			if err := u.applySegment(ctx, tx, t, segment, res); err != nil {
				return err
			}
			segment = nil
			if err := u.applyTruncate(ctx, tx, t, c, res); err != nil {
				return err
			}
		}
		if err := u.applySegment(ctx, tx, t, segment, res); err != nil {
			return err
		}
	}
	return nil
}

// winners is changes without those that another change of the same key
// supersedes (reduce), table by table between its truncates: what apply
// would write of them, in their order. (Applied in different savepoints,
// an older upsert after a delete would bring the row back: the ODS keeps
// no tombstones.)
func winners(changes []*rowChange) []*rowChange {
	keep := make(map[*rowChange]bool, len(changes))
	segments := map[*tableConf][]*rowChange{}
	flush := func(t *tableConf) {
		ups, dels := reduce(t, segments[t])
		for _, c := range ups {
			keep[c] = true
		}
		for _, c := range dels {
			keep[c] = true
		}
		segments[t] = nil
	}
	for _, c := range changes {
		if c.op == 't' {
			flush(c.table)
			keep[c] = true
			continue
		}
		segments[c.table] = append(segments[c.table], c)
	}
	for t := range segments {
		flush(t)
	}
	out := make([]*rowChange, 0, len(keep))
	for _, c := range changes {
		if keep[c] {
			out = append(out, c)
		}
	}
	return out
}

// reduce keeps the last change per key, unless an earlier one has a newer
// version (a reordering: the guard would refuse the older one anyway).
func reduce(t *tableConf, changes []*rowChange) (ups, dels []*rowChange) {
	last := make(map[string]*rowChange, len(changes))
	var keys []string
	for _, c := range changes {
		prev, ok := last[c.key]
		if !ok {
			keys = append(keys, c.key)
		} else if compareVersions(t, c, prev) < 0 {
			continue
		}
		last[c.key] = c
	}
	for _, k := range keys {
		if c := last[k]; c.op == 'd' {
			dels = append(dels, c)
		} else {
			ups = append(ups, c)
		}
	}
	return ups, dels
}

// compareVersions compares two changes' versions as their column types
// order them (numbers as numbers, timestamps as instants). A change
// without versions (a delete) compares equal: the later one wins, as it
// would applied in order.
func compareVersions(t *tableConf, a, b *rowChange) int {
	for _, v := range t.versions {
		av, bv := a.vals[indexOf(colsOf(t, a.op), v)], b.vals[indexOf(colsOf(t, b.op), v)]
		if av == nil || bv == nil {
			return 0
		}
		if c := compareTyped(*av, *bv, t.types[v]); c != 0 {
			return c
		}
	}
	return 0
}

func compareTyped(a, b string, typ colType) int {
	switch typ.category {
	case 'N':
		ar, aok := new(big.Rat).SetString(strings.TrimSpace(a))
		br, bok := new(big.Rat).SetString(strings.TrimSpace(b))
		if aok && bok {
			return ar.Cmp(br)
		}
	case 'D':
		at, aerr := parseTime(a)
		bt, berr := parseTime(b)
		if aerr == nil && berr == nil {
			return at.Compare(bt)
		}
	}
	return strings.Compare(a, b)
}

var timeLayouts = []string{time.RFC3339Nano, "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05.999999999", "2006-01-02"}

func parseTime(s string) (time.Time, error) {
	var err error
	for _, l := range timeLayouts {
		var t time.Time
		if t, err = time.Parse(l, strings.TrimSpace(s)); err == nil {
			return t, nil
		}
	}
	return time.Time{}, err
}

// canonicalKey is a key value as its type compares it, so that two
// spellings of one key ("01" and "1" for an integer, a UUID in either
// case) are one key to the reduction, as they are to ON CONFLICT.
func canonicalKey(v string, typ colType) string {
	switch {
	case typ.category == 'N' && plainInteger(v):
		return v // already as RatString renders it
	case typ.category == 'N':
		if r, ok := new(big.Rat).SetString(strings.TrimSpace(v)); ok {
			return r.RatString()
		}
	case typ.name == "uuid":
		return strings.ToLower(strings.ReplaceAll(strings.Trim(strings.TrimSpace(v), "{}"), "-", ""))
	}
	return v
}

// plainInteger reports whether v is an integer as big.Rat's RatString
// writes it: digits, no leading zero, a minus sign only before a non-zero.
func plainInteger(v string) bool {
	digits := strings.TrimPrefix(v, "-")
	if digits == "" || (digits[0] == '0' && (len(digits) > 1 || len(v) > 1)) {
		return false
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return false
		}
	}
	return true
}

// dirtyTemps is the key, in a connection's CustomData, of the temporary
// tables its current transaction has filled: commit empties them (ON
// COMMIT DELETE ROWS), so one is emptied by hand only when a transaction
// fills it again (a truncate splitting a table's changes, bisecting).
// DELETE, not TRUNCATE: a TRUNCATE per savepoint makes each next one slower.
const dirtyTemps = "odsflow_pg_upsert_dirty"

func emptyTemp(ctx context.Context, tx pgx.Tx, temp string) error {
	dirty, _ := tx.Conn().PgConn().CustomData()[dirtyTemps].(map[string]bool)
	if dirty == nil {
		dirty = map[string]bool{}
		tx.Conn().PgConn().CustomData()[dirtyTemps] = dirty
	}
	if dirty[temp] {
		if _, err := tx.Exec(ctx, "DELETE FROM pg_temp."+q(temp)); err != nil {
			return err
		}
	}
	dirty[temp] = true
	return nil
}

// copyText sends the changes' values with COPY … FROM STDIN in text
// format (tab-separated, \N for NULL).
func copyText(ctx context.Context, tx pgx.Tx, sql string, changes []*rowChange) error {
	var b bytes.Buffer
	for _, c := range changes {
		for j, v := range c.vals {
			if j > 0 {
				b.WriteByte('\t')
			}
			if v == nil {
				b.WriteString(`\N`)
				continue
			}
			for i := 0; i < len(*v); i++ {
				switch ch := (*v)[i]; ch {
				case '\\':
					b.WriteString(`\\`)
				case '\t':
					b.WriteString(`\t`)
				case '\n':
					b.WriteString(`\n`)
				case '\r':
					b.WriteString(`\r`)
				default:
					b.WriteByte(ch)
				}
			}
		}
		b.WriteByte('\n')
	}
	_, err := tx.Conn().PgConn().CopyFrom(ctx, &b, sql)
	return err
}

func (u *upsert) applySegment(ctx context.Context, tx pgx.Tx, t *tableConf, changes []*rowChange, res *writeResult) error {
	if len(changes) == 0 {
		return nil
	}
	ups, dels := reduce(t, changes)
	if len(dels) > 0 {
		n, err := u.stageAndRun(ctx, tx, t, t.delTemp, t.copyDel, t.deleteSQL, dels, false, res)
		if err != nil {
			return fmt.Errorf("%s: deleting: %w", t.name, err)
		}
		res.deleted += n
		res.refused += int64(len(dels)) - n
	}
	if len(ups) > 0 {
		n, err := u.stageAndRun(ctx, tx, t, t.upTemp, t.copyUp, t.mergeSQL, ups, true, res)
		if err != nil {
			return fmt.Errorf("%s: upserting: %w", t.name, err)
		}
		res.written += n
		res.refused += int64(len(ups)) - n
	}
	return nil
}

// stageAndRun fills the temporary table temp with rows (COPY) and runs sql
// over it, returning how many rows the statement took (the others were
// refused by the version guard).
func (u *upsert) stageAndRun(ctx context.Context, tx pgx.Tx, t *tableConf, temp, copySQL, sql string, rows []*rowChange, flagged bool, res *writeResult) (int64, error) {
	if err := emptyTemp(ctx, tx, temp); err != nil {
		return 0, err
	}
	if err := copyText(ctx, tx, copySQL, rows); err != nil {
		return 0, fmt.Errorf("copying: %w", err)
	}
	if temp == t.delTemp {
		// Statistics of the staged deletes: without them the planner
		// hash-joins them with a scan of the whole target (~40 ms a batch on
		// 250k rows) where a few hundred key probes take ~1 ms.
		if _, err := tx.Exec(ctx, "ANALYZE pg_temp."+q(temp)); err != nil {
			return 0, fmt.Errorf("analyzing the staged deletes: %w", err)
		}
	}
	return u.collectRows(ctx, tx, t, sql, nil, res, flagged)
}

func (u *upsert) applyTruncate(ctx context.Context, tx pgx.Tx, t *tableConf, c *rowChange, res *writeResult) error {
	args := make([]any, len(c.vals))
	for i, v := range c.vals {
		args[i] = *v
	}
	u.log.Warnf("pg_upsert: truncate of %s (rows with %v not newer than %v)", t.name, c.truncCols, args)
	n, err := u.collectRows(ctx, tx, t, t.truncateSQL(c.truncCols), args, res, false)
	if err != nil {
		return fmt.Errorf("%s: truncating: %w", t.name, err)
	}
	res.deleted += n
	return nil
}

// collectRows runs a statement and returns how many rows it changed. With
// collected columns, its rows are their values (after a leading "is new"
// boolean when flagged: the merge's rows before and after), collected into
// res.
func (u *upsert) collectRows(ctx context.Context, tx pgx.Tx, t *tableConf, sql string, args []any, res *writeResult, flagged bool) (int64, error) {
	if len(t.collect) == 0 {
		tag, err := tx.Exec(ctx, sql, args...)
		return tag.RowsAffected(), err
	}
	rows, err := tx.Query(ctx, sql, args...)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	var changed int64
	vals := make([]*string, len(t.collect))
	dest := make([]any, 0, len(t.collect)+1)
	var isNew bool
	if flagged {
		dest = append(dest, &isNew)
	}
	for i := range vals {
		dest = append(dest, &vals[i])
	}
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return 0, err
		}
		if !flagged || isNew {
			changed++
		}
		for i, v := range vals {
			if v != nil {
				res.collect(t, t.collect[i], *v)
			}
		}
	}
	return changed, rows.Err()
}

// freshnessEvery: one committed row in this many is timed. An
// observation of a timing metric takes a lock and a histogram update; a
// fixed stride over all rows, unlike a cap per batch, does not favour the
// rows of small batches (the fresh ones).
const freshnessEvery = 4

// recordFreshness times the way from the source to the ODS of one
// committed message in freshnessEvery that has a source time.
func (u *upsert) recordFreshness(batch service.MessageBatch, failed map[int]error) {
	if u.freshKey == "" {
		return
	}
	first := u.freshRows.Add(int64(len(batch))) - int64(len(batch))
	sourceToCommit(batch, failed, first, u.freshKey, time.Now(), func(d time.Duration) { u.metrics.freshness.Timing(d.Nanoseconds()) })
}

// sourceToCommit calls observe with now minus the source time (unix ms in
// metadata key) of the messages not failed whose position, counting from
// first, is a multiple of freshnessEvery.
func sourceToCommit(batch service.MessageBatch, failed map[int]error, first int64, key string, now time.Time, observe func(time.Duration)) {
	nowMs := now.UnixMilli()
	start := int((freshnessEvery - first%freshnessEvery) % freshnessEvery)
	for i := start; i < len(batch); i += freshnessEvery {
		if failed[i] != nil {
			continue
		}
		v, ok := batch[i].MetaGetMut(key)
		if !ok {
			continue
		}
		var ms int64
		switch x := v.(type) {
		case int64:
			ms = x
		case int:
			ms = int64(x)
		case string:
			n, err := strconv.ParseInt(x, 10, 64)
			if err != nil {
				continue
			}
			ms = n
		default:
			continue
		}
		if d := nowMs - ms; d >= 0 {
			observe(time.Duration(d) * time.Millisecond)
		}
	}
}
