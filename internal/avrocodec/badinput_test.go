package avrocodec

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// decodeError decodes b, which must fail, and returns the DecodeError.
func decodeError(t *testing.T, c *Codec, b []byte) *DecodeError {
	t.Helper()
	v, err := c.Decode(b)
	if err == nil {
		t.Fatalf("decoded % .64x to %.200v, want an error", b, v)
	}
	var de *DecodeError
	if !errors.As(err, &de) {
		t.Fatalf("error %v (%T) is not a *DecodeError", err, err)
	}
	return de
}

func expectDecodeError(t *testing.T, c *Codec, b []byte, offset int, path, msg string) {
	t.Helper()
	de := decodeError(t, c, b)
	if de.Offset != offset || de.Path != path || !strings.Contains(de.Err.Error(), msg) {
		t.Errorf("decode % .64x: got offset %d path %q error %q; want offset %d path %q error containing %q",
			b, de.Offset, de.Path, de.Err, offset, path, msg)
	}
}

func TestTruncatedEnvelopeAtEveryCutPoint(t *testing.T) {
	s, b := sampleEnvelopeBytes(t)
	for _, opts := range allOptions() {
		c := mustCompile(t, s, opts)
		for cut := range len(b) {
			de := decodeError(t, c, b[:cut])
			if !errors.Is(de, ErrTruncated) {
				t.Errorf("cut at %d: %v does not wrap ErrTruncated", cut, de)
			}
			if de.Offset < 0 || de.Offset > cut {
				t.Errorf("cut at %d: offset %d outside the input", cut, de.Offset)
			}
		}
	}
}

func TestTrailingBytes(t *testing.T) {
	s, b := sampleEnvelopeBytes(t)
	c := mustCompile(t, s, Options{RawUnions: true})
	expectDecodeError(t, c, append(bytes.Clone(b), 0x00), len(b), "", "1 trailing byte(s)")
	expectDecodeError(t, mustCompile(t, parseSchema(t, `"null"`), Options{}), []byte{0x00}, 0, "", "1 trailing byte(s)")
}

func TestInvalidUnionIndex(t *testing.T) {
	s, b := sampleEnvelopeBytes(t)
	c := mustCompile(t, s, Options{RawUnions: true})
	bad := bytes.Clone(b)
	bad[0] = 0x04 // before: index 2 of ["null", Value]
	expectDecodeError(t, c, bad, 0, "before", "union index 2 out of range [0,2)")
	bad[0] = 0x01 // index -1
	expectDecodeError(t, c, bad, 0, "before", "union index -1 out of range")
	// after.created_at is [MicroTimestamp, "null"]; its index follows
	// after's index and four ints.
	bad = bytes.Clone(b)
	off := 1 + 1 + len(appendLong(nil, 42)) + len(appendLong(nil, 100042)) + 1 + len("active") +
		len(appendLong(nil, 250075)) + len(appendLong(nil, 7))
	if bad[off] != 0x00 {
		t.Fatalf("byte %d is %#x, not created_at's union index", off, bad[off])
	}
	bad[off] = 0x06
	expectDecodeError(t, c, bad, off, "after.created_at", "union index 3 out of range")
}

func TestBadLengths(t *testing.T) {
	str := mustCompile(t, parseSchema(t, `"string"`), Options{})
	by := mustCompile(t, parseSchema(t, `"bytes"`), Options{})
	maxLong := []byte{0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}
	for _, c := range []*Codec{str, by} {
		expectDecodeError(t, c, []byte{0x01}, 0, "", "length -1 is negative")
		expectDecodeError(t, c, []byte{0x03, 'a'}, 0, "", "length -2 is negative")
		expectDecodeError(t, c, []byte{0x06, 'a', 'b'}, 0, "", "length 3 exceeds the 2 remaining bytes")
		expectDecodeError(t, c, []byte{0xfe, 0xff, 0xff, 0xff, 0x0f}, 0, "", "length 2147483647 exceeds")
		expectDecodeError(t, c, maxLong, 0, "", "length 9223372036854775807 exceeds")
	}
	m := mustCompile(t, parseSchema(t, `{"type":"map","values":"int"}`), Options{})
	expectDecodeError(t, m, []byte{0x02, 0x01, 0x00}, 1, "", "map key length -1 is negative")
	expectDecodeError(t, m, append([]byte{0x02}, maxLong...), 1, "", "map key length 9223372036854775807 exceeds")
	rec := mustCompile(t, parseSchema(t, `{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"s","type":"string"}]}`), Options{})
	expectDecodeError(t, rec, []byte{0x02, 0x0a, 'x'}, 1, "s", "length 5 exceeds the 1 remaining bytes")
	fixed := mustCompile(t, parseSchema(t, `{"type":"fixed","name":"F","size":4}`), Options{})
	expectDecodeError(t, fixed, []byte{1, 2, 3}, 0, "", "fixed of 4 bytes")
}

func TestBadBlockCounts(t *testing.T) {
	ints := mustCompile(t, parseSchema(t, `{"type":"array","items":"int"}`), Options{})
	maxLong := []byte{0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}
	minLong := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}
	// Counts are checked against the remaining bytes before allocating.
	expectDecodeError(t, ints, maxLong, 0, "[0]", "block of 9223372036854775807 items cannot fit in the 0 remaining bytes")
	expectDecodeError(t, ints, []byte{0x06, 0x02, 0x02}, 0, "[0]", "block of 3 items cannot fit in the 2 remaining bytes")
	expectDecodeError(t, ints, minLong, 0, "[0]", "block count -9223372036854775808 is invalid")
	expectDecodeError(t, ints, []byte{0x03, 0x01}, 1, "[0]", "block byte size length -1 is negative")
	expectDecodeError(t, ints, []byte{0x02, 0x02}, 2, "[1]", "varint: unexpected end of input")

	doubles := mustCompile(t, parseSchema(t, `{"type":"array","items":"double"}`), Options{})
	expectDecodeError(t, doubles, append([]byte{0x02}, make([]byte, 7)...), 0, "[0]", "block of 1 items cannot fit in the 7 remaining bytes")

	// Items that take no bytes give no bound from the input: capped.
	nulls := mustCompile(t, parseSchema(t, `{"type":"array","items":"null"}`), Options{})
	v := mustDecode(t, nulls, append(appendLong(nil, 1000), 0x00))
	if arr := v.([]any); len(arr) != 1000 || arr[999] != nil {
		t.Errorf("1000 nulls decoded to %d items", len(arr))
	}
	expectDecodeError(t, nulls, append(appendLong(nil, 1<<40), 0x00), 0, "[0]", "more items that take no bytes than a datum of")
	// The cap is on the datum's total (1024 + 64 per input byte: 1344 for
	// these 5 bytes), not per block, nor per array.
	many := append(appendLong(nil, 700), appendLong(nil, 700)...)
	expectDecodeError(t, nulls, append(many, 0x00), 2, "[700]", "more items that take no bytes")
	empty := mustCompile(t, parseSchema(t, `{"type":"array","items":{"type":"record","name":"E","fields":[]}}`), Options{})
	expectDecodeError(t, empty, maxLong, 0, "[0]", "more items that take no bytes")

	m := mustCompile(t, parseSchema(t, `{"type":"map","values":"null"}`), Options{})
	// A map entry takes at least its key's length byte.
	expectDecodeError(t, m, append(appendLong(nil, 5), 0x00, 0x00), 0, "", "block of 5 items cannot fit in the 2 remaining bytes")
}

func TestBadVarints(t *testing.T) {
	long := mustCompile(t, parseSchema(t, `"long"`), Options{})
	eleven := []byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00}
	expectDecodeError(t, long, eleven, 0, "", "varint longer than 10 bytes")
	tooBig := []byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02}
	expectDecodeError(t, long, tooBig, 0, "", "above 64 bits")
	expectDecodeError(t, long, []byte{0x80, 0x80}, 0, "", "varint: unexpected end of input")
	expectDecodeError(t, long, nil, 0, "", "varint: unexpected end of input")

	intc := mustCompile(t, parseSchema(t, `"int"`), Options{})
	assertValue(t, mustDecode(t, intc, []byte{0xfe, 0xff, 0xff, 0xff, 0x0f}), int64(2147483647))
	expectDecodeError(t, intc, []byte{0x80, 0x80, 0x80, 0x80, 0x10}, 0, "", "above 32 bits")
	expectDecodeError(t, intc, []byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x00}, 0, "", "longer than 5 bytes")
}

func TestBadBooleansAndEnums(t *testing.T) {
	rec := mustCompile(t, parseSchema(t, `{"type":"record","name":"R","fields":[
		{"name":"ok","type":"boolean"},
		{"name":"color","type":{"type":"enum","name":"C","symbols":["RED","GREEN"]}}]}`), Options{})
	assertValue(t, mustDecode(t, rec, []byte{0x01, 0x02}), map[string]any{"ok": true, "color": "GREEN"})
	expectDecodeError(t, rec, []byte{0x02, 0x00}, 0, "ok", "boolean byte 0x02 is neither 0 nor 1")
	expectDecodeError(t, rec, []byte{0x00, 0x04}, 1, "color", "enum index 2 out of range [0,2)")
	expectDecodeError(t, rec, []byte{0x00, 0x01}, 1, "color", "enum index -1 out of range")
}

func TestDeepNesting(t *testing.T) {
	c := mustCompile(t, parseSchema(t, `{"type":"record","name":"L","fields":[{"name":"next","type":["null","L"]}]}`),
		Options{RawUnions: true})
	chain := func(depth int) []byte {
		return append(bytes.Repeat([]byte{0x02}, depth-1), 0x00)
	}
	v := mustDecode(t, c, chain(maxDepth))
	for range maxDepth - 1 {
		v = v.(map[string]any)["next"]
	}
	assertValue(t, v, map[string]any{"next": nil})
	// Deeper: an error, not a stack overflow, however long the input.
	for _, depth := range []int{maxDepth + 1, 1 << 20} {
		de := decodeError(t, c, chain(depth))
		if !strings.Contains(de.Err.Error(), "nested deeper than 1000 levels") || de.Offset != maxDepth {
			t.Errorf("depth %d: %v", depth, de)
		}
	}
}

func TestVariableScaleDecimalLimits(t *testing.T) {
	c := mustCompile(t, parseSchema(t, `{"type":"array","items":`+variableScaleDecimalSchema+`}`),
		Options{TranslateKafkaConnectTypes: true})
	// A scale of two million from four bytes of input.
	one := append(appendLong(nil, 2_000_000), 0x02, 0x01)
	expectDecodeError(t, c, append(append(appendLong(nil, 1), one...), 0x00), 1, "[0].scale", "adds more zeros than the 1048576-digit limit")
	// Each value within limits, together too many zeros for one datum.
	item := append(appendLong(nil, 16383), 0x02, 0x01)
	var in []byte
	in = appendLong(in, 100)
	for range 100 {
		in = append(in, item...)
	}
	in = append(in, 0x00)
	de := decodeError(t, c, in)
	if !strings.Contains(de.Err.Error(), "limit per datum") || de.Path != "[64].scale" {
		t.Errorf("many large scales: %v", de)
	}
	// PostgreSQL's largest scale alone is fine.
	v := mustDecode(t, c, append(append(appendLong(nil, 1), item...), 0x00)).([]any)
	if s := v[0].(string); len(s) != 16385 || !strings.HasPrefix(s, "0.000") || !strings.HasSuffix(s, "01") {
		t.Errorf("scale 16383: %d chars", len(s))
	}
}

func TestDecimalDigitLimitMatchesEncode(t *testing.T) {
	c := mustCompile(t, parseSchema(t, variableScaleDecimalSchema), Options{TranslateKafkaConnectTypes: true})
	// 1 × 10^149999 is the longest decimal text allowed, both ways.
	longest := append(appendLong(nil, -(maxDecimalDigits-1)), 0x02, 0x01)
	v := mustDecode(t, c, longest).(string)
	if len(v) != maxDecimalDigits {
		t.Fatalf("decoded %d digits", len(v))
	}
	back := mustDecode(t, c, mustEncode(t, c, v))
	assertValue(t, back, v)
	tooLong := append(appendLong(nil, -maxDecimalDigits), 0x02, 0x01)
	expectDecodeError(t, c, tooLong, 0, "value", "decimal of 150001 digits is longer than the 150000-digit limit")
	if _, err := c.AppendEncode(nil, v+"0"); err == nil {
		t.Error("encoded 150001 digits")
	}
}

func TestOversizedDecimalIsRejected(t *testing.T) {
	c := mustCompile(t, parseSchema(t, `{"type":"bytes","logicalType":"decimal","precision":20,"scale":2}`),
		Options{PreserveLogicalTypes: true})
	raw := make([]byte, maxDecimalBytes+1)
	raw[len(raw)-1] = 1
	expectDecodeError(t, c, bytesDatum(raw...), 0, "", "larger than the 65536-byte limit")
	ok := mustDecode(t, c, bytesDatum(raw[1:]...)).(string)
	if ok != "0.01" {
		t.Errorf("64 KiB decimal decoded to %.20q…", ok)
	}
}

func TestInvalidUTF8IsPassedThrough(t *testing.T) {
	c := mustCompile(t, parseSchema(t, `"string"`), Options{})
	in := []byte{0x06, 'a', 0xff, 0xc3}
	v := mustDecode(t, c, in)
	assertValue(t, v, "a\xff\xc3")
	if got := mustEncode(t, c, v); !bytes.Equal(got, in) {
		t.Errorf("re-encoded % x", got)
	}
}

func TestDecodeDoesNotAliasInput(t *testing.T) {
	c := mustCompile(t, parseSchema(t, `{"type":"record","name":"R","fields":[{"name":"s","type":"string"},{"name":"b","type":"bytes"},
		{"name":"f","type":{"type":"fixed","name":"F","size":2}}]}`), Options{})
	in := []byte{0x04, 'h', 'i', 0x04, 1, 2, 3, 4}
	v := mustDecode(t, c, in)
	for i := range in {
		in[i] = 0xee
	}
	assertValue(t, v, map[string]any{"s": "hi", "b": []byte{1, 2}, "f": []byte{3, 4}})
}

func TestInterningKeepsValuesApart(t *testing.T) {
	// Strings decoded at one position are reused only when equal.
	c := mustCompile(t, parseSchema(t, `{"type":"array","items":"string"}`), Options{})
	v := mustDecode(t, c, []byte{0x08, 0x02, 'a', 0x02, 'a', 0x02, 'b', 0x00, 0x00})
	assertValue(t, v, []any{"a", "a", "b", ""})
	v = mustDecode(t, c, []byte{0x04, 0x02, 'b', 0x02, 'c', 0x00})
	assertValue(t, v, []any{"b", "c"})
}

func TestErrorMessages(t *testing.T) {
	s, b := sampleEnvelopeBytes(t)
	c := mustCompile(t, s, Options{RawUnions: true})
	if c.Schema() != s {
		t.Error("Schema() is not the compiled schema")
	}
	bad := bytes.Clone(b)
	bad[0] = 0x04
	_, err := c.Decode(bad)
	if got, want := err.Error(), "avrocodec: decode before at byte 0: union index 2 out of range [0,2)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	_, err = c.Decode(append(bytes.Clone(b), 1, 2))
	if got, want := err.Error(), fmt.Sprintf("avrocodec: decode at byte %d: 2 trailing byte(s) after the datum", len(b)); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	_, err = c.Decode(b[:3])
	if !errors.Is(err, ErrTruncated) || !strings.HasPrefix(err.Error(), "avrocodec: decode after.account_number at byte 3: varint: unexpected end of input") {
		t.Errorf("truncated: %v", err)
	}
	v := mustDecode(t, c, b).(map[string]any)
	v["after"].(map[string]any)["account_balance"] = "lots"
	_, err = c.AppendEncode(nil, v)
	if got, want := err.Error(), "avrocodec: encode after.account_balance: int: want an integer, have string"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	_, err = mustCompile(t, parseSchema(t, `"int"`), Options{}).AppendEncode(nil, "x")
	if got, want := err.Error(), "avrocodec: encode: int: want an integer, have string"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	_, err = Compile(parseSchema(t, `{"type":"record","name":"R","namespace":"n","fields":[{"name":"a","type":{"type":"bytes","logicalType":"decimal","precision":4,"scale":-1}}]}`),
		Options{PreserveLogicalTypes: true})
	if got, want := err.Error(), "avrocodec: compile n.R: n.R.a: decimal has negative scale -1"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if _, err := Compile(nil, Options{}); err == nil {
		t.Error("compiled a nil schema")
	}
}

// Items that take no bytes cannot make a tiny input allocate out of
// proportion: not one array of records of nulls (a map each), nor many
// arrays of nulls (an array of arrays, each with its own allowance before).
func TestZeroSizeItemsStayInProportionToTheInput(t *testing.T) {
	for _, tc := range []struct {
		name, schema string
		data         []byte
	}{
		{"array of records of null", `{"type":"array","items":{"type":"record","name":"R","fields":[{"name":"a","type":"null"}]}}`,
			append(appendLong(nil, 65536), 0x00)},
		{"array of arrays of null", `{"type":"array","items":{"type":"array","items":"null"}}`, func() []byte {
			b := appendLong(nil, 64)
			for range 64 {
				b = append(appendLong(b, 65536), 0x00)
			}
			return append(b, 0x00)
		}()},
	} {
		c := mustCompile(t, parseSchema(t, tc.schema), Options{})
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		_, err := c.Decode(tc.data)
		runtime.ReadMemStats(&after)
		if n := after.TotalAlloc - before.TotalAlloc; err == nil || n/uint64(len(tc.data)) > 10000 {
			t.Errorf("%s: %d bytes of input allocated %d bytes (error %v)", tc.name, len(tc.data), n, err)
		}
	}
}
