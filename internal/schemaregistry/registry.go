// Package schemaregistry implements an in-memory HTTP server that speaks the
// subset of the Confluent Schema Registry REST API that Kafka serializers,
// Debezium's AvroConverter, Redpanda Connect and franz-go's sr client use.
//
// The server exists so that the local development stack and integration
// tests can run without a JVM-based registry container. It deliberately keeps
// everything in memory: state lives exactly as long as the *Registry value,
// which makes every test start from an empty registry and makes a restart of
// the dev stack a clean slate.
//
// Behaviour mirrors Confluent's where clients can observe it:
//
//   - Schema ids are global, start at 1 and only ever increase. The same
//     schema (same text after JSON whitespace normalization, same type, same
//     references) always maps to the same id, even across subjects, because
//     consumers cache decoders by id and producers expect re-registration to
//     be idempotent.
//   - Versions are per subject, start at 1, and registering a schema that is
//     already a version of the subject returns the existing id without
//     creating a new version.
//   - Errors are JSON objects {"error_code": N, "message": "..."} using
//     Confluent's numeric codes, so clients that switch on error codes (such
//     as sr.ResponseError.ErrorCode) behave as they would in production.
//
// Only AVRO schemas are accepted; PROTOBUF and JSON schemas are rejected at
// registration. Compatibility is not enforced (see the GET /config endpoint),
// deletes are always permanent, and schema contexts, modes, metadata and rule
// sets are not supported.
package schemaregistry

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// schemaTypeAvro is the only schema type this registry stores. An absent
// schemaType in Confluent's API means AVRO, so requests without one are
// normalized to this value.
const schemaTypeAvro = "AVRO"

// Registry is an in-memory, concurrency-safe Confluent Schema Registry
// compatible server. It implements http.Handler, so it can be passed directly
// to httptest.NewServer or http.Server, or mounted below a prefix with
// http.StripPrefix (which keeps escaped paths intact, so subjects containing
// an escaped "/" keep working).
//
// The zero value is not usable; create a Registry with New. A Registry must not
// be copied after first use because it embeds a mutex guarding its state.
//
// Supported endpoints:
//
//	GET    /                                          {}
//	GET    /subjects                                  sorted subject names
//	POST   /subjects/{subject}                        look up a schema under a subject
//	DELETE /subjects/{subject}                        delete a subject (always permanent)
//	GET    /subjects/{subject}/versions               versions of a subject
//	POST   /subjects/{subject}/versions               register a schema
//	GET    /subjects/{subject}/versions/{version}     schema of a version ({version} may be "latest" or -1)
//	DELETE /subjects/{subject}/versions/{version}     delete one version (always permanent)
//	GET    /subjects/{subject}/versions/{version}/schema        raw schema text
//	GET    /subjects/{subject}/versions/{version}/referencedby  ids of schemas referencing the version
//	GET    /schemas/types                             ["AVRO"]
//	GET    /schemas/ids/{id}                          schema by global id
//	GET    /schemas/ids/{id}/schema                   raw schema text by global id
//	GET    /schemas/ids/{id}/versions                 subject-versions using the id
//	GET    /schemas/ids/{id}/subjects                 subjects using the id
//	GET    /config                                    {"compatibilityLevel":"NONE"}
//	GET    /config/{subject}                          {"compatibilityLevel":"NONE"}
//
// Query parameters (normalize, permanent, deleted, defaultToGlobal, ...) are
// accepted and ignored, because every behaviour they toggle is either fixed
// here (deletes are permanent, nothing is soft deleted) or irrelevant to an
// unenforced, AVRO-only registry.
type Registry struct {
	// mu guards every field below. Registration holds the write lock for
	// its whole check-validate-insert sequence; see register for why.
	mu sync.RWMutex

	// lastID is the most recently assigned global schema id. Ids are never
	// reused, even after deletes, because consumers may still hold records
	// encoded with an old id.
	lastID int

	// byID holds every schema ever registered. Entries survive subject
	// deletion for the same reason lastID never goes back: data encoded
	// with the id remains decodable.
	byID map[int]*storedSchema

	// byKey maps a schema's identity key (see identityKey) to its id, which
	// is how re-registering the same content yields the same id.
	byKey map[string]int

	// subjects maps a subject name to its versions in ascending version
	// order. A subject with no versions is removed so that it disappears
	// from GET /subjects, as a permanently deleted subject does in
	// Confluent's registry.
	subjects map[string][]subjectVersion
}

// storedSchema is one globally identified schema. It is immutable once
// stored, which lets handlers hand out its fields without copying under lock.
type storedSchema struct {
	id         int
	schema     string      // the text as first registered, returned verbatim
	schemaType string      // always schemaTypeAvro today; kept for the response rule
	references []reference // resolved: versions are concrete, never -1
	// refIDs are the global ids the references resolved to at
	// registration. Validating a later schema that references this one
	// walks refIDs instead of re-resolving subject/version pairs, so the
	// walk cannot be disturbed by later deletes.
	refIDs []int
}

// subjectVersion binds one version number of a subject to a global id.
type subjectVersion struct {
	version int
	id      int
}

// reference is Confluent's schema reference: the named type Name is defined
// by the schema registered as Version of Subject.
type reference struct {
	Name    string `json:"name"`
	Subject string `json:"subject"`
	Version int    `json:"version"`
}

// New returns an empty Registry ready to serve requests.
//
// Every Registry is independent: there is no package-level state, so tests can
// create as many registries as they like and run them in parallel.
func New() *Registry {
	return &Registry{
		byID:     make(map[int]*storedSchema),
		byKey:    make(map[string]int),
		subjects: make(map[string][]subjectVersion),
	}
}

// registration is a decoded registration or lookup request body.
type registration struct {
	schema     string
	schemaType string
	references []reference
}

// identityKey returns the key under which a schema's content is
// deduplicated. Confluent treats two registrations as the same schema when
// their parsed forms, type and references match: an Avro schema is compared
// as the JSON it parses to, its keys in order and a primitive given as
// {"type": "int"} the same as "int", so that one schema written two ways
// shares an id. Text that is not JSON is compared as it is.
func identityKey(schema, schemaType string, refs []reference) string {
	text := strings.TrimSpace(schema)
	var parsed any
	if err := json.Unmarshal([]byte(text), &parsed); err == nil {
		if schemaType == "" || schemaType == "AVRO" {
			parsed = normalizeAvro(parsed)
		}
		if b, err := json.Marshal(parsed); err == nil { // sorted keys, compact
			text = string(b)
		}
	}
	var key strings.Builder
	key.WriteString(schemaType)
	key.WriteByte(0)
	key.WriteString(text)
	for _, ref := range refs {
		fmt.Fprintf(&key, "\x00%q\x00%q\x00%d", ref.Name, ref.Subject, ref.Version)
	}
	return key.String()
}

// avroPrimitives are the types a bare name stands for.
var avroPrimitives = map[string]bool{"null": true, "boolean": true, "int": true, "long": true, "float": true, "double": true, "bytes": true, "string": true}

// normalizeAvro writes a primitive type given as an object of its "type"
// alone as its name, as Avro's own printing does, everywhere in v.
func normalizeAvro(v any) any {
	switch x := v.(type) {
	case map[string]any:
		if t, ok := x["type"].(string); ok && len(x) == 1 && avroPrimitives[t] {
			return t
		}
		for k, e := range x {
			x[k] = normalizeAvro(e)
		}
	case []any:
		for i, e := range x {
			x[i] = normalizeAvro(e)
		}
	}
	return v
}

// register stores reg under subject and returns its global id.
//
// The write lock is held for the whole sequence (resolve references, look up
// existing content, validate, assign id, append version). Holding it across
// Avro parsing costs little for dev-sized schemas and buys two guarantees
// that are otherwise easy to get subtly wrong: concurrent registrations of the
// same content always end up with one id and one version, and a referenced
// subject cannot be deleted between validating a schema and storing it.
func (r *Registry) register(subject string, reg registration) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()

	refs, refIDs, err := r.resolveReferencesLocked(reg.references)
	if err != nil {
		return 0, errInvalidSchema(fmt.Errorf("resolving references for subject %q: %w", subject, err))
	}

	key := identityKey(reg.schema, reg.schemaType, refs)
	id, known := r.byKey[key]
	if known {
		if _, ok := r.versionByIDLocked(subject, id); ok {
			return id, nil
		}
	} else {
		// Content already known was validated when it was first stored,
		// so only new content is parsed.
		if err := r.validateAvroLocked(reg.schema, refIDs); err != nil {
			return 0, errInvalidSchema(fmt.Errorf("validating schema for subject %q: %w", subject, err))
		}
		r.lastID++
		id = r.lastID
		r.byID[id] = &storedSchema{
			id:         id,
			schema:     reg.schema,
			schemaType: reg.schemaType,
			references: refs,
			refIDs:     refIDs,
		}
		r.byKey[key] = id
	}

	versions := r.subjects[subject]
	next := 1
	if n := len(versions); n > 0 {
		next = versions[n-1].version + 1
	}
	r.subjects[subject] = append(versions, subjectVersion{version: next, id: id})
	return id, nil
}

// lookup reports which version of subject holds the content of reg.
//
// Unlike register it never validates: content that is not stored cannot be
// found, which is all a lookup has to say about it.
func (r *Registry) lookup(subject string, reg registration) (subjectVersion, *storedSchema, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()

	if _, ok := r.subjects[subject]; !ok {
		return subjectVersion{}, nil, errSubjectNotFound(subject)
	}
	refs, _, err := r.resolveReferencesLocked(reg.references)
	if err != nil {
		// A reference that cannot be resolved cannot be part of any
		// stored schema, so the honest answer is "not found".
		return subjectVersion{}, nil, errSchemaNotFound(fmt.Sprintf("Schema not found: resolving references: %v", err))
	}
	id, ok := r.byKey[identityKey(reg.schema, reg.schemaType, refs)]
	if !ok {
		return subjectVersion{}, nil, errSchemaNotFound("Schema not found")
	}
	sv, ok := r.versionByIDLocked(subject, id)
	if !ok {
		return subjectVersion{}, nil, errSchemaNotFound("Schema not found")
	}
	return sv, r.byID[id], nil
}

// resolveReferencesLocked checks that every reference names an existing
// subject version and returns the references with "latest" (-1) replaced by
// the concrete version, plus the global ids they point at. Its errors are
// plain: a failed resolution is an invalid schema to register but merely an
// unknown schema to lookup, so callers choose the API error.
//
// Resolving -1 at registration time pins the reference, so the stored schema
// keeps meaning the same thing after the referenced subject evolves.
func (r *Registry) resolveReferencesLocked(refs []reference) ([]reference, []int, error) {
	if len(refs) == 0 {
		return nil, nil, nil
	}
	resolved := make([]reference, 0, len(refs))
	ids := make([]int, 0, len(refs))
	for i, ref := range refs {
		if ref.Name == "" {
			return nil, nil, fmt.Errorf("reference %d: name must not be empty", i)
		}
		if ref.Subject == "" {
			return nil, nil, fmt.Errorf("reference %q: subject must not be empty", ref.Name)
		}
		if ref.Version == 0 || ref.Version < -1 {
			return nil, nil, fmt.Errorf("reference %q: version %d is invalid, want a positive version or -1 for latest", ref.Name, ref.Version)
		}
		sv, err := r.versionLocked(ref.Subject, ref.Version)
		if err != nil {
			return nil, nil, fmt.Errorf("reference %q: subject %q version %s is not registered: %w", ref.Name, ref.Subject, versionString(ref.Version), err)
		}
		resolved = append(resolved, reference{Name: ref.Name, Subject: ref.Subject, Version: sv.version})
		ids = append(ids, sv.id)
	}
	return resolved, ids, nil
}

// versionLocked returns version of subject, where -1 means the latest
// version.
func (r *Registry) versionLocked(subject string, version int) (subjectVersion, error) {
	versions, ok := r.subjects[subject]
	if !ok {
		return subjectVersion{}, errSubjectNotFound(subject)
	}
	if version == -1 {
		return versions[len(versions)-1], nil
	}
	i, found := slices.BinarySearchFunc(versions, version, func(sv subjectVersion, v int) int { return sv.version - v })
	if !found {
		return subjectVersion{}, errVersionNotFound(subject, version)
	}
	return versions[i], nil
}

// versionByIDLocked returns the version of subject that holds id, if any.
// Registration guarantees at most one such version per subject.
func (r *Registry) versionByIDLocked(subject string, id int) (subjectVersion, bool) {
	for _, sv := range r.subjects[subject] {
		if sv.id == id {
			return sv, true
		}
	}
	return subjectVersion{}, false
}

// usage is one subject-version that holds a global id; it is the JSON shape
// of GET /schemas/ids/{id}/versions.
type usage struct {
	Subject string `json:"subject"`
	Version int    `json:"version"`
}

// usagesLocked lists the subject-versions holding id, sorted by subject and
// version so that responses are deterministic.
func (r *Registry) usagesLocked(id int) []usage {
	out := []usage{}
	for subject, versions := range r.subjects {
		for _, sv := range versions {
			if sv.id == id {
				out = append(out, usage{Subject: subject, Version: sv.version})
			}
		}
	}
	slices.SortFunc(out, func(a, b usage) int {
		if c := strings.Compare(a.Subject, b.Subject); c != 0 {
			return c
		}
		return a.Version - b.Version
	})
	return out
}

// referrersLocked returns the sorted ids of schemas that reference version of
// subject and are still used by some subject other than exclude.
//
// Only schemas still in use count: a schema whose subjects were all deleted is
// only reachable by id, and letting it pin its references would make them
// undeletable forever. exclude lets a subject deletion ignore references from
// within the subject being deleted.
func (r *Registry) referrersLocked(subject string, version int, exclude string) []int {
	out := []int{}
	for id, s := range r.byID {
		refers := slices.ContainsFunc(s.references, func(ref reference) bool {
			return ref.Subject == subject && ref.Version == version
		})
		if !refers {
			continue
		}
		for _, u := range r.usagesLocked(id) {
			if u.Subject != exclude {
				out = append(out, id)
				break
			}
		}
	}
	slices.Sort(out)
	return out
}

// deleteSubject permanently removes subject and returns its versions.
//
// Deletes refuse to strand references: Confluent rejects deleting a version
// another schema references (error 42206), and a dev registry that allowed it
// would let clients store schemas that can no longer be resolved.
func (r *Registry) deleteSubject(subject string) ([]int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()

	versions, ok := r.subjects[subject]
	if !ok {
		return nil, errSubjectNotFound(subject)
	}
	deleted := make([]int, 0, len(versions))
	for _, sv := range versions {
		if ids := r.referrersLocked(subject, sv.version, subject); len(ids) > 0 {
			return nil, errReferenceExists(subject, sv.version, ids)
		}
		deleted = append(deleted, sv.version)
	}
	delete(r.subjects, subject)
	return deleted, nil
}

// deleteVersion permanently removes one version (-1 for latest) of subject
// and returns the deleted version number.
func (r *Registry) deleteVersion(subject string, version int) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()

	sv, err := r.versionLocked(subject, version)
	if err != nil {
		return 0, err
	}
	if ids := r.referrersLocked(subject, sv.version, ""); len(ids) > 0 {
		return 0, errReferenceExists(subject, sv.version, ids)
	}
	remaining := slices.DeleteFunc(slices.Clone(r.subjects[subject]), func(v subjectVersion) bool {
		return v.version == sv.version
	})
	if len(remaining) == 0 {
		delete(r.subjects, subject)
	} else {
		r.subjects[subject] = remaining
	}
	return sv.version, nil
}

// versionString renders a version the way the API spells it, so error
// messages about -1 say "latest" rather than a confusing negative number.
func versionString(version int) string {
	if version == -1 {
		return "latest"
	}
	return fmt.Sprint(version)
}
