package main

import (
	"bytes"
	"encoding/json"
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
		"Allows you to configure a batching policy.", // Benthos' xref:…[batching policy], as it reads
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("docs of pg_upsert lack %q", want)
		}
	}
	if strings.Contains(doc, "xref:") {
		t.Error("docs of pg_upsert show Asciidoc xref: markup")
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
	// An annotated enum's options, each with its meaning.
	out.Reset()
	if err := printDocs(&out, service.GlobalEnvironment(), "", "debezium_unwrap"); err != nil || !strings.Contains(out.String(), "\n- `mark`: ") {
		t.Errorf("docs of debezium_unwrap: the tombstones options (mark) are not listed: %v\n%.3000s", err, out.String())
	}
	if got := readable("see xref:guides:bloblang/about.adoc[] or link:https://x.io[the site]."); got != "see guides/bloblang/about or the site." {
		t.Errorf("readable: %q", got)
	}
	if err := printDocs(&out, service.GlobalEnvironment(), "", "no_such_thing"); err == nil || !strings.Contains(err.Error(), `"no_such_thing"`) {
		t.Errorf("an unknown component: %v", err)
	}
}

// Every example in our components' specs is a config that lints clean.
func TestOurComponentExamplesLint(t *testing.T) {
	ours := map[string]bool{"kafka_franz": true, "schema_registry_decode": true, "schema_registry_encode": true,
		"debezium_unwrap": true, "content_to_metadata": true, "cdc_join": true, "pg_upsert": true}
	env := service.GlobalEnvironment()
	seen := 0
	check := func(name string, v *service.ConfigView) {
		if !ours[name] {
			return
		}
		b, err := v.FormatJSON()
		if err != nil {
			t.Fatal(err)
		}
		var d componentDoc
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatal(err)
		}
		for _, e := range d.Examples {
			seen++
			if err := service.NewStreamBuilder().SetYAML(e.Config); err != nil {
				t.Errorf("%s example %q does not lint: %v", name, e.Title, err)
			}
		}
	}
	env.WalkInputs(check)
	env.WalkOutputs(check)
	env.WalkProcessors(check)
	if seen < 6 {
		t.Errorf("%d examples in our components, want at least 6", seen)
	}
}
