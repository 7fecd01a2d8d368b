package join

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
)

func TestReplayRecordRoundTrip(t *testing.T) {
	outs := func(rs ...replayOut) []byte {
		b, err := json.Marshal(rs)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	entries := []rawReplayEntry{
		{version: 1, at: 1700000000, outs: outs(replayOut{Relation: "customer_account", Delete: `{"account_number":"7"}`})},
		{version: 1 << 62, at: 0, outs: outs(replayOut{Relation: "t_transaction", Version: 9, Body: map[string]any{"id": 3.0}, ParentVersion: 2, ChildKey: "3"})},
	}
	got, err := parseReplayRecord(encodeReplayRecord(entries))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, entries) {
		t.Fatalf("round trip: got %+v, want %+v", got, entries)
	}
	decoded, err := got[1].decode()
	if err != nil || len(decoded) != 1 || decoded[0].ChildKey != "3" || fmt.Sprint(decoded[0].Body["id"]) != "3" {
		t.Fatalf("decoded outputs %+v, %v", decoded, err)
	}
}

// A store written by an earlier build holds replay records as a JSON array;
// they still replay, and are rewritten in the new format.
func TestReplayRecordReadsTheLegacyJSON(t *testing.T) {
	legacy, err := json.Marshal([]replayEntry{{Version: 5, At: 42, Out: []replayOut{{Relation: "r", Delete: `{"k":1}`}}}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := parseReplayRecord(legacy)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].version != 5 || got[0].at != 42 {
		t.Fatalf("legacy record read as %+v", got)
	}
	outs, err := got[0].decode()
	if err != nil || len(outs) != 1 || outs[0].Delete != `{"k":1}` {
		t.Fatalf("legacy outputs %+v, %v", outs, err)
	}
}

func TestReplayRecordCorruptIsAnError(t *testing.T) {
	good := encodeReplayRecord([]rawReplayEntry{{version: 3, at: 4, outs: []byte(`[]`)}})
	for name, b := range map[string][]byte{
		"truncated":  good[:len(good)-1],
		"bad length": append([]byte{replayFormat, 6, 8, 0xff, 0xff, 0xff, 0xff, 0x0f}, '['),
		"not json":   []byte("{oops"),
	} {
		if _, err := parseReplayRecord(b); err == nil {
			t.Errorf("%s: parsed without an error", name)
		}
	}
}
