//go:build !linux

package transport

import "net"

// pendingBytes cannot tell on this platform.
func pendingBytes(net.Conn) int { return 0 }

// sendState cannot tell on this platform.
func sendState(net.Conn) (acked uint64, resending, ok bool) { return 0, false, false }

// thinStream has no equivalent on this platform.
func thinStream(net.Conn) {}
