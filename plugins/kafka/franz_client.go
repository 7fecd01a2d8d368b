// Package kafka holds the kafka_franz input and output: Kafka on franz-go,
// with Redpanda Connect's component and field names so that existing configs
// keep working, and with the guarantees a CDC pipeline needs (per-partition
// order, at-least-once commits, bounded memory).
package kafka

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/oauth"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// Field names shared by the input and the output.
const (
	fieldSeedBrokers    = "seed_brokers"
	fieldClientID       = "client_id"
	fieldRackID         = "rack_id"
	fieldTLS            = "tls"
	fieldSASL           = "sasl"
	fieldMetadataMaxAge = "metadata_max_age"
	fieldReqOverhead    = "request_timeout_overhead"
	fieldConnIdle       = "conn_idle_timeout"
)

// clientFields are the connection fields of both components, in the order
// Redpanda Connect documents them.
func clientFields() []*service.ConfigField {
	return []*service.ConfigField{
		service.NewStringListField(fieldSeedBrokers).
			Description("Addresses of Kafka brokers to connect to first. Items holding commas are split, so `${KAFKA_BROKERS}` may list several.").
			Example([]string{"localhost:9092"}).
			Example([]string{"foo:9092", "bar:9092"}).
			Example([]string{"${KAFKA_BROKERS:localhost:9092}"}),
		service.NewStringField(fieldClientID).
			Description("An identifier for the client connection, seen in broker logs and quotas.").
			Default("odsflow").Advanced(),
		service.NewStringField(fieldRackID).
			Description("A rack identifier for this client, for fetching from the closest replica (KIP-392).").
			Default("").Advanced(),
		service.NewTLSToggledField(fieldTLS),
		saslField(),
		service.NewDurationField(fieldMetadataMaxAge).
			Description("The maximum age of metadata before it is refreshed; new partitions and topics matching `regexp_topics` are found this often.").
			Default("5m").Advanced(),
		service.NewDurationField(fieldReqOverhead).
			Description("Added to a request's own timeout (such as a fetch's max wait) before the client gives up on a broker's answer.").
			Default("10s").Advanced(),
		service.NewDurationField(fieldConnIdle).
			Description("How long an idle connection to a broker stays open.").
			Default("20s").Advanced(),
		tcpField(),
	}
}

func saslField() *service.ConfigField {
	return service.NewObjectListField(fieldSASL,
		service.NewStringAnnotatedEnumField("mechanism", map[string]string{
			"none":          "Disable SASL authentication.",
			"PLAIN":         "Plain text authentication: send it over TLS only.",
			"SCRAM-SHA-256": "SCRAM based authentication as specified in RFC5802.",
			"SCRAM-SHA-512": "SCRAM based authentication as specified in RFC5802.",
			"OAUTHBEARER":   "OAuth Bearer based authentication with a static token.",
		}).Description("The SASL mechanism to use."),
		service.NewStringField("username").Description("A username for PLAIN and SCRAM mechanisms.").Default(""),
		service.NewStringField("password").Description("A password for PLAIN and SCRAM mechanisms.").Default("").Secret(),
		service.NewStringField("token").Description("The token for the OAUTHBEARER mechanism.").Default("").Secret(),
		service.NewStringMapField("extensions").Description("Key/value pairs sent with the OAUTHBEARER mechanism.").Optional(),
	).
		Description("Specify one or more methods of SASL authentication, tried in order until the broker accepts one.").
		Example([]any{
			map[string]any{"mechanism": "SCRAM-SHA-512", "username": "odsflow", "password": "${KAFKA_PASSWORD}"},
		}).
		Optional().Advanced()
}

// seedBrokers expands comma-separated items and drops empty ones.
func seedBrokers(conf *service.ParsedConfig) ([]string, error) {
	raw, err := conf.FieldStringList(fieldSeedBrokers)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, item := range raw {
		for _, b := range strings.Split(item, ",") {
			if b = strings.TrimSpace(b); b != "" {
				out = append(out, b)
			}
		}
	}
	if len(out) == 0 {
		return nil, errors.New("seed_brokers: at least one broker address is required")
	}
	return out, nil
}

// clientOptions turns the shared fields into franz-go options.
func clientOptions(conf *service.ParsedConfig, log *service.Logger) ([]kgo.Opt, error) {
	brokers, err := seedBrokers(conf)
	if err != nil {
		return nil, err
	}
	clientID, err := conf.FieldString(fieldClientID)
	if err != nil {
		return nil, err
	}
	rackID, err := conf.FieldString(fieldRackID)
	if err != nil {
		return nil, err
	}
	maxAge, err := conf.FieldDuration(fieldMetadataMaxAge)
	if err != nil {
		return nil, err
	}
	overhead, err := conf.FieldDuration(fieldReqOverhead)
	if err != nil {
		return nil, err
	}
	idle, err := conf.FieldDuration(fieldConnIdle)
	if err != nil {
		return nil, err
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.RequestTimeoutOverhead(overhead),
		kgo.ConnIdleTimeout(idle),
		kgo.ClientID(clientID),
		kgo.MetadataMaxAge(maxAge),
		kgo.WithLogger(kgoLogger{log}),
	}
	if rackID != "" {
		opts = append(opts, kgo.Rack(rackID))
	}
	tlsConf, tlsOn, err := conf.FieldTLSToggled(fieldTLS)
	if err != nil {
		return nil, err
	}
	if !tlsOn {
		tlsConf = nil
	}
	dial, err := dialer(conf, tlsConf)
	if err != nil {
		return nil, err
	}
	opts = append(opts, kgo.Dialer(dial))
	mechs, err := saslMechanisms(conf)
	if err != nil {
		return nil, err
	}
	if len(mechs) > 0 {
		opts = append(opts, kgo.SASL(mechs...))
	}
	return opts, nil
}

func saslMechanisms(conf *service.ParsedConfig) ([]sasl.Mechanism, error) {
	if !conf.Contains(fieldSASL) {
		return nil, nil
	}
	list, err := conf.FieldObjectList(fieldSASL)
	if err != nil {
		return nil, err
	}
	var mechs []sasl.Mechanism
	for i, c := range list {
		mech, err := c.FieldString("mechanism")
		if err != nil {
			return nil, err
		}
		user, _ := c.FieldString("username")
		pass, _ := c.FieldString("password")
		token, _ := c.FieldString("token")
		switch mech {
		case "none":
		case "PLAIN":
			mechs = append(mechs, plain.Auth{User: user, Pass: pass}.AsMechanism())
		case "SCRAM-SHA-256":
			mechs = append(mechs, scram.Auth{User: user, Pass: pass}.AsSha256Mechanism())
		case "SCRAM-SHA-512":
			mechs = append(mechs, scram.Auth{User: user, Pass: pass}.AsSha512Mechanism())
		case "OAUTHBEARER":
			var ext map[string]string
			if c.Contains("extensions") {
				if ext, err = c.FieldStringMap("extensions"); err != nil {
					return nil, err
				}
			}
			mechs = append(mechs, oauth.Auth{Token: token, Extensions: ext}.AsMechanism())
		default:
			return nil, fmt.Errorf("sasl[%d]: unsupported mechanism %q", i, mech)
		}
	}
	return mechs, nil
}

// kgoLogger forwards franz-go's own logs (connection failures, rebalances)
// to the component's logger; franz-go's debug chatter is dropped.
type kgoLogger struct{ log *service.Logger }

func (l kgoLogger) Level() kgo.LogLevel { return kgo.LogLevelInfo }

func (l kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	var b strings.Builder
	b.WriteString(msg)
	for i := 0; i+1 < len(keyvals); i += 2 {
		fmt.Fprintf(&b, " %v=%v", keyvals[i], keyvals[i+1])
	}
	switch level {
	case kgo.LogLevelError:
		l.log.Error(b.String())
	case kgo.LogLevelWarn:
		l.log.Warn(b.String())
	default:
		l.log.Debug(b.String())
	}
}

// pingBrokers checks that a seed broker answers, so Connect fails (and
// Benthos retries with backoff, counting input_connection_failed) while the
// cluster is unreachable instead of appearing connected.
func pingBrokers(ctx context.Context, cl *kgo.Client) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := cl.Ping(ctx); err != nil {
		return fmt.Errorf("no seed broker reachable: %w", err)
	}
	return nil
}

// ClientOptions builds franz-go options from a YAML object of the fields
// every kafka_franz component shares (seed_brokers, tls, sasl, client_id,
// …), as a component's config would hold them: for commands that talk to
// the same cluster as the pipelines (odsflow dlq replay).
func ClientOptions(yamlConf string) ([]kgo.Opt, error) {
	conf, err := service.NewConfigSpec().Fields(clientFields()...).ParseYAML(yamlConf, nil)
	if err != nil {
		return nil, fmt.Errorf("kafka connection settings: %w", err)
	}
	return clientOptions(conf, nil)
}
