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

	"github.com/odsflow/odsflow/internal/simulate"
)

// TestInsightsRefreshByTableMatchesFullRefresh: config/ods.yaml refreshes
// the insights of customers whose accounts changed with
// refresh_total_balance, and of those whose transactions changed with the
// full refresh_financial_insights. Random batches of account and
// transaction changes (inserts, balance changes, moves between customers,
// deletes, transactions without a date), each refreshed that way in its
// transaction, must leave t_financial_insights exactly as a full refresh
// of every customer would (design.md §5, which the exactness tests check
// the full refresh against).
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
	stats := map[string]int{}
	for round := 0; round < 150; round++ {
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
			switch op := r.IntN(10); {
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
			case op < 8 || len(transactions) == 0: // a new transaction, now and then without a date
				nextTxn++
				var date any = time.Date(2025, time.Month(1+r.IntN(20)), 1+r.IntN(28), 12, 0, 0, 0, time.UTC)
				if r.IntN(15) == 0 {
					date = nil
					stats["transactions without a date"]++
				}
				exec(`INSERT INTO ods_schema.t_transaction (transaction_id, transaction_amount, transaction_type, transaction_date, customer_id, source_version)
					VALUES ($1, $2, $3, $4, $5, 1)`, nextTxn, float64(r.IntN(40_000)-20_000)/100, types[r.IntN(len(types))], date, customer)
				transactions[nextTxn] = customer
				byTransactions[customer] = true
			case op < 9: // a transaction moved to another customer
				id := pick(r, transactions)
				byTransactions[transactions[id]] = true
				transactions[id] = customer
				byTransactions[customer] = true
				exec(`UPDATE ods_schema.t_transaction SET customer_id = $2 WHERE transaction_id = $1`, id, customer)
				stats["transaction moves"]++
			default:
				id := pick(r, transactions)
				byTransactions[transactions[id]] = true
				delete(transactions, id)
				exec(`DELETE FROM ods_schema.t_transaction WHERE transaction_id = $1`, id)
				stats["transaction deletes"]++
			}
		}
		// As pg_upsert runs ods.yaml's after_batch: in config order.
		if len(byAccounts) > 0 {
			exec(`SELECT ods_schema.refresh_total_balance($1, 'debit,withdrawal')`, keys(byAccounts))
		}
		if len(byTransactions) > 0 {
			exec(`SELECT ods_schema.refresh_financial_insights($1, 'debit,withdrawal')`, keys(byTransactions))
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}

		got := readInsights(t, ctx, conn)
		full, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		all := make([]int, customers)
		for i := range all {
			all[i] = i + 1
		}
		if _, err := full.Exec(ctx, `SELECT ods_schema.refresh_financial_insights($1, 'debit,withdrawal')`, all); err != nil {
			t.Fatal(err)
		}
		want := readInsights(t, ctx, full)
		_ = full.Rollback(ctx)
		if !slices.Equal(got, want) {
			t.Fatalf("round %d: insights\n  got  %v\n  want %v (a full refresh of every customer)", round, got, want)
		}
		if len(got) < customers {
			stats["rounds with a customer without insights"]++
		}
	}
	t.Logf("%v", stats)
	for _, k := range []string{"account moves", "account deletes", "transaction moves", "transaction deletes", "transactions without a date", "rounds with a customer without insights"} {
		if stats[k] == 0 {
			t.Errorf("no %s: the test no longer exercises it", k)
		}
	}
}

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

// readInsights renders t_financial_insights, its updated_at left out.
func readInsights(t *testing.T, ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}) []string {
	t.Helper()
	rows, err := q.Query(ctx, `SELECT customer_id, total_balance::text, average_monthly_spending::text FROM ods_schema.t_financial_insights ORDER BY customer_id`)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for rows.Next() {
		var id int
		var total, avg string
		if err := rows.Scan(&id, &total, &avg); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%d:%s/%s", id, total, avg))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
