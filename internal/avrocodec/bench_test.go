package avrocodec

import (
	"fmt"
	"testing"

	"github.com/hamba/avro/v2"
)

// The benchmarks decode the seed T_Accounts envelope with a populated after
// and source, the pipeline's hot path. Target: ≥ 150k envelopes/s per core.
//
// They cycle through 1024 different envelopes (ids, statuses, times, LSNs
// and sequences vary as in a real stream) so that the decoder's string
// interning only gets the hits a real stream gives it.

func reportEnvelopes(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "envelopes/s")
}

func BenchmarkDecodeEnvelope(b *testing.B) {
	s, data := variedEnvelopes(b)
	c := mustCompile(b, s, Options{RawUnions: true, TranslateKafkaConnectTypes: true})
	b.SetBytes(int64(len(data[0])))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := c.Decode(data[i%len(data)]); err != nil {
			b.Fatal(err)
		}
	}
	reportEnvelopes(b)
}

// variedEnvelopes encodes 1024 updates of different accounts with hamba.
func variedEnvelopes(tb testing.TB) (avro.Schema, [][]byte) {
	tb.Helper()
	s := loadSchema(tb, accountsSchemaFile)
	statuses := []string{"active", "frozen", "closed"}
	out := make([][]byte, 1024)
	for i := range out {
		env := sampleAccountEnvelope()
		a, src := env.After, &env.Source
		a.ID, a.AccountNumber, a.AccountStatus = int32(1000+i), int32(5000000+i*7), statuses[i%3]
		a.AccountBalance, a.CustomerID = int32(i*12345%10000000), int32(100+i/4)
		a.CreatedAt = ptr(int64(sampleCreatedMicros + i*3_600_000_123))
		a.UpdatedAt = ptr(int64(sampleUpdatedMicros + i*1_000_001))
		lsn := int64(sampleLSN + i*568)
		src.TsMs, src.LSN, src.TxID = int64(sampleSourceTsMs+i*17), &lsn, ptr(int64(780+i/3))
		src.Sequence = ptr(fmt.Sprintf(`["%d","%d"]`, lsn-64, lsn))
		env.TsMs = ptr(int64(sampleEnvelopeTsMs + i*19))
		out[i] = hambaMarshal(tb, s, env)
	}
	return s, out
}

// BenchmarkDecodeEnvelopeParallel shows that a shared Codec scales across
// cores (pooled decoder state, no shared writes).
func BenchmarkDecodeEnvelopeParallel(b *testing.B) {
	s, data := variedEnvelopes(b)
	c := mustCompile(b, s, Options{RawUnions: true, TranslateKafkaConnectTypes: true})
	b.SetBytes(int64(len(data[0])))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			if _, err := c.Decode(data[i%len(data)]); err != nil {
				b.Error(err)
				return
			}
		}
	})
	reportEnvelopes(b)
}

// BenchmarkDecodeEnvelopeHambaGeneric is the baseline: hamba/avro's own
// generic decoding into map[string]any (no semantic type translation).
func BenchmarkDecodeEnvelopeHambaGeneric(b *testing.B) {
	s, data := variedEnvelopes(b)
	api := avro.Config{}.Freeze()
	b.SetBytes(int64(len(data[0])))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		var m map[string]any
		if err := api.Unmarshal(s, data[i%len(data)], &m); err != nil {
			b.Fatal(err)
		}
	}
	reportEnvelopes(b)
}

// BenchmarkDecodeEnvelopeHambaStruct is hamba/avro decoding into a Go
// struct, the fastest it offers, for reference.
func BenchmarkDecodeEnvelopeHambaStruct(b *testing.B) {
	s, data := variedEnvelopes(b)
	api := avro.Config{}.Freeze()
	b.SetBytes(int64(len(data[0])))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		var env accountEnvelope
		if err := api.Unmarshal(s, data[i%len(data)], &env); err != nil {
			b.Fatal(err)
		}
	}
	reportEnvelopes(b)
}

func BenchmarkEncodeEnvelope(b *testing.B) {
	s, data := sampleEnvelopeBytes(b)
	c := mustCompile(b, s, Options{RawUnions: true, TranslateKafkaConnectTypes: true})
	v := mustDecode(b, c, data)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	var dst []byte
	for range b.N {
		var err error
		if dst, err = c.AppendEncode(dst[:0], v); err != nil {
			b.Fatal(err)
		}
	}
	reportEnvelopes(b)
}
