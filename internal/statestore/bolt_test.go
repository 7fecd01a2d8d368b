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

	bolt "go.etcd.io/bbolt"
)

func open(t *testing.T, dir string) *Bolt {
	t.Helper()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestUpdateViewScan(t *testing.T) {
	s := open(t, t.TempDir())
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
		if err := tx.Put("rows", []byte("x"), nil); !errors.Is(err, ErrReadOnly) {
			t.Errorf("put in View: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestFailedUpdateChangesNothing(t *testing.T) {
	s := open(t, t.TempDir())
	ctx := context.Background()
	_ = s.Update(ctx, func(tx Tx) error { return tx.Put("b", []byte("k"), []byte("old")) })
	boom := errors.New("boom")
	err := s.Update(ctx, func(tx Tx) error {
		_ = tx.Put("b", []byte("k"), []byte("new"))
		_ = tx.Put("b", []byte("k2"), []byte("new"))
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update: %v", err)
	}
	_ = s.View(ctx, func(tx Tx) error {
		v, _ := tx.Get("b", []byte("k"))
		v2, _ := tx.Get("b", []byte("k2"))
		if string(v) != "old" || v2 != nil {
			t.Errorf("after a failed Update: k=%q k2=%q, want old and absent", v, v2)
		}
		return nil
	})
}

func TestReservedBuckets(t *testing.T) {
	s := open(t, t.TempDir())
	for _, b := range []string{"", metaBucket} {
		if err := s.Update(context.Background(), func(tx Tx) error { return tx.Put(b, []byte("k"), []byte("v")) }); err == nil {
			t.Errorf("put into reserved bucket %q accepted", b)
		}
	}
}

func TestFormatVersionChecked(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	_ = s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte(metaBucket)).Put([]byte(formatKey), []byte("999")) })
	_ = s.Close()
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), `format "999"`) {
		t.Fatalf("Open of a format-999 store: %v, want a format error", err)
	}

	foreign := t.TempDir()
	db, err := bolt.Open(foreign+"/"+fileName, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("theirs")); return err })
	_ = db.Close()
	if _, err := Open(foreign); err == nil || !strings.Contains(err.Error(), "without a format stamp") {
		t.Fatalf("Open of a foreign bbolt file: %v", err)
	}
}

// The helper process: when STATESTORE_HELPER is set, it either holds the
// store open ("hold") or commits numbered transactions forever ("write"),
// printing each number once its Update has returned.
func TestStatestoreHelperProcess(t *testing.T) {
	mode, dir := os.Getenv("STATESTORE_HELPER"), os.Getenv("STATESTORE_DIR")
	if mode == "" {
		t.Skip("helper process for the lock and crash tests; runs only as their subprocess")
	}
	s, err := Open(dir)
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
			for j := 0; j < 50; j++ { // a batch: many keys, one commit
				if err := tx.Put("rows", []byte(fmt.Sprintf("%08d/%02d", i, j)), []byte(strconv.Itoa(i))); err != nil {
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

func helper(t *testing.T, mode, dir string) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestStatestoreHelperProcess$")
	cmd.Env = append(os.Environ(), "STATESTORE_HELPER="+mode, "STATESTORE_DIR="+dir)
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
	dir := t.TempDir()
	helper(t, "hold", dir)
	start := time.Now()
	s, err := Open(dir)
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
}

// TestCommittedSurvivesSIGKILL: every transaction whose Update returned
// before the writer was killed is on disk, whole; the one in flight is
// wholly there or wholly absent.
func TestCommittedSurvivesSIGKILL(t *testing.T) {
	dir := t.TempDir()
	cmd, sc := helper(t, "write", dir)
	last := -1
	for last < 200 && sc.Scan() {
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

	s := open(t, dir)
	counts := map[string]int{}
	_ = s.View(context.Background(), func(tx Tx) error {
		return tx.Scan("rows", nil, func(_, v []byte) error { counts[string(v)]++; return nil })
	})
	for i := 0; i <= last; i++ {
		if counts[strconv.Itoa(i)] != 50 {
			t.Fatalf("transaction %d was committed before the kill but has %d of 50 keys", i, counts[strconv.Itoa(i)])
		}
	}
	for v, n := range counts {
		if n != 50 {
			t.Errorf("transaction %s is torn: %d of 50 keys", v, n)
		}
	}
	t.Logf("%d transactions acknowledged before SIGKILL, %d on disk", last+1, len(counts))
}
