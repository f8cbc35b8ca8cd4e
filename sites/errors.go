package sites

import (
	"errors"
	"fmt"
	"net"
)

// Errors of the package. They are sentinels: test them with errors.Is.
var (
	// ErrConfig is returned by Dial for a Config that cannot work.
	ErrConfig = errors.New("sites: invalid config")
	// ErrRefused is returned by Dial when NATS refused this node's
	// credentials, or TLS with the server failed.
	ErrRefused = errors.New("sites: NATS refused the connection")
	// ErrClosed is returned by Next once the Bus is closed. It unwraps to
	// net.ErrClosed.
	ErrClosed = fmt.Errorf("sites: closed: %w", net.ErrClosed)
	// ErrDisconnected is returned by a Session's methods once its
	// connection has ended; Next returns the next one.
	ErrDisconnected = errors.New("sites: NATS connection lost")
)
