package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/odsflow/odsflow/internal/pgcluster"
	"github.com/odsflow/odsflow/internal/syncbuf"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// descendants returns the pids of every process below root, read from /proc.
func descendants(t *testing.T, root int) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	parent := map[int]int{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// Fields after the parenthesized command: state, ppid, …
		rest := string(stat[bytes.LastIndexByte(stat, ')')+2:])
		fields := strings.Fields(rest)
		if len(fields) > 1 {
			ppid, _ := strconv.Atoi(fields[1])
			parent[pid] = ppid
		}
	}
	var out []int
	for pid := range parent {
		for p := parent[pid]; p > 1; p = parent[p] {
			if p == root {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

// startDev runs `odsflow dev` with args and TMPDIR=tmp until it prints
// ready, returning its exports; exited receives its Wait result.
func startDev(t *testing.T, tmp string, args ...string) (*exec.Cmd, *syncbuf.Buffer, chan error, map[string]string, error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"dev"}, args...)...)
	cmd.Env = append(os.Environ(), asBinaryEnv+"=1", "TMPDIR="+tmp)
	stderr := &syncbuf.Buffer{}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	env := map[string]string{}
	deadline := time.After(15 * time.Second)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				<-exited
				return cmd, stderr, exited, nil, fmt.Errorf("odsflow dev exited before ready")
			}
			if strings.HasPrefix(line, "export ") {
				for _, kv := range strings.Fields(strings.TrimPrefix(line, "export ")) {
					k, v, _ := strings.Cut(kv, "=")
					env[k] = strings.Trim(v, "'")
				}
			}
			if line == "odsflow dev: ready" {
				return cmd, stderr, exited, env, nil
			}
		case <-deadline:
			_ = cmd.Process.Kill()
			<-exited
			return cmd, stderr, exited, nil, fmt.Errorf("odsflow dev not ready within 15s")
		}
	}
}

func TestDevStartsServesAndStopsCleanly(t *testing.T) {
	// Our own TMPDIR shows whether the temp dirs are gone. It must be
	// traversable by the postgres OS user when the tests run as root.
	tmp, err := os.MkdirTemp("", "odsflow-devtest-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil {
		t.Fatal(err)
	}

	// Ports picked here can be taken by a parallel test package before dev
	// binds them: then try again with others (a busy port is its own test).
	var (
		kafkaAddr, registryAddr, pgPortStr string
		cmd                                *exec.Cmd
		stderr                             *syncbuf.Buffer
		exited                             chan error
		env                                map[string]string
		started                            time.Time
	)
	for attempt := 1; ; attempt++ {
		kafkaAddr, registryAddr = freeAddr(t), freeAddr(t)
		_, pgPortStr, _ = net.SplitHostPort(freeAddr(t))
		started = time.Now()
		var err error
		cmd, stderr, exited, env, err = startDev(t, tmp, "--kafka", kafkaAddr, "--registry", registryAddr, "--postgres-port", pgPortStr)
		if err == nil {
			break
		}
		if attempt == 3 || !strings.Contains(stderr.String(), "already in use") {
			t.Fatalf("%v; stderr:\n%s", err, stderr.String())
		}
	}
	defer func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
		}
	}()
	t.Logf("ready after %v", time.Since(started))
	if env["KAFKA_BROKERS"] != kafkaAddr || env["SCHEMA_REGISTRY_URL"] != "http://"+registryAddr ||
		!strings.Contains(env["ODS_DSN"], "127.0.0.1:"+pgPortStr+"/ods") {
		t.Fatalf("exports %v do not match the requested addresses", env)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(env["KAFKA_BROKERS"]), kgo.AllowAutoTopicCreation(),
		kgo.ConsumeTopics("dev.smoke"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "dev.smoke", Value: []byte("v1")}).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	fetches := cl.PollFetches(ctx)
	if recs := fetches.Records(); fetches.Err() != nil || len(recs) != 1 || string(recs[0].Value) != "v1" {
		t.Fatalf("consume: err %v, records %v", fetches.Err(), recs)
	}
	cl.Close()
	conn, err := pgx.Connect(ctx, env["ODS_DSN"])
	if err != nil {
		t.Fatalf("pgx connect: %v", err)
	}
	if err := conn.Ping(ctx); err != nil {
		t.Fatalf("pgx ping: %v", err)
	}
	conn.Close(ctx)

	children := descendants(t, cmd.Process.Pid)
	if len(children) == 0 {
		t.Fatal("odsflow dev has no child processes: where does postgres run?")
	}
	if entries, _ := os.ReadDir(tmp); len(entries) == 0 {
		t.Fatal("odsflow dev made no temp dir under TMPDIR")
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("odsflow dev exit after SIGTERM: %v; stderr:\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("odsflow dev did not exit within 30s of SIGTERM; stderr:\n%s", stderr.String())
	}

	for _, pid := range children {
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
			t.Errorf("child process %d still exists after odsflow dev exited", pid)
		}
	}
	for _, addr := range []string{kafkaAddr, registryAddr, "127.0.0.1:" + pgPortStr} {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after odsflow dev exited", addr)
		}
	}
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		t.Errorf("temp dirs left behind: %v", entries)
	}
}

func TestDevBusyPortNamesTheFlag(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy := ln.Addr().String()
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{[]string{"dev", "--no-postgres", "--kafka", busy, "--registry", freeAddr(t)}, "--kafka ADDR"},
		{[]string{"dev", "--no-postgres", "--kafka", freeAddr(t), "--registry", busy}, "--registry ADDR"},
		{[]string{"dev", "--kafka", freeAddr(t), "--registry", freeAddr(t), "--postgres-port", strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)}, "--postgres-port N"},
	} {
		_, errOut, code := odsflow(t, tc.args...)
		if code == 0 || !strings.Contains(errOut, busy) || !strings.Contains(errOut, "already in use") || !strings.Contains(errOut, tc.flag) {
			t.Errorf("odsflow %v: exit %d, stderr %q; want an error naming %s and %s", tc.args, code, errOut, busy, tc.flag)
		}
	}
}

func TestDevRefusesNonLoopback(t *testing.T) {
	_, errOut, code := odsflow(t, "dev", "--no-postgres", "--kafka", "0.0.0.0:0")
	if code == 0 || !strings.Contains(errOut, "loopback") {
		t.Errorf("dev --kafka 0.0.0.0:0: exit %d, stderr %q; want a loopback-only error", code, errOut)
	}
}

func TestShellQuoteSurvivesTheShell(t *testing.T) {
	v := "postgres://u:p@127.0.0.1:5432/ods?sslmode=disable&x='y'"
	out, err := exec.Command("sh", "-c", "export V="+shellQuote(v)+"; printf %s \"$V\"").Output()
	if err != nil || string(out) != v {
		t.Fatalf("sh read %q (err %v), want %q", out, err, v)
	}
}

func TestDevWithExistingPostgresHidesItsPassword(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pg, err := pgcluster.Start(ctx, pgcluster.Options{Password: "s3cret-pw"})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Stop(context.Background())

	cmd := exec.Command(os.Args[0], "dev", "--kafka", freeAddr(t), "--registry", freeAddr(t), "--postgres-dsn", pg.DSN())
	cmd.Env = append(os.Environ(), asBinaryEnv+"=1")
	var out syncbuf.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(out.String(), "odsflow dev: ready") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()
	got := out.String()
	if !strings.Contains(got, "odsflow dev: ready") {
		t.Fatalf("not ready with --postgres-dsn; output:\n%s", got)
	}
	if strings.Contains(got, "s3cret-pw") {
		t.Fatalf("the password of --postgres-dsn was printed:\n%s", got)
	}
	if !strings.Contains(got, "postgres://postgres:xxxxx@127.0.0.1:") {
		t.Errorf("the server from --postgres-dsn is not named (redacted):\n%s", got)
	}
	if strings.Contains(got, "ODS_DSN=") {
		t.Errorf("ODS_DSN exported without its password, unusable:\n%s", got)
	}
}
