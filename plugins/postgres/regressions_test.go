package postgres

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redpanda-data/benthos/v4/public/service"
)

// Cases found by review: each a way an earlier version lost or bent data.

func setupTable(t *testing.T, ddl, tables string) (*upsert, *pgx.Conn) {
	t.Helper()
	dsn := newDB(t)
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	if _, err := conn.Exec(context.Background(), ddl); err != nil {
		t.Fatal(err)
	}
	return newOutput(t, fmt.Sprintf("dsn: %q\nretry: {initial_interval: 10ms, max_interval: 50ms}\n%s", dsn, tables)), conn
}

func one(t *testing.T, conn *pgx.Conn, sql string) string {
	t.Helper()
	var s *string
	if err := conn.QueryRow(context.Background(), sql).Scan(&s); err != nil {
		t.Fatal(err)
	}
	if s == nil {
		return "<null>"
	}
	return *s
}

func failedIndexes(err error) []int {
	var berr *service.BatchError
	var out []int
	if errors.As(err, &berr) {
		berr.WalkMessages(func(i int, _ *service.Message, err error) bool {
			if err != nil {
				out = append(out, i)
			}
			return true
		})
	}
	return out
}

func TestTypesKeepTheirModifiers(t *testing.T) {
	u, conn := setupTable(t, `CREATE TABLE c (k int PRIMARY KEY, code char(6), codes char(3)[], flags bit(4), short varchar(3))`,
		`tables: [{name: c, columns: [k, code, codes, flags, short], key_columns: [k]}]`)
	err := u.WriteBatch(context.Background(), service.MessageBatch{
		msg("c", "", `{"k":1,"code":"ABCDEF","codes":["abc","def"],"flags":"1010","short":"abc"}`),
		msg("c", "", `{"k":2,"code":"ABCDEFG","codes":null,"flags":null,"short":null}`), // too long for char(6): refused, not cut
		msg("c", "", `{"k":3,"code":null,"codes":null,"flags":null,"short":"abcd"}`),    // too long for varchar(3)
	})
	if got := fmt.Sprint(failedIndexes(err)); got != "[1 2]" || !strings.Contains(err.Error(), "22001") {
		t.Errorf("refused messages %s (%v), want [1 2], too long (22001)", got, err)
	}
	check(t, "stored as given", one(t, conn, `SELECT format('%s|%s|%s|%s', code, codes, flags, short) FROM c WHERE k = 1`), "ABCDEF|{abc,def}|1010|abc")
}

func TestArraysAndJSON(t *testing.T) {
	u, conn := setupTable(t, `CREATE TABLE a (k int PRIMARY KEY, ids int[], tags text[], doc jsonb)`,
		`tables: [{name: a, columns: [k, ids, tags, doc], key_columns: [k]}]`)
	write(t, u,
		msg("a", "", `{"k":1,"ids":[1,2,3],"tags":null,"doc":null}`),
		msg("a", "", `{"k":2,"ids":null,"tags":["x","y \"q\" \\ z",null],"doc":null}`),
		msg("a", "", `{"k":3,"ids":null,"tags":null,"doc":"\"just a string\""}`), // Debezium's json: JSON text
		msg("a", "", `{"k":4,"ids":null,"tags":null,"doc":{"a":1}}`),
	)
	check(t, "arrays and JSON", one(t, conn, `SELECT string_agg(format('%s:%s:%s:%s', k, ids, tags, doc), ' ' ORDER BY k) FROM a`),
		`1:{1,2,3}:: 2::{x,"y \"q\" \\ z",NULL}: 3:::"just a string" 4:::{"a": 1}`)
}

func TestTwoSpellingsOfOneKeyAreOneKey(t *testing.T) {
	u, conn := setupTable(t, `CREATE TABLE k (id uuid PRIMARY KEY, v int); CREATE TABLE n (id int PRIMARY KEY, v int)`,
		`tables: [{name: k, columns: [id, v], key_columns: [id]}, {name: n, columns: [id, v], key_columns: [id]}]`)
	write(t, u,
		msg("k", "", `{"id":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","v":1}`), msg("k", "", `{"id":"6BA7B810-9DAD-11D1-80B4-00C04FD430C8","v":2}`),
		msg("n", "", `{"id":1,"v":1}`), msg("n", "", `{"id":"01","v":2}`), msg("n", "", `{"id":2,"v":2}`))
	check(t, "the last of each key", one(t, conn, `SELECT (SELECT string_agg(v::text, ',') FROM k) || ' | ' || (SELECT string_agg(id||'='||v, ',' ORDER BY id) FROM n)`), "2 | 1=2,2=2")
}

func TestReductionComparesVersionsByType(t *testing.T) {
	u, conn := setupTable(t, `CREATE TABLE ts (k int PRIMARY KEY, v text, ver timestamptz NOT NULL);
		CREATE TABLE nu (k int PRIMARY KEY, v text, ver numeric NOT NULL)`,
		`tables:
  - {name: ts, columns: [k, v, ver], key_columns: [k], version_columns: [ver]}
  - {name: nu, columns: [k, v, ver], key_columns: [k], version_columns: [ver]}`)
	write(t, u,
		msg("ts", "", `{"k":1,"v":"new","ver":"2024-01-01T10:00:00.5Z"}`),
		msg("ts", "", `{"k":1,"v":"old","ver":"2024-01-01T10:00:00Z"}`),
		msg("ts", "", `{"k":2,"v":"old","ver":"2024-01-01T10:00:00Z"}`),
		msg("ts", "", `{"k":2,"v":"new","ver":"2024-01-01T12:00:00+01:00"}`),
		msg("nu", "", `{"k":1,"v":"old","ver":9}`),
		msg("nu", "", `{"k":1,"v":"new","ver":10.5}`),
		msg("nu", "", `{"k":2,"v":"new","ver":100000000000000000000}`),
		msg("nu", "", `{"k":2,"v":"old","ver":99999999999999999999}`),
	)
	check(t, "the newest change of each key", one(t, conn, `SELECT (SELECT string_agg(k||'='||v, ' ' ORDER BY k) FROM ts) || ' | ' || (SELECT string_agg(k||'='||v, ' ' ORDER BY k) FROM nu)`),
		"1=new 2=new | 1=new 2=new")
}

func TestAnUnversionedDeleteKeepsItsPlace(t *testing.T) {
	u, conn := testOutput(t)
	batch := func(extra ...*service.Message) service.MessageBatch {
		return append(service.MessageBatch{acct("1", 7, "1.00", 5, 1), msg("customer_account", "delete", `{"account_number":"1"}`), acct("1", 7, "3.00", 6, 1)}, extra...)
	}
	write(t, u, batch()...)
	plain := accounts(t, conn)
	if _, err := conn.Exec(context.Background(), `TRUNCATE ods.customer_account`); err != nil {
		t.Fatal(err)
	}
	_ = u.WriteBatch(context.Background(), batch(acct("bad", 7, "x", 1, 1))) // bisected: applied in order
	check(t, "as applied in order, whether or not the batch is bisected", accounts(t, conn), plain)
	check(t, "the upsert after the delete stays", plain, "1:7:3.00:6/1")
}

func TestAStoredNullVersionIsOlderThanAny(t *testing.T) {
	u, conn := setupTable(t, `CREATE TABLE nv (k int PRIMARY KEY, v text, ver bigint); INSERT INTO nv VALUES (1, 'legacy', NULL), (2, 'legacy', NULL)`,
		`tables: [{name: nv, columns: [k, v, ver], key_columns: [k], version_columns: [ver]}]`)
	write(t, u, msg("nv", "", `{"k":1,"v":"new","ver":100}`), msg("nv", "delete", `{"k":2,"ver":100}`))
	check(t, "updated and deleted", one(t, conn, `SELECT string_agg(k||'='||v, ' ') FROM nv`), "1=new")
}

func TestADeferredConstraintIsARowError(t *testing.T) {
	u, conn := setupTable(t, `CREATE TABLE p (id int PRIMARY KEY);
		CREATE TABLE ch (id int PRIMARY KEY, p int REFERENCES p DEFERRABLE INITIALLY DEFERRED); INSERT INTO p VALUES (2)`,
		`tables: [{name: ch, columns: [id, p], key_columns: [id]}]`)
	err := u.WriteBatch(context.Background(), service.MessageBatch{msg("ch", "", `{"id":1,"p":1}`), msg("ch", "", `{"id":2,"p":2}`)})
	if got := fmt.Sprint(failedIndexes(err)); got != "[0]" {
		t.Errorf("refused %s (%v), want only the row without its parent", got, err)
	}
	check(t, "the good row", one(t, conn, `SELECT string_agg(id::text, ',') FROM ch`), "2")
}

func TestManyBadRowsAreIsolated(t *testing.T) {
	u, conn := testOutput(t)
	const n = 2000
	batch := make(service.MessageBatch, n)
	for i := range batch {
		bal := "1.00"
		if i%10 == 0 {
			bal = "bad"
		}
		batch[i] = acct(fmt.Sprint(i), 1, bal, 1, 1)
	}
	err := u.WriteBatch(context.Background(), batch)
	if got := len(failedIndexes(err)); got != n/10 {
		t.Errorf("%d refused, want %d", got, n/10)
	}
	check(t, "the good rows", one(t, conn, `SELECT count(*)::text FROM ods.customer_account`), fmt.Sprint(n-n/10))
}

// The output's sessions run without JIT unless the DSN asks for it.
func TestSessionsRunWithoutJITUnlessTheDSNSetsIt(t *testing.T) {
	indented := strings.ReplaceAll(strings.TrimSpace(accountDDL), "\n", "\n  ")
	for _, c := range []struct{ param, want string }{{"", "off"}, {"jit=on", "on"}, {"options=-c%20jit%3Don", "on"}} {
		dsn := newDB(t)
		if c.param != "" {
			sep := "?"
			if strings.Contains(dsn, "?") {
				sep = "&"
			}
			dsn += sep + c.param
		}
		u := newOutput(t, fmt.Sprintf(upsertConfig, dsn, indented))
		var got string
		if err := u.currentPool().QueryRow(context.Background(), "SHOW jit").Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("dsn with %q: jit = %s, want %s", c.param, got, c.want)
		}
	}
}

// TestCanonicalKeyPlainIntegers: an integer key already in canonical form
// skips the big.Rat parse; it must be exactly what the parse renders, and
// every other spelling still goes through it.
func TestCanonicalKeyPlainIntegers(t *testing.T) {
	num := colType{full: "bigint", category: 'N', name: "int8"}
	cases := []string{"0", "-0", "00", "007", "12", "-12", "-012", "1e3", " 5", "5 ", "12.0", "-", "", "+5", "9223372036854775807", "-1", "10"}
	for i := 0; i < 2000; i++ {
		cases = append(cases, strconv.FormatInt(int64(i*7919-5000), 10))
	}
	for _, v := range cases {
		want := v
		if r, ok := new(big.Rat).SetString(strings.TrimSpace(v)); ok {
			want = r.RatString()
		}
		if plainInteger(v) && want != v {
			t.Errorf("plainInteger(%q) but big.Rat renders %q", v, want)
		}
		if got := canonicalKey(v, num); got != want {
			t.Errorf("canonicalKey(%q) = %q, want %q", v, got, want)
		}
	}
	if !plainInteger("123") || plainInteger("0123") || plainInteger("-0") {
		t.Error("plainInteger misjudges 123, 0123 or -0")
	}
}

// A column of columns missing from an upsert's row (a misspelt mapping
// line) is the message's error, not a NULL written for every row; an
// explicit null is NULL.
func TestMissingColumnIsARowError(t *testing.T) {
	u, conn := setupTable(t, `CREATE TABLE m (k int PRIMARY KEY, name text)`,
		`tables: [{name: m, columns: [k, name], key_columns: [k]}]`)
	err := u.WriteBatch(context.Background(), service.MessageBatch{
		msg("m", "", `{"k":1,"nmae":"Ann"}`),
		msg("m", "", `{"k":2,"name":null}`),
		msg("m", "", `{"k":3,"name":"Bob"}`),
	})
	if got := fmt.Sprint(failedIndexes(err)); got != "[0]" || !strings.Contains(err.Error(), "the row has no name") {
		t.Errorf("refused messages %s (%v), want [0], naming the column", got, err)
	}
	check(t, "the others written", one(t, conn, `SELECT string_agg(format('%s:%s', k, coalesce(name, 'NULL')), ' ' ORDER BY k) FROM m`), "2:NULL 3:Bob")
}

// A table gone (42P01) while another of the batch's tables is fine: the
// server's problem, not its rows'. The batch is held, none of it
// dead-lettered, and written once the table is back.
func TestAMissingTableHoldsTheWholeBatch(t *testing.T) {
	u, conn := testOutput(t)
	ctx := context.Background()
	write(t, u, acct("0", 7, "1.00", 1, 1), msg("t_transaction", "", `{"transaction_id":49,"customer_id":7,"transaction_amount":"-5.00","source_version":1}`))
	if _, err := conn.Exec(ctx, `ALTER TABLE ods.t_transaction RENAME TO t_transaction_moved`); err != nil {
		t.Fatal(err)
	}
	heldUntil(t, u, service.MessageBatch{
		acct("1", 7, "1.00", 1, 1),
		msg("t_transaction", "", `{"transaction_id":50,"customer_id":7,"transaction_amount":"-5.00","source_version":2}`),
	}, func() {
		if _, err := conn.Exec(ctx, `ALTER TABLE ods.t_transaction_moved RENAME TO t_transaction`); err != nil {
			t.Error(err)
		}
	})
	if got := one(t, conn, `SELECT count(*)::text FROM ods.t_transaction`); got != "2" {
		t.Errorf("%s transactions after the table came back, want 2", got)
	}
}

// A read-only server with one truly bad row in the batch: the batch is
// held (nothing dead-lettered for the server's state); once writable, only
// the bad row is refused.
func TestReadOnlyServerWithABadRowHoldsTheBatch(t *testing.T) {
	u, conn := testOutput(t)
	ctx := context.Background()
	write(t, u, acct("0", 7, "1.00", 1, 1))
	// The server turned read-only under pg_upsert's open connection (its
	// temporary tables made): the setting reloaded, and in force once a
	// new session sees it (the server has then signalled every session,
	// which applies it at its next statement). This package's tests run
	// one at a time on their cluster.
	readOnly := func(on bool) {
		t.Helper()
		sql, want := `ALTER SYSTEM SET default_transaction_read_only = on`, "on"
		if !on {
			sql, want = `ALTER SYSTEM RESET default_transaction_read_only`, "off"
		}
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, `SELECT pg_reload_conf()`); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			fresh, err := pgx.Connect(ctx, conn.Config().ConnString())
			if err != nil {
				t.Fatal(err)
			}
			var got string
			err = fresh.QueryRow(ctx, `SHOW default_transaction_read_only`).Scan(&got)
			_ = fresh.Close(ctx)
			if err == nil && got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("default_transaction_read_only is %q 10 s after the reload (%v), want %s", got, err, want)
			}
		}
	}
	readOnly(true)
	t.Cleanup(func() { readOnly(false) })
	bad := msg("customer_account", "upsert", `{"account_number":"2","customer_id":7,"account_status":"much-too-long","account_balance":"1.00","account_version":1,"customer_version":1}`)
	batch := service.MessageBatch{acct("1", 7, "1.00", 1, 1), bad, acct("3", 8, "1.00", 1, 1)}
	before := u.retriesSeen.Load()
	done := make(chan error, 1)
	go func() { done <- u.WriteBatch(ctx, batch) }()
	for deadline := time.Now().Add(20 * time.Second); u.retriesSeen.Load() < before+2; time.Sleep(20 * time.Millisecond) {
		select {
		case err := <-done:
			t.Fatalf("WriteBatch on a read-only server returned %v (refused %v), want it held", err, failedIndexes(err))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("no retries in 20 s")
		}
	}
	readOnly(false)
	select {
	case err := <-done:
		if got := failedIndexes(err); fmt.Sprint(got) != "[1]" {
			t.Errorf("once writable: refused %v (%v), want [1]", got, err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("not written 30 s after the server became writable")
	}
}

// Bisecting (an unrelated bad row in the batch) splits only the changes
// the batch writes: a delete and an older upsert of the same row, in two
// halves, must not bring the row back.
func TestBisectingKeepsADeleteOverAnOlderUpsert(t *testing.T) {
	u, conn := testOutput(t)
	write(t, u, acct("1", 7, "1.00", 5, 1))
	bad := msg("customer_account", "upsert", `{"account_number":"99","customer_id":7,"account_status":"much-too-long","account_balance":"1.00","account_version":1,"customer_version":1}`)
	err := u.WriteBatch(context.Background(), service.MessageBatch{acctDelete("1", 10, 1), bad, acct("1", 7, "2.00", 8, 1)})
	if got := failedIndexes(err); fmt.Sprint(got) != "[1]" {
		t.Fatalf("refused %v (%v), want [1]", got, err)
	}
	check(t, "a delete v10 and an upsert v8 around a bad row", accounts(t, conn), "")
}

// A batch too large for temp_file_limit (53400) is bisected into parts
// that fit, not retried whole for ever.
func TestATooLargeBatchForTheServersLimitsIsBisected(t *testing.T) {
	u, conn := testOutputWith(t, "&options=-c%20work_mem%3D1MB%20-c%20temp_file_limit%3D1",
		"SELECT count(*) FROM (SELECT DISTINCT md5(x) FROM unnest($1::text[]) x) s")
	var batch service.MessageBatch
	for i := range 40000 {
		batch = append(batch, acct(fmt.Sprint(i), i, "1.00", 1, 1))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := u.WriteBatch(ctx, batch); err != nil {
		t.Fatalf("WriteBatch: %v (after %d retries)", err, u.retriesSeen.Load())
	}
	if got := one(t, conn, `SELECT count(*)::text FROM ods.customer_account`); got != "40000" {
		t.Errorf("%s rows, want 40000", got)
	}
}

// A timestamp string with a UTC offset, into a timestamp without time
// zone: the UTC wall clock (PostgreSQL would drop the offset), as a
// time.Time value gets.
func TestAnOffsetTimestampIsStoredAsUTC(t *testing.T) {
	u, conn := setupTable(t, `CREATE TABLE tt (k int PRIMARY KEY, d timestamp, dz timestamptz)`,
		`tables: [{name: tt, columns: [k, d, dz], key_columns: [k]}]`)
	write(t, u, msg("tt", "", `{"k":1,"d":"2025-02-28T23:30:00-05:00","dz":"2025-02-28T23:30:00-05:00"}`),
		msg("tt", "", `{"k":2,"d":"2025-02-28T23:30:00.25Z","dz":null}`))
	if got := one(t, conn, `SELECT d::text FROM tt WHERE k = 1`); got != "2025-03-01 04:30:00" {
		t.Errorf("stored %s, want the UTC wall clock 2025-03-01 04:30:00", got)
	}
	if got := one(t, conn, `SELECT extract(epoch FROM dz)::text FROM tt WHERE k = 1`); got != "1740803400.000000" {
		t.Errorf("timestamptz stored as epoch %s, want 1740803400", got)
	}
	if got := one(t, conn, `SELECT d::text FROM tt WHERE k = 2`); got != "2025-02-28 23:30:00.25" {
		t.Errorf("a Z timestamp stored as %s", got)
	}
}
