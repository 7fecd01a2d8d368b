package avrocodec

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
)

// class is a set of Go value kinds, used to pick a union branch for a bare
// value without trying branches that could never take it.
type class uint16

const (
	clsNil class = 1 << iota
	clsBool
	clsInt    // Go integer types
	clsFloat  // float32, float64
	clsNumber // json.Number
	clsString
	clsBytes // []byte
	clsMap   // map[string]any
	clsSlice // []any
	clsTime  // time.Time
	clsOther
)

const clsNumeric = clsInt | clsFloat | clsNumber

func classOf(v any) class {
	switch v.(type) {
	case nil:
		return clsNil
	case bool:
		return clsBool
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		return clsInt
	case float64, float32:
		return clsFloat
	case json.Number:
		return clsNumber
	case string:
		return clsString
	case []byte:
		return clsBytes
	case map[string]any:
		return clsMap
	case []any:
		return clsSlice
	case time.Time:
		return clsTime
	default:
		return clsOther
	}
}

var errNotInteger = errors.New("not an integer")

// asInt64 converts the integer shapes a mapping may produce. Floats must be
// integral: 1.5 for an int field is a mistake to report, not to truncate.
func asInt64(v any) (int64, error) {
	switch x := v.(type) {
	case int64:
		return x, nil
	case int:
		return int64(x), nil
	case int32:
		return int64(x), nil
	case int16:
		return int64(x), nil
	case int8:
		return int64(x), nil
	case uint8:
		return int64(x), nil
	case uint16:
		return int64(x), nil
	case uint32:
		return int64(x), nil
	case uint64:
		if x > math.MaxInt64 {
			return 0, fmt.Errorf("%d overflows a long", x)
		}
		return int64(x), nil
	case uint:
		if uint64(x) > math.MaxInt64 {
			return 0, fmt.Errorf("%d overflows a long", x)
		}
		return int64(x), nil
	case float64:
		return floatToInt64(x)
	case float32:
		return floatToInt64(float64(x))
	case json.Number:
		n, err := strconv.ParseInt(string(x), 10, 64)
		if err == nil {
			return n, nil
		}
		if errors.Is(err, strconv.ErrRange) {
			return 0, fmt.Errorf("%s overflows a long", x)
		}
		// 1e3 is a valid JSON integer too.
		f, ferr := strconv.ParseFloat(string(x), 64)
		if ferr != nil {
			return 0, fmt.Errorf("%q is not a number", string(x))
		}
		if math.Abs(f) > 1<<53 {
			return 0, fmt.Errorf("%s is not exactly representable as a long", x)
		}
		return floatToInt64(f)
	default:
		return 0, fmt.Errorf("want an integer, have %T", v)
	}
}

func floatToInt64(f float64) (int64, error) {
	if f != math.Trunc(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%v: %w", f, errNotInteger)
	}
	// -2^63 is exact in float64; 2^63 is the first value out of range.
	if f < -9223372036854775808.0 || f >= 9223372036854775808.0 {
		return 0, fmt.Errorf("%v overflows a long", f)
	}
	return int64(f), nil
}

// asFloat64 converts the number shapes a mapping may produce.
func asFloat64(v any) (float64, error) {
	switch x := v.(type) {
	case float64:
		return x, nil
	case float32:
		return float64(x), nil
	case json.Number:
		f, err := strconv.ParseFloat(string(x), 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return 0, fmt.Errorf("%q is not a number", string(x))
		}
		if err != nil {
			return 0, fmt.Errorf("%s overflows a double", x)
		}
		return f, nil
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		n, err := asInt64(v)
		if err != nil {
			if u, ok := v.(uint64); ok {
				return float64(u), nil
			}
			if u, ok := v.(uint); ok {
				return float64(u), nil
			}
			return 0, err
		}
		return float64(n), nil
	default:
		return 0, fmt.Errorf("want a number, have %T", v)
	}
}

// appendLong appends the zig-zag varint of v.
func appendLong(dst []byte, v int64) []byte {
	u := uint64(v<<1) ^ uint64(v>>63)
	for u >= 0x80 {
		dst = append(dst, byte(u)|0x80)
		u >>= 7
	}
	return append(dst, byte(u))
}
