package avrocodec

import (
	"bytes"
	"encoding/json"
	"math"
	"math/big"
	"strings"
	"testing"
	"time"
)

// bytesDatum frames raw as an Avro bytes value.
func bytesDatum(raw ...byte) []byte {
	return append(appendLong(nil, int64(len(raw))), raw...)
}

func TestDecimalBytesHandComputed(t *testing.T) {
	dec := func(scale string) *Codec {
		return mustCompile(t, parseSchema(t, `{"type":"bytes","logicalType":"decimal","precision":20,"scale":`+scale+`}`),
			Options{PreserveLogicalTypes: true})
	}
	s2, s0 := dec("2"), dec("0")
	cases := []struct {
		c    *Codec
		raw  []byte
		want string
	}{
		{s2, []byte{0x04, 0xd2}, "12.34"},
		{s2, []byte{0xff, 0x38}, "-2.00"}, // -200
		{s2, []byte{0x05}, "0.05"},
		{s2, []byte{0xfb}, "-0.05"},
		{s2, []byte{0x00}, "0.00"},
		{s2, []byte{0x00, 0x00, 0x05}, "0.05"}, // redundant sign bytes
		{s2, []byte{0x80}, "-1.28"},
		{s2, []byte{0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, "92233720368547758.07"},
		{s2, []byte{0x80, 0, 0, 0, 0, 0, 0, 0}, "-92233720368547758.08"},
		// 12345678901234567890 needs 9 bytes: the math/big path.
		{s2, []byte{0x00, 0xab, 0x54, 0xa9, 0x8c, 0xeb, 0x1f, 0x0a, 0xd2}, "123456789012345678.90"},
		{s2, []byte{0xff, 0x54, 0xab, 0x56, 0x73, 0x14, 0xe0, 0xf5, 0x2e}, "-123456789012345678.90"},
		{s0, []byte{0x04, 0xd2}, "1234"},
		{s0, []byte{0xff, 0x38}, "-200"},
		{s0, []byte{0x00}, "0"},
	}
	for _, tc := range cases {
		got := mustDecode(t, tc.c, bytesDatum(tc.raw...))
		assertValue(t, got, tc.want)
		// Encoding gives the minimal two's complement back, except for
		// the redundant input.
		enc := mustEncode(t, tc.c, tc.want)
		if !bytes.Equal(enc[1:], tc.raw) && !bytes.Equal(tc.raw, []byte{0x00, 0x00, 0x05}) {
			t.Errorf("%s encoded as % x, want % x", tc.want, enc[1:], tc.raw)
		}
	}
}

func TestDecimalDecodesHambaBigRat(t *testing.T) {
	s := parseSchema(t, `{"type":"bytes","logicalType":"decimal","precision":30,"scale":4}`)
	c := mustCompile(t, s, Options{PreserveLogicalTypes: true})
	for _, tc := range []struct{ rat, want string }{
		{"1234/100", "12.3400"},
		{"-1/2", "-0.5000"},
		{"98765432109876543210987/10000", "9876543210987654321.0987"},
		{"-98765432109876543210987/10000", "-9876543210987654321.0987"},
	} {
		r, ok := new(big.Rat).SetString(tc.rat)
		if !ok {
			t.Fatal(tc.rat)
		}
		assertValue(t, mustDecode(t, c, hambaMarshal(t, s, r)), tc.want)
	}
}

func TestDecimalFixed(t *testing.T) {
	s := parseSchema(t, `{"type":"fixed","name":"D","size":3,"logicalType":"decimal","precision":6,"scale":3}`)
	c := mustCompile(t, s, Options{PreserveLogicalTypes: true})
	assertValue(t, mustDecode(t, c, []byte{0x00, 0x30, 0x39}), "12.345")
	assertValue(t, mustDecode(t, c, []byte{0xff, 0xcf, 0xc7}), "-12.345")
	if got := mustEncode(t, c, "-12.345"); !bytes.Equal(got, []byte{0xff, 0xcf, 0xc7}) {
		t.Errorf("encoded % x", got)
	}
	if got := mustEncode(t, c, json.Number("1")); !bytes.Equal(got, []byte{0x00, 0x03, 0xe8}) {
		t.Errorf("encoded % x", got)
	}
	if _, err := c.AppendEncode(nil, "8388.608"); err == nil { // 2^23 does not fit 3 signed bytes
		t.Error("encoded a decimal larger than the fixed size")
	}
	// Without PreserveLogicalTypes a fixed decimal is its raw bytes.
	assertValue(t, mustDecode(t, mustCompile(t, s, Options{}), []byte{0x00, 0x30, 0x39}), []byte{0x00, 0x30, 0x39})
}

func TestConnectDecimal(t *testing.T) {
	translate := Options{TranslateKafkaConnectTypes: true}
	// Scale only in connect.parameters, no Avro logical type.
	paramsOnly := parseSchema(t, `{"type":"bytes","connect.name":"org.apache.kafka.connect.data.Decimal",
		"connect.version":1,"connect.parameters":{"scale":"3"}}`)
	assertValue(t, mustDecode(t, mustCompile(t, paramsOnly, translate), bytesDatum(0x30, 0x39)), "12.345")
	// Untranslated it stays bytes, even with PreserveLogicalTypes (no
	// logicalType to preserve).
	assertValue(t, mustDecode(t, mustCompile(t, paramsOnly, Options{PreserveLogicalTypes: true}), bytesDatum(0x30, 0x39)),
		[]byte{0x30, 0x39})

	// As Confluent's AvroConverter writes a Debezium numeric(10,2) column.
	confluent := parseSchema(t, `{"type":"bytes","scale":2,"precision":10,"connect.version":1,
		"connect.parameters":{"scale":"2","connect.decimal.precision":"10"},
		"connect.name":"org.apache.kafka.connect.data.Decimal","logicalType":"decimal"}`)
	for _, opts := range []Options{translate, {PreserveLogicalTypes: true}} {
		c := mustCompile(t, confluent, opts)
		assertValue(t, mustDecode(t, c, bytesDatum(0xff, 0x38)), "-2.00")
		if got := mustEncode(t, c, "123.45"); !bytes.Equal(got, bytesDatum(0x30, 0x39)) {
			t.Errorf("encoded % x", got)
		}
	}
	assertValue(t, mustDecode(t, mustCompile(t, confluent, Options{}), bytesDatum(0xff, 0x38)), []byte{0xff, 0x38})

	for _, bad := range []string{
		// Contradicting scales: which one is the money's?
		`{"type":"bytes","scale":2,"precision":10,"logicalType":"decimal","connect.name":"org.apache.kafka.connect.data.Decimal","connect.parameters":{"scale":"3"}}`,
		`{"type":"bytes","connect.name":"org.apache.kafka.connect.data.Decimal"}`,
		`{"type":"bytes","connect.name":"org.apache.kafka.connect.data.Decimal","connect.parameters":{"scale":"-1"}}`,
		`{"type":"bytes","connect.name":"org.apache.kafka.connect.data.Decimal","connect.parameters":{"scale":"two"}}`,
	} {
		if _, err := Compile(parseSchema(t, bad), translate); err == nil {
			t.Errorf("compiled %s", bad)
		}
		// Without translation the same schema is plain bytes and fine.
		mustCompile(t, parseSchema(t, bad), Options{})
	}
}

func TestNegativeDecimalScaleFailsCompile(t *testing.T) {
	for _, text := range []string{
		`{"type":"bytes","logicalType":"decimal","precision":5,"scale":-2}`,
		`{"type":"fixed","name":"F","size":4,"logicalType":"decimal","precision":5,"scale":-2}`,
	} {
		_, err := Compile(parseSchema(t, text), Options{PreserveLogicalTypes: true})
		if err == nil || !strings.Contains(err.Error(), "negative scale") {
			t.Errorf("%s: err = %v, want a negative scale error", text, err)
		}
	}
}

func TestDecimalWithoutPrecisionKeepsItsScale(t *testing.T) {
	// hamba rejects a decimal without precision and leaves its properties
	// raw; the scale is still the writer's meaning.
	c := mustCompile(t, parseSchema(t, `{"type":"bytes","logicalType":"decimal","scale":2}`), Options{PreserveLogicalTypes: true})
	assertValue(t, mustDecode(t, c, bytesDatum(0x04, 0xd2)), "12.34")
}

const variableScaleDecimalSchema = `{"type":"record","name":"VariableScaleDecimal","namespace":"io.debezium.data",
	"connect.doc":"Variable scaled decimal","connect.version":1,"connect.name":"io.debezium.data.VariableScaleDecimal",
	"fields":[{"name":"scale","type":"int"},{"name":"value","type":"bytes"}]}`

func TestVariableScaleDecimal(t *testing.T) {
	s := parseSchema(t, variableScaleDecimalSchema)
	type vsd struct {
		Scale int32  `avro:"scale"`
		Value []byte `avro:"value"`
	}
	c := mustCompile(t, s, Options{TranslateKafkaConnectTypes: true})
	for _, tc := range []struct {
		in   vsd
		want string
	}{
		{vsd{3, []byte{0x30, 0x39}}, "12.345"},
		{vsd{3, []byte{0xcf, 0xc7}}, "-12.345"},
		{vsd{0, []byte{0x30, 0x39}}, "12345"},
		{vsd{6, []byte{0x01}}, "0.000001"},
		{vsd{-2, []byte{0x30, 0x39}}, "1234500"},
		{vsd{-2, []byte{0x00}}, "0"}, // zero takes no zeros from a negative scale
		{vsd{2, []byte{0x00, 0xab, 0x54, 0xa9, 0x8c, 0xeb, 0x1f, 0x0a, 0xd2}}, "123456789012345678.90"},
	} {
		assertValue(t, mustDecode(t, c, hambaMarshal(t, s, tc.in)), tc.want)
	}
	// Encoding takes the scale from the text, trailing zeros included.
	for _, tc := range []struct {
		in   any
		want []byte
	}{
		{"12.345", []byte{0x06, 0x04, 0x30, 0x39}},
		{"12.3400", []byte{0x08, 0x06, 0x01, 0xe2, 0x08}}, // 123400 = 0x01E208, scale 4
		{1.5, []byte{0x02, 0x02, 0x0f}},
		{json.Number("100"), []byte{0x00, 0x02, 0x64}},
		{-5, []byte{0x00, 0x02, 0xfb}},
		{"-0.5", []byte{0x02, 0x02, 0xfb}},
		{map[string]any{"scale": int64(3), "value": []byte{0x30, 0x39}}, []byte{0x06, 0x04, 0x30, 0x39}},
	} {
		if got := mustEncode(t, c, tc.in); !bytes.Equal(got, tc.want) {
			t.Errorf("%v encoded as % x, want % x", tc.in, got, tc.want)
		}
	}
	// Untranslated, it is the record.
	assertValue(t, mustDecode(t, mustCompile(t, s, Options{}), []byte{0x06, 0x04, 0x30, 0x39}),
		map[string]any{"scale": int64(3), "value": []byte{0x30, 0x39}})

	// Nullable, as Debezium declares optional numeric columns.
	nullable := parseSchema(t, `["null",`+variableScaleDecimalSchema+`]`)
	raw := mustCompile(t, nullable, Options{TranslateKafkaConnectTypes: true, RawUnions: true})
	assertValue(t, mustDecode(t, raw, []byte{0x02, 0x06, 0x04, 0x30, 0x39}), "12.345")
	assertValue(t, mustDecode(t, raw, []byte{0x00}), nil)
	wrapped := mustCompile(t, nullable, Options{TranslateKafkaConnectTypes: true})
	assertValue(t, mustDecode(t, wrapped, []byte{0x02, 0x06, 0x04, 0x30, 0x39}),
		map[string]any{"io.debezium.data.VariableScaleDecimal": "12.345"})
	if got := mustEncode(t, raw, "12.345"); !bytes.Equal(got, []byte{0x02, 0x06, 0x04, 0x30, 0x39}) {
		t.Errorf("nullable encoded as % x", got)
	}
}

func TestVariableScaleDecimalFieldOrderAndShape(t *testing.T) {
	swapped := parseSchema(t, `{"type":"record","name":"VariableScaleDecimal","namespace":"io.debezium.data",
		"fields":[{"name":"value","type":"bytes"},{"name":"scale","type":"int"}]}`)
	c := mustCompile(t, swapped, Options{TranslateKafkaConnectTypes: true})
	assertValue(t, mustDecode(t, c, []byte{0x04, 0x30, 0x39, 0x06}), "12.345")
	if got := mustEncode(t, c, "12.345"); !bytes.Equal(got, []byte{0x04, 0x30, 0x39, 0x06}) {
		t.Errorf("encoded % x", got)
	}
	bad := parseSchema(t, `{"type":"record","name":"VariableScaleDecimal","namespace":"io.debezium.data",
		"fields":[{"name":"scale","type":"long"},{"name":"value","type":"bytes"}]}`)
	if _, err := Compile(bad, Options{TranslateKafkaConnectTypes: true}); err == nil {
		t.Error("compiled a VariableScaleDecimal with a long scale")
	}
}

func TestDebeziumTimeTypes(t *testing.T) {
	translate := Options{TranslateKafkaConnectTypes: true}
	cases := []struct {
		schema string
		datum  []byte
		want   any
	}{
		{`{"type":"int","connect.name":"io.debezium.time.Date"}`, appendLong(nil, 19787), "2024-03-05"},
		{`{"type":"int","connect.name":"org.apache.kafka.connect.data.Date","logicalType":"date"}`, appendLong(nil, 19787), "2024-03-05"},
		{`{"type":"int","connect.name":"io.debezium.time.Date"}`, appendLong(nil, -1), "1969-12-31"},
		{`{"type":"int","connect.name":"io.debezium.time.Date"}`, appendLong(nil, 0), "1970-01-01"},
		// 2000-02-29: 30 years (7 leap days) = 10957 days, + 31 + 28.
		{`{"type":"int","connect.name":"io.debezium.time.Date"}`, appendLong(nil, 11016), "2000-02-29"},
		{`{"type":"long","connect.name":"io.debezium.time.MicroTimestamp"}`, appendLong(nil, sampleCreatedMicros), "2024-03-05T10:11:12.123456Z"},
		{`{"type":"long","connect.name":"io.debezium.time.NanoTimestamp"}`, appendLong(nil, 1709633472123456789), "2024-03-05T10:11:12.123456789Z"},
		{`{"type":"long","connect.name":"io.debezium.time.Timestamp"}`, appendLong(nil, 1709633472120), "2024-03-05T10:11:12.12Z"},
		{`{"type":"long","connect.name":"org.apache.kafka.connect.data.Timestamp","logicalType":"timestamp-millis"}`, appendLong(nil, 1709633472000), "2024-03-05T10:11:12Z"},
		{`{"type":"string","connect.name":"io.debezium.time.ZonedTimestamp"}`,
			append(appendLong(nil, 32), "2024-03-05T10:11:12.123456+01:00"...), "2024-03-05T10:11:12.123456+01:00"},
		// RFC 3339 cannot write these: the raw number stays.
		{`{"type":"long","connect.name":"io.debezium.time.MicroTimestamp"}`, appendLong(nil, math.MaxInt64), int64(math.MaxInt64)},
		{`{"type":"long","connect.name":"io.debezium.time.Timestamp"}`, appendLong(nil, math.MinInt64), int64(math.MinInt64)},
		{`{"type":"int","connect.name":"io.debezium.time.Date"}`, appendLong(nil, 3000000), int64(3000000)},
		// Types we do not translate stay numbers.
		{`{"type":"long","connect.name":"io.debezium.time.MicroTime"}`, appendLong(nil, 5), int64(5)},
		// A connect.name on the wrong Avro type is not translated.
		{`{"type":"int","connect.name":"io.debezium.time.MicroTimestamp"}`, appendLong(nil, 5), int64(5)},
	}
	for _, tc := range cases {
		s := parseSchema(t, tc.schema)
		c := mustCompile(t, s, translate)
		got := mustDecode(t, c, tc.datum)
		assertValue(t, got, tc.want)
		if enc := mustEncode(t, c, got); !bytes.Equal(enc, tc.datum) {
			t.Errorf("%s: %v encoded as % x, want % x", tc.schema, got, enc, tc.datum)
		}
	}
}

func TestTimestampAndDateEncodeShapes(t *testing.T) {
	micro := mustCompile(t, parseSchema(t, `{"type":"long","connect.name":"io.debezium.time.MicroTimestamp"}`),
		Options{TranslateKafkaConnectTypes: true})
	want := appendLong(nil, sampleCreatedMicros)
	for _, in := range []any{
		"2024-03-05T10:11:12.123456Z",
		"2024-03-05T11:11:12.123456+01:00",
		"2024-03-05T10:11:12.1234569Z", // finer than µs: floored, as Kafka Connect does
		int64(sampleCreatedMicros),
		json.Number("1709633472123456"),
		time.Date(2024, 3, 5, 11, 11, 12, 123456000, time.FixedZone("CET", 3600)),
		float64(1 << 40), // integral floats are fine
	} {
		got, err := micro.AppendEncode(nil, in)
		if err != nil {
			t.Errorf("%v: %v", in, err)
			continue
		}
		if f, ok := in.(float64); ok {
			want := appendLong(nil, int64(f))
			if !bytes.Equal(got, want) {
				t.Errorf("%v encoded as % x", in, got)
			}
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%v encoded as % x, want % x", in, got, want)
		}
	}
	for _, bad := range []any{"2024-03-05 10:11:12", "yesterday", 1.5, true} {
		if _, err := micro.AppendEncode(nil, bad); err == nil {
			t.Errorf("encoded %v", bad)
		}
	}
	nano := mustCompile(t, parseSchema(t, `{"type":"long","connect.name":"io.debezium.time.NanoTimestamp"}`),
		Options{TranslateKafkaConnectTypes: true})
	if _, err := nano.AppendEncode(nil, "2300-01-01T00:00:00Z"); err == nil {
		t.Error("encoded a nanosecond timestamp beyond 2262")
	}

	date := mustCompile(t, parseSchema(t, `{"type":"int","connect.name":"io.debezium.time.Date"}`),
		Options{TranslateKafkaConnectTypes: true})
	for _, in := range []any{
		"2024-03-05", 19787, json.Number("19787"),
		// A date is the calendar day the value shows, not its UTC instant.
		time.Date(2024, 3, 5, 23, 30, 0, 0, time.FixedZone("", -5*3600)),
	} {
		if got := mustEncode(t, date, in); !bytes.Equal(got, appendLong(nil, 19787)) {
			t.Errorf("%v encoded as % x", in, got)
		}
	}
	for _, bad := range []any{"2024-03-05T00:00:00Z", "05/03/2024", int64(math.MaxInt32) + 1} {
		if _, err := date.AppendEncode(nil, bad); err == nil {
			t.Errorf("date encoded %v", bad)
		}
	}
}

// A decimal given as its Avro primitive (the unscaled two's complement, as
// a decode without PreserveLogicalTypes gives it) encodes as is; a fixed
// one is sign-extended to its size.
func TestDecimalEncodesItsRawBytes(t *testing.T) {
	for _, tc := range []struct {
		schema string
		raw    []byte
		want   []byte
	}{
		{`{"type":"bytes","logicalType":"decimal","precision":20,"scale":2}`, []byte{0x04, 0xd2}, bytesDatum(0x04, 0xd2)},
		{`{"type":"fixed","name":"F","size":4,"logicalType":"decimal","precision":8,"scale":2}`, []byte{0x04, 0xd2}, []byte{0, 0, 0x04, 0xd2}},
		{`{"type":"fixed","name":"F","size":4,"logicalType":"decimal","precision":8,"scale":2}`, []byte{0xff, 0x38}, []byte{0xff, 0xff, 0xff, 0x38}},
	} {
		s := parseSchema(t, tc.schema)
		enc := mustCompile(t, s, Options{PreserveLogicalTypes: true, TranslateKafkaConnectTypes: true})
		if got := mustEncode(t, enc, tc.raw); !bytes.Equal(got, tc.want) {
			t.Errorf("%s: % x encoded to % x, want % x", tc.schema, tc.raw, got, tc.want)
		}
		// What a decode without logical types gives, encoded, is the datum.
		raw := mustDecode(t, mustCompile(t, s, Options{}), tc.want)
		if got := mustEncode(t, enc, raw); !bytes.Equal(got, tc.want) {
			t.Errorf("%s: decoded %v re-encoded to % x, want % x", tc.schema, raw, got, tc.want)
		}
	}
	fixed := mustCompile(t, parseSchema(t, `{"type":"fixed","name":"F","size":2,"logicalType":"decimal","precision":4,"scale":2}`), Options{PreserveLogicalTypes: true})
	if _, err := fixed.AppendEncode(nil, []byte{1, 2, 3}); err == nil || !strings.Contains(err.Error(), "more than the fixed size 2") {
		t.Errorf("3 bytes into a fixed(2) decimal: %v", err)
	}
}

// A date beyond what Avro's int of days holds is an error, not a wrapped
// number.
func TestDateOutOfRangeIsRefused(t *testing.T) {
	date := mustCompile(t, parseSchema(t, `{"type":"int","logicalType":"date"}`), Options{PreserveLogicalTypes: true})
	for _, far := range []time.Time{time.Date(6_000_000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-6_000_000, 1, 1, 0, 0, 0, 0, time.UTC)} {
		if _, err := date.AppendEncode(nil, far); err == nil || !strings.Contains(err.Error(), "out of range") {
			t.Errorf("date %v: %v, want out of range", far.Year(), err)
		}
	}
	if got := mustEncode(t, date, time.Date(1970, 1, 2, 0, 0, 0, 0, time.UTC)); !bytes.Equal(got, appendLong(nil, 1)) {
		t.Errorf("1970-01-02 encoded as % x", got)
	}
}
