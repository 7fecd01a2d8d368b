package tests

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	_ "github.com/redpanda-data/benthos/v4/public/components/pure"
	"github.com/redpanda-data/benthos/v4/public/service"

	"github.com/odsflow/odsflow/internal/devstack"
	"github.com/odsflow/odsflow/internal/simulate"
	_ "github.com/odsflow/odsflow/plugins/all"
)

// decodedRow is a row state out of kafka_franz → decode → unwrap.
type decodedRow struct {
	op      string
	version int64
	body    map[string]any
}

// TestSimulateRoundTrip: what `simulate` produces, consumed, decoded and
// unwrapped by our components, agrees with simulate's own model of the ODS
// state — for int and decimal money, Debezium 2.x and 3.x layouts.
func TestSimulateRoundTrip(t *testing.T) {
	for _, cfg := range []simulate.Config{
		{Customers: 15, Events: 250, Seed: 11, Money: "decimal", DebeziumLayout: "3"},
		{Customers: 15, Events: 250, Seed: 12, Money: "int", DebeziumLayout: "2"},
	} {
		t.Run(cfg.Money+"/debezium"+cfg.DebeziumLayout, func(t *testing.T) {
			s := devstack.ForTest(t, devstack.Config{NoPostgres: true})
			cfg.TopicPrefix = "rt.transactions_schema"
			events, err := simulate.Plan(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			if _, err := simulate.Run(ctx, cfg, s.Brokers, s.RegistryURL); err != nil {
				t.Fatalf("simulate: %v", err)
			}
			final := consumeRows(ctx, t, s, cfg, len(events))
			checkAgainstModel(t, simulate.Expect(events, simulate.DefaultSpendingTypes()), final, cfg.Money)
		})
	}
}

// consumeRows runs the pipeline's first stages and returns the latest state
// of every source row by table and id (deleted rows absent).
func consumeRows(ctx context.Context, t *testing.T, s *devstack.Stack, cfg simulate.Config, want int) map[string]map[int64]decodedRow {
	t.Helper()
	b := service.NewStreamBuilder()
	if err := b.SetYAML(fmt.Sprintf(`
input:
  kafka_franz:
    seed_brokers: [ %q ]
    topics: [ %s, %s, %s ]
    consumer_group: roundtrip
    batching: { count: 100, period: 10ms }
pipeline:
  processors:
    - schema_registry_decode:
        url: %s
        avro: { raw_unions: true, preserve_logical_types: true, translate_kafka_connect_types: true }
    - debezium_unwrap: {}
output:
  drop: {}
logger: { level: warn }
`, s.Brokers, cfg.Topic(simulate.TableCustomers), cfg.Topic(simulate.TableAccounts), cfg.Topic(simulate.TableTransactions), s.RegistryURL)); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	final := map[string]map[int64]decodedRow{}
	got := 0
	done := make(chan struct{})
	if err := b.AddConsumerFunc(func(_ context.Context, m *service.Message) error {
		if err := m.GetError(); err != nil {
			t.Errorf("message errored in the pipeline: %v", err)
			return nil
		}
		table, _ := m.MetaGetMut("cdc_table")
		op, _ := m.MetaGetMut("cdc_op")
		version, _ := m.MetaGetMut("cdc_version")
		body, err := m.AsStructured()
		if err != nil {
			t.Errorf("unwrapped body: %v", err)
			return nil
		}
		row := decodedRow{op: op.(string), version: version.(int64), body: body.(map[string]any)}
		id := row.body["id"].(int64)
		mu.Lock()
		defer mu.Unlock()
		if final[table.(string)] == nil {
			final[table.(string)] = map[int64]decodedRow{}
		}
		if prev, ok := final[table.(string)][id]; !ok || row.version >= prev.version {
			final[table.(string)][id] = row
		}
		if got++; got == want {
			close(done)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	stream, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = stream.Run(ctx) }()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatalf("consumed %d of %d events", got, want)
	}
	stopCtx, stop := context.WithTimeout(context.Background(), 20*time.Second)
	defer stop()
	_ = stream.Stop(stopCtx)
	for _, rows := range final {
		for id, r := range rows {
			if r.op == "d" {
				delete(rows, id)
			}
		}
	}
	return final
}

// money renders a decoded money column as the model does.
func money(v any, mode string) string {
	if mode == "int" {
		return fmt.Sprintf("%d.00", v.(int64))
	}
	return v.(string)
}

func checkAgainstModel(t *testing.T, want simulate.ODSState, final map[string]map[int64]decodedRow, mode string) {
	t.Helper()
	customers, accounts, txs := final["T_Customers"], final["T_Accounts"], final["T_Transactions"]
	byNumber := map[string]decodedRow{}
	for _, a := range accounts {
		byNumber[fmt.Sprint(a.body["account_number"])] = a
	}
	joined := 0
	for _, a := range accounts {
		if _, ok := customers[a.body["customer_id"].(int64)]; ok {
			joined++
		}
	}
	if joined != len(want.CustomerAccount) {
		t.Errorf("decoded rows join into %d customer_account rows, the model has %d", joined, len(want.CustomerAccount))
	}
	for _, w := range want.CustomerAccount {
		a, ok := byNumber[w.AccountNumber]
		if !ok {
			t.Errorf("account %s: not in the decoded stream", w.AccountNumber)
			continue
		}
		c := customers[a.body["customer_id"].(int64)]
		got := fmt.Sprint(a.body["id"], a.body["account_status"], money(a.body["account_balance"], mode), a.body["customer_id"], a.version,
			c.body["first_name"].(string)+" "+c.body["last_name"].(string), c.body["email"], c.body["mobile"], c.version)
		exp := fmt.Sprint(w.AccountID, w.AccountStatus, w.AccountBalance, w.CustomerID, w.AccountVersion,
			w.CustomerName, w.Email, w.Mobile, w.CustomerVersion)
		if got != exp {
			t.Errorf("account %s: decoded %s, model %s", w.AccountNumber, got, exp)
		}
	}
	if len(want.TTransaction) == 0 {
		t.Fatal("the model has no transactions: the test would prove nothing")
	}
	for _, w := range want.TTransaction {
		x, ok := txs[int64(w.TransactionID)]
		if !ok {
			t.Errorf("transaction %d: not in the decoded stream", w.TransactionID)
			continue
		}
		a := accounts[x.body["account_id"].(int64)]
		got := fmt.Sprint(x.body["transaction_ref_number"], money(x.body["transaction_amount"], mode), x.body["transaction_type"],
			a.body["account_number"], x.body["created_at"], x.version)
		exp := fmt.Sprint(w.TransactionRefNumber, w.TransactionAmount, w.TransactionType, w.AccountNumber, trimZeros(w.TransactionDate), w.SourceVersion)
		if got != exp {
			t.Errorf("transaction %d: decoded %s, model %s", w.TransactionID, got, exp)
		}
	}
}

// trimZeros turns the model's fixed microsecond timestamps into RFC 3339
// with trailing fractional zeros dropped, as the decoder writes them.
func trimZeros(ts string) string {
	tm, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return ts
	}
	return tm.UTC().Format(time.RFC3339Nano)
}
