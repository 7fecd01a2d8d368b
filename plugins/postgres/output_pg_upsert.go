// Package postgres holds the PostgreSQL components: pg_upsert, a
// transactional, version-guarded, batched upsert output on pgx.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redpanda-data/benthos/v4/public/bloblang"
	"github.com/redpanda-data/benthos/v4/public/service"
)

func upsertSpec() *service.ConfigSpec {
	return service.NewConfigSpec().
		Beta().
		Categories("Services").
		Summary("Writes rows to PostgreSQL tables: one transaction per batch, the last change per key, version-guarded upserts and deletes, COPY-fast.").
		Description(`
Each message is a row change for one of `+"`tables`"+`: by default the table whose `+"`ods_table`"+` equals the message's
`+"`ods_table`"+` metadata, and the operation is the message's `+"`ods_op`"+` metadata: `+"`upsert`"+` (the default when it is
absent), `+"`delete`"+`, or `+"`truncate`"+` (the body holds version columns: every row whose versions are not newer is
deleted; an empty body deletes every row). Column values come from the structured body by column name, or from
`+"`args_mapping`"+`. This is what `+"`cdc_join`"+` emits.

A batch is written in **one transaction** across every table it touches, so readers never see half of it. Within a
batch, each table keeps only the last change of each key (an upsert then a delete is a delete; a later change with
an older version, a reordering, loses to the newer one); truncates keep their place. Upserts are copied (COPY) into
a temporary table and merged with one `+"`INSERT … SELECT … ON CONFLICT (key_columns) DO UPDATE … WHERE (versions) <= (EXCLUDED.versions)`"+`,
deletes with one `+"`DELETE … USING`"+` guarded the same way: a change older than
the row is refused (counted in `+"`pg_upsert_refused`"+`), an equal one is applied again, so replays are harmless. No
statement carries per-row parameters, so there is no 65,535-parameter limit. `+"`after_batch`"+` statements run in the
same transaction with the affected values of a column (before and after the batch's changes) bound as `+"`$1`"+`,
a `+"`text[]`"+`.

Errors: a row that PostgreSQL refuses for its data (data exceptions 22xxx, constraint violations 23xxx, 21000,
limits 54xxx, a view's check option 44000, an error raised by a function or trigger it ran: P0xxx, 2Fxxx, 38xxx,
39xxx, 27000), or that cannot be mapped, is isolated by bisecting the batch within the transaction (savepoints, the
`+"`after_batch`"+` statements run in each) and returned as a batch error naming exactly those messages, so only they go
to the dead-letter path and the rest commits. A transient failure (connection lost, serialization failure,
deadlock, admin shutdown, too many connections) rolls the transaction back and retries it with backoff. Any other
failure (a statement timeout, an error class of its own) is bisected too: where some messages can be written and
others not, those others are the batch error; where none can (a read-only server, a refused password, a missing
table or function), the batch is held and retried with backoff until
it commits or the output stops, logged as an error: it lasts until someone acts. Nothing is acknowledged before it
commits. `+"`pg_upsert_retries`"+` counts the retries.

Table and column names are validated (each part `+"`^[A-Za-z_][A-Za-z0-9_]*$`"+`) and always quoted; values are never
part of the SQL text. The DSN is a secret: its password appears in no log line, error or `+"`echo`"+` output.`).
		Fields(
			service.NewStringField("dsn").Secret().
				Description("The PostgreSQL connection string (URL or key=value), as pgx reads it. Its sessions run with `jit` off unless the string sets it (`?jit=on`, or `options=-c jit=on`): compiling a plan costs more than a batch's statements save by it.").
				Example("${ODS_DSN:postgres://postgres:postgres@localhost:5432/ods?sslmode=disable}"),
			service.NewObjectListField("tables",
				service.NewStringField("name").Description("The table, schema-qualified or not.").Example("ods_schema.customer_account"),
				service.NewStringField("ods_table").Description("The `ods_table` metadata of this table's messages; empty (the default) means the table's name without its schema.").Default(""),
				service.NewBloblangField("check").Description("Instead of `ods_table`: true for this table's messages.").Optional().Advanced(),
				service.NewStringListField("columns").Description("The columns written by an upsert (key and version columns included). An upsert's row must have every one (`null` writes NULL): a missing one, most likely a misspelt mapping line, fails the message with the column's name instead of blanking the column. A delete needs only the key columns (and the version columns, when it is versioned).").Example([]string{"account_number", "account_balance", "account_version", "customer_version"}),
				service.NewStringListField("key_columns").Description("The conflict target: a primary key or unique index of the table.").Example([]string{"account_number"}),
				service.NewStringListField("version_columns").Description("The version guard: a change is applied only if these columns of the row, compared as a row, are not newer than the change's. Empty: no guard, the last write wins.").Default([]any{}).Example([]string{"account_version", "customer_version"}),
				service.NewBloblangField("args_mapping").Description("Builds the column values (an object by column name) instead of taking them from the body.").Optional().Advanced(),
			).Description("The tables written."),
			service.NewBloblangField("delete_check").Description("Instead of the `ods_op` metadata: true for a delete.").Optional().Advanced(),
			service.NewStringListField("init_files").Description("SQL files run, in order, once at connect (e.g. the DDL of the tables).").Default([]any{}).Example([]string{"./config/sql/ods.sql"}),
			service.NewStringField("init_statement").Description("SQL run once at connect, after `init_files`.").Default(""),
			service.NewObjectListField("after_batch",
				service.NewStringField("statement").Description("The SQL, run in the batch's transaction; `$1` is a `text[]` of the distinct affected values.").Example("SELECT ods_schema.refresh_insights($1::text[]::int[])"),
				service.NewStringField("column").Description("The column whose values are collected.").Example("customer_id"),
				service.NewStringListField("tables").Description("The tables (their `name`) whose affected rows are collected: the values before and after upserts, and those of deleted rows."),
				service.NewStringListField("args").Description("Further values bound as `$2`, `$3`, … (text): settings from the environment stay out of the SQL text.").Default([]any{}).Example([]string{"${ODS_SPENDING_TYPES:debit,withdrawal}"}),
			).Description("Statements run after the batch's writes, in the same transaction, for the values of a column that the batch affected.").Default([]any{}),
			service.NewStringField("freshness_metadata").
				Description("Metadata holding when a change happened at the source (unix milliseconds; `debezium_unwrap` sets `cdc_ts_ms` to source.ts_ms): the time from then to the commit of its row is recorded in the timing metric `pg_upsert_freshness` (for every 4th committed row, counted across batches: each observation takes a lock, and taking one row in four, whatever the batch, keeps the percentiles those of all rows). Empty: not recorded.").
				Default("cdc_ts_ms").Advanced(),
			service.NewIntField("max_in_flight").Description("Batches written in parallel (each in its own transaction). Above 1, batches may commit out of order: the version guards keep rows right, except that a delete can then be overtaken by an older upsert of the same row.").Default(1),
			service.NewBatchPolicyField("batching"),
			service.NewObjectField("pool",
				service.NewIntField("max_conns").Description("Most connections.").Default(4),
				service.NewDurationField("max_conn_lifetime").Description("Connections are replaced after this long.").Default("1h"),
				service.NewDurationField("max_conn_idle_time").Description("Idle connections are closed after this long.").Default("30m"),
				service.NewDurationField("connect_timeout").Description("Time to connect before the attempt counts as failed.").Default("10s"),
			).Description("The connection pool.").Advanced(),
			service.NewObjectField("retry",
				service.NewDurationField("initial_interval").Description("First wait before retrying a failed transaction.").Default("100ms"),
				service.NewDurationField("max_interval").Description("Longest wait between retries (doubling up to it); retries last until the write is cancelled.").Default("5s"),
			).Description("Retries of a batch's transaction after a failure that is not a row's.").Advanced(),
		).
		Example("Accounts, version-guarded, with a refresh", "The rows cdc_join emits for customer_account, upserted and deleted by account number; the pair of versions guards them; the customers they touch are refreshed in the same transaction.", `
output:
  pg_upsert:
    dsn: ${ODS_DSN:postgres://postgres:postgres@localhost:5432/ods?sslmode=disable}
    init_files: [ ./config/sql/ods.sql ]
    tables:
      - name: ods_schema.customer_account
        columns: [ customer_id, account_number, account_balance, account_version, customer_version ]
        key_columns: [ account_number ]
        version_columns: [ account_version, customer_version ]
    after_batch:
      - statement: SELECT ods_schema.refresh_total_balance($1::text[]::int[], $2)
        column: customer_id
        tables: [ ods_schema.customer_account ]
        args: [ "debit,withdrawal" ]
`).
		LintRule(upsertLintRule)
}

// upsertLintRule finds, at lint time, what newUpsert refuses at start: SQL
// identifiers that are not plain names, key and version columns missing
// from the columns, after_batch naming tables that are not written.
const upsertLintRule = `let ident = "^[A-Za-z_][A-Za-z0-9_]*$"
let qualified = "^[A-Za-z_][A-Za-z0-9_]*([.][A-Za-z_][A-Za-z0-9_]*)?$"
let tables = this.tables.or([])
let names = $tables.map_each(t -> t.name.or(""))
let table_errs = $tables.map_each(t -> [
  if !t.name.or("").re_match($qualified) { "tables: %q is not a table name (schema.table, each a letter or _ then letters, digits, _)".format(t.name.or("")) },
  t.columns.or([]).filter(c -> !c.re_match($ident)).map_each(c -> "tables: %q: column %q is not a plain name (a letter or _ then letters, digits, _)".format(t.name.or(""), c)),
  t.key_columns.or([]).filter(c -> !t.columns.or([]).contains(c)).map_each(c -> "tables: %q: key column %q is not among its columns".format(t.name.or(""), c)),
  t.version_columns.or([]).filter(c -> !t.columns.or([]).contains(c)).map_each(c -> "tables: %q: version column %q is not among its columns".format(t.name.or(""), c)),
  if t.key_columns.or([]).length() == 0 { "tables: %q: key_columns is empty".format(t.name.or("")) },
]).flatten().flatten().filter(e -> e != null)
let after_errs = this.after_batch.or([]).map_each(a -> [
  if !a.column.or("").re_match($ident) { "after_batch: column %q is not a plain name".format(a.column.or("")) },
  a.tables.or([]).filter(n -> !$names.contains(n)).map_each(n -> "after_batch: table %q is not one of tables".format(n)),
]).flatten().flatten().filter(e -> e != null)
let errs = $table_errs.merge($after_errs)
root = if $errs.length() > 0 { $errs }`

func init() {
	err := service.RegisterBatchOutput("pg_upsert", upsertSpec(),
		func(conf *service.ParsedConfig, mgr *service.Resources) (service.BatchOutput, service.BatchPolicy, int, error) {
			out, err := newUpsert(conf, mgr)
			if err != nil {
				return nil, service.BatchPolicy{}, 0, err
			}
			policy, err := conf.FieldBatchPolicy("batching")
			if err != nil {
				return nil, service.BatchPolicy{}, 0, err
			}
			inFlight, err := conf.FieldInt("max_in_flight")
			if err != nil {
				return nil, service.BatchPolicy{}, 0, err
			}
			if inFlight < 1 {
				return nil, service.BatchPolicy{}, 0, fmt.Errorf("max_in_flight must be at least 1, got %d", inFlight)
			}
			return out, policy, inFlight, nil
		})
	if err != nil {
		panic(err)
	}
}

// upsert is the pg_upsert output.
type upsert struct {
	log      *service.Logger
	dsn      string
	freshKey string // metadata of the source time (ms), "": none
	// freshRows counts the committed rows offered to the freshness metric,
	// whose every freshnessEvery-th is timed.
	freshRows atomic.Int64
	poolConf  poolSettings
	retry     retrySettings
	tables    []*tableConf
	byName    map[string]*tableConf
	deleteQ   *bloblang.Executor // nil: ods_op
	initSQL   []string
	after     []*afterBatch
	metrics   upsertMetrics
	// retriesSeen counts retried transactions (pg_upsert_retries), for tests.
	retriesSeen atomic.Int64

	mu   sync.RWMutex
	pool *pgxpool.Pool
}

type poolSettings struct {
	maxConns                   int32
	maxLifetime, maxIdle, dial time.Duration
}

type retrySettings struct{ initial, max time.Duration }

type upsertMetrics struct {
	written, refused, deleted, retries, rowErrors *service.MetricCounter
	freshness                                     *service.MetricTimer
}

// afterBatch is an after_batch statement.
type afterBatch struct {
	statement string
	column    string
	tables    []*tableConf
	args      []string // $2…
}

func newUpsert(conf *service.ParsedConfig, mgr *service.Resources) (*upsert, error) {
	u := &upsert{
		log:    mgr.Logger(),
		byName: map[string]*tableConf{},
		metrics: upsertMetrics{
			written:   mgr.Metrics().NewCounter("pg_upsert_written"),
			refused:   mgr.Metrics().NewCounter("pg_upsert_refused"),
			deleted:   mgr.Metrics().NewCounter("pg_upsert_deleted"),
			retries:   mgr.Metrics().NewCounter("pg_upsert_retries"),
			rowErrors: mgr.Metrics().NewCounter("pg_upsert_row_errors"),
			freshness: mgr.Metrics().NewTimer("pg_upsert_freshness"),
		},
	}
	var err error
	if u.dsn, err = conf.FieldString("dsn"); err != nil {
		return nil, err
	}
	if strings.TrimSpace(u.dsn) == "" {
		return nil, errors.New("dsn is empty")
	}
	if _, err := pgxpool.ParseConfig(u.dsn); err != nil {
		return nil, fmt.Errorf("dsn: not a PostgreSQL connection string pgx can read: %s (the string is not shown: it may hold a password)", dsnParseReason(err.Error(), u.dsn))
	}
	if u.freshKey, err = conf.FieldString("freshness_metadata"); err != nil {
		return nil, err
	}
	tconfs, err := conf.FieldObjectList("tables")
	if err != nil {
		return nil, err
	}
	if len(tconfs) == 0 {
		return nil, errors.New("tables: at least one table is needed")
	}
	for i, tc := range tconfs {
		t, err := parseTable(i, tc)
		if err != nil {
			return nil, err
		}
		for _, other := range u.tables {
			if other.name == t.name {
				return nil, fmt.Errorf("tables[%d]: %s is listed twice", i, t.name)
			}
			if t.check == nil && other.check == nil && other.odsTable == t.odsTable {
				return nil, fmt.Errorf("tables[%d]: ods_table %q is also tables' %s", i, t.odsTable, other.name)
			}
		}
		t.index = i
		u.tables = append(u.tables, t)
		u.byName[t.name] = t
	}
	if conf.Contains("delete_check") {
		if u.deleteQ, err = conf.FieldBloblang("delete_check"); err != nil {
			return nil, err
		}
	}
	files, err := conf.FieldStringList("init_files")
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			if wd, werr := os.Getwd(); werr == nil && !filepath.IsAbs(f) {
				return nil, fmt.Errorf("init_files: %w (a relative path is read from the working directory, %s)", err, wd)
			}
			return nil, fmt.Errorf("init_files: %w", err)
		}
		u.initSQL = append(u.initSQL, string(b))
	}
	stmt, err := conf.FieldString("init_statement")
	if err != nil {
		return nil, err
	}
	if strings.TrimSpace(stmt) != "" {
		u.initSQL = append(u.initSQL, stmt)
	}
	aconfs, err := conf.FieldObjectList("after_batch")
	if err != nil {
		return nil, err
	}
	for i, ac := range aconfs {
		a := &afterBatch{}
		if a.statement, err = ac.FieldString("statement"); err != nil {
			return nil, err
		}
		if a.column, err = ac.FieldString("column"); err != nil {
			return nil, err
		}
		if err := validIdentifier(a.column); err != nil {
			return nil, fmt.Errorf("after_batch[%d].column: %w", i, err)
		}
		names, err := ac.FieldStringList("tables")
		if err != nil {
			return nil, err
		}
		if len(names) == 0 {
			return nil, fmt.Errorf("after_batch[%d]: tables is empty", i)
		}
		if a.args, err = ac.FieldStringList("args"); err != nil {
			return nil, err
		}
		for _, n := range names {
			t := u.byName[n]
			if t == nil {
				return nil, fmt.Errorf("after_batch[%d]: %q is not one of tables' names", i, n)
			}
			t.collect = appendUnique(t.collect, a.column)
			a.tables = append(a.tables, t)
		}
		u.after = append(u.after, a)
	}
	pc := conf.Namespace("pool")
	maxConns, err := pc.FieldInt("max_conns")
	if err != nil {
		return nil, err
	}
	if maxConns < 1 {
		return nil, fmt.Errorf("pool.max_conns must be at least 1, got %d", maxConns)
	}
	u.poolConf.maxConns = int32(maxConns)
	if u.poolConf.maxLifetime, err = pc.FieldDuration("max_conn_lifetime"); err != nil {
		return nil, err
	}
	if u.poolConf.maxIdle, err = pc.FieldDuration("max_conn_idle_time"); err != nil {
		return nil, err
	}
	if u.poolConf.dial, err = pc.FieldDuration("connect_timeout"); err != nil {
		return nil, err
	}
	rc := conf.Namespace("retry")
	if u.retry.initial, err = rc.FieldDuration("initial_interval"); err != nil {
		return nil, err
	}
	if u.retry.max, err = rc.FieldDuration("max_interval"); err != nil {
		return nil, err
	}
	if u.retry.initial <= 0 || u.retry.max < u.retry.initial {
		return nil, fmt.Errorf("retry: want 0 < initial_interval <= max_interval, got %v and %v", u.retry.initial, u.retry.max)
	}
	return u, nil
}

func appendUnique(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}

// dsnSetsJIT tells whether the DSN chose jit itself: as a parameter, or in
// the server options.
func dsnSetsJIT(params map[string]string) bool {
	if _, ok := params["jit"]; ok {
		return true
	}
	return strings.Contains(params["options"], "jit")
}

// Connect opens the pool, runs the init SQL and reads the tables' column
// types from the catalog (which also checks that they exist).
func (u *upsert) Connect(ctx context.Context) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.pool != nil {
		return nil
	}
	pc, err := pgxpool.ParseConfig(u.dsn)
	if err != nil {
		return errors.New("pg_upsert: dsn: cannot be read") // checked at construction; never quote it
	}
	pc.MaxConns = u.poolConf.maxConns
	pc.MaxConnLifetime = u.poolConf.maxLifetime
	pc.MaxConnIdleTime = u.poolConf.maxIdle
	pc.ConnConfig.ConnectTimeout = u.poolConf.dial
	if !dsnSetsJIT(pc.ConnConfig.RuntimeParams) {
		// A batch's statements are planned with row counts that make
		// PostgreSQL compile them (jit_above_cost), tens of milliseconds
		// per statement that the execution never wins back. Set after
		// connecting, not as a startup parameter, which poolers such as
		// PgBouncer refuse; a server without the setting (before 11)
		// just keeps its default.
		pc.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
			_, err := conn.Exec(ctx, "SET jit = off")
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) {
				return nil
			}
			return err
		}
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return fmt.Errorf("pg_upsert: %w", err)
	}
	if err := u.prepare(ctx, pool); err != nil {
		pool.Close()
		return err
	}
	u.pool = pool
	return nil
}

// prepare runs the init SQL and loads the tables' column types.
func (u *upsert) prepare(ctx context.Context, pool *pgxpool.Pool) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("pg_upsert: connecting to %s: %w", pool.Config().ConnConfig.Database, err)
	}
	defer conn.Release()
	for i, sql := range u.initSQL {
		if _, err := conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("pg_upsert: init SQL %d: %w", i+1, err)
		}
	}
	for _, t := range u.tables {
		if err := t.load(ctx, conn.Conn()); err != nil {
			return err
		}
	}
	return nil
}

// Close closes the pool.
func (u *upsert) Close(context.Context) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.pool != nil {
		u.pool.Close()
		u.pool = nil
	}
	return nil
}

func (u *upsert) currentPool() *pgxpool.Pool {
	u.mu.RLock()
	defer u.mu.RUnlock()
	return u.pool
}

// dsnParseReason is pgx's reason for refusing dsn, without the DSN: pgx
// quotes it first, redacting the password only on a best-effort basis, and
// a reason that might quote the password is not given.
func dsnParseReason(msg, dsn string) string {
	i := strings.LastIndex(msg, "`: ")
	if i < 0 {
		return "(no reason given)"
	}
	reason := msg[i+3:]
	if strings.ContainsAny(reason, "@`") || strings.Contains(reason, "://") {
		return "(its reason quotes the string)"
	}
	var secrets []string
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		if p, ok := u.User.Password(); ok {
			secrets = append(secrets, p)
		}
	}
	for _, m := range dsnPasswordParam.FindAllStringSubmatch(dsn, -1) {
		secrets = append(secrets, strings.Trim(m[1], "'"))
	}
	for _, p := range secrets {
		if p != "" && strings.Contains(reason, p) {
			return "(its reason quotes the string)"
		}
	}
	return reason
}

// dsnPasswordParam finds the passwords of a keyword DSN or of URL
// parameters (password=, sslpassword=).
var dsnPasswordParam = regexp.MustCompile(`(?i)password\s*=\s*('[^']*'|[^\s&]+)`)
