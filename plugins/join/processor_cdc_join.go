// Package join holds cdc_join: a stateful, durable join of CDC streams,
// configured entirely in YAML.
package join

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"

	"github.com/odsflow/odsflow/internal/statestore"
)

func joinSpec() *service.ConfigSpec {
	return service.NewConfigSpec().
		Beta().
		Categories("Utility").
		Summary("Joins CDC streams on their latest row states, with state on disk: one-to-many latest-state joins and lookups.").
		Description(`
Consumes row changes (the output of `+"`debezium_unwrap`"+`: body = the row, metadata `+"`cdc_op`"+` and `+"`cdc_version`"+`) of
several source tables and emits rows of target tables, with metadata `+"`ods_table`"+` and `+"`ods_op`"+` (`+"`upsert`"+`,
`+"`delete`"+` or `+"`truncate`"+`). Nothing about the tables is built in: each input table is recognised by a Bloblang `+"`check`"+` and
keyed by a Bloblang `+"`key`"+`; each relation names its parent and child tables and builds target rows with a
mapping that sees `+"`this.parent`"+`, `+"`this.child`"+`, `+"`this.parent_version`"+` and `+"`this.child_version`"+`.

- **latest_state** (one parent, many children): a parent change re-emits a row for each of its children; a child
  change emits its row; a child whose parent has not arrived is held and emitted when it arrives; a child that
  moves to another parent leaves the old one; a child delete emits a delete of its row; a parent delete emits
  deletes of all its children's rows.
- **lookup**: a child event is enriched from its parent's current state and emitted; one whose parent has not
  arrived is held until it does. Lookup children are not kept once emitted.

Deletes carry the target's key columns and, when `+"`child_version_column`"+` / `+"`parent_version_column`"+` are set, the
row's versions: the ODS must delete a row only if it is not newer than the delete. A TRUNCATE (`+"`cdc_op`"+` `+"`t`"+`) of a
table makes its stored rows up to the truncation's version count as deleted and emits, per relation it feeds, one
`+"`truncate`"+` message whose body holds the truncated side's version column: the ODS deletes the rows whose version
there is not newer. It is logged as a warning and counted in `+"`cdc_join_truncates`"+`.

Versions: a change older than the stored version of its key is ignored (counted in `+"`cdc_join_stale`"+`); a
deleted key keeps a tombstone with its version for `+"`tombstone_retention`"+`, so a stale change cannot bring it
back; so does a deleted lookup child, so that neither a late change of the child nor a parent's change delivered again
after a crash (which emits again the children it released) can bring it back. State lives in `+"`state_dir`"+` (an append-only log with an in-memory index of the keys): each batch's changes
are written in one synced transaction (one sequential write and one fsync) before the batch is passed on, so they
are on disk before any offset of the batch can be committed. The directory is locked: a second process using it
fails at once. A state written by an earlier odsflow (one bbolt file) is migrated at open. The state also records the
Kafka partitions it has applied messages of, and the cluster they came from, so that a state that lacks what the
consumer group has consumed (a new or replaced `+"`state_dir`"+`), or one of another cluster, is refused instead of joined
against: see `+"`require_history`"+`.

Batches are applied to the state one at a time, while the Bloblang work of a batch (checks, keys, mappings) and the reading and
encoding of its rows run on every core. Checks of the form `+"`@meta == \"literal\"`"+`, keys of the form `+"`this.field`"+`, and
mappings made of one `+"`root.column = …`"+` line each (field copies, `+"`.string()`"+`, and lists of fields with the nulls
filtered out then `+"`.join(\"…\")`"+`, `+"`.sort_by(t -> t.ts_unix_nano()).index(-1).or(null)`"+` (the latest instant) or
`+"`.sort().index(-1).or(null)`"+` (the greatest string) read directly, the other lines
together as one Bloblang mapping) skip most of Bloblang's per-call cost; whatever they cannot decide exactly as
Bloblang would (a float to render, a line that fails) is handed to the full Bloblang, so results and errors are the
same. The rows read most recently (up to 32,768, some 32 MB) are kept decoded between batches, so that a row many
changes read, such as the account of every transaction, is read from disk once until it changes. Per-key order is the order batches are applied in: with
`+"`pipeline.threads`"+` > 1 that holds as long as the input releases one batch per partition at a time
(`+"`kafka_franz`"+`'s default, `+"`checkpoint_limit: 1`"+`), since a key's changes share a partition. With `+"`pipeline.threads`"+` > 1, or an output with `+"`max_in_flight`"+` > 1,
the rows of two batches may reach the ODS in the other order: versioned upserts and deletes make that harmless,
except a delete overtaking an older upsert of the same row, which the ODS must then refuse (a tombstone) to keep
the row from coming back.

A message that an earlier processor failed (errored) is passed on unchanged, without touching the state. A tombstone
that `+"`debezium_unwrap`"+` marked (`+"`tombstones: mark`"+`: empty, `+"`cdc_tombstone: true`"+`, no `+"`cdc_op`"+`) is dropped, its offset
counted in the state's progress. Do not put
`+"`cdc_join`"+` inside a `+"`try`"+`: it processes messages one by one, which would cost a synced commit each
(`+"`schema_registry_decode`"+` and `+"`debezium_unwrap`"+` pass errored messages on too, so they need no `+"`try`"+`).

A message that matches no table, has no key or a key that is not a string or an integer (or longer than 1,024
bytes), lacks `+"`cdc_version`"+`, or that a mapping cannot use is passed on unchanged and marked errored with the
reason; it changes no state (the batch is applied again without it). A stored child whose row cannot be mapped when
its parent changes (or a held event when its parent arrives) does not fail the parent's message: that one row is
emitted as an errored copy of the parent's message, naming the child, and the rest goes on.
`).
		Fields(
			service.NewStringField("state_dir").
				Description("Directory of the state store, locked while in use. `"+memoryStateDir+"`: the state is kept in memory only, fresh for each instance and lost at close (for config unit tests).").
				Example("${ODS_STATE_DIR:./data/state}").Example(memoryStateDir),
			service.NewBoolField("require_history").
				Description("Refuse a state that lacks history the consumer group has consumed. The state records the Kafka partitions whose "+
					"messages it applied (from `kafka_topic`, `kafka_partition`, `kafka_offset`); `kafka_franz` marks a partition the group had "+
					"committed an offset for, above its log start (`kafka_resume_offset`). A topic read from committed offsets of which the state "+
					"has applied nothing, or a partition the group resumes more than 100 records past what the state applied, means a new, "+
					"emptied, replaced or stale (restored from a backup) `state_dir` on a group that has progressed: joined against it, rows "+
					"would be held or missed without an error. The batch is then held (nothing applied, passed on or committed), an error "+
					"logged every minute and the gauge `cdc_join_missing_history` set to 1, until the pipeline stops. The same holds a state "+
					"built from another Kafka cluster (its id, `kafka_cluster_id`, recorded with the first batch that carries it), whatever "+
					"the offsets: a state kept across a restarted `odsflow dev` or a migration. Put back the state that goes with the group, or rebuild the state with a "+
					"new consumer group, or this one reset to the earliest offsets (either reads the topics from the start); `false` goes on "+
					"without the history. The 100 records allow for the records of a partition's last batches that never reach the join "+
					"(tombstones dropped by `debezium_unwrap`, transaction markers); a pipeline that drops more before the join (a filter) "+
					"may need `false`, as does a start after the group was moved forward on purpose (reset to the latest offsets, to skip "+
					"records). Not checked: a state written by an odsflow that did not record partitions; messages without Kafka "+
					"metadata.").
				Default(true),
			service.NewDurationField("tombstone_retention").Description("How long a deleted key's tombstone is kept.").Default("168h").Advanced(),
			service.NewObjectListField("tables",
				service.NewStringField("name").Description("A name for the table, used by relations."),
				service.NewBloblangField("check").Description("True for the messages of this table.").Example(`@cdc_table == "T_Accounts"`),
				service.NewBloblangField("key").Description("The row's key, from its body: a string or an integer.").Example("this.id"),
			).Description("The input tables.").
				Example([]any{
					map[string]any{"name": "customers", "check": `@cdc_table == "T_Customers"`, "key": "this.id"},
					map[string]any{"name": "accounts", "check": `@cdc_table == "T_Accounts"`, "key": "this.id"},
				}),
			service.NewObjectListField("relations",
				service.NewStringField("name").Description("The relation's name, and the target table (`ods_table`)."),
				service.NewStringEnumField("kind", "latest_state", "lookup").Description("`latest_state`: parent ⋈ children on their latest states. `lookup`: children enriched from their parent, not kept."),
				service.NewStringField("parent").Description("The parent table's name."),
				service.NewStringField("child").Description("The child table's name."),
				service.NewBloblangField("parent_key").Description("The child's parent key, from the child's body.").Example("this.customer_id"),
				service.NewBloblangField("mapping").Description("Builds the target row from `this.parent`, `this.child`, `this.parent_version`, `this.child_version`."),
				service.NewBloblangField("key_mapping").Description("Builds the target row's key columns from `this.child` (for deletes)."),
				service.NewStringField("child_version_column").
					Description("The target column holding the child's version (what the mapping sets from `this.child_version`). Deletes and truncates of the relation carry it, so that the ODS can refuse one older than its row: needed for a replay after a crash to be harmless. Empty: deletes carry only the key columns.").
					Default("").Example("account_version"),
				service.NewStringField("parent_version_column").
					Description("The target column holding the parent's version (`this.parent_version`), carried by deletes and truncates like `child_version_column`. A delete caused by a parent's delete carries the parent's delete version; one caused by the child's own change carries 0, below any version (cdc_version must be ≥ 1).").
					Default("").Example("customer_version"),
			).Description("The joins to emit.").
				Example([]any{map[string]any{
					"name": "customer_account", "kind": "latest_state", "parent": "customers", "child": "accounts",
					"parent_key":           "this.customer_id",
					"mapping":              "root.customer_id = this.parent.id\nroot.email = this.parent.email\nroot.account_number = this.child.account_number.string()\nroot.account_version = this.child_version\nroot.customer_version = this.parent_version\n",
					"key_mapping":          "root.account_number = this.child.account_number.string()",
					"child_version_column": "account_version", "parent_version_column": "customer_version",
				}}),
		).
		Example("Customers joined with their accounts", "One row per account with its customer's name, re-emitted when either changes, deleted when either goes.", `
pipeline:
  processors:
    - cdc_join:
        state_dir: ${ODS_STATE_DIR:./data/state}
        tables:
          - { name: customers, check: '@cdc_table == "T_Customers"', key: this.id }
          - { name: accounts, check: '@cdc_table == "T_Accounts"', key: this.id }
        relations:
          - name: customer_account
            kind: latest_state
            parent: customers
            child: accounts
            parent_key: this.customer_id
            mapping: |
              root.customer_id = this.parent.id
              root.customer_name = [this.parent.first_name, this.parent.last_name].filter(n -> n != null).join(" ")
              root.account_number = this.child.account_number.string()
              root.account_balance = this.child.account_balance
              root.account_version = this.child_version
              root.customer_version = this.parent_version
            key_mapping: 'root.account_number = this.child.account_number.string()'
            child_version_column: account_version
            parent_version_column: customer_version
`).
		LintRule(joinLintRule)
}

// joinLintRule finds, at lint time, what newJoin refuses at start: tables
// or relations named twice, relations naming tables that are not there, a
// relation's two version columns the same, an empty state_dir, and, for
// mappings made of `root.column = …` lines only (relation.checkColumns),
// a key_mapping or version column naming a column the mapping does not set.
const joinLintRule = `let tables = this.tables.or([]).map_each(t -> t.name.or(""))
let relations = this.relations.or([]).map_each(r -> r.name.or(""))
let errs = [
  $tables.filter(n -> $tables.filter(m -> m == n).length() > 1).unique().map_each(n -> "tables: %q is named twice".format(n)),
  $relations.filter(n -> $relations.filter(m -> m == n).length() > 1).unique().map_each(n -> "relations: %q is named twice".format(n)),
  if this.state_dir.or("x") == "" { "state_dir is empty" },
  this.relations.or([]).map_each(r -> [
    if !$tables.contains(r.parent.or("")) { "relations: %q: parent %q is not one of tables".format(r.name.or(""), r.parent.or("")) },
    if !$tables.contains(r.child.or("")) { "relations: %q: child %q is not one of tables".format(r.name.or(""), r.child.or("")) },
    if r.child_version_column.or("") != "" && r.child_version_column.or("") == r.parent_version_column.or("") {
      "relations: %q: child_version_column and parent_version_column are both %q".format(r.name.or(""), r.child_version_column)
    },
    [r.mapping.or(""), r.key_mapping.or("")].map_each(m -> m.split("\n").map_each(l -> l.trim()).filter(l -> l != "" && !l.has_prefix("#")).(lines -> if lines.length() > 0 && lines.all(l -> l.re_match("^root\\.[A-Za-z_][A-Za-z0-9_]*\\s*=")) { lines.map_each(l -> l.re_replace_all("^root\\.([A-Za-z_][A-Za-z0-9_]*)\\s*=.*$", "$1")) } else { null })).(cols -> if cols.index(0) != null { [
      if cols.index(1) != null { cols.index(1).filter(k -> !cols.index(0).contains(k)).map_each(k -> "relations: %q: key_mapping sets %q, which mapping does not set".format(r.name.or(""), k)) } else { null },
      ["child_version_column", "parent_version_column"].map_each(f -> r.get(f).or("").(c -> if c != "" && !cols.index(0).contains(c) { "relations: %q: %s %q is not a column mapping sets".format(r.name.or(""), f, c) } else { null })),
    ].flatten() } else { null }),
  ].flatten()).flatten(),
].flatten().filter(e -> e != null)
root = if $errs.length() > 0 { $errs }`

func init() {
	err := service.RegisterBatchProcessor("cdc_join", joinSpec(),
		func(conf *service.ParsedConfig, mgr *service.Resources) (service.BatchProcessor, error) {
			return newJoin(conf, mgr)
		})
	if err != nil {
		panic(err)
	}
}

type table struct {
	name  string
	check tableCheck
	key   bodyField
	// stored: kept in state (a parent, or a latest_state child).
	stored bool
}

type relation struct {
	name, kind         string
	metaName           any // name, as the ods_table value of its rows
	parent, child      *table
	parentKey          bodyField
	mapping, keyMapper *rowMapping
	// The target columns of the versions that deletes carry ("": none).
	childVersionColumn, parentVersionColumn string
}

// checkColumns refuses, where the mappings' shapes tell, a key_mapping or
// a version column naming a column that mapping does not set (a typo): a
// delete would carry a key the rows do not have, or no version to guard
// it, and be refused downstream, or worse, applied unguarded.
func (r *relation) checkColumns() error {
	cols, known := r.mapping.columns()
	if !known {
		return nil
	}
	if keys, ok := r.keyMapper.columns(); ok {
		for k := range keys {
			if !cols[k] {
				return fmt.Errorf("key_mapping sets %q, which mapping does not set", k)
			}
		}
	}
	for _, c := range []struct{ field, column string }{
		{"child_version_column", r.childVersionColumn}, {"parent_version_column", r.parentVersionColumn},
	} {
		if c.column != "" && !cols[c.column] {
			return fmt.Errorf("%s %q is not a column mapping sets", c.field, c.column)
		}
	}
	return nil
}

type join struct {
	log       *service.Logger
	store     statestore.Store
	rows      *rowCache // decoded rows across batches
	tables    []*table
	relations []*relation
	retention time.Duration
	stateDir  string
	history   history

	stale, held, errored, truncates *service.MetricCounter
	// historyHeld is 1 while a batch is held by require_history: a hold
	// is no error Benthos sees (the process stays up and ready).
	historyHeld *service.MetricGauge

	mu sync.Mutex // one batch at a time: the state is one sequence of changes

	stopPurge context.CancelFunc
	purged    chan struct{} // closed when the purge loop has ended
}

func newJoin(conf *service.ParsedConfig, mgr *service.Resources) (*join, error) {
	j := &join{
		rows:      newRowCache(),
		log:       mgr.Logger(),
		stale:     mgr.Metrics().NewCounter("cdc_join_stale"),
		held:      mgr.Metrics().NewCounter("cdc_join_held"),
		errored:   mgr.Metrics().NewCounter("cdc_join_errored"),
		truncates: mgr.Metrics().NewCounter("cdc_join_truncates"),

		historyHeld: mgr.Metrics().NewGauge("cdc_join_missing_history"),
	}
	var err error
	if j.retention, err = conf.FieldDuration("tombstone_retention"); err != nil {
		return nil, err
	}
	if j.retention <= 0 {
		return nil, fmt.Errorf("tombstone_retention must be positive, got %v", j.retention)
	}
	tconfs, err := conf.FieldObjectList("tables")
	if err != nil {
		return nil, err
	}
	byName := map[string]*table{}
	for i, tc := range tconfs {
		t := &table{}
		if t.name, err = tc.FieldString("name"); err != nil {
			return nil, err
		}
		check, err := tc.FieldBloblang("check")
		if err != nil {
			return nil, fmt.Errorf("tables[%d].check: %w", i, err)
		}
		checkSrc, _ := tc.FieldString("check")
		t.check = newTableCheck(checkSrc, check)
		key, err := tc.FieldBloblang("key")
		if err != nil {
			return nil, fmt.Errorf("tables[%d].key: %w", i, err)
		}
		keySrc, _ := tc.FieldString("key")
		t.key = newBodyField(keySrc, key)
		if byName[t.name] != nil {
			return nil, fmt.Errorf("tables[%d]: duplicate name %q", i, t.name)
		}
		byName[t.name] = t
		j.tables = append(j.tables, t)
	}
	rconfs, err := conf.FieldObjectList("relations")
	if err != nil {
		return nil, err
	}
	relNames := map[string]bool{}
	for i, rc := range rconfs {
		r := &relation{}
		var parent, child string
		if r.name, err = rc.FieldString("name"); err != nil {
			return nil, err
		}
		if relNames[r.name] {
			return nil, fmt.Errorf("relations[%d]: duplicate name %q (rows are told apart by their relation's name, ods_table)", i, r.name)
		}
		relNames[r.name] = true
		r.metaName = r.name
		if r.kind, err = rc.FieldString("kind"); err != nil {
			return nil, err
		}
		if parent, err = rc.FieldString("parent"); err != nil {
			return nil, err
		}
		if child, err = rc.FieldString("child"); err != nil {
			return nil, err
		}
		if r.parent, r.child = byName[parent], byName[child]; r.parent == nil || r.child == nil {
			return nil, fmt.Errorf("relations[%d] (%s): parent %q and child %q must name tables", i, r.name, parent, child)
		}
		parentKey, err := rc.FieldBloblang("parent_key")
		if err != nil {
			return nil, fmt.Errorf("relations[%d].parent_key: %w", i, err)
		}
		parentKeySrc, _ := rc.FieldString("parent_key")
		r.parentKey = newBodyField(parentKeySrc, parentKey)
		for _, f := range []struct {
			field string
			into  **rowMapping
		}{{"mapping", &r.mapping}, {"key_mapping", &r.keyMapper}} {
			exec, err := rc.FieldBloblang(f.field)
			if err != nil {
				return nil, fmt.Errorf("relations[%d].%s: %w", i, f.field, err)
			}
			src, _ := rc.FieldString(f.field)
			*f.into = newRowMapping(src, exec)
		}
		if r.childVersionColumn, err = rc.FieldString("child_version_column"); err != nil {
			return nil, err
		}
		if r.parentVersionColumn, err = rc.FieldString("parent_version_column"); err != nil {
			return nil, err
		}
		if r.childVersionColumn != "" && r.childVersionColumn == r.parentVersionColumn {
			return nil, fmt.Errorf("relations[%d] (%s): child_version_column and parent_version_column are both %q", i, r.name, r.childVersionColumn)
		}
		if err := r.checkColumns(); err != nil {
			return nil, fmt.Errorf("relations[%d] (%s): %w", i, r.name, err)
		}
		r.parent.stored = true
		if r.kind == "latest_state" {
			r.child.stored = true
		}
		j.relations = append(j.relations, r)
	}
	dir, err := conf.FieldString("state_dir")
	if err != nil {
		return nil, err
	}
	if dir == "" {
		return nil, fmt.Errorf("state_dir is empty (a directory, or %q for a state in memory)", memoryStateDir)
	}
	j.stateDir = dir
	if j.history.require, err = conf.FieldBool("require_history"); err != nil {
		return nil, err
	}
	if dir == memoryStateDir {
		j.store = statestore.OpenMemory()
		j.log.Warnf("cdc_join: state_dir %s: the state is in memory only and does not survive a restart", memoryStateDir)
	} else if j.store, err = statestore.OpenLog(dir); err != nil {
		return nil, err
	}
	if err := j.openHistory(context.Background()); err != nil {
		_ = j.store.Close()
		return nil, fmt.Errorf("cdc_join: reading the state's partitions: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	j.stopPurge, j.purged = cancel, make(chan struct{})
	go func() { defer close(j.purged); j.purgeLoop(ctx) }()
	return j, nil
}

// memoryStateDir as state_dir keeps the state in memory only: a fresh
// state per instance, nothing on disk, what config unit tests need.
const memoryStateDir = ":memory:"

// Close stops the purge loop and releases the state store.
func (j *join) Close(context.Context) error {
	j.stopPurge()
	<-j.purged
	return j.store.Close()
}
