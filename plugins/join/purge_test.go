package join

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/odsflow/odsflow/internal/statestore"
)

func TestPurgeRemovesOnlyExpiredTombstones(t *testing.T) {
	j := newTestJoin(t, t.TempDir())
	run(t, j, cust("c", 1, 7, "Ann"), cust("c", 2, 8, "Bob"), acct("c", 3, 1, 1001, 7, "5.00"))
	run(t, j, ev("T_Customers", "d", 4, `{"id":8}`), ev("T_Accounts", "d", 5, `{"id":1}`))

	ctx := context.Background()
	if n, err := j.purge(ctx, time.Now()); err != nil || n != 0 {
		t.Fatalf("purge of fresh tombstones: %d, %v; want none", n, err)
	}
	n, err := j.purge(ctx, time.Now().Add(j.retention+time.Hour))
	if err != nil || n != 2 {
		t.Fatalf("purge after the retention: %d, %v; want the 2 tombstones", n, err)
	}
	_ = j.store.View(ctx, func(tx statestore.Tx) error {
		for _, k := range []struct{ bucket, key string }{{"row.customers", "8"}, {"row.accounts", "1"}} {
			if v, _ := tx.Get(k.bucket, []byte(k.key)); v != nil {
				t.Errorf("%s/%s still there after the purge", k.bucket, k.key)
			}
		}
		if v, _ := tx.Get("row.customers", []byte("7")); v == nil {
			t.Error("a live row was purged")
		}
		return nil
	})
	// Once its tombstone is gone, an old change can bring the key back:
	// that is what the retention bounds.
	expect(t, "an old change after the purge", run(t, j, acct("u", 2, 1, 1001, 7, "1.00")),
		ca+`{"account_balance":"1.00","account_number":"1001","account_version":2,"customer_id":7,"customer_name":"Ann L","customer_version":1}`)
}

// A row the purge removes leaves the row cache too. Cached, a truncated
// account outlived its purge; a second truncation made it read as a fresh
// tombstone still under its customer, so its re-insert under the same
// customer wrote no index entry, and the customer's next change did not
// re-emit it (found by review).
func TestPurgedRowsLeaveTheRowCache(t *testing.T) {
	j := newTestJoin(t, t.TempDir())
	run(t, j, cust("c", 1, 7, "Ann"), acct("c", 2, 1, 1001, 7, "5.00"))
	run(t, j, txn("c", 3, 50, 1))              // reads account 1: cached
	run(t, j, ev("T_Accounts", "t", 10, `{}`)) // truncates the accounts
	run(t, j, txn("c", 11, 51, 1))             // reads account 1 again: held
	if _, err := j.purge(context.Background(), time.Now().Add(j.retention+time.Hour)); err != nil {
		t.Fatal(err)
	}
	run(t, j, ev("T_Accounts", "t", 20, `{}`))
	run(t, j, acct("c", 21, 1, 1001, 7, "2.00"))
	expect(t, "the customer's change re-emits the re-inserted account", run(t, j, cust("u", 22, 7, "Anna")),
		ca+`{"account_balance":"2.00","account_number":"1001","account_version":21,"customer_id":7,"customer_name":"Anna L","customer_version":22}`)
}

// An entry the purge cannot read (corrupt) is kept and reported; the
// expired tombstones after it, in its bucket and the others, are purged.
func TestPurgeGoesOnPastAnUnreadableEntry(t *testing.T) {
	j := newTestJoin(t, t.TempDir())
	run(t, j, cust("c", 1, 7, "Ann"), acct("c", 3, 1, 1001, 7, "5.00"))
	run(t, j, ev("T_Accounts", "d", 5, `{"id":1}`), ev("T_Customers", "d", 6, `{"id":7}`))
	ctx := context.Background()
	if err := j.store.Update(ctx, func(tx statestore.Tx) error {
		return tx.Put("row.accounts", []byte("0"), []byte("not a row state"))
	}); err != nil {
		t.Fatal(err)
	}
	n, err := j.purge(ctx, time.Now().Add(j.retention+time.Hour))
	if n != 2 || err == nil || !strings.Contains(err.Error(), "1 state entries could not be read") {
		t.Fatalf("purge past a corrupt entry: %d purged, %v; want the 2 tombstones purged and the corrupt entry reported", n, err)
	}
	_ = j.store.View(ctx, func(tx statestore.Tx) error {
		if v, _ := tx.Get("row.accounts", []byte("0")); v == nil {
			t.Error("the unreadable entry was deleted")
		}
		return nil
	})
}
