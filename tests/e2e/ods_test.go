// Package e2e runs config/ods.yaml — the odsflow binary, as users run it —
// against the real servers of the dev stack: kfake, the schema registry and
// PostgreSQL, with `simulate` traffic and its expected ODS state.
package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/big"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/odsflow/odsflow/internal/devstack"
	"github.com/odsflow/odsflow/internal/odsread"
	"github.com/odsflow/odsflow/internal/simulate"
	"github.com/odsflow/odsflow/internal/syncbuf"
)

var (
	odsflowBin string // the odsflow binary, built once
	repoRoot   string
)

func TestMain(m *testing.M) {
	_, file, _, _ := runtime.Caller(0)
	repoRoot = filepath.Join(filepath.Dir(file), "..", "..")
	dir, err := os.MkdirTemp("", "odsflow-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	odsflowBin = filepath.Join(dir, "odsflow")
	build := exec.Command("go", "build", "-o", odsflowBin, "./cmd/odsflow")
	build.Dir = repoRoot
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building odsflow:", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// env is one test's world: the stack, a database, topics, a group, state.
type env struct {
	stack *devstack.Stack
	dsn   string
	cfg   simulate.Config
	vars  []string
}

func newEnv(t testing.TB, cfg simulate.Config) *env {
	return newEnvWith(t, cfg, devstack.Config{})
}

func newEnvWith(t testing.TB, cfg simulate.Config, stack devstack.Config) *env {
	t.Helper()
	s := devstack.ForTest(t, stack)
	e := &env{stack: s, dsn: s.NewDatabase(t), cfg: cfg}
	e.vars = append(os.Environ(),
		"KAFKA_BROKERS="+s.Brokers,
		"SCHEMA_REGISTRY_URL="+s.RegistryURL,
		"ODS_DSN="+e.dsn,
		"CDC_TOPIC_PREFIX="+cfg.TopicPrefix,
		"ODS_CONSUMER_GROUP=e2e",
		"ODS_STATE_DIR="+filepath.Join(t.TempDir(), "state"),
		"ODS_DLQ_TOPIC=e2e.dlq",
	)
	return e
}

// pipeline is a running `odsflow run config/ods.yaml`.
type pipeline struct {
	cmd  *exec.Cmd
	logs *syncbuf.Buffer
	done chan struct{}
}

func (e *env) start(t testing.TB, extra ...string) *pipeline {
	t.Helper()
	p := &pipeline{logs: &syncbuf.Buffer{}, done: make(chan struct{})}
	if len(extra) == 0 {
		extra = []string{"--set", "http.enabled=false"} // pipelines of parallel tests would share port 4195
	}
	p.cmd = exec.Command(odsflowBin, append(append([]string{"run", "--log.level", "info"}, extra...), benchConfig(t))...)
	p.cmd.Dir = repoRoot
	p.cmd.Env = e.vars
	// Go runtime settings for the pipeline alone (not the broker and
	// registry in this process): how BENCHMARKS.md measures GC tuning.
	for _, v := range []string{"GOGC", "GOMEMLIMIT"} {
		if val := os.Getenv("ODSFLOW_PIPELINE_" + v); val != "" {
			p.cmd.Env = append(p.cmd.Env[:len(p.cmd.Env):len(p.cmd.Env)], v+"="+val)
		}
	}
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *pipeline) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// stop asks for a clean shutdown.
func (p *pipeline) stop(t testing.TB) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.kill()
		t.Errorf("the pipeline did not stop within 30 s of SIGTERM; logs:\n%s", p.logs)
	}
}

// waitExact waits until the ODS equals want, or fails with the differences.
func (e *env) waitExact(t testing.TB, p *pipeline, want simulate.ODSState, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var got simulate.ODSState
	var err error
	for time.Since(start) < within {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		got, err = odsread.Read(ctx, e.dsn)
		cancel()
		if err == nil && odsread.Equal(got, want) {
			return time.Since(start)
		}
		select {
		case <-p.done:
			t.Fatalf("the pipeline exited; logs:\n%s", tail(p.logs.String(), 4000))
		case <-time.After(300 * time.Millisecond):
		}
	}
	if err != nil {
		t.Fatalf("reading the ODS: %v", err)
	}
	t.Fatalf("the ODS is not the expected state after %v (%d/%d accounts, %d/%d transactions; %s):\n%s\nlogs:\n%s", within,
		len(got.CustomerAccount), len(want.CustomerAccount), len(got.TTransaction), len(want.TTransaction), e.groupState(),
		odsread.Diff(got, want), tail(p.logs.String(), 6000))
	return 0
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// produce runs simulate's traffic and returns the expected ODS state.
func (e *env) produce(t testing.TB) simulate.ODSState {
	t.Helper()
	events, err := simulate.Plan(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := simulate.Run(ctx, e.cfg, e.stack.Brokers, e.stack.RegistryURL); err != nil {
		t.Fatalf("simulate: %v", err)
	}
	return simulate.Expect(events, simulate.DefaultSpendingTypes())
}

// TestExactness: simulate traffic through the pipeline gives exactly the
// ODS its independent model expects, row by row, for both money encodings.
func TestExactness(t *testing.T) {
	for _, cfg := range []simulate.Config{
		{TopicPrefix: "dec.transactions_schema", Money: simulate.MoneyDecimal, Customers: 400, Events: 50_000, Seed: 5},
		{TopicPrefix: "int.transactions_schema", Money: simulate.MoneyInt, Customers: 100, Events: 5_000, Seed: 6, DebeziumLayout: simulate.LayoutDebezium3},
	} {
		t.Run(cfg.Money, func(t *testing.T) {
			e := newEnv(t, cfg)
			want := e.produce(t)
			p := e.start(t)
			took := e.waitExact(t, p, want, 3*time.Minute)
			t.Logf("%d events: the ODS was exact after %v (%d accounts, %d transactions, %d insights)",
				cfg.Events, took.Round(time.Millisecond), len(want.CustomerAccount), len(want.TTransaction), len(want.TFinancialInsights))
			p.stop(t)
		})
	}
}

// TestPoisonGoesToTheDeadLetterTopic: bad records mixed into the topics all
// reach the DLQ with their reason and origin; every other row is exact.
func TestPoisonGoesToTheDeadLetterTopic(t *testing.T) {
	cfg := simulate.Config{TopicPrefix: "poison.transactions_schema", Money: simulate.MoneyDecimal, Customers: 60, Events: 3000, Seed: 9}
	e := newEnv(t, cfg)
	want := e.produce(t)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ids, err := simulate.Register(ctx, cfg, e.stack.RegistryURL)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := simulate.NewEncoder(cfg, ids)
	if err != nil {
		t.Fatal(err)
	}
	events, err := simulate.Plan(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var txn simulate.Event
	for _, ev := range events {
		if ev.Table == simulate.TableTransactions && ev.Op == simulate.OpCreate {
			txn = ev
		}
	}
	valid, err := enc.Value(txn)
	if err != nil {
		t.Fatal(err)
	}
	liveAccount := want.CustomerAccount[0].AccountID
	r := rand.New(rand.NewPCG(1, 2))
	var poison []*kgo.Record
	topics := []string{cfg.Topic(simulate.TableCustomers), cfg.Topic(simulate.TableAccounts), cfg.Topic(simulate.TableTransactions)}
	for i := 0; i < 6; i++ {
		topic := topics[i%3]
		random := make([]byte, 20+r.IntN(200))
		for j := range random {
			random[j] = byte(r.IntN(256))
		}
		random[0] = 0x7f // not the magic byte: a random record
		huge := txn
		row := txn.After.(simulate.Transaction)
		row.ID = 9_000_000 + int32(i)
		row.AccountID = liveAccount
		row.RefNumber = strings.Repeat("R", 900_000)
		huge.ID, huge.After = row.ID, row
		hugeValue, err := enc.Value(huge)
		if err != nil {
			t.Fatal(err)
		}
		poison = append(poison,
			&kgo.Record{Topic: topic, Key: []byte(fmt.Sprintf("magic-%d", i)), Value: append([]byte{0x01}, valid[1:]...)},
			&kgo.Record{Topic: topic, Key: []byte(fmt.Sprintf("schema-%d", i)), Value: append([]byte{0, 0, 0x0f, 0x42, 0x3f}, valid[5:]...)},
			&kgo.Record{Topic: cfg.Topic(simulate.TableTransactions), Key: []byte(fmt.Sprintf("truncated-%d", i)), Value: valid[:len(valid)/2]},
			&kgo.Record{Topic: topic, Key: []byte(fmt.Sprintf("random-%d", i)), Value: random},
			&kgo.Record{Topic: cfg.Topic(simulate.TableTransactions), Key: nil, Value: hugeValue},
		)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.stack.Brokers), kgo.ProducerBatchMaxBytes(4<<20), kgo.MaxBufferedBytes(64<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, poison...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	p := e.start(t)
	e.waitExact(t, p, want, 2*time.Minute)

	dlq := readDLQ(t, e.stack.Brokers, "e2e.dlq", len(poison))
	components := map[string]int{}
	for _, rec := range dlq {
		h := map[string]string{}
		for _, x := range rec.Headers {
			h[x.Key] = string(x.Value)
		}
		if h["error"] == "" || h["source_topic"] == "" || h["source_offset"] == "" || h["source_partition"] == "" {
			t.Errorf("dead letter without its reason or origin: headers %v", h)
		}
		components[h["error_component"]]++
	}
	if len(dlq) != len(poison) {
		t.Errorf("%d dead letters, want %d", len(dlq), len(poison))
	}
	t.Logf("dead letters by component: %v", components)
	if components["pg_upsert"] != 6 {
		t.Errorf("the 900 KB transactions: %d dead letters from pg_upsert, want 6", components["pg_upsert"])
	}
	if want := len(poison) - 6; components["schema_registry_decode"] != want {
		t.Errorf("wrong magic byte, unknown schema id, truncated Avro, random bytes: %d dead letters from schema_registry_decode, want %d", components["schema_registry_decode"], want)
	}
	p.stop(t)

	// After a fix, the dead letters go back to their source topics, once.
	before := endOffsets(t, e.stack.Brokers, topics...)
	replay := func() string {
		cmd := exec.Command(odsflowBin, "dlq", "replay", "--from", "e2e.dlq", "--brokers", e.stack.Brokers)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("dlq replay: %v\n%s", err, out)
		}
		return string(out)
	}
	if out := replay(); !strings.Contains(out, fmt.Sprintf("re-published %d dead letters", len(poison))) {
		t.Errorf("first replay: %s", out)
	}
	after := endOffsets(t, e.stack.Brokers, topics...)
	if after-before != int64(len(poison)) {
		t.Errorf("the source topics grew by %d records, want %d", after-before, len(poison))
	}
	if out := replay(); !strings.Contains(out, "nothing to replay") {
		t.Errorf("second replay: %s", out)
	}
}

// endOffsets is the sum of the end offsets of the topics' partitions.
func endOffsets(t testing.TB, brokers string, topics ...string) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(context.Background(), topics...)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n
}

// readDLQ reads n records of the dead-letter topic (or fails after 30 s).
func readDLQ(t testing.TB, brokers, topic string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxBytes(64<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n && ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	// Anything beyond n would be a duplicate or a wrong dead letter.
	short, cancel2 := context.WithTimeout(context.Background(), time.Second)
	defer cancel2()
	cl.PollFetches(short).EachRecord(func(r *kgo.Record) { out = append(out, r) })
	return out
}

// TestCrashes: the pipeline killed with SIGKILL at 5 random moments while
// it works (each time after the restarted process has made progress) and
// restarted each time still ends exactly right. How long each restart took
// to be back at work is logged (design §8: seconds; kfake has no static
// membership, so a restart waits for the killed member's session).
func TestCrashes(t *testing.T) {
	// The changes keep arriving while the pipeline dies and comes back
	// (~30 s of them), as they would in production.
	cfg := simulate.Config{TopicPrefix: "crash.transactions_schema", Money: simulate.MoneyDecimal, Customers: 300, Events: 60_000, Seed: 13, Rate: 2000}
	e := newEnv(t, cfg)
	events, err := simulate.Plan(cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := simulate.Expect(events, simulate.DefaultSpendingTypes())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	produced := make(chan error, 1)
	go func() { _, err := simulate.Run(ctx, cfg, e.stack.Brokers, e.stack.RegistryURL); produced <- err }()

	r := rand.New(rand.NewPCG(13, 5))
	for kill := 1; kill <= 5; kill++ {
		before := odsFingerprint(e.dsn)
		p := e.start(t)
		started := time.Now()
		// Back at work: a change written since the start, or, once the
		// stream has ended and everything is committed, the member joined
		// with nothing left to do.
		for odsFingerprint(e.dsn) == before && !(groupIdle(ctx, e.stack.Brokers, "e2e") && stableMember(ctx, e.stack.Brokers, "e2e")) {
			select {
			case <-p.done:
				t.Fatalf("the pipeline exited by itself; logs:\n%s", tail(p.logs.String(), 4000))
			case <-time.After(100 * time.Millisecond):
			}
			if time.Since(started) > time.Minute {
				t.Fatalf("restart %d: no progress in a minute; logs:\n%s", kill, tail(p.logs.String(), 4000))
			}
		}
		backAtWork := time.Since(started)
		wait := time.Duration(r.IntN(1500)) * time.Millisecond
		time.Sleep(wait)
		p.kill()
		t.Logf("life %d: back at work %v after its start, killed %v later at %s",
			kill, backAtWork.Round(time.Millisecond), wait, odsFingerprint(e.dsn))
	}
	if err := <-produced; err != nil {
		t.Fatal(err)
	}
	p := e.start(t)
	took := e.waitExact(t, p, want, 3*time.Minute)
	t.Logf("after 5 SIGKILLs, exact %v after the last restart", took.Round(time.Millisecond))
	p.stop(t)
}

// odsFingerprint changes whenever a change is written to the ODS: the row
// counts and the sums of the version columns ("" before the schema exists).
func odsFingerprint(dsn string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return ""
	}
	defer conn.Close(ctx)
	var fp string
	err = conn.QueryRow(ctx, `SELECT format('%s accounts (versions %s), %s transactions (versions %s)',
		(SELECT count(*) FROM ods_schema.customer_account),
		(SELECT coalesce(sum(account_version + customer_version), 0) FROM ods_schema.customer_account),
		(SELECT count(*) FROM ods_schema.t_transaction),
		(SELECT coalesce(sum(source_version), 0) FROM ods_schema.t_transaction))`).Scan(&fp)
	if err != nil {
		return ""
	}
	return fp
}

// groupIdle: the group has committed every record of its topics.
func groupIdle(ctx context.Context, brokers, group string) bool {
	lag, err := groupLag(ctx, brokers, group)
	return err == nil && lag == 0
}

// TestPostgresRestart: PostgreSQL restarted mid-run, the ODS ends exact.
func TestPostgresRestart(t *testing.T) {
	cfg := simulate.Config{TopicPrefix: "pgr.transactions_schema", Money: simulate.MoneyDecimal, Customers: 200, Events: 30_000, Seed: 17, Rate: 15_000}
	e := newEnv(t, cfg)
	pg := e.stack.Postgres()
	if pg == nil {
		t.Skip("the stack uses an existing PostgreSQL (" + devstack.TestPostgresDSNEnv + "): it cannot be restarted from here")
	}
	events, err := simulate.Plan(cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := simulate.Expect(events, simulate.DefaultSpendingTypes())
	p := e.start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	produced := make(chan error, 1)
	go func() { _, err := simulate.Run(ctx, cfg, e.stack.Brokers, e.stack.RegistryURL); produced <- err }()
	time.Sleep(time.Second)
	if err := pg.Restart(ctx, 3*time.Second); err != nil {
		t.Fatalf("restarting PostgreSQL: %v", err)
	}
	if err := <-produced; err != nil {
		t.Fatal(err)
	}
	e.waitExact(t, p, want, 2*time.Minute)
	p.stop(t)
}

// TestRegistryOutage: the pipeline starts while the schema registry is down
// for 10 s; nothing goes to the dead-letter topic, the ODS ends exact.
func TestRegistryOutage(t *testing.T) {
	cfg := simulate.Config{TopicPrefix: "sr.transactions_schema", Money: simulate.MoneyInt, Customers: 50, Events: 2000, Seed: 19}
	e := newEnv(t, cfg)
	want := e.produce(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.stack.StopRegistry(ctx); err != nil {
		t.Fatal(err)
	}
	p := e.start(t)
	time.Sleep(10 * time.Second)
	if got, err := odsread.Read(ctx, e.dsn); err == nil && len(got.CustomerAccount) > 0 {
		t.Fatalf("rows written while the registry was down: %d", len(got.CustomerAccount))
	}
	if err := e.stack.StartRegistry(); err != nil {
		t.Fatal(err)
	}
	e.waitExact(t, p, want, time.Minute)
	if dlq := readDLQ(t, e.stack.Brokers, "e2e.dlq", 0); len(dlq) != 0 {
		t.Errorf("%d dead letters from a registry outage", len(dlq))
	}
	p.stop(t)
}

// TestSchemaChangeMidStream: a new nullable column in a source table (a new
// schema id for the subject, mid-stream) neither stops nor breaks anything.
func TestSchemaChangeMidStream(t *testing.T) {
	cfg := simulate.Config{TopicPrefix: "sc.transactions_schema", Money: simulate.MoneyInt, Customers: 30, Events: 800, Seed: 23}
	e := newEnv(t, cfg)
	want := e.produce(t)
	p := e.start(t)
	e.waitExact(t, p, want, time.Minute)

	// Version 2 of the accounts' value schema: "nickname", nullable.
	v1, err := simulate.ValueSchema(cfg, simulate.TableAccounts)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(v1), &doc); err != nil {
		t.Fatal(err)
	}
	var valueRecord map[string]any
	for _, f := range doc["fields"].([]any) {
		field := f.(map[string]any)
		if field["name"] == "before" || field["name"] == "after" {
			for _, branch := range field["type"].([]any) {
				if rec, ok := branch.(map[string]any); ok {
					valueRecord = rec
				}
			}
		}
	}
	if valueRecord == nil {
		t.Fatal("no Value record in the accounts' schema")
	}
	valueRecord["fields"] = append(valueRecord["fields"].([]any), map[string]any{"name": "nickname", "type": []any{"null", "string"}, "default": nil})
	v2text, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rc, err := sr.NewClient(sr.URLs(e.stack.RegistryURL))
	if err != nil {
		t.Fatal(err)
	}
	v2, err := rc.CreateSchema(ctx, cfg.Topic(simulate.TableAccounts)+"-value", sr.Schema{Schema: string(v2text), Type: sr.TypeAvro})
	if err != nil {
		t.Fatal(err)
	}

	// An update of one account in version 2: read its latest record back,
	// decode it with version 1, bump the balance and the LSN, add the
	// column, encode it with version 2.
	e.raiseBalance(t, &want, envelopeEdit{readSchema: v1, writeSchema: string(v2text), writeID: v2.ID,
		edit: func(env map[string]any) {
			unwrapUnion(env["after"])["nickname"] = map[string]any{"string": "rainy day"}
		}})
	e.waitExact(t, p, want, time.Minute)
	if n := deadLetters(t, e.stack.Brokers, "e2e.dlq"); n != 0 {
		t.Errorf("%d dead letters after a schema change", n)
	}
	p.stop(t)
}

// raiseBalance produces an update of the first account of want (int
// money): its latest record, its balance 7 units up and its LSN moved on,
// then x.edit (if any) applied; want becomes the state after it.
func (e *env) raiseBalance(t *testing.T, want *simulate.ODSState, x envelopeEdit) {
	t.Helper()
	target := want.CustomerAccount[0]
	var lsn int64
	more := x.edit
	x.edit = func(env map[string]any) {
		after := unwrapUnion(env["after"])
		after["account_balance"] = after["account_balance"].(int) + 7
		lsn = bumpLSN(env, 10_000_000)
		env["op"], env["before"] = "u", nil
		if more != nil {
			more(env)
		}
	}
	e.produceEdited(t, e.cfg.Topic(simulate.TableAccounts), target.AccountID, x)
	for i := range want.CustomerAccount {
		if want.CustomerAccount[i].AccountID == target.AccountID {
			want.CustomerAccount[i].AccountBalance = addUnits(t, want.CustomerAccount[i].AccountBalance, 7)
			want.CustomerAccount[i].AccountVersion = lsn
		}
	}
	for i := range want.TFinancialInsights {
		if want.TFinancialInsights[i].CustomerID == target.CustomerID {
			want.TFinancialInsights[i].TotalBalance = addUnits(t, want.TFinancialInsights[i].TotalBalance, 7)
		}
	}
}

// envelopeEdit says how produceEdited changes a record.
type envelopeEdit struct {
	readSchema  string // the schema the record was written with
	writeSchema string // "": readSchema
	writeID     int    // the registry id of writeSchema; 0: the record's own
	keyless     bool   // produce without a key (a truncate)
	edit        func(env map[string]any)
}

// produceEdited reads back the latest record of id in topic, decodes its
// envelope, lets x.edit change it, encodes it and produces it again.
func (e *env) produceEdited(t *testing.T, topic string, id int32, x envelopeEdit) {
	t.Helper()
	rec := latestRecordOf(t, e.stack.Brokers, topic, id)
	var env map[string]any
	if err := avro.Unmarshal(avro.MustParse(x.readSchema), rec.Value[5:], &env); err != nil {
		t.Fatal(err)
	}
	x.edit(env)
	write := x.readSchema
	if x.writeSchema != "" {
		write = x.writeSchema
	}
	body, err := avro.Marshal(avro.MustParse(write), env)
	if err != nil {
		t.Fatal(err)
	}
	value := append(append([]byte{}, rec.Value[:5]...), body...)
	if x.writeID != 0 {
		binary.BigEndian.PutUint32(value[1:5], uint32(x.writeID))
	}
	out := &kgo.Record{Topic: topic, Value: value}
	if !x.keyless {
		out.Key, out.Partition = rec.Key, rec.Partition
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.stack.Brokers))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, out).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// bumpLSN moves an envelope's source.lsn on by n and returns it.
func bumpLSN(env map[string]any, n int64) int64 {
	source := env["source"].(map[string]any)
	lsn := unwrapUnionValue(source["lsn"]).(int64) + n
	source["lsn"] = map[string]any{"long": lsn}
	return lsn
}

// latestRecordOf is the last record of the topic whose Avro key is {id}.
func latestRecordOf(t *testing.T, brokers, topic string, id int32) *kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	end := endOffsets(t, brokers, topic)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var last *kgo.Record
	seen := int64(0)
	for seen < end && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			seen++
			if len(r.Value) > 5 && len(r.Key) > 5 {
				// The key {id: int}: zigzag varint after the 5-byte header.
				k, n := binary.Varint(r.Key[5:])
				if n > 0 && int32(k) == id {
					last = r
				}
			}
		})
	}
	if last == nil {
		t.Fatalf("no record of id %d in %s", id, topic)
	}
	return last
}

func unwrapUnion(v any) map[string]any {
	for _, inner := range v.(map[string]any) {
		return inner.(map[string]any)
	}
	return nil
}

func unwrapUnionValue(v any) any {
	if m, ok := v.(map[string]any); ok {
		for _, inner := range m {
			return inner
		}
	}
	return v
}

// addUnits adds whole units to a decimal string with 2 places.
func addUnits(t *testing.T, dec string, units int64) string {
	t.Helper()
	r, ok := new(big.Rat).SetString(dec)
	if !ok {
		t.Fatalf("not a decimal: %q", dec)
	}
	return r.Add(r, big.NewRat(units, 1)).FloatString(2)
}

// groupState describes the pipeline's consumer group, for failures.
func (e *env) groupState() string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.stack.Brokers))
	if err != nil {
		return err.Error()
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	groups, err := adm.DescribeGroups(ctx, "e2e")
	if err != nil {
		return err.Error()
	}
	lag, err := adm.Lag(ctx, "e2e")
	if err != nil {
		return err.Error()
	}
	g := groups["e2e"]
	return fmt.Sprintf("group e2e: state %s, %d members, lag %d", g.State, len(g.Members), lag["e2e"].Lag.Total())
}

// TestTruncate: a Debezium TRUNCATE of the transactions' table removes
// every t_transaction row it implies, and the insights follow.
func TestTruncate(t *testing.T) {
	cfg := simulate.Config{TopicPrefix: "tr.transactions_schema", Money: simulate.MoneyInt, Customers: 30, Events: 600, Seed: 29}
	e := newEnv(t, cfg)
	want := e.produce(t)
	p := e.start(t)
	e.waitExact(t, p, want, time.Minute)

	// A truncate event: an envelope of the table with op "t", no row
	// images, a newer LSN (Debezium sends it with a null key).
	schemaText, err := simulate.ValueSchema(cfg, simulate.TableTransactions)
	if err != nil {
		t.Fatal(err)
	}
	e.produceEdited(t, cfg.Topic(simulate.TableTransactions), want.TTransaction[0].TransactionID, envelopeEdit{
		readSchema: schemaText, keyless: true,
		edit: func(env map[string]any) {
			bumpLSN(env, 50_000_000)
			env["op"], env["before"], env["after"] = "t", nil, nil
		},
	})

	// What the sources hold without any transaction.
	events, err := simulate.Plan(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var kept []simulate.Event
	for _, ev := range events {
		if ev.Table != simulate.TableTransactions {
			kept = append(kept, ev)
		}
	}
	e.waitExact(t, p, simulate.Expect(kept, simulate.DefaultSpendingTypes()), time.Minute)
	if dlq := readDLQ(t, e.stack.Brokers, "e2e.dlq", 0); len(dlq) != 0 {
		t.Errorf("%d dead letters from a truncate", len(dlq))
	}
	p.stop(t)
}

// benchConfig is the pipeline a test or benchmark runs: config/ods.yaml,
// or for a benchmark's what-if, ODSFLOW_BENCH_CONFIG (a file), or with
// ODSFLOW_BENCH_OUTPUT=drop config/ods.yaml with its output replaced by
// drop (the stages alone, no database write: BENCHMARKS.md, session 8).
func benchConfig(t testing.TB) string {
	if c := os.Getenv("ODSFLOW_BENCH_CONFIG"); c != "" {
		return c
	}
	switch out := os.Getenv("ODSFLOW_BENCH_OUTPUT"); out {
	case "":
		return "config/ods.yaml"
	case "drop":
		conf, err := os.ReadFile(filepath.Join(repoRoot, "config", "ods.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		i := bytes.Index(conf, []byte("\noutput:\n"))
		if i < 0 {
			t.Fatal("config/ods.yaml: no top-level output to replace")
		}
		path := filepath.Join(t.TempDir(), "ods_drop.yaml")
		if err := os.WriteFile(path, append(conf[:i+1:i+1], "output:\n  drop: {}\n"...), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	default:
		t.Fatalf("ODSFLOW_BENCH_OUTPUT=%q: only drop is known", out)
		return ""
	}
}

// benchWhatIf: the pipeline run is not config/ods.yaml, so the ODS is not
// checked against the expectation.
func benchWhatIf() bool {
	return os.Getenv("ODSFLOW_BENCH_CONFIG") != "" || os.Getenv("ODSFLOW_BENCH_OUTPUT") != ""
}
