package netns

import (
	"encoding/binary"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// ethPAll is ETH_P_ALL in network byte order: every protocol.
const ethPAll = 0x0300

// PacketOutgoing is the Pkttype of a packet this host sent.
const PacketOutgoing = syscall.PACKET_OUTGOING

// Capture calls handle with every packet sent or received on the interface
// with index ifindex (0: on every interface of the namespace), without its
// link-layer header, until t ends: for tests that count what nodes put on
// the wire. handle runs on one goroutine of Capture's, and pkt is reused
// once it returns; from tells the interface and the direction (Pkttype).
// Capture skips t where packets cannot be captured (no CAP_NET_RAW).
func Capture(t testing.TB, ifindex int, handle func(pkt []byte, from *syscall.SockaddrLinklayer)) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_DGRAM, ethPAll)
	if err != nil {
		t.Skipf("cannot capture packets: AF_PACKET socket: %v", err)
	}
	if ifindex != 0 {
		if err := syscall.Bind(fd, &syscall.SockaddrLinklayer{Protocol: ethPAll, Ifindex: ifindex}); err != nil {
			syscall.Close(fd)
			t.Fatal(err)
		}
	}
	// The kernel charges each packet queued to the socket its buffer's
	// whole size, and on loopback (MTU 64 KiB) a 40-byte IGMP report
	// takes 128 KiB: two of them (a join, sent and looped back) fill the
	// default receive buffer, and whatever else comes before the loop
	// reads them is dropped. So the buffer is made ample (beyond
	// net.core.rmem_max where the namespace allows it), and a capture that
	// dropped anything all the same fails t: it would count too few.
	const rcvbuf = 16 << 20
	if syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, rcvbuf) != nil {
		syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
	}
	// Reads time out, so that the loop sees stop.
	tv := syscall.NsecToTimeval(int64(50 * time.Millisecond))
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 65536)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, from, err := syscall.Recvfrom(fd, buf, 0)
			if err != nil {
				continue // the timeout: look at stop
			}
			ll, _ := from.(*syscall.SockaddrLinklayer)
			handle(buf[:n], ll)
		}
	})
	t.Cleanup(func() {
		close(stop)
		wg.Wait()
		if drops, err := packetDrops(fd); err != nil {
			t.Errorf("capture: %v", err)
		} else if drops > 0 {
			t.Errorf("capture: the kernel dropped %d packets (the socket's receive buffer was full): the counts are short", drops)
		}
		syscall.Close(fd)
	})
}

// UDP reads an IPv4 or IPv6 packet, as Capture hands them, carrying UDP:
// its ports, its payload (a slice of pkt) and whether it was sent to a
// multicast group. ok is false for anything else.
func UDP(pkt []byte) (src, dst uint16, payload []byte, multicast, ok bool) {
	if len(pkt) < 1 {
		return 0, 0, nil, false, false
	}
	var udp []byte
	switch pkt[0] >> 4 {
	case 4:
		ihl := int(pkt[0]&0x0f) * 4
		if len(pkt) < ihl+8 || pkt[9] != syscall.IPPROTO_UDP {
			return 0, 0, nil, false, false
		}
		multicast = pkt[16]>>4 == 0xe
		udp = pkt[ihl:]
	case 6:
		if len(pkt) < 48 || pkt[6] != syscall.IPPROTO_UDP {
			return 0, 0, nil, false, false
		}
		multicast = pkt[24] == 0xff
		udp = pkt[40:]
	default:
		return 0, 0, nil, false, false
	}
	src, dst = binary.BigEndian.Uint16(udp[0:]), binary.BigEndian.Uint16(udp[2:])
	return src, dst, udp[8:], multicast, true
}

// packetDrops returns how many packets the kernel dropped for fd, an
// AF_PACKET socket, since the last call (PACKET_STATISTICS).
func packetDrops(fd int) (uint32, error) {
	var st struct{ packets, drops uint32 } // struct tpacket_stats
	size := uint32(unsafe.Sizeof(st))
	_, _, errno := syscall.Syscall6(syscall.SYS_GETSOCKOPT, uintptr(fd), syscall.SOL_PACKET, packetStatistics,
		uintptr(unsafe.Pointer(&st)), uintptr(unsafe.Pointer(&size)), 0)
	if errno != 0 {
		return 0, fmt.Errorf("PACKET_STATISTICS: %w", errno)
	}
	return st.drops, nil
}

// packetStatistics is PACKET_STATISTICS (linux/if_packet.h).
const packetStatistics = 6
