package simulate

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/odsflow/odsflow/internal/devstack"
)

// consumed is one record as a plain consumer saw it, with its place in the
// consumer's overall order.
type consumed struct {
	seq     int
	topic   string
	part    int32
	key     []byte
	value   []byte
	decoded decoded
}

// consumer reads the topics from the start.
func consumer(t *testing.T, brokers string, topics []string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// consume polls until want records arrived or ctx ends (an error then).
func consume(ctx context.Context, t *testing.T, cl *kgo.Client, want int) []consumed {
	var out []consumed
	for len(out) < want {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Errorf("consumed %d of %d records: %v", len(out), want, err)
			return out
		}
		fetches.EachError(func(topic string, p int32, err error) { t.Errorf("fetching %s/%d: %v", topic, p, err) })
		fetches.EachRecord(func(r *kgo.Record) {
			out = append(out, consumed{seq: len(out), topic: r.Topic, part: r.Partition, key: r.Key, value: r.Value})
		})
	}
	return out
}

func schemaID(b []byte) int { return int(binary.BigEndian.Uint32(b[1:5])) }

func TestRunAgainstTheDevStack(t *testing.T) {
	stack := devstack.ForTest(t, devstack.Config{NoPostgres: true})
	rc, err := sr.NewClient(sr.URLs(stack.RegistryURL))
	if err != nil {
		t.Fatal(err)
	}

	t.Run("decimal layout 3, consumed while produced", func(t *testing.T) {
		cfg := Config{TopicPrefix: "sim.live", Money: MoneyDecimal, Customers: 20, Events: 800, Rate: 500, Seed: 11, DebeziumLayout: LayoutDebezium3}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		topics := topicsOf(cfg)
		// The topics exist before the consumer starts, so that it reads
		// while Run produces; Run then finds them.
		adm := newAdmin(t, stack.Brokers)
		if _, err := adm.CreateTopics(ctx, 3, 1, nil, topics...); err != nil {
			t.Fatal(err)
		}
		plan := mustPlan(t, cfg)
		want := len(plan) + countOps(plan, OpDelete)

		var records []consumed
		cl := consumer(t, stack.Brokers, topics)
		consumeCtx, stopConsuming := context.WithCancel(ctx)
		defer stopConsuming()
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			records = consume(consumeCtx, t, cl, want)
		}()
		stats, err := Run(ctx, cfg, stack.Brokers, stack.RegistryURL)
		// Everything is in Kafka now: the consumer gets a little longer.
		deadline := time.AfterFunc(15*time.Second, stopConsuming)
		wg.Wait()
		deadline.Stop()
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		if t.Failed() {
			t.FailNow()
		}
		checkStats(t, cfg, plan, stats)
		checkRecords(ctx, t, rc, cfg, plan, records)

		// Some transaction reached the consumer before its account's insert.
		accountInsert := map[int64]int{}
		for _, r := range records {
			if r.topic == cfg.Topic(TableAccounts) && r.decoded.op == OpCreate {
				accountInsert[asInt64(r.decoded.after["id"])] = r.seq
			}
		}
		early := 0
		for _, r := range records {
			if r.topic == cfg.Topic(TableTransactions) && r.decoded.after != nil {
				if seq, ok := accountInsert[asInt64(r.decoded.after["account_id"])]; ok && r.seq < seq {
					early++
				}
			}
		}
		if early == 0 {
			t.Error("no transaction was consumed before its account's insert")
		}
		t.Logf("%d transactions consumed before their account's insert", early)

		// The registered money columns are numeric(20,2).
		for table, col := range map[Table]string{TableAccounts: "account_balance", TableTransactions: "transaction_amount"} {
			s, err := rc.SchemaByVersion(ctx, cfg.Topic(table)+"-value", -1)
			if err != nil {
				t.Fatal(err)
			}
			if typ := field(t, valueOf(t, jsonValue(t, s.Schema.Schema)), col)["type"].(map[string]any); typ["type"] != "bytes" || typ["logicalType"] != "decimal" {
				t.Errorf("registered %s.%s is %v", table, col, typ)
			}
		}
	})

	t.Run("int layout 2, the seed's prefix", func(t *testing.T) {
		cfg := Config{Customers: 15, Events: 600, Seed: 5}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		plan := mustPlan(t, cfg)
		stats, err := Run(ctx, cfg, stack.Brokers, stack.RegistryURL)
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		checkStats(t, cfg, plan, stats)
		topics := topicsOf(cfg)
		consumeCtx, stopConsuming := context.WithTimeout(ctx, 15*time.Second)
		defer stopConsuming()
		records := consume(consumeCtx, t, consumer(t, stack.Brokers, topics), len(plan)+countOps(plan, OpDelete))
		if t.Failed() {
			t.FailNow()
		}
		checkRecords(ctx, t, rc, cfg, plan, records)

		// Run created the topics, with 3 partitions.
		details, err := newAdmin(t, stack.Brokers).ListTopics(ctx, topics...)
		if err != nil {
			t.Fatal(err)
		}
		for _, topic := range topics {
			if n := len(details[topic].Partitions); n != Partitions {
				t.Errorf("%s has %d partitions, want %d", topic, n, Partitions)
			}
		}
		// The registered value schemas are the seed's.
		for _, table := range Tables() {
			s, err := rc.SchemaByVersion(ctx, cfg.Topic(table)+"-value", -1)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(jsonValue(t, s.Schema.Schema), seedFixture(t, table)) {
				t.Errorf("registered %s value schema differs from the seed's", table)
			}
		}
		// A second run registers nothing new and appends the same traffic.
		if _, err := Run(ctx, cfg, stack.Brokers, stack.RegistryURL); err != nil {
			t.Fatalf("second Run: %v", err)
		}
		versions, err := rc.SubjectVersions(ctx, cfg.Topic(TableAccounts)+"-value")
		if err != nil || len(versions) != 1 {
			t.Errorf("after two runs: versions %v, %v; want one", versions, err)
		}
	})

	subjects, err := rc.Subjects(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []Config{{TopicPrefix: "sim.live"}, {}} {
		for _, table := range Tables() {
			for _, suffix := range []string{"-key", "-value"} {
				if !slices.Contains(subjects, cfg.Topic(table)+suffix) {
					t.Errorf("subject %s not registered; subjects: %v", cfg.Topic(table)+suffix, subjects)
				}
			}
		}
	}
}

func newAdmin(t *testing.T, brokers string) *kadm.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

func topicsOf(cfg Config) []string {
	var out []string
	for _, table := range Tables() {
		out = append(out, cfg.Topic(table))
	}
	return out
}

func countOps(events []Event, op string) int {
	n := 0
	for _, ev := range events {
		if ev.Op == op {
			n++
		}
	}
	return n
}

func checkStats(t *testing.T, cfg Config, plan []Event, stats Stats) {
	t.Helper()
	if stats.Total() != len(plan) || stats.Tombstones != countOps(plan, OpDelete) {
		t.Errorf("stats: %d events, %d tombstones; want %d, %d", stats.Total(), stats.Tombstones, len(plan), countOps(plan, OpDelete))
	}
	for _, table := range Tables() {
		n := 0
		for _, ev := range plan {
			if ev.Table == table {
				n++
			}
		}
		if stats.Events[cfg.Topic(table)] != n {
			t.Errorf("stats: %d events on %s, want %d", stats.Events[cfg.Topic(table)], table, n)
		}
	}
	if cfg.Rate > 0 {
		if min := time.Duration(float64(len(plan)-1) / cfg.Rate * float64(time.Second)); stats.Elapsed < min {
			t.Errorf("Run took %v at rate %v for %d events, want ≥ %v", stats.Elapsed, cfg.Rate, len(plan), min)
		}
	}
}

// checkRecords checks what a plain consumer sees: the wire format, the
// schemas by id, Debezium's snapshot and LSN order, tombstones, and that the
// topics' final content is what the model says.
func checkRecords(ctx context.Context, t *testing.T, rc *sr.Client, cfg Config, plan []Event, records []consumed) {
	t.Helper()
	registered := map[string]int{} // subject → id
	for _, table := range Tables() {
		for _, suffix := range []string{"-key", "-value"} {
			s, err := rc.SchemaByVersion(ctx, cfg.Topic(table)+suffix, -1)
			if err != nil {
				t.Fatal(err)
			}
			registered[cfg.Topic(table)+suffix] = s.ID
		}
	}
	decoders := map[int]decoder{}
	decoderOf := func(id int) decoder {
		if _, ok := decoders[id]; !ok {
			s, err := rc.SchemaByID(ctx, id)
			if err != nil {
				t.Fatalf("schema %d: %v", id, err)
			}
			if decoders[id], err = newDecoder(s.Schema); err != nil {
				t.Fatalf("schema %d: %v", id, err)
			}
		}
		return decoders[id]
	}

	ops := map[string]int{}
	snapshotLSNs := map[int64]bool{}
	months := map[int64]bool{}
	type partition struct {
		topic string
		part  int32
	}
	byPartition := map[partition][]*consumed{}
	for i := range records {
		r := &records[i]
		if len(r.key) < 5 || r.key[0] != 0 || schemaID(r.key) != registered[r.topic+"-key"] {
			t.Fatalf("record %d on %s: key % x does not start with 0x00 and the key schema id %d", i, r.topic, r.key, registered[r.topic+"-key"])
		}
		if r.value != nil {
			if len(r.value) < 5 || r.value[0] != 0 || schemaID(r.value) != registered[r.topic+"-value"] {
				t.Fatalf("record %d on %s: value does not start with 0x00 and the value schema id", i, r.topic)
			}
			d, err := decoderOf(schemaID(r.value)).envelope(r.value)
			if err != nil {
				t.Fatalf("record %d on %s: %v", i, r.topic, err)
			}
			r.decoded = d
			ops[d.op]++
			if d.op == OpRead {
				snapshotLSNs[d.lsn()] = true
			}
			if r.topic == cfg.Topic(TableTransactions) && d.after != nil {
				months[monthOf(d.after["created_at"].(int64))] = true
			}
		}
		if want := javaPartition(r.key, Partitions); r.part != want {
			t.Fatalf("record %d on %s: partition %d, the Java producer's would be %d", i, r.topic, r.part, want)
		}
		p := partition{r.topic, r.part}
		byPartition[p] = append(byPartition[p], r)
	}
	for _, op := range []string{OpRead, OpCreate, OpUpdate, OpDelete} {
		if ops[op] == 0 {
			t.Errorf("no %q event consumed; ops: %v", op, ops)
		}
	}
	if len(snapshotLSNs) != 1 {
		t.Errorf("snapshot rows have %d LSNs, want 1", len(snapshotLSNs))
	}
	if len(months) < 13 {
		t.Errorf("transactions' created_at in %d distinct months, want ≥ 13", len(months))
	}
	var snapshotLSN int64
	for lsn := range snapshotLSNs {
		snapshotLSN = lsn
	}

	// Per partition: LSNs strictly increase after the snapshot, and each
	// delete is followed by its tombstone.
	for p, recs := range byPartition {
		last := snapshotLSN
		for i, r := range recs {
			if r.value == nil {
				if i == 0 || recs[i-1].decoded.op != OpDelete || !bytes.Equal(recs[i-1].key, r.key) {
					t.Fatalf("%v: tombstone at %d does not follow a delete of the same key", p, i)
				}
				continue
			}
			if r.decoded.op == OpDelete && (i+1 == len(recs) || recs[i+1].value != nil || !bytes.Equal(recs[i+1].key, r.key)) {
				t.Fatalf("%v: delete at %d is not followed by its tombstone", p, i)
			}
			if r.decoded.op == OpRead {
				continue
			}
			if lsn := r.decoded.lsn(); lsn <= last {
				t.Fatalf("%v: lsn %d at %d after %d", p, lsn, i, last)
			} else {
				last = lsn
			}
		}
	}

	// The topics' final content (last record per key, a tombstone removing
	// it) is what the model's ODS state is made of.
	final := map[string]map[string]*consumed{}
	for _, recs := range byPartition {
		for _, r := range recs {
			if final[r.topic] == nil {
				final[r.topic] = map[string]*consumed{}
			}
			if r.value == nil {
				delete(final[r.topic], string(r.key))
			} else {
				final[r.topic][string(r.key)] = r
			}
		}
	}
	byID := func(table Table) map[int64]map[string]any {
		out := map[int64]map[string]any{}
		for _, r := range final[cfg.Topic(table)] {
			out[asInt64(r.decoded.after["id"])] = r.decoded.after
		}
		return out
	}
	customers, accounts, txns := byID(TableCustomers), byID(TableAccounts), byID(TableTransactions)
	state := Expect(plan, nil)
	balances := map[string]int64{}
	for _, a := range accounts {
		if _, ok := customers[asInt64(a["customer_id"])]; ok {
			c, err := hundredths(a["account_balance"])
			if err != nil {
				t.Fatal(err)
			}
			balances[strconv.FormatInt(asInt64(a["account_number"]), 10)] = c
		}
	}
	if len(balances) != len(state.CustomerAccount) {
		t.Errorf("topics hold %d joinable accounts, the model %d customer_account rows", len(balances), len(state.CustomerAccount))
	}
	for _, row := range state.CustomerAccount {
		if got, ok := balances[row.AccountNumber]; !ok || formatCents(got) != row.AccountBalance {
			t.Errorf("account %s: topics say %s, model %s", row.AccountNumber, formatCents(got), row.AccountBalance)
		}
	}
	joinable := 0
	for _, tr := range txns {
		if _, ok := accounts[asInt64(tr["account_id"])]; ok {
			joinable++
		}
	}
	if joinable != len(state.TTransaction) {
		t.Errorf("topics hold %d transactions with an account, the model %d t_transaction rows", joinable, len(state.TTransaction))
	}
}

func TestRunStopsWhenCancelled(t *testing.T) {
	stack := devstack.ForTest(t, devstack.Config{NoPostgres: true})
	cfg := Config{TopicPrefix: "sim.cancel", Customers: 5, Events: 100_000, Rate: 200, Seed: 1}
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	start := time.Now()
	stats, err := Run(ctx, cfg, stack.Brokers, stack.RegistryURL)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run: %v with ctx %v; want the context's error", err, ctx.Err())
	}
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("Run took %v to stop", took)
	}
	if stats.Total() == 0 || stats.Total() >= 100_000 {
		t.Errorf("stats after cancel: %d events; want some, not all", stats.Total())
	}
}

func TestRunReportsBadEndpoints(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := Run(ctx, Config{Customers: 1}, "127.0.0.1:9092", "http://127.0.0.1:1")
	if err == nil || !strings.Contains(err.Error(), "registering fulfillment.transactions_schema.T_Accounts-key at http://127.0.0.1:1") {
		t.Errorf("Run with an unreachable registry: %v", err)
	}
	stack := devstack.ForTest(t, devstack.Config{NoPostgres: true})
	_, err = Run(ctx, Config{Customers: 1}, "127.0.0.1:1", stack.RegistryURL)
	if err == nil || !strings.Contains(err.Error(), "creating topics") || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("Run with an unreachable broker: %v", err)
	}
	if _, err := Run(ctx, Config{Customers: 1}, " , ", "http://127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "no brokers") {
		t.Errorf("Run without brokers: %v", err)
	}
	if _, err := Run(ctx, Config{Customers: 1, Money: "cents"}, "127.0.0.1:9092", "http://127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "money") {
		t.Errorf("Run with a bad config: %v", err)
	}
}

// A registry URL's password stays out of the errors (simulate prints them).
func TestRegisterErrorsHideTheRegistryPassword(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := Register(ctx, Config{Customers: 1, Events: 1}, "http://ods:s3cret@127.0.0.1:1")
	if err == nil {
		t.Fatal("registered with an unreachable registry")
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Errorf("the error shows the password: %v", err)
	}
}
