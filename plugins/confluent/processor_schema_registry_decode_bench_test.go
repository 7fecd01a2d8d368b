package confluent

import (
	"context"
	"testing"

	"github.com/redpanda-data/benthos/v4/public/service"
)

// BenchmarkSchemaRegistryDecode decodes the seed's T_Accounts envelope
// (update with before and after, source with an LSN) through the processor,
// Confluent header and codec lookup included, on one goroutine: the rate is
// per core.
func BenchmarkSchemaRegistryDecode(b *testing.B) {
	reg := newRegistry(b)
	id := reg.register(b, "acc-value", fixture(b, "T_Accounts"))
	row := &accValue{ID: 7, AccountNumber: 100042, AccountStatus: "ACTIVE", AccountBalance: 2500, CustomerID: 3,
		CreatedAt: ptr(int64(1709633472123456)), UpdatedAt: ptr(int64(1709633473123456))}
	msg := wire(id, hambaEncode(b, fixture(b, "T_Accounts"), accEnvelope{
		Before: row, After: row, Op: "u", TsMs: ptr(int64(1709633473000)),
		Source: pgSource{Version: "2.5.0.Final", Connector: "postgresql", Name: "fulfillment", TsMs: 1709633472999,
			Snapshot: ptr("false"), DB: "bank", Schema: "transactions_schema", Table: "T_Accounts", TxID: ptr(int64(991)), LSN: ptr(int64(23456789))},
	}))
	p := newTestDecoder(b, "url: "+reg.URL+"\n"+exactOpts)
	ctx := context.Background()
	if _, err := p.Process(ctx, service.NewMessage(msg)); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Process(ctx, service.NewMessage(msg)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "envelopes/s")
}
