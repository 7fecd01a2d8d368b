// Package debezium holds debezium_unwrap: from a decoded Debezium change
// event to the row state it describes, with the change's kind and version
// as metadata.
package debezium

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redpanda-data/benthos/v4/public/service"
)

const (
	fieldTombstones  = "tombstones"
	fieldKeyMetadata = "key_metadata"
)

func unwrapSpec() *service.ConfigSpec {
	return service.NewConfigSpec().
		Stable().
		Categories("Parsing").
		Summary("Turns a decoded Debezium change event into the row it describes, with the change's kind and version as metadata.").
		Description(`
Expects the envelope as structured data with bare unions (`+"`schema_registry_decode`"+` with `+"`avro.raw_unions: true`"+`),
fields read by name so that Debezium 2.0–3.x layouts all work. The message becomes:

| `+"`op`"+` | body |
|---|---|
| `+"`r`"+` snapshot read, `+"`c`"+` insert, `+"`u`"+` update | `+"`after`"+` |
| `+"`d`"+` delete | `+"`before`"+` (the key, or the whole old row under REPLICA IDENTITY FULL) |
| `+"`t`"+` truncate | `+"`{}`"+` |
| `+"`m`"+` logical message | the envelope's `+"`message`"+` |

Metadata: `+"`cdc_op`"+`, `+"`cdc_table`"+` and `+"`cdc_schema`"+` (from `+"`source`"+`), `+"`cdc_version`"+` (`+"`source.lsn`"+`, the change's
WAL position, which only grows for a row; `+"`source.ts_ms`"+` when the LSN is null, as for incremental snapshots),
`+"`cdc_ts_ms`"+` (`+"`source.ts_ms`"+`), `+"`cdc_snapshot`"+` (true for snapshot reads). The envelope's own `+"`ts_ms`"+` is processing
time and never used as a version.

A tombstone (an empty message, Kafka's marker after a delete) is dropped by default: the `+"`d`"+` event before it
already carries the delete. With `+"`tombstones: delete`"+` it becomes a delete of its key, read from the metadata
`+"`key_metadata`"+` names (a decoded key, see `+"`schema_registry_decode`"+`), with `+"`cdc_tombstone: true`"+` and no version.
An envelope without a known `+"`op`"+` is marked errored with the reason. A message that an earlier processor marked errored (say, one `+"`schema_registry_decode`"+`
could not decode) is passed on untouched, its error kept: no `+"`try`"+` is needed around the chain (a `+"`try`"+` would
split the batch into single messages).
`).
		Fields(
			service.NewStringAnnotatedEnumField(fieldTombstones, map[string]string{
				"drop":   "Drop tombstones: the delete event before each one already carries the change.",
				"delete": "Pass each tombstone on as a `d` of its key (body = the decoded key).",
				"mark":   "Pass each tombstone on unchanged (empty), with metadata `cdc_tombstone: true` and no `cdc_op`, for a later stage to drop: `cdc_join` drops it once its offset is in the state's progress (see its `require_history`), which a tombstone dropped here never reaches.",
			}).Description("What to do with tombstones (empty messages).").Default("drop"),
			service.NewStringField(fieldKeyMetadata).
				Description("The metadata key holding the decoded Kafka key, used for tombstones as deletes.").
				Default("cdc_key").Advanced(),
		).
		Example("Debezium to rows", "Decode, then unwrap.", `
pipeline:
  processors:
    - schema_registry_decode:
        url: ${SCHEMA_REGISTRY_URL:http://localhost:8081}
        avro: { raw_unions: true, preserve_logical_types: true, translate_kafka_connect_types: true }
    - debezium_unwrap: {}
`)
}

func init() {
	err := service.RegisterBatchProcessor("debezium_unwrap", unwrapSpec(),
		func(conf *service.ParsedConfig, mgr *service.Resources) (service.BatchProcessor, error) {
			return newUnwrap(conf, mgr)
		})
	if err != nil {
		panic(err)
	}
}

type unwrap struct {
	tombstonesAsDeletes bool
	markTombstones      bool
	keyMeta             string
	dropped             *service.MetricCounter
	truncates           *service.MetricCounter
	log                 *service.Logger
}

func newUnwrap(conf *service.ParsedConfig, mgr *service.Resources) (*unwrap, error) {
	mode, err := conf.FieldString(fieldTombstones)
	if err != nil {
		return nil, err
	}
	keyMeta, err := conf.FieldString(fieldKeyMetadata)
	if err != nil {
		return nil, err
	}
	return &unwrap{
		tombstonesAsDeletes: mode == "delete",
		markTombstones:      mode == "mark",
		keyMeta:             keyMeta,
		dropped:             mgr.Metrics().NewCounter("debezium_tombstones_dropped"),
		truncates:           mgr.Metrics().NewCounter("debezium_truncates"),
		log:                 mgr.Logger(),
	}, nil
}

// ProcessBatch unwraps each message of the batch. A message an earlier
// processor failed passes unchanged, its error kept (there is no envelope
// to read in it): a chain of processors needs no try around it. One that
// fails here is marked errored and passed on; dropped tombstones leave the
// batch.
func (u *unwrap) ProcessBatch(ctx context.Context, batch service.MessageBatch) ([]service.MessageBatch, error) {
	out := batch[:0:0]
	for _, msg := range batch {
		if msg.GetError() != nil {
			out = append(out, msg)
			continue
		}
		res, err := u.Process(ctx, msg)
		if err != nil {
			msg.SetError(err)
			out = append(out, msg)
			continue
		}
		out = append(out, res...)
	}
	if len(out) == 0 {
		return nil, nil
	}
	return []service.MessageBatch{out}, nil
}

// Process unwraps one message: its rows (none for a dropped tombstone), or
// the reason it cannot be unwrapped.
func (u *unwrap) Process(_ context.Context, msg *service.Message) (service.MessageBatch, error) {
	// Structured first: asking a decoded message for bytes would serialize
	// it to JSON just to learn it is not empty. Read-only (no deep copy):
	// the envelope is only read, and the row image handed on as the new
	// body is the message's own (its envelope is replaced by it).
	v, err := msg.AsStructured()
	if err != nil {
		if b, berr := msg.AsBytes(); berr == nil && len(b) == 0 {
			return u.tombstone(msg)
		}
		return nil, fmt.Errorf("not a decoded Debezium envelope: %w", err)
	}
	env, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("not a Debezium envelope: want an object, got %T", v)
	}
	op, _ := env["op"].(string)
	var body any
	switch op {
	case "r", "c", "u":
		body, err = row(env, "after", op)
	case "d":
		body, err = row(env, "before", op)
	case "t":
		body = map[string]any{}
	case "m":
		body = env["message"]
	case "":
		return nil, errors.New("not a Debezium envelope: no op field")
	default:
		return nil, fmt.Errorf("unknown Debezium op %q", op)
	}
	if err != nil {
		return nil, err
	}

	// Values the envelope holds in the type metadata takes are set as they
	// are: a new box per message and key would be garbage soon after.
	source, _ := env["source"].(map[string]any)
	msg.MetaSetMut("cdc_op", env["op"])
	if source != nil {
		if t := source["table"]; isString(t) {
			msg.MetaSetMut("cdc_table", t)
		}
		if s := source["schema"]; isString(s) {
			msg.MetaSetMut("cdc_schema", s)
		}
		tsMs := int64Value(source["ts_ms"])
		if tsMs != nil {
			msg.MetaSetMut("cdc_ts_ms", tsMs)
		}
		if lsn := int64Value(source["lsn"]); lsn != nil {
			msg.MetaSetMut("cdc_version", lsn)
		} else if tsMs != nil {
			msg.MetaSetMut("cdc_version", tsMs)
		}
		snap, _ := source["snapshot"].(string)
		msg.MetaSetMut("cdc_snapshot", snap == "true" || snap == "last" || snap == "first" || snap == "last_in_data_collection" || snap == "first_in_data_collection" || snap == "incremental")
	}
	switch op {
	case "t":
		// A truncate empties a source table: loud, and counted.
		u.truncates.Incr(1)
		u.log.Warnf("debezium_unwrap: TRUNCATE of source table %v (version %v) passed on", source["table"], source["lsn"])
	case "m":
		u.log.Infof("debezium_unwrap: logical decoding message passed on")
	}
	msg.SetStructuredMut(body)
	return service.MessageBatch{msg}, nil
}

// row returns the row image of an envelope field, refusing the Avro JSON
// union wrapping ({"<ns>.Value": {...}}) that raw_unions: false produces.
func row(env map[string]any, field, op string) (any, error) {
	r, ok := env[field].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("op %q event without %s", op, field)
	}
	if len(r) == 1 {
		for k, inner := range r {
			if _, isMap := inner.(map[string]any); isMap && strings.HasSuffix(k, ".Value") {
				return nil, fmt.Errorf("%s is a wrapped union (%s): decode with avro.raw_unions: true", field, k)
			}
		}
	}
	return r, nil
}

func (u *unwrap) tombstone(msg *service.Message) (service.MessageBatch, error) {
	if u.markTombstones {
		msg.MetaSetMut("cdc_tombstone", true)
		return service.MessageBatch{msg}, nil
	}
	if !u.tombstonesAsDeletes {
		u.dropped.Incr(1)
		return nil, nil
	}
	key, ok := msg.MetaGetMut(u.keyMeta)
	if !ok {
		return nil, fmt.Errorf("tombstone without a decoded key in metadata %q: decode the kafka key first", u.keyMeta)
	}
	if s, isString := key.(string); isString {
		var parsed any
		if err := json.Unmarshal([]byte(s), &parsed); err != nil {
			return nil, fmt.Errorf("tombstone key in metadata %q is not structured: %w", u.keyMeta, err)
		}
		key = parsed
	}
	msg.MetaSetMut("cdc_op", "d")
	msg.MetaSetMut("cdc_tombstone", true)
	if topic, ok := msg.MetaGet("kafka_topic"); ok {
		msg.MetaSetMut("cdc_table", topic[strings.LastIndexByte(topic, '.')+1:])
	}
	msg.SetStructuredMut(key)
	return service.MessageBatch{msg}, nil
}

// asInt64 reads an integer the decoder or JSON produced.
func isString(v any) bool {
	_, ok := v.(string)
	return ok
}

// int64Value is v as an int64 in an interface (v itself when it is one);
// nil when v is not an integer.
func int64Value(v any) any {
	if _, ok := v.(int64); ok {
		return v
	}
	if n, ok := asInt64(v); ok {
		return n
	}
	return nil
}

func asInt64(v any) (int64, bool) {
	switch n := v.(type) {
	case int64:
		return n, true
	case int:
		return int64(n), true
	case int32:
		return int64(n), true
	case float64:
		return int64(n), n == float64(int64(n))
	case json.Number:
		i, err := n.Int64()
		return i, err == nil
	case string:
		i, err := strconv.ParseInt(n, 10, 64)
		return i, err == nil
	}
	return 0, false
}

func (u *unwrap) Close(context.Context) error { return nil }
