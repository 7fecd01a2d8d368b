package devstack

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
)

func TestStackServesRealClients(t *testing.T) {
	s := ForTest(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Kafka: an auto-created topic gets the default 3 partitions, and what
	// one client produces another consumes over TCP.
	const topic = "devstack.test"
	prod, err := kgo.NewClient(kgo.SeedBrokers(s.Brokers), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	if err := prod.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte("k"), Value: []byte("hello")}).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	details, err := kadm.NewClient(prod).ListTopics(ctx, topic)
	if err != nil {
		t.Fatalf("list topics: %v", err)
	}
	if n := len(details[topic].Partitions); n != 3 {
		t.Errorf("auto-created topic has %d partitions, want 3", n)
	}
	cons, err := kgo.NewClient(kgo.SeedBrokers(s.Brokers), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	fetches := cons.PollFetches(ctx)
	if err := fetches.Err(); err != nil {
		t.Fatalf("poll: %v", err)
	}
	recs := fetches.Records()
	if len(recs) != 1 || string(recs[0].Value) != "hello" || string(recs[0].Key) != "k" {
		t.Fatalf("consumed %d records (%v), want the one produced", len(recs), recs)
	}

	// Registry: reachable over HTTP by an independent client.
	rc, err := sr.NewClient(sr.URLs(s.RegistryURL))
	if err != nil {
		t.Fatal(err)
	}
	ss, err := rc.CreateSchema(ctx, topic+"-value", sr.Schema{Schema: `{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}`})
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	if ss.ID < 1 || ss.Version != 1 {
		t.Errorf("registered id=%d version=%d, want id>=1 version 1", ss.ID, ss.Version)
	}

	// Postgres: the ods database, and per-test databases isolated from it.
	conn, err := pgx.Connect(ctx, s.PostgresDSN)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE TABLE marker (id int)"); err != nil {
		t.Fatal(err)
	}
	other, err := pgx.Connect(ctx, s.NewDatabase(t))
	if err != nil {
		t.Fatalf("connect to new database: %v", err)
	}
	defer other.Close(ctx)
	var n int
	if err := other.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE tablename = 'marker'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("new database sees the ods database's table")
	}
}

func TestLoopbackAddr(t *testing.T) {
	for in, want := range map[string]string{
		"":               "127.0.0.1:0",
		"localhost:9092": "127.0.0.1:9092",
		":9092":          "127.0.0.1:9092",
		"127.0.0.2:1":    "127.0.0.2:1",
		"[::1]:8081":     "[::1]:8081",
	} {
		got, err := LoopbackAddr(in)
		if err != nil || got != want {
			t.Errorf("LoopbackAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"0.0.0.0:9092", "10.1.2.3:9092", "example.com:80", "9092"} {
		if got, err := LoopbackAddr(in); err == nil {
			t.Errorf("LoopbackAddr(%q) = %q, want an error", in, got)
		}
	}
}

func TestBusyPortNamesThePart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy := ln.Addr().String()
	for _, tc := range []struct {
		part string
		cfg  Config
	}{
		{"kafka", Config{KafkaAddr: busy, NoPostgres: true}},
		{"registry", Config{RegistryAddr: busy, NoPostgres: true}},
		{"postgres", Config{PostgresPort: ln.Addr().(*net.TCPAddr).Port}},
	} {
		s, err := Start(context.Background(), tc.cfg)
		if err == nil {
			_ = s.Close(context.Background())
			t.Errorf("%s on busy %s: started", tc.part, busy)
			continue
		}
		var inUse *PortInUseError
		if !errors.As(err, &inUse) || inUse.Part != tc.part || inUse.Addr != busy {
			t.Errorf("%s on busy %s: got %v, want PortInUseError for that part and address", tc.part, busy, err)
		}
	}
}

func TestRedactDSN(t *testing.T) {
	got := RedactDSN("postgres://app:s3cret@db:5432/ods?sslmode=disable")
	if got != "postgres://app:xxxxx@db:5432/ods?sslmode=disable" {
		t.Errorf("RedactDSN = %q", got)
	}
	if got := RedactDSN("host=db password=s3cret"); got == "host=db password=s3cret" {
		t.Errorf("keyword DSN with password not redacted: %q", got)
	}
	for _, dsn := range []string{
		"postgres://app@db.internal:5432/ods?password=s3cret&sslmode=require",
		"postgres://app:@db.internal:5432/ods?sslmode=require&PassWord=s3cret",
		"postgresql://app@db/ods?sslpassword=s3cret&sslkey=/k.pem",
		"host=db PASSWORD=s3cret",
		// URLs Go cannot parse: a password with % or /.
		"postgres://postgres:s3cret%off@127.0.0.1:5432/ods",
		"postgres://postgres:pa/s3cret:w0rd@127.0.0.1:5432/ods",
	} {
		if got := RedactDSN(dsn); strings.Contains(got, "s3cret") {
			t.Errorf("RedactDSN(%q) = %q", dsn, got)
		}
	}
	if got := RedactDSN("postgres://app@db/ods?password=s3cret&sslmode=require"); !strings.Contains(got, "sslmode=require") || !strings.Contains(got, "app@db/ods") {
		t.Errorf("RedactDSN hid more than the password: %q", got)
	}
}
