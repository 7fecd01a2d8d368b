package join

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/redpanda-data/benthos/v4/public/bloblang"
	_ "github.com/redpanda-data/benthos/v4/public/components/pure" // ts_unix_nano, as in the binary
)

// The mappings of config/ods.yaml, and shapes around them.
var rowMappingCases = []struct {
	name   string
	src    string
	direct bool // the line-by-line path is taken
}{
	{"customer_account", `
root.customer_id = this.parent.id
root.customer_name = [this.parent.first_name, this.parent.last_name].filter(n -> n != null).join(" ")
root.email = this.parent.email
root.mobile = this.parent.mobile
root.account_id = this.child.id
root.account_number = this.child.account_number.string()
root.account_status = this.child.account_status
root.account_balance = this.child.account_balance
root.updated_at = [this.parent.updated_at, this.child.updated_at].filter(t -> t != null).sort_by(t -> t.ts_unix_nano()).index(-1).or(null)
root.account_version = this.child_version
root.customer_version = this.parent_version
`, true},
	{"t_transaction", `
# a comment line
root.transaction_id = this.child.id
root.transaction_ref_number = this.child.transaction_ref_number
root.transaction_amount = this.child.transaction_amount
root.account_number = this.parent.account_number.string()
root.customer_id = this.parent.customer_id
root.source_version = this.child_version
`, true},
	{"key", `root.account_number = this.child.account_number.string()`, true},
	{"list forms", `
root.name = [this.parent.first_name, this.child.last_name , this.parent.email].filter(x -> x != null).join(", ")
root.glued = [ this.child.first_name,this.child.email ].filter(v -> v!=null).join()
root.one = [this.parent.mobile].filter(v -> v != null).join("-")
root.latest = [this.parent.updated_at, this.child.updated_at, this.child.account_status].filter(t -> t != null).sort().index(-1).or(null)
root.latest_at = [this.parent.updated_at, this.child.updated_at, this.parent.email].filter(t -> t != null).sort_by( u -> u.ts_unix_nano() ).index(-1).or(null)
`, true},
	{"list forms Bloblang runs", `
root.other_name = [this.parent.first_name, this.parent.last_name].filter(n -> m != null).join(" ")
root.rendered = [this.parent.first_name, this.parent.id.string()].filter(n -> n != null).join(" ")
root.first = [this.parent.updated_at, this.child.updated_at].filter(t -> t != null).sort().index(0).or(null)
root.escaped = [this.parent.first_name, this.parent.last_name].filter(n -> n != null).join("\t")
root.underscore = [this.parent.first_name, this.child.last_name].filter(_ -> _ != null).join(" ")
root.literal = [this.parent.first_name, this.child.last_name].filter(null -> null != null).join(" ")
root.truth = [this.parent.updated_at, this.child.updated_at].filter(true -> true != null).sort().index(-1).or(null)
root.micro = [this.parent.updated_at, this.child.updated_at].filter(t -> t != null).sort_by(t -> t.ts_unix_micro()).index(-1).or(null)
root.other_at = [this.parent.updated_at, this.child.updated_at].filter(t -> t != null).sort_by(t -> u.ts_unix_nano()).index(-1).or(null)
root.blank_at = [this.parent.updated_at, this.child.updated_at].filter(t -> t != null).sort_by(_ -> _.ts_unix_nano()).index(-1).or(null)
`, true},
	{"a line that fails", "root.a = this.parent.first_name + \" \" + this.parent.last_name\nroot.b = this.child.id", true},
	{"deleted", "root.a = this.child.id\nroot.b = deleted()", true},
	{"a column twice", "root.a = this.child.id\nroot.a = this.parent.id.string()", false},
	{"a column twice, around a direct line", "root.a = this.child.first_name.uppercase()\nroot.a = this.child.id\nroot.a = if this.child.email == null { \"z\" }", false},
	{"a stateful function", "root.a = this.child.id\nroot.n = count(\"rows\")", false},
	{"let", "let x = this.child.id\nroot.a = $x", false},
	{"meta", "root.a = @kafka_key", false},
	{"reads root", "root.a = this.child.id\nroot.b = root.a", false},
	{"over two lines", "root.a = [\n  this.child.id\n]", false},
	{"whole root", "root = this.child", false},
	{"nested target", "root.a.b = this.child.id", false},
}

// randomValue is a value of any type a row body can hold.
func randomValue(r *rand.Rand) (any, bool) {
	switch r.IntN(15) {
	case 11:
		return int32(r.IntN(2000) - 1000), true
	case 12:
		return r.IntN(2000) - 1000, true
	case 13:
		return uint64(r.IntN(100)), true
	case 14:
		return []byte("raw"), true
	case 0:
		return nil, false // missing
	case 1:
		return nil, true
	case 2:
		return fmt.Sprintf("s%d", r.IntN(100)), true
	case 3:
		return int64(r.IntN(2000) - 1000), true
	case 4:
		return json.Number(fmt.Sprint(r.IntN(1000))), true
	case 5:
		return json.Number([]string{"12.50", "1e3", "-0", "0012", "-7.25E-2"}[r.IntN(5)]), true
	case 6:
		return r.Float64() * 100, true
	case 7:
		return r.IntN(2) == 0, true
	case 8:
		return map[string]any{"k": int64(1)}, true
	case 9:
		return []any{"x", int64(2)}, true
	default:
		return "2026-03-0" + fmt.Sprint(1+r.IntN(9)) + "T10:00:00Z", true
	}
}

func randomBody(r *rand.Rand, fields ...string) map[string]any {
	return randomBodyOf(r, randomValue, fields...)
}

// stringyValue is a string, a null or missing (most rows' values): bodies
// of them take the direct forms through whole rows.
func stringyValue(r *rand.Rand) (any, bool) {
	switch r.IntN(6) {
	case 0:
		return nil, false
	case 1:
		return nil, true
	case 2:
		return "", true
	default:
		return []string{"Ann", "Lee", "2026-03-01T10:00:00Z", "2026-03-01T10:00:00.5Z", "zed", "a b",
			"2026-03-01T10:00:00.000Z", "2026-03-01T10:00:00.1Z", "2026-03-01T10:00:00.15Z", "2026-03-01T09:00:00.15-02:00"}[r.IntN(10)], true
	}
}

func randomBodyOf(r *rand.Rand, value func(*rand.Rand) (any, bool), fields ...string) map[string]any {
	if r.IntN(20) == 0 {
		return nil // no parent
	}
	m := map[string]any{}
	for _, f := range fields {
		if v, ok := value(r); ok {
			m[f] = v
		}
	}
	return m
}

// TestRowMappingMatchesBloblang: on bodies of every value type, the
// line-by-line path gives exactly what the whole mapping gives in Bloblang,
// errors included.
func TestRowMappingMatchesBloblang(t *testing.T) {
	fields := []string{"id", "first_name", "last_name", "email", "mobile", "account_number", "account_status",
		"account_balance", "updated_at", "customer_id", "transaction_ref_number", "transaction_amount"}
	r := rand.New(rand.NewPCG(7, 11))
	for _, tc := range rowMappingCases {
		full, err := bloblang.Parse(tc.src)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		m := newRowMapping(tc.src, full)
		if direct := m.steps != nil; direct != tc.direct {
			t.Errorf("%s: line by line %v, want %v", tc.name, direct, tc.direct)
		}
		if statefulCall.MatchString(tc.src) {
			continue // two runs count differently: only the shape is compared
		}
		directRows := 0
		for i := 0; i < 3000; i++ {
			value := randomValue
			if i%2 == 0 {
				value = stringyValue
			}
			in := mappingInput{parent: randomBodyOf(r, value, fields...), child: randomBodyOf(r, value, fields...),
				parentVersion: r.Int64N(1 << 40), childVersion: r.Int64N(1 << 40)}
			in.childOnly = i%3 == 0 // as a key_mapping sees it
			if _, ok := m.direct(in); ok {
				directRows++
			}
			got, gotErr := m.run(in)
			want, wantErr := full.Query(in.asMap())
			if in.childOnly && len(in.asMap()) != 1 {
				t.Fatalf("a key_mapping sees %v, want only this.child", in.asMap())
			}
			if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) || !reflect.DeepEqual(got, want) {
				t.Fatalf("%s, input %+v:\n got  %#v, %v\n want %#v, %v", tc.name, in, got, gotErr, want, wantErr)
			}
		}
		// A direct mapping must take its direct path often enough for
		// the comparison to test it.
		if tc.direct && tc.name != "deleted" && directRows < 300 { // deleted(): Bloblang always decides
			t.Errorf("%s: %d of 3000 rows built line by line: the comparison hardly tests that path", tc.name, directRows)
		}
		if tc.name == "deleted" && directRows > 0 {
			t.Errorf("%s: %d rows built line by line, want none (the row is deleted)", tc.name, directRows)
		}
	}
}

// TestRowMappingListForms: the list forms run directly (no Bloblang for
// the row) in ods.yaml's mappings and those of the test cases that have
// them; look-alikes they cannot take exactly are left to Bloblang.
func TestRowMappingListForms(t *testing.T) {
	for _, tc := range rowMappingCases {
		full, err := bloblang.Parse(tc.src)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		m := newRowMapping(tc.src, full)
		switch tc.name {
		case "customer_account", "list forms":
			if m.steps == nil || m.rest != nil {
				t.Errorf("%s: %d steps, Bloblang for some lines %v: want every line direct", tc.name, len(m.steps), m.rest != nil)
			}
		case "list forms Bloblang runs":
			for _, s := range m.steps {
				if !s.rest {
					t.Errorf("%s: column %s runs directly, want Bloblang", tc.name, s.column)
				}
			}
		}
	}
}

// BenchmarkRowMapping: the customer_account mapping of config/ods.yaml,
// line by line and in Bloblang.
func BenchmarkRowMapping(b *testing.B) {
	src := rowMappingCases[0].src
	full, err := bloblang.Parse(src)
	if err != nil {
		b.Fatal(err)
	}
	in := mappingInput{
		parent: map[string]any{"id": json.Number("3"), "first_name": "Ann", "last_name": "Lee", "email": "ann@example.com",
			"mobile": "+44 7700 900123", "updated_at": "2026-03-02T08:30:00.000000Z"},
		child: map[string]any{"id": json.Number("5"), "account_number": json.Number("100042"), "account_status": "ACTIVE",
			"account_balance": "25.00", "customer_id": json.Number("3"), "updated_at": "2026-03-01T10:00:00.000000Z"},
		parentVersion: 100, childVersion: 101,
	}
	for _, mode := range []struct {
		name string
		m    *rowMapping
	}{{"line_by_line", newRowMapping(src, full)}, {"bloblang", &rowMapping{full: full}}} {
		b.Run(mode.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := mode.m.run(in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
