package message

import (
	"bytes"
	"context"
	"testing"

	"github.com/redpanda-data/benthos/v4/public/service"
)

func newTestProcessor(t *testing.T, yaml string) service.BatchProcessor {
	t.Helper()
	conf, err := contentToMetadataSpec().ParseYAML(yaml, nil)
	if err != nil {
		t.Fatal(err)
	}
	key, err := conf.FieldString(fieldKey)
	if err != nil {
		t.Fatal(err)
	}
	return &contentToMetadata{key: key}
}

// The content is kept under the key, byte for byte, also after a later
// stage replaces the content; a tombstone keeps an empty value.
func TestContentToMetadataKeepsTheOriginal(t *testing.T) {
	p := newTestProcessor(t, `key: dlq_value`)
	raw := []byte{0x00, 0x00, 0x00, 0x00, 0x07, 0xff, 0x01} // not JSON, not UTF-8
	msg, tomb := service.NewMessage(raw), service.NewMessage(nil)
	out, err := p.ProcessBatch(context.Background(), service.MessageBatch{msg, tomb})
	if err != nil || len(out) != 1 || len(out[0]) != 2 {
		t.Fatalf("ProcessBatch: %v, %v", out, err)
	}
	msg.SetStructuredMut(map[string]any{"decoded": true}) // as schema_registry_decode does
	v, ok := msg.MetaGetMut("dlq_value")
	if b, isBytes := v.([]byte); !ok || !isBytes || !bytes.Equal(b, raw) {
		t.Errorf("dlq_value = %#v, want the original bytes %v", v, raw)
	}
	if v, ok := tomb.MetaGetMut("dlq_value"); !ok || len(v.([]byte)) != 0 {
		t.Errorf("tombstone: dlq_value = %#v, %v; want empty", v, ok)
	}
}

func TestContentToMetadataNeedsAKey(t *testing.T) {
	if _, err := contentToMetadataSpec().ParseYAML(`{}`, nil); err == nil {
		t.Error("no key: parsed, want an error")
	}
}
