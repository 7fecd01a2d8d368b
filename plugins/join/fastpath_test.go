package join

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/redpanda-data/benthos/v4/public/bloblang"
	"github.com/redpanda-data/benthos/v4/public/service"
)

// The direct paths must decide exactly as Bloblang does, on every kind of
// value a message can carry.
func TestDirectPathsAgreeWithBloblang(t *testing.T) {
	checks := []string{`@cdc_table == "T_Accounts"`, ` @cdc_table=="T_Accounts" `, `@cdc_table == "T_Accounts" || @x == "y"`}
	metas := []any{nil, "T_Accounts", "T_Customers", "", []byte("T_Accounts"), 5, true}
	for _, src := range checks {
		exec, err := bloblang.Parse(src)
		if err != nil {
			t.Fatal(err)
		}
		direct := newTableCheck(src, exec)
		plain := tableCheck{exec: exec}
		for _, m := range metas {
			msg := service.NewMessage([]byte(`{}`))
			if m != nil {
				msg.MetaSetMut("cdc_table", m)
			}
			got, gerr := direct.matches(msg)
			want, werr := plain.matches(msg)
			if got != want || (gerr == nil) != (werr == nil) {
				t.Errorf("check %q, cdc_table %#v: direct %v (%v), Bloblang %v (%v)", src, m, got, gerr, want, werr)
			}
		}
	}
	if c := newTableCheck(`@cdc_table == "T_Accounts"`, nil); c.meta != "cdc_table" || c.want != "T_Accounts" {
		t.Errorf("the common form is not taken directly: %+v", c)
	}

	keys := []string{`this.id`, ` this.id `, `this.id.string()`, `this.missing`}
	var jsonNumber map[string]any
	if err := json.Unmarshal([]byte(`{"id": 7}`), &jsonNumber); err != nil {
		t.Fatal(err)
	}
	bodies := []map[string]any{
		{"id": int64(7)}, {"id": "7"}, {"id": 7.0}, {"id": json.Number("7")}, {"id": nil}, {}, {"id": []any{1}}, jsonNumber,
	}
	for _, src := range keys {
		exec, err := bloblang.Parse(src)
		if err != nil {
			t.Fatal(err)
		}
		direct := newBodyField(src, exec)
		plain := bodyField{exec: exec}
		for _, b := range bodies {
			got, gerr := direct.value(b)
			want, werr := plain.value(b)
			if fmt.Sprintf("%#v", got) != fmt.Sprintf("%#v", want) || (gerr == nil) != (werr == nil) {
				t.Errorf("key %q, body %#v: direct %#v (%v), Bloblang %#v (%v)", src, b, got, gerr, want, werr)
			}
		}
	}
	if f := newBodyField(`this.id`, nil); f.field != "id" {
		t.Errorf("the common form is not taken directly: %+v", f)
	}
}
