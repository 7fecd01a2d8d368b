package schemaregistry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// contentType is the media type of every response. Confluent clients accept
// plain JSON too, but some check for this exact type.
const contentType = "application/vnd.schemaregistry.v1+json"

// maxBodyBytes bounds request bodies. Real schemas are kilobytes; the bound
// only exists so a runaway client cannot make the process buffer unbounded
// input.
const maxBodyBytes = 16 << 20

// acceptedBodyTypes lists, for error messages, the request media types that
// acceptedBodyType accepts.
const acceptedBodyTypes = "application/vnd.schemaregistry.v1+json, application/vnd.schemaregistry+json, application/json"

// acceptedBodyType reports whether a request body of mediaType is decoded.
// These are the JSON media types Confluent's registry accepts; anything else
// is refused with 415 so that, say, a form-encoded curl body fails loudly
// instead of being half-understood.
func acceptedBodyType(mediaType string) bool {
	switch strings.ToLower(mediaType) {
	case "application/vnd.schemaregistry.v1+json", "application/vnd.schemaregistry+json", "application/json":
		return true
	}
	return false
}

// handler serves one method of one route. It returns the value to encode as
// the 200 response body, or an error that ServeHTTP renders.
type handler func(req *http.Request) (any, error)

// rawJSON is a response body written verbatim instead of being
// JSON-encoded; it is how the .../schema endpoints return the schema text
// exactly as registered.
type rawJSON string

// schemaResponse is the body of the endpoints that return a schema. Subject,
// Version and ID are only set by subject-version endpoints; SchemaType and
// References follow Confluent's rule of being omitted when they carry no
// information (AVRO, no references).
type schemaResponse struct {
	Subject    string      `json:"subject,omitempty"`
	Version    int         `json:"version,omitempty"`
	ID         int         `json:"id,omitempty"`
	SchemaType string      `json:"schemaType,omitempty"`
	References []reference `json:"references,omitempty"`
	Schema     string      `json:"schema"`
}

// ServeHTTP implements http.Handler, dispatching Confluent Schema Registry API
// requests (see Registry for the endpoint list).
//
// Routing works on the escaped path, one segment at a time, so that a subject
// containing "/" (sent as %2F, as franz-go's client and Confluent's Java
// client do) stays one segment instead of being split. Every response,
// including errors, is JSON with Content-Type
// application/vnd.schemaregistry.v1+json; unknown routes get 404 and known
// routes with the wrong method get 405 plus an Allow header, both with
// Confluent-style error bodies.
func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	methods := r.route(req.URL.EscapedPath())
	if methods == nil {
		writeError(w, errStatus(http.StatusNotFound, "HTTP 404 Not Found"))
		return
	}
	h, ok := methods[req.Method]
	if !ok {
		w.Header().Set("Allow", strings.Join(slices.Sorted(maps.Keys(methods)), ", "))
		writeError(w, errStatus(http.StatusMethodNotAllowed, "HTTP 405 Method Not Allowed"))
		return
	}
	body, err := h(req)
	if err != nil {
		writeError(w, err)
		return
	}
	writeBody(w, http.StatusOK, body)
}

// splitPath turns an escaped URL path into unescaped segments. It reports
// false for paths that cannot name a route: empty segments (which would
// otherwise read as an empty subject) and invalid escapes. One trailing slash
// is tolerated because some clients append it to /subjects/{subject}.
func splitPath(escaped string) ([]string, bool) {
	escaped = strings.TrimPrefix(escaped, "/")
	escaped = strings.TrimSuffix(escaped, "/")
	if escaped == "" {
		return nil, true
	}
	segs := strings.Split(escaped, "/")
	for i, seg := range segs {
		unescaped, err := url.PathUnescape(seg)
		if err != nil || unescaped == "" {
			return nil, false
		}
		segs[i] = unescaped
	}
	return segs, true
}

// route maps an escaped path to the handlers for each method it supports,
// capturing path parameters in closures. It returns nil for unknown routes.
func (r *Registry) route(escapedPath string) map[string]handler {
	segs, ok := splitPath(escapedPath)
	if !ok {
		return nil
	}
	n := len(segs)
	switch {
	case n == 0:
		// Confluent answers GET / with {}; health checks rely on it.
		return map[string]handler{http.MethodGet: func(*http.Request) (any, error) { return struct{}{}, nil }}

	case segs[0] == "subjects":
		switch {
		case n == 1:
			return map[string]handler{http.MethodGet: r.handleListSubjects}
		case n == 2:
			subject := segs[1]
			return map[string]handler{
				http.MethodPost:   func(req *http.Request) (any, error) { return r.handleLookup(req, subject) },
				http.MethodDelete: func(*http.Request) (any, error) { return r.handleDeleteSubject(subject) },
			}
		case segs[2] != "versions":
			return nil
		case n == 3:
			subject := segs[1]
			return map[string]handler{
				http.MethodGet:  func(*http.Request) (any, error) { return r.handleListVersions(subject) },
				http.MethodPost: func(req *http.Request) (any, error) { return r.handleRegister(req, subject) },
			}
		case n == 4:
			subject, version := segs[1], segs[3]
			return map[string]handler{
				http.MethodGet:    func(*http.Request) (any, error) { return r.handleGetVersion(subject, version, false) },
				http.MethodDelete: func(*http.Request) (any, error) { return r.handleDeleteVersion(subject, version) },
			}
		case n == 5 && segs[4] == "schema":
			subject, version := segs[1], segs[3]
			return map[string]handler{
				http.MethodGet: func(*http.Request) (any, error) { return r.handleGetVersion(subject, version, true) },
			}
		case n == 5 && segs[4] == "referencedby":
			subject, version := segs[1], segs[3]
			return map[string]handler{
				http.MethodGet: func(*http.Request) (any, error) { return r.handleReferencedBy(subject, version) },
			}
		}

	case segs[0] == "schemas":
		switch {
		case n == 2 && segs[1] == "types":
			return map[string]handler{http.MethodGet: func(*http.Request) (any, error) { return []string{schemaTypeAvro}, nil }}
		case n >= 3 && n <= 4 && segs[1] == "ids":
			id, suffix := segs[2], ""
			if n == 4 {
				suffix = segs[3]
			}
			switch suffix {
			case "", "schema", "versions", "subjects":
				return map[string]handler{
					http.MethodGet: func(*http.Request) (any, error) { return r.handleSchemaByID(id, suffix) },
				}
			}
		}

	case segs[0] == "config" && n <= 2:
		// Compatibility is deliberately not enforced: a dev registry that
		// rejected evolutions would block iterating on schemas, and
		// production compatibility is the real registry's job. Reporting
		// NONE, globally and per subject, tells clients exactly that.
		return map[string]handler{
			http.MethodGet: func(*http.Request) (any, error) {
				return map[string]string{"compatibilityLevel": "NONE"}, nil
			},
		}
	}
	return nil
}

func (r *Registry) handleListSubjects(*http.Request) (any, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	// Built on a non-nil slice so that an empty registry encodes as [] rather
	// than null, which clients iterate over without a nil check.
	subjects := slices.AppendSeq(make([]string, 0, len(r.subjects)), maps.Keys(r.subjects))
	slices.Sort(subjects)
	return subjects, nil
}

func (r *Registry) handleListVersions(subject string) (any, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	versions, ok := r.subjects[subject]
	if !ok {
		return nil, errSubjectNotFound(subject)
	}
	out := make([]int, 0, len(versions))
	for _, sv := range versions {
		out = append(out, sv.version)
	}
	return out, nil
}

func (r *Registry) handleRegister(req *http.Request, subject string) (any, error) {
	reg, err := decodeRegistration(req)
	if err != nil {
		return nil, err
	}
	id, err := r.register(subject, reg)
	if err != nil {
		return nil, err
	}
	return map[string]int{"id": id}, nil
}

func (r *Registry) handleLookup(req *http.Request, subject string) (any, error) {
	reg, err := decodeRegistration(req)
	if err != nil {
		return nil, err
	}
	sv, s, err := r.lookup(subject, reg)
	if err != nil {
		return nil, err
	}
	return newSchemaResponse(subject, sv, s), nil
}

func (r *Registry) handleGetVersion(subject, versionText string, raw bool) (any, error) {
	// The version is validated before the subject is looked up, matching
	// Confluent's precedence of 42202 over 40401.
	version, err := parseVersion(versionText)
	if err != nil {
		return nil, err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	sv, err := r.versionLocked(subject, version)
	if err != nil {
		return nil, err
	}
	s := r.byID[sv.id]
	if raw {
		return rawJSON(s.schema), nil
	}
	return newSchemaResponse(subject, sv, s), nil
}

func (r *Registry) handleReferencedBy(subject, versionText string) (any, error) {
	version, err := parseVersion(versionText)
	if err != nil {
		return nil, err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	sv, err := r.versionLocked(subject, version)
	if err != nil {
		return nil, err
	}
	return r.referrersLocked(subject, sv.version, ""), nil
}

func (r *Registry) handleDeleteSubject(subject string) (any, error) {
	return r.deleteSubject(subject)
}

func (r *Registry) handleDeleteVersion(subject, versionText string) (any, error) {
	version, err := parseVersion(versionText)
	if err != nil {
		return nil, err
	}
	return r.deleteVersion(subject, version)
}

func (r *Registry) handleSchemaByID(idText, suffix string) (any, error) {
	id, err := strconv.Atoi(idText)
	if err != nil || id < 1 {
		return nil, errSchemaNotFound(fmt.Sprintf("Schema %s not found", idText))
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	s, ok := r.byID[id]
	if !ok {
		return nil, errSchemaNotFound(fmt.Sprintf("Schema %d not found", id))
	}
	switch suffix {
	case "schema":
		return rawJSON(s.schema), nil
	case "versions":
		return r.usagesLocked(id), nil
	case "subjects":
		subjects := []string{}
		for _, u := range r.usagesLocked(id) {
			if !slices.Contains(subjects, u.Subject) {
				subjects = append(subjects, u.Subject)
			}
		}
		return subjects, nil
	default:
		return newSchemaResponse("", subjectVersion{}, s), nil
	}
}

// newSchemaResponse builds a schema body, applying the omission rule for
// schemaType so that AVRO schemas look exactly like Confluent's responses
// (clients written against old registries do not expect the field).
func newSchemaResponse(subject string, sv subjectVersion, s *storedSchema) schemaResponse {
	resp := schemaResponse{
		Subject:    subject,
		Version:    sv.version,
		ID:         sv.id,
		References: s.references,
		Schema:     s.schema,
	}
	if s.schemaType != schemaTypeAvro {
		resp.SchemaType = s.schemaType
	}
	return resp
}

// parseVersion parses a {version} path segment: a positive 32-bit integer,
// or "latest" / -1 meaning the latest version (returned as -1).
func parseVersion(text string) (int, error) {
	if text == "latest" {
		return -1, nil
	}
	v, err := strconv.ParseInt(text, 10, 32)
	if err != nil || v == 0 || v < -1 {
		return 0, errInvalidVersion(text)
	}
	return int(v), nil
}

// registrationBody is the JSON request body of register and lookup. Fields
// Confluent defines but this registry ignores (id and version for IMPORT
// mode, metadata, ruleSet) are simply not decoded, so clients that send them
// still work.
type registrationBody struct {
	Schema     string      `json:"schema"`
	SchemaType string      `json:"schemaType"`
	References []reference `json:"references"`
}

// decodeRegistration reads and validates the body of a register or lookup
// request. A missing Content-Type is accepted because curl-style scripts
// often omit it. Malformed JSON is a 400, as in Confluent's registry; an empty
// schema or unsupported type is a 422 42201 because the request itself was
// well-formed.
func decodeRegistration(req *http.Request) (registration, error) {
	if ct := req.Header.Get("Content-Type"); ct != "" {
		mediaType, _, err := mime.ParseMediaType(ct)
		if err != nil || !acceptedBodyType(mediaType) {
			return registration{}, errStatus(http.StatusUnsupportedMediaType,
				fmt.Sprintf("HTTP 415 Unsupported Media Type: %q is not one of %s", ct, acceptedBodyTypes))
		}
	}
	data, err := io.ReadAll(io.LimitReader(req.Body, maxBodyBytes+1))
	if err != nil {
		return registration{}, errBadRequest(fmt.Errorf("reading request body: %w", err))
	}
	if len(data) > maxBodyBytes {
		return registration{}, errStatus(http.StatusRequestEntityTooLarge,
			fmt.Sprintf("request body exceeds %d bytes", maxBodyBytes))
	}
	var body registrationBody
	if err := json.Unmarshal(data, &body); err != nil {
		return registration{}, errBadRequest(fmt.Errorf("decoding request body: %w", err))
	}
	if strings.TrimSpace(body.Schema) == "" {
		return registration{}, errInvalidSchema(errors.New("empty schema"))
	}
	schemaType, err := normalizeSchemaType(body.SchemaType)
	if err != nil {
		return registration{}, err
	}
	return registration{schema: body.Schema, schemaType: schemaType, references: body.References}, nil
}

// writeError renders err as Confluent's error body. Errors that are not
// *apiError are internal failures and are reported as 500 / 50001.
func writeError(w http.ResponseWriter, err error) {
	var apiErr *apiError
	if !errors.As(err, &apiErr) {
		apiErr = &apiError{status: http.StatusInternalServerError, code: codeInternal, message: err.Error(), err: err}
	}
	writeBody(w, apiErr.status, errorBody{ErrorCode: apiErr.code, Message: apiErr.message})
}

// writeBody encodes body and writes it with status. Encoding happens into a
// buffer first so that an encoding failure can still become a well-formed
// 500 response instead of a truncated 200.
func writeBody(w http.ResponseWriter, status int, body any) {
	var buf bytes.Buffer
	if raw, ok := body.(rawJSON); ok {
		buf.WriteString(string(raw))
	} else {
		enc := json.NewEncoder(&buf)
		// Schemas are JSON text embedded in JSON; HTML escaping would
		// only make them harder to read in curl output.
		enc.SetEscapeHTML(false)
		if err := enc.Encode(body); err != nil {
			status = http.StatusInternalServerError
			buf.Reset()
			msg, _ := json.Marshal(fmt.Sprintf("encoding response: %v", err))
			fmt.Fprintf(&buf, `{"error_code":%d,"message":%s}`+"\n", codeInternal, msg)
		}
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}
