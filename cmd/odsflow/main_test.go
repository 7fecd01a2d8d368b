package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// asBinaryEnv makes the test binary act as the odsflow binary, so tests run
// the real CLI in a subprocess without a separate build.
const asBinaryEnv = "ODSFLOW_TEST_AS_BINARY"

func TestMain(m *testing.M) {
	if os.Getenv(asBinaryEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// odsflow runs the CLI with args and returns its stdout, stderr and exit code.
func odsflow(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), asBinaryEnv+"=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running odsflow %v: %v", args, err)
	}
	return stdout.String(), stderr.String(), code
}

func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestVersionIsStamped(t *testing.T) {
	out, _, code := odsflow(t, "--version")
	if code != 0 || !strings.Contains(out, "Version: "+version) || !strings.Contains(out, "Date: "+dateBuilt) {
		t.Fatalf("--version: code %d, output %q; want Version: %s", code, out, version)
	}
}

func TestListShowsBenthosComponents(t *testing.T) {
	out, _, code := odsflow(t, "list", "inputs", "processors", "outputs")
	if code != 0 {
		t.Fatalf("list: exit %d", code)
	}
	// Benthos' own components, and ours from plugins/all.
	for _, name := range []string{"generate", "stdin", "http_server", "mapping", "branch", "stdout", "file", "kafka_franz"} {
		if !strings.Contains(out, "  - "+name+"\n") {
			t.Errorf("list does not show %q", name)
		}
	}
}

const goodConfig = `input:
  generate:
    count: 2
    interval: ""
    mapping: 'root = {"n": count("gen")}'
pipeline:
  processors:
    - mapping: 'root.doubled = this.n * 2'
output:
  stdout: {}
`

func TestLintRunEchoAndConfigTests(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, dir, "good.yaml", goodConfig)
	bad := writeFile(t, dir, "bad.yaml", "input:\n  generate:\n    mapping: 'root = 1'\n    no_such_field: 3\noutput:\n  stdout: {}\n")

	if out, errOut, code := odsflow(t, "lint", good); code != 0 {
		t.Fatalf("lint good config: exit %d: %s%s", code, out, errOut)
	}
	out, errOut, code := odsflow(t, "lint", bad)
	if code == 0 || !strings.Contains(out+errOut, "no_such_field") {
		t.Fatalf("lint bad config: exit %d, output %q; want a failure naming the field", code, out+errOut)
	}

	out, errOut, code = odsflow(t, "run", good)
	if code != 0 {
		t.Fatalf("run: exit %d: %s", code, errOut)
	}
	for _, want := range []string{`{"doubled":2}`, `{"doubled":4}`} {
		if !strings.Contains(out, want) {
			t.Errorf("run output %q lacks %s", out, want)
		}
	}

	out, _, code = odsflow(t, "echo", good)
	if code != 0 || !strings.Contains(out, "doubled") || !strings.Contains(out, "generate:") {
		t.Errorf("echo: exit %d, output %q", code, out)
	}

	// Benthos config unit tests: one passing, one failing suite.
	writeFile(t, dir, "good_benthos_test.yaml", `tests:
  - name: doubles
    target_processors: /pipeline/processors
    input_batch:
      - content: '{"n": 21}'
    output_batches:
      - - json_equals: {"doubled": 42}
`)
	if out, errOut, code := odsflow(t, "test", good); code != 0 {
		t.Fatalf("test (passing): exit %d: %s%s", code, out, errOut)
	}
	writeFile(t, dir, "good_benthos_test.yaml", `tests:
  - name: doubles wrongly
    target_processors: /pipeline/processors
    input_batch:
      - content: '{"n": 21}'
    output_batches:
      - - json_equals: {"doubled": 43}
`)
	if _, _, code := odsflow(t, "test", good); code == 0 {
		t.Fatal("test (failing): exit 0, want a failure")
	}
}

func TestStateInspectCommand(t *testing.T) {
	_, errOut, code := odsflow(t, "state", "inspect", "--dir", t.TempDir())
	if code == 0 || !strings.Contains(errOut, "no cdc_join state") {
		t.Errorf("inspect of an empty dir: exit %d, stderr %q", code, errOut)
	}
	if _, _, code := odsflow(t, "state", "inspect"); code == 0 {
		t.Error("inspect without --dir succeeded")
	}
}

// pg_upsert's DSN is a secret: lint, echo and a failing run never print
// its password.
func TestDSNPasswordIsNotShown(t *testing.T) {
	dir := t.TempDir()
	conf := writeFile(t, dir, "pg.yaml", `input:
  generate:
    count: 1
    interval: ""
    mapping: 'root = {"a": 1}'
output:
  pg_upsert:
    dsn: postgres://odsuser:sup3rs3cret@127.0.0.1:1/ods?sslmode=disable&connect_timeout=1
    tables:
      - name: ods.t
        columns: [a]
        key_columns: [a]
        no_such_field: 1
`)
	out, errOut, code := odsflow(t, "lint", conf)
	if code == 0 || !strings.Contains(out+errOut, "no_such_field") {
		t.Fatalf("lint: exit %d, %q: want the unknown field reported", code, out+errOut)
	}
	if strings.Contains(out+errOut, "sup3rs3cret") {
		t.Errorf("lint shows the password: %s", out+errOut)
	}
	out, errOut, _ = odsflow(t, "echo", conf)
	if !strings.Contains(out, "pg_upsert") || strings.Contains(out+errOut, "sup3rs3cret") {
		t.Errorf("echo: %q", out+errOut)
	}
	// A run that cannot connect logs its attempts; none shows the password.
	runnable := writeFile(t, dir, "pg_run.yaml", strings.Replace(string(must(os.ReadFile(conf))), "        no_such_field: 1\n", "", 1))
	cmd := exec.Command(os.Args[0], "run", runnable)
	cmd.Env = append(os.Environ(), asBinaryEnv+"=1")
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	// Killed: a graceful stop would wait out the shutdown timeout for the
	// message the output cannot deliver.
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if !strings.Contains(logs.String(), "pg_upsert") && !strings.Contains(logs.String(), "127.0.0.1:1") {
		t.Errorf("the run logged nothing about its failing output: %s", logs.String())
	}
	if strings.Contains(logs.String(), "sup3rs3cret") {
		t.Errorf("the run's logs show the password: %s", logs.String())
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// `odsflow demo` (what make demo runs) goes end to end and says so.
func TestDemo(t *testing.T) {
	cmd := exec.Command(os.Args[0], "demo", "--customers", "30", "--events", "500")
	cmd.Env = append(os.Environ(), asBinaryEnv+"=1")
	cmd.Dir = filepath.Join("..", "..")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	for _, want := range []string{"caught up in", "customer_account", "dead letters          0", "dashboard rows", "odsflow demo: stopped"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
}

// A demo of a broken pipeline (the customers' records match no table of
// the join: dead letters) stops once every event is consumed, saying why,
// not at its timeout; and it leaves no temporary directory behind.
func TestDemoOfABrokenPipelineSaysWhy(t *testing.T) {
	ods, err := os.ReadFile(filepath.Join("..", "..", "config", "ods.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	broken := strings.Replace(string(ods), `'@cdc_table == "T_Customers"'`, `'@cdc_table == "T_Customerz"'`, 1)
	if broken == string(ods) {
		t.Fatal("config/ods.yaml has no T_Customers check to break")
	}
	conf := writeFile(t, t.TempDir(), "broken.yaml", broken)
	cmd := exec.Command(os.Args[0], "demo", "--customers", "30", "--events", "300", "--config", conf, "--timeout", "10m")
	cmd.Env = append(os.Environ(), asBinaryEnv+"=1")
	cmd.Dir = filepath.Join("..", "..")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("demo of a broken pipeline succeeded:\n%s", out)
	}
	for _, want := range []string{"the pipeline consumed every event, but the ODS is not what the traffic must produce",
		"the first because: cdc_join", "odsflow demo: stopped"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q:\n%.3000s", want, out)
		}
	}
}

// A demo whose pipeline exits by itself (a config run refuses) says so and
// stops the stack; it used to wait for the exited child twice, forever.
func TestDemoOfAPipelineThatExits(t *testing.T) {
	conf := writeFile(t, t.TempDir(), "refused.yaml", "input:\n  no_such_input: {}\noutput:\n  drop: {}\n")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "demo", "--customers", "5", "--events", "20", "--config", conf)
	cmd.Env = append(os.Environ(), asBinaryEnv+"=1")
	cmd.Dir = filepath.Join("..", "..")
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("demo of a pipeline that exits did not end in 2 minutes:\n%s", out)
	}
	if err == nil || !strings.Contains(string(out), "the pipeline exited") || !strings.Contains(string(out), "odsflow demo: stopped") {
		t.Errorf("demo of a pipeline that exits: %v\n%s", err, out)
	}
}

// Lint finds what pg_upsert and cdc_join would refuse at start (CI lints,
// it does not start), and shows no password while at it.
func TestLintFindsWhatComponentsRefuseAtStart(t *testing.T) {
	dir := t.TempDir()
	pg := writeFile(t, dir, "pg.yaml", `input:
  generate: { mapping: 'root = {}', count: 1 }
output:
  pg_upsert:
    dsn: postgres://u:s3cret@localhost/db
    tables:
      - name: 'ods"; DROP TABLE x'
        columns: [a, "b-c"]
        key_columns: [k]
        version_columns: [v]
      - name: ods.good
        columns: [a]
        key_columns: [a]
    after_batch:
      - { statement: SELECT 1, column: "x;y", tables: [ods.nope, ods.good] }
`)
	join := writeFile(t, dir, "join.yaml", `input:
  generate: { mapping: 'root = {}', count: 1 }
pipeline:
  processors:
    - cdc_join:
        state_dir: ":memory:"
        tables:
          - { name: customers, check: 'true', key: this.id }
          - { name: customers, check: 'true', key: this.id }
          - { name: accounts, check: 'true', key: this.id }
        relations:
          - { name: r1, kind: latest_state, parent: custmers, child: accounts, parent_key: this.customer_id,
              mapping: 'root = this', key_mapping: 'root = this', child_version_column: v, parent_version_column: v }
          - { name: r2, kind: lookup, parent: accounts, child: customers, parent_key: this.account_id,
              mapping: "root.id = this.child.id\nroot.v = this.child_version", key_mapping: 'root.idd = this.child.id', child_version_column: vv }
          - { name: r2, kind: lookup, parent: accounts, child: customers, parent_key: this.account_id,
              mapping: "root.id = this.child.id", key_mapping: 'root.id = this.child.id' }
output:
  drop: {}
`)
	for file, wants := range map[string][]string{
		pg: {
			`"ods\"; DROP TABLE x" is not a table name`, `column "b-c" is not a plain name`, `key column "k" is not among its columns`,
			`version column "v" is not among its columns`, `after_batch: column "x;y"`, `after_batch: table "ods.nope" is not one of tables`,
		},
		join: {`tables: "customers" is named twice`, `parent "custmers" is not one of tables`, `child_version_column and parent_version_column are both "v"`,
			`relations: "r2" is named twice`, `relations: "r2": key_mapping sets "idd", which mapping does not set`,
			`relations: "r2": child_version_column "vv" is not a column mapping sets`},
	} {
		out, errOut, code := odsflow(t, "lint", file)
		if code == 0 {
			t.Errorf("lint %s: exit 0", filepath.Base(file))
		}
		for _, want := range wants {
			if !strings.Contains(out+errOut, want) {
				t.Errorf("lint %s: no %q in:\n%s%s", filepath.Base(file), want, out, errOut)
			}
		}
		if strings.Contains(out+errOut, "s3cret") {
			t.Errorf("lint %s shows the password", filepath.Base(file))
		}
	}
}
