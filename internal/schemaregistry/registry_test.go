package schemaregistry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/sr"
)

const (
	userSchema = `{"type":"record","name":"User","namespace":"com.example","fields":[{"name":"id","type":"long"}]}`
	// userSchemaPretty is userSchema with different insignificant whitespace.
	userSchemaPretty = `{
  "type": "record",
  "name": "User",
  "namespace": "com.example",
  "fields": [ { "name": "id", "type": "long" } ]
}`
	userSchemaV2 = `{"type":"record","name":"User","namespace":"com.example","fields":[{"name":"id","type":"long"},{"name":"email","type":["null","string"],"default":null}]}`

	addressSchema  = `{"type":"record","name":"Address","namespace":"com.example","fields":[{"name":"street","type":"string"}]}`
	customerSchema = `{"type":"record","name":"Customer","namespace":"com.example","fields":[{"name":"name","type":"string"},{"name":"address","type":"com.example.Address"}]}`
)

// newServer starts a Registry behind a real loopback HTTP server and returns
// its URL and a franz-go client pointed at it.
func newServer(t *testing.T) (string, *sr.Client) {
	t.Helper()
	srv := httptest.NewServer(New())
	t.Cleanup(srv.Close)
	cl, err := sr.NewClient(sr.URLs(srv.URL))
	if err != nil {
		t.Fatalf("creating sr client: %v", err)
	}
	return srv.URL, cl
}

// rawResponse is a response read with plain net/http, independent of the sr
// client's decoding.
type rawResponse struct {
	status      int
	contentType string
	header      http.Header
	body        []byte
}

func doRaw(t *testing.T, method, url, contentType, body string) rawResponse {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, rd)
	if err != nil {
		t.Fatalf("building %s %s: %v", method, url, err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading %s %s: %v", method, url, err)
	}
	return rawResponse{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type"), header: resp.Header, body: data}
}

// wantRawError decodes a Confluent error body and fails the test unless it has
// the expected HTTP status and error code.
func wantRawError(t *testing.T, resp rawResponse, status, code int) {
	t.Helper()
	if resp.status != status {
		t.Fatalf("status = %d, want %d (body %s)", resp.status, status, resp.body)
	}
	if resp.contentType != contentType {
		t.Errorf("Content-Type = %q, want %q", resp.contentType, contentType)
	}
	var body struct {
		ErrorCode *int    `json:"error_code"`
		Message   *string `json:"message"`
	}
	if err := json.Unmarshal(resp.body, &body); err != nil {
		t.Fatalf("decoding error body %s: %v", resp.body, err)
	}
	if body.ErrorCode == nil || *body.ErrorCode != code {
		t.Fatalf("error_code in %s, want %d", resp.body, code)
	}
	if body.Message == nil || *body.Message == "" {
		t.Fatalf("missing message in %s", resp.body)
	}
}

// wantSRError fails the test unless err is a *sr.ResponseError with the given
// HTTP status and Confluent error code, and returns it for further checks.
func wantSRError(t *testing.T, err error, status, code int) *sr.ResponseError {
	t.Helper()
	var re *sr.ResponseError
	if !errors.As(err, &re) {
		t.Fatalf("error = %v (%T), want *sr.ResponseError", err, err)
	}
	if re.StatusCode != status || re.ErrorCode != code {
		t.Fatalf("got status %d code %d (%q), want status %d code %d", re.StatusCode, re.ErrorCode, re.Message, status, code)
	}
	return re
}

func mustCreate(t *testing.T, cl *sr.Client, subject string, s sr.Schema) sr.SubjectSchema {
	t.Helper()
	ss, err := cl.CreateSchema(t.Context(), subject, s)
	if err != nil {
		t.Fatalf("CreateSchema(%q): %v", subject, err)
	}
	return ss
}

func TestRegisterAndFetchByID(t *testing.T) {
	url, cl := newServer(t)
	ctx := t.Context()

	ss := mustCreate(t, cl, "users-value", sr.Schema{Schema: userSchema})
	if ss.ID != 1 || ss.Version != 1 || ss.Subject != "users-value" || ss.Schema.Schema != userSchema {
		t.Fatalf("CreateSchema = %+v, want id 1 version 1 subject users-value", ss)
	}

	got, err := cl.SchemaByID(ctx, 1)
	if err != nil {
		t.Fatalf("SchemaByID: %v", err)
	}
	if got.Schema != userSchema || got.Type != sr.TypeAvro || len(got.References) != 0 {
		t.Fatalf("SchemaByID = %+v, want the registered AVRO schema without references", got)
	}

	text, err := cl.SchemaTextByID(ctx, 1)
	if err != nil {
		t.Fatalf("SchemaTextByID: %v", err)
	}
	if text != userSchema {
		t.Fatalf("SchemaTextByID = %q, want %q", text, userSchema)
	}

	// The raw body must carry only "schema": schemaType is omitted for
	// AVRO and references when empty.
	resp := doRaw(t, http.MethodGet, url+"/schemas/ids/1", "", "")
	if resp.status != http.StatusOK || resp.contentType != contentType {
		t.Fatalf("GET /schemas/ids/1: status %d, Content-Type %q", resp.status, resp.contentType)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(resp.body, &fields); err != nil {
		t.Fatalf("decoding %s: %v", resp.body, err)
	}
	if _, ok := fields["schemaType"]; ok {
		t.Errorf("schemaType present for AVRO schema: %s", resp.body)
	}
	if _, ok := fields["references"]; ok {
		t.Errorf("references present without references: %s", resp.body)
	}
	var schemaText string
	if err := json.Unmarshal(fields["schema"], &schemaText); err != nil || schemaText != userSchema {
		t.Fatalf("schema field = %s (%v), want %q", fields["schema"], err, userSchema)
	}

	// The register response itself is {"id": N}.
	resp = doRaw(t, http.MethodPost, url+"/subjects/users-value/versions", contentType, fmt.Sprintf(`{"schema":%q}`, userSchema))
	if resp.status != http.StatusOK || strings.TrimSpace(string(resp.body)) != `{"id":1}` {
		t.Fatalf("re-register raw response: %d %s", resp.status, resp.body)
	}

	// Explicit "AVRO" is the same schema as an omitted type.
	resp = doRaw(t, http.MethodPost, url+"/subjects/users-value/versions", contentType, fmt.Sprintf(`{"schema":%q,"schemaType":"AVRO"}`, userSchema))
	if resp.status != http.StatusOK || strings.TrimSpace(string(resp.body)) != `{"id":1}` {
		t.Fatalf("register with explicit AVRO: %d %s", resp.status, resp.body)
	}
}

// One schema written two other ways (its keys in another order, a
// primitive as {"type": …}) is one schema: Confluent compares parsed
// schemas. A default that differs is another schema.
func TestRegisterDedupeParsedForms(t *testing.T) {
	_, cl := newServer(t)
	a := mustCreate(t, cl, "order-value", sr.Schema{Schema: `{"type":"record","name":"O","fields":[{"name":"n","type":"int"}]}`})
	b := mustCreate(t, cl, "order-value", sr.Schema{Schema: `{"fields":[{"type":{"type":"int"},"name":"n"}],"name":"O","type":"record"}`})
	if b.ID != a.ID || b.Version != 1 {
		t.Fatalf("the same schema with keys reordered and {\"type\":\"int\"}: id %d version %d, want id %d version 1", b.ID, b.Version, a.ID)
	}
	c := mustCreate(t, cl, "order-value", sr.Schema{Schema: `{"type":"record","name":"O","fields":[{"name":"n","type":"int","default":1}]}`})
	if c.ID == a.ID {
		t.Fatalf("a schema with a default shares the id of the one without (%d)", a.ID)
	}
}

func TestRegisterDedupe(t *testing.T) {
	_, cl := newServer(t)
	ctx := t.Context()

	first := mustCreate(t, cl, "users-value", sr.Schema{Schema: userSchema})
	again := mustCreate(t, cl, "users-value", sr.Schema{Schema: userSchema})
	if again.ID != first.ID || again.Version != 1 {
		t.Fatalf("second registration = id %d version %d, want id %d version 1", again.ID, again.Version, first.ID)
	}
	pretty := mustCreate(t, cl, "users-value", sr.Schema{Schema: userSchemaPretty})
	if pretty.ID != first.ID || pretty.Version != 1 {
		t.Fatalf("whitespace variant = id %d version %d, want id %d version 1", pretty.ID, pretty.Version, first.ID)
	}

	versions, err := cl.SubjectVersions(ctx, "users-value")
	if err != nil {
		t.Fatalf("SubjectVersions: %v", err)
	}
	if !slices.Equal(versions, []int{1}) {
		t.Fatalf("versions = %v, want [1]", versions)
	}

	// Another subject reuses the global id but gets its own version 1.
	other := mustCreate(t, cl, "people-value", sr.Schema{Schema: userSchemaPretty})
	if other.ID != first.ID || other.Version != 1 || other.Subject != "people-value" {
		t.Fatalf("other subject = %+v, want id %d version 1", other, first.ID)
	}
	// The text stored under an id is the first registered one.
	if other.Schema.Schema != userSchema {
		t.Errorf("schema text = %q, want first registered %q", other.Schema.Schema, userSchema)
	}

	subjects, err := cl.Subjects(ctx)
	if err != nil {
		t.Fatalf("Subjects: %v", err)
	}
	if !slices.Equal(subjects, []string{"people-value", "users-value"}) {
		t.Fatalf("subjects = %v, want sorted [people-value users-value]", subjects)
	}
	usages, err := cl.SchemaVersionsByID(ctx, first.ID)
	if err != nil {
		t.Fatalf("SchemaVersionsByID: %v", err)
	}
	wantUsages := []sr.SubjectVersion{{Subject: "people-value", Version: 1}, {Subject: "users-value", Version: 1}}
	if !slices.Equal(usages, wantUsages) {
		t.Fatalf("usages = %v, want %v", usages, wantUsages)
	}
	byID, err := cl.SubjectsByID(ctx, first.ID)
	if err != nil {
		t.Fatalf("SubjectsByID: %v", err)
	}
	if !slices.Equal(byID, []string{"people-value", "users-value"}) {
		t.Fatalf("SubjectsByID = %v", byID)
	}
}

func TestNewVersion(t *testing.T) {
	url, cl := newServer(t)
	ctx := t.Context()

	v1 := mustCreate(t, cl, "users-value", sr.Schema{Schema: userSchema})
	v2 := mustCreate(t, cl, "users-value", sr.Schema{Schema: userSchemaV2})
	if v2.ID != v1.ID+1 || v2.Version != 2 {
		t.Fatalf("second schema = id %d version %d, want id %d version 2", v2.ID, v2.Version, v1.ID+1)
	}
	// Re-registering the older schema must not create version 3.
	if again := mustCreate(t, cl, "users-value", sr.Schema{Schema: userSchema}); again.ID != v1.ID || again.Version != 1 {
		t.Fatalf("re-registering v1 = id %d version %d", again.ID, again.Version)
	}

	versions, err := cl.SubjectVersions(ctx, "users-value")
	if err != nil || !slices.Equal(versions, []int{1, 2}) {
		t.Fatalf("SubjectVersions = %v, %v; want [1 2]", versions, err)
	}

	latest, err := cl.SchemaByVersion(ctx, "users-value", -1)
	if err != nil {
		t.Fatalf("SchemaByVersion(latest): %v", err)
	}
	if latest.ID != v2.ID || latest.Version != 2 || latest.Schema.Schema != userSchemaV2 || latest.Subject != "users-value" {
		t.Fatalf("latest = %+v, want id %d version 2", latest, v2.ID)
	}
	first, err := cl.SchemaByVersion(ctx, "users-value", 1)
	if err != nil {
		t.Fatalf("SchemaByVersion(1): %v", err)
	}
	if first.ID != v1.ID || first.Version != 1 || first.Schema.Schema != userSchema {
		t.Fatalf("version 1 = %+v, want id %d", first, v1.ID)
	}

	// "latest" spelled out, -1 in the path and the raw schema endpoint.
	for _, version := range []string{"latest", "-1"} {
		resp := doRaw(t, http.MethodGet, url+"/subjects/users-value/versions/"+version, "", "")
		var body struct {
			Subject string `json:"subject"`
			ID      int    `json:"id"`
			Version int    `json:"version"`
			Schema  string `json:"schema"`
		}
		if err := json.Unmarshal(resp.body, &body); err != nil || resp.status != http.StatusOK {
			t.Fatalf("GET version %s: %d %s (%v)", version, resp.status, resp.body, err)
		}
		if body.Subject != "users-value" || body.ID != v2.ID || body.Version != 2 || body.Schema != userSchemaV2 {
			t.Fatalf("GET version %s = %+v", version, body)
		}
	}
	text, err := cl.SchemaTextByVersion(ctx, "users-value", 1)
	if err != nil || text != userSchema {
		t.Fatalf("SchemaTextByVersion(1) = %q, %v", text, err)
	}
	resp := doRaw(t, http.MethodGet, url+"/subjects/users-value/versions/latest/schema", "", "")
	if resp.status != http.StatusOK || string(resp.body) != userSchemaV2 {
		t.Fatalf("raw latest schema = %d %s", resp.status, resp.body)
	}
}

func TestLookupSchema(t *testing.T) {
	_, cl := newServer(t)
	ctx := t.Context()

	mustCreate(t, cl, "users-value", sr.Schema{Schema: userSchema})
	v2 := mustCreate(t, cl, "users-value", sr.Schema{Schema: userSchemaV2})

	got, err := cl.LookupSchema(ctx, "users-value", sr.Schema{Schema: userSchemaPretty})
	if err != nil {
		t.Fatalf("LookupSchema: %v", err)
	}
	if got.ID != 1 || got.Version != 1 || got.Subject != "users-value" || got.Schema.Schema != userSchema {
		t.Fatalf("LookupSchema(v1) = %+v", got)
	}
	got, err = cl.LookupSchema(ctx, "users-value", sr.Schema{Schema: userSchemaV2})
	if err != nil || got.ID != v2.ID || got.Version != 2 {
		t.Fatalf("LookupSchema(v2) = %+v, %v", got, err)
	}
	// Lookup must not register anything.
	_, err = cl.LookupSchema(ctx, "users-value", sr.Schema{Schema: addressSchema})
	wantSRError(t, err, http.StatusNotFound, 40403)
	if versions, _ := cl.SubjectVersions(ctx, "users-value"); !slices.Equal(versions, []int{1, 2}) {
		t.Fatalf("versions after failed lookup = %v", versions)
	}
}

func TestInvalidSchemasRejected(t *testing.T) {
	url, cl := newServer(t)
	ctx := t.Context()

	for _, tc := range []struct {
		name   string
		schema sr.Schema
		// inMessage must appear in the error message, proving the cause
		// is reported rather than a generic failure.
		inMessage string
	}{
		{"invalid JSON", sr.Schema{Schema: `{"type":"record",`}, "not valid JSON"},
		{"unknown type", sr.Schema{Schema: `{"type":"nosuchtype"}`}, "unknown type"},
		{"unknown named type in field", sr.Schema{Schema: customerSchema}, "com.example.Address"},
		{"record without fields", sr.Schema{Schema: `{"type":"record","name":"NoFields"}`}, "fields"},
		{"protobuf", sr.Schema{Schema: `syntax = "proto3"; message M {}`, Type: sr.TypeProtobuf}, "only supports AVRO"},
		{"json schema", sr.Schema{Schema: `{"type":"object"}`, Type: sr.TypeJSON}, "only supports AVRO"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := cl.RegisterSchema(ctx, "bad-value", tc.schema, -1, -1)
			re := wantSRError(t, err, http.StatusUnprocessableEntity, 42201)
			if !strings.Contains(re.Message, tc.inMessage) {
				t.Fatalf("message %q does not mention %q", re.Message, tc.inMessage)
			}
		})
	}

	// Checked with plain net/http so that the error body shape itself is
	// asserted, not just what the sr client extracts from it.
	wantRawError(t, doRaw(t, http.MethodPost, url+"/subjects/bad-value/versions", contentType, `{"schema":""}`),
		http.StatusUnprocessableEntity, 42201)
	wantRawError(t, doRaw(t, http.MethodPost, url+"/subjects/bad-value/versions", contentType, `{"schema":"{\"type\":\"int\"}","schemaType":"XML"}`),
		http.StatusUnprocessableEntity, 42201)

	// Nothing may have been stored, and no id may have been consumed.
	subjects, err := cl.Subjects(ctx)
	if err != nil || len(subjects) != 0 {
		t.Fatalf("Subjects after rejected registrations = %v, %v; want none", subjects, err)
	}
	if ss := mustCreate(t, cl, "good-value", sr.Schema{Schema: userSchema}); ss.ID != 1 {
		t.Fatalf("first valid schema got id %d, want 1", ss.ID)
	}
}

func TestNotFoundAndInvalidVersion(t *testing.T) {
	url, cl := newServer(t)
	ctx := t.Context()
	mustCreate(t, cl, "users-value", sr.Schema{Schema: userSchema})

	_, err := cl.SchemaByID(ctx, 99)
	wantSRError(t, err, http.StatusNotFound, 40403)
	_, err = cl.SchemaTextByID(ctx, 99)
	wantSRError(t, err, http.StatusNotFound, 40403)
	_, err = cl.SchemaByVersion(ctx, "nope-value", 1)
	wantSRError(t, err, http.StatusNotFound, 40401)
	_, err = cl.SubjectVersions(ctx, "nope-value")
	wantSRError(t, err, http.StatusNotFound, 40401)
	_, err = cl.SchemaByVersion(ctx, "users-value", 5)
	wantSRError(t, err, http.StatusNotFound, 40402)
	_, err = cl.SchemaByVersion(ctx, "nope-value", -1)
	wantSRError(t, err, http.StatusNotFound, 40401)
	_, err = cl.LookupSchema(ctx, "nope-value", sr.Schema{Schema: userSchema})
	wantSRError(t, err, http.StatusNotFound, 40401)
	_, err = cl.LookupSchema(ctx, "users-value", sr.Schema{Schema: userSchemaV2})
	wantSRError(t, err, http.StatusNotFound, 40403)

	for _, version := range []string{"0", "-2", "abc", "99999999999"} {
		wantRawError(t, doRaw(t, http.MethodGet, url+"/subjects/users-value/versions/"+version, "", ""),
			http.StatusUnprocessableEntity, 42202)
	}
	wantRawError(t, doRaw(t, http.MethodGet, url+"/schemas/ids/abc", "", ""), http.StatusNotFound, 40403)
}

func TestHTTPProtocol(t *testing.T) {
	url, cl := newServer(t)
	ctx := t.Context()

	resp := doRaw(t, http.MethodGet, url+"/subjects", "", "")
	if resp.status != http.StatusOK || resp.contentType != contentType || strings.TrimSpace(string(resp.body)) != "[]" {
		t.Fatalf("GET /subjects on empty registry = %d %q %s, want 200 []", resp.status, resp.contentType, resp.body)
	}

	types, err := cl.SupportedTypes(ctx)
	if err != nil || !slices.Equal(types, []sr.SchemaType{sr.TypeAvro}) {
		t.Fatalf("SupportedTypes = %v, %v", types, err)
	}
	compat := cl.Compatibility(ctx)
	if len(compat) != 1 || compat[0].Err != nil || compat[0].Level != sr.CompatNone {
		t.Fatalf("Compatibility = %+v, want NONE", compat)
	}
	resp = doRaw(t, http.MethodGet, url+"/config", "", "")
	if strings.TrimSpace(string(resp.body)) != `{"compatibilityLevel":"NONE"}` {
		t.Fatalf("GET /config = %s", resp.body)
	}

	wantRawError(t, doRaw(t, http.MethodGet, url+"/nope", "", ""), http.StatusNotFound, 404)
	wantRawError(t, doRaw(t, http.MethodGet, url+"/subjects/a/nope", "", ""), http.StatusNotFound, 404)
	wantRawError(t, doRaw(t, http.MethodGet, url+"/subjects//versions", "", ""), http.StatusNotFound, 404)

	resp = doRaw(t, http.MethodPut, url+"/subjects/a/versions", contentType, `{}`)
	wantRawError(t, resp, http.StatusMethodNotAllowed, 405)
	if allow := resp.header.Get("Allow"); allow != "GET, POST" {
		t.Errorf("Allow = %q, want %q", allow, "GET, POST")
	}

	for _, body := range []string{`{"schema":`, `[1,2]`, `{"schema":5}`, `{"schema":"\"int\""} trailing`} {
		wantRawError(t, doRaw(t, http.MethodPost, url+"/subjects/a/versions", contentType, body), http.StatusBadRequest, 400)
	}
	wantRawError(t, doRaw(t, http.MethodPost, url+"/subjects/a/versions", "text/plain", `{"schema":"\"int\""}`),
		http.StatusUnsupportedMediaType, 415)

	// Every accepted request media type (and none) registers the schema.
	for i, ct := range []string{"application/vnd.schemaregistry.v1+json", "application/vnd.schemaregistry+json", "application/json", "application/json; charset=utf-8", ""} {
		body := fmt.Sprintf(`{"schema":"{\"type\":\"fixed\",\"name\":\"F%d\",\"size\":4}"}`, i)
		resp := doRaw(t, http.MethodPost, url+"/subjects/a/versions", ct, body)
		want := fmt.Sprintf(`{"id":%d}`, i+1)
		if resp.status != http.StatusOK || strings.TrimSpace(string(resp.body)) != want {
			t.Fatalf("register with Content-Type %q = %d %s, want %s", ct, resp.status, resp.body, want)
		}
	}
}

func TestReferences(t *testing.T) {
	url, cl := newServer(t)
	ctx := t.Context()

	addr := mustCreate(t, cl, "address-value", sr.Schema{Schema: addressSchema})
	refs := []sr.SchemaReference{{Name: "com.example.Address", Subject: "address-value", Version: 1}}
	cust := mustCreate(t, cl, "customer-value", sr.Schema{Schema: customerSchema, References: refs})
	if cust.ID == addr.ID || cust.Version != 1 {
		t.Fatalf("customer = %+v", cust)
	}

	got, err := cl.SchemaByID(ctx, cust.ID)
	if err != nil {
		t.Fatalf("SchemaByID: %v", err)
	}
	if got.Schema != customerSchema || !slices.Equal(got.References, refs) {
		t.Fatalf("SchemaByID(customer) = %+v, want references %v", got, refs)
	}
	resp := doRaw(t, http.MethodGet, url+"/schemas/ids/"+fmt.Sprint(cust.ID), "", "")
	if !bytes.Contains(resp.body, []byte(`"references":[{"name":"com.example.Address","subject":"address-value","version":1}]`)) {
		t.Fatalf("raw body lacks references: %s", resp.body)
	}
	byVersion, err := cl.SchemaByVersion(ctx, "customer-value", 1)
	if err != nil || !slices.Equal(byVersion.References, refs) {
		t.Fatalf("SchemaByVersion(customer) = %+v, %v", byVersion, err)
	}

	// The same text with the same references is the same schema; with no
	// references it is different content and, because the registry does
	// not fall back to a global cache, it no longer parses.
	if again := mustCreate(t, cl, "customer-value", sr.Schema{Schema: customerSchema, References: refs}); again.ID != cust.ID || again.Version != 1 {
		t.Fatalf("re-registering with references = %+v", again)
	}
	_, err = cl.RegisterSchema(ctx, "customer-value", sr.Schema{Schema: customerSchema}, -1, -1)
	wantSRError(t, err, http.StatusUnprocessableEntity, 42201)

	// Lookup takes references into account.
	found, err := cl.LookupSchema(ctx, "customer-value", sr.Schema{Schema: customerSchema, References: refs})
	if err != nil || found.ID != cust.ID {
		t.Fatalf("LookupSchema with references = %+v, %v", found, err)
	}

	// References to missing subjects or versions are rejected and named.
	for _, missing := range []sr.SchemaReference{
		{Name: "com.example.Address", Subject: "nope-value", Version: 1},
		{Name: "com.example.Address", Subject: "address-value", Version: 7},
	} {
		_, err = cl.RegisterSchema(ctx, "customer2-value", sr.Schema{Schema: customerSchema, References: []sr.SchemaReference{missing}}, -1, -1)
		re := wantSRError(t, err, http.StatusUnprocessableEntity, 42201)
		if !strings.Contains(re.Message, missing.Subject) || !strings.Contains(re.Message, fmt.Sprint(missing.Version)) {
			t.Fatalf("message %q does not name the missing reference %+v", re.Message, missing)
		}
	}

	// References resolve transitively: Order -> Customer -> Address.
	orderSchema := `{"type":"record","name":"Order","namespace":"com.example","fields":[{"name":"customer","type":"com.example.Customer"},{"name":"ship_to","type":"com.example.Address"}]}`
	orderRefs := []sr.SchemaReference{
		{Name: "com.example.Customer", Subject: "customer-value", Version: 1},
		{Name: "com.example.Address", Subject: "address-value", Version: 1},
	}
	order := mustCreate(t, cl, "order-value", sr.Schema{Schema: orderSchema, References: orderRefs[:1]})
	// A diamond (Address reached twice) must be accepted as well.
	order2 := mustCreate(t, cl, "order2-value", sr.Schema{Schema: orderSchema, References: orderRefs})
	if order2.ID == order.ID {
		t.Fatalf("different references must yield different ids, both got %d", order.ID)
	}

	// -1 in a reference means latest and is stored resolved.
	latestRef := mustCreate(t, cl, "customer3-value", sr.Schema{Schema: customerSchema, References: []sr.SchemaReference{{Name: "com.example.Address", Subject: "address-value", Version: -1}}})
	if latestRef.ID != cust.ID || !slices.Equal(latestRef.References, refs) {
		t.Fatalf("latest reference = %+v, want id %d with references %v", latestRef, cust.ID, refs)
	}

	referrers, err := cl.SchemaReferences(ctx, "address-value", 1)
	if err != nil {
		t.Fatalf("SchemaReferences: %v", err)
	}
	var referrerIDs []int
	for _, s := range referrers {
		if !slices.Contains(referrerIDs, s.ID) {
			referrerIDs = append(referrerIDs, s.ID)
		}
	}
	slices.Sort(referrerIDs)
	if want := []int{cust.ID, order2.ID}; !slices.Equal(referrerIDs, want) {
		t.Fatalf("ids referencing address-value/1 = %v, want %v", referrerIDs, want)
	}

	// A referenced subject cannot be deleted while referrers are alive.
	_, err = cl.DeleteSubject(ctx, "address-value", sr.HardDelete)
	wantSRError(t, err, http.StatusUnprocessableEntity, 42206)
	if _, err := cl.SchemaByVersion(ctx, "address-value", 1); err != nil {
		t.Fatalf("address-value must survive the refused delete: %v", err)
	}
}

func TestSubjectNamesNeedingEscapes(t *testing.T) {
	url, cl := newServer(t)
	ctx := t.Context()

	dotted := "fulfillment.transactions_schema.T_Customers-value"
	slashed := "team/orders-value"
	spaced := "odd name+%-value"
	for i, subject := range []string{dotted, slashed, spaced} {
		ss := mustCreate(t, cl, subject, sr.Schema{Schema: fmt.Sprintf(`{"type":"enum","name":"E%d","symbols":["A"]}`, i)})
		if ss.Subject != subject || ss.Version != 1 || ss.ID != i+1 {
			t.Fatalf("CreateSchema(%q) = %+v", subject, ss)
		}
		got, err := cl.SchemaByVersion(ctx, subject, 1)
		if err != nil || got.Subject != subject || got.ID != i+1 {
			t.Fatalf("SchemaByVersion(%q) = %+v, %v", subject, got, err)
		}
	}
	subjects, err := cl.Subjects(ctx)
	if err != nil {
		t.Fatalf("Subjects: %v", err)
	}
	if want := []string{dotted, spaced, slashed}; !slices.Equal(subjects, want) {
		t.Fatalf("Subjects = %q, want %q", subjects, want)
	}

	resp := doRaw(t, http.MethodGet, url+"/subjects/team%2Forders-value/versions", "", "")
	if resp.status != http.StatusOK || strings.TrimSpace(string(resp.body)) != "[1]" {
		t.Fatalf("GET with %%2F = %d %s", resp.status, resp.body)
	}
	// Unescaped, the slash splits the path into a different, unknown route.
	wantRawError(t, doRaw(t, http.MethodGet, url+"/subjects/team/orders-value/versions", "", ""), http.StatusNotFound, 404)

	resp = doRaw(t, http.MethodGet, url+"/subjects/"+dotted+"/versions/latest", "", "")
	if resp.status != http.StatusOK || !strings.Contains(string(resp.body), `"subject":"`+dotted+`"`) {
		t.Fatalf("GET dotted subject = %d %s", resp.status, resp.body)
	}
}

func TestDelete(t *testing.T) {
	url, cl := newServer(t)
	ctx := t.Context()

	v1 := mustCreate(t, cl, "users-value", sr.Schema{Schema: userSchema})
	v2 := mustCreate(t, cl, "users-value", sr.Schema{Schema: userSchemaV2})
	mustCreate(t, cl, "other-value", sr.Schema{Schema: addressSchema})

	if err := cl.DeleteSchema(ctx, "users-value", 2, sr.SoftDelete); err != nil {
		t.Fatalf("DeleteSchema: %v", err)
	}
	if versions, err := cl.SubjectVersions(ctx, "users-value"); err != nil || !slices.Equal(versions, []int{1}) {
		t.Fatalf("versions after deleting 2 = %v, %v", versions, err)
	}
	resp := doRaw(t, http.MethodDelete, url+"/subjects/users-value/versions/9", "", "")
	wantRawError(t, resp, http.StatusNotFound, 40402)

	deleted, err := cl.DeleteSubject(ctx, "users-value", sr.SoftDelete)
	if err != nil || !slices.Equal(deleted, []int{1}) {
		t.Fatalf("DeleteSubject = %v, %v; want [1]", deleted, err)
	}
	_, err = cl.DeleteSubject(ctx, "users-value", sr.HardDelete)
	wantSRError(t, err, http.StatusNotFound, 40401)
	subjects, err := cl.Subjects(ctx)
	if err != nil || !slices.Equal(subjects, []string{"other-value"}) {
		t.Fatalf("Subjects after delete = %v, %v", subjects, err)
	}

	// Ids outlive their subjects: data encoded with them stays readable,
	// and re-registering reuses the id.
	if got, err := cl.SchemaByID(ctx, v2.ID); err != nil || got.Schema != userSchemaV2 {
		t.Fatalf("SchemaByID(%d) after delete = %+v, %v", v2.ID, got, err)
	}
	again := mustCreate(t, cl, "users-value", sr.Schema{Schema: userSchemaV2})
	if again.ID != v2.ID || again.Version != 1 {
		t.Fatalf("re-register after delete = %+v, want id %d version 1", again, v2.ID)
	}
	fresh := mustCreate(t, cl, "users-value", sr.Schema{Schema: `{"type":"array","items":"int"}`})
	if fresh.ID != 4 || fresh.Version != 2 || v1.ID != 1 {
		t.Fatalf("new schema after delete = %+v, want id 4 version 2", fresh)
	}
}

func TestConcurrentRegistration(t *testing.T) {
	_, cl := newServer(t)
	ctx := t.Context()

	const workers = 32
	var (
		wg       sync.WaitGroup
		sameIDs  [workers]int
		otherIDs [workers]int
		distinct [workers]int
		errs     = make(chan error, 3*workers)
	)
	for i := range workers {
		wg.Go(func() {
			// The same schema, pretty or compact, from every worker.
			text := userSchema
			if i%2 == 1 {
				text = userSchemaPretty
			}
			id, err := cl.RegisterSchema(ctx, "users-value", sr.Schema{Schema: text}, -1, -1)
			if err != nil {
				errs <- fmt.Errorf("worker %d same schema: %w", i, err)
			}
			sameIDs[i] = id
		})
		wg.Go(func() {
			id, err := cl.RegisterSchema(ctx, "people-value", sr.Schema{Schema: userSchema}, -1, -1)
			if err != nil {
				errs <- fmt.Errorf("worker %d other subject: %w", i, err)
			}
			otherIDs[i] = id
		})
		wg.Go(func() {
			schema := fmt.Sprintf(`{"type":"record","name":"R%d","fields":[{"name":"f","type":"int"}]}`, i)
			id, err := cl.RegisterSchema(ctx, "distinct-value", sr.Schema{Schema: schema}, -1, -1)
			if err != nil {
				errs <- fmt.Errorf("worker %d distinct: %w", i, err)
			}
			distinct[i] = id
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}

	for i := range workers {
		if sameIDs[i] != sameIDs[0] || otherIDs[i] != sameIDs[0] {
			t.Fatalf("worker %d got ids %d/%d, worker 0 got %d", i, sameIDs[i], otherIDs[i], sameIDs[0])
		}
	}
	for _, subject := range []string{"users-value", "people-value"} {
		versions, err := cl.SubjectVersions(ctx, subject)
		if err != nil || !slices.Equal(versions, []int{1}) {
			t.Fatalf("%s versions = %v, %v; want [1]", subject, versions, err)
		}
	}

	// Distinct schemas get distinct ids and gap-free versions, and together
	// with the shared schema they use exactly ids 1..workers+1.
	all := append(slices.Clone(distinct[:]), sameIDs[0])
	slices.Sort(all)
	for i, id := range all {
		if id != i+1 {
			t.Fatalf("ids = %v, want 1..%d without duplicates", all, workers+1)
		}
	}
	versions, err := cl.SubjectVersions(ctx, "distinct-value")
	if err != nil || len(versions) != workers || versions[0] != 1 || versions[workers-1] != workers {
		t.Fatalf("distinct-value versions = %v, %v; want 1..%d", versions, err, workers)
	}
}

func TestDebeziumSeedSchemas(t *testing.T) {
	url, cl := newServer(t)
	ctx := t.Context()

	paths, err := filepath.Glob(filepath.Join("testdata", "*.avsc"))
	if err != nil {
		t.Fatalf("listing testdata: %v", err)
	}
	if len(paths) != 3 {
		t.Fatalf("found %d .avsc files in testdata, want 3", len(paths))
	}
	seen := make(map[int]string)
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("reading %s: %v", path, err)
		}
		subject := strings.TrimSuffix(filepath.Base(path), ".avsc")
		ss := mustCreate(t, cl, subject, sr.Schema{Schema: string(data)})
		if prev, dup := seen[ss.ID]; dup {
			t.Fatalf("%s and %s share id %d", subject, prev, ss.ID)
		}
		seen[ss.ID] = subject

		byID, err := cl.SchemaByID(ctx, ss.ID)
		if err != nil {
			t.Fatalf("SchemaByID(%d): %v", ss.ID, err)
		}
		if byID.Schema != string(data) {
			t.Fatalf("%s: schema by id differs from the registered file", subject)
		}
		latest, err := cl.SchemaByVersion(ctx, subject, -1)
		if err != nil || latest.ID != ss.ID || latest.Version != 1 || latest.Schema.Schema != string(data) {
			t.Fatalf("%s latest = id %d version %d, %v", subject, latest.ID, latest.Version, err)
		}

		// What comes back must still be a usable Debezium envelope.
		parsed, err := avro.ParseWithCache(byID.Schema, "", &avro.SchemaCache{})
		if err != nil {
			t.Fatalf("%s: parsing fetched schema: %v", subject, err)
		}
		rec, ok := parsed.(*avro.RecordSchema)
		if !ok {
			t.Fatalf("%s: fetched schema is %T, want a record", subject, parsed)
		}
		var names []string
		for _, f := range rec.Fields() {
			names = append(names, f.Name())
		}
		for _, want := range []string{"before", "after", "source", "op", "ts_ms"} {
			if !slices.Contains(names, want) {
				t.Fatalf("%s: envelope fields %v lack %q", subject, names, want)
			}
		}

		raw := doRaw(t, http.MethodGet, url+"/subjects/"+subject+"/versions/1/schema", "", "")
		if raw.status != http.StatusOK || !bytes.Equal(raw.body, data) {
			t.Fatalf("%s: raw schema endpoint returned %d and %d bytes, want the %d-byte file", subject, raw.status, len(raw.body), len(data))
		}
	}
}

// Paths the registry does not serve are 404s, also those one segment away
// from a served one.
func TestUnknownPathsAreNotFound(t *testing.T) {
	url, cl := newServer(t)
	mustCreate(t, cl, "users-value", sr.Schema{Schema: userSchema})
	for _, path := range []string{
		"/subjects/users-value/versions/1/nonsense",
		"/subjects/users-value/versions/1/schema/extra",
		"/subjects/users-value/nonsense/1/referencedby",
		"/nonsense",
	} {
		if resp := doRaw(t, http.MethodGet, url+path, "", ""); resp.status != http.StatusNotFound {
			t.Errorf("GET %s: %d %s, want 404", path, resp.status, resp.body)
		}
	}
	if resp := doRaw(t, http.MethodGet, url+"/subjects/users-value/versions/1/referencedby", "", ""); resp.status != http.StatusOK {
		t.Errorf("GET …/referencedby: %d %s, want 200", resp.status, resp.body)
	}
}
