package statestore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestMemoryStore(t *testing.T) {
	ctx := context.Background()
	m := OpenMemory()
	err := m.Update(ctx, func(tx Tx) error {
		for _, k := range []string{"p\x00a", "p\x00b", "q\x00a"} {
			if err := tx.Put("idx", []byte(k), []byte("v"+k)); err != nil {
				return err
			}
		}
		var keys []string
		// Writes to another bucket while scanning: allowed.
		err := tx.Scan("idx", []byte("p\x00"), func(k, v []byte) error {
			keys = append(keys, string(k))
			return tx.Put("rows", k, v)
		})
		if strings.Join(keys, ",") != "p\x00a,p\x00b" {
			return fmt.Errorf("scan of own writes: %q", keys)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err = m.Update(ctx, func(tx Tx) error {
		if err := tx.Delete("rows", []byte("p\x00a")); err != nil {
			return err
		}
		if err := tx.Put("other", []byte("k"), []byte("v")); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("failed Update: %v", err)
	}
	err = m.View(ctx, func(tx Tx) error {
		if v, _ := tx.Get("rows", []byte("p\x00a")); string(v) != "vp\x00a" {
			t.Errorf("a failed Update's delete is visible: %q", v)
		}
		if names, _ := tx.Buckets(); strings.Join(names, ",") != "idx,rows" {
			t.Errorf("buckets %q: a failed Update's bucket is visible", names)
		}
		if n, _ := tx.Count("idx"); n != 3 {
			t.Errorf("count %d", n)
		}
		if err := tx.Put("rows", []byte("x"), nil); !errors.Is(err, ErrReadOnly) {
			t.Errorf("write in a View: %v", err)
		}
		var from []string
		_ = tx.ScanFrom("idx", []byte("p\x00b"), func(k, _ []byte) error { from = append(from, string(k)); return nil })
		if strings.Join(from, ",") != "p\x00b,q\x00a" {
			t.Errorf("ScanFrom: %q", from)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.View(ctx, func(Tx) error { return nil }); err == nil {
		t.Error("View after Close succeeded")
	}
}
