package discovery

import (
	"net"

	"golang.org/x/sys/unix"
)

// onlyJoinedGroups turns off IP_MULTICAST_ALL (IPV6_MULTICAST_ALL), on by
// default: the socket then hears a group only on the interfaces it joined
// it on, not on every interface that some socket of the host joined it on.
// IPV6_MULTICAST_ALL came in Linux 4.20; older kernels return an error.
func onlyJoinedGroups(c *net.UDPConn, v6 bool) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	level, opt := unix.IPPROTO_IP, unix.IP_MULTICAST_ALL
	if v6 {
		level, opt = unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_ALL
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), level, opt, 0) }); err != nil {
		return err
	}
	return serr
}
