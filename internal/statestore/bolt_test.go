package statestore

import (
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

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
