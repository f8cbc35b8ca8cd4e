//go:build !linux

package transport

import "net"

// pendingBytes cannot tell on this platform.
func pendingBytes(net.Conn) int { return 0 }

// retransmitting cannot tell on this platform.
func retransmitting(net.Conn) bool { return false }

// thinStream has no equivalent on this platform.
func thinStream(net.Conn) {}
