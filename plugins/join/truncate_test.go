package join

import (
	"context"
	"testing"
	"time"

	"github.com/odsflow/odsflow/internal/statestore"
)

const (
	caTrunc = "customer_account truncate "
	txTrunc = "t_transaction truncate "
)

func TestTruncate(t *testing.T) {
	j := newTestJoin(t, t.TempDir())
	run(t, j, cust("c", 1, 7, "Ann"), cust("c", 2, 8, "Bob"),
		acct("c", 3, 1, 1001, 7, "5.00"), acct("c", 4, 2, 1002, 8, "1.00"),
		txn("c", 5, 50, 1), txn("c", 6, 51, 3)) // 51 is held: account 3 is not here
	expect(t, "truncate of the child table: its target rows go, up to its version",
		run(t, j, ev("T_Accounts", "t", 10, `{}`)),
		caTrunc+`{"account_version":10}`)
	expect(t, "a parent change finds no children left", run(t, j, cust("u", 11, 7, "Anna")))
	expect(t, "a change older than the truncation is stale", run(t, j, acct("u", 9, 1, 1001, 7, "9.00")))
	expect(t, "a transaction of a truncated account is held", run(t, j, txn("c", 12, 52, 1)))
	expect(t, "an account inserted after the truncation joins (and releases what waits for it)",
		run(t, j, acct("c", 13, 1, 1001, 8, "2.00")),
		ca+`{"account_balance":"2.00","account_number":"1001","account_version":13,"customer_id":8,"customer_name":"Bob L","customer_version":2}`,
		tx+`{"account_number":"1001","customer_id":8,"source_version":12,"transaction_amount":"12.50","transaction_id":52}`)
	expect(t, "it left its old parent's index", run(t, j, cust("u", 14, 7, "Anne")))

	expect(t, "truncate of the parent table: the rows joined to it go",
		run(t, j, ev("T_Customers", "t", 20, `{}`)),
		caTrunc+`{"customer_version":20}`)
	expect(t, "a child change is held now", run(t, j, acct("u", 21, 1, 1001, 8, "3.00")),
		cd+`{"account_number":"1001","account_version":21,"customer_version":0}`)
	expect(t, "the parent comes back", run(t, j, cust("c", 22, 8, "Bo")),
		ca+`{"account_balance":"3.00","account_number":"1001","account_version":21,"customer_id":8,"customer_name":"Bo L","customer_version":22}`)

	expect(t, "truncate of a lookup child: its rows and its held events up to the version go",
		run(t, j, ev("T_Transactions", "t", 30, `{}`)),
		txTrunc+`{"source_version":30}`)
	expect(t, "the held transaction 51 is gone", run(t, j, acct("c", 31, 3, 1003, 8, "0.00")),
		ca+`{"account_balance":"0.00","account_number":"1003","account_version":31,"customer_id":8,"customer_name":"Bo L","customer_version":22}`)
	expect(t, "a replayed truncation is emitted again (its output may have been lost), changing nothing",
		run(t, j, ev("T_Accounts", "t", 10, `{}`)),
		caTrunc+`{"account_version":10}`)
	expect(t, "account 1001 (version 21) survived the replayed truncation", run(t, j, cust("u", 32, 8, "Bo")),
		ca+`{"account_balance":"3.00","account_number":"1001","account_version":21,"customer_id":8,"customer_name":"Bo L","customer_version":32}`,
		ca+`{"account_balance":"0.00","account_number":"1003","account_version":31,"customer_id":8,"customer_name":"Bo L","customer_version":32}`)
}

func TestPurgeRemovesTruncatedRowsAndTheirIndex(t *testing.T) {
	j := newTestJoin(t, t.TempDir())
	run(t, j, cust("c", 1, 7, "Ann"), acct("c", 2, 1, 1001, 7, "5.00"), acct("c", 3, 2, 1002, 7, "6.00"))
	run(t, j, ev("T_Accounts", "t", 10, `{}`))
	if n := count(t, j, "row.accounts"); n != 2 {
		t.Fatalf("before the purge: %d account rows, want 2", n)
	}
	n, err := j.purge(context.Background(), time.Now().Add(j.retention+time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("purged %d rows, want the 2 truncated accounts", n)
	}
	if n := count(t, j, "row.accounts"); n != 0 {
		t.Errorf("after the purge: %d account rows", n)
	}
	if n := count(t, j, "idx.customer_account"); n != 0 {
		t.Errorf("after the purge: %d index entries of truncated accounts", n)
	}
}

func count(t testing.TB, j *join, bucket string) int {
	t.Helper()
	var n int
	err := j.store.View(context.Background(), func(tx statestore.Tx) (err error) {
		n, err = tx.Count(bucket)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
