package postgres

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
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
	odsTable, _ := msg.MetaGet("ods_table")
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
		switch op, _ := msg.MetaGet("ods_op"); op {
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
			s, err := textOf(v)
			if err != nil || s == nil {
				return nil, fmt.Errorf("pg_upsert: truncate of %s: version %s: want a value, got %v", t.name, col, v)
			}
			c.truncCols = append(c.truncCols, col)
			c.vals = append(c.vals, s)
		}
		return c, nil
	case 'd':
		if c.vals, err = values(t, row, t.delColumns); err != nil {
			return nil, err
		}
	default:
		if c.vals, err = values(t, row, t.columns); err != nil {
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
		key.WriteString(*v)
	}
	c.key = key.String()
	return c, nil
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

func values(t *tableConf, row map[string]any, cols []string) ([]*string, error) {
	out := make([]*string, len(cols))
	for i, c := range cols {
		s, err := textOf(row[c])
		if err != nil {
			return nil, fmt.Errorf("pg_upsert: %s.%s: %w", t.name, c, err)
		}
		out[i] = s
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

// textOf renders a value as PostgreSQL's text input for it; the merge
// statements cast it to the column's type, so a value the type refuses is
// a data exception (22xxx) of its row. nil: NULL.
func textOf(v any) (*string, error) {
	var s string
	switch x := v.(type) {
	case nil:
		return nil, nil
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
		s = x.Format(time.RFC3339Nano)
	case []byte:
		s = `\x` + hex.EncodeToString(x)
	default:
		b, err := json.Marshal(x)
		if err != nil {
			return nil, fmt.Errorf("value of type %T: %w", v, err)
		}
		s = string(b)
	}
	if strings.IndexByte(s, 0) >= 0 {
		return nil, errors.New("a text value holds a NUL byte, which PostgreSQL cannot store")
	}
	return &s, nil
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
		if !transient(err) {
			return fmt.Errorf("pg_upsert: %w", err)
		}
		u.metrics.retries.Incr(1)
		u.retriesSeen.Add(1)
		u.log.Warnf("pg_upsert: transient failure, retrying the batch in %v: %v", backoff, err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("pg_upsert: batch not written: %w", err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, u.retry.max)
	}
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
	collected                 map[*tableConf]map[string]map[string]struct{} // table → column → values
}

func newWriteResult() *writeResult {
	return &writeResult{failed: map[int]error{}, collected: map[*tableConf]map[string]map[string]struct{}{}}
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
	res := newWriteResult()
	if bisect {
		if err := u.applyBisect(ctx, tx, changes, res); err != nil {
			return nil, err
		}
	} else if err := u.apply(ctx, tx, changes, res); err != nil {
		if rowError(err) {
			return nil, fmt.Errorf("%w: %w", errRowRefused, err)
		}
		return nil, err
	}
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
			return nil, fmt.Errorf("after_batch[%d]: %w", i, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	return res, nil
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

// applyBisect applies the changes in a savepoint; when PostgreSQL refuses
// a row, it rolls the savepoint back and applies each half the same way,
// down to the single messages it then reports as failed.
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
		if err := sp.Commit(ctx); err != nil {
			return err
		}
		res.merge(part)
		return nil
	}
	if rerr := sp.Rollback(ctx); rerr != nil {
		return fmt.Errorf("%w (and rolling back to the savepoint: %w)", err, rerr)
	}
	if !rowError(err) {
		return err
	}
	if len(changes) == 1 {
		res.failed[changes[0].idx] = fmt.Errorf("pg_upsert: %s of %s refused: %w", opName(changes[0].op), changes[0].table.name, err)
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

// compareVersions compares two changes' versions, numerically when both
// are integers; a delete without versions counts as newest.
func compareVersions(t *tableConf, a, b *rowChange) int {
	for _, v := range t.versions {
		av, bv := a.vals[indexOf(colsOf(t, a.op), v)], b.vals[indexOf(colsOf(t, b.op), v)]
		switch {
		case av == nil && bv == nil:
			continue
		case av == nil:
			return 1
		case bv == nil:
			return -1
		}
		ai, aerr := strconv.ParseInt(*av, 10, 64)
		bi, berr := strconv.ParseInt(*bv, 10, 64)
		if aerr == nil && berr == nil {
			if ai != bi {
				if ai < bi {
					return -1
				}
				return 1
			}
			continue
		}
		if c := strings.Compare(*av, *bv); c != 0 {
			return c
		}
	}
	return 0
}

func rowsOf(changes []*rowChange) pgx.CopyFromSource {
	return pgx.CopyFromSlice(len(changes), func(i int) ([]any, error) {
		vals := changes[i].vals
		row := make([]any, len(vals))
		for j, v := range vals {
			if v != nil {
				row[j] = *v
			}
		}
		return row, nil
	})
}

func (u *upsert) applySegment(ctx context.Context, tx pgx.Tx, t *tableConf, changes []*rowChange, res *writeResult) error {
	if len(changes) == 0 {
		return nil
	}
	ups, dels := reduce(t, changes)
	if len(dels) > 0 {
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"pg_temp", t.delTemp}, t.delColumns, rowsOf(dels)); err != nil {
			return fmt.Errorf("%s: copying deletes: %w", t.name, err)
		}
		n, err := u.collectRows(ctx, tx, t, t.deleteSQL, nil, res, nil)
		if err != nil {
			return fmt.Errorf("%s: deleting: %w", t.name, err)
		}
		res.deleted += n
		res.refused += int64(len(dels)) - n
		if _, err := tx.Exec(ctx, "TRUNCATE pg_temp."+q(t.delTemp)); err != nil {
			return err
		}
	}
	if len(ups) > 0 {
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"pg_temp", t.upTemp}, t.columns, rowsOf(ups)); err != nil {
			return fmt.Errorf("%s: copying upserts: %w", t.name, err)
		}
		var n int64
		var err error
		if len(t.collect) == 0 {
			tag, eerr := tx.Exec(ctx, t.mergeSQL)
			n, err = tag.RowsAffected(), eerr
		} else {
			n, err = u.collectRows(ctx, tx, t, t.mergeSQL, nil, res, new(bool))
		}
		if err != nil {
			return fmt.Errorf("%s: upserting: %w", t.name, err)
		}
		res.written += n
		res.refused += int64(len(ups)) - n
		if _, err := tx.Exec(ctx, "TRUNCATE pg_temp."+q(t.upTemp)); err != nil {
			return err
		}
	}
	return nil
}

func (u *upsert) applyTruncate(ctx context.Context, tx pgx.Tx, t *tableConf, c *rowChange, res *writeResult) error {
	args := make([]any, len(c.vals))
	for i, v := range c.vals {
		args[i] = *v
	}
	u.log.Warnf("pg_upsert: truncate of %s (rows with %v not newer than %v)", t.name, c.truncCols, args)
	n, err := u.collectRows(ctx, tx, t, t.truncateSQL(c.truncCols), args, res, nil)
	if err != nil {
		return fmt.Errorf("%s: truncating: %w", t.name, err)
	}
	res.deleted += n
	return nil
}

// collectRows runs a statement whose rows are the collected columns
// (after a leading "is new" boolean when flagged is set), collects their
// values and returns how many rows the statement changed.
func (u *upsert) collectRows(ctx context.Context, tx pgx.Tx, t *tableConf, sql string, args []any, res *writeResult, flagged *bool) (int64, error) {
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
	if flagged != nil {
		dest = append(dest, &isNew)
	}
	for i := range vals {
		dest = append(dest, &vals[i])
	}
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return 0, err
		}
		if flagged == nil || isNew {
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
