package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"github.com/redpanda-data/benthos/v4/public/service"
	"github.com/urfave/cli/v2"
)

func docsCommand() *cli.Command {
	return &cli.Command{
		Name:      "docs",
		Usage:     "Print a component's documentation: every field with its type, default, description and examples",
		ArgsUsage: "NAME",
		Description: `Prints the documentation of the components named NAME (an input and an output
can share a name: both are printed unless --kind picks one), as Markdown, from
the same spec that lint checks configs against. Advanced fields are included.

  odsflow docs pg_upsert
  odsflow docs --kind input kafka_franz`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "kind", Usage: "only this kind: input, output, processor, cache, rate_limit, buffer, metric, tracer, scanner"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return cli.Exit("odsflow docs: want one component name (odsflow list shows them)", 1)
			}
			if err := printDocs(os.Stdout, service.GlobalEnvironment(), c.String("kind"), c.Args().First()); err != nil {
				fmt.Fprintf(os.Stderr, "odsflow docs: %v\n", err)
				return cli.Exit("", 1)
			}
			return nil
		},
	}
}

// componentDoc is the part of a spec's JSON (ConfigView.FormatJSON) that
// docs prints.
type componentDoc struct {
	Name        string   `json:"name"`
	Type        string   `json:"type"`
	Status      string   `json:"status"`
	Summary     string   `json:"summary"`
	Description string   `json:"description"`
	Config      fieldDoc `json:"config"`
	Examples    []struct {
		Title   string `json:"title"`
		Summary string `json:"summary"`
		Config  string `json:"config"`
	} `json:"examples"`
}

type fieldDoc struct {
	Name        string   `json:"name"`
	Type        string   `json:"type"`
	Kind        string   `json:"kind"`
	Description string   `json:"description"`
	Advanced    bool     `json:"is_advanced"`
	Deprecated  bool     `json:"is_deprecated"`
	Optional    bool     `json:"is_optional"`
	Secret      bool     `json:"is_secret"`
	Default     any      `json:"default"`
	Examples    []any    `json:"examples"`
	Options     []string `json:"options"`
	// AnnotatedOptions: the options of an annotated enum, each with what
	// it means (Benthos keeps them apart from options).
	AnnotatedOptions [][2]string `json:"annotated_options"`
	Children         []fieldDoc  `json:"children"`
}

// printDocs writes the docs of the components called name (of kind, when
// not empty) found in env.
func printDocs(w io.Writer, env *service.Environment, kind, name string) error {
	var specs [][]byte
	var walkErr error
	visit := func(k string) func(string, *service.ConfigView) {
		return func(n string, v *service.ConfigView) {
			if n != name || (kind != "" && kind != k) {
				return
			}
			b, err := v.FormatJSON()
			if err != nil {
				walkErr = fmt.Errorf("%s %s: %w", k, n, err)
				return
			}
			specs = append(specs, b)
		}
	}
	env.WalkInputs(visit("input"))
	env.WalkOutputs(visit("output"))
	env.WalkProcessors(visit("processor"))
	env.WalkCaches(visit("cache"))
	env.WalkRateLimits(visit("rate_limit"))
	env.WalkBuffers(visit("buffer"))
	env.WalkMetrics(visit("metric"))
	env.WalkTracers(visit("tracer"))
	env.WalkScanners(visit("scanner"))
	if walkErr != nil {
		return walkErr
	}
	if len(specs) == 0 {
		if kind != "" {
			return fmt.Errorf("no %s named %q (odsflow list shows them)", kind, name)
		}
		return fmt.Errorf("no component named %q (odsflow list shows them)", name)
	}
	for i, b := range specs {
		var d componentDoc
		if err := json.Unmarshal(b, &d); err != nil {
			return fmt.Errorf("reading the spec of %s: %w", name, err)
		}
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "# %s (%s, %s)\n\n%s\n", d.Name, d.Type, d.Status, strings.TrimSpace(d.Summary))
		if desc := readable(d.Description); desc != "" {
			fmt.Fprintf(w, "\n%s\n", desc)
		}
		for i, e := range d.Examples {
			if i == 0 {
				fmt.Fprintf(w, "\n## Examples\n")
			}
			fmt.Fprintf(w, "\n### %s\n\n%s\n\n```yaml\n%s\n```\n", e.Title, strings.TrimSpace(e.Summary), strings.Trim(e.Config, "\n"))
		}
		if len(d.Config.Children) > 0 {
			fmt.Fprintf(w, "\n## Fields\n")
			for _, f := range d.Config.Children {
				printField(w, "", f)
			}
		}
	}
	return nil
}

func printField(w io.Writer, parent string, f fieldDoc) {
	path := parent + f.Name
	typ := f.Type
	switch f.Kind {
	case "array":
		typ = "list of " + typ
	case "2darray":
		typ = "list of lists of " + typ
	case "map":
		typ = "map of " + typ
	}
	var notes []string
	for _, n := range []struct {
		on   bool
		text string
	}{{f.Advanced, "advanced"}, {f.Optional, "optional"}, {f.Secret, "secret"}, {f.Deprecated, "deprecated"}} {
		if n.on {
			notes = append(notes, n.text)
		}
	}
	if len(notes) > 0 {
		typ += ", " + strings.Join(notes, ", ")
	}
	fmt.Fprintf(w, "\n### `%s` (%s)\n", path, typ)
	if d := readable(f.Description); d != "" {
		fmt.Fprintf(w, "\n%s\n", d)
	}
	if f.Default != nil {
		fmt.Fprintf(w, "\nDefault: `%s`\n", compactJSON(f.Default))
	}
	if len(f.Options) > 0 {
		fmt.Fprintf(w, "\nOptions: `%s`\n", strings.Join(f.Options, "`, `"))
	}
	if len(f.AnnotatedOptions) > 0 {
		fmt.Fprintf(w, "\nOptions:\n")
		for _, o := range f.AnnotatedOptions {
			fmt.Fprintf(w, "- `%s`: %s\n", o[0], readable(o[1]))
		}
	}
	for _, e := range f.Examples {
		fmt.Fprintf(w, "\nExample: `%s`\n", compactJSON(e))
	}
	child := path + "."
	if f.Kind == "array" {
		child = path + "[]."
	}
	for _, c := range f.Children {
		printField(w, child, c)
	}
}

// asciidocLink matches Benthos' Asciidoc cross-references and links in
// descriptions, xref:target[text] and link:url[text]: in a terminal, the
// text is what reads.
var asciidocLink = regexp.MustCompile(`(?:xref|link):([^\s\[]+)\[([^\]]*)\]`)

// readable is a description as it reads in a terminal.
func readable(s string) string {
	return asciidocLink.ReplaceAllStringFunc(strings.TrimSpace(s), func(link string) string {
		m := asciidocLink.FindStringSubmatch(link)
		if m[2] != "" {
			return m[2]
		}
		// No text: the page it names, as a path of Redpanda Connect's
		// docs (xref:guides:bloblang/about.adoc[] → guides/bloblang/about).
		target := strings.TrimSuffix(m[1], ".adoc")
		return strings.ReplaceAll(target, ":", "/")
	})
}

func compactJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}
