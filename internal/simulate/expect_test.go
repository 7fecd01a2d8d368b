package simulate

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// Hand-written events for the model's tests: each builder takes the LSN.

func us(s string) int64 {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t.UnixMicro()
}

func at(s string) *int64 { return ptr(us(s)) }

func change(lsn int64, op string, before, after Row) Event {
	t := tableOf(before, after)
	id := int32(0)
	if after != nil {
		id = after.Key()
	} else {
		id = before.Key()
	}
	return Event{Topic: "p." + string(t), Table: t, Op: op, ID: id, Before: before, After: after, Source: Source{LSN: lsn}}
}

func put(lsn int64, op string, r Row) Event { return change(lsn, op, nil, r) }

func del(lsn int64, key Row) Event { return change(lsn, OpDelete, key, nil) }

func TestExpectJoinMoveAndDeletes(t *testing.T) {
	ada := Customer{ID: 1, FirstName: "Ada", LastName: "Lovelace", Email: "ada@x", Mobile: "+1", CreatedAt: at("2024-01-01T00:00:00Z"), UpdatedAt: at("2025-01-01T10:00:00.000001Z")}
	alan := Customer{ID: 2, FirstName: "Alan", LastName: "Turing", Email: "alan@x", Mobile: "+2", CreatedAt: at("2024-01-01T00:00:00Z"), UpdatedAt: at("2025-06-01T00:00:00Z")}
	acc10 := Account{ID: 10, AccountNumber: 111, AccountStatus: "ACTIVE", BalanceCents: 100050, CustomerID: 1, CreatedAt: at("2024-02-01T00:00:00Z"), UpdatedAt: at("2025-03-01T00:00:00Z")}
	acc11 := Account{ID: 11, AccountNumber: 222, AccountStatus: "ACTIVE", BalanceCents: 2000, CustomerID: 1, CreatedAt: at("2024-02-01T00:00:00Z"), UpdatedAt: at("2024-02-01T00:00:00Z")}
	acc12 := Account{ID: 12, AccountNumber: 333, AccountStatus: "FROZEN", BalanceCents: 525, CustomerID: 2, CreatedAt: at("2024-02-01T00:00:00Z"), UpdatedAt: at("2024-02-01T00:00:00Z")}

	moved := acc11
	moved.CustomerID, moved.UpdatedAt = 2, at("2025-07-01T12:00:00.5Z")
	adaNew := ada
	adaNew.Email, adaNew.UpdatedAt = "ada@new", at("2025-02-01T00:00:00Z")
	eve := Customer{ID: 3, FirstName: "Eve", LastName: "Adams", Email: "e@x", Mobile: "+3", CreatedAt: at("2025-08-01T00:00:00Z"), UpdatedAt: at("2025-08-01T00:00:00Z")}
	acc13 := Account{ID: 13, AccountNumber: 444, AccountStatus: "ACTIVE", BalanceCents: 1, CustomerID: 3, CreatedAt: eve.CreatedAt, UpdatedAt: eve.UpdatedAt}

	events := []Event{
		put(100, OpRead, acc10), put(100, OpRead, acc11), put(100, OpRead, acc12),
		put(100, OpRead, ada), put(100, OpRead, alan),
		put(200, OpUpdate, moved),
		put(300, OpUpdate, adaNew),
		del(400, Account{ID: 12}),
		put(500, OpCreate, Transaction{ID: 7, RefNumber: "T7", CustomerID: 1, AccountID: 10, AmountCents: -4550, Type: "debit", CreatedAt: us("2025-03-04T05:06:07.000008Z")}),
		put(510, OpCreate, Transaction{ID: 8, RefNumber: "T8", CustomerID: 9, AccountID: 99, AmountCents: 100, Type: "debit", CreatedAt: us("2025-03-04T00:00:00Z")}),
		put(520, OpCreate, Transaction{ID: 9, RefNumber: "T9", CustomerID: 1, AccountID: 10, AmountCents: 100, Type: "debit", CreatedAt: us("2025-03-04T00:00:00Z")}),
		del(530, Transaction{ID: 9}),
		put(600, OpCreate, eve), put(650, OpCreate, acc13), del(700, Account{ID: 13}), del(710, Customer{ID: 3}),
	}
	got := Expect(events, nil)
	want := ODSState{
		CustomerAccount: []CustomerAccountRow{
			{CustomerID: 1, CustomerName: "Ada Lovelace", Email: "ada@new", Mobile: "+1", AccountID: 10, AccountNumber: "111",
				AccountStatus: "ACTIVE", AccountBalance: "1000.50", UpdatedAt: ptr("2025-03-01T00:00:00.000000Z"), AccountVersion: 100, CustomerVersion: 300},
			{CustomerID: 2, CustomerName: "Alan Turing", Email: "alan@x", Mobile: "+2", AccountID: 11, AccountNumber: "222",
				AccountStatus: "ACTIVE", AccountBalance: "20.00", UpdatedAt: ptr("2025-07-01T12:00:00.500000Z"), AccountVersion: 200, CustomerVersion: 100},
		},
		TTransaction: []TransactionRow{
			{TransactionID: 7, TransactionRefNumber: "T7", TransactionAmount: "-45.50", TransactionType: "debit", AccountNumber: "111",
				TransactionDate: "2025-03-04T05:06:07.000008Z", CustomerID: 1, SourceVersion: 500},
		},
		TFinancialInsights: []InsightsRow{
			{CustomerID: 1, TotalBalance: "1000.50", AverageMonthlySpending: "45.50"},
			{CustomerID: 2, TotalBalance: "20.00", AverageMonthlySpending: "0.00"},
		},
	}
	if !reflect.DeepEqual(got, want) {
		g, _ := json.MarshalIndent(got, "", " ")
		w, _ := json.MarshalIndent(want, "", " ")
		t.Fatalf("Expect:\n%s\nwant:\n%s", g, w)
	}
}

func customerWithAccount(id int32, number int32) []Event {
	c := Customer{ID: id, FirstName: "C", LastName: "D", UpdatedAt: at("2025-01-01T00:00:00Z")}
	a := Account{ID: id * 10, AccountNumber: number, BalanceCents: 0, CustomerID: id, UpdatedAt: at("2025-01-01T00:00:00Z")}
	return []Event{put(1, OpRead, c), put(1, OpRead, a)}
}

func txn(lsn int64, id, account int32, cents int64, typ, date string) Event {
	return put(lsn, OpCreate, Transaction{ID: id, AccountID: account, AmountCents: cents, Type: typ, CreatedAt: us(date)})
}

func insightsOf(t *testing.T, state ODSState, customer int32) InsightsRow {
	t.Helper()
	for _, r := range state.TFinancialInsights {
		if r.CustomerID == customer {
			return r
		}
	}
	t.Fatalf("no insights row for customer %d in %+v", customer, state.TFinancialInsights)
	return InsightsRow{}
}

func TestExpectAverageMonthlySpendingRoundsHalfUp(t *testing.T) {
	events := customerWithAccount(5, 555)
	events = append(events,
		txn(10, 1, 50, 10000, "debit", "2025-01-10T00:00:00Z"),
		txn(11, 2, 50, 5001, "WITHDRAWAL", "2025-02-28T23:59:59.999999Z"),
		txn(12, 3, 50, 99900, "credit", "2025-02-01T00:00:00Z"), // not spending
	)
	// (100.00 + 50.01) / 2 months = 75.005 → 75.01.
	if got := insightsOf(t, Expect(events, nil), 5).AverageMonthlySpending; got != "75.01" {
		t.Errorf("average_monthly_spending = %s, want 75.01", got)
	}
	// A third of a cent rounds down: 0.01 / 3 months.
	events = customerWithAccount(6, 666)
	events = append(events,
		txn(10, 4, 60, 1, "debit", "2025-01-10T00:00:00Z"),
		txn(11, 5, 60, 100, "deposit", "2025-03-10T00:00:00Z"),
	)
	if got := insightsOf(t, Expect(events, nil), 6).AverageMonthlySpending; got != "0.00" {
		t.Errorf("average_monthly_spending = %s, want 0.00", got)
	}
}

func TestExpectAverageMonthlySpendingUsesTheLastTwelveMonths(t *testing.T) {
	events := customerWithAccount(7, 777)
	start := time.Date(2024, time.January, 15, 12, 0, 0, 0, time.UTC)
	for i := range 14 { // 2024-01 … 2025-02
		cents := int64(1000) // 10.00
		if i < 2 {
			cents = 100000 // 1000.00 in 2024-01 and 2024-02: outside S..L
		}
		typ := []string{"debit", "Debit", "DEBIT", "withdrawal"}[i%4]
		if i == 5 {
			cents = -cents // abs() counts it as 10.00
		}
		events = append(events, txn(int64(10+i), int32(100+i), 70, cents, typ, start.AddDate(0, i, 0).Format(time.RFC3339)))
	}
	state := Expect(events, nil)
	// S = max(2024-01, 2025-02 − 11 months = 2024-03): 12 months of 10.00.
	if got := insightsOf(t, state, 7).AverageMonthlySpending; got != "10.00" {
		t.Errorf("average_monthly_spending = %s, want 10.00", got)
	}
	// Other spending types, case-insensitively: only "withdrawal" rows
	// (2024-04, -08, -12) in the 12 months: 30.00 / 12 = 2.50.
	if got := insightsOf(t, Expect(events, []string{" WITHDRAWAL "}), 7).AverageMonthlySpending; got != "2.50" {
		t.Errorf("average_monthly_spending with [WITHDRAWAL] = %s, want 2.50", got)
	}
	if n := len(state.TTransaction); n != 14 {
		t.Errorf("%d t_transaction rows, want 14", n)
	}
}

func TestExpectWithoutTransactions(t *testing.T) {
	events := customerWithAccount(8, 888)
	state := Expect(events, nil)
	got := insightsOf(t, state, 8)
	if got.AverageMonthlySpending != "0.00" || got.TotalBalance != "0.00" {
		t.Errorf("insights = %+v, want total 0.00, average 0.00", got)
	}
	if len(state.TTransaction) != 0 || len(state.CustomerAccount) != 1 {
		t.Errorf("state = %+v, want one account row and no transactions", state)
	}
	// Empty tables are [] in JSON, never null.
	b, err := json.Marshal(Expect(nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"customer_account":[],"t_transaction":[],"t_financial_insights":[]}` {
		t.Errorf("empty state JSON = %s", b)
	}
}

func TestExpectKeepsTheHighestLSN(t *testing.T) {
	c := Customer{ID: 1, FirstName: "A", LastName: "B", UpdatedAt: at("2025-01-01T00:00:00Z")}
	a := Account{ID: 1, AccountNumber: 9, BalanceCents: 100, CustomerID: 1, UpdatedAt: at("2025-01-01T00:00:00Z")}
	newer := a
	newer.BalanceCents = 200
	older := a
	older.BalanceCents = 300
	events := []Event{put(10, OpRead, c), put(10, OpRead, a), put(30, OpUpdate, newer), put(20, OpUpdate, older)}
	rows := Expect(events, nil).CustomerAccount
	if len(rows) != 1 || rows[0].AccountBalance != "2.00" || rows[0].AccountVersion != 30 {
		t.Errorf("rows = %+v, want balance 2.00 at version 30 (a late, older change is ignored)", rows)
	}
	// A delete is a version too: an older change cannot bring the row back.
	events = append(events, del(40, Account{ID: 1}), put(35, OpUpdate, older))
	if rows := Expect(events, nil).CustomerAccount; len(rows) != 0 {
		t.Errorf("rows after delete = %+v, want none", rows)
	}
}

func TestFormatCents(t *testing.T) {
	for in, want := range map[int64]string{0: "0.00", 5: "0.05", -5: "-0.05", 123400: "1234.00", -100001: "-1000.01"} {
		if got := formatCents(in); got != want {
			t.Errorf("formatCents(%d) = %s, want %s", in, got, want)
		}
	}
}
