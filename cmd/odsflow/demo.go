package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/urfave/cli/v2"

	"github.com/odsflow/odsflow/internal/devstack"
	"github.com/odsflow/odsflow/internal/odsread"
	"github.com/odsflow/odsflow/internal/simulate"
	"github.com/odsflow/odsflow/internal/syncbuf"
)

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "Run the ODS pipeline end to end on the embedded dev stack, then stop",
		Description: `Starts the dev stack on free loopback ports, produces simulated CDC traffic
(a snapshot, then --events changes), runs config/ods.yaml (this binary, as a
child process) until the ODS equals the state the traffic must produce, prints
a summary and one customer's dashboard rows, and stops everything. Run it from
the repository root (it reads config/ods.yaml and config/sql/ods.sql).`,
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "customers", Value: 200, Usage: "customers in the snapshot"},
			&cli.IntFlag{Name: "events", Value: 5000, Usage: "change events after the snapshot"},
			&cli.StringFlag{Name: "config", Value: "config/ods.yaml", Usage: "the pipeline"},
			&cli.DurationFlag{Name: "timeout", Value: 3 * time.Minute, Usage: "give up when the ODS is not caught up by then"},
		},
		Action: func(c *cli.Context) error {
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			defer stop()
			// Output piped into a reader that quits (| head) must not kill
			// the demo before it stops the stack and removes its files.
			signal.Ignore(syscall.SIGPIPE)
			err := runDemo(ctx, demoOptions{customers: c.Int("customers"), events: c.Int("events"), config: c.String("config"), timeout: c.Duration("timeout")}, os.Stdout)
			if err != nil {
				fmt.Fprintf(os.Stderr, "odsflow demo: %v\n", err)
				return cli.Exit("", 1)
			}
			return nil
		},
	}
}

type demoOptions struct {
	customers, events int
	config            string
	timeout           time.Duration
}

func runDemo(ctx context.Context, o demoOptions, out io.Writer) (err error) {
	if _, err := os.Stat(o.config); err != nil {
		return fmt.Errorf("%w (run the demo from the repository root)", err)
	}
	say := func(format string, args ...any) { fmt.Fprintf(out, "odsflow demo: "+format+"\n", args...) }
	say("starting the dev stack (Kafka, schema registry, PostgreSQL) on free loopback ports…")
	startCtx, cancel := context.WithTimeout(ctx, 90*time.Second)
	stack, err := devstack.Start(startCtx, devstack.Config{})
	cancel()
	if err != nil {
		return err
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if cerr := stack.Close(stopCtx); cerr != nil && err == nil {
			err = cerr
		}
		say("stopped")
	}()

	cfg := simulate.Config{Customers: o.customers, Events: o.events, Money: simulate.MoneyDecimal, Seed: 1}
	events, err := simulate.Plan(cfg)
	if err != nil {
		return err
	}
	want := simulate.Expect(events, simulate.DefaultSpendingTypes())
	stats, err := simulate.Run(ctx, cfg, stack.Brokers, stack.RegistryURL)
	if err != nil {
		return fmt.Errorf("simulate: %w", err)
	}
	say("produced %d change events (%d snapshot + %d changes) and %d tombstones", stats.Total(), stats.Total()-o.events, o.events, stats.Tombstones)

	state, err := os.MkdirTemp("", "odsflow-demo-state-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(state)
	self, err := os.Executable()
	if err != nil {
		return err
	}
	const dlqTopic = "odsflow.dlq"
	cmd := exec.CommandContext(ctx, self, "run", "--log.level", "warn", "--set", "http.enabled=false", o.config)
	cmd.Env = append(os.Environ(),
		"KAFKA_BROKERS="+stack.Brokers, "SCHEMA_REGISTRY_URL="+stack.RegistryURL, "ODS_DSN="+stack.PostgresDSN,
		"ODS_STATE_DIR="+filepath.Join(state, "state"), "ODS_DLQ_TOPIC="+dlqTopic, "ODS_CONSUMER_GROUP=odsflow-demo")
	logs := &syncbuf.Buffer{} // written by the child's output copiers, read here
	cmd.Stdout, cmd.Stderr = logs, logs
	say("running %s …", o.config)
	started := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	// exited is closed once the child has exited (waitErr is then set):
	// the loop below and the cleanup may both wait for it.
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}()

	// One client for the checks of the loop below and the summary.
	admCl, err := kgo.NewClient(kgo.SeedBrokers(stack.Brokers))
	if err != nil {
		return err
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)

	var got simulate.ODSState
	var doneSince time.Time // when the group had consumed everything, and dead letters were written
	for {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		got, err = odsread.Read(rctx, stack.PostgresDSN)
		cancel()
		if err == nil && odsread.Equal(got, want) {
			break
		}
		// Every event consumed, some dead-lettered, and still not the
		// expected ODS: a broken pipeline, no need to wait for the timeout.
		if consumedWithDeadLetters(ctx, adm, "odsflow-demo", dlqTopic) {
			if doneSince.IsZero() {
				doneSince = time.Now()
			} else if time.Since(doneSince) > 5*time.Second {
				reason, _ := firstDeadLetter(ctx, stack.Brokers, dlqTopic)
				return fmt.Errorf("the pipeline consumed every event, but the ODS is not what the traffic must produce; "+
					"dead letters were written, the first because: %s\n%s\npipeline logs:\n%s", reason, firstLines(odsread.Diff(got, want), 20), tail(logs.String(), 4000))
			}
		} else {
			doneSince = time.Time{}
		}
		if time.Since(started) > o.timeout {
			return fmt.Errorf("not caught up after %v:\n%s\npipeline logs:\n%s", o.timeout, firstLines(odsread.Diff(got, want), 20), tail(logs.String(), 4000))
		}
		select {
		case <-exited:
			return fmt.Errorf("the pipeline exited (%v):\n%s", waitErr, tail(logs.String(), 4000))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	caughtUp := time.Since(started)
	dead, err := countRecords(ctx, adm, dlqTopic)
	if err != nil {
		return err
	}
	say("caught up in %v: the ODS equals what the traffic must produce, row for row", caughtUp.Round(time.Millisecond))
	fmt.Fprintf(out, "\n  events in             %d\n  customer_account      %d rows\n  t_transaction         %d rows\n  t_financial_insights  %d rows\n  dead letters          %d\n  caught up in          %v\n\n",
		stats.Total(), len(got.CustomerAccount), len(got.TTransaction), len(got.TFinancialInsights), dead, caughtUp.Round(time.Millisecond))
	return printDashboard(ctx, out, stack.PostgresDSN)
}

// consumedWithDeadLetters: group has committed every record of its topics,
// and dlq holds dead letters.
func consumedWithDeadLetters(ctx context.Context, adm *kadm.Client, group, dlq string) bool {
	lags, err := adm.Lag(ctx, group)
	if err != nil {
		return false
	}
	l, ok := lags[group]
	if !ok || l.Error() != nil || len(l.Lag) == 0 || l.Lag.Total() != 0 {
		return false
	}
	n, err := countRecords(ctx, adm, dlq)
	return err == nil && n > 0
}

// firstDeadLetter is the error header of the first record of topic.
func firstDeadLetter(ctx context.Context, brokers, topic string) (string, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return "", err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		for _, r := range cl.PollRecords(ctx, 1).Records() {
			for _, h := range r.Headers {
				if h.Key == "error" {
					return string(h.Value), nil
				}
			}
			return "(no error header)", nil
		}
	}
	return "", ctx.Err()
}

// firstLines is s cut to its first n lines, saying how many more there were.
func firstLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) <= n {
		return s
	}
	return strings.Join(lines[:n], "\n") + fmt.Sprintf("\n… and %d more lines", len(lines)-n)
}

// tail is the last n bytes of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// countRecords is the number of records in topic (0 when it does not exist).
func countRecords(ctx context.Context, adm *kadm.Client, topic string) (int64, error) {
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("dead-letter topic: %w", err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			n += o.Offset
		}
	})
	return n, nil
}

// printDashboard prints the ODS rows of the customer with the most
// transactions: what the dashboard API serves.
func printDashboard(ctx context.Context, out io.Writer, dsn string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var id int32
	err = conn.QueryRow(ctx, `SELECT customer_id FROM ods_schema.t_transaction GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1`).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	} else if err != nil {
		return err
	}
	fmt.Fprintf(out, "  customer %d's dashboard rows:\n", id)
	queries := []struct{ title, sql string }{
		{"accounts", `SELECT account_number, customer_name, account_status, account_balance::text FROM ods_schema.customer_account WHERE customer_id = $1 ORDER BY 1`},
		{"recent transactions", `SELECT transaction_date::text, transaction_type, transaction_amount::text, account_number FROM ods_schema.t_transaction WHERE customer_id = $1 ORDER BY transaction_date DESC LIMIT 5`},
		{"insights", `SELECT total_balance::text, average_monthly_spending::text FROM ods_schema.t_financial_insights WHERE customer_id = $1`},
	}
	for _, q := range queries {
		rows, err := conn.Query(ctx, q.sql, id)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "    %s (%s):\n", q.title, strings.Join(fieldNames(rows), ", "))
		for rows.Next() {
			vals, err := rows.Values()
			if err != nil {
				return err
			}
			parts := make([]string, len(vals))
			for i, v := range vals {
				parts[i] = fmt.Sprint(v)
			}
			fmt.Fprintf(out, "      %s\n", strings.Join(parts, " | "))
		}
		if err := rows.Err(); err != nil {
			return err
		}
	}
	return nil
}

func fieldNames(rows pgx.Rows) []string {
	var names []string
	for _, f := range rows.FieldDescriptions() {
		names = append(names, f.Name)
	}
	return names
}
