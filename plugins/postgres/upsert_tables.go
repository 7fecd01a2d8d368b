package postgres

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/redpanda-data/benthos/v4/public/bloblang"
	"github.com/redpanda-data/benthos/v4/public/service"
)

// identifierPart is what a table or column name part may be: it is quoted
// anyway, but refusing anything else keeps configs unsurprising.
var identifierPart = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func validIdentifier(s string) error {
	if !identifierPart.MatchString(s) {
		return fmt.Errorf("%q is not a valid name: want letters, digits and _, not starting with a digit", s)
	}
	return nil
}

// tableConf is a configured table, and the SQL built for it at connect.
type tableConf struct {
	index    int
	name     string
	ident    pgx.Identifier
	odsTable string
	check    *bloblang.Executor
	argsMap  *bloblang.Executor

	columns  []string // upserted
	keys     []string // conflict target
	versions []string // guard; empty: none
	collect  []string // after_batch columns

	// From the catalog, at connect.
	types map[string]colType

	upTemp, delTemp string   // temporary tables (names in pg_temp)
	delColumns      []string // keys then versions
	createTemps     string
	copyUp, copyDel string
	mergeSQL        string
	deleteSQL       string
}

func parseTable(i int, tc *service.ParsedConfig) (*tableConf, error) {
	t := &tableConf{}
	var err error
	if t.name, err = tc.FieldString("name"); err != nil {
		return nil, err
	}
	parts := strings.Split(t.name, ".")
	if len(parts) > 2 {
		return nil, fmt.Errorf("tables[%d].name %q: want table or schema.table", i, t.name)
	}
	for _, p := range parts {
		if err := validIdentifier(p); err != nil {
			return nil, fmt.Errorf("tables[%d].name: %w", i, err)
		}
	}
	t.ident = pgx.Identifier(parts)
	if t.odsTable, err = tc.FieldString("ods_table"); err != nil {
		return nil, err
	}
	if t.odsTable == "" {
		t.odsTable = parts[len(parts)-1]
	}
	if tc.Contains("check") {
		if t.check, err = tc.FieldBloblang("check"); err != nil {
			return nil, fmt.Errorf("tables[%d].check: %w", i, err)
		}
	}
	if tc.Contains("args_mapping") {
		if t.argsMap, err = tc.FieldBloblang("args_mapping"); err != nil {
			return nil, fmt.Errorf("tables[%d].args_mapping: %w", i, err)
		}
	}
	if t.columns, err = tc.FieldStringList("columns"); err != nil {
		return nil, err
	}
	if t.keys, err = tc.FieldStringList("key_columns"); err != nil {
		return nil, err
	}
	if t.versions, err = tc.FieldStringList("version_columns"); err != nil {
		return nil, err
	}
	if len(t.columns) == 0 || len(t.keys) == 0 {
		return nil, fmt.Errorf("tables[%d] (%s): columns and key_columns must not be empty", i, t.name)
	}
	seen := map[string]bool{}
	for _, c := range t.columns {
		if err := validIdentifier(c); err != nil {
			return nil, fmt.Errorf("tables[%d].columns: %w", i, err)
		}
		if seen[c] {
			return nil, fmt.Errorf("tables[%d].columns: %s is listed twice", i, c)
		}
		seen[c] = true
	}
	for _, list := range [][]string{t.keys, t.versions} {
		for _, c := range list {
			if !seen[c] {
				return nil, fmt.Errorf("tables[%d] (%s): %q is a key or version column but not in columns", i, t.name, c)
			}
		}
	}
	for _, k := range t.keys {
		for _, v := range t.versions {
			if k == v {
				return nil, fmt.Errorf("tables[%d] (%s): %q is both a key and a version column", i, t.name, k)
			}
		}
	}
	t.delColumns = append(append([]string{}, t.keys...), t.versions...)
	return t, nil
}

// colType is what the catalog says of a column.
type colType struct {
	full     string // format_type with the modifier: varchar(8), numeric(20,2), char(3)[]
	category byte   // pg_type.typcategory: 'A' array, 'N' numeric, 'D' date/time, …
	name     string // pg_type.typname: int4, uuid, jsonb, _int4, …
}

func (c colType) json() bool { return c.name == "json" || c.name == "jsonb" }

// load reads the column types from the catalog and builds the SQL.
func (t *tableConf) load(ctx context.Context, conn *pgx.Conn) error {
	rows, err := conn.Query(ctx, `SELECT a.attname, format_type(a.atttypid, a.atttypmod), ty.typcategory, ty.typname
		FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid
		WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped`, t.ident.Sanitize())
	if err != nil {
		return fmt.Errorf("pg_upsert: table %s: %w", t.name, err)
	}
	t.types = map[string]colType{}
	for rows.Next() {
		var name, full, category, typname string
		if err := rows.Scan(&name, &full, &category, &typname); err != nil {
			return fmt.Errorf("pg_upsert: table %s: %w", t.name, err)
		}
		t.types[name] = colType{full: full, category: category[0], name: typname}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("pg_upsert: table %s: %w", t.name, err)
	}
	for _, c := range append(append([]string{}, t.columns...), t.collect...) {
		if _, ok := t.types[c]; !ok {
			return fmt.Errorf("pg_upsert: table %s has no column %q", t.name, c)
		}
	}
	t.build()
	return nil
}

func q(name string) string { return pgx.Identifier{name}.Sanitize() }

// The temporary tables have the target's column types, modifiers included,
// and values reach them by COPY in text form: each is read by its type's
// own input function, so a value the column refuses (too long for
// varchar(8) or char(6), not a number, a malformed array) is a data
// exception of its row, never cut or rounded silently by a cast.
func (t *tableConf) build() {
	target := t.ident.Sanitize()
	t.upTemp = "odsflow_up_" + strconv.Itoa(t.index)
	t.delTemp = "odsflow_del_" + strconv.Itoa(t.index)
	typedCols := func(cols []string) string {
		parts := make([]string, len(cols))
		for i, c := range cols {
			parts[i] = q(c) + " " + t.types[c].full
		}
		return strings.Join(parts, ", ")
	}
	quoted := func(cols []string) string {
		parts := make([]string, len(cols))
		for i, c := range cols {
			parts[i] = q(c)
		}
		return strings.Join(parts, ", ")
	}
	t.createTemps = "CREATE TEMP TABLE IF NOT EXISTS " + q(t.upTemp) + " (" + typedCols(t.columns) + ") ON COMMIT DELETE ROWS; " +
		"CREATE TEMP TABLE IF NOT EXISTS " + q(t.delTemp) + " (" + typedCols(t.delColumns) + ") ON COMMIT DELETE ROWS"
	t.copyUp = "COPY pg_temp." + q(t.upTemp) + " (" + quoted(t.columns) + ") FROM STDIN"
	t.copyDel = "COPY pg_temp." + q(t.delTemp) + " (" + quoted(t.delColumns) + ") FROM STDIN"

	keyMatch := func(alias string) string {
		parts := make([]string, len(t.keys))
		for i, k := range t.keys {
			parts[i] = "t." + q(k) + " = " + alias + "." + q(k)
		}
		return strings.Join(parts, " AND ")
	}
	returning := func() string {
		if len(t.collect) == 0 {
			return ""
		}
		parts := make([]string, len(t.collect))
		for i, c := range t.collect {
			parts[i] = "t." + q(c) + "::text"
		}
		return " RETURNING " + strings.Join(parts, ", ")
	}

	// Upserts. The guard treats a stored NULL version as older than any
	// (IS NOT FALSE), so such a row can still be brought up to date.
	var set []string
	isKey := map[string]bool{}
	for _, k := range t.keys {
		isKey[k] = true
	}
	for _, c := range t.columns {
		if !isKey[c] {
			set = append(set, q(c)+" = EXCLUDED."+q(c))
		}
	}
	insert := "INSERT INTO " + target + " AS t (" + quoted(t.columns) + ") SELECT " + quoted(t.columns) +
		" FROM pg_temp." + q(t.upTemp) + " ON CONFLICT (" + quoted(t.keys) + ") "
	if len(set) == 0 {
		insert += "DO NOTHING"
	} else {
		insert += "DO UPDATE SET " + strings.Join(set, ", ")
		if len(t.versions) > 0 {
			insert += " WHERE (" + t.versionRow("t.") + " <= " + t.versionRow("EXCLUDED.") + ") IS NOT FALSE"
		}
	}
	if len(t.collect) == 0 {
		t.mergeSQL = insert
	} else {
		// The values of the collected columns before (prev: a data-modifying
		// CTE sees the snapshot of the statement's start) and after.
		collected := make([]string, len(t.collect))
		for i, c := range t.collect {
			collected[i] = "t." + q(c) + "::text"
		}
		// prev probes the target's key index once per row (LATERAL, kept
		// from being flattened by OFFSET 0): a temporary table has no
		// statistics, and a join left to the planner scanned the whole
		// target per batch.
		t.mergeSQL = "WITH prev AS (SELECT x.* FROM pg_temp." + q(t.upTemp) + " s CROSS JOIN LATERAL (SELECT " + strings.Join(collected, ", ") +
			" FROM " + target + " t WHERE " + keyMatch("s") + " OFFSET 0) x), up AS (" + insert + returning() + ") " +
			"SELECT false, * FROM prev UNION ALL SELECT true, * FROM up"
	}

	// Deletes: guarded by their versions; one without versions (NULL)
	// deletes whatever the row's.
	del := "DELETE FROM " + target + " AS t USING pg_temp." + q(t.delTemp) + " d WHERE " + keyMatch("d")
	if len(t.versions) > 0 {
		del += " AND (" + t.versionRow("t.") + " <= " + t.versionRow("d.") + ") IS NOT FALSE"
	}
	t.deleteSQL = del + returning()
}

// versionRow is the version columns as a row value, with a prefix.
func (t *tableConf) versionRow(prefix string) string {
	parts := make([]string, len(t.versions))
	for i, v := range t.versions {
		parts[i] = prefix + q(v)
	}
	return "ROW(" + strings.Join(parts, ", ") + ")"
}

// truncateSQL deletes the rows whose given version columns are all not
// newer than the bound values ($1…, as text); every row when none.
func (t *tableConf) truncateSQL(cols []string) string {
	sql := "DELETE FROM " + t.ident.Sanitize() + " AS t"
	if len(cols) > 0 {
		conds := make([]string, len(cols))
		for i, c := range cols {
			conds[i] = "t." + q(c) + " <= ($" + strconv.Itoa(i+1) + "::text)::" + t.types[c].full
		}
		sql += " WHERE " + strings.Join(conds, " AND ")
	}
	if len(t.collect) > 0 {
		parts := make([]string, len(t.collect))
		for i, c := range t.collect {
			parts[i] = "t." + q(c) + "::text"
		}
		sql += " RETURNING " + strings.Join(parts, ", ")
	}
	return sql
}
