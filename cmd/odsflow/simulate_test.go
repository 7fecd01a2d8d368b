package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/odsflow/odsflow/internal/devstack"
	"github.com/odsflow/odsflow/internal/simulate"
)

// odsflowEnv runs the CLI with extra environment variables.
func odsflowEnv(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), asBinaryEnv+"=1"), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return stdout.String(), stderr.String(), ee.ExitCode()
	case err != nil:
		t.Fatalf("running odsflow %v: %v", args, err)
	}
	return stdout.String(), stderr.String(), 0
}

func TestSimulateWritesTheExpectedState(t *testing.T) {
	stack := devstack.ForTest(t, devstack.Config{NoPostgres: true})
	expect := filepath.Join(t.TempDir(), "expect.json")
	// Brokers and registry come from the environment, as after `odsflow dev`.
	_, stderr, code := odsflowEnv(t, stack.Env(), "simulate", "--topic-prefix", "cli.test", "--customers", "5",
		"--events", "200", "--seed", "3", "--money", "decimal", "--debezium", "3", "--expect", expect)
	if code != 0 {
		t.Fatalf("simulate: exit %d: %s", code, stderr)
	}
	b, err := os.ReadFile(expect)
	if err != nil {
		t.Fatal(err)
	}
	var got simulate.ODSState
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("--expect file does not parse: %v\n%s", err, b)
	}
	if len(got.CustomerAccount) == 0 || len(got.TTransaction) == 0 || len(got.TFinancialInsights) == 0 {
		t.Fatalf("--expect file has an empty table: %s", b)
	}

	// The file is the model of exactly the traffic the flags describe.
	cfg := simulate.Config{TopicPrefix: "cli.test", Money: "decimal", Customers: 5, Events: 200, Seed: 3, DebeziumLayout: "3"}
	events, err := simulate.Plan(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if want := simulate.Expect(events, nil); !reflect.DeepEqual(got, want) {
		t.Errorf("--expect file differs from Expect(Plan(flags))")
	}
	if !strings.Contains(stderr, "produced "+strconv.Itoa(len(events))+" events (T_Accounts ") || !strings.Contains(stderr, "tombstones in ") ||
		!strings.Contains(stderr, "events/s") {
		t.Errorf("summary line missing or wrong: %q", stderr)
	}

	// Other spending types change the insights.
	other := filepath.Join(t.TempDir(), "other.json")
	if _, stderr, code := odsflowEnv(t, append(stack.Env(), "ODS_SPENDING_TYPES=deposit"), "simulate", "--topic-prefix", "cli.test",
		"--customers", "5", "--events", "200", "--seed", "3", "--money", "decimal", "--debezium", "3", "--expect", other); code != 0 {
		t.Fatalf("simulate with ODS_SPENDING_TYPES: exit %d: %s", code, stderr)
	}
	b2, err := os.ReadFile(other)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.MarshalIndent(simulate.Expect(events, []string{"deposit"}), "", "  ")
	if string(b2) != string(want)+"\n" {
		t.Errorf("with ODS_SPENDING_TYPES=deposit the file is not the model's state for [deposit]")
	}
}

func TestSimulateRejectsBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--money", "float"}, `--money must be int or decimal, got "float"`},
		{[]string{"--debezium", "4"}, `--debezium must be 2 or 3, got "4"`},
		{[]string{"--customers", "0"}, "--customers must be between 1"},
		{[]string{"--rate", "-1"}, "--rate must be"},
		{[]string{"--topic-prefix", "bad/prefix"}, "--topic-prefix"},
		{[]string{"--expect", filepath.Join(t.TempDir(), "missing", "dir", "x.json")}, "--expect"},
		{[]string{"--expect", t.TempDir()}, "is a directory"},
	} {
		// No server is contacted before the flags are checked.
		args := append([]string{"simulate", "--brokers", "127.0.0.1:1", "--registry", "http://127.0.0.1:1"}, tc.args...)
		_, stderr, code := odsflowEnv(t, nil, args...)
		if code == 0 || !strings.Contains(stderr, tc.want) {
			t.Errorf("simulate %v: exit %d, stderr %q; want a failure saying %q", tc.args, code, stderr, tc.want)
		}
	}
}

func TestSimulateStopsOnSIGINT(t *testing.T) {
	stack := devstack.ForTest(t, devstack.Config{NoPostgres: true})
	expect := filepath.Join(t.TempDir(), "expect.json")
	cmd := exec.Command(os.Args[0], "simulate", "--topic-prefix", "cli.sigint", "--customers", "3",
		"--events", "20000", "--rate", "100", "--expect", expect)
	cmd.Env = append(append(os.Environ(), asBinaryEnv+"=1"), stack.Env()...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-done
		}
	}()

	// Once traffic flows, interrupt.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(stack.Brokers), kgo.ConsumeTopics("cli.sigint.T_Customers"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if fetches := cl.PollFetches(ctx); len(fetches.Records()) == 0 {
		t.Fatalf("no traffic before the interrupt: %v; stderr %s", fetches.Err(), stderr.String())
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 130 {
			t.Errorf("after SIGINT: %v, want exit status 130", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("simulate did not stop within 20s of SIGINT; stderr %s", stderr.String())
	}
	if !strings.Contains(stderr.String(), "(interrupted)") || !strings.Contains(stderr.String(), "--expect not written") {
		t.Errorf("stderr after SIGINT: %q", stderr.String())
	}
	if _, err := os.Stat(expect); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("--expect file after an interrupted run: %v, want none", err)
	}
}
