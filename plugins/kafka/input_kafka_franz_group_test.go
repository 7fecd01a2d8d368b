package kafka

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/odsflow/odsflow/internal/devstack"
	"github.com/redpanda-data/benthos/v4/public/service"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

type commitSeen struct {
	member    string
	topic     string
	partition int32
	offset    int64
	at        time.Time
}

func ownedPartitions(in *franzInput) map[int32]bool {
	in.connMu.Lock()
	c := in.conn
	in.connMu.Unlock()
	c.partsMu.Lock()
	defer c.partsMu.Unlock()
	out := map[int32]bool{}
	for tp := range c.parts {
		out[tp.partition] = true
	}
	return out
}

// TestInputRebalanceMidway: member A holds unacked batches of every
// partition when B joins. A's late acks of the partitions it lost must not
// be committed; B must get those partitions from where A last committed;
// and together they must deliver every record.
func TestInputRebalanceMidway(t *testing.T) {
	s := inStack(t)
	const topic, parts, perPartition = "rebalance", 4, 40
	inCreateTopic(t, s.Brokers, topic, parts)
	inProduce(t, s.Brokers, topic, parts, perPartition)

	var mu sync.Mutex
	var commits []commitSeen
	s.Kafka().ControlKey(kmsg.OffsetCommit.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		r := req.(*kmsg.OffsetCommitRequest)
		mu.Lock()
		defer mu.Unlock()
		for _, tt := range r.Topics {
			for _, p := range tt.Partitions {
				commits = append(commits, commitSeen{r.MemberID, tt.Topic, p.Partition, p.Offset, time.Now()})
			}
		}
		return nil, nil, false // observe only
	})

	cfg := groupConfig(s.Brokers, topic, "rebalance-g", "batching: { count: 5 }")
	a := newTestInput(t, cfg)
	connect(t, a)
	held := map[int]readBatch{}
	for len(held) < parts {
		rb := read(t, a, 15*time.Second)
		held[rb.partition] = rb
	}
	memberA, _ := a.conn.client.GroupMetadata()

	b := newTestInput(t, cfg)
	connect(t, b)
	deadline := time.Now().Add(20 * time.Second)
	for len(ownedPartitions(a)) == parts && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	stillA := ownedPartitions(a)
	if len(stillA) == parts {
		t.Fatal("no partition moved to the second member within 20s")
	}
	revokedAt := time.Now()
	for _, rb := range held { // late acks, including of lost partitions
		_ = rb.ack(context.Background(), nil)
	}
	// Wait until A has committed its acked batches (a commit period or a
	// few), then a little more: a commit of a lost partition would come
	// with them.
	committedByA := map[int32]int64{}
	byA := func() bool {
		mu.Lock()
		defer mu.Unlock()
		clear(committedByA)
		for _, c := range commits {
			if c.member == memberA {
				committedByA[c.partition] = c.offset
			}
		}
		for p := range stillA {
			if committedByA[p] != 5 {
				return false
			}
		}
		return true
	}
	for deadline := time.Now().Add(20 * time.Second); !byA() && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // a few more commit periods
	byA()
	mu.Lock()
	for _, c := range commits {
		if c.member == memberA && !stillA[c.partition] && !c.at.Before(revokedAt) {
			t.Errorf("member A committed offset %d of partition %d after losing it", c.offset, c.partition)
		}
	}
	mu.Unlock()
	for p := range stillA {
		if committedByA[p] != 5 {
			t.Errorf("member A committed %d for its partition %d, want 5 (its acked batch)", committedByA[p], p)
		}
	}

	// Drain with both members; every record must arrive, and the moved
	// partitions must start over at offset 0 (A never committed them).
	type key struct{ p, o int }
	seen := map[key]bool{}
	for p, rb := range held {
		if stillA[int32(p)] { // acked and committed by their owner
			for _, o := range rb.offsets {
				seen[key{p, o}] = true
			}
		}
	}
	firstOnB := map[int]int{}
	var smu sync.Mutex
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for name, in := range map[string]*franzInput{"a": a, "b": b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				batch, ack, err := in.ReadBatch(ctx)
				if err != nil {
					return
				}
				smu.Lock()
				for _, m := range batch {
					p, _ := m.MetaGetMut("kafka_partition")
					o, _ := m.MetaGetMut("kafka_offset")
					if _, ok := firstOnB[p.(int)]; !ok && name == "b" {
						firstOnB[p.(int)] = o.(int)
					}
					seen[key{p.(int), o.(int)}] = true
				}
				done := len(seen) == parts*perPartition
				smu.Unlock()
				_ = ack(ctx, nil)
				if done {
					cancel()
				}
			}
		}()
	}
	wg.Wait()
	smu.Lock()
	defer smu.Unlock()
	for p := 0; p < parts; p++ {
		for o := 0; o < perPartition; o++ {
			if !seen[key{p, o}] {
				t.Errorf("record %d/%d was never delivered", p, o)
			}
		}
		if !stillA[int32(p)] && firstOnB[p] != 0 {
			t.Errorf("moved partition %d started at offset %d on the new member, want 0", p, firstOnB[p])
		}
	}
}

// TestInputKeepsMemoryFlatWhileOutputBlocks: with one batch per partition
// held unacked for 30 s, fetching pauses at the buffer limit instead of
// pulling the whole topic into memory.
func TestInputKeepsMemoryFlatWhileOutputBlocks(t *testing.T) {
	s := inStack(t)
	const topic, parts = "backpressure", 3
	inCreateTopic(t, s.Brokers, topic, parts)
	// 16 KiB producer batches, the Java client's default batch.size, as
	// Debezium's Kafka Connect producer writes them.
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.Brokers), kgo.ProducerLinger(5*time.Millisecond), kgo.ProducerBatchMaxBytes(16<<10))
	if err != nil {
		t.Fatal(err)
	}
	value := []byte(strings.Repeat("x", 300))
	const records = 120_000 // 36 MB, 12 MB per partition
	var wg sync.WaitGroup
	for i := 0; i < records; i++ {
		wg.Add(1)
		cl.Produce(context.Background(), &kgo.Record{Topic: topic, Key: []byte(fmt.Sprint(i)), Value: value}, func(_ *kgo.Record, err error) {
			if err != nil {
				t.Errorf("produce: %v", err)
			}
			wg.Done()
		})
	}
	wg.Wait()
	cl.Close()

	const bufferBytes = 1 << 20
	in := newTestInput(t, groupConfig(s.Brokers, topic, "bp", fmt.Sprintf(
		"partition_buffer_bytes: %d\nfetch_max_bytes: 2MiB\nfetch_max_partition_bytes: 512KiB\nbatching: { count: 100 }", bufferBytes)))
	connect(t, in)
	for got := map[int]bool{}; len(got) < parts; { // the output takes one batch per partition, then blocks
		got[read(t, in, 15*time.Second).partition] = true
	}

	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	buffered := func() (bytes int, records int) {
		in.connMu.Lock()
		c := in.conn
		in.connMu.Unlock()
		c.partsMu.Lock()
		defer c.partsMu.Unlock()
		for _, p := range c.parts {
			p.mu.Lock()
			bytes += p.bufBytes
			records += len(p.buf)
			p.mu.Unlock()
		}
		return
	}
	time.Sleep(5 * time.Second)
	early := heap()
	time.Sleep(25 * time.Second)
	late := heap()
	bytes, recs := buffered()
	t.Logf("heap after 5s %d MB, after 30s %d MB; buffered %d records, %d bytes", early>>20, late>>20, recs, bytes)
	// The limit per partition, plus at most one poll's overshoot each: the
	// poll that crosses the limit is buffered whole.
	if limit := parts * (bufferBytes + pollMaxRecords*(300+8)); bytes > limit {
		t.Errorf("input buffers %d bytes with the output blocked, want at most %d", bytes, limit)
	}
	if recs >= records/2 {
		t.Errorf("input buffered %d of %d records: fetching did not pause", recs, records)
	}
	if late > early+8<<20 {
		t.Errorf("heap grew from %d to %d bytes while the output was blocked", early, late)
	}
}

// TestKafkaFranzHelperProcess is not a test: TestInputCrashRedelivers runs
// the test binary as an odsflow-like CLI through it.
func TestKafkaFranzHelperProcess(t *testing.T) {
	config := os.Getenv("ODSFLOW_KAFKA_HELPER_CONFIG")
	if config == "" {
		t.Skip("helper process for TestInputCrashRedelivers; runs only as its subprocess")
	}
	service.RunCLI(context.Background(), service.CLIOptSetArgs("odsflow", "run", config))
	os.Exit(0)
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}

// TestInputCrashRedelivers kills (SIGKILL) a pipeline after it has written
// records to its output but before it committed their offsets; the next run
// must deliver them again, from the committed offset, skipping nothing.
func TestInputCrashRedelivers(t *testing.T) {
	s := inStack(t)
	const topic, parts, perPartition = "crash", 3, 100
	inCreateTopic(t, s.Brokers, topic, parts)
	inProduce(t, s.Brokers, topic, parts, perPartition)
	dir := t.TempDir()

	start := func(run int, commitPeriod string) (*exec.Cmd, string) {
		out := filepath.Join(dir, fmt.Sprintf("out%d.txt", run))
		cfg := filepath.Join(dir, fmt.Sprintf("run%d.yaml", run))
		yaml := fmt.Sprintf(`
input:
  kafka_franz:
    seed_brokers: [ %q ]
    topics: [ %s ]
    consumer_group: crash-g
    commit_period: %s
    session_timeout: 1s
    heartbeat_interval: 100ms
    batching: { count: 10 }
pipeline:
  processors:
    - sleep: { duration: 20ms }
output:
  file: { path: %q, codec: lines }
logger: { level: warn }
http: { enabled: false }
`, s.Brokers, topic, commitPeriod, out)
		if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestKafkaFranzHelperProcess$")
		cmd.Env = append(os.Environ(), "ODSFLOW_KAFKA_HELPER_CONFIG="+cfg)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
		return cmd, out
	}
	waitLines := func(path string, n int) []string {
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			if lines := readLines(t, path); len(lines) >= n {
				return lines
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("%s: fewer than %d lines after 60s", path, n)
		return nil
	}

	// Run 1 writes and never commits (commit_period 1h), then dies hard.
	cmd1, out1 := start(1, "1h")
	waitLines(out1, 100)
	if err := cmd1.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, _ = cmd1.Process.Wait()
	written := readLines(t, out1)

	admin, err := kgo.NewClient(kgo.SeedBrokers(s.Brokers))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	offsets, err := kadm.NewClient(admin).FetchOffsets(context.Background(), "crash-g")
	if err != nil {
		t.Fatal(err)
	}
	offsets.Each(func(o kadm.OffsetResponse) {
		if o.At > 0 {
			t.Fatalf("run 1 committed %s/%d at %d despite commit_period 1h", o.Topic, o.Partition, o.At)
		}
	})

	// Run 2 must deliver everything run 1 wrote, and the rest.
	cmd2, out2 := start(2, "100ms")
	waitLines(out2, parts*perPartition)
	_ = cmd2.Process.Signal(syscall.SIGTERM)
	_, _ = cmd2.Process.Wait()
	again := map[string]bool{}
	for _, l := range readLines(t, out2) {
		again[l] = true
	}
	for _, l := range written {
		if !again[l] {
			t.Errorf("%s was written before the crash but never redelivered", l)
		}
	}
	var missing []string
	for p := 0; p < parts; p++ {
		for i := 0; i < perPartition; i++ {
			if v := fmt.Sprintf("p%d-%d", p, i); !again[v] {
				missing = append(missing, v)
			}
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("records skipped after the crash: %v", missing)
	}
	t.Logf("run 1 wrote %d records before SIGKILL; run 2 delivered %d", len(written), len(again))
}

// requireAllMember sets up topic (two partitions, three records each) and
// a member with require_all_partitions that has read and acked them all
// (alone, it holds both partitions); second starts another member of its
// group and waits for it to take a partition.
func requireAllMember(t *testing.T, topic string) (s *devstack.Stack, first *franzInput, second func() *franzInput) {
	t.Helper()
	s = inStack(t)
	const parts = 2
	inCreateTopic(t, s.Brokers, topic, parts)
	inProduce(t, s.Brokers, topic, parts, 3)
	cfg := groupConfig(s.Brokers, topic, topic+"-g", "require_all_partitions: true\nbatching: { count: 3 }")
	first = newTestInput(t, cfg)
	connect(t, first)
	for range parts {
		if err := read(t, first, 15*time.Second).ack(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
	}
	return s, first, func() *franzInput {
		b := newTestInput(t, cfg)
		connect(t, b)
		for deadline := time.Now().Add(20 * time.Second); (len(ownedPartitions(first)) == parts || len(ownedPartitions(b)) == 0) && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
		}
		if len(ownedPartitions(first)) == parts {
			t.Fatal("no partition moved to the second member within 20s")
		}
		return b
	}
}

// TestInputRequireAllPartitions: with require_all_partitions, a member
// delivers only while it holds every partition. A second member in the
// group (a second copy of a pipeline with local state) makes both deliver
// nothing, and commit nothing, until it leaves; then the first goes on
// from where it was.
func TestInputRequireAllPartitions(t *testing.T) {
	const topic, parts = "require-all", 2
	s, a, second := requireAllMember(t, topic)
	b := second()
	inProduce(t, s.Brokers, topic, parts, 3)
	for name, in := range map[string]*franzInput{"first": a, "second": b} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		batch, _, err := in.ReadBatch(ctx)
		cancel()
		if err == nil {
			t.Errorf("the %s member delivered %d records while holding only some partitions", name, len(batch))
		}
	}

	if err := b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := 0
	for got < parts*3 { // the first member holds both again: the new records
		rb := read(t, a, 20*time.Second)
		for _, o := range rb.offsets {
			if o < 3 {
				t.Errorf("partition %d offset %d delivered again: it was acked and committed", rb.partition, o)
			}
		}
		got += len(rb.offsets)
		_ = rb.ack(context.Background(), nil)
	}
}

// TestInputRequireAllStopsAWaitingRead: a read already waiting when the
// member loses a partition (a caught-up pipeline always has one) delivers
// nothing of the partitions it keeps either.
func TestInputRequireAllStopsAWaitingRead(t *testing.T) {
	const topic, parts = "require-all-waiting", 2
	s, a, second := requireAllMember(t, topic)
	type result struct {
		n   int
		err error
	}
	got := make(chan result, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	go func() { b, _, err := a.ReadBatch(ctx); got <- result{len(b), err} }()
	time.Sleep(300 * time.Millisecond) // the read waits, caught up

	b := second()
	time.Sleep(500 * time.Millisecond)
	inProduce(t, s.Brokers, topic, parts, 3)
	select {
	case r := <-got:
		t.Fatalf("the waiting read returned %d records (%v) while the member held %d of %d partitions", r.n, r.err, len(ownedPartitions(a)), parts)
	case <-time.After(3 * time.Second):
	}
	// The second member leaves: the waiting read delivers the new records.
	if err := b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-got:
		if r.err != nil || r.n == 0 {
			t.Fatalf("after the second member left: %d records, %v", r.n, r.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the waiting read delivered nothing 30 s after the second member left")
	}
}

// TestInputResumeOffset: a member that starts a partition from the group's
// committed offset says so on the first message of each batch
// (kafka_resume_offset); one of a group with no commit for it does not.
func TestInputResumeOffset(t *testing.T) {
	s := inStack(t)
	const topic = "resume-offset"
	inCreateTopic(t, s.Brokers, topic, 1)
	inProduce(t, s.Brokers, topic, 1, 10)
	resumeOffsets := func(in *franzInput, n int) (firsts []any, others int) {
		for seen := 0; seen < n; {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			batch, ack, err := in.ReadBatch(ctx)
			cancel()
			if err != nil {
				t.Fatalf("ReadBatch: %v", err)
			}
			for i, m := range batch {
				v, ok := m.MetaGetMut("kafka_resume_offset")
				switch {
				case i == 0 && ok:
					firsts = append(firsts, v)
				case i == 0:
					firsts = append(firsts, nil)
				case ok:
					others++
				}
			}
			seen += len(batch)
			if err := ack(context.Background(), nil); err != nil {
				t.Fatal(err)
			}
		}
		return firsts, others
	}

	in1 := newTestInput(t, groupConfig(s.Brokers, topic, "g", ""))
	connect(t, in1)
	if firsts, _ := resumeOffsets(in1, 10); firsts[0] != nil {
		t.Fatalf("a new group's first batch carries kafka_resume_offset %v", firsts[0])
	}
	if err := in1.Close(context.Background()); err != nil { // commits 10
		t.Fatal(err)
	}

	inProduce(t, s.Brokers, topic, 1, 3)
	in2 := newTestInput(t, groupConfig(s.Brokers, topic, "g", ""))
	connect(t, in2)
	firsts, others := resumeOffsets(in2, 3)
	for _, f := range firsts {
		if f != 10 {
			t.Errorf("after the group committed offset 10, a batch's first message has kafka_resume_offset %v, want 10", f)
		}
	}
	if others != 0 {
		t.Errorf("%d messages other than a batch's first carry kafka_resume_offset", others)
	}

	// A group reset to the earliest offset reads what a new one would.
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.Brokers))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var reset kadm.Offsets
	reset.AddOffset(topic, 0, 0, -1)
	if _, err := kadm.NewClient(cl).CommitOffsets(context.Background(), "reset", reset); err != nil {
		t.Fatal(err)
	}
	in3 := newTestInput(t, groupConfig(s.Brokers, topic, "reset", ""))
	connect(t, in3)
	if firsts, _ := resumeOffsets(in3, 13); firsts[0] != nil {
		t.Errorf("a group committed at the log start: kafka_resume_offset %v on its first batch", firsts[0])
	}
}

// TestCommittedOffsetsUnreadable: when the group's offsets cannot be read
// at assignment, the partitions are marked unknown (kafka_resume_offset
// -1), not taken for a group without commits.
func TestCommittedOffsetsUnreadable(t *testing.T) {
	in := newTestInput(t, groupConfig("127.0.0.1:1", "t", "g", ""))
	cl, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"), kgo.RetryTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if got, known := in.committedOffsets(context.Background(), cl, map[string][]int32{"t": {0}}); known || got != nil {
		t.Errorf("offsets read from an unreachable broker: %v, known %v", got, known)
	}
	batch := service.MessageBatch{service.NewMessage([]byte("row"))}
	markResumed(batch, -1)
	if v, ok := batch[0].MetaGetMut("kafka_resume_offset"); !ok || v != -1 {
		t.Errorf("kafka_resume_offset %v (%v), want -1", v, ok)
	}
}

// With require_all_partitions, the gate stays closed for the whole of a
// revoke: its commit (a network round trip) comes before the partitions
// are dropped, and a re-check meanwhile (the 1 s ticker's) still finds
// them all held. It must not reopen the gate while a second member joins.
func TestRequireAllGateStaysClosedThroughARevoke(t *testing.T) {
	s := inStack(t)
	const topic, parts = "ra-revoke", 2
	inCreateTopic(t, s.Brokers, topic, parts)
	inProduce(t, s.Brokers, topic, parts, 3)
	a := newTestInput(t, groupConfig(s.Brokers, topic, "g", "require_all_partitions: true\nbatching: { count: 3 }"))
	connect(t, a)
	if err := read(t, a, 15*time.Second).ack(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	c := a.conn
	a.closeGate(c) // a revoke begins; its partitions are still held
	a.checkWhole(c, c.client)
	if !c.isPartial() {
		t.Fatal("a holdings check during a revoke reopened the gate")
	}
	a.endDrop(c) // (nothing was dropped after all: the next check finds every partition)
	a.checkWhole(c, c.client)
	if c.isPartial() {
		t.Fatal("the gate stays closed after the revoke ended with every partition held")
	}
}
