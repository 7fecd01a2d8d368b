package avrocodec

import (
	"encoding/binary"
	"math"
)

// internMaxLen bounds the strings a decoder remembers, so that pooled
// decoders never keep large values alive.
const internMaxLen = 64

type nullNode struct{}

func (nullNode) decode(*decoder) (any, error) { return nil, nil }

func (nullNode) encode(dst []byte, v any, _ int) ([]byte, error) {
	if v != nil {
		return dst, encodeErrorf("want null, have %T", v)
	}
	return dst, nil
}

func (nullNode) classes() (class, class) { return clsNil, clsNil }

type boolNode struct{}

func (boolNode) decode(d *decoder) (any, error) {
	b, err := d.readBool()
	if err != nil {
		return nil, err
	}
	return b, nil
}

func (boolNode) encode(dst []byte, v any, _ int) ([]byte, error) {
	b, ok := v.(bool)
	if !ok {
		return dst, encodeErrorf("want a boolean, have %T", v)
	}
	if b {
		return append(dst, 1), nil
	}
	return append(dst, 0), nil
}

func (boolNode) classes() (class, class) { return clsBool, clsBool }

type intNode struct{}

func (intNode) decode(d *decoder) (any, error) {
	n, err := d.readInt()
	if err != nil {
		return nil, err
	}
	return int64(n), nil
}

func (intNode) encode(dst []byte, v any, _ int) ([]byte, error) {
	return appendIntValue(dst, v)
}

func appendIntValue(dst []byte, v any) ([]byte, error) {
	n, err := asInt64(v)
	if err != nil {
		return dst, encodeErrorf("int: %w", err)
	}
	if n < math.MinInt32 || n > math.MaxInt32 {
		return dst, encodeErrorf("%d overflows an int", n)
	}
	return appendLong(dst, n), nil
}

func (intNode) classes() (class, class) { return clsInt, clsNumeric }

type longNode struct{}

func (longNode) decode(d *decoder) (any, error) {
	n, err := d.readLong()
	if err != nil {
		return nil, err
	}
	return n, nil
}

func (longNode) encode(dst []byte, v any, _ int) ([]byte, error) {
	return appendLongValue(dst, v)
}

func appendLongValue(dst []byte, v any) ([]byte, error) {
	n, err := asInt64(v)
	if err != nil {
		return dst, encodeErrorf("long: %w", err)
	}
	return appendLong(dst, n), nil
}

func (longNode) classes() (class, class) { return clsInt, clsNumeric }

type floatNode struct{}

func (floatNode) decode(d *decoder) (any, error) {
	f, err := d.readFloat()
	if err != nil {
		return nil, err
	}
	return float64(f), nil
}

func (floatNode) encode(dst []byte, v any, _ int) ([]byte, error) {
	f, err := asFloat64(v)
	if err != nil {
		return dst, encodeErrorf("float: %w", err)
	}
	return binary.LittleEndian.AppendUint32(dst, math.Float32bits(float32(f))), nil
}

func (floatNode) classes() (class, class) { return clsFloat, clsNumeric }

type doubleNode struct{}

func (doubleNode) decode(d *decoder) (any, error) {
	f, err := d.readDouble()
	if err != nil {
		return nil, err
	}
	return f, nil
}

func (doubleNode) encode(dst []byte, v any, _ int) ([]byte, error) {
	f, err := asFloat64(v)
	if err != nil {
		return dst, encodeErrorf("double: %w", err)
	}
	return binary.LittleEndian.AppendUint64(dst, math.Float64bits(f)), nil
}

func (doubleNode) classes() (class, class) { return clsFloat, clsNumeric }

// stringNode decodes strings, reusing the previous value decoded at the same
// schema position when the bytes are equal (see decoder.intern).
type stringNode struct {
	slot int
}

func (n *stringNode) decode(d *decoder) (any, error) {
	l, err := d.readLength("string")
	if err != nil {
		return nil, err
	}
	b := d.readRaw(l)
	if l > internMaxLen {
		return string(b), nil
	}
	slot := &d.intern[n.slot]
	// The comparison does not allocate: the compiler compares the bytes in
	// place.
	if slot.v != nil && slot.s == string(b) {
		return slot.v, nil
	}
	s := string(b)
	slot.s, slot.v = s, s
	return slot.v, nil
}

func (n *stringNode) encode(dst []byte, v any, _ int) ([]byte, error) {
	s, ok := v.(string)
	if !ok {
		return dst, encodeErrorf("want a string, have %T", v)
	}
	dst = appendLong(dst, int64(len(s)))
	return append(dst, s...), nil
}

func (n *stringNode) classes() (class, class) { return clsString, clsString }

type bytesNode struct{}

func (bytesNode) decode(d *decoder) (any, error) {
	l, err := d.readLength("bytes")
	if err != nil {
		return nil, err
	}
	return copyBytes(d.readRaw(l)), nil
}

func (bytesNode) encode(dst []byte, v any, _ int) ([]byte, error) {
	switch b := v.(type) {
	case []byte:
		dst = appendLong(dst, int64(len(b)))
		return append(dst, b...), nil
	case string:
		dst = appendLong(dst, int64(len(b)))
		return append(dst, b...), nil
	default:
		return dst, encodeErrorf("want bytes or a string, have %T", v)
	}
}

func (bytesNode) classes() (class, class) { return clsBytes, clsBytes | clsString }

type fixedNode struct {
	size int
}

func (n fixedNode) decode(d *decoder) (any, error) {
	b, err := d.readFixed(n.size)
	if err != nil {
		return nil, err
	}
	return copyBytes(b), nil
}

func (n fixedNode) encode(dst []byte, v any, _ int) ([]byte, error) {
	switch b := v.(type) {
	case []byte:
		if len(b) != n.size {
			return dst, encodeErrorf("want %d bytes for fixed, have %d", n.size, len(b))
		}
		return append(dst, b...), nil
	case string:
		if len(b) != n.size {
			return dst, encodeErrorf("want %d bytes for fixed, have %d", n.size, len(b))
		}
		return append(dst, b...), nil
	default:
		return dst, encodeErrorf("want %d bytes for fixed, have %T", n.size, v)
	}
}

func (fixedNode) classes() (class, class) { return clsBytes, clsBytes | clsString }

type enumNode struct {
	// symbols are boxed once here so that decoding an enum never allocates.
	symbols []any
	index   map[string]int
}

func (n *enumNode) decode(d *decoder) (any, error) {
	start := d.pos
	i, err := d.readInt()
	if err != nil {
		return nil, err
	}
	if i < 0 || int(i) >= len(n.symbols) {
		return nil, d.errorAt(start, "enum index %d out of range [0,%d)", i, len(n.symbols))
	}
	return n.symbols[i], nil
}

func (n *enumNode) encode(dst []byte, v any, _ int) ([]byte, error) {
	s, ok := v.(string)
	if !ok {
		return dst, encodeErrorf("want an enum symbol, have %T", v)
	}
	i, ok := n.index[s]
	if !ok {
		return dst, encodeErrorf("%q is not a symbol of the enum", s)
	}
	return appendLong(dst, int64(i)), nil
}

func (n *enumNode) classes() (class, class) { return clsString, clsString }

// copyBytes copies b, non-nil even when empty: the result must not alias the
// caller's buffer, and an empty value is not a missing one.
func copyBytes(b []byte) []byte {
	out := make([]byte, len(b))
	copy(out, b)
	return out
}
