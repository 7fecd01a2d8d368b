package statestore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func openLogT(t testing.TB, dir string, opts logOptions) *LogStore {
	t.Helper()
	s, err := openLog(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func smallSegments() logOptions {
	o := defaultLogOptions()
	o.segmentSize, o.minCompact = 16<<10, 2<<10
	return o
}

// checkAccounting recomputes from the index what the store tracks
// incrementally: live bytes per segment and in all, and the file sizes.
func checkAccounting(t *testing.T, s *LogStore) {
	t.Helper()
	s.mu.RLock()
	defer s.mu.RUnlock()
	live := map[*segment]int64{}
	var sum int64
	for _, b := range s.buckets {
		b.tree.Ascend(func(it item) bool {
			if int(it.slot()) >= len(s.slots) || s.slots[it.slot()] == nil {
				t.Errorf("%s/%q points at free slot %d", b.name, it.key, it.slot())
				return false
			}
			seg := s.slots[it.slot()]
			n := it.len16()
			if n == lenEscape {
				n = s.longLen(seg, it, nil, 0)
			}
			if int64(it.off())+int64(uvarintLen(n)+n) > seg.size {
				t.Errorf("%s/%q points past the end of segment %d", b.name, it.key, seg.id)
			}
			size := putSize(len(b.name), len(it.key), n)
			live[seg] += size
			sum += size
			return true
		})
	}
	if sum != s.live {
		t.Errorf("live bytes %d, the index says %d", s.live, sum)
	}
	var total int64
	for i, seg := range s.order {
		if s.slots[seg.slot] != seg {
			t.Errorf("segment %d is not in its slot %d", seg.id, seg.slot)
		}
		if i > 0 && seg.id <= s.order[i-1].id {
			t.Errorf("segment order: %d after %d", seg.id, s.order[i-1].id)
		}
		if seg.live != live[seg] {
			t.Errorf("segment %d: live bytes %d, the index says %d", seg.id, seg.live, live[seg])
		}
		fi, err := os.Stat(seg.f.Name())
		if err != nil || fi.Size() != seg.size {
			t.Errorf("segment %d: size %d, file %v %v", seg.id, seg.size, fi, err)
		}
		total += seg.size
	}
	if s.active != s.order[len(s.order)-1] {
		t.Error("the active segment is not the newest")
	}
	if total != s.total {
		t.Errorf("total bytes %d, segments sum to %d", s.total, total)
	}
	files, _ := filepath.Glob(filepath.Join(s.dir, "*"+segmentSuffix))
	if len(files) != len(s.order) {
		t.Errorf("%d segment files on disk, %d open", len(files), len(s.order))
	}
}

// model is what a store should hold: bucket → key → value.
type model map[string]map[string]string

func (m model) put(b, k, v string) {
	if m[b] == nil {
		m[b] = map[string]string{}
	}
	m[b][k] = v
}

func (m model) check(t *testing.T, s Store) {
	t.Helper()
	err := s.View(context.Background(), func(tx Tx) error {
		var want []string
		for b, kv := range m {
			if len(kv) > 0 {
				want = append(want, b)
			}
		}
		names, err := tx.Buckets()
		if err != nil {
			return err
		}
		if len(names) != len(want) {
			t.Errorf("buckets %v, want %d", names, len(want))
		}
		for b, kv := range m {
			if n, _ := tx.Count(b); n != len(kv) {
				t.Errorf("%s: %d keys, want %d", b, n, len(kv))
			}
			seen := 0
			prev := ""
			err := tx.Scan(b, nil, func(k, v []byte) error {
				if seen > 0 && string(k) <= prev {
					t.Errorf("%s: scan out of order: %q after %q", b, k, prev)
				}
				prev = string(k)
				seen++
				if want, ok := kv[string(k)]; !ok || want != string(v) {
					t.Errorf("%s/%s = %q, want %q (present %v)", b, k, v, want, ok)
				}
				return nil
			})
			if err != nil {
				return err
			}
			for k, want := range kv {
				if v, err := tx.Get(b, []byte(k)); err != nil || string(v) != want {
					t.Errorf("get %s/%s = %q %v, want %q", b, k, v, err, want)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestLogReopen: random puts, overwrites and deletes over several buckets
// and many small segments all read back after a reopen.
func TestLogReopen(t *testing.T) {
	dir := t.TempDir()
	opts := smallSegments()
	s := openLogT(t, dir, opts)
	m := model{}
	rng := rand.New(rand.NewPCG(1, 2))
	for batch := range 200 {
		err := s.Update(context.Background(), func(tx Tx) error {
			for range 20 {
				b := fmt.Sprintf("b%d", rng.IntN(3))
				k := fmt.Sprintf("k%03d", rng.IntN(300))
				if rng.IntN(4) == 0 {
					delete(m[b], k)
					if err := tx.Delete(b, []byte(k)); err != nil {
						return err
					}
					continue
				}
				v := strings.Repeat(fmt.Sprintf("%d.", batch), rng.IntN(20))
				m.put(b, k, v)
				if err := tx.Put(b, []byte(k), []byte(v)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	m.check(t, s)
	checkAccounting(t, s)
	if len(s.order) < 3 {
		t.Errorf("%d segments: the test wants several", len(s.order))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.View(context.Background(), func(Tx) error { return nil }); err == nil {
		t.Error("View on a closed store succeeded")
	}
	s = openLogT(t, dir, opts)
	m.check(t, s)
	checkAccounting(t, s)
}

// TestLogFailedUpdateLeavesNoTrace: a failed Update changes neither the
// index nor the files.
func TestLogFailedUpdateLeavesNoTrace(t *testing.T) {
	dir := t.TempDir()
	s := openLogT(t, dir, defaultLogOptions())
	ctx := context.Background()
	if err := s.Update(ctx, func(tx Tx) error { return tx.Put("b", []byte("k"), []byte("old")) }); err != nil {
		t.Fatal(err)
	}
	size, _ := s.SizeOnDisk()
	boom := errors.New("boom")
	err := s.Update(ctx, func(tx Tx) error {
		_ = tx.Put("b", []byte("k"), []byte("new"))
		_ = tx.Put("b", []byte("k2"), []byte("new"))
		_ = tx.Put("c", []byte("k"), []byte("new"))
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update: %v", err)
	}
	if after, _ := s.SizeOnDisk(); after != size {
		t.Errorf("a failed Update wrote %d bytes", after-size)
	}
	// Empty transactions (reads, deletes of absent keys) write nothing.
	_ = s.Update(ctx, func(tx Tx) error { return tx.Delete("b", []byte("absent")) })
	_ = s.Update(ctx, func(tx Tx) error { _, err := tx.Get("b", []byte("k")); return err })
	if after, _ := s.SizeOnDisk(); after != size {
		t.Errorf("empty transactions wrote %d bytes", after-size)
	}
	_ = s.Update(ctx, func(tx Tx) error { // a key put and deleted: gone
		_ = tx.Put("b", []byte("tmp"), []byte("x"))
		return tx.Delete("b", []byte("tmp"))
	})
	want := model{"b": {"k": "old"}}
	want.check(t, s)
	checkAccounting(t, s)
	_ = s.Close()
	s = openLogT(t, dir, defaultLogOptions())
	want.check(t, s)
}

// TestLogSyncFailure: when the sync of a frame fails, Update fails, the
// frame is cut off the file and the index is as before; when cutting it
// off fails too, the store refuses further use.
func TestLogSyncFailure(t *testing.T) {
	dir := t.TempDir()
	opts := defaultLogOptions()
	failSyncs := 0
	opts.sync = func(f *os.File) error {
		if failSyncs > 0 {
			failSyncs--
			return errors.New("injected sync failure")
		}
		return f.Sync()
	}
	s := openLogT(t, dir, opts)
	ctx := context.Background()
	put := func(v string) error {
		return s.Update(ctx, func(tx Tx) error { return tx.Put("b", []byte("k"), []byte(v)) })
	}
	if err := put("one"); err != nil {
		t.Fatal(err)
	}
	size, _ := s.SizeOnDisk()
	failSyncs = 1
	if err := put("two"); err == nil || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("Update with a failing sync: %v", err)
	}
	fi, _ := os.Stat(s.active.f.Name())
	if fi.Size() != size {
		t.Errorf("the failed frame was not cut off: file %d bytes, was %d", fi.Size(), size)
	}
	model{"b": {"k": "one"}}.check(t, s)
	if err := put("three"); err != nil {
		t.Fatalf("Update after a failed one: %v", err)
	}
	checkAccounting(t, s)

	failSyncs = 2 // the frame's sync and the sync of its undoing
	if err := put("four"); err == nil {
		t.Fatal("Update with failing syncs succeeded")
	}
	for _, err := range []error{put("five"), s.View(ctx, func(Tx) error { return nil })} {
		if err == nil || !strings.Contains(err.Error(), "broken") {
			t.Errorf("use of a broken store: %v", err)
		}
	}
	_ = s.Close()
	s = openLogT(t, dir, defaultLogOptions())
	model{"b": {"k": "three"}}.check(t, s)
}

func writeBatches(t *testing.T, s *LogStore, from, to int) []int64 {
	t.Helper()
	var sizes []int64
	for i := from; i < to; i++ {
		err := s.Update(context.Background(), func(tx Tx) error {
			for j := range 10 {
				if err := tx.Put("rows", fmt.Appendf(nil, "%03d/%d", i, j), fmt.Appendf(nil, "batch %d", i)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		size, _ := s.SizeOnDisk()
		sizes = append(sizes, size)
	}
	return sizes
}

func batchModel(batches ...int) model {
	m := model{"rows": {}}
	for _, i := range batches {
		for j := range 10 {
			m.put("rows", fmt.Sprintf("%03d/%d", i, j), fmt.Sprintf("batch %d", i))
		}
	}
	return m
}

// TestLogTornTail: what a crash can leave after the last whole frame of
// the newest segment (part of a frame, garbage, zeros) is cut off at
// open, and only that.
func TestLogTornTail(t *testing.T) {
	dir := t.TempDir()
	s := openLogT(t, dir, defaultLogOptions())
	sizes := writeBatches(t, s, 0, 5)
	path := s.active.f.Name()
	_ = s.Close()

	// Half of the last frame.
	if err := os.Truncate(path, sizes[3]+(sizes[4]-sizes[3])/2); err != nil {
		t.Fatal(err)
	}
	s = openLogT(t, dir, defaultLogOptions())
	batchModel(0, 1, 2, 3).check(t, s)
	if fi, _ := os.Stat(path); fi.Size() != sizes[3] {
		t.Errorf("torn frame not cut off: file %d bytes, want %d", fi.Size(), sizes[3])
	}
	writeBatches(t, s, 5, 6) // appends where the torn frame was
	checkAccounting(t, s)
	size, _ := s.SizeOnDisk()
	_ = s.Close()

	tails := map[string][]byte{
		"garbage":     []byte("\x13\x37 this is not a frame, just junk a crash left behind"),
		"zeros":       make([]byte, 4096),
		"header only": {frameMagic, 200, 0},
		"bad crc":     {frameMagic, 2, 0, 0, 0, 1, 2, 3, 4, 'x', 'y'},
	}
	for name, tail := range tails {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = f.Write(tail)
		_ = f.Close()
		s = openLogT(t, dir, defaultLogOptions())
		batchModel(0, 1, 2, 3, 5).check(t, s)
		if fi, _ := os.Stat(path); fi.Size() != size {
			t.Errorf("%s: tail not cut off: file %d bytes, want %d", name, fi.Size(), size)
		}
		_ = s.Close()
	}
}

// flipByte corrupts one byte of a file.
func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// TestLogCorruption: a bad frame anywhere but at the end of the newest
// segment fails the open, naming the segment and the offset.
func TestLogCorruption(t *testing.T) {
	opts := defaultLogOptions()
	opts.segmentSize = 1 << 10
	setup := func() (string, []uint64) {
		dir := t.TempDir()
		s := openLogT(t, dir, opts)
		writeBatches(t, s, 0, 20)
		var ids []uint64
		for _, seg := range s.order {
			ids = append(ids, seg.id)
		}
		_ = s.Close()
		return dir, ids
	}

	dir, ids := setup()
	first := filepath.Join(dir, segmentName(ids[0]))
	flipByte(t, first, 30)
	_, err := openLog(dir, opts)
	if err == nil || !strings.Contains(err.Error(), segmentName(ids[0])) || !strings.Contains(err.Error(), "corrupt at offset 0") {
		t.Errorf("open with a corrupt sealed segment: %v", err)
	}

	// A sealed segment that ends in part of a frame is corrupt too.
	dir, ids = setup()
	first = filepath.Join(dir, segmentName(ids[0]))
	fi, _ := os.Stat(first)
	_ = os.Truncate(first, fi.Size()-3)
	if _, err := openLog(dir, opts); err == nil || !strings.Contains(err.Error(), segmentName(ids[0])) {
		t.Errorf("open with a truncated sealed segment: %v", err)
	}

	// In the newest segment, a bad frame that whole frames follow is
	// damage to acknowledged data, not a torn write.
	dir, ids = setup()
	newest := filepath.Join(dir, segmentName(ids[len(ids)-1]))
	flipByte(t, newest, 30)
	_, err = openLog(dir, opts)
	if err == nil || !strings.Contains(err.Error(), "a whole frame follows") {
		t.Errorf("open with a corrupt frame in the middle of the newest segment: %v", err)
	}
	if fi, _ := os.Stat(newest); fi.Size() == 0 {
		t.Error("the newest segment was truncated")
	}
}

func TestLogFormatChecked(t *testing.T) {
	dir := t.TempDir()
	s := openLogT(t, dir, defaultLogOptions())
	_ = s.Close()
	data, err := os.ReadFile(filepath.Join(dir, formatFileName))
	if err != nil || string(data) != "odsflow-state-log 3\n" {
		t.Fatalf("FORMAT: %q %v", data, err)
	}
	_ = os.WriteFile(filepath.Join(dir, formatFileName), []byte("odsflow-state-log 4\n"), 0o600)
	_, err = OpenLog(dir)
	if err == nil || !strings.Contains(err.Error(), `"odsflow-state-log 4"`) || !strings.Contains(err.Error(), `reads "odsflow-state-log 3"`) {
		t.Errorf("open of a format-4 store: %v", err)
	}

	// Segments without FORMAT: not ours to guess at.
	_ = os.Remove(filepath.Join(dir, formatFileName))
	if _, err := OpenLog(dir); err == nil || !strings.Contains(err.Error(), "no FORMAT") {
		t.Errorf("open of segments without FORMAT: %v", err)
	}

	// The bbolt store refuses a log directory rather than start an empty
	// store beside it.
	dir = t.TempDir()
	s = openLogT(t, dir, defaultLogOptions())
	_ = s.Close()
	if b, err := Open(dir); err == nil || !strings.Contains(err.Error(), "OpenLog") {
		if b != nil {
			_ = b.Close()
		}
		t.Errorf("bbolt Open of a log dir: %v", err)
	}
}

func TestLogRejectsBadInput(t *testing.T) {
	s := openLogT(t, t.TempDir(), defaultLogOptions())
	for name, fn := range map[string]func(Tx) error{
		"NUL in bucket": func(tx Tx) error { return tx.Put("a\x00b", []byte("k"), nil) },
		"empty key":     func(tx Tx) error { return tx.Put("a", nil, []byte("v")) },
		"huge key":      func(tx Tx) error { return tx.Put("a", make([]byte, maxKeySize+1), nil) },
	} {
		if err := s.Update(context.Background(), fn); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}

// TestLogCompactionBoundsDisk: under random overwrites the segments stay
// within a small multiple of the live data, and compaction loses nothing.
func TestLogCompactionBoundsDisk(t *testing.T) {
	dir := t.TempDir()
	opts := smallSegments()
	s := openLogT(t, dir, opts)
	ctx := context.Background()
	m := model{"rows": {}}
	rng := rand.New(rand.NewPCG(3, 4))
	const keys, updates, batch = 1000, 50000, 50
	value := func(k, n int) string { return fmt.Sprintf("%04d-%06d-%s", k, n, strings.Repeat("v", 80)) }
	put := func(ks []int, n int) {
		err := s.Update(ctx, func(tx Tx) error {
			for _, k := range ks {
				v := value(k, n)
				m.put("rows", fmt.Sprintf("key%04d", k), v)
				if err := tx.Put("rows", fmt.Appendf(nil, "key%04d", k), []byte(v)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for k := 0; k < keys; k += batch {
		ks := make([]int, batch)
		for i := range ks {
			ks[i] = k + i
		}
		put(ks, 0)
	}
	var worst float64
	for n := 1; n <= updates/batch; n++ {
		ks := make([]int, batch)
		for i := range ks {
			ks[i] = rng.IntN(keys)
		}
		put(ks, n)
		size, _ := s.SizeOnDisk()
		worst = max(worst, float64(size)/float64(s.live))
		if n%100 == 0 {
			checkAccounting(t, s)
		}
	}
	size, _ := s.SizeOnDisk()
	t.Logf("%d segments, %d bytes on disk, %d live; worst ratio %.2f", len(s.order), size, s.live, worst)
	if worst >= 4 {
		t.Errorf("disk use reached %.2f× the live bytes, want < 4", worst)
	}
	if s.order[0].id == 1 {
		t.Error("the first segment was never compacted away")
	}
	m.check(t, s)
	checkAccounting(t, s)
	_ = s.Close()
	s = openLogT(t, dir, opts)
	m.check(t, s)
	checkAccounting(t, s)
}

func TestLogMigratesBolt(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	m := model{}
	err = b.Update(ctx, func(tx Tx) error {
		for i := range 25000 { // more than one migration batch
			k, v := fmt.Sprintf("%06d", i), fmt.Sprintf("row %d", i)
			m.put("row.t", k, v)
			if err := tx.Put("row.t", []byte(k), []byte(v)); err != nil {
				return err
			}
		}
		for i := range 100 {
			m.put("idx.r", fmt.Sprintf("p%d\x00c%d", i%7, i), "")
			if err := tx.Put("idx.r", fmt.Appendf(nil, "p%d\x00c%d", i%7, i), nil); err != nil {
				return err
			}
		}
		// An empty bucket: nothing to migrate.
		if err := tx.Put("empty", []byte("k"), []byte("v")); err != nil {
			return err
		}
		return tx.Delete("empty", []byte("k"))
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = b.Close()
	// A migration a crash interrupted left a segment behind.
	_ = os.WriteFile(filepath.Join(dir, segmentName(1)), []byte("half a migration"), 0o600)

	s, err := OpenLog(dir)
	if err != nil {
		t.Fatal(err)
	}
	m.check(t, s)
	checkAccounting(t, s)
	for _, f := range []string{formatFileName, fileName + migratedSuffix} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("after the migration: %v", err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, fileName)); err == nil {
		t.Errorf("%s still there after the migration", fileName)
	}
	_ = s.Close()

	// A crash after FORMAT but before the rename: the log has it all, the
	// rename is finished.
	// (A copy: rename(2) does nothing when both names link one file.)
	data, err := os.ReadFile(filepath.Join(dir, fileName+migratedSuffix))
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, fileName), data, 0o600)
	}
	if err != nil {
		t.Fatal(err)
	}
	s = openLogT(t, dir, defaultLogOptions())
	m.check(t, s)
	if _, err := os.Stat(filepath.Join(dir, fileName)); err == nil {
		t.Errorf("%s still there after the reopen", fileName)
	}
}

func TestLogMigrationRefusesUnknownFormat(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	_ = b.Update(context.Background(), func(tx Tx) error { return tx.Put("rows", []byte("k"), []byte("v")) })
	_ = b.db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte(metaBucket)).Put([]byte(formatKey), []byte("999")) })
	_ = b.Close()
	if _, err := OpenLog(dir); err == nil || !strings.Contains(err.Error(), `format "999"`) {
		t.Fatalf("migration of a format-999 store: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, formatFileName)); err == nil {
		t.Error("FORMAT written for a failed migration")
	}
	if _, err := os.Stat(filepath.Join(dir, fileName)); err != nil {
		t.Errorf("the bbolt file moved after a failed migration: %v", err)
	}
}

// BenchmarkLogStore: 1M keys of 200-byte values loaded in batches of
// 5,000, then b.N batches of 500 random upserts, each with 3 random point
// reads; reports the rates, the process's memory and the disk use.
func BenchmarkLogStore(b *testing.B) {
	const keys, loadBatch, batch, reads = 1_000_000, 5000, 500, 3
	dir := b.TempDir()
	s := openLogT(b, dir, defaultLogOptions())
	ctx := context.Background()
	key := func(i int) []byte { return fmt.Appendf(nil, "k%012d", i) }
	value := make([]byte, 200)
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range value {
		value[i] = byte('a' + rng.IntN(26))
	}
	start := time.Now()
	for i := 0; i < keys; i += loadBatch {
		err := s.Update(ctx, func(tx Tx) error {
			for j := i; j < i+loadBatch; j++ {
				if err := tx.Put("rows", key(j), value); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	load := time.Since(start)
	b.ResetTimer()
	start = time.Now()
	for n := 0; n < b.N; n++ {
		err := s.Update(ctx, func(tx Tx) error {
			for range batch {
				for range reads {
					v, err := tx.Get("rows", key(rng.IntN(keys)))
					if err != nil || len(v) != len(value) {
						return fmt.Errorf("read %d bytes: %v", len(v), err)
					}
				}
				value[0] = byte(n)
				if err := tx.Put("rows", key(rng.IntN(keys)), value); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	elapsed := time.Since(start).Seconds()
	b.StopTimer()
	b.ReportMetric(float64(b.N*batch)/elapsed, "upserts/s")
	b.ReportMetric(float64(b.N*batch*reads)/elapsed, "reads/s")
	b.ReportMetric(float64(keys)/load.Seconds(), "load-keys/s")
	size, _ := s.SizeOnDisk()
	b.ReportMetric(float64(size)/(1<<20), "disk-MB")
	status := procStatus(b)
	for _, f := range []string{"VmRSS", "RssAnon", "RssFile"} {
		b.ReportMetric(status[f]/1024, f+"-MB")
	}
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "live-heap-MB")
}

// procStatus returns the kB fields of /proc/self/status.
func procStatus(b *testing.B) map[string]float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		b.Logf("no /proc/self/status: %v", err)
		return nil
	}
	defer f.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var name string
		var kb float64
		if _, err := fmt.Sscanf(strings.Replace(sc.Text(), ":", " ", 1), "%s %f kB", &name, &kb); err == nil {
			out[name] = kb
		}
	}
	return out
}

// TestLogLongValues: values too long for the 16-bit length of an index
// item read back, in the tx that wrote them, after it and after a reopen,
// and are accounted for when overwritten and compacted.
func TestLogLongValues(t *testing.T) {
	dir := t.TempDir()
	opts := smallSegments()
	s := openLogT(t, dir, opts)
	ctx := context.Background()
	m := model{}
	long := func(n int, c byte) string { return strings.Repeat(string(c), n) }
	for round, c := range []byte("abcdefgh") {
		err := s.Update(ctx, func(tx Tx) error {
			for i, n := range []int{lenEscape - 1, lenEscape, lenEscape + 1, 200_000} {
				k, v := fmt.Sprintf("k%d", i), long(n, c)
				if round%2 == 1 && i == 3 {
					v = "short now"
				}
				m.put("big", k, v)
				if err := tx.Put("big", []byte(k), []byte(v)); err != nil {
					return err
				}
				if got, err := tx.Get("big", []byte(k)); err != nil || string(got) != v {
					return fmt.Errorf("own write %s: %d bytes, %v", k, len(got), err)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		checkAccounting(t, s)
	}
	m.check(t, s)
	if s.order[0].id == 1 {
		t.Error("no segment was compacted away")
	}
	_ = s.Close()
	s = openLogT(t, dir, opts)
	m.check(t, s)
	checkAccounting(t, s)
}

// TestLogOwnValuesAreCapped: a value read back in the tx that wrote it
// points into the frame being built; appending to it must not overwrite
// the records after it.
func TestLogOwnValuesAreCapped(t *testing.T) {
	dir := t.TempDir()
	s := openLogT(t, dir, defaultLogOptions())
	err := s.Update(context.Background(), func(tx Tx) error {
		_ = tx.Put("b", []byte("k1"), []byte("one"))
		_ = tx.Put("b", []byte("k2"), []byte("two"))
		v, err := tx.Get("b", []byte("k1"))
		if err != nil {
			return err
		}
		_ = append(v, "XXXXXXXXXXXXXXXXXXXX"...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	s = openLogT(t, dir, defaultLogOptions())
	model{"b": {"k1": "one", "k2": "two"}}.check(t, s)
}

// BenchmarkLogIndexMemory loads cdc_join's shape of state, 1.4M row
// states of 200 bytes (integer keys) and 1M index entries with empty
// values, in key order (the worst case for the B-tree's fill), and reports
// the Go heap and the RSS it takes, then the time and memory of a reopen,
// which rebuilds the index from the segments.
func BenchmarkLogIndexMemory(b *testing.B) {
	const rows, idx, batch = 1_400_000, 1_000_000, 5000
	for range b.N {
		dir := b.TempDir()
		s, err := OpenLog(dir)
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		value := make([]byte, 200)
		heap0 := liveHeap()
		load := func(n int, bucket string, key func(int) []byte, v []byte) {
			for i := 0; i < n; i += batch {
				err := s.Update(ctx, func(tx Tx) error {
					for j := i; j < min(i+batch, n); j++ {
						if err := tx.Put(bucket, key(j), v); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		}
		load(rows, "row.accounts", func(i int) []byte { return fmt.Appendf(nil, "%d", 1_000_000+i) }, value)
		load(idx, "idx.accounts", func(i int) []byte { return fmt.Appendf(nil, "%d\x00%d", 10_000+i/3, 1_000_000+i) }, nil)
		b.ReportMetric(liveHeap()-heap0, "index-MB")
		b.ReportMetric(procStatus(b)["VmRSS"]/1024, "VmRSS-MB")
		_ = s.Close()
		s = nil
		heap0 = liveHeap()
		start := time.Now()
		if s, err = OpenLog(dir); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(time.Since(start).Seconds(), "reopen-s")
		b.ReportMetric(liveHeap()-heap0, "reopened-index-MB")
		size, _ := s.SizeOnDisk()
		b.ReportMetric(float64(size)/(1<<20), "disk-MB")
		_ = s.Close()
		_ = os.RemoveAll(dir) // 330 MB an iteration
	}
}

func liveHeap() float64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return float64(ms.HeapAlloc) / (1 << 20)
}

// TestLogConcurrentViews: Views run alongside Updates (and each other) and
// always see whole transactions.
func TestLogConcurrentViews(t *testing.T) {
	s := openLogT(t, t.TempDir(), smallSegments())
	ctx := context.Background()
	done := make(chan struct{})
	errs := make(chan error, 4)
	for range 3 {
		go func() {
			for {
				select {
				case <-done:
					errs <- nil
					return
				default:
				}
				err := s.View(ctx, func(tx Tx) error {
					seen := map[string]bool{}
					err := tx.Scan("b", nil, func(_, v []byte) error { seen[string(v)] = true; return nil })
					if v, _ := tx.Get("b", []byte("k3")); v != nil {
						seen[string(v)] = true
					}
					if len(seen) > 1 {
						return fmt.Errorf("a View saw parts of several transactions: %v", seen)
					}
					return err
				})
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := range 300 {
		err := s.Update(ctx, func(tx Tx) error {
			for k := range 10 {
				if err := tx.Put("b", fmt.Appendf(nil, "k%d", k), fmt.Appendf(nil, "%d%s", i, strings.Repeat(".", 100))); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	checkAccounting(t, s)
}

// The index orders items by their prefix first: that must be the order of
// the keys themselves, for keys of any length and bytes (0 included).
func TestItemOrderIsKeyOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	alphabet := []byte{0, 1, 'a', 'b', 0xff}
	key := func() string {
		b := make([]byte, r.IntN(12))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		return string(b)
	}
	for i := 0; i < 200_000; i++ {
		a, b := key(), key()
		if got, want := itemLess(newItem(a, 0), newItem(b, 0)), a < b; got != want {
			t.Fatalf("itemLess(%q, %q) = %v, want %v", a, b, got, want)
		}
	}
}
