// Command storecmp compares bbolt and pebble as cdc_join's state store, on
// the join's workload at issue 5's size (400k customers, 1M accounts, the
// customer → accounts index): bulk load, random-key upserts of ~200-byte
// row states in synced batches of 1,250 writes, point reads, prefix scans
// of the index, batches shaped like the join's (reads, then writes, one
// fsync), open time of the full store, on-disk size and RSS.
//
// It is a module of its own so that pebble stays out of odsflow's build:
//
//	cd bench/storecmp && go run . -store both
//
// Each store runs in its own process (RSS is per process) in a fresh
// directory under -dir, one after the other.
package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type config struct {
	Store      string
	Dir        string
	Customers  int
	Accounts   int
	ValueSize  int
	LoadBatch  int
	Batch      int
	Batches    int
	JoinBatch  int
	JoinN      int
	Reads      int
	Scans      int
	PebbleMB   int
	Compress   bool
	KeepDir    bool
	resultLine bool
}

// result is one store's numbers.
type result struct {
	Store             string
	LoadSecs          float64
	LoadKeysPerSec    float64
	UpsertsPerSec     float64
	UpsertBatchP50ms  float64
	UpsertBatchP99ms  float64
	UpsertCPUPerWall  float64
	ReadsPerSec       float64
	ScansPerSec       float64
	JoinEventsPerSec  float64
	JoinBatchP50ms    float64
	JoinBatchP99ms    float64
	JoinCPUPerWall    float64
	OpenMs            float64
	DiskMB            float64
	DiskFiles         int
	RSSLoadMB         float64
	RSSMB             float64
	RSSAnonMB         float64
	RSSFileMB         float64
	HeapMB            float64
	SecondOpenLocked  bool
	MeanValueBytes    float64
	KeysAfterLoad     int
	IndexEntriesFound int
}

func main() {
	var c config
	flag.StringVar(&c.Store, "store", "both", "bbolt, pebble, or both (each in its own process)")
	flag.StringVar(&c.Dir, "dir", os.TempDir(), "directory for the stores (a fresh subdirectory per store)")
	flag.IntVar(&c.Customers, "customers", 400_000, "parent rows (customers)")
	flag.IntVar(&c.Accounts, "accounts", 1_000_000, "child rows (accounts); each also has an index entry")
	flag.IntVar(&c.ValueSize, "value", 200, "bytes per row state")
	flag.IntVar(&c.LoadBatch, "load-batch", 10_000, "writes per transaction while loading")
	flag.IntVar(&c.Batch, "batch", 1_250, "writes per synced batch in the upsert phase")
	flag.IntVar(&c.Batches, "batches", 400, "batches in the upsert phase")
	flag.IntVar(&c.JoinBatch, "join-batch", 500, "events per batch in the join-shaped phase")
	flag.IntVar(&c.JoinN, "join-batches", 400, "batches in the join-shaped phase")
	flag.IntVar(&c.Reads, "reads", 500_000, "random point reads")
	flag.IntVar(&c.Scans, "scans", 200_000, "random prefix scans of the index")
	flag.IntVar(&c.PebbleMB, "pebble-cache", 64, "pebble block cache, MB (plus its two memtables of 16 MB)")
	flag.BoolVar(&c.Compress, "pebble-compress", true, "pebble: compress blocks (its default, snappy)")
	flag.BoolVar(&c.KeepDir, "keep", false, "keep the store directories")
	flag.BoolVar(&c.resultLine, "result-line", false, "print the result as one JSON line (used by -store both)")
	flag.Parse()

	switch c.Store {
	case "both":
		if err := both(c); err != nil {
			fmt.Fprintln(os.Stderr, "storecmp:", err)
			os.Exit(1)
		}
	case "bbolt", "pebble":
		r, err := run(c)
		if err != nil {
			fmt.Fprintln(os.Stderr, "storecmp:", err)
			os.Exit(1)
		}
		if c.resultLine {
			js, _ := json.Marshal(r)
			fmt.Println("RESULT " + string(js))
		} else {
			printTable(os.Stdout, c, []result{r})
		}
	default:
		fmt.Fprintf(os.Stderr, "storecmp: -store %q: want bbolt, pebble or both\n", c.Store)
		os.Exit(2)
	}
}

// both runs each store in a child process and prints the two side by side.
func both(c config) error {
	var results []result
	for _, store := range []string{"bbolt", "pebble"} {
		args := []string{"-result-line", "-store", store}
		flag.Visit(func(f *flag.Flag) {
			if f.Name != "store" && f.Name != "result-line" {
				args = append(args, "-"+f.Name+"="+f.Value.String())
			}
		})
		cmd := exec.Command(os.Args[0], args...)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		if err := cmd.Start(); err != nil {
			return err
		}
		var r *result
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			if js, ok := strings.CutPrefix(line, "RESULT "); ok {
				r = new(result)
				if err := json.Unmarshal([]byte(js), r); err != nil {
					return err
				}
				continue
			}
			fmt.Println(line)
		}
		if err := cmd.Wait(); err != nil {
			return fmt.Errorf("%s: %w", store, err)
		}
		if r == nil {
			return fmt.Errorf("%s: no result", store)
		}
		results = append(results, *r)
	}
	printTable(os.Stdout, c, results)
	return nil
}

func open(c config, dir string) (kv, error) {
	if c.Store == "pebble" {
		return openPebble(dir, c.PebbleMB, c.Compress)
	}
	return openBolt(dir)
}

const (
	bCustomers = "row.customers"
	bAccounts  = "row.accounts"
	bIndex     = "idx.customer_account"
)

func key(id int) []byte { return strconv.AppendInt(nil, int64(id), 10) }

func idxKey(cust, acct int) []byte {
	k := strconv.AppendInt(nil, int64(cust), 10)
	k = append(k, 0)
	return strconv.AppendInt(k, int64(acct), 10)
}

// rowValue is shaped like cdc_join's binary row state: field names, digits,
// a timestamp, so that it compresses about as well as the real thing.
func rowValue(r *rand.Rand, id, size int) []byte {
	b := make([]byte, 0, size+32)
	b = append(b, 0x02)
	b = binary.AppendUvarint(b, uint64(1_000_000+r.IntN(1<<30)))
	b = append(b, "\x00\x01\x10customer_account\x06"...)
	b = strconv.AppendInt(b, int64(r.IntN(400_000)), 10)
	b = append(b, "\x01\x10customer_account\x1c{\"account_number\":\""...)
	b = strconv.AppendInt(b, int64(10_000_000+id), 10)
	b = append(b, "\"}\x05\x07\x02id\x04\x06"...)
	b = strconv.AppendInt(b, int64(id), 10)
	b = append(b, "\x0eaccount_status\x03\x06active\x0faccount_balance\x04"...)
	b = strconv.AppendInt(b, int64(r.IntN(10_000_000)), 10)
	b = append(b, ".00\x0aupdated_at\x03\x1b2026-01-15T09:"...)
	b = strconv.AppendInt(b, int64(10+r.IntN(50)), 10)
	b = append(b, ":"...)
	b = strconv.AppendInt(b, int64(10_000_000+r.IntN(50_000_000)), 10)
	b = append(b, "Z\x0acreated_at\x03\x1b2025-03-01T10:00:00.000000Z"...)
	for len(b) < size {
		b = append(b, "\x05notes\x03"...)
		b = strconv.AppendInt(b, int64(r.IntN(1_000_000)), 10)
	}
	return b[:size]
}

func run(c config) (result, error) {
	res := result{Store: c.Store}
	dir, err := os.MkdirTemp(c.Dir, "storecmp-"+c.Store+"-")
	if err != nil {
		return res, err
	}
	if !c.KeepDir {
		defer os.RemoveAll(dir)
	}
	s, err := open(c, dir)
	if err != nil {
		return res, err
	}
	rng := rand.New(rand.NewPCG(1, 2))
	acctCust := make([]int, c.Accounts+1)

	// Load: customers, then accounts with their index entries, as the
	// join's snapshot does, in big transactions.
	start := time.Now()
	var valueBytes, values int
	pending := 0
	var ops []func(tx) error
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		err := s.Update(func(t tx) error {
			for _, op := range ops {
				if err := op(t); err != nil {
					return err
				}
			}
			return nil
		})
		ops, pending = ops[:0], 0
		return err
	}
	put := func(bucket string, k, v []byte) error {
		ops = append(ops, func(t tx) error { return t.Put(bucket, k, v) })
		if pending++; pending >= c.LoadBatch {
			return flush()
		}
		return nil
	}
	for id := 1; id <= c.Customers; id++ {
		v := rowValue(rng, id, c.ValueSize)
		valueBytes += len(v)
		values++
		if err := put(bCustomers, key(id), v); err != nil {
			return res, err
		}
	}
	for id := 1; id <= c.Accounts; id++ {
		cust := 1 + (id-1)%c.Customers
		acctCust[id] = cust
		v := rowValue(rng, id, c.ValueSize)
		valueBytes += len(v)
		values++
		if err := put(bAccounts, key(id), v); err != nil {
			return res, err
		}
		if err := put(bIndex, idxKey(cust, id), []byte{}); err != nil {
			return res, err
		}
	}
	if err := flush(); err != nil {
		return res, err
	}
	res.LoadSecs = time.Since(start).Seconds()
	res.KeysAfterLoad = c.Customers + 2*c.Accounts
	res.LoadKeysPerSec = float64(res.KeysAfterLoad) / res.LoadSecs
	res.MeanValueBytes = float64(valueBytes) / float64(values)
	res.RSSLoadMB, _, _ = rss()
	fmt.Printf("%s: loaded %d keys in %.1fs (%.0f keys/s)\n", c.Store, res.KeysAfterLoad, res.LoadSecs, res.LoadKeysPerSec)

	// Upserts: random existing rows, 80% accounts, synced batches.
	var lat []time.Duration
	cpu0, wall0 := cpuTime(), time.Now()
	for i := 0; i < c.Batches; i++ {
		t0 := time.Now()
		err := s.Update(func(t tx) error {
			for j := 0; j < c.Batch; j++ {
				bucket, id := bAccounts, 1+rng.IntN(c.Accounts)
				if rng.IntN(5) == 0 {
					bucket, id = bCustomers, 1+rng.IntN(c.Customers)
				}
				if err := t.Put(bucket, key(id), rowValue(rng, id, c.ValueSize)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return res, err
		}
		lat = append(lat, time.Since(t0))
	}
	wall := time.Since(wall0)
	res.UpsertsPerSec = float64(c.Batch*c.Batches) / wall.Seconds()
	res.UpsertBatchP50ms, res.UpsertBatchP99ms = pct(lat, 50), pct(lat, 99)
	res.UpsertCPUPerWall = (cpuTime() - cpu0).Seconds() / wall.Seconds()
	fmt.Printf("%s: %d upserts in batches of %d: %.0f/s, batch p50 %.1f ms p99 %.1f ms\n", c.Store, c.Batch*c.Batches, c.Batch, res.UpsertsPerSec, res.UpsertBatchP50ms, res.UpsertBatchP99ms)

	// Point reads.
	start = time.Now()
	for done := 0; done < c.Reads; {
		err := s.View(func(t tx) error {
			for j := 0; j < 1000 && done < c.Reads; j, done = j+1, done+1 {
				v, err := t.Get(bAccounts, key(1+rng.IntN(c.Accounts)))
				if err != nil {
					return err
				}
				if len(v) != c.ValueSize {
					return fmt.Errorf("read %d bytes, want %d", len(v), c.ValueSize)
				}
			}
			return nil
		})
		if err != nil {
			return res, err
		}
	}
	res.ReadsPerSec = float64(c.Reads) / time.Since(start).Seconds()
	fmt.Printf("%s: %d point reads: %.0f/s\n", c.Store, c.Reads, res.ReadsPerSec)

	// Prefix scans of the index: a customer's accounts.
	start = time.Now()
	found := 0
	for done := 0; done < c.Scans; {
		err := s.View(func(t tx) error {
			for j := 0; j < 1000 && done < c.Scans; j, done = j+1, done+1 {
				cust := 1 + rng.IntN(c.Customers)
				prefix := append(key(cust), 0)
				if err := t.Scan(bIndex, prefix, func(_, _ []byte) error { found++; return nil }); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return res, err
		}
	}
	res.ScansPerSec = float64(c.Scans) / time.Since(start).Seconds()
	res.IndexEntriesFound = found
	if want := float64(c.Accounts) / float64(c.Customers); float64(found)/float64(c.Scans) < want*0.9 || float64(found)/float64(c.Scans) > want*1.1 {
		return res, fmt.Errorf("scans found %.2f index entries per customer, want about %.2f", float64(found)/float64(c.Scans), want)
	}
	fmt.Printf("%s: %d prefix scans: %.0f/s (%.2f entries each)\n", c.Store, c.Scans, res.ScansPerSec, float64(found)/float64(c.Scans))

	// Batches shaped like cdc_join's: per event the reads and writes the
	// join makes, all in one transaction, one fsync per batch.
	lat = lat[:0]
	events := 0
	nextAcct := c.Accounts
	cpu0, wall0 = cpuTime(), time.Now()
	for i := 0; i < c.JoinN; i++ {
		t0 := time.Now()
		err := s.Update(func(t tx) error {
			for j := 0; j < c.JoinBatch; j++ {
				if err := joinEvent(t, rng, c, &acctCust, &nextAcct); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return res, err
		}
		events += c.JoinBatch
		lat = append(lat, time.Since(t0))
	}
	wall = time.Since(wall0)
	res.JoinEventsPerSec = float64(events) / wall.Seconds()
	res.JoinBatchP50ms, res.JoinBatchP99ms = pct(lat, 50), pct(lat, 99)
	res.JoinCPUPerWall = (cpuTime() - cpu0).Seconds() / wall.Seconds()
	fmt.Printf("%s: %d join-shaped events in batches of %d: %.0f/s, batch p50 %.1f ms p99 %.1f ms\n", c.Store, events, c.JoinBatch, res.JoinEventsPerSec, res.JoinBatchP50ms, res.JoinBatchP99ms)

	res.RSSMB, res.RSSAnonMB, res.RSSFileMB = rss()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	res.HeapMB = float64(ms.HeapInuse) / (1 << 20)

	// The directory is locked while open.
	if other, err := open(c, dir); err == nil {
		_ = other.Close()
	} else {
		res.SecondOpenLocked = true
	}
	if err := s.Close(); err != nil {
		return res, err
	}
	size, files, err := dirSize(dir)
	if err != nil {
		return res, err
	}
	res.DiskMB, res.DiskFiles = float64(size)/(1<<20), files

	// Open time of the full store, to the first read.
	start = time.Now()
	if s, err = open(c, dir); err != nil {
		return res, err
	}
	err = s.View(func(t tx) error {
		v, err := t.Get(bCustomers, key(1))
		if err == nil && v == nil {
			err = errors.New("customer 1 missing after reopening")
		}
		return err
	})
	res.OpenMs = float64(time.Since(start).Microseconds()) / 1000
	if err != nil {
		return res, err
	}
	return res, s.Close()
}

// joinEvent makes the store operations cdc_join makes for one event of the
// streaming mix (BenchmarkCDCJoin's): 70% account updates (read the
// account and its customer, write the account), 10% customer updates (read
// it, scan its index entries, read each account, write the customer), 15%
// transactions (read the account), 2% account inserts, 1.5% moves (index
// entry moves), 1.5% deletes (tombstone, index entry goes).
func joinEvent(t tx, rng *rand.Rand, c config, acctCust *[]int, nextAcct *int) error {
	ac := *acctCust
	liveAccount := func() int {
		for {
			if a := 1 + rng.IntN(len(ac)-1); ac[a] != 0 {
				return a
			}
		}
	}
	get := func(bucket string, k []byte) error { _, err := t.Get(bucket, k); return err }
	switch p := rng.IntN(1000); {
	case p < 700:
		a := liveAccount()
		if err := get(bAccounts, key(a)); err != nil {
			return err
		}
		if err := get(bCustomers, key(ac[a])); err != nil {
			return err
		}
		return t.Put(bAccounts, key(a), rowValue(rng, a, c.ValueSize))
	case p < 800:
		cust := 1 + rng.IntN(c.Customers)
		if err := get(bCustomers, key(cust)); err != nil {
			return err
		}
		var children [][]byte
		err := t.Scan(bIndex, append(key(cust), 0), func(k, _ []byte) error {
			children = append(children, append([]byte{}, k[len(key(cust))+1:]...))
			return nil
		})
		if err != nil {
			return err
		}
		for _, ch := range children {
			if err := get(bAccounts, ch); err != nil {
				return err
			}
		}
		return t.Put(bCustomers, key(cust), rowValue(rng, cust, c.ValueSize))
	case p < 950:
		return get(bAccounts, key(liveAccount()))
	case p < 970:
		*nextAcct++
		a, cust := *nextAcct, 1+rng.IntN(c.Customers)
		*acctCust = append(ac, cust)
		if err := get(bAccounts, key(a)); err != nil {
			return err
		}
		if err := get(bCustomers, key(cust)); err != nil {
			return err
		}
		if err := t.Put(bAccounts, key(a), rowValue(rng, a, c.ValueSize)); err != nil {
			return err
		}
		return t.Put(bIndex, idxKey(cust, a), []byte{})
	case p < 985:
		a, cust := liveAccount(), 1+rng.IntN(c.Customers)
		if err := get(bAccounts, key(a)); err != nil {
			return err
		}
		if err := get(bCustomers, key(cust)); err != nil {
			return err
		}
		if err := t.Delete(bIndex, idxKey(ac[a], a)); err != nil {
			return err
		}
		ac[a] = cust
		if err := t.Put(bIndex, idxKey(cust, a), []byte{}); err != nil {
			return err
		}
		return t.Put(bAccounts, key(a), rowValue(rng, a, c.ValueSize))
	default:
		a := liveAccount()
		if err := get(bAccounts, key(a)); err != nil {
			return err
		}
		if err := t.Delete(bIndex, idxKey(ac[a], a)); err != nil {
			return err
		}
		ac[a] = 0
		return t.Put(bAccounts, key(a), []byte{0x02, 0x10, 0x01, 0x80, 0x80, 0x80, 0x80, 0x06, 0, 0, 0})
	}
}

func pct(d []time.Duration, p int) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return float64(s[(len(s)-1)*p/100].Microseconds()) / 1000
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rss reads VmRSS, RssAnon and RssFile of this process, in MB.
func rss() (total, anon, file float64) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(fields[1], 64)
		switch fields[0] {
		case "VmRSS:":
			total = kb / 1024
		case "RssAnon:":
			anon = kb / 1024
		case "RssFile:":
			file = kb / 1024
		}
	}
	return total, anon, file
}

func printTable(w *os.File, c config, rs []result) {
	row := func(name, format string, get func(r result) any) {
		fmt.Fprintf(w, "| %s |", name)
		for _, r := range rs {
			fmt.Fprintf(w, " "+format+" |", get(r))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprint(w, "\n| |")
	for _, r := range rs {
		fmt.Fprintf(w, " %s |", r.Store)
	}
	fmt.Fprint(w, "\n|---|")
	for range rs {
		fmt.Fprint(w, "---:|")
	}
	fmt.Fprintln(w)
	row("load (keys/s)", "%.0f", func(r result) any { return r.LoadKeysPerSec })
	row("upserts/s, synced batches of 1,250", "%.0f", func(r result) any { return r.UpsertsPerSec })
	row("upsert batch p50 / p99 (ms)", "%s", func(r result) any { return fmt.Sprintf("%.1f / %.1f", r.UpsertBatchP50ms, r.UpsertBatchP99ms) })
	row("CPU use while upserting (cores)", "%.2f", func(r result) any { return r.UpsertCPUPerWall })
	row("point reads/s", "%.0f", func(r result) any { return r.ReadsPerSec })
	row("index prefix scans/s", "%.0f", func(r result) any { return r.ScansPerSec })
	row("join-shaped events/s (batches of 500)", "%.0f", func(r result) any { return r.JoinEventsPerSec })
	row("join batch p50 / p99 (ms)", "%s", func(r result) any { return fmt.Sprintf("%.1f / %.1f", r.JoinBatchP50ms, r.JoinBatchP99ms) })
	row("CPU use in join batches (cores)", "%.2f", func(r result) any { return r.JoinCPUPerWall })
	row("open, full store, to first read (ms)", "%.1f", func(r result) any { return r.OpenMs })
	row("on disk (MB, files)", "%s", func(r result) any { return fmt.Sprintf("%.0f (%d)", r.DiskMB, r.DiskFiles) })
	row("RSS after load (MB)", "%.0f", func(r result) any { return r.RSSLoadMB })
	row("RSS at end (MB): anon + file", "%s", func(r result) any {
		return fmt.Sprintf("%.0f: %.0f + %.0f", r.RSSMB, r.RSSAnonMB, r.RSSFileMB)
	})
	row("Go heap in use (MB)", "%.0f", func(r result) any { return r.HeapMB })
	row("second open refused (dir locked)", "%v", func(r result) any { return r.SecondOpenLocked })
	fmt.Fprintf(w, "\n%d customers, %d accounts and as many index entries (%d keys), row states of %.0f B\n",
		c.Customers, c.Accounts, rs[0].KeysAfterLoad, rs[0].MeanValueBytes)
}
