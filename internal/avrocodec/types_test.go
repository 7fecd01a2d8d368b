package avrocodec

import (
	"bytes"
	"fmt"
	"math"
	"testing"
	"time"
)

// everythingSchema has every Avro type, the logical types and two Debezium
// semantic types, so that each option combination can be checked on it.
const everythingSchema = `{
  "type": "record", "name": "Everything", "namespace": "test.avrocodec",
  "fields": [
    {"name": "n", "type": "null"},
    {"name": "b", "type": "boolean"},
    {"name": "i", "type": "int"},
    {"name": "l", "type": "long"},
    {"name": "f", "type": "float"},
    {"name": "d", "type": "double"},
    {"name": "s", "type": "string"},
    {"name": "by", "type": "bytes"},
    {"name": "fx", "type": {"type": "fixed", "name": "Four", "size": 4}},
    {"name": "e", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN", "BLUE"]}},
    {"name": "a", "type": {"type": "array", "items": "long"}},
    {"name": "m", "type": {"type": "map", "values": "string"}},
    {"name": "r", "type": {"type": "record", "name": "Inner", "fields": [{"name": "x", "type": "int"}]}},
    {"name": "u", "type": ["null", "string", "Inner"]},
    {"name": "ue", "type": ["null", "Color", "Four"]},
    {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "tsu", "type": {"type": "long", "logicalType": "timestamp-micros"}},
    {"name": "tsn", "type": {"type": "long", "logicalType": "timestamp-nanos"}},
    {"name": "lts", "type": {"type": "long", "logicalType": "local-timestamp-millis"}},
    {"name": "dt", "type": {"type": "int", "logicalType": "date"}},
    {"name": "tm", "type": {"type": "int", "logicalType": "time-millis"}},
    {"name": "tmu", "type": {"type": "long", "logicalType": "time-micros"}},
    {"name": "dec", "type": {"type": "bytes", "logicalType": "decimal", "precision": 20, "scale": 2}},
    {"name": "decfx", "type": {"type": "fixed", "name": "Dec9", "size": 9, "logicalType": "decimal", "precision": 20, "scale": 4}},
    {"name": "uid", "type": {"type": "string", "logicalType": "uuid"}},
    {"name": "mts", "type": {"type": "long", "connect.name": "io.debezium.time.MicroTimestamp"}},
    {"name": "cdate", "type": {"type": "int", "connect.name": "io.debezium.time.Date"}},
    {"name": "ulong", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}]}
  ]
}`

// everythingDatum is what hamba encodes: raw values only, so that the
// expected decodings below are computed by hand rather than by hamba.
func everythingDatum() map[string]any {
	return map[string]any{
		"n":     nil,
		"b":     true,
		"i":     -123456,
		"l":     int64(1<<40 + 5),
		"f":     float32(1.5),
		"d":     2.25,
		"s":     "héllo, wörld",
		"by":    []byte{0, 1, 2, 0xff},
		"fx":    [4]byte{0xde, 0xad, 0xbe, 0xef},
		"e":     "GREEN",
		"a":     []int64{1, -2, 300},
		"m":     map[string]any{"k": "v"},
		"r":     map[string]any{"x": 7},
		"u":     map[string]any{"test.avrocodec.Inner": map[string]any{"x": 9}},
		"ue":    map[string]any{"test.avrocodec.Color": "BLUE"},
		"ts":    int64(1709633472123),
		"tsu":   int64(1709633472123456),
		"tsn":   int64(1709633472123456789),
		"lts":   int64(-1), // 1969-12-31T23:59:59.999Z
		"dt":    19787,
		"tm":    3600000,
		"tmu":   1500 * time.Microsecond,                                       // hamba takes time-micros as a Duration
		"dec":   []byte{0x04, 0xd2},                                            // 1234 → 12.34
		"decfx": [9]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x38}, // -200 → -0.0200
		"uid":   "123e4567-e89b-12d3-a456-426614174000",
		"mts":   int64(1709633472123456),
		"cdate": 19787,
		"ulong": map[string]any{"long.timestamp-millis": int64(0)},
	}
}

// everythingExpected is the decoding of everythingDatum under opts.
func everythingExpected(opts Options) map[string]any {
	union := func(branch string, v any) any {
		if opts.RawUnions {
			return v
		}
		return map[string]any{branch: v}
	}
	pick := func(on bool, translated, raw any) any {
		if on {
			return translated
		}
		return raw
	}
	p, tr := opts.PreserveLogicalTypes, opts.TranslateKafkaConnectTypes
	return map[string]any{
		"n":     nil,
		"b":     true,
		"i":     int64(-123456),
		"l":     int64(1<<40 + 5),
		"f":     1.5,
		"d":     2.25,
		"s":     "héllo, wörld",
		"by":    []byte{0, 1, 2, 0xff},
		"fx":    []byte{0xde, 0xad, 0xbe, 0xef},
		"e":     "GREEN",
		"a":     []any{int64(1), int64(-2), int64(300)},
		"m":     map[string]any{"k": "v"},
		"r":     map[string]any{"x": int64(7)},
		"u":     union("test.avrocodec.Inner", map[string]any{"x": int64(9)}),
		"ue":    union("test.avrocodec.Color", "BLUE"),
		"ts":    pick(p, "2024-03-05T10:11:12.123Z", int64(1709633472123)),
		"tsu":   pick(p, "2024-03-05T10:11:12.123456Z", int64(1709633472123456)),
		"tsn":   pick(p, "2024-03-05T10:11:12.123456789Z", int64(1709633472123456789)),
		"lts":   pick(p, "1969-12-31T23:59:59.999Z", int64(-1)),
		"dt":    pick(p, "2024-03-05", int64(19787)),
		"tm":    int64(3600000),
		"tmu":   int64(1500),
		"dec":   pick(p, "12.34", []byte{0x04, 0xd2}),
		"decfx": pick(p, "-0.0200", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x38}),
		"uid":   "123e4567-e89b-12d3-a456-426614174000",
		"mts":   pick(tr, "2024-03-05T10:11:12.123456Z", int64(1709633472123456)),
		"cdate": pick(tr, "2024-03-05", int64(19787)),
		"ulong": union("long", pick(p, "1970-01-01T00:00:00Z", int64(0))),
	}
}

func TestEveryTypeEveryOptionDecodesHambaBytesAndReencodesThem(t *testing.T) {
	s := parseSchema(t, everythingSchema)
	b := hambaMarshal(t, s, everythingDatum())
	for _, opts := range allOptions() {
		t.Run(fmt.Sprintf("raw=%v,preserve=%v,translate=%v", opts.RawUnions, opts.PreserveLogicalTypes, opts.TranslateKafkaConnectTypes), func(t *testing.T) {
			c := mustCompile(t, s, opts)
			v := mustDecode(t, c, b)
			assertValue(t, v, everythingExpected(opts))
			// hamba writes array blocks with byte sizes, so compare the
			// re-encoding by value.
			assertValue(t, mustDecode(t, c, mustEncode(t, c, v)), everythingExpected(opts))
		})
	}
}

func TestPrimitivesDecodeHambaEncodings(t *testing.T) {
	cases := []struct {
		schema string
		in     any // for hamba
		want   any
	}{
		{`"boolean"`, false, false},
		{`"int"`, math.MaxInt32, int64(math.MaxInt32)},
		{`"int"`, math.MinInt32, int64(math.MinInt32)},
		{`"long"`, int64(math.MaxInt64), int64(math.MaxInt64)},
		{`"long"`, int64(math.MinInt64), int64(math.MinInt64)},
		{`"long"`, int64(0), int64(0)},
		{`"float"`, float32(-0.1), float64(float32(-0.1))},
		{`"float"`, float32(math.Inf(1)), math.Inf(1)},
		{`"double"`, math.SmallestNonzeroFloat64, math.SmallestNonzeroFloat64},
		{`"double"`, math.NaN(), math.NaN()},
		{`"double"`, math.Copysign(0, -1), math.Copysign(0, -1)},
		{`"string"`, "", ""},
		{`"string"`, "日本語 ✓", "日本語 ✓"},
		{`"bytes"`, []byte{}, []byte{}},
		{`{"type":"array","items":"string"}`, []string{}, []any{}},
		{`{"type":"array","items":"string"}`, []string{"a", "bb"}, []any{"a", "bb"}},
		{`{"type":"map","values":"long"}`, map[string]any{}, map[string]any{}},
		{`{"type":"map","values":"long"}`, map[string]any{"a": int64(1), "b": int64(-1)}, map[string]any{"a": int64(1), "b": int64(-1)}},
		{`{"type":"array","items":{"type":"array","items":"int"}}`, [][]int{{1}, {}, {2, 3}},
			[]any{[]any{int64(1)}, []any{}, []any{int64(2), int64(3)}}},
	}
	for _, tc := range cases {
		s := parseSchema(t, tc.schema)
		b := hambaMarshal(t, s, tc.in)
		for _, opts := range allOptions() {
			c := mustCompile(t, s, opts)
			got := mustDecode(t, c, b)
			assertValue(t, got, tc.want)
			back := mustDecode(t, c, mustEncode(t, c, got))
			assertValue(t, back, tc.want)
		}
	}
}

func TestLongVarintBoundaries(t *testing.T) {
	c := mustCompile(t, parseSchema(t, `"long"`), Options{})
	cases := []struct {
		in   []byte
		want int64
	}{
		{[]byte{0x00}, 0},
		{[]byte{0x01}, -1},
		{[]byte{0x02}, 1},
		{[]byte{0x7f}, -64},
		{[]byte{0x80, 0x01}, 64},
		// Not minimal, but valid: Java's decoder accepts padding bytes.
		{[]byte{0x82, 0x80, 0x00}, 1},
		{[]byte{0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, math.MaxInt64},
		{[]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, math.MinInt64},
	}
	for _, tc := range cases {
		assertValue(t, mustDecode(t, c, tc.in), tc.want)
	}
	if got := mustEncode(t, c, int64(math.MinInt64)); !bytes.Equal(got, cases[7].in) {
		t.Errorf("MinInt64 encoded as % x", got)
	}
}

func TestNegativeBlockCountsWithByteSizes(t *testing.T) {
	// Writers may announce a block as -count followed by its byte size, so
	// that readers can skip it.
	arr := mustCompile(t, parseSchema(t, `{"type":"array","items":"int"}`), Options{})
	in := []byte{
		0x03, 0x04, 0x02, 0x04, // block: -2 items, 2 bytes: 1, 2
		0x02, 0x06, // block: 1 item: 3
		0x00,
	}
	assertValue(t, mustDecode(t, arr, in), []any{int64(1), int64(2), int64(3)})

	m := mustCompile(t, parseSchema(t, `{"type":"map","values":"int"}`), Options{})
	in = []byte{0x01, 0x06, 0x02, 'k', 0x54, 0x00} // -1 entries, 3 bytes: "k" → 42
	assertValue(t, mustDecode(t, m, in), map[string]any{"k": int64(42)})
}

func TestRecursiveSchemaCompilesAndRoundTrips(t *testing.T) {
	s := parseSchema(t, `{
	  "type": "record", "name": "Node", "fields": [
	    {"name": "value", "type": "long"},
	    {"name": "children", "type": {"type": "array", "items": "Node"}},
	    {"name": "next", "type": ["null", "Node"], "default": null}
	  ]}`)
	type node struct {
		Value    int64  `avro:"value"`
		Children []node `avro:"children"`
		Next     *node  `avro:"next"`
	}
	b := hambaMarshal(t, s, node{
		Value:    1,
		Children: []node{{Value: 2, Children: []node{}}, {Value: 3, Children: []node{}, Next: &node{Value: 4, Children: []node{}}}},
		Next:     &node{Value: 5, Children: []node{}},
	})
	leaf := func(v int64, next any) map[string]any {
		return map[string]any{"value": v, "children": []any{}, "next": next}
	}
	c := mustCompile(t, s, Options{RawUnions: true})
	want := map[string]any{
		"value":    int64(1),
		"children": []any{leaf(2, nil), leaf(3, leaf(4, nil))},
		"next":     leaf(5, nil),
	}
	v := mustDecode(t, c, b)
	assertValue(t, v, want)
	// Ours writes plain counts where hamba writes sized blocks.
	if got, want := mustEncode(t, c, v), []byte{
		0x02, 0x04, // value 1, 2 children:
		0x04, 0x00, 0x00, // value 2, no children, next null
		0x06, 0x00, 0x02, 0x08, 0x00, 0x00, // value 3, no children, next: value 4
		0x00,                   // end of children
		0x02, 0x0a, 0x00, 0x00, // next: value 5
	}; !bytes.Equal(got, want) {
		t.Errorf("re-encoded % x, want % x", got, want)
	}
	// Non-raw unions name the recursive branch by its full name.
	c2 := mustCompile(t, s, Options{})
	v2 := mustDecode(t, c2, b).(map[string]any)
	assertValue(t, v2["next"], map[string]any{"Node": leaf(5, nil)})
}

func TestUUIDOnFixed(t *testing.T) {
	s := parseSchema(t, `{"type":"fixed","name":"U","size":16,"logicalType":"uuid"}`)
	raw := []byte{0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3, 0xa4, 0x56, 0x42, 0x66, 0x14, 0x17, 0x40, 0x00}
	c := mustCompile(t, s, Options{PreserveLogicalTypes: true})
	assertValue(t, mustDecode(t, c, raw), "123e4567-e89b-12d3-a456-426614174000")
	if got := mustEncode(t, c, "123E4567-E89B-12D3-A456-426614174000"); !bytes.Equal(got, raw) {
		t.Errorf("encoded % x", got)
	}
	assertValue(t, mustDecode(t, mustCompile(t, s, Options{}), raw), raw)
}

func TestRecursiveArraysAreBoundedByInputNotByTheZeroSizeCap(t *testing.T) {
	// Node's size is unknown while Node compiles; the array bound must use
	// the final one (2 bytes), not the zero-size cap.
	c := mustCompile(t, parseSchema(t, `{"type":"record","name":"Node","fields":[
		{"name":"v","type":"long"},{"name":"kids","type":{"type":"array","items":"Node"}}]}`), Options{})
	const n = maxZeroSizeItems + 10
	in := append([]byte{0x00}, appendLong(nil, n)...)
	for range n {
		in = append(in, 0x02, 0x00)
	}
	in = append(in, 0x00)
	v := mustDecode(t, c, in).(map[string]any)
	if kids := v["kids"].([]any); len(kids) != n {
		t.Errorf("%d kids, want %d", len(kids), n)
	}
	expectDecodeError(t, c, in[:len(in)-3], 1, "kids[0]", "block of 65546 items cannot fit")
}
