package avrocodec

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"math/bits"
	"strconv"
	"strings"
)

const (
	// maxDecimalBytes bounds the unscaled integer of one decimal: converting
	// big integers to text costs more than linear time, so one value must
	// not be allowed to take seconds. 64 KiB holds PostgreSQL's largest
	// numeric (131,072 digits before the point, 16,383 after).
	maxDecimalBytes = 1 << 16
	// maxDecimalDigits bounds the digits of a decimal text, decoded or
	// encoded: for the same reason, so that an exponent or a scale cannot
	// ask for a gigabyte of zeros, and so that whatever decodes re-encodes
	// and the other way round (150,000 digits take at most 62,289 bytes).
	maxDecimalDigits = 150_000
)

// formatDecimal writes the exact decimal text of the two's-complement,
// big-endian unscaled integer b at scale: always exactly scale digits after
// the point, none and no point for scale 0, and -scale zeros appended for a
// negative scale. Values of up to 8 bytes, all real money, take a path
// without math/big.
func formatDecimal(b []byte, scale int) (string, error) {
	if len(b) > maxDecimalBytes {
		return "", fmt.Errorf("decimal of %d bytes is larger than the %d-byte limit", len(b), maxDecimalBytes)
	}
	var buf [24]byte
	var digits []byte
	neg := false
	switch {
	case len(b) == 0:
		// Java never writes an empty unscaled value; read it as zero
		// rather than reject what carries no ambiguity.
		digits = append(buf[:0], '0')
	case len(b) <= 8:
		v := int64(int8(b[0]))
		for _, c := range b[1:] {
			v = v<<8 | int64(c)
		}
		mag := uint64(v)
		if v < 0 {
			neg, mag = true, -mag
		}
		digits = strconv.AppendUint(buf[:0], mag, 10)
	default:
		x := new(big.Int).SetBytes(b)
		if b[0]&0x80 != 0 {
			neg = true
			x.Sub(new(big.Int).Lsh(big.NewInt(1), uint(8*len(b))), x)
		}
		digits = x.Append(nil, 10)
	}
	if n := textDigits(digits, scale); n > maxDecimalDigits {
		return "", fmt.Errorf("decimal of %d digits is longer than the %d-digit limit", n, maxDecimalDigits)
	}
	return placePoint(neg, digits, scale), nil
}

// textDigits counts the digits placePoint writes.
func textDigits(digits []byte, scale int) int {
	n := len(digits)
	switch {
	case scale <= 0:
		if n == 1 && digits[0] == '0' {
			return 1
		}
		return n - scale
	case n <= scale:
		return scale + 1 // "0." and scale digits
	default:
		return n
	}
}

// placePoint renders magnitude digits (no leading zeros, "0" for zero) at
// scale.
func placePoint(neg bool, digits []byte, scale int) string {
	var sb strings.Builder
	n := len(digits)
	switch {
	case scale <= 0:
		sb.Grow(n + 1 - scale)
		if neg {
			sb.WriteByte('-')
		}
		sb.Write(digits)
		if !(n == 1 && digits[0] == '0') {
			for range -scale {
				sb.WriteByte('0')
			}
		}
	case n <= scale:
		sb.Grow(scale + 3)
		if neg {
			sb.WriteByte('-')
		}
		sb.WriteString("0.")
		for range scale - n {
			sb.WriteByte('0')
		}
		sb.Write(digits)
	default:
		sb.Grow(n + 2)
		if neg {
			sb.WriteByte('-')
		}
		sb.Write(digits[:n-scale])
		sb.WriteByte('.')
		sb.Write(digits[n-scale:])
	}
	return sb.String()
}

// decimalText is a parsed decimal number: (-1 if neg) × digits × 10^exp.
type decimalText struct {
	neg bool
	// digits has no leading zeros; empty means zero.
	digits string
	exp    int
}

var errDecimalSyntax = errors.New("not a decimal number")

// parseDecimalText parses [+-]digits[.digits][(e|E)[+-]digits], the forms of
// decimal strings, json.Number and strconv's float formatting.
func parseDecimalText(s string) (decimalText, error) {
	var t decimalText
	i := 0
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		t.neg = s[i] == '-'
		i++
	}
	intStart := i
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	intPart := s[intStart:i]
	frac := ""
	if i < len(s) && s[i] == '.' {
		i++
		fracStart := i
		for i < len(s) && isDigit(s[i]) {
			i++
		}
		frac = s[fracStart:i]
	}
	if intPart == "" && frac == "" {
		return t, fmt.Errorf("%q: %w", s, errDecimalSyntax)
	}
	exp := 0
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		expStart := i
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		digitStart := i
		for i < len(s) && isDigit(s[i]) {
			i++
		}
		if digitStart == i || i-digitStart > 7 {
			return t, fmt.Errorf("%q: %w", s, errDecimalSyntax)
		}
		exp, _ = strconv.Atoi(s[expStart:i])
	}
	if i != len(s) {
		return t, fmt.Errorf("%q: %w", s, errDecimalSyntax)
	}
	if len(intPart)+len(frac) > maxDecimalDigits {
		return t, fmt.Errorf("decimal of %d digits is longer than the %d-digit limit", len(intPart)+len(frac), maxDecimalDigits)
	}
	all := intPart + frac
	all = strings.TrimLeft(all, "0")
	t.digits = all
	t.exp = exp - len(frac)
	if t.digits == "" {
		t.neg = false
	}
	return t, nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// decimalFromValue reads the decimal shapes a mapping may produce.
func decimalFromValue(v any) (decimalText, error) {
	switch x := v.(type) {
	case string:
		return parseDecimalText(x)
	case json.Number:
		return parseDecimalText(string(x))
	case float64:
		return decimalFromFloat(x)
	case float32:
		return decimalFromFloat(float64(x))
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		n, err := asInt64(v)
		if err != nil {
			return decimalText{}, err
		}
		return parseDecimalText(strconv.FormatInt(n, 10))
	default:
		return decimalText{}, fmt.Errorf("want a decimal string or number, have %T", v)
	}
}

// decimalFromFloat takes the shortest text that reads back as f: that is
// the number the float was written from, and whether it fits the scale is
// then an exact question.
func decimalFromFloat(f float64) (decimalText, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return decimalText{}, fmt.Errorf("%v is not a decimal number", f)
	}
	return parseDecimalText(strconv.FormatFloat(f, 'g', -1, 64))
}

// unscaledAt returns the digits of t's unscaled integer at scale, failing
// when t has more fractional digits than scale, which would need rounding.
func (t decimalText) unscaledAt(scale int) (string, error) {
	if t.digits == "" {
		return "", nil
	}
	shift := t.exp + scale
	switch {
	case shift > 0:
		if len(t.digits)+shift > maxDecimalDigits {
			return "", fmt.Errorf("decimal of %d digits is longer than the %d-digit limit", len(t.digits)+shift, maxDecimalDigits)
		}
		return t.digits + strings.Repeat("0", shift), nil
	case shift < 0:
		k := -shift
		if k >= len(t.digits) || strings.TrimRight(t.digits[len(t.digits)-k:], "0") != "" {
			return "", fmt.Errorf("%s has more fractional digits than the scale %d allows", t.String(), scale)
		}
		return t.digits[:len(t.digits)-k], nil
	default:
		return t.digits, nil
	}
}

// String renders t for error messages.
func (t decimalText) String() string {
	d := t.digits
	if d == "" {
		d = "0"
	}
	sign := ""
	if t.neg {
		sign = "-"
	}
	return fmt.Sprintf("%s%se%d", sign, d, t.exp)
}

// naturalScale is the scale at which t is written: its fractional digits,
// or 0 for an integer with a positive exponent.
func (t decimalText) naturalScale() int {
	return max(0, -t.exp)
}

// appendTwos appends the minimal two's-complement big-endian bytes of the
// integer with the given magnitude digits, the encoding Java's
// BigInteger.toByteArray produces.
func appendTwos(dst []byte, neg bool, digits string) []byte {
	if len(digits) <= 18 {
		var mag int64
		for i := 0; i < len(digits); i++ {
			mag = mag*10 + int64(digits[i]-'0')
		}
		if neg {
			mag = -mag
		}
		return appendInt64Twos(dst, mag)
	}
	x, _ := new(big.Int).SetString(digits, 10)
	if neg {
		x.Neg(x)
	}
	return appendBigTwos(dst, x)
}

func appendInt64Twos(dst []byte, x int64) []byte {
	u := uint64(x)
	if x < 0 {
		u = ^u // |x|-1: its bit length decides the bytes a negative needs
	}
	n := (64-bits.LeadingZeros64(u))/8 + 1
	if n > 8 {
		n = 8
	}
	for i := n - 1; i >= 0; i-- {
		dst = append(dst, byte(x>>(8*i)))
	}
	return dst
}

func appendBigTwos(dst []byte, x *big.Int) []byte {
	if x.Sign() >= 0 {
		b := x.Bytes()
		if len(b) == 0 || b[0]&0x80 != 0 {
			dst = append(dst, 0)
		}
		return append(dst, b...)
	}
	// -x-1 = ^x in two's complement: its bytes, inverted, are x's.
	t := new(big.Int).Neg(x)
	t.Sub(t, big.NewInt(1))
	n := t.BitLen()/8 + 1
	b := t.FillBytes(make([]byte, n))
	for i := range b {
		b[i] = ^b[i]
	}
	return append(dst, b...)
}
