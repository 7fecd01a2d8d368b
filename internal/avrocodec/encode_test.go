package avrocodec

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
)

func TestEncodeIntegerShapes(t *testing.T) {
	long := mustCompile(t, parseSchema(t, `"long"`), Options{})
	intc := mustCompile(t, parseSchema(t, `"int"`), Options{})
	for _, in := range []any{42, int8(42), int16(42), int32(42), int64(42), uint(42), uint8(42), uint16(42),
		uint32(42), uint64(42), 42.0, float32(42), json.Number("42"), json.Number("4.2e1")} {
		for _, c := range []*Codec{long, intc} {
			if got := mustEncode(t, c, in); !bytes.Equal(got, []byte{0x54}) {
				t.Errorf("%T %v encoded as % x, want 54", in, in, got)
			}
		}
	}
	for _, bad := range []any{42.5, math.NaN(), math.Inf(1), 1e19, uint64(math.MaxUint64), json.Number("9223372036854775808"),
		json.Number("x"), "42", true, nil, []any{}} {
		if _, err := long.AppendEncode(nil, bad); err == nil {
			t.Errorf("long encoded %T %v", bad, bad)
		}
	}
	for _, bad := range []any{int64(math.MaxInt32) + 1, int64(math.MinInt32) - 1} {
		if _, err := intc.AppendEncode(nil, bad); err == nil || !strings.Contains(err.Error(), "overflows an int") {
			t.Errorf("int encoded %v: err %v", bad, err)
		}
	}
}

func TestEncodeFloatShapes(t *testing.T) {
	double := mustCompile(t, parseSchema(t, `"double"`), Options{})
	want := []byte{0, 0, 0, 0, 0, 0, 0x04, 0x40} // 2.5
	for _, in := range []any{2.5, float32(2.5), json.Number("2.5"), json.Number("25e-1")} {
		if got := mustEncode(t, double, in); !bytes.Equal(got, want) {
			t.Errorf("%T %v encoded as % x", in, in, got)
		}
	}
	if got := mustEncode(t, double, 3); !bytes.Equal(got, []byte{0, 0, 0, 0, 0, 0, 0x08, 0x40}) {
		t.Errorf("3 encoded as % x", got)
	}
	float := mustCompile(t, parseSchema(t, `"float"`), Options{})
	if got := mustEncode(t, float, 2.5); !bytes.Equal(got, []byte{0, 0, 0x20, 0x40}) {
		t.Errorf("float 2.5 encoded as % x", got)
	}
	if _, err := double.AppendEncode(nil, "2.5"); err == nil {
		t.Error("double encoded a string")
	}
}

func TestEncodeBytesStringsEnumsFixed(t *testing.T) {
	by := mustCompile(t, parseSchema(t, `"bytes"`), Options{})
	for _, in := range []any{[]byte("ab"), "ab"} {
		if got := mustEncode(t, by, in); !bytes.Equal(got, []byte{0x04, 'a', 'b'}) {
			t.Errorf("%T encoded as % x", in, got)
		}
	}
	str := mustCompile(t, parseSchema(t, `"string"`), Options{})
	if _, err := str.AppendEncode(nil, []byte("ab")); err == nil {
		t.Error("string encoded []byte")
	}
	enum := mustCompile(t, parseSchema(t, `{"type":"enum","name":"E","symbols":["A","B"]}`), Options{})
	if got := mustEncode(t, enum, "B"); !bytes.Equal(got, []byte{0x02}) {
		t.Errorf("enum encoded as % x", got)
	}
	if _, err := enum.AppendEncode(nil, "C"); err == nil || !strings.Contains(err.Error(), `"C" is not a symbol`) {
		t.Errorf("enum C: %v", err)
	}
	fixed := mustCompile(t, parseSchema(t, `{"type":"fixed","name":"F","size":2}`), Options{})
	if _, err := fixed.AppendEncode(nil, []byte{1, 2, 3}); err == nil {
		t.Error("fixed(2) encoded 3 bytes")
	}
}

func TestEncodeArraysAndMapsCanonically(t *testing.T) {
	arr := mustCompile(t, parseSchema(t, `{"type":"array","items":"int"}`), Options{})
	if got := mustEncode(t, arr, []any{1, 2}); !bytes.Equal(got, []byte{0x04, 0x02, 0x04, 0x00}) {
		t.Errorf("array encoded as % x", got)
	}
	if got := mustEncode(t, arr, []any{}); !bytes.Equal(got, []byte{0x00}) {
		t.Errorf("empty array encoded as % x", got)
	}
	m := mustCompile(t, parseSchema(t, `{"type":"map","values":"int"}`), Options{})
	// Keys sorted, so equal maps give equal bytes.
	want := []byte{0x06, 0x02, 'a', 0x02, 0x02, 'b', 0x04, 0x02, 'c', 0x06, 0x00}
	for range 5 {
		if got := mustEncode(t, m, map[string]any{"c": 3, "a": 1, "b": 2}); !bytes.Equal(got, want) {
			t.Fatalf("map encoded as % x, want % x", got, want)
		}
	}
}

func TestEncodeAppendsAndKeepsDstOnError(t *testing.T) {
	c := mustCompile(t, parseSchema(t, `{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"b","type":"string"}]}`), Options{})
	dst := []byte{0x00, 0x01, 0x02, 0x03, 0x04} // e.g. a Confluent header
	out, err := c.AppendEncode(dst, map[string]any{"a": 1, "b": "x"})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, []byte{0x00, 0x01, 0x02, 0x03, 0x04, 0x02, 0x02, 'x'}) {
		t.Errorf("appended % x", out)
	}
	out, err = c.AppendEncode(dst, map[string]any{"a": 1, "b": 2})
	if err == nil || len(out) != len(dst) {
		t.Errorf("bad value: out % x, err %v", out, err)
	}
}

func TestEncodeErrorsNameTheFieldPath(t *testing.T) {
	s, _ := sampleEnvelopeBytes(t)
	for _, opts := range []Options{{RawUnions: true, TranslateKafkaConnectTypes: true}, {}} {
		c := mustCompile(t, s, opts)
		env := mustDecode(t, c, hambaMarshal(t, s, sampleAccountEnvelope())).(map[string]any)
		after := env["after"].(map[string]any)
		if !opts.RawUnions {
			after = after["fulfillment.transactions_schema.T_Accounts.Value"].(map[string]any)
		}
		after["account_balance"] = "a lot"
		_, err := c.AppendEncode(nil, env)
		var ee *EncodeError
		if !errors.As(err, &ee) || ee.Path != "after.account_balance" {
			t.Fatalf("%+v: err = %v, want an EncodeError at after.account_balance", opts, err)
		}
		if !strings.Contains(err.Error(), "after.account_balance") {
			t.Errorf("message %q lacks the path", err)
		}
		delete(after, "account_balance") // no default
		_, err = c.AppendEncode(nil, env)
		if !errors.As(err, &ee) || ee.Path != "after.account_balance" || !strings.Contains(err.Error(), "missing") {
			t.Errorf("%+v: missing field: %v", opts, err)
		}
	}
	arr := mustCompile(t, parseSchema(t, `{"type":"record","name":"R","fields":[{"name":"xs","type":{"type":"array","items":{"type":"map","values":"int"}}}]}`), Options{})
	_, err := arr.AppendEncode(nil, map[string]any{"xs": []any{map[string]any{}, map[string]any{"k": "v"}}})
	var ee *EncodeError
	if !errors.As(err, &ee) || ee.Path != `xs[1]["k"]` {
		t.Errorf("err = %v, want path xs[1][\"k\"]", err)
	}
}

func TestEncodeMissingFieldsTakeDefaults(t *testing.T) {
	s, want := sampleEnvelopeBytes(t)
	c := mustCompile(t, s, Options{RawUnions: true, TranslateKafkaConnectTypes: true})
	v := mustDecode(t, c, want).(map[string]any)
	// before and transaction default to null, after.id to 0.
	delete(v, "before")
	delete(v, "transaction")
	if got := mustEncode(t, c, v); !bytes.Equal(got, want) {
		t.Errorf("defaults encoded\n% x\nwant\n% x", got, want)
	}
	after := v["after"].(map[string]any)
	delete(after, "id")
	delete(after, "created_at") // default 0: branch 0 (long) of [long, null]
	got := mustDecode(t, c, mustEncode(t, c, v)).(map[string]any)["after"].(map[string]any)
	assertValue(t, got["id"], int64(0))
	assertValue(t, got["created_at"], "1970-01-01T00:00:00Z")
}

func TestEncodeDefaultsOfEveryKind(t *testing.T) {
	s := parseSchema(t, `{"type":"record","name":"D","fields":[
		{"name":"b","type":"boolean","default":true},
		{"name":"f","type":"float","default":1.5},
		{"name":"d","type":"double","default":-2},
		{"name":"s","type":"string","default":"x"},
		{"name":"by","type":"bytes","default":"\u00ff"},
		{"name":"fx","type":{"type":"fixed","name":"F2","size":2},"default":"ab"},
		{"name":"e","type":{"type":"enum","name":"E","symbols":["A","B"]},"default":"B"},
		{"name":"a","type":{"type":"array","items":"int"},"default":[1,2]},
		{"name":"m","type":{"type":"map","values":"long"},"default":{"k":3}},
		{"name":"r","type":{"type":"record","name":"In","fields":[{"name":"x","type":"int","default":7},{"name":"y","type":["null","int"]}]},"default":{"y":null}},
		{"name":"u","type":["string","null"],"default":"z"}
	]}`)
	c := mustCompile(t, s, Options{RawUnions: true})
	got := mustDecode(t, c, mustEncode(t, c, map[string]any{}))
	assertValue(t, got, map[string]any{
		"b": true, "f": 1.5, "d": -2.0, "s": "x", "by": []byte{0xff}, "fx": []byte("ab"), "e": "B",
		"a": []any{int64(1), int64(2)}, "m": map[string]any{"k": int64(3)},
		"r": map[string]any{"x": int64(7), "y": nil}, "u": "z",
	})
}

func TestEncodeUnionsRaw(t *testing.T) {
	s := parseSchema(t, `["null","long","double","string",{"type":"array","items":"int"},{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]},"boolean"]`)
	c := mustCompile(t, s, Options{RawUnions: true})
	cases := []struct {
		in   any
		want []byte
	}{
		{nil, []byte{0x00}},
		{int64(5), []byte{0x02, 0x0a}},
		{json.Number("5"), []byte{0x02, 0x0a}},
		// A float goes to the double branch even when integral: that is
		// where a decoded float64 came from.
		{2.0, []byte{0x04, 0, 0, 0, 0, 0, 0, 0, 0x40}},
		{json.Number("1.5"), []byte{0x04, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f}},
		{"hi", []byte{0x06, 0x04, 'h', 'i'}},
		{[]any{1}, []byte{0x08, 0x02, 0x02, 0x00}},
		{map[string]any{"a": 1}, []byte{0x0a, 0x02}},
		{true, []byte{0x0c, 0x01}},
	}
	for _, tc := range cases {
		if got := mustEncode(t, c, tc.in); !bytes.Equal(got, tc.want) {
			t.Errorf("%T %v encoded as % x, want % x", tc.in, tc.in, got, tc.want)
		}
	}
	if _, err := c.AppendEncode(nil, []byte{1}); err == nil {
		t.Error("encoded bytes into a union without bytes")
	}
	notNull := mustCompile(t, parseSchema(t, `["long","string"]`), Options{RawUnions: true})
	if _, err := notNull.AppendEncode(nil, nil); err == nil || !strings.Contains(err.Error(), "null is not a branch") {
		t.Errorf("nil into [long,string]: %v", err)
	}
}

func TestEncodeRawUnionMapGoesToARecordFirst(t *testing.T) {
	c := mustCompile(t, parseSchema(t, `["null",{"type":"map","values":"int"},{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}]`),
		Options{RawUnions: true})
	if got := mustEncode(t, c, map[string]any{"a": 1}); !bytes.Equal(got, []byte{0x04, 0x02}) {
		t.Errorf("record-shaped map encoded as % x, want the record branch", got)
	}
	// Not a valid R: the map branch takes it.
	if got := mustEncode(t, c, map[string]any{"b": 1}); !bytes.Equal(got, []byte{0x02, 0x02, 0x02, 'b', 0x02, 0x00}) {
		t.Errorf("map encoded as % x, want the map branch", got)
	}
}

func TestEncodeUnionsWrapped(t *testing.T) {
	s := parseSchema(t, `["null","int","long",{"type":"record","name":"R","namespace":"ns","fields":[{"name":"a","type":"int"}]}]`)
	c := mustCompile(t, s, Options{})
	cases := []struct {
		in   any
		want []byte
	}{
		{nil, []byte{0x00}},
		{map[string]any{"null": nil}, []byte{0x00}},
		// The wrapper is what keeps int and long apart.
		{map[string]any{"int": 5}, []byte{0x02, 0x0a}},
		{map[string]any{"long": 5}, []byte{0x04, 0x0a}},
		{map[string]any{"ns.R": map[string]any{"a": 1}}, []byte{0x06, 0x02}},
		{map[string]any{"R": map[string]any{"a": 1}}, []byte{0x06, 0x02}}, // short name
		// A bare value falls back to the raw rule.
		{map[string]any{"a": 1}, []byte{0x06, 0x02}},
		{int64(7), []byte{0x02, 0x0e}},
	}
	for _, tc := range cases {
		if got := mustEncode(t, c, tc.in); !bytes.Equal(got, tc.want) {
			t.Errorf("%v encoded as % x, want % x", tc.in, got, tc.want)
		}
	}
	// Decoding gives the wrappers back.
	assertValue(t, mustDecode(t, c, []byte{0x04, 0x0a}), map[string]any{"long": int64(5)})
	assertValue(t, mustDecode(t, c, []byte{0x06, 0x02}), map[string]any{"ns.R": map[string]any{"a": int64(1)}})

	logical := mustCompile(t, parseSchema(t, `["null",{"type":"long","logicalType":"timestamp-millis"}]`), Options{PreserveLogicalTypes: true})
	for _, in := range []any{
		map[string]any{"long": "1970-01-01T00:00:01Z"},
		map[string]any{"long.timestamp-millis": int64(1000)}, // hamba's and goavro's spelling
	} {
		if got := mustEncode(t, logical, in); !bytes.Equal(got, []byte{0x02, 0xd0, 0x0f}) {
			t.Errorf("%v encoded as % x", in, got)
		}
	}
}

func TestEncodeRejectsCyclicValues(t *testing.T) {
	s := parseSchema(t, `{"type":"record","name":"L","fields":[{"name":"next","type":["null","L"]}]}`)
	c := mustCompile(t, s, Options{RawUnions: true})
	cyclic := map[string]any{}
	cyclic["next"] = cyclic
	if _, err := c.AppendEncode(nil, cyclic); err == nil || !strings.Contains(err.Error(), "nested deeper") {
		t.Errorf("cyclic value: %v", err)
	}
}

func TestDecimalEncodeShapes(t *testing.T) {
	c := mustCompile(t, parseSchema(t, `{"type":"bytes","logicalType":"decimal","precision":20,"scale":2}`),
		Options{PreserveLogicalTypes: true})
	cases := []struct {
		in   any
		want []byte // unscaled bytes
	}{
		{"12.34", []byte{0x04, 0xd2}},
		{"+12.340", []byte{0x04, 0xd2}},
		{"-2", []byte{0xff, 0x38}},
		{"-0.00", []byte{0x00}},
		{".5", []byte{0x32}},
		{"0.05", []byte{0x05}},
		{"1E2", []byte{0x27, 0x10}},
		{"123456789012345678.90", []byte{0x00, 0xab, 0x54, 0xa9, 0x8c, 0xeb, 0x1f, 0x0a, 0xd2}},
		{"-123456789012345678.90", []byte{0xff, 0x54, 0xab, 0x56, 0x73, 0x14, 0xe0, 0xf5, 0x2e}},
		{json.Number("12.3"), []byte{0x04, 0xce}},
		{12, []byte{0x04, 0xb0}},
		{int64(-1), []byte{0x9c}}, // -100 fits one byte
		{0.05, []byte{0x05}},
		{float32(0.25), []byte{0x19}},
		{1e3, []byte{0x01, 0x86, 0xa0}},
	}
	for _, tc := range cases {
		if got := mustEncode(t, c, tc.in); !bytes.Equal(got, bytesDatum(tc.want...)) {
			t.Errorf("%T %v encoded as % x, want % x", tc.in, tc.in, got, bytesDatum(tc.want...))
		}
	}
	// Never a silent rounding. (A variable, so that 0.1 + 0.2 is float64
	// arithmetic, not an exact constant.)
	tenth := 0.1
	for _, bad := range []any{"1.234", 0.055, json.Number("0.001"), tenth + 0.2, math.NaN(), math.Inf(-1),
		"", "-", ".", "1.2.3", "1e", "0x10", "NaN", "12,34", "1e99999999", true} {
		if _, err := c.AppendEncode(nil, bad); err == nil {
			t.Errorf("decimal encoded %T %v", bad, bad)
		}
	}
}
