package avrocodec

import (
	"bytes"
	"errors"
	"testing"
)

// heavySchema is decimal- and union-heavy: every translated type, a union
// of many shapes, recursion, maps and arrays of unions, an array of nulls.
// Its unions are unambiguous for raw unions (no two branches decode to the
// same Go type), so that a raw decoding re-encodes to an equal value.
const heavySchema = `{
  "type": "record", "name": "Heavy", "namespace": "fuzz",
  "fields": [
    {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 20, "scale": 2}},
    {"name": "amount0", "type": ["null", {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 0}]},
    {"name": "fixed_amount", "type": {"type": "fixed", "name": "Money", "size": 9, "logicalType": "decimal", "precision": 20, "scale": 4}},
    {"name": "connect_amount", "type": ["null", {"type": "bytes", "scale": 3, "precision": 12, "logicalType": "decimal",
      "connect.name": "org.apache.kafka.connect.data.Decimal", "connect.parameters": {"scale": "3", "connect.decimal.precision": "12"}}]},
    {"name": "vsd", "type": ["null", {"type": "record", "name": "VariableScaleDecimal", "namespace": "io.debezium.data",
      "connect.name": "io.debezium.data.VariableScaleDecimal",
      "fields": [{"name": "scale", "type": "int"}, {"name": "value", "type": "bytes"}]}]},
    {"name": "when", "type": [{"type": "long", "connect.name": "io.debezium.time.MicroTimestamp"}, "null"]},
    {"name": "when_ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "when_ns", "type": {"type": "long", "connect.name": "io.debezium.time.NanoTimestamp"}},
    {"name": "day", "type": {"type": "int", "connect.name": "io.debezium.time.Date"}},
    {"name": "id", "type": {"type": "fixed", "name": "Id", "size": 16, "logicalType": "uuid"}},
    {"name": "choice", "type": ["null", "long", "double", "string", "bytes", "boolean",
      {"type": "array", "items": ["null", "long", "string"]},
      {"type": "map", "values": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}}]},
    {"name": "color", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN"]}},
    {"name": "tags", "type": {"type": "map", "values": ["null", "string"]}},
    {"name": "list", "type": ["null", {"type": "record", "name": "Link", "fields": [
      {"name": "v", "type": "int"}, {"name": "next", "type": ["null", "Link"]}]}]},
    {"name": "f", "type": "float"},
    {"name": "nulls", "type": {"type": "array", "items": "null"}}
  ]
}`

// heavyValue is a datum of heavySchema in the raw, translated shapes.
func heavyValue() map[string]any {
	return map[string]any{
		"amount":         "123456789012345678.90",
		"amount0":        "-42",
		"fixed_amount":   "-0.0200",
		"connect_amount": "12.345",
		"vsd":            "-1234.5678",
		"when":           "2024-03-05T10:11:12.123456Z",
		"when_ms":        "1969-12-31T23:59:59.999Z",
		"when_ns":        "2024-03-05T10:11:12.123456789Z",
		"day":            "2024-03-05",
		"id":             "123e4567-e89b-12d3-a456-426614174000",
		"choice":         map[string]any{"a": "1.00", "b": "-0.01"},
		"color":          "GREEN",
		"tags":           map[string]any{"k": "v", "n": nil},
		"list":           map[string]any{"v": 1, "next": map[string]any{"v": 2, "next": nil}},
		"f":              1.5,
		"nulls":          []any{nil, nil},
	}
}

var fuzzOptions = []Options{
	{RawUnions: true, PreserveLogicalTypes: true, TranslateKafkaConnectTypes: true},
	{PreserveLogicalTypes: true, TranslateKafkaConnectTypes: true},
	{},
}

// fuzzCodecs compiles the seed T_Accounts envelope and heavySchema with the
// option sets that matter.
func fuzzCodecs(tb testing.TB) []*Codec {
	tb.Helper()
	accounts := loadSchema(tb, accountsSchemaFile)
	heavy := parseSchema(tb, heavySchema)
	var out []*Codec
	for _, opts := range fuzzOptions {
		out = append(out, mustCompile(tb, accounts, opts), mustCompile(tb, heavy, opts))
	}
	return out
}

// checkDecodeRoundTrip decodes data; when that succeeds the value must
// re-encode, decode to an equal value, and re-encode to the same bytes
// (the encoding is canonical). It reports whether data decoded.
func checkDecodeRoundTrip(tb testing.TB, c *Codec, data []byte) bool {
	tb.Helper()
	v, err := c.Decode(data)
	if err != nil {
		var de *DecodeError
		if !errors.As(err, &de) || de.Offset < 0 || de.Offset > len(data) {
			tb.Fatalf("decode % .256x: error %v is not a DecodeError with an offset within the input", data, err)
		}
		return false
	}
	b2, err := c.AppendEncode(nil, v)
	if err != nil {
		tb.Fatalf("decoded % .256x to %.500v, which does not re-encode: %v", data, v, err)
	}
	v2, err := c.Decode(b2)
	if err != nil {
		tb.Fatalf("re-encoded % .256x (from % .256x) does not decode: %v", b2, data, err)
	}
	if !valuesEqual(v2, v) {
		assertValue(tb, v2, v)
		tb.Fatalf("round trip of % .256x changed the value", data)
	}
	b3, err := c.AppendEncode(nil, v2)
	if err != nil || !bytes.Equal(b3, b2) {
		tb.Fatalf("second encoding % .256x differs from the first % .256x (err %v)", b3, b2, err)
	}
	return true
}

// fuzzSeeds are valid datums of the fuzzed schemas plus edge cases.
func fuzzSeeds(tb testing.TB) [][]byte {
	tb.Helper()
	s, envelope := sampleEnvelopeBytes(tb)
	del := sampleAccountEnvelope()
	del.Before, del.After, del.Op = del.After, nil, "d"
	del.Transaction = &dbzBlock{ID: "780:24023992", TotalOrder: 1, DataCollectionOrder: 1}
	snap := sampleAccountEnvelope()
	snap.Op, snap.Source.Snapshot, snap.Source.LSN, snap.After.CreatedAt = "r", nil, nil, nil

	heavy := mustCompile(tb, parseSchema(tb, heavySchema), fuzzOptions[0])
	heavyBytes := mustEncode(tb, heavy, heavyValue())
	minimal := heavyValue()
	minimal["amount0"], minimal["vsd"], minimal["when"], minimal["choice"], minimal["list"] = nil, nil, nil, nil, nil
	minimal["tags"], minimal["nulls"] = map[string]any{}, []any{}
	minimalBytes := mustEncode(tb, heavy, minimal)
	choices := [][]byte{}
	for _, choice := range []any{int64(-1), 2.5, "s", []byte{0xff}, true, []any{nil, int64(1), "x"}} {
		v := heavyValue()
		v["choice"] = choice
		choices = append(choices, mustEncode(tb, heavy, v))
	}

	seeds := [][]byte{
		envelope,
		hambaMarshal(tb, s, del),
		hambaMarshal(tb, s, snap),
		heavyBytes,
		minimalBytes,
		{},
		{0x00},
		{0x02},
		{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, // 11-byte varint
		{0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},       // MaxInt64
	}
	return append(seeds, choices...)
}

func FuzzDecode(f *testing.F) {
	for _, seed := range fuzzSeeds(f) {
		f.Add(seed)
	}
	codecs := fuzzCodecs(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, c := range codecs {
			checkDecodeRoundTrip(t, c, data)
		}
	})
}

// TestSeedsDecodeAndRoundTrip runs the fuzz checks on the seeds in every CI
// run, and makes sure the valid seeds really are valid.
func TestSeedsDecodeAndRoundTrip(t *testing.T) {
	codecs := fuzzCodecs(t)
	seeds := fuzzSeeds(t)
	decoded := 0
	for _, seed := range seeds {
		for _, c := range codecs {
			if checkDecodeRoundTrip(t, c, seed) {
				decoded++
			}
		}
	}
	// Three envelopes with two option sets each... every valid seed decodes
	// with its schema's three codecs: (3 envelopes + 8 heavy datums) × 3.
	if want := (3 + 2 + 6) * len(fuzzOptions); decoded != want {
		t.Errorf("%d seed decodings succeeded, want %d", decoded, want)
	}
	heavy := mustCompile(t, parseSchema(t, heavySchema), fuzzOptions[0])
	assertValue(t, mustDecode(t, heavy, seeds[3]), map[string]any{
		"amount":         "123456789012345678.90",
		"amount0":        "-42",
		"fixed_amount":   "-0.0200",
		"connect_amount": "12.345",
		"vsd":            "-1234.5678",
		"when":           "2024-03-05T10:11:12.123456Z",
		"when_ms":        "1969-12-31T23:59:59.999Z",
		"when_ns":        "2024-03-05T10:11:12.123456789Z",
		"day":            "2024-03-05",
		"id":             "123e4567-e89b-12d3-a456-426614174000",
		"choice":         map[string]any{"a": "1.00", "b": "-0.01"},
		"color":          "GREEN",
		"tags":           map[string]any{"k": "v", "n": nil},
		"list":           map[string]any{"v": int64(1), "next": map[string]any{"v": int64(2), "next": nil}},
		"f":              1.5,
		"nulls":          []any{nil, nil},
	})
}

// TestDecodeSurvivesCorruption is a deterministic slice of the fuzzer for
// CI: every single-byte corruption and every truncation of every seed, with
// every codec, either fails cleanly or round-trips.
func TestDecodeSurvivesCorruption(t *testing.T) {
	codecs := fuzzCodecs(t)
	failures, successes := 0, 0
	count := func(ok bool) {
		if ok {
			successes++
		} else {
			failures++
		}
	}
	for _, seed := range fuzzSeeds(t) {
		for i := range seed {
			for _, b := range []byte{0x00, 0x01, 0x02, 0x7f, 0x80, 0xfe, 0xff} {
				mutated := bytes.Clone(seed)
				mutated[i] = b
				for _, c := range codecs {
					count(checkDecodeRoundTrip(t, c, mutated))
				}
			}
			for _, c := range codecs {
				count(checkDecodeRoundTrip(t, c, seed[:i]))
			}
		}
	}
	if failures == 0 || successes == 0 {
		t.Errorf("%d corrupted inputs failed and %d decoded: expected some of each", failures, successes)
	}
}
