package e2e

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/odsflow/odsflow/internal/simulate"
)

// TestNewStateOnAProgressedGroupIsHeld: the pipeline restarted with
// another (empty) state directory on a consumer group that has progressed
// holds its first batch and says why, and commits and writes nothing, even
// when stopped; back on its own state, it goes on and is exact.
func TestNewStateOnAProgressedGroupIsHeld(t *testing.T) {
	e, want := exactAndStopped(t, "ns.transactions_schema", 29)
	before, lagBefore := e.changeAfterCommits(t, &want)

	own := e.vars
	e.vars = append(own[:len(own):len(own)], "ODS_STATE_DIR="+filepath.Join(t.TempDir(), "another"))
	e.expectHeld(t, before, lagBefore, "lacks history the consumer group has consumed: topic")

	e.vars = own
	p := e.start(t)
	e.waitExact(t, p, want, time.Minute)
	p.stop(t)
}

// TestStaleStateIsHeld: the pipeline restarted on an older copy of its own
// state (a backup), far behind what the group has committed, holds like
// one on a new state.
func TestStaleStateIsHeld(t *testing.T) {
	e, want := exactAndStopped(t, "st.transactions_schema", 31)
	stateDir := e.stateDir()
	backup := filepath.Join(t.TempDir(), "backup")
	if err := os.CopyFS(backup, os.DirFS(stateDir)); err != nil {
		t.Fatal(err)
	}

	// More traffic, applied by the pipeline on its own state.
	e.cfg.Seed = 32
	e.produce(t)
	p := e.start(t)
	ctx := context.Background()
	for started := time.Now(); ; time.Sleep(200 * time.Millisecond) {
		lag, err := groupLag(ctx, e.stack.Brokers, "e2e")
		if err != nil {
			t.Fatal(err)
		}
		if lag == 0 {
			break
		}
		if time.Since(started) > time.Minute {
			t.Fatalf("lag %d a minute after the second traffic; logs:\n%s", lag, tail(p.logs.String(), 4000))
		}
	}
	p.stop(t)

	// One more change, then the pipeline on the backup.
	before, lagBefore := e.changeAfterCommits(t, &want)
	e.vars = append(e.vars[:len(e.vars):len(e.vars)], "ODS_STATE_DIR="+backup)
	e.expectHeld(t, before, lagBefore, "records the state never saw")
}

// TestStateOfAnotherClusterIsHeld: the state kept across a new Kafka
// cluster (a restarted `odsflow dev`: new records from offset 0, a group
// without commits) is refused, not joined against; with an empty state
// directory, the pipeline is exact.
func TestStateOfAnotherClusterIsHeld(t *testing.T) {
	e, _ := exactAndStopped(t, "oc.transactions_schema", 33)
	kept := e.stateDir()
	f := newEnv(t, simulate.Config{TopicPrefix: e.cfg.TopicPrefix, Money: simulate.MoneyInt, Customers: 30, Events: 800, Seed: 34})
	want := f.produce(t)
	own := f.vars
	f.vars = append(own[:len(own):len(own)], "ODS_STATE_DIR="+kept)
	f.expectHeld(t, "0 accounts (versions 0), 0 transactions (versions 0)", -1, "it was built from the records of Kafka cluster odsflow-dev-")

	f.vars = own
	p := f.start(t)
	f.waitExact(t, p, want, time.Minute)
	p.stop(t)
}

// stateDir is the pipeline's ODS_STATE_DIR (the last one set).
func (e *env) stateDir() string {
	dir := ""
	for _, v := range e.vars {
		if d, ok := strings.CutPrefix(v, "ODS_STATE_DIR="); ok {
			dir = d
		}
	}
	return dir
}

// exactAndStopped runs simulate traffic (800 events, int money) through
// the pipeline until the ODS is exact, and stops it (it commits on the
// way out).
func exactAndStopped(t *testing.T, prefix string, seed int64) (*env, simulate.ODSState) {
	t.Helper()
	e := newEnv(t, simulate.Config{TopicPrefix: prefix, Money: simulate.MoneyInt, Customers: 30, Events: 800, Seed: seed})
	want := e.produce(t)
	p := e.start(t)
	e.waitExact(t, p, want, time.Minute)
	p.stop(t)
	return e, want
}

// changeAfterCommits produces one change (raiseBalance) after what the
// group has committed, and returns the ODS's fingerprint and the group's
// lag (≥ 1) before it is applied.
func (e *env) changeAfterCommits(t *testing.T, want *simulate.ODSState) (string, int64) {
	t.Helper()
	v1, err := simulate.ValueSchema(e.cfg, simulate.TableAccounts)
	if err != nil {
		t.Fatal(err)
	}
	e.raiseBalance(t, want, envelopeEdit{readSchema: v1})
	lag, err := groupLag(context.Background(), e.stack.Brokers, "e2e")
	if err != nil || lag < 1 {
		t.Fatalf("the group's lag after the change is %d (%v), want ≥ 1", lag, err)
	}
	return odsFingerprint(e.dsn), lag
}

// expectHeld starts the pipeline, which must hold its first batch for
// missing history (the error naming why), and stops it: the ODS and the
// group's lag must be as they were, and nothing dead-lettered.
func (e *env) expectHeld(t *testing.T, odsBefore string, lagBefore int64, why string) {
	t.Helper()
	addr := freeAddr(t)
	p := e.start(t, "--set", "http.address="+addr)
	const held = "does not go with what the input reads"
	for started := time.Now(); time.Since(started) < time.Minute && !strings.Contains(p.logs.String(), held); {
		select {
		case <-p.done:
			t.Fatalf("the pipeline exited; logs:\n%s", tail(p.logs.String(), 4000))
		case <-time.After(100 * time.Millisecond):
		}
	}
	time.Sleep(time.Second) // whatever it would do, it has had the time to
	gauge := regexp.MustCompile(`"cdc_join_missing_history\{[^}]*\}":1\b`)
	if stats := getText(t, "http://"+addr+"/stats"); !gauge.MatchString(stats) {
		t.Errorf("cdc_join_missing_history is not 1 while the batch is held: %.2000s", stats)
	}
	p.stop(t)
	if logs := p.logs.String(); !strings.Contains(logs, held) || !strings.Contains(logs, why) {
		t.Fatalf("no error about the state (%q); logs:\n%s", why, tail(logs, 4000))
	}
	if got := odsFingerprint(e.dsn); got != odsBefore {
		t.Errorf("the ODS changed under a state without the history: %s, was %s", got, odsBefore)
	}
	if lag, err := groupLag(context.Background(), e.stack.Brokers, "e2e"); err != nil || lag != lagBefore {
		t.Errorf("the group's lag went from %d to %d (%v): something was committed", lagBefore, lag, err)
	}
	if n := deadLetters(t, e.stack.Brokers, "e2e.dlq"); n != 0 {
		t.Errorf("%d dead letters from the held batch", n)
	}
}

// getText GETs url and returns its body.
func getText(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// deadLetters counts the records ever written to the dead-letter topic (0
// when it does not exist).
func deadLetters(t testing.TB, brokers, topic string) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			n += o.Offset
		}
	})
	return n
}
