package statestore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The cases in this file hold for every Store implementation: each runs
// once per kind.

type storeKind struct {
	name string
	open func(dir string) (Store, error)
	// durable: on disk, with a directory lock (the lock and crash cases).
	durable bool
}

func storeKinds() []storeKind {
	return []storeKind{
		{"bolt", func(dir string) (Store, error) { return Open(dir) }, true},
		{"log", func(dir string) (Store, error) { return OpenLog(dir) }, true},
		{"memory", func(string) (Store, error) { return OpenMemory(), nil }, false},
	}
}

func kindNamed(name string) storeKind {
	for _, k := range storeKinds() {
		if k.name == name {
			return k
		}
	}
	panic("no store kind " + name)
}

func forEachKind(t *testing.T, test func(t *testing.T, k storeKind)) {
	for _, k := range storeKinds() {
		t.Run(k.name, func(t *testing.T) { test(t, k) })
	}
}

func forEachDurableKind(t *testing.T, test func(t *testing.T, k storeKind)) {
	for _, k := range storeKinds() {
		if k.durable {
			t.Run(k.name, func(t *testing.T) { test(t, k) })
		}
	}
}

func (k storeKind) mustOpen(t *testing.T, dir string) Store {
	t.Helper()
	s, err := k.open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// dump returns every key=value of bucket, in scan order.
func dump(t *testing.T, s Store, bucket string) string {
	t.Helper()
	var kv []string
	err := s.View(context.Background(), func(tx Tx) error {
		return tx.Scan(bucket, nil, func(k, v []byte) error {
			kv = append(kv, string(k)+"="+string(v))
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(kv, ",")
}

func TestUpdateViewScan(t *testing.T) {
	forEachKind(t, func(t *testing.T, k storeKind) {
		s := k.mustOpen(t, t.TempDir())
		ctx := context.Background()
		err := s.Update(ctx, func(tx Tx) error {
			for _, k := range []string{"p/1/a", "p/1/b", "p/2/a", "q"} {
				if err := tx.Put("rows", []byte(k), []byte("v"+k)); err != nil {
					return err
				}
			}
			v, err := tx.Get("rows", []byte("p/1/b")) // own write
			if err != nil || string(v) != "vp/1/b" {
				return fmt.Errorf("read own write: %q %v", v, err)
			}
			return tx.Delete("rows", []byte("q"))
		})
		if err != nil {
			t.Fatal(err)
		}
		err = s.View(ctx, func(tx Tx) error {
			var keys []string
			if err := tx.Scan("rows", []byte("p/1/"), func(k, v []byte) error {
				keys = append(keys, string(k)+"="+string(v))
				return nil
			}); err != nil {
				return err
			}
			if strings.Join(keys, ",") != "p/1/a=vp/1/a,p/1/b=vp/1/b" {
				t.Errorf("scan p/1/: %v", keys)
			}
			if n, _ := tx.Count("rows"); n != 3 {
				t.Errorf("count %d, want 3", n)
			}
			if v, _ := tx.Get("rows", []byte("q")); v != nil {
				t.Errorf("deleted key still there: %q", v)
			}
			if v, err := tx.Get("nope", []byte("x")); v != nil || err != nil {
				t.Errorf("absent bucket: %q %v", v, err)
			}
			var first []string
			_ = tx.Scan("rows", nil, func(k, _ []byte) error { first = append(first, string(k)); return ErrStop })
			if len(first) != 1 {
				t.Errorf("ErrStop did not stop the scan: %v", first)
			}
			boom := errors.New("boom")
			if err := tx.Scan("rows", nil, func(_, _ []byte) error { return boom }); !errors.Is(err, boom) {
				t.Errorf("scan did not return fn's error: %v", err)
			}
			var from []string
			_ = tx.ScanFrom("rows", []byte("p/1/b"), func(k, _ []byte) error { from = append(from, string(k)); return nil })
			if strings.Join(from, ",") != "p/1/b,p/2/a" {
				t.Errorf("ScanFrom p/1/b: %v", from)
			}
			if names, err := tx.Buckets(); err != nil || strings.Join(names, ",") != "rows" {
				t.Errorf("buckets: %v %v", names, err)
			}
			if err := tx.Put("rows", []byte("x"), nil); !errors.Is(err, ErrReadOnly) {
				t.Errorf("put in View: %v", err)
			}
			if err := tx.Delete("rows", []byte("p/1/a")); !errors.Is(err, ErrReadOnly) {
				t.Errorf("delete in View: %v", err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

// TestReadsSeeOwnWrites: inside one Update, Get, Scan, ScanFrom and Count
// see the keys put and not the keys deleted earlier in it (the join puts
// index entries and scans them in the same batch).
func TestReadsSeeOwnWrites(t *testing.T) {
	forEachKind(t, func(t *testing.T, k storeKind) {
		s := k.mustOpen(t, t.TempDir())
		ctx := context.Background()
		if err := s.Update(ctx, func(tx Tx) error {
			for _, k := range []string{"a/1", "a/2", "a/3", "b/1"} {
				if err := tx.Put("idx", []byte(k), []byte{}); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		err := s.Update(ctx, func(tx Tx) error {
			if err := tx.Delete("idx", []byte("a/2")); err != nil {
				return err
			}
			if err := tx.Put("idx", []byte("a/4"), []byte("new")); err != nil {
				return err
			}
			if err := tx.Put("idx", []byte("a/1"), []byte("changed")); err != nil {
				return err
			}
			var got []string
			if err := tx.Scan("idx", []byte("a/"), func(k, v []byte) error {
				got = append(got, string(k)+"="+string(v))
				return nil
			}); err != nil {
				return err
			}
			if strings.Join(got, ",") != "a/1=changed,a/3=,a/4=new" {
				t.Errorf("scan inside the update: %v", got)
			}
			got = got[:0]
			if err := tx.ScanFrom("idx", []byte("a/2"), func(k, _ []byte) error {
				got = append(got, string(k))
				return nil
			}); err != nil {
				return err
			}
			if strings.Join(got, ",") != "a/3,a/4,b/1" {
				t.Errorf("ScanFrom inside the update: %v", got)
			}
			if n, err := tx.Count("idx"); n != 4 || err != nil {
				t.Errorf("count inside the update: %d %v, want 4", n, err)
			}
			if v, _ := tx.Get("idx", []byte("a/2")); v != nil {
				t.Errorf("deleted key visible: %q", v)
			}
			if v, _ := tx.Get("idx", []byte("a/3")); v == nil || len(v) != 0 {
				t.Errorf("empty value: %q (nil %v), want empty and not nil", v, v == nil)
			}
			// Put, delete and put again.
			_ = tx.Delete("idx", []byte("a/4"))
			_ = tx.Put("idx", []byte("a/2"), []byte("back"))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := dump(t, s, "idx"); got != "a/1=changed,a/2=back,a/3=,b/1=" {
			t.Errorf("after the update: %s", got)
		}
	})
}

// TestScanWritesOtherBuckets: fn may write to other buckets while a scan
// runs (the join does).
func TestScanWritesOtherBuckets(t *testing.T) {
	forEachKind(t, func(t *testing.T, k storeKind) {
		s := k.mustOpen(t, t.TempDir())
		ctx := context.Background()
		err := s.Update(ctx, func(tx Tx) error {
			for i := range 300 { // several scan chunks
				if err := tx.Put("a", fmt.Appendf(nil, "%04d", i), []byte("x")); err != nil {
					return err
				}
				if err := tx.Put("c", fmt.Appendf(nil, "%04d", i), []byte("y")); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		err = s.Update(ctx, func(tx Tx) error {
			n := 0
			err := tx.Scan("a", nil, func(k, v []byte) error {
				n++
				if err := tx.Put("b", k, append(v, '!')); err != nil {
					return err
				}
				return tx.Delete("c", k)
			})
			if n != 300 {
				t.Errorf("scanned %d keys, want 300", n)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		_ = s.View(ctx, func(tx Tx) error {
			for _, c := range []struct {
				bucket string
				want   int
			}{{"a", 300}, {"b", 300}, {"c", 0}} {
				if n, _ := tx.Count(c.bucket); n != c.want {
					t.Errorf("%s holds %d keys, want %d", c.bucket, n, c.want)
				}
			}
			return nil
		})
	})
}

func TestFailedUpdateChangesNothing(t *testing.T) {
	forEachKind(t, func(t *testing.T, k storeKind) {
		s := k.mustOpen(t, t.TempDir())
		ctx := context.Background()
		_ = s.Update(ctx, func(tx Tx) error { return tx.Put("b", []byte("k"), []byte("old")) })
		check := func(when string) {
			_ = s.View(ctx, func(tx Tx) error {
				v, _ := tx.Get("b", []byte("k"))
				v2, _ := tx.Get("b", []byte("k2"))
				if n, _ := tx.Count("b"); string(v) != "old" || v2 != nil || n != 1 {
					t.Errorf("after %s: k=%q k2=%q count %d, want old, absent, 1", when, v, v2, n)
				}
				return nil
			})
		}
		boom := errors.New("boom")
		err := s.Update(ctx, func(tx Tx) error {
			_ = tx.Put("b", []byte("k"), []byte("new"))
			_ = tx.Put("b", []byte("k2"), []byte("new"))
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("Update: %v", err)
		}
		check("a failed Update")

		func() {
			defer func() {
				if r := recover(); r != "fn panicked" {
					t.Errorf("recovered %v", r)
				}
			}()
			_ = s.Update(ctx, func(tx Tx) error {
				_ = tx.Delete("b", []byte("k"))
				_ = tx.Put("b", []byte("k2"), []byte("new"))
				panic("fn panicked")
			})
		}()
		check("a panicking Update")
	})
}

func TestReservedBuckets(t *testing.T) {
	forEachKind(t, func(t *testing.T, k storeKind) {
		s := k.mustOpen(t, t.TempDir())
		for _, b := range []string{"", metaBucket} {
			if err := s.Update(context.Background(), func(tx Tx) error { return tx.Put(b, []byte("k"), []byte("v")) }); err == nil {
				t.Errorf("put into reserved bucket %q accepted", b)
			}
		}
	})
}

func TestCanceledContext(t *testing.T) {
	forEachKind(t, func(t *testing.T, k storeKind) {
		s := k.mustOpen(t, t.TempDir())
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		ran := false
		fn := func(Tx) error { ran = true; return nil }
		if err := s.Update(ctx, fn); !errors.Is(err, context.Canceled) {
			t.Errorf("Update: %v", err)
		}
		if err := s.View(ctx, fn); !errors.Is(err, context.Canceled) {
			t.Errorf("View: %v", err)
		}
		if ran {
			t.Error("fn ran under a canceled context")
		}
	})
}

// The helper process: when STATESTORE_HELPER is set, it opens a store of
// kind STATESTORE_KIND and either holds it open ("hold") or commits
// numbered transactions forever ("write"), printing each number once its
// Update has returned.
func TestStatestoreHelperProcess(t *testing.T) {
	mode, dir := os.Getenv("STATESTORE_HELPER"), os.Getenv("STATESTORE_DIR")
	if mode == "" {
		t.Skip("helper process for the lock and crash tests; runs only as their subprocess")
	}
	var s Store
	var err error
	switch kind := os.Getenv("STATESTORE_KIND"); kind {
	case "log-small":
		// Tiny segments: the crash lands among segment rolls and
		// compaction steps.
		opts := defaultLogOptions()
		opts.segmentSize, opts.minCompact = 32<<10, 4<<10
		s, err = openLog(dir, opts)
	default:
		s, err = kindNamed(kind).open(dir)
	}
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("open")
	if mode == "hold" {
		time.Sleep(time.Hour)
	}
	for i := 0; ; i++ {
		err := s.Update(context.Background(), func(tx Tx) error {
			for j := range 50 { // a batch: many keys, one commit
				if err := tx.Put("rows", fmt.Appendf(nil, "%08d/%02d", i, j), []byte(strconv.Itoa(i))); err != nil {
					return err
				}
			}
			for j := range 100 { // keys every batch overwrites: dead records to compact
				if err := tx.Put("hot", fmt.Appendf(nil, "%03d", j), fmt.Appendf(nil, "%d%0100d", i, 0)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println(i)
	}
}

func helper(t *testing.T, kind, mode, dir string) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestStatestoreHelperProcess$")
	cmd.Env = append(os.Environ(), "STATESTORE_HELPER="+mode, "STATESTORE_DIR="+dir, "STATESTORE_KIND="+kind)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	sc := bufio.NewScanner(out)
	if !sc.Scan() || sc.Text() != "open" {
		t.Fatalf("helper did not open the store: %q", sc.Text())
	}
	return cmd, sc
}

func TestSecondProcessIsLockedOut(t *testing.T) {
	forEachDurableKind(t, func(t *testing.T, k storeKind) {
		dir := t.TempDir()
		helper(t, k.name, "hold", dir)
		start := time.Now()
		s, err := k.open(dir)
		if err == nil {
			_ = s.Close()
			t.Fatal("a second process opened a store another one holds")
		}
		if !strings.Contains(err.Error(), "locked by another process") {
			t.Errorf("error %q does not say the directory is locked", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("waited %v for the lock: should fail at once", d)
		}
	})
}

func TestSecondOpenInProcessIsLockedOut(t *testing.T) {
	forEachDurableKind(t, func(t *testing.T, k storeKind) {
		dir := t.TempDir()
		s := k.mustOpen(t, dir)
		start := time.Now()
		if s2, err := k.open(dir); err == nil {
			_ = s2.Close()
			t.Fatal("a second Open of an open store succeeded")
		} else if !strings.Contains(err.Error(), "locked by another process") {
			t.Errorf("error %q does not say the directory is locked", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("waited %v for the lock: should fail at once", d)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		k.mustOpen(t, dir) // Close released the lock
	})
}

// TestCommittedSurvivesSIGKILL: every transaction whose Update returned
// before the writer was killed is on disk, whole; the one in flight is
// wholly there or wholly absent.
func TestCommittedSurvivesSIGKILL(t *testing.T) {
	for _, kind := range []string{"bolt", "log", "log-small"} {
		t.Run(kind, func(t *testing.T) {
			dir := t.TempDir()
			cmd, sc := helper(t, kind, "write", dir)
			last := -1
			for last < 300 && sc.Scan() {
				n, err := strconv.Atoi(sc.Text())
				if err != nil {
					t.Fatalf("helper: %s", sc.Text())
				}
				last = n
			}
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			_ = cmd.Wait()

			open := kindNamed(strings.TrimSuffix(kind, "-small"))
			s := open.mustOpen(t, dir)
			counts := map[string]int{}
			hot := map[string]int{}
			_ = s.View(context.Background(), func(tx Tx) error {
				_ = tx.Scan("hot", nil, func(_, v []byte) error { hot[strings.TrimSuffix(string(v), strings.Repeat("0", 100))]++; return nil })
				return tx.Scan("rows", nil, func(_, v []byte) error { counts[string(v)]++; return nil })
			})
			newest := -1
			for i := 0; i <= last; i++ {
				if counts[strconv.Itoa(i)] != 50 {
					t.Fatalf("transaction %d was committed before the kill but has %d of 50 keys", i, counts[strconv.Itoa(i)])
				}
			}
			for v, n := range counts {
				if n != 50 {
					t.Errorf("transaction %s is torn: %d of 50 keys", v, n)
				}
				i, _ := strconv.Atoi(v)
				newest = max(newest, i)
			}
			if len(hot) != 1 || hot[strconv.Itoa(newest)] != 100 {
				t.Errorf("hot keys %v, want all 100 from transaction %d", hot, newest)
			}
			if kind == "log-small" { // the crash test covered compaction too
				if _, err := os.Stat(dir + "/" + segmentName(1)); err == nil {
					t.Error("the first segment was never compacted away")
				}
			}
			t.Logf("%d transactions acknowledged before SIGKILL, %d on disk", last+1, len(counts))
		})
	}
}
