package avrocodec

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
)

func TestSeedAccountsEnvelopeTranslatedRawUnions(t *testing.T) {
	s, b := sampleEnvelopeBytes(t)
	c := mustCompile(t, s, Options{RawUnions: true, TranslateKafkaConnectTypes: true})
	assertValue(t, mustDecode(t, c, b), map[string]any{
		"before": nil,
		"after": map[string]any{
			"id":              int64(42),
			"account_number":  int64(100042),
			"account_status":  "active",
			"account_balance": int64(250075),
			"customer_id":     int64(7),
			"created_at":      "2024-03-05T10:11:12.123456Z",
			"updated_at":      "2024-03-06T10:11:12Z",
		},
		"source": map[string]any{
			"version":   "2.5.0.Final",
			"connector": "postgresql",
			"name":      "fulfillment",
			"ts_ms":     int64(1709719872345),
			"snapshot":  "false",
			"db":        "bank",
			"sequence":  `["24023928","24023992"]`,
			"schema":    "transactions_schema",
			"table":     "T_Accounts",
			"txId":      int64(780),
			"lsn":       int64(24023992),
			"xmin":      nil,
		},
		"op":          "u",
		"ts_ms":       int64(1709719872567),
		"transaction": nil,
	})
}

func TestSeedAccountsEnvelopeUntranslatedWrappedUnions(t *testing.T) {
	s, b := sampleEnvelopeBytes(t)
	c := mustCompile(t, s, Options{})
	assertValue(t, mustDecode(t, c, b), map[string]any{
		"before": nil,
		"after": map[string]any{
			"fulfillment.transactions_schema.T_Accounts.Value": map[string]any{
				"id":              int64(42),
				"account_number":  int64(100042),
				"account_status":  "active",
				"account_balance": int64(250075),
				"customer_id":     int64(7),
				"created_at":      map[string]any{"long": int64(1709633472123456)},
				"updated_at":      map[string]any{"long": int64(1709719872000000)},
			},
		},
		"source": map[string]any{
			"version":   "2.5.0.Final",
			"connector": "postgresql",
			"name":      "fulfillment",
			"ts_ms":     int64(1709719872345),
			"snapshot":  map[string]any{"string": "false"},
			"db":        "bank",
			"sequence":  map[string]any{"string": `["24023928","24023992"]`},
			"schema":    "transactions_schema",
			"table":     "T_Accounts",
			"txId":      map[string]any{"long": int64(780)},
			"lsn":       map[string]any{"long": int64(24023992)},
			"xmin":      nil,
		},
		"op":          "u",
		"ts_ms":       map[string]any{"long": int64(1709719872567)},
		"transaction": nil,
	})
}

func TestSeedAccountsEnvelopeRawUntranslated(t *testing.T) {
	s, b := sampleEnvelopeBytes(t)
	// PreserveLogicalTypes alone does not translate Debezium's semantic
	// types: MicroTimestamp is a connect.name, not an Avro logical type.
	c := mustCompile(t, s, Options{RawUnions: true, PreserveLogicalTypes: true})
	v := mustDecode(t, c, b).(map[string]any)
	after := v["after"].(map[string]any)
	assertValue(t, after["created_at"], int64(1709633472123456))
	assertValue(t, after["updated_at"], int64(1709719872000000))
}

func TestSeedEnvelopesReencodeToHambaBytes(t *testing.T) {
	s, b := sampleEnvelopeBytes(t)
	for _, opts := range allOptions() {
		c := mustCompile(t, s, opts)
		v := mustDecode(t, c, b)
		if got := mustEncode(t, c, v); !bytes.Equal(got, b) {
			t.Errorf("%+v: re-encoded\n% x\nwant hamba's\n% x", opts, got, b)
		}
	}
}

type customerValue struct {
	ID        int32  `avro:"id"`
	FirstName string `avro:"first_name"`
	LastName  string `avro:"last_name"`
	Email     string `avro:"email"`
	Mobile    string `avro:"mobile"`
	CreatedAt *int64 `avro:"created_at"`
	UpdatedAt *int64 `avro:"updated_at"`
}

type customerEnvelope struct {
	Before      *customerValue `avro:"before"`
	After       *customerValue `avro:"after"`
	Source      dbzSource      `avro:"source"`
	Op          string         `avro:"op"`
	TsMs        *int64         `avro:"ts_ms"`
	Transaction *dbzBlock      `avro:"transaction"`
}

func TestSeedCustomersDeleteEnvelope(t *testing.T) {
	s := loadSchema(t, customersSchemaFile)
	src := sampleAccountEnvelope().Source
	src.Table = "T_Customers"
	src.Snapshot = nil // null is branch 1 of ["string","null"]
	b := hambaMarshal(t, s, customerEnvelope{
		Before: &customerValue{ID: 7, FirstName: "Ada", LastName: "Lovelace", Email: "ada@example.com",
			Mobile: "+44 20 7946 0000", CreatedAt: ptr(int64(sampleCreatedMicros)), UpdatedAt: nil},
		Source:      src,
		Op:          "d",
		TsMs:        ptr(int64(sampleEnvelopeTsMs)),
		Transaction: &dbzBlock{ID: "780:24023992", TotalOrder: 1, DataCollectionOrder: 1},
	})
	c := mustCompile(t, s, Options{RawUnions: true, TranslateKafkaConnectTypes: true})
	v := mustDecode(t, c, b).(map[string]any)
	assertValue(t, v["before"], map[string]any{
		"id": int64(7), "first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com",
		"mobile": "+44 20 7946 0000", "created_at": "2024-03-05T10:11:12.123456Z", "updated_at": nil,
	})
	assertValue(t, v["after"], nil)
	assertValue(t, v["op"], "d")
	assertValue(t, v["source"].(map[string]any)["snapshot"], nil)
	assertValue(t, v["transaction"], map[string]any{
		"id": "780:24023992", "total_order": int64(1), "data_collection_order": int64(1),
	})
}

type transactionValue struct {
	ID                   int32  `avro:"id"`
	TransactionRefNumber string `avro:"transaction_ref_number"`
	CustomerID           int32  `avro:"customer_id"`
	AccountID            int32  `avro:"account_id"`
	TransactionAmount    int32  `avro:"transaction_amount"`
	TransactionType      string `avro:"transaction_type"`
	CreatedAt            int64  `avro:"created_at"`
}

type transactionEnvelope struct {
	Before      *transactionValue `avro:"before"`
	After       *transactionValue `avro:"after"`
	Source      dbzSource         `avro:"source"`
	Op          string            `avro:"op"`
	TsMs        *int64            `avro:"ts_ms"`
	Transaction *dbzBlock         `avro:"transaction"`
}

func TestSeedTransactionsSnapshotEnvelope(t *testing.T) {
	s := loadSchema(t, transactionsSchemaFile)
	src := sampleAccountEnvelope().Source
	src.Table, src.Snapshot, src.LSN, src.TxID = "T_Transactions", ptr("true"), nil, nil
	b := hambaMarshal(t, s, transactionEnvelope{
		After: &transactionValue{ID: 9001, TransactionRefNumber: "TRX-9001", CustomerID: 7, AccountID: 42,
			TransactionAmount: -1999, TransactionType: "DEBIT", CreatedAt: -1},
		Source: src,
		Op:     "r",
	})
	c := mustCompile(t, s, Options{RawUnions: true, TranslateKafkaConnectTypes: true})
	v := mustDecode(t, c, b).(map[string]any)
	assertValue(t, v["after"], map[string]any{
		"id": int64(9001), "transaction_ref_number": "TRX-9001", "customer_id": int64(7), "account_id": int64(42),
		"transaction_amount": int64(-1999), "transaction_type": "DEBIT",
		// One microsecond before the epoch: flooring, not truncation
		// toward zero.
		"created_at": "1969-12-31T23:59:59.999999Z",
	})
	assertValue(t, v["ts_ms"], nil)
	src2 := v["source"].(map[string]any)
	assertValue(t, src2["snapshot"], "true")
	assertValue(t, src2["lsn"], nil)
}

// debezium3Schema is the T_Accounts envelope as Debezium 2.7+/3.x writes it:
// transaction moved before op, ts_us and ts_ns added to the envelope and to
// source.
const debezium3Schema = `{
  "type": "record", "name": "Envelope", "namespace": "fulfillment.transactions_schema.T_Accounts",
  "connect.name": "fulfillment.transactions_schema.T_Accounts.Envelope", "connect.version": 2,
  "fields": [
    {"name": "before", "default": null, "type": ["null", {
      "type": "record", "name": "Value", "connect.name": "fulfillment.transactions_schema.T_Accounts.Value",
      "fields": [
        {"name": "id", "default": 0, "type": {"type": "int", "connect.default": 0}},
        {"name": "account_number", "type": "int"},
        {"name": "account_status", "type": "string"},
        {"name": "account_balance", "type": "int"},
        {"name": "customer_id", "type": "int"},
        {"name": "created_at", "default": 0, "type": [{"type": "long", "connect.default": 0, "connect.name": "io.debezium.time.MicroTimestamp", "connect.version": 1}, "null"]},
        {"name": "updated_at", "default": 0, "type": [{"type": "long", "connect.default": 0, "connect.name": "io.debezium.time.MicroTimestamp", "connect.version": 1}, "null"]}
      ]}]},
    {"name": "after", "default": null, "type": ["null", "Value"]},
    {"name": "source", "type": {
      "type": "record", "name": "Source", "namespace": "io.debezium.connector.postgresql",
      "connect.name": "io.debezium.connector.postgresql.Source",
      "fields": [
        {"name": "version", "type": "string"},
        {"name": "connector", "type": "string"},
        {"name": "name", "type": "string"},
        {"name": "ts_ms", "type": "long"},
        {"name": "snapshot", "default": "false", "type": [{"type": "string", "connect.default": "false", "connect.name": "io.debezium.data.Enum", "connect.parameters": {"allowed": "true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"}, "connect.version": 1}, "null"]},
        {"name": "db", "type": "string"},
        {"name": "sequence", "default": null, "type": ["null", "string"]},
        {"name": "ts_us", "default": null, "type": ["null", "long"]},
        {"name": "ts_ns", "default": null, "type": ["null", "long"]},
        {"name": "schema", "type": "string"},
        {"name": "table", "type": "string"},
        {"name": "txId", "default": null, "type": ["null", "long"]},
        {"name": "lsn", "default": null, "type": ["null", "long"]},
        {"name": "xmin", "default": null, "type": ["null", "long"]}
      ]}},
    {"name": "transaction", "default": null, "type": ["null", {
      "type": "record", "name": "block", "namespace": "event", "connect.name": "event.block", "connect.version": 1,
      "fields": [
        {"name": "id", "type": "string"},
        {"name": "total_order", "type": "long"},
        {"name": "data_collection_order", "type": "long"}
      ]}]},
    {"name": "op", "type": "string"},
    {"name": "ts_ms", "default": null, "type": ["null", "long"]},
    {"name": "ts_us", "default": null, "type": ["null", "long"]},
    {"name": "ts_ns", "default": null, "type": ["null", "long"]}
  ]
}`

type dbz3Source struct {
	Version   string  `avro:"version"`
	Connector string  `avro:"connector"`
	Name      string  `avro:"name"`
	TsMs      int64   `avro:"ts_ms"`
	Snapshot  *string `avro:"snapshot"`
	DB        string  `avro:"db"`
	Sequence  *string `avro:"sequence"`
	TsUs      *int64  `avro:"ts_us"`
	TsNs      *int64  `avro:"ts_ns"`
	Schema    string  `avro:"schema"`
	Table     string  `avro:"table"`
	TxID      *int64  `avro:"txId"`
	LSN       *int64  `avro:"lsn"`
	Xmin      *int64  `avro:"xmin"`
}

type dbz3AccountEnvelope struct {
	Before      *accountValue `avro:"before"`
	After       *accountValue `avro:"after"`
	Source      dbz3Source    `avro:"source"`
	Transaction *dbzBlock     `avro:"transaction"`
	Op          string        `avro:"op"`
	TsMs        *int64        `avro:"ts_ms"`
	TsUs        *int64        `avro:"ts_us"`
	TsNs        *int64        `avro:"ts_ns"`
}

func TestDebezium3EnvelopeFieldOrderDecodesByName(t *testing.T) {
	s := parseSchema(t, debezium3Schema)
	b := hambaMarshal(t, s, dbz3AccountEnvelope{
		Before: &accountValue{ID: 42, AccountNumber: 100042, AccountStatus: "active", AccountBalance: 1000, CustomerID: 7,
			CreatedAt: ptr(int64(sampleCreatedMicros)), UpdatedAt: ptr(int64(sampleCreatedMicros))},
		After: &accountValue{ID: 42, AccountNumber: 100042, AccountStatus: "frozen", AccountBalance: 250075, CustomerID: 7,
			CreatedAt: ptr(int64(sampleCreatedMicros)), UpdatedAt: ptr(int64(sampleUpdatedMicros))},
		Source: dbz3Source{Version: "3.0.7.Final", Connector: "postgresql", Name: "fulfillment",
			TsMs: 1709719872345, TsUs: ptr(int64(1709719872345678)), TsNs: ptr(int64(1709719872345678901)),
			Snapshot: ptr("false"), DB: "bank", Schema: "transactions_schema", Table: "T_Accounts",
			TxID: ptr(int64(780)), LSN: ptr(int64(sampleLSN))},
		Transaction: &dbzBlock{ID: "780:24023992", TotalOrder: 3, DataCollectionOrder: 2},
		Op:          "u",
		TsMs:        ptr(int64(1709719872567)),
		TsUs:        ptr(int64(1709719872567890)),
		TsNs:        ptr(int64(1709719872567890123)),
	})
	c := mustCompile(t, s, Options{RawUnions: true, TranslateKafkaConnectTypes: true})
	v := mustDecode(t, c, b).(map[string]any)
	assertValue(t, v["op"], "u")
	assertValue(t, v["ts_ms"], int64(1709719872567))
	assertValue(t, v["ts_us"], int64(1709719872567890))
	assertValue(t, v["ts_ns"], int64(1709719872567890123))
	assertValue(t, v["transaction"], map[string]any{
		"id": "780:24023992", "total_order": int64(3), "data_collection_order": int64(2),
	})
	assertValue(t, v["before"].(map[string]any)["account_status"], "active")
	assertValue(t, v["after"].(map[string]any)["account_status"], "frozen")
	assertValue(t, v["after"].(map[string]any)["updated_at"], "2024-03-06T10:11:12Z")
	src := v["source"].(map[string]any)
	assertValue(t, src["ts_us"], int64(1709719872345678))
	assertValue(t, src["ts_ns"], int64(1709719872345678901))
	assertValue(t, src["lsn"], int64(sampleLSN))
	assertValue(t, src["table"], "T_Accounts")
	if len(v) != 8 || len(src) != 14 {
		t.Errorf("envelope has %d fields (want 8), source %d (want 14)", len(v), len(src))
	}
}

// accountsV2Schema is the seed T_Accounts schema with a nullable column
// added to Value, as a schema change mid-stream registers it.
func accountsV2Schema(t *testing.T) string {
	t.Helper()
	v1 := loadSchemaText(t, accountsSchemaFile)
	const anchor = `            {
              "default": 0,
              "name": "updated_at",`
	if strings.Count(v1, anchor) != 1 {
		t.Fatal("seed schema layout changed: cannot add the v2 column")
	}
	return strings.Replace(v1, anchor, `            {
              "default": null,
              "name": "nickname",
              "type": ["null", "string"]
            },
`+anchor, 1)
}

type accountValueV2 struct {
	ID             int32   `avro:"id"`
	AccountNumber  int32   `avro:"account_number"`
	AccountStatus  string  `avro:"account_status"`
	AccountBalance int32   `avro:"account_balance"`
	CustomerID     int32   `avro:"customer_id"`
	CreatedAt      *int64  `avro:"created_at"`
	Nickname       *string `avro:"nickname"`
	UpdatedAt      *int64  `avro:"updated_at"`
}

type accountEnvelopeV2 struct {
	Before      *accountValueV2 `avro:"before"`
	After       *accountValueV2 `avro:"after"`
	Source      dbzSource       `avro:"source"`
	Op          string          `avro:"op"`
	TsMs        *int64          `avro:"ts_ms"`
	Transaction *dbzBlock       `avro:"transaction"`
}

func TestSchemaChangeTwoVersionsDecodeTheirOwnBytes(t *testing.T) {
	v1Schema, v1Bytes := sampleEnvelopeBytes(t)
	v2Schema := parseSchema(t, accountsV2Schema(t))
	env := sampleAccountEnvelope()
	a := env.After
	v2Bytes := hambaMarshal(t, v2Schema, accountEnvelopeV2{
		After: &accountValueV2{ID: a.ID, AccountNumber: a.AccountNumber, AccountStatus: a.AccountStatus,
			AccountBalance: a.AccountBalance, CustomerID: a.CustomerID, CreatedAt: a.CreatedAt,
			Nickname: ptr("Main"), UpdatedAt: a.UpdatedAt},
		Source: env.Source, Op: env.Op, TsMs: env.TsMs,
	})
	opts := Options{RawUnions: true, TranslateKafkaConnectTypes: true}
	c1 := mustCompile(t, v1Schema, opts)
	c2 := mustCompile(t, v2Schema, opts)

	wantAfter := func(extra map[string]any) map[string]any {
		m := map[string]any{
			"id": int64(42), "account_number": int64(100042), "account_status": "active",
			"account_balance": int64(250075), "customer_id": int64(7),
			"created_at": "2024-03-05T10:11:12.123456Z", "updated_at": "2024-03-06T10:11:12Z",
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	// Interleaved, as messages of both versions arrive on one topic.
	for range 2 {
		assertValue(t, mustDecode(t, c1, v1Bytes).(map[string]any)["after"], wantAfter(nil))
		v2 := mustDecode(t, c2, v2Bytes).(map[string]any)
		assertValue(t, v2["after"], wantAfter(map[string]any{"nickname": "Main"}))
		assertValue(t, v2["source"].(map[string]any)["lsn"], int64(sampleLSN))
	}
	// Each layout really differs: the other version's codec cannot read
	// these bytes as the same envelope.
	if v, err := c1.Decode(v2Bytes); err == nil && valuesEqual(v, mustDecode(t, c2, v2Bytes)) {
		t.Error("v1 codec decoded v2 bytes to the v2 value")
	}
	// A v2 record without the new column takes its null default on encode.
	v1Value := mustDecode(t, c1, v1Bytes)
	reencoded := mustEncode(t, c2, v1Value)
	got := mustDecode(t, c2, reencoded).(map[string]any)
	assertValue(t, got["after"], wantAfter(map[string]any{"nickname": nil}))
}

func loadSchemaText(t *testing.T, file string) string {
	t.Helper()
	b, err := readTestdata(file)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestConcurrentDecodesAgree decodes many different envelopes from several
// goroutines through one Codec: pooled decoder state (the string intern
// table) must never leak between calls. Run with -race.
func TestConcurrentDecodesAgree(t *testing.T) {
	s, data := variedEnvelopes(t)
	c := mustCompile(t, s, Options{RawUnions: true, TranslateKafkaConnectTypes: true})
	want := make([]any, len(data))
	for i, b := range data {
		want[i] = mustDecode(t, c, b)
	}
	if got := want[5].(map[string]any)["after"].(map[string]any)["account_status"]; got != "closed" {
		t.Fatalf("envelope 5 has status %v, want closed", got)
	}
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range 3 * len(data) {
				i := (k*7 + g*131) % len(data)
				v, err := c.Decode(data[i])
				if err != nil || !valuesEqual(v, want[i]) {
					errs <- fmt.Sprintf("goroutine %d, envelope %d: %v %v", g, i, v, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}
