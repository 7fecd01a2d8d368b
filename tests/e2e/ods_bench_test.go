package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/odsflow/odsflow/internal/devstack"
	"github.com/odsflow/odsflow/internal/odsread"
	"github.com/odsflow/odsflow/internal/simulate"
)

// groupLag is the consumer group's total lag on the three topics.
func groupLag(ctx context.Context, brokers, group string) (int64, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	lags, err := kadm.NewClient(cl).Lag(ctx, group)
	if err != nil {
		return 0, err
	}
	l, ok := lags[group]
	if !ok || l.Error() != nil || len(l.Lag) == 0 {
		return -1, nil // not joined or not committed yet
	}
	return l.Lag.Total(), nil
}

// BenchmarkODSThroughput: 500k simulated events produced first (rate 0),
// then config/ods.yaml from cold (a new process, group and state) until it
// has committed everything and the ODS is exact: events/s. In the same run,
// a PostgreSQL-only ceiling writes the same final rows with COPY-then-upsert
// (and refreshes every customer's insights).
//
//	go test -run '^$' -bench ODSThroughput -benchtime 1x -timeout 30m ./tests/e2e/
func BenchmarkODSThroughput(b *testing.B) {
	events := 500_000
	if testing.Short() {
		events = 50_000
	}
	cfg := simulate.Config{TopicPrefix: "tp.transactions_schema", Money: simulate.MoneyDecimal, Customers: 5000, Events: events, Seed: 31}
	e := newEnvWith(b, cfg, devstack.Config{PostgresDurable: true})
	t0 := time.Now()
	want := e.produce(b)
	b.Logf("simulate: %d change events produced in %v", events, time.Since(t0).Round(time.Millisecond))
	total := int64(0)
	for _, topic := range []simulate.Table{simulate.TableCustomers, simulate.TableAccounts, simulate.TableTransactions} {
		total += endOffsets(b, e.stack.Brokers, cfg.Topic(topic))
	}

	b.ResetTimer()
	start := time.Now()
	var p *pipeline
	profile, statsAddr := os.Getenv("ODSFLOW_BENCH_CPUPROFILE"), ""
	// Caught up is seen in the group's committed offsets: commit often, or
	// the measurement is rounded up to the next commit_period.
	frequentCommits := []string{"--set", "input.kafka_franz.commit_period=100ms"}
	if profile == "" {
		p = e.start(b, append(frequentCommits, "--set", "http.enabled=false")...)
	} else {
		statsAddr = freeAddr(b)
		p = e.start(b, append(frequentCommits, "--set", "http.address="+statsAddr, "--set", "http.debug_endpoints=true")...)
		go captureProfile(b, statsAddr, profile, 5*time.Second, 6*time.Second)
	}
	ctx := context.Background()
	var firstCommit time.Duration // start-up: the process, the group join, the first batch
	for {
		lag, err := groupLag(ctx, e.stack.Brokers, "e2e")
		if err != nil {
			b.Fatal(err)
		}
		if lag >= 0 && lag < total && firstCommit == 0 {
			firstCommit = time.Since(start)
		}
		if lag == 0 {
			break
		}
		if time.Since(start) > 20*time.Minute {
			b.Fatalf("lag %d after 20 minutes", lag)
		}
		time.Sleep(50 * time.Millisecond)
	}
	took := time.Since(start)
	b.StopTimer()
	peakRSS := peakRSSMB(p)
	if statsAddr != "" {
		saveStats(b, statsAddr, profile+".stats.json")
		_ = os.WriteFile(profile+".log", []byte(p.logs.String()), 0o644)
	}
	if !benchWhatIf() {
		e.waitExact(b, p, want, time.Minute)
	}
	p.stop(b)

	ceiling := ceilingWrite(b, e, want)
	rate := float64(total) / took.Seconds()
	ceilRate := float64(total) / ceiling.Seconds()
	b.ReportMetric(float64(total), "records")
	b.ReportMetric(rate, "events/s")
	b.ReportMetric(took.Seconds(), "s-to-caught-up")
	b.ReportMetric(firstCommit.Seconds(), "s-to-first-commit")
	b.ReportMetric(peakRSS, "MB-peak-RSS")
	b.ReportMetric(ceiling.Seconds(), "s-pg-only-final-rows")
	b.ReportMetric(rate/ceilRate, "x-pg-only")
}

// ceilingWrite upserts the final rows into a fresh database the fastest
// way PostgreSQL takes them (COPY into temporary tables, one INSERT … ON
// CONFLICT each, one insights refresh) and returns how long it took.
func ceilingWrite(b testing.TB, e *env, want simulate.ODSState) time.Duration {
	return ceilingWriteTo(b, e.stack.NewDatabase(b), want)
}

// ceilingWriteTo is ceilingWrite into the empty database dsn.
func ceilingWriteTo(b testing.TB, dsn string, want simulate.ODSState) time.Duration {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	ddl, err := os.ReadFile(filepath.Join(repoRoot, "config", "sql", "ods.sql"))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := conn.Exec(ctx, string(ddl)); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	tx, err := conn.Begin(ctx)
	if err != nil {
		b.Fatal(err)
	}
	_, err = tx.Exec(ctx, `CREATE TEMP TABLE ca (LIKE ods_schema.customer_account) ON COMMIT DROP;
		CREATE TEMP TABLE tt (LIKE ods_schema.t_transaction) ON COMMIT DROP`)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"ca"}, []string{"customer_id", "customer_name", "email", "mobile", "account_id", "account_number",
		"account_status", "account_balance", "updated_at", "account_version", "customer_version"},
		pgx.CopyFromSlice(len(want.CustomerAccount), func(i int) ([]any, error) {
			r := want.CustomerAccount[i]
			var upd any
			if r.UpdatedAt != nil {
				t, err := time.Parse(time.RFC3339Nano, *r.UpdatedAt)
				if err != nil {
					return nil, err
				}
				upd = t
			}
			return []any{r.CustomerID, r.CustomerName, r.Email, r.Mobile, r.AccountID, r.AccountNumber, r.AccountStatus, r.AccountBalance, upd, r.AccountVersion, r.CustomerVersion}, nil
		})); err != nil {
		b.Fatal(err)
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"tt"}, []string{"transaction_id", "transaction_ref_number", "transaction_amount", "transaction_type",
		"account_number", "transaction_date", "customer_id", "source_version"},
		pgx.CopyFromSlice(len(want.TTransaction), func(i int) ([]any, error) {
			r := want.TTransaction[i]
			d, err := time.Parse(time.RFC3339Nano, r.TransactionDate)
			return []any{int64(r.TransactionID), r.TransactionRefNumber, r.TransactionAmount, r.TransactionType, r.AccountNumber, d, r.CustomerID, r.SourceVersion}, err
		})); err != nil {
		b.Fatal(err)
	}
	_, err = tx.Exec(ctx, `INSERT INTO ods_schema.customer_account SELECT * FROM ca ON CONFLICT (account_number) DO UPDATE SET customer_id = EXCLUDED.customer_id;
		INSERT INTO ods_schema.t_transaction SELECT * FROM tt ON CONFLICT (transaction_id) DO UPDATE SET customer_id = EXCLUDED.customer_id;
		SELECT ods_schema.refresh_financial_insights(array(SELECT DISTINCT customer_id FROM ca UNION SELECT customer_id FROM tt), 'debit,withdrawal')`)
	if err != nil {
		b.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		b.Fatal(err)
	}
	took := time.Since(start)
	got, err := odsread.Read(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	if !odsread.Equal(got, want) {
		b.Fatalf("the ceiling's rows differ from the expectation:\n%s", odsread.Diff(got, want))
	}
	return took
}

// BenchmarkODSFreshness: simulated traffic at a steady 5k events/s,
// stamped with the wall clock (source.ts_ms), through config/ods.yaml; the
// pipeline's pg_upsert_freshness timing (source time to the commit of the
// row) read from its metrics: p50, p90, p99. Steady state: a first process
// loads the snapshot and stops; a second one, whose metrics are read, has
// joined the group before the timed traffic starts.
//
//	go test -run '^$' -bench ODSFreshness -benchtime 1x -timeout 30m ./tests/e2e/
func BenchmarkODSFreshness(b *testing.B) {
	warm := simulate.Config{TopicPrefix: "fr.transactions_schema", Money: simulate.MoneyDecimal, Customers: 1000, Seed: 37}
	cfg := warm
	cfg.Events, cfg.Rate, cfg.WallClock = 60_000, 5000, true
	if testing.Short() {
		cfg.Events = 10_000
	}
	e := newEnvWith(b, warm, devstack.Config{PostgresDurable: true})
	loader := e.start(b)
	e.waitExact(b, loader, e.produce(b), 2*time.Minute)
	loader.stop(b)

	addr := freeAddr(b)
	p := e.start(b, "--set", "http.address="+addr)
	ctx := context.Background()
	for deadline := time.Now().Add(time.Minute); ; {
		if stableMember(ctx, e.stack.Brokers, "e2e") {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("the pipeline did not join its group; logs:\n%s", p.logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.cfg = cfg
	b.ResetTimer()
	want := e.produce(b)
	e.waitExact(b, p, want, 2*time.Minute)
	b.StopTimer()
	resp, err := http.Get("http://" + addr + "/stats")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var stats map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&stats); err != nil {
		b.Fatal(err)
	}
	var fresh map[string]any
	for k, v := range stats {
		if strings.HasPrefix(k, "pg_upsert_freshness") {
			fresh, _ = v.(map[string]any)
		}
	}
	if fresh == nil {
		b.Fatalf("no pg_upsert_freshness in the metrics: %v", stats)
	}
	p.stop(b)
	ms := func(k string) float64 { f, _ := fresh[k].(float64); return f / 1e6 }
	b.ReportMetric(ms("p50"), "ms-p50")
	b.ReportMetric(ms("p90"), "ms-p90")
	b.ReportMetric(ms("p99"), "ms-p99")
	b.Logf("freshness (source.ts_ms → ODS commit) at %v events/s: p50 %.1f ms, p90 %.1f ms, p99 %.1f ms", cfg.Rate, ms("p50"), ms("p90"), ms("p99"))
}

// stableMember: the group has one member and a stable assignment.
func stableMember(ctx context.Context, brokers, group string) bool {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers))
	if err != nil {
		return false
	}
	defer cl.Close()
	groups, err := kadm.NewClient(cl).DescribeGroups(ctx, group)
	if err != nil {
		return false
	}
	g, ok := groups[group]
	return ok && g.Err == nil && g.State == "Stable" && len(g.Members) == 1
}

// freeAddr is a loopback address nobody listens on right now.
func freeAddr(b testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// captureProfile writes a CPU profile of the pipeline process, taken for
// `length` after `after`, to path (ODSFLOW_BENCH_CPUPROFILE): where the
// time goes when the pipeline is busiest. Failures are logged, not fatal:
// the profile is a diagnosis, not part of the measurement.
func captureProfile(b *testing.B, addr, path string, after, length time.Duration) {
	time.Sleep(after)
	saveURL(b, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, int(length.Seconds())), path)
	saveURL(b, fmt.Sprintf("http://%s/debug/pprof/heap", addr), path+".heap")
}

// saveURL saves what url answers to path (a diagnosis aid: failures are
// logged, not fatal).
func saveURL(b *testing.B, url, path string) {
	resp, err := http.Get(url)
	if err != nil {
		b.Logf("%s: %v", url, err)
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil {
		err = os.WriteFile(path, body, 0o644)
	}
	if err != nil {
		b.Logf("%s: %v", url, err)
		return
	}
	b.Logf("%s written to %s", url, path)
}

// saveStats writes the pipeline's /stats (every metric) to path.
func saveStats(b *testing.B, addr, path string) {
	saveURL(b, "http://"+addr+"/stats", path)
}

// peakRSSMB is the pipeline process's peak resident memory (VmHWM), in MB;
// 0 where /proc cannot tell.
func peakRSSMB(p *pipeline) float64 {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb float64
			if _, err := fmt.Sscanf(strings.TrimSpace(rest), "%f kB", &kb); err == nil {
				return kb / 1024
			}
		}
	}
	return 0
}
