package schemaregistry

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/hamba/avro/v2"
)

// normalizeSchemaType maps a request's schemaType to the stored form, or
// rejects it.
//
// Only AVRO is accepted because this registry validates schemas before
// storing them and has no PROTOBUF or JSON Schema parser; storing them
// unvalidated would let a dev setup succeed against this registry and fail
// against a real one. Matching is case-insensitive like franz-go's client.
func normalizeSchemaType(schemaType string) (string, error) {
	if schemaType == "" || strings.EqualFold(schemaType, schemaTypeAvro) {
		return schemaTypeAvro, nil
	}
	return "", errInvalidSchema(fmt.Errorf("schema type %q is not supported: this dev registry only supports AVRO", schemaType))
}

// validateAvroLocked parses schema as Avro after parsing, in dependency order,
// every schema reachable through refIDs.
//
// All parsing goes into one fresh cache per call. hamba's default cache is
// package-global and keyed by full name: using it would let two versions of
// the same named record overwrite each other, and would let a schema resolve
// a named type it never declared a reference to merely because some earlier
// registration happened to define it. A fresh cache makes validation depend
// on exactly the references the request declares.
func (r *Registry) validateAvroLocked(schema string, refIDs []int) error {
	if strings.TrimSpace(schema) == "" {
		return errors.New("empty schema")
	}
	// hamba treats text that is not JSON as a bare type name, which would
	// yield a confusing "unknown type" message for what is really a JSON
	// syntax error; Confluent requires JSON, so say so directly.
	var probe any
	if err := json.Unmarshal([]byte(schema), &probe); err != nil {
		return fmt.Errorf("schema is not valid JSON: %w", err)
	}

	cache := &avro.SchemaCache{}
	loaded := make(map[int]bool)
	for _, id := range refIDs {
		if err := r.loadReferenceLocked(id, cache, loaded); err != nil {
			return err
		}
	}
	if _, err := avro.ParseWithCache(schema, "", cache); err != nil {
		return fmt.Errorf("parsing avro schema: %w", err)
	}
	return nil
}

// loadReferenceLocked parses the stored schema id into cache, its own
// references first so that its named types can resolve. loaded prevents
// parsing a schema twice when references form a diamond; cycles cannot occur
// because a reference must exist before the schema that refers to it.
func (r *Registry) loadReferenceLocked(id int, cache *avro.SchemaCache, loaded map[int]bool) error {
	if loaded[id] {
		return nil
	}
	loaded[id] = true
	s, ok := r.byID[id]
	if !ok {
		// Stored schemas are never removed, so this means a bug.
		return fmt.Errorf("referenced schema id %d is missing from the registry", id)
	}
	for _, refID := range s.refIDs {
		if err := r.loadReferenceLocked(refID, cache, loaded); err != nil {
			return err
		}
	}
	if _, err := avro.ParseWithCache(s.schema, "", cache); err != nil {
		return fmt.Errorf("parsing referenced schema id %d: %w", id, err)
	}
	return nil
}
