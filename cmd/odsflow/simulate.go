package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/odsflow/odsflow/internal/simulate"
)

func simulateCommand() *cli.Command {
	return &cli.Command{
		Name:  "simulate",
		Usage: "Produce Debezium-faithful CDC traffic for T_Customers, T_Accounts and T_Transactions",
		Description: `Registers the Debezium Avro schemas of the three source topics (<topic>-key,
<topic>-value), creates the topics if needed (3 partitions), and produces a
snapshot (op r) followed by --events streaming changes (c, u, d + tombstones),
as Debezium's PostgreSQL connector with the AvroConverter would. The traffic is
deterministic: the same flags give the same bytes.

--expect FILE writes, as JSON, the ODS state the traffic must produce
(customer_account, t_transaction, t_financial_insights), from an independent
model. Ctrl-C (SIGINT) or SIGTERM stops producing; records already sent get a
few seconds to be acknowledged; --expect is then not written.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "brokers", Value: "localhost:9092", EnvVars: []string{"KAFKA_BROKERS"}, Usage: "Kafka seed brokers, comma-separated"},
			&cli.StringFlag{Name: "registry", Value: "http://localhost:8081", EnvVars: []string{"SCHEMA_REGISTRY_URL"}, Usage: "schema registry URL"},
			&cli.StringFlag{Name: "topic-prefix", Value: simulate.DefaultTopicPrefix, EnvVars: []string{"CDC_TOPIC_PREFIX"}, Usage: "topics are <prefix>.T_Customers, .T_Accounts, .T_Transactions"},
			&cli.StringFlag{Name: "money", Value: simulate.MoneyInt, Usage: "money columns: int (as the seed) or decimal (numeric(20,2): bytes + decimal)"},
			&cli.IntFlag{Name: "customers", Value: 50, Usage: "customers in the initial snapshot"},
			&cli.IntFlag{Name: "events", Value: 1000, Usage: "streaming change events after the snapshot"},
			&cli.Float64Flag{Name: "rate", Value: 0, Usage: "change events per second (0: as fast as possible)"},
			&cli.BoolFlag{Name: "wall-clock", Usage: "stamp events with the time they are produced (source.ts_ms), to measure freshness"},
			&cli.Int64Flag{Name: "seed", Value: 1, Usage: "random seed: the same seed gives the same traffic"},
			&cli.StringFlag{Name: "debezium", Value: simulate.LayoutDebezium2, Usage: "envelope layout: 2 (Debezium 2.0–2.5, the seed's) or 3 (2.7+/3.x: ts_us, ts_ns)"},
			&cli.StringFlag{Name: "expect", Usage: "write the ODS state the traffic must produce to this JSON file"},
			&cli.StringFlag{Name: "spending-types", Value: strings.Join(simulate.DefaultSpendingTypes(), ","), EnvVars: []string{"ODS_SPENDING_TYPES"}, Usage: "spending transaction types of --expect's insights, comma-separated"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return simulateFailed(fmt.Errorf("unexpected arguments %q: every option is a flag", c.Args().Slice()))
			}
			cfg := simulate.Config{
				TopicPrefix:    c.String("topic-prefix"),
				Money:          c.String("money"),
				Customers:      c.Int("customers"),
				Events:         c.Int("events"),
				Rate:           c.Float64("rate"),
				WallClock:      c.Bool("wall-clock"),
				Seed:           c.Int64("seed"),
				DebeziumLayout: c.String("debezium"),
			}
			if err := checkSimulateFlags(cfg); err != nil {
				return simulateFailed(err)
			}
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			defer stop()
			opts := simulateOptions{
				brokers:       c.String("brokers"),
				registry:      c.String("registry"),
				expect:        c.String("expect"),
				spendingTypes: splitList(c.String("spending-types")),
			}
			err := runSimulate(ctx, cfg, opts, os.Stderr)
			if errors.Is(err, errInterrupted) {
				fmt.Fprintf(os.Stderr, "odsflow simulate: %v\n", err)
				return cli.Exit("", 130) // as a shell reports SIGINT
			}
			if err != nil {
				return simulateFailed(err)
			}
			return nil
		},
	}
}

var errInterrupted = errors.New("interrupted: the topics hold part of the traffic; --expect not written")

type simulateOptions struct {
	brokers, registry, expect string
	spendingTypes             []string
}

// simulateFailed reports err, one line per joined error, and exits 1.
func simulateFailed(err error) error {
	for _, line := range strings.Split(err.Error(), "\n") {
		fmt.Fprintf(os.Stderr, "odsflow simulate: %s\n", line)
	}
	return cli.Exit("", 1)
}

// checkSimulateFlags names the flag of each invalid setting before anything
// is contacted.
func checkSimulateFlags(cfg simulate.Config) error {
	var errs []error
	if cfg.Money != simulate.MoneyInt && cfg.Money != simulate.MoneyDecimal {
		errs = append(errs, fmt.Errorf("--money must be %s or %s, got %q", simulate.MoneyInt, simulate.MoneyDecimal, cfg.Money))
	}
	if cfg.DebeziumLayout != simulate.LayoutDebezium2 && cfg.DebeziumLayout != simulate.LayoutDebezium3 {
		errs = append(errs, fmt.Errorf("--debezium must be %s or %s, got %q", simulate.LayoutDebezium2, simulate.LayoutDebezium3, cfg.DebeziumLayout))
	}
	if cfg.Customers < 1 || cfg.Customers > simulate.MaxCustomers {
		errs = append(errs, fmt.Errorf("--customers must be between 1 and %d, got %d", simulate.MaxCustomers, cfg.Customers))
	}
	if cfg.Events < 0 || cfg.Events > simulate.MaxEvents {
		errs = append(errs, fmt.Errorf("--events must be between 0 and %d, got %d", simulate.MaxEvents, cfg.Events))
	}
	if cfg.Rate < 0 || math.IsNaN(cfg.Rate) || math.IsInf(cfg.Rate, 0) {
		errs = append(errs, fmt.Errorf("--rate must be a number of events per second ≥ 0 (0: as fast as possible), got %v", cfg.Rate))
	}
	if err := simulate.CheckTopicPrefix(cfg.TopicPrefix); err != nil {
		errs = append(errs, fmt.Errorf("--topic-prefix: %w", err))
	}
	return errors.Join(errs...)
}

// runSimulate produces the traffic and, when asked, writes the expected ODS
// state once everything was acknowledged.
func runSimulate(ctx context.Context, cfg simulate.Config, opts simulateOptions, stderr io.Writer) error {
	var expected []byte
	if opts.expect != "" {
		// Compute and check the destination before producing anything, so a
		// bad path does not waste a run.
		if err := checkWritableDir(opts.expect); err != nil {
			return err
		}
		events, err := simulate.Events(cfg)
		if err != nil {
			return err
		}
		state := simulate.ExpectEvents(untilDone(ctx, events), opts.spendingTypes)
		if ctx.Err() != nil {
			return errInterrupted
		}
		if expected, err = json.MarshalIndent(state, "", "  "); err != nil {
			return fmt.Errorf("--expect: %w", err)
		}
	}

	stats, err := simulate.Run(ctx, cfg, opts.brokers, opts.registry)
	fmt.Fprintln(stderr, summary(cfg, stats, err != nil && ctx.Err() != nil))
	if err != nil {
		if ctx.Err() != nil {
			return errInterrupted
		}
		return err
	}
	if opts.expect != "" {
		if err := writeFileAtomic(opts.expect, append(expected, '\n')); err != nil {
			return fmt.Errorf("--expect: %w", err)
		}
		fmt.Fprintf(stderr, "odsflow simulate: expected ODS state written to %s\n", opts.expect)
	}
	return nil
}

// untilDone ends seq early when ctx ends (a long --expect computation stays
// interruptible).
func untilDone[T any](ctx context.Context, seq iter.Seq[T]) iter.Seq[T] {
	return func(yield func(T) bool) {
		for v := range seq {
			if ctx.Err() != nil || !yield(v) {
				return
			}
		}
	}
}

// summary is the one-line report: events per topic, tombstones, time, rate.
func summary(cfg simulate.Config, s simulate.Stats, interrupted bool) string {
	var parts []string
	for _, t := range simulate.Tables() {
		parts = append(parts, fmt.Sprintf("%s %d", t, s.Events[cfg.Topic(t)]))
	}
	note := ""
	if interrupted {
		note = " (interrupted)"
	}
	return fmt.Sprintf("odsflow simulate: produced %d events (%s) and %d tombstones in %.2fs, %.0f events/s%s",
		s.Total(), strings.Join(parts, ", "), s.Tombstones, s.Elapsed.Seconds(), s.EventsPerSecond(), note)
}

// checkWritableDir fails, before any traffic is produced, when the
// expectation could not be written to path: its directory is not writable,
// or path is a directory.
func checkWritableDir(path string) error {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return fmt.Errorf("--expect %s: is a directory (give a file name)", path)
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".odsflow-expect-*")
	if err != nil {
		return fmt.Errorf("--expect %s: cannot write there: %w", path, err)
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

// writeFileAtomic writes data to a temporary file beside path and renames it
// into place, so that a reader never sees half a file.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".odsflow-expect-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // fails harmlessly after the rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}
