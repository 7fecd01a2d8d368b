package kafka

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/redpanda-data/benthos/v4/public/components/io"
	_ "github.com/redpanda-data/benthos/v4/public/components/pure"
	"github.com/redpanda-data/benthos/v4/public/service"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/odsflow/odsflow/internal/devstack"
	"github.com/odsflow/odsflow/internal/syncbuf"
)

// inStack starts a broker for one test; sessions may be short so that
// rebalance tests do not wait for Kafka's 6 s minimum.
func inStack(t *testing.T) *devstack.Stack {
	t.Helper()
	return devstack.ForTest(t, devstack.Config{
		NoPostgres:   true,
		KafkaOptions: []kfake.Opt{kfake.GroupMinSessionTimeout(500 * time.Millisecond)},
	})
}

func inCreateTopic(t *testing.T, brokers, topic string, partitions int32) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	resp, err := kadm.NewClient(cl).CreateTopics(context.Background(), partitions, 1, nil, topic)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatalf("creating topic %s: %v", topic, err)
	}
}

// inProduce writes n records per partition with values "p<partition>-<i>"
// and returns once all are acknowledged.
func inProduce(t *testing.T, brokers, topic string, partitions int32, n int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for p := int32(0); p < partitions; p++ {
		for i := 0; i < n; i++ {
			recs = append(recs, &kgo.Record{Topic: topic, Partition: p,
				Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte(fmt.Sprintf("p%d-%d", p, i))})
		}
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

// newTestInput builds the input from YAML, as the stream would.
func newTestInput(t testing.TB, yaml string) *franzInput {
	t.Helper()
	conf, err := franzInputSpec().ParseYAML(yaml, nil)
	if err != nil {
		t.Fatalf("parsing config: %v", err)
	}
	in, err := newFranzInput(conf, service.MockResources())
	if err != nil {
		t.Fatalf("newFranzInput: %v", err)
	}
	return in
}

func connect(t *testing.T, in *franzInput) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := in.Connect(ctx); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(func() { _ = in.Close(context.Background()) })
}

type readBatch struct {
	partition int
	offsets   []int
	values    []string
	ack       service.AckFunc
}

// read returns the next batch, or fails after timeout.
func read(t *testing.T, in *franzInput, timeout time.Duration) readBatch {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	batch, ack, err := in.ReadBatch(ctx)
	if err != nil {
		t.Fatalf("ReadBatch: %v", err)
	}
	var rb readBatch
	rb.ack = ack
	for _, m := range batch {
		p, _ := m.MetaGetMut("kafka_partition")
		o, _ := m.MetaGetMut("kafka_offset")
		v, _ := m.AsBytes()
		rb.partition = p.(int)
		rb.offsets = append(rb.offsets, o.(int))
		rb.values = append(rb.values, string(v))
	}
	return rb
}

// readN reads batches until n records have been seen, without acking.
func readN(t *testing.T, in *franzInput, n int) []readBatch {
	t.Helper()
	var out []readBatch
	for seen := 0; seen < n; {
		rb := read(t, in, 15*time.Second)
		seen += len(rb.offsets)
		out = append(out, rb)
	}
	return out
}

// wantInOrder fails the test unless offsets are 0..n-1, each once, in order.
func wantInOrder(t *testing.T, what string, offsets []int, n int) {
	t.Helper()
	ok := len(offsets) == n
	for i := 0; ok && i < n; i++ {
		ok = offsets[i] == i
	}
	if !ok {
		t.Fatalf("%s %v, want 0..%d once, in order", what, offsets, n-1)
	}
}

// groupInput is a connected input of group g on a new topic of one
// partition holding n records, on a stack of its own.
func groupInput(t *testing.T, topic string, n int, extra string) (*devstack.Stack, *franzInput) {
	t.Helper()
	s := inStack(t)
	inCreateTopic(t, s.Brokers, topic, 1)
	inProduce(t, s.Brokers, topic, 1, n)
	in := newTestInput(t, groupConfig(s.Brokers, topic, "g", extra))
	connect(t, in)
	return s, in
}

func groupConfig(brokers, topic, group string, extra string) string {
	return fmt.Sprintf(`
seed_brokers: [ %q ]
topics: [ %q ]
consumer_group: %q
commit_period: 100ms
session_timeout: 2s
heartbeat_interval: 100ms
rebalance_timeout: 5s
%s`, brokers, topic, group, extra)
}

func TestInputRedeliversUnackedAfterRestart(t *testing.T) {
	s := inStack(t)
	inCreateTopic(t, s.Brokers, "redeliver", 1)
	inProduce(t, s.Brokers, "redeliver", 1, 10)

	// First member reads everything and acks nothing, then stops.
	in1 := newTestInput(t, groupConfig(s.Brokers, "redeliver", "g", ""))
	connect(t, in1)
	first := readN(t, in1, 10)
	if err := in1.Close(context.Background()); err != nil {
		t.Fatal(err)
	}

	// The next one gets all of it again, from offset 0; this time it acks.
	in2 := newTestInput(t, groupConfig(s.Brokers, "redeliver", "g", ""))
	connect(t, in2)
	second := readN(t, in2, 10)
	if got := second[0].offsets[0]; got != 0 {
		t.Fatalf("after a restart without acks, redelivery starts at offset %d, want 0 (first run saw %v)", got, first[0].offsets)
	}
	var all []int
	for _, rb := range second {
		all = append(all, rb.offsets...)
		if err := rb.ack(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
	}
	wantInOrder(t, "redelivered offsets", all, 10)
	if err := in2.Close(context.Background()); err != nil {
		t.Fatal(err)
	}

	// Acked and committed on close: a third member starts after them.
	inProduce(t, s.Brokers, "redeliver", 1, 1)
	in3 := newTestInput(t, groupConfig(s.Brokers, "redeliver", "g", ""))
	connect(t, in3)
	if rb := read(t, in3, 15*time.Second); rb.offsets[0] != 10 {
		t.Fatalf("after acking 0..9, the next member starts at %d, want 10", rb.offsets[0])
	}
}

func TestInputReplaysNackBeforeAnythingNewer(t *testing.T) {
	s, in := groupInput(t, "nack", 5, "batching: { count: 5 }")

	rb := read(t, in, 15*time.Second)
	if len(rb.offsets) != 5 {
		t.Fatalf("batch of %d, want 5 (batching count 5)", len(rb.offsets))
	}
	inProduce(t, s.Brokers, "nack", 1, 5) // newer records, must wait
	if err := rb.ack(context.Background(), fmt.Errorf("output down")); err != nil {
		t.Fatal(err)
	}
	again := read(t, in, 15*time.Second)
	if fmt.Sprint(again.offsets) != fmt.Sprint(rb.offsets) {
		t.Fatalf("after a nack got offsets %v, want the same batch %v again", again.offsets, rb.offsets)
	}
	if err := again.ack(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	next := read(t, in, 15*time.Second)
	if next.offsets[0] != 5 {
		t.Fatalf("after the replay was acked, next batch starts at %d, want 5", next.offsets[0])
	}
}

// TestInputReplaysNackedBatchAsFirstRead: without a batching policy a
// batch is not copied for a possible replay; a replay converts the records
// again. What the pipeline did to the first delivery (content replaced,
// metadata added and removed) must not show in the replay.
func TestInputReplaysNackedBatchAsFirstRead(t *testing.T) {
	_, in := groupInput(t, "pristine", 4, "")

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	// The first batch, from offset 0 (however many records it holds: they
	// may come in more than one fetch).
	first, ack, err := in.ReadBatch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]string, len(first))
	for i, m := range first {
		b, _ := m.AsBytes()
		want[i] = string(b)
		m.SetBytes([]byte("changed"))
		m.MetaSetMut("added", true)
		m.MetaDelete("kafka_key")
	}
	if err := ack(ctx, fmt.Errorf("output down")); err != nil {
		t.Fatal(err)
	}
	again, ack2, err := in.ReadBatch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(again) != len(want) {
		t.Fatalf("replay of %d messages, want %d", len(again), len(want))
	}
	for i, m := range again {
		b, _ := m.AsBytes()
		_, added := m.MetaGetMut("added")
		key, hasKey := m.MetaGetMut("kafka_key")
		if string(b) != want[i] || added || !hasKey || key != fmt.Sprintf("k%d", i) {
			t.Fatalf("replayed message %d: %q, metadata added %v, kafka_key %v (%v); want %q as first read", i, b, added, key, hasKey, want[i])
		}
	}
	if err := ack2(ctx, nil); err != nil {
		t.Fatal(err)
	}
}

func TestInputOneBatchInFlightPerPartition(t *testing.T) {
	_, in := groupInput(t, "inflight", 20, "batching: { count: 5 }")
	first := read(t, in, 15*time.Second)

	// With the first batch unacked, nothing more of the partition comes.
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if batch, _, err := in.ReadBatch(ctx); err == nil {
		t.Fatalf("a second batch (%d messages) was delivered while the first was unacked", len(batch))
	}
	if err := first.ack(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if next := read(t, in, 15*time.Second); next.offsets[0] != 5 {
		t.Fatalf("next batch starts at %d, want 5", next.offsets[0])
	}
}

func TestInputCheckpointLimitAllowsParallelBatches(t *testing.T) {
	_, in := groupInput(t, "parallel", 20, "checkpoint_limit: 3\nbatching: { count: 5 }")
	batches := readN(t, in, 15) // three batches without any ack
	if len(batches) != 3 {
		t.Fatalf("got %d batches in flight, want 3", len(batches))
	}
	// Acking the later ones first must not commit past the unacked first.
	_ = batches[2].ack(context.Background(), nil)
	_ = batches[1].ack(context.Background(), nil)
	in.connMu.Lock()
	p := in.conn.parts[topicPartition{"parallel", 0}]
	in.connMu.Unlock()
	if eo, ok := p.commitOffset(); ok {
		t.Fatalf("committable offset %d while offset 0 is unacked", eo.Offset)
	}
	_ = batches[0].ack(context.Background(), nil)
	if eo, ok := p.commitOffset(); !ok || eo.Offset != 15 {
		t.Fatalf("committable offset %v %v, want 15 once 0..14 are acked", eo.Offset, ok)
	}
}

// TestInputMaxYieldBatchBytes: without a batching policy, a partition's
// batch takes at most max_yield_batch_bytes of record bytes (keys and
// values) from its buffer, a larger record alone; every record comes once,
// in order.
func TestInputMaxYieldBatchBytes(t *testing.T) {
	s := inStack(t)
	inCreateTopic(t, s.Brokers, "yield", 1)
	inProduce(t, s.Brokers, "yield", 1, 20) // keys "k<i>", values "p0-<i>": 6 bytes each below 10, 8 from 10
	for _, tc := range []struct {
		limit    string
		maxBytes int
	}{{"20B", 20}, {"5B", 5}} {
		t.Run(tc.limit, func(t *testing.T) {
			in := newTestInput(t, groupConfig(s.Brokers, "yield", "g-"+tc.limit, "max_yield_batch_bytes: "+tc.limit))
			connect(t, in)
			var offsets []int
			largest := 0
			for len(offsets) < 20 {
				rb := read(t, in, 15*time.Second)
				size := 0
				for i, o := range rb.offsets {
					size += len(fmt.Sprintf("k%d", o)) + len(rb.values[i])
				}
				if len(rb.offsets) > 1 && size > tc.maxBytes {
					t.Fatalf("a batch of %d records and %d bytes, above max_yield_batch_bytes %s: offsets %v", len(rb.offsets), size, tc.limit, rb.offsets)
				}
				largest = max(largest, len(rb.offsets))
				offsets = append(offsets, rb.offsets...)
				if err := rb.ack(context.Background(), nil); err != nil {
					t.Fatal(err)
				}
			}
			wantInOrder(t, "offsets", offsets, 20)
			if want := map[int]int{20: 3, 5: 1}[tc.maxBytes]; largest != want {
				t.Errorf("largest batch %d records, want %d", largest, want)
			}
		})
	}
}

// TestInputUnorderedProcessing: Redpanda Connect's unordered_processing
// block, enabled, replaces the top-level checkpoint_limit and batching.
func TestInputUnorderedProcessing(t *testing.T) {
	s := inStack(t)
	inCreateTopic(t, s.Brokers, "unordered", 1)
	inProduce(t, s.Brokers, "unordered", 1, 20)
	in := newTestInput(t, groupConfig(s.Brokers, "unordered", "g",
		"unordered_processing: { enabled: true, checkpoint_limit: 3, batching: { count: 5 } }"))
	connect(t, in)
	batches := readN(t, in, 15) // three batches without any ack
	if len(batches) != 3 {
		t.Fatalf("got %d batches in flight, want 3 of 5 records", len(batches))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if batch, _, err := in.ReadBatch(ctx); err == nil {
		t.Fatalf("a fourth batch (%d messages) was delivered with checkpoint_limit 3", len(batch))
	}

	// Disabled, the block changes nothing.
	off := newTestInput(t, groupConfig(s.Brokers, "unordered", "g2", "unordered_processing: { checkpoint_limit: 3 }"))
	if off.checkpointLimit != 1 || !off.batchPolicy.IsNoop() {
		t.Fatalf("a disabled unordered_processing block set checkpoint_limit %d (batching no-op: %v)", off.checkpointLimit, off.batchPolicy.IsNoop())
	}
}

func TestInputMetadata(t *testing.T) {
	s := inStack(t)
	inCreateTopic(t, s.Brokers, "meta", 1)
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.Brokers))
	if err != nil {
		t.Fatal(err)
	}
	ts := time.UnixMilli(1_700_000_000_123)
	err = cl.ProduceSync(context.Background(),
		&kgo.Record{Topic: "meta", Key: []byte("key-1"), Value: []byte("v"), Timestamp: ts,
			Headers: []kgo.RecordHeader{{Key: "h", Value: []byte("a")}, {Key: "h", Value: []byte("b")}, {Key: "x", Value: []byte("y")}}},
		&kgo.Record{Topic: "meta", Key: []byte("key-1"), Value: nil, Timestamp: ts},
	).FirstErr()
	cl.Close()
	if err != nil {
		t.Fatal(err)
	}

	for _, multi := range []bool{false, true} {
		in := newTestInput(t, fmt.Sprintf("seed_brokers: [%q]\ntopics: [meta]\nmulti_header: %v\nbatching: {count: 2}", s.Brokers, multi))
		connect(t, in)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		batch, _, err := in.ReadBatch(ctx)
		cancel()
		if err != nil || len(batch) != 2 {
			t.Fatalf("ReadBatch: %d messages, %v", len(batch), err)
		}
		want := map[string]any{
			"kafka_key": "key-1", "kafka_topic": "meta", "kafka_partition": 0, "kafka_offset": 0,
			"kafka_timestamp_ms": int64(1_700_000_000_123), "kafka_timestamp_unix": int64(1_700_000_000),
			"kafka_tombstone_message": false,
		}
		// With multi_header every header is a list, repeated or not.
		if multi {
			want["x"] = []any{"y"}
		} else {
			want["x"] = "y"
		}
		for k, v := range want {
			got, _ := batch[0].MetaGetMut(k)
			if fmt.Sprint(got) != fmt.Sprint(v) || fmt.Sprintf("%T", got) != fmt.Sprintf("%T", v) {
				t.Errorf("multi_header=%v: metadata %s = %v (%T), want %v (%T)", multi, k, got, got, v, v)
			}
		}
		h, _ := batch[0].MetaGetMut("h")
		if wantH := map[bool]string{false: "b", true: "[a b]"}[multi]; fmt.Sprint(h) != wantH {
			t.Errorf("multi_header=%v: header h = %v, want %s", multi, h, wantH)
		}
		if tomb, _ := batch[1].MetaGetMut("kafka_tombstone_message"); tomb != true {
			t.Errorf("null value: kafka_tombstone_message = %v, want true", tomb)
		}
		if b, _ := batch[1].AsBytes(); len(b) != 0 {
			t.Errorf("tombstone body %q, want empty", b)
		}
	}
}

func TestInputMissingTopic(t *testing.T) {
	s := inStack(t)
	in := newTestInput(t, fmt.Sprintf("seed_brokers: [%q]\ntopics: [nope]\nconsumer_group: g", s.Brokers))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	err := in.Connect(ctx)
	if err == nil || !strings.Contains(err.Error(), "nope") || !strings.Contains(err.Error(), "do not exist") {
		t.Fatalf("Connect to a missing topic: %v, want an error naming it", err)
	}

	waiting := newTestInput(t, groupConfig(s.Brokers, "later", "g2", "wait_for_topics: true"))
	connect(t, waiting)
	inCreateTopic(t, s.Brokers, "later", 1)
	inProduce(t, s.Brokers, "later", 1, 1)
	if rb := read(t, waiting, 20*time.Second); rb.values[0] != "p0-0" {
		t.Fatalf("got %v from a topic created after connecting", rb.values)
	}
}

func TestInputUnreachableBrokerIsConnectionError(t *testing.T) {
	in := newTestInput(t, "seed_brokers: [\"127.0.0.1:1\"]\ntopics: [t]\nconsumer_group: g")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := in.Connect(ctx); err == nil {
		_ = in.Close(context.Background())
		t.Fatal("Connect to an unreachable broker succeeded")
	}
}

func TestParsePartitionedTopics(t *testing.T) {
	topics, direct, err := parsePartitionedTopics([]string{"a:0", "a:2-3", "b:1:42"})
	if err != nil {
		t.Fatal(err)
	}
	if len(topics) != 2 || len(direct["a"]) != 3 || len(direct["b"]) != 1 {
		t.Fatalf("topics %v, direct %v", topics, direct)
	}
	if got := direct["b"][1]; fmt.Sprint(got) != fmt.Sprint(kgo.NewOffset().At(42)) {
		t.Errorf("b:1:42 offset %v", got)
	}
	for _, bad := range [][]string{{"a:x"}, {"a:3-1"}, {"a:0-1:5"}, {"a:0", "b"}, {":1"}, {"a:0-2147483647"}, {"a:-1"}} {
		if _, _, err := parsePartitionedTopics(bad); err == nil {
			t.Errorf("parsePartitionedTopics(%v) accepted", bad)
		}
	}
	if topics, direct, err := parsePartitionedTopics([]string{"a", "b"}); err != nil || direct != nil || len(topics) != 2 {
		t.Errorf("plain topics: %v %v %v", topics, direct, err)
	}
}

// TestInputOrderThroughAStream runs a real Benthos stream with a slow,
// multi-threaded pipeline and checks that each partition's records reach
// the output in offset order.
func TestInputOrderThroughAStream(t *testing.T) {
	s := inStack(t)
	const perPartition = 150
	inCreateTopic(t, s.Brokers, "order", 3)
	inProduce(t, s.Brokers, "order", 3, perPartition)

	b := service.NewStreamBuilder()
	err := b.SetYAML(fmt.Sprintf(`
input:
  kafka_franz:
    seed_brokers: [ %q ]
    topics: [ order ]
    consumer_group: order-test
    batching: { count: 7, period: 5ms }
pipeline:
  threads: 4
  processors:
    - sleep: { duration: '${! random_int(max: 3) }ms' }
output:
  drop: {}
logger: { level: warn }
`, s.Brokers))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	last := map[int]int{0: -1, 1: -1, 2: -1}
	total := 0
	done := make(chan struct{})
	if err := b.AddBatchConsumerFunc(func(_ context.Context, batch service.MessageBatch) error {
		mu.Lock()
		defer mu.Unlock()
		for _, m := range batch {
			p, _ := m.MetaGetMut("kafka_partition")
			o, _ := m.MetaGetMut("kafka_offset")
			if o.(int) != last[p.(int)]+1 {
				t.Errorf("partition %d: offset %d after %d", p, o, last[p.(int)])
			}
			last[p.(int)] = o.(int)
			total++
		}
		if total == 3*perPartition {
			close(done)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	stream, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = stream.Run(context.Background()) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		mu.Lock()
		t.Errorf("timed out with %d of %d records", total, 3*perPartition)
		mu.Unlock()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := stream.Stop(ctx); err != nil {
		t.Errorf("stopping stream: %v", err)
	}
}

// TestInputLagGaugeAndStallLog: with the output stuck, kafka_lag shows the
// backlog and the partition is logged as stalled.
func TestInputLagGaugeAndStallLog(t *testing.T) {
	s := inStack(t)
	inCreateTopic(t, s.Brokers, "lag", 1)
	inProduce(t, s.Brokers, "lag", 1, 50)

	b := service.NewStreamBuilder()
	if err := b.SetYAML(fmt.Sprintf(`
input:
  kafka_franz:
    seed_brokers: [ %q ]
    topics: [ lag ]
    consumer_group: lag-g
    stall_timeout: 1s
    topic_lag_refresh_period: 200ms
    batching: { count: 10 }
output:
  drop: {}
metrics:
  json_api: {}
`, s.Brokers)); err != nil {
		t.Fatal(err)
	}
	var logs syncbuf.Buffer
	b.SetLogger(slog.New(slog.NewTextHandler(&logs, nil)))
	mux := http.NewServeMux()
	b.SetHTTPMux(mux)
	release := make(chan struct{})
	if err := b.AddBatchConsumerFunc(func(ctx context.Context, _ service.MessageBatch) error {
		select { // the output is down
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	stream, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = stream.Run(context.Background()) }()
	released := false
	defer func() {
		if !released {
			close(release)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = stream.Stop(ctx)
	}()

	// json_api keys carry the labels: kafka_lag{label="",partition="0",path=…,topic="lag"}.
	lagLine := regexp.MustCompile(`"kafka_lag\{[^}]*partition=\\"0\\"[^}]*topic=\\"lag\\"\}":(\d+)`)
	var lag string
	waitFor := func(want string, log string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) && (lag != want || !strings.Contains(logs.String(), log)) {
			time.Sleep(100 * time.Millisecond)
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/stats", nil))
			if m := lagLine.FindStringSubmatch(rec.Body.String()); m != nil {
				lag = m[1]
			}
		}
		if lag != want {
			t.Errorf("kafka_lag for lag/0 = %q, want %s", lag, want)
		}
		if !strings.Contains(logs.String(), log) {
			t.Errorf("no %q in the logs:\n%s", log, logs.String())
		}
	}
	waitFor("50", "lag/0 is stalled") // nothing acked, high watermark 50

	// The output back: every batch acked, the lag goes to 0.
	released = true
	close(release)
	waitFor("0", "lag/0 is making progress again")
}

// TestInputUnreachableBrokerIsRetriedAndCounted: a stream whose broker is
// down keeps running, retrying the connection and counting each failure.
func TestInputUnreachableBrokerIsRetriedAndCounted(t *testing.T) {
	b := service.NewStreamBuilder()
	if err := b.SetYAML(`
input:
  kafka_franz:
    seed_brokers: [ "127.0.0.1:1" ]
    topics: [ t ]
    consumer_group: g
output:
  drop: {}
metrics:
  json_api: {}
`); err != nil {
		t.Fatal(err)
	}
	var logs syncbuf.Buffer
	b.SetLogger(slog.New(slog.NewTextHandler(&logs, nil)))
	mux := http.NewServeMux()
	b.SetHTTPMux(mux)
	stream, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- stream.Run(context.Background()) }()

	failures := regexp.MustCompile(`"input_connection_failed\{[^}]*\}":(\d+)`)
	deadline := time.Now().Add(30 * time.Second)
	var n int
	for time.Now().Before(deadline) && n < 2 {
		time.Sleep(200 * time.Millisecond)
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/stats", nil))
		if m := failures.FindStringSubmatch(rec.Body.String()); m != nil {
			n, _ = strconv.Atoi(m[1])
		}
	}
	select {
	case err := <-ran:
		t.Fatalf("stream ended while the broker was down: %v", err)
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_ = stream.Stop(ctx)
	if n < 2 {
		t.Fatalf("input_connection_failed = %d, want the failed connects counted (>= 2)", n)
	}
	if !strings.Contains(logs.String(), "no seed broker reachable") {
		t.Errorf("the connection error is not logged clearly; logs:\n%s", logs.String())
	}
}

func TestSeedBrokersExpandCommas(t *testing.T) {
	conf, err := franzInputSpec().ParseYAML(`
seed_brokers: [ "a:9092,b:9092", " c:9092 ", "" ]
topics: [ t ]
`, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := seedBrokers(conf)
	if err != nil || strings.Join(got, " ") != "a:9092 b:9092 c:9092" {
		t.Fatalf("seedBrokers = %v, %v", got, err)
	}
}

func TestInputRegexpTopics(t *testing.T) {
	s := inStack(t)
	for _, topic := range []string{"rx.a", "rx.b", "other"} {
		inCreateTopic(t, s.Brokers, topic, 1)
		inProduce(t, s.Brokers, topic, 1, 1)
	}
	in := newTestInput(t, groupConfig(s.Brokers, `^rx\.`, "rx-g", "regexp_topics: true"))
	connect(t, in)
	got := map[string]bool{}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for len(got) < 2 {
		batch, ack, err := in.ReadBatch(ctx)
		if err != nil {
			t.Fatalf("ReadBatch: %v (got %v)", err, got)
		}
		for _, m := range batch {
			topic, _ := m.MetaGetMut("kafka_topic")
			got[topic.(string)] = true
		}
		_ = ack(ctx, nil)
	}
	if !got["rx.a"] || !got["rx.b"] || got["other"] {
		t.Fatalf("consumed topics %v, want rx.a and rx.b only", got)
	}
}

// TestInputSASL authenticates against a broker that requires SCRAM or
// PLAIN, and is refused with a wrong password.
func TestInputSASL(t *testing.T) {
	// The dev stack's readiness probe speaks no SASL: run kfake directly,
	// still over loopback TCP.
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(),
		kfake.EnableSASL(),
		kfake.Superuser("SCRAM-SHA-256", "scram", "s3cret"),
		kfake.Superuser("PLAIN", "plain", "s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()[0]
	admin, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.AllowAutoTopicCreation(),
		kgo.SASL(scramAuth("scram", "s3cret")))
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.ProduceSync(context.Background(), &kgo.Record{Topic: "secure", Value: []byte("v")}).FirstErr(); err != nil {
		t.Fatalf("seeding with SCRAM: %v", err)
	}
	admin.Close()

	for _, tc := range []struct {
		mech, user, pass string
		ok               bool
	}{
		{"SCRAM-SHA-256", "scram", "s3cret", true},
		{"PLAIN", "plain", "s3cret", true},
		{"SCRAM-SHA-256", "scram", "wrong", false},
	} {
		in := newTestInput(t, fmt.Sprintf(`
seed_brokers: [ %q ]
topics: [ secure ]
sasl:
  - mechanism: %s
    username: %s
    password: %s
`, brokers, tc.mech, tc.user, tc.pass))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := in.Connect(ctx)
		cancel()
		if !tc.ok {
			if err == nil {
				_ = in.Close(context.Background())
				t.Errorf("%s with a wrong password connected", tc.mech)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: Connect: %v", tc.mech, err)
			continue
		}
		if rb := read(t, in, 15*time.Second); rb.values[0] != "v" {
			t.Errorf("%s: read %v", tc.mech, rb.values)
		}
		_ = in.Close(context.Background())
	}
}

// TestInputRecordLargerThanFetchLimits: a record bigger than
// fetch_max_bytes and fetch_max_partition_bytes is still delivered whole.
func TestInputRecordLargerThanFetchLimits(t *testing.T) {
	s := inStack(t)
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.Brokers), kgo.ProducerBatchMaxBytes(8<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	maxMsg := "8388608"
	resp, err := kadm.NewClient(cl).CreateTopics(context.Background(), 1, 1, map[string]*string{"max.message.bytes": &maxMsg}, "big")
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
	big := []byte(strings.Repeat("b", 3<<20))
	if err := cl.ProduceSync(context.Background(),
		&kgo.Record{Topic: "big", Value: big},
		&kgo.Record{Topic: "big", Value: []byte("after")}).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	in := newTestInput(t, groupConfig(s.Brokers, "big", "big-g", "fetch_max_bytes: 1MiB\nfetch_max_partition_bytes: 1MiB"))
	connect(t, in)
	var values []string
	for len(values) < 2 {
		rb := read(t, in, 20*time.Second)
		values = append(values, rb.values...)
		_ = rb.ack(context.Background(), nil)
	}
	if len(values[0]) != len(big) || values[1] != "after" {
		t.Fatalf("got records of %d and %q bytes, want the 3 MiB record whole, then %q", len(values[0]), values[1], "after")
	}
}

func scramAuth(user, pass string) sasl.Mechanism {
	return scram.Auth{User: user, Pass: pass}.AsSha256Mechanism()
}

// TestInputTLS consumes from a broker that only speaks TLS, trusting its
// self-signed certificate through the tls field.
func TestInputTLS(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(),
		kfake.TLS(&tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()[0]
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.AllowAutoTopicCreation(), kgo.DialTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}))
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: "tls", Value: []byte("secret")}).FirstErr(); err != nil {
		t.Fatalf("seeding over TLS: %v", err)
	}
	cl.Close()

	indented := "      " + strings.ReplaceAll(strings.TrimSpace(string(certPEM)), "\n", "\n      ")
	in := newTestInput(t, fmt.Sprintf("seed_brokers: [%q]\ntopics: [tls]\ntls:\n  enabled: true\n  root_cas: |\n%s\n", brokers, indented))
	connect(t, in)
	if rb := read(t, in, 15*time.Second); rb.values[0] != "secret" {
		t.Fatalf("read %v over TLS", rb.values)
	}

	untrusted := newTestInput(t, fmt.Sprintf("seed_brokers: [%q]\ntopics: [tls]\ntls: { enabled: true }", brokers))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := untrusted.Connect(ctx); err == nil {
		_ = untrusted.Close(context.Background())
		t.Fatal("connected to a broker whose certificate is not trusted")
	}
}

// readByPartition reads one batch and returns its offsets per partition,
// in the order the batch holds them.
func readByPartition(t *testing.T, in *franzInput) (map[int][]int, service.AckFunc) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	batch, ack, err := in.ReadBatch(ctx)
	if err != nil {
		t.Fatalf("ReadBatch: %v", err)
	}
	got := map[int][]int{}
	for _, m := range batch {
		p, _ := m.MetaGetMut("kafka_partition")
		o, _ := m.MetaGetMut("kafka_offset")
		got[p.(int)] = append(got[p.(int)], o.(int))
	}
	return got, ack
}

func TestInputMergesReadyPartitionBatches(t *testing.T) {
	s := inStack(t)
	inCreateTopic(t, s.Brokers, "merge", 4)
	inProduce(t, s.Brokers, "merge", 4, 10)
	in := newTestInput(t, groupConfig(s.Brokers, "merge", "g", "batching: { count: 5 }\nmerge_partition_batches: 12"))
	connect(t, in)

	// Wait until every partition has its first batch ready to hand over.
	deadline := time.Now().Add(15 * time.Second)
	for ready := 0; ready < 4; {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of 4 partitions have a batch ready", ready)
		}
		time.Sleep(20 * time.Millisecond)
		ready = 0
		in.connMu.Lock()
		in.conn.partsMu.Lock()
		for _, p := range in.conn.parts {
			p.mu.Lock()
			if len(p.inflight) == 1 {
				ready++
			}
			p.mu.Unlock()
		}
		in.conn.partsMu.Unlock()
		in.connMu.Unlock()
	}
	time.Sleep(100 * time.Millisecond) // the workers reach their hand-over

	// 5 + 5 + 5: merging stops once the batch holds 12 or more.
	first, ack := readByPartition(t, in)
	if len(first) != 3 {
		t.Fatalf("merged batch holds partitions %v, want 3 partitions' batches", first)
	}
	for p, offs := range first {
		if fmt.Sprint(offs) != "[0 1 2 3 4]" {
			t.Fatalf("partition %d: offsets %v in the merged batch, want [0 1 2 3 4]", p, offs)
		}
	}

	// A nack replays every part, before anything newer of its partition.
	if err := ack(context.Background(), errors.New("output down")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(replayBackoff(1) + 300*time.Millisecond) // every replay ready at once
	// Each replay comes alone: one that keeps failing must not hold back
	// the partitions it was merged with.
	seen := map[int][]int{}
	var acks []service.AckFunc
	for n := 0; n < 20; {
		got, ack := readByPartition(t, in)
		acks = append(acks, ack)
		for p, offs := range got {
			if _, nacked := first[p]; nacked && len(got) > 1 {
				t.Fatalf("the replay of partition %d came merged with others: %v", p, got)
			}
			seen[p] = append(seen[p], offs...)
			n += len(offs)
		}
	}
	for p := 0; p < 4; p++ {
		if fmt.Sprint(seen[p]) != "[0 1 2 3 4]" {
			t.Fatalf("after the nack, partition %d delivered %v, want [0 1 2 3 4] (replay before newer)", p, seen[p])
		}
	}
	for _, ack := range acks {
		if err := ack(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
	}

	// Acking a merged batch acks each part: every partition moves on to 5.
	seen = map[int][]int{}
	for n := 0; n < 20; {
		got, ack := readByPartition(t, in)
		for p, offs := range got {
			seen[p] = append(seen[p], offs...)
			n += len(offs)
		}
		if err := ack(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
	}
	in.connMu.Lock()
	parts := in.conn.parts
	in.connMu.Unlock()
	for p := 0; p < 4; p++ {
		if fmt.Sprint(seen[p]) != "[5 6 7 8 9]" {
			t.Fatalf("partition %d then delivered %v, want [5 6 7 8 9]", p, seen[p])
		}
		if eo, ok := parts[topicPartition{"merge", int32(p)}].commitOffset(); !ok || eo.Offset != 10 {
			t.Fatalf("partition %d: committable offset %v %v, want 10", p, eo.Offset, ok)
		}
	}
}

func TestInputMergeLimitMustNotBeNegative(t *testing.T) {
	conf, err := franzInputSpec().ParseYAML(`
seed_brokers: [ "localhost:9092" ]
topics: [ foo ]
merge_partition_batches: -1
`, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newFranzInput(conf, service.MockResources()); err == nil || !strings.Contains(err.Error(), "merge_partition_batches") {
		t.Fatalf("merge_partition_batches -1: got %v, want an error naming the field", err)
	}
}

// A batch handed over just as its partition's ownership ended is dropped:
// its ack would count for nothing, and the next owner reads it again.
func TestInputDropsBatchesOfAnEndedOwnership(t *testing.T) {
	for _, merge := range []int{0, 100} {
		in := &franzInput{batches: make(chan pendingBatch), mergeUpTo: merge}
		in.conn = &franzConn{failed: make(chan struct{})}
		ended := newPartitionState(in, topicPartition{"t", 0})
		ended.close()
		live := newPartitionState(in, topicPartition{"t", 1})
		batch := func(p *partitionState, v string, replay bool) pendingBatch {
			return pendingBatch{msgs: service.MessageBatch{service.NewMessage([]byte(v))}, from: p, replay: replay,
				ack: func(context.Context, error) error { return nil }}
		}
		go func() {
			in.batches <- batch(ended, "old owner", false)
			in.batches <- batch(live, "current", false)
			in.batches <- batch(ended, "old owner's replay", true)
			in.batches <- batch(live, "current again", false)
		}()
		var got []string
		for len(got) < 2 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			msgs, _, err := in.ReadBatch(ctx)
			cancel()
			if err != nil {
				t.Fatalf("merge %d: ReadBatch: %v (got %v)", merge, err, got)
			}
			for _, m := range msgs {
				b, _ := m.AsBytes()
				got = append(got, string(b))
			}
		}
		if fmt.Sprint(got) != "[current current again]" {
			t.Errorf("merge %d: delivered %q, want only the current ownership's batches", merge, got)
		}
	}
}

// TestInputTransactionIsolation: read_committed skips the records of an
// aborted transaction; read_uncommitted (the default) reads them.
func TestInputTransactionIsolation(t *testing.T) {
	s := inStack(t)
	const topic = "isolation"
	inCreateTopic(t, s.Brokers, topic, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tx, err := kgo.NewClient(kgo.SeedBrokers(s.Brokers), kgo.TransactionalID("odsflow-isolation-test"), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	for _, end := range []struct {
		value  string
		commit kgo.TransactionEndTry
	}{{"aborted", kgo.TryAbort}, {"committed", kgo.TryCommit}} {
		if err := tx.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		if err := tx.ProduceSync(ctx, &kgo.Record{Value: []byte(end.value)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if err := tx.EndTransaction(ctx, end.commit); err != nil {
			t.Fatal(err)
		}
	}
	for level, want := range map[string]string{"read_committed": "committed", "read_uncommitted": "aborted committed"} {
		in := newTestInput(t, fmt.Sprintf("seed_brokers: [ %q ]\ntopics: [ %q ]\ntransaction_isolation_level: %s\nfetch_min_bytes: 1B\n", s.Brokers, topic, level))
		connect(t, in)
		var got []string
		for len(got) < len(strings.Fields(want)) {
			got = append(got, read(t, in, 15*time.Second).values...)
		}
		if strings.Join(got, " ") != want {
			t.Errorf("%s: read %q, want %q", level, got, want)
		}
	}
}

// TestInputRegexpTopicsIncludeExclude: Redpanda Connect's include and
// exclude patterns; the excluded topic is never delivered.
func TestInputRegexpTopicsIncludeExclude(t *testing.T) {
	s := inStack(t)
	for _, topic := range []string{"ri.a", "ri.b", "ri.skip", "other"} {
		inCreateTopic(t, s.Brokers, topic, 1)
		inProduce(t, s.Brokers, topic, 1, 1)
	}
	in := newTestInput(t, fmt.Sprintf(`
seed_brokers: [ %q ]
regexp_topics_include: [ '^ri\.' ]
regexp_topics_exclude: [ 'skip$' ]
consumer_group: ri-g
`, s.Brokers))
	connect(t, in)
	got := map[string]int{}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for got["ri.a"] == 0 || got["ri.b"] == 0 {
		batch, ack, err := in.ReadBatch(ctx)
		if err != nil {
			t.Fatalf("ReadBatch: %v (got %v)", err, got)
		}
		for _, m := range batch {
			topic, _ := m.MetaGetMut("kafka_topic")
			got[topic.(string)]++
		}
		_ = ack(ctx, nil)
	}
	// Whatever else would come comes now.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel2()
	if batch, _, err := in.ReadBatch(ctx2); err == nil {
		for _, m := range batch {
			topic, _ := m.MetaGetMut("kafka_topic")
			got[topic.(string)]++
		}
	}
	if got["ri.skip"] != 0 || got["other"] != 0 {
		t.Fatalf("consumed %v, want ri.a and ri.b only", got)
	}
}

func TestInputTopicSettingsRefused(t *testing.T) {
	linter := service.NewEnvironment().NewComponentConfigLinter().SetSkipEnvVarCheck(true)
	for name, c := range map[string]struct{ yaml, want, lint string }{
		"neither":                     {`seed_brokers: [ "localhost:9092" ]`, "at least one topic", "must be specified"},
		"both":                        {"seed_brokers: [ \"localhost:9092\" ]\ntopics: [ a ]\nregexp_topics_include: [ b ]", "not both", "not both"},
		"exclude alone":               {"seed_brokers: [ \"localhost:9092\" ]\ntopics: [ a ]\nregexp_topics_exclude: [ b ]", "needs regexp_topics_include", "needs regexp_topics_include"},
		"require_all without a group": {"seed_brokers: [ \"localhost:9092\" ]\ntopics: [ a ]\nrequire_all_partitions: true", "needs a consumer_group", "needs a consumer_group"},
		"require_all with patterns":   {"seed_brokers: [ \"localhost:9092\" ]\nregexp_topics_include: [ a ]\nconsumer_group: g\nrequire_all_partitions: true", "topics named in full", "topics named in full"},
		"lag refresh of 0":            {"seed_brokers: [ \"localhost:9092\" ]\ntopics: [ a ]\ntopic_lag_refresh_period: 0s", "topic_lag_refresh_period must be positive", ""},
		"bad pattern":                 {"seed_brokers: [ \"localhost:9092\" ]\nregexp_topics_include: [ '(' ]", "topic pattern", ""},
		"bad exclude":                 {"seed_brokers: [ \"localhost:9092\" ]\nregexp_topics_include: [ a ]\nregexp_topics_exclude: [ '[' ]", "topic pattern", ""},
	} {
		t.Run(name, func(t *testing.T) {
			conf, err := franzInputSpec().ParseYAML(c.yaml, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := newFranzInput(conf, service.MockResources()); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %v, want an error with %q", err, c.want)
			}
			if c.lint == "" {
				return // lint does not compile patterns
			}
			lints, err := linter.LintYAML("input", []byte("kafka_franz:\n  "+strings.ReplaceAll(c.yaml, "\n", "\n  ")))
			if err != nil {
				t.Fatal(err)
			}
			if len(lints) != 1 || !strings.Contains(lints[0].What, c.lint) {
				t.Errorf("lints %v, want one with %q", lints, c.lint)
			}
		})
	}
}

// TestInputStoppingNackIsNotADrop: with auto_replay_nacks false a rejected
// batch is dropped (acked), but one nacked because the pipeline is stopping
// (a processor's context ended) is not: nothing from it on is committed,
// and the next member reads it again.
func TestInputStoppingNackIsNotADrop(t *testing.T) {
	s := inStack(t)
	inCreateTopic(t, s.Brokers, "stopping-nack", 1)
	inProduce(t, s.Brokers, "stopping-nack", 1, 3)
	conf := groupConfig(s.Brokers, "stopping-nack", "g", "auto_replay_nacks: false\nbatching: { count: 3 }")
	in := newTestInput(t, conf)
	connect(t, in)
	rb := read(t, in, 15*time.Second)
	if err := rb.ack(context.Background(), fmt.Errorf("processor stopped: %w", context.Canceled)); err != nil {
		t.Fatal(err)
	}
	if err := in.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	in2 := newTestInput(t, conf)
	connect(t, in2)
	if again := read(t, in2, 15*time.Second); again.offsets[0] != 0 {
		t.Fatalf("after a nack for stopping, the next member starts at offset %d, want 0 (the batch again)", again.offsets[0])
	}
}

// fetch_max_bytes above 512MiB is refused when the input is built (the
// client would refuse its read limit at every Connect).
func TestInputFetchMaxBytesLimit(t *testing.T) {
	for _, size := range []string{"600MiB", "1GiB"} {
		conf, err := franzInputSpec().ParseYAML("seed_brokers: [ \"127.0.0.1:1\" ]\ntopics: [ a ]\nfetch_max_bytes: "+size+"\n", nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := newFranzInput(conf, service.MockResources()); err == nil || !strings.Contains(err.Error(), "fetch_max_bytes: at most 512MiB") {
			t.Errorf("fetch_max_bytes %s: %v, want it refused", size, err)
		}
	}
	in := newTestInput(t, "seed_brokers: [ \"127.0.0.1:1\" ]\ntopics: [ a ]\nfetch_max_bytes: 512MiB\n")
	cl, err := kgo.NewClient(in.clientOpts...)
	if err != nil {
		t.Fatalf("fetch_max_bytes 512MiB: the client cannot be created: %v", err)
	}
	cl.Close()
}

// A nack for a timeout (an output's write that timed out, wrapping
// context.DeadlineExceeded) is a rejection: the batch is delivered again,
// not held as if the pipeline were stopping (its partition would wait for
// good).
func TestInputTimeoutNackIsReplayed(t *testing.T) {
	_, in := groupInput(t, "deadline-nack", 3, "batching: { count: 3 }")
	rb := read(t, in, 15*time.Second)
	if err := rb.ack(context.Background(), fmt.Errorf("writing to topic dlq: %w", context.DeadlineExceeded)); err != nil {
		t.Fatal(err)
	}
	if again := read(t, in, 15*time.Second); fmt.Sprint(again.offsets) != "[0 1 2]" {
		t.Fatalf("after a nack for a timeout, offsets %v were delivered, want the batch again: [0 1 2]", again.offsets)
	}
}

// The first message of each batch carries the cluster's id (the dev
// stack gives each cluster its own), for cdc_join to tell a state of
// another cluster.
func TestInputMarksTheClusterID(t *testing.T) {
	_, in := groupInput(t, "cluster-id", 6, "batching: { count: 3 }")
	for range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		batch, ack, err := in.ReadBatch(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		for i, m := range batch {
			id, ok := m.MetaGetMut("kafka_cluster_id")
			if s, _ := id.(string); ok != (i == 0) || (ok && !strings.HasPrefix(s, "odsflow-dev-")) {
				t.Errorf("message %d: kafka_cluster_id %v (%v), want the dev cluster's id on the first message only", i, id, ok)
			}
		}
		_ = ack(context.Background(), nil)
	}
}

func TestMarkResumedSkipsTombstones(t *testing.T) {
	batch := service.MessageBatch{service.NewMessage(nil), service.NewMessage([]byte("row")), service.NewMessage([]byte("row"))}
	markResumed(batch, 7)
	for i, m := range batch {
		v, ok := m.MetaGetMut("kafka_resume_offset")
		if want := i == 1; ok != want || (ok && v != 7) {
			t.Errorf("message %d: kafka_resume_offset %v (%v), want it only on message 1", i, v, ok)
		}
	}
	tombstones := service.MessageBatch{service.NewMessage(nil), service.NewMessage(nil)}
	markResumed(tombstones, 3)
	if _, ok := tombstones[0].MetaGetMut("kafka_resume_offset"); !ok {
		t.Error("a batch of tombstones only: its first is not marked")
	}
}

// Redpanda Connect's extract_tracing_map and timely_nacks_maximum_wait are
// accepted and wrap the input (Benthos' own wrappers); unset, they do not.
func TestInputBenthosWrappers(t *testing.T) {
	build := func(extra string) any {
		conf, err := franzInputSpec().ParseYAML("seed_brokers: [ \"localhost:9092\" ]\ntopics: [ a ]\n"+extra, nil)
		if err != nil {
			t.Fatal(err)
		}
		in, err := newWrappedFranzInput(conf, service.MockResources())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = in.Close(context.Background()) })
		return in
	}
	if _, plain := build("").(*franzInput); !plain {
		t.Error("without the fields, the input is wrapped")
	}
	if _, plain := build("timely_nacks_maximum_wait: 10s\nextract_tracing_map: 'root = @'").(*franzInput); plain {
		t.Error("with timely_nacks_maximum_wait and extract_tracing_map, the input is not wrapped")
	}
}

// start_offset: latest (or the deprecated start_from_oldest: false) skips
// what a partition without a committed offset already holds; earliest, the
// default, reads it.
func TestInputStartOffset(t *testing.T) {
	s := inStack(t)
	for _, tc := range []struct {
		group, extra string
		first        int
	}{
		{"earliest", "", 0},
		{"latest", "start_offset: latest", 3},
		{"not-oldest", "start_from_oldest: false", 3},
	} {
		t.Run(tc.group, func(t *testing.T) {
			topic := "start-" + tc.group
			inCreateTopic(t, s.Brokers, topic, 1)
			inProduce(t, s.Brokers, topic, 1, 3)
			in := newTestInput(t, groupConfig(s.Brokers, topic, tc.group, tc.extra))
			connect(t, in)
			if tc.first == 0 {
				if rb := read(t, in, 15*time.Second); rb.offsets[0] != 0 {
					t.Errorf("the first record read is offset %d, want 0", rb.offsets[0])
				}
				return
			}
			// New records until one is read (whenever the input has taken
			// its position): never one of the three that were there.
			for deadline := time.Now().Add(20 * time.Second); ; {
				inProduce(t, s.Brokers, topic, 1, 1)
				ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				batch, _, err := in.ReadBatch(ctx)
				cancel()
				if err == nil {
					if off, _ := batch[0].MetaGetMut("kafka_offset"); off.(int) < tc.first {
						t.Errorf("the first record read is offset %v, want one produced after the start (≥ %d)", off, tc.first)
					}
					return
				}
				if time.Now().After(deadline) {
					t.Fatal("nothing read in 20 s")
				}
			}
		})
	}
}
