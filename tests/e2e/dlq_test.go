package e2e

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/odsflow/odsflow/internal/simulate"
)

// TestDeadLetterTopicDownHoldsItsRecords: issue 7's "if the DLQ topic
// cannot be written, the message is not acked (nothing is lost)". While the
// broker refuses every write to the dead-letter topic, records that cannot
// be decoded are not acked: their partition's committed offset stays at
// the first of them, and everything else is written. The process is
// then killed (SIGKILL), the topic takes writes again, and the restarted
// process dead-letters each of them once, catches up, and the ODS is exact.
func TestDeadLetterTopicDownHoldsItsRecords(t *testing.T) {
	cfg := simulate.Config{TopicPrefix: "dlqdown.transactions_schema", Money: simulate.MoneyInt, Customers: 40, Events: 1500, Seed: 23}
	e := newEnv(t, cfg)
	want := e.produce(t)
	topic := cfg.Topic(simulate.TableTransactions)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.stack.Brokers), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	created, err := kadm.NewClient(cl).CreateTopic(ctx, 1, 1, nil, "e2e.dlq")
	if err != nil || created.Err != nil {
		t.Fatalf("creating the dead-letter topic: %v %v", err, created.Err)
	}

	// The broker refuses every write to the dead-letter topic, with an
	// error that is not retriable (each write fails at once).
	var refused atomic.Int64
	refusing := atomic.Bool{}
	refusing.Store(true)
	broker := e.stack.Kafka()
	broker.ControlKey(int16(kmsg.Produce), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		broker.KeepControl()
		req := kreq.(*kmsg.ProduceRequest)
		if !refusing.Load() || !slices.ContainsFunc(req.Topics, func(rt kmsg.ProduceRequestTopic) bool {
			return rt.Topic == "e2e.dlq" || rt.TopicID == created.ID
		}) {
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		resp.Version = req.Version
		for _, rt := range req.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.TopicAuthorizationFailed.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		refused.Add(1)
		return resp, nil, true
	})

	// Commits every 200 ms: an offset acked by mistake would be committed
	// well within the waits below.
	p := e.start(t, "--set", "http.enabled=false", "--set", "input.kafka_franz.commit_period=200ms")
	e.waitExact(t, p, want, 2*time.Minute)
	// Caught up: every record of partition 0 so far is committed.
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	end, _ := ends.Lookup(topic, 0)
	waitCommitted(t, e.stack.Brokers, topic, end.Offset, p)

	// Three records that cannot be decoded (not the Confluent magic byte).
	var poison []*kgo.Record
	for i := range 3 {
		poison = append(poison, &kgo.Record{Topic: topic, Partition: 0, Key: []byte(fmt.Sprintf("bad-%d", i)), Value: []byte{0x7f, byte(i), 1, 2, 3}})
	}
	if err := cl.ProduceSync(ctx, poison...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	firstPoison := poison[0].Offset
	for refused.Load() == 0 && ctx.Err() == nil {
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(3 * time.Second)
	if n := deadLetters(t, e.stack.Brokers, "e2e.dlq"); n != 0 {
		t.Fatalf("%d dead letters written while the broker refused them", n)
	}
	if got := committedOffset(t, e.stack.Brokers, "e2e", topic, 0); got != firstPoison {
		t.Fatalf("committed offset of %s/0 is %d, want %d: the records the dead-letter topic refused are acked, or the ones before them are not", topic, got, firstPoison)
	}
	t.Logf("%d dead-letter writes refused; %s/0 committed up to %d, the first refused record", refused.Load(), topic, firstPoison)
	p.kill()

	refusing.Store(false)
	p = e.start(t)
	dlq := readDLQ(t, e.stack.Brokers, "e2e.dlq", len(poison))
	var offsets []int64
	for _, rec := range dlq {
		h := map[string]string{}
		for _, x := range rec.Headers {
			h[x.Key] = string(x.Value)
		}
		off, err := strconv.ParseInt(h["source_offset"], 10, 64)
		if err != nil || h["source_topic"] != topic || h["source_partition"] != "0" || h["error_component"] != "schema_registry_decode" || h["error"] == "" {
			t.Errorf("dead letter with wrong origin or reason: headers %v", h)
		}
		offsets = append(offsets, off)
	}
	slices.Sort(offsets)
	if !slices.Equal(offsets, []int64{firstPoison, firstPoison + 1, firstPoison + 2}) {
		t.Errorf("dead letters of offsets %v, want each of %d..%d once", offsets, firstPoison, firstPoison+2)
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		lag, err := groupLag(ctx, e.stack.Brokers, "e2e")
		if err == nil && lag == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the group has not caught up after the dead-letter topic came back (lag %d, %v); logs:\n%s", lag, err, tail(p.logs.String(), 4000))
		}
	}
	e.waitExact(t, p, want, time.Minute)
	p.stop(t)
}

// committedOffset is the group's committed offset of one partition (-1 if
// none).
func committedOffset(t testing.TB, brokers, group, topic string, partition int32) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	offsets, err := kadm.NewClient(cl).FetchOffsets(context.Background(), group)
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := offsets.Lookup(topic, partition); ok && o.Err == nil {
		return o.At
	}
	return -1
}

// waitCommitted waits until the group e2e has committed offset want of
// topic's partition 0.
func waitCommitted(t testing.TB, brokers, topic string, want int64, p *pipeline) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		got := committedOffset(t, brokers, "e2e", topic, 0)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/0 committed up to %d after 30 s, want %d; logs:\n%s", topic, got, want, tail(p.logs.String(), 4000))
		}
	}
}
