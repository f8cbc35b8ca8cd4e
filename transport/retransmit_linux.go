package transport

import (
	"crypto/tls"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// retransmitting reports whether the kernel is resending data of c's
// TCP connection that the network lost (a retransmission timeout under
// way: TCP_INFO's retransmits): the connection takes no more writes for
// now because the network drops packets, not because the peer stopped
// reading (that is a zero window, which TCP probes instead).
func retransmitting(c net.Conn) bool {
	for {
		switch w := c.(type) {
		case *sealedConn:
			c = w.Conn
			continue
		case *tls.Conn:
			c = w.NetConn()
			continue
		}
		break
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	resending := false
	raw.Control(func(fd uintptr) {
		if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			resending = info.Retransmits > 0
		}
	})
	return resending
}
