package join

// The crash test of cdc_join (issue 5): a process running the processor is
// killed with SIGKILL at random points, restarted from its last committed
// offset, and the rows it emitted over all its lives, written in order to
// the versioned in-memory ODS (property_test.go), end exactly as the model
// of the final source states.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"

	"github.com/odsflow/odsflow/internal/statestore"
)

// Files of the crash test's work directory, shared by parent and child.
const (
	crashBatchesFile  = "batches.json"  // the deliveries, in order
	crashOutputsFile  = "outputs.jsonl" // the "sink": outputRow JSON lines, each batch's closed by an end line
	crashEndLine      = "#end"
	crashProgressFile = "progress" // "committed <next batch>" lines
	crashStateDir     = "state"
)

// TestJoinCrashHelperProcess is the child of TestJoinSurvivesSIGKILL. It
// processes the batches of CDC_JOIN_CRASH_WORK from CDC_JOIN_CRASH_FROM on,
// as a pipeline does: the processor writes its state, then the batch's
// rows are written to the sink (appended, fsynced), then its offset is
// committed (appended to the progress file, fsynced). With
// CDC_JOIN_CRASH_PAUSE="<batch> processed|written" it stops (prints
// "paused <batch>" and sleeps) after the ProcessBatch, or after the rows
// are written, of the first batch from <batch> on with derivedOutputs, for
// the parent to kill it there.
func TestJoinCrashHelperProcess(t *testing.T) {
	work := os.Getenv("CDC_JOIN_CRASH_WORK")
	if work == "" {
		t.Skip("helper process of TestJoinSurvivesSIGKILL; runs only as its subprocess (CDC_JOIN_CRASH_WORK set)")
	}
	fail := func(format string, args ...any) {
		fmt.Printf("error: "+format+"\n", args...)
		os.Exit(3)
	}
	from, err := strconv.Atoi(os.Getenv("CDC_JOIN_CRASH_FROM"))
	if err != nil {
		fail("CDC_JOIN_CRASH_FROM: %v", err)
	}
	pauseAt, pausePoint := -1, ""
	if s := os.Getenv("CDC_JOIN_CRASH_PAUSE"); s != "" {
		if _, err := fmt.Sscanf(s, "%d %s", &pauseAt, &pausePoint); err != nil {
			fail("CDC_JOIN_CRASH_PAUSE=%q: %v", s, err)
		}
	}
	pause := func(i int, point string, out []service.MessageBatch) {
		if i >= pauseAt && pauseAt >= 0 && point == pausePoint && derivedOutputs(out) {
			fmt.Println("paused", i)
			time.Sleep(time.Hour)
		}
	}
	raw, err := os.ReadFile(filepath.Join(work, crashBatchesFile))
	if err != nil {
		fail("%v", err)
	}
	var batches []delivery
	if err := json.Unmarshal(raw, &batches); err != nil {
		fail("%v", err)
	}
	outputs, err := openSink(filepath.Join(work, crashOutputsFile))
	if err != nil {
		fail("%v", err)
	}
	progress, err := os.OpenFile(filepath.Join(work, crashProgressFile), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		fail("%v", err)
	}
	j := newTestJoin(t, filepath.Join(work, crashStateDir))
	fmt.Println("open")
	ctx := context.Background()
	for i := from; i < len(batches); i++ {
		out, err := j.ProcessBatch(ctx, messagesOf(batches[i].Events))
		if err != nil {
			fail("batch %d: ProcessBatch: %v", i, err)
		}
		pause(i, "processed", out)
		rows, err := outputsOf(out)
		if err != nil {
			fail("batch %d: %v", i, err)
		}
		var lines bytes.Buffer
		for _, r := range rows {
			b, _ := json.Marshal(r)
			lines.Write(append(b, '\n'))
		}
		fmt.Fprintf(&lines, "%s %d\n", crashEndLine, i)
		if err := appendSynced(outputs, lines.Bytes()); err != nil {
			fail("batch %d: writing outputs: %v", i, err)
		}
		pause(i, "written", out)
		if err := appendSynced(progress, fmt.Appendf(nil, "committed %d\n", i+1)); err != nil {
			fail("batch %d: committing: %v", i, err)
		}
		fmt.Println("committed", i+1)
	}
	fmt.Println("done")
}

// derivedOutputs: the batch emitted rows that the processor derived from
// its state rather than from the batch's own rows: a delete, or a held
// transaction released by its account. These are the outputs a crash
// before the sink wrote them puts most at risk.
func derivedOutputs(out []service.MessageBatch) bool {
	for _, b := range out {
		for _, m := range b {
			op, _ := m.MetaGet("ods_op")
			table, _ := m.MetaGet("ods_table")
			src, _ := m.MetaGet("cdc_table")
			if op == "delete" || table == odsTransaction && src != srcTransactions {
				return true
			}
		}
	}
	return false
}

// openSink opens the outputs file for appending. The rows of a batch whose
// end line is missing (a kill tore its write) are cut off first: the sink,
// like a database transaction, keeps a batch's rows whole or not at all,
// and that batch is delivered again.
func openSink(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	keep := 0 // the length up to the last whole end line
	for off := 0; ; {
		n := bytes.IndexByte(b[off:], '\n')
		if n < 0 {
			break
		}
		if bytes.HasPrefix(b[off:off+n], []byte(crashEndLine+" ")) {
			keep = off + n + 1
		}
		off += n + 1
	}
	if err := f.Truncate(int64(keep)); err != nil {
		return nil, err
	}
	if _, err := f.Seek(0, 2); err != nil {
		return nil, err
	}
	return f, nil
}

func appendSynced(f *os.File, b []byte) error {
	if _, err := f.Write(b); err != nil {
		return err
	}
	return f.Sync()
}

// committedOffset is the last complete "committed N" line of the progress
// file (0 without one).
func committedOffset(t *testing.T, work string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(work, crashProgressFile))
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	for i := len(lines) - 2; i >= 0; i-- { // the last element follows the last '\n'
		if n, err := strconv.Atoi(strings.TrimPrefix(lines[i], "committed ")); err == nil {
			return n
		}
	}
	return 0
}

// crashChild is one life of the helper process.
type crashChild struct {
	cmd   *exec.Cmd
	lines chan string // its stdout, closed at EOF
	seen  []string    // the lines read so far, for error reports
}

func startCrashChild(t *testing.T, work string, from int, pause string) *crashChild {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestJoinCrashHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "CDC_JOIN_CRASH_WORK="+work, "CDC_JOIN_CRASH_FROM="+strconv.Itoa(from), "CDC_JOIN_CRASH_PAUSE="+pause)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &crashChild{cmd: cmd, lines: make(chan string, 1024)}
	go func() { // owned by c: ends at the child's EOF
		defer close(c.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill(); c.wait() })
	return c
}

// next returns the child's next line. An error line, the end of its
// output or a minute of silence fails the test.
func (c *crashChild) next(t *testing.T) string {
	t.Helper()
	select {
	case l, ok := <-c.lines:
		if !ok {
			t.Fatalf("helper process ended unexpectedly (%v); its output:\n%s", c.wait(), strings.Join(c.seen, "\n"))
		}
		c.seen = append(c.seen, l)
		if strings.HasPrefix(l, "error: ") {
			t.Fatalf("helper process: %s", l)
		}
		return l
	case <-time.After(time.Minute):
		t.Fatalf("helper process silent for a minute; its output:\n%s", strings.Join(c.seen, "\n"))
	}
	return ""
}

func (c *crashChild) wait() error {
	for range c.lines { // drain: Wait must follow the last read
	}
	return c.cmd.Wait()
}

func (c *crashChild) kill(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := c.wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("helper process ended with %v, want killed by SIGKILL", err)
	}
}

// checkStateDir checks that a killed process left a sound state: bbolt's
// own consistency check passes on every page, every value can be read,
// and the processor opens the directory (format stamp, lock released).
func checkStateDir(t *testing.T, dir string) {
	t.Helper()
	// Opening replays every frame of the log and checks its checksum (a
	// torn frame at the very end, an interrupted write, is cut off).
	store, err := statestore.OpenLog(dir)
	if err != nil {
		t.Fatalf("state after SIGKILL: %v", err)
	}
	keys, size := 0, 0
	err = store.View(context.Background(), func(tx statestore.Tx) error {
		buckets, err := tx.Buckets()
		if err != nil {
			return err
		}
		for _, b := range buckets {
			if err := tx.ScanFrom(b, nil, func(_, v []byte) error { keys, size = keys+1, size+len(v); return nil }); err != nil {
				return err
			}
		}
		return nil
	})
	if cerr := store.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("state after SIGKILL is corrupt: %v", err)
	}
	conf, err := joinSpec().ParseYAML(fmt.Sprintf(odsConfig, dir), nil)
	if err != nil {
		t.Fatal(err)
	}
	j, err := newJoin(conf, service.MockResources())
	if err != nil {
		t.Fatalf("cdc_join cannot open the state left by SIGKILL: %v", err)
	}
	if err := j.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Logf("state dir sound: %d keys, %d bytes of values", keys, size)
}

// TestJoinSurvivesSIGKILL kills the helper process several times: after a
// few batches (the kill lands wherever the process is: in ProcessBatch, in
// an fsync, between writes), after a ProcessBatch whose state is on disk
// but whose rows were never written, and after a batch's rows were written
// but before its offset was committed. Each restart resumes at the last
// committed offset (at-least-once). The ODS built from every row written,
// in order, must equal the model.
func TestJoinSurvivesSIGKILL(t *testing.T) {
	const seed = 20260515
	r := rand.New(rand.NewPCG(seed, 0x0c4a5f))
	p := genParams{Customers: 6, Accounts: 14, Steps: 400, Partitions: 3, MaxBatch: 6}
	hist := genHistory(r, p)
	batches := genDeliveries(r, hist, p)
	work := t.TempDir()
	raw, err := json.Marshal(batches)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, crashBatchesFile), raw, 0o600); err != nil {
		t.Fatal(err)
	}

	// Kill it 12 times, in turn in each way; the last life runs to the end.
	kinds := []string{"after", "processed", "written", "processed"}
	from, kills, restarts := 0, 0, []int{}
	for kills < 12 {
		life := kinds[kills%len(kinds)]
		pause := ""
		if life != "after" {
			pause = fmt.Sprintf("%d %s", from+r.IntN(6), life)
		}
		c := startCrashChild(t, work, from, pause)
		if l := c.next(t); l != "open" {
			t.Fatalf("helper process: %q, want open", l)
		}
		how := "while running, after 1–3 commits"
		switch life {
		case "after": // let 1–3 batches commit, then kill it wherever it is
			for n := 1 + r.IntN(3); n > 0; {
				l := c.next(t)
				if l == "done" {
					t.Fatalf("the helper finished before its kill; the history is too short for the plan (%d batches)", len(batches))
				}
				if strings.HasPrefix(l, "committed ") {
					n--
				}
			}
		default:
			l := c.next(t)
			for ; !strings.HasPrefix(l, "paused "); l = c.next(t) {
				if l == "done" {
					t.Fatalf("the helper did not pause at %q", pause)
				}
			}
			how = "paused after batch " + strings.TrimPrefix(l, "paused ") + " was " + life
		}
		c.kill(t)
		kills++
		checkStateDir(t, filepath.Join(work, crashStateDir))
		next := committedOffset(t, work)
		if next < from {
			t.Fatalf("the committed offset went back from %d to %d", from, next)
		}
		t.Logf("life %d, killed %s: committed offset %d → %d", kills, how, from, next)
		from = next
		restarts = append(restarts, next)
	}
	c := startCrashChild(t, work, from, "")
	for c.next(t) != "done" {
	}
	if err := c.wait(); err != nil {
		t.Fatalf("last life: %v", err)
	}
	if got := committedOffset(t, work); got != len(batches) {
		t.Fatalf("committed offset %d at the end, want %d", got, len(batches))
	}

	b, err := os.ReadFile(filepath.Join(work, crashOutputsFile))
	if err != nil {
		t.Fatal(err)
	}
	ods := newMemODS()
	written := 0
	if len(b) > 0 && !strings.HasSuffix(string(b), crashEndLine+" "+strconv.Itoa(len(batches)-1)+"\n") {
		t.Fatalf("the outputs do not end with the last batch's end line")
	}
	for l := range strings.Lines(string(b)) {
		if strings.HasPrefix(l, crashEndLine+" ") {
			continue
		}
		var row outputRow
		if err := json.Unmarshal([]byte(l), &row); err != nil {
			t.Fatalf("output line %d %q: %v", written+1, l, err)
		}
		if err := ods.apply(row); err != nil {
			t.Fatalf("output line %d: %v", written+1, err)
		}
		written++
	}
	if diffs := explainDiffs(hist, ods.live(), modelRows(hist)); len(diffs) > 0 {
		t.Fatalf("after %d kills the ODS differs from the model of the final source states (seed %d, %d batches, %d rows written;\n"+
			"  restarts at batches %v, each one possibly processed before the kill):\n  %s",
			kills, seed, len(batches), written, restarts, strings.Join(diffs, "\n  "))
	}
	t.Logf("%d kills, %d batches, %d events, %d rows written, %d refused by the version guard", kills, len(batches), len(hist), written, ods.refused)
}
