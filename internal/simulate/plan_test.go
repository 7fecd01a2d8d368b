package simulate

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// testIDs are registry ids for encoding without a registry.
func testIDs() map[Table]SchemaIDs {
	return map[Table]SchemaIDs{TableAccounts: {1, 2}, TableCustomers: {3, 4}, TableTransactions: {5, 6}}
}

// encodeAll encodes every event's key and value, in order.
func encodeAll(t *testing.T, cfg Config, events []Event) [][]byte {
	t.Helper()
	enc, err := NewEncoder(cfg, testIDs())
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, ev := range events {
		k, err := enc.Key(ev)
		if err != nil {
			t.Fatalf("key of %+v: %v", ev, err)
		}
		v, err := enc.Value(ev)
		if err != nil {
			t.Fatalf("value of %+v: %v", ev, err)
		}
		out = append(out, k, v)
	}
	return out
}

func mustPlan(t *testing.T, cfg Config) []Event {
	t.Helper()
	events, err := Plan(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return events
}

func TestPlanIsDeterministic(t *testing.T) {
	for _, cfg := range []Config{
		{Customers: 10, Events: 300, Seed: 1},
		{Customers: 10, Events: 300, Seed: 1, Money: MoneyDecimal, DebeziumLayout: LayoutDebezium3, TopicPrefix: "other-db.sales"},
	} {
		a, b := mustPlan(t, cfg), mustPlan(t, cfg)
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("%+v: two plans differ", cfg)
		}
		ea, eb := encodeAll(t, cfg, a), encodeAll(t, cfg, b)
		if !reflect.DeepEqual(ea, eb) {
			t.Fatalf("%+v: the same events encode differently", cfg)
		}

		other := cfg
		other.Seed = 2
		c := mustPlan(t, other)
		if reflect.DeepEqual(a, c) {
			t.Errorf("%+v: seeds 1 and 2 give the same events", cfg)
		}
		ec := encodeAll(t, other, c)
		same := len(ea) == len(ec)
		for i := 0; same && i < len(ea); i++ {
			same = bytes.Equal(ea[i], ec[i])
		}
		if same {
			t.Errorf("%+v: seeds 1 and 2 give the same bytes", cfg)
		}
	}
}

func TestEventsStopsWhenAsked(t *testing.T) {
	seq, err := Events(Config{Customers: 5, Events: 100, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for range seq {
		n++
		if n == 7 {
			break
		}
	}
	if n != 7 {
		t.Fatalf("consumed %d events, want 7", n)
	}
}

// TestPlanTrafficFollowsTheRules replays the history and checks what the
// package documentation promises.
func TestPlanTrafficFollowsTheRules(t *testing.T) {
	for _, cfg := range []Config{
		{Customers: 30, Events: 3000, Seed: 42},
		{Customers: 3, Events: 2000, Seed: 7, Money: MoneyDecimal, DebeziumLayout: LayoutDebezium3},
		{Customers: 1, Events: 50, Seed: 1},
	} {
		t.Run(fmt.Sprintf("%d customers %d events %s", cfg.Customers, cfg.Events, cfg.Money), func(t *testing.T) { checkTraffic(t, cfg, mustPlan(t, cfg)) })
	}
}

func checkTraffic(t *testing.T, cfg Config, events []Event) {
	t.Helper()
	cfg, _ = cfg.normalized()
	nSnap := 0
	for nSnap < len(events) && events[nSnap].Op == OpRead {
		nSnap++
	}
	snap, stream := events[:nSnap], events[nSnap:]
	if len(stream) != cfg.Events {
		t.Fatalf("%d streaming events, want %d", len(stream), cfg.Events)
	}

	// Snapshot: one LSN and txId, Debezium's markers.
	snapLSN := snap[0].Source.LSN
	for i, ev := range snap {
		if ev.Source.LSN != snapLSN || ev.Source.TxID != snap[0].Source.TxID {
			t.Fatalf("snapshot row %d has lsn %d txId %d, want %d %d", i, ev.Source.LSN, ev.Source.TxID, snapLSN, snap[0].Source.TxID)
		}
		want := "true"
		switch {
		case i == len(snap)-1:
			want = "last"
		case cfg.DebeziumLayout == LayoutDebezium3 && i == 0:
			want = "first"
		case cfg.DebeziumLayout == LayoutDebezium3 && snap[i+1].Table != ev.Table:
			want = "last_in_data_collection"
		case cfg.DebeziumLayout == LayoutDebezium3 && snap[i-1].Table != ev.Table:
			want = "first_in_data_collection"
		}
		if ev.Source.Snapshot != want {
			t.Errorf("snapshot row %d (%s) marked %q, want %q", i, ev.Table, ev.Source.Snapshot, want)
		}
	}
	customersInSnapshot := 0
	for _, ev := range snap {
		if ev.Table == TableCustomers {
			customersInSnapshot++
		}
	}
	if customersInSnapshot != cfg.Customers {
		t.Errorf("snapshot has %d customers, want %d", customersInSnapshot, cfg.Customers)
	}

	// Streaming: strictly increasing LSNs above the snapshot's.
	prev := snapLSN
	for i, ev := range stream {
		if ev.Source.LSN <= prev || ev.Source.Snapshot != "false" {
			t.Fatalf("streaming event %d: lsn %d after %d, snapshot %q", i, ev.Source.LSN, prev, ev.Source.Snapshot)
		}
		prev = ev.Source.LSN
	}

	// Replay the history and check the rules.
	customerOf := map[int32]int32{}  // live accounts → customer
	liveCustomer := map[int32]bool{} // live customers
	deleted := map[Table]map[int32]bool{TableCustomers: {}, TableAccounts: {}, TableTransactions: {}}
	inserted := map[int32]int{} // account → index of its insert/snapshot row
	firstTxn := map[int32]int{} // account → index of its first transaction
	hasTxns := map[int32]bool{} // accounts with transactions, over the whole history
	for _, ev := range events {
		if tr, ok := ev.After.(Transaction); ok {
			hasTxns[tr.AccountID] = true
		}
	}
	ops := map[string]bool{}
	moves, early := 0, 0
	months := map[int64]bool{}
	var upper, mixed, negative bool
	for i, ev := range events {
		ops[string(ev.Table)+":"+ev.Op] = true
		if deleted[ev.Table][ev.ID] {
			t.Fatalf("event %d: %s %d changes after its delete", i, ev.Table, ev.ID)
		}
		if ev.Op == OpDelete {
			if ev.After != nil || ev.Before == nil || ev.Before.Key() != ev.ID {
				t.Fatalf("event %d: delete without a key-only before: %+v", i, ev)
			}
			if zero := reflect.New(reflect.TypeOf(ev.Before)).Elem(); reflect.DeepEqual(ev.Before, zero.Interface()) || !keyOnly(ev.Before) {
				t.Fatalf("event %d: delete's before %+v holds more than the key", i, ev.Before)
			}
			deleted[ev.Table][ev.ID] = true
		} else if ev.Before != nil || ev.After == nil || ev.After.Key() != ev.ID {
			t.Fatalf("event %d: %s without after (or with before): %+v", i, ev.Op, ev)
		}
		switch ev.Table {
		case TableCustomers:
			if ev.Op == OpDelete {
				for acc, c := range customerOf {
					if c == ev.ID {
						t.Fatalf("event %d: customer %d deleted while account %d is still its", i, ev.ID, acc)
					}
				}
				delete(liveCustomer, ev.ID)
			} else {
				liveCustomer[ev.ID] = true
			}
		case TableAccounts:
			if ev.Op == OpDelete {
				if hasTxns[ev.ID] {
					t.Fatalf("event %d: account %d has transactions and is deleted", i, ev.ID)
				}
				delete(customerOf, ev.ID)
				continue
			}
			a := ev.After.(Account)
			if old, ok := customerOf[ev.ID]; ok && old != a.CustomerID {
				moves++
				if hasTxns[ev.ID] {
					t.Fatalf("event %d: account %d has transactions and moves", i, ev.ID)
				}
			}
			if _, ok := inserted[ev.ID]; !ok {
				inserted[ev.ID] = i
				if j, ok := firstTxn[ev.ID]; ok && j < i && ev.Op == OpCreate {
					early++
				}
			}
			customerOf[ev.ID] = a.CustomerID
			checkMoney(t, cfg, a.BalanceCents)
		case TableTransactions:
			if ev.Op == OpDelete {
				continue
			}
			tr := ev.After.(Transaction)
			if _, ok := firstTxn[tr.AccountID]; !ok {
				firstTxn[tr.AccountID] = i
			}
			if ev.Op == OpCreate && tr.AmountCents == 0 {
				t.Fatalf("event %d: transaction of amount 0", i)
			}
			checkMoney(t, cfg, tr.AmountCents)
			months[monthOf(tr.CreatedAt)] = true
			upper = upper || tr.Type == strings.ToUpper(tr.Type)
			mixed = mixed || tr.Type != strings.ToUpper(tr.Type) && tr.Type != strings.ToLower(tr.Type)
			negative = negative || tr.AmountCents < 0
		}
	}
	// Every account with transactions arrives, sooner or later.
	for acc := range firstTxn {
		if _, ok := inserted[acc]; !ok {
			t.Errorf("account %d has transactions but is never inserted", acc)
		}
	}
	if cfg.Events < 1000 {
		return
	}
	for _, op := range []string{"T_Customers:r", "T_Customers:c", "T_Customers:u", "T_Customers:d",
		"T_Accounts:r", "T_Accounts:c", "T_Accounts:u", "T_Accounts:d",
		"T_Transactions:r", "T_Transactions:c", "T_Transactions:d"} {
		if !ops[op] {
			t.Errorf("no %s event", op)
		}
	}
	if moves == 0 || early == 0 {
		t.Errorf("%d account moves, %d accounts whose transactions come first; want some of both", moves, early)
	}
	if len(months) < 13 {
		t.Errorf("transactions dated in %d distinct months, want ≥ 13", len(months))
	}
	if !upper || !mixed || !negative {
		t.Errorf("upper-case types %v, mixed-case types %v, negative amounts %v: want all", upper, mixed, negative)
	}
}

func keyOnly(r Row) bool {
	switch r := r.(type) {
	case Customer:
		return r == Customer{ID: r.ID}
	case Account:
		return r == Account{ID: r.ID}
	case Transaction:
		return r == Transaction{ID: r.ID}
	}
	return false
}

func checkMoney(t *testing.T, cfg Config, cents int64) {
	t.Helper()
	if cfg.Money == MoneyInt && cents%100 != 0 {
		t.Fatalf("money %d hundredths with Money int: not whole units", cents)
	}
}

func TestPlanUsesDecimalCents(t *testing.T) {
	fractional := false
	for _, ev := range mustPlan(t, Config{Customers: 5, Events: 100, Seed: 5, Money: MoneyDecimal}) {
		if tr, ok := ev.After.(Transaction); ok && tr.AmountCents%100 != 0 {
			fractional = true
		}
	}
	if !fractional {
		t.Error("Money decimal: no amount with cents")
	}
}

func TestPlanTimestamps(t *testing.T) {
	events := mustPlan(t, Config{Customers: 5, Events: 200, Seed: 9})
	start := snapshotTime()
	for _, ev := range events {
		src := time.UnixMicro(ev.Source.TsUs)
		if src.Before(start) || src.After(start.Add(24*time.Hour)) {
			t.Fatalf("source ts %v outside the simulated day after %v", src, start)
		}
		if ev.TsUs <= ev.Source.TsUs {
			t.Fatalf("envelope ts_ms %d not after source ts %d", ev.TsUs, ev.Source.TsUs)
		}
		if c, ok := ev.After.(Customer); ok && ev.Op == OpUpdate && *c.UpdatedAt != ev.Source.TsUs {
			t.Fatalf("customer update's updated_at %d is not its commit time %d", *c.UpdatedAt, ev.Source.TsUs)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Customers: 1, Money: "float"}, `money must be "int" or "decimal", got "float"`},
		{Config{Customers: 1, DebeziumLayout: "1"}, `debezium layout must be "2" or "3"`},
		{Config{}, "customers must be between 1"},
		{Config{Customers: 1, Events: -1}, "events must be between 0"},
		{Config{Customers: 1, Rate: -2}, "rate must be"},
		{Config{Customers: 1, TopicPrefix: "a b"}, "topic prefix"},
		{Config{Customers: 1, TopicPrefix: "a..b"}, "empty part"},
	} {
		_, err := Plan(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Plan(%+v) error %v, want one containing %q", tc.cfg, err, tc.want)
		}
	}
}
