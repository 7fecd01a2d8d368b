// Package debeziumtest holds the seed's T_Accounts Debezium envelope as Go
// structs, for tests that need bytes from an encoder independent of ours:
// hamba/avro encodes them by their avro tags.
package debeziumtest

// AccountValue is the T_Accounts row (the envelope's Value record).
type AccountValue struct {
	ID             int32  `avro:"id"`
	AccountNumber  int32  `avro:"account_number"`
	AccountStatus  string `avro:"account_status"`
	AccountBalance int32  `avro:"account_balance"`
	CustomerID     int32  `avro:"customer_id"`
	CreatedAt      *int64 `avro:"created_at"`
	UpdatedAt      *int64 `avro:"updated_at"`
}

// Source is Debezium's PostgreSQL source block (2.x layout).
type Source struct {
	Version   string  `avro:"version"`
	Connector string  `avro:"connector"`
	Name      string  `avro:"name"`
	TsMs      int64   `avro:"ts_ms"`
	Snapshot  *string `avro:"snapshot"`
	DB        string  `avro:"db"`
	Sequence  *string `avro:"sequence"`
	Schema    string  `avro:"schema"`
	Table     string  `avro:"table"`
	TxID      *int64  `avro:"txId"`
	LSN       *int64  `avro:"lsn"`
	Xmin      *int64  `avro:"xmin"`
}

// Block is the envelope's transaction block.
type Block struct {
	ID                  string `avro:"id"`
	TotalOrder          int64  `avro:"total_order"`
	DataCollectionOrder int64  `avro:"data_collection_order"`
}

// AccountEnvelope is the T_Accounts envelope (2.x field order).
type AccountEnvelope struct {
	Before      *AccountValue `avro:"before"`
	After       *AccountValue `avro:"after"`
	Source      Source        `avro:"source"`
	Op          string        `avro:"op"`
	TsMs        *int64        `avro:"ts_ms"`
	Transaction *Block        `avro:"transaction"`
}

// Ptr returns a pointer to v, for the nullable fields.
func Ptr[T any](v T) *T { return &v }
