//go:build !linux

package transport

import "net"

// pendingBytes cannot tell on this platform.
func pendingBytes(net.Conn) int { return 0 }
