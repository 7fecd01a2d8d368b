package avrocodec

import (
	"bytes"
	"fmt"
	"github.com/odsflow/odsflow/internal/debeziumtest"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/hamba/avro/v2"
)

const (
	accountsSchemaFile     = "fulfillment.transactions_schema.T_Accounts-value.avsc"
	customersSchemaFile    = "fulfillment.transactions_schema.T_Customers-value.avsc"
	transactionsSchemaFile = "fulfillment.transactions_schema.T_Transactions-value.avsc"
)

// parseSchema parses text into its own cache, as the schema registry decoder
// does, so that tests never share named types through hamba's global cache.
func parseSchema(tb testing.TB, text string) avro.Schema {
	tb.Helper()
	s, err := avro.ParseWithCache(text, "", &avro.SchemaCache{})
	if err != nil {
		tb.Fatalf("parse schema: %v\n%s", err, text)
	}
	return s
}

func readTestdata(file string) ([]byte, error) {
	return os.ReadFile(filepath.Join("testdata", file))
}

// allOptions lists every combination of the options.
func allOptions() []Options {
	var out []Options
	for i := range 8 {
		out = append(out, Options{RawUnions: i&1 != 0, PreserveLogicalTypes: i&2 != 0, TranslateKafkaConnectTypes: i&4 != 0})
	}
	return out
}

func loadSchema(tb testing.TB, file string) avro.Schema {
	tb.Helper()
	text, err := readTestdata(file)
	if err != nil {
		tb.Fatal(err)
	}
	return parseSchema(tb, string(text))
}

func mustCompile(tb testing.TB, s avro.Schema, opts Options) *Codec {
	tb.Helper()
	c, err := Compile(s, opts)
	if err != nil {
		tb.Fatalf("compile: %v", err)
	}
	return c
}

// hambaMarshal encodes with hamba/avro, the independent encoder the tests
// check decoding against. A frozen config per call keeps hamba's codec
// cache, which is keyed by schema fingerprint, from leaking between schemas.
func hambaMarshal(tb testing.TB, s avro.Schema, v any) []byte {
	tb.Helper()
	b, err := avro.Config{}.Freeze().Marshal(s, v)
	if err != nil {
		tb.Fatalf("hamba marshal: %v", err)
	}
	return b
}

func mustDecode(tb testing.TB, c *Codec, b []byte) any {
	tb.Helper()
	v, err := c.Decode(b)
	if err != nil {
		tb.Fatalf("decode % x: %v", b, err)
	}
	return v
}

func mustEncode(tb testing.TB, c *Codec, v any) []byte {
	tb.Helper()
	b, err := c.AppendEncode(nil, v)
	if err != nil {
		tb.Fatalf("encode %#v: %v", v, err)
	}
	return b
}

// assertValue compares decoded values exactly (types included), reporting
// every differing path.
func assertValue(tb testing.TB, got, want any) {
	tb.Helper()
	var diffs []string
	diffValues("", got, want, &diffs)
	if len(diffs) > 0 {
		tb.Errorf("decoded value differs:\n  %s", strings.Join(diffs, "\n  "))
	}
}

func diffValues(path string, got, want any, diffs *[]string) {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			*diffs = append(*diffs, fmt.Sprintf("%s: got %T %#v, want a map", path, got, got))
			return
		}
		keys := make([]string, 0, len(w)+len(g))
		for k := range w {
			keys = append(keys, k)
		}
		for k := range g {
			if _, ok := w[k]; !ok {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		for _, k := range keys {
			gv, gok := g[k]
			wv, wok := w[k]
			switch {
			case !gok:
				*diffs = append(*diffs, fmt.Sprintf("%s.%s: missing, want %#v", path, k, wv))
			case !wok:
				*diffs = append(*diffs, fmt.Sprintf("%s.%s: unexpected %#v", path, k, gv))
			default:
				diffValues(path+"."+k, gv, wv, diffs)
			}
		}
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			*diffs = append(*diffs, fmt.Sprintf("%s: got %T %#v, want %#v", path, got, got, want))
			return
		}
		for i := range w {
			diffValues(fmt.Sprintf("%s[%d]", path, i), g[i], w[i], diffs)
		}
	case float64:
		g, ok := got.(float64)
		if !ok || !(g == w || math.IsNaN(g) && math.IsNaN(w)) || math.Signbit(g) != math.Signbit(w) {
			*diffs = append(*diffs, fmt.Sprintf("%s: got %T %#v, want float64 %#v", path, got, got, want))
		}
	case []byte:
		g, ok := got.([]byte)
		if !ok || !bytes.Equal(g, w) || g == nil {
			*diffs = append(*diffs, fmt.Sprintf("%s: got %T %#v, want []byte %#v", path, got, got, want))
		}
	default:
		if !reflect.DeepEqual(got, want) {
			*diffs = append(*diffs, fmt.Sprintf("%s: got %T %#v, want %T %#v", path, got, got, want, want))
		}
	}
}

// valuesEqual is assertValue's comparison as a predicate.
func valuesEqual(got, want any) bool {
	var diffs []string
	diffValues("", got, want, &diffs)
	return len(diffs) == 0
}

func ptr[T any](v T) *T { return &v }

// The seed envelopes as Go structs, for hamba to encode.
type (
	accountValue    = debeziumtest.AccountValue
	dbzSource       = debeziumtest.Source
	dbzBlock        = debeziumtest.Block
	accountEnvelope = debeziumtest.AccountEnvelope
)

// Times of the sample envelope, computed by hand:
// 2024-03-05 is day 19787 since 1970-01-01 (54 years of 365 days, 13 leap
// days from 1972 to 2020, then 31 + 29 + 4 days of 2024), 19787 × 86400 =
// 1,709,596,800 s, plus 10:11:12 (36,672 s) = 1,709,633,472 s.
const (
	sampleCreatedMicros = 1709633472123456 // 2024-03-05T10:11:12.123456Z
	sampleUpdatedMicros = 1709719872000000 // 2024-03-06T10:11:12Z (one day later)
	sampleSourceTsMs    = 1709719872345    // 2024-03-06T10:11:12.345Z
	sampleEnvelopeTsMs  = 1709719872567
	sampleLSN           = 24023992
)

func sampleAccountEnvelope() accountEnvelope {
	return accountEnvelope{
		After: &accountValue{
			ID:             42,
			AccountNumber:  100042,
			AccountStatus:  "active",
			AccountBalance: 250075,
			CustomerID:     7,
			CreatedAt:      ptr(int64(sampleCreatedMicros)),
			UpdatedAt:      ptr(int64(sampleUpdatedMicros)),
		},
		Source: dbzSource{
			Version:   "2.5.0.Final",
			Connector: "postgresql",
			Name:      "fulfillment",
			TsMs:      sampleSourceTsMs,
			Snapshot:  ptr("false"),
			DB:        "bank",
			Sequence:  ptr(`["24023928","24023992"]`),
			Schema:    "transactions_schema",
			Table:     "T_Accounts",
			TxID:      ptr(int64(780)),
			LSN:       ptr(int64(sampleLSN)),
		},
		Op:   "u",
		TsMs: ptr(int64(sampleEnvelopeTsMs)),
	}
}

// sampleEnvelopeBytes is the sample envelope as hamba encodes it with the
// seed T_Accounts schema.
func sampleEnvelopeBytes(tb testing.TB) (avro.Schema, []byte) {
	tb.Helper()
	s := loadSchema(tb, accountsSchemaFile)
	return s, hambaMarshal(tb, s, sampleAccountEnvelope())
}
