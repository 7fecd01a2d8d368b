package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/odsflow/odsflow/internal/devstack"
	"github.com/odsflow/odsflow/internal/pgcluster"
)

// firstPostgresPort and lastPostgresPort bound the search for a free port
// when --postgres-port is not given: 5432, or the next free one.
const (
	firstPostgresPort = 5432
	lastPostgresPort  = 5531
)

func devCommand() *cli.Command {
	return &cli.Command{
		Name:  "dev",
		Usage: "Run a local stack on loopback: Kafka, a schema registry and a throwaway PostgreSQL",
		Description: `Starts, on 127.0.0.1 only:
  - a Kafka-protocol broker (franz-go kfake), topics auto-created;
  - a Confluent-compatible schema registry;
  - a throwaway PostgreSQL cluster (database "ods", user/password postgres/postgres),
    its data in a temporary directory.
Prints the environment to export, then "odsflow dev: ready". Ctrl-C (SIGINT) or
SIGTERM stops everything it started and removes its temporary directories.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "kafka", Value: "127.0.0.1:9092", Usage: "broker listen address (loopback)"},
			&cli.StringFlag{Name: "registry", Value: "127.0.0.1:8081", Usage: "schema registry listen address (loopback)"},
			&cli.IntFlag{Name: "partitions", Value: 3, Usage: "partitions of auto-created topics"},
			&cli.IntFlag{Name: "postgres-port", Usage: "PostgreSQL port", DefaultText: "5432 or the next free one"},
			&cli.StringFlag{Name: "postgres-dsn", Usage: "use this existing PostgreSQL server instead of starting one"},
			&cli.BoolFlag{Name: "no-postgres", Usage: "do not start PostgreSQL"},
		},
		Action: func(c *cli.Context) error {
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			signal.Ignore(syscall.SIGPIPE) // | head must not leave the stack's files behind
			defer stop()
			cfg := devstack.Config{
				KafkaAddr:    c.String("kafka"),
				RegistryAddr: c.String("registry"),
				Partitions:   c.Int("partitions"),
				PostgresPort: c.Int("postgres-port"),
				PostgresDSN:  c.String("postgres-dsn"),
				NoPostgres:   c.Bool("no-postgres"),
			}
			if err := runDev(ctx, cfg, c.IsSet("postgres-port"), os.Stdout, os.Stderr); err != nil {
				fmt.Fprintf(os.Stderr, "odsflow dev: %v\n", err)
				return cli.Exit("", 1)
			}
			return nil
		},
	}
}

// runDev starts the stack, reports it, and stops it when ctx ends.
func runDev(ctx context.Context, cfg devstack.Config, explicitPGPort bool, stdout, stderr io.Writer) error {
	if !cfg.NoPostgres && cfg.PostgresDSN == "" && !explicitPGPort {
		port, err := firstFreePostgresPort()
		if err != nil {
			return err
		}
		cfg.PostgresPort = port
	}
	parts := "Kafka, schema registry and PostgreSQL"
	if cfg.NoPostgres {
		parts = "Kafka and schema registry"
	}
	fmt.Fprintf(stderr, "odsflow dev: starting %s…\n", parts)
	startCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	stack, err := devstack.Start(startCtx, cfg)
	cancel()
	if err != nil {
		return explainStartError(err)
	}

	var exports []string
	for _, kv := range stack.Env() {
		k, v, _ := strings.Cut(kv, "=")
		if k == "ODS_DSN" && cfg.PostgresDSN != "" {
			// A server the user named may have a real password: never print
			// it, and export nothing rather than a DSN that cannot log in.
			fmt.Fprintf(stderr, "odsflow dev: using the PostgreSQL server from --postgres-dsn, %s: set ODS_DSN to that DSN yourself\n", devstack.RedactDSN(v))
			continue
		}
		exports = append(exports, k+"="+shellQuote(v))
	}
	fmt.Fprintf(stdout, "export %s\n", strings.Join(exports, " "))
	fmt.Fprintln(stdout, "odsflow dev: ready")

	<-ctx.Done()
	fmt.Fprintln(stderr, "odsflow dev: stopping…")
	stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := stack.Close(stopCtx); err != nil {
		return fmt.Errorf("stopping: %w", err)
	}
	fmt.Fprintln(stderr, "odsflow dev: stopped")
	return nil
}

func firstFreePostgresPort() (int, error) {
	for p := firstPostgresPort; p <= lastPostgresPort; p++ {
		if pgcluster.PortFree(p) {
			return p, nil
		}
	}
	return 0, fmt.Errorf("postgres: no free port in %d..%d; pick one with --postgres-port N", firstPostgresPort, lastPostgresPort)
}

// explainStartError names the flag that moves a part to another port.
func explainStartError(err error) error {
	var inUse *devstack.PortInUseError
	if errors.As(err, &inUse) {
		flag := map[string]string{"kafka": "--kafka ADDR", "registry": "--registry ADDR", "postgres": "--postgres-port N"}[inUse.Part]
		return fmt.Errorf("%w; choose another with %s", err, flag)
	}
	return err
}

// shellQuote makes v one word for a POSIX shell: a DSN holds '?' and '&'.
func shellQuote(v string) string {
	return "'" + strings.ReplaceAll(v, "'", `'\''`) + "'"
}
