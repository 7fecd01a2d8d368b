package postgres

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redpanda-data/benthos/v4/public/service"

	"github.com/odsflow/odsflow/internal/pgcluster"
)

// benchRows and benchKeys: issue 6's workload, 200k row changes of 50k
// accounts, each account changed 4 times with growing versions.
const (
	benchRows  = 200_000
	benchKeys  = 50_000
	benchBatch = 5_000
)

type benchRow struct {
	number   string
	customer int
	balance  string
	version  int64
}

func benchWorkload() []benchRow {
	rows := make([]benchRow, benchRows)
	for i := range rows {
		k := i % benchKeys
		rows[i] = benchRow{
			number:   fmt.Sprintf("%010d", 1_000_000+k),
			customer: k % 20_000,
			balance:  fmt.Sprintf("%d.%02d", (i*7919)%1_000_000, i%100),
			version:  int64(i + 1),
		}
	}
	return rows
}

// cpuSeconds is the CPU time of the whole machine (client, server, all),
// from /proc/stat, in seconds.
func cpuSeconds(b *testing.B) float64 {
	f, err := os.Open("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan()
	fields := strings.Fields(sc.Text()) // cpu user nice system idle iowait irq softirq steal …
	var busy float64
	for i, fld := range fields[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		v, _ := strconv.ParseFloat(fld, 64)
		busy += v
	}
	return busy / 100 // USER_HZ
}

// BenchmarkPgUpsertWorkload writes the same workload three ways, in one
// run, on one PostgreSQL 15 with its durable defaults (fsync on, a WAL
// flush per commit, as a real ODS server), on this machine's disk:
//
//   - one-row: an INSERT … ON CONFLICT DO UPDATE … WHERE version per row,
//     each its own transaction, one connection (the seed's JDBC batch 1);
//
//   - pg_upsert: batches of 5,000 through the output (one transaction per
//     batch, reduction, COPY to temp + merge, version guard);
//
//   - copy: plain COPY of every row into an unlogged table without keys,
//     the ceiling.
//
//     go test -run '^$' -bench PgUpsertWorkload -benchtime 1x ./plugins/postgres/
//
// Metrics: rows/s of each, pg_upsert's ratio to each, and the machine's CPU
// seconds per 100k rows for each.
func BenchmarkPgUpsertWorkload(b *testing.B) {
	ctx := context.Background()
	c, err := pgcluster.Start(ctx, pgcluster.Options{Durable: true})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Stop(context.Background())
	conn, err := pgx.Connect(ctx, c.DSN())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	ddl := `CREATE SCHEMA ods;
		CREATE TABLE ods.one_row (account_number varchar(20) PRIMARY KEY, customer_id int NOT NULL, account_balance numeric(20,2), account_version bigint NOT NULL);
		CREATE TABLE ods.upserted (LIKE ods.one_row INCLUDING ALL);
		CREATE UNLOGGED TABLE ods.copied (account_number varchar(20), customer_id int, account_balance numeric(20,2), account_version bigint);`
	if _, err := conn.Exec(ctx, ddl); err != nil {
		b.Fatal(err)
	}
	rows := benchWorkload()
	u := newBenchOutput(b, c.DSN())
	batches := make([]service.MessageBatch, 0, benchRows/benchBatch)
	for start := 0; start < len(rows); start += benchBatch {
		batch := make(service.MessageBatch, 0, benchBatch)
		for _, r := range rows[start:min(start+benchBatch, len(rows))] {
			m := service.NewMessage(nil)
			m.SetStructuredMut(map[string]any{"account_number": r.number, "customer_id": int64(r.customer), "account_balance": r.balance, "account_version": r.version})
			m.MetaSetMut("ods_table", "upserted")
			batch = append(batch, m)
		}
		batches = append(batches, batch)
	}

	b.ResetTimer()
	var oneRow, upsert, copyRate, cpuOne, cpuUp, cpuCopy float64
	for i := 0; i < b.N; i++ {
		for _, tbl := range []string{"one_row", "upserted", "copied"} {
			if _, err := conn.Exec(ctx, "TRUNCATE ods."+tbl); err != nil {
				b.Fatal(err)
			}
		}
		cpu0, t0 := cpuSeconds(b), time.Now()
		for _, r := range rows {
			_, err := conn.Exec(ctx, `INSERT INTO ods.one_row AS t (account_number, customer_id, account_balance, account_version)
				VALUES ($1, $2, $3::numeric, $4) ON CONFLICT (account_number) DO UPDATE SET customer_id = EXCLUDED.customer_id,
				account_balance = EXCLUDED.account_balance, account_version = EXCLUDED.account_version
				WHERE t.account_version <= EXCLUDED.account_version`, r.number, r.customer, r.balance, r.version)
			if err != nil {
				b.Fatal(err)
			}
		}
		oneRow, cpuOne = float64(len(rows))/time.Since(t0).Seconds(), cpuSeconds(b)-cpu0

		cpu0, t0 = cpuSeconds(b), time.Now()
		for _, batch := range batches {
			if err := u.WriteBatch(ctx, batch); err != nil {
				b.Fatal(err)
			}
		}
		upsert, cpuUp = float64(len(rows))/time.Since(t0).Seconds(), cpuSeconds(b)-cpu0

		cpu0, t0 = cpuSeconds(b), time.Now()
		_, err := conn.CopyFrom(ctx, pgx.Identifier{"ods", "copied"}, []string{"account_number", "customer_id", "account_balance", "account_version"},
			pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
				r := rows[i]
				return []any{r.number, int32(r.customer), r.balance, r.version}, nil
			}))
		if err != nil {
			b.Fatal(err)
		}
		copyRate, cpuCopy = float64(len(rows))/time.Since(t0).Seconds(), cpuSeconds(b)-cpu0
	}
	b.StopTimer()

	// The two upserting approaches end in the same rows.
	var diff int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM (SELECT * FROM ods.one_row EXCEPT SELECT * FROM ods.upserted) d`).Scan(&diff); err != nil {
		b.Fatal(err)
	}
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM ods.upserted`).Scan(&n); err != nil {
		b.Fatal(err)
	}
	if diff != 0 || n != benchKeys {
		b.Fatalf("pg_upsert's table differs from the one-row approach's in %d rows (%d rows, want %d)", diff, n, benchKeys)
	}
	b.ReportMetric(oneRow, "one-row-rows/s")
	b.ReportMetric(upsert, "pg_upsert-rows/s")
	b.ReportMetric(copyRate, "copy-rows/s")
	b.ReportMetric(upsert/oneRow, "x-one-row")
	b.ReportMetric(upsert/copyRate, "x-copy")
	per := float64(len(rows)) / 100_000
	b.ReportMetric(cpuOne/per, "one-row-cpu-s/100k")
	b.ReportMetric(cpuUp/per, "pg_upsert-cpu-s/100k")
	b.ReportMetric(cpuCopy/per, "copy-cpu-s/100k")
}

func newBenchOutput(b *testing.B, dsn string) *upsert {
	parsed, err := upsertSpec().ParseYAML(fmt.Sprintf(`
dsn: %q
tables:
  - name: ods.upserted
    columns: [account_number, customer_id, account_balance, account_version]
    key_columns: [account_number]
    version_columns: [account_version]
`, dsn), nil)
	if err != nil {
		b.Fatal(err)
	}
	u, err := newUpsert(parsed, service.MockResources())
	if err != nil {
		b.Fatal(err)
	}
	if err := u.Connect(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = u.Close(context.Background()) })
	return u
}
