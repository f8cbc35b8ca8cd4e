package transport

import (
	"crypto/tls"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// tcpRaw returns the raw connection of the TCP connection under c,
// looking through the sealed and TLS wrappers; nil when there is none.
func tcpRaw(c net.Conn) syscall.RawConn {
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
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// pendingBytes returns how many bytes the kernel holds for c that nobody
// has read yet; 0 when it cannot tell.
func pendingBytes(c net.Conn) int {
	raw := tcpRaw(c)
	if raw == nil {
		return 0
	}
	n := 0
	raw.Control(func(fd uintptr) {
		if v, err := unix.IoctlGetInt(int(fd), unix.TIOCINQ); err == nil {
			n = v
		}
	})
	return n
}

// sendState returns what the kernel says of c's sending (TCP_INFO): the
// bytes the peer has acknowledged so far, and whether a retransmission
// timeout is under way (the network lost what was sent, and the kernel
// resends it). ok is false when it cannot tell.
func sendState(c net.Conn) (acked uint64, resending, ok bool) {
	raw := tcpRaw(c)
	if raw == nil {
		return 0, false, false
	}
	raw.Control(func(fd uintptr) {
		if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			acked, resending, ok = info.Bytes_acked, info.Retransmits > 0, true
		}
	})
	return acked, resending, ok
}

// thinStream asks the kernel to resend a thin stream's lost data at a
// steady pace (TCP_THIN_LINEAR_TIMEOUTS): while fewer than four segments
// are in flight, the first six retransmission timeouts do not double. A
// link's control traffic is such a stream (beats every KeepAliveInterval,
// small messages), and its peer declares it silent within KeepAliveInterval
// + WriteTimeout: with the usual doubling (0.2, 0.4, 0.8 s) a beat lost
// three times in a row on a lossy network went unheard for 1.4 s, with
// linear timeouts for 0.6 s.
func thinStream(c net.Conn) {
	if raw := tcpRaw(c); raw != nil {
		raw.Control(func(fd uintptr) {
			unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_THIN_LINEAR_TIMEOUTS, 1)
		})
	}
}
