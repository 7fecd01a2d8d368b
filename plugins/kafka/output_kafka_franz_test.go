package kafka

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/odsflow/odsflow/internal/devstack"
)

// kfoTestOutput builds the output from YAML (as Benthos would), connects it
// and closes it when the test ends.
func kfoTestOutput(t testing.TB, yaml string) *kafkaFranzOutput {
	t.Helper()
	conf, err := kafkaFranzOutputSpec().ParseYAML(yaml, nil)
	if err != nil {
		t.Fatalf("parsing config: %v", err)
	}
	out, err := newKafkaFranzOutput(conf, service.MockResources())
	if err != nil {
		t.Fatalf("building output: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := out.Connect(ctx); err != nil {
		t.Fatalf("connecting: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := out.Close(ctx); err != nil {
			t.Errorf("closing output: %v", err)
		}
	})
	return out
}

// kfoConsume reads want records of topic from the start with an independent
// client, failing the test if fewer arrive; it then waits briefly to catch
// records that should not have been written.
func kfoConsume(t *testing.T, brokers, topic string, want int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var recs []*kgo.Record
	for len(recs) < want {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("topic %s: consumed %d records, want %d", topic, len(recs), want)
		}
		if err := fetches.Err(); err != nil {
			t.Fatalf("topic %s: polling: %v", topic, err)
		}
		recs = append(recs, fetches.Records()...)
	}
	extraCtx, extraCancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer extraCancel()
	recs = append(recs, cl.PollFetches(extraCtx).Records()...)
	if len(recs) != want {
		t.Fatalf("topic %s: consumed %d records, want exactly %d", topic, len(recs), want)
	}
	return recs
}

func kfoMessage(value string, meta map[string]any) *service.Message {
	msg := service.NewMessage([]byte(value))
	for k, v := range meta {
		msg.MetaSetMut(k, v)
	}
	return msg
}

// kfoFailedIndexes returns the indexes a WriteBatch error marks as failed,
// with their errors; idx is the batch's indexer, taken before the write.
func kfoFailedIndexes(t *testing.T, idx *service.Indexer, err error) map[int]error {
	t.Helper()
	if err == nil {
		return nil
	}
	var batchErr *service.BatchError
	if !errors.As(err, &batchErr) {
		t.Fatalf("WriteBatch returned %T (%v), want a *service.BatchError", err, err)
	}
	failed := map[int]error{}
	batchErr.WalkMessagesIndexedBy(idx, func(i int, _ *service.Message, err error) bool {
		if err != nil {
			failed[i] = err
		}
		return true
	})
	return failed
}

func kfoHeaders(r *kgo.Record) map[string]string {
	h := map[string]string{}
	for _, kv := range r.Headers {
		h[kv.Key] = string(kv.Value)
	}
	return h
}

// The registered component, run in a stream: topic, key, value, timestamp
// and only the selected metadata as headers reach an independent consumer.
func TestKafkaFranzOutputWritesKeysHeadersAndTimestamps(t *testing.T) {
	s := devstack.ForTest(t, devstack.Config{NoPostgres: true})
	const topic = "out.stream"

	sb := service.NewStreamBuilder()
	if err := sb.SetLoggerYAML("level: warn"); err != nil {
		t.Fatal(err)
	}
	produce, err := sb.AddBatchProducerFunc()
	if err != nil {
		t.Fatal(err)
	}
	if err := sb.AddOutputYAML(fmt.Sprintf(`
kafka_franz:
  seed_brokers: [ %q ]
  topic: '${! meta("dest") }'
  key: '${! meta("kafka_key") }'
  timestamp_ms: '${! meta("ts") }'
  metadata:
    include_prefixes: [ "hdr_" ]
  batching:
    count: 3
`, s.Brokers)); err != nil {
		t.Fatal(err)
	}
	stream, err := sb.Build()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- stream.Run(ctx) }()

	batch := service.MessageBatch{
		kfoMessage(`{"id":1}`, map[string]any{"dest": topic, "kafka_key": "cust-1", "ts": "1700000000001", "hdr_op": "c", "hdr_source": "bank", "other": "secret"}),
		kfoMessage(`{"id":2}`, map[string]any{"dest": topic, "kafka_key": "cust-2", "ts": "1700000000002", "hdr_op": "u", "kafka_partition": 7}),
		kfoMessage(`{"id":3}`, map[string]any{"dest": topic, "kafka_key": "cust-3", "ts": "1700000000003"}),
	}
	if err := produce(ctx, batch); err != nil {
		t.Fatalf("stream did not write the batch: %v", err)
	}
	if err := stream.Stop(ctx); err != nil {
		t.Fatalf("stopping stream: %v", err)
	}
	if err := <-runErr; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("stream run: %v", err)
	}

	recs := kfoConsume(t, s.Brokers, topic, 3)
	sort.Slice(recs, func(i, j int) bool { return string(recs[i].Key) < string(recs[j].Key) })
	want := []struct {
		key, value string
		tsMs       int64
		headers    map[string]string
	}{
		{"cust-1", `{"id":1}`, 1700000000001, map[string]string{"hdr_op": "c", "hdr_source": "bank"}},
		{"cust-2", `{"id":2}`, 1700000000002, map[string]string{"hdr_op": "u"}},
		{"cust-3", `{"id":3}`, 1700000000003, map[string]string{}},
	}
	for i, w := range want {
		r := recs[i]
		if r.Topic != topic || string(r.Key) != w.key || string(r.Value) != w.value {
			t.Errorf("record %d: topic %q key %q value %q; want %q %q %q", i, r.Topic, r.Key, r.Value, topic, w.key, w.value)
		}
		if got := r.Timestamp.UnixMilli(); got != w.tsMs {
			t.Errorf("record %s: timestamp %d ms, want %d", w.key, got, w.tsMs)
		}
		if got := kfoHeaders(r); fmt.Sprint(got) != fmt.Sprint(w.headers) {
			t.Errorf("record %s: headers %v, want exactly %v", w.key, got, w.headers)
		}
	}
}

// Kafka's UtilsTest vectors for Utils.murmur2(bytes): the Java producer puts
// a keyed record on toPositive(hash) % partitions, and so must we.
var kfoJavaMurmur2 = map[string]int32{
	"21":                         -973932308,
	"foobar":                     -790332482,
	"a-little-bit-long-string":   -985981536,
	"a-little-bit-longer-string": -1486304829,
	"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
	"abc": 479470107,
}

func TestKafkaFranzOutputMurmur2MatchesJavaPartitions(t *testing.T) {
	s := devstack.ForTest(t, devstack.Config{NoPostgres: true})
	const topic3, topic7 = "out.murmur.p3", "out.murmur.p7"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	admCl, err := kgo.NewClient(kgo.SeedBrokers(s.Brokers))
	if err != nil {
		t.Fatal(err)
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	created, err := adm.CreateTopics(ctx, 7, 1, nil, topic7)
	if err != nil {
		t.Fatalf("creating %s: %v", topic7, err)
	}
	if err := created.Error(); err != nil {
		t.Fatalf("creating %s: %v", topic7, err)
	}

	// The default partitioner is murmur2_hash: no partitioner in the config.
	out := kfoTestOutput(t, fmt.Sprintf(`
seed_brokers: [ %q ]
topic: '${! meta("dest") }'
key: '${! meta("k") }'
`, s.Brokers))
	var batch service.MessageBatch
	for key := range kfoJavaMurmur2 {
		for _, topic := range []string{topic3, topic7} {
			batch = append(batch, kfoMessage("v-"+key, map[string]any{"dest": topic, "k": key}))
		}
	}
	if err := out.WriteBatch(ctx, batch); err != nil {
		t.Fatalf("WriteBatch: %v", err)
	}

	details, err := adm.ListTopics(ctx, topic3, topic7)
	if err != nil {
		t.Fatal(err)
	}
	for topic, n := range map[string]int{topic3: 3, topic7: 7} {
		if got := len(details[topic].Partitions); got != n {
			t.Fatalf("%s has %d partitions, want %d", topic, got, n)
		}
		recs := kfoConsume(t, s.Brokers, topic, len(kfoJavaMurmur2))
		for _, r := range recs {
			hash, ok := kfoJavaMurmur2[string(r.Key)]
			if !ok {
				t.Fatalf("%s: unexpected key %q", topic, r.Key)
			}
			want := int32((uint32(hash) & 0x7fffffff) % uint32(n))
			if r.Partition != want {
				t.Errorf("%s: key %q on partition %d, Java puts it on %d", topic, r.Key, r.Partition, want)
			}
			if string(r.Value) != "v-"+string(r.Key) {
				t.Errorf("%s: key %q has value %q", topic, r.Key, r.Value)
			}
		}
	}
}

func TestKafkaFranzOutputManualPartitions(t *testing.T) {
	s := devstack.ForTest(t, devstack.Config{NoPostgres: true})
	const topic = "out.manual"
	out := kfoTestOutput(t, fmt.Sprintf(`
seed_brokers: [ %q ]
topic: %s
partitioner: manual
partition: '${! meta("p") }'
`, s.Brokers, topic))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	batch := service.MessageBatch{
		kfoMessage("a", map[string]any{"p": "2"}),
		kfoMessage("b", map[string]any{"p": "0"}),
		kfoMessage("bad-word", map[string]any{"p": "two"}),
		kfoMessage("c", map[string]any{"p": 1}),
		kfoMessage("bad-negative", map[string]any{"p": "-1"}),
		kfoMessage("bad-range", map[string]any{"p": "3"}), // the topic has 0..2
		kfoMessage("bad-missing", nil),
		kfoMessage("d", map[string]any{"p": "2"}),
	}
	idx := batch.Index()
	failed := kfoFailedIndexes(t, idx, out.WriteBatch(ctx, batch))
	if got, want := slices.Sorted(maps.Keys(failed)), []int{2, 4, 5, 6}; !slices.Equal(got, want) {
		t.Fatalf("failed messages %v (%v), want %v", got, failed, want)
	}
	for i, want := range map[int]string{
		2: `partition: "two" is not a partition number`,
		4: `partition: "-1" is not a partition number`,
		5: "invalid record partitioning choice of 3",
		6: `partition: "null" is not a partition number`,
	} {
		if !strings.Contains(failed[i].Error(), want) {
			t.Errorf("message %d: error %q, want one saying %q", i, failed[i], want)
		}
	}

	recs := kfoConsume(t, s.Brokers, topic, 4)
	got := map[string]int32{}
	for _, r := range recs {
		got[string(r.Value)] = r.Partition
	}
	want := map[string]int32{"a": 2, "b": 0, "c": 1, "d": 2}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("records by partition %v, want %v", got, want)
	}
}

// A topic or key that does not resolve fails its own message only.
func TestKafkaFranzOutputInterpolationErrorsArePerMessage(t *testing.T) {
	s := devstack.ForTest(t, devstack.Config{NoPostgres: true})
	const topic = "out.interp"
	out := kfoTestOutput(t, fmt.Sprintf(`
seed_brokers: [ %q ]
topic: '${! meta("dest").not_null() }'
key: '${! json("id").not_null() }'
`, s.Brokers))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	batch := service.MessageBatch{
		kfoMessage(`{"id":"k1"}`, map[string]any{"dest": topic}),
		kfoMessage(`{"id":"k2"}`, nil),
		kfoMessage(`{"name":"no id"}`, map[string]any{"dest": topic}),
		kfoMessage(`{"id":"k4"}`, map[string]any{"dest": topic}),
	}
	idx := batch.Index()
	failed := kfoFailedIndexes(t, idx, out.WriteBatch(ctx, batch))
	if got, want := slices.Sorted(maps.Keys(failed)), []int{1, 2}; !slices.Equal(got, want) {
		t.Fatalf("failed messages %v (%v), want %v", got, failed, want)
	}
	if !strings.Contains(failed[1].Error(), "topic interpolation") || !strings.Contains(failed[2].Error(), "key interpolation") {
		t.Errorf("errors do not name the field: %v / %v", failed[1], failed[2])
	}
	recs := kfoConsume(t, s.Brokers, topic, 2)
	var keys []string
	for _, r := range recs {
		keys = append(keys, string(r.Key))
	}
	sort.Strings(keys)
	if !slices.Equal(keys, []string{"k1", "k4"}) {
		t.Errorf("written keys %v, want [k1 k4]", keys)
	}
}

func TestKafkaFranzOutputTombstones(t *testing.T) {
	s := devstack.ForTest(t, devstack.Config{NoPostgres: true})
	const topic = "out.tombstones"
	out := kfoTestOutput(t, fmt.Sprintf(`
seed_brokers: [ %q ]
topic: %s
key: '${! meta("k") }'
`, s.Brokers, topic))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	batch := service.MessageBatch{
		kfoMessage("", map[string]any{"k": "tomb-bool", kfoTombstoneMeta: true}),
		kfoMessage("", map[string]any{"k": "tomb-string", kfoTombstoneMeta: "true"}),
		kfoMessage("", map[string]any{"k": "empty-no-meta"}),
		kfoMessage("", map[string]any{"k": "empty-false", kfoTombstoneMeta: "false"}),
		kfoMessage("payload", map[string]any{"k": "payload-flagged", kfoTombstoneMeta: true}),
	}
	nilBody := service.NewMessage(nil) // AsBytes gives nil, not an empty slice
	nilBody.MetaSetMut("k", "empty-nil-body")
	batch = append(batch, nilBody)
	if err := out.WriteBatch(ctx, batch); err != nil {
		t.Fatalf("WriteBatch: %v", err)
	}

	got := map[string][]byte{}
	for _, r := range kfoConsume(t, s.Brokers, topic, len(batch)) {
		got[string(r.Key)] = r.Value
	}
	for _, key := range []string{"tomb-bool", "tomb-string"} {
		if v, ok := got[key]; !ok || v != nil {
			t.Errorf("%s: value %#v (present %v), want a tombstone (nil value)", key, v, ok)
		}
	}
	for _, key := range []string{"empty-no-meta", "empty-false", "empty-nil-body"} {
		if v, ok := got[key]; !ok || v == nil || len(v) != 0 {
			t.Errorf("%s: value %#v (present %v), want an empty, non-null value", key, v, ok)
		}
	}
	if v := got["payload-flagged"]; string(v) != "payload" {
		t.Errorf("payload-flagged: value %q, want the payload", v)
	}
}

// TestKafkaFranzOutputWritesNothingOnceStopped: a write whose context is
// already done (the stream's hard stop) fails without producing, so the
// messages of a processor stopped mid-batch (errored with the stop as the
// reason) cannot reach a dead-letter topic and be acknowledged.
func TestKafkaFranzOutputWritesNothingOnceStopped(t *testing.T) {
	s := devstack.ForTest(t, devstack.Config{NoPostgres: true})
	const topic = "out.stopped"
	out := kfoTestOutput(t, fmt.Sprintf("seed_brokers: [ %q ]\ntopic: %s\n", s.Brokers, topic))
	stopped, cancel := context.WithCancel(context.Background())
	cancel()
	if err := out.WriteBatch(stopped, service.MessageBatch{kfoMessage("lost?", nil)}); err == nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("WriteBatch once stopped: %v, want the stop", err)
	}
	ctx, cancelWrite := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancelWrite()
	if err := out.WriteBatch(ctx, service.MessageBatch{kfoMessage("written", nil)}); err != nil {
		t.Fatal(err)
	}
	if recs := kfoConsume(t, s.Brokers, topic, 1); string(recs[0].Value) != "written" {
		t.Errorf("the topic holds %q, want only the later write", recs[0].Value)
	}
}

func TestKafkaFranzOutputUnreachableBrokerIsAConnectError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens here any more

	conf, err := kafkaFranzOutputSpec().ParseYAML(fmt.Sprintf("seed_brokers: [ %q ]\ntopic: t\n", addr), nil)
	if err != nil {
		t.Fatal(err)
	}
	out, err := newKafkaFranzOutput(conf, service.MockResources())
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close(context.Background())

	batch := service.MessageBatch{service.NewMessage([]byte("x"))}
	if err := out.WriteBatch(context.Background(), batch); !errors.Is(err, service.ErrNotConnected) {
		t.Errorf("WriteBatch before Connect = %v, want ErrNotConnected", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err = out.Connect(ctx)
	if err == nil {
		t.Fatal("Connect to a closed port succeeded")
	}
	if !strings.Contains(err.Error(), "no seed broker reachable") {
		t.Errorf("Connect error %q does not say the broker is unreachable", err)
	}
	if err := out.WriteBatch(context.Background(), batch); !errors.Is(err, service.ErrNotConnected) {
		t.Errorf("WriteBatch after a failed Connect = %v, want ErrNotConnected", err)
	}
}

// Configs written for Redpanda Connect's kafka_franz output lint and build
// unchanged; typos and unknown values are caught.
func TestKafkaFranzOutputConfigLint(t *testing.T) {
	linter := service.NewEnvironment().NewComponentConfigLinter().SetSkipEnvVarCheck(true)
	lint := func(t *testing.T, body string) []service.Lint {
		t.Helper()
		lints, err := linter.LintYAML("output", []byte("kafka_franz:\n"+body))
		if err != nil {
			t.Fatalf("lint: %v", err)
		}
		return lints
	}
	build := func(body string) error {
		conf, err := kafkaFranzOutputSpec().ParseYAML(body, nil)
		if err != nil {
			return err
		}
		_, err = newKafkaFranzOutput(conf, service.MockResources())
		return err
	}

	good := map[string]string{
		"minimal": `
  seed_brokers: [ "localhost:9092" ]
  topic: ods.customers
`,
		"everything": `
  seed_brokers: [ "broker-1:9092,broker-2:9092", "broker-3:9092" ]
  client_id: odsflow-out
  rack_id: rack-a
  metadata_max_age: 1m
  tls:
    enabled: true
  sasl:
    - mechanism: SCRAM-SHA-512
      username: odsflow
      password: "${KAFKA_PASSWORD}"
  topic: '${! meta("kafka_topic") }'
  key: '${! meta("kafka_key") }'
  metadata:
    include_prefixes: [ "kafka_" ]
  timestamp_ms: '${! timestamp_unix_milli() }'
  max_in_flight: 64
  batching:
    count: 100
    period: 1s
  partitioner: murmur2_hash
  idempotent_write: false
  compression: snappy
  allow_auto_topic_creation: false
  timeout: 30s
  max_message_bytes: 2MB
  broker_write_max_bytes: 50MiB
`,
		"manual": `
  seed_brokers: [ "localhost:9092" ]
  topic: ods.customers
  partitioner: manual
  partition: '${! meta("kafka_partition") }'
`,
	}
	for _, p := range []string{"round_robin", "least_backup", "uniform_bytes"} {
		good[p] = "\n  seed_brokers: [ \"localhost:9092\" ]\n  topic: t\n  partitioner: " + p + "\n"
	}
	for _, c := range []string{"none", "gzip", "lz4", "zstd"} {
		good["compression "+c] = "\n  seed_brokers: [ \"localhost:9092\" ]\n  topic: t\n  compression: " + c + "\n"
	}
	for name, body := range good {
		t.Run("good/"+name, func(t *testing.T) {
			if lints := lint(t, body); len(lints) != 0 {
				t.Errorf("lints: %v", lints)
			}
			if err := build(body); err != nil {
				t.Errorf("building: %v", err)
			}
		})
	}

	const base = "\n  seed_brokers: [ \"localhost:9092\" ]\n"
	for _, tc := range []struct{ name, body, want string }{
		{"unknown field", base + "  topic: t\n  topik: t\n", "field topik not recognised"},
		{"bad compression", base + "  topic: t\n  compression: brotli\n", "value brotli is not a valid option"},
		{"bad partitioner", base + "  topic: t\n  partitioner: fnv1a_hash\n", "value fnv1a_hash is not a valid option"},
		{"bad sasl mechanism", base + "  topic: t\n  sasl: [ { mechanism: KERBEROS } ]\n", "value KERBEROS is not a valid option"},
		{"manual without partition", base + "  topic: t\n  partitioner: manual\n", "partition must be set when the partitioner is manual"},
		{"partition without manual", base + "  topic: t\n  partition: \"1\"\n", "partition is only used with the manual partitioner"},
		{"missing topic", base, "field topic is required"},
	} {
		t.Run("lint/"+tc.name, func(t *testing.T) {
			lints := lint(t, tc.body)
			if len(lints) != 1 || !strings.Contains(lints[0].What, tc.want) {
				t.Errorf("lints %v, want one saying %q", lints, tc.want)
			}
		})
	}

	const brokers = "seed_brokers: [ x:9092 ]\ntopic: t\n"
	for _, tc := range []struct{ name, body, want string }{
		{"manual without partition", brokers + "partitioner: manual\n", "partition: required when partitioner is manual"},
		{"partition without manual", brokers + "partition: '1'\n", "partition: only used when partitioner is manual"},
		{"bad partitioner", brokers + "partitioner: fnv1a_hash\n", `unknown partitioner "fnv1a_hash"`},
		{"bad compression", brokers + "compression: brotli\n", `unknown codec "brotli"`},
		{"unparsable size", brokers + "max_message_bytes: lots\n", `max_message_bytes: "lots" is not a size`},
		{"size too small", brokers + "max_message_bytes: 100B\n", "max_message_bytes: 100B (100 bytes) is outside"},
		{"size too large", brokers + "broker_write_max_bytes: 2GiB\n", "broker_write_max_bytes: 2GiB (2147483648 bytes) is outside"},
		{"write below message", brokers + "max_message_bytes: 10MB\nbroker_write_max_bytes: 5MB\n", "is less than max_message_bytes"},
		{"zero timeout", brokers + "timeout: 0s\n", "timeout: must be positive"},
		{"both timestamps", brokers + "timestamp: '1'\ntimestamp_ms: '1000'\n", "timestamp and timestamp_ms are both set"},
		{"no brokers", "seed_brokers: [ '' ]\ntopic: t\n", "at least one broker address is required"},
	} {
		t.Run("build/"+tc.name, func(t *testing.T) {
			if err := build(tc.body); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("building: %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

// Redpanda Connect's deprecated timestamp field (seconds) sets the record
// timestamp, and inject_tracing_map wraps the output in Benthos' tracing
// wrapper.
func TestKafkaFranzOutputTimestampSecondsAndTracingMap(t *testing.T) {
	conf, err := kafkaFranzOutputSpec().ParseYAML("seed_brokers: [ x:9092 ]\ntopic: t\ntimestamp: '${! meta(\"ts\") }'\n", nil)
	if err != nil {
		t.Fatal(err)
	}
	out, err := newKafkaFranzOutput(conf, service.MockResources())
	if err != nil {
		t.Fatal(err)
	}
	rec, err := out.record(service.MessageBatch{kfoMessage("v", map[string]any{"ts": "1700000000"})}, 0)
	if err != nil || rec.Timestamp.UnixMilli() != 1_700_000_000_000 {
		t.Errorf("timestamp in seconds: %v, %v; want 1700000000000 ms", rec.Timestamp, err)
	}
	if _, err := out.record(service.MessageBatch{kfoMessage("v", map[string]any{"ts": "soon"})}, 0); err == nil || !strings.Contains(err.Error(), "not a number of seconds") {
		t.Errorf("an unparsable timestamp: %v", err)
	}

	for _, tc := range []struct {
		extra   string
		wrapped bool
	}{{"", false}, {"inject_tracing_map: 'meta = @.merge(this)'\n", true}} {
		conf, err := kafkaFranzOutputSpec().ParseYAML("seed_brokers: [ x:9092 ]\ntopic: t\n"+tc.extra, nil)
		if err != nil {
			t.Fatal(err)
		}
		o, err := newWrappedKafkaFranzOutput(conf, service.MockResources())
		if err != nil {
			t.Fatal(err)
		}
		if _, plain := o.(*kafkaFranzOutput); plain == tc.wrapped {
			t.Errorf("with %q: wrapped %v, want %v", tc.extra, !plain, tc.wrapped)
		}
	}
}

// The partitioner, compression and idempotent_write settings reach the
// records: one key round-robined over the partitions, zstd batches and no
// producer id; and by default, murmur2 (one key, one partition) with an
// idempotent producer.
func TestKafkaFranzOutputProducerSettingsReachTheRecords(t *testing.T) {
	s := devstack.ForTest(t, devstack.Config{NoPostgres: true})
	inCreateTopic(t, s.Brokers, "settings-rr", 4)
	inCreateTopic(t, s.Brokers, "settings-default", 4)
	write := func(topic, extra string) []*kgo.Record {
		t.Helper()
		out := kfoTestOutput(t, fmt.Sprintf("seed_brokers: [ %q ]\ntopic: %s\nkey: same\n%s", s.Brokers, topic, extra))
		var batch service.MessageBatch
		for i := range 8 {
			// Compressible: franz-go keeps a batch uncompressed when
			// compression would not make it smaller.
			batch = append(batch, service.NewMessage([]byte(fmt.Sprintf(`{"i":%d,"pad":%q}`, i, strings.Repeat("x", 2000)))))
		}
		for _, m := range batch { // one message per write: round-robin moves on per batch
			if err := out.WriteBatch(context.Background(), service.MessageBatch{m}); err != nil {
				t.Fatal(err)
			}
		}
		return kfoConsume(t, s.Brokers, topic, 8)
	}
	partitions := func(recs []*kgo.Record) map[int32]bool {
		ps := map[int32]bool{}
		for _, r := range recs {
			ps[r.Partition] = true
		}
		return ps
	}
	rr := write("settings-rr", "partitioner: round_robin\ncompression: zstd\nidempotent_write: false\n")
	if len(partitions(rr)) < 2 {
		t.Errorf("round_robin: one key went to partitions %v, want several", partitions(rr))
	}
	for _, r := range rr {
		if r.Attrs.CompressionType() != 4 || r.ProducerID != -1 {
			t.Errorf("compression zstd, idempotent_write false: a record with compression %d, producer id %d", r.Attrs.CompressionType(), r.ProducerID)
			break
		}
	}
	def := write("settings-default", "")
	if len(partitions(def)) != 1 {
		t.Errorf("murmur2: one key went to partitions %v, want one", partitions(def))
	}
	for _, r := range def {
		if r.ProducerID < 0 {
			t.Errorf("by default: a record without a producer id (not idempotent)")
			break
		}
	}
}
