package avrocodec

import (
	"encoding/binary"
	"fmt"
	"math"
)

// decoder is the state of one Decode call. Decoders are pooled per Codec, so
// the intern table survives from one message to the next on the same P.
type decoder struct {
	buf   []byte
	pos   int
	depth int
	// padBudget is what remains of maxScalePadding for this datum.
	padBudget int
	// zeroBudget is what remains of the items that take no bytes this
	// datum may hold (zeroSizeItems): counted across all its arrays, since
	// each such item may still allocate (a record of nulls is a map).
	zeroBudget int
	// intern remembers, per string-valued schema position, the last string
	// decoded there, already boxed: Debezium repeats most of its strings
	// (connector, db, schema, table, op, enum-like columns) in every message,
	// and returning the boxed copy saves two allocations each time.
	intern []internSlot
}

type internSlot struct {
	s string
	v any
}

func (d *decoder) reset(b []byte) {
	d.buf = b
	d.pos = 0
	d.depth = 0
	d.padBudget = maxScalePadding
	d.zeroBudget = zeroSizeItems(len(b))
}

// errorAt starts a decode error at offset; the path is added while unwinding.
func (d *decoder) errorAt(offset int, format string, args ...any) error {
	return &pathError{offset: offset, err: fmt.Errorf(format, args...)}
}

func (d *decoder) truncated(offset int, what string) error {
	return &pathError{offset: offset, err: fmt.Errorf("%s: %w", what, ErrTruncated)}
}

// enter guards recursion into nested values; leave must follow a successful
// enter.
func (d *decoder) enter() error {
	d.depth++
	if d.depth > maxDepth {
		return d.errorAt(d.pos, "values nested deeper than %d levels", maxDepth)
	}
	return nil
}

func (d *decoder) leave() { d.depth-- }

// readLong reads a zig-zag varint of at most 10 bytes whose value fits in 64
// bits.
func (d *decoder) readLong() (int64, error) {
	if d.pos < len(d.buf) {
		if c := d.buf[d.pos]; c < 0x80 {
			d.pos++
			return int64(c>>1) ^ -int64(c&1), nil
		}
	}
	start := d.pos
	var u uint64
	for shift := uint(0); ; shift += 7 {
		if d.pos >= len(d.buf) {
			return 0, d.truncated(start, "varint")
		}
		c := d.buf[d.pos]
		d.pos++
		if shift == 63 && c > 1 {
			// The tenth byte holds only bit 63; anything more is an
			// eleventh byte or bits beyond 64.
			return 0, d.errorAt(start, "varint longer than 10 bytes or above 64 bits")
		}
		u |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return int64(u>>1) ^ -int64(u&1), nil
		}
	}
}

// readInt reads a zig-zag varint of at most 5 bytes whose value fits in 32
// bits, as Avro's int requires.
func (d *decoder) readInt() (int32, error) {
	if d.pos < len(d.buf) {
		if c := d.buf[d.pos]; c < 0x80 {
			d.pos++
			return int32(c>>1) ^ -int32(c&1), nil
		}
	}
	start := d.pos
	var u uint32
	for shift := uint(0); ; shift += 7 {
		if d.pos >= len(d.buf) {
			return 0, d.truncated(start, "varint")
		}
		c := d.buf[d.pos]
		d.pos++
		if shift == 28 && c > 0x0f {
			return 0, d.errorAt(start, "int varint longer than 5 bytes or above 32 bits")
		}
		u |= uint32(c&0x7f) << shift
		if c < 0x80 {
			return int32(u>>1) ^ -int32(u&1), nil
		}
	}
}

// readLength reads a byte length and checks it against the remaining input
// before anyone allocates for it.
func (d *decoder) readLength(what string) (int, error) {
	start := d.pos
	n, err := d.readLong()
	if err != nil {
		return 0, err
	}
	if n < 0 {
		return 0, d.errorAt(start, "%s length %d is negative", what, n)
	}
	if n > int64(len(d.buf)-d.pos) {
		return 0, d.errorAt(start, "%s length %d exceeds the %d remaining bytes: %w", what, n, len(d.buf)-d.pos, ErrTruncated)
	}
	return int(n), nil
}

// readRaw returns the next n bytes without copying; n must have been
// checked.
func (d *decoder) readRaw(n int) []byte {
	b := d.buf[d.pos : d.pos+n : d.pos+n]
	d.pos += n
	return b
}

func (d *decoder) readFixed(n int) ([]byte, error) {
	if n > len(d.buf)-d.pos {
		return nil, d.truncated(d.pos, fmt.Sprintf("fixed of %d bytes", n))
	}
	return d.readRaw(n), nil
}

func (d *decoder) readBool() (bool, error) {
	if d.pos >= len(d.buf) {
		return false, d.truncated(d.pos, "boolean")
	}
	c := d.buf[d.pos]
	if c > 1 {
		return false, d.errorAt(d.pos, "boolean byte 0x%02x is neither 0 nor 1", c)
	}
	d.pos++
	return c == 1, nil
}

func (d *decoder) readFloat() (float32, error) {
	if len(d.buf)-d.pos < 4 {
		return 0, d.truncated(d.pos, "float")
	}
	v := math.Float32frombits(binary.LittleEndian.Uint32(d.buf[d.pos:]))
	d.pos += 4
	return v, nil
}

func (d *decoder) readDouble() (float64, error) {
	if len(d.buf)-d.pos < 8 {
		return 0, d.truncated(d.pos, "double")
	}
	v := math.Float64frombits(binary.LittleEndian.Uint64(d.buf[d.pos:]))
	d.pos += 8
	return v, nil
}

// readBlockCount reads the item count of one array or map block. A negative
// count announces a block byte size, which is read and checked but not
// needed since every item is decoded anyway. minItemSize is a lower bound of
// the bytes one item takes; it bounds the count by the remaining input, and
// the datum's zeroBudget bounds it when items may take no bytes, each
// charged zeroWeight.
func (d *decoder) readBlockCount(minItemSize, zeroWeight int) (int, error) {
	start := d.pos
	n, err := d.readLong()
	if err != nil {
		return 0, err
	}
	if n < 0 {
		if n == math.MinInt64 {
			return 0, d.errorAt(start, "block count %d is invalid", n)
		}
		n = -n
		if _, err := d.readLength("block byte size"); err != nil {
			return 0, err
		}
	}
	if n == 0 {
		return 0, nil
	}
	remaining := int64(len(d.buf) - d.pos)
	if minItemSize > 0 {
		if n > remaining/int64(minItemSize) {
			return 0, d.errorAt(start, "block of %d items cannot fit in the %d remaining bytes: %w", n, remaining, ErrTruncated)
		}
	} else if n > int64(d.zeroBudget/zeroWeight) {
		return 0, d.errorAt(start, "more items that take no bytes than a datum of %d bytes may hold (%d of weight %d)",
			len(d.buf), zeroSizeItems(len(d.buf)), zeroWeight)
	} else {
		d.zeroBudget -= int(n) * zeroWeight
	}
	return int(n), nil
}
