package discovery

import (
	"fmt"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/tallship-go/tallship/internal/testutil/netns"
)

// sniffer counts the mDNS packets (UDP from or to port 5353, multicast and
// unicast) sent on every interface of the namespace, with an AF_PACKET
// socket: what a capture on the wire would see.
type sniffer struct {
	mu      sync.Mutex
	packets []sniffed
	flushed map[string]chan struct{} // sentinel payload → closed when seen
}

// sentinelPort receives the datagrams flush sends; nothing listens there.
const sentinelPort = 9

type sniffed struct {
	at        time.Time
	size      int // UDP payload bytes
	multicast bool
	msg       *dns.Msg
}

// newSniffer starts counting, or skips t when packets cannot be captured.
func newSniffer(t testing.TB) *sniffer {
	t.Helper()
	s := &sniffer{flushed: map[string]chan struct{}{}}
	netns.Capture(t, 0, s.take)
	return s
}

// take records a packet this host sent, or notes a flush's sentinel.
func (s *sniffer) take(pkt []byte, from *syscall.SockaddrLinklayer) {
	if from == nil || from.Pkttype != netns.PacketOutgoing {
		return
	}
	p, dst, payload, ok := parseUDP(pkt)
	s.mu.Lock()
	defer s.mu.Unlock()
	if ch := s.flushed[string(payload)]; ch != nil && dst == sentinelPort {
		close(ch)
		delete(s.flushed, string(payload))
	} else if ok {
		s.packets = append(s.packets, p)
	}
}

// flush waits until every packet sent before it has been captured: it
// sends a datagram of its own and waits to see it.
func (s *sniffer) flush(t testing.TB) {
	t.Helper()
	payload := fmt.Sprintf("flush %d", time.Now().UnixNano())
	seen := make(chan struct{})
	s.mu.Lock()
	s.flushed[payload] = seen
	s.mu.Unlock()
	c, err := net.Dial("udp4", fmt.Sprintf("127.0.0.1:%d", sentinelPort))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(payload)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-seen:
	case <-time.After(5 * time.Second):
		t.Fatal("sniffer: sentinel not captured within 5 s")
	}
}

// parseUDP decodes an IPv4 or IPv6 packet carrying UDP. ok says it is from
// or to port 5353.
func parseUDP(b []byte) (p sniffed, dst uint16, payload []byte, ok bool) {
	src, dst, payload, multicast, ok := netns.UDP(b)
	if !ok || (src != 5353 && dst != 5353) {
		return sniffed{}, dst, payload, false
	}
	m := new(dns.Msg)
	if m.Unpack(payload) != nil {
		m = nil
	}
	return sniffed{at: time.Now(), size: len(payload), multicast: multicast, msg: m}, dst, payload, true
}

// count returns the packets captured in [from, to) that mention name.
// Call flush first.
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
