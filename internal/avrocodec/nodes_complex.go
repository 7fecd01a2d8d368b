package avrocodec

import (
	"slices"
	"strings"
)

type recordField struct {
	name       string
	node       node
	hasDefault bool
	// defaultBytes is the field's default, encoded once at compile time.
	defaultBytes []byte
}

type recordNode struct {
	fields []recordField
}

func (n *recordNode) decode(d *decoder) (any, error) {
	if err := d.enter(); err != nil {
		return nil, err
	}
	m := make(map[string]any, len(n.fields))
	for i := range n.fields {
		f := &n.fields[i]
		v, err := f.node.decode(d)
		if err != nil {
			return nil, inField(err, f.name)
		}
		m[f.name] = v
	}
	d.leave()
	return m, nil
}

func (n *recordNode) encode(dst []byte, v any, depth int) ([]byte, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return dst, encodeErrorf("want a record (map[string]any), have %T", v)
	}
	if depth++; depth > maxDepth {
		return dst, encodeErrorf("values nested deeper than %d levels", maxDepth)
	}
	for i := range n.fields {
		f := &n.fields[i]
		fv, present := m[f.name]
		if !present {
			if !f.hasDefault {
				return dst, inField(encodeErrorf("missing, and the field has no default"), f.name)
			}
			dst = append(dst, f.defaultBytes...)
			continue
		}
		var err error
		if dst, err = f.node.encode(dst, fv, depth); err != nil {
			return dst, inField(err, f.name)
		}
	}
	return dst, nil
}

func (n *recordNode) classes() (class, class) { return clsMap, clsMap }

type arrayNode struct {
	items node
	// itemInfo gives the items' minimum size. It is read when decoding,
	// not copied when compiling: for a record that contains arrays of
	// itself it is only known once the record is compiled.
	itemInfo *compiled
}

// zeroWeight is what an item that takes no bytes costs of a datum's
// zeroBudget: a record (of nulls) allocates a map, a null only its slot.
func (n *arrayNode) zeroWeight() int {
	if _, ok := n.items.(*recordNode); ok {
		return 16
	}
	return 1
}

func (n *arrayNode) decode(d *decoder) (any, error) {
	if err := d.enter(); err != nil {
		return nil, err
	}
	var out []any
	for {
		count, err := d.readBlockCount(n.itemInfo.minSize, n.zeroWeight())
		if err != nil {
			return nil, inIndex(err, len(out))
		}
		if count == 0 {
			break
		}
		if out == nil {
			out = make([]any, 0, count)
		}
		for range count {
			v, err := n.items.decode(d)
			if err != nil {
				return nil, inIndex(err, len(out))
			}
			out = append(out, v)
		}
	}
	d.leave()
	if out == nil {
		// An empty array is an empty list, not a missing one.
		out = []any{}
	}
	return out, nil
}

func (n *arrayNode) encode(dst []byte, v any, depth int) ([]byte, error) {
	items, ok := v.([]any)
	if !ok {
		return dst, encodeErrorf("want an array ([]any), have %T", v)
	}
	if depth++; depth > maxDepth {
		return dst, encodeErrorf("values nested deeper than %d levels", maxDepth)
	}
	if len(items) > 0 {
		dst = appendLong(dst, int64(len(items)))
		for i, item := range items {
			var err error
			if dst, err = n.items.encode(dst, item, depth); err != nil {
				return dst, inIndex(err, i)
			}
		}
	}
	return append(dst, 0), nil
}

func (n *arrayNode) classes() (class, class) { return clsSlice, clsSlice }

type mapNode struct {
	values node
	// valueInfo gives the values' minimum size (see arrayNode.itemInfo).
	valueInfo *compiled
}

func (n *mapNode) decode(d *decoder) (any, error) {
	if err := d.enter(); err != nil {
		return nil, err
	}
	var out map[string]any
	for {
		// An entry takes at least its key's length byte.
		count, err := d.readBlockCount(1+n.valueInfo.minSize, 1)
		if err != nil {
			return nil, err
		}
		if count == 0 {
			break
		}
		if out == nil {
			out = make(map[string]any, count)
		}
		for range count {
			l, err := d.readLength("map key")
			if err != nil {
				return nil, err
			}
			key := string(d.readRaw(l))
			v, err := n.values.decode(d)
			if err != nil {
				return nil, inKey(err, key)
			}
			// A repeated key keeps its last value, as Java's decoder does.
			out[key] = v
		}
	}
	d.leave()
	if out == nil {
		out = map[string]any{}
	}
	return out, nil
}

func (n *mapNode) encode(dst []byte, v any, depth int) ([]byte, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return dst, encodeErrorf("want a map (map[string]any), have %T", v)
	}
	if depth++; depth > maxDepth {
		return dst, encodeErrorf("values nested deeper than %d levels", maxDepth)
	}
	if len(m) > 0 {
		// Sorted keys make the encoding deterministic, so that equal values
		// give equal bytes (idempotent writes, stable tests).
		keys := sortedKeys(m)
		dst = appendLong(dst, int64(len(keys)))
		for _, k := range keys {
			dst = appendLong(dst, int64(len(k)))
			dst = append(dst, k...)
			var err error
			if dst, err = n.values.encode(dst, m[k], depth); err != nil {
				return dst, inKey(err, k)
			}
		}
	}
	return append(dst, 0), nil
}

// A map only accepts a map[string]any, without preferring it, so that such a
// value goes to a record branch first: records are what mappings build.
func (n *mapNode) classes() (class, class) { return 0, clsMap }

type unionBranch struct {
	node   node
	name   string
	isNull bool
	// wrapKey is the key of the wrapping map without RawUnions.
	wrapKey string
}

type unionNode struct {
	raw       bool
	branches  []unionBranch
	nullIndex int
	// byName finds a branch by full name, or by the short name of a named
	// type when that is unambiguous.
	byName map[string]int
}

func (n *unionNode) decode(d *decoder) (any, error) {
	start := d.pos
	// The branch index is an Avro int, like Java's readIndex.
	i, err := d.readInt()
	if err != nil {
		return nil, err
	}
	if i < 0 || int(i) >= len(n.branches) {
		return nil, d.errorAt(start, "union index %d out of range [0,%d)", i, len(n.branches))
	}
	b := &n.branches[i]
	if b.isNull {
		return nil, nil
	}
	// No depth accounting here: a union can only recurse through a record,
	// array or map, which count the levels.
	v, err := b.node.decode(d)
	if err != nil {
		return nil, err
	}
	if n.raw {
		return v, nil
	}
	return map[string]any{b.wrapKey: v}, nil
}

func (n *unionNode) encode(dst []byte, v any, depth int) ([]byte, error) {
	if v == nil {
		if n.nullIndex < 0 {
			return dst, encodeErrorf("null is not a branch of union [%s]", n.names())
		}
		return appendLong(dst, int64(n.nullIndex)), nil
	}
	if !n.raw {
		if m, ok := v.(map[string]any); ok && len(m) == 1 {
			for k, inner := range m {
				if i, ok := n.byName[k]; ok {
					return n.encodeBranch(dst, i, inner, depth)
				}
			}
		}
	}
	// A bare value: the first branch that would have decoded to its Go
	// type, else the first branch that converts it.
	cls := classOf(v)
	var firstErr error
	for pass := 0; pass < 2; pass++ {
		for i := range n.branches {
			b := &n.branches[i]
			if b.isNull {
				continue
			}
			prefer, accept := b.node.classes()
			if pass == 0 && prefer&cls == 0 || pass == 1 && (prefer&cls != 0 || accept&cls == 0) {
				continue
			}
			out, err := n.encodeBranch(dst, i, v, depth)
			if err == nil {
				return out, nil
			}
			if firstErr == nil {
				firstErr = err
			}
		}
	}
	if firstErr != nil {
		return dst, firstErr
	}
	return dst, encodeErrorf("a %T fits no branch of union [%s]", v, n.names())
}

func (n *unionNode) encodeBranch(dst []byte, i int, v any, depth int) ([]byte, error) {
	start := len(dst)
	dst = appendLong(dst, int64(i))
	out, err := n.branches[i].node.encode(dst, v, depth)
	if err != nil {
		return dst[:start], err
	}
	return out, nil
}

func (n *unionNode) names() string {
	names := make([]string, len(n.branches))
	for i, b := range n.branches {
		names[i] = b.name
	}
	return strings.Join(names, ",")
}

func (n *unionNode) classes() (class, class) {
	// Unions do not nest; this only completes the interface.
	var prefer, accept class
	for _, b := range n.branches {
		p, a := b.node.classes()
		prefer, accept = prefer|p, accept|a
	}
	return prefer, accept
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
