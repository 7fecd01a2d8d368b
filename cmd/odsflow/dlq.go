package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/urfave/cli/v2"

	"github.com/odsflow/odsflow/plugins/kafka"
)

// dlqHeaders are the headers config/ods.yaml adds to a dead letter; a
// replay strips them and keeps the record's own.
var dlqHeaders = map[string]bool{
	"error": true, "error_component": true, "source_topic": true,
	"source_partition": true, "source_offset": true, "dlq_key": true,
}

func dlqCommand() *cli.Command {
	return &cli.Command{
		Name:  "dlq",
		Usage: "Work with the dead-letter topic",
		Subcommands: []*cli.Command{{
			Name:  "replay",
			Usage: "Re-publish dead letters to their source topics (after a fix)",
			Description: `Reads the dead-letter topic from where the replay group left off up to its
end when the command starts, and produces each record to the topic named by its
source_topic header, with its original key, value and headers (the dead-letter
headers removed). Offsets are committed after the records are acknowledged, so
a second replay does not re-publish them. A record without source_topic is
skipped and counted.`,
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "from", Usage: "the dead-letter topic", EnvVars: []string{"ODS_DLQ_TOPIC"}, Value: "odsflow.dlq"},
				&cli.StringFlag{Name: "brokers", Usage: "Kafka seed brokers, comma-separated", EnvVars: []string{"KAFKA_BROKERS"}, Value: "localhost:9092"},
				&cli.StringFlag{Name: "group", Usage: "consumer group of replays", Value: "odsflow-dlq-replay"},
				&cli.BoolFlag{Name: "dry-run", Usage: "list what would be replayed (each dead letter's origin and error), produce and commit nothing"},
				&cli.BoolFlag{Name: "tls", Usage: "connect with TLS (the system's CAs, or --tls-ca-file)"},
				&cli.StringFlag{Name: "tls-ca-file", Usage: "a PEM file of the CAs to trust (implies --tls)"},
				&cli.StringFlag{Name: "sasl-mechanism", Usage: "SASL: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"},
				&cli.StringFlag{Name: "sasl-username", Usage: "SASL username", EnvVars: []string{"KAFKA_SASL_USERNAME"}},
				&cli.StringFlag{Name: "sasl-password", Usage: "SASL password (better from the environment)", EnvVars: []string{"KAFKA_SASL_PASSWORD"}},
			},
			Action: func(c *cli.Context) error {
				ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
				defer stop()
				conn, err := connectionSettings(strings.Split(c.String("brokers"), ","), c.Bool("tls"), c.String("tls-ca-file"),
					c.String("sasl-mechanism"), c.String("sasl-username"), c.String("sasl-password"))
				if err == nil {
					err = replayDLQ(ctx, dlqOptions{from: c.String("from"), conn: conn, group: c.String("group"), dryRun: c.Bool("dry-run")}, os.Stdout)
				}
				if err != nil {
					fmt.Fprintf(os.Stderr, "odsflow dlq replay: %v\n", err)
					return cli.Exit("", 1)
				}
				return nil
			},
		}},
	}
}

type dlqOptions struct {
	from   string
	conn   []kgo.Opt // the brokers, TLS, SASL
	group  string
	dryRun bool
}

// connectionSettings turns the flags into client options, through the
// settings the kafka_franz components read (so TLS and SASL work alike).
func connectionSettings(brokers []string, useTLS bool, caFile, mechanism, user, password string) ([]kgo.Opt, error) {
	conf := map[string]any{"seed_brokers": brokers}
	if useTLS || caFile != "" {
		conf["tls"] = map[string]any{"enabled": true, "root_cas_file": caFile}
	}
	if mechanism != "" {
		conf["sasl"] = []any{map[string]any{"mechanism": mechanism, "username": user, "password": password}}
	}
	b, err := json.Marshal(conf) // JSON is YAML
	if err != nil {
		return nil, err
	}
	return kafka.ClientOptions(string(b))
}

// commitReplay commits the replay group's offsets of o.from.
func commitReplay(ctx context.Context, adm *kadm.Client, o dlqOptions, next map[int32]int64) error {
	commit := kadm.Offsets{}
	for p, at := range next {
		commit.AddOffset(o.from, p, at, -1)
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	resp, err := adm.CommitOffsets(cctx, o.group, commit)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		return fmt.Errorf("committing the replay's offsets (the records were re-published; a second replay would repeat them): %w", err)
	}
	return nil
}

func replayDLQ(ctx context.Context, o dlqOptions, out io.Writer) error {
	admCl, err := kgo.NewClient(o.conn...)
	if err != nil {
		return err
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	ends, err := adm.ListEndOffsets(ctx, o.from)
	if err != nil {
		return fmt.Errorf("reading the end of %s: %w", o.from, err)
	}
	if err := ends.Error(); errors.Is(err, kerr.UnknownTopicOrPartition) {
		// No dead letter was ever written (the topic is created by the
		// first): nothing to replay, and nothing wrong.
		fmt.Fprintf(out, "odsflow dlq replay: nothing to replay in %s (it does not exist: no dead letter was written yet)\n", o.from)
		return nil
	} else if err != nil {
		return fmt.Errorf("reading the end of %s: %w", o.from, err)
	}
	// Records retention removed are gone: a replay starts at the first
	// one left, or it would wait for records that never come.
	starts, err := adm.ListStartOffsets(ctx, o.from)
	if err != nil {
		return fmt.Errorf("reading the start of %s: %w", o.from, err)
	}
	if err := starts.Error(); err != nil {
		return fmt.Errorf("reading the start of %s: %w", o.from, err)
	}
	committed, err := adm.FetchOffsets(ctx, o.group)
	if errors.Is(err, kerr.GroupIDNotFound) {
		committed, err = kadm.OffsetResponses{}, nil // the first replay: from the start
	}
	if err != nil {
		return fmt.Errorf("reading the offsets of group %s: %w", o.group, err)
	}
	// What is left to replay: per partition, from the committed offset (or
	// the start) to the end now.
	remaining := map[int32][2]int64{}
	total := int64(0)
	var expired int64
	ends.Each(func(e kadm.ListedOffset) {
		from := int64(0)
		if c, ok := committed.Lookup(o.from, e.Partition); ok && c.Err == nil && c.At >= 0 {
			from = c.At
		}
		if s, ok := starts.Lookup(o.from, e.Partition); ok && s.Offset > from {
			expired += min(s.Offset, e.Offset) - from
			from = s.Offset
		}
		if from < e.Offset {
			remaining[e.Partition] = [2]int64{from, e.Offset}
			total += e.Offset - from
		}
	})
	if expired > 0 {
		fmt.Fprintf(out, "odsflow dlq replay: %d dead letters of %s expired (retention) before they were replayed\n", expired, o.from)
	}
	if expired > 0 && !o.dryRun {
		// Partitions with nothing left but expired dead letters: move the
		// group past them, or every later replay reports them again (the
		// others are committed once replayed).
		skip := kadm.Offsets{}
		starts.Each(func(so kadm.ListedOffset) {
			if _, replaying := remaining[so.Partition]; replaying {
				return
			}
			if c, ok := committed.Lookup(o.from, so.Partition); !ok || c.Err != nil || c.At < so.Offset {
				skip.AddOffset(o.from, so.Partition, so.Offset, -1)
			}
		})
		if len(skip) > 0 {
			resp, err := adm.CommitOffsets(ctx, o.group, skip)
			if err == nil {
				err = resp.Error()
			}
			if err != nil {
				return fmt.Errorf("committing the replay group past the expired dead letters: %w", err)
			}
		}
	}
	if total == 0 {
		fmt.Fprintf(out, "odsflow dlq replay: nothing to replay in %s\n", o.from)
		return nil
	}
	offsets := map[string]map[int32]kgo.Offset{o.from: {}}
	for p, r := range remaining {
		offsets[o.from][p] = kgo.NewOffset().At(r[0])
	}
	// Produce batches of at most 1MiB: a broker's default max.message.bytes
	// (a dead letter is at most the DLQ output's max_message_bytes, 1MB).
	cl, err := kgo.NewClient(append(o.conn, kgo.ConsumePartitions(offsets),
		kgo.FetchMaxBytes(64<<20), kgo.ProducerBatchMaxBytes(1<<20), kgo.RequiredAcks(kgo.AllISRAcks()))...)
	if err != nil {
		return err
	}
	defer cl.Close()

	var replayed, skipped int64
	perTopic := map[string]int{}
	next := map[int32]int64{}
	for p, r := range remaining {
		next[p] = r[0]
	}
	done := func() bool {
		for p, r := range remaining {
			if next[p] < r[1] {
				return false
			}
		}
		return true
	}
	for !done() {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return err
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = errors.Join(ferr, err) })
		if ferr != nil {
			return fmt.Errorf("reading %s: %w", o.from, ferr)
		}
		var batch []*kgo.Record
		var origins []kgo.EpochOffset // batch[i]'s dead letter: its partition (Epoch) and offset
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset >= remaining[r.Partition][1] {
				return // arrived after the replay started: the next replay's
			}
			next[r.Partition] = r.Offset + 1
			target := ""
			var headers []kgo.RecordHeader
			dlq := map[string]string{}
			for _, h := range r.Headers {
				if h.Key == "source_topic" {
					target = string(h.Value)
				}
				if !dlqHeaders[h.Key] {
					headers = append(headers, h)
				} else {
					dlq[h.Key] = string(h.Value)
				}
			}
			if o.dryRun {
				fmt.Fprintf(out, "  %s/%d@%d from %s/%s@%s, failed in %s: %s\n", o.from, r.Partition, r.Offset,
					orDash(target), orDash(dlq["source_partition"]), orDash(dlq["source_offset"]), orDash(dlq["error_component"]), orDash(dlq["error"]))
			}
			if target == "" {
				skipped++
				return
			}
			perTopic[target]++
			batch = append(batch, &kgo.Record{Topic: target, Key: r.Key, Value: r.Value, Headers: headers})
			origins = append(origins, kgo.EpochOffset{Epoch: r.Partition, Offset: r.Offset})
		})
		if o.dryRun {
			replayed += int64(len(batch))
			continue
		}
		// What this poll re-published is committed before the next poll,
		// up to the first record that failed in each partition: a replay
		// that fails or is stopped midway, run again, publishes only what
		// the first did not.
		commitUpTo := maps.Clone(next)
		var perr error
		for i, res := range cl.ProduceSync(ctx, batch...) {
			if res.Err != nil {
				if at := origins[i].Offset; at < commitUpTo[origins[i].Epoch] {
					commitUpTo[origins[i].Epoch] = at
				}
				perr = cmp.Or(perr, res.Err)
				continue
			}
			replayed++
		}
		if err := commitReplay(ctx, adm, o, commitUpTo); err != nil {
			return err
		}
		if perr != nil {
			return fmt.Errorf("re-publishing (what was re-published is committed: a second replay does not repeat it): %w", perr)
		}
	}
	var topics []string
	for t, n := range perTopic {
		topics = append(topics, fmt.Sprintf("%s: %d", t, n))
	}
	sort.Strings(topics)
	verb := "re-published"
	if o.dryRun {
		verb = "would re-publish"
	}
	fmt.Fprintf(out, "odsflow dlq replay: %s %d dead letters from %s (%s); %d without a source_topic skipped\n",
		verb, replayed, o.from, strings.Join(topics, ", "), skipped)
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
