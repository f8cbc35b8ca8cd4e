package netns

import (
	"net"
	"testing"
	"time"
)

func TestMain(m *testing.M) { Main(m) }

func TestPrivateNamespaceHasOnlyLoopback(t *testing.T) {
	Require(t)
	ifaces, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	if len(ifaces) != 1 || ifaces[0].Flags&net.FlagLoopback == 0 {
		t.Fatalf("interfaces = %v, want loopback only", ifaces)
	}
	if ifaces[0].Flags&net.FlagUp == 0 || ifaces[0].Flags&net.FlagMulticast == 0 {
		t.Fatalf("loopback flags = %v, want up and multicast", ifaces[0].Flags)
	}
}

func TestMulticastStaysOnLoopback(t *testing.T) {
	Require(t)
	group := &net.UDPAddr{IP: net.IPv4(224, 0, 0, 251), Port: 5353}
	l, err := net.ListenMulticastUDP("udp4", Loopback(t), group)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.DialUDP("udp4", nil, group)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	l.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 16)
	n, _, err := l.ReadFromUDP(buf)
	if err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("read %q, %v; want ping", buf[:n], err)
	}
}
