package simulate

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/big"

	"github.com/hamba/avro/v2"
)

// SchemaIDs are the registry ids of one topic's key and value schemas.
type SchemaIDs struct {
	Key, Value int
}

// Encoder turns events into Kafka keys and values in the Confluent wire
// format: byte 0x00, the schema id as 4 bytes big-endian, the Avro binary
// encoding. It is deliberately independent of odsflow's decoders (hamba's
// struct encoder over the schema texts), so that tests can check one against
// the other. An Encoder is safe for concurrent use.
type Encoder struct {
	cfg    Config
	tables map[Table]*tableCodec
}

type tableCodec struct {
	keyID, valueID int
	key, value     avro.Schema
	// Each schema gets its own frozen API: hamba caches codecs by schema
	// fingerprint, and the fingerprint (parsing canonical form) ignores
	// logical types such as decimal's scale.
	keyAPI, valueAPI avro.API
}

// NewEncoder builds the codecs of cfg's schemas (ValueSchema, KeySchema),
// labelled with the registry ids of each table.
func NewEncoder(cfg Config, ids map[Table]SchemaIDs) (*Encoder, error) {
	cfg, err := cfg.normalized()
	if err != nil {
		return nil, err
	}
	e := &Encoder{cfg: cfg, tables: map[Table]*tableCodec{}}
	for _, t := range Tables() {
		id, ok := ids[t]
		if !ok {
			return nil, fmt.Errorf("simulate: no schema ids for %s", t)
		}
		for _, n := range []int{id.Key, id.Value} {
			if n < 0 || n > math.MaxInt32 {
				return nil, fmt.Errorf("simulate: schema id %d of %s does not fit the wire format", n, t)
			}
		}
		keyText, valueText, err := schemaTexts(cfg, t)
		if err != nil {
			return nil, err
		}
		c := &tableCodec{keyID: id.Key, valueID: id.Value, keyAPI: avro.Config{}.Freeze(), valueAPI: avro.Config{}.Freeze()}
		if c.key, err = avro.ParseWithCache(keyText, "", &avro.SchemaCache{}); err != nil {
			return nil, fmt.Errorf("simulate: key schema of %s: %w", t, err)
		}
		if c.value, err = avro.ParseWithCache(valueText, "", &avro.SchemaCache{}); err != nil {
			return nil, fmt.Errorf("simulate: value schema of %s: %w", t, err)
		}
		e.tables[t] = c
	}
	return e, nil
}

// Key encodes the event's key, the record {id}.
func (e *Encoder) Key(ev Event) ([]byte, error) {
	c, ok := e.tables[ev.Table]
	if !ok {
		return nil, fmt.Errorf("simulate: unknown table %q", ev.Table)
	}
	return marshal(c.keyAPI, c.key, c.keyID, avroKey{ID: ev.ID})
}

// Value encodes the event's Debezium envelope.
func (e *Encoder) Value(ev Event) ([]byte, error) {
	c, ok := e.tables[ev.Table]
	if !ok {
		return nil, fmt.Errorf("simulate: unknown table %q", ev.Table)
	}
	decimal := e.cfg.Money == MoneyDecimal
	switch {
	case ev.Table == TableCustomers:
		return marshalEnvelope(c, ev, customerRecord)
	case ev.Table == TableAccounts && decimal:
		return marshalEnvelope(c, ev, accountRecord(decimalMoney))
	case ev.Table == TableAccounts:
		return marshalEnvelope(c, ev, accountRecord(intMoney))
	case ev.Table == TableTransactions && decimal:
		return marshalEnvelope(c, ev, transactionRecord(decimalMoney))
	default:
		return marshalEnvelope(c, ev, transactionRecord(intMoney))
	}
}

func marshal(api avro.API, schema avro.Schema, id int, v any) ([]byte, error) {
	body, err := api.Marshal(schema, v)
	if err != nil {
		return nil, fmt.Errorf("simulate: avro encoding: %w", err)
	}
	out := make([]byte, 5, 5+len(body))
	binary.BigEndian.PutUint32(out[1:], uint32(id))
	return append(out, body...), nil
}

func marshalEnvelope[V any](c *tableCodec, ev Event, record func(Row) (*V, error)) ([]byte, error) {
	env := avroEnvelope[V]{
		Op:   ev.Op,
		TsMs: ptr(ev.TsUs / 1000), TsUs: ptr(ev.TsUs), TsNs: ptr(ev.TsUs * 1000),
		Source: avroSource{
			Version: ev.Source.Version, Connector: ev.Source.Connector, Name: ev.Source.Name,
			TsMs: ev.Source.TsMs(), Snapshot: ptr(ev.Source.Snapshot), DB: ev.Source.DB,
			Sequence: ptr(ev.Source.Sequence), TsUs: ptr(ev.Source.TsUs), TsNs: ptr(ev.Source.TsUs * 1000),
			Schema: ev.Source.Schema, Table: ev.Source.Table, TxID: ptr(ev.Source.TxID), LSN: ptr(ev.Source.LSN),
		},
	}
	var err error
	if ev.Before != nil {
		if env.Before, err = record(ev.Before); err != nil {
			return nil, fmt.Errorf("simulate: %s %d before: %w", ev.Table, ev.ID, err)
		}
	}
	if ev.After != nil {
		if env.After, err = record(ev.After); err != nil {
			return nil, fmt.Errorf("simulate: %s %d after: %w", ev.Table, ev.ID, err)
		}
	}
	return marshal(c.valueAPI, c.value, c.valueID, env)
}

// The Avro shapes, field for field the schemas'. Fields a layout lacks
// (ts_us, ts_ns in layout "2") are ignored by the encoder.

type avroKey struct {
	ID int32 `avro:"id"`
}

type avroEnvelope[V any] struct {
	Before      *V         `avro:"before"`
	After       *V         `avro:"after"`
	Source      avroSource `avro:"source"`
	Transaction *avroBlock `avro:"transaction"`
	Op          string     `avro:"op"`
	TsMs        *int64     `avro:"ts_ms"`
	TsUs        *int64     `avro:"ts_us"`
	TsNs        *int64     `avro:"ts_ns"`
}

type avroBlock struct {
	ID                  string `avro:"id"`
	TotalOrder          int64  `avro:"total_order"`
	DataCollectionOrder int64  `avro:"data_collection_order"`
}

type avroSource struct {
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

type avroCustomer struct {
	ID        int32  `avro:"id"`
	FirstName string `avro:"first_name"`
	LastName  string `avro:"last_name"`
	Email     string `avro:"email"`
	Mobile    string `avro:"mobile"`
	CreatedAt *int64 `avro:"created_at"`
	UpdatedAt *int64 `avro:"updated_at"`
}

// money is a money column's Go type: int32 for Avro int, *big.Rat for
// bytes + decimal.
type money interface{ int32 | *big.Rat }

type avroAccount[M money] struct {
	ID             int32  `avro:"id"`
	AccountNumber  int32  `avro:"account_number"`
	AccountStatus  string `avro:"account_status"`
	AccountBalance M      `avro:"account_balance"`
	CustomerID     int32  `avro:"customer_id"`
	CreatedAt      *int64 `avro:"created_at"`
	UpdatedAt      *int64 `avro:"updated_at"`
}

type avroTransaction[M money] struct {
	ID                   int32  `avro:"id"`
	TransactionRefNumber string `avro:"transaction_ref_number"`
	CustomerID           int32  `avro:"customer_id"`
	AccountID            int32  `avro:"account_id"`
	TransactionAmount    M      `avro:"transaction_amount"`
	TransactionType      string `avro:"transaction_type"`
	CreatedAt            int64  `avro:"created_at"`
}

// intMoney is cents as whole units; cents that are not whole units cannot be
// written to an int column.
func intMoney(cents int64) (int32, error) {
	if cents%100 != 0 || cents/100 > math.MaxInt32 || cents/100 < math.MinInt32 {
		return 0, fmt.Errorf("%d hundredths is not an Avro int of whole units", cents)
	}
	return int32(cents / 100), nil
}

// decimalMoney is cents as an exact numeric(20,2).
func decimalMoney(cents int64) (*big.Rat, error) { return big.NewRat(cents, 100), nil }

func customerRecord(r Row) (*avroCustomer, error) {
	c, ok := r.(Customer)
	if !ok {
		return nil, fmt.Errorf("row %T is not a Customer", r)
	}
	return &avroCustomer{
		ID: c.ID, FirstName: c.FirstName, LastName: c.LastName, Email: c.Email, Mobile: c.Mobile,
		CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt,
	}, nil
}

func accountRecord[M money](conv func(int64) (M, error)) func(Row) (*avroAccount[M], error) {
	return func(r Row) (*avroAccount[M], error) {
		a, ok := r.(Account)
		if !ok {
			return nil, fmt.Errorf("row %T is not an Account", r)
		}
		balance, err := conv(a.BalanceCents)
		if err != nil {
			return nil, fmt.Errorf("account_balance: %w", err)
		}
		return &avroAccount[M]{
			ID: a.ID, AccountNumber: a.AccountNumber, AccountStatus: a.AccountStatus, AccountBalance: balance,
			CustomerID: a.CustomerID, CreatedAt: a.CreatedAt, UpdatedAt: a.UpdatedAt,
		}, nil
	}
}

func transactionRecord[M money](conv func(int64) (M, error)) func(Row) (*avroTransaction[M], error) {
	return func(r Row) (*avroTransaction[M], error) {
		t, ok := r.(Transaction)
		if !ok {
			return nil, fmt.Errorf("row %T is not a Transaction", r)
		}
		amount, err := conv(t.AmountCents)
		if err != nil {
			return nil, fmt.Errorf("transaction_amount: %w", err)
		}
		return &avroTransaction[M]{
			ID: t.ID, TransactionRefNumber: t.RefNumber, CustomerID: t.CustomerID, AccountID: t.AccountID,
			TransactionAmount: amount, TransactionType: t.Type, CreatedAt: t.CreatedAt,
		}, nil
	}
}
