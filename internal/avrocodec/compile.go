package avrocodec

import (
	"fmt"
	"math"
	"strconv"

	"github.com/hamba/avro/v2"
)

// Kafka Connect and Debezium semantic type names, as found in the
// "connect.name" schema property.
const (
	connectMicroTimestamp  = "io.debezium.time.MicroTimestamp"
	connectDbzTimestamp    = "io.debezium.time.Timestamp"
	connectNanoTimestamp   = "io.debezium.time.NanoTimestamp"
	connectTimestamp       = "org.apache.kafka.connect.data.Timestamp"
	connectDbzDate         = "io.debezium.time.Date"
	connectDate            = "org.apache.kafka.connect.data.Date"
	connectDecimal         = "org.apache.kafka.connect.data.Decimal"
	connectVariableDecimal = "io.debezium.data.VariableScaleDecimal"
)

// node is one compiled schema position.
type node interface {
	// decode reads one value.
	decode(d *decoder) (any, error)
	// encode appends v; depth counts the nesting so far, so that a value
	// that contains itself fails instead of recursing forever.
	encode(dst []byte, v any, depth int) ([]byte, error)
	// classes says which Go value classes encode takes, for choosing a
	// union branch for a bare value: prefer is what decode produces, tried
	// first so that a decoded value goes back to the branch it came from
	// (a float64 to a double rather than an earlier long branch); accept
	// adds what encode converts.
	classes() (prefer, accept class)
}

// compiled is a node with what its parents need to know about it.
type compiled struct {
	node node
	// minSize is a lower bound of the bytes one value takes; arrays and
	// maps use it to reject counts the remaining input cannot hold.
	minSize int
	// name is the union branch name: the full name of a named type, else
	// the type name.
	name string
}

type compiler struct {
	opts Options
	// named holds every named type compiled so far, by full name. A record
	// is entered before its fields are compiled, so a reference to a record
	// from inside itself finds the (still incomplete) node instead of
	// compiling it again forever.
	named       map[string]*compiled
	internSlots int
}

func newCompiler(opts Options) *compiler {
	return &compiler{opts: opts, named: make(map[string]*compiled)}
}

func schemaLabel(s avro.Schema) string {
	if ref, ok := s.(*avro.RefSchema); ok {
		s = ref.Schema()
	}
	if n, ok := s.(avro.NamedSchema); ok {
		return n.FullName()
	}
	return string(s.Type())
}

func (c *compiler) compile(s avro.Schema) (*compiled, error) {
	switch s := s.(type) {
	case *avro.RefSchema:
		if done, ok := c.named[s.Schema().FullName()]; ok {
			return done, nil
		}
		return c.compile(s.Schema())
	case *avro.NullSchema:
		return &compiled{node: nullNode{}, name: string(avro.Null)}, nil
	case *avro.PrimitiveSchema:
		return c.primitive(s)
	case *avro.RecordSchema:
		return c.record(s)
	case *avro.EnumSchema:
		return c.enum(s)
	case *avro.FixedSchema:
		return c.fixed(s)
	case *avro.ArraySchema:
		items, err := c.compile(s.Items())
		if err != nil {
			return nil, fmt.Errorf("array items: %w", err)
		}
		return &compiled{
			node:    &arrayNode{items: items.node, itemInfo: items},
			minSize: 1,
			name:    string(avro.Array),
		}, nil
	case *avro.MapSchema:
		values, err := c.compile(s.Values())
		if err != nil {
			return nil, fmt.Errorf("map values: %w", err)
		}
		return &compiled{
			node:    &mapNode{values: values.node, valueInfo: values},
			minSize: 1,
			name:    string(avro.Map),
		}, nil
	case *avro.UnionSchema:
		return c.union(s)
	default:
		return nil, fmt.Errorf("unsupported schema %T (%s)", s, s.Type())
	}
}

func (c *compiler) stringNode() *stringNode {
	n := &stringNode{slot: c.internSlots}
	c.internSlots++
	return n
}

func (c *compiler) primitive(s *avro.PrimitiveSchema) (*compiled, error) {
	out := &compiled{name: string(s.Type()), minSize: 1}
	switch s.Type() {
	case avro.Float:
		out.minSize = 4
	case avro.Double:
		out.minSize = 8
	}

	if c.opts.TranslateKafkaConnectTypes {
		n, err := c.connectPrimitive(s)
		if err != nil {
			return nil, err
		}
		if n != nil {
			out.node = n
			return out, nil
		}
	}
	if c.opts.PreserveLogicalTypes {
		n, err := c.logicalPrimitive(s)
		if err != nil {
			return nil, err
		}
		if n != nil {
			out.node = n
			return out, nil
		}
	}

	switch s.Type() {
	case avro.Boolean:
		out.node = boolNode{}
	case avro.Int:
		out.node = intNode{}
	case avro.Long:
		out.node = longNode{}
	case avro.Float:
		out.node = floatNode{}
	case avro.Double:
		out.node = doubleNode{}
	case avro.String:
		out.node = c.stringNode()
	case avro.Bytes:
		out.node = bytesNode{}
	case avro.Null:
		out.node, out.minSize = nullNode{}, 0
	default:
		return nil, fmt.Errorf("unsupported primitive type %q", s.Type())
	}
	return out, nil
}

// connectPrimitive returns the node for a Kafka Connect semantic type, or nil
// when s is none that we translate.
func (c *compiler) connectPrimitive(s *avro.PrimitiveSchema) (node, error) {
	name, _ := s.Prop("connect.name").(string)
	switch {
	case name == connectMicroTimestamp && s.Type() == avro.Long:
		return timestampNode{perSecond: 1e6}, nil
	case (name == connectDbzTimestamp || name == connectTimestamp) && s.Type() == avro.Long:
		return timestampNode{perSecond: 1e3}, nil
	case name == connectNanoTimestamp && s.Type() == avro.Long:
		return timestampNode{perSecond: 1e9}, nil
	case (name == connectDbzDate || name == connectDate) && s.Type() == avro.Int:
		return dateNode{}, nil
	case name == connectDecimal && s.Type() == avro.Bytes:
		scale, err := connectDecimalScale(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", connectDecimal, err)
		}
		return &decimalNode{scale: scale, size: -1}, nil
	}
	return nil, nil
}

// connectDecimalScale finds a Connect Decimal's scale. Confluent's converter
// writes it twice, as the connect parameter and as the Avro decimal's scale;
// if both are present they must agree, since guessing the scale of money is
// not an option.
//
// Precision is deliberately not enforced, neither here nor for Avro
// decimals: Java's readers and writers do not check it on the wire, and a
// codec must encode whatever it decodes.
func connectDecimalScale(s *avro.PrimitiveSchema) (int, error) {
	paramScale, haveParam := 0, false
	if params, ok := s.Prop("connect.parameters").(map[string]any); ok {
		if raw, ok := params["scale"]; ok {
			var err error
			if paramScale, err = propInt(raw); err != nil {
				return 0, fmt.Errorf("connect.parameters scale: %w", err)
			}
			haveParam = true
		}
	}
	logicalScale, haveLogical := 0, false
	if isDecimalLogical(s) {
		var err error
		if logicalScale, err = decimalLogical(s); err != nil {
			return 0, err
		}
		haveLogical = true
	}
	var scale int
	switch {
	case haveParam && haveLogical && paramScale != logicalScale:
		return 0, fmt.Errorf("connect.parameters scale %d contradicts the decimal logical type's scale %d", paramScale, logicalScale)
	case haveParam:
		scale = paramScale
	case haveLogical:
		scale = logicalScale
	default:
		return 0, fmt.Errorf("no scale in connect.parameters nor a decimal logical type")
	}
	if scale < 0 {
		return 0, fmt.Errorf("negative scale %d", scale)
	}
	return scale, nil
}

type logicalPropSchema interface {
	avro.LogicalTypeSchema
	avro.PropertySchema
}

func isDecimalLogical(s logicalPropSchema) bool {
	if _, ok := s.Logical().(*avro.DecimalLogicalSchema); ok {
		return true
	}
	lt, _ := s.Prop("logicalType").(string)
	return lt == string(avro.Decimal)
}

// decimalLogical reads the scale of a decimal logical type on bytes or
// fixed: hamba's parsed one, or the raw properties hamba left behind when it
// found them invalid (no precision, scale above precision, negative scale).
// The raw form is still honoured, because a decimal silently turned into raw
// bytes would lose what the writer meant; only a negative scale is refused.
// A missing scale is 0, as the Avro specification says.
func decimalLogical(s logicalPropSchema) (int, error) {
	if l, ok := s.Logical().(*avro.DecimalLogicalSchema); ok {
		return l.Scale(), nil
	}
	raw := s.Prop("scale")
	if raw == nil {
		return 0, nil
	}
	scale, err := propInt(raw)
	if err != nil {
		return 0, fmt.Errorf("decimal scale: %w", err)
	}
	if scale < 0 {
		return 0, fmt.Errorf("decimal has negative scale %d", scale)
	}
	return scale, nil
}

// propInt reads an integer schema property, written as a JSON number or, as
// Kafka Connect parameters are, a string.
func propInt(v any) (int, error) {
	switch x := v.(type) {
	case string:
		n, err := strconv.Atoi(x)
		if err != nil {
			return 0, fmt.Errorf("%q is not an integer", x)
		}
		return n, nil
	case float64:
		if x != math.Trunc(x) || math.Abs(x) > 1<<31 {
			return 0, fmt.Errorf("%v is not an integer", x)
		}
		return int(x), nil
	case int:
		return x, nil
	case int64:
		if x > math.MaxInt32 || x < math.MinInt32 {
			return 0, fmt.Errorf("%d is out of range", x)
		}
		return int(x), nil
	default:
		return 0, fmt.Errorf("%v (%T) is not an integer", v, v)
	}
}

// logicalPrimitive returns the node for an Avro logical type on a primitive,
// or nil when the value stays a primitive.
func (c *compiler) logicalPrimitive(s *avro.PrimitiveSchema) (node, error) {
	lt := ""
	if l := s.Logical(); l != nil {
		lt = string(l.Type())
	} else if raw, ok := s.Prop("logicalType").(string); ok {
		// hamba does not know the nanosecond timestamps (Avro 1.12) and
		// leaves invalid decimals unparsed; both are handled here.
		lt = raw
	}
	switch {
	case s.Type() == avro.Long && (lt == string(avro.TimestampMillis) || lt == string(avro.LocalTimestampMillis)):
		return timestampNode{perSecond: 1e3}, nil
	case s.Type() == avro.Long && (lt == string(avro.TimestampMicros) || lt == string(avro.LocalTimestampMicros)):
		return timestampNode{perSecond: 1e6}, nil
	case s.Type() == avro.Long && (lt == "timestamp-nanos" || lt == "local-timestamp-nanos"):
		return timestampNode{perSecond: 1e9}, nil
	case s.Type() == avro.Int && lt == string(avro.Date):
		return dateNode{}, nil
	case s.Type() == avro.Bytes && lt == string(avro.Decimal):
		scale, err := decimalLogical(s)
		if err != nil {
			return nil, err
		}
		return &decimalNode{scale: scale, size: -1}, nil
	}
	// time-millis and time-micros stay integers, uuid stays a string.
	return nil, nil
}

func (c *compiler) record(s *avro.RecordSchema) (*compiled, error) {
	fullName := s.FullName()
	if done, ok := c.named[fullName]; ok {
		return done, nil
	}
	out := &compiled{name: fullName}
	c.named[fullName] = out

	if c.opts.TranslateKafkaConnectTypes && isVariableScaleDecimal(s) {
		n, err := variableScaleDecimal(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", fullName, err)
		}
		out.node, out.minSize = n, 2
		return out, nil
	}

	rec := &recordNode{fields: make([]recordField, len(s.Fields()))}
	// Set before compiling the fields: a field that refers back to this
	// record gets this node, which is complete by the time anything decodes.
	out.node = rec
	minSize := 0
	for i, f := range s.Fields() {
		fc, err := c.compile(f.Type())
		if err != nil {
			return nil, fmt.Errorf("%s.%s: %w", fullName, f.Name(), err)
		}
		rf := recordField{name: f.Name(), node: fc.node}
		if f.HasDefault() {
			def, err := appendDefault(nil, f.Type(), f.Default())
			if err != nil {
				return nil, fmt.Errorf("%s.%s: default: %w", fullName, f.Name(), err)
			}
			rf.hasDefault, rf.defaultBytes = true, def
		}
		rec.fields[i] = rf
		minSize += fc.minSize
	}
	out.minSize = minSize
	return out, nil
}

func isVariableScaleDecimal(s *avro.RecordSchema) bool {
	name, _ := s.Prop("connect.name").(string)
	return name == connectVariableDecimal || s.FullName() == connectVariableDecimal
}

// variableScaleDecimal checks that s has Debezium's shape {scale: int, value:
// bytes}, in either field order, and builds its translating node.
func variableScaleDecimal(s *avro.RecordSchema) (node, error) {
	fields := s.Fields()
	if len(fields) != 2 {
		return nil, fmt.Errorf("want fields scale (int) and value (bytes), have %d fields", len(fields))
	}
	n := &variableDecimalNode{}
	for i, f := range fields {
		t := f.Type()
		if ref, ok := t.(*avro.RefSchema); ok {
			return nil, fmt.Errorf("field %s: want a primitive type, have %s", f.Name(), ref.Schema().FullName())
		}
		switch {
		case f.Name() == "scale" && t.Type() == avro.Int:
			n.scaleFirst = i == 0
		case f.Name() == "value" && t.Type() == avro.Bytes:
		default:
			return nil, fmt.Errorf("want fields scale (int) and value (bytes), have %s (%s)", f.Name(), t.Type())
		}
	}
	if fields[0].Name() == fields[1].Name() {
		return nil, fmt.Errorf("want fields scale and value, have %s twice", fields[0].Name())
	}
	return n, nil
}

func (c *compiler) enum(s *avro.EnumSchema) (*compiled, error) {
	fullName := s.FullName()
	if done, ok := c.named[fullName]; ok {
		return done, nil
	}
	symbols := s.Symbols()
	n := &enumNode{
		symbols: make([]any, len(symbols)),
		index:   make(map[string]int, len(symbols)),
	}
	for i, sym := range symbols {
		n.symbols[i] = sym
		n.index[sym] = i
	}
	out := &compiled{node: n, minSize: 1, name: fullName}
	c.named[fullName] = out
	return out, nil
}

func (c *compiler) fixed(s *avro.FixedSchema) (*compiled, error) {
	fullName := s.FullName()
	if done, ok := c.named[fullName]; ok {
		return done, nil
	}
	out := &compiled{minSize: s.Size(), name: fullName}
	c.named[fullName] = out
	out.node = fixedNode{size: s.Size()}
	if !c.opts.PreserveLogicalTypes {
		return out, nil
	}
	lt := ""
	if l := s.Logical(); l != nil {
		lt = string(l.Type())
	} else if raw, ok := s.Prop("logicalType").(string); ok {
		lt = raw
	}
	switch {
	case lt == string(avro.Decimal):
		scale, err := decimalLogical(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", fullName, err)
		}
		out.node = &decimalNode{scale: scale, size: s.Size()}
	case lt == string(avro.UUID) && s.Size() == 16:
		// Avro 1.12 allows uuid on fixed(16); hamba does not parse it.
		out.node = uuidFixedNode{}
	}
	return out, nil
}

func (c *compiler) union(s *avro.UnionSchema) (*compiled, error) {
	types := s.Types()
	n := &unionNode{
		raw:       c.opts.RawUnions,
		branches:  make([]unionBranch, len(types)),
		nullIndex: -1,
		byName:    make(map[string]int, 2*len(types)),
	}
	minBranch := math.MaxInt
	for i, t := range types {
		bc, err := c.compile(t)
		if err != nil {
			return nil, fmt.Errorf("union branch %d: %w", i, err)
		}
		_, isNull := bc.node.(nullNode)
		n.branches[i] = unionBranch{node: bc.node, name: bc.name, isNull: isNull}
		if !isNull {
			n.branches[i].wrapKey = bc.name
		}
		if isNull && n.nullIndex < 0 {
			n.nullIndex = i
		}
		n.byName[bc.name] = i
		minBranch = min(minBranch, bc.minSize)
	}
	// Other spellings of branch names, where they cannot be mistaken for
	// another branch: a named type's short name, and the "long.timestamp-
	// millis" form that hamba and goavro give logical types.
	for i, t := range types {
		alias := ""
		if ref, ok := t.(*avro.RefSchema); ok {
			t = ref.Schema()
		}
		switch t := t.(type) {
		case avro.NamedSchema:
			alias = t.Name()
		case *avro.PrimitiveSchema:
			if l := t.Logical(); l != nil {
				alias = string(t.Type()) + "." + string(l.Type())
			}
		}
		if _, taken := n.byName[alias]; alias != "" && !taken {
			n.byName[alias] = i
		}
	}
	if len(types) == 0 {
		minBranch = 0
	}
	return &compiled{node: n, minSize: 1 + minBranch, name: string(avro.Union)}, nil
}
