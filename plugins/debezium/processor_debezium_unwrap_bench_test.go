package debezium

import (
	"context"
	"testing"

	"github.com/redpanda-data/benthos/v4/public/service"
)

// BenchmarkDebeziumUnwrap unwraps a decoded update envelope on one
// goroutine: the rate is per core.
func BenchmarkDebeziumUnwrap(b *testing.B) {
	u, err := newUnwrap(func() *service.ParsedConfig {
		c, err := unwrapSpec().ParseYAML(`{}`, nil)
		if err != nil {
			b.Fatal(err)
		}
		return c
	}(), service.MockResources())
	if err != nil {
		b.Fatal(err)
	}
	row := map[string]any{"id": int64(7), "account_number": int64(100042), "account_status": "ACTIVE",
		"account_balance": "25.00", "customer_id": int64(3), "created_at": "2024-03-05T10:11:12.123456Z", "updated_at": "2024-03-05T10:11:13.123456Z"}
	source := map[string]any{"version": "2.5.0.Final", "connector": "postgresql", "name": "fulfillment", "ts_ms": int64(1709633472999),
		"snapshot": "false", "db": "bank", "schema": "transactions_schema", "table": "T_Accounts", "txId": int64(991), "lsn": int64(23456789)}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		msg := service.NewMessage(nil)
		msg.SetStructuredMut(map[string]any{"before": row, "after": row, "source": source, "op": "u", "ts_ms": int64(1)})
		if _, err := u.Process(ctx, msg); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "envelopes/s")
}
