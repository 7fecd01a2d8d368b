package join

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"

	"github.com/odsflow/odsflow/internal/statestore"
)

// The state records, per Kafka partition whose messages it applied, the
// offset after the last one (progressBucket). That is what tells a state
// that lacks the history its consumer group has consumed: a new or
// replaced state directory on a group that has progressed would join
// against nothing, and hold every account for a customer that never comes,
// without an error. The group's side is kafka_franz's kafka_resume_offset:
// the offset the group had committed for a partition (above its log start)
// when this member was assigned it. A topic read from committed offsets of
// which the state has applied nothing is history the state does not have.
//
// A partition the state has not recorded counts as missing only when the
// state has recorded nothing of its topic: a partition whose messages never
// reach the join (a filter; tombstones only, where debezium_unwrap drops
// them instead of marking them) is committed without the state recording
// it. One it has recorded counts
// as missing when the group resumes more than historyGap records past what
// the state applied: a stale copy (a backup, a snapshot). Record offsets
// alone cannot tell: a compacted or expired topic starts above offset 0 for
// a new group too.

// progressBucket maps "topic\x00partition" to the next offset (8 bytes,
// big-endian) after the last message of that partition the state applied.
const progressBucket = "progress"

// legacyKey in progressBucket marks a state written before partitions
// were recorded: which topics it has seen is unknown, so it is never held.
var legacyKey = []byte("\x00legacy")

// clusterKey in progressBucket holds the id of the Kafka cluster whose
// records the state applied (kafka_franz's kafka_cluster_id). Offsets mean
// nothing on another cluster: a state kept across a new cluster (a
// restarted `odsflow dev`, a migration) is held, whatever the offsets say.
var clusterKey = []byte("\x00cluster")

// partitionSeen is what a batch holds of one Kafka partition.
type partitionSeen struct {
	topic     string
	partition int
	first     int64 // the batch's lowest offset
	next      int64 // after the batch's highest offset
	resume    int64 // kafka_resume_offset, -1 when no message carries it
	// marked: a message carries kafka_resume_offset (-1 there: the input
	// could not read the group's committed offsets).
	marked bool
}

func (p *partitionSeen) key() []byte {
	return []byte(p.topic + "\x00" + strconv.Itoa(p.partition))
}

// checkKey names the check a partition's batch needs, done once per
// process: with kafka_resume_offset (is history missing?) or without (is
// the state ahead of a new group?); the first does not stand for the
// second, nor the other way.
func (p *partitionSeen) checkKey() string {
	if p.resume >= 0 {
		return string(p.key()) + "\x00resumed"
	}
	return string(p.key())
}

// partitionsOf collects the Kafka partitions of a batch's messages, in
// order of first appearance, and the Kafka cluster they came from ("" when
// no message says); messages without Kafka metadata (another input, a
// config unit test) count for none.
func partitionsOf(batch service.MessageBatch) (out []*partitionSeen, cluster string) {
	var last *partitionSeen
	for _, msg := range batch {
		topic, ok := msg.MetaGetMut("kafka_topic")
		if !ok {
			continue
		}
		t, _ := topic.(string)
		part, ok1 := metaInt(msg, "kafka_partition")
		off, ok2 := metaInt(msg, "kafka_offset")
		if t == "" || !ok1 || !ok2 {
			continue
		}
		// A batch holds runs of one partition (kafka_franz cuts them per
		// partition, and merges whole ones): look at the last one first.
		p := last
		if p == nil || p.topic != t || p.partition != int(part) {
			p = nil
			for _, q := range out {
				if q.topic == t && q.partition == int(part) {
					p = q
					break
				}
			}
			if p == nil {
				p = &partitionSeen{topic: t, partition: int(part), resume: -1, first: off}
				out = append(out, p)
			}
			last = p
		}
		p.next = max(p.next, off+1)
		p.first = min(p.first, off)
		if r, ok := metaInt(msg, "kafka_resume_offset"); ok {
			p.marked = true
			p.resume = max(p.resume, r)
		}
		if cluster == "" {
			if c, ok := msg.MetaGetMut("kafka_cluster_id"); ok {
				cluster, _ = c.(string)
			}
		}
	}
	return out, cluster
}

// recordProgress writes the batch's partitions into the state, in the
// batch's transaction, and the cluster they came from when the state has
// none recorded.
func (j *join) recordProgress(tx statestore.Tx, parts []*partitionSeen, cluster string) error {
	if cluster != "" && j.history.cluster == "" {
		if err := tx.Put(progressBucket, clusterKey, []byte(cluster)); err != nil {
			return err
		}
	}
	for _, p := range parts {
		k := p.key()
		old, err := tx.Get(progressBucket, k)
		if err != nil {
			return err
		}
		next := p.next
		if len(old) == 8 {
			// A replay after a crash reads offsets the state has applied.
			next = max(next, int64(binary.BigEndian.Uint64(old)))
		}
		v := make([]byte, 8)
		binary.BigEndian.PutUint64(v, uint64(next))
		if err := tx.Put(progressBucket, k, v); err != nil {
			return err
		}
	}
	return nil
}

// history is what the join knows of the state's partitions, kept across
// batches (under join.mu) so that a partition is checked once.
type history struct {
	require bool                // require_history
	legacy  bool                // a state of an earlier odsflow (legacyKey)
	checked map[string]struct{} // partitions checked (checkKey)
	// cluster: the Kafka cluster the state's records came from (clusterKey),
	// "" while unknown.
	cluster string
}

// openHistory reads whether the state is legacy: one written by an
// earlier odsflow, which recorded no partitions, holds rows but no
// progress. Such a state is marked at once (before a batch records
// partitions, which would make it look recorded), and never checked.
func (j *join) openHistory(ctx context.Context) error {
	j.history.checked = map[string]struct{}{}
	mark := false
	err := j.store.View(ctx, func(tx statestore.Tx) error {
		cluster, err := tx.Get(progressBucket, clusterKey)
		if err != nil {
			return err
		}
		j.history.cluster = string(cluster)
		legacy, err := tx.Get(progressBucket, legacyKey)
		if err != nil || legacy != nil {
			j.history.legacy = legacy != nil
			return err
		}
		recorded, err := tx.Count(progressBucket)
		if err != nil || recorded > 0 {
			return err
		}
		mark, err = hasRows(tx)
		return err
	})
	if err != nil || !mark {
		return err
	}
	j.log.Infof("cdc_join: the state in %s was written by an earlier odsflow, which did not record its Kafka partitions: "+
		"whether it lacks history the consumer group has read cannot be checked for it (require_history)", j.stateDir)
	j.history.legacy = true
	return j.store.Update(ctx, func(tx statestore.Tx) error { return tx.Put(progressBucket, legacyKey, []byte{}) })
}

// historyGap is how many committed records of a partition the state may
// not have applied and still count as having the history: the records of
// a partition's last batches that never reach the join (tombstones, which
// debezium_unwrap drops; transaction markers) are committed without being
// applied. A state further behind is a stale copy.
const historyGap = 100

// gap is one partition whose history the state lacks: none of its topic
// (behind < 0), or records up to the group's resume offset.
type gap struct {
	p       *partitionSeen
	applied int64 // the state's next offset of the partition; -1 none of the topic
}

func (g gap) String() string {
	if g.applied < 0 {
		return fmt.Sprintf("topic %s: the state has applied none of it (the group resumes its partition %d at offset %d)", g.p.topic, g.p.partition, g.p.resume)
	}
	return fmt.Sprintf("topic %s partition %d: the state has applied it up to offset %d, the group resumes at %d (%d records the state never saw)",
		g.p.topic, g.p.partition, g.applied-1, g.p.resume, g.p.resume-g.applied)
}

// missingHistory returns the batch's partitions that the group has read
// before (kafka_resume_offset) and this state lacks: of whose topic it has
// applied nothing, or which it has applied only up to historyGap records
// short of the group's resume offset. Each partition is checked once per
// process.
func (j *join) missingHistory(ctx context.Context, parts []*partitionSeen) ([]gap, error) {
	h := &j.history
	var ask []*partitionSeen
	for _, p := range parts {
		if _, ok := h.checked[p.checkKey()]; !ok && !h.legacy {
			ask = append(ask, p)
		}
	}
	if len(ask) == 0 {
		return nil, nil
	}
	var missing []gap
	err := j.store.View(ctx, func(tx statestore.Tx) error {
		missing = missing[:0]
		for _, p := range ask {
			v, err := tx.Get(progressBucket, p.key())
			if err != nil {
				return err
			}
			if len(v) == 8 {
				next := int64(binary.BigEndian.Uint64(v))
				switch {
				case p.resume > next+historyGap:
					missing = append(missing, gap{p: p, applied: next})
				case !p.marked && p.first+historyGap < next:
					// A group without a commit reads what the state has
					// applied: reset, or the state of another stream.
					j.log.Warnf("cdc_join: topic %s partition %d: the consumer group has no committed offset and reads from offset %d, "+
						"but the state in %s has applied it up to offset %d: an earlier run applied these records and stopped before "+
						"committing them, or the group was reset or recreated with the state kept (both harmless: changes already "+
						"applied are replayed), or the state belongs to another stream on this cluster (then start with an empty "+
						"state directory)", p.topic, p.partition, p.first, j.stateDir, next-1)
				}
				continue
			}
			if p.resume < 0 {
				continue
			}
			found := false
			err = tx.Scan(progressBucket, []byte(p.topic+"\x00"), func(_, _ []byte) error {
				found = true
				return statestore.ErrStop
			})
			if err != nil {
				return err
			}
			if !found {
				missing = append(missing, gap{p: p, applied: -1})
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cdc_join: reading the state's partitions: %w", err)
	}
	if len(missing) == 0 {
		for _, p := range ask {
			h.checked[p.checkKey()] = struct{}{}
		}
	}
	return missing, nil
}

// hasRows tells whether the state holds any row, index or held event.
func hasRows(tx statestore.Tx) (bool, error) {
	buckets, err := tx.Buckets()
	if err != nil {
		return false, err
	}
	for _, b := range buckets {
		if b == progressBucket {
			continue
		}
		n, err := tx.Count(b)
		if err != nil || n > 0 {
			return n > 0, err
		}
	}
	return false, nil
}

// checkHistory returns once the batch may be applied: at once unless
// require_history finds a partition missing, or the state cannot be read
// (retried with backoff, like a failed write); when one is missing, only
// when the pipeline stops, with an error.
func (j *join) checkHistory(ctx context.Context, parts []*partitionSeen, cluster string) error {
	if !j.history.require {
		return nil
	}
	if cluster != "" && j.history.cluster != "" && cluster != j.history.cluster {
		return j.holdForHistory(ctx, fmt.Sprintf("it was built from the records of Kafka cluster %s, and the input reads cluster %s, "+
			"where its offsets mean nothing (a new cluster: a restarted `odsflow dev`, a migration)", j.history.cluster, cluster))
	}
	backoff := 100 * time.Millisecond
	for {
		missing, err := j.missingHistory(ctx, parts)
		if err == nil && len(missing) == 0 {
			return nil
		}
		if err == nil {
			names := make([]string, len(missing))
			for i, g := range missing {
				names[i] = g.String()
			}
			sort.Strings(names)
			return j.holdForHistory(ctx, "it lacks history the consumer group has consumed: "+strings.Join(names, "; ")+
				". It is a new, emptied, replaced or older copy of the state")
		}
		j.log.Errorf("%v; retrying in %v", err, backoff)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// holdForHistory is require_history's hold: nothing of the batch is
// applied or passed on, so nothing is acked or committed, until the
// pipeline stops; the gauge cdc_join_missing_history is 1 meanwhile.
// Nothing the operator does to the running process can supply the
// history, so it only logs, now and every minute.
func (j *join) holdForHistory(ctx context.Context, why string) error {
	dir := j.stateDir
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	reason := fmt.Sprintf("cdc_join: the state in %s does not go with what the input reads: %s; "+
		"joining against it would hold or drop rows without an error. "+
		"Nothing is processed or committed. Put back the state directory that goes with this consumer group, or rebuild the state "+
		"by reading the topics from the start: a new consumer group with an empty state directory (config/ods.yaml: ODS_CONSUMER_GROUP, "+
		"ODS_STATE_DIR), or this group reset to the earliest offsets. To go on without the history, set cdc_join's require_history: false",
		dir, why)
	j.log.Error(reason)
	j.historyHeld.Set(1)
	defer j.historyHeld.Set(0)
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("cdc_join: stopped while holding a batch for missing history: %w", ctx.Err())
		case <-tick.C:
			j.log.Error(reason)
		}
	}
}
