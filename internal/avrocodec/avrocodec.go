// Package avrocodec decodes Avro binary data into generic Go values, and
// encodes them back, through a decoder tree compiled once per schema.
//
// It exists because decoding Debezium change events is the hot path of the
// ODS pipeline: hamba/avro's generic decoding into map[string]any rebuilds
// its union and record decoders for every message, which costs several times
// what decoding into a struct does. A Codec does all schema-dependent work in
// Compile, so that Decode only reads bytes and builds the result.
//
// The values a Codec produces are the shapes Benthos mappings work with:
//
//	null              nil
//	boolean           bool
//	int, long         int64
//	float, double     float64
//	string            string
//	bytes, fixed      []byte
//	enum              string (the symbol)
//	array             []any
//	map               map[string]any
//	record            map[string]any keyed by field name, every field present
//	union             see Options.RawUnions
//
// Options turn Avro logical types and Kafka Connect / Debezium semantic types
// into readable, exact values (RFC 3339 timestamps, dates, decimal strings).
//
// Strings are not validated as UTF-8: a string's bytes are returned exactly as
// written. The writers we read from (Debezium through Java's encoder) write
// valid UTF-8, Java's and hamba's decoders do not reject invalid sequences
// either (Java substitutes U+FFFD), and passing the bytes through keeps
// decoding lossless (re-encoding yields the same bytes); a consumer that needs
// valid UTF-8, like PostgreSQL, rejects the value itself with a clear error.
//
// Untrusted input cannot make Decode panic, loop forever, or allocate out of
// proportion to its length: every length and count is checked against the
// bytes that remain before anything is allocated, nesting is limited to 1,000
// levels, arrays of items that take no bytes to 65,536 items, one decimal to
// 64 KiB, and the zeros that data-chosen decimal scales add to 1 MiB per
// datum.
package avrocodec

import (
	"fmt"
	"sync"

	"github.com/hamba/avro/v2"
)

// Limits that keep hostile input from exhausting the stack or memory. They are
// zeroSizeItems is the budget of items that take no bytes a datum of n
// bytes may hold (a record of them counting 16, for the map it still
// allocates): in proportion to the input, so that neither one array nor
// many (an array of arrays of nulls) turn a few bytes into gigabytes.
func zeroSizeItems(n int) int {
	return min(maxZeroSizeItems, 1024+64*n)
}

// far above anything a Debezium envelope or a sane application schema needs.
const (
	// maxDepth bounds the nesting of records, arrays, maps and unions that one
	// datum may reach. Without it a recursive schema (a linked list) lets a
	// few bytes per level drive the decoder's recursion past Go's stack limit,
	// which is a fatal error rather than a recoverable panic.
	maxDepth = 1000
	// maxZeroSizeItems bounds the items of arrays whose encoding can take
	// no bytes at all, such as an array of nulls or of records of nulls:
	// for them the remaining input gives no bound, and a single count of
	// 2^62 would otherwise spin the decoder or exhaust memory. They are
	// counted per datum (zeroSizeItems), not per array.
	maxZeroSizeItems = 1 << 16
	// maxScalePadding bounds, per datum, the zeros that data-chosen decimal
	// scales (io.debezium.data.VariableScaleDecimal) add to the decimal
	// strings: a three-byte scale could otherwise turn every few bytes of
	// input into kilobytes of output.
	maxScalePadding = 1 << 20
)

// Options choose how Avro values map to Go values. The zero value decodes
// exactly as the Avro JSON encoding does, with no translation of logical or
// semantic types.
type Options struct {
	// RawUnions: true → a union value is the bare value (nil for null).
	// false (Redpanda Connect's default) → the Avro JSON encoding: nil for
	// null, else map[string]any{branchName: value}, branchName = the full
	// name for named types (record/enum/fixed), else the type name ("string",
	// "long", "map", "array", …).
	//
	// Raw unions are what Debezium consumers want (after.id rather than
	// after["fulfillment.transactions_schema.T_Accounts.Value"].id); the
	// wrapped form is kept because it is lossless for unions with several
	// branches of one Go shape, such as ["int","long"], and because existing
	// Redpanda Connect configs rely on it.
	RawUnions bool

	// PreserveLogicalTypes: Avro logical types become readable values:
	// timestamp-millis/micros/nanos (and local-timestamp-*) → RFC 3339 UTC
	// strings (time.RFC3339Nano layout, formatted in UTC), date →
	// "YYYY-MM-DD", time-millis/micros → int64 unchanged, uuid → string,
	// decimal (bytes or fixed) → exact decimal string. false → primitives
	// (int64 for timestamps, raw []byte for decimal bytes).
	//
	// A timestamp or date outside the years 0000–9999, which RFC 3339 cannot
	// write, stays the raw int64 rather than failing the whole datum: such
	// values are sentinels (PostgreSQL's infinity), not dates to show.
	PreserveLogicalTypes bool

	// TranslateKafkaConnectTypes: Kafka Connect / Debezium semantic types,
	// found in the schema property "connect.name", are translated regardless
	// of PreserveLogicalTypes:
	//   - io.debezium.time.MicroTimestamp (long µs), io.debezium.time.Timestamp
	//     (long ms), io.debezium.time.NanoTimestamp (long ns),
	//     org.apache.kafka.connect.data.Timestamp (long ms) → RFC 3339 UTC
	//     string;
	//   - io.debezium.time.ZonedTimestamp (string) → kept as is;
	//   - io.debezium.time.Date and org.apache.kafka.connect.data.Date (int
	//     days since epoch) → "YYYY-MM-DD";
	//   - org.apache.kafka.connect.data.Decimal (bytes, scale in
	//     "connect.parameters": {"scale": "2"} and/or the decimal logicalType's
	//     scale) → exact decimal string;
	//   - io.debezium.data.VariableScaleDecimal (a record {scale: int, value:
	//     bytes}) → exact decimal string.
	//
	// Debezium writes these names rather than Avro logical types for most
	// columns, so without this option its timestamps are bare integers.
	TranslateKafkaConnectTypes bool
}

// Codec is one compiled schema. Safe for concurrent use.
//
// A Codec holds no per-call state of its own: scratch state lives in a pool
// so that concurrent decoders never contend on shared memory.
type Codec struct {
	schema avro.Schema
	root   node
	// internSlots is the number of string-interning slots a decoder needs:
	// one per string-valued schema position.
	internSlots int
	decoders    sync.Pool // *decoder
}

// Compile builds the decoder and encoder tree for schema.
//
// schema must come from its own avro.SchemaCache (avro.ParseWithCache with a
// fresh cache) when several versions of one named type are in use: Compile
// resolves named references through the schema itself, but hamba's global
// cache would already have mixed the versions up during parsing.
//
// Compile fails for schemas it cannot decode exactly: a decimal with a
// negative scale, or a Kafka Connect semantic type whose parameters are
// missing or contradictory when TranslateKafkaConnectTypes is set.
func Compile(schema avro.Schema, opts Options) (*Codec, error) {
	if schema == nil {
		return nil, fmt.Errorf("avrocodec: compile: nil schema")
	}
	c := newCompiler(opts)
	root, err := c.compile(schema)
	if err != nil {
		return nil, fmt.Errorf("avrocodec: compile %s: %w", schemaLabel(schema), err)
	}
	codec := &Codec{
		schema:      schema,
		root:        root.node,
		internSlots: c.internSlots,
	}
	codec.decoders.New = func() any {
		return &decoder{intern: make([]internSlot, codec.internSlots)}
	}
	return codec, nil
}

// Schema returns the schema the codec was compiled from.
func (c *Codec) Schema() avro.Schema {
	return c.schema
}

// Decode decodes one Avro binary datum (no container, no Confluent header).
//
// It must consume exactly len(b) bytes: trailing bytes and truncated input are
// errors. It never panics, whatever the input: lengths and counts are checked
// against the remaining bytes before allocating, and negative lengths, invalid
// union or enum indexes, varints longer than 10 bytes (5 for int, enum and
// union indexes), booleans other than 0 and 1, and values nested deeper than
// the limit are errors. Errors are *DecodeError values carrying the byte
// offset and the field path; truncation wraps ErrTruncated.
//
// Strings are returned as written, without UTF-8 validation (see the package
// documentation). The result never aliases b, so the caller may reuse b.
func (c *Codec) Decode(b []byte) (any, error) {
	d := c.decoders.Get().(*decoder)
	d.reset(b)
	v, err := c.root.decode(d)
	if err == nil && d.pos != len(b) {
		err = d.errorAt(d.pos, "%d trailing byte(s) after the datum", len(b)-d.pos)
	}
	// Drop the reference to the caller's buffer before pooling the decoder,
	// so that a pooled decoder never keeps a message alive.
	d.buf = nil
	c.decoders.Put(d)
	if err != nil {
		return nil, toDecodeError(err)
	}
	return v, nil
}

// AppendEncode encodes v (the same shapes Decode produces, for the same
// Options) and appends to dst.
//
// It also accepts the shapes a Benthos mapping yields: any Go integer, an
// integral float64 or a json.Number for int and long; ints and json.Number
// for float and double; a string for bytes; RFC 3339 strings or time.Time for
// translated timestamps and "YYYY-MM-DD" or time.Time for dates; decimal
// strings, json.Number, integers, or a float64 that is exact at the schema's
// scale for decimals (more fractional digits than the scale is an error,
// never a silent rounding). A record field missing from the map takes the
// field's default; without one it is an error. Keys that are not fields are
// ignored, as Avro encoders do.
//
// Unions take, with RawUnions, the first branch that accepts the value: nil
// selects the null branch, and a Go type goes first to a branch that decodes
// to that type, so a float64 picks a double branch over an earlier long.
// Without RawUnions they take nil or a single-key map naming the branch (its
// full name, a named type's short name, or the "long.timestamp-millis"
// spelling of hamba and goavro), falling back to the raw rule for any other
// value so that mappings need not know the wrapping.
//
// Errors are *EncodeError values naming the field path, e.g.
// "after.account_balance". On error dst is returned unchanged in length.
func (c *Codec) AppendEncode(dst []byte, v any) ([]byte, error) {
	start := len(dst)
	out, err := c.root.encode(dst, v, 0)
	if err != nil {
		return dst[:start], toEncodeError(err)
	}
	return out, nil
}
