package simulate

import "time"

// Debezium operation codes used by the simulator.
const (
	OpRead   = "r" // a snapshot row
	OpCreate = "c"
	OpUpdate = "u"
	OpDelete = "d"
)

// Row is the state of one source row: a Customer, an Account or a
// Transaction (values, not pointers).
type Row interface {
	// Table is the source table the row belongs to.
	Table() Table
	// Key is the row's primary key, id.
	Key() int32
}

// Customer is a T_Customers row. Timestamps are Debezium MicroTimestamps:
// microseconds since the epoch of the wall-clock time read as UTC. They are
// nil only in the key-only "before" of a delete.
type Customer struct {
	ID        int32
	FirstName string
	LastName  string
	Email     string
	Mobile    string
	CreatedAt *int64
	UpdatedAt *int64
}

// Account is a T_Accounts row; BalanceCents is the balance in hundredths
// (a whole number of units, i.e. a multiple of 100, with Money "int").
type Account struct {
	ID            int32
	AccountNumber int32
	AccountStatus string
	BalanceCents  int64
	CustomerID    int32
	CreatedAt     *int64
	UpdatedAt     *int64
}

// Transaction is a T_Transactions row; AmountCents is in hundredths like
// Account.BalanceCents. CreatedAt is not nullable in the seed's schema.
type Transaction struct {
	ID          int32
	RefNumber   string
	CustomerID  int32
	AccountID   int32
	AmountCents int64
	Type        string
	CreatedAt   int64
}

// Table implements Row.
func (Customer) Table() Table { return TableCustomers }

// Table implements Row.
func (Account) Table() Table { return TableAccounts }

// Table implements Row.
func (Transaction) Table() Table { return TableTransactions }

// Key implements Row.
func (c Customer) Key() int32 { return c.ID }

// Key implements Row.
func (a Account) Key() int32 { return a.ID }

// Key implements Row.
func (t Transaction) Key() int32 { return t.ID }

// Source is the envelope's source block of a Debezium PostgreSQL change.
type Source struct {
	Version   string // connector version, e.g. "2.5.4.Final"
	Connector string // "postgresql"
	Name      string // Debezium's topic.prefix
	// TsUs is when the change happened in the database, in µs since the
	// epoch: the commit time, or the read time of a snapshot row. The
	// envelope's source.ts_ms is TsUs/1000 (and, with layout "3", ts_us is
	// TsUs and ts_ns TsUs*1000).
	TsUs     int64
	Snapshot string // "false" when streaming; "true", "last", … in a snapshot
	DB       string
	Sequence string // JSON array of [last commit LSN, this LSN] as strings
	Schema   string
	Table    string
	TxID     int64
	LSN      int64 // the change's WAL position: the version of the row state
}

// TsMs is source.ts_ms.
func (s Source) TsMs() int64 { return s.TsUs / 1000 }

// Event is one Debezium change event. Run produces it as one Kafka record,
// followed, for a delete, by a tombstone (same key, nil value).
type Event struct {
	Topic string
	Table Table
	Op    string // OpRead, OpCreate, OpUpdate or OpDelete
	// ID is the primary key: the Kafka key is the Avro record {id: ID}.
	ID int32
	// Before is nil except for deletes, where it holds only the key (other
	// columns at their zero values, nullable ones null), as Debezium writes
	// it under the default REPLICA IDENTITY. Updates carry no before for the
	// same reason.
	Before Row
	// After is the new row state; nil for deletes.
	After  Row
	Source Source
	// TsUs is the envelope's processing time (µs): when the connector
	// handled the change. Never a version: see Source.LSN.
	TsUs int64
}

// micros converts t to a MicroTimestamp.
func micros(t time.Time) int64 { return t.UnixMicro() }

// ptr returns a pointer to a copy of v.
func ptr[T any](v T) *T { return &v }
