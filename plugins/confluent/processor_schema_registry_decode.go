package confluent

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"

	"github.com/odsflow/odsflow/internal/avrocodec"
)

const (
	fieldAvro            = "avro"
	fieldRawUnions       = "raw_unions"
	fieldPreserveLogical = "preserve_logical_types"
	fieldTranslate       = "translate_kafka_connect_types"
	fieldAvroRawJSON     = "avro_raw_json"
	fieldCacheDuration   = "cache_duration"
)

func avroDecodeField() *service.ConfigField {
	return service.NewObjectField(fieldAvro,
		service.NewBoolField(fieldRawUnions).
			Description("Decode unions as their bare values (`\"hello\"`, `null`) rather than the Avro JSON encoding (`{\"string\": \"hello\"}`). Debezium envelopes are unions (`after: [null, Value]`): set it true to read `this.after.id`.").
			Default(false),
		service.NewBoolField(fieldPreserveLogical).
			Description("Decode Avro logical types to readable values: timestamps to RFC 3339 UTC strings, `date` to `YYYY-MM-DD`, `decimal` to an exact decimal string. Otherwise they come out as their primitive (integers, raw bytes).").
			Default(false),
		service.NewBoolField(fieldTranslate).
			Description("Translate Kafka Connect and Debezium types (schema property `connect.name`): `MicroTimestamp`, `Timestamp`, `NanoTimestamp` to RFC 3339 UTC strings, `ZonedTimestamp` kept, `Date` to `YYYY-MM-DD`, `Decimal` and `VariableScaleDecimal` to exact decimal strings (never floats).").
			Default(false),
	).Description("How Avro values are turned into structured data.")
}

func decodeSpec() *service.ConfigSpec {
	fields := append(registryFields(),
		avroDecodeField(),
		service.NewBoolField(fieldAvroRawJSON).
			Description("Deprecated: use `avro.raw_unions`.").
			Default(false).Deprecated(),
		service.NewDurationField(fieldCacheDuration).
			Description("How long a fetched schema is used before it is fetched again. The refetch runs in the background while messages go on with the schema already known; schema ids are immutable, so a failed refetch keeps it.").
			Default("10m").Advanced(),
	)
	return service.NewConfigSpec().
		Stable().
		Categories("Parsing", "Integration").
		Summary("Decodes Avro messages in the Confluent wire format with schemas from a schema registry.").
		Description(`
Field-compatible with Redpanda Connect's `+"`schema_registry_decode`"+`. A message is byte 0x00, a 4-byte big-endian
schema id, then one Avro binary datum; it becomes the structured value of the datum, with metadata `+"`schema_id`"+`.

Each schema id is fetched once, even when many messages with a new id arrive at once, then a decoder compiled for
it is reused: values are built directly, without per-message reflection. Schema references are resolved.
Decimals are never floats: with `+"`avro.translate_kafka_connect_types`"+` or `+"`avro.preserve_logical_types`"+` they
are exact decimal strings.

An empty message (a Kafka tombstone) passes through unchanged, so that a later `+"`debezium_unwrap`"+` can handle it.
Anything else that cannot be decoded — a wrong magic byte, an unknown schema id, truncated Avro, a non-Avro schema,
the registry unreachable beyond `+"`retry_max_elapsed`"+` — leaves the message unchanged and marks it errored with
the reason, for a `+"`catch`"+` or a dead-letter output to handle. During a registry outage the messages that need
a schema not yet cached wait for one retry budget together, not one each (the next batch waits again: the pipeline
is held, not emptied into the dead-letter topic). A message that an earlier processor marked errored is passed on untouched, its error kept, so a chain of
processors that fail messages needs no `+"`try`"+` (which would split the batch into single messages). Stopped
while the registry is being waited for (the pipeline's hard stop), it marks the batch's messages errored with the
stop as the reason: the outputs are stopped too by then (this binary's `+"`kafka_franz`"+` output writes nothing once
stopped), so nothing is acknowledged and the batch is read again after the restart.

The Kafka key can be decoded too, with a `+"`branch`"+` (Debezium keys are Avro records of the primary key):

`+"```yaml"+`
- branch:
    request_map: 'root = @kafka_key'
    processors:
      - schema_registry_decode: { url: "${SCHEMA_REGISTRY_URL}", avro: { raw_unions: true } }
    result_map: 'meta cdc_key = this'
`+"```"+`
`).
		Fields(fields...).
		Example("Debezium values, exactly", "Decode Debezium change events with decimals and timestamps translated.", `
pipeline:
  processors:
    - schema_registry_decode:
        url: ${SCHEMA_REGISTRY_URL:http://localhost:8081}
        avro:
          raw_unions: true
          preserve_logical_types: true
          translate_kafka_connect_types: true
`)
}

func init() {
	err := service.RegisterBatchProcessor("schema_registry_decode", decodeSpec(),
		func(conf *service.ParsedConfig, mgr *service.Resources) (service.BatchProcessor, error) {
			return newDecodeProcessor(conf, mgr)
		})
	if err != nil {
		panic(err)
	}
}

type decodeProcessor struct {
	client *registryClient
	opts   avrocodec.Options
	codecs *schemaCache[int] // by schema id
	log    *service.Logger
}

func newDecodeProcessor(conf *service.ParsedConfig, mgr *service.Resources) (*decodeProcessor, error) {
	client, err := newRegistryClient(conf, mgr, "schema_registry_decode")
	if err != nil {
		return nil, err
	}
	p := &decodeProcessor{client: client, log: mgr.Logger()}
	if p.opts.RawUnions, err = conf.FieldBool(fieldAvro, fieldRawUnions); err != nil {
		return nil, err
	}
	if rawJSON, err := conf.FieldBool(fieldAvroRawJSON); err != nil {
		return nil, err
	} else if rawJSON {
		p.opts.RawUnions = true
	}
	if p.opts.PreserveLogicalTypes, err = conf.FieldBool(fieldAvro, fieldPreserveLogical); err != nil {
		return nil, err
	}
	if p.opts.TranslateKafkaConnectTypes, err = conf.FieldBool(fieldAvro, fieldTranslate); err != nil {
		return nil, err
	}
	cacheFor, err := conf.FieldDuration(fieldCacheDuration)
	if err != nil {
		return nil, err
	}
	p.codecs = newSchemaCache(cacheFor, func(id int, _ *compiled, err error) {
		p.log.Warnf("schema_registry_decode: refreshing schema id %d failed, keeping the cached one: %v", id, err)
	})
	return p, nil
}

// errEmpty marks a message too short for the wire format's header.
var errTruncatedHeader = errors.New("message shorter than the 5-byte Confluent header")

// schemaID reads the Confluent wire-format header.
func schemaID(b []byte) (int, error) {
	if b[0] != 0 {
		return 0, fmt.Errorf("wrong magic byte 0x%02x: not the Confluent wire format (want 0x00)", b[0])
	}
	if len(b) < 5 {
		return 0, errTruncatedHeader
	}
	return int(binary.BigEndian.Uint32(b[1:5])), nil
}

// ProcessBatch decodes each message of the batch (eachMessage), one
// fetch per schema id the registry fails for (batchMemo).
func (p *decodeProcessor) ProcessBatch(ctx context.Context, batch service.MessageBatch) ([]service.MessageBatch, error) {
	unavailable := batchMemo[int]{}
	return eachMessage(ctx, "schema_registry_decode", batch, func(msg *service.Message) error {
		return p.decode(ctx, msg, unavailable)
	})
}

// Process decodes one message in place, or returns why it cannot be.
func (p *decodeProcessor) Process(ctx context.Context, msg *service.Message) (service.MessageBatch, error) {
	if err := p.decode(ctx, msg, nil); err != nil {
		return nil, err
	}
	return service.MessageBatch{msg}, nil
}

// decode decodes msg in place. unavailable, when not nil, is the batch's
// memo of failed fetches.
func (p *decodeProcessor) decode(ctx context.Context, msg *service.Message, unavailable batchMemo[int]) error {
	b, err := msg.AsBytes()
	if err != nil {
		return fmt.Errorf("reading message: %w", err)
	}
	if len(b) == 0 {
		return nil // a tombstone: nothing to decode
	}
	id, err := schemaID(b)
	if err != nil {
		return err
	}
	entry, err := unavailable.lookup(ctx, id, func() (*compiled, error) { return p.codec(ctx, id) })
	if err != nil {
		return err
	}
	v, err := entry.codec.Decode(b[5:])
	if err != nil {
		return fmt.Errorf("decoding avro with schema id %d: %w", id, err)
	}
	msg.SetStructuredMut(v)
	msg.MetaSetMut("schema_id", id)
	return nil
}

// codec returns the decoder for id, fetching and compiling it once.
func (p *decodeProcessor) codec(ctx context.Context, id int) (*compiled, error) {
	return p.codecs.get(ctx, id, func(ctx context.Context, _ *compiled) (*compiled, error) {
		s, err := p.client.schemaByID(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("fetching schema id %d: %w", id, err)
		}
		schema, err := p.client.parse(ctx, s)
		if err != nil {
			return nil, err
		}
		codec, err := avrocodec.Compile(schema, p.opts)
		if err != nil {
			return nil, fmt.Errorf("compiling schema id %d: %w", id, err)
		}
		return &compiled{id: id, codec: codec, fetched: time.Now()}, nil
	})
}

func (p *decodeProcessor) Close(context.Context) error { return nil }
