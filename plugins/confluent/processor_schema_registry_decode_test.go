package confluent

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/hamba/avro/v2"
	"github.com/redpanda-data/benthos/v4/public/service"

	"github.com/odsflow/odsflow/internal/syncbuf"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/odsflow/odsflow/internal/debeziumtest"
	"github.com/odsflow/odsflow/internal/schemaregistry"
)

// The seed's T_Accounts envelope as Go structs, encoded by hamba: an
// encoder independent of the decoder under test.
type (
	accValue    = debeziumtest.AccountValue
	pgSource    = debeziumtest.Source
	accEnvelope = debeziumtest.AccountEnvelope
)

func ptr[T any](v T) *T { return &v }

// registry serves our schema registry over real HTTP and counts requests
// per path.
type registry struct {
	*httptest.Server
	hits sync.Map // path → *atomic.Int64
	sr   *sr.Client
}

func newRegistry(t testing.TB) *registry {
	t.Helper()
	r := &registry{}
	inner := schemaregistry.New()
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		n, _ := r.hits.LoadOrStore(req.URL.Path, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
		inner.ServeHTTP(w, req)
	}))
	t.Cleanup(r.Close)
	var err error
	if r.sr, err = sr.NewClient(sr.URLs(r.URL)); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *registry) register(t testing.TB, subject, schema string, refs ...sr.SchemaReference) int {
	t.Helper()
	ss, err := r.sr.CreateSchema(context.Background(), subject, sr.Schema{Schema: schema, References: refs})
	if err != nil {
		t.Fatalf("registering %s: %v", subject, err)
	}
	return ss.ID
}

func (r *registry) count(path string) int64 {
	n, ok := r.hits.Load(path)
	if !ok {
		return 0
	}
	return n.(*atomic.Int64).Load()
}

func wire(id int, body []byte) []byte {
	out := make([]byte, 5, 5+len(body))
	binary.BigEndian.PutUint32(out[1:], uint32(id))
	return append(out, body...)
}

func fixture(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/fulfillment.transactions_schema." + name + "-value.avsc")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func hambaEncode(t testing.TB, schema string, v any) []byte {
	t.Helper()
	s, err := avro.ParseWithCache(schema, "", &avro.SchemaCache{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := avro.Marshal(s, v)
	if err != nil {
		t.Fatalf("hamba marshal: %v", err)
	}
	return b
}

func newTestDecoder(t testing.TB, yaml string) *decodeProcessor {
	t.Helper()
	conf, err := decodeSpec().ParseYAML(yaml, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := newDecodeProcessor(conf, service.MockResources())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func decode(t testing.TB, p *decodeProcessor, b []byte) (any, error) {
	t.Helper()
	out, err := p.Process(context.Background(), service.NewMessage(b))
	if err != nil {
		return nil, err
	}
	return out[0].AsStructured()
}

const exactOpts = "avro: { raw_unions: true, preserve_logical_types: true, translate_kafka_connect_types: true }"

func TestDecodeSeedAccountsEnvelope(t *testing.T) {
	reg := newRegistry(t)
	id := reg.register(t, "fulfillment.transactions_schema.T_Accounts-value", fixture(t, "T_Accounts"))
	created := int64(1709633472123456) // 2024-03-05T10:11:12.123456Z
	env := accEnvelope{
		After: &accValue{ID: 7, AccountNumber: 100042, AccountStatus: "ACTIVE", AccountBalance: 2500, CustomerID: 3,
			CreatedAt: ptr(created), UpdatedAt: ptr(created + 1_000_000)},
		Source: pgSource{Version: "2.5.0.Final", Connector: "postgresql", Name: "fulfillment", TsMs: 1709633472999,
			Snapshot: ptr("false"), DB: "bank", Schema: "transactions_schema", Table: "T_Accounts", TxID: ptr(int64(991)), LSN: ptr(int64(23456789))},
		Op: "u", TsMs: ptr(int64(1709633473000)),
	}
	msg := wire(id, hambaEncode(t, fixture(t, "T_Accounts"), env))

	got, err := decode(t, newTestDecoder(t, "url: "+reg.URL+"\n"+exactOpts), msg)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"before": nil,
		"after": map[string]any{"id": int64(7), "account_number": int64(100042), "account_status": "ACTIVE",
			"account_balance": int64(2500), "customer_id": int64(3),
			"created_at": "2024-03-05T10:11:12.123456Z", "updated_at": "2024-03-05T10:11:13.123456Z"},
		"source": map[string]any{"version": "2.5.0.Final", "connector": "postgresql", "name": "fulfillment",
			"ts_ms": int64(1709633472999), "snapshot": "false", "db": "bank", "sequence": nil,
			"schema": "transactions_schema", "table": "T_Accounts", "txId": int64(991), "lsn": int64(23456789), "xmin": nil},
		"op": "u", "ts_ms": int64(1709633473000), "transaction": nil,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded\n%#v\nwant\n%#v", got, want)
	}

	// Without translation, timestamps stay microseconds and unions wrap.
	raw, err := decode(t, newTestDecoder(t, "url: "+reg.URL), msg)
	if err != nil {
		t.Fatal(err)
	}
	after := raw.(map[string]any)["after"].(map[string]any)["fulfillment.transactions_schema.T_Accounts.Value"].(map[string]any)
	if after["created_at"].(map[string]any)["long"] != created {
		t.Errorf("untranslated created_at = %#v, want {long: %d}", after["created_at"], created)
	}
}

func TestDecodeEverySeedFixture(t *testing.T) {
	reg := newRegistry(t)
	p := newTestDecoder(t, "url: "+reg.URL+"\n"+exactOpts)
	for _, table := range []string{"T_Customers", "T_Accounts", "T_Transactions"} {
		schema := fixture(t, table)
		id := reg.register(t, "fulfillment.transactions_schema."+table+"-value", schema)
		// A delete: before holds the row, after null.
		s, err := avro.ParseWithCache(schema, "", &avro.SchemaCache{})
		if err != nil {
			t.Fatal(err)
		}
		rec := s.(*avro.RecordSchema)
		valueSchema := rec.Fields()[0].Type().(*avro.UnionSchema).Types()[1].(*avro.RecordSchema)
		row := map[string]any{}
		want := map[string]any{}
		for i, f := range valueSchema.Fields() {
			switch typ := f.Type().(type) {
			case *avro.PrimitiveSchema:
				switch typ.Type() {
				case avro.Long: // MicroTimestamp: 2024-01-01T00:00:00.5Z
					row[f.Name()] = int64(1704067200500000)
					want[f.Name()] = "2024-01-01T00:00:00.5Z"
				case avro.Int:
					row[f.Name()] = i + 1
					want[f.Name()] = int64(i + 1)
				case avro.String:
					row[f.Name()] = "v" + f.Name()
					want[f.Name()] = "v" + f.Name()
				}
			case *avro.UnionSchema: // nullable MicroTimestamp: 2024-01-01T00:00:00Z
				row[f.Name()] = int64(1704067200000000)
				want[f.Name()] = "2024-01-01T00:00:00Z"
			}
		}
		if len(row) != len(valueSchema.Fields()) {
			t.Fatalf("%s: a column type this test does not know: %v", table, valueSchema)
		}
		body, err := avro.Marshal(valueSchema, row)
		if err != nil {
			t.Fatal(err)
		}
		// Hand-assemble the envelope: before = union branch 1 + row,
		// after = branch 0 (null), then a minimal source, op "d", nulls.
		env := append([]byte{0x02}, body...)
		env = append(env, 0x00)
		src, err := avro.Marshal(rec.Fields()[2].Type(), pgSource{Version: "2", Connector: "postgresql", Name: "n", TsMs: 5, DB: "d", Schema: "s", Table: table, LSN: ptr(int64(77))})
		if err != nil {
			t.Fatal(err)
		}
		env = append(env, src...)
		env = append(env, 0x02, 'd', 0x00, 0x00)
		got, err := decode(t, p, wire(id, env))
		if err != nil {
			t.Fatalf("%s: %v", table, err)
		}
		g := got.(map[string]any)
		if !reflect.DeepEqual(g["before"], want) || g["after"] != nil || g["op"] != "d" || g["source"].(map[string]any)["lsn"] != int64(77) {
			t.Errorf("%s: decoded %#v, want before %#v", table, g, want)
		}
	}
}

const moneySchema = `{"type":"record","name":"Money","namespace":"t","fields":[
 {"name":"dec","type":{"type":"bytes","logicalType":"decimal","precision":20,"scale":2}},
 {"name":"connect_dec","type":{"type":"bytes","connect.name":"org.apache.kafka.connect.data.Decimal","connect.parameters":{"scale":"3"}}},
 {"name":"vsd","type":{"type":"record","name":"VariableScaleDecimal","namespace":"io.debezium.data","connect.name":"io.debezium.data.VariableScaleDecimal","fields":[{"name":"scale","type":"int"},{"name":"value","type":"bytes"}]}},
 {"name":"zoned","type":{"type":"string","connect.name":"io.debezium.time.ZonedTimestamp"}},
 {"name":"date","type":{"type":"int","connect.name":"io.debezium.time.Date"}},
 {"name":"ms","type":{"type":"long","connect.name":"io.debezium.time.Timestamp"}},
 {"name":"ns","type":{"type":"long","connect.name":"io.debezium.time.NanoTimestamp"}}
]}`

type vsd struct {
	Scale int32  `avro:"scale"`
	Value []byte `avro:"value"`
}

type money struct {
	Dec        *big.Rat `avro:"dec"`
	ConnectDec []byte   `avro:"connect_dec"`
	VSD        vsd      `avro:"vsd"`
	Zoned      string   `avro:"zoned"`
	Date       int32    `avro:"date"`
	Ms         int64    `avro:"ms"`
	Ns         int64    `avro:"ns"`
}

func TestDecodeExactMoneyAndTimeVariants(t *testing.T) {
	reg := newRegistry(t)
	id := reg.register(t, "money-value", moneySchema)
	p := newTestDecoder(t, "url: "+reg.URL+"\n"+exactOpts)
	for _, tc := range []struct {
		in   money
		want map[string]any
	}{
		{
			in: money{Dec: big.NewRat(1234, 100), ConnectDec: []byte{0x30, 0x39} /* 12345 */, VSD: vsd{3, []byte{0x30, 0x39}},
				Zoned: "2024-03-05T10:11:12.5+01:00", Date: 19787, Ms: 1709633472123, Ns: 1709633472123456789},
			want: map[string]any{"dec": "12.34", "connect_dec": "12.345", "vsd": "12.345",
				"zoned": "2024-03-05T10:11:12.5+01:00", "date": "2024-03-05",
				"ms": "2024-03-05T10:11:12.123Z", "ns": "2024-03-05T10:11:12.123456789Z"},
		},
		{
			in: money{Dec: big.NewRat(-200, 100), ConnectDec: []byte{0xFF} /* -1 */, VSD: vsd{0, []byte{0x01, 0x00}},
				Zoned: "2024-01-01T00:00:00Z", Date: 0, Ms: 0, Ns: 0},
			want: map[string]any{"dec": "-2.00", "connect_dec": "-0.001", "vsd": "256",
				"zoned": "2024-01-01T00:00:00Z", "date": "1970-01-01",
				"ms": "1970-01-01T00:00:00Z", "ns": "1970-01-01T00:00:00Z"},
		},
		{
			// 123456789012345678.90 needs more than 64 bits unscaled.
			in: money{Dec: func() *big.Rat { r, _ := new(big.Rat).SetString("123456789012345678.90"); return r }(),
				ConnectDec: []byte{0x00}, VSD: vsd{2, []byte{0x05}}, Zoned: "z", Date: -1, Ms: -1, Ns: 1},
			want: map[string]any{"dec": "123456789012345678.90", "connect_dec": "0.000", "vsd": "0.05",
				"zoned": "z", "date": "1969-12-31", "ms": "1969-12-31T23:59:59.999Z", "ns": "1970-01-01T00:00:00.000000001Z"},
		},
	} {
		got, err := decode(t, p, wire(id, hambaEncode(t, moneySchema, tc.in)))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("decoded %#v\nwant    %#v", got, tc.want)
		}
	}
}

func TestDecodeSchemaChangeMidStream(t *testing.T) {
	reg := newRegistry(t)
	v1 := fixture(t, "T_Accounts")
	// v2 adds a nullable column after customer_id, as an ALTER TABLE would.
	var env map[string]any
	if err := json.Unmarshal([]byte(v1), &env); err != nil {
		t.Fatal(err)
	}
	value := env["fields"].([]any)[0].(map[string]any)["type"].([]any)[1].(map[string]any)
	fields := value["fields"].([]any)
	value["fields"] = append(fields[:5:5], append([]any{map[string]any{"name": "nickname", "type": []any{"null", "string"}, "default": nil}}, fields[5:]...)...)
	v2b, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	v2 := string(v2b)
	id1 := reg.register(t, "acc-value", v1)
	id2 := reg.register(t, "acc-value", v2)
	if id1 == id2 {
		t.Fatal("second version got the first id")
	}
	p := newTestDecoder(t, "url: "+reg.URL+"\n"+exactOpts)
	mk1 := func(n int32) []byte {
		return wire(id1, hambaEncode(t, v1, accEnvelope{After: &accValue{ID: n, AccountStatus: "A"}, Op: "c", Source: pgSource{Table: "T_Accounts"}}))
	}
	// v2 has the new column between customer_id and created_at: encode
	// it with a map so the field order follows the schema.
	mk2 := func(n int32, nick *string) []byte {
		after := map[string]any{"id": n, "account_number": int32(0), "account_status": "B", "account_balance": int32(0),
			"customer_id": int32(0), "nickname": nick, "created_at": nil, "updated_at": ptr(int64(0))}
		s, _ := avro.ParseWithCache(v2, "", &avro.SchemaCache{})
		rec := s.(*avro.RecordSchema)
		valueSchema := rec.Fields()[1].Type().(*avro.UnionSchema).Types()[1]
		if ref, ok := valueSchema.(*avro.RefSchema); ok {
			valueSchema = ref.Schema()
		}
		body, err := avro.Marshal(valueSchema, after)
		if err != nil {
			t.Fatal(err)
		}
		env := append([]byte{0x00, 0x02}, body...)
		src, _ := avro.Marshal(rec.Fields()[2].Type(), pgSource{Table: "T_Accounts"})
		env = append(env, src...)
		return wire(id2, append(env, 0x02, 'c', 0x00, 0x00))
	}
	for i, msg := range [][]byte{mk1(1), mk2(2, ptr("nick")), mk1(3), mk2(4, nil)} {
		got, err := decode(t, p, msg)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		after := got.(map[string]any)["after"].(map[string]any)
		nick, has := after["nickname"]
		switch i {
		case 0, 2:
			if has || after["account_status"] != "A" {
				t.Errorf("v1 message decoded as %v", after)
			}
		case 1:
			if nick != "nick" || after["account_status"] != "B" || after["id"] != int64(2) {
				t.Errorf("v2 message decoded as %v", after)
			}
		case 3:
			if !has || nick != nil || after["id"] != int64(4) {
				t.Errorf("v2 message with null column decoded as %v", after)
			}
		}
	}
}

func TestDecodeFetchesEachIDOnceUnderConcurrency(t *testing.T) {
	reg := newRegistry(t)
	id := reg.register(t, "acc-value", fixture(t, "T_Accounts"))
	msg := wire(id, hambaEncode(t, fixture(t, "T_Accounts"), accEnvelope{After: &accValue{ID: 1}, Op: "c"}))
	p := newTestDecoder(t, "url: "+reg.URL+"\n"+exactOpts)
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := decode(t, p, msg); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := reg.count(fmt.Sprintf("/schemas/ids/%d", id)); n != 1 {
		t.Errorf("schema id fetched %d times by 64 concurrent decodes, want 1", n)
	}
}

func TestDecodeResolvesReferences(t *testing.T) {
	reg := newRegistry(t)
	reg.register(t, "money-value", `{"type":"record","name":"Amount","namespace":"t","fields":[{"name":"cents","type":"long"}]}`)
	id := reg.register(t, "payment-value", `{"type":"record","name":"Payment","fields":[{"name":"amount","type":"t.Amount"}]}`,
		sr.SchemaReference{Name: "t.Amount", Subject: "money-value", Version: 1})
	body := []byte{0xF4, 0x03} // zigzag long 250
	got, err := decode(t, newTestDecoder(t, "url: "+reg.URL+"\n"+exactOpts), wire(id, body))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, map[string]any{"amount": map[string]any{"cents": int64(250)}}) {
		t.Errorf("decoded %#v", got)
	}
}

func TestDecodeBadInputIsErroredWithReason(t *testing.T) {
	reg := newRegistry(t)
	id := reg.register(t, "acc-value", fixture(t, "T_Accounts"))
	good := wire(id, hambaEncode(t, fixture(t, "T_Accounts"), accEnvelope{After: &accValue{ID: 1}, Op: "c"}))

	// A registry that serves a Protobuf schema under id 99.
	proto := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"schema":"syntax = \"proto3\";","schemaType":"PROTOBUF"}`))
	}))
	defer proto.Close()

	p := newTestDecoder(t, "url: "+reg.URL+"\n"+exactOpts)
	for name, tc := range map[string]struct {
		p    *decodeProcessor
		msg  []byte
		want string
	}{
		"wrong magic byte":  {p, append([]byte{0x01}, good[1:]...), "wrong magic byte 0x01"},
		"json not avro":     {p, []byte(`{"id":1}`), "wrong magic byte 0x7b"},
		"short header":      {p, []byte{0x00, 0x00, 0x01}, "shorter than the 5-byte"},
		"unknown schema id": {p, wire(4242, good[5:]), "schema id 4242"},
		"truncated avro":    {p, good[:len(good)-3], fmt.Sprintf("schema id %d", id)},
		"trailing bytes":    {p, append(append([]byte{}, good...), 0x00, 0x00), fmt.Sprintf("schema id %d", id)},
		"non-avro schema":   {newTestDecoder(t, "url: "+proto.URL), wire(99, []byte{0x00}), "PROTOBUF"},
	} {
		msg := service.NewMessage(tc.msg)
		_, err := tc.p.Process(context.Background(), msg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", name, err, tc.want)
		}
		if b, _ := msg.AsBytes(); string(b) != string(tc.msg) {
			t.Errorf("%s: the errored message was changed", name)
		}
	}

	// A tombstone passes through untouched.
	out, err := p.Process(context.Background(), service.NewMessage(nil))
	if err != nil || len(out) != 1 {
		t.Errorf("tombstone: %v", err)
	}
}

// TestDecodeRetriesWhileRegistryIsDown: the registry is unreachable for 10 s
// (connection refused), then comes up; the decode waits it out.
func TestDecodeRetriesWhileRegistryIsDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // refused until the registry starts below

	inner := schemaregistry.New()
	p := newTestDecoder(t, "url: http://"+addr+"\n"+exactOpts)

	go func() {
		time.Sleep(10 * time.Second)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Errorf("restarting the registry on %s: %v", addr, err)
			return
		}
		srv := &http.Server{Handler: inner}
		t.Cleanup(func() { _ = srv.Close() })
		go func() { _ = srv.Serve(ln) }()
	}()
	// The schema is registered through a side door before the registry is
	// reachable at addr, as if it had been running all along.
	srv := httptest.NewServer(inner)
	side, err := sr.NewClient(sr.URLs(srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	ss, err := side.CreateSchema(context.Background(), "acc-value", sr.Schema{Schema: fixture(t, "T_Accounts")})
	srv.Close()
	if err != nil {
		t.Fatal(err)
	}
	msg := wire(ss.ID, hambaEncode(t, fixture(t, "T_Accounts"), accEnvelope{After: &accValue{ID: 9}, Op: "c"}))
	start := time.Now()
	got, err := decode(t, p, msg)
	if err != nil {
		t.Fatalf("decode after the registry came back: %v", err)
	}
	if time.Since(start) < 9*time.Second {
		t.Errorf("decoded after %v: the registry was supposed to be down for 10s", time.Since(start))
	}
	if got.(map[string]any)["after"].(map[string]any)["id"] != int64(9) {
		t.Errorf("decoded %v", got)
	}

	// With a short retry budget, an unreachable registry errors the message.
	short := newTestDecoder(t, "url: http://127.0.0.1:1\nretry_max_elapsed: 500ms")
	if _, err := decode(t, short, msg); err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Errorf("unreachable registry: %v, want an error saying so", err)
	}
}

// downRegistry is a registry that answers 503 to everything, counting the
// requests.
func downRegistry(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	hits := &atomic.Int64{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, hits
}

// TestDecodeOutageCostsOneBudgetPerBatch: during a registry outage, the
// messages of a batch that need the same schema wait for one retry budget
// together, not one each, and all come out errored with the reason.
func TestDecodeOutageCostsOneBudgetPerBatch(t *testing.T) {
	url, hits := downRegistry(t)
	// What one message costs alone: its retry budget's requests.
	if _, err := decode(t, newTestDecoder(t, "url: "+url+"\nretry_max_elapsed: 1s"), wire(7, []byte{0x0E})); err == nil {
		t.Fatal("decoded with the registry down")
	}
	one := hits.Swap(0)
	p := newTestDecoder(t, "url: "+url+"\nretry_max_elapsed: 1s")
	var batch service.MessageBatch
	for range 20 {
		batch = append(batch, service.NewMessage(wire(7, []byte{0x0E})))
	}
	out, err := p.ProcessBatch(context.Background(), batch)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range out[0] {
		if m.GetError() == nil || !strings.Contains(m.GetError().Error(), "503") {
			t.Errorf("message %d: error %v, want the registry's 503", i, m.GetError())
		}
	}
	if n := hits.Load(); n > 2*one {
		t.Errorf("a batch of 20 messages of one schema made %d requests during the outage; one message alone makes %d", n, one)
	}
	// The next batch waits for the registry again (the pipeline is held,
	// not emptied into the dead-letter topic).
	hits.Store(0)
	if _, err := p.ProcessBatch(context.Background(), service.MessageBatch{service.NewMessage(wire(7, []byte{0x0E}))}); err != nil {
		t.Fatal(err)
	}
	if n := hits.Load(); n < one {
		t.Errorf("the next batch made %d requests; one message alone makes %d: it did not wait for the registry", n, one)
	}
}

// A schema the registry did not have (404) is asked for again by the next
// message: it may have been registered since (a follower answering before
// the leader's write reached it).
func TestDecodeAsksAgainAfterNotFound(t *testing.T) {
	reg := newRegistry(t)
	p := newTestDecoder(t, "url: "+reg.URL)
	schema := `{"type":"record","name":"K","fields":[{"name":"id","type":"int"}]}`
	batch := service.MessageBatch{service.NewMessage(wire(1, []byte{0x0E}))}
	out, err := p.ProcessBatch(context.Background(), batch)
	if err != nil {
		t.Fatal(err)
	}
	if out[0][0].GetError() == nil {
		t.Fatal("decoded with a schema the registry does not have")
	}
	if id := reg.register(t, "k-value", schema); id != 1 {
		t.Fatalf("registered as id %d, want 1", id)
	}
	msg := service.NewMessage(wire(1, []byte{0x0E}))
	out, err = p.ProcessBatch(context.Background(), service.MessageBatch{msg})
	if err != nil {
		t.Fatal(err)
	}
	if err := out[0][0].GetError(); err != nil {
		t.Fatalf("the schema is registered now, decode still fails: %v", err)
	}
}

// keyRecordThroughSideDoor registers a one-int record schema in inner
// through a plain HTTP server of its own (the registry under test may
// want TLS or credentials) and returns a message of it: {"id": 7}.
func keyRecordThroughSideDoor(t *testing.T, inner http.Handler) []byte {
	t.Helper()
	side := httptest.NewServer(inner)
	defer side.Close()
	sc, err := sr.NewClient(sr.URLs(side.URL))
	if err != nil {
		t.Fatal(err)
	}
	ss, err := sc.CreateSchema(context.Background(), "k", sr.Schema{Schema: `{"type":"record","name":"K","fields":[{"name":"id","type":"int"}]}`})
	if err != nil {
		t.Fatal(err)
	}
	return wire(ss.ID, []byte{0x0E})
}

// An https registry with its CA in the tls block, written as Redpanda
// Connect's configs are (no `enabled`): the CA is used.
func TestDecodeHTTPSRegistryWithRedpandaConnectTLSBlock(t *testing.T) {
	inner := schemaregistry.New()
	srv := httptest.NewTLSServer(inner)
	defer srv.Close()
	msg := keyRecordThroughSideDoor(t, inner)
	ca := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))

	withCA := newTestDecoder(t, fmt.Sprintf("url: %s\nretry_max_elapsed: 1s\ntls:\n  root_cas: %q\n", srv.URL, ca))
	if got, err := decode(t, withCA, msg); err != nil || !reflect.DeepEqual(got, map[string]any{"id": int64(7)}) {
		t.Errorf("with the registry's CA in tls.root_cas: %v, %v", got, err)
	}
	withoutCA := newTestDecoder(t, fmt.Sprintf("url: %s\nretry_max_elapsed: 1s\n", srv.URL))
	if _, err := decode(t, withoutCA, msg); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("without the CA: %v, want a certificate error", err)
	}
}

func TestDecodeWithBasicAuth(t *testing.T) {
	inner := schemaregistry.New()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "ods" || p != "s3cret" {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error_code":401,"message":"Unauthorized"}`))
			return
		}
		inner.ServeHTTP(w, r)
	}))
	defer srv.Close()
	msg := keyRecordThroughSideDoor(t, inner)

	ok := newTestDecoder(t, "url: "+srv.URL+"\nbasic_auth: { enabled: true, username: ods, password: s3cret }")
	if got, err := decode(t, ok, msg); err != nil || !reflect.DeepEqual(got, map[string]any{"id": int64(7)}) {
		t.Errorf("with credentials: %v, %v", got, err)
	}
	denied := newTestDecoder(t, "url: "+srv.URL+"\nretry_max_elapsed: 300ms")
	if _, err := decode(t, denied, msg); err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "basic_auth") {
		t.Errorf("without credentials: %v, want a 401 error naming basic_auth", err)
	}
}

// TestDecodeWrongURLIsNotAMissingSchema: a 404 that is not the registry's
// "schema not found" (a wrong path in url), a 401 and a web page are not
// the message's fault: retried within retry_max_elapsed, so that a fix
// (the right url behind a proxy, rotated credentials) lets the message
// through, where a registry's own 40403 fails it at once.
func TestDecodeWrongURLIsNotAMissingSchema(t *testing.T) {
	inner := schemaregistry.New()
	msg := keyRecordThroughSideDoor(t, inner)
	for name, broken := range map[string]http.HandlerFunc{
		"bare 404": func(w http.ResponseWriter, _ *http.Request) { http.NotFound(w, nil) },
		"401": func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusUnauthorized)
		},
		"web page": func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("<html>login</html>")) },
	} {
		t.Run(name, func(t *testing.T) {
			fixed := time.Now().Add(400 * time.Millisecond) // then the right registry answers
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if time.Now().Before(fixed) {
					broken(w, r)
					return
				}
				inner.ServeHTTP(w, r)
			}))
			defer srv.Close()
			p := newTestDecoder(t, "url: "+srv.URL+"\nretry_max_elapsed: 30s")
			if got, err := decode(t, p, msg); err != nil || !reflect.DeepEqual(got, map[string]any{"id": int64(7)}) {
				t.Errorf("after 400ms of %s, then the registry's answers: %v, %v", name, got, err)
			}
		})
	}

	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		inner.ServeHTTP(w, r)
	}))
	defer srv.Close()
	p := newTestDecoder(t, "url: "+srv.URL+"\nretry_max_elapsed: 30s")
	if _, err := decode(t, p, wire(999, []byte{0x0E})); err == nil || !strings.Contains(err.Error(), "not found in the schema registry") {
		t.Errorf("an id the registry does not have: %v", err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("the registry's 40403 was asked %d times, want once", n)
	}

	// A registry that says a bare 404 for an id it does not have (as some
	// Apicurio versions do): its /subjects answers as a registry's.
	var bare atomic.Int64
	apicurio := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/schemas/ids/") {
			bare.Add(1)
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"error_code":404,"message":"No content with id 999"}`))
			return
		}
		inner.ServeHTTP(w, r)
	}))
	defer apicurio.Close()
	ap := newTestDecoder(t, "url: "+apicurio.URL+"\nretry_max_elapsed: 30s")
	if _, err := decode(t, ap, wire(999, []byte{0x0E})); err == nil || !strings.Contains(err.Error(), "not found in the schema registry") {
		t.Errorf("a bare 404 from a url that answers as a registry: %v", err)
	}
	if n := bare.Load(); n != 1 {
		t.Errorf("asked %d times, want once", n)
	}

	wrong := newTestDecoder(t, "url: "+srv.URL+"/api\nretry_max_elapsed: 200ms")
	if _, err := decode(t, wrong, msg); err == nil || !strings.Contains(err.Error(), srv.URL+"/api/schemas/ids/") || !strings.Contains(err.Error(), "is url right") {
		t.Errorf("a url with a wrong path: %v, want the whole url and a hint", err)
	}
}

// TestDecodeRegistryOutageAtRefresh: when a cached schema's refresh finds
// the registry failing, decoding goes on with the cached schema, and the
// registry is asked once per cache period, not once per message.
func TestDecodeRegistryOutageAtRefresh(t *testing.T) {
	inner := schemaregistry.New()
	var down atomic.Bool
	var asked atomic.Int64
	// During the outage the registry answers nothing until released: a
	// message that waited for the refresh would wait for good.
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/schemas/ids/") {
			asked.Add(1)
		}
		if down.Load() {
			select {
			case <-release:
			case <-r.Context().Done():
			}
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		inner.ServeHTTP(w, r)
	}))
	defer srv.Close()
	sc, err := sr.NewClient(sr.URLs(srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	ss, err := sc.CreateSchema(context.Background(), "k", sr.Schema{Schema: `{"type":"record","name":"K","fields":[{"name":"id","type":"int"}]}`})
	if err != nil {
		t.Fatal(err)
	}
	msg := wire(ss.ID, []byte{0x0E})
	p := newTestDecoder(t, "url: "+srv.URL+"\ncache_duration: 200ms\nretry_max_elapsed: 300ms")
	if _, err := decode(t, p, msg); err != nil {
		t.Fatal(err)
	}
	down.Store(true)
	asked.Store(0)
	time.Sleep(250 * time.Millisecond) // the cached schema is now due for a refresh
	// The refresh runs in the background: no message waits for it (the
	// registry holds the refresh's request until released).
	for i := range 20 {
		if got, err := decode(t, p, msg); err != nil || !reflect.DeepEqual(got, map[string]any{"id": int64(7)}) {
			t.Fatalf("message %d during the outage: %v, %v", i, got, err)
		}
	}
	close(release)
	time.Sleep(400 * time.Millisecond) // the refresh's retry budget (300ms) is over
	// One refresh (a few retries within 300ms), then the kept schema is
	// fresh again for another 200ms; 20 messages must not mean 20 refreshes.
	if n := asked.Load(); n < 1 || n > 8 {
		t.Errorf("registry asked %d times for 20 messages during an outage, want one refresh's retries (1..8)", n)
	}
}

// TestDecodeBatch: in a batch, a message an earlier processor failed passes
// untouched with its error, one that cannot be decoded is marked errored
// and kept unchanged in its place, the others are decoded; stopping while
// the registry is waited for fails the batch (nothing acked) instead of
// marking its messages.
func TestDecodeBatch(t *testing.T) {
	reg := newRegistry(t)
	id := reg.register(t, "acc-value", fixture(t, "T_Accounts"))
	good := func(n int32) []byte {
		return wire(id, hambaEncode(t, fixture(t, "T_Accounts"), accEnvelope{After: &accValue{ID: n}, Op: "c"}))
	}
	p := newTestDecoder(t, "url: "+reg.URL+"\n"+exactOpts)
	failedEarlier := service.NewMessage(good(2))
	failedEarlier.SetError(errors.New("failed earlier"))
	batch := service.MessageBatch{service.NewMessage(good(1)), failedEarlier, service.NewMessage([]byte("x")), service.NewMessage(good(3))}
	out, err := p.ProcessBatch(context.Background(), batch)
	if err != nil || len(out) != 1 || len(out[0]) != 4 {
		t.Fatalf("ProcessBatch: %v, %v", out, err)
	}
	for i, want := range []string{"1", "ERROR failed earlier", "ERROR wrong magic byte 0x78: not the Confluent wire format (want 0x00)", "3"} {
		m := out[0][i]
		var got string
		if err := m.GetError(); err != nil {
			got = "ERROR " + err.Error()
		} else {
			v, _ := m.AsStructured()
			got = fmt.Sprint(v.(map[string]any)["after"].(map[string]any)["id"])
		}
		if got != want {
			t.Errorf("message %d: %s, want %s", i, got, want)
		}
	}
	if b, _ := out[0][1].AsBytes(); string(b) != string(good(2)) {
		t.Errorf("the message failed earlier was changed")
	}

	ctx, cancel := context.WithCancel(context.Background())
	down := newTestDecoder(t, "url: http://127.0.0.1:1\nretry_max_elapsed: 1m")
	time.AfterFunc(300*time.Millisecond, cancel)
	stopped := service.NewMessage(good(4))
	if _, err := down.ProcessBatch(ctx, service.MessageBatch{stopped}); err == nil || !errors.Is(err, context.Canceled) {
		t.Errorf("stopped while the registry is down: %v, want the batch failed with the cancellation", err)
	}
	if stopped.GetError() != nil {
		t.Errorf("stopped while the registry is down: the message was marked errored (%v): it would go to the dead letters", stopped.GetError())
	}
}

// Redpanda Connect's jwt block: the registry gets a bearer token signed
// with the configured key and claims; without it, it refuses.
func TestDecodeWithJWT(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		t.Fatal(err)
	}
	inner := schemaregistry.New()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		tok, err := jwt.Parse(raw, func(*jwt.Token) (any, error) { return &key.PublicKey, nil }, jwt.WithValidMethods([]string{"RS256"}))
		if !ok || err != nil || tok.Claims.(jwt.MapClaims)["sub"] != "odsflow" || tok.Header["kid"] != "k1" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		inner.ServeHTTP(w, r)
	}))
	defer srv.Close()
	msg := keyRecordThroughSideDoor(t, inner)

	p := newTestDecoder(t, fmt.Sprintf("url: %s\njwt: { enabled: true, private_key_file: %q, signing_method: RS256, claims: { sub: odsflow }, headers: { kid: k1 } }", srv.URL, keyFile))
	if got, err := decode(t, p, msg); err != nil || !reflect.DeepEqual(got, map[string]any{"id": int64(7)}) {
		t.Errorf("with a signed token: %v, %v", got, err)
	}
	denied := newTestDecoder(t, "url: "+srv.URL+"\nretry_max_elapsed: 200ms")
	if _, err := decode(t, denied, msg); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("without a token: %v, want a 401", err)
	}
	conf, err := decodeSpec().ParseYAML(fmt.Sprintf("url: %s\njwt: { enabled: true, private_key_file: %q, signing_method: ES256 }", srv.URL, keyFile), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newDecodeProcessor(conf, service.MockResources()); err == nil || !strings.Contains(err.Error(), "not a ES256 private key") {
		t.Errorf("an RSA key for ES256: %v", err)
	}
}

// The signature of OAuth Core 1.0's worked example (Appendix A.5), the
// same in RFC 5849: a request to photos.example.net signed with HMAC-SHA1.
func TestOAuthSignatureOfThePublishedExample(t *testing.T) {
	u, err := url.Parse("http://photos.example.net/photos?file=vacation.jpg&size=original")
	if err != nil {
		t.Fatal(err)
	}
	got := oauthSignature("GET", u, map[string]string{
		"oauth_consumer_key":     "dpf43f3p2l4k3l03",
		"oauth_token":            "nnch734d00sl2jdk",
		"oauth_signature_method": "HMAC-SHA1",
		"oauth_timestamp":        "1191242096",
		"oauth_nonce":            "kllo9940pd9333jh",
		"oauth_version":          "1.0",
	}, "kd94hf93k423kf44", "pfkkdhi9sl3r4s00")
	if want := "tR3+Ty81lMeYAr/Fid0kMTYa/WM="; got != want {
		t.Errorf("signature %q, want %q", got, want)
	}
	if got, want := oauthEscape("a b+c/~é"), "a%20b%2Bc%2F~%C3%A9"; got != want {
		t.Errorf("oauthEscape: %q, want %q", got, want)
	}
}

// Redpanda Connect's oauth block: every request carries an OAuth 1.0a
// header whose signature the registry can check with the shared secrets;
// with wrong secrets, it refuses.
func TestDecodeWithOAuth(t *testing.T) {
	inner := schemaregistry.New()
	var checked atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		header, ok := strings.CutPrefix(r.Header.Get("Authorization"), "OAuth ")
		params := map[string]string{}
		for _, part := range strings.Split(header, ", ") {
			k, v, _ := strings.Cut(part, "=")
			uk, err1 := url.PathUnescape(k)
			uv, err2 := url.PathUnescape(strings.Trim(v, `"`))
			if err1 != nil || err2 != nil {
				ok = false
			}
			params[uk] = uv
		}
		sig := params["oauth_signature"]
		delete(params, "oauth_signature")
		u := *r.URL
		u.Scheme, u.Host = "http", r.Host
		if !ok || params["oauth_consumer_key"] != "ck" || params["oauth_token"] != "tok" || params["oauth_nonce"] == "" ||
			sig != oauthSignature(r.Method, &u, params, "cs", "ts") {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		checked.Add(1)
		inner.ServeHTTP(w, r)
	}))
	defer srv.Close()
	msg := keyRecordThroughSideDoor(t, inner)

	p := newTestDecoder(t, "url: "+srv.URL+"\noauth: { enabled: true, consumer_key: ck, consumer_secret: cs, access_token: tok, access_token_secret: ts }")
	if got, err := decode(t, p, msg); err != nil || !reflect.DeepEqual(got, map[string]any{"id": int64(7)}) || checked.Load() == 0 {
		t.Errorf("with a signed request: %v, %v (%d checked)", got, err, checked.Load())
	}
	wrong := newTestDecoder(t, "url: "+srv.URL+"\nretry_max_elapsed: 200ms\noauth: { enabled: true, consumer_key: ck, consumer_secret: other, access_token: tok, access_token_secret: ts }")
	if _, err := decode(t, wrong, msg); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("with the wrong secret: %v, want a 401", err)
	}
	conf, err := decodeSpec().ParseYAML("url: "+srv.URL+"\noauth: { enabled: true, consumer_key: ck }\nbasic_auth: { enabled: true, username: u, password: p }", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newDecodeProcessor(conf, service.MockResources()); err == nil || !strings.Contains(err.Error(), "basic_auth and oauth are enabled together") {
		t.Errorf("basic_auth and oauth: %v", err)
	}
}

// A registry that cannot be reached is retried for retry_max_elapsed, and
// the operator hears of it at once, naming the URL, not only when the
// messages fail; the warnings of one outage are spaced out.
func TestRegistryOutageIsLoggedWhileRetried(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	_ = ln.Close() // nothing listens there now: connections are refused
	logs := &syncbuf.Buffer{}
	conf, err := decodeSpec().ParseYAML("url: "+url+"\nretry_max_elapsed: 1500ms", nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := newDecodeProcessor(conf, service.MockResources(service.MockResourcesOptUseLogger(
		service.NewLoggerFromSlog(slog.New(slog.NewTextHandler(logs, nil))))))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decode(t, p, []byte{0, 0, 0, 0, 7, 2}); err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("decode with the registry down: %v, want it unreachable", err)
	}
	warnings := strings.Count(logs.String(), "the schema registry fails, retrying")
	if warnings != 1 || !strings.Contains(logs.String(), ln.Addr().String()) {
		t.Errorf("%d warnings while retrying for 1.5 s, want 1 naming %s; logs:\n%s", warnings, url, logs.String())
	}
}
