package join

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"

	"github.com/odsflow/odsflow/internal/statestore"
	"github.com/odsflow/odsflow/internal/syncbuf"
)

// fromKafka gives m the metadata kafka_franz gives a record; resume ≥ 0
// is the group's committed offset (kafka_resume_offset).
func fromKafka(m *service.Message, topic string, partition, offset, resume int) *service.Message {
	m.MetaSetMut("kafka_topic", topic)
	m.MetaSetMut("kafka_partition", partition)
	m.MetaSetMut("kafka_offset", offset)
	if resume >= 0 {
		m.MetaSetMut("kafka_resume_offset", resume)
	}
	return m
}

// processWithin runs one batch with a deadline: a batch held for missing
// history returns the hold's error when it passes.
func processWithin(j *join, wait time.Duration, msgs ...*service.Message) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	out, err := j.ProcessBatch(ctx, msgs)
	n := 0
	for _, b := range out {
		n += len(b)
	}
	return n, err
}

func newHistoryJoin(t *testing.T, dir string, require bool) *join {
	t.Helper()
	conf, err := joinSpec().ParseYAML(fmt.Sprintf(odsConfig, dir)+fmt.Sprintf("require_history: %v\n", require), nil)
	if err != nil {
		t.Fatal(err)
	}
	j, err := newJoin(conf, service.MockResources())
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func TestRequireHistoryHoldsANewStateOnAProgressedGroup(t *testing.T) {
	kept := t.TempDir()
	j := newHistoryJoin(t, kept, true)
	// A new group: no kafka_resume_offset.
	if n, err := processWithin(j, 5*time.Second,
		fromKafka(cust("c", 1, 7, "Ann"), "customers", 0, 0, -1),
		fromKafka(acct("c", 2, 1, 1001, 7, "5.00"), "accounts", 2, 0, -1)); err != nil || n != 1 {
		t.Fatalf("a new group on a new state: %d rows, %v", n, err)
	}
	_ = j.Close(context.Background())

	// The group has committed; a process starts with another state.
	resumed := func() []*service.Message {
		return []*service.Message{
			fromKafka(acct("u", 3, 1, 1001, 7, "6.00"), "accounts", 2, 1, 1),
			fromKafka(cust("u", 4, 7, "Anna"), "customers", 0, 1, 1),
		}
	}
	empty := newHistoryJoin(t, t.TempDir(), true)
	n, err := processWithin(empty, 300*time.Millisecond, resumed()...)
	if err == nil || n != 0 {
		t.Fatalf("a new state on a progressed group: %d messages passed on, error %v; want the batch held", n, err)
	}
	if !strings.Contains(err.Error(), "missing history") {
		t.Errorf("hold ended with %v", err)
	}
	// Held means nothing applied: the state is still empty.
	if err := empty.store.View(context.Background(), func(tx statestore.Tx) error {
		if has, err := hasRows(tx); has || err != nil {
			return fmt.Errorf("the held batch changed the state (rows %v, %v)", has, err)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	_ = empty.Close(context.Background())

	// The state that goes with the group: on it goes.
	j = newHistoryJoin(t, kept, true)
	defer j.Close(context.Background())
	if n, err := processWithin(j, 5*time.Second, resumed()...); err != nil || n != 2 {
		t.Fatalf("the group's own state: %d rows, %v", n, err)
	}
}

func TestRequireHistoryFalseGoesOn(t *testing.T) {
	j := newHistoryJoin(t, t.TempDir(), false)
	defer j.Close(context.Background())
	if n, err := processWithin(j, 5*time.Second,
		fromKafka(cust("c", 1, 7, "Ann"), "customers", 0, 5, 5),
		fromKafka(acct("c", 2, 1, 1001, 7, "5.00"), "accounts", 0, 9, 9)); err != nil || n != 1 {
		t.Fatalf("require_history false: %d rows, %v", n, err)
	}
}

// A topic the state has applied messages of is not held, whichever offset
// the group resumes from, nor is another partition of it (its messages may
// all have been tombstones, dropped before the join); a topic it has
// applied nothing of is.
func TestRequireHistoryPerTopic(t *testing.T) {
	j := newHistoryJoin(t, t.TempDir(), true)
	defer j.Close(context.Background())
	if _, err := processWithin(j, 5*time.Second, fromKafka(cust("c", 1, 7, "Ann"), "customers", 0, 0, -1)); err != nil {
		t.Fatal(err)
	}
	if _, err := processWithin(j, 5*time.Second, fromKafka(cust("u", 2, 7, "Anna"), "customers", 0, 40, 40)); err != nil {
		t.Fatalf("a partition the state has seen, resumed further on: %v", err)
	}
	if _, err := processWithin(j, 5*time.Second, fromKafka(cust("c", 3, 8, "Bob"), "customers", 1, 12, 12)); err != nil {
		t.Fatalf("another partition of a topic the state has seen: %v", err)
	}
	if _, err := processWithin(j, 300*time.Millisecond, fromKafka(acct("c", 4, 1, 1001, 7, "5.00"), "accounts", 0, 12, 12)); err == nil {
		t.Fatal("a topic the state has never applied, resumed at 12, was not held")
	}
}

// A stale copy of the state: the group resumes further than historyGap
// past what the state applied of a partition.
func TestRequireHistoryStaleState(t *testing.T) {
	j := newHistoryJoin(t, t.TempDir(), true)
	defer j.Close(context.Background())
	if _, err := processWithin(j, 5*time.Second,
		fromKafka(cust("c", 1, 7, "Ann"), "customers", 0, 10, -1),
		fromKafka(cust("u", 2, 7, "Anna"), "customers", 0, 11, -1)); err != nil {
		t.Fatal(err)
	}
	_, err := processWithin(j, 300*time.Millisecond, fromKafka(cust("c", 3, 8, "Bob"), "customers", 0, 12+historyGap+1, 12+historyGap+1))
	if err == nil {
		t.Fatalf("the group resumes %d records past the state: not held", historyGap+1)
	}
	if _, err := processWithin(j, 5*time.Second, fromKafka(cust("c", 3, 8, "Bob"), "customers", 0, 12+historyGap, 12+historyGap)); err != nil {
		t.Fatalf("the group resumes %d records past the state (the tolerance): %v", historyGap, err)
	}
}

// A run of tombstones (debezium_unwrap's tombstones: mark) is dropped by
// the join, and counted in the state's progress: a group that resumes past
// it is not taken for a stale state.
func TestMarkedTombstonesAreDroppedAndCounted(t *testing.T) {
	j := newHistoryJoin(t, t.TempDir(), true)
	defer j.Close(context.Background())
	if _, err := processWithin(j, 5*time.Second, fromKafka(cust("c", 1, 7, "Ann"), "customers", 0, 0, -1)); err != nil {
		t.Fatal(err)
	}
	var tombstones service.MessageBatch
	for off := 1; off <= 3*historyGap; off++ {
		m := fromKafka(service.NewMessage(nil), "customers", 0, off, -1)
		m.MetaSetMut("cdc_tombstone", true)
		tombstones = append(tombstones, m)
	}
	if n, err := processWithin(j, 5*time.Second, tombstones...); err != nil || n != 0 {
		t.Fatalf("a batch of marked tombstones: %d messages out, %v; want none", n, err)
	}
	resume := 3*historyGap + 1
	if _, err := processWithin(j, 5*time.Second, fromKafka(cust("u", 2, 7, "Anna"), "customers", 0, resume, resume)); err != nil {
		t.Fatalf("resumed after a run of tombstones: %v", err)
	}
}

// A group without commits that reads what the state has applied (reset,
// or the state of another stream) is warned about, not held; one whose
// offsets the input could not read (kafka_resume_offset -1) is neither.
func TestStateAheadOfANewGroupIsWarned(t *testing.T) {
	dir := t.TempDir()
	j := newHistoryJoin(t, dir, true)
	if _, err := processWithin(j, 5*time.Second, fromKafka(cust("c", 1, 7, "Ann"), "customers", 0, 3*historyGap, -1)); err != nil {
		t.Fatal(err)
	}
	_ = j.Close(context.Background())

	for _, tc := range []struct {
		name   string
		resume any // kafka_resume_offset; nil: none
		warned bool
	}{{"a group without commits", nil, true}, {"offsets the input could not read", -1, false}} {
		j, logs := newLoggedJoin(t, dir)
		m := fromKafka(cust("c", 1, 7, "Ann"), "customers", 0, 0, -1)
		if tc.resume != nil {
			m.MetaSetMut("kafka_resume_offset", tc.resume)
		}
		if _, err := processWithin(j, 5*time.Second, m); err != nil {
			t.Fatalf("%s, on a state ahead of it: held (%v)", tc.name, err)
		}
		if warned := strings.Contains(logs.String(), "has no committed offset and reads from offset 0"); warned != tc.warned {
			t.Errorf("%s, on a state ahead of it: warned %v, want %v; logs:\n%s", tc.name, warned, tc.warned, logs.String())
		}
		_ = j.Close(context.Background())
	}
}

// newLoggedJoin is newHistoryJoin (require_history on) with its log kept.
func newLoggedJoin(t *testing.T, dir string) (*join, *syncbuf.Buffer) {
	t.Helper()
	logs := &syncbuf.Buffer{}
	conf, err := joinSpec().ParseYAML(fmt.Sprintf(odsConfig, dir), nil)
	if err != nil {
		t.Fatal(err)
	}
	j, err := newJoin(conf, service.MockResources(service.MockResourcesOptUseLogger(
		service.NewLoggerFromSlog(slog.New(slog.NewTextHandler(logs, nil))))))
	if err != nil {
		t.Fatal(err)
	}
	return j, logs
}

// A state of an earlier odsflow (rows, no recorded partitions) is marked
// at open, before any batch records partitions, and never held: not even
// after a first run whose batches carried no kafka_resume_offset.
func TestRequireHistoryLegacyState(t *testing.T) {
	dir := t.TempDir()
	j := newHistoryJoin(t, dir, true)
	// No Kafka metadata: nothing recorded, as before partitions were.
	run(t, j, cust("c", 1, 7, "Ann"))
	_ = j.Close(context.Background())

	j = newHistoryJoin(t, dir, true)
	if _, err := processWithin(j, 5*time.Second, fromKafka(cust("u", 2, 7, "Anna"), "customers", 0, 3, -1)); err != nil {
		t.Fatal(err)
	}
	_ = j.Close(context.Background())
	j = newHistoryJoin(t, dir, true)
	defer j.Close(context.Background())
	if _, err := processWithin(j, 5*time.Second, fromKafka(acct("c", 3, 1, 1001, 7, "5.00"), "accounts", 1, 12, 12)); err != nil {
		t.Fatalf("a legacy state was held after a restart: %v", err)
	}
}

// The recorded offset is the highest seen: a replay of older offsets after
// a crash does not move it back.
func TestProgressKeepsTheHighestOffset(t *testing.T) {
	j := newHistoryJoin(t, t.TempDir(), true)
	defer j.Close(context.Background())
	for _, offs := range [][2]int{{10, 11}, {4, 5}} {
		if _, err := processWithin(j, 5*time.Second,
			fromKafka(cust("c", 1, 7, "Ann"), "customers", 0, offs[0], -1),
			fromKafka(cust("u", 2, 7, "Anna"), "customers", 0, offs[1], -1)); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.store.View(context.Background(), func(tx statestore.Tx) error {
		v, err := tx.Get(progressBucket, []byte("customers\x000"))
		if err != nil || len(v) != 8 {
			return fmt.Errorf("progress of customers/0: %x, %v", v, err)
		}
		if got := binary.BigEndian.Uint64(v); got != 12 {
			return fmt.Errorf("progress of customers/0 is %d, want 12 (after offset 11)", got)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}

func TestPartitionsOf(t *testing.T) {
	batch := service.MessageBatch{
		fromKafka(service.NewMessage(nil), "a", 0, 5, 5),
		fromKafka(service.NewMessage(nil), "a", 0, 6, -1),
		fromKafka(service.NewMessage(nil), "b", 1, 9, -1),
		service.NewMessage(nil), // no Kafka metadata
		fromKafka(service.NewMessage(nil), "a", 0, 7, -1),
	}
	batch[2].MetaSetMut("kafka_cluster_id", "k1")
	got, cluster := partitionsOf(batch)
	if cluster != "k1" {
		t.Errorf("partitionsOf: cluster %q, want k1", cluster)
	}
	var lines []string
	for _, p := range got {
		lines = append(lines, fmt.Sprintf("%s/%d next %d resume %d", p.topic, p.partition, p.next, p.resume))
	}
	want := "a/0 next 8 resume 5; b/1 next 10 resume -1"
	if s := strings.Join(lines, "; "); s != want {
		t.Errorf("partitionsOf: %s, want %s", s, want)
	}
}

// A state records the Kafka cluster its records came from; the same state
// on another cluster (a restarted `odsflow dev`: a new cluster, and a new
// group that reads from offset 0) is held, whatever the offsets say.
func TestRequireHistoryHoldsAStateOfAnotherCluster(t *testing.T) {
	dir := t.TempDir()
	on := func(cluster string, m *service.Message) *service.Message {
		m.MetaSetMut("kafka_cluster_id", cluster)
		return m
	}
	j := newHistoryJoin(t, dir, true)
	if n, err := processWithin(j, 5*time.Second,
		on("first", fromKafka(cust("c", 1, 7, "Ann"), "customers", 0, 0, -1)),
		fromKafka(acct("c", 2, 1, 1001, 7, "5.00"), "accounts", 2, 0, -1)); err != nil || n != 1 {
		t.Fatalf("the first cluster: %d rows, %v", n, err)
	}
	_ = j.Close(context.Background())

	again := newHistoryJoin(t, dir, true)
	t.Cleanup(func() { _ = again.Close(context.Background()) })
	n, err := processWithin(again, 300*time.Millisecond, on("second", fromKafka(cust("c", 3, 8, "Bo"), "customers", 0, 0, -1)))
	if err == nil || n != 0 || !strings.Contains(err.Error(), "missing history") {
		t.Fatalf("the state on another cluster: %d messages passed on, %v; want the batch held", n, err)
	}
	if n, err := processWithin(again, 5*time.Second, on("first", fromKafka(cust("u", 4, 7, "Anna"), "customers", 0, 1, -1))); err != nil || n != 1 {
		t.Fatalf("the same cluster again: %d rows, %v", n, err)
	}

	// A state that recorded no cluster (an earlier odsflow, another input)
	// takes the first it is told of.
	unknown := newHistoryJoin(t, t.TempDir(), true)
	t.Cleanup(func() { _ = unknown.Close(context.Background()) })
	if n, err := processWithin(unknown, 5*time.Second, fromKafka(cust("c", 1, 7, "Ann"), "customers", 0, 0, -1)); err != nil || n != 0 {
		t.Fatalf("no cluster: %d rows, %v", n, err)
	}
	if _, err := processWithin(unknown, 5*time.Second, on("third", fromKafka(cust("u", 2, 7, "Anne"), "customers", 0, 1, -1))); err != nil {
		t.Fatalf("a first cluster for a state that had none: %v", err)
	}
	if _, err := processWithin(unknown, 300*time.Millisecond, on("fourth", fromKafka(cust("u", 3, 7, "Anya"), "customers", 0, 2, -1))); err == nil {
		t.Fatal("a second cluster for that state: passed, want held")
	}
}
