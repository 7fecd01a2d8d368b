package statestore

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/btree"
	bolt "go.etcd.io/bbolt"
	bolterr "go.etcd.io/bbolt/errors"
)

// LogFormatVersion is the on-disk format of a LogStore directory, written
// to its FORMAT file. It continues the numbering of the bbolt store's
// FormatVersion so that one number names a state format whatever holds it,
// and OpenLog refuses a FORMAT it does not know instead of misreading the
// segments.
const LogFormatVersion = 3

const (
	lockFileName   = "LOCK"
	formatFileName = LogFormatFile
	formatName     = "odsflow-state-log"
	segmentSuffix  = ".seg"
	migratedSuffix = ".migrated-to-log"

	// A frame is frameMagic, the payload length (uint32 LE) and the
	// payload's CRC-32C (uint32 LE), then the payload: the records. The
	// magic byte lets recovery tell a frame header from the zeros or
	// garbage a crash can leave at the end of a file.
	frameMagic     = 0xA7
	frameHeaderLen = 9

	// A record is its op, the uvarint-prefixed bucket and key, and for a
	// put the uvarint-prefixed value.
	opPut    = 1
	opDelete = 2

	// The same limits as bbolt, so that both stores accept the same data.
	maxKeySize   = 32768
	maxValueSize = 1<<31 - 2

	// maxSlots bounds the open segments (item.loc has 16 bits for them):
	// 4 TiB at the default segment size.
	maxSlots = 1 << 16
	// lenEscape in item.loc: the value is that long or longer, its length
	// is read from the record's prefix on disk.
	lenEscape = 0xFFFF

	// migrateBatch is how many keys one Update copies out of a bbolt file.
	migrateBatch = 10000
	// scanChunk is how many index items a Scan copies out of the tree
	// before calling fn on them: fn may write (to other buckets), and a
	// btree must not change while it is being iterated.
	scanChunk = 64
	// btreeDegree: nodes of up to 63 items.
	btreeDegree = 32
	// keepBuffer: a commit keeps its frame buffer for the next one unless
	// it grew past this (a migration batch, a huge transaction).
	keepBuffer = 8 << 20
)

// logOptions are the knobs tests turn; OpenLog uses defaultLogOptions.
type logOptions struct {
	// segmentSize: once the active segment is this large, the next
	// transaction starts a new one.
	segmentSize int64
	// minCompact is the least compaction budget of a commit: the bytes of
	// live records it may copy out of the oldest segment.
	minCompact int64
	// sync makes a file's writes durable; a seam for tests that make it
	// fail.
	sync func(*os.File) error
}

func defaultLogOptions() logOptions {
	return logOptions{
		segmentSize: 64 << 20,
		minCompact:  256 << 10,
		sync:        (*os.File).Sync,
	}
}

// LogFormatFile is the file a LogStore's directory is recognised by.
const LogFormatFile = "FORMAT"

// LogStore is a Store kept as an append-only log of segment files (Bitcask
// style) with an ordered in-memory index of every key's location. A commit
// is one sequential append and one fsync, however many keys it touches,
// and a read is an index lookup and one pread: the values stay in the page
// cache, outside the process's RSS. Dead records are reclaimed a step per
// commit, by copying the live records of the oldest segment forward into
// the commit's own frame.
//
// A LogStore holds an exclusive flock on dir/LOCK while it is open, so a
// second store on the same directory (in this or another process) fails at
// once instead of corrupting it.
//
// An Update excludes every other transaction; Views run concurrently. fn
// must not start another transaction on the same store: the lock is not
// reentrant, and it would deadlock.
type LogStore struct {
	dir  string
	opts logOptions
	lock *os.File

	// mu: an Update holds it exclusively, Views share it. Everything below
	// is guarded by it.
	mu      sync.RWMutex
	closed  bool
	broken  error // set when a failed commit could not be undone on disk
	buckets map[string]*logBucket
	slots   []*segment // by slot; nil: free
	order   []*segment // oldest first; the last is active
	active  *segment
	total   int64 // bytes of all segment files
	live    int64 // bytes of the put records the index points at

	// Buffers reused by commits (under the write lock).
	buf     []byte
	scratch []byte
	relocs  []reloc
}

// item is an index entry. The index holds every key in memory, so it is
// kept small: 32 bytes plus the key's bytes.
type item struct {
	// pfx: the key's first 8 bytes, big-endian, zero-padded. Comparing it
	// first keeps a lookup from reading the key bytes of every item it
	// passes (each one a cache miss): with 2.4M keys, lookups took ~2 µs
	// with the key alone. It orders like the key: see itemLess.
	pfx uint64
	key string
	// loc: segment slot (16 bits) | offset in the segment of the value's
	// length prefix (32 bits) | value length, lenEscape when too long for
	// 16 bits (16 bits).
	loc uint64
}

func newItem(key string, loc uint64) item {
	var pfx uint64
	for i := 0; i < 8; i++ {
		pfx <<= 8
		if i < len(key) {
			pfx |= uint64(key[i])
		}
	}
	return item{pfx: pfx, key: key, loc: loc}
}

// itemLess orders by key. Different prefixes order as their keys do (the
// first differing byte decides, a shorter key's padding is 0, below any
// byte but 0 — and a 0 byte there pads equal, leaving it to the keys).
func itemLess(a, b item) bool {
	if a.pfx != b.pfx {
		return a.pfx < b.pfx
	}
	return a.key < b.key
}

func pack(slot uint16, off uint32, valueLen int) uint64 {
	return uint64(slot)<<48 | uint64(off)<<16 | uint64(min(valueLen, lenEscape))
}

func (it item) slot() uint16 { return uint16(it.loc >> 48) }
func (it item) off() uint32  { return uint32(it.loc >> 16) }
func (it item) len16() int   { return int(it.loc & 0xFFFF) }

type logBucket struct {
	name string
	tree *btree.BTreeG[item]
	// mods counts changes to the tree, so that a Scan notices when fn
	// changed the bucket it scans and re-reads its copied items.
	mods uint64
}

type segment struct {
	id   uint64 // names the file; ids only grow
	slot uint16 // what items refer to; reused once the segment is gone
	f    *os.File
	size int64
	live int64 // bytes of live put records in this segment
	// cursor: the frames before it have had their live records copied
	// forward by compaction (and that copy is synced).
	cursor  int64
	drained bool // every live record was copied out: the file can go
}

// reloc is a live record compaction copies into the frame being
// committed: once the frame is synced, the index points at the copy.
type reloc struct {
	b        *logBucket
	key      string
	at       int // the value's length prefix, within the frame
	valueLen int
	from     *segment
}

func checksum(p []byte) uint32 {
	return crc32.Checksum(p, crc32.MakeTable(crc32.Castagnoli)) // a cached table
}

// OpenLog opens (creating if needed) the log store in dir. A directory
// that holds a bbolt store (FileName) and no log store is migrated: its
// buckets are copied into a new log store and the bbolt file is renamed
// to FileName+".migrated-to-log", kept for a rollback.
func OpenLog(dir string) (*LogStore, error) {
	return openLog(dir, defaultLogOptions())
}

func openLog(dir string, opts logOptions) (_ *LogStore, err error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("state dir %s: %w", dir, err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	s := &LogStore{dir: dir, opts: opts, lock: lock, buckets: map[string]*logBucket{}}
	defer func() {
		if err != nil {
			_ = s.closeFiles()
		}
	}()
	boltPath := filepath.Join(dir, fileName)
	_, err = os.Stat(filepath.Join(dir, formatFileName))
	switch {
	case err == nil:
		if err := checkLogFormat(dir); err != nil {
			return nil, err
		}
		if err := s.load(); err != nil {
			return nil, err
		}
		// A migration that wrote FORMAT but crashed before renaming the
		// bbolt file: finish it, the data is all in the log.
		if _, err := os.Stat(boltPath); err == nil {
			if err := renameMigrated(dir); err != nil {
				return nil, err
			}
		}
	case errors.Is(err, fs.ErrNotExist):
		if _, err := os.Stat(boltPath); err == nil {
			if err := s.migrate(boltPath); err != nil {
				return nil, err
			}
			break
		}
		ids, err := listSegments(dir)
		if err != nil {
			return nil, err
		}
		if len(ids) > 0 {
			return nil, fmt.Errorf("state dir %s holds log segments but no %s file: not an odsflow state store, or a damaged one", dir, formatFileName)
		}
		if err := writeLogFormat(dir); err != nil {
			return nil, err
		}
		if err := s.load(); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("state dir %s: %w", dir, err)
	}
	return s, nil
}

// lockDir takes the directory's lock without waiting: a second odsflow on
// the same state_dir must fail at once, not hang.
func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, lockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("state dir %s is locked by another process (is another odsflow running with the same state_dir?)", dir)
		}
		return nil, fmt.Errorf("locking state dir %s: %w", dir, err)
	}
	return f, nil
}

func logFormatLine() string { return formatName + " " + strconv.Itoa(LogFormatVersion) }

func checkLogFormat(dir string) error {
	path := filepath.Join(dir, formatFileName)
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading state format: %w", err)
	}
	if got := strings.TrimSpace(string(data)); got != logFormatLine() {
		return fmt.Errorf("state dir %s has on-disk format %q (in %s); this odsflow reads %q (rebuild the state by replaying the topics into a new state_dir)", dir, got, formatFileName, logFormatLine())
	}
	return nil
}

// writeLogFormat writes FORMAT atomically (temp file, fsync, rename, fsync
// of the directory), so that a crash leaves either no FORMAT or a whole one.
func writeLogFormat(dir string) error {
	tmp := filepath.Join(dir, formatFileName+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("writing state format: %w", err)
	}
	_, err = f.WriteString(logFormatLine() + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, formatFileName))
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		return fmt.Errorf("writing state format: %w", err)
	}
	return nil
}

// syncDir makes the creation, renaming or removal of files in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing dir %s: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("syncing dir %s: %w", dir, err)
	}
	return nil
}

func segmentName(id uint64) string { return fmt.Sprintf("%016d%s", id, segmentSuffix) }

// listSegments returns the ids of the segment files in dir, ascending.
func listSegments(dir string) ([]uint64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("listing state dir %s: %w", dir, err)
	}
	var ids []uint64
	for _, e := range entries {
		digits, ok := strings.CutSuffix(e.Name(), segmentSuffix)
		if !ok || len(digits) != 16 {
			continue
		}
		if id, err := strconv.ParseUint(digits, 10, 64); err == nil {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// addSegment gives an open segment file a slot and appends it to the
// order (it is the newest).
func (s *LogStore) addSegment(id uint64, f *os.File, size int64) (*segment, error) {
	slot := slices.Index(s.slots, nil)
	if slot < 0 {
		if len(s.slots) >= maxSlots {
			return nil, fmt.Errorf("state dir %s: more than %d segments", s.dir, maxSlots)
		}
		slot = len(s.slots)
		s.slots = append(s.slots, nil)
	}
	seg := &segment{id: id, slot: uint16(slot), f: f, size: size}
	s.slots[slot] = seg
	s.order = append(s.order, seg)
	s.total += size
	return seg, nil
}

// load opens every segment, replays them oldest first to rebuild the
// index, and makes the newest the active one (creating the first).
func (s *LogStore) load() error {
	ids, err := listSegments(s.dir)
	if err != nil {
		return err
	}
	for i, id := range ids {
		flag := os.O_RDONLY
		if i == len(ids)-1 {
			flag = os.O_RDWR // the active segment is appended to
		}
		f, err := os.OpenFile(filepath.Join(s.dir, segmentName(id)), flag, 0)
		if err != nil {
			return fmt.Errorf("opening state segment: %w", err)
		}
		fi, err := f.Stat()
		if err != nil {
			_ = f.Close()
			return fmt.Errorf("state segment %s: %w", f.Name(), err)
		}
		if _, err := s.addSegment(id, f, fi.Size()); err != nil {
			_ = f.Close()
			return err
		}
	}
	for i, seg := range s.order {
		if err := s.replay(seg, i == len(s.order)-1); err != nil {
			return err
		}
	}
	for _, b := range s.buckets {
		b.tree = refill(b.tree)
	}
	if len(s.order) == 0 {
		return s.roll()
	}
	s.active = s.order[len(s.order)-1]
	return nil
}

// refill rebuilds a tree with its nodes nearly full. A B-tree that splits
// full nodes in the middle keeps only half of each node when keys come in
// order, as they do when a snapshot is loaded (and replayed after a
// restart); with 2.4M keys that is ~60 MB of empty item slots. Inserting
// every other key first and then the rest fills each node's second half
// with no further split: measured 144 → 86 MB for cdc_join's 2.4M keys.
func refill(t *btree.BTreeG[item]) *btree.BTreeG[item] {
	nt := btree.NewG(btreeDegree, itemLess)
	for pass := range 2 {
		i := 0
		t.Ascend(func(it item) bool {
			if i%2 == pass {
				nt.ReplaceOrInsert(it)
			}
			i++
			return true
		})
	}
	return nt
}

// roll starts a new active segment.
func (s *LogStore) roll() error {
	id := uint64(1)
	if s.active != nil {
		id = s.active.id + 1
	}
	path := filepath.Join(s.dir, segmentName(id))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("creating state segment: %w", err)
	}
	// The new file must survive a crash along with the frames synced
	// into it.
	if err := syncDir(s.dir); err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		return fmt.Errorf("creating state segment %s: %w", path, err)
	}
	seg, err := s.addSegment(id, f, 0)
	if err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		return err
	}
	s.active = seg
	return nil
}

// replay reads the frames of seg in order and applies them to the index.
// A frame that does not read back whole (torn header, short payload, bad
// CRC, garbage) at the end of the newest segment is a write a crash
// interrupted, whose Update never returned: it is cut off. Anywhere else it
// is corruption, and losing acknowledged data silently is not an option.
func (s *LogStore) replay(seg *segment, newest bool) error {
	r := bufio.NewReaderSize(io.NewSectionReader(seg.f, 0, seg.size), 1<<20)
	var hdr [frameHeaderLen]byte
	var payload []byte
	off := int64(0)
	for off < seg.size {
		why := ""
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			why = "truncated frame header"
		} else if hdr[0] != frameMagic {
			why = fmt.Sprintf("bad frame magic byte 0x%02x", hdr[0])
		} else if n := int64(binary.LittleEndian.Uint32(hdr[1:5])); n > seg.size-off-frameHeaderLen {
			why = fmt.Sprintf("frame of %d bytes runs past the end of the file", n)
		} else {
			if int64(cap(payload)) < n {
				payload = make([]byte, n)
			}
			payload = payload[:n]
			if _, err := io.ReadFull(r, payload); err != nil {
				return fmt.Errorf("reading state segment %s at offset %d: %w", seg.f.Name(), off, err)
			}
			if checksum(payload) != binary.LittleEndian.Uint32(hdr[5:9]) {
				why = "frame checksum mismatch"
			}
		}
		if why != "" {
			return s.badFrame(seg, off, newest, why)
		}
		base := off + frameHeaderLen
		if base+int64(len(payload)) > math.MaxUint32 {
			return fmt.Errorf("state segment %s: frame at offset %d ends beyond 4 GiB", seg.f.Name(), off)
		}
		err := decodeRecords(payload, func(op byte, bucket, key, value []byte, at int) error {
			return s.applyReplayed(seg, op, bucket, key, value, uint32(base)+uint32(at))
		})
		if err != nil {
			return fmt.Errorf("state segment %s is corrupt at offset %d: %w", seg.f.Name(), off, err)
		}
		off = base + int64(len(payload))
	}
	return nil
}

// badFrame handles a frame at off that does not read back: a torn tail of
// the newest segment is truncated away; anything else fails the open.
func (s *LogStore) badFrame(seg *segment, off int64, newest bool, why string) error {
	corrupt := fmt.Errorf("state segment %s is corrupt at offset %d: %s", seg.f.Name(), off, why)
	if !newest {
		return corrupt
	}
	// Only the last frame can be torn: every earlier one was synced before
	// the next was written. A whole frame after the bad one means the bad
	// one is damage to acknowledged data, not a torn write.
	tail := make([]byte, seg.size-off)
	if _, err := seg.f.ReadAt(tail, off); err != nil {
		return fmt.Errorf("reading state segment %s at offset %d: %w", seg.f.Name(), off, err)
	}
	if at := findFrame(tail[1:]); at >= 0 {
		return fmt.Errorf("%w (a whole frame follows at offset %d)", corrupt, off+1+int64(at))
	}
	if err := seg.f.Truncate(off); err != nil {
		return fmt.Errorf("cutting the torn tail off state segment %s: %w", seg.f.Name(), err)
	}
	if err := s.opts.sync(seg.f); err != nil {
		return fmt.Errorf("cutting the torn tail off state segment %s: %w", seg.f.Name(), err)
	}
	s.total -= seg.size - off
	seg.size = off
	return nil
}

// findFrame returns the position of the first whole, checksummed frame in
// b, or -1.
func findFrame(b []byte) int {
	for i := 0; i+frameHeaderLen <= len(b); i++ {
		if b[i] != frameMagic {
			continue
		}
		n := int(binary.LittleEndian.Uint32(b[i+1 : i+5]))
		if n > len(b)-i-frameHeaderLen {
			continue
		}
		if checksum(b[i+frameHeaderLen:i+frameHeaderLen+n]) == binary.LittleEndian.Uint32(b[i+5:i+9]) {
			return i
		}
	}
	return -1
}

// applyReplayed applies one record read back at open; at is the offset of
// its value's length prefix in seg.
func (s *LogStore) applyReplayed(seg *segment, op byte, bucket, key, value []byte, at uint32) error {
	b := s.buckets[string(bucket)]
	if b == nil {
		if op == opDelete {
			return nil
		}
		if err := checkLogBucket(string(bucket)); err != nil {
			return err
		}
		b = s.newBucket(string(bucket))
	}
	var old item
	var had bool
	if op == opPut {
		old, had = b.tree.ReplaceOrInsert(newItem(string(key), pack(seg.slot, at, len(value))))
		size := putSize(len(b.name), len(key), len(value))
		seg.live += size
		s.live += size
	} else {
		old, had = b.tree.Delete(newItem(string(key), 0))
	}
	if had {
		s.dead(b, old, nil, 0)
	}
	return nil
}

func (s *LogStore) newBucket(name string) *logBucket {
	b := &logBucket{name: name, tree: btree.NewG(btreeDegree, itemLess)}
	s.buckets[name] = b
	return b
}

// dead accounts for the record of it no longer being live. pending and
// base are the frame being committed, where it may be.
func (s *LogStore) dead(b *logBucket, it item, pending []byte, base int64) {
	seg := s.slots[it.slot()]
	n := it.len16()
	if n == lenEscape {
		n = s.longLen(seg, it, pending, base)
	}
	size := putSize(len(b.name), len(it.key), n)
	seg.live -= size
	s.live -= size
}

// longLen reads the length of a value too long for item.loc from its
// record's prefix. It only feeds the live-bytes estimate that triggers
// compaction, so a read error costs accuracy, not correctness.
func (s *LogStore) longLen(seg *segment, it item, pending []byte, base int64) int {
	var p [binary.MaxVarintLen32]byte
	off := int64(it.off())
	if pending != nil && seg == s.active && off >= base {
		copy(p[:], pending[off-base:])
	} else if _, err := seg.f.ReadAt(p[:], off); err != nil {
		return lenEscape
	}
	l, _ := binary.Uvarint(p[:])
	return int(l)
}

func uvarintLen(n int) int {
	l := 1
	for n >= 0x80 {
		n >>= 7
		l++
	}
	return l
}

// putSize is the encoded size of a put record: what its going dead frees.
func putSize(bucketLen, keyLen, valueLen int) int64 {
	return int64(1 + uvarintLen(bucketLen) + bucketLen + uvarintLen(keyLen) + keyLen + uvarintLen(valueLen) + valueLen)
}

func appendField[S string | []byte](buf []byte, f S) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(f)))
	return append(buf, f...)
}

// appendPut appends a put record and returns where its value's length
// prefix is.
func appendPut[S string | []byte](buf []byte, bucket string, key S, value []byte) ([]byte, int) {
	buf = append(buf, opPut)
	buf = appendField(buf, bucket)
	buf = appendField(buf, key)
	at := len(buf)
	return appendField(buf, value), at
}

func appendDelete[S string | []byte](buf []byte, bucket string, key S) []byte {
	buf = append(buf, opDelete)
	buf = appendField(buf, bucket)
	return appendField(buf, key)
}

func readField(p []byte, i int) ([]byte, int, error) {
	l, n := binary.Uvarint(p[i:])
	if n <= 0 || l > uint64(len(p)-i-n) {
		return nil, 0, fmt.Errorf("bad field length at payload byte %d", i)
	}
	return p[i+n : i+n+int(l)], i + n + int(l), nil
}

// decodeRecords calls fn for each record of a frame payload, with the
// position in the payload of a put's value length prefix.
func decodeRecords(p []byte, fn func(op byte, bucket, key, value []byte, at int) error) error {
	for i := 0; i < len(p); {
		op := p[i]
		if op != opPut && op != opDelete {
			return fmt.Errorf("unknown record type %d at payload byte %d", op, i)
		}
		bucket, j, err := readField(p, i+1)
		if err != nil {
			return err
		}
		key, j, err := readField(p, j)
		if err != nil {
			return err
		}
		if len(bucket) == 0 || len(key) == 0 {
			return fmt.Errorf("empty bucket or key at payload byte %d", i)
		}
		var value []byte
		at := j
		if op == opPut {
			if value, j, err = readField(p, j); err != nil {
				return err
			}
		}
		if err := fn(op, bucket, key, value, at); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// migrate copies the bbolt store at boltPath into this (empty) log store,
// then stamps FORMAT and renames the bbolt file away. FORMAT is written
// last: until then the directory is still a bbolt store, and a migration
// a crash interrupted starts over.
func (s *LogStore) migrate(boltPath string) error {
	ids, err := listSegments(s.dir)
	if err != nil {
		return err
	}
	for _, id := range ids { // left by an interrupted migration
		if err := os.Remove(filepath.Join(s.dir, segmentName(id))); err != nil {
			return fmt.Errorf("migrating state: %w", err)
		}
	}
	if err := s.load(); err != nil {
		return err
	}
	db, err := bolt.Open(boltPath, 0o600, &bolt.Options{ReadOnly: true, Timeout: 200 * time.Millisecond})
	if errors.Is(err, bolterr.ErrTimeout) {
		return fmt.Errorf("state dir %s is locked by another process (is another odsflow running with the same state_dir?)", s.dir)
	}
	if err != nil {
		return fmt.Errorf("opening state %s to migrate it: %w", boltPath, err)
	}
	err = db.View(func(btx *bolt.Tx) error {
		if err := checkMigratable(btx, s.dir); err != nil {
			return err
		}
		type kv struct {
			bucket string
			k, v   []byte
		}
		var batch []kv
		flush := func() error {
			err := s.Update(context.Background(), func(tx Tx) error {
				for _, e := range batch {
					if err := tx.Put(e.bucket, e.k, e.v); err != nil {
						return err
					}
				}
				return nil
			})
			batch = batch[:0]
			return err
		}
		err := btx.ForEach(func(name []byte, b *bolt.Bucket) error {
			bucket := string(name)
			if bucket == metaBucket {
				return nil
			}
			if err := checkLogBucket(bucket); err != nil {
				return err
			}
			c := b.Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				if v == nil && b.Bucket(k) != nil {
					return fmt.Errorf("bucket %s holds a nested bucket %q", bucket, k)
				}
				// k and v stay valid for the whole read transaction.
				batch = append(batch, kv{bucket, k, v})
				if len(batch) >= migrateBatch {
					if err := flush(); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err == nil && len(batch) > 0 {
			err = flush()
		}
		return err
	})
	if cerr := db.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("migrating state %s to a log store: %w", boltPath, err)
	}
	for _, b := range s.buckets { // bbolt gave the keys in order
		b.tree = refill(b.tree)
	}
	if err := writeLogFormat(s.dir); err != nil {
		return err
	}
	return renameMigrated(s.dir)
}

// checkMigratable accepts the bbolt formats whose values this build reads.
func checkMigratable(btx *bolt.Tx, dir string) error {
	meta := btx.Bucket([]byte(metaBucket))
	if meta == nil {
		hasData := false
		_ = btx.ForEach(func([]byte, *bolt.Bucket) error { hasData = true; return nil })
		if hasData {
			return fmt.Errorf("state dir %s holds data without a format stamp: not an odsflow state store", dir)
		}
		return nil
	}
	got := string(meta.Get([]byte(formatKey)))
	if got != strconv.Itoa(upgradableFormat) && got != strconv.Itoa(FormatVersion) {
		return fmt.Errorf("state dir %s has on-disk format %q; this odsflow migrates formats %d and %d (rebuild the state by replaying the topics into a new state_dir)", dir, got, upgradableFormat, FormatVersion)
	}
	return nil
}

// renameMigrated moves the bbolt file aside, kept for a rollback to a
// build that reads it.
func renameMigrated(dir string) error {
	from := filepath.Join(dir, fileName)
	if err := os.Rename(from, from+migratedSuffix); err != nil {
		return fmt.Errorf("migrating state: %w", err)
	}
	return syncDir(dir)
}

// checkLogBucket is checkBucket plus what the log's encoding needs.
func checkLogBucket(name string) error {
	if err := checkBucket(name); err != nil {
		return err
	}
	if strings.IndexByte(name, 0) >= 0 {
		return fmt.Errorf("statestore: bucket name %q contains NUL", name)
	}
	return nil
}

func (s *LogStore) usable() error {
	if s.closed {
		return fmt.Errorf("state store %s is closed", s.dir)
	}
	if s.broken != nil {
		return fmt.Errorf("state store %s is broken, restart to recover: %w", s.dir, s.broken)
	}
	return nil
}

// Update implements Store. It holds the store's write lock. Each write is
// encoded at once into the frame the commit will append, and the index
// item is pointed at where that record will be in the file, so fn reads
// its own writes (Scans included) and the commit has no index work left;
// an undo list puts the index back if fn or the commit fails, or fn
// panics.
func (s *LogStore) Update(ctx context.Context, fn func(Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	tx := &logTx{s: s, writable: true}
	committed := false
	defer func() {
		tx.done = true
		if !committed {
			tx.rollback()
		}
		if tx.buf != nil && cap(tx.buf) <= keepBuffer {
			s.buf = tx.buf[:0]
		}
	}()
	if err := fn(tx); err != nil {
		return err
	}
	if err := s.commit(tx); err != nil {
		return err
	}
	committed = true
	return nil
}

// View implements Store. Views share a read lock: they run concurrently
// with each other and see no Update in progress.
func (s *LogStore) View(ctx context.Context, fn func(Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.usable(); err != nil {
		return err
	}
	tx := &logTx{s: s}
	defer func() { tx.done = true }()
	return fn(tx)
}

// commit appends tx's frame, with a step of compaction, and syncs it. On
// error the segment is cut back to where it was (Update then rolls the
// index back).
func (s *LogStore) commit(tx *logTx) error {
	if len(tx.buf) <= frameHeaderLen {
		return nil // nothing written (e.g. only deletes of absent keys)
	}
	buf, base, seg := tx.buf, tx.base, s.active
	relocs := s.relocs[:0]
	defer func() {
		clear(relocs)
		s.relocs = relocs[:0]
		tx.buf = buf
	}()
	var plan *compactPlan
	if s.total > 2*s.live && s.total > s.opts.segmentSize {
		budget := max(2*int64(len(buf)-frameHeaderLen), s.opts.minCompact)
		b, r, p, err := s.compactStep(buf, base, relocs, budget)
		if err != nil {
			return err
		}
		buf, relocs, plan = b, r, p
	}
	payload := buf[frameHeaderLen:]
	buf[0] = frameMagic
	binary.LittleEndian.PutUint32(buf[1:5], uint32(len(payload)))
	binary.LittleEndian.PutUint32(buf[5:9], checksum(payload))
	if _, err := seg.f.WriteAt(buf, base); err != nil {
		return s.undoAppend(seg, base, fmt.Errorf("appending to state segment %s: %w", seg.f.Name(), err))
	}
	if err := s.opts.sync(seg.f); err != nil {
		return s.undoAppend(seg, base, fmt.Errorf("syncing state segment %s: %w", seg.f.Name(), err))
	}

	// Durable. The index already points at tx's records: account for
	// them, and point it at the copies compaction made.
	for _, u := range tx.undo {
		if u.had {
			s.dead(u.b, u.old, buf, base)
		}
	}
	seg.live += tx.putBytes
	s.live += tx.putBytes
	seg.size += int64(len(buf))
	s.total += int64(len(buf))
	for _, r := range relocs {
		r.b.tree.ReplaceOrInsert(newItem(r.key, pack(seg.slot, uint32(base)+uint32(r.at), r.valueLen)))
		size := putSize(len(r.b.name), len(r.key), r.valueLen)
		r.from.live -= size
		seg.live += size
	}
	if plan != nil {
		plan.seg.cursor = plan.cursor
		if plan.cursor >= plan.seg.size {
			plan.seg.drained = true
			// A failure leaves the file for a later commit to remove: this
			// commit is durable and must report success.
			_ = s.removeSegment(plan.seg)
		}
	}
	return nil
}

// undoAppend cuts a frame whose write or sync failed off the segment, so
// that neither the next frame nor a reopen sees it. When that fails too,
// the disk may hold a transaction Update reported as failed: the store
// refuses further use rather than build on it.
func (s *LogStore) undoAppend(seg *segment, size int64, cause error) error {
	err := seg.f.Truncate(size)
	if err == nil {
		err = s.opts.sync(seg.f)
	}
	if err != nil {
		s.broken = fmt.Errorf("%w; undoing it: %w", cause, err)
		return s.broken
	}
	return cause
}

type compactPlan struct {
	seg    *segment
	cursor int64
}

// compactStep appends to buf (the frame to be written at base) the live
// records of the oldest sealed segment from its cursor on, whole frames
// at a time, until budget bytes of records are copied (or 4×budget bytes
// of frames read, so that a mostly dead segment is not read whole in one
// commit). Delete records are dropped: no older segment is left whose
// puts they would have to hide.
func (s *LogStore) compactStep(buf []byte, base int64, relocs []reloc, budget int64) ([]byte, []reloc, *compactPlan, error) {
	if len(s.order) < 2 {
		return buf, relocs, nil, nil
	}
	seg := s.order[0]
	if seg.drained {
		// A removal that failed after an earlier commit. The next segment's
		// delete records may be dropped only once this file is gone.
		if err := s.removeSegment(seg); err != nil || len(s.order) < 2 {
			return buf, relocs, nil, nil
		}
		seg = s.order[0]
	}
	if seg.live == 0 { // nothing to copy: no need to read it
		return buf, relocs, &compactPlan{seg: seg, cursor: seg.size}, nil
	}
	off := seg.cursor
	var copied, read int64
	var hdr [frameHeaderLen]byte
	for off < seg.size && copied < budget && read < 4*budget {
		corrupt := func(why string) error {
			return fmt.Errorf("compacting: state segment %s is corrupt at offset %d: %s", seg.f.Name(), off, why)
		}
		if _, err := seg.f.ReadAt(hdr[:], off); err != nil {
			return nil, nil, nil, fmt.Errorf("compacting state segment %s: %w", seg.f.Name(), err)
		}
		n := int64(binary.LittleEndian.Uint32(hdr[1:5]))
		if hdr[0] != frameMagic || n > seg.size-off-frameHeaderLen {
			return nil, nil, nil, corrupt("bad frame header")
		}
		if base+int64(len(buf))+n > math.MaxUint32 {
			break // the copies would not fit the offsets of this frame
		}
		if int64(cap(s.scratch)) < n {
			s.scratch = make([]byte, n)
		}
		p := s.scratch[:n]
		if _, err := seg.f.ReadAt(p, off+frameHeaderLen); err != nil {
			return nil, nil, nil, fmt.Errorf("compacting state segment %s: %w", seg.f.Name(), err)
		}
		if checksum(p) != binary.LittleEndian.Uint32(hdr[5:9]) {
			return nil, nil, nil, corrupt("frame checksum mismatch")
		}
		frameBase := uint32(off + frameHeaderLen)
		err := decodeRecords(p, func(op byte, bucket, key, value []byte, at int) error {
			if op != opPut {
				return nil
			}
			b := s.buckets[string(bucket)]
			if b == nil {
				return nil
			}
			it, ok := b.tree.Get(newItem(string(key), 0))
			if !ok || it.loc != pack(seg.slot, frameBase+uint32(at), len(value)) {
				return nil // overwritten or deleted since
			}
			var vat int
			buf, vat = appendPut(buf, b.name, it.key, value)
			relocs = append(relocs, reloc{b: b, key: it.key, at: vat, valueLen: len(value), from: seg})
			copied += putSize(len(b.name), len(it.key), len(value))
			return nil
		})
		if err != nil {
			return nil, nil, nil, corrupt(err.Error())
		}
		off += frameHeaderLen + n
		read += frameHeaderLen + n
	}
	if cap(s.scratch) > keepBuffer {
		s.scratch = nil
	}
	return buf, relocs, &compactPlan{seg: seg, cursor: off}, nil
}

// removeSegment deletes a drained segment. The directory is synced before
// the segment leaves the order, so that the next segment's delete records
// are dropped only once this one's puts cannot come back.
func (s *LogStore) removeSegment(seg *segment) error {
	if err := os.Remove(seg.f.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing state segment: %w", err)
	}
	if err := syncDir(s.dir); err != nil {
		return err
	}
	_ = seg.f.Close() // read-only by now: nothing to lose
	s.slots[seg.slot] = nil
	s.order = slices.DeleteFunc(s.order, func(o *segment) bool { return o == seg })
	s.total -= seg.size
	s.live -= seg.live // 0 once drained
	return nil
}

// SizeOnDisk is the size of the store's segment files in bytes.
func (s *LogStore) SizeOnDisk() (int64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, fmt.Errorf("state size: store %s is closed", s.dir)
	}
	return s.total, nil
}

// Close implements Store: it closes the segments and releases the lock.
// Closing a closed store does nothing.
func (s *LogStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if err := s.closeFiles(); err != nil {
		return fmt.Errorf("closing state %s: %w", s.dir, err)
	}
	return nil
}

func (s *LogStore) closeFiles() error {
	var errs []error
	for _, seg := range s.order {
		errs = append(errs, seg.f.Close())
	}
	s.order, s.slots, s.active = nil, nil, nil
	s.buckets = map[string]*logBucket{}
	if s.lock != nil {
		errs = append(errs, s.lock.Close()) // releases the flock
		s.lock = nil
	}
	return errors.Join(errs...)
}

// logTx is a LogStore transaction.
type logTx struct {
	s        *LogStore
	writable bool
	done     bool
	// buf is the frame the commit appends: header room, then the records
	// written so far; nil until the first write. It goes at offset base of
	// the active segment, so an item of the active segment at or past base
	// is in buf.
	buf      []byte
	base     int64
	undo     []undo
	putBytes int64 // size of the put records in buf
}

// undo is one index change of a tx, to be reverted in reverse order.
type undo struct {
	b   *logBucket
	key string
	old item
	had bool
}

func (t *logTx) bucket(name string) (*logBucket, error) {
	if t.done {
		return nil, errors.New("statestore: transaction used after it ended")
	}
	if err := checkLogBucket(name); err != nil {
		return nil, err
	}
	return t.s.buckets[name], nil
}

// begin readies the frame at the first write, first starting a new
// segment if the active one is full.
func (t *logTx) begin() error {
	if t.buf != nil {
		return nil
	}
	if t.s.active.size >= t.s.opts.segmentSize {
		if err := t.s.roll(); err != nil {
			return err
		}
	}
	t.base = t.s.active.size
	t.buf = append(t.s.buf[:0], make([]byte, frameHeaderLen)...)
	return nil
}

// fits tells whether the frame still fits the 32-bit offsets of item.loc.
func (t *logTx) fits() bool { return t.base+int64(len(t.buf)) <= math.MaxUint32 }

// rollback puts back the index as it was before the tx.
func (t *logTx) rollback() {
	for _, u := range slices.Backward(t.undo) {
		if u.had {
			u.b.tree.ReplaceOrInsert(u.old)
		} else {
			u.b.tree.Delete(newItem(u.key, 0))
		}
		u.b.mods++
	}
}

// value returns the value of it: from the tx's frame when the tx wrote
// it, else from its segment.
func (t *logTx) value(b *logBucket, it item) ([]byte, error) {
	off := int64(it.off())
	if t.buf != nil && it.slot() == t.s.active.slot && off >= t.base {
		p := off - t.base
		l, n := binary.Uvarint(t.buf[p:])
		start, end := p+int64(n), p+int64(n)+int64(l)
		return t.buf[start:end:end], nil // capped: an append must not write into the frame
	}
	seg := t.s.slots[it.slot()]
	l := it.len16()
	if l == lenEscape {
		var p [binary.MaxVarintLen32]byte
		if _, err := seg.f.ReadAt(p[:], off); err != nil {
			return nil, fmt.Errorf("reading %s/%q from state segment %s: %w", b.name, it.key, seg.f.Name(), err)
		}
		v, n := binary.Uvarint(p[:])
		l, off = int(v), off+int64(n)
	} else {
		off += int64(uvarintLen(l))
	}
	if l == 0 {
		return []byte{}, nil
	}
	v := make([]byte, l)
	if _, err := seg.f.ReadAt(v, off); err != nil {
		return nil, fmt.Errorf("reading %s/%q from state segment %s: %w", b.name, it.key, seg.f.Name(), err)
	}
	return v, nil
}

func (t *logTx) Get(bucket string, key []byte) ([]byte, error) {
	b, err := t.bucket(bucket)
	if err != nil || b == nil {
		return nil, err
	}
	it, ok := b.tree.Get(newItem(string(key), 0))
	if !ok {
		return nil, nil
	}
	return t.value(b, it)
}

func (t *logTx) Put(bucket string, key, value []byte) error {
	if !t.writable {
		return ErrReadOnly
	}
	b, err := t.bucket(bucket)
	if err != nil {
		return err
	}
	switch {
	case len(key) == 0:
		return fmt.Errorf("put %s: key required", bucket)
	case len(key) > maxKeySize:
		return fmt.Errorf("put %s: key of %d bytes is too large", bucket, len(key))
	case len(value) > maxValueSize:
		return fmt.Errorf("put %s/%q: value of %d bytes is too large", bucket, key, len(value))
	}
	if err := t.begin(); err != nil {
		return err
	}
	if b == nil {
		b = t.s.newBucket(bucket)
	}
	start := len(t.buf)
	var at int
	t.buf, at = appendPut(t.buf, bucket, key, value)
	if !t.fits() {
		t.buf = t.buf[:start]
		return fmt.Errorf("put %s/%q: transaction too large", bucket, key)
	}
	it := newItem(string(key), pack(t.s.active.slot, uint32(t.base)+uint32(at), len(value)))
	old, had := b.tree.ReplaceOrInsert(it)
	t.undo = append(t.undo, undo{b: b, key: it.key, old: old, had: had})
	t.putBytes += putSize(len(bucket), len(key), len(value))
	b.mods++
	return nil
}

func (t *logTx) Delete(bucket string, key []byte) error {
	if !t.writable {
		return ErrReadOnly
	}
	b, err := t.bucket(bucket)
	if err != nil || b == nil || len(key) == 0 {
		return err
	}
	old, had := b.tree.Delete(newItem(string(key), 0))
	if !had {
		return nil
	}
	if err := t.begin(); err != nil {
		b.tree.ReplaceOrInsert(old)
		return err
	}
	start := len(t.buf)
	if t.buf = appendDelete(t.buf, bucket, key); !t.fits() {
		t.buf = t.buf[:start]
		b.tree.ReplaceOrInsert(old)
		return fmt.Errorf("delete %s/%q: transaction too large", bucket, key)
	}
	t.undo = append(t.undo, undo{b: b, key: old.key, old: old, had: true})
	b.mods++
	return nil
}

func (t *logTx) Scan(bucket string, prefix []byte, fn func(key, value []byte) error) error {
	return t.scan(bucket, prefix, true, fn)
}

func (t *logTx) ScanFrom(bucket string, from []byte, fn func(key, value []byte) error) error {
	return t.scan(bucket, from, false, fn)
}

// scan walks the keys ≥ from (that start with from, if isPrefix) a chunk
// at a time: items are copied out of the tree and fn runs after the tree
// walk, so that fn may write to the store (the tree must not change under
// an iteration).
func (t *logTx) scan(bucket string, from []byte, isPrefix bool, fn func(key, value []byte) error) error {
	b, err := t.bucket(bucket)
	if err != nil || b == nil {
		return err
	}
	pivot, prefix := string(from), string(from)
	after := false // the pivot itself was visited in the previous chunk
	chunk := make([]item, 0, scanChunk)
	for {
		chunk = chunk[:0]
		b.tree.AscendGreaterOrEqual(newItem(pivot, 0), func(it item) bool {
			if after && it.key == pivot {
				return true
			}
			if isPrefix && !strings.HasPrefix(it.key, prefix) {
				return false
			}
			chunk = append(chunk, it)
			return len(chunk) < scanChunk
		})
		mods := b.mods
		for _, it := range chunk {
			if b.mods != mods { // fn changed this bucket: re-read the item
				cur, ok := b.tree.Get(newItem(it.key, 0))
				if !ok {
					continue
				}
				it = cur
			}
			v, err := t.value(b, it)
			if err != nil {
				return err
			}
			if err := fn([]byte(it.key), v); err != nil {
				if errors.Is(err, ErrStop) {
					return nil
				}
				return err
			}
		}
		if len(chunk) < scanChunk {
			return nil
		}
		pivot, after = chunk[len(chunk)-1].key, true
	}
}

func (t *logTx) Count(bucket string) (int, error) {
	b, err := t.bucket(bucket)
	if err != nil || b == nil {
		return 0, err
	}
	return b.tree.Len(), nil
}

// Buckets returns the buckets that hold at least one key: unlike bbolt's,
// a log store has no empty buckets.
func (t *logTx) Buckets() ([]string, error) {
	if t.done {
		return nil, errors.New("statestore: transaction used after it ended")
	}
	var names []string
	for name, b := range t.s.buckets {
		if b.tree.Len() > 0 {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names, nil
}
