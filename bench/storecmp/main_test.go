package main

import (
	"testing"
)

// TestBothStoresRunTheWorkload runs every phase on a small store: reads
// return the row states written, scans find each customer's index
// entries (run checks both), and both stores lock their directory.
func TestBothStoresRunTheWorkload(t *testing.T) {
	for _, store := range []string{"bbolt", "pebble"} {
		t.Run(store, func(t *testing.T) {
			r, err := run(config{
				Store: store, Dir: t.TempDir(), Customers: 400, Accounts: 1000, ValueSize: 200,
				LoadBatch: 300, Batch: 125, Batches: 4, JoinBatch: 50, JoinN: 4, Reads: 2000, Scans: 1000, PebbleMB: 8, Compress: true,
			})
			if err != nil {
				t.Fatal(err)
			}
			if !r.SecondOpenLocked {
				t.Error("a second open of the directory succeeded: not locked")
			}
			if r.IndexEntriesFound < 2000 {
				t.Errorf("scans found %d index entries for 1000 customers of 2.5 accounts each", r.IndexEntriesFound)
			}
			if r.UpsertsPerSec <= 0 || r.JoinEventsPerSec <= 0 || r.DiskMB <= 0 || r.MeanValueBytes != 200 {
				t.Errorf("implausible result: %+v", r)
			}
		})
	}
}
