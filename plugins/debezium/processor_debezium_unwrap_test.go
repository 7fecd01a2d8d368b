package debezium

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/redpanda-data/benthos/v4/public/service"
)

func newTestUnwrap(t *testing.T, yaml string) *unwrap {
	t.Helper()
	conf, err := unwrapSpec().ParseYAML(yaml, nil)
	if err != nil {
		t.Fatal(err)
	}
	u, err := newUnwrap(conf, service.MockResources())
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func envelope(t *testing.T, js string) *service.Message {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(js), &v); err != nil {
		t.Fatal(err)
	}
	msg := service.NewMessage(nil)
	msg.SetStructuredMut(v)
	return msg
}

func meta(m *service.Message, k string) any {
	v, _ := m.MetaGetMut(k)
	return v
}

func TestUnwrapOps(t *testing.T) {
	u := newTestUnwrap(t, `{}`)
	source := `"source":{"version":"2.5.0","connector":"postgresql","name":"fulfillment","ts_ms":1700000000123,"snapshot":"false","db":"bank","schema":"transactions_schema","table":"T_Accounts","txId":7,"lsn":2400,"xmin":null}`
	for _, tc := range []struct {
		name, env string
		op        string
		body      string
		version   int64
		snapshot  bool
	}{
		{"update", `{"before":null,"after":{"id":1,"account_balance":"10.00"},` + source + `,"op":"u","ts_ms":1,"transaction":null}`, "u", `{"id":1,"account_balance":"10.00"}`, 2400, false},
		{"insert 3.x order", `{"before":null,"after":{"id":2},` + source + `,"transaction":null,"op":"c","ts_ms":1,"ts_us":1000,"ts_ns":1000000}`, "c", `{"id":2}`, 2400, false},
		{"delete", `{"before":{"id":3,"account_balance":null},"after":null,` + source + `,"op":"d","ts_ms":1}`, "d", `{"id":3,"account_balance":null}`, 2400, false},
		{"snapshot", `{"before":null,"after":{"id":4},"source":{"ts_ms":5,"snapshot":"last","table":"T_Customers","schema":"s","lsn":100},"op":"r","ts_ms":9}`, "r", `{"id":4}`, 100, true},
		{"incremental snapshot without lsn", `{"before":null,"after":{"id":5},"source":{"ts_ms":777,"snapshot":"incremental","table":"T_Customers","lsn":null},"op":"r","ts_ms":9}`, "r", `{"id":5}`, 777, true},
		{"truncate", `{"before":null,"after":null,"source":{"ts_ms":5,"table":"T_Accounts","lsn":300},"op":"t","ts_ms":9}`, "t", `{}`, 300, false},
		// Most snapshot rows say "true"; the first says "first".
		{"snapshot row", `{"before":null,"after":{"id":6},"source":{"ts_ms":5,"snapshot":"true","table":"T_Customers","lsn":100},"op":"r","ts_ms":9}`, "r", `{"id":6}`, 100, true},
		{"first snapshot row", `{"before":null,"after":{"id":7},"source":{"ts_ms":5,"snapshot":"first","table":"T_Customers","lsn":100},"op":"r","ts_ms":9}`, "r", `{"id":7}`, 100, true},
		{"logical decoding message", `{"before":null,"after":null,"source":{"ts_ms":5,"table":"","lsn":310},"message":{"prefix":"p","content":"YQ=="},"op":"m","ts_ms":9}`, "m", `{"prefix":"p","content":"YQ=="}`, 310, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := u.Process(context.Background(), envelope(t, tc.env))
			if err != nil || len(out) != 1 {
				t.Fatalf("Process: %v (%d messages)", err, len(out))
			}
			m := out[0]
			body, _ := m.AsStructured()
			var want any
			_ = json.Unmarshal([]byte(tc.body), &want)
			if !reflect.DeepEqual(body, want) {
				t.Errorf("body %v, want %v", body, want)
			}
			if meta(m, "cdc_op") != tc.op || meta(m, "cdc_version") != tc.version || meta(m, "cdc_snapshot") != tc.snapshot {
				t.Errorf("metadata op=%v version=%v snapshot=%v, want %s %d %v", meta(m, "cdc_op"), meta(m, "cdc_version"), meta(m, "cdc_snapshot"), tc.op, tc.version, tc.snapshot)
			}
		})
	}
}

func TestUnwrapMetadataFromSource(t *testing.T) {
	u := newTestUnwrap(t, `{}`)
	out, err := u.Process(context.Background(), envelope(t, `{"after":{"id":1},"source":{"ts_ms":1700000000123,"schema":"transactions_schema","table":"T_Accounts","lsn":42},"op":"c","ts_ms":1800000000000}`))
	if err != nil {
		t.Fatal(err)
	}
	m := out[0]
	for k, want := range map[string]any{"cdc_table": "T_Accounts", "cdc_schema": "transactions_schema", "cdc_ts_ms": int64(1700000000123), "cdc_version": int64(42)} {
		if got := meta(m, k); got != want {
			t.Errorf("%s = %v (%T), want %v", k, got, got, want)
		}
	}
}

func TestUnwrapBadEnvelopes(t *testing.T) {
	u := newTestUnwrap(t, `{}`)
	for name, js := range map[string]string{
		"no op":            `{"after":{"id":1}}`,
		"unknown op":       `{"op":"x","after":{"id":1}}`,
		"insert no after":  `{"op":"c","after":null,"source":{}}`,
		"delete no before": `{"op":"d","before":null,"source":{}}`,
		"wrapped union":    `{"op":"c","after":{"fulfillment.transactions_schema.T_Accounts.Value":{"id":1}},"source":{}}`,
		"not an object":    `[1,2]`,
	} {
		if _, err := u.Process(context.Background(), envelope(t, js)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// Bytes that are not JSON (no decode before): an error, not a drop.
	if out, err := u.Process(context.Background(), service.NewMessage([]byte("not json"))); err == nil {
		t.Errorf("a body that is not JSON: %d messages and no error, want an error", len(out))
	}
}

func TestUnwrapTombstones(t *testing.T) {
	tomb := func() *service.Message {
		m := service.NewMessage(nil)
		m.MetaSetMut("kafka_topic", "fulfillment.transactions_schema.T_Accounts")
		m.MetaSetMut("cdc_key", map[string]any{"id": int64(7)})
		return m
	}
	drop := newTestUnwrap(t, `{}`)
	if out, err := drop.Process(context.Background(), tomb()); err != nil || len(out) != 0 {
		t.Fatalf("default: tombstone gave %d messages, %v; want dropped", len(out), err)
	}

	del := newTestUnwrap(t, `tombstones: delete`)
	out, err := del.Process(context.Background(), tomb())
	if err != nil || len(out) != 1 {
		t.Fatalf("delete mode: %d messages, %v", len(out), err)
	}
	body, _ := out[0].AsStructured()
	if !reflect.DeepEqual(body, map[string]any{"id": int64(7)}) || meta(out[0], "cdc_op") != "d" ||
		meta(out[0], "cdc_tombstone") != true || meta(out[0], "cdc_table") != "T_Accounts" {
		t.Errorf("tombstone as delete: body %v, op %v, tombstone %v, table %v", body, meta(out[0], "cdc_op"), meta(out[0], "cdc_tombstone"), meta(out[0], "cdc_table"))
	}

	noKey := service.NewMessage(nil)
	if _, err := del.Process(context.Background(), noKey); err == nil || !strings.Contains(err.Error(), "cdc_key") {
		t.Errorf("tombstone without key: %v, want an error naming the metadata", err)
	}

	mark := newTestUnwrap(t, `tombstones: mark`)
	out, err = mark.Process(context.Background(), tomb())
	if err != nil || len(out) != 1 {
		t.Fatalf("mark mode: %d messages, %v", len(out), err)
	}
	if b, _ := out[0].AsBytes(); len(b) != 0 || meta(out[0], "cdc_tombstone") != true {
		t.Errorf("marked tombstone: body %q, cdc_tombstone %v; want empty, true", b, meta(out[0], "cdc_tombstone"))
	}
	if _, hasOp := out[0].MetaGetMut("cdc_op"); hasOp {
		t.Error("a marked tombstone has a cdc_op: it would be applied as a change")
	}
}

// TestUnwrapBatch: in a batch, a message an earlier processor failed
// passes untouched with its error, one that cannot be unwrapped is marked
// errored and kept in its place, and a dropped tombstone leaves the batch.
func TestUnwrapBatch(t *testing.T) {
	u := newTestUnwrap(t, `{}`)
	failedEarlier := service.NewMessage([]byte("raw"))
	failedEarlier.SetError(errors.New("decode failed"))
	batch := service.MessageBatch{
		envelope(t, `{"after":{"id":1},"source":{"table":"T_Accounts","lsn":5},"op":"c"}`),
		failedEarlier,
		envelope(t, `{"after":{"id":2},"op":"x"}`),
		service.NewMessage(nil), // a tombstone: dropped
		envelope(t, `{"after":{"id":3},"source":{"table":"T_Accounts","lsn":6},"op":"u"}`),
	}
	out, err := u.ProcessBatch(context.Background(), batch)
	if err != nil || len(out) != 1 {
		t.Fatalf("ProcessBatch: %d batches, %v", len(out), err)
	}
	var got []string
	for _, m := range out[0] {
		if err := m.GetError(); err != nil {
			b, _ := m.AsBytes()
			got = append(got, "ERROR "+err.Error()+" "+string(b))
			continue
		}
		v, _ := m.AsStructured()
		js, _ := json.Marshal(v)
		got = append(got, fmt.Sprintf("%v %s", meta(m, "cdc_op"), js))
	}
	want := []string{
		`c {"id":1}`,
		`ERROR decode failed raw`,
		`ERROR unknown Debezium op "x" {"after":{"id":2},"op":"x"}`,
		`u {"id":3}`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	if _, ok := failedEarlier.MetaGetMut("cdc_op"); ok {
		t.Errorf("the message failed earlier was unwrapped")
	}

	only, err := u.ProcessBatch(context.Background(), service.MessageBatch{service.NewMessage(nil)})
	if err != nil || len(only) != 0 {
		t.Errorf("a batch of one dropped tombstone: %d batches, %v; want none", len(only), err)
	}
}
