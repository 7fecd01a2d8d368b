package join

import (
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/redpanda-data/benthos/v4/public/bloblang"
)

// A relation's mapping runs once per joined row, and most lines of most
// mappings copy a field: `root.email = this.parent.email`, or render one,
// `root.account_number = this.child.account_number.string()`; others
// combine the fields that are present, of parent and child:
// `[this.parent.first_name, this.parent.last_name].filter(n -> n != null).join(" ")`,
// or `[this.parent.updated_at, this.child.updated_at].filter(t -> t != null).sort_by(t -> t.ts_unix_nano()).index(-1).or(null)`
// (the latest instant; `.sort().index(-1).or(null)` is the greatest
// string). A mapping made only of `root.column = <expression>` lines, one
// per line, runs line by line: those forms directly, the other lines
// together as one Bloblang mapping of their own (whose expressions may read
// only `this`).
// Whenever a direct form meets a value it cannot render exactly as
// Bloblang would, or a line fails, the row is built by the whole mapping in
// Bloblang instead, so results and errors are Bloblang's. A mapping of any
// other shape (let, meta, nested targets, statements over several lines, a
// column assigned twice, a stateful function such as count()) always runs
// in Bloblang.

var (
	assignmentForm = regexp.MustCompile(`^root\.([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.+)$`)
	fieldForm      = regexp.MustCompile(`^this\.(parent|child)\.([A-Za-z_][A-Za-z0-9_]*)(\.string\(\))?$`)
	versionForm    = regexp.MustCompile(`^this\.(parent_version|child_version)$`)
	// listForm: fields, the null ones filtered out, then a tail (joinTail
	// or latestTail). Go's regexp has no back-references: the lambda's
	// parameter and the name it compares are checked to be one.
	listForm   = regexp.MustCompile(`^\[\s*((?:this\.(?:parent|child)\.[A-Za-z_][A-Za-z0-9_]*\s*,\s*)*this\.(?:parent|child)\.[A-Za-z_][A-Za-z0-9_]*)\s*\]\.filter\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*->\s*([A-Za-z_][A-Za-z0-9_]*)\s*!=\s*null\s*\)(.*)$`)
	joinTail   = regexp.MustCompile(`^\.join\(\s*(?:"([^"\\]*)")?\s*\)$`)
	latestTail = regexp.MustCompile(`^\.sort\(\)\.index\(-1\)\.or\(null\)$`)
	// latestTimeTail: the latest as an instant, whatever the strings'
	// precision (a string sort puts "…:00Z" after "…:00.5Z").
	latestTimeTail = regexp.MustCompile(`^\.sort_by\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*->\s*([A-Za-z_][A-Za-z0-9_]*)\.ts_unix_nano\(\)\s*\)\.index\(-1\)\.or\(null\)$`)
)

// rowMapping is a relation's mapping (or key_mapping).
type rowMapping struct {
	full  *bloblang.Executor
	steps []mappingStep // nil: the mapping always runs in Bloblang
	// rest: the lines that are not direct forms, as one mapping (nil: none).
	rest *bloblang.Executor
}

// mappingStep is one `root.column = …` line.
type mappingStep struct {
	column string
	// Direct forms: a field of the parent or child (side, field), or a
	// version (side "parent_version" or "child_version", no field).
	side, field string
	asString    bool // .string()
	// List forms: the fields (side and field each), and what is made of
	// the present ones: 'j' joined with delim, 'l' the greatest string,
	// 't' the latest timestamp.
	list   []fieldRef
	listOp byte
	delim  string
	rest   bool // any other expression: its column comes from rest
}

type fieldRef struct{ side, field string }

// mappingInput is what a mapping sees as `this`.
type mappingInput struct {
	parent, child               map[string]any
	parentVersion, childVersion int64
	// childOnly: a key_mapping, which sees `this.child` alone.
	childOnly bool
}

func (in mappingInput) asMap() map[string]any {
	if in.childOnly {
		return map[string]any{"child": in.child}
	}
	return map[string]any{
		"parent": in.parent, "child": in.child,
		"parent_version": in.parentVersion, "child_version": in.childVersion,
	}
}

// statefulCall finds Bloblang functions whose result depends on earlier
// calls in the same executor: run apart from the whole mapping (or again
// by it, after a fallback), they would count differently.
var statefulCall = regexp.MustCompile(`\b(count|counter)\s*\(`)

// newRowMapping recognises the line-by-line shape in src, the text of full.
func newRowMapping(src string, full *bloblang.Executor) *rowMapping {
	m := &rowMapping{full: full}
	var steps []mappingStep
	var rest []string
	assigned := map[string]bool{}
	for _, line := range strings.Split(src, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		a := assignmentForm.FindStringSubmatch(line)
		if a == nil {
			return m
		}
		if assigned[a[1]] {
			return m // the last assignment wins: keep the order to Bloblang
		}
		assigned[a[1]] = true
		step := mappingStep{column: a[1]}
		expr := strings.TrimSpace(a[2])
		if f := fieldForm.FindStringSubmatch(expr); f != nil {
			step.side, step.field, step.asString = f[1], f[2], f[3] != ""
		} else if v := versionForm.FindStringSubmatch(expr); v != nil {
			step.side = v[1]
		} else if l := parseListForm(expr); l != nil {
			step.list, step.listOp, step.delim = l.list, l.listOp, l.delim
		} else {
			// Alone, the expression must read nothing but `this`: a line
			// reading root, a variable or metadata keeps the whole mapping
			// in Bloblang.
			if strings.Contains(expr, "root") || strings.Contains(expr, "$") || strings.Contains(expr, "@") || strings.Contains(expr, "meta") ||
				statefulCall.MatchString(expr) {
				return m
			}
			if _, err := bloblang.Parse("root = " + expr); err != nil {
				return m // part of a statement over several lines, say
			}
			step.rest = true
			rest = append(rest, line)
		}
		steps = append(steps, step)
	}
	if len(rest) > 0 {
		exec, err := bloblang.Parse(strings.Join(rest, "\n"))
		if err != nil {
			return m
		}
		m.rest = exec
	}
	m.steps = steps
	return m
}

// columns is the set of columns the mapping sets, and false when its
// shape does not tell (a mapping Bloblang runs whole).
func (m *rowMapping) columns() (map[string]bool, bool) {
	if m.steps == nil {
		return nil, false
	}
	cols := make(map[string]bool, len(m.steps))
	for _, s := range m.steps {
		cols[s.column] = true
	}
	return cols, true
}

// notAName: words a lambda's parameter spells but Bloblang does not bind
// (`_ != null` reads this._; null, true and false are literals).
var notAName = map[string]bool{"_": true, "null": true, "true": true, "false": true, "this": true, "root": true}

// parseListForm recognises a list form; nil: expr is not one.
func parseListForm(expr string) *mappingStep {
	l := listForm.FindStringSubmatch(expr)
	if l == nil || l[2] != l[3] || notAName[l[2]] {
		return nil
	}
	step := &mappingStep{}
	if j := joinTail.FindStringSubmatch(l[4]); j != nil {
		step.listOp, step.delim = 'j', j[1]
	} else if latestTail.MatchString(l[4]) {
		step.listOp = 'l'
	} else if t := latestTimeTail.FindStringSubmatch(l[4]); t != nil && t[1] == t[2] && !notAName[t[1]] {
		step.listOp = 't'
	} else {
		return nil
	}
	for _, path := range strings.Split(l[1], ",") {
		f := fieldForm.FindStringSubmatch(strings.TrimSpace(path))
		if f == nil || f[3] != "" {
			return nil
		}
		step.list = append(step.list, fieldRef{side: f[1], field: f[2]})
	}
	return step
}

// run builds the row: an object from the direct path, or whatever the
// whole mapping gives (the caller checks it is an object).
func (m *rowMapping) run(in mappingInput) (any, error) {
	if out, ok := m.direct(in); ok {
		return out, nil
	}
	return m.full.Query(in.asMap())
}

// direct builds the row line by line; false: the whole mapping decides
// (it is not line by line, a direct form cannot render a value exactly, a
// Bloblang line failed or deleted the row).
func (m *rowMapping) direct(in mappingInput) (map[string]any, bool) {
	if m.steps == nil {
		return nil, false
	}
	var rest map[string]any
	if m.rest != nil {
		v, err := m.rest.Query(in.asMap())
		var ok bool
		if rest, ok = v.(map[string]any); err != nil || !ok {
			return nil, false
		}
	}
	out := make(map[string]any, len(m.steps))
	for i := range m.steps {
		s := &m.steps[i]
		if s.rest {
			v, ok := rest[s.column]
			if !ok {
				return nil, false // deleted()
			}
			out[s.column] = v
			continue
		}
		v, ok := s.value(in)
		if !ok {
			return nil, false
		}
		out[s.column] = v
	}
	return out, true
}

// field reads this.<side>.<name>: null when missing, when there is no
// parent, or for the parent in a key_mapping.
func (in mappingInput) field(side, name string) any {
	if side == "parent" {
		if in.childOnly {
			return nil
		}
		return in.parent[name]
	}
	return in.child[name]
}

// listValue evaluates a list form over string values, the only ones both
// `join` and `sort` take here as they are (bytes, numbers and the rest: ask
// Bloblang, whose errors `or(null)` may turn into null).
func (s *mappingStep) listValue(in mappingInput) (any, bool) {
	var joined strings.Builder
	var latest any // 'l', 't': the value as it is, no new box; none: index(-1) fails, or(null)
	latestStr, latestAt, n := "", 0.0, 0
	for _, f := range s.list {
		v := in.field(f.side, f.field)
		if v == nil {
			continue
		}
		if s.listOp == 't' {
			// As Bloblang: ts_unix_nano of an RFC 3339 string or a time,
			// compared as a float64; a tie keeps the list's order (its
			// sort of a few elements moves nothing equal), so the last
			// one of the greatest wins.
			var at time.Time
			switch x := v.(type) {
			case string:
				t, err := time.Parse(time.RFC3339Nano, x)
				if err != nil {
					return nil, false // Bloblang's error
				}
				at = t
			case time.Time:
				at = x
			default:
				return nil, false
			}
			if f := float64(at.UnixNano()); latest == nil || f >= latestAt {
				latest, latestAt = v, f
			}
			continue
		}
		str, ok := v.(string)
		if !ok {
			return nil, false
		}
		if s.listOp == 'j' {
			if n > 0 {
				joined.WriteString(s.delim)
			}
			joined.WriteString(str)
		} else if latest == nil || str > latestStr { // sort() orders strings as Go does
			latest, latestStr = v, str
		}
		n++
	}
	if s.listOp == 'j' {
		return joined.String(), true
	}
	return latest, true
}

// value evaluates a direct form; false: not decidable here, ask Bloblang.
func (s *mappingStep) value(in mappingInput) (any, bool) {
	if s.list != nil {
		return s.listValue(in)
	}
	switch s.side {
	case "parent_version", "child_version":
		if in.childOnly {
			return nil, true // not in a key_mapping's `this`
		}
		if s.side == "parent_version" {
			return in.parentVersion, true
		}
		return in.childVersion, true
	}
	v := in.field(s.side, s.field)
	if !s.asString {
		switch v.(type) {
		case map[string]any, []any, []byte:
			return nil, false // Bloblang decides whether it copies them
		}
		return v, true // a field read as it is
	}
	switch x := v.(type) {
	case nil:
		return "null", true
	case string:
		return v, true // as it is: no new box for the same string
	case json.Number:
		return string(x), true
	case bool:
		return strconv.FormatBool(x), true
	case int64:
		return strconv.FormatInt(x, 10), true
	case int32:
		return strconv.FormatInt(int64(x), 10), true
	case int:
		return strconv.Itoa(x), true
	}
	return nil, false // floats, objects, arrays, bytes…: Bloblang renders them
}
