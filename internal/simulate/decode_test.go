package simulate

import (
	"encoding/binary"
	"fmt"
	"math/big"
	"testing"

	"github.com/hamba/avro/v2"
)

// decoded is an envelope decoded generically by hamba from a schema text:
// the view of a consumer that knows nothing of this package's types.
type decoded struct {
	op            string
	before, after map[string]any
	source        map[string]any
	envelope      map[string]any
}

// unwrapUnion returns the branch value of a generically decoded union
// ({"type name": value}) or v itself.
func unwrapUnion(v any) any {
	if m, ok := v.(map[string]any); ok && len(m) == 1 {
		for k, inner := range m {
			switch k {
			case "long", "string", "int", "bytes":
				return inner
			}
			if _, isRecord := inner.(map[string]any); isRecord {
				return inner
			}
		}
	}
	return v
}

// decoder decodes values of one schema text.
type decoder struct {
	schema avro.Schema
	api    avro.API // per schema: see Encoder
}

func newDecoder(schemaText string) (decoder, error) {
	schema, err := avro.ParseWithCache(schemaText, "", &avro.SchemaCache{})
	return decoder{schema, avro.Config{}.Freeze()}, err
}

func (dec decoder) envelope(wire []byte) (decoded, error) {
	if len(wire) < 5 || wire[0] != 0 {
		return decoded{}, fmt.Errorf("not the Confluent wire format: % x", wire[:min(5, len(wire))])
	}
	var m map[string]any
	if err := dec.api.Unmarshal(dec.schema, wire[5:], &m); err != nil {
		return decoded{}, err
	}
	d := decoded{envelope: m}
	d.op, _ = m["op"].(string)
	d.before, _ = unwrapUnion(m["before"]).(map[string]any)
	d.after, _ = unwrapUnion(m["after"]).(map[string]any)
	d.source, _ = m["source"].(map[string]any)
	return d, nil
}

func (d decoded) lsn() int64 {
	v, _ := unwrapUnion(d.source["lsn"]).(int64)
	return v
}

// hundredths reads a money column as hundredths, whatever its Avro type.
func hundredths(v any) (int64, error) {
	switch v := v.(type) {
	case int:
		return int64(v) * 100, nil
	case int32:
		return int64(v) * 100, nil
	case *big.Rat:
		c := new(big.Rat).Mul(v, big.NewRat(100, 1))
		if !c.IsInt() {
			return 0, fmt.Errorf("%s is not a whole number of hundredths", v.RatString())
		}
		return c.Num().Int64(), nil
	}
	return 0, fmt.Errorf("money of type %T", v)
}

func asInt64(v any) int64 {
	switch v := unwrapUnion(v).(type) {
	case int:
		return int64(v)
	case int32:
		return int64(v)
	case int64:
		return v
	}
	return -1
}

func TestEncodedValuesDecodeToTheEvents(t *testing.T) {
	for _, cfg := range allConfigs() {
		cfg.Customers, cfg.Events, cfg.Seed = 5, 300, 4
		enc, err := NewEncoder(cfg, testIDs())
		if err != nil {
			t.Fatal(err)
		}
		decoders := map[Table]decoder{}
		for _, table := range Tables() {
			text, err := ValueSchema(cfg, table)
			if err != nil {
				t.Fatal(err)
			}
			if decoders[table], err = newDecoder(text); err != nil {
				t.Fatal(err)
			}
		}
		for i, ev := range mustPlan(t, cfg) {
			wire, err := enc.Value(ev)
			if err != nil {
				t.Fatal(err)
			}
			if id := binary.BigEndian.Uint32(wire[1:5]); int(id) != testIDs()[ev.Table].Value {
				t.Fatalf("event %d: schema id %d, want %d", i, id, testIDs()[ev.Table].Value)
			}
			d, err := decoders[ev.Table].envelope(wire)
			if err != nil {
				t.Fatalf("%+v event %d: %v", cfg, i, err)
			}
			if d.op != ev.Op || d.lsn() != ev.Source.LSN || unwrapUnion(d.source["snapshot"]) != ev.Source.Snapshot ||
				asInt64(d.source["txId"]) != ev.Source.TxID || d.source["ts_ms"] != ev.Source.TsMs() {
				t.Fatalf("%+v event %d: decoded op %s source %v, want %+v", cfg, i, d.op, d.source, ev)
			}
			if cfg.DebeziumLayout == LayoutDebezium3 && (asInt64(d.envelope["ts_us"]) != ev.TsUs || asInt64(d.source["ts_ns"]) != ev.Source.TsUs*1000) {
				t.Fatalf("event %d: ts_us %v, source ts_ns %v", i, d.envelope["ts_us"], d.source["ts_ns"])
			}
			row := d.after
			if ev.Op == OpDelete {
				row = d.before
				if d.after != nil {
					t.Fatalf("event %d: delete with an after", i)
				}
			}
			if asInt64(row["id"]) != int64(ev.ID) {
				t.Fatalf("event %d: id %v, want %d", i, row["id"], ev.ID)
			}
			switch r := ev.After.(type) {
			case Account:
				if c, err := hundredths(row["account_balance"]); err != nil || c != r.BalanceCents {
					t.Fatalf("event %d: balance %v (%v), want %d hundredths", i, row["account_balance"], err, r.BalanceCents)
				}
			case Transaction:
				if c, err := hundredths(row["transaction_amount"]); err != nil || c != r.AmountCents {
					t.Fatalf("event %d: amount %v (%v), want %d hundredths", i, row["transaction_amount"], err, r.AmountCents)
				}
				if row["created_at"] != r.CreatedAt || row["transaction_type"] != r.Type {
					t.Fatalf("event %d: %v, want %+v", i, row, r)
				}
			case Customer:
				if asInt64(row["updated_at"]) != *r.UpdatedAt || row["email"] != r.Email {
					t.Fatalf("event %d: %v, want %+v", i, row, r)
				}
			}
		}
	}
}

func TestEncodedKeys(t *testing.T) {
	enc, err := NewEncoder(Config{Customers: 1}, testIDs())
	if err != nil {
		t.Fatal(err)
	}
	key, err := enc.Key(Event{Table: TableTransactions, ID: 300})
	if err != nil {
		t.Fatal(err)
	}
	// 0x00, id 5, then Avro int 300 as a zigzag varint: 600 = 0xd8 0x04.
	if want := []byte{0, 0, 0, 0, 5, 0xd8, 0x04}; string(key) != string(want) {
		t.Errorf("key = % x, want % x", key, want)
	}
	if _, err := NewEncoder(Config{Customers: 1}, map[Table]SchemaIDs{TableAccounts: {1, 2}}); err == nil {
		t.Error("NewEncoder without ids for every table: no error")
	}
	if _, err := enc.Value(Event{Table: TableAccounts, Op: OpCreate, ID: 1, After: Account{ID: 1, BalanceCents: 150}}); err == nil {
		t.Error("Money int with 1.50: no error")
	}
	if _, err := enc.Value(Event{Table: TableAccounts, Op: OpCreate, ID: 1, After: Customer{ID: 1}}); err == nil {
		t.Error("a Customer row on T_Accounts: no error")
	}
}
