//go:build !linux

package transport

import "net"

// retransmitting cannot tell on this platform.
func retransmitting(net.Conn) bool { return false }
