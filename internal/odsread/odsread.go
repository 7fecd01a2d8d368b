// Package odsread reads the ODS tables in the format of simulate's expected
// state, and compares the two: for the end-to-end tests and `odsflow demo`.
package odsread

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/odsflow/odsflow/internal/simulate"
)

// Read reads the three tables in simulate's format.
func Read(ctx context.Context, dsn string) (simulate.ODSState, error) {
	var st simulate.ODSState
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return st, err
	}
	defer conn.Close(context.Background())
	const ts = `'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'`
	rows, err := conn.Query(ctx, `SELECT customer_id, customer_name, email, mobile, account_id, account_number, account_status,
		account_balance::text, to_char(updated_at, `+ts+`), account_version, customer_version
		FROM ods_schema.customer_account ORDER BY account_number`)
	if err != nil {
		return st, err
	}
	if st.CustomerAccount, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (simulate.CustomerAccountRow, error) {
		var c simulate.CustomerAccountRow
		err := r.Scan(&c.CustomerID, &c.CustomerName, &c.Email, &c.Mobile, &c.AccountID, &c.AccountNumber, &c.AccountStatus,
			&c.AccountBalance, &c.UpdatedAt, &c.AccountVersion, &c.CustomerVersion)
		return c, err
	}); err != nil {
		return st, err
	}
	rows, err = conn.Query(ctx, `SELECT transaction_id, transaction_ref_number, transaction_amount::text, transaction_type,
		account_number, to_char(transaction_date, `+ts+`), customer_id, source_version FROM ods_schema.t_transaction ORDER BY transaction_id`)
	if err != nil {
		return st, err
	}
	if st.TTransaction, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (simulate.TransactionRow, error) {
		var x simulate.TransactionRow
		err := r.Scan(&x.TransactionID, &x.TransactionRefNumber, &x.TransactionAmount, &x.TransactionType,
			&x.AccountNumber, &x.TransactionDate, &x.CustomerID, &x.SourceVersion)
		return x, err
	}); err != nil {
		return st, err
	}
	rows, err = conn.Query(ctx, `SELECT customer_id, total_balance::text, average_monthly_spending::text
		FROM ods_schema.t_financial_insights ORDER BY customer_id`)
	if err != nil {
		return st, err
	}
	st.TFinancialInsights, err = pgx.CollectRows(rows, pgx.RowToStructByPos[simulate.InsightsRow])
	return st, err
}

// Equal reports whether got is want, row by row.
func Equal(got, want simulate.ODSState) bool {
	return reflect.DeepEqual(normalize(got), normalize(want))
}

func normalize(s simulate.ODSState) simulate.ODSState {
	if s.CustomerAccount == nil {
		s.CustomerAccount = []simulate.CustomerAccountRow{}
	}
	if s.TTransaction == nil {
		s.TTransaction = []simulate.TransactionRow{}
	}
	if s.TFinancialInsights == nil {
		s.TFinancialInsights = []simulate.InsightsRow{}
	}
	return s
}

// Diff describes how got differs from want (at most 12 lines); "" when equal.
func Diff(got, want simulate.ODSState) string {
	var out []string
	out = append(out, diffRows("customer_account", got.CustomerAccount, want.CustomerAccount)...)
	out = append(out, diffRows("t_transaction", got.TTransaction, want.TTransaction)...)
	out = append(out, diffRows("t_financial_insights", got.TFinancialInsights, want.TFinancialInsights)...)
	if len(out) > 12 {
		out = append(out[:12], fmt.Sprintf("… and %d more", len(out)-12))
	}
	return strings.Join(out, "\n")
}

func diffRows[R any](table string, got, want []R) []string {
	render := func(rows []R) map[string]bool {
		m := map[string]bool{}
		for _, r := range rows {
			js, _ := json.Marshal(r) // values, not pointers (UpdatedAt)
			m[string(js)] = true
		}
		return m
	}
	g, w := render(got), render(want)
	var out []string
	for r := range w {
		if !g[r] {
			out = append(out, table+" missing: "+r)
		}
	}
	for r := range g {
		if !w[r] {
			out = append(out, table+" extra:   "+r)
		}
	}
	slices.Sort(out)
	return out
}
