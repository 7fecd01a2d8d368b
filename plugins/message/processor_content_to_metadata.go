// Package message holds processors that work on Benthos messages
// themselves, whatever their content: content_to_metadata.
package message

import (
	"context"
	"fmt"

	"github.com/redpanda-data/benthos/v4/public/service"
)

const fieldKey = "key"

func contentToMetadataSpec() *service.ConfigSpec {
	return service.NewConfigSpec().
		Stable().
		Categories("Utility").
		Summary("Keeps each message's content, as it is now, in a metadata key: the original record for a dead-letter path, before later processors replace the content.").
		Description(`
The bytes are kept as they are (no copy, no parsing). The same as `+"`mapping: 'meta <key> = content()'`"+`, at a
fraction of the cost: a Bloblang mapping copies the message's metadata map before it writes to it, and a
`+"`mutation`"+` tries to parse the content as JSON first (binary Avro never is). A message with no bytes (a Kafka
tombstone) keeps an empty value.
`).
		Fields(
			service.NewStringField(fieldKey).
				Description("The metadata key that holds the content.").
				Example("dlq_value"),
		).
		Example("The original record for the dead letters", "Keep the raw Avro record, decode it, and give a dead letter the original bytes.", `
pipeline:
  processors:
    - content_to_metadata: { key: dlq_value }
    - schema_registry_decode: { url: "${SCHEMA_REGISTRY_URL:http://localhost:8081}" }
output:
  switch:
    cases:
      - check: errored()
        output:
          kafka_franz: { seed_brokers: [ "${KAFKA_BROKERS:localhost:9092}" ], topic: dead-letters }
          processors:
            - mapping: 'root = @dlq_value'
      - output:
          stdout: {}
`)
}

func init() {
	err := service.RegisterBatchProcessor("content_to_metadata", contentToMetadataSpec(),
		func(conf *service.ParsedConfig, _ *service.Resources) (service.BatchProcessor, error) {
			key, err := conf.FieldString(fieldKey)
			if err != nil {
				return nil, err
			}
			if key == "" {
				return nil, fmt.Errorf("%s must not be empty", fieldKey)
			}
			return &contentToMetadata{key: key}, nil
		})
	if err != nil {
		panic(err)
	}
}

type contentToMetadata struct {
	key string
}

// ProcessBatch stores each message's bytes under the key, in place.
func (p *contentToMetadata) ProcessBatch(_ context.Context, batch service.MessageBatch) ([]service.MessageBatch, error) {
	for _, msg := range batch {
		b, err := msg.AsBytes()
		if err != nil {
			msg.SetError(fmt.Errorf("content_to_metadata: reading the content: %w", err))
			continue
		}
		msg.MetaSetMut(p.key, b)
	}
	return []service.MessageBatch{batch}, nil
}

func (p *contentToMetadata) Close(context.Context) error { return nil }
