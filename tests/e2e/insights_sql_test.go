package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/odsflow/odsflow/internal/simulate"
)

// TestInsightsRefreshByTableMatchesFullRefresh: config/ods.yaml refreshes
// the insights of customers whose accounts changed with
// refresh_total_balance (the total), and of those whose transactions
// changed with refresh_spending (the spending, from t_spending_window, kept
// by triggers on t_transaction), each the full refresh where a row comes or
// goes; in either order. Random batches of
// account and transaction changes (inserts, balance changes, moves between
// customers, deletes, transactions without a date, dates, amounts and
// types rewritten, rows rewritten as they were, upserts, a truncation, a
// change of the spending types), each refreshed that way in its
// transaction, must leave t_financial_insights exactly as design.md §5
// computes it from the two tables alone (referenceInsightsSQL, the
// formula the exactness tests check against the simulator), and every
// kept spending window as it would be computed again.
func TestInsightsRefreshByTableMatchesFullRefresh(t *testing.T) {
	e := newEnv(t, simulate.Config{TopicPrefix: "insights.transactions_schema", Customers: 1, Events: 1, Seed: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, e.stack.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	ddl, err := os.ReadFile(filepath.Join(repoRoot, "config", "sql", "ods.sql"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, string(ddl)); err != nil {
		t.Fatal(err)
	}

	const customers = 12
	r := rand.New(rand.NewPCG(5, 8))
	accounts := map[int]int{}     // account number → customer
	transactions := map[int]int{} // transaction id → customer
	nextAccount, nextTxn := 1000, 1
	types := []string{"debit", "Debit", "WITHDRAWAL", "credit", "deposit"}
	spending := "debit,withdrawal"
	date := func() any {
		if r.IntN(15) == 0 {
			return nil
		}
		return time.Date(2025, time.Month(1+r.IntN(20)), 1+r.IntN(28), 12, 0, 0, 0, time.UTC)
	}
	stats := map[string]int{}
	for round := 0; round < 300; round++ {
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		exec := func(sql string, args ...any) {
			t.Helper()
			if _, err := tx.Exec(ctx, sql, args...); err != nil {
				t.Fatalf("round %d: %s: %v", round, sql, err)
			}
		}
		byAccounts, byTransactions := map[int]bool{}, map[int]bool{}
		for range 1 + r.IntN(6) {
			customer := 1 + r.IntN(customers)
			switch op := r.IntN(14); {
			case op < 2 || len(accounts) == 0: // a new account
				nextAccount++
				exec(`INSERT INTO ods_schema.customer_account (account_number, customer_id, account_id, account_balance, account_version, customer_version)
					VALUES ($1, $2, $3, $4, 1, 1)`, fmt.Sprint(nextAccount), customer, nextAccount, r.IntN(100_000))
				accounts[nextAccount] = customer
				byAccounts[customer] = true
				stats["account inserts"]++
			case op < 4: // a balance change, or a move to another customer
				number := pick(r, accounts)
				byAccounts[accounts[number]] = true
				if r.IntN(3) == 0 {
					accounts[number] = customer
					stats["account moves"]++
				}
				byAccounts[accounts[number]] = true
				exec(`UPDATE ods_schema.customer_account SET account_balance = $2, customer_id = $3 WHERE account_number = $1`,
					fmt.Sprint(number), r.IntN(100_000)-20_000, accounts[number])
			case op < 5: // an account deleted
				number := pick(r, accounts)
				byAccounts[accounts[number]] = true
				delete(accounts, number)
				exec(`DELETE FROM ods_schema.customer_account WHERE account_number = $1`, fmt.Sprint(number))
				stats["account deletes"]++
			case op < 8 && len(transactions) > 0 && r.IntN(4) == 0: // an existing transaction upserted again, changed (ON CONFLICT DO UPDATE)
				id := pick(r, transactions)
				byTransactions[transactions[id]] = true
				exec(`WITH up AS (INSERT INTO ods_schema.t_transaction AS t (transaction_id, transaction_amount, transaction_type, transaction_date, customer_id, source_version)
					VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (transaction_id) DO UPDATE SET transaction_amount = EXCLUDED.transaction_amount,
					transaction_type = EXCLUDED.transaction_type, transaction_date = EXCLUDED.transaction_date, source_version = EXCLUDED.source_version
					WHERE (t.source_version <= EXCLUDED.source_version) IS NOT FALSE RETURNING t.customer_id) SELECT * FROM up`,
					id, float64(r.IntN(40_000)-20_000)/100, types[r.IntN(len(types))], date(), transactions[id], round+2)
				stats["transactions upserted again"]++
			case op < 8 || len(transactions) == 0: // a new transaction, now and then without a date
				nextTxn++
				d := date()
				if d == nil {
					stats["transactions without a date"]++
				}
				// As pg_upsert writes: an upsert, its rows before and after collected.
				exec(`WITH up AS (INSERT INTO ods_schema.t_transaction AS t (transaction_id, transaction_amount, transaction_type, transaction_date, customer_id, source_version)
					VALUES ($1, $2, $3, $4, $5, 1) ON CONFLICT (transaction_id) DO UPDATE SET transaction_amount = EXCLUDED.transaction_amount
					WHERE (t.source_version <= EXCLUDED.source_version) IS NOT FALSE RETURNING t.customer_id) SELECT * FROM up`,
					nextTxn, float64(r.IntN(40_000)-20_000)/100, types[r.IntN(len(types))], d, customer)
				transactions[nextTxn] = customer
				byTransactions[customer] = true
			case op < 9: // a transaction moved to another customer
				id := pick(r, transactions)
				byTransactions[transactions[id]] = true
				transactions[id] = customer
				byTransactions[customer] = true
				exec(`UPDATE ods_schema.t_transaction SET customer_id = $2 WHERE transaction_id = $1`, id, customer)
				stats["transaction moves"]++
			case op < 10: // a date, an amount or a type rewritten
				id := pick(r, transactions)
				byTransactions[transactions[id]] = true
				switch r.IntN(4) {
				case 3: // a new key (and amount): pairs of rows before and after by key alone would miss it
					nextTxn++
					exec(`UPDATE ods_schema.t_transaction SET transaction_id = $2, transaction_amount = $3 WHERE transaction_id = $1`,
						id, nextTxn, float64(r.IntN(40_000)-20_000)/100)
					transactions[nextTxn] = transactions[id]
					delete(transactions, id)
					stats["transaction keys rewritten"]++
				case 0:
					exec(`UPDATE ods_schema.t_transaction SET transaction_date = $2 WHERE transaction_id = $1`, id, date())
					stats["transaction dates rewritten"]++
				case 1:
					exec(`UPDATE ods_schema.t_transaction SET transaction_amount = $2 WHERE transaction_id = $1`, id, float64(r.IntN(40_000)-20_000)/100)
					stats["transaction amounts rewritten"]++
				default:
					exec(`UPDATE ods_schema.t_transaction SET transaction_type = $2 WHERE transaction_id = $1`, id, types[r.IntN(len(types))])
					stats["transaction types rewritten"]++
				}
			case op < 12: // a replay: rows rewritten as they were
				exec(`UPDATE ods_schema.t_transaction SET customer_id = customer_id WHERE transaction_id % 3 = $1`, r.IntN(3))
				stats["replays"]++
			default:
				id := pick(r, transactions)
				byTransactions[transactions[id]] = true
				delete(transactions, id)
				exec(`DELETE FROM ods_schema.t_transaction WHERE transaction_id = $1`, id)
				stats["transaction deletes"]++
			}
		}
		if round == 150 {
			exec(`TRUNCATE ods_schema.t_transaction`)
			for id, c := range transactions {
				byTransactions[c] = true
				delete(transactions, id)
			}
			stats["truncations"]++
		}
		// As pg_upsert runs ods.yaml's after_batch, in config order, or
		// the other way round: each writes its own column.
		refreshes := []func(){
			func() {
				if len(byAccounts) > 0 {
					exec(`SELECT ods_schema.refresh_total_balance($1, $2)`, keys(byAccounts), spending)
				}
			},
			func() {
				if len(byTransactions) > 0 {
					exec(`SELECT ods_schema.refresh_spending($1, $2)`, keys(byTransactions), spending)
				}
			},
		}
		if round%2 == 1 {
			refreshes[0], refreshes[1] = refreshes[1], refreshes[0]
		}
		for _, refresh := range refreshes {
			refresh()
		}
		if round%100 == 99 {
			// Another list of spending types, applied as config/sql/ods.sql
			// says: one refresh of every customer.
			spending = map[string]string{"debit,withdrawal": " Debit", " Debit": "withdrawal,debit,credit", "withdrawal,debit,credit": "debit,withdrawal"}[spending]
			exec(`SELECT ods_schema.refresh_financial_insights(array(SELECT customer_id FROM ods_schema.customer_account
				UNION SELECT customer_id FROM ods_schema.t_transaction), $1)`, spending)
			stats["spending types changed"]++
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}

		got := readInsights(t, ctx, conn, `SELECT customer_id, total_balance::text, average_monthly_spending::text FROM ods_schema.t_financial_insights ORDER BY customer_id`)
		want := readInsights(t, ctx, conn, referenceInsightsSQL, spending)
		if !slices.Equal(got, want) {
			t.Fatalf("round %d: insights\n  got  %v\n  want %v (design.md §5 from the tables)", round, got, want)
		}
		kept := readInsights(t, ctx, conn, `SELECT customer_id, first_month::text, last_month::text || ' ' || window_spent::numeric(20,2)::text
			FROM ods_schema.t_spending_window ORDER BY customer_id`)
		again := readInsights(t, ctx, conn, referenceWindowSQL, spending)
		for _, k := range kept {
			if !slices.Contains(again, k) {
				t.Fatalf("round %d: spending window %s kept, computed again %v", round, k, again)
			}
		}
		stats["windows kept"] += len(kept)
		if len(got) < customers {
			stats["rounds with a customer without insights"]++
		}
	}
	t.Logf("%v", stats)
	for _, k := range []string{"account moves", "account deletes", "transaction moves", "transaction deletes", "transactions without a date",
		"transaction dates rewritten", "transaction amounts rewritten", "transaction keys rewritten", "transactions upserted again", "transaction types rewritten", "replays", "truncations",
		"spending types changed", "rounds with a customer without insights"} {
		if stats[k] == 0 {
			t.Errorf("no %s: the test no longer exercises it", k)
		}
	}
	if stats["windows kept"] < 1000 {
		t.Errorf("%d spending windows kept over the rounds: the refresh no longer keeps them", stats["windows kept"])
	}
}

// TestSpendingWindowConcurrentWriters: two transactions changing one
// customer's transactions at once (pg_upsert with max_in_flight above 1, or
// a hand-run fix beside the pipeline). The first moves the customer's last
// month forward, so its trigger drops the window and its refresh builds it
// again; the second adds a row in an earlier month while the first is still
// open. Without turns (lock_insights), the second computed its change from
// the window as it was before the first, and the window lost it for good.
func TestSpendingWindowConcurrentWriters(t *testing.T) {
	e := newEnv(t, simulate.Config{TopicPrefix: "insights.transactions_schema", Customers: 1, Events: 1, Seed: 1})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dsn := e.stack.NewDatabase(t)
	connect := func() *pgx.Conn {
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close(context.Background()) })
		return c
	}
	first, second := connect(), connect()
	ddl, err := os.ReadFile(filepath.Join(repoRoot, "config", "sql", "ods.sql"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.Exec(ctx, string(ddl)); err != nil {
		t.Fatal(err)
	}
	insert := func(q interface {
		Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
	}, id int, month time.Month, amount float64) {
		t.Helper()
		if _, err := q.Exec(ctx, `INSERT INTO ods_schema.t_transaction (transaction_id, transaction_amount, transaction_type, transaction_date, customer_id, source_version)
			VALUES ($1, $2, 'debit', $3, 1, 1)`, id, amount, time.Date(2025, month, 10, 12, 0, 0, 0, time.UTC)); err != nil {
			t.Fatal(err)
		}
	}
	const refresh = `SELECT ods_schema.refresh_spending('{1}', 'debit,withdrawal')`
	insert(first, 1, time.January, 10)
	insert(first, 2, time.June, 10)
	if _, err := first.Exec(ctx, refresh); err != nil {
		t.Fatal(err)
	}

	tx1, err := first.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	insert(tx1, 3, time.September, 100)
	if _, err := tx1.Exec(ctx, refresh); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		tx2, err := second.Begin(ctx)
		if err == nil {
			_, err = tx2.Exec(ctx, `INSERT INTO ods_schema.t_transaction (transaction_id, transaction_amount, transaction_type, transaction_date, customer_id, source_version)
				VALUES (4, 5, 'debit', '2025-03-10 12:00:00', 1, 1)`)
		}
		if err == nil {
			_, err = tx2.Exec(ctx, refresh)
		}
		if err == nil {
			err = tx2.Commit(ctx)
		}
		done <- err
	}()
	time.Sleep(300 * time.Millisecond) // the second is at its trigger by now, or soon after the first commits
	if err := tx1.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	kept := readInsights(t, ctx, first, `SELECT customer_id, first_month::text, last_month::text || ' ' || window_spent::numeric(20,2)::text
		FROM ods_schema.t_spending_window ORDER BY customer_id`)
	again := readInsights(t, ctx, first, referenceWindowSQL, "debit,withdrawal")
	if !slices.Equal(kept, again) {
		t.Fatalf("spending window kept %v, computed again %v", kept, again)
	}
	got := readInsights(t, ctx, first, `SELECT customer_id, total_balance::text, average_monthly_spending::text FROM ods_schema.t_financial_insights ORDER BY customer_id`)
	if want := readInsights(t, ctx, first, referenceInsightsSQL, "debit,withdrawal"); !slices.Equal(got, want) {
		t.Fatalf("insights %v, want %v", got, want)
	}
}

// referenceWindowSQL computes F, L and the window's spending (design.md §5)
// of every customer with a dated transaction from t_transaction alone,
// rendered as readInsights reads t_spending_window; $1 the spending types.
const referenceWindowSQL = `
	WITH types AS (SELECT array_agg(lower(btrim(x))) AS list FROM unnest(string_to_array($1::text, ',')) x),
	fl AS (
		SELECT customer_id, date_trunc('month', min(transaction_date)) AS f, date_trunc('month', max(transaction_date)) AS l
		FROM ods_schema.t_transaction WHERE transaction_date IS NOT NULL AND customer_id IS NOT NULL GROUP BY customer_id
	)
	SELECT fl.customer_id, fl.f::text, fl.l::text || ' ' || coalesce((
		SELECT sum(abs(t.transaction_amount)) FROM ods_schema.t_transaction t
		WHERE t.customer_id = fl.customer_id AND date_trunc('month', t.transaction_date) BETWEEN greatest(fl.f, fl.l - interval '11 months') AND fl.l
		  AND lower(t.transaction_type) = ANY((SELECT list FROM types)::text[])), 0)::numeric(20,2)::text
	FROM fl ORDER BY fl.customer_id`

// referenceInsightsSQL is design.md §5 for every customer with an account
// or a dated transaction, from customer_account and t_transaction alone;
// $1 the spending types.
const referenceInsightsSQL = `
	WITH types AS (SELECT array_agg(lower(btrim(x))) AS list FROM unnest(string_to_array($1::text, ',')) x),
	ids AS (
		SELECT customer_id FROM ods_schema.customer_account
		UNION SELECT customer_id FROM ods_schema.t_transaction WHERE transaction_date IS NOT NULL AND customer_id IS NOT NULL
	), fl AS (
		SELECT customer_id, date_trunc('month', max(transaction_date)) AS l,
		       greatest(date_trunc('month', min(transaction_date)), date_trunc('month', max(transaction_date)) - interval '11 months') AS s
		FROM ods_schema.t_transaction WHERE transaction_date IS NOT NULL GROUP BY customer_id
	)
	SELECT ids.customer_id,
	       coalesce((SELECT sum(account_balance) FROM ods_schema.customer_account a WHERE a.customer_id = ids.customer_id), 0)::numeric(20,2)::text,
	       CASE WHEN fl.l IS NULL THEN 0 ELSE round(coalesce((
	           SELECT sum(abs(t.transaction_amount)) FROM ods_schema.t_transaction t
	           WHERE t.customer_id = ids.customer_id AND date_trunc('month', t.transaction_date) BETWEEN fl.s AND fl.l
	             AND lower(t.transaction_type) = ANY((SELECT list FROM types)::text[])), 0)
	         / ((extract(year FROM fl.l) - extract(year FROM fl.s)) * 12 + extract(month FROM fl.l) - extract(month FROM fl.s) + 1), 2)
	       END::numeric(20,2)::text
	FROM ids LEFT JOIN fl ON fl.customer_id = ids.customer_id ORDER BY ids.customer_id`

func pick(r *rand.Rand, m map[int]int) int {
	ks := make([]int, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks[r.IntN(len(ks))]
}

func keys(m map[int]bool) []int {
	out := make([]int, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// readInsights renders the rows of a query of three columns (an integer
// and two texts).
func readInsights(t *testing.T, ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, sql string, args ...any) []string {
	t.Helper()
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for rows.Next() {
		var id int
		var a, b string
		if err := rows.Scan(&id, &a, &b); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%d:%s/%s", id, a, b))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
