package kafka

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/odsflow/odsflow/internal/devstack"
)

// BenchmarkKafkaFranzInput measures consume→drop: one op reads a whole
// topic of ~300-byte records (3 partitions) through ReadBatch and acks
// every batch at once, as a pipeline with a fast output would, with a new
// consumer group each op so every op starts at offset 0.
func BenchmarkKafkaFranzInput(b *testing.B) {
	const records, valueSize = 60_000, 300
	s := devstack.ForTest(b, devstack.Config{NoPostgres: true})
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.Brokers), kgo.AllowAutoTopicCreation(), kgo.ProducerBatchMaxBytes(16<<10))
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range records {
		doc := fmt.Sprintf(`{"id":%d,"op":"u","pad":"`, i)
		doc += strings.Repeat("x", valueSize-len(doc)-2) + `"}`
		wg.Add(1)
		cl.Produce(context.Background(), &kgo.Record{Topic: "bench.in", Key: fmt.Appendf(nil, "k%d", i), Value: []byte(doc)},
			func(_ *kgo.Record, err error) {
				if err != nil {
					b.Error(err)
				}
				wg.Done()
			})
	}
	wg.Wait()
	cl.Close()

	for _, batching := range []string{"", "batching: { count: 500, period: 10ms }"} {
		name := "batching=backlog"
		if batching != "" {
			name = "batching=count500"
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(records * valueSize)
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				in := newTestInput(b, fmt.Sprintf("seed_brokers: [%q]\ntopics: [bench.in]\nconsumer_group: bench-%s-%d\n%s", s.Brokers, name, i, batching))
				ctx := context.Background()
				if err := in.Connect(ctx); err != nil {
					b.Fatal(err)
				}
				for got := 0; got < records; {
					batch, ack, err := in.ReadBatch(ctx)
					if err != nil {
						b.Fatal(err)
					}
					got += len(batch)
					_ = ack(ctx, nil)
				}
				_ = in.Close(ctx)
			}
			b.ReportMetric(float64(records)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
