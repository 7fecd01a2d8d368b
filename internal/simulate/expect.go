package simulate

import (
	"cmp"
	"fmt"
	"iter"
	"slices"
	"strconv"
	"strings"
	"time"
)

// DefaultSpendingTypes are the spending transaction types when
// ODS_SPENDING_TYPES is not set (design §5).
func DefaultSpendingTypes() []string { return []string{"debit", "withdrawal"} }

// ODSState is the content of the ODS tables (design §3–§5) that a stream of
// events must produce, rows sorted by primary key. Money is an exact decimal
// string with 2 places; timestamps are RFC 3339 UTC with microseconds.
// t_financial_insights.updated_at is left out: it is when the ODS wrote the
// row, not a function of the events.
type ODSState struct {
	CustomerAccount    []CustomerAccountRow `json:"customer_account"`
	TTransaction       []TransactionRow     `json:"t_transaction"`
	TFinancialInsights []InsightsRow        `json:"t_financial_insights"`
}

// CustomerAccountRow is a row of ods_schema.customer_account.
type CustomerAccountRow struct {
	CustomerID     int32  `json:"customer_id"`
	CustomerName   string `json:"customer_name"`
	Email          string `json:"email"`
	Mobile         string `json:"mobile"`
	AccountID      int32  `json:"account_id"`
	AccountNumber  string `json:"account_number"`
	AccountStatus  string `json:"account_status"`
	AccountBalance string `json:"account_balance"`
	// UpdatedAt is the later of the customer's and the account's
	// updated_at; null when both are null.
	UpdatedAt       *string `json:"updated_at"`
	AccountVersion  int64   `json:"account_version"`
	CustomerVersion int64   `json:"customer_version"`
}

// TransactionRow is a row of ods_schema.t_transaction.
type TransactionRow struct {
	TransactionID        int32  `json:"transaction_id"`
	TransactionRefNumber string `json:"transaction_ref_number"`
	TransactionAmount    string `json:"transaction_amount"`
	TransactionType      string `json:"transaction_type"`
	AccountNumber        string `json:"account_number"`
	TransactionDate      string `json:"transaction_date"`
	CustomerID           int32  `json:"customer_id"`
	SourceVersion        int64  `json:"source_version"`
}

// InsightsRow is a row of ods_schema.t_financial_insights.
type InsightsRow struct {
	CustomerID             int32  `json:"customer_id"`
	TotalBalance           string `json:"total_balance"`
	AverageMonthlySpending string `json:"average_monthly_spending"`
}

// Expect computes the ODS state that events must produce, from the events
// alone. It is a deliberately small, separate implementation of design
// §3–§5 (it shares nothing with the pipeline), and it depends only on the
// final state of each source row, not on how a consumer interleaves the
// topics:
//
//   - a source row's state is its change with the highest LSN (a later
//     change of equal LSN wins, as in a snapshot); a delete removes it;
//   - customer_account: one row per account whose customer exists;
//     customer_name is first + " " + last; account_version and
//     customer_version are the LSNs of the account's and the customer's
//     latest changes;
//   - t_transaction: one row per transaction whose account exists, with that
//     account's number and customer_id; transaction_date is created_at;
//     source_version is the transaction's LSN;
//   - t_financial_insights: one row per customer id found in either table
//     above; total_balance sums its customer_account balances;
//     average_monthly_spending follows §5 with spendingTypes (nil or empty:
//     DefaultSpendingTypes), matched case-insensitively.
func Expect(events []Event, spendingTypes []string) ODSState {
	return ExpectEvents(slices.Values(events), spendingTypes)
}

// ExpectEvents is Expect over a sequence (such as Events), holding only the
// latest state of each row rather than every event.
func ExpectEvents(events iter.Seq[Event], spendingTypes []string) ODSState {
	if len(spendingTypes) == 0 {
		spendingTypes = DefaultSpendingTypes()
	}
	customers := latest[Customer]{}
	accounts := latest[Account]{}
	transactions := latest[Transaction]{}
	for ev := range events {
		switch ev.Table {
		case TableCustomers:
			customers.apply(ev)
		case TableAccounts:
			accounts.apply(ev)
		case TableTransactions:
			transactions.apply(ev)
		}
	}

	state := ODSState{
		CustomerAccount:    []CustomerAccountRow{},
		TTransaction:       []TransactionRow{},
		TFinancialInsights: []InsightsRow{},
	}
	type totals struct {
		balance int64
		txns    []Transaction
	}
	perCustomer := map[int32]*totals{}
	totalsOf := func(id int32) *totals {
		if perCustomer[id] == nil {
			perCustomer[id] = &totals{}
		}
		return perCustomer[id]
	}

	for _, a := range accounts {
		if a.deleted {
			continue
		}
		c, ok := customers[a.row.CustomerID]
		if !ok || c.deleted {
			continue
		}
		state.CustomerAccount = append(state.CustomerAccount, CustomerAccountRow{
			CustomerID:      c.row.ID,
			CustomerName:    c.row.FirstName + " " + c.row.LastName,
			Email:           c.row.Email,
			Mobile:          c.row.Mobile,
			AccountID:       a.row.ID,
			AccountNumber:   strconv.Itoa(int(a.row.AccountNumber)),
			AccountStatus:   a.row.AccountStatus,
			AccountBalance:  formatCents(a.row.BalanceCents),
			UpdatedAt:       laterTimestamp(c.row.UpdatedAt, a.row.UpdatedAt),
			AccountVersion:  a.lsn,
			CustomerVersion: c.lsn,
		})
		totalsOf(c.row.ID).balance += a.row.BalanceCents
	}
	for _, t := range transactions {
		if t.deleted {
			continue
		}
		a, ok := accounts[t.row.AccountID]
		if !ok || a.deleted {
			continue
		}
		state.TTransaction = append(state.TTransaction, TransactionRow{
			TransactionID:        t.row.ID,
			TransactionRefNumber: t.row.RefNumber,
			TransactionAmount:    formatCents(t.row.AmountCents),
			TransactionType:      t.row.Type,
			AccountNumber:        strconv.Itoa(int(a.row.AccountNumber)),
			TransactionDate:      formatMicros(t.row.CreatedAt),
			CustomerID:           a.row.CustomerID,
			SourceVersion:        t.lsn,
		})
		totalsOf(a.row.CustomerID).txns = append(totalsOf(a.row.CustomerID).txns, t.row)
	}
	for id, tot := range perCustomer {
		state.TFinancialInsights = append(state.TFinancialInsights, InsightsRow{
			CustomerID:             id,
			TotalBalance:           formatCents(tot.balance),
			AverageMonthlySpending: formatCents(averageMonthlySpending(tot.txns, spendingTypes)),
		})
	}

	slices.SortFunc(state.CustomerAccount, func(x, y CustomerAccountRow) int { return cmp.Compare(x.AccountNumber, y.AccountNumber) })
	slices.SortFunc(state.TTransaction, func(x, y TransactionRow) int { return cmp.Compare(x.TransactionID, y.TransactionID) })
	slices.SortFunc(state.TFinancialInsights, func(x, y InsightsRow) int { return cmp.Compare(x.CustomerID, y.CustomerID) })
	return state
}

// averageMonthlySpending is design §5 in cents: the spending amounts
// (abs) dated in months S..L, over the number of those months, rounded half
// up; 0 without transactions.
func averageMonthlySpending(txns []Transaction, spendingTypes []string) int64 {
	if len(txns) == 0 {
		return 0
	}
	first, last := monthOf(txns[0].CreatedAt), monthOf(txns[0].CreatedAt)
	for _, t := range txns[1:] {
		first = min(first, monthOf(t.CreatedAt))
		last = max(last, monthOf(t.CreatedAt))
	}
	from := max(first, last-11)
	var sum int64
	for _, t := range txns {
		m := monthOf(t.CreatedAt)
		if m < from || m > last || !isSpending(t.Type, spendingTypes) {
			continue
		}
		if t.AmountCents < 0 {
			sum -= t.AmountCents
		} else {
			sum += t.AmountCents
		}
	}
	months := last - from + 1
	// sum ≥ 0, so half up is floor((2·sum + months) / (2·months)).
	return (2*sum + months) / (2 * months)
}

func isSpending(typ string, spendingTypes []string) bool {
	for _, s := range spendingTypes {
		if strings.EqualFold(strings.TrimSpace(s), typ) {
			return true
		}
	}
	return false
}

// monthOf numbers the calendar month (UTC) of a MicroTimestamp.
func monthOf(us int64) int64 {
	t := time.UnixMicro(us).UTC()
	return int64(t.Year())*12 + int64(t.Month()) - 1
}

// latest keeps, per primary key, the row state with the highest LSN.
type latest[R Row] map[int32]*version[R]

type version[R Row] struct {
	row     R
	lsn     int64
	deleted bool
}

func (l latest[R]) apply(ev Event) {
	if cur, ok := l[ev.ID]; ok && ev.Source.LSN < cur.lsn {
		return
	}
	if ev.Op == OpDelete {
		l[ev.ID] = &version[R]{lsn: ev.Source.LSN, deleted: true}
		return
	}
	row, ok := ev.After.(R)
	if !ok {
		return
	}
	l[ev.ID] = &version[R]{row: row, lsn: ev.Source.LSN}
}

// formatCents writes hundredths as an exact decimal with 2 places.
func formatCents(c int64) string {
	sign := ""
	u := uint64(c)
	if c < 0 {
		sign, u = "-", uint64(-c)
	}
	return fmt.Sprintf("%s%d.%02d", sign, u/100, u%100)
}

// formatMicros writes a MicroTimestamp as RFC 3339 UTC with microseconds.
func formatMicros(us int64) string {
	return time.UnixMicro(us).UTC().Format("2006-01-02T15:04:05.000000Z07:00")
}

func laterTimestamp(a, b *int64) *string {
	switch {
	case a == nil && b == nil:
		return nil
	case a == nil:
		return ptr(formatMicros(*b))
	case b == nil:
		return ptr(formatMicros(*a))
	}
	return ptr(formatMicros(max(*a, *b)))
}
