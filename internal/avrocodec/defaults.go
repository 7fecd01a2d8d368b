package avrocodec

import (
	"fmt"
	"reflect"

	"github.com/hamba/avro/v2"
)

// appendDefault encodes a field default as hamba parsed it. Defaults are
// encoded once at compile time, so that a record value missing a field costs
// nothing extra to encode.
//
// The conversion is driven by the schema rather than by the compiled nodes
// because a default is written in the schema's own terms: a union default
// belongs to the union's first branch, and a timestamp default is a number
// even where the codec translates timestamps to text.
func appendDefault(dst []byte, s avro.Schema, v any) ([]byte, error) {
	if ref, ok := s.(*avro.RefSchema); ok {
		s = ref.Schema()
	}
	switch s := s.(type) {
	case *avro.NullSchema:
		// hamba marks a null default with a private value; there is
		// nothing to write either way.
		return dst, nil
	case *avro.PrimitiveSchema:
		switch s.Type() {
		case avro.Null:
			return dst, nil
		case avro.Boolean:
			return boolNode{}.encode(dst, v, 0)
		case avro.Int:
			return intNode{}.encode(dst, v, 0)
		case avro.Long:
			return longNode{}.encode(dst, v, 0)
		case avro.Float:
			return floatNode{}.encode(dst, v, 0)
		case avro.Double:
			return doubleNode{}.encode(dst, v, 0)
		case avro.String:
			return (&stringNode{}).encode(dst, v, 0)
		case avro.Bytes:
			return bytesNode{}.encode(dst, v, 0)
		}
	case *avro.FixedSchema:
		b, ok := byteArray(v)
		if !ok {
			return dst, fmt.Errorf("want %d bytes for fixed, have %T", s.Size(), v)
		}
		return fixedNode{size: s.Size()}.encode(dst, b, 0)
	case *avro.EnumSchema:
		sym, ok := v.(string)
		if !ok {
			return dst, fmt.Errorf("want an enum symbol, have %T", v)
		}
		for i, have := range s.Symbols() {
			if have == sym {
				return appendLong(dst, int64(i)), nil
			}
		}
		return dst, fmt.Errorf("%q is not a symbol of %s", sym, s.FullName())
	case *avro.UnionSchema:
		types := s.Types()
		if len(types) == 0 {
			return dst, fmt.Errorf("empty union has no default")
		}
		return appendDefault(appendLong(dst, 0), types[0], v)
	case *avro.ArraySchema:
		items, ok := v.([]any)
		if !ok {
			return dst, fmt.Errorf("want an array, have %T", v)
		}
		if len(items) > 0 {
			dst = appendLong(dst, int64(len(items)))
			for _, item := range items {
				var err error
				if dst, err = appendDefault(dst, s.Items(), item); err != nil {
					return dst, err
				}
			}
		}
		return append(dst, 0), nil
	case *avro.MapSchema:
		m, ok := v.(map[string]any)
		if !ok {
			return dst, fmt.Errorf("want a map, have %T", v)
		}
		if len(m) > 0 {
			dst = appendLong(dst, int64(len(m)))
			for _, k := range sortedKeys(m) {
				dst = appendLong(dst, int64(len(k)))
				dst = append(dst, k...)
				var err error
				if dst, err = appendDefault(dst, s.Values(), m[k]); err != nil {
					return dst, err
				}
			}
		}
		return append(dst, 0), nil
	case *avro.RecordSchema:
		m, ok := v.(map[string]any)
		if !ok {
			return dst, fmt.Errorf("want a record, have %T", v)
		}
		for _, f := range s.Fields() {
			fv, present := m[f.Name()]
			if !present {
				if !f.HasDefault() {
					return dst, fmt.Errorf("field %s: missing from the default", f.Name())
				}
				fv = f.Default()
			}
			var err error
			if dst, err = appendDefault(dst, f.Type(), fv); err != nil {
				return dst, fmt.Errorf("field %s: %w", f.Name(), err)
			}
		}
		return dst, nil
	}
	return dst, fmt.Errorf("unsupported schema %s", s.Type())
}

// byteArray accepts the [N]byte arrays hamba makes of fixed defaults.
func byteArray(v any) ([]byte, bool) {
	switch b := v.(type) {
	case []byte:
		return b, true
	case string:
		return []byte(b), true
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Array || rv.Type().Elem().Kind() != reflect.Uint8 {
		return nil, false
	}
	out := make([]byte, rv.Len())
	reflect.Copy(reflect.ValueOf(out), rv)
	return out, true
}
