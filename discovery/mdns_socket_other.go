//go:build !linux

package discovery

import "net"

// onlyJoinedGroups does nothing: only Linux delivers a group to sockets
// that did not join it on the interface it arrived on (IP_MULTICAST_ALL).
func onlyJoinedGroups(*net.UDPConn, bool) error { return nil }
