package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/redpanda-data/benthos/v4/public/service"

	"github.com/odsflow/odsflow/internal/devstack"
	"github.com/odsflow/odsflow/internal/pgcluster"
	"github.com/odsflow/odsflow/internal/syncbuf"
)

// One PostgreSQL server for the package; each test gets its own database.
var (
	stackOnce sync.Once
	stackDSN  string
	stackErr  error
	stackStop func()
)

func TestMain(m *testing.M) {
	code := m.Run()
	if stackStop != nil {
		stackStop()
	}
	os.Exit(code)
}

// newDB returns the DSN of a fresh database.
func newDB(t *testing.T) string {
	t.Helper()
	stackOnce.Do(func() {
		if dsn := os.Getenv(devstack.TestPostgresDSNEnv); dsn != "" {
			stackDSN = dsn
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		c, err := pgcluster.Start(ctx, pgcluster.Options{})
		if err != nil {
			stackErr = err
			return
		}
		stackDSN = c.AdminDSN()
		stackStop = func() { _ = c.Stop(context.Background()) }
	})
	if stackErr != nil {
		t.Fatalf("starting PostgreSQL: %v", stackErr)
	}
	return (&devstack.Stack{PostgresDSN: stackDSN}).NewDatabase(t)
}

const accountDDL = `
CREATE SCHEMA IF NOT EXISTS ods;
CREATE TABLE IF NOT EXISTS ods.customer_account (
  account_number varchar(20) PRIMARY KEY,
  customer_id int NOT NULL,
  account_balance numeric(20,2),
  account_status varchar(8),
  account_version bigint NOT NULL,
  customer_version bigint NOT NULL);
CREATE TABLE IF NOT EXISTS ods.t_transaction (
  transaction_id bigint PRIMARY KEY,
  customer_id int,
  transaction_amount numeric(20,2) CHECK (transaction_amount <> 0),
  source_version bigint NOT NULL);
CREATE TABLE IF NOT EXISTS ods.refreshed (customer_id int, at timestamptz DEFAULT now());
`

const upsertConfig = `
dsn: %q
init_statement: |
  %s
tables:
  - name: ods.customer_account
    columns: [account_number, customer_id, account_balance, account_status, account_version, customer_version]
    key_columns: [account_number]
    version_columns: [account_version, customer_version]
  - name: ods.t_transaction
    columns: [transaction_id, customer_id, transaction_amount, source_version]
    key_columns: [transaction_id]
    version_columns: [source_version]
after_batch:
  - statement: INSERT INTO ods.refreshed (customer_id) SELECT unnest($1::text[]::int[])
    column: customer_id
    tables: [ods.customer_account, ods.t_transaction]
retry:
  initial_interval: 20ms
  max_interval: 200ms
`

func newOutput(t *testing.T, conf string) *upsert {
	t.Helper()
	parsed, err := upsertSpec().ParseYAML(conf, nil)
	if err != nil {
		t.Fatal(err)
	}
	u, err := newUpsert(parsed, service.MockResources())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := u.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = u.Close(context.Background()) })
	return u
}

func testOutput(t *testing.T) (*upsert, *pgx.Conn) {
	t.Helper()
	return testOutputWith(t, "", "")
}

// testOutputWith is testOutput with dsnOptions added to the DSN and, when
// not empty, afterBatch as the statement of upsertConfig's after_batch.
func testOutputWith(t *testing.T, dsnOptions, afterBatch string) (*upsert, *pgx.Conn) {
	t.Helper()
	dsn := newDB(t)
	indented := strings.ReplaceAll(strings.TrimSpace(accountDDL), "\n", "\n  ")
	conf := fmt.Sprintf(upsertConfig, dsn+dsnOptions, indented)
	if afterBatch != "" {
		conf = strings.Replace(conf, "INSERT INTO ods.refreshed (customer_id) SELECT unnest($1::text[]::int[])", afterBatch, 1)
	}
	u := newOutput(t, conf)
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return u, conn
}

func msg(table, op, body string) *service.Message {
	m := service.NewMessage([]byte(body))
	m.MetaSetMut("ods_table", table)
	if op != "" {
		m.MetaSetMut("ods_op", op)
	}
	return m
}

func acct(number string, customer int, balance string, av, cv int64) *service.Message {
	return msg("customer_account", "upsert", fmt.Sprintf(
		`{"account_number":%q,"customer_id":%d,"account_balance":%q,"account_status":"active","account_version":%d,"customer_version":%d}`,
		number, customer, balance, av, cv))
}

func acctDelete(number string, av, cv int64) *service.Message {
	return msg("customer_account", "delete", fmt.Sprintf(`{"account_number":%q,"account_version":%d,"customer_version":%d}`, number, av, cv))
}

func write(t *testing.T, u *upsert, msgs ...*service.Message) {
	t.Helper()
	if err := u.WriteBatch(context.Background(), msgs); err != nil {
		t.Fatalf("WriteBatch: %v", err)
	}
}

// accounts renders the table as "number:customer:balance:av/cv" lines.
func accounts(t *testing.T, conn *pgx.Conn) string {
	t.Helper()
	rows, err := conn.Query(context.Background(),
		`SELECT account_number, customer_id, account_balance::text, account_version, customer_version FROM ods.customer_account ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for rows.Next() {
		var n, bal string
		var c int
		var av, cv int64
		if err := rows.Scan(&n, &c, &bal, &av, &cv); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s:%d:%s:%d/%d", n, c, bal, av, cv))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(out, " ")
}

func check(t *testing.T, step, got, want string) {
	t.Helper()
	if got != want {
		t.Errorf("%s:\n got %q\nwant %q", step, got, want)
	}
}

func TestUpsertDeleteAndVersionGuard(t *testing.T) {
	u, conn := testOutput(t)
	write(t, u, acct("1001", 7, "5.00", 10, 3), acct("1002", 7, "1.50", 11, 3))
	check(t, "insert", accounts(t, conn), "1001:7:5.00:10/3 1002:7:1.50:11/3")
	write(t, u, acct("1001", 7, "6.00", 12, 3))
	check(t, "newer account version", accounts(t, conn), "1001:7:6.00:12/3 1002:7:1.50:11/3")
	write(t, u, acct("1001", 7, "9.99", 11, 9))
	check(t, "older (11, 9) < (12, 3) is refused", accounts(t, conn), "1001:7:6.00:12/3 1002:7:1.50:11/3")
	write(t, u, acct("1001", 8, "6.00", 12, 4))
	check(t, "same account version, newer customer version", accounts(t, conn), "1001:8:6.00:12/4 1002:7:1.50:11/3")
	write(t, u, acct("1001", 8, "7.00", 12, 4))
	check(t, "an equal version is applied again", accounts(t, conn), "1001:8:7.00:12/4 1002:7:1.50:11/3")
	write(t, u, acctDelete("1001", 12, 3))
	check(t, "an older delete is refused", accounts(t, conn), "1001:8:7.00:12/4 1002:7:1.50:11/3")
	write(t, u, acctDelete("1001", 13, 0))
	check(t, "a newer delete deletes", accounts(t, conn), "1002:7:1.50:11/3")
	write(t, u, msg("customer_account", "delete", `{"account_number":"1002"}`))
	check(t, "a delete without versions deletes", accounts(t, conn), "")
}

func TestReductionWithinABatch(t *testing.T) {
	u, conn := testOutput(t)
	write(t, u,
		acct("1", 1, "1.00", 1, 1), acct("1", 1, "2.00", 2, 1), // last upsert wins
		acct("2", 1, "1.00", 1, 1), acctDelete("2", 2, 0), // upsert then delete: a delete
		acctDelete("3", 1, 0), acct("3", 1, "3.00", 2, 1), // delete then upsert: an upsert
		acct("4", 1, "4.00", 5, 1), acct("4", 1, "0.40", 4, 1), // a later, older change loses
	)
	check(t, "reduced", accounts(t, conn), "1:1:2.00:2/1 3:1:3.00:2/1 4:1:4.00:5/1")
	if got := u.metrics; got.written == nil {
		t.Fatal("metrics not set")
	}
}

func TestLargeBatch(t *testing.T) {
	u, conn := testOutput(t)
	const n = 70_000
	batch := make(service.MessageBatch, n)
	for i := range batch {
		batch[i] = acct(fmt.Sprintf("%08d", i), i%5000, fmt.Sprintf("%d.%02d", i, i%100), int64(i+1), 1)
	}
	write(t, u, batch...)
	var count int
	var sum string
	if err := conn.QueryRow(context.Background(), `SELECT count(*), sum(account_balance)::text FROM ods.customer_account`).Scan(&count, &sum); err != nil {
		t.Fatal(err)
	}
	var want float64
	for i := 0; i < n; i++ {
		want += float64(i) + float64(i%100)/100
	}
	if count != n || sum != fmt.Sprintf("%.2f", want) {
		t.Errorf("after a batch of %d rows: %d rows, sum %s (want %.2f)", n, count, sum, want)
	}
}

func TestAfterBatchSeesValuesBeforeAndAfter(t *testing.T) {
	u, conn := testOutput(t)
	refreshed := func() string {
		rows, err := conn.Query(context.Background(), `SELECT DISTINCT customer_id FROM ods.refreshed ORDER BY 1`)
		if err != nil {
			t.Fatal(err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(context.Background(), `TRUNCATE ods.refreshed`); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(ids)
	}
	write(t, u, acct("1", 7, "1.00", 1, 1), msg("t_transaction", "", `{"transaction_id":50,"customer_id":9,"transaction_amount":"-5.00","source_version":2}`))
	check(t, "inserted rows' customers", refreshed(), "[7 9]")
	write(t, u, acct("1", 8, "1.00", 3, 1))
	check(t, "an account moving: both customers", refreshed(), "[7 8]")
	write(t, u, acctDelete("1", 4, 0))
	check(t, "a delete: its customer", refreshed(), "[8]")
	write(t, u, acct("2", 5, "1.00", 1, 1))
	write(t, u, acct("2", 6, "1.00", 0, 1)) // refused: the row keeps customer 5
	check(t, "a refused upsert still refreshes the row's customer (harmless)", refreshed(), "[5]")
}

func TestTruncate(t *testing.T) {
	u, conn := testOutput(t)
	write(t, u, acct("1", 7, "1.00", 5, 1), acct("2", 7, "1.00", 20, 1), acct("3", 8, "1.00", 6, 30))
	write(t, u, msg("customer_account", "truncate", `{"account_version":10}`))
	check(t, "rows with account_version <= 10 go", accounts(t, conn), "2:7:1.00:20/1")
	write(t, u, acct("4", 7, "1.00", 40, 2), msg("customer_account", "truncate", `{}`), acct("5", 7, "1.00", 41, 2))
	check(t, "a truncate keeps its place in the batch", accounts(t, conn), "5:7:1.00:41/2")
}

func TestPoisonRowsAreIsolated(t *testing.T) {
	u, conn := testOutput(t)
	var batch service.MessageBatch
	bad := map[int]string{}
	for i := 0; i < 100; i++ {
		switch i {
		case 13:
			bad[i] = "22P02" // invalid input syntax for type numeric
			batch = append(batch, acct("13", 1, "12,50", 1, 1))
		case 41:
			bad[i] = "22001" // value too long for varchar(8)
			batch = append(batch, msg("customer_account", "upsert", `{"account_number":"41","customer_id":1,"account_status":"much-too-long","account_balance":"1.00","account_version":1,"customer_version":1}`))
		case 77:
			bad[i] = "23502" // null customer_id
			batch = append(batch, msg("customer_account", "upsert", `{"account_number":"77","customer_id":null,"account_status":"open","account_balance":"1.00","account_version":1,"customer_version":1}`))
		case 90:
			bad[i] = "23514" // check constraint
			batch = append(batch, msg("t_transaction", "", `{"transaction_id":90,"customer_id":1,"transaction_amount":"0","source_version":1}`))
		case 95:
			bad[i] = "no table"
			batch = append(batch, msg("nope", "", `{}`))
		default:
			batch = append(batch, acct(fmt.Sprint(i), 1, "1.00", 1, 1))
		}
	}
	err := u.WriteBatch(context.Background(), batch)
	var berr *service.BatchError
	if !errors.As(err, &berr) {
		t.Fatalf("WriteBatch: %v, want a batch error", err)
	}
	failed := map[int]string{}
	berr.WalkMessages(func(i int, _ *service.Message, err error) bool {
		if err != nil {
			failed[i] = err.Error()
		}
		return true
	})
	if len(failed) != len(bad) {
		t.Errorf("failed messages %v, want exactly %v", failed, bad)
	}
	for i, code := range bad {
		if !strings.Contains(failed[i], code) {
			t.Errorf("message %d: %q, want an error with %s", i, failed[i], code)
		}
	}
	var count int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM ods.customer_account`).Scan(&count); err != nil {
		t.Fatal(err)
	}
	if want := 100 - len(bad); count != want { // the bad ones are all account rows but 90 and 95, which are no rows
		t.Errorf("%d account rows committed, want the %d good ones", count, want)
	}
}

func TestOneTransactionAcrossTables(t *testing.T) {
	// An after_batch statement that fails after both tables were written.
	u, conn := testOutputWith(t, "", "SELECT CASE WHEN 13 = ANY($1::text[]::int[]) THEN 1/0 END")
	err := u.WriteBatch(context.Background(), service.MessageBatch{
		acct("1", 13, "1.00", 1, 1),
		msg("t_transaction", "", `{"transaction_id":50,"customer_id":13,"transaction_amount":"-5.00","source_version":2}`),
	})
	if err == nil || !strings.Contains(err.Error(), "after_batch[0]") {
		t.Fatalf("WriteBatch: %v, want the after_batch failure", err)
	}
	var a, tr int
	if err := conn.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM ods.customer_account), (SELECT count(*) FROM ods.t_transaction)`).Scan(&a, &tr); err != nil {
		t.Fatal(err)
	}
	if a != 0 || tr != 0 {
		t.Errorf("after a failed batch: %d account rows, %d transactions: want nothing of it", a, tr)
	}
	write(t, u, acct("2", 14, "1.00", 1, 1))
	check(t, "the next batch", accounts(t, conn), "2:14:1.00:1/1")
}

// An after_batch statement that fails on what one message brought (a data
// exception) is traced to that message by bisecting: it alone is refused,
// the rest of the batch commits, with its after_batch.
func TestAfterBatchFailureIsolatesItsMessage(t *testing.T) {
	u, conn := testOutputWith(t, "", "INSERT INTO ods.refreshed (customer_id) SELECT c / (c - 13) * 0 + c FROM unnest($1::text[]::int[]) AS c")
	batch := service.MessageBatch{acct("1", 12, "1.00", 1, 1), acct("2", 13, "2.00", 1, 1), acct("3", 14, "3.00", 1, 1)}
	err := u.WriteBatch(context.Background(), batch)
	var berr *service.BatchError
	if !errors.As(err, &berr) {
		t.Fatalf("WriteBatch: %v, want a batch error naming the message", err)
	}
	var failed []int
	berr.WalkMessages(func(i int, _ *service.Message, err error) bool {
		if err != nil {
			failed = append(failed, i)
			if !strings.Contains(err.Error(), "after_batch[0]") || !strings.Contains(err.Error(), "22012") {
				t.Errorf("message %d: %v, want the after_batch's division by zero", i, err)
			}
		}
		return true
	})
	if fmt.Sprint(failed) != "[1]" {
		t.Errorf("refused messages %v, want [1]", failed)
	}
	check(t, "the other messages committed", accounts(t, conn), "1:12:1.00:1/1 3:14:3.00:1/1")
	var refreshed string
	if err := conn.QueryRow(context.Background(), `SELECT string_agg(DISTINCT customer_id::text, ' ' ORDER BY customer_id::text) FROM ods.refreshed`).Scan(&refreshed); err != nil {
		t.Fatal(err)
	}
	if refreshed != "12 14" {
		t.Errorf("after_batch ran for %q, want the committed rows' customers 12 14", refreshed)
	}
}

// A failure that is not a row's (here the database turned read-only, as
// a demoted primary is) holds the batch, retrying, instead of handing all
// of it to the dead-letter path; once the database takes writes again,
// the batch commits.
func TestFailureNotARowsHoldsTheBatch(t *testing.T) {
	u, conn := testOutput(t)
	ctx := context.Background()
	readOnly := func(on bool) {
		t.Helper()
		if _, err := conn.Exec(ctx, fmt.Sprintf(`DO $$ BEGIN EXECUTE format('ALTER DATABASE %%I SET default_transaction_read_only = %v', current_database()); END $$`, on)); err != nil {
			t.Fatal(err)
		}
		// Sessions read the setting when they start.
		if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`); err != nil {
			t.Fatal(err)
		}
	}
	readOnly(true)
	heldUntil(t, u, service.MessageBatch{acct("1", 7, "1.00", 1, 1)}, func() { readOnly(false) })
	check(t, "written once the database took writes", accounts(t, conn), "1:7:1.00:1/1")
}

// heldUntil writes batch, checks that the write is held (retried at least
// twice, not returned), calls release, and checks that the write then
// commits.
func heldUntil(t *testing.T, u *upsert, batch service.MessageBatch, release func()) {
	t.Helper()
	before := u.retriesSeen.Load()
	done := make(chan error, 1)
	go func() { done <- u.WriteBatch(context.Background(), batch) }()
	for deadline := time.Now().Add(20 * time.Second); u.retriesSeen.Load() < before+2; {
		select {
		case err := <-done:
			t.Fatalf("WriteBatch returned %v, want it to hold the batch", err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("no retries in 20 s")
		}
	}
	release()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("WriteBatch once released: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the batch was not written 30 s after its cause was removed")
	}
}

// A failure of no known row class that only some messages cause (here a
// trigger's own error code) is traced to them by bisecting; one that every
// message causes holds the batch until it goes away.
func TestUnknownFailureIsBisected(t *testing.T) {
	u, conn := testOutput(t)
	ctx := context.Background()
	_, err := conn.Exec(ctx, `
		CREATE FUNCTION ods.picky() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN IF NEW.customer_id = 13 OR (SELECT count(*) FROM ods.pickiness) > 0 THEN
			RAISE EXCEPTION 'customer % is refused', NEW.customer_id USING ERRCODE = 'OD001'; END IF; RETURN NEW; END $$;
		CREATE TABLE ods.pickiness (on_ int);
		CREATE TRIGGER picky BEFORE INSERT OR UPDATE ON ods.customer_account FOR EACH ROW EXECUTE FUNCTION ods.picky();`)
	if err != nil {
		t.Fatal(err)
	}
	batch := service.MessageBatch{acct("1", 12, "1.00", 1, 1), acct("2", 13, "2.00", 1, 1), acct("3", 14, "3.00", 1, 1)}
	if got := failedIndexes(u.WriteBatch(ctx, batch)); fmt.Sprint(got) != "[1]" {
		t.Errorf("refused messages %v, want [1]", got)
	}
	check(t, "the others committed", accounts(t, conn), "1:12:1.00:1/1 3:14:3.00:1/1")

	// Now every row is refused: not the messages' doing, the batch waits.
	if _, err := conn.Exec(ctx, `INSERT INTO ods.pickiness VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	// The error log names where the held messages came from.
	logs := &syncbuf.Buffer{}
	u.log = service.NewLoggerFromSlog(slog.New(slog.NewTextHandler(logs, nil)))
	held := service.MessageBatch{acct("4", 15, "4.00", 1, 1), acct("5", 16, "5.00", 1, 1)}
	for i, m := range held {
		m.MetaSetMut("kafka_topic", "cdc.T_Accounts")
		m.MetaSetMut("kafka_partition", 2)
		m.MetaSetMut("kafka_offset", 40+i)
	}
	heldUntil(t, u, held, func() {
		if _, err := conn.Exec(ctx, `TRUNCATE ods.pickiness`); err != nil {
			t.Error(err)
		}
	})
	check(t, "written once taken", accounts(t, conn), "1:12:1.00:1/1 3:14:3.00:1/1 4:15:4.00:1/1 5:16:5.00:1/1")
	if !strings.Contains(logs.String(), "the batch (cdc.T_Accounts/2@40, cdc.T_Accounts/2@41) cannot be written") {
		t.Errorf("the hold's log does not name the messages:\n%s", logs.String())
	}
}

// A statement timeout on a large batch is not its messages' fault: smaller
// statements (bisecting) get it written, every message of it.
func TestStatementTimeoutIsBisected(t *testing.T) {
	// An after_batch statement that takes 4 ms per value: 200 values time out, 50 do not.
	u, conn := testOutputWith(t, "&options=-c%20statement_timeout%3D300", "SELECT pg_sleep(0.004 * cardinality($1::text[]))")
	var batch service.MessageBatch
	for i := range 200 {
		batch = append(batch, acct(fmt.Sprint(1000+i), 1000+i, "1.00", 1, 1))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := u.WriteBatch(ctx, batch); err != nil {
		t.Fatalf("WriteBatch: %v", err)
	}
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM ods.customer_account`).Scan(&n); err != nil || n != 200 {
		t.Errorf("%d rows written (%v), want 200", n, err)
	}
}

// after_batch statements that fail whatever they are given (a function
// missing from the database) hold the batch instead of dead-lettering all
// of it.
func TestAfterBatchFailingForEverythingHoldsTheBatch(t *testing.T) {
	u, _ := testOutputWith(t, "", "SELECT ods.no_such_refresh($1::text[])")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	err := u.WriteBatch(ctx, service.MessageBatch{acct("1", 12, "1.00", 1, 1), acct("2", 13, "2.00", 1, 1)})
	var berr *service.BatchError
	if err == nil || errors.As(err, &berr) || u.retriesSeen.Load() == 0 {
		t.Fatalf("WriteBatch: %v after %d retries; want the batch held (retried until cancelled), not handed to the dead-letter path", err, u.retriesSeen.Load())
	}
}

func TestErrorClasses(t *testing.T) {
	for code, want := range map[string][2]bool{ // {transient, rowError}
		"08006": {true, false}, "40P01": {true, false}, "53300": {true, false}, "57P01": {true, false}, "55P03": {true, false},
		"57014": {false, false}, "25006": {false, false}, "28P01": {false, false}, "42P01": {false, false}, "XX000": {false, false},
		"22012": {false, true}, "23505": {false, true}, "21000": {false, true}, "54000": {false, true}, "P0001": {false, true},
		"54001": {false, true}, "P0002": {false, true}, "P0004": {false, true}, "2F005": {false, true}, "38001": {false, true},
		"39001": {false, true}, "27000": {false, true}, "44000": {false, true}, "OD001": {false, false},
	} {
		err := fmt.Errorf("wrapped: %w", &pgconn.PgError{Code: code})
		if got := [2]bool{transient(err), rowError(err)}; got != want {
			t.Errorf("%s: transient, rowError = %v, want %v", code, got, want)
		}
	}
	// A server's refusal while connecting (a password, a database gone)
	// is the connection's, not the batch's.
	_, err := pgconn.Connect(context.Background(), "postgres://u@127.0.0.1:1/db?connect_timeout=5")
	var connectErr *pgconn.ConnectError
	if !errors.As(err, &connectErr) {
		t.Fatalf("connecting to a closed port: %v, want a ConnectError", err)
	}
	if !transient(fmt.Errorf("acquiring: %w", err)) {
		t.Errorf("%v: not transient", err)
	}
}

func TestRetryAfterTheConnectionIsKilled(t *testing.T) {
	u, conn := testOutput(t)
	// Each upsert sleeps, so that the pool's connection can be killed in
	// the middle of the batch's transaction.
	_, err := conn.Exec(context.Background(), `
		CREATE FUNCTION ods.slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.3); RETURN NEW; END $$;
		CREATE TRIGGER slow BEFORE INSERT ON ods.t_transaction FOR EACH STATEMENT EXECUTE FUNCTION ods.slow();`)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- u.WriteBatch(context.Background(), service.MessageBatch{
			acct("1", 7, "1.00", 1, 1),
			msg("t_transaction", "", `{"transaction_id":50,"customer_id":7,"transaction_amount":"-5.00","source_version":2}`),
		})
	}()
	killed := 0
	for deadline := time.Now().Add(5 * time.Second); killed == 0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		err := conn.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE '%t_transaction%'`).Scan(&killed)
		if err != nil {
			t.Fatal(err)
		}
	}
	if killed == 0 {
		t.Fatal("never caught the write in flight")
	}
	if err := <-done; err != nil {
		t.Fatalf("WriteBatch after its connection was killed: %v", err)
	}
	check(t, "written once the retry went through", accounts(t, conn), "1:7:1.00:1/1")
	var n int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM ods.t_transaction`).Scan(&n); err != nil || n != 1 {
		t.Errorf("transactions: %d, %v", n, err)
	}
}

// An unreadable DSN is refused with pgx's reason, never with its text.
func TestUnreadableDSNSaysWhyWithoutThePassword(t *testing.T) {
	for dsn, reason := range map[string]string{
		"postgres://u:s3cretpw@h/db?sslmode=bogus":           "sslmode is invalid",
		"postgres://u:s3cretpw@h:99999999/db":                "invalid port",
		"host=h password=s3cretpw port=abc":                  "invalid port",
		"postgres://u:s3c%zzretpw@h/db":                      "invalid percent-encoded token in password",
		"postgres://u:s3cretpw@h/db?pool_max_conns=s3cretpw": "its reason quotes the string",
	} {
		parsed, err := upsertSpec().ParseYAML(fmt.Sprintf("dsn: %q\ntables: [{name: t, columns: [a], key_columns: [a]}]", dsn), nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = newUpsert(parsed, service.MockResources())
		if err == nil || !strings.Contains(err.Error(), reason) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: %v, want the reason %q and no password", dsn, err, reason)
		}
	}
}

// A missing init file says where a relative path was looked for.
func TestMissingInitFileNamesTheWorkingDirectory(t *testing.T) {
	parsed, err := upsertSpec().ParseYAML("dsn: postgres://u:secret@localhost/db\ninit_files: [ ./no/such.sql ]\ntables: [{name: t, columns: [a], key_columns: [a]}]", nil)
	if err != nil {
		t.Fatal(err)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newUpsert(parsed, service.MockResources()); err == nil || !strings.Contains(err.Error(), "working directory, "+wd) {
		t.Errorf("a missing relative init file: %v, want the working directory named", err)
	}
}

func TestIdentifiersAreValidatedAndQuoted(t *testing.T) {
	for name, conf := range map[string]string{
		"injection in a table name":  "tables: [{name: 'ods.x; DROP TABLE y', columns: [a], key_columns: [a]}]",
		"three-part name":            "tables: [{name: a.b.c, columns: [a], key_columns: [a]}]",
		"a column with a space":      "tables: [{name: t, columns: ['a b'], key_columns: ['a b']}]",
		"a quote in a column":        `tables: [{name: t, columns: ['a"b'], key_columns: ['a"b']}]`,
		"key not among the columns":  "tables: [{name: t, columns: [a], key_columns: [b]}]",
		"version not in the columns": "tables: [{name: t, columns: [a], key_columns: [a], version_columns: [v]}]",
		"after_batch column":         "tables: [{name: t, columns: [a], key_columns: [a]}]\nafter_batch: [{statement: x, column: 'a;b', tables: [t]}]",
	} {
		parsed, err := upsertSpec().ParseYAML("dsn: postgres://u:secret@localhost/db\n"+conf, nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := newUpsert(parsed, service.MockResources()); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// Mixed-case names that need quoting work.
	dsn := newDB(t)
	u := newOutput(t, fmt.Sprintf(`
dsn: %q
init_statement: 'CREATE TABLE "MixedCase" ("Key" text PRIMARY KEY, "Value" int)'
tables: [{name: MixedCase, columns: [Key, Value], key_columns: [Key]}]
`, dsn))
	write(t, u, msg("MixedCase", "", `{"Key":"k","Value":1}`))
}

func TestThePasswordIsNeverShown(t *testing.T) {
	parsed, err := upsertSpec().ParseYAML(`
dsn: postgres://odsuser:sup3rs3cret@127.0.0.1:1/ods?sslmode=disable&connect_timeout=1
tables: [{name: t, columns: [a], key_columns: [a]}]
`, nil)
	if err != nil {
		t.Fatal(err)
	}
	u, err := newUpsert(parsed, service.MockResources())
	if err != nil {
		t.Fatal(err)
	}
	err = u.Connect(context.Background())
	if err == nil {
		t.Fatal("connected to port 1")
	}
	if strings.Contains(err.Error(), "sup3rs3cret") {
		t.Errorf("the connect error shows the password: %v", err)
	}
	for _, dsn := range []string{
		"postgres://odsuser:sup3rs3cret@127.0.0.1:notaport/ods",
		"host=127.0.0.1 port=x password = sup3rs3cret user=u",
		"host=127.0.0.1 port=x password= sup3rs3cret",
	} {
		parsed, err := upsertSpec().ParseYAML(fmt.Sprintf("dsn: %q\ntables: [{name: t, columns: [a], key_columns: [a]}]", dsn), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := newUpsert(parsed, service.MockResources()); err == nil || strings.Contains(err.Error(), "sup3rs3cret") {
			t.Errorf("the error of a DSN that cannot be read: %v", err)
		}
	}
}

func TestPostgresRestartLosesNothing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c, err := pgcluster.Start(ctx, pgcluster.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop(context.Background())
	indented := strings.ReplaceAll(strings.TrimSpace(accountDDL), "\n", "\n  ")
	u := newOutput(t, fmt.Sprintf(upsertConfig, c.DSN(), indented))

	const batches, per = 60, 100
	errs := make(chan error, 1)
	go func() {
		for b := 0; b < batches; b++ {
			batch := make(service.MessageBatch, per)
			for i := range batch {
				n := b*per + i
				batch[i] = acct(fmt.Sprint(n), n%50, "1.00", int64(n+1), 1)
			}
			if err := u.WriteBatch(ctx, batch); err != nil {
				errs <- fmt.Errorf("batch %d: %w", b, err)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		errs <- nil
	}()
	time.Sleep(200 * time.Millisecond)
	if err := c.Restart(ctx, 2*time.Second); err != nil {
		t.Fatalf("restarting PostgreSQL: %v", err)
	}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, c.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var count int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM ods.customer_account`).Scan(&count); err != nil {
		t.Fatal(err)
	}
	if count != batches*per {
		t.Errorf("%d rows after a restart mid-run, want %d", count, batches*per)
	}
	if n := retriesOf(u); n == 0 {
		t.Error("no retry counted: the restart did not hit a write")
	}
}

func retriesOf(u *upsert) int64 { return u.retriesSeen.Load() }

// A table chosen by a Bloblang check, values from an args_mapping, deletes
// from a delete_check: for configs whose messages are not cdc_join's.
func TestCheckArgsMappingAndDeleteCheck(t *testing.T) {
	dsn := newDB(t)
	u := newOutput(t, fmt.Sprintf(`
dsn: %q
init_statement: 'CREATE TABLE kv (k text PRIMARY KEY, v int, ver bigint NOT NULL)'
tables:
  - name: kv
    check: 'this.kind == "kv"'
    args_mapping: 'root = {"k": this.key, "v": this.value, "ver": this.n}'
    columns: [k, v, ver]
    key_columns: [k]
    version_columns: [ver]
delete_check: 'this.deleted.or(false)'
`, dsn))
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	kv := func() string {
		rows, err := conn.Query(context.Background(), `SELECT k || '=' || v FROM kv ORDER BY k`)
		if err != nil {
			t.Fatal(err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(got, " ")
	}
	write(t, u, msg("", "", `{"kind":"kv","key":"a","value":1,"n":1}`), msg("", "", `{"kind":"kv","key":"b","value":2,"n":1}`))
	check(t, "upserts", kv(), "a=1 b=2")
	write(t, u, msg("", "", `{"kind":"kv","key":"a","deleted":true,"n":2}`))
	check(t, "a delete by delete_check", kv(), "b=2")
	err = u.WriteBatch(context.Background(), service.MessageBatch{msg("", "", `{"kind":"other"}`)})
	var berr *service.BatchError
	if !errors.As(err, &berr) || !strings.Contains(err.Error(), "no table") {
		t.Errorf("a message no check selects: %v", err)
	}
}

// TestFreshnessTimesOneRowInFour: one committed row in freshnessEvery is
// timed, counted across batches whatever their size (a cap per batch
// would favour the rows of small batches); failed rows and rows without a
// source time are not.
func TestFreshnessTimesOneRowInFour(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_000)
	batchOf := func(n int, firstAge int) service.MessageBatch {
		b := make(service.MessageBatch, n)
		for i := range b {
			b[i] = service.NewMessage(nil)
			b[i].MetaSetMut("cdc_ts_ms", now.UnixMilli()-int64(firstAge+i)) // position p: p ms old
		}
		return b
	}
	var got []time.Duration
	observe := func(d time.Duration) { got = append(got, d) }
	var seen int64
	for _, n := range []int{3, 10, 1, 5000, 2} {
		b := batchOf(n, int(seen))
		var failed map[int]error
		if n == 10 {
			failed = map[int]error{1: errors.New("refused")} // position 4
		}
		sourceToCommit(b, failed, seen, "cdc_ts_ms", now, observe)
		seen += int64(n)
	}
	var want []time.Duration
	for p := int64(0); p < seen; p += freshnessEvery {
		if p != 4 {
			want = append(want, time.Duration(p)*time.Millisecond)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("observed %d rows (%v … ), want the %d at positions 0, 8, 12, … (%v … )", len(got), got[:min(5, len(got))], len(want), want[:5])
	}
	noTime := service.MessageBatch{service.NewMessage(nil)}
	got = nil
	sourceToCommit(noTime, nil, 0, "cdc_ts_ms", now, observe)
	if len(got) != 0 {
		t.Errorf("a row without a source time was timed: %v", got)
	}
}
