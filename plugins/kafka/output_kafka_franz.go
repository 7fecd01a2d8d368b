package kafka

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/redpanda-data/benthos/v4/public/service"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Field names of the kafka_franz output (the shared client fields are in
// franz_client.go).
const (
	kfoFieldTopic               = "topic"
	kfoFieldKey                 = "key"
	kfoFieldPartition           = "partition"
	kfoFieldMetadata            = "metadata"
	kfoFieldTimestampMs         = "timestamp_ms"
	kfoFieldTimestamp           = "timestamp"
	kfoFieldBatching            = "batching"
	kfoFieldPartitioner         = "partitioner"
	kfoFieldIdempotentWrite     = "idempotent_write"
	kfoFieldCompression         = "compression"
	kfoFieldAutoTopicCreation   = "allow_auto_topic_creation"
	kfoFieldTimeout             = "timeout"
	kfoFieldMaxMessageBytes     = "max_message_bytes"
	kfoFieldBrokerWriteMaxBytes = "broker_write_max_bytes"
)

// Partitioner names, as Redpanda Connect spells them.
const (
	kfoPartitionerMurmur2      = "murmur2_hash"
	kfoPartitionerRoundRobin   = "round_robin"
	kfoPartitionerLeastBackup  = "least_backup"
	kfoPartitionerManual       = "manual"
	kfoPartitionerUniformBytes = "uniform_bytes"
)

// kfoTombstoneMeta is the metadata key that turns an empty message into a
// Kafka tombstone (a record with a null value).
const kfoTombstoneMeta = "kafka_tombstone_message"

// kfoUniformBytesSwitch is how many bytes the uniform_bytes partitioner
// writes to one partition before moving on: the Java producer's default
// batch.size, which is what its built-in partitioner switches on.
const kfoUniformBytesSwitch = 16384

func kafkaFranzOutputSpec() *service.ConfigSpec {
	return service.NewConfigSpec().
		Stable().
		Categories("Services").
		Summary("Writes batches of messages to Kafka with franz-go and acknowledges each message only once Kafka has acknowledged it.").
		Description(`
Every message of a batch is produced concurrently and the batch is acknowledged once Kafka has
acknowledged each of them (with `+"`acks=all`"+`). A message that cannot be written (its topic,
key, partition or timestamp does not resolve, it is larger than `+"`max_message_bytes`"+`, or Kafka
rejects it) fails on its own: the output reports exactly the failed messages, so only they are
retried or routed to a `+"`fallback`"+` / dead-letter output, while the rest of the batch is
acknowledged.

### Delivery guarantees

Delivery is at-least-once. With `+"`idempotent_write`"+` (the default) the client's own retries
never duplicate or reorder records within a partition; a message that Benthos retries after an
error may still be written twice, and may land after messages that followed it in its batch.

### Keys and partitions

The default `+"`murmur2_hash`"+` partitioner places keyed records exactly where the Java client
(and Kafka Connect, Kafka Streams, Debezium) would: `+"`(murmur2(key) & 0x7fffffff) % partitions`"+`.
An empty key resolved from `+"`key`"+` is written as an empty (not null) key and is hashed like any
other key.

### Headers and tombstones

Only the metadata keys selected by `+"`metadata`"+` are written as record headers; none are by
default. A message with an empty payload is written as a tombstone (null value) when its metadata
`+"`"+kfoTombstoneMeta+"`"+` is `+"`true`"+`, and as an empty value otherwise.

### Connection

Connecting creates the client and waits for a seed broker to answer, so an unreachable cluster is a
connection error that Benthos retries with backoff rather than a silently stalled output.`).
		Fields(clientFields()...).
		Fields(
			service.NewInterpolatedStringField(kfoFieldTopic).
				Description("The topic to write each message to.").
				Example("ods.customers").
				Example(`${! meta("kafka_topic") }`),
			service.NewInterpolatedStringField(kfoFieldKey).
				Description("The record key of each message. Unset means a null key.").
				Example(`${! meta("kafka_key") }`).
				Example(`${! json("customer_id") }`).
				Optional(),
			service.NewInterpolatedStringField(kfoFieldPartition).
				Description("The partition to write each message to, a non-negative integer. Only used, and then required, with the `manual` partitioner; a message whose partition does not resolve to a partition of its topic fails on its own.").
				Example(`${! meta("kafka_partition") }`).
				Example("0").
				Optional(),
			service.NewMetadataFilterField(kfoFieldMetadata).
				Description("Which message metadata to write as record headers. Nothing is written by default.").
				Example(map[string]any{"include_prefixes": []string{"kafka_"}}).
				Example(map[string]any{"include_patterns": []string{".*"}}).
				Optional(),
			service.NewInterpolatedStringField(kfoFieldTimestampMs).
				Description("The record timestamp in milliseconds since the Unix epoch. Unset means the time the record is produced.").
				Example(`${! timestamp_unix_milli() }`).
				Example(`${! meta("kafka_timestamp_ms") }`).
				Optional().Advanced(),
			service.NewInterpolatedStringField(kfoFieldTimestamp).
				Description("Deprecated: use `timestamp_ms`. The record timestamp in seconds since the Unix epoch.").
				Example(`${! timestamp_unix() }`).
				Optional().Advanced().Deprecated(),
			service.NewInjectTracingSpanMappingField(),
			service.NewOutputMaxInFlightField().
				Description("The maximum number of batches to have in flight at a given time. Increase this to improve throughput; batches in flight at the same time may be written in any order relative to each other.").
				Default(10).
				Example(64),
			service.NewBatchPolicyField(kfoFieldBatching),
			service.NewStringAnnotatedEnumField(kfoFieldPartitioner, map[string]string{
				kfoPartitionerMurmur2:      "The Java client's default: murmur2 of the key modulo the partition count, so keyed records land where Java producers put them; records without a key stick to one partition per batch.",
				kfoPartitionerRoundRobin:   "Round-robin over all partitions, ignoring keys.",
				kfoPartitionerLeastBackup:  "The partition with the fewest records buffered, ignoring keys.",
				kfoPartitionerManual:       "The partition given by the `partition` field.",
				kfoPartitionerUniformBytes: "Java's built-in partitioner of Kafka 3.3+: keyed records by murmur2 of the key, records without a key to one partition for every 16KiB, preferring less loaded partitions.",
			}).
				Description("How each record's partition is chosen.").
				Default(kfoPartitionerMurmur2).
				Advanced(),
			service.NewBoolField(kfoFieldIdempotentWrite).
				Description("Enable the idempotent producer, so the client's retries never duplicate or reorder records within a partition. Requires the `IDEMPOTENT_WRITE` permission on the cluster on Kafka versions before 3.0.").
				Default(true).
				Example(false).
				Advanced(),
			service.NewStringEnumField(kfoFieldCompression, "none", "gzip", "snappy", "lz4", "zstd").
				Description("The compression codec of record batches. Unset means snappy where it makes a batch smaller and none otherwise.").
				Example("zstd").
				Optional().Advanced(),
			service.NewBoolField(kfoFieldAutoTopicCreation).
				Description("Ask the broker to create a topic that does not exist yet (when the broker's `auto.create.topics.enable` allows it).").
				Default(true).
				Example(false).
				Advanced(),
			service.NewDurationField(kfoFieldTimeout).
				Description("How long to wait for a batch to be written before failing its messages so Benthos retries them. A request already sent with `idempotent_write` on is awaited until Kafka answers, since failing it could duplicate records.").
				Default("10s").
				Example("30s").
				Advanced(),
			service.NewStringField(kfoFieldMaxMessageBytes).
				Description("The maximum size of a record batch before compression, which bounds the size of a single record; keep it at or below the topic's `max.message.bytes`. A larger record fails on its own.").
				Default("1MB").
				Example("100MB").
				Example("50mib").
				Advanced(),
			service.NewStringField(kfoFieldBrokerWriteMaxBytes).
				Description("The maximum size of one produce request to a broker; it matches the broker's `socket.request.max.bytes` and must not be less than `max_message_bytes`. At most 1GiB.").
				Default("100MB").
				Example("128MB").
				Example("50mib").
				Advanced(),
		).
		Example("A dead-letter topic", "Failed messages to one topic, keyed as they came, with every metadata key as a header.", `
output:
  kafka_franz:
    seed_brokers: [ "${KAFKA_BROKERS:localhost:9092}" ]
    topic: ${ODS_DLQ_TOPIC:odsflow.dlq}
    key: ${! @kafka_key }
    metadata:
      include_patterns: [ ".*" ]
    max_in_flight: 1
`).
		LintRule(`let manual = this.partitioner.or("` + kfoPartitionerMurmur2 + `") == "` + kfoPartitionerManual + `"
let has_partition = this.partition.or("") != ""
root = if $manual && !$has_partition {
  [ "partition must be set when the partitioner is ` + kfoPartitionerManual + `" ]
} else if !$manual && $has_partition {
  [ "partition is only used with the ` + kfoPartitionerManual + ` partitioner" ]
}`)
}

func init() {
	err := service.RegisterBatchOutput("kafka_franz", kafkaFranzOutputSpec(),
		func(conf *service.ParsedConfig, mgr *service.Resources) (service.BatchOutput, service.BatchPolicy, int, error) {
			var policy service.BatchPolicy
			maxInFlight, err := conf.FieldMaxInFlight()
			if err != nil {
				return nil, policy, 0, err
			}
			if policy, err = conf.FieldBatchPolicy(kfoFieldBatching); err != nil {
				return nil, policy, 0, err
			}
			out, err := newWrappedKafkaFranzOutput(conf, mgr)
			if err != nil {
				return nil, policy, 0, err
			}
			return out, policy, maxInFlight, nil
		})
	if err != nil {
		panic(err)
	}
}

// newWrappedKafkaFranzOutput is the output in Benthos' own wrapper for
// Redpanda Connect's inject_tracing_map (itself unless that is set).
func newWrappedKafkaFranzOutput(conf *service.ParsedConfig, mgr *service.Resources) (service.BatchOutput, error) {
	out, err := newKafkaFranzOutput(conf, mgr)
	if err != nil {
		return nil, err
	}
	return conf.WrapBatchOutputExtractTracingSpanMapping("kafka_franz", out)
}

// kafkaFranzOutput writes message batches to Kafka. The client is created by
// Connect and shared by the concurrent WriteBatch calls.
type kafkaFranzOutput struct {
	opts []kgo.Opt

	topic       *service.InterpolatedString
	key         *service.InterpolatedString // nil: null key
	partition   *service.InterpolatedString // nil unless the partitioner is manual
	timestampMs *service.InterpolatedString // nil: the produce time
	// timestampSec: the deprecated timestamp field, in seconds (never
	// set together with timestampMs).
	timestampSec *service.InterpolatedString
	headers      *service.MetadataFilter
	timeout      time.Duration

	mu     sync.Mutex
	client *kgo.Client
}

func newKafkaFranzOutput(conf *service.ParsedConfig, mgr *service.Resources) (*kafkaFranzOutput, error) {
	opts, err := clientOptions(conf, mgr.Logger())
	if err != nil {
		return nil, err
	}
	o := &kafkaFranzOutput{}
	if o.topic, err = conf.FieldInterpolatedString(kfoFieldTopic); err != nil {
		return nil, err
	}
	if conf.Contains(kfoFieldKey) {
		if o.key, err = conf.FieldInterpolatedString(kfoFieldKey); err != nil {
			return nil, err
		}
	}
	if conf.Contains(kfoFieldTimestampMs) {
		if o.timestampMs, err = conf.FieldInterpolatedString(kfoFieldTimestampMs); err != nil {
			return nil, err
		}
	}
	if conf.Contains(kfoFieldTimestamp) {
		if o.timestampMs != nil {
			return nil, errors.New("timestamp and timestamp_ms are both set: keep timestamp_ms")
		}
		if o.timestampSec, err = conf.FieldInterpolatedString(kfoFieldTimestamp); err != nil {
			return nil, err
		}
	}
	if conf.Contains(kfoFieldMetadata) {
		if o.headers, err = conf.FieldMetadataFilter(kfoFieldMetadata); err != nil {
			return nil, err
		}
	}
	if o.timeout, err = conf.FieldDuration(kfoFieldTimeout); err != nil {
		return nil, err
	}
	if o.timeout <= 0 {
		return nil, fmt.Errorf("%s: must be positive, got %v", kfoFieldTimeout, o.timeout)
	}

	partitioner, err := conf.FieldString(kfoFieldPartitioner)
	if err != nil {
		return nil, err
	}
	part, err := kfoPartitioner(partitioner)
	if err != nil {
		return nil, err
	}
	// Benthos has already batched, and WriteBatch waits for every record, so
	// franz-go's default 10ms linger would only add latency to each batch
	// (it cut single-batch throughput threefold in BenchmarkKafkaFranzOutput).
	// Records produced while a request is in flight are still batched.
	opts = append(opts, kgo.RecordPartitioner(part), kgo.ProducerLinger(0))
	hasPartition := conf.Contains(kfoFieldPartition)
	switch {
	case partitioner == kfoPartitionerManual && !hasPartition:
		return nil, fmt.Errorf("%s: required when %s is %s", kfoFieldPartition, kfoFieldPartitioner, kfoPartitionerManual)
	case partitioner != kfoPartitionerManual && hasPartition:
		return nil, fmt.Errorf("%s: only used when %s is %s, not %s", kfoFieldPartition, kfoFieldPartitioner, kfoPartitionerManual, partitioner)
	case hasPartition:
		if o.partition, err = conf.FieldInterpolatedString(kfoFieldPartition); err != nil {
			return nil, err
		}
	}

	idempotent, err := conf.FieldBool(kfoFieldIdempotentWrite)
	if err != nil {
		return nil, err
	}
	if !idempotent {
		opts = append(opts, kgo.DisableIdempotentWrite())
	}
	if conf.Contains(kfoFieldCompression) {
		name, err := conf.FieldString(kfoFieldCompression)
		if err != nil {
			return nil, err
		}
		codec, err := kfoCompression(name)
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.ProducerBatchCompression(codec))
	}
	autoCreate, err := conf.FieldBool(kfoFieldAutoTopicCreation)
	if err != nil {
		return nil, err
	}
	if autoCreate {
		opts = append(opts, kgo.AllowAutoTopicCreation())
	}

	maxMessage, err := kfoByteSize(conf, kfoFieldMaxMessageBytes, 512)
	if err != nil {
		return nil, err
	}
	maxWrite, err := kfoByteSize(conf, kfoFieldBrokerWriteMaxBytes, 1<<10)
	if err != nil {
		return nil, err
	}
	if maxWrite < maxMessage {
		return nil, fmt.Errorf("%s (%d bytes) is less than %s (%d bytes)", kfoFieldBrokerWriteMaxBytes, maxWrite, kfoFieldMaxMessageBytes, maxMessage)
	}
	opts = append(opts, kgo.ProducerBatchMaxBytes(maxMessage), kgo.BrokerMaxWriteBytes(maxWrite))

	o.opts = opts
	return o, nil
}

func kfoPartitioner(name string) (kgo.Partitioner, error) {
	switch name {
	case kfoPartitionerMurmur2:
		return kgo.StickyKeyPartitioner(nil), nil // nil: Kafka's murmur2 hasher
	case kfoPartitionerRoundRobin:
		return kgo.RoundRobinPartitioner(), nil
	case kfoPartitionerLeastBackup:
		return kgo.LeastBackupPartitioner(), nil
	case kfoPartitionerManual:
		return kgo.ManualPartitioner(), nil
	case kfoPartitionerUniformBytes:
		return kgo.UniformBytesPartitioner(kfoUniformBytesSwitch, true, true, nil), nil
	}
	return nil, fmt.Errorf("%s: unknown partitioner %q", kfoFieldPartitioner, name)
}

func kfoCompression(name string) (kgo.CompressionCodec, error) {
	switch name {
	case "none":
		return kgo.NoCompression(), nil
	case "gzip":
		return kgo.GzipCompression(), nil
	case "snappy":
		return kgo.SnappyCompression(), nil
	case "lz4":
		return kgo.Lz4Compression(), nil
	case "zstd":
		return kgo.ZstdCompression(), nil
	}
	return kgo.CompressionCodec{}, fmt.Errorf("%s: unknown codec %q", kfoFieldCompression, name)
}

// kfoByteSize reads a size like "1MB" or "50MiB", within what franz-go
// accepts: [minimum, 1GiB].
func kfoByteSize(conf *service.ParsedConfig, field string, minimum uint64) (int32, error) {
	s, err := conf.FieldString(field)
	if err != nil {
		return 0, err
	}
	n, err := humanize.ParseBytes(s)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not a size like 1MB or 50MiB: %w", field, s, err)
	}
	if n < minimum || n > 1<<30 {
		return 0, fmt.Errorf("%s: %s (%d bytes) is outside [%d bytes, 1GiB]", field, s, n, minimum)
	}
	return int32(n), nil
}

// Connect creates the client and waits for a seed broker to answer, so that
// an unreachable cluster is a connection error Benthos retries with backoff.
func (o *kafkaFranzOutput) Connect(ctx context.Context) error {
	o.mu.Lock()
	connected := o.client != nil
	o.mu.Unlock()
	if connected {
		return nil
	}
	cl, err := kgo.NewClient(o.opts...)
	if err != nil {
		return fmt.Errorf("creating kafka client: %w", err)
	}
	if err := pingBrokers(ctx, cl); err != nil {
		cl.Close()
		return err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.client != nil { // a concurrent Connect won
		cl.Close()
		return nil
	}
	o.client = cl
	return nil
}

// WriteBatch produces every message of the batch and waits for all of them.
// The returned error is a *service.BatchError naming exactly the messages
// that were not written, each with its own reason.
func (o *kafkaFranzOutput) WriteBatch(ctx context.Context, batch service.MessageBatch) error {
	o.mu.Lock()
	cl := o.client
	o.mu.Unlock()
	if cl == nil {
		return service.ErrNotConnected
	}
	// Stopped: write nothing. (A processor stopped mid-batch marks its
	// messages errored with the stop as the reason; they must not reach a
	// dead-letter topic, or be acknowledged, on the way out.)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("kafka_franz: stopping, batch not written: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()

	// Each index is written once, by this goroutine or by franz-go's promise
	// goroutine; wg.Wait orders those writes before the reads below.
	errs := make([]error, len(batch))
	var wg sync.WaitGroup
	for i := range batch {
		rec, err := o.record(batch, i)
		if err != nil {
			errs[i] = err
			continue
		}
		wg.Add(1)
		cl.Produce(ctx, rec, func(r *kgo.Record, err error) {
			if err != nil {
				errs[i] = fmt.Errorf("writing to topic %s: %w", r.Topic, err)
			}
			wg.Done()
		})
	}
	wg.Wait()

	var failed int
	var first error
	for _, err := range errs {
		if err != nil {
			if first == nil {
				first = err
			}
			failed++
		}
	}
	if failed == 0 {
		return nil
	}
	batchErr := service.NewBatchError(batch, fmt.Errorf("%d of %d messages not written to kafka, first: %w", failed, len(batch), first))
	for i, err := range errs {
		if err != nil {
			batchErr.Failed(i, err)
		}
	}
	return batchErr
}

// record builds the Kafka record of message i; an error concerns that
// message only.
func (o *kafkaFranzOutput) record(batch service.MessageBatch, i int) (*kgo.Record, error) {
	msg := batch[i]
	topic, err := batch.TryInterpolatedString(i, o.topic)
	if err != nil {
		return nil, fmt.Errorf("%s interpolation: %w", kfoFieldTopic, err)
	}
	if topic == "" {
		return nil, fmt.Errorf("%s interpolation: resolved to an empty topic name", kfoFieldTopic)
	}
	rec := &kgo.Record{Topic: topic}
	if o.key != nil {
		key, err := batch.TryInterpolatedString(i, o.key)
		if err != nil {
			return nil, fmt.Errorf("%s interpolation: %w", kfoFieldKey, err)
		}
		rec.Key = []byte(key)
	}
	if o.partition != nil {
		s, err := batch.TryInterpolatedString(i, o.partition)
		if err != nil {
			return nil, fmt.Errorf("%s interpolation: %w", kfoFieldPartition, err)
		}
		p, err := strconv.ParseInt(s, 10, 32)
		if err != nil || p < 0 {
			return nil, fmt.Errorf("%s: %q is not a partition number", kfoFieldPartition, s)
		}
		rec.Partition = int32(p)
	}
	if o.timestampMs != nil {
		s, err := batch.TryInterpolatedString(i, o.timestampMs)
		if err != nil {
			return nil, fmt.Errorf("%s interpolation: %w", kfoFieldTimestampMs, err)
		}
		ms, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not a number of milliseconds", kfoFieldTimestampMs, s)
		}
		rec.Timestamp = time.UnixMilli(ms)
	}
	if o.timestampSec != nil {
		s, err := batch.TryInterpolatedString(i, o.timestampSec)
		if err != nil {
			return nil, fmt.Errorf("%s interpolation: %w", kfoFieldTimestamp, err)
		}
		sec, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not a number of seconds", kfoFieldTimestamp, s)
		}
		rec.Timestamp = time.Unix(sec, 0)
	}
	if err := o.headers.Walk(msg, func(k, v string) error {
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
		return nil
	}); err != nil {
		return nil, fmt.Errorf("%s: %w", kfoFieldMetadata, err)
	}
	value, err := msg.AsBytes()
	if err != nil {
		return nil, fmt.Errorf("reading message: %w", err)
	}
	if len(value) == 0 {
		value = []byte{}
		if s, ok := msg.MetaGet(kfoTombstoneMeta); ok {
			if tomb, _ := strconv.ParseBool(s); tomb {
				value = nil
			}
		}
	}
	rec.Value = value
	return rec, nil
}

// Close flushes what is buffered and closes the client.
func (o *kafkaFranzOutput) Close(ctx context.Context) error {
	o.mu.Lock()
	cl := o.client
	o.client = nil
	o.mu.Unlock()
	if cl == nil {
		return nil
	}
	err := cl.Flush(ctx)
	cl.Close()
	if err != nil {
		return fmt.Errorf("flushing records before closing: %w", err)
	}
	return nil
}
