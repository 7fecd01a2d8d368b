package join

import (
	"context"
	"strings"
	"testing"
)

func TestInspect(t *testing.T) {
	dir := t.TempDir()
	j := newTestJoin(t, dir)
	run(t, j, fromKafka(cust("c", 1, 7, "Ann"), "customers", 0, 41, -1), acct("c", 2, 1, 1001, 7, "5.00"), acct("c", 3, 2, 1002, 9, "1.00"),
		txn("c", 4, 50, 3), ev("T_Customers", "d", 5, `{"id":8}`))

	var locked strings.Builder
	if err := Inspect(context.Background(), dir, "", &locked); err == nil || !strings.Contains(err.Error(), "locked") {
		t.Errorf("inspect of a state in use: %v, want a lock error", err)
	}
	_ = j.Close(context.Background())

	var out strings.Builder
	if err := Inspect(context.Background(), dir, "7", &out); err != nil {
		t.Fatal(err)
	}
	report := out.String()
	for _, want := range []string{
		"row.accounts", "row.customers", "idx.customer_account", "held.t_transaction",
		`key "7":`, `"b": {`, "idx.customer_account: parent 7, child 1",
		"topic customers partition 0 applied up to offset 41",
		"the parent each held event of relation t_transaction waits for",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	// Counts: 2 accounts; customers 7 and the tombstone of 8; 1 held.
	for _, line := range []string{"row.accounts  2 ", "row.customers  2  1", "held.t_transaction  1"} {
		if !strings.Contains(strings.Join(strings.Fields(report), "  "), strings.Join(strings.Fields(line), "  ")) {
			t.Errorf("report lacks %q:\n%s", line, report)
		}
	}
	if err := Inspect(context.Background(), t.TempDir(), "", &out); err == nil || !strings.Contains(err.Error(), "no cdc_join state") {
		t.Errorf("inspect of an empty dir: %v", err)
	}
}
