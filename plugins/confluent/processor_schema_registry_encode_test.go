package confluent

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/redpanda-data/benthos/v4/public/service"

	_ "github.com/odsflow/odsflow/plugins/debezium"
	_ "github.com/redpanda-data/benthos/v4/public/components/pure"
)

func newTestEncoder(t testing.TB, yaml string) *encodeProcessor {
	t.Helper()
	conf, err := encodeSpec().ParseYAML(yaml, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := newEncodeProcessor(conf, service.MockResources())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestEncodeRoundTripAndIndependentDecode(t *testing.T) {
	reg := newRegistry(t)
	id := reg.register(t, "money-value", moneySchema)
	enc := newTestEncoder(t, "url: "+reg.URL+"\nsubject: ${! @topic }-value\navro: { raw_unions: true }")
	doc := map[string]any{"dec": "12.34", "connect_dec": "-0.001", "vsd": "12.345", "zoned": "2024-01-01T00:00:00Z",
		"date": "2024-03-05", "ms": "2024-03-05T10:11:12.123Z", "ns": int64(5)}
	msg := service.NewMessage(nil)
	msg.SetStructuredMut(doc)
	msg.MetaSetMut("topic", "money")
	out, err := enc.Process(context.Background(), msg)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := out[0].AsBytes()
	if b[0] != 0 || int(b[4]) != id {
		t.Fatalf("header % x, want 0x00 and schema id %d", b[:5], id)
	}
	// hamba reads what we wrote.
	s, _ := avro.ParseWithCache(moneySchema, "", &avro.SchemaCache{})
	var m money
	if err := avro.Unmarshal(s, b[5:], &m); err != nil {
		t.Fatalf("hamba cannot read the encoding: %v", err)
	}
	if m.Dec.FloatString(2) != "12.34" || m.Date != 19787 || m.Ms != 1709633472123 || m.Ns != 5 || m.VSD.Scale != 3 {
		t.Errorf("hamba read %+v", m)
	}
	// And our decoder gives the document back.
	got, err := decode(t, newTestDecoder(t, "url: "+reg.URL+"\n"+exactOpts), b)
	if err != nil {
		t.Fatal(err)
	}
	doc["ns"] = "1970-01-01T00:00:00.000000005Z"
	if !reflect.DeepEqual(got, doc) {
		t.Errorf("round trip\n%#v\nwant\n%#v", got, doc)
	}

	bad := service.NewMessage(nil)
	bad.SetStructuredMut(map[string]any{"dec": "1.234"})
	bad.MetaSetMut("topic", "money")
	if _, err := enc.Process(context.Background(), bad); err == nil {
		t.Error("a decimal with more digits than the scale was encoded")
	}
}

func TestEncodePicksUpNewVersionAfterRefresh(t *testing.T) {
	reg := newRegistry(t)
	reg.register(t, "r-value", `{"type":"record","name":"R","fields":[{"name":"a","type":"long"}]}`)
	enc := newTestEncoder(t, "url: "+reg.URL+"\nsubject: r-value\nrefresh_period: 100ms")
	encodeA := func() []byte {
		msg := service.NewMessage([]byte(`{"a": 1, "b": "x"}`))
		out, err := enc.Process(context.Background(), msg)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := out[0].AsBytes()
		return b
	}
	first := encodeA()
	id2 := reg.register(t, "r-value", `{"type":"record","name":"R","fields":[{"name":"a","type":"long"},{"name":"b","type":"string","default":""}]}`)
	time.Sleep(150 * time.Millisecond)
	// The first message after the period starts the refresh, in the
	// background, and goes on with the schema known; the new one follows.
	second := encodeA()
	for deadline := time.Now().Add(5 * time.Second); int(second[4]) != id2 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		second = encodeA()
	}
	if int(second[4]) != id2 || len(second) != len(first)+2 {
		t.Errorf("after refresh: header % x (len %d), want schema id %d with the new field", second[:5], len(second), id2)
	}
}

// TestDecodeKafkaKeyInYAML: the Debezium key of a tombstone decoded with a
// branch, then the tombstone passed on as a delete of that key.
func TestDecodeKafkaKeyInYAML(t *testing.T) {
	reg := newRegistry(t)
	keyID := reg.register(t, "acc-key", `{"type":"record","name":"Key","namespace":"fulfillment.transactions_schema.T_Accounts","fields":[{"name":"id","type":"int"}]}`)
	key := wire(keyID, []byte{0x0E}) // id 7

	b := service.NewStreamBuilder()
	if err := b.AddProcessorYAML(`
branch:
  request_map: 'root = @kafka_key'
  processors:
    - schema_registry_decode: { url: "` + reg.URL + `", avro: { raw_unions: true } }
  result_map: 'meta cdc_key = this'
`); err != nil {
		t.Fatal(err)
	}
	if err := b.AddProcessorYAML(`debezium_unwrap: { tombstones: delete }`); err != nil {
		t.Fatal(err)
	}
	produce, err := b.AddProducerFunc()
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *service.Message, 1)
	if err := b.AddConsumerFunc(func(_ context.Context, m *service.Message) error { got <- m; return nil }); err != nil {
		t.Fatal(err)
	}
	stream, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go func() { _ = stream.Run(ctx) }()
	tomb := service.NewMessage(nil)
	tomb.MetaSetMut("kafka_key", string(key))
	tomb.MetaSetMut("kafka_topic", "fulfillment.transactions_schema.T_Accounts")
	if err := produce(ctx, tomb); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		body, _ := m.AsStructured()
		op, _ := m.MetaGetMut("cdc_op")
		table, _ := m.MetaGetMut("cdc_table")
		if !reflect.DeepEqual(body, map[string]any{"id": int64(7)}) || op != "d" || table != "T_Accounts" {
			t.Errorf("tombstone became body %v op %v table %v; want a delete of {id: 7} on T_Accounts", body, op, table)
		}
		if err := m.GetError(); err != nil {
			t.Errorf("message errored: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("no message out of the stream")
	}
	_ = stream.Stop(context.Background())
}

// Redpanda Connect's avro_raw_json reads unions bare, as avro.raw_unions:
// a union value in the Avro JSON encoding is then a record, not a string.
func TestEncodeAvroRawJSONReadsUnionsBare(t *testing.T) {
	reg := newRegistry(t)
	reg.register(t, "u-value", `{"type":"record","name":"U","fields":[{"name":"s","type":["null","string"]}]}`)
	for conf, wantErr := range map[string]bool{"avro_raw_json: true": true, "avro: { raw_unions: true }": true, "": false} {
		enc := newTestEncoder(t, "url: "+reg.URL+"\nsubject: u-value\n"+conf)
		msg := service.NewMessage(nil)
		msg.SetStructuredMut(map[string]any{"s": map[string]any{"string": "hello"}})
		_, err := enc.Process(context.Background(), msg)
		if (err != nil) != wantErr {
			t.Errorf("%q: encoding {\"string\": \"hello\"}: %v (want an error: %v)", conf, err, wantErr)
		}
	}
}

// TestEncodeOutageCostsOneBudgetPerBatch: during a registry outage, the
// messages of a batch for one subject wait for one retry budget together,
// all come out errored with the reason, and an errored message passes.
func TestEncodeOutageCostsOneBudgetPerBatch(t *testing.T) {
	url, hits := downRegistry(t)
	conf := "url: " + url + "\nsubject: r-value\nretry_max_elapsed: 500ms"
	msg := func() *service.Message { return service.NewMessage([]byte(`{"a": 1}`)) }
	if _, err := newTestEncoder(t, conf).Process(context.Background(), msg()); err == nil {
		t.Fatal("encoded with the registry down")
	}
	one := hits.Swap(0)
	var batch service.MessageBatch
	for range 20 {
		batch = append(batch, msg())
	}
	failed := msg()
	failed.SetError(errors.New("an earlier stage"))
	batch = append(batch, failed)
	out, err := newTestEncoder(t, conf).ProcessBatch(context.Background(), batch)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range out[0][:20] {
		if m.GetError() == nil || !strings.Contains(m.GetError().Error(), "503") {
			t.Errorf("message %d: error %v, want the registry's 503", i, m.GetError())
		}
	}
	if err := out[0][20].GetError(); err == nil || err.Error() != "an earlier stage" {
		t.Errorf("the errored message: %v, want its own error kept", err)
	}
	if n := hits.Load(); n > 2*one {
		t.Errorf("a batch of 20 messages of one subject made %d requests during the outage; one message alone makes %d", n, one)
	}
}
