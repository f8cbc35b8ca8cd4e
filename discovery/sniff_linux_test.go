package discovery

import (
	"encoding/binary"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// sniffer counts the mDNS packets (UDP from or to port 5353, multicast and
// unicast) sent on every interface of the namespace, with an AF_PACKET
// socket: what a capture on the wire would see.
type sniffer struct {
	fd      int
	mu      sync.Mutex
	packets []sniffed
	stop    chan struct{}
	wg      sync.WaitGroup
}

type sniffed struct {
	at        time.Time
	size      int // UDP payload bytes
	multicast bool
	msg       *dns.Msg
}

const (
	ethPAll        = 0x0003
	packetOutgoing = 4
)

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// newSniffer starts counting, or skips t when AF_PACKET is not allowed.
func newSniffer(t testing.TB) *sniffer {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_DGRAM, int(htons(ethPAll)))
	if err != nil {
		t.Skipf("cannot count packets: AF_PACKET socket: %v", err)
	}
	tv := syscall.NsecToTimeval(int64(50 * time.Millisecond))
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	s := &sniffer{fd: fd, stop: make(chan struct{})}
	s.wg.Go(s.loop)
	t.Cleanup(func() {
		close(s.stop)
		s.wg.Wait()
		syscall.Close(fd)
	})
	return s
}

func (s *sniffer) loop() {
	buf := make([]byte, 65536)
	for {
		select {
		case <-s.stop:
			return
		default:
		}
		n, from, err := syscall.Recvfrom(s.fd, buf, 0)
		if err != nil {
			continue // timeout: check stop
		}
		ll, ok := from.(*syscall.SockaddrLinklayer)
		if !ok || ll.Pkttype != packetOutgoing {
			continue
		}
		if p, ok := parseUDP(buf[:n]); ok {
			s.mu.Lock()
			s.packets = append(s.packets, p)
			s.mu.Unlock()
		}
	}
}

// parseUDP decodes an IPv4 or IPv6 packet carrying UDP to or from 5353.
func parseUDP(b []byte) (sniffed, bool) {
	if len(b) < 1 {
		return sniffed{}, false
	}
	var udp []byte
	var multicast bool
	switch b[0] >> 4 {
	case 4:
		ihl := int(b[0]&0x0f) * 4
		if len(b) < ihl+8 || b[9] != syscall.IPPROTO_UDP {
			return sniffed{}, false
		}
		multicast = b[16]>>4 == 0xe
		udp = b[ihl:]
	case 6:
		if len(b) < 48 || b[6] != syscall.IPPROTO_UDP {
			return sniffed{}, false
		}
		multicast = b[24] == 0xff
		udp = b[40:]
	default:
		return sniffed{}, false
	}
	src, dst := binary.BigEndian.Uint16(udp[0:]), binary.BigEndian.Uint16(udp[2:])
	if src != 5353 && dst != 5353 {
		return sniffed{}, false
	}
	m := new(dns.Msg)
	if m.Unpack(udp[8:]) != nil {
		m = nil
	}
	return sniffed{at: time.Now(), size: len(udp) - 8, multicast: multicast, msg: m}, true
}

// count returns the packets seen in [from, to) that mention name.
func (s *sniffer) count(from, to time.Time, name string) []sniffed {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []sniffed
	for _, p := range s.packets {
		if p.at.Before(from) || !p.at.Before(to) || p.msg == nil || !mentions(p.msg, name) {
			continue
		}
		out = append(out, p)
	}
	return out
}

func mentions(m *dns.Msg, name string) bool {
	for _, q := range m.Question {
		if sameName(q.Name, name) {
			return true
		}
	}
	for _, rr := range append(m.Answer, m.Extra...) {
		if sameName(rr.Header().Name, name) {
			return true
		}
	}
	return false
}
