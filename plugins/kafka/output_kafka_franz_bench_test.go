package kafka

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"

	"github.com/odsflow/odsflow/internal/devstack"
)

// BenchmarkKafkaFranzOutput writes batches of 500 keyed ~300-byte messages
// through WriteBatch to the dev-stack broker (3 partitions, idempotent,
// default compression): one batch at a time, and 10 batches in flight as
// with the default max_in_flight. One op is one round of batches.
func BenchmarkKafkaFranzOutput(b *testing.B) {
	const batchSize, valueSize = 500, 300
	s := devstack.ForTest(b, devstack.Config{NoPostgres: true})

	for _, inFlight := range []int{1, 10} {
		b.Run(fmt.Sprintf("in_flight=%d", inFlight), func(b *testing.B) {
			out := kfoTestOutput(b, fmt.Sprintf(`
seed_brokers: [ %q ]
topic: bench.out.%d
key: '${! meta("k") }'
`, s.Brokers, inFlight))
			batches := make([]service.MessageBatch, inFlight)
			for j := range batches {
				for i := range batchSize {
					// A CDC-like JSON document padded to valueSize bytes.
					doc := fmt.Sprintf(`{"id":%d,"batch":%d,"op":"u","pad":"`, i, j)
					doc += strings.Repeat("x", valueSize-len(doc)-2) + `"}`
					msg := service.NewMessage([]byte(doc))
					msg.MetaSetMut("k", fmt.Sprintf("customer-%d-%d", j, i))
					batches[j] = append(batches[j], msg)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()

			// Untimed: the first write loads (and creates) the topic.
			if err := out.WriteBatch(ctx, batches[0]); err != nil {
				b.Fatalf("warm-up WriteBatch: %v", err)
			}

			b.SetBytes(int64(inFlight * batchSize * valueSize))
			b.ResetTimer()
			for range b.N {
				var wg sync.WaitGroup
				errs := make([]error, inFlight)
				for j := range batches {
					wg.Add(1)
					go func() {
						defer wg.Done()
						errs[j] = out.WriteBatch(ctx, batches[j])
					}()
				}
				wg.Wait()
				for _, err := range errs {
					if err != nil {
						b.Fatalf("WriteBatch: %v", err)
					}
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N*inFlight*batchSize)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
