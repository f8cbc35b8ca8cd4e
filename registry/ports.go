package registry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
)

// ListenOption configures Listen.
type ListenOption func(*listenOptions)

type listenOptions struct {
	bind string
	host string
	meta map[string]string
}

// WithBindAddress makes Listen bind to the IP address ip ("127.0.0.1",
// "::1") instead of all addresses.
func WithBindAddress(ip string) ListenOption {
	return func(o *listenOptions) { o.bind = ip }
}

// WithHost sets the host recorded for the listener. Without it, Listen
// records Config.Host, or else the bind address when it is a specific one.
func WithHost(host string) ListenOption {
	return func(o *listenOptions) { o.host = host }
}

// WithMeta sets the metadata of the listener's record.
func WithMeta(meta map[string]string) ListenOption {
	return func(o *listenOptions) { o.meta = meta }
}

// Listener is a TCP listener on a port the operating system chose, with a
// record registered for it (port assignment). Closing it frees the record
// everywhere, then closes the listener.
type Listener struct {
	net.Listener
	r    *Registry
	rec  Record
	once sync.Once
	err  error
}

// Listen opens a TCP listener on a free port for role ("name@version") and
// registers it with that port, before returning. ctx bounds the listen
// call only. The record's host is the WithHost option, else Config.Host,
// else the bind address when it is a specific one, else empty (Dial then
// skips the record: set Config.Host).
//
// Errors: those of Register (ErrBadRole, ErrMetadataTooLarge,
// ErrTooManyRecords, ErrClosed...) and of net.ListenConfig.Listen.
func (r *Registry) Listen(ctx context.Context, role string, opts ...ListenOption) (*Listener, error) {
	var o listenOptions
	for _, opt := range opts {
		opt(&o)
	}
	if _, _, err := ParseRole(role); err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", net.JoinHostPort(o.bind, "0"))
	if err != nil {
		return nil, fmt.Errorf("registry: listen for %s: %w", role, err)
	}
	host := o.host
	if host == "" {
		host = r.cfg.Host
	}
	if ip := net.ParseIP(o.bind); host == "" && ip != nil && !ip.IsUnspecified() {
		host = o.bind
	}
	rec, err := r.Register(Service{
		Role: role,
		Host: host,
		Port: ln.Addr().(*net.TCPAddr).Port,
		Meta: o.meta,
	})
	if err != nil {
		ln.Close()
		return nil, err
	}
	return &Listener{Listener: ln, r: r, rec: rec}, nil
}

// Record returns the listener's record as registered.
func (l *Listener) Record() Record {
	rec := l.rec
	rec.Meta = cloneMeta(l.rec.Meta)
	return rec
}

// Close frees the listener's record on every node, then closes the
// listener. It is idempotent; it returns the listener's close error.
func (l *Listener) Close() error {
	l.once.Do(func() {
		if err := l.r.Free(l.rec.ID); err != nil && !errors.Is(err, ErrClosed) && !errors.Is(err, ErrNotFound) {
			l.r.log.Warn("registry: free listener record", "id", l.rec.ID, "err", err)
		}
		l.err = l.Listener.Close()
	})
	return l.err
}

// Dial connects to an instance matching query, waiting as Lookup does until
// one exists. It spreads successive calls over the instances (round robin)
// and, when a dial fails, tries the next one. Instances without a host or a
// port are skipped.
//
// Errors: ErrBadQuery, ErrClosed, ctx.Err() while waiting, or
// ErrNoInstance wrapping each dial's error.
func (r *Registry) Dial(ctx context.Context, query string) (net.Conn, error) {
	recs, err := r.Lookup(ctx, query)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	var errs []error
	start := r.rr.Add(1)
	for i := range recs {
		rec := recs[(start+uint64(i))%uint64(len(recs))]
		if rec.Host == "" || rec.Port == 0 {
			errs = append(errs, fmt.Errorf("%s has no address", rec.ID))
			continue
		}
		c, err := d.DialContext(ctx, "tcp", rec.Addr())
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("%w for %q: %w", ErrNoInstance, query, errors.Join(errs...))
}
