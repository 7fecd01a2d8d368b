package join

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"

	"github.com/odsflow/odsflow/internal/statestore"
)

// Cases found by review, each a rule of the issue that an earlier version
// broke.

func TestChangesOlderThanATruncationAreStaleEvenForUnknownKeys(t *testing.T) {
	j := newTestJoin(t, t.TempDir())
	run(t, j, cust("c", 1, 7, "Ann"))
	run(t, j, ev("T_Accounts", "t", 10, `{}`), ev("T_Transactions", "t", 10, `{}`))
	expect(t, "an account change older than the truncation, of a key never seen", run(t, j, acct("c", 5, 1, 1001, 7, "5.00")))
	expect(t, "a transaction older than its table's truncation", run(t, j, txn("c", 6, 50, 1)))
	expect(t, "a newer one joins", run(t, j, acct("c", 11, 1, 1001, 7, "5.00")),
		ca+`{"account_balance":"5.00","account_number":"1001","account_version":11,"customer_id":7,"customer_name":"Ann L","customer_version":1}`)
}

func TestPurgeRemovesReplayRecords(t *testing.T) {
	j := newTestJoin(t, t.TempDir())
	run(t, j, cust("c", 1, 7, "Ann"), acct("c", 3, 1, 1001, 7, "5.00"))
	run(t, j, ev("T_Accounts", "d", 5, `{"id":1}`))
	if n := count(t, j, "replay.accounts"); n != 1 {
		t.Fatalf("%d replay records before the purge, want the delete's", n)
	}
	if _, err := j.purge(context.Background(), time.Now().Add(j.retention+time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n := count(t, j, "replay.accounts"); n != 0 {
		t.Errorf("%d replay records of purged keys left", n)
	}
}

func TestAnOverlongKeyIsBadInputNotAStall(t *testing.T) {
	j := newTestJoin(t, t.TempDir())
	big := strings.Repeat("k", 40000)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := j.ProcessBatch(ctx, []*service.Message{
		cust("c", 1, 7, "Ann"),
		ev("T_Customers", "c", 2, fmt.Sprintf(`{"id":%q,"first_name":"x","last_name":"y"}`, big)),
	})
	if err != nil {
		t.Fatalf("ProcessBatch: %v", err)
	}
	if len(out) != 1 || len(out[0]) != 1 || out[0][0].GetError() == nil || !strings.Contains(out[0][0].GetError().Error(), "key of 40000 bytes") {
		t.Fatalf("outputs %v: want the overlong key's message errored", out)
	}
	expect(t, "the batch's other message was applied", run(t, j, acct("c", 3, 1, 1001, 7, "5.00")),
		ca+`{"account_balance":"5.00","account_number":"1001","account_version":3,"customer_id":7,"customer_name":"Ann L","customer_version":1}`)
}

func TestAMessageFailingHalfwayLeavesNoTrace(t *testing.T) {
	j := newTestJoin(t, t.TempDir())
	run(t, j, cust("c", 1, 7, "Ann"), acct("c", 2, 1, 1001, 7, "5.00"))
	got := run(t, j, ev("T_Accounts", "u", 3, fmt.Sprintf(`{"id":1,"account_number":1001,"customer_id":%q,"account_balance":"5.00"}`, strings.Repeat("k", 40000))))
	if len(got) != 1 || !strings.HasPrefix(got[0], "ERROR: ") {
		t.Fatalf("a move to an overlong parent key: %v", got)
	}
	expect(t, "account 1 is still customer 7's", run(t, j, cust("u", 4, 7, "Anna")),
		ca+`{"account_balance":"5.00","account_number":"1001","account_version":2,"customer_id":7,"customer_name":"Anna L","customer_version":4}`)
}

func TestAReplayedReleaseSurvivesItsParentsDelete(t *testing.T) {
	j := newTestJoin(t, t.TempDir())
	run(t, j, txn("c", 1, 50, 1)) // held
	batch := func() []*service.Message {
		return []*service.Message{acct("c", 2, 1, 1001, 7, "5.00"), ev("T_Accounts", "d", 3, `{"id":1}`)}
	}
	release := tx + `{"account_number":"1001","customer_id":7,"source_version":1,"transaction_amount":"12.50","transaction_id":50}`
	expect(t, "first delivery", run(t, j, batch()...), release)
	expect(t, "the redelivery (outputs lost) releases it again, joined as it was", run(t, j, batch()...), release)
}

func nanAccount(v int64, id, number, customer int) *service.Message {
	m := service.NewMessage(nil)
	m.SetStructuredMut(map[string]any{"id": int64(id), "account_number": int64(number), "customer_id": int64(customer), "account_balance": "1.00", "score": math.NaN()})
	m.MetaSetMut("cdc_table", "T_Accounts")
	m.MetaSetMut("cdc_op", "c")
	m.MetaSetMut("cdc_version", v)
	return m
}

func TestAnUnencodableChildIsBlamedNotItsParent(t *testing.T) {
	j := newTestJoin(t, t.TempDir())
	got := run(t, j, nanAccount(3, 1, 1001, 7), cust("c", 4, 7, "Ann"))
	expect(t, "the NaN account is errored, the customer stored", got,
		"ERROR: cdc_join: encoding the state of row.accounts 1: json: unsupported value: NaN")
	expect(t, "the customer is there", run(t, j, acct("c", 5, 2, 1002, 7, "1.00")),
		ca+`{"account_balance":"1.00","account_number":"1002","account_version":5,"customer_id":7,"customer_name":"Ann L","customer_version":4}`)
}

func TestAHeldChildThatCannotBeMappedDoesNotPoisonItsParent(t *testing.T) {
	cfg := strings.Replace(odsConfig, "root.account_balance = this.child.account_balance\n", "root.account_balance = this.child.account_balance.number()\n", 1)
	if cfg == odsConfig {
		t.Fatal("the test config changed: no account_balance line")
	}
	conf, err := joinSpec().ParseYAML(fmt.Sprintf(cfg, t.TempDir()), nil)
	if err != nil {
		t.Fatal(err)
	}
	j, err := newJoin(conf, service.MockResources())
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close(context.Background())
	run(t, j, acct("c", 1, 1, 1001, 7, "abc"), acct("c", 2, 2, 1002, 7, "5"))
	got := run(t, j, cust("c", 3, 7, "Ann"))
	if len(got) != 2 {
		t.Fatalf("the parent arrives: %q, want the good child's row and the bad one's error", got)
	}
	expect(t, "the parent arrives", got,
		ca+`{"account_balance":5,"account_number":"1002","account_version":2,"customer_id":7,"customer_name":"Ann L","customer_version":3}`,
		got[func() int {
			if strings.HasPrefix(got[0], "ERROR: ") {
				return 0
			}
			return 1
		}()])
	for _, l := range got {
		if strings.HasPrefix(l, "ERROR: ") && !strings.Contains(l, "the customer_account row of accounts 1, emitted for this change of its parent, cannot be mapped") {
			t.Errorf("the bad row's error: %s", l)
		}
	}
	expect(t, "a third child joins the stored parent", run(t, j, acct("c", 5, 3, 1003, 7, "6")),
		ca+`{"account_balance":6,"account_number":"1003","account_version":5,"customer_id":7,"customer_name":"Ann L","customer_version":3}`)
}

func TestAHeldTransactionFollowsItsMovesAndDeletes(t *testing.T) {
	j := newTestJoin(t, t.TempDir())
	run(t, j, txn("c", 1, 50, 1)) // held under account 1
	run(t, j, txn("u", 2, 50, 2)) // moved: held under account 2
	expect(t, "account 1 arrives: nothing of 50 is held under it", run(t, j, acct("c", 3, 1, 1001, 7, "5.00")))
	expect(t, "a delete of the held transaction", run(t, j, ev("T_Transactions", "d", 4, `{"id":50}`)),
		`t_transaction delete {"source_version":4,"transaction_id":50}`)
	expect(t, "account 2 arrives: nothing left to release", run(t, j, acct("c", 5, 2, 1002, 7, "5.00")))
	if n := count(t, j, "heldkey.t_transaction") + count(t, j, "held.t_transaction"); n != 0 {
		t.Errorf("%d held entries left", n)
	}
}

// Found by TestCrashes (tests/e2e): after a crash, the transactions
// partition came back with the delete of a transaction before the accounts
// partition came back with the account change that had released it. The
// replayed release must not bring the deleted transaction back (the ODS
// keeps no tombstones).
func TestAReplayedReleaseDoesNotResurrectADeletedChild(t *testing.T) {
	j := newTestJoin(t, t.TempDir())
	run(t, j, txn("c", 1, 50, 1)) // held: account 1 unknown
	release := tx + `{"account_number":"1001","customer_id":7,"source_version":1,"transaction_amount":"12.50","transaction_id":50}`
	expect(t, "the account releases it", run(t, j, acct("c", 2, 1, 1001, 7, "5.00")), release)
	del := ev("T_Transactions", "d", 3, `{"id":50}`)
	deleted := "t_transaction delete " + `{"source_version":3,"transaction_id":50}`
	expect(t, "the transaction is deleted", run(t, j, del), deleted)
	// The crash: both redelivered, the delete first (another partition).
	expect(t, "the delete again", run(t, j, ev("T_Transactions", "d", 3, `{"id":50}`)), deleted)
	expect(t, "the account change again: no release of the deleted transaction", run(t, j, acct("c", 2, 1, 1001, 7, "5.00")))

	// A later re-insert of the same id is a new row, released as usual.
	run(t, j, txn("c", 4, 50, 2)) // held: account 2 unknown
	expect(t, "a newer child of the same key", run(t, j, acct("c", 5, 2, 1002, 7, "1.00")),
		tx+`{"account_number":"1002","customer_id":7,"source_version":4,"transaction_amount":"12.50","transaction_id":50}`)

	// The purge forgets deletes older than the retention.
	if n := count(t, j, "gone.t_transaction"); n != 1 {
		t.Fatalf("%d deleted-child entries, want 1", n)
	}
	if _, err := j.purge(context.Background(), time.Now().Add(j.retention+time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n := count(t, j, "gone.t_transaction"); n != 0 {
		t.Errorf("%d deleted-child entries after the purge, want 0", n)
	}
}

// Found by review: a replayed release must not bring back a child whose
// table was truncated since.
func TestAReplayedReleaseDoesNotResurrectATruncatedChild(t *testing.T) {
	j := newTestJoin(t, t.TempDir())
	run(t, j, txn("c", 1, 50, 1)) // held
	expect(t, "the account releases it", run(t, j, acct("c", 2, 1, 1001, 7, "5.00")),
		tx+`{"account_number":"1001","customer_id":7,"source_version":1,"transaction_amount":"12.50","transaction_id":50}`)
	run(t, j, ev("T_Transactions", "t", 3, `{}`))
	expect(t, "the account change again, after the truncate", run(t, j, acct("c", 2, 1, 1001, 7, "5.00")))
}

// A lookup child's change older than its delete is stale: it must not
// bring the deleted row back, whatever brought it late.
func TestALookupChildOlderThanItsDeleteIsStale(t *testing.T) {
	j := newTestJoin(t, t.TempDir())
	run(t, j, cust("c", 1, 7, "Ann"), acct("c", 2, 1, 1001, 7, "5.00"))
	run(t, j, txn("c", 3, 50, 1), ev("T_Transactions", "d", 5, `{"id":50}`))
	expect(t, "the create again, after its delete", run(t, j, txn("c", 3, 50, 1)))
	expect(t, "a newer create of the same id joins", run(t, j, txn("c", 6, 50, 1)),
		tx+`{"account_number":"1001","customer_id":7,"source_version":6,"transaction_amount":"12.50","transaction_id":50}`)
}

// With two batches in flight, a nacked batch is delivered again after the
// next one: an older change of a lookup child must then neither drop the
// newer event held for it (moved to an account not arrived yet) nor
// replace it.
func TestRedeliveredOlderLookupChangeKeepsTheNewerHeldEvent(t *testing.T) {
	j := newTestJoin(t, t.TempDir())
	run(t, j, cust("c", 1, 7, "Ann"), acct("c", 2, 1, 1001, 7, "5.00"))
	b1 := func() { run(t, j, txn("c", 3, 50, 1)) } // joined with account 1
	b1()
	run(t, j, txn("u", 4, 50, 2)) // moved to account 2, not arrived: held
	b1()                          // b1 nacked, delivered again after b2
	expect(t, "account 2 arrives: the held v4 of transaction 50 is released", run(t, j, acct("c", 5, 2, 1002, 7, "1.00")),
		ca+`{"account_balance":"1.00","account_number":"1002","account_version":5,"customer_id":7,"customer_name":"Ann L","customer_version":1}`,
		tx+`{"account_number":"1002","customer_id":7,"source_version":4,"transaction_amount":"12.50","transaction_id":50}`)

	k := newTestJoin(t, t.TempDir())
	first := func() { run(t, k, txn("c", 3, 50, 1)) } // account 1 unknown: held
	first()
	run(t, k, txn("u", 4, 50, 2)) // moved to account 2: held under 2
	first()                       // redelivered after it
	expect(t, "account 1 arrives: the stale v3 is not released", run(t, k, acct("c", 5, 1, 1001, 7, "1.00")))
	expect(t, "account 2 arrives: v4 is", run(t, k, acct("c", 6, 2, 1002, 7, "1.00")),
		tx+`{"account_number":"1002","customer_id":7,"source_version":4,"transaction_amount":"12.50","transaction_id":50}`)
}

// A change that released a held lookup, its outputs lost in a crash, then
// its table truncated (committed through another partition): delivered
// again, older than the truncation, it still emits the release.
func TestReplayedReleaseOlderThanItsTablesTruncation(t *testing.T) {
	j := newTestJoin(t, t.TempDir())
	run(t, j, txn("c", 1, 50, 1)) // held: account 1 unknown
	release := tx + `{"account_number":"1001","customer_id":7,"source_version":1,"transaction_amount":"12.50","transaction_id":50}`
	expect(t, "account 1 releases it (this output is lost in the crash)", run(t, j, acct("c", 2, 1, 1001, 7, "5.00")), release)
	run(t, j, ev("T_Accounts", "t", 3, `{}`))
	expect(t, "the account change delivered again: the release again", run(t, j, acct("c", 2, 1, 1001, 7, "5.00")), release)
}

// A read of the state failing while a message is applied (here a stored
// entry that does not decode) is the state's failure, not the message's:
// the batch is held and retried, nothing dead-lettered or left out of the
// state; once the state reads again, it goes on.
func TestAStateReadErrorIsNotTheMessagesFault(t *testing.T) {
	j := newTestJoin(t, t.TempDir())
	run(t, j, cust("c", 1, 7, "Ann"))
	corrupt := func(on bool) {
		t.Helper()
		if err := j.store.Update(context.Background(), func(tx statestore.Tx) error {
			if on {
				return tx.Put(truncBucket(), []byte("accounts"), []byte{0x80})
			}
			return tx.Delete(truncBucket(), []byte("accounts"))
		}); err != nil {
			t.Fatal(err)
		}
	}
	corrupt(true)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	out, err := j.ProcessBatch(ctx, service.MessageBatch{acct("c", 2, 1, 1001, 7, "5.00")})
	cancel()
	if err == nil {
		t.Fatalf("a state that cannot be read: the batch passed (%d batches out), want it held until the state reads", len(out))
	}
	corrupt(false)
	expect(t, "once the state reads, the account is applied", run(t, j, acct("c", 2, 1, 1001, 7, "5.00")),
		ca+`{"account_balance":"5.00","account_number":"1001","account_version":2,"customer_id":7,"customer_name":"Ann L","customer_version":1}`)
}
