package registry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
)

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

// Listen opens a TCP listener on addr and registers s with the port it
// got, before returning (port assignment). addr is as for net.Listen:
// "127.0.0.1:0", "[::1]:0", ":0"; empty means ":0", and a port of 0 means
// one the operating system chooses. s.Port must be zero: the record gets
// the listener's port. The record's host is s.Host, else Config.Host, else
// addr's host when it is a specific address, else empty (Dial then skips
// the record: set Config.Host). ctx bounds the listen call only.
//
// Errors: ErrBadService for a non-zero s.Port; those of Register
// (ErrBadRole, ErrMetadataTooLarge, ErrTooManyRecords, ErrClosed...) and
// of net.ListenConfig.Listen.
func (r *Registry) Listen(ctx context.Context, s Service, addr string) (*Listener, error) {
	if s.Port != 0 {
		return nil, fmt.Errorf("%w: %s: Port %d set; Listen records the port it listens on", ErrBadService, s.Role, s.Port)
	}
	if _, _, err := ParseRole(s.Role); err != nil {
		return nil, err
	}
	if addr == "" {
		addr = ":0"
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("registry: listen for %s: %w", s.Role, err)
	}
	if s.Host == "" {
		s.Host = r.cfg.Host
	}
	if host, _, _ := net.SplitHostPort(addr); s.Host == "" {
		if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
			s.Host = host
		}
	}
	s.Port = ln.Addr().(*net.TCPAddr).Port
	rec, err := r.Register(s)
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
// port are skipped. Those of this node's site (Config.Site) are tried
// first, those of other sites (ServeBus) after them.
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
	near, far := splitSite(recs, r.cfg.Site)
	for i := range recs {
		var rec Record
		if i < len(near) {
			rec = near[(start+uint64(i))%uint64(len(near))]
		} else {
			rec = far[(start+uint64(i))%uint64(len(far))]
		}
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

// splitSite returns the records of site, and the others, each in the
// order of recs.
func splitSite(recs []Record, site string) (near, far []Record) {
	for _, rec := range recs {
		if rec.Site == site {
			near = append(near, rec)
		} else {
			far = append(far, rec)
		}
	}
	return near, far
}
