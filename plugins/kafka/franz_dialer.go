package kafka

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"
)

const fieldTCP = "tcp"

// tcpField is Redpanda Connect's `tcp` block: how connections to brokers
// are dialed and kept alive.
func tcpField() *service.ConfigField {
	return service.NewObjectField(fieldTCP,
		service.NewDurationField("connect_timeout").
			Description("How long a connection to a broker may take to open. `0s`: franz-go's default, 10s.").
			Default("0s"),
		service.NewObjectField("keep_alive",
			service.NewDurationField("idle").Description("How long a connection is idle before the first keep-alive probe. `0s`: Go's default, 15s.").Default("15s"),
			service.NewDurationField("interval").Description("The time between keep-alive probes. `0s`: Go's default, 15s.").Default("15s"),
			service.NewIntField("count").Description("How many unanswered probes close the connection. `0`: Go's default, 9.").Default(9),
		).Description("TCP keep-alive probes, always on, which find a broker (or a load balancer in front of it) that went away without closing the connection."),
		service.NewDurationField("tcp_user_timeout").
			Description("How long data sent may stay unacknowledged before the connection is closed (TCP_USER_TIMEOUT, Linux only). `0s`: the system's default. Set it above the keep-alive's idle + interval × count.").
			Default("0s"),
	).Description("TCP settings of the connections to brokers.").Advanced()
}

// dialFunc is how franz-go dials a broker (kgo.Dialer).
type dialFunc = func(ctx context.Context, network, host string) (net.Conn, error)

// dialer builds the dial function of the tcp block, with TLS when tlsConf
// is not nil (as kgo.DialTLSConfig would: the broker's host as ServerName).
func dialer(conf *service.ParsedConfig, tlsConf *tls.Config) (dialFunc, error) {
	tcp := conf.Namespace(fieldTCP)
	connect, err := tcp.FieldDuration("connect_timeout")
	if err != nil {
		return nil, err
	}
	idle, err := tcp.FieldDuration("keep_alive", "idle")
	if err != nil {
		return nil, err
	}
	interval, err := tcp.FieldDuration("keep_alive", "interval")
	if err != nil {
		return nil, err
	}
	count, err := tcp.FieldInt("keep_alive", "count")
	if err != nil {
		return nil, err
	}
	userTimeout, err := tcp.FieldDuration("tcp_user_timeout")
	if err != nil {
		return nil, err
	}
	for name, d := range map[string]time.Duration{"connect_timeout": connect, "keep_alive.idle": idle, "keep_alive.interval": interval, "tcp_user_timeout": userTimeout} {
		if d < 0 {
			return nil, fmt.Errorf("tcp.%s must not be negative, got %v", name, d)
		}
	}
	if count < 0 {
		return nil, fmt.Errorf("tcp.keep_alive.count must not be negative, got %d", count)
	}
	if connect == 0 {
		connect = 10 * time.Second
	}
	nd := &net.Dialer{
		Timeout:         connect,
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: idle, Interval: interval, Count: count},
		Control:         userTimeoutControl(userTimeout),
	}
	if tlsConf == nil {
		return nd.DialContext, nil
	}
	return func(ctx context.Context, network, host string) (net.Conn, error) {
		c := tlsConf.Clone()
		if c.ServerName == "" {
			server, _, err := net.SplitHostPort(host)
			if err != nil {
				return nil, fmt.Errorf("broker address %q: %w", host, err)
			}
			c.ServerName = server
		}
		return (&tls.Dialer{NetDialer: nd, Config: c}).DialContext(ctx, network, host)
	}, nil
}
