package join

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"testing"

	"github.com/redpanda-data/benthos/v4/public/service"
)

const odsConfig = `
state_dir: %q
tables:
  - name: customers
    check: '@cdc_table == "T_Customers"'
    key: this.id
  - name: accounts
    check: '@cdc_table == "T_Accounts"'
    key: this.id
  - name: transactions
    check: '@cdc_table == "T_Transactions"'
    key: this.id
relations:
  - name: customer_account
    kind: latest_state
    parent: customers
    child: accounts
    parent_key: this.customer_id
    mapping: |
      root.account_number = this.child.account_number.string()
      root.customer_id = this.parent.id
      root.customer_name = this.parent.first_name + " " + this.parent.last_name
      root.account_balance = this.child.account_balance
      root.account_version = this.child_version
      root.customer_version = this.parent_version
    key_mapping: 'root.account_number = this.child.account_number.string()'
    child_version_column: account_version
    parent_version_column: customer_version
  - name: t_transaction
    kind: lookup
    parent: accounts
    child: transactions
    parent_key: this.account_id
    mapping: |
      root.transaction_id = this.child.id
      root.transaction_amount = this.child.amount
      root.account_number = this.parent.account_number.string()
      root.customer_id = this.parent.customer_id
      root.source_version = this.child_version
    key_mapping: 'root.transaction_id = this.child.id'
    child_version_column: source_version
`

func newTestJoin(t *testing.T, dir string) *join {
	t.Helper()
	conf, err := joinSpec().ParseYAML(fmt.Sprintf(odsConfig, dir), nil)
	if err != nil {
		t.Fatal(err)
	}
	j, err := newJoin(conf, service.MockResources())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = j.Close(context.Background()) })
	return j
}

// ev is a change as debezium_unwrap emits it.
func ev(table, op string, version int64, body string) *service.Message {
	m := service.NewMessage([]byte(body))
	m.MetaSetMut("cdc_table", table)
	m.MetaSetMut("cdc_op", op)
	m.MetaSetMut("cdc_version", version)
	return m
}

func cust(op string, v int64, id int, first string) *service.Message {
	return ev("T_Customers", op, v, fmt.Sprintf(`{"id":%d,"first_name":%q,"last_name":"L"}`, id, first))
}

func acct(op string, v int64, id, number, customer int, balance string) *service.Message {
	return ev("T_Accounts", op, v, fmt.Sprintf(`{"id":%d,"account_number":%d,"customer_id":%d,"account_balance":%q}`, id, number, customer, balance))
}

func txn(op string, v int64, id, account int) *service.Message {
	return ev("T_Transactions", op, v, fmt.Sprintf(`{"id":%d,"account_id":%d,"amount":"12.50"}`, id, account))
}

// run processes the messages as one batch and renders what comes out as
// "table op {json}" lines, or "ERROR: reason" for errored messages.
func run(t *testing.T, j *join, msgs ...*service.Message) []string {
	t.Helper()
	out, err := j.ProcessBatch(context.Background(), msgs)
	if err != nil {
		t.Fatalf("ProcessBatch: %v", err)
	}
	var lines []string
	for _, b := range out {
		for _, m := range b {
			if err := m.GetError(); err != nil {
				lines = append(lines, "ERROR: "+err.Error())
				continue
			}
			table, _ := m.MetaGet("ods_table")
			op, _ := m.MetaGet("ods_op")
			v, _ := m.AsStructured()
			js, _ := json.Marshal(v)
			lines = append(lines, table+" "+op+" "+string(js))
		}
	}
	return lines
}

func expect(t *testing.T, step string, got []string, want ...string) {
	t.Helper()
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s:\ngot\n  %s\nwant\n  %s", step, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

const (
	ca = "customer_account upsert "
	cd = "customer_account delete "
	tx = "t_transaction upsert "
)

func TestLatestStateJoin(t *testing.T) {
	j := newTestJoin(t, t.TempDir())
	expect(t, "child before its parent is held", run(t, j, acct("c", 10, 1, 1001, 7, "5.00")))
	expect(t, "parent arrives: held child emitted", run(t, j, cust("c", 11, 7, "Ann")),
		ca+`{"account_balance":"5.00","account_number":"1001","account_version":10,"customer_id":7,"customer_name":"Ann L","customer_version":11}`)
	expect(t, "second child of a present parent", run(t, j, acct("c", 12, 2, 1002, 7, "1.00")),
		ca+`{"account_balance":"1.00","account_number":"1002","account_version":12,"customer_id":7,"customer_name":"Ann L","customer_version":11}`)
	expect(t, "parent change re-emits every child", run(t, j, cust("u", 13, 7, "Anna")),
		ca+`{"account_balance":"5.00","account_number":"1001","account_version":10,"customer_id":7,"customer_name":"Anna L","customer_version":13}`,
		ca+`{"account_balance":"1.00","account_number":"1002","account_version":12,"customer_id":7,"customer_name":"Anna L","customer_version":13}`)

	run(t, j, cust("c", 14, 8, "Bob"))
	expect(t, "child moves to a present parent", run(t, j, acct("u", 15, 1, 1001, 8, "5.00")),
		ca+`{"account_balance":"5.00","account_number":"1001","account_version":15,"customer_id":8,"customer_name":"Bob L","customer_version":14}`)
	expect(t, "child moves again, to a parent not yet here: its row goes", run(t, j, acct("u", 16, 1, 1001, 9, "5.00")),
		cd+`{"account_number":"1001","account_version":16,"customer_version":0}`)
	expect(t, "the old parents no longer have it", run(t, j, cust("u", 17, 8, "Bobby")))
	expect(t, "", run(t, j, cust("u", 18, 7, "Anne")),
		ca+`{"account_balance":"1.00","account_number":"1002","account_version":12,"customer_id":7,"customer_name":"Anne L","customer_version":18}`)
	expect(t, "its new parent arrives", run(t, j, cust("c", 19, 9, "Cy")),
		ca+`{"account_balance":"5.00","account_number":"1001","account_version":16,"customer_id":9,"customer_name":"Cy L","customer_version":19}`)

	expect(t, "child delete", run(t, j, ev("T_Accounts", "d", 20, `{"id":2}`)), cd+`{"account_number":"1002","account_version":20,"customer_version":0}`)
	expect(t, "parent delete deletes its children's rows", run(t, j, ev("T_Customers", "d", 21, `{"id":9}`)), cd+`{"account_number":"1001","account_version":16,"customer_version":21}`)
	expect(t, "the parent comes back: its held child is emitted again", run(t, j, cust("c", 22, 9, "Cy")),
		ca+`{"account_balance":"5.00","account_number":"1001","account_version":16,"customer_id":9,"customer_name":"Cy L","customer_version":22}`)
}

func TestVersionsAndTombstones(t *testing.T) {
	j := newTestJoin(t, t.TempDir())
	run(t, j, cust("c", 2, 7, "Ann"), acct("c", 5, 1, 1001, 7, "5.00"))
	expect(t, "stale update ignored", run(t, j, acct("u", 4, 1, 1001, 7, "9.99")))
	expect(t, "delete", run(t, j, ev("T_Accounts", "d", 6, `{"id":1}`)), cd+`{"account_number":"1001","account_version":6,"customer_version":0}`)
	expect(t, "stale update after the delete cannot bring it back", run(t, j, acct("u", 5, 1, 1001, 7, "9.99")))
	expect(t, "a newer insert does", run(t, j, acct("c", 7, 1, 1001, 7, "1.00")),
		ca+`{"account_balance":"1.00","account_number":"1001","account_version":7,"customer_id":7,"customer_name":"Ann L","customer_version":2}`)
	expect(t, "stale parent ignored", run(t, j, cust("u", 1, 7, "Old")))
	expect(t, "version 0 is refused (deletes use it as the lowest)", run(t, j, cust("u", 0, 7, "Zero")),
		"ERROR: cdc_join: customers message with cdc_version 0: versions start at 1")
}

func TestReplayOfAWholeBatchIsHarmless(t *testing.T) {
	batch := func() []*service.Message {
		return []*service.Message{cust("c", 1, 7, "Ann"), acct("c", 2, 1, 1001, 7, "5.00"), acct("u", 3, 1, 1001, 7, "6.00"), txn("c", 4, 50, 1)}
	}
	j := newTestJoin(t, t.TempDir())
	first := run(t, j, batch()...)
	again := run(t, j, batch()...)
	// Rows are emitted again (same versions: an upsert with a version guard
	// makes them no-ops), except what the replay's older versions reject.
	final := func(lines []string) string { return lines[len(lines)-1] }
	if final(first) != final(again) {
		t.Errorf("replay ends differently:\nfirst %v\nagain %v", first, again)
	}
	expect(t, "after the replay, state is as before", run(t, j, cust("u", 5, 7, "Ann")),
		ca+`{"account_balance":"6.00","account_number":"1001","account_version":3,"customer_id":7,"customer_name":"Ann L","customer_version":5}`)
}

func TestLookupJoin(t *testing.T) {
	j := newTestJoin(t, t.TempDir())
	expect(t, "transaction before its account is held", run(t, j, txn("c", 1, 50, 1)))
	expect(t, "account arrives: the transaction is emitted", run(t, j, acct("c", 2, 1, 1001, 7, "5.00")),
		tx+`{"account_number":"1001","customer_id":7,"source_version":1,"transaction_amount":"12.50","transaction_id":50}`)
	expect(t, "emitted transactions are not kept", run(t, j, acct("u", 3, 1, 1001, 7, "6.00")))
	expect(t, "a transaction of a present account", run(t, j, txn("c", 4, 51, 1)),
		tx+`{"account_number":"1001","customer_id":7,"source_version":4,"transaction_amount":"12.50","transaction_id":51}`)
	expect(t, "transaction delete", run(t, j, ev("T_Transactions", "d", 5, `{"id":51}`)), `t_transaction delete {"source_version":5,"transaction_id":51}`)
	run(t, j, txn("c", 6, 52, 2))
	expect(t, "a held transaction deleted before its account arrives", run(t, j, ev("T_Transactions", "d", 7, `{"id":52}`)), `t_transaction delete {"source_version":7,"transaction_id":52}`)
	expect(t, "... is never emitted", run(t, j, acct("c", 8, 2, 1002, 7, "0.00")))
}

func TestBadInputIsErroredAndChangesNothing(t *testing.T) {
	j := newTestJoin(t, t.TempDir())
	noVersion := service.NewMessage([]byte(`{"id":1}`))
	noVersion.MetaSetMut("cdc_table", "T_Customers")
	noVersion.MetaSetMut("cdc_op", "c")
	got := run(t, j,
		ev("T_Nope", "c", 1, `{"id":1}`),
		ev("T_Customers", "c", 1, `{"name":"no id"}`),
		ev("T_Customers", "c", 1, `{"id":1.5}`),
		ev("T_Customers", "c", 1, `{"id":{"a":1}}`),
		noVersion,
		ev("T_Accounts", "c", 1, `{"id":1,"account_number":1001}`), // no customer_id: parent_key fails
		ev("T_Customers", "x", 1, `{"id":1}`),
		ev("T_Customers", "c", 1, `not json`),
	)
	wantReasons := []string{"matches no table", "key of customers", "not an integer", "want a string or an integer",
		"without an integer cdc_version", "parent_key of customer_account", `unsupported cdc_op "x"`, "not structured"}
	if len(got) != len(wantReasons) {
		t.Fatalf("got %d outputs, want %d errored messages: %v", len(got), len(wantReasons), got)
	}
	for i, w := range wantReasons {
		if !strings.HasPrefix(got[i], "ERROR: ") || !strings.Contains(got[i], w) {
			t.Errorf("message %d: %q, want an error containing %q", i, got[i], w)
		}
	}
	// The account with the bad parent key left no state behind: a correct
	// version of it, older than the failed one, is still accepted.
	run(t, j, cust("c", 1, 7, "Ann"))
	expect(t, "state unchanged by errored messages", run(t, j, acct("c", 1, 1, 1001, 7, "5.00")),
		ca+`{"account_balance":"5.00","account_number":"1001","account_version":1,"customer_id":7,"customer_name":"Ann L","customer_version":1}`)
}

func TestStateSurvivesRestartAndIsLocked(t *testing.T) {
	dir := t.TempDir()
	j := newTestJoin(t, dir)
	run(t, j, acct("c", 1, 1, 1001, 7, "5.00"), txn("c", 2, 50, 3))

	conf, err := joinSpec().ParseYAML(fmt.Sprintf(odsConfig, dir), nil)
	if err != nil {
		t.Fatal(err)
	}
	if second, err := newJoin(conf, service.MockResources()); err == nil {
		_ = second.Close(context.Background())
		t.Fatal("a second cdc_join opened a state_dir in use")
	} else if !strings.Contains(err.Error(), "locked") {
		t.Errorf("second open: %v, want a lock error", err)
	}

	_ = j.Close(context.Background())
	j2 := newTestJoin(t, dir)
	expect(t, "held child survives a restart", run(t, j2, cust("c", 3, 7, "Ann")),
		ca+`{"account_balance":"5.00","account_number":"1001","account_version":1,"customer_id":7,"customer_name":"Ann L","customer_version":3}`)
	expect(t, "held transaction survives a restart", run(t, j2, acct("c", 4, 3, 1003, 7, "0.00")),
		ca+`{"account_balance":"0.00","account_number":"1003","account_version":4,"customer_id":7,"customer_name":"Ann L","customer_version":3}`,
		tx+`{"account_number":"1003","customer_id":7,"source_version":2,"transaction_amount":"12.50","transaction_id":50}`)
}

// A batch whose state was written but whose rows were lost (a crash before
// the output) is delivered again: the second delivery must emit what the
// first did, including the deletes of a change that a later change of the
// same key in the batch has made stale.
func TestLostBatchWithTwoChangesOfOneKey(t *testing.T) {
	j := newTestJoin(t, t.TempDir())
	run(t, j, cust("c", 1, 7, "Ann"), acct("c", 2, 1, 1001, 7, "5.00"))
	batch := func() []*service.Message {
		return []*service.Message{
			acct("u", 10, 1, 1002, 7, "5.00"), // number 1001 → 1002: 1001's row goes
			acct("u", 11, 1, 1002, 7, "7.00"),
		}
	}
	first := run(t, j, batch()...)
	expect(t, "first delivery", first,
		cd+`{"account_number":"1001","account_version":10,"customer_version":0}`,
		ca+`{"account_balance":"5.00","account_number":"1002","account_version":10,"customer_id":7,"customer_name":"Ann L","customer_version":1}`,
		ca+`{"account_balance":"7.00","account_number":"1002","account_version":11,"customer_id":7,"customer_name":"Ann L","customer_version":1}`)
	expect(t, "the same batch again, its outputs lost the first time", run(t, j, batch()...),
		cd+`{"account_number":"1001","account_version":10,"customer_version":0}`,
		ca+`{"account_balance":"7.00","account_number":"1002","account_version":11,"customer_id":7,"customer_name":"Ann L","customer_version":1}`)
	// The number goes back to 1001: the replayed delete of 1001 (version
	// 10) must not take the new 1001 row (version 12), which the ODS
	// guarantees by comparing versions; the join emits it with its own.
	run(t, j, acct("u", 12, 1, 1001, 7, "7.00"))
	expect(t, "an older change's replay re-emits its delete with its old version", run(t, j, batch()[0]),
		cd+`{"account_number":"1001","account_version":10,"customer_version":0}`)
}

// A mapping that fails (phase 3, after the state changes were made in the
// transaction) errors its message and leaves no trace of it in the state:
// the batch is applied again without it.
func TestMappingFailureIsErroredAndChangesNothing(t *testing.T) {
	j := newTestJoin(t, t.TempDir())
	noLastName := ev("T_Customers", "c", 1, `{"id":9,"first_name":"NoLast"}`)
	got := run(t, j,
		cust("c", 2, 7, "Ann"),
		noLastName,                       // stored: it joins nothing yet, so no mapping runs
		acct("c", 3, 1, 1001, 9, "5.00"), // joins customer 9: the mapping fails
		acct("c", 4, 2, 1002, 7, "6.00"),
	)
	expect(t, "only the account whose row cannot be mapped is errored", got,
		`ERROR: cdc_join: mapping of customer_account: failed assignment (line 3): cannot add types string (from string literal) and null (from field `+"`this.parent.last_name`"+`)`,
		ca+`{"account_balance":"6.00","account_number":"1002","account_version":4,"customer_id":7,"customer_name":"Ann L","customer_version":2}`)
	expect(t, "the errored account was not stored: the fixed customer has no child", run(t, j, cust("u", 5, 9, "Fixed")))
}

// A row state that cannot be encoded (a NaN from an Avro double) errors
// its message; the batch's other changes are applied.
func TestUnencodableRowIsErrored(t *testing.T) {
	j := newTestJoin(t, t.TempDir())
	nan := service.NewMessage(nil)
	nan.SetStructuredMut(map[string]any{"id": int64(8), "first_name": "N", "last_name": "L", "score": math.NaN()})
	nan.MetaSetMut("cdc_table", "T_Customers")
	nan.MetaSetMut("cdc_op", "c")
	nan.MetaSetMut("cdc_version", int64(3))
	got := run(t, j, cust("c", 2, 7, "Ann"), nan, acct("c", 4, 1, 1001, 7, "5.00"))
	expect(t, "the NaN customer is errored", got,
		"ERROR: cdc_join: encoding the state of row.customers 8: json: unsupported value: NaN",
		ca+`{"account_balance":"5.00","account_number":"1001","account_version":4,"customer_id":7,"customer_name":"Ann L","customer_version":2}`)
	expect(t, "and not stored", run(t, j, acct("c", 5, 2, 1002, 8, "1.00")))
}

// A message an earlier processor failed passes through untouched.
func TestErroredMessagesPassThrough(t *testing.T) {
	j := newTestJoin(t, t.TempDir())
	failed := cust("c", 1, 7, "Ann")
	failed.SetError(errors.New("decode failed"))
	got := run(t, j, failed, acct("c", 2, 1, 1001, 7, "5.00"))
	expect(t, "the errored customer passes, unapplied: the account is held", got, "ERROR: decode failed")
}

// Config mistakes that would send rows to the dead letters, or apply
// deletes unguarded, are refused at start (so lint finds them): a relation
// name twice, a key_mapping or a version column naming a column its
// mapping does not set, an empty state_dir.
func TestConfigMistakesAreRefused(t *testing.T) {
	for _, tc := range []struct{ name, from, to, want string }{
		{"duplicate relation", "name: t_transaction", "name: customer_account", `duplicate name "customer_account"`},
		{"key_mapping typo", "key_mapping: 'root.transaction_id = this.child.id'", "key_mapping: 'root.transaction_idd = this.child.id'", `key_mapping sets "transaction_idd", which mapping does not set`},
		{"version column typo", "child_version_column: source_version", "child_version_column: source_versio", `child_version_column "source_versio" is not a column mapping sets`},
		{"parent version typo", "parent_version_column: customer_version", "parent_version_column: customer_versionn", `parent_version_column "customer_versionn"`},
		{"empty state_dir", "", "", "state_dir is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			yaml := fmt.Sprintf(odsConfig, t.TempDir())
			if tc.from == "" {
				yaml = fmt.Sprintf(odsConfig, "")
			} else if !strings.Contains(yaml, tc.from) {
				t.Fatalf("the config has no %q", tc.from)
			} else {
				yaml = strings.Replace(yaml, tc.from, tc.to, 1)
			}
			conf, err := joinSpec().ParseYAML(yaml, nil)
			if err != nil {
				t.Fatal(err)
			}
			j, err := newJoin(conf, service.MockResources())
			if err == nil {
				_ = j.Close(context.Background())
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("newJoin: %v, want an error saying %s", err, tc.want)
			}
		})
	}
	// A mapping Bloblang runs whole tells no columns: nothing is refused.
	yaml := strings.Replace(fmt.Sprintf(odsConfig, t.TempDir()), "key_mapping: 'root.transaction_id = this.child.id'", "key_mapping: 'root = {\"transaction_id\": this.child.id}'", 1)
	conf, err := joinSpec().ParseYAML(yaml, nil)
	if err != nil {
		t.Fatal(err)
	}
	j, err := newJoin(conf, service.MockResources())
	if err != nil {
		t.Fatalf("a key_mapping of another shape: %v", err)
	}
	_ = j.Close(context.Background())
}

// A parent's change whose rows cannot be mapped, for each of its three
// children: one dead letter of the source record (its error counting the
// other rows), not one per row; a replay emits them all again.
func TestOneDeadLetterPerSourceOfFailedRows(t *testing.T) {
	j := newTestJoin(t, t.TempDir())
	run(t, j, cust("c", 1, 7, "Ann"), acct("c", 2, 1, 1001, 7, "1.00"), acct("c", 3, 2, 1002, 7, "2.00"), acct("c", 4, 3, 1003, 7, "3.00"))
	got := run(t, j, ev("T_Customers", "u", 5, `{"id":7,"first_name":"NoLast"}`))
	if len(got) != 1 || !strings.HasPrefix(got[0], "ERROR: ") || !strings.Contains(got[0], "(and 2 more of its rows)") {
		t.Fatalf("a parent's change failing for its 3 children: %q, want one errored message counting 2 more rows", got)
	}
}
