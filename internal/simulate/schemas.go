package simulate

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"strings"
)

// seedSchemas holds byte-for-byte copies of the three value schemas that the
// seed system's Debezium 2.x connector registered
// (../shared/fixtures/debezium-seed/).
//
//go:embed schemas/*.avsc
var seedSchemas embed.FS

// seedPrefix is the topic prefix the embedded schemas were registered under.
const seedPrefix = "fulfillment.transactions_schema"

// snapshotAllowed3 is the io.debezium.data.Enum "allowed" list of
// source.snapshot in Debezium 2.7+/3.x (SnapshotRecord's values); the seed's
// 2.x list is "true,last,false,incremental".
const snapshotAllowed3 = "true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"

// moneyColumn is the money column of each table; T_Customers has none.
func moneyColumn(t Table) string {
	switch t {
	case TableAccounts:
		return "account_balance"
	case TableTransactions:
		return "transaction_amount"
	}
	return ""
}

// decimalMoneySchema is numeric(20,2) as Debezium's AvroConverter writes it
// with decimal.handling.mode=precise.
func decimalMoneySchema() map[string]any {
	return map[string]any{
		"type":               "bytes",
		"scale":              json.Number("2"),
		"precision":          json.Number("20"),
		"connect.version":    json.Number("1"),
		"connect.parameters": map[string]any{"scale": "2", "connect.decimal.precision": "20"},
		"connect.name":       "org.apache.kafka.connect.data.Decimal",
		"logicalType":        "decimal",
	}
}

func checkTable(t Table) error {
	switch t {
	case TableCustomers, TableAccounts, TableTransactions:
		return nil
	}
	return fmt.Errorf("simulate: unknown table %q", t)
}

// ValueSchema is the Avro value schema (Debezium envelope) of table under
// cfg, as registered under <topic>-value:
//   - Money "int", layout "2" and the seed's prefix: the seed's schema, byte
//     for byte;
//   - another prefix: the same with the namespaces and connect.names renamed
//     (invalid Avro name characters become '_', as Debezium does);
//   - Money "decimal": the money column becomes bytes + decimal(20,2);
//   - layout "3": the envelope of Debezium 2.7+/3.x (see LayoutDebezium3 and
//     the package documentation).
func ValueSchema(cfg Config, table Table) (string, error) {
	cfg, err := cfg.normalized()
	if err != nil {
		return "", err
	}
	if err := checkTable(table); err != nil {
		return "", err
	}
	raw, err := seedSchemas.ReadFile("schemas/" + seedPrefix + "." + string(table) + "-value.avsc")
	if err != nil {
		return "", fmt.Errorf("simulate: embedded schema of %s: %w", table, err)
	}
	if cfg.TopicPrefix == seedPrefix && cfg.Money == MoneyInt && cfg.DebeziumLayout == LayoutDebezium2 {
		return string(raw), nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		return "", fmt.Errorf("simulate: embedded schema of %s: %w", table, err)
	}
	renameNamespaces(doc, seedPrefix, avroPrefix(cfg.TopicPrefix))
	if cfg.Money == MoneyDecimal && moneyColumn(table) != "" {
		if err := setMoneyDecimal(doc, moneyColumn(table)); err != nil {
			return "", fmt.Errorf("simulate: schema of %s: %w", table, err)
		}
	}
	if cfg.DebeziumLayout == LayoutDebezium3 {
		if err := toDebezium3(doc); err != nil {
			return "", fmt.Errorf("simulate: schema of %s: %w", table, err)
		}
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return "", fmt.Errorf("simulate: schema of %s: %w", table, err)
	}
	return string(out), nil
}

// KeySchema is the Avro key schema of table under cfg, as Debezium's
// AvroConverter registers it under <topic>-key: a record
// <prefix>.<Table>.Key of the primary-key column, typed as in the value.
func KeySchema(cfg Config, table Table) (string, error) {
	cfg, err := cfg.normalized()
	if err != nil {
		return "", err
	}
	if err := checkTable(table); err != nil {
		return "", err
	}
	ns := avroPrefix(cfg.TopicPrefix) + "." + string(table)
	doc := map[string]any{
		"type":         "record",
		"name":         "Key",
		"namespace":    ns,
		"connect.name": ns + ".Key",
		"fields": []any{map[string]any{
			"name":    "id",
			"default": 0,
			"type":    map[string]any{"type": "int", "connect.default": 0},
		}},
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return "", fmt.Errorf("simulate: key schema of %s: %w", table, err)
	}
	return string(out), nil
}

// schemaTexts is KeySchema and ValueSchema of table.
func schemaTexts(cfg Config, table Table) (key, value string, err error) {
	if key, err = KeySchema(cfg, table); err != nil {
		return "", "", err
	}
	if value, err = ValueSchema(cfg, table); err != nil {
		return "", "", err
	}
	return key, value, nil
}

// renameNamespaces rewrites every "namespace" and "connect.name" that lies
// under the seed's prefix to lie under prefix instead.
func renameNamespaces(node any, from, to string) {
	switch n := node.(type) {
	case map[string]any:
		for _, k := range []string{"namespace", "connect.name"} {
			if s, ok := n[k].(string); ok && (s == from || strings.HasPrefix(s, from+".")) {
				n[k] = to + strings.TrimPrefix(s, from)
			}
		}
		for _, v := range n {
			renameNamespaces(v, from, to)
		}
	case []any:
		for _, v := range n {
			renameNamespaces(v, from, to)
		}
	}
}

// fieldsOf returns the "fields" of a record schema node.
func fieldsOf(record map[string]any) ([]any, error) {
	fields, ok := record["fields"].([]any)
	if !ok {
		return nil, fmt.Errorf("record %v has no fields", record["name"])
	}
	return fields, nil
}

func fieldNamed(fields []any, name string) (map[string]any, error) {
	for _, f := range fields {
		if m, ok := f.(map[string]any); ok && m["name"] == name {
			return m, nil
		}
	}
	return nil, fmt.Errorf("no field %q", name)
}

// valueRecord finds the row record (…Value) inside the envelope's "before".
func valueRecord(envelope map[string]any) (map[string]any, error) {
	fields, err := fieldsOf(envelope)
	if err != nil {
		return nil, err
	}
	before, err := fieldNamed(fields, "before")
	if err != nil {
		return nil, err
	}
	union, _ := before["type"].([]any)
	for _, branch := range union {
		if m, ok := branch.(map[string]any); ok && m["type"] == "record" {
			return m, nil
		}
	}
	return nil, fmt.Errorf("field before holds no record")
}

func setMoneyDecimal(envelope map[string]any, column string) error {
	value, err := valueRecord(envelope)
	if err != nil {
		return err
	}
	fields, err := fieldsOf(value)
	if err != nil {
		return err
	}
	f, err := fieldNamed(fields, column)
	if err != nil {
		return err
	}
	f["type"] = decimalMoneySchema()
	return nil
}

func optionalLongField(name string) map[string]any {
	return map[string]any{"name": name, "type": []any{"null", "long"}, "default": nil}
}

// toDebezium3 turns a Debezium 2.0–2.5 envelope into the 2.7+/3.x one:
//   - envelope fields in the order before, after, source, transaction, op,
//     ts_ms, ts_us, ts_ns (ts_us/ts_ns optional longs: ["null","long"],
//     default null), and the envelope's connect.version 2;
//   - source gets ts_us and ts_ns (optional longs) right after sequence, a
//     connect.version 1, and the longer snapshot enum list (first,
//     first_in_data_collection, last_in_data_collection).
func toDebezium3(envelope map[string]any) error {
	fields, err := fieldsOf(envelope)
	if err != nil {
		return err
	}
	byName := map[string]map[string]any{}
	for _, name := range []string{"before", "after", "source", "transaction", "op", "ts_ms"} {
		f, err := fieldNamed(fields, name)
		if err != nil {
			return err
		}
		byName[name] = f
	}
	envelope["fields"] = []any{
		byName["before"], byName["after"], byName["source"], byName["transaction"],
		byName["op"], byName["ts_ms"], optionalLongField("ts_us"), optionalLongField("ts_ns"),
	}
	envelope["connect.version"] = json.Number("2")

	source, ok := byName["source"]["type"].(map[string]any)
	if !ok {
		return fmt.Errorf("field source holds no record")
	}
	source["connect.version"] = json.Number("1")
	sfields, err := fieldsOf(source)
	if err != nil {
		return err
	}
	var out []any
	for _, f := range sfields {
		out = append(out, f)
		if m, _ := f.(map[string]any); m["name"] == "sequence" {
			out = append(out, optionalLongField("ts_us"), optionalLongField("ts_ns"))
		}
	}
	if len(out) != len(sfields)+2 {
		return fmt.Errorf("source has no field sequence")
	}
	source["fields"] = out
	snap, err := fieldNamed(sfields, "snapshot")
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	union, _ := snap["type"].([]any)
	for _, branch := range union {
		if m, ok := branch.(map[string]any); ok {
			if params, ok := m["connect.parameters"].(map[string]any); ok {
				params["allowed"] = snapshotAllowed3
				return nil
			}
		}
	}
	return fmt.Errorf("source.snapshot has no enum parameters")
}
