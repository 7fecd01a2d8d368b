package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/redpanda-data/benthos/v4/public/service"
)

func TestDocsPrintsEveryFieldOfAComponent(t *testing.T) {
	var out bytes.Buffer
	if err := printDocs(&out, service.GlobalEnvironment(), "", "pg_upsert"); err != nil {
		t.Fatal(err)
	}
	doc := out.String()
	for _, want := range []string{
		"# pg_upsert (output, ",
		"### `dsn` (string, secret)",
		"### `tables[].key_columns` (list of string)\n\nThe conflict target: a primary key or unique index of the table.\n\nExample: `[\"account_number\"]`",
		"### `retry.max_interval` (string, advanced)",
		"Default: `\"5s\"`",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("docs of pg_upsert lack %q", want)
		}
	}

	out.Reset()
	if err := printDocs(&out, service.GlobalEnvironment(), "", "kafka_franz"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "# kafka_franz (input, ") || !strings.Contains(out.String(), "# kafka_franz (output, ") {
		t.Errorf("docs of kafka_franz: want the input and the output:\n%.300s", out.String())
	}
	out.Reset()
	if err := printDocs(&out, service.GlobalEnvironment(), "output", "kafka_franz"); err != nil || strings.Contains(out.String(), "(input, ") {
		t.Errorf("--kind output: %v\n%.300s", err, out.String())
	}
	if err := printDocs(&out, service.GlobalEnvironment(), "", "no_such_thing"); err == nil || !strings.Contains(err.Error(), `"no_such_thing"`) {
		t.Errorf("an unknown component: %v", err)
	}
}
