package transport

import (
	"crypto/tls"
	"net"
	"syscall"
	"unsafe"
)

// pendingBytes returns how many bytes the kernel holds for c that nobody
// has read yet, looking through the sealed and TLS wrappers to the TCP
// connection; 0 when it cannot tell.
func pendingBytes(c net.Conn) int {
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
		return 0
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	raw.Control(func(fd uintptr) {
		var v int32
		if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCINQ, uintptr(unsafe.Pointer(&v))); errno == 0 {
			n = int(v)
		}
	})
	return n
}
