package avrocodec

import (
	"encoding/hex"
	"fmt"
	"math"
	"time"
)

// The instants RFC 3339 can write: years 0000 to 9999.
const (
	minRFC3339Unix = -62167219200 // 0000-01-01T00:00:00Z
	maxRFC3339Unix = 253402300799 // 9999-12-31T23:59:59Z
	secondsPerDay  = 86400
)

// timestampNode translates a long count of units since the Unix epoch
// (milliseconds, microseconds or nanoseconds) to an RFC 3339 UTC string.
type timestampNode struct {
	perSecond int64
}

func (n timestampNode) decode(d *decoder) (any, error) {
	v, err := d.readLong()
	if err != nil {
		return nil, err
	}
	sec, sub := v/n.perSecond, v%n.perSecond
	if sub < 0 {
		sec, sub = sec-1, sub+n.perSecond
	}
	if sec < minRFC3339Unix || sec > maxRFC3339Unix {
		return v, nil // see Options.PreserveLogicalTypes
	}
	var buf [32]byte
	return string(appendRFC3339UTC(buf[:0], sec, sub*(1e9/n.perSecond))), nil
}

func (n timestampNode) encode(dst []byte, v any, _ int) ([]byte, error) {
	var t time.Time
	switch x := v.(type) {
	case string:
		var err error
		t, err = time.Parse(time.RFC3339Nano, x)
		if err != nil {
			return dst, encodeErrorf("timestamp %q is not RFC 3339", x)
		}
	case time.Time:
		t = x
	default:
		return appendLongValue(dst, v)
	}
	units, err := unixUnits(t, n.perSecond)
	if err != nil {
		return dst, encodeErrorf("timestamp %s: %w", t.Format(time.RFC3339Nano), err)
	}
	return appendLong(dst, units), nil
}

func (timestampNode) classes() (class, class) {
	return clsString | clsTime, clsNumeric | clsString | clsTime
}

// appendRFC3339UTC writes sec.nsec since the epoch as time.RFC3339Nano
// formats it in UTC (fraction without trailing zeros, none when zero). It is
// the time package's output, computed without building a time.Time: it runs
// for every timestamp column of every message. sec must lie within the
// years 0000-9999.
func appendRFC3339UTC(dst []byte, sec, nsec int64) []byte {
	days := sec / secondsPerDay
	rem := sec % secondsPerDay
	if rem < 0 {
		days, rem = days-1, rem+secondsPerDay
	}
	dst = appendDate(dst, days)
	dst = append(dst, 'T')
	dst = append2(dst, rem/3600)
	dst = append(dst, ':')
	dst = append2(dst, rem/60%60)
	dst = append(dst, ':')
	dst = append2(dst, rem%60)
	if nsec != 0 {
		var frac [9]byte
		for i := 8; i >= 0; i-- {
			frac[i] = byte('0' + nsec%10)
			nsec /= 10
		}
		n := 9
		for frac[n-1] == '0' {
			n--
		}
		dst = append(dst, '.')
		dst = append(dst, frac[:n]...)
	}
	return append(dst, 'Z')
}

// appendDate writes the proleptic Gregorian date of days since 1970-01-01
// as YYYY-MM-DD, for years 0000-9999. The conversion is the classic
// era-based civil-from-days calculation: 400-year eras of 146097 days,
// years starting in March so that the leap day comes last.
func appendDate(dst []byte, days int64) []byte {
	z := days + 719468 // days since 0000-03-01
	era := z / 146097
	if z < 0 && z%146097 != 0 {
		era--
	}
	doe := z - era*146097                                  // day of era [0, 146096]
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365 // year of era [0, 399]
	doy := doe - (365*yoe + yoe/4 - yoe/100)               // day of March-based year [0, 365]
	mp := (5*doy + 2) / 153                                // month from March [0, 11]
	d := doy - (153*mp+2)/5 + 1
	m := mp + 3
	if mp >= 10 {
		m = mp - 9
	}
	y := yoe + era*400
	if m <= 2 {
		y++
	}
	dst = append2(dst, y/100)
	dst = append2(dst, y%100)
	dst = append(dst, '-')
	dst = append2(dst, m)
	dst = append(dst, '-')
	return append2(dst, d)
}

func append2(dst []byte, v int64) []byte {
	return append(dst, byte('0'+v/10), byte('0'+v%10))
}

// unixUnits converts t to units since the epoch, dropping (flooring) any
// precision finer than the unit, as Kafka Connect does for its timestamps.
func unixUnits(t time.Time, perSecond int64) (int64, error) {
	sec := t.Unix()
	if sec > math.MaxInt64/perSecond || sec < math.MinInt64/perSecond {
		return 0, fmt.Errorf("out of range for a long of %d units per second", perSecond)
	}
	whole := sec * perSecond
	frac := int64(t.Nanosecond()) / (1e9 / perSecond)
	if whole > math.MaxInt64-frac {
		return 0, fmt.Errorf("out of range for a long of %d units per second", perSecond)
	}
	return whole + frac, nil
}

// dateNode translates an int count of days since the Unix epoch to
// "YYYY-MM-DD".
type dateNode struct{}

func (dateNode) decode(d *decoder) (any, error) {
	days, err := d.readInt()
	if err != nil {
		return nil, err
	}
	sec := int64(days) * secondsPerDay
	if sec < minRFC3339Unix || sec > maxRFC3339Unix {
		return int64(days), nil // see Options.PreserveLogicalTypes
	}
	var buf [10]byte
	return string(appendDate(buf[:0], int64(days))), nil
}

func (dateNode) encode(dst []byte, v any, _ int) ([]byte, error) {
	var t time.Time
	switch x := v.(type) {
	case string:
		var err error
		t, err = time.Parse(time.DateOnly, x)
		if err != nil {
			return dst, encodeErrorf("date %q is not YYYY-MM-DD", x)
		}
	case time.Time:
		// The calendar date the value shows, in its own location: a
		// date is not an instant.
		y, m, d := x.Date()
		t = time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
	default:
		return appendIntValue(dst, v)
	}
	days := t.Unix() / secondsPerDay
	if days < math.MinInt32 || days > math.MaxInt32 {
		return dst, encodeErrorf("date %s is out of range", t.Format(time.DateOnly))
	}
	return appendLong(dst, days), nil
}

func (dateNode) classes() (class, class) {
	return clsString | clsTime, clsNumeric | clsString | clsTime
}

// decimalNode translates a decimal (bytes when size < 0, else fixed of size
// bytes) to its exact text.
type decimalNode struct {
	scale int
	size  int
}

func (n *decimalNode) decode(d *decoder) (any, error) {
	start := d.pos
	var raw []byte
	if n.size < 0 {
		l, err := d.readLength("decimal")
		if err != nil {
			return nil, err
		}
		raw = d.readRaw(l)
	} else {
		var err error
		if raw, err = d.readFixed(n.size); err != nil {
			return nil, err
		}
	}
	s, err := formatDecimal(raw, n.scale)
	if err != nil {
		return nil, d.errorAt(start, "%w", err)
	}
	return s, nil
}

func (n *decimalNode) encode(dst []byte, v any, _ int) ([]byte, error) {
	if raw, ok := v.([]byte); ok {
		// The Avro primitive: the unscaled value in two's complement, as
		// schema_registry_decode gives it without preserve_logical_types.
		return n.encodeRaw(dst, raw)
	}
	t, err := decimalFromValue(v)
	if err != nil {
		return dst, encodeErrorf("decimal: %w", err)
	}
	digits, err := t.unscaledAt(n.scale)
	if err != nil {
		return dst, encodeErrorf("decimal: %w", err)
	}
	if n.size < 0 {
		var buf [16]byte
		b := appendTwos(buf[:0], t.neg, digits)
		dst = appendLong(dst, int64(len(b)))
		return append(dst, b...), nil
	}
	var buf [16]byte
	b := appendTwos(buf[:0], t.neg, digits)
	if len(b) > n.size {
		return dst, encodeErrorf("decimal %v needs %d bytes, more than the fixed size %d", v, len(b), n.size)
	}
	pad := byte(0)
	if t.neg && len(digits) > 0 {
		pad = 0xff
	}
	for range n.size - len(b) {
		dst = append(dst, pad)
	}
	return append(dst, b...), nil
}

// encodeRaw writes raw, an unscaled two's-complement value, as is; a fixed
// decimal's is sign-extended to the fixed size.
func (n *decimalNode) encodeRaw(dst []byte, raw []byte) ([]byte, error) {
	if n.size < 0 {
		dst = appendLong(dst, int64(len(raw)))
		return append(dst, raw...), nil
	}
	if len(raw) > n.size {
		return dst, encodeErrorf("decimal of %d bytes, more than the fixed size %d", len(raw), n.size)
	}
	pad := byte(0)
	if len(raw) > 0 && raw[0]&0x80 != 0 {
		pad = 0xff
	}
	for range n.size - len(raw) {
		dst = append(dst, pad)
	}
	return append(dst, raw...), nil
}

func (*decimalNode) classes() (class, class) {
	return clsString | clsNumber, clsNumeric | clsString | clsBytes
}

// variableDecimalNode translates Debezium's VariableScaleDecimal record
// {scale: int, value: bytes}, whose scale travels with each value.
type variableDecimalNode struct {
	// scaleFirst is the field order of the writer's schema.
	scaleFirst bool
}

func (n *variableDecimalNode) decode(d *decoder) (any, error) {
	if err := d.enter(); err != nil {
		return nil, err
	}
	var (
		scaleStart int
		scale      int32
		raw        []byte
		err        error
	)
	if n.scaleFirst {
		scaleStart = d.pos
		if scale, err = d.readInt(); err != nil {
			return nil, inField(err, "scale")
		}
		if raw, err = readBytesRaw(d); err != nil {
			return nil, inField(err, "value")
		}
	} else {
		if raw, err = readBytesRaw(d); err != nil {
			return nil, inField(err, "value")
		}
		scaleStart = d.pos
		if scale, err = d.readInt(); err != nil {
			return nil, inField(err, "scale")
		}
	}
	d.leave()
	// The scale comes from the data, so the zeros it adds are charged to
	// the datum's budget.
	padding := int(scale)
	if padding < 0 {
		padding = -padding
	}
	if padding > d.padBudget {
		return nil, inField(d.errorAt(scaleStart, "decimal scale %d adds more zeros than the %d-digit limit per datum", scale, maxScalePadding), "scale")
	}
	d.padBudget -= padding
	s, err := formatDecimal(raw, int(scale))
	if err != nil {
		return nil, inField(d.errorAt(scaleStart, "%w", err), "value")
	}
	return s, nil
}

// readBytesRaw reads a length-prefixed bytes value without copying it.
func readBytesRaw(d *decoder) ([]byte, error) {
	l, err := d.readLength("bytes")
	if err != nil {
		return nil, err
	}
	return d.readRaw(l), nil
}

func (n *variableDecimalNode) encode(dst []byte, v any, _ int) ([]byte, error) {
	var (
		t     decimalText
		scale int
		err   error
	)
	if m, ok := v.(map[string]any); ok {
		// The untranslated shape, {scale, value}, as a mapping may pass it
		// through.
		return n.encodeRecord(dst, m)
	}
	t, err = decimalFromValue(v)
	if err != nil {
		return dst, encodeErrorf("decimal: %w", err)
	}
	scale = t.naturalScale()
	if scale > math.MaxInt32 {
		return dst, encodeErrorf("decimal scale %d overflows an int", scale)
	}
	digits, err := t.unscaledAt(scale)
	if err != nil {
		return dst, encodeErrorf("decimal: %w", err)
	}
	var buf [16]byte
	b := appendTwos(buf[:0], t.neg, digits)
	return n.appendParts(dst, int64(scale), b), nil
}

func (n *variableDecimalNode) encodeRecord(dst []byte, m map[string]any) ([]byte, error) {
	rawScale, ok := m["scale"]
	if !ok {
		return dst, inField(encodeErrorf("missing, and the field has no default"), "scale")
	}
	scale, err := asInt64(rawScale)
	if err != nil || scale < math.MinInt32 || scale > math.MaxInt32 {
		return dst, inField(encodeErrorf("want an int, have %v", rawScale), "scale")
	}
	var b []byte
	switch x := m["value"].(type) {
	case []byte:
		b = x
	case string:
		b = []byte(x)
	default:
		return dst, inField(encodeErrorf("want bytes, have %T", m["value"]), "value")
	}
	return n.appendParts(dst, scale, b), nil
}

func (n *variableDecimalNode) appendParts(dst []byte, scale int64, b []byte) []byte {
	if n.scaleFirst {
		dst = appendLong(dst, scale)
	}
	dst = appendLong(dst, int64(len(b)))
	dst = append(dst, b...)
	if !n.scaleFirst {
		dst = appendLong(dst, scale)
	}
	return dst
}

func (*variableDecimalNode) classes() (class, class) {
	return clsString | clsNumber, clsNumeric | clsString | clsMap
}

// uuidFixedNode translates a uuid on fixed(16) to its canonical text.
type uuidFixedNode struct{}

func (uuidFixedNode) decode(d *decoder) (any, error) {
	b, err := d.readFixed(16)
	if err != nil {
		return nil, err
	}
	var buf [36]byte
	hex.Encode(buf[0:8], b[0:4])
	buf[8] = '-'
	hex.Encode(buf[9:13], b[4:6])
	buf[13] = '-'
	hex.Encode(buf[14:18], b[6:8])
	buf[18] = '-'
	hex.Encode(buf[19:23], b[8:10])
	buf[23] = '-'
	hex.Encode(buf[24:36], b[10:16])
	return string(buf[:]), nil
}

func (uuidFixedNode) encode(dst []byte, v any, _ int) ([]byte, error) {
	switch x := v.(type) {
	case []byte:
		if len(x) != 16 {
			return dst, encodeErrorf("want 16 bytes for a uuid, have %d", len(x))
		}
		return append(dst, x...), nil
	case string:
		if len(x) != 36 || x[8] != '-' || x[13] != '-' || x[18] != '-' || x[23] != '-' {
			return dst, encodeErrorf("%q is not a uuid", x)
		}
		var b [16]byte
		hexDigits := x[0:8] + x[9:13] + x[14:18] + x[19:23] + x[24:36]
		if _, err := hex.Decode(b[:], []byte(hexDigits)); err != nil {
			return dst, encodeErrorf("%q is not a uuid", x)
		}
		return append(dst, b[:]...), nil
	default:
		return dst, encodeErrorf("want a uuid string, have %T", v)
	}
}

func (uuidFixedNode) classes() (class, class) { return clsString, clsString | clsBytes }
