// Package confluent holds the schema-registry processors: Avro in the
// Confluent wire format (byte 0x00, a 4-byte big-endian schema id, the Avro
// binary datum), decoded and encoded with codecs compiled once per schema.
package confluent

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/redpanda-data/benthos/v4/public/service"

	"github.com/odsflow/odsflow/internal/avrocodec"
)

// Field names shared by the decode and encode processors.
const (
	fieldURL       = "url"
	fieldBasicAuth = "basic_auth"
	fieldTLS       = "tls"
	fieldRetryMax  = "retry_max_elapsed"
)

func registryFields() []*service.ConfigField {
	return []*service.ConfigField{
		service.NewURLField(fieldURL).
			Description("The base URL of the schema registry.").
			Example("${SCHEMA_REGISTRY_URL:http://localhost:8081}"),
		service.NewObjectField(fieldBasicAuth,
			service.NewBoolField("enabled").Description("Whether to use basic authentication.").Default(false),
			service.NewStringField("username").Description("The username.").Default(""),
			service.NewStringField("password").Description("The password.").Default("").Secret(),
		).Description("HTTP basic authentication against the registry.").Advanced().Optional(),
		jwtField(),
		oauthField(),
		service.NewTLSToggledField(fieldTLS).
			Description("TLS to the registry. An `https` URL uses these settings whether `enabled` is set or not (as Redpanda Connect's registry `tls` block, which has no `enabled`); `enabled: true` applies them to any URL.").
			Advanced(),
		service.NewDurationField(fieldRetryMax).
			Description("How long a schema fetch is retried, with exponential backoff, while the registry is unreachable, failing (5xx, 429), refusing the credentials (401, 403) or not answering as a registry (a 404 without a registry error code from a `url` whose `/subjects` is not a registry's list, a page that is not JSON: a wrong `url`), before the message is marked errored with the reason. A schema id the registry says it does not have (404 with error code 40403, or a bare 404 from a `url` that answers as a registry) is an error at once.").
			Default("30s").Advanced(),
	}
}

// registryClient fetches schemas from a Confluent-compatible registry. It
// holds no cache: the processors cache compiled codecs.
type registryClient struct {
	base     *url.URL
	http     *http.Client
	user     string
	pass     string
	bearer   string  // a signed JWT (the jwt block)
	oauth    *oauth1 // the oauth block, nil when off
	retryMax time.Duration
	// isRegistry: url has answered GET /subjects with a JSON list, so a
	// bare 404 from it is a missing schema, not a wrong url.
	isRegistry atomic.Bool

	log       *service.Logger
	component string
	retries   *service.MetricCounter // schema_registry_retries: failed fetches retried
	// lastWarn (unix nanoseconds): when a retried failure was last logged.
	// An outage holds the pipeline for up to retryMax: the operator hears
	// of it at once, then every warnEvery, not at each of its retries.
	lastWarn atomic.Int64
}

// warnEvery spaces out the warnings of a registry failure being retried.
const warnEvery = 30 * time.Second

// batchMemo remembers, for one batch, the keys (schema ids, subjects)
// whose schema could not be fetched, a registry's "not found" aside: the
// batch's other messages of them fail with the same error at once, so
// that a registry outage costs a batch one retry budget per key, not one
// per message. The next batch asks again. A nil memo remembers nothing.
type batchMemo[K comparable] map[K]error

func (m batchMemo[K]) lookup(ctx context.Context, key K, fetch func() (*compiled, error)) (*compiled, error) {
	if err, ok := m[key]; ok {
		return nil, err
	}
	c, err := fetch()
	if err != nil && m != nil && !errors.Is(err, errNotFound) && ctx.Err() == nil {
		m[key] = err
	}
	return c, err
}

// eachMessage runs fn on each message of batch that an earlier processor
// has not failed (those pass unchanged, their error kept), and marks
// errored, in place, the ones fn fails. A failure once ctx is done
// (stopping while the registry was waited for) is not the message's: the
// batch fails, unacked, to be read again.
func eachMessage(ctx context.Context, component string, batch service.MessageBatch, fn func(*service.Message) error) ([]service.MessageBatch, error) {
	for _, msg := range batch {
		if msg.GetError() != nil {
			continue
		}
		if err := fn(msg); err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%s: stopped: %w", component, ctx.Err())
			}
			msg.SetError(err)
		}
	}
	return []service.MessageBatch{batch}, nil
}

// errNotFound is a registry 404: retrying will not help.
var errNotFound = errors.New("not found in the schema registry")

func newRegistryClient(conf *service.ParsedConfig, mgr *service.Resources, component string) (*registryClient, error) {
	u, err := conf.FieldURL(fieldURL)
	if err != nil {
		return nil, err
	}
	c := &registryClient{base: u, log: mgr.Logger(), component: component,
		retries: mgr.Metrics().NewCounter("schema_registry_retries")}
	if c.retryMax, err = conf.FieldDuration(fieldRetryMax); err != nil {
		return nil, err
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	tlsConf, tlsOn, err := conf.FieldTLSToggled(fieldTLS)
	if err != nil {
		return nil, err
	}
	switch {
	case tlsOn:
		transport.TLSClientConfig = tlsConf
	case u.Scheme == "https":
		// An https URL uses the tls settings given, enabled or not: Redpanda
		// Connect's registry tls block has no `enabled`, and its configs
		// set only root_cas_file or client_certs.
		if tlsConf, err = conf.FieldTLS(fieldTLS); err != nil {
			return nil, err
		}
		if tlsConf == nil {
			tlsConf = &tls.Config{}
		}
		if tlsConf.MinVersion < tls.VersionTLS12 {
			tlsConf.MinVersion = tls.VersionTLS12
		}
		transport.TLSClientConfig = tlsConf
	}
	c.http = &http.Client{Transport: transport, Timeout: 10 * time.Second}
	if conf.Contains(fieldBasicAuth) {
		on, err := conf.FieldBool(fieldBasicAuth, "enabled")
		if err != nil {
			return nil, err
		}
		if on {
			if c.user, err = conf.FieldString(fieldBasicAuth, "username"); err != nil {
				return nil, err
			}
			if c.pass, err = conf.FieldString(fieldBasicAuth, "password"); err != nil {
				return nil, err
			}
		}
	}
	if c.bearer, err = signedJWT(conf); err != nil {
		return nil, err
	}
	if c.oauth, err = oauthFromConf(conf); err != nil {
		return nil, err
	}
	var enabled []string
	for _, a := range []struct {
		name string
		on   bool
	}{{"basic_auth", c.user != ""}, {"jwt", c.bearer != ""}, {"oauth", c.oauth != nil}} {
		if a.on {
			enabled = append(enabled, a.name)
		}
	}
	if len(enabled) > 1 {
		return nil, fmt.Errorf("%s are enabled together: choose one", strings.Join(enabled, " and "))
	}
	return c, nil
}

// schemaReference is a reference of a schema to a subject version that
// defines named types it uses.
type schemaReference struct {
	Name    string `json:"name"`
	Subject string `json:"subject"`
	Version int    `json:"version"`
}

// registrySchema is the registry's answer for an id or a subject version.
type registrySchema struct {
	ID         int               `json:"id"`
	Version    int               `json:"version"`
	Schema     string            `json:"schema"`
	SchemaType string            `json:"schemaType"`
	References []schemaReference `json:"references"`
}

// get fetches path and decodes its JSON into out, retrying with backoff on
// network errors and 5xx until retryMax has elapsed.
func (c *registryClient) get(ctx context.Context, path string, out any) error {
	backoff := 100 * time.Millisecond
	deadline := time.Now().Add(c.retryMax)
	for {
		err := c.getOnce(ctx, path, out)
		if err == nil || errors.Is(err, errNotFound) || ctx.Err() != nil {
			return err
		}
		var perm *permanentError
		if errors.As(err, &perm) || time.Now().Add(backoff).After(deadline) {
			return err
		}
		c.retries.Incr(1)
		if now := time.Now(); now.UnixNano()-c.lastWarn.Load() >= int64(warnEvery) {
			c.lastWarn.Store(now.UnixNano())
			c.log.Warnf("%s: the schema registry fails, retrying for up to %v more (the pipeline waits; then the messages "+
				"that need the schema are errored): %v", c.component, time.Until(deadline).Round(time.Second), err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (while retrying: %w)", ctx.Err(), err)
		case <-t.C:
		}
		if backoff *= 2; backoff > 2*time.Second {
			backoff = 2 * time.Second
		}
	}
}

// permanentError is a registry answer that retrying will not change.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// do GETs path (already escaped: subjects may hold '/', so it is joined
// as text) and returns the response's status and body, and the request as
// logs may show it (no password).
func (c *registryClient) do(ctx context.Context, path string) (status int, body []byte, where string, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(c.base.String(), "/")+path, nil)
	if err != nil {
		return 0, nil, "", &permanentError{fmt.Errorf("building registry request: %w", err)}
	}
	where = "GET " + req.URL.Redacted()
	req.Header.Set("Accept", "application/vnd.schemaregistry.v1+json")
	switch {
	case c.user != "":
		req.SetBasicAuth(c.user, c.pass)
	case c.bearer != "":
		req.Header.Set("Authorization", "Bearer "+c.bearer)
	case c.oauth != nil:
		c.oauth.sign(req, time.Now(), oauthNonce())
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, where, fmt.Errorf("schema registry unreachable: %w", err)
	}
	defer resp.Body.Close()
	if body, err = io.ReadAll(io.LimitReader(resp.Body, 16<<20)); err != nil {
		return 0, nil, where, fmt.Errorf("%s: reading registry response: %w", where, err)
	}
	return resp.StatusCode, body, where, nil
}

func (c *registryClient) getOnce(ctx context.Context, path string, out any) error {
	status, body, where, err := c.do(ctx, path)
	if err != nil {
		return err
	}
	statusText := fmt.Sprintf("%d %s", status, http.StatusText(status))
	text := strings.TrimSpace(string(body[:min(len(body), 512)]))
	switch {
	case status == http.StatusOK:
		if err := json.Unmarshal(body, out); err != nil {
			// A web page or another API: the url is wrong, or a proxy is in
			// the way. Not the message's fault: retried like an outage.
			return fmt.Errorf("%s: not a schema registry answer (%v): is url right? %.200s", where, err, text)
		}
		return nil
	case status == http.StatusNotFound && registryNotFound(body):
		return fmt.Errorf("%s: %w: %s", where, errNotFound, text)
	case status == http.StatusNotFound && c.answersAsRegistry(ctx):
		// A registry that says a bare 404 (some versions of Apicurio's
		// Confluent API) for what it does not have.
		return fmt.Errorf("%s: %w: %s", where, errNotFound, text)
	case status == http.StatusNotFound:
		// Anything else that says 404 without a registry's error code, at
		// a url that does not answer as a registry: a wrong url (its path).
		return fmt.Errorf("%s: answered %s without a schema registry error code: is url right? %.200s", where, statusText, text)
	case status == http.StatusUnauthorized || status == http.StatusForbidden ||
		status == http.StatusProxyAuthRequired:
		// Retried: credentials rotated or a permission granted meanwhile
		// make it work, and the messages are not at fault.
		return fmt.Errorf("%s: the registry refused the request (%s): check basic_auth or jwt: %.200s", where, statusText, text)
	case status >= 500 || status == http.StatusTooManyRequests || status == http.StatusRequestTimeout:
		return fmt.Errorf("%s: registry error %s: %.200s", where, statusText, text)
	default:
		return &permanentError{fmt.Errorf("%s: registry answered %s: %.200s", where, statusText, text)}
	}
}

// answersAsRegistry tells whether url answers GET /subjects with a JSON
// list, as a schema registry does; once it has, it is not asked again.
func (c *registryClient) answersAsRegistry(ctx context.Context) bool {
	if c.isRegistry.Load() {
		return true
	}
	var subjects []string
	status, body, _, err := c.do(ctx, "/subjects")
	if err != nil || status != http.StatusOK || json.Unmarshal(body, &subjects) != nil {
		return false
	}
	c.isRegistry.Store(true)
	return true
}

// registryNotFound tells whether a 404's body is a schema registry's own
// "not found" (error_code 40401 subject, 40402 version, 40403 schema).
func registryNotFound(body []byte) bool {
	var e struct {
		Code int `json:"error_code"`
	}
	return json.Unmarshal(body, &e) == nil && e.Code >= 40401 && e.Code <= 40403
}

// schemaByID fetches the schema with a global id.
func (c *registryClient) schemaByID(ctx context.Context, id int) (registrySchema, error) {
	var s registrySchema
	err := c.get(ctx, "/schemas/ids/"+strconv.Itoa(id), &s)
	s.ID = id
	return s, err
}

// latest fetches the latest version of a subject.
func (c *registryClient) latest(ctx context.Context, subject string) (registrySchema, error) {
	var s registrySchema
	err := c.get(ctx, "/subjects/"+url.PathEscape(subject)+"/versions/latest", &s)
	return s, err
}

func (c *registryClient) subjectVersion(ctx context.Context, subject string, version int) (registrySchema, error) {
	var s registrySchema
	err := c.get(ctx, "/subjects/"+url.PathEscape(subject)+"/versions/"+strconv.Itoa(version), &s)
	return s, err
}

// parse turns a registry schema into a hamba schema: references first,
// recursively, all into one fresh cache. hamba's global cache is never used:
// two versions of one Debezium envelope share names, and a shared cache
// would hand one version's layout to the other.
func (c *registryClient) parse(ctx context.Context, s registrySchema) (avro.Schema, error) {
	if s.SchemaType != "" && !strings.EqualFold(s.SchemaType, "AVRO") {
		return nil, fmt.Errorf("schema id %d is of type %s: only AVRO is supported", s.ID, s.SchemaType)
	}
	cache := &avro.SchemaCache{}
	seen := map[string]bool{}
	if err := c.loadReferences(ctx, s.References, cache, seen, 0); err != nil {
		return nil, fmt.Errorf("schema id %d: %w", s.ID, err)
	}
	schema, err := avro.ParseWithCache(s.Schema, "", cache)
	if err != nil {
		return nil, fmt.Errorf("parsing schema id %d: %w", s.ID, err)
	}
	return schema, nil
}

func (c *registryClient) loadReferences(ctx context.Context, refs []schemaReference, cache *avro.SchemaCache, seen map[string]bool, depth int) error {
	if depth > 32 {
		return errors.New("schema references nest deeper than 32")
	}
	for _, ref := range refs {
		key := ref.Subject + "/" + strconv.Itoa(ref.Version)
		if seen[key] {
			continue
		}
		seen[key] = true
		rs, err := c.subjectVersion(ctx, ref.Subject, ref.Version)
		if err != nil {
			return fmt.Errorf("reference %s (%s version %d): %w", ref.Name, ref.Subject, ref.Version, err)
		}
		if err := c.loadReferences(ctx, rs.References, cache, seen, depth+1); err != nil {
			return err
		}
		if _, err := avro.ParseWithCache(rs.Schema, "", cache); err != nil {
			return fmt.Errorf("parsing reference %s: %w", ref.Name, err)
		}
	}
	return nil
}

// compiled is a schema compiled into a codec, as a cache holds it.
type compiled struct {
	id      int
	codec   *avrocodec.Codec
	fetched time.Time
}

// schemaCache holds compiled schemas by key (a schema id, or a subject).
// Each key is loaded once even when many messages need it at the same
// moment: the first caller loads, the others wait for its result. An entry
// older than maxAge is loaded again in the background while callers go on
// with it; if that fails, the old entry is kept (a schema id never changes
// meaning), its age restarted, and refreshFailed told.
type schemaCache[K comparable] struct {
	maxAge        time.Duration
	refreshFailed func(key K, kept *compiled, err error)

	mu       sync.RWMutex
	entries  map[K]*compiled
	inflight map[K]*flight
}

type flight struct {
	done chan struct{}
	val  *compiled
	err  error
}

func newSchemaCache[K comparable](maxAge time.Duration, refreshFailed func(key K, kept *compiled, err error)) *schemaCache[K] {
	return &schemaCache[K]{maxAge: maxAge, refreshFailed: refreshFailed, entries: map[K]*compiled{}, inflight: map[K]*flight{}}
}

// loadTimeout bounds one load, which runs detached from the caller that
// started it: other callers wait for the same load.
const loadTimeout = 5 * time.Minute

// get returns the entry for key, loading it with load when missing (and
// waiting for it), or refreshing it in the background when old (returning
// the old one at once: a registry that fails, or refuses the credentials,
// must not make every message wait a retry budget for a schema it has).
// load receives the entry being refreshed, or nil.
func (c *schemaCache[K]) get(ctx context.Context, key K, load func(ctx context.Context, prev *compiled) (*compiled, error)) (*compiled, error) {
	c.mu.RLock() // the hot path: every message
	prev, ok := c.entries[key]
	c.mu.RUnlock()
	if ok && time.Since(prev.fetched) < c.maxAge {
		return prev, nil
	}
	c.mu.Lock()
	if prev, ok = c.entries[key]; ok && time.Since(prev.fetched) < c.maxAge {
		c.mu.Unlock()
		return prev, nil // loaded meanwhile
	}
	f, loading := c.inflight[key]
	if !loading {
		f = &flight{done: make(chan struct{})}
		c.inflight[key] = f
		go c.run(ctx, key, prev, f, load)
	}
	c.mu.Unlock()
	if ok {
		return prev, nil // refreshed in the background
	}
	select {
	case <-f.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return f.val, f.err
}

// run performs one load for every caller waiting on f. It is owned by the
// flight: it ends when load returns, within loadTimeout.
func (c *schemaCache[K]) run(ctx context.Context, key K, prev *compiled, f *flight, load func(context.Context, *compiled) (*compiled, error)) {
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), loadTimeout)
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			f.val, f.err = nil, fmt.Errorf("loading schema: panic: %v", r)
		}
		c.mu.Lock()
		delete(c.inflight, key)
		switch {
		case f.err == nil:
			c.entries[key] = f.val
		case prev != nil:
			kept := *prev
			kept.fetched = time.Now()
			c.entries[key] = &kept
		}
		c.mu.Unlock()
		close(f.done)
		if f.err != nil && prev != nil && c.refreshFailed != nil {
			c.refreshFailed(key, prev, f.err)
		}
	}()
	f.val, f.err = load(lctx, prev)
}
