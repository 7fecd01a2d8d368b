package simulate

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/hamba/avro/v2"
)

// seedFixture reads the seed's schema from the repository's own copy of the
// fixtures (internal/schemaregistry/testdata), independent of our embed.
func seedFixture(t *testing.T, table Table) any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "schemaregistry", "testdata", seedPrefix+"."+string(table)+"-value.avsc"))
	if err != nil {
		t.Fatal(err)
	}
	return jsonValue(t, string(b))
}

func jsonValue(t *testing.T, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, s)
	}
	return v
}

func field(t *testing.T, record any, name string) map[string]any {
	t.Helper()
	for _, f := range record.(map[string]any)["fields"].([]any) {
		if m := f.(map[string]any); m["name"] == name {
			return m
		}
	}
	t.Fatalf("record %v has no field %q", record.(map[string]any)["name"], name)
	return nil
}

func fieldNames(record any) []string {
	var names []string
	for _, f := range record.(map[string]any)["fields"].([]any) {
		names = append(names, f.(map[string]any)["name"].(string))
	}
	return names
}

// valueOf is the row record inside an envelope schema.
func valueOf(t *testing.T, envelope any) map[string]any {
	t.Helper()
	return field(t, envelope, "before")["type"].([]any)[1].(map[string]any)
}

func allConfigs() []Config {
	var out []Config
	for _, money := range []string{MoneyInt, MoneyDecimal} {
		for _, layout := range []string{LayoutDebezium2, LayoutDebezium3} {
			for _, prefix := range []string{"", "my-db.2024"} {
				out = append(out, Config{Customers: 1, Money: money, DebeziumLayout: layout, TopicPrefix: prefix})
			}
		}
	}
	return out
}

func TestSchemasParseAsAvro(t *testing.T) {
	for _, cfg := range allConfigs() {
		for _, table := range Tables() {
			for kind, schema := range map[string]func(Config, Table) (string, error){"value": ValueSchema, "key": KeySchema} {
				text, err := schema(cfg, table)
				if err != nil {
					t.Fatalf("%+v %s %s: %v", cfg, table, kind, err)
				}
				if _, err := avro.ParseWithCache(text, "", &avro.SchemaCache{}); err != nil {
					t.Errorf("%+v %s %s schema does not parse: %v", cfg, table, kind, err)
				}
			}
		}
	}
}

func TestIntLayout2SchemasAreTheSeeds(t *testing.T) {
	for _, table := range Tables() {
		got, err := ValueSchema(Config{Customers: 1}, table)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(jsonValue(t, got), seedFixture(t, table)) {
			t.Errorf("%s: value schema differs from the seed's", table)
		}
	}
}

func TestDecimalSchemasChangeOnlyTheMoneyColumns(t *testing.T) {
	wantMoney := jsonValue(t, `{"type":"bytes","scale":2,"precision":20,"connect.version":1,
		"connect.parameters":{"scale":"2","connect.decimal.precision":"20"},
		"connect.name":"org.apache.kafka.connect.data.Decimal","logicalType":"decimal"}`)
	for _, table := range Tables() {
		text, err := ValueSchema(Config{Customers: 1, Money: MoneyDecimal}, table)
		if err != nil {
			t.Fatal(err)
		}
		got, seed := jsonValue(t, text), seedFixture(t, table)
		if col := moneyColumn(table); col != "" {
			f := field(t, valueOf(t, got), col)
			if !reflect.DeepEqual(f["type"], wantMoney) {
				t.Errorf("%s.%s type = %v, want %v", table, col, f["type"], wantMoney)
			}
			if seedField := field(t, valueOf(t, seed), col); seedField["type"] != "int" {
				t.Fatalf("seed's %s.%s is %v, want int", table, col, seedField["type"])
			}
			f["type"] = "int" // all else must be the seed's
		}
		if !reflect.DeepEqual(got, seed) {
			t.Errorf("%s: decimal schema differs from the seed's beyond the money column", table)
		}
	}
}

func TestLayout3Schemas(t *testing.T) {
	for _, table := range Tables() {
		text, err := ValueSchema(Config{Customers: 1, DebeziumLayout: LayoutDebezium3}, table)
		if err != nil {
			t.Fatal(err)
		}
		got, seed := jsonValue(t, text), seedFixture(t, table)
		if names := strings.Join(fieldNames(got), ","); names != "before,after,source,transaction,op,ts_ms,ts_us,ts_ns" {
			t.Errorf("%s: envelope fields %s", table, names)
		}
		optionalLong := jsonValue(t, `["null","long"]`)
		for _, name := range []string{"ts_us", "ts_ns"} {
			f := field(t, got, name)
			if !reflect.DeepEqual(f["type"], optionalLong) || f["default"] != nil {
				t.Errorf("%s: envelope %s = %v, want optional long", table, name, f)
			}
		}
		if v := got.(map[string]any)["connect.version"]; v != 2.0 {
			t.Errorf("%s: envelope connect.version %v, want 2", table, v)
		}
		source := field(t, got, "source")["type"]
		want := "version,connector,name,ts_ms,snapshot,db,sequence,ts_us,ts_ns,schema,table,txId,lsn,xmin"
		if names := strings.Join(fieldNames(source), ","); names != want {
			t.Errorf("%s: source fields %s, want %s", table, names, want)
		}
		snap := field(t, source, "snapshot")["type"].([]any)[0].(map[string]any)
		if allowed := snap["connect.parameters"].(map[string]any)["allowed"]; allowed != snapshotAllowed3 {
			t.Errorf("%s: snapshot allowed %v", table, allowed)
		}
		// The row itself is untouched.
		if !reflect.DeepEqual(valueOf(t, got), valueOf(t, seed)) {
			t.Errorf("%s: layout 3 changed the row record", table)
		}
		for _, name := range []string{"before", "after", "op", "ts_ms", "transaction"} {
			if !reflect.DeepEqual(field(t, got, name), field(t, seed, name)) {
				t.Errorf("%s: layout 3 changed field %s", table, name)
			}
		}
	}
}

func TestOtherPrefixRenamesNamespaces(t *testing.T) {
	cfg := Config{Customers: 1, TopicPrefix: "my-db.2024"}
	if got := cfg.Topic(TableAccounts); got != "my-db.2024.T_Accounts" {
		t.Errorf("topic %s", got)
	}
	text, err := ValueSchema(cfg, TableAccounts)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(text, "fulfillment") {
		t.Errorf("schema still names the seed's prefix: %s", text)
	}
	got := jsonValue(t, text).(map[string]any)
	if got["namespace"] != "my_db._024.T_Accounts" || got["connect.name"] != "my_db._024.T_Accounts.Envelope" {
		t.Errorf("namespace %v, connect.name %v", got["namespace"], got["connect.name"])
	}
	if v := valueOf(t, got); v["connect.name"] != "my_db._024.T_Accounts.Value" {
		t.Errorf("value connect.name %v", v["connect.name"])
	}
}

func TestKeySchemas(t *testing.T) {
	for _, table := range Tables() {
		text, err := KeySchema(Config{Customers: 1}, table)
		if err != nil {
			t.Fatal(err)
		}
		want := jsonValue(t, `{"type":"record","name":"Key","namespace":"fulfillment.transactions_schema.`+string(table)+`",
			"connect.name":"fulfillment.transactions_schema.`+string(table)+`.Key",
			"fields":[{"name":"id","default":0,"type":{"type":"int","connect.default":0}}]}`)
		if got := jsonValue(t, text); !reflect.DeepEqual(got, want) {
			t.Errorf("%s key schema = %s", table, text)
		}
		// The key's id is typed as the value's id column.
		value, _ := ValueSchema(Config{Customers: 1}, table)
		idField := field(t, valueOf(t, jsonValue(t, value)), "id")
		keyField := field(t, jsonValue(t, text), "id")
		if !reflect.DeepEqual(idField, keyField) {
			t.Errorf("%s: key id %v, value id %v", table, keyField, idField)
		}
	}
	if _, err := KeySchema(Config{Customers: 1}, "T_Nope"); err == nil {
		t.Error("KeySchema of an unknown table: no error")
	}
}

func TestEmbeddedSchemasAreTheFixtures(t *testing.T) {
	for _, table := range Tables() {
		b, err := seedSchemas.ReadFile("schemas/" + seedPrefix + "." + string(table) + "-value.avsc")
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(jsonValue(t, string(b)), seedFixture(t, table)) {
			t.Errorf("%s: embedded copy differs from the fixture", table)
		}
	}
}
