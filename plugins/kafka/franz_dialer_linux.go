package kafka

import (
	"fmt"
	"syscall"
	"time"
)

// tcpUserTimeout is TCP_USER_TIMEOUT of linux/tcp.h, which package syscall
// does not name.
const tcpUserTimeout = 0x12

// userTimeoutControl sets TCP_USER_TIMEOUT on each connection; nil for 0.
func userTimeoutControl(d time.Duration) func(network, address string, c syscall.RawConn) error {
	if d == 0 {
		return nil
	}
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpUserTimeout, int(d.Milliseconds()))
		}); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("setting TCP_USER_TIMEOUT: %w", serr)
		}
		return nil
	}
}
