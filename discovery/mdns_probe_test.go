package discovery

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/tallship-go/tallship/internal/testutil/netns"
)

// probe listens passively on the mDNS group, on loopback.
type probe struct {
	c    *net.UDPConn
	msgs chan probed
}

type probed struct {
	msg *dns.Msg
	src netip.AddrPort
	at  time.Time
}

func newProbe(t testing.TB) *probe {
	t.Helper()
	c, err := net.ListenMulticastUDP("udp4", netns.Loopback(t), group4)
	if err != nil {
		t.Fatal(err)
	}
	p := &probe{c: c, msgs: make(chan probed, 4096)}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, maxReadSize)
		for {
			n, src, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			m := new(dns.Msg)
			if m.Unpack(buf[:n]) != nil {
				continue
			}
			select {
			case p.msgs <- probed{m, src, time.Now()}:
			default:
			}
		}
	})
	t.Cleanup(func() { c.Close(); wg.Wait() })
	return p
}

// await returns the first packet, from now on, for which match holds.
func (p *probe) await(t testing.TB, timeout time.Duration, what string, match func(probed) bool) probed {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case m := <-p.msgs:
			if match(m) {
				return m
			}
		case <-deadline:
			t.Fatalf("probe: no %s within %v", what, timeout)
			return probed{}
		}
	}
}

// announces matches an announcement of id in cluster.
func announces(cluster, id string) func(probed) bool {
	return func(p probed) bool {
		if !p.msg.Response {
			return false
		}
		ss, _ := parseResponse(p.msg, serviceName(cluster))
		for _, s := range ss {
			if s.txt.id == id && !s.goodbye {
				return true
			}
		}
		return false
	}
}

// awaitRunning waits until the probe hears n's first announcement: by then
// its responder and listeners are up.
func (p *probe) awaitRunning(t testing.TB, n *node) {
	t.Helper()
	p.await(t, 5*time.Second, "announcement of "+n.self.ID, announces(n.self.Cluster, n.self.ID))
}

// inject multicasts raw bytes to the mDNS group on loopback, from
// 127.0.0.1 port 5353, as a responder does (RFC 6762 §6: responses from
// any other port are ignored).
func inject(t testing.TB, b []byte) {
	t.Helper()
	c := listen5353(t)
	defer c.Close()
	if _, err := c.WriteTo(b, group4); err != nil {
		t.Fatal(err)
	}
}

// listen5353 opens a UDP socket on 127.0.0.1 port 5353, shared
// (SO_REUSEADDR) with the nodes' sockets.
func listen5353(t testing.TB) net.PacketConn {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	c, err := lc.ListenPacket(context.Background(), "udp4", "127.0.0.1:5353")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// fakeAnnouncement packs the announcement of a node that does not run,
// with 127.0.0.1:port.
func fakeAnnouncement(t testing.TB, cluster, id string, port uint16, ttl uint32) []byte {
	t.Helper()
	rs, err := newRecordSet(newNames(cluster, id), encodeTXT(cluster, id), port,
		[]netip.Addr{netip.MustParseAddr("127.0.0.1")}, ttl)
	if err != nil {
		t.Fatal(err)
	}
	b, err := rs.announcement().Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// syncMarker injects a marker node and waits until rec reports it: every packet
// multicast before has then been handled by the node behind rec.
func syncMarker(t testing.TB, rec *recorder, cluster, marker string) {
	t.Helper()
	inject(t, fakeAnnouncement(t, cluster, marker, 9, 120))
	rec.waitFor(t, 5*time.Second, "marker "+marker, knows(marker))
}
