package kafka

import (
	"context"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDialerTCPSettings: the tcp block's keep-alive and user timeout are
// what the connection to a broker gets; negative values are refused.
func TestDialerTCPSettings(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	conf, err := kafkaFranzOutputSpec().ParseYAML(`
seed_brokers: [ "127.0.0.1:1" ]
topic: t
tcp:
  keep_alive: { idle: 7s, interval: 3s, count: 4 }
  tcp_user_timeout: 45s
`, nil)
	if err != nil {
		t.Fatal(err)
	}
	dial, err := dialer(conf, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := dial(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	if err := raw.Control(func(fd uintptr) {
		for name, opt := range map[string]int{"idle": syscall.TCP_KEEPIDLE, "interval": syscall.TCP_KEEPINTVL, "count": syscall.TCP_KEEPCNT, "user_timeout_ms": tcpUserTimeout} {
			v, err := syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, opt)
			if err != nil {
				t.Errorf("getsockopt %s: %v", name, err)
			}
			got[name] = v
		}
	}); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"idle": 7, "interval": 3, "count": 4, "user_timeout_ms": int((45 * time.Second).Milliseconds())}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %d, want %d", k, got[k], v)
		}
	}

	bad, err := kafkaFranzOutputSpec().ParseYAML("seed_brokers: [ \"127.0.0.1:1\" ]\ntopic: t\ntcp: { connect_timeout: -1s }", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dialer(bad, nil); err == nil || !strings.Contains(err.Error(), "tcp.connect_timeout") {
		t.Errorf("a negative connect_timeout: %v", err)
	}
}
