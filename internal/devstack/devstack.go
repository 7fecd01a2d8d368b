// Package devstack runs the servers a pipeline talks to, on loopback only:
// a Kafka-protocol broker (franz-go's kfake over real TCP), a
// Confluent-compatible schema registry over HTTP, and a throwaway PostgreSQL
// cluster. `odsflow dev` runs one for people; integration tests run one per
// test or per package (ForTest, or Start/Close from TestMain), so that every
// test talks to real servers through real sockets.
package devstack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/odsflow/odsflow/internal/pgcluster"
	"github.com/odsflow/odsflow/internal/schemaregistry"
)

// Config selects what Start brings up and where. The zero value starts all
// three parts on free loopback ports, topics with 3 partitions.
type Config struct {
	// KafkaAddr is the broker's listen address; "" means 127.0.0.1:0 (any
	// free port). The host must be a loopback address.
	KafkaAddr string
	// RegistryAddr is the schema registry's listen address, like KafkaAddr.
	RegistryAddr string
	// Partitions of auto-created topics; default 3.
	Partitions int
	// KafkaOptions are appended to the broker's options (tests use them,
	// e.g. for a shorter minimum session timeout).
	KafkaOptions []kfake.Opt

	// PostgresPort is the throwaway cluster's port; 0 picks a free one.
	PostgresPort int
	// PostgresDSN uses an existing server instead of starting one.
	PostgresDSN string
	// NoPostgres skips PostgreSQL altogether.
	NoPostgres bool
	// PostgresDurable keeps fsync on in the throwaway cluster (benchmarks:
	// a commit costs what it costs on a real server).
	PostgresDurable bool
}

// Stack is a running dev stack. Its fields are read-only after Start.
type Stack struct {
	// Brokers is the broker address for KAFKA_BROKERS / seed_brokers.
	Brokers string
	// RegistryURL is the schema registry's base URL.
	RegistryURL string
	// PostgresDSN is the ODS database's connection string; empty with
	// NoPostgres.
	PostgresDSN string

	kafka    *kfake.Cluster
	registry *http.Server
	served   chan error // the registry's Serve result, once it returns
	// stoppedRegistry: the registry's handler while StopRegistry has it down.
	stoppedRegistry http.Handler
	pg              *pgcluster.Cluster
}

// PortInUseError reports a listen address taken by another process, naming
// the part of the stack that wanted it.
type PortInUseError struct {
	Part string // "kafka", "registry" or "postgres"
	Addr string
}

func (e *PortInUseError) Error() string {
	return fmt.Sprintf("%s: %s is already in use by another process", e.Part, e.Addr)
}

// LoopbackAddr normalizes a listen address and refuses anything that is not
// loopback: the dev stack has no authentication and must never be reachable
// from another machine. "" and "localhost" mean 127.0.0.1; a missing port
// means 0.
func LoopbackAddr(addr string) (string, error) {
	if addr == "" {
		return "127.0.0.1:0", nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("address %q: %w", addr, err)
	}
	if host == "" || host == "localhost" {
		host = "127.0.0.1"
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return "", fmt.Errorf("address %q: the dev stack listens on loopback only (use 127.0.0.1 or [::1])", addr)
	}
	return net.JoinHostPort(host, port), nil
}

func listen(part, addr string) (net.Listener, error) {
	addr, err := LoopbackAddr(addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", part, err)
	}
	ln, err := net.Listen("tcp", addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, &PortInUseError{Part: part, Addr: addr}
	}
	if err != nil {
		return nil, fmt.Errorf("%s: listening on %s: %w", part, addr, err)
	}
	return ln, nil
}

// Start brings up the configured parts and returns once each accepts
// connections. On error, whatever was started is stopped again.
func Start(ctx context.Context, cfg Config) (_ *Stack, err error) {
	if cfg.Partitions <= 0 {
		cfg.Partitions = 3
	}
	s := &Stack{}
	defer func() {
		if err != nil {
			_ = s.Close(context.Background())
		}
	}()

	// kfake binds through ListenFn, so we hand it our own listener: one
	// place checks loopback and turns EADDRINUSE into a clear error.
	kln, err := listen("kafka", cfg.KafkaAddr)
	if err != nil {
		return nil, err
	}
	// Each stack is a new cluster, with an id of its own as a real one
	// has: a pipeline's state kept from an earlier stack is refused for it
	// (cdc_join's require_history), not joined against records it never saw.
	var id [8]byte
	_, _ = rand.Read(id[:]) // crypto/rand.Read never fails (Go 1.24+)
	opts := append([]kfake.Opt{
		kfake.Ports(kln.Addr().(*net.TCPAddr).Port),
		kfake.ListenFn(func(string, string) (net.Listener, error) { return kln, nil }),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(cfg.Partitions),
		kfake.ClusterID("odsflow-dev-" + hex.EncodeToString(id[:])),
	}, cfg.KafkaOptions...)
	if s.kafka, err = kfake.NewCluster(opts...); err != nil {
		kln.Close()
		return nil, fmt.Errorf("kafka: starting kfake: %w", err)
	}
	s.Brokers = s.kafka.ListenAddrs()[0]

	rln, err := listen("registry", cfg.RegistryAddr)
	if err != nil {
		return nil, err
	}
	s.registry = &http.Server{Handler: schemaregistry.New(), ReadHeaderTimeout: 10 * time.Second}
	s.served = make(chan error, 1)
	go func() { s.served <- s.registry.Serve(rln) }()
	s.RegistryURL = "http://" + rln.Addr().String()

	switch {
	case cfg.NoPostgres:
	case cfg.PostgresDSN != "":
		s.PostgresDSN = cfg.PostgresDSN
	default:
		if cfg.PostgresPort != 0 && !pgcluster.PortFree(cfg.PostgresPort) {
			return nil, &PortInUseError{Part: "postgres", Addr: fmt.Sprintf("127.0.0.1:%d", cfg.PostgresPort)}
		}
		s.pg, err = pgcluster.Start(ctx, pgcluster.Options{Port: cfg.PostgresPort, Durable: cfg.PostgresDurable})
		if errors.Is(err, pgcluster.ErrPortInUse) {
			return nil, &PortInUseError{Part: "postgres", Addr: fmt.Sprintf("127.0.0.1:%d", cfg.PostgresPort)}
		}
		if err != nil {
			return nil, fmt.Errorf("postgres: %w", err)
		}
		s.PostgresDSN = s.pg.DSN()
	}

	if err := s.WaitReady(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// WaitReady returns once every part accepts a real request: a Kafka
// metadata request, a registry GET, a Postgres connection.
func (s *Stack) WaitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		err := s.ready(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("dev stack not ready: %w", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (s *Stack) ready(ctx context.Context) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.Brokers))
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	err = cl.Ping(ctx)
	cl.Close()
	if err != nil {
		return fmt.Errorf("kafka at %s: %w", s.Brokers, err)
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.RegistryURL+"/subjects", nil)
	if err != nil {
		return fmt.Errorf("registry request: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("registry at %s: %w", s.RegistryURL, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("registry at %s: GET /subjects: %s", s.RegistryURL, resp.Status)
	}

	if s.PostgresDSN != "" {
		conn, err := pgx.Connect(ctx, s.PostgresDSN)
		if err != nil {
			return fmt.Errorf("postgres at %s: %w", RedactDSN(s.PostgresDSN), err)
		}
		err = conn.Ping(ctx)
		_ = conn.Close(ctx)
		if err != nil {
			return fmt.Errorf("postgres at %s: %w", RedactDSN(s.PostgresDSN), err)
		}
	}
	return nil
}

// Kafka is the broker, for tests that need its admin controls.
func (s *Stack) Kafka() *kfake.Cluster { return s.kafka }

// Postgres is the throwaway cluster, or nil when none was started.
func (s *Stack) Postgres() *pgcluster.Cluster { return s.pg }

// Env is the stack as the environment variables configs read.
func (s *Stack) Env() []string {
	env := []string{"KAFKA_BROKERS=" + s.Brokers, "SCHEMA_REGISTRY_URL=" + s.RegistryURL}
	if s.PostgresDSN != "" {
		env = append(env, "ODS_DSN="+s.PostgresDSN)
	}
	return env
}

// StopRegistry takes the schema registry down (its port refuses
// connections) and StartRegistry brings it back on the same address with
// the same schemas: for tests of clients that must outlive an outage.
func (s *Stack) StopRegistry(ctx context.Context) error {
	if s.registry == nil {
		return errors.New("the registry is not running")
	}
	if err := s.registry.Shutdown(ctx); err != nil {
		return fmt.Errorf("stopping registry: %w", err)
	}
	if err := <-s.served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("registry: %w", err)
	}
	s.stoppedRegistry, s.registry = s.registry.Handler, nil
	return nil
}

// StartRegistry serves the registry StopRegistry stopped, again.
func (s *Stack) StartRegistry() error {
	if s.stoppedRegistry == nil {
		return errors.New("the registry was not stopped")
	}
	ln, err := listen("registry", strings.TrimPrefix(s.RegistryURL, "http://"))
	if err != nil {
		return err
	}
	s.registry = &http.Server{Handler: s.stoppedRegistry, ReadHeaderTimeout: 10 * time.Second}
	s.stoppedRegistry = nil
	s.served = make(chan error, 1)
	go func() { s.served <- s.registry.Serve(ln) }()
	return nil
}

// Close stops every part Start started, the registry first so that no new
// work arrives, and removes their temporary directories.
func (s *Stack) Close(ctx context.Context) error {
	var errs []error
	if s.registry != nil {
		if err := s.registry.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stopping registry: %w", err))
		}
		if err := <-s.served; err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, fmt.Errorf("registry: %w", err))
		}
		s.registry = nil
	}
	if s.kafka != nil {
		s.kafka.Close()
		s.kafka = nil
	}
	if s.pg != nil {
		if err := s.pg.Stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stopping postgres: %w", err))
		}
		s.pg = nil
	}
	return errors.Join(errs...)
}

// RedactDSN hides the passwords of a DSN, for logs and errors: a URL's
// user password and its password or sslpassword parameters (pgx reads
// both); a keyword DSN that names a password is hidden whole.
func RedactDSN(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" {
		if scheme, rest, ok := strings.Cut(dsn, "://"); ok {
			// A URL Go cannot parse (a password with % or /): whatever
			// comes before its last @ may be credentials.
			if at := strings.LastIndexByte(rest, '@'); at >= 0 {
				return scheme + "://xxxxx@" + rest[at+1:]
			}
			return dsn
		}
		if strings.Contains(strings.ToLower(dsn), "password") {
			return "(dsn hidden: it holds a password)"
		}
		return dsn
	}
	q := u.Query()
	redacted := false
	for k := range q {
		if strings.Contains(strings.ToLower(k), "password") {
			q.Set(k, "xxxxx")
			redacted = true
		}
	}
	if redacted {
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}
