// Copyright (c) 2014 HashiCorp, Inc.
// SPDX-License-Identifier: MPL-2.0

package yamux

import "sync/atomic"

// SendWindow is how many bytes a Write can send now without waiting for
// the peer to make room (tallship: so that a writer that must not wait
// can tell beforehand).
func (s *Stream) SendWindow() uint32 {
	return atomic.LoadUint32(&s.sendWindow)
}
