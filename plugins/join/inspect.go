package join

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/odsflow/odsflow/internal/statestore"
)

// Inspect writes a report of the cdc_join state in dir: keys per table and
// relation, tombstones, held (waiting) events, and with key the state of
// that key in every table and relation. It opens the store, so it fails
// while a pipeline holds the directory.
func Inspect(ctx context.Context, dir, key string, w io.Writer) error {
	var store interface {
		statestore.Store
		SizeOnDisk() (int64, error)
	}
	format := statestore.LogFormatVersion
	_, logErr := os.Stat(filepath.Join(dir, statestore.LogFormatFile))
	_, boltErr := os.Stat(filepath.Join(dir, statestore.FileName))
	var err error
	switch {
	case logErr == nil:
		store, err = statestore.OpenLog(dir)
	case boltErr == nil: // a state of an earlier odsflow, not migrated yet: read as it is
		format = statestore.FormatVersion
		store, err = statestore.Open(dir)
	default:
		return fmt.Errorf("no cdc_join state in %s: %w", dir, logErr)
	}
	if err != nil {
		return fmt.Errorf("%w (inspect needs the pipeline stopped, or a copy of the directory)", err)
	}
	defer store.Close()
	size, _ := store.SizeOnDisk()
	fmt.Fprintf(w, "state dir %s: format %d, %.1f MB on disk\n\n", dir, format, float64(size)/(1<<20))

	return store.View(ctx, func(tx statestore.Tx) error {
		buckets, err := tx.Buckets()
		if err != nil {
			return err
		}
		sort.Strings(buckets)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "BUCKET\tKEYS\tTOMBSTONES\tWHAT")
		st := &state{tx: tx, now: time.Now()}
		for _, b := range buckets {
			n, err := tx.Count(b)
			if err != nil {
				return err
			}
			switch {
			case strings.HasPrefix(b, "row."):
				t := &table{name: strings.TrimPrefix(b, "row.")}
				dead := 0
				err := tx.Scan(b, nil, func(k, _ []byte) error {
					r, err := st.row(t, string(k))
					if err == nil && r != nil && r.Deleted {
						dead++
					}
					return err
				})
				if err != nil {
					return err
				}
				fmt.Fprintf(tw, "%s\t%d\t%d\tlatest row states of table %s\n", b, n, dead, t.name)
			case strings.HasPrefix(b, "idx."):
				fmt.Fprintf(tw, "%s\t%d\t\tparent→child links of relation %s\n", b, n, strings.TrimPrefix(b, "idx."))
			case strings.HasPrefix(b, "held."):
				fmt.Fprintf(tw, "%s\t%d\t\tevents of relation %s held for their parent\n", b, n, strings.TrimPrefix(b, "held."))
			case strings.HasPrefix(b, "replay."):
				fmt.Fprintf(tw, "%s\t%d\t\trecent outputs of table %s's changes, re-emitted if their batch is delivered again after a crash\n", b, n, strings.TrimPrefix(b, "replay."))
			case strings.HasPrefix(b, "heldkey."):
				fmt.Fprintf(tw, "%s\t%d\t\tthe parent each held event of relation %s waits for\n", b, n, strings.TrimPrefix(b, "heldkey."))
			case strings.HasPrefix(b, "gone."):
				fmt.Fprintf(tw, "%s\t%d\t\tchildren of relation %s deleted (kept for tombstone_retention)\n", b, n, strings.TrimPrefix(b, "gone."))
			case b == progressBucket:
				err := tx.Scan(b, nil, func(k, v []byte) error {
					if string(k) == string(legacyKey) {
						fmt.Fprintf(tw, "%s\t\t\tstate of an earlier odsflow: partitions recorded since, not checked (require_history)\n", b)
						return nil
					}
					topic, part, _ := strings.Cut(string(k), "\x00")
					if len(v) != 8 {
						return fmt.Errorf("progress of %s/%s is corrupt: %d bytes", topic, part, len(v))
					}
					fmt.Fprintf(tw, "%s\t\t\ttopic %s partition %s applied up to offset %d\n", b, topic, part, int64(binary.BigEndian.Uint64(v))-1)
					return nil
				})
				if err != nil {
					return err
				}
			case b == truncBucket():
				err := tx.Scan(b, nil, func(k, v []byte) error {
					tr, err := decodeTruncation(v)
					if err != nil {
						return fmt.Errorf("truncation of %s is corrupt: %w", k, err)
					}
					fmt.Fprintf(tw, "%s\t\t\ttable %s truncated at version %d, %s\n", b, k, tr.version, time.Unix(tr.at, 0).UTC().Format(time.RFC3339))
					return nil
				})
				if err != nil {
					return err
				}
			default:
				fmt.Fprintf(tw, "%s\t%d\t\t\n", b, n)
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if key == "" {
			return nil
		}
		fmt.Fprintf(w, "\nkey %q:\n", key)
		found := false
		for _, b := range buckets {
			switch {
			case strings.HasPrefix(b, "row."):
				r, err := st.row(&table{name: strings.TrimPrefix(b, "row.")}, key)
				if err != nil {
					return err
				}
				if r != nil {
					js, _ := json.MarshalIndent(r, "  ", "  ")
					fmt.Fprintf(w, "  %s: %s\n", b, js)
					found = true
				}
			case strings.HasPrefix(b, "idx."), strings.HasPrefix(b, "held."):
				err := tx.Scan(b, nil, func(k, v []byte) error {
					parent, child, _ := strings.Cut(string(k), "\x00")
					if parent != key && child != key {
						return nil
					}
					found = true
					fmt.Fprintf(w, "  %s: parent %s, child %s", b, parent, child)
					if len(v) > 0 {
						fmt.Fprintf(w, ": %s", v)
					}
					fmt.Fprintln(w)
					return nil
				})
				if err != nil {
					return err
				}
			}
		}
		if !found {
			fmt.Fprintln(w, "  (not in the state)")
		}
		return nil
	})
}
