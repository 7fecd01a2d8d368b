package confluent

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"

	"github.com/odsflow/odsflow/internal/avrocodec"
)

const (
	fieldSubject       = "subject"
	fieldRefreshPeriod = "refresh_period"
)

func encodeSpec() *service.ConfigSpec {
	fields := append(registryFields(),
		service.NewInterpolatedStringField(fieldSubject).
			Description("The subject whose latest schema encodes the message.").
			Example("${! @kafka_topic }-value").Example("foo-value"),
		service.NewDurationField(fieldRefreshPeriod).
			Description("How often the latest schema of a subject is fetched again, so that a new version is picked up. The fetch runs in the background: messages go on with the schema already known meanwhile, and keep it if the fetch fails.").
			Default("10m"),
		service.NewObjectField(fieldAvro,
			service.NewBoolField(fieldRawUnions).
				Description("Whether union values are given bare (`\"hello\"`, `null`) rather than in the Avro JSON encoding (`{\"string\": \"hello\"}`).").
				Default(false),
		).Description("How structured data is read as Avro."),
		service.NewBoolField(fieldAvroRawJSON).
			Description("Deprecated: use `avro.raw_unions` (Redpanda Connect's name for it: true reads unions bare).").
			Default(false).Deprecated(),
	)
	return service.NewConfigSpec().
		Stable().
		Categories("Parsing", "Integration").
		Summary("Encodes messages as Avro in the Confluent wire format, with the latest schema of a subject.").
		Description(`
Field-compatible with Redpanda Connect's `+"`schema_registry_encode`"+`. The structured message is encoded with the latest
schema of `+"`subject`"+` and prefixed with byte 0x00 and the schema id. Timestamps and decimals may be given either as
their Avro primitives or as the readable values `+"`schema_registry_decode`"+` produces (RFC 3339 strings, exact decimal
strings). A message that does not fit the schema is marked errored with the field that failed. A message that an
earlier processor marked errored is passed on untouched. When a subject's schema cannot be fetched (the registry
unreachable or refusing beyond `+"`retry_max_elapsed`"+`), the batch's other messages of that subject fail with the
same error at once: an outage costs a batch one retry budget per subject, not one per message.
`).
		Fields(fields...).
		Example("Back to Avro", "Encode JSON documents for a topic.", `
pipeline:
  processors:
    - schema_registry_encode:
        url: ${SCHEMA_REGISTRY_URL:http://localhost:8081}
        subject: ${! @kafka_topic }-value
        avro:
          raw_unions: true
`)
}

func init() {
	err := service.RegisterBatchProcessor("schema_registry_encode", encodeSpec(),
		func(conf *service.ParsedConfig, mgr *service.Resources) (service.BatchProcessor, error) {
			return newEncodeProcessor(conf, mgr)
		})
	if err != nil {
		panic(err)
	}
}

type encodeProcessor struct {
	client   *registryClient
	subject  *service.InterpolatedString
	opts     avrocodec.Options
	subjects *schemaCache[string] // latest schema by subject
	log      *service.Logger
}

func newEncodeProcessor(conf *service.ParsedConfig, mgr *service.Resources) (*encodeProcessor, error) {
	client, err := newRegistryClient(conf, mgr, "schema_registry_encode")
	if err != nil {
		return nil, err
	}
	p := &encodeProcessor{
		client: client,
		log:    mgr.Logger(),
		// Accept what the decoder produces as well as Avro primitives.
		opts: avrocodec.Options{PreserveLogicalTypes: true, TranslateKafkaConnectTypes: true},
	}
	if p.subject, err = conf.FieldInterpolatedString(fieldSubject); err != nil {
		return nil, err
	}
	refresh, err := conf.FieldDuration(fieldRefreshPeriod)
	if err != nil {
		return nil, err
	}
	p.subjects = newSchemaCache(refresh, func(subject string, kept *compiled, err error) {
		p.log.Warnf("schema_registry_encode: refreshing %s failed, keeping schema id %d: %v", subject, kept.id, err)
	})
	if p.opts.RawUnions, err = conf.FieldBool(fieldAvro, fieldRawUnions); err != nil {
		return nil, err
	}
	if rawJSON, err := conf.FieldBool(fieldAvroRawJSON); err != nil {
		return nil, err
	} else if rawJSON {
		p.opts.RawUnions = true
	}
	return p, nil
}

// ProcessBatch encodes each message of the batch (eachMessage), one fetch
// per subject the registry fails for (batchMemo).
func (p *encodeProcessor) ProcessBatch(ctx context.Context, batch service.MessageBatch) ([]service.MessageBatch, error) {
	unavailable := batchMemo[string]{}
	return eachMessage(ctx, "schema_registry_encode", batch, func(msg *service.Message) error {
		return p.encode(ctx, msg, unavailable)
	})
}

// Process encodes one message in place, or returns why it cannot be.
func (p *encodeProcessor) Process(ctx context.Context, msg *service.Message) (service.MessageBatch, error) {
	if err := p.encode(ctx, msg, nil); err != nil {
		return nil, err
	}
	return service.MessageBatch{msg}, nil
}

// encode encodes msg in place. unavailable, when not nil, is the batch's
// memo of failed fetches.
func (p *encodeProcessor) encode(ctx context.Context, msg *service.Message, unavailable batchMemo[string]) error {
	subject, err := p.subject.TryString(msg)
	if err != nil {
		return fmt.Errorf("subject: %w", err)
	}
	v, err := msg.AsStructured()
	if err != nil {
		return fmt.Errorf("message is not structured data: %w", err)
	}
	entry, err := unavailable.lookup(ctx, subject, func() (*compiled, error) { return p.latest(ctx, subject) })
	if err != nil {
		return err
	}
	out := make([]byte, 5, 64)
	binary.BigEndian.PutUint32(out[1:5], uint32(entry.id))
	if out, err = entry.codec.AppendEncode(out, v); err != nil {
		return fmt.Errorf("encoding for %s (schema id %d): %w", subject, entry.id, err)
	}
	msg.SetBytes(out)
	msg.MetaSetMut("schema_id", entry.id)
	return nil
}

func (p *encodeProcessor) latest(ctx context.Context, subject string) (*compiled, error) {
	return p.subjects.get(ctx, subject, func(ctx context.Context, prev *compiled) (*compiled, error) {
		s, err := p.client.latest(ctx, subject)
		if err != nil {
			return nil, fmt.Errorf("fetching the latest schema of %s: %w", subject, err)
		}
		if prev != nil && s.ID == prev.id {
			return &compiled{id: prev.id, codec: prev.codec, fetched: time.Now()}, nil
		}
		schema, err := p.client.parse(ctx, s)
		if err != nil {
			return nil, err
		}
		codec, err := avrocodec.Compile(schema, p.opts)
		if err != nil {
			return nil, fmt.Errorf("compiling schema id %d of %s: %w", s.ID, subject, err)
		}
		return &compiled{id: s.ID, codec: codec, fetched: time.Now()}, nil
	})
}

func (p *encodeProcessor) Close(context.Context) error { return nil }
