package kafka

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"
	"github.com/twmb/franz-go/pkg/kgo"
)

// topicPartition names one partition.
type topicPartition struct {
	topic     string
	partition int32
}

func (tp topicPartition) String() string {
	return tp.topic + "/" + strconv.Itoa(int(tp.partition))
}

// partitionState is one owned partition for the time this member owns it.
// A reassignment creates a new partitionState, so an ack from an earlier
// ownership finds its state closed and counts for nothing.
//
// Records flow: the poll loop appends to buf; the partition's worker cuts
// batches from buf and hands them to ReadBatch; acks retire batches in
// order, advancing ackedNext, the offset the commit loop may commit.
type partitionState struct {
	tp     topicPartition
	in     *franzInput
	client *kgo.Client
	done   chan struct{} // closed when ownership ends: the worker exits
	wake   chan struct{} // cap 1: records arrived, a batch was acked, or a replay is due

	mu           sync.Mutex
	closed       bool
	buf          []*kgo.Record
	bufBytes     int
	paused       bool
	inflight     []*inflightBatch // in delivery order
	replays      []*inflightBatch // nacked, to deliver again before anything newer
	firstSeen    int64            // offset of the first record received, -1 before
	resumeAt     int64            // the group's committed offset at assignment, -1 none, resumeUnknown; set before run
	cluster      string           // the Kafka cluster's id ("" unknown): kafka_cluster_id; set before run
	ackedNext    int64            // every offset below it is acked; -1 before the first ack
	ackedEpoch   int32            // leader epoch of the last acked record
	committed    int64            // last committed ackedNext; -1 none
	highWater    int64
	lastProgress time.Time
	stalled      bool

	batchLast *kgo.Record // worker-owned: last record added to the batcher
}

// inflightBatch is a batch delivered and not yet acked.
type inflightBatch struct {
	lastOffset int64
	lastEpoch  int32
	// Without a batching policy, records are the batch: every delivery,
	// the first and each replay after a nack, converts them anew (the
	// pipeline owns, and changes, what it was given). With one, msgs is the
	// policy's output, kept for replay and delivered as copies.
	records  []*kgo.Record
	msgs     service.MessageBatch
	acked    bool
	attempts int
}

func newPartitionState(in *franzInput, tp topicPartition) *partitionState {
	return &partitionState{
		tp:           tp,
		in:           in,
		done:         make(chan struct{}),
		wake:         make(chan struct{}, 1),
		firstSeen:    -1,
		resumeAt:     -1,
		ackedNext:    -1,
		committed:    -1,
		highWater:    -1,
		lastProgress: time.Now(),
	}
}

func (p *partitionState) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// push appends fetched records, and pauses fetching of the partition when
// its buffer is over the limit. Pause and resume both happen under p.mu, so
// the client's paused state and p.paused never disagree.
func (p *partitionState) push(recs []*kgo.Record, highWater int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	if highWater > p.highWater {
		p.highWater = highWater
	}
	if len(recs) == 0 {
		return
	}
	if p.firstSeen < 0 {
		p.firstSeen = recs[0].Offset
	}
	for _, r := range recs {
		p.buf = append(p.buf, r)
		p.bufBytes += len(r.Key) + len(r.Value)
	}
	p.signal()
	if !p.paused && p.bufBytes >= p.in.bufferBytes {
		p.paused = true
		p.client.PauseFetchPartitions(map[string][]int32{p.tp.topic: {p.tp.partition}})
	}
}

// close ends this ownership: in-flight work is dropped (its acks will be
// ignored) and the worker exits. It returns whether it was open.
func (p *partitionState) close() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.closed = true
	p.buf, p.inflight, p.replays = nil, nil, nil
	close(p.done)
	return true
}

// commitOffset returns the offset to commit, if it advanced past the last
// commit.
func (p *partitionState) commitOffset() (kgo.EpochOffset, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.ackedNext < 0 || p.ackedNext <= p.committed {
		return kgo.EpochOffset{}, false
	}
	return kgo.EpochOffset{Epoch: p.ackedEpoch, Offset: p.ackedNext}, true
}

func (p *partitionState) markCommitted(offset int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if offset > p.committed {
		p.committed = offset
	}
}

// lag is the number of records from the first unacked one to the high
// watermark; -1 while unknown.
func (p *partitionState) lag() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	pos := p.ackedNext
	if pos < 0 {
		pos = p.firstSeen
	}
	if pos < 0 || p.highWater < 0 {
		return -1
	}
	if l := p.highWater - pos; l > 0 {
		return l
	}
	return 0
}

// ack retires b. Acks of a closed (revoked or lost) ownership count for
// nothing: the partition is someone else's now.
func (p *partitionState) ack(b *inflightBatch, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	if err != nil && errors.Is(err, context.Canceled) {
		// The pipeline is stopping (Benthos cancels the contexts of what
		// is still processing): not a rejection of the batch. It stays
		// unacked, so that nothing from it on is committed, and the next
		// process reads it again. A deadline, though, is a write or a call
		// that timed out (an output's timeout): a rejection like any
		// other, replayed, or else the partition would wait for good.
		return
	}
	if err != nil {
		if p.in.autoReplay {
			b.attempts++
			p.replays = append(p.replays, b)
			p.signal()
			return
		}
		p.in.log.Errorf("kafka_franz: %s: batch up to offset %d was rejected and is dropped because auto_replay_nacks is false: %v", p.tp, b.lastOffset, err)
	}
	b.acked = true
	advanced := false
	for len(p.inflight) > 0 && p.inflight[0].acked {
		head := p.inflight[0]
		p.inflight[0] = nil
		p.inflight = p.inflight[1:]
		p.ackedNext, p.ackedEpoch = head.lastOffset+1, head.lastEpoch
		advanced = true
	}
	if advanced {
		p.lastProgress = time.Now()
		if p.stalled {
			p.stalled = false
			p.in.log.Infof("kafka_franz: %s is making progress again (offset %d)", p.tp, p.ackedNext)
		}
	}
	p.signal()
}

// run is the partition's worker: it cuts batches in offset order and hands
// them to ReadBatch, keeping at most checkpointLimit in flight. It exits
// when the ownership ends or the input stops.
func (p *partitionState) run(ctx context.Context, batcher *service.Batcher) {
	defer func() {
		if batcher != nil {
			_ = batcher.Close(context.Background())
		}
	}()
	for {
		b, ok := p.nextDelivery(ctx, batcher)
		if !ok {
			return
		}
		if len(b.records) == 0 && len(b.msgs) == 0 {
			// The batching processors dropped every message: nothing to
			// deliver, but the offsets are done with.
			p.ack(b, nil)
			continue
		}
		var msgs service.MessageBatch
		if b.records != nil {
			msgs = make(service.MessageBatch, len(b.records))
			for i, r := range b.records {
				msgs[i] = p.in.toMessage(r)
			}
		} else {
			msgs = b.msgs.Copy()
		}
		if p.cluster != "" {
			firstRecord(msgs).MetaSetMut("kafka_cluster_id", p.cluster)
		}
		switch {
		case p.resumeAt >= 0:
			markResumed(msgs, p.resumeAt)
		case p.resumeAt == resumeUnknown:
			markResumed(msgs, -1)
		}
		pb := pendingBatch{msgs: msgs, replay: b.attempts > 0, from: p, ack: func(_ context.Context, err error) error {
			p.ack(b, err)
			return nil
		}}
		select {
		case p.in.batches <- pb:
		case <-p.done:
			return
		case <-ctx.Done():
			return
		}
	}
}

// nextDelivery waits for the next batch to deliver: a due replay first,
// else a new batch once a slot is free. ok is false when the worker must
// exit.
func (p *partitionState) nextDelivery(ctx context.Context, batcher *service.Batcher) (*inflightBatch, bool) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		if ctx.Err() != nil {
			return nil, false
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, false
		}
		if len(p.replays) > 0 {
			// A replay keeps its slot: it never left the in-flight list.
			b := p.replays[0]
			p.mu.Unlock()
			if !p.sleep(ctx, replayBackoff(b.attempts)) {
				return nil, false
			}
			p.mu.Lock()
			if p.closed {
				p.mu.Unlock()
				return nil, false
			}
			p.replays = p.replays[1:]
			p.mu.Unlock()
			return b, true
		}
		wait := time.Duration(-1)
		if len(p.inflight) < p.in.checkpointLimit {
			if batcher == nil && len(p.buf) > 0 {
				// Without a batching policy, a partition's whole backlog
				// is the next batch (up to max_yield_batch_bytes): the
				// slower the output, the bigger the batches, which is what
				// keeps a single-slot partition fast.
				n, size := yieldLen(p.buf, p.in.maxYieldBytes)
				b := &inflightBatch{records: p.buf[:n:n]}
				last := p.buf[n-1]
				b.lastOffset, b.lastEpoch = last.Offset, last.LeaderEpoch
				if n == len(p.buf) {
					p.buf, p.bufBytes = nil, 0
				} else {
					p.buf, p.bufBytes = p.buf[n:], p.bufBytes-size
				}
				p.inflight = append(p.inflight, b)
				p.maybeResumeLocked()
				p.mu.Unlock()
				return b, true
			}
			if batcher != nil {
				full := false
				for len(p.buf) > 0 && !full {
					r := p.buf[0]
					p.buf[0] = nil
					p.buf = p.buf[1:]
					p.bufBytes -= len(r.Key) + len(r.Value)
					p.batchLast = r
					full = batcher.Add(p.in.toMessage(r))
				}
				p.maybeResumeLocked()
				if p.batchLast != nil {
					if full {
						wait = 0
					} else if d, ok := batcher.UntilNext(); ok {
						wait = max(d, 0)
					}
				}
			}
		}
		p.mu.Unlock()

		if wait == 0 {
			if b, ok := p.flush(ctx, batcher); ok {
				return b, true
			}
			continue
		}
		var tick <-chan time.Time
		if wait > 0 {
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			tick = timer.C
		}
		select {
		case <-p.wake:
		case <-tick:
			if b, ok := p.flush(ctx, batcher); ok {
				return b, true
			}
		case <-p.done:
			return nil, false
		case <-ctx.Done():
			return nil, false
		}
	}
}

// yieldLen is how many records of buf, from the first, the next batch
// takes with a limit of max bytes (0: all of them; at least one), and
// their bytes.
func yieldLen(buf []*kgo.Record, max int) (n, size int) {
	if max <= 0 {
		return len(buf), 0 // size: not needed for all of them
	}
	for n < len(buf) {
		rs := len(buf[n].Key) + len(buf[n].Value)
		if n > 0 && size+rs > max {
			break
		}
		n, size = n+1, size+rs
	}
	return n, size
}

// maybeResumeLocked resumes fetching once the buffer has drained to half
// its limit, so fetching and processing overlap without a hard stop.
func (p *partitionState) maybeResumeLocked() {
	if p.paused && p.bufBytes <= p.in.bufferBytes/2 {
		p.paused = false
		p.client.ResumeFetchPartitions(map[string][]int32{p.tp.topic: {p.tp.partition}})
	}
}

// flush cuts the batcher's records into the next in-flight batch.
func (p *partitionState) flush(ctx context.Context, batcher *service.Batcher) (*inflightBatch, bool) {
	if p.batchLast == nil {
		return nil, false
	}
	msgs, err := batcher.Flush(ctx)
	if ctx.Err() != nil {
		// Stopping: a cancelled flush returns nothing, and registering that
		// as an empty batch would let its offsets be committed unseen.
		return nil, false
	}
	if err != nil {
		p.in.log.Errorf("kafka_franz: %s: batching processors failed: %v", p.tp, err)
	}
	b := &inflightBatch{msgs: msgs, lastOffset: p.batchLast.Offset, lastEpoch: p.batchLast.LeaderEpoch}
	p.batchLast = nil
	return p.register(b)
}

func (p *partitionState) register(b *inflightBatch) (*inflightBatch, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, false
	}
	p.inflight = append(p.inflight, b)
	return b, true
}

// sleep waits d unless the ownership or the input ends first.
func (p *partitionState) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-p.done:
		return false
	case <-ctx.Done():
		return false
	}
}

// replayBackoff spaces out replays of a batch the output keeps rejecting.
func replayBackoff(attempts int) time.Duration {
	d := 100 * time.Millisecond
	for i := 1; i < attempts && d < 5*time.Second; i++ {
		d *= 2
	}
	if d > 5*time.Second {
		d = 5 * time.Second
	}
	return d
}

// resumeUnknown as a partition's resumeAt: the group's committed offsets
// could not be read at assignment.
const resumeUnknown = -2

// markResumed sets kafka_resume_offset on msgs' firstRecord.
func markResumed(msgs service.MessageBatch, at int64) {
	firstRecord(msgs).MetaSetMut("kafka_resume_offset", int(at))
}

// firstRecord is the message of a batch that carries its marks: the first
// that is not a tombstone (debezium_unwrap drops those), or the first.
func firstRecord(msgs service.MessageBatch) *service.Message {
	for _, m := range msgs {
		if b, err := m.AsBytes(); err == nil && len(b) > 0 {
			return m
		}
	}
	return msgs[0]
}
