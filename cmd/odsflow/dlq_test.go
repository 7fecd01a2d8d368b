package main

import (
	"bytes"
	"context"
	mathrand "math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
)

// TestDLQReplaySkipsExpiredDeadLetters: dead letters that retention
// removed before a replay are reported, not waited for, and the ones
// left are replayed.
func TestDLQReplaySkipsExpiredDeadLetters(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, conn := dlqCluster(t, []kfake.Opt{kfake.SeedTopics(1, "odsflow.dlq", "src")})
	produce := func(values ...string) {
		t.Helper()
		for _, v := range values {
			r := &kgo.Record{Topic: "odsflow.dlq", Value: []byte(v), Headers: []kgo.RecordHeader{
				{Key: "source_topic", Value: []byte("src")}, {Key: "error", Value: []byte("bad")}, {Key: "own", Value: []byte("kept")}}}
			if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	o := dlqOptions{from: "odsflow.dlq", conn: conn, group: "replay"}
	produce("a", "b", "c")
	var out bytes.Buffer
	if err := replayDLQ(ctx, o, &out); err != nil {
		t.Fatalf("first replay: %v\n%s", err, out.String())
	}
	produce("d", "e")
	// Retention removes d and e: nothing is left to replay.
	del := kadm.Offsets{}
	del.AddOffset("odsflow.dlq", 0, 5, -1)
	if _, err := kadm.NewClient(cl).DeleteRecords(ctx, del); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := replayDLQ(ctx, o, &out); err != nil {
		t.Fatalf("replay after retention: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "2 dead letters of odsflow.dlq expired") || !strings.Contains(out.String(), "nothing to replay") {
		t.Errorf("replay output does not report the two expired dead letters, and nothing to replay:\n%s", out.String())
	}
	out.Reset()
	if err := replayDLQ(ctx, o, &out); err != nil || strings.Contains(out.String(), "expired") {
		t.Errorf("a replay after that reports the expired dead letters again (%v):\n%s", err, out.String())
	}
	produce("f")
	out.Reset()
	dry := o
	dry.dryRun = true
	if err := replayDLQ(ctx, dry, &out); err != nil {
		t.Fatalf("dry run: %v\n%s", err, out.String())
	}
	if want := "  odsflow.dlq/0@5 from src/-@-, failed in -: bad\n"; !strings.Contains(out.String(), want) || !strings.Contains(out.String(), "would re-publish 1 dead letters") {
		t.Errorf("dry run lists:\n%s\nwant the dead letter %q and its count", out.String(), want)
	}
	out.Reset()
	if err := replayDLQ(ctx, o, &out); err != nil {
		t.Fatalf("replay of a dead letter after the expired ones: %v\n%s", err, out.String())
	}
	// src now holds a, b, c and f, with their own headers only.
	consumer, err := kgo.NewClient(append(conn[:len(conn):len(conn)], kgo.ConsumeTopics("src"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close()
	var got []string
	for len(got) < 4 {
		fs := consumer.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("src holds %v: %v", got, err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if len(r.Headers) != 1 || r.Headers[0].Key != "own" {
				t.Errorf("replayed %s with headers %v, want only its own", r.Value, r.Headers)
			}
			got = append(got, string(r.Value))
		})
	}
	if strings.Join(got, "") != "abcf" {
		t.Errorf("replayed %v, want a b c f", got)
	}
	// Everything is replayed: a third replay has nothing to do.
	out.Reset()
	if err := replayDLQ(ctx, o, &out); err != nil || !strings.Contains(out.String(), "nothing to replay") {
		t.Errorf("third replay: %v\n%s", err, out.String())
	}
}

// dlq replay reaches a cluster that wants SASL, with the settings the
// kafka_franz components read, and says why when the password is wrong
// (without it).
func TestDLQReplayWithSASL(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "odsflow.dlq", "src"),
		kfake.EnableSASL(), kfake.Superuser("PLAIN", "admin", "s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.SASL(plain.Auth{User: "admin", Pass: "s3cret"}.AsMechanism()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	r := &kgo.Record{Topic: "odsflow.dlq", Value: []byte("v"), Headers: []kgo.RecordHeader{{Key: "source_topic", Value: []byte("src")}}}
	if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
		t.Fatal(err)
	}

	wrong, err := connectionSettings(c.ListenAddrs(), false, "", "PLAIN", "admin", "n0pe")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
	err = replayDLQ(wctx, dlqOptions{from: "odsflow.dlq", conn: wrong, group: "replay"}, &out)
	wcancel()
	if err == nil || strings.Contains(err.Error(), "n0pe") {
		t.Errorf("replay with a wrong password: %v (want an error, without the password)", err)
	}

	right, err := connectionSettings(c.ListenAddrs(), false, "", "PLAIN", "admin", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := replayDLQ(ctx, dlqOptions{from: "odsflow.dlq", conn: right, group: "replay"}, &out); err != nil || !strings.Contains(out.String(), "re-published 1 dead letters") {
		t.Errorf("replay with SASL: %v\n%s", err, out.String())
	}
}

// Before any dead letter is written, the dead-letter topic does not exist
// (the first one creates it): a replay, or a dry run, finds nothing to do
// and says so, without an error.
func TestDLQReplayOfATopicNotCreatedYet(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, conn := dlqCluster(t, nil)
	for _, dry := range []bool{true, false} {
		var out bytes.Buffer
		if err := replayDLQ(ctx, dlqOptions{from: "odsflow.dlq", conn: conn, group: "replay", dryRun: dry}, &out); err != nil || !strings.Contains(out.String(), "nothing to replay in odsflow.dlq") {
			t.Errorf("dry run %v: %v, %q", dry, err, out.String())
		}
	}
}

// Dead letters of several DLQ partitions for one source partition are
// re-published in batches a broker with the default max.message.bytes
// (1MiB) takes: 1.8 MB of them went out as one 16MiB batch, refused.
func TestDLQReplayBatchesFitABrokersLimit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, conn := dlqCluster(t, []kfake.Opt{kfake.SeedTopics(3, "odsflow.dlq"), kfake.SeedTopics(1, "src")},
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	random := mathrand.New(mathrand.NewPCG(1, 2)) // incompressible values
	for p := int32(0); p < 3; p++ {
		for range 60 {
			v := make([]byte, 10_000)
			for i := range v {
				v[i] = byte(random.IntN(256))
			}
			r := &kgo.Record{Topic: "odsflow.dlq", Partition: p, Value: v,
				Headers: []kgo.RecordHeader{{Key: "source_topic", Value: []byte("src")}}}
			if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	var out bytes.Buffer
	if err := replayDLQ(ctx, dlqOptions{from: "odsflow.dlq", conn: conn, group: "replay"}, &out); err != nil {
		t.Fatalf("replay of 1.8 MB of dead letters: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "re-published 180 dead letters") {
		t.Errorf("replay: %s", out.String())
	}
}

// A replay that fails midway (a source topic gone) commits what it did
// re-publish: run again once the topic is back, it publishes only the
// rest, not a second copy.
func TestDLQReplayAfterAPartialFailurePublishesOnlyTheRest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, conn := dlqCluster(t, []kfake.Opt{kfake.SeedTopics(1, "odsflow.dlq", "src")})
	for _, to := range []string{"src", "gone"} {
		r := &kgo.Record{Topic: "odsflow.dlq", Key: []byte("k-" + to), Value: []byte("v-" + to),
			Headers: []kgo.RecordHeader{{Key: "source_topic", Value: []byte(to)}}}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	o := dlqOptions{from: "odsflow.dlq", conn: conn, group: "replay"}
	var out bytes.Buffer
	if err := replayDLQ(ctx, o, &out); err == nil {
		t.Fatalf("a replay to a missing topic succeeded: %s", out.String())
	}
	if _, err := kadm.NewClient(cl).CreateTopics(ctx, 1, 1, nil, "gone"); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := replayDLQ(ctx, o, &out); err != nil {
		t.Fatalf("second replay: %v", err)
	}
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, "src", "gone")
	if err != nil {
		t.Fatal(err)
	}
	for _, topic := range []string{"src", "gone"} {
		if n, _ := ends.Lookup(topic, 0); n.Offset != 1 {
			t.Errorf("%s holds %d copies of its one dead letter, want 1", topic, n.Offset)
		}
	}
}

// dlqCluster starts a one-broker cluster (seed its topics), closed when the
// test ends, and returns a client of it (with clientOpts) and the
// connection settings dlq replay would use.
func dlqCluster(t *testing.T, seed []kfake.Opt, clientOpts ...kgo.Opt) (*kgo.Client, []kgo.Opt) {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, seed...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, clientOpts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	conn, err := connectionSettings(c.ListenAddrs(), false, "", "", "", "")
	if err != nil {
		t.Fatal(err)
	}
	return cl, conn
}
