package e2e

import (
	"context"
	"os"
	"path/filepath"
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
	cfg := simulate.Config{TopicPrefix: "ns.transactions_schema", Money: simulate.MoneyInt, Customers: 30, Events: 800, Seed: 29}
	e := newEnv(t, cfg)
	want := e.produce(t)
	p := e.start(t)
	e.waitExact(t, p, want, time.Minute)
	p.stop(t) // commits on the way out

	// A change after the group's commits: one account's balance.
	v1, err := simulate.ValueSchema(cfg, simulate.TableAccounts)
	if err != nil {
		t.Fatal(err)
	}
	e.raiseBalance(t, &want, envelopeEdit{readSchema: v1})
	before := odsFingerprint(e.dsn)
	ctx := context.Background()
	lagBefore, err := groupLag(ctx, e.stack.Brokers, "e2e")
	if err != nil || lagBefore < 1 {
		t.Fatalf("the group's lag after the change is %d (%v), want ≥ 1", lagBefore, err)
	}

	own := e.vars
	e.vars = append(own[:len(own):len(own)], "ODS_STATE_DIR="+filepath.Join(t.TempDir(), "another"))
	p = e.start(t)
	for started := time.Now(); time.Since(started) < time.Minute && !strings.Contains(p.logs.String(), "lacks history the consumer group has consumed"); {
		select {
		case <-p.done:
			t.Fatalf("the pipeline exited; logs:\n%s", tail(p.logs.String(), 4000))
		case <-time.After(100 * time.Millisecond):
		}
	}
	time.Sleep(time.Second) // whatever it would do, it has had the time to
	p.stop(t)
	if !strings.Contains(p.logs.String(), "lacks history the consumer group has consumed") {
		t.Fatalf("no error about the missing history; logs:\n%s", tail(p.logs.String(), 4000))
	}
	if got := odsFingerprint(e.dsn); got != before {
		t.Errorf("the ODS changed under a state without history: %s, was %s", got, before)
	}
	if lag, err := groupLag(ctx, e.stack.Brokers, "e2e"); err != nil || lag != lagBefore {
		t.Errorf("the group's lag went from %d to %d (%v): something was committed", lagBefore, lag, err)
	}
	if n := deadLetters(t, e.stack.Brokers, "e2e.dlq"); n != 0 {
		t.Errorf("%d dead letters from the held batch", n)
	}

	e.vars = own
	p = e.start(t)
	e.waitExact(t, p, want, time.Minute)
	p.stop(t)
}

// TestStaleStateIsHeld: the pipeline restarted on an older copy of its own
// state (a backup), far behind what the group has committed, holds like
// one on a new state.
func TestStaleStateIsHeld(t *testing.T) {
	cfg := simulate.Config{TopicPrefix: "st.transactions_schema", Money: simulate.MoneyInt, Customers: 30, Events: 800, Seed: 31}
	e := newEnv(t, cfg)
	want := e.produce(t)
	p := e.start(t)
	e.waitExact(t, p, want, time.Minute)
	p.stop(t)
	stateDir := ""
	for _, v := range e.vars {
		if d, ok := strings.CutPrefix(v, "ODS_STATE_DIR="); ok {
			stateDir = d
		}
	}
	backup := filepath.Join(t.TempDir(), "backup")
	if err := os.CopyFS(backup, os.DirFS(stateDir)); err != nil {
		t.Fatal(err)
	}

	// More traffic, applied by the pipeline on its own state.
	e.cfg.Seed = 32
	e.produce(t)
	p = e.start(t)
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
	v1, err := simulate.ValueSchema(cfg, simulate.TableAccounts)
	if err != nil {
		t.Fatal(err)
	}
	e.raiseBalance(t, &want, envelopeEdit{readSchema: v1})
	before := odsFingerprint(e.dsn)
	lagBefore, err := groupLag(ctx, e.stack.Brokers, "e2e")
	if err != nil || lagBefore < 1 {
		t.Fatalf("the group's lag after the change is %d (%v), want ≥ 1", lagBefore, err)
	}
	e.vars = append(e.vars[:len(e.vars):len(e.vars)], "ODS_STATE_DIR="+backup)
	p = e.start(t)
	const held = "lacks history the consumer group has consumed"
	for started := time.Now(); time.Since(started) < time.Minute && !strings.Contains(p.logs.String(), held); {
		select {
		case <-p.done:
			t.Fatalf("the pipeline exited; logs:\n%s", tail(p.logs.String(), 4000))
		case <-time.After(100 * time.Millisecond):
		}
	}
	p.stop(t)
	if !strings.Contains(p.logs.String(), held) || !strings.Contains(p.logs.String(), "records the state never saw") {
		t.Fatalf("no error about the stale state; logs:\n%s", tail(p.logs.String(), 4000))
	}
	if got := odsFingerprint(e.dsn); got != before {
		t.Errorf("the ODS changed under a stale state: %s, was %s", got, before)
	}
	if lag, err := groupLag(ctx, e.stack.Brokers, "e2e"); err != nil || lag != lagBefore {
		t.Errorf("the group's lag went from %d to %d (%v): something was committed", lagBefore, lag, err)
	}
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
