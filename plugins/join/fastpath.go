package join

import (
	"regexp"

	"github.com/redpanda-data/benthos/v4/public/bloblang"
	"github.com/redpanda-data/benthos/v4/public/service"
)

// Most configs recognise a table by `@cdc_table == "T_Accounts"` and read
// keys as `this.id`: per message and per table, Bloblang costs more than
// the rest of phase 1. These two forms are recognised in the config text
// and evaluated directly; anything they cannot decide exactly as Bloblang
// would (metadata that is not a string, a missing field) goes to Bloblang.

var (
	metaEqualsForm = regexp.MustCompile(`^\s*@([A-Za-z_][A-Za-z0-9_]*)\s*==\s*"([^"\\]*)"\s*$`)
	thisFieldForm  = regexp.MustCompile(`^\s*this\.([A-Za-z_][A-Za-z0-9_]*)\s*$`)
)

// tableCheck is a table's check: Bloblang, with a direct path for
// `@name == "literal"`.
type tableCheck struct {
	exec       *bloblang.Executor
	meta, want string // the direct form, when meta != ""
}

func newTableCheck(src string, exec *bloblang.Executor) tableCheck {
	c := tableCheck{exec: exec}
	if m := metaEqualsForm.FindStringSubmatch(src); m != nil {
		c.meta, c.want = m[1], m[2]
	}
	return c
}

// matches tells whether msg belongs to the table.
func (c tableCheck) matches(msg *service.Message) (bool, error) {
	if c.meta != "" {
		v, ok := msg.MetaGetMut(c.meta)
		if !ok {
			return false, nil // null == "literal"
		}
		if s, isString := v.(string); isString {
			return s == c.want, nil
		}
	}
	res, err := msg.BloblangQuery(c.exec)
	if err != nil {
		return false, err
	}
	v, err := res.AsStructured()
	return err == nil && v == true, nil
}

// bodyField is a key read from a row body: Bloblang, with a direct path
// for `this.field`.
type bodyField struct {
	exec  *bloblang.Executor
	field string // the direct form, when not ""
}

func newBodyField(src string, exec *bloblang.Executor) bodyField {
	f := bodyField{exec: exec}
	if m := thisFieldForm.FindStringSubmatch(src); m != nil {
		f.field = m[1]
	}
	return f
}

// value reads the key from body.
func (f bodyField) value(body map[string]any) (any, error) {
	if f.field != "" {
		if v, ok := body[f.field]; ok {
			return v, nil
		}
	}
	return f.exec.Query(body)
}
