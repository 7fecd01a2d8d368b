package simulate

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
)

// Partitions is the partition count of the topics Run creates.
const Partitions = 3

// flushTimeout bounds how long Run waits, after its context ends, for the
// acknowledgement of the records it already handed to the client.
const flushTimeout = 10 * time.Second

// connectTimeout bounds Run's first exchange with Kafka (creating the topics).
const connectTimeout = 30 * time.Second

// Stats counts what Run produced and Kafka acknowledged.
type Stats struct {
	// Events is the number of change events per topic (tombstones apart).
	Events map[string]int
	// Tombstones is the number of tombstones (one per delete).
	Tombstones int
	// Elapsed is the time from the first record to the last acknowledgement.
	Elapsed time.Duration
}

// Total is the number of change events over all topics.
func (s Stats) Total() int {
	n := 0
	for _, v := range s.Events {
		n += v
	}
	return n
}

// EventsPerSecond is the achieved rate of change events.
func (s Stats) EventsPerSecond() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Total()) / s.Elapsed.Seconds()
}

// Register registers cfg's key and value schemas of the three topics under
// <topic>-key and <topic>-value (TopicNameStrategy) and returns their ids.
// Registering a schema that is already there returns its id.
func Register(ctx context.Context, cfg Config, registryURL string) (map[Table]SchemaIDs, error) {
	cfg, err := cfg.normalized()
	if err != nil {
		return nil, err
	}
	// Credentials in the URL are sent as basic auth, and the URL the
	// client (and its errors) sees has none.
	opts := []sr.ClientOpt{sr.URLs(registryURL)}
	if u, err := url.Parse(registryURL); err == nil && u.User != nil {
		pass, _ := u.User.Password()
		opts = append(opts, sr.BasicAuth(u.User.Username(), pass))
		u.User = nil
		opts[0] = sr.URLs(u.String())
	}
	rc, err := sr.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("simulate: registry client for %s: %w", redactURL(registryURL), err)
	}
	ids := map[Table]SchemaIDs{}
	for _, t := range Tables() {
		key, value, err := schemaTexts(cfg, t)
		if err != nil {
			return nil, err
		}
		var id SchemaIDs
		for _, s := range []struct {
			subject string
			text    string
			id      *int
		}{{cfg.Topic(t) + "-key", key, &id.Key}, {cfg.Topic(t) + "-value", value, &id.Value}} {
			got, err := rc.CreateSchema(ctx, s.subject, sr.Schema{Schema: s.text, Type: sr.TypeAvro})
			if err != nil {
				return nil, fmt.Errorf("simulate: registering %s at %s: %w", s.subject, redactURL(registryURL), err)
			}
			*s.id = got.ID
		}
		ids[t] = id
	}
	return ids, nil
}

// Run registers the schemas, creates the three topics if they do not exist
// (Partitions partitions, the broker's replication factor), and produces
// the traffic of cfg in order, each delete followed by its tombstone, at
// cfg.Rate change events per second (0: as fast as possible). brokers is a
// comma-separated list of seed brokers.
//
// Records are keyed by their encoded key and partitioned as the Java
// producer does (murmur2 of the key bytes), so a row's changes and its
// tombstone share a partition and stay in order.
//
// When ctx ends, Run stops producing, waits (bounded) for what it already
// handed to Kafka, and returns the stats so far with ctx's error.
func Run(ctx context.Context, cfg Config, brokers, registryURL string) (Stats, error) {
	stats := Stats{Events: map[string]int{}}
	cfg, err := cfg.normalized()
	if err != nil {
		return stats, err
	}
	events, err := Events(cfg)
	if err != nil {
		return stats, err
	}
	seeds := splitBrokers(brokers)
	if len(seeds) == 0 {
		return stats, errors.New("simulate: no brokers given")
	}
	ids, err := Register(ctx, cfg, registryURL)
	if err != nil {
		return stats, err
	}
	enc, err := NewEncoder(cfg, ids)
	if err != nil {
		return stats, err
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(seeds...),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.ProducerLinger(5*time.Millisecond),
	)
	if err != nil {
		return stats, fmt.Errorf("simulate: kafka client: %w", err)
	}
	defer cl.Close()
	// A broker that never answers would otherwise be retried forever.
	topicsCtx, cancel := context.WithTimeout(ctx, connectTimeout)
	err = ensureTopics(topicsCtx, kadm.NewClient(cl), cfg)
	cancel()
	if err != nil {
		return stats, fmt.Errorf("%w (brokers %s)", err, brokers)
	}

	// Records are produced under produceCtx, which outlives ctx by
	// flushTimeout: after an interrupt, what was already handed to the
	// client gets that long to be acknowledged instead of failing at once.
	produceCtx, cancelProduce := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelProduce()
	stopGrace := graceAfter(ctx, flushTimeout, cancelProduce)
	defer stopGrace()

	var (
		mu      sync.Mutex
		prodErr error
		last    time.Time
	)
	acked := func(r *kgo.Record, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			if prodErr == nil {
				prodErr = fmt.Errorf("simulate: producing to %s: %w", r.Topic, err)
			}
			return
		}
		if r.Value == nil {
			stats.Tombstones++
		} else {
			stats.Events[r.Topic]++
		}
		last = time.Now()
	}
	failed := func() error {
		mu.Lock()
		defer mu.Unlock()
		return prodErr
	}

	start := time.Now()
	n := 0
	var loopErr error
	for ev := range events {
		if loopErr = pace(ctx, start, n, cfg.Rate); loopErr != nil {
			break
		}
		if loopErr = failed(); loopErr != nil {
			break
		}
		if cfg.WallClock {
			now := time.Now().UnixMicro()
			ev.Source.TsUs, ev.TsUs = now, now
		}
		key, err := enc.Key(ev)
		if err != nil {
			loopErr = err
			break
		}
		value, err := enc.Value(ev)
		if err != nil {
			loopErr = err
			break
		}
		cl.Produce(produceCtx, &kgo.Record{Topic: ev.Topic, Key: key, Value: value}, acked)
		if ev.Op == OpDelete {
			cl.Produce(produceCtx, &kgo.Record{Topic: ev.Topic, Key: key}, acked)
		}
		n++
	}
	flushErr := cl.Flush(produceCtx)

	// A copy: after a failed flush, late acknowledgements may still count.
	mu.Lock()
	defer mu.Unlock()
	out := Stats{Events: maps.Clone(stats.Events), Tombstones: stats.Tombstones}
	if !last.IsZero() {
		out.Elapsed = last.Sub(start)
	}
	switch {
	case loopErr != nil:
		return out, loopErr
	case prodErr != nil:
		return out, prodErr
	case flushErr != nil:
		return out, fmt.Errorf("simulate: flushing: %w", flushErr)
	}
	return out, nil
}

// graceAfter calls cancel once grace has passed after ctx ended. The
// returned stop ends the watch and waits for its goroutine.
func graceAfter(ctx context.Context, grace time.Duration, cancel func()) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-done:
			return
		case <-ctx.Done():
		}
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			cancel()
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}

// pace waits until the n-th event is due at rate events per second.
func pace(ctx context.Context, start time.Time, n int, rate float64) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("simulate: stopped after %d events: %w", n, err)
	}
	if rate <= 0 {
		return nil
	}
	wait := time.Until(start.Add(time.Duration(float64(n) / rate * float64(time.Second))))
	if wait <= 0 {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return fmt.Errorf("simulate: stopped after %d events: %w", n, ctx.Err())
	case <-t.C:
		return nil
	}
}

// ensureTopics creates the topics that do not exist yet. Topics that exist
// are used as they are, whatever their partition count.
func ensureTopics(ctx context.Context, adm *kadm.Client, cfg Config) error {
	var topics []string
	for _, t := range Tables() {
		topics = append(topics, cfg.Topic(t))
	}
	resp, err := adm.CreateTopics(ctx, Partitions, -1, nil, topics...)
	if err != nil {
		return fmt.Errorf("simulate: creating topics: %w", err)
	}
	for _, r := range resp.Sorted() {
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("simulate: creating topic %s: %w", r.Topic, r.Err)
		}
	}
	return nil
}

func splitBrokers(s string) []string {
	var out []string
	for _, b := range strings.Split(s, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// redactURL hides a URL's password, for errors.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(an unreadable URL)"
	}
	return u.Redacted()
}
