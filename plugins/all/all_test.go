package all

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// A plugin package that is not imported here compiles, passes its own tests
// and is still missing from the binary; this test makes that a failure.
func TestEveryPluginPackageIsImported(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "all.go", nil, parser.ImportsOnly)
	if err != nil {
		t.Fatal(err)
	}
	imported := map[string]bool{}
	for _, imp := range f.Imports {
		p, _ := strconv.Unquote(imp.Path.Value)
		imported[p] = true
	}
	entries, err := os.ReadDir("..")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.IsDir() || e.Name() == "all" {
			continue
		}
		files, _ := filepath.Glob(filepath.Join("..", e.Name(), "*.go"))
		hasCode := false
		for _, f := range files {
			hasCode = hasCode || !strings.HasSuffix(f, "_test.go")
		}
		pkg := "github.com/odsflow/odsflow/plugins/" + e.Name()
		if hasCode && !imported[pkg] {
			t.Errorf("plugins/all does not import %s: its components are missing from the binary", pkg)
		}
	}
	for p := range imported {
		if !strings.HasPrefix(p, "github.com/odsflow/odsflow/plugins/") {
			t.Errorf("plugins/all imports %s, which is not a plugin package", p)
		}
	}
}
