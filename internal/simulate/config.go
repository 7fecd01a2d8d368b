package simulate

import (
	"errors"
	"fmt"
	"math"
	"strings"
)

// Table names one of the seed system's three source tables.
type Table string

// The source tables, spelled as in the seed's topics and schemas.
const (
	TableCustomers    Table = "T_Customers"
	TableAccounts     Table = "T_Accounts"
	TableTransactions Table = "T_Transactions"
)

// Tables returns the three source tables in the order a Debezium snapshot
// reads them (alphabetical).
func Tables() []Table {
	return []Table{TableAccounts, TableCustomers, TableTransactions}
}

// Values of Config.Money.
const (
	// MoneyInt encodes money columns as Avro int (whole currency units), as
	// the seed's schemas do.
	MoneyInt = "int"
	// MoneyDecimal encodes money columns as numeric(20,2): Avro bytes with
	// the decimal logical type, as Debezium's default decimal.handling.mode
	// "precise" does.
	MoneyDecimal = "decimal"
)

// Values of Config.DebeziumLayout.
const (
	// LayoutDebezium2 is the envelope of Debezium 2.0–2.5, field for field the
	// seed's: before, after, source, op, ts_ms, transaction.
	LayoutDebezium2 = "2"
	// LayoutDebezium3 is the envelope of Debezium 2.7+/3.x: before, after,
	// source, transaction, op, ts_ms, ts_us, ts_ns, with ts_us and ts_ns in
	// source too.
	LayoutDebezium3 = "3"
)

// DefaultTopicPrefix is the seed's topic prefix (<topic.prefix>.<schema>).
const DefaultTopicPrefix = "fulfillment.transactions_schema"

// Limits that keep every generated id inside Postgres' int (Avro int).
const (
	MaxCustomers = 1_000_000
	MaxEvents    = 1_000_000_000
)

// Config describes one run of simulated CDC traffic. Equal configs give equal
// traffic: everything is derived from Seed.
type Config struct {
	// TopicPrefix is the part of the topic names before the table:
	// topics are <TopicPrefix>.T_Customers, .T_Accounts, .T_Transactions.
	// "" means DefaultTopicPrefix.
	TopicPrefix string
	// Money is MoneyInt or MoneyDecimal; "" means MoneyInt.
	Money string
	// Customers is the number of customers in the initial snapshot (≥ 1).
	Customers int
	// Events is the number of streaming change events after the snapshot
	// (c, u, d; tombstones not counted).
	Events int
	// Rate limits Run to this many change events per second; 0 means as fast
	// as possible.
	Rate float64
	// Seed makes the traffic deterministic.
	Seed int64
	// DebeziumLayout is LayoutDebezium2 or LayoutDebezium3; "" means
	// LayoutDebezium2.
	DebeziumLayout string
	// WallClock stamps each event, as Run produces it, with the current
	// time as its source.ts_ms (and envelope ts_ms), instead of the
	// simulated clock: for measuring freshness (source time to ODS). The
	// expected ODS state does not depend on it.
	WallClock bool
}

// Topic is the Kafka topic of table under c.
func (c Config) Topic(t Table) string {
	return c.prefix() + "." + string(t)
}

func (c Config) prefix() string {
	if c.TopicPrefix == "" {
		return DefaultTopicPrefix
	}
	return c.TopicPrefix
}

// normalized fills in the defaults of the zero values and checks the rest.
func (c Config) normalized() (Config, error) {
	c.TopicPrefix = c.prefix()
	if c.Money == "" {
		c.Money = MoneyInt
	}
	if c.DebeziumLayout == "" {
		c.DebeziumLayout = LayoutDebezium2
	}
	var errs []error
	if err := CheckTopicPrefix(c.TopicPrefix); err != nil {
		errs = append(errs, err)
	}
	if c.Money != MoneyInt && c.Money != MoneyDecimal {
		errs = append(errs, fmt.Errorf("money must be %q or %q, got %q", MoneyInt, MoneyDecimal, c.Money))
	}
	if c.DebeziumLayout != LayoutDebezium2 && c.DebeziumLayout != LayoutDebezium3 {
		errs = append(errs, fmt.Errorf("debezium layout must be %q or %q, got %q", LayoutDebezium2, LayoutDebezium3, c.DebeziumLayout))
	}
	if c.Customers < 1 || c.Customers > MaxCustomers {
		errs = append(errs, fmt.Errorf("customers must be between 1 and %d, got %d", MaxCustomers, c.Customers))
	}
	if c.Events < 0 || c.Events > MaxEvents {
		errs = append(errs, fmt.Errorf("events must be between 0 and %d, got %d", MaxEvents, c.Events))
	}
	if c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0) {
		errs = append(errs, fmt.Errorf("rate must be a finite number ≥ 0 (0: as fast as possible), got %v", c.Rate))
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("simulate: invalid config: %w", err)
	}
	return c, nil
}

// CheckTopicPrefix accepts what Kafka accepts in a topic name, and refuses
// empty dot-separated parts (they would make empty Avro namespace parts).
func CheckTopicPrefix(p string) error {
	if len(p)+len(".")+len(TableTransactions) > 249 {
		return fmt.Errorf("topic prefix %q is too long for a Kafka topic name", p)
	}
	for _, r := range p {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("topic prefix %q: a Kafka topic name holds only letters, digits, '.', '_' and '-'", p)
		}
	}
	for _, part := range strings.Split(p, ".") {
		if part == "" {
			return fmt.Errorf("topic prefix %q has an empty part between dots", p)
		}
	}
	return nil
}

// avroPrefix is the topic prefix as Debezium's schema name adjuster writes it
// into Avro names: every character that Avro does not allow becomes '_'.
func avroPrefix(p string) string {
	parts := strings.Split(p, ".")
	for i, part := range parts {
		b := []byte(part)
		for j, ch := range b {
			ok := ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch == '_' || j > 0 && ch >= '0' && ch <= '9'
			if !ok {
				b[j] = '_'
			}
		}
		parts[i] = string(b)
	}
	return strings.Join(parts, ".")
}

// sourceNames splits the topic prefix into Debezium's topic.prefix (the
// source's "name") and the Postgres schema: "fulfillment.transactions_schema"
// is topic.prefix "fulfillment", schema "transactions_schema". A prefix
// without a dot is a topic.prefix alone, with the schema "public".
func sourceNames(p string) (name, schema string) {
	if i := strings.LastIndexByte(p, '.'); i >= 0 {
		return p[:i], p[i+1:]
	}
	return p, "public"
}
