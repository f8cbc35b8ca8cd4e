package netns

import (
	"syscall"
	"time"
)

// ethPAll is ETH_P_ALL in network byte order: every protocol.
const ethPAll = 0x0300

// PacketSocket opens a socket that receives a copy of every packet sent or
// received on the interface with index ifindex (0: on every interface of
// the namespace), as datagrams without their link-layer header, for tests
// that count what nodes put on the wire. Its reads return an error after
// readTimeout without a packet, so that a reading loop can look whether to
// stop. It needs CAP_NET_RAW (root, or root of a user namespace); the
// caller closes it with syscall.Close.
func PacketSocket(ifindex int, readTimeout time.Duration) (int, error) {
	fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_DGRAM, ethPAll)
	if err != nil {
		return -1, err
	}
	if ifindex != 0 {
		if err := syscall.Bind(fd, &syscall.SockaddrLinklayer{Protocol: ethPAll, Ifindex: ifindex}); err != nil {
			syscall.Close(fd)
			return -1, err
		}
	}
	tv := syscall.NsecToTimeval(int64(readTimeout))
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		syscall.Close(fd)
		return -1, err
	}
	return fd, nil
}
