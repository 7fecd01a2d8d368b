package kafka

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/redpanda-data/benthos/v4/public/service"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const (
	ifTopics          = "topics"
	ifRegexpTopics    = "regexp_topics"
	ifRegexpInclude   = "regexp_topics_include"
	ifRegexpExclude   = "regexp_topics_exclude"
	ifConsumerGroup   = "consumer_group"
	ifCheckpointLimit = "checkpoint_limit"
	ifCommitPeriod    = "commit_period"
	ifStartFromOldest = "start_from_oldest"
	ifStartOffset     = "start_offset"
	ifFetchMaxBytes   = "fetch_max_bytes"
	ifFetchMaxPart    = "fetch_max_partition_bytes"
	ifFetchMaxWait    = "fetch_max_wait"
	ifFetchMinBytes   = "fetch_min_bytes"
	ifIsolation       = "transaction_isolation_level"
	ifInstanceID      = "instance_id"
	ifSessionTimeout  = "session_timeout"
	ifRebalanceTO     = "rebalance_timeout"
	ifHeartbeat       = "heartbeat_interval"
	ifMultiHeader     = "multi_header"
	ifBatching        = "batching"
	ifBufferBytes     = "partition_buffer_bytes"
	ifStallTimeout    = "stall_timeout"
	ifLagRefresh      = "topic_lag_refresh_period"
	ifWaitForTopics   = "wait_for_topics"
	ifMergeBatches    = "merge_partition_batches"
	ifRequireAll      = "require_all_partitions"
	ifMaxYieldBytes   = "max_yield_batch_bytes"
	ifUnordered       = "unordered_processing"
)

// inputLintRule finds, at lint time, the topic settings newFranzInput
// refuses.
const inputLintRule = `let topics = this.topics.or([]).length() > 0
let include = this.regexp_topics_include.or([]).length() > 0
root = [
  if !$topics && !$include { "either topics or regexp_topics_include must be specified" },
  if $topics && $include { "either topics or regexp_topics_include, not both" },
  if this.regexp_topics_exclude.or([]).length() > 0 && !$include && !this.regexp_topics.or(false) { "regexp_topics_exclude needs regexp_topics_include (or regexp_topics)" },
  if this.require_all_partitions.or(false) && this.consumer_group.or("") == "" { "require_all_partitions needs a consumer_group" },
  if this.require_all_partitions.or(false) && ($include || this.regexp_topics.or(false)) { "require_all_partitions needs topics named in full (topics, not regexp_topics_include or regexp_topics)" },
].filter(e -> e != null)`

func franzInputSpec() *service.ConfigSpec {
	fields := clientFields()
	fields = append(fields,
		service.NewStringListField(ifTopics).
			Description("Topics to consume. Items holding commas are split. Without a `consumer_group`, an item may name partitions: `foo:0` (one partition), `foo:0-2` (a range), `foo:0:42` (one partition from offset 42).").
			Example([]string{"fulfillment.transactions_schema.T_Customers"}).
			Example([]string{"foo,bar"}).
			Example([]string{"foo:0", "foo:1-2"}).
			Optional(),
		service.NewBoolField(ifRegexpTopics).
			Description("Whether `topics` are regular expressions matched against the cluster's topics (re-checked every `metadata_max_age`). `regexp_topics_include` says the same more plainly.").
			Default(false),
		service.NewStringListField(ifRegexpInclude).
			Description("Instead of `topics`: regular expressions (Go syntax, unanchored) matched against the cluster's topics; every topic one matches is consumed, as it appears (re-checked every `metadata_max_age`).").
			Example([]string{`^fulfillment\.transactions_schema\.T_.*`}).
			Optional(),
		service.NewStringListField(ifRegexpExclude).
			Description("With `regexp_topics_include` (or `regexp_topics`): regular expressions of topics not to consume, even when an include matches them.").
			Example([]string{`\.dlq$`}).
			Optional(),
		service.NewStringField(ifConsumerGroup).
			Description("The consumer group: partitions are balanced across its members and acked offsets are committed to it. Without one, every partition of `topics` is consumed directly and nothing is committed.").
			Optional(),
		service.NewIntField(ifCheckpointLimit).
			Description("How many batches of one partition may be in flight at once. The default 1 keeps **per-partition order**: the next batch of a partition is delivered only after the previous one is acked, so two changes of one row reach the output in order. A value above 1 is an explicit opt-in to processing batches of a partition in parallel (and out of order); offsets are still committed only up to the last batch acked together with every batch before it.").
			Default(1).LintRule(`root = if this < 1 { [ "checkpoint_limit must be at least 1" ] }`),
		service.NewDurationField(ifCommitPeriod).
			Description("How often acked offsets are committed. Offsets are also committed when partitions are revoked and when the input closes.").
			Default("5s"),
		service.NewBoolField(ifStartFromOldest).
			Description("Deprecated: use `start_offset`. Whether a partition without a committed offset starts from the oldest record (true) or the newest (false).").
			Default(true).Advanced().Deprecated(),
		service.NewStringAnnotatedEnumField(ifStartOffset, map[string]string{
			"earliest":  "Start from the earliest offset (Kafka's `auto.offset.reset=earliest`).",
			"latest":    "Start from the latest offset (`auto.offset.reset=latest`).",
			"committed": "Consume a partition only from its committed offset; a partition without one is not consumed (`auto.offset.reset=none`).",
		}).
			Description("Where to start in a partition without a committed offset, or after an out-of-range offset. Overrides `start_from_oldest` when set.").
			Optional().Advanced(),
		service.NewStringField(ifFetchMaxBytes).
			Description("The most bytes a broker returns for one fetch request.").
			Default("50MiB").Advanced(),
		service.NewStringField(ifFetchMaxPart).
			Description("The most bytes a broker returns for one partition in a fetch. A record larger than this is still returned whole (Kafka never skips it).").
			Default("1MiB").Advanced(),
		service.NewDurationField(ifFetchMaxWait).
			Description("How long a broker may hold a fetch while waiting for data. A fetch returns as soon as any record is there, so this bounds idle polling, not latency.").
			Default("500ms").Advanced(),
		service.NewStringField(ifFetchMinBytes).
			Description("The fewest bytes a broker gathers before it answers a fetch (or `fetch_max_wait` passes).").
			Default("1B").Advanced(),
		service.NewStringAnnotatedEnumField(ifIsolation, map[string]string{
			"read_uncommitted": "Every record, also those of transactions that are still open or were aborted.",
			"read_committed":   "Only records of committed transactions (and non-transactional ones): for producers that write transactionally, such as Kafka Connect with exactly-once source support.",
		}).Description("Which transactional records are read.").Default("read_uncommitted").Advanced(),
		service.NewStringField(ifInstanceID).
			Description("Static group membership (KIP-345): a stable id for this member, so a restarted member takes its partitions back at once instead of waiting for a session timeout and a rebalance. Unique per member; empty disables it.").
			Default("").Example("${ODS_INSTANCE_ID:}").Advanced(),
		service.NewDurationField(ifSessionTimeout).
			Description("How long the group waits for a silent member (crashed, or stuck) before rebalancing its partitions to others.").
			Default("1m").Example("10s").Advanced(),
		service.NewDurationField(ifRebalanceTO).
			Description("How long the group waits for members to rejoin during a rebalance.").
			Default("45s").Advanced(),
		service.NewDurationField(ifHeartbeat).
			Description("How often this member heartbeats to the group; keep it well below `session_timeout`.").
			Default("3s").Advanced(),
		service.NewBoolField(ifMultiHeader).
			Description("Decode headers into lists, so repeated keys keep every value. Otherwise the last value of a key wins.").
			Default(false).Advanced(),
		service.NewBatchPolicyField(ifBatching).
			Description("A batching policy applied to each partition separately: a batch never mixes partitions. Without one, a partition's whole backlog (up to `partition_buffer_bytes`, or `max_yield_batch_bytes`) forms the next batch."),
		service.NewStringField(ifMaxYieldBytes).
			Description("Without a batching policy: the most record bytes (keys and values) a partition's batch takes from its buffer; the rest forms its next batch, and a single larger record is a batch alone. Unset, a batch takes the partition's whole buffer (up to `partition_buffer_bytes`). Redpanda Connect's default is 32KB: set it to keep a config's batches the size they were there. `merge_partition_batches` may still deliver several partitions' batches as one.").
			Optional().Advanced().Example("32KB").Example("1MiB"),
		service.NewObjectField(ifUnordered,
			service.NewBoolField("enabled").
				Description("Use this block's `checkpoint_limit` and `batching` instead of the top-level ones.").
				Default(false),
			service.NewIntField("checkpoint_limit").
				Description("How many batches of one partition may be in flight at once.").
				Default(1024).LintRule(`root = if this < 1 { [ "checkpoint_limit must be at least 1" ] }`),
			service.NewBatchPolicyField("batching").
				Description("A batching policy applied to each partition separately."),
		).
			Description("Redpanda Connect's block for processing a partition's batches in parallel. With `enabled`, up to its `checkpoint_limit` batches of a partition are in flight at once, and they may be processed, and reach the output, out of order; offsets are still committed only up to the last batch acked together with every batch before it. Not for a pipeline that needs each partition in order (one with `cdc_join`, such as `config/ods.yaml`).").
			Advanced(),
		service.NewIntField(ifMergeBatches).
			Description("Above 0: a read that finds batches of several partitions ready delivers them as one batch, adding ready batches while it holds fewer than this many records (a batch is never split, so the result may exceed it by one partition's batch). Records of one partition stay in order inside it, and acking it acks each part; a nack replays each part, before anything newer of its partition, and a replay is delivered alone (one that keeps failing holds back only its own partition). Fewer, larger batches make each downstream commit carry more (a transaction, an fsync); under a backlog every partition is ready at once. 0 delivers one partition's batch at a time, as Redpanda Connect does.").
			Default(0).Example(10000).Advanced().
			LintRule(`root = if this < 0 { [ "merge_partition_batches must be 0 or more" ] }`),
		service.NewBoolField(ifRequireAll).
			Description("With a `consumer_group`: deliver records only while this member holds every partition of its `topics`. A pipeline that keeps state on its own disk (`cdc_join`) must see every partition, and no other member may consume what its state needs: while the group gives this member only some partitions (another member joined, perhaps a second copy of the pipeline by mistake), it delivers nothing more, and so commits nothing more, and logs an error every 30 s naming the group; it goes on when it holds them all again. Batches already delivered are acked as usual. Not with `regexp_topics`.").
			Default(false).Advanced(),
		service.NewStringField(ifBufferBytes).
			Description("How many record bytes of one partition are buffered ahead of processing. Above it, fetching of the partition pauses until the buffer has drained to half: memory stays bounded when the output is slow or down.").
			Default("8MiB").Advanced(),
		service.NewDurationField(ifLagRefresh).
			Description("How often the `kafka_lag` gauge is updated and stalls are looked for. The lag comes from the high watermarks that fetches return: no extra request to the brokers.").
			Default("1s").Advanced(),
		service.NewDurationField(ifStallTimeout).
			Description("A partition with lag that makes no progress for this long is logged as stalled (once, until it moves again).").
			Default("1m").Advanced(),
		service.NewBoolField(ifWaitForTopics).
			Description("What to do when a topic in `topics` does not exist. False: connecting fails with an error naming the missing topics (retried with backoff, as every connection error). True: connect anyway and consume each topic once it appears.").
			Default(false).Advanced(),
		service.NewAutoRetryNacksToggleField(),
		service.NewForceTimelyNacksField(),
		service.NewExtractTracingSpanMappingField(),
	)
	return service.NewConfigSpec().
		Stable().
		Categories("Services").
		Summary("Consumes Kafka topics with franz-go: per-partition order, at-least-once commits, bounded memory.").
		Description(`
Field-compatible with Redpanda Connect's `+"`kafka_franz`"+` input, with the guarantees a change-data-capture
pipeline needs by default:

- **Per-partition order.** One batch of a partition is in flight at a time (`+"`checkpoint_limit: 1`"+`); batches
  of different partitions are processed in parallel.
- **At-least-once.** An offset is committed only when it and every earlier offset of its partition have been
  acked. A rejected (nacked) batch is delivered again, after a backoff, before anything newer of its partition.
- **Rebalances.** Acked offsets are committed when partitions are revoked; a partition this member no longer owns
  gets no commit, and acks of its old in-flight batches count for nothing. Lost partitions drop their work.
- **Bounded memory.** Fetching of a partition pauses while its buffer is full (`+"`partition_buffer_bytes`"+`).
- **Observability.** Gauge `+"`kafka_lag{topic,partition}`"+` (records between the first unacked offset and the high
  watermark); a partition with lag and no progress for `+"`stall_timeout`"+` is logged as stalled.

### Metadata

Every message carries `+"`kafka_key`, `kafka_topic`, `kafka_partition`, `kafka_offset`, `kafka_timestamp_ms`, `kafka_timestamp_unix`, `kafka_tombstone_message`"+` (true for a record with a null value) and each record header.
With a `+"`consumer_group`"+`, the first message of each batch (the first that is not a tombstone) of a partition whose
offset the group had committed, above the partition's log start, when this member was assigned it also carries
`+"`kafka_resume_offset`"+`: that committed offset (an integer), or -1 when the committed offsets could not be read. `+"`cdc_join`"+` reads it
to tell a state that lacks the history the group has consumed (see its `+"`require_history`"+`). That message of every batch
also carries `+"`kafka_cluster_id`"+`, the id the cluster gives itself (when it gives one): a state built from another
cluster's records is held the same way.
`).
		Fields(fields...).
		LintRule(inputLintRule).
		Example("CDC topics with a consumer group", "Consume the three Debezium topics in order per partition, for a pipeline that keeps state on its own disk (`cdc_join`), as `config/ods.yaml` does: no batching policy (a partition's next batch is what arrived meanwhile), and records only while this member holds every partition.", `
input:
  kafka_franz:
    seed_brokers: [ "${KAFKA_BROKERS:localhost:9092}" ]
    topics:
      - ${CDC_TOPIC_PREFIX:fulfillment.transactions_schema}.T_Customers
      - ${CDC_TOPIC_PREFIX:fulfillment.transactions_schema}.T_Accounts
      - ${CDC_TOPIC_PREFIX:fulfillment.transactions_schema}.T_Transactions
    consumer_group: ${ODS_CONSUMER_GROUP:odsflow-ods}
    session_timeout: 6s
    rebalance_timeout: 6s
    require_all_partitions: true
`)
}

func init() {
	err := service.RegisterBatchInput("kafka_franz", franzInputSpec(), newWrappedFranzInput)
	if err != nil {
		panic(err)
	}
}

// newWrappedFranzInput is the input with Benthos' own wrappers for
// Redpanda Connect's extract_tracing_map and timely_nacks_maximum_wait
// (each a no-op unless set).
func newWrappedFranzInput(conf *service.ParsedConfig, mgr *service.Resources) (service.BatchInput, error) {
	in, err := newFranzInput(conf, mgr)
	if err != nil {
		return nil, err
	}
	wrapped, err := conf.WrapBatchInputExtractTracingSpanMapping("kafka_franz", in)
	if err != nil {
		return nil, err
	}
	return service.ForceTimelyNacksBatched(conf, wrapped)
}

// pollMaxRecords bounds one poll. Records of a poll are buffered whole, so
// this bounds how far a partition's buffer can overshoot its limit before
// fetching pauses (the client keeps the rest and refetches it on resume).
const pollMaxRecords = 1000

// pendingBatch is a batch handed from a partition worker to ReadBatch.
type pendingBatch struct {
	msgs service.MessageBatch
	ack  service.AckFunc
	// replay: a batch delivered again after a nack. It is never merged,
	// so one that keeps failing holds back only its own partition.
	replay bool
	// from: the ownership it belongs to. A batch handed over just as that
	// ownership ended is dropped (its ack would count for nothing, and the
	// next owner delivers its records again, in order).
	from *partitionState
}

// stale tells whether the batch's ownership has ended.
func (pb *pendingBatch) stale() bool {
	if pb.from == nil {
		return false
	}
	select {
	case <-pb.from.done:
		return true
	default:
		return false
	}
}

// franzInput is the kafka_franz input. Goroutines and their owners: the poll
// loop and the commit loop belong to one connection (started by Connect,
// stopped by Close or a reconnect); each partition worker belongs to its
// partitionState and stops when the partition is revoked, lost, or the
// connection stops.
type franzInput struct {
	log *service.Logger
	res *service.Resources
	lag *service.MetricGauge

	baseOpts        []kgo.Opt // connection only: for probing the cluster
	clientOpts      []kgo.Opt // baseOpts plus consuming
	topics          []string
	regexpTopics    bool
	excludeTopics   []string // regexp_topics_exclude
	group           string
	direct          map[string]map[int32]kgo.Offset // explicit partitions, without a group
	checkpointLimit int
	commitPeriod    time.Duration
	multiHeader     bool
	autoReplay      bool
	bufferBytes     int
	maxYieldBytes   int // max_yield_batch_bytes; 0: a partition's whole buffer
	stallTimeout    time.Duration
	lagRefresh      time.Duration
	waitForTopics   bool
	batchPolicy     service.BatchPolicy
	mergeUpTo       int // merge_partition_batches; 0: no merging
	requireAll      bool

	batches chan pendingBatch

	// stash is a replay that mergeReady took from batches while merging:
	// the next ReadBatch delivers it, alone, before anything else (unless its
	// ownership ended meanwhile: see pendingBatch.stale). Only
	// ReadBatch touches it (Benthos calls ReadBatch from one goroutine;
	// stashMu keeps that assumption from being a data race).
	stashMu sync.Mutex
	stash   *pendingBatch

	connMu sync.Mutex
	conn   *franzConn // nil when not connected
}

// franzConn is one connection: a client, its partitions, its goroutines.
type franzConn struct {
	client *kgo.Client
	cancel context.CancelFunc
	ctx    context.Context
	wg     sync.WaitGroup
	failed chan struct{} // closed when the poll loop ends on its own

	// commitMu serializes commits with rebalance callbacks, so no commit is
	// ever sent for a partition after its revoke callback has run.
	commitMu sync.Mutex
	partsMu  sync.Mutex
	parts    map[topicPartition]*partitionState

	// gen counts changes of parts (under partsMu): a holdings count made
	// across a change is discarded.
	gen uint64
	// stopping: stopConn is waiting for the goroutines (under partsMu).
	stopping bool
	// clusterID: the cluster's id, asked at Connect ("" unknown).
	clusterID string
	// dropping counts revoke and lost callbacks under way (under partsMu):
	// from closing the gate to dropping their partitions (a revoke commits
	// first, a network round trip), a holdings count would still find the
	// partitions going, and must not open the gate.
	dropping int

	// With require_all_partitions, the gate: whole is closed while this
	// member holds every partition of its topics, partial while it does
	// not (each is replaced by a new, open channel when the other closes).
	wholeMu      sync.Mutex
	whole        chan struct{}
	partial      chan struct{}
	partialSince time.Time
	partialLog   time.Time
}

// gate returns the gate's channels: whole is closed while the member
// holds every partition, partial while it does not.
func (c *franzConn) gate() (whole, partial chan struct{}) {
	c.wholeMu.Lock()
	defer c.wholeMu.Unlock()
	return c.whole, c.partial
}

// isPartial reports the gate closed.
func (c *franzConn) isPartial() bool {
	_, partial := c.gate()
	select {
	case <-partial:
		return true
	default:
		return false
	}
}

// setPartialLocked closes the gate (wholeMu held).
func (c *franzConn) setPartialLocked() {
	select {
	case <-c.partial:
		return // already
	default:
	}
	close(c.partial)
	c.whole = make(chan struct{})
	c.partialSince, c.partialLog = time.Now(), time.Time{}
}

func newFranzInput(conf *service.ParsedConfig, mgr *service.Resources) (*franzInput, error) {
	in := &franzInput{
		log:     mgr.Logger(),
		res:     mgr,
		lag:     mgr.Metrics().NewGauge("kafka_lag", "topic", "partition"),
		batches: make(chan pendingBatch),
	}
	var err error
	if in.clientOpts, err = clientOptions(conf, in.log); err != nil {
		return nil, err
	}
	var rawTopics []string
	if conf.Contains(ifTopics) {
		if rawTopics, err = conf.FieldStringList(ifTopics); err != nil {
			return nil, err
		}
	}
	if err != nil {
		return nil, err
	}
	for _, t := range rawTopics {
		for _, s := range strings.Split(t, ",") {
			if s = strings.TrimSpace(s); s != "" {
				in.topics = append(in.topics, s)
			}
		}
	}
	if in.regexpTopics, err = conf.FieldBool(ifRegexpTopics); err != nil {
		return nil, err
	}
	var include []string
	if conf.Contains(ifRegexpInclude) {
		if include, err = conf.FieldStringList(ifRegexpInclude); err != nil {
			return nil, err
		}
	}
	if conf.Contains(ifRegexpExclude) {
		if in.excludeTopics, err = conf.FieldStringList(ifRegexpExclude); err != nil {
			return nil, err
		}
	}
	switch {
	case len(include) > 0 && len(in.topics) > 0:
		return nil, errors.New("either topics or regexp_topics_include, not both")
	case len(include) > 0:
		in.topics, in.regexpTopics = include, true
	case len(in.topics) == 0:
		return nil, errors.New("topics or regexp_topics_include: at least one topic is required")
	}
	if len(in.excludeTopics) > 0 && !in.regexpTopics {
		return nil, errors.New("regexp_topics_exclude needs regexp_topics_include (or regexp_topics)")
	}
	if in.regexpTopics {
		for _, t := range append(append([]string{}, in.topics...), in.excludeTopics...) {
			if _, err := regexp.Compile(t); err != nil {
				return nil, fmt.Errorf("topic pattern %q: %w", t, err)
			}
		}
	}
	if conf.Contains(ifConsumerGroup) {
		if in.group, err = conf.FieldString(ifConsumerGroup); err != nil {
			return nil, err
		}
	}
	if in.group == "" && !in.regexpTopics {
		if in.topics, in.direct, err = parsePartitionedTopics(in.topics); err != nil {
			return nil, err
		}
	}
	if in.checkpointLimit, err = conf.FieldInt(ifCheckpointLimit); err != nil {
		return nil, err
	}
	if in.batchPolicy, err = conf.FieldBatchPolicy(ifBatching); err != nil {
		return nil, err
	}
	unordered := conf.Namespace(ifUnordered)
	if on, err := unordered.FieldBool("enabled"); err != nil {
		return nil, err
	} else if on {
		if in.checkpointLimit, err = unordered.FieldInt("checkpoint_limit"); err != nil {
			return nil, err
		}
		if in.batchPolicy, err = unordered.FieldBatchPolicy("batching"); err != nil {
			return nil, err
		}
	}
	if in.checkpointLimit < 1 {
		return nil, fmt.Errorf("checkpoint_limit must be at least 1, got %d", in.checkpointLimit)
	}
	if in.commitPeriod, err = conf.FieldDuration(ifCommitPeriod); err != nil {
		return nil, err
	}
	if in.commitPeriod <= 0 {
		return nil, errors.New("commit_period must be positive")
	}
	if in.multiHeader, err = conf.FieldBool(ifMultiHeader); err != nil {
		return nil, err
	}
	if in.autoReplay, err = conf.FieldBool(service.AutoRetryNacksToggleFieldName); err != nil {
		return nil, err
	}
	if in.bufferBytes, err = byteSizeField(conf, ifBufferBytes); err != nil {
		return nil, err
	}
	if in.stallTimeout, err = conf.FieldDuration(ifStallTimeout); err != nil {
		return nil, err
	}
	if in.lagRefresh, err = conf.FieldDuration(ifLagRefresh); err != nil {
		return nil, err
	}
	if in.lagRefresh <= 0 {
		return nil, fmt.Errorf("%s must be positive, got %v", ifLagRefresh, in.lagRefresh)
	}
	if in.waitForTopics, err = conf.FieldBool(ifWaitForTopics); err != nil {
		return nil, err
	}
	if in.mergeUpTo, err = conf.FieldInt(ifMergeBatches); err != nil {
		return nil, err
	}
	if in.mergeUpTo < 0 {
		return nil, fmt.Errorf("merge_partition_batches must be 0 or more, got %d", in.mergeUpTo)
	}
	if in.requireAll, err = conf.FieldBool(ifRequireAll); err != nil {
		return nil, err
	}
	if in.requireAll && in.group == "" {
		return nil, errors.New("require_all_partitions needs a consumer_group")
	}
	if in.requireAll && in.regexpTopics {
		return nil, errors.New("require_all_partitions needs topics named in full (topics, not regexp_topics_include or regexp_topics)")
	}
	if conf.Contains(ifMaxYieldBytes) {
		if in.maxYieldBytes, err = byteSizeField(conf, ifMaxYieldBytes); err != nil {
			return nil, err
		}
	}
	if !in.batchPolicy.IsNoop() {
		// Each partition builds its own batcher later; one that cannot be
		// built is a config error now, not a silently ignored policy then.
		b, err := in.batchPolicy.NewBatcher(mgr)
		if err != nil {
			return nil, fmt.Errorf("batching: %w", err)
		}
		_ = b.Close(context.Background())
	}

	consumerOpts, err := in.consumerOptions(conf)
	if err != nil {
		return nil, err
	}
	in.baseOpts = in.clientOpts
	in.clientOpts = append(append([]kgo.Opt{}, in.clientOpts...), consumerOpts...)
	return in, nil
}

func (in *franzInput) consumerOptions(conf *service.ParsedConfig) ([]kgo.Opt, error) {
	fetchMax, err := byteSizeField(conf, ifFetchMaxBytes)
	if err != nil {
		return nil, err
	}
	if fetchMax > 512<<20 {
		// The client reads broker responses of up to twice it, and
		// franz-go refuses reads above 1GiB.
		return nil, fmt.Errorf("%s: at most 512MiB, got %d bytes", ifFetchMaxBytes, fetchMax)
	}
	fetchPart, err := byteSizeField(conf, ifFetchMaxPart)
	if err != nil {
		return nil, err
	}
	fetchWait, err := conf.FieldDuration(ifFetchMaxWait)
	if err != nil {
		return nil, err
	}
	fetchMin, err := byteSizeField(conf, ifFetchMinBytes)
	if err != nil {
		return nil, err
	}
	isolation, err := conf.FieldString(ifIsolation)
	if err != nil {
		return nil, err
	}
	reset := kgo.NewOffset().AtStart()
	oldest, err := conf.FieldBool(ifStartFromOldest)
	if err != nil {
		return nil, err
	}
	if !oldest {
		reset = kgo.NewOffset().AtEnd()
	}
	if conf.Contains(ifStartOffset) {
		so, err := conf.FieldString(ifStartOffset)
		if err != nil {
			return nil, err
		}
		switch so {
		case "earliest":
			reset = kgo.NewOffset().AtStart()
		case "latest":
			reset = kgo.NewOffset().AtEnd()
		case "committed":
			reset = kgo.NoResetOffset()
		default:
			return nil, fmt.Errorf("start_offset: unknown value %q", so)
		}
	}
	opts := []kgo.Opt{
		kgo.FetchMaxBytes(int32(fetchMax)),
		kgo.FetchMaxPartitionBytes(int32(fetchPart)),
		kgo.FetchMaxWait(fetchWait),
		kgo.FetchMinBytes(int32(fetchMin)),
		kgo.ConsumeResetOffset(reset),
		// A fetch response may legitimately exceed fetch_max_bytes (a single
		// record larger than the limit is returned whole); leave room so it
		// is read rather than failing the connection.
		kgo.BrokerMaxReadBytes(int32(max(2*fetchMax, 100<<20))),
	}
	switch isolation {
	case "read_committed":
		opts = append(opts, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	case "read_uncommitted":
	default:
		return nil, fmt.Errorf("%s: unknown value %q", ifIsolation, isolation)
	}
	switch {
	case in.regexpTopics:
		opts = append(opts, kgo.ConsumeTopics(in.topics...), kgo.ConsumeRegex())
		if len(in.excludeTopics) > 0 {
			opts = append(opts, kgo.ConsumeExcludeTopics(in.excludeTopics...))
		}
	case in.direct != nil:
		opts = append(opts, kgo.ConsumePartitions(in.direct))
	default:
		opts = append(opts, kgo.ConsumeTopics(in.topics...))
	}
	if in.group == "" {
		return opts, nil
	}
	instanceID, err := conf.FieldString(ifInstanceID)
	if err != nil {
		return nil, err
	}
	session, err := conf.FieldDuration(ifSessionTimeout)
	if err != nil {
		return nil, err
	}
	rebalance, err := conf.FieldDuration(ifRebalanceTO)
	if err != nil {
		return nil, err
	}
	heartbeat, err := conf.FieldDuration(ifHeartbeat)
	if err != nil {
		return nil, err
	}
	opts = append(opts,
		kgo.ConsumerGroup(in.group),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.SessionTimeout(session),
		kgo.RebalanceTimeout(rebalance),
		kgo.HeartbeatInterval(heartbeat),
	)
	if instanceID != "" {
		opts = append(opts, kgo.InstanceID(instanceID))
	}
	return opts, nil
}

// parsePartitionedTopics splits `topic:partition[-last][:offset]` items
// into explicit partitions; plain topics stay topics. Mixing both is
// refused: franz-go consumes either topics or explicit partitions.
// maxPartitionRange bounds topic:first-last (Kafka topics rarely have more
// than some thousands of partitions; a typo must not allocate billions).
const maxPartitionRange = 100_000

func parsePartitionedTopics(items []string) ([]string, map[string]map[int32]kgo.Offset, error) {
	var plain []string
	direct := map[string]map[int32]kgo.Offset{}
	for _, item := range items {
		parts := strings.Split(item, ":")
		if len(parts) == 1 {
			plain = append(plain, item)
			continue
		}
		if len(parts) > 3 || parts[0] == "" {
			return nil, nil, fmt.Errorf("topics: %q: want topic, topic:partition, topic:first-last or topic:partition:offset", item)
		}
		first, last, isRange := strings.Cut(parts[1], "-")
		lo, err := strconv.ParseInt(first, 10, 32)
		if err != nil {
			return nil, nil, fmt.Errorf("topics: %q: bad partition: %w", item, err)
		}
		hi := lo
		if isRange {
			if hi, err = strconv.ParseInt(last, 10, 32); err != nil || hi < lo {
				return nil, nil, fmt.Errorf("topics: %q: bad partition range", item)
			}
		}
		if lo < 0 || hi-lo >= maxPartitionRange {
			return nil, nil, fmt.Errorf("topics: %q: partitions from 0, at most %d in a range", item, maxPartitionRange)
		}
		offset := kgo.NewOffset().AtStart()
		if len(parts) == 3 {
			if isRange {
				return nil, nil, fmt.Errorf("topics: %q: an offset needs a single partition", item)
			}
			o, err := strconv.ParseInt(parts[2], 10, 64)
			if err != nil {
				return nil, nil, fmt.Errorf("topics: %q: bad offset: %w", item, err)
			}
			offset = kgo.NewOffset().At(o)
		}
		if direct[parts[0]] == nil {
			direct[parts[0]] = map[int32]kgo.Offset{}
		}
		for p := lo; p <= hi; p++ {
			direct[parts[0]][int32(p)] = offset
		}
	}
	if len(direct) == 0 {
		return plain, nil, nil
	}
	if len(plain) > 0 {
		return nil, nil, fmt.Errorf("topics: mix of whole topics %v and explicit partitions: use one form", plain)
	}
	topics := make([]string, 0, len(direct))
	for t := range direct {
		topics = append(topics, t)
	}
	return topics, direct, nil
}

func byteSizeField(conf *service.ParsedConfig, name string) (int, error) {
	s, err := conf.FieldString(name)
	if err != nil {
		return 0, err
	}
	n, err := humanize.ParseBytes(s)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	if n == 0 || n > 1<<30 {
		return 0, fmt.Errorf("%s: %q must be between 1B and 1GiB", name, s)
	}
	return int(n), nil
}

// Connect creates the client, checks that a broker answers and that the
// topics exist, and starts the poll and commit loops.
func (in *franzInput) Connect(ctx context.Context) error {
	in.connMu.Lock()
	defer in.connMu.Unlock()
	if in.conn != nil {
		select {
		case <-in.conn.failed:
			// The poll loop ended without Close (the client was closed
			// under it): start over with a new client.
			in.stopConn(ctx, in.conn)
		default:
			return nil
		}
	}
	c := &franzConn{parts: map[topicPartition]*partitionState{}, failed: make(chan struct{}),
		whole: make(chan struct{}), partial: make(chan struct{}), partialSince: time.Now()}
	close(c.partial) // holding nothing yet
	// Callbacks may run before NewClient returns: everything they touch
	// exists first, and they use the client they are given.
	c.ctx, c.cancel = context.WithCancel(context.Background())
	opts := append([]kgo.Opt{}, in.clientOpts...)
	if in.group != "" {
		opts = append(opts,
			kgo.OnPartitionsAssigned(func(ctx context.Context, cl *kgo.Client, assigned map[string][]int32) {
				in.onAssigned(ctx, c, cl, assigned)
			}),
			kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
				in.onRevoked(ctx, c, cl, revoked)
			}),
			kgo.OnPartitionsLost(func(_ context.Context, cl *kgo.Client, lost map[string][]int32) {
				in.onLost(c, cl, lost)
			}),
		)
	}
	// Check the cluster with a plain client first: a group client joins at
	// once, and a failed check would make every retry a join and a leave,
	// rebalancing the other members each time.
	probe, err := kgo.NewClient(in.baseOpts...)
	if err != nil {
		c.cancel()
		return fmt.Errorf("creating kafka client: %w", err)
	}
	err = pingBrokers(ctx, probe)
	if err == nil {
		err = in.checkTopics(ctx, probe)
	}
	if err == nil {
		c.clusterID = in.clusterID(ctx, probe)
	}
	probe.Close()
	if err != nil {
		c.cancel()
		return err
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		c.cancel()
		return fmt.Errorf("creating kafka client: %w", err)
	}
	c.client = cl
	c.wg.Add(2)
	go func() { defer c.wg.Done(); defer close(c.failed); in.pollLoop(c) }()
	go func() { defer c.wg.Done(); in.commitLoop(c) }()
	in.conn = c
	return nil
}

// clusterID asks the cluster its id (kafka_cluster_id); "" when it does
// not say, or cannot be asked.
func (in *franzInput) clusterID(ctx context.Context, cl *kgo.Client) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	meta, err := kadm.NewClient(cl).BrokerMetadata(ctx)
	if err != nil {
		in.log.Warnf("kafka_franz: reading the cluster's id failed (kafka_cluster_id is not set): %v", err)
		return ""
	}
	return meta.Cluster
}

// checkTopics fails the connection while a named topic is missing, unless
// wait_for_topics is set.
func (in *franzInput) checkTopics(ctx context.Context, cl *kgo.Client) error {
	if in.regexpTopics {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	details, err := kadm.NewClient(cl).ListTopics(ctx, in.topics...)
	if err != nil {
		return fmt.Errorf("listing topics: %w", err)
	}
	var missing []string
	for _, t := range in.topics {
		if d, ok := details[t]; !ok || d.Err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if in.waitForTopics {
		in.log.Warnf("kafka_franz: topics %v do not exist yet; consuming them once they appear (wait_for_topics: true)", missing)
		return nil
	}
	return fmt.Errorf("topics %v do not exist (create them, or set wait_for_topics: true to wait for them)", missing)
}

// ReadBatch returns the next batch of any partition.
func (in *franzInput) ReadBatch(ctx context.Context) (service.MessageBatch, service.AckFunc, error) {
	in.connMu.Lock()
	c := in.conn
	in.connMu.Unlock()
	if c == nil {
		return nil, nil, service.ErrNotConnected
	}
	for {
		var partial chan struct{} // nil (never ready) without require_all_partitions
		if in.requireAll {
			var whole chan struct{}
			whole, partial = c.gate()
			select {
			case <-whole:
			case <-c.failed:
				return nil, nil, service.ErrNotConnected
			case <-ctx.Done():
				return nil, nil, ctx.Err()
			}
			if _, partial = c.gate(); c.isPartial() {
				continue // closed again meanwhile
			}
		}
		in.stashMu.Lock()
		pb := in.stash
		in.stash = nil
		in.stashMu.Unlock()
		if pb != nil && !pb.stale() {
			return pb.msgs, pb.ack, nil
		}
	read:
		for {
			select {
			case pb := <-in.batches:
				if pb.stale() {
					continue
				}
				if in.requireAll && c.isPartial() {
					// Taken as the gate closed: delivered first once it
					// opens again (unless its partition is gone by then).
					in.stashMu.Lock()
					in.stash = &pb
					in.stashMu.Unlock()
					break read
				}
				if in.mergeUpTo > 0 && !pb.replay {
					pb = in.mergeReady(pb)
				}
				return pb.msgs, pb.ack, nil
			case <-partial:
				break read // wait for the gate to open again
			case <-c.failed:
				return nil, nil, service.ErrNotConnected
			case <-ctx.Done():
				return nil, nil, ctx.Err()
			}
		}
	}
}

// mergeReady appends to first every batch that partitions have ready now,
// while the result holds fewer than mergeUpTo records. It never waits: a
// worker is ready exactly when it is blocked handing over its batch. A
// partition's batches are taken in the order it hands them over, so its
// records stay in order. The merged ack acks every part with the same
// outcome (a nack replays each part, in order, before anything newer).
// Replays are not merged: see pendingBatch.replay.
func (in *franzInput) mergeReady(first pendingBatch) pendingBatch {
	var parts []pendingBatch
	n := len(first.msgs)
	for n < in.mergeUpTo {
		select {
		case pb := <-in.batches:
			if pb.stale() {
				continue
			}
			if pb.replay {
				// Delivered alone, next (its partition has nothing newer
				// in between: a replay keeps its in-flight slot).
				in.stashMu.Lock()
				in.stash = &pb
				in.stashMu.Unlock()
				break
			}
			parts = append(parts, pb)
			n += len(pb.msgs)
			continue
		default:
		}
		break
	}
	if len(parts) == 0 {
		return first
	}
	parts = append([]pendingBatch{first}, parts...)
	msgs := make(service.MessageBatch, 0, n)
	for _, pb := range parts {
		msgs = append(msgs, pb.msgs...)
	}
	return pendingBatch{msgs: msgs, ack: func(ctx context.Context, err error) error {
		var errs []error
		for _, pb := range parts {
			if aerr := pb.ack(ctx, err); aerr != nil {
				errs = append(errs, aerr)
			}
		}
		return errors.Join(errs...)
	}}
}

// Close commits what is acked, leaves the group and stops every goroutine.
func (in *franzInput) Close(ctx context.Context) error {
	in.connMu.Lock()
	defer in.connMu.Unlock()
	if in.conn != nil {
		in.stopConn(ctx, in.conn)
		in.conn = nil
	}
	return nil
}

func (in *franzInput) stopConn(ctx context.Context, c *franzConn) {
	c.partsMu.Lock()
	c.stopping = true // no worker starts once Wait may have begun
	c.partsMu.Unlock()
	c.cancel()
	c.wg.Wait()
	if in.group != "" {
		in.commit(ctx, c, nil)
	}
	// Close leaves the group; the revoke callback commits anything acked
	// since, then drops every partition.
	c.client.Close()
	c.partsMu.Lock()
	for tp, p := range c.parts {
		p.close()
		delete(c.parts, tp)
	}
	c.partsMu.Unlock()
}

// pollLoop fetches and hands records to partition workers. With a group,
// BlockRebalanceOnPoll makes rebalance callbacks wait until AllowRebalance:
// records of a poll are dispatched to the states of the assignment they
// were fetched under, never to a later one.
func (in *franzInput) pollLoop(c *franzConn) {
	if in.group != "" {
		// A poll that returned records holds off rebalances until
		// AllowRebalance; never exit holding them, or leaving the group
		// on Close would wait forever.
		defer c.client.AllowRebalance()
	}
	reported := map[string]string{}
	for {
		fetches := c.client.PollRecords(c.ctx, pollMaxRecords)
		if fetches.IsClientClosed() || c.ctx.Err() != nil {
			return
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			if errors.Is(err, context.Canceled) {
				return
			}
			key := topic + "/" + strconv.Itoa(int(partition))
			if reported[key] != err.Error() {
				reported[key] = err.Error()
				in.log.Errorf("kafka_franz: fetching %s: %v (retrying; no offset is skipped)", key, err)
			}
		})
		fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
			if fp.Err == nil {
				delete(reported, fp.Topic+"/"+strconv.Itoa(int(fp.Partition)))
			}
			if p := in.partition(c, topicPartition{fp.Topic, fp.Partition}); p != nil {
				p.push(fp.Records, fp.HighWatermark)
			} // else not ours (any more)
		})
		if in.group != "" {
			c.client.AllowRebalance()
		}
	}
}

// partition returns the state of an owned partition. Without a group there
// are no assignment callbacks: every partition fetched is ours.
func (in *franzInput) partition(c *franzConn, tp topicPartition) *partitionState {
	c.partsMu.Lock()
	defer c.partsMu.Unlock()
	if p, ok := c.parts[tp]; ok {
		return p
	}
	if in.group != "" {
		return nil
	}
	return in.startPartitionLocked(c, c.client, tp, -1)
}

// startPartitionLocked starts consuming tp; resumeAt is the offset the
// group had committed for it, -1 for none.
func (in *franzInput) startPartitionLocked(c *franzConn, cl *kgo.Client, tp topicPartition, resumeAt int64) *partitionState {
	p := newPartitionState(in, tp)
	p.resumeAt = resumeAt
	p.client = cl
	p.cluster = c.clusterID
	if c.stopping {
		// Close waits for the workers: none may start now (an assignment
		// the closing client still reports). Closed with the others.
		c.parts[tp] = p
		return p
	}
	var batcher *service.Batcher
	if !in.batchPolicy.IsNoop() {
		b, err := in.batchPolicy.NewBatcher(in.res)
		if err != nil {
			// The policy was built once at construction, so this should not
			// happen. Delivering without it would skip its processors: keep
			// the partition idle instead, where lag and stall reports show it.
			in.log.Errorf("kafka_franz: %s: building the batching policy failed, the partition is not consumed: %v", tp, err)
			c.parts[tp] = p
			return p
		}
		batcher = b
	}
	c.parts[tp] = p
	c.wg.Add(1)
	go func() { defer c.wg.Done(); p.run(c.ctx, batcher) }()
	return p
}

func (in *franzInput) onAssigned(ctx context.Context, c *franzConn, cl *kgo.Client, assigned map[string][]int32) {
	resume, known := in.committedOffsets(ctx, cl, assigned)
	c.partsMu.Lock()
	c.gen++
	for topic, parts := range assigned {
		for _, part := range parts {
			tp := topicPartition{topic, part}
			if old, ok := c.parts[tp]; ok {
				old.close()
			}
			resumeAt, ok := resume[tp]
			switch {
			case !known:
				resumeAt = resumeUnknown
			case !ok:
				resumeAt = -1
			}
			in.startPartitionLocked(c, cl, tp, resumeAt)
		}
	}
	// Paused partitions stay paused across rebalances: a new ownership
	// starts with fetching on.
	c.partsMu.Unlock()
	cl.ResumeFetchPartitions(assigned)
	in.log.Infof("kafka_franz: assigned %v", assigned)
	in.checkWhole(c, cl)
}

// committedOffsets returns the group's committed offsets of the assigned
// partitions that have one above the partition's log start (the offsets
// the client resumes from): a group reset to the earliest offset reads
// what a new group would, so it is not "resumed". Asked once per
// assignment, within a few seconds (the callback holds up the group's
// next rebalance); on failure the partitions go on unmarked.
func (in *franzInput) committedOffsets(ctx context.Context, cl *kgo.Client, assigned map[string][]int32) (map[topicPartition]int64, bool) {
	ctx, cancel := context.WithTimeout(ctx, 4*time.Second)
	defer cancel()
	adm := kadm.NewClient(cl)
	committed, err := adm.FetchOffsets(ctx, in.group)
	if err != nil {
		in.log.Warnf("kafka_franz: reading the committed offsets of group %s failed (kafka_resume_offset is -1, unknown): %v", in.group, err)
		return nil, false
	}
	topics := make([]string, 0, len(assigned))
	for t := range assigned {
		topics = append(topics, t)
	}
	starts, err := adm.ListStartOffsets(ctx, topics...)
	if err != nil {
		in.log.Warnf("kafka_franz: listing the start offsets of %v failed (kafka_resume_offset is -1, unknown): %v", topics, err)
		return nil, false
	}
	out := map[topicPartition]int64{}
	for topic, parts := range assigned {
		for _, part := range parts {
			c, ok := committed.Lookup(topic, part)
			if !ok || c.Err != nil || c.At < 0 {
				continue
			}
			if st, ok := starts.Lookup(topic, part); ok && st.Err == nil && c.At <= st.Offset {
				continue
			}
			out[topicPartition{topic, part}] = c.At
		}
	}
	return out, true
}

// checkWhole opens or closes the require_all_partitions gate: open while
// the partitions held are every partition of the topics (as the cluster's
// metadata has them now). Called after partitions are assigned, and every
// second while the gate is closed.
func (in *franzInput) checkWhole(c *franzConn, cl *kgo.Client) {
	if !in.requireAll {
		return
	}
	c.partsMu.Lock()
	gen := c.gen
	c.partsMu.Unlock()
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	details, err := kadm.NewClient(cl).ListTopics(ctx, in.topics...)
	cancel()

	c.wholeMu.Lock()
	defer c.wholeMu.Unlock()
	c.partsMu.Lock()
	if c.gen != gen || c.dropping > 0 {
		c.partsMu.Unlock()
		return // the assignment changed meanwhile, or is changing: whoever changes it checks again
	}
	held, total := 0, 0
	if err == nil {
		for _, t := range in.topics {
			d, ok := details[t]
			if !ok || d.Err != nil {
				continue // not there yet (wait_for_topics): nothing to hold
			}
			for p := range d.Partitions {
				total++
				if _, ok := c.parts[topicPartition{t, p}]; ok {
					held++
				}
			}
		}
	}
	c.partsMu.Unlock()
	if err == nil && held == total && total > 0 {
		select {
		case <-c.whole:
		default:
			close(c.whole)
			c.partial = make(chan struct{})
			if !c.partialLog.IsZero() {
				in.log.Infof("kafka_franz: this member holds every partition of %v again: consuming", in.topics)
			}
		}
		return
	}
	c.setPartialLocked()
	if time.Since(c.partialLog) < 30*time.Second || time.Since(c.partialSince) < 5*time.Second {
		return // a rebalance in progress passes through partial holdings
	}
	c.partialLog = time.Now()
	switch {
	case err != nil:
		in.log.Errorf("kafka_franz: delivering nothing for %v: this member's partitions cannot be compared with the topics' (require_all_partitions): listing topics: %v", time.Since(c.partialSince).Round(time.Second), err)
	case total == 0:
		in.log.Warnf("kafka_franz: waiting for topics %v to exist (require_all_partitions: delivering once this member holds all their partitions)", in.topics)
	default:
		in.log.Errorf("kafka_franz: delivering nothing for %v: this member holds %d of the %d partitions of %v, and require_all_partitions is set. Is another member in group %q? A pipeline with local state (cdc_join) must run alone in its group: stop the other one.", time.Since(c.partialSince).Round(time.Second), held, total, in.topics, in.group)
	}
}

// closeGate closes the require_all_partitions gate: partitions are going.
// It stays closed at least until the matching endDrop; the assignment that
// follows checks it again.
func (in *franzInput) closeGate(c *franzConn) {
	c.partsMu.Lock()
	c.dropping++
	c.gen++
	c.partsMu.Unlock()
	if !in.requireAll {
		return
	}
	c.wholeMu.Lock()
	defer c.wholeMu.Unlock()
	c.setPartialLocked()
}

// endDrop ends what closeGate began: the partitions are dropped.
func (in *franzInput) endDrop(c *franzConn) {
	c.partsMu.Lock()
	c.dropping--
	c.partsMu.Unlock()
}

// onRevoked commits what is acked of the revoked partitions, then drops
// them: their in-flight batches will be redelivered to the new owner.
func (in *franzInput) onRevoked(ctx context.Context, c *franzConn, cl *kgo.Client, revoked map[string][]int32) {
	set := map[topicPartition]bool{}
	for topic, parts := range revoked {
		for _, part := range parts {
			set[topicPartition{topic, part}] = true
		}
	}
	if len(set) > 0 {
		in.closeGate(c) // a member that loses partitions cannot hold them all
		defer in.endDrop(c)
	}
	c.commitMu.Lock()
	defer c.commitMu.Unlock()
	in.commitLocked(ctx, c, cl, set)
	in.dropPartitions(c, cl, set)
	if len(set) > 0 {
		in.log.Infof("kafka_franz: revoked %v", revoked)
	}
}

// onLost drops partitions without committing: the group already gave them
// to someone else, and a commit now could overwrite theirs.
func (in *franzInput) onLost(c *franzConn, cl *kgo.Client, lost map[string][]int32) {
	set := map[topicPartition]bool{}
	for topic, parts := range lost {
		for _, part := range parts {
			set[topicPartition{topic, part}] = true
		}
	}
	in.closeGate(c)
	defer in.endDrop(c)
	c.commitMu.Lock()
	defer c.commitMu.Unlock()
	in.dropPartitions(c, cl, set)
	in.log.Warnf("kafka_franz: lost partitions %v; their in-flight batches are dropped and will be redelivered to their new owner", lost)
}

func (in *franzInput) dropPartitions(c *franzConn, cl *kgo.Client, set map[topicPartition]bool) {
	c.partsMu.Lock()
	c.gen++
	resume := map[string][]int32{}
	for tp := range set {
		if p, ok := c.parts[tp]; ok {
			p.close()
			delete(c.parts, tp)
			resume[tp.topic] = append(resume[tp.topic], tp.partition)
			in.lag.Set(0, tp.topic, strconv.Itoa(int(tp.partition)))
		}
	}
	c.partsMu.Unlock()
	cl.ResumeFetchPartitions(resume)
}

// commitLoop commits acked offsets every commit_period, updates lag and
// stall reports every topic_lag_refresh_period, and re-checks a closed
// require_all_partitions gate every second.
func (in *franzInput) commitLoop(c *franzConn) {
	commit := time.NewTicker(in.commitPeriod)
	defer commit.Stop()
	watch := time.NewTicker(in.lagRefresh)
	defer watch.Stop()
	gate := time.NewTicker(time.Second) // require_all_partitions' re-check
	defer gate.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-commit.C:
			if in.group != "" {
				in.commit(c.ctx, c, nil)
			}
		case <-watch.C:
			in.watchLag(c)
		case <-gate.C:
			if in.requireAll && c.isPartial() {
				in.checkWhole(c, c.client)
			}
		}
	}
}

func (in *franzInput) watchLag(c *franzConn) {
	c.partsMu.Lock()
	parts := make([]*partitionState, 0, len(c.parts))
	for _, p := range c.parts {
		parts = append(parts, p)
	}
	c.partsMu.Unlock()
	for _, p := range parts {
		lag := p.lag()
		if lag < 0 {
			continue
		}
		in.lag.Set(lag, p.tp.topic, strconv.Itoa(int(p.tp.partition)))
		p.mu.Lock()
		if lag > 0 && !p.stalled && time.Since(p.lastProgress) > in.stallTimeout {
			p.stalled = true
			in.log.Warnf("kafka_franz: %s is stalled: lag %d and no progress for %v (a processor or the output is waiting: the log says which, e.g. a registry or a database down)", p.tp, lag, time.Since(p.lastProgress).Round(time.Second))
		}
		p.mu.Unlock()
	}
}

// commit commits acked offsets of the partitions in only (all when nil).
func (in *franzInput) commit(ctx context.Context, c *franzConn, only map[topicPartition]bool) {
	c.commitMu.Lock()
	defer c.commitMu.Unlock()
	in.commitLocked(ctx, c, c.client, only)
}

func (in *franzInput) commitLocked(ctx context.Context, c *franzConn, cl *kgo.Client, only map[topicPartition]bool) {
	offsets := map[string]map[int32]kgo.EpochOffset{}
	states := map[topicPartition]*partitionState{}
	c.partsMu.Lock()
	for tp, p := range c.parts {
		if only != nil && !only[tp] {
			continue
		}
		if eo, ok := p.commitOffset(); ok {
			if offsets[tp.topic] == nil {
				offsets[tp.topic] = map[int32]kgo.EpochOffset{}
			}
			offsets[tp.topic][tp.partition] = eo
			states[tp] = p
		}
	}
	c.partsMu.Unlock()
	if len(offsets) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cl.CommitOffsetsSync(ctx, offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			in.log.Errorf("kafka_franz: committing offsets: %v (they will be committed again)", err)
			return
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				tp := topicPartition{t.Topic, p.Partition}
				if p.ErrorCode != 0 {
					in.log.Errorf("kafka_franz: committing %s: error code %d (will retry)", tp, p.ErrorCode)
					continue
				}
				if st, ok := states[tp]; ok {
					st.markCommitted(offsets[t.Topic][p.Partition].Offset)
				}
			}
		}
	})
}

// toMessage converts a record, with its metadata.
func (in *franzInput) toMessage(r *kgo.Record) *service.Message {
	msg := service.NewMessage(r.Value)
	msg.MetaSetMut("kafka_key", string(r.Key))
	msg.MetaSetMut("kafka_topic", r.Topic)
	msg.MetaSetMut("kafka_partition", int(r.Partition))
	msg.MetaSetMut("kafka_offset", int(r.Offset))
	msg.MetaSetMut("kafka_timestamp_ms", r.Timestamp.UnixMilli())
	msg.MetaSetMut("kafka_timestamp_unix", r.Timestamp.Unix())
	msg.MetaSetMut("kafka_tombstone_message", r.Value == nil)
	if in.multiHeader {
		multi := map[string][]any{}
		for _, h := range r.Headers {
			multi[h.Key] = append(multi[h.Key], string(h.Value))
		}
		for k, v := range multi {
			msg.MetaSetMut(k, v)
		}
	} else {
		for _, h := range r.Headers {
			msg.MetaSetMut(h.Key, string(h.Value))
		}
	}
	return msg
}
