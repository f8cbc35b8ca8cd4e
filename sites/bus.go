package sites

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Config configures a Bus. URLs, Cluster, Site and Node are required;
// every other zero field takes the default its doc names. Dial works on
// a copy.
type Config struct {
	// URLs are the NATS servers to connect to ("nats://host:4222",
	// "tls://host:4222"): any servers of one NATS system (a cluster,
	// a super-cluster through gateways, a leaf node); the connection
	// fails over among them and the ones the servers tell it of.
	URLs []string
	// CredsFile is a NATS credentials file (a user JWT and its NKey
	// seed), for systems with decentralized auth. Empty means none.
	CredsFile string
	// User and Password, or Token, are NATS credentials. Empty means
	// none.
	User, Password string
	Token          string
	// TLS configures TLS to the servers (their roots, a client
	// certificate). Nil means TLS only where a URL says tls:// or the
	// server requires it, verified against the system's roots.
	TLS *tls.Config

	// Cluster is the tallship cluster's name: it scopes the subjects.
	Cluster string
	// Secret, when set, scopes the subjects by a keyed hash (a node with
	// another secret hears nothing of this cluster) and seals every
	// payload: a NATS user without it can neither read nor forge one.
	Secret string
	// Site is this node's site; Node its id.
	Site, Node string

	// ReconnectWait is the wait before connecting again after every
	// server failed; it doubles up to ReconnectWaitMax. Zero means
	// 100 ms and 5 s.
	ReconnectWait, ReconnectWaitMax time.Duration
	// PingInterval is how often the connection checks that its server
	// answers; after two unanswered, it connects again. Zero means 2 s.
	PingInterval time.Duration
	// OnChange, when set, is told each change the log says at Warn,
	// Error or Info: connected (err nil), or not (err says why: lost,
	// out of reach, refused). It is called from one goroutine, in order;
	// it must not block, nor call the Bus.
	OnChange func(connected bool, err error)
	// Logger receives the bus's log lines: losing and finding NATS once
	// each (Warn, Info), refused credentials (Error), routine ones at
	// Debug. Nil means slog.Default().
	Logger *slog.Logger
}

// Bus is a node's connection to NATS for the cluster. It connects, and
// connects again after any failure, in the background; each connection
// is a Session (Next), which the registry runs over (ServeBus) until the
// connection ends. Its methods are safe for concurrent use.
type Bus struct {
	cfg   Config
	names *names
	log   *slog.Logger
	in    *inbox
	// The subjects this node publishes its registry on.
	siteSubj string
	// The mesh's messages to this node and to its site: NATS hands both
	// subscriptions' messages to msgCh from the connection's reader, in
	// the order they came (one sender's to the node and to its site stay
	// in order), and pump moves them to msgs, bounded in bytes, until
	// Close closes closedc.
	msgs    *inbox
	msgCh   chan *nats.Msg
	closedc chan struct{}
	pumping sync.WaitGroup

	mu     sync.Mutex
	nc     *nats.Conn    // set once Dial has it
	cur    *Session      // the connection's, nil while there is none
	ready  chan struct{} // closed when cur changes
	closed bool
	first  chan error // the first outcome of connecting, for Dial
	// dialing: Dial waits for that outcome, and says it (a refusal is
	// its error, not a line of the log).
	dialing bool
	down    bool      // an outage was said at Warn
	outages outages   // counted for Stats
	said    string    // the kind of the last failure said ("unreachable", "refused")
	warnAt  time.Time // when a dropped message was last said at Warn
}

// Dial connects to NATS as cfg says and returns the Bus. When no server
// can be reached it says so once at Warn and returns the Bus all the
// same, connecting in the background (a site's LAN works without NATS);
// Next then waits for the connection.
//
// Errors: ErrConfig for a Config that cannot work (a URL that does not
// parse, a credentials file that cannot be read, a field missing);
// ErrRefused when a server refused the credentials or TLS failed (the
// NATS error is wrapped). ctx bounds the wait for a first answer.
func Dial(ctx context.Context, cfg Config) (*Bus, error) {
	switch {
	case len(cfg.URLs) == 0:
		return nil, fmt.Errorf("%w: no NATS URL", ErrConfig)
	case cfg.Cluster == "" || cfg.Site == "" || cfg.Node == "":
		return nil, fmt.Errorf("%w: Cluster, Site and Node are required", ErrConfig)
	}
	if cfg.CredsFile != "" {
		if _, err := os.ReadFile(cfg.CredsFile); err != nil {
			return nil, fmt.Errorf("%w: NATS credentials: %v", ErrConfig, err)
		}
	}
	if cfg.ReconnectWait <= 0 {
		cfg.ReconnectWait = 100 * time.Millisecond
	}
	if cfg.ReconnectWaitMax <= 0 {
		cfg.ReconnectWaitMax = 5 * time.Second
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	names, err := newNames(cfg.Cluster, cfg.Secret)
	if err != nil {
		return nil, err
	}
	b := &Bus{
		cfg:      cfg,
		names:    names,
		log:      cfg.Logger,
		in:       newInbox(&inboxBytes),
		siteSubj: names.siteRegistry(cfg.Site),
		msgs:     newInbox(&messageInboxBytes),
		msgCh:    make(chan *nats.Msg, messageChanLen),
		closedc:  make(chan struct{}),
		ready:    make(chan struct{}),
		first:    make(chan error, 1),
		dialing:  true,
	}
	name := "tallship " + cfg.Node
	if cfg.Secret != "" {
		name = "tallship" // the node's id would tell what the hashed subjects hide
	}
	opts := []nats.Option{
		nats.Name(name),
		nats.NoEcho(), // what this node publishes never comes back to it
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.IgnoreAuthErrorAbort(), // credentials fixed on the server are taken at the next try
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			d := cfg.ReconnectWait
			for i := 1; i < attempts && d < cfg.ReconnectWaitMax; i++ {
				d *= 2
			}
			return min(d, cfg.ReconnectWaitMax)
		}),
		nats.PingInterval(cfg.PingInterval),
		// A server that stops reading fails a write within two pings, not
		// nats.go's minute: the registry's writer, and Close, wait on it.
		nats.FlusherTimeout(2 * cfg.PingInterval),
		nats.MaxPingsOutstanding(2),
		nats.NoCallbacksAfterClientClose(),
		nats.ConnectHandler(func(nc *nats.Conn) { b.connected(nc, false) }),
		nats.ReconnectHandler(func(nc *nats.Conn) { b.connected(nc, true) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { b.disconnected(err) }),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) { b.failed(err) }),
		nats.ClosedHandler(func(*nats.Conn) { b.disconnected(nats.ErrConnectionClosed) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { b.asyncError(err) }),
	}
	switch {
	case cfg.CredsFile != "":
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	case cfg.Token != "":
		opts = append(opts, nats.Token(cfg.Token))
	case cfg.User != "":
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	}
	if cfg.TLS != nil {
		opts = append(opts, nats.Secure(cfg.TLS.Clone()))
	}
	nc, err := nats.Connect(strings.Join(cfg.URLs, ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: NATS: %s", ErrConfig, redactError(err, cfg.URLs))
	}
	b.mu.Lock()
	b.nc = nc
	b.mu.Unlock()
	for _, subj := range []string{names.allRegistry(), names.nodeRegistry(cfg.Node)} {
		if _, err := nc.Subscribe(subj, b.deliver); err != nil {
			nc.Close()
			return nil, fmt.Errorf("sites: subscribe: %w", err)
		}
	}
	for _, subj := range []string{names.nodeMessages(cfg.Node), names.siteMessages(cfg.Site)} {
		if _, err := nc.ChanSubscribe(subj, b.msgCh); err != nil {
			nc.Close()
			return nil, fmt.Errorf("sites: subscribe: %w", err)
		}
	}
	b.pumping.Add(1)
	go b.pump()
	if nc.IsConnected() {
		b.doneDialing()
		return b, nil // the session comes with ConnectHandler
	}
	// The first try failed: the reason comes to failed (auth refused,
	// or nothing reachable).
	t := time.NewTimer(2 * time.Second)
	defer t.Stop()
	select {
	case err := <-b.first:
		b.doneDialing()
		if refused(err) {
			b.Close()
			return nil, fmt.Errorf("%w: %s: %w", ErrRefused, redactURLs(cfg.URLs), err)
		}
		if err != nil {
			b.failed(err) // said now: out of reach, the bus goes on
		}
	case <-t.C:
		b.doneDialing()
	case <-ctx.Done():
		b.doneDialing()
		b.Close()
		return nil, ctx.Err()
	}
	return b, nil
}

// doneDialing ends Dial's wait: failures are said from now on.
func (b *Bus) doneDialing() {
	b.mu.Lock()
	b.dialing = false
	b.mu.Unlock()
}

// refused reports whether err is the server's (or TLS's) refusal of this
// node's credentials: a mistake to tell the user, not an outage to wait
// out.
func refused(err error) bool {
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var verify *tls.CertificateVerificationError
	return errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) || errors.Is(err, nats.ErrAccountAuthExpired) ||
		errors.As(err, &unknown) || errors.As(err, &host) || errors.As(err, &verify)
}

// connected starts a new session: NATS is (again) connected.
func (b *Bus) connected(nc *nats.Conn, again bool) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	if b.cur != nil {
		close(b.cur.done)
	}
	size := int(nc.MaxPayload()) - b.names.overhead()
	b.cur = &Session{b: b, nc: nc, done: make(chan struct{}), max: size}
	close(b.ready)
	b.ready = make(chan struct{})
	wasDown := b.down
	b.down, b.said = false, ""
	b.outages.end(time.Now())
	b.mu.Unlock()
	select {
	case b.first <- nil:
	default:
	}
	if b.cfg.OnChange != nil && (wasDown || !again) {
		b.cfg.OnChange(true, nil)
	}
	url := redactURL(nc.ConnectedUrl())
	switch {
	case wasDown:
		b.log.Info("sites: NATS is back", "url", url, "site", b.cfg.Site)
	case again:
		b.log.Debug("sites: reconnected to NATS", "url", url)
	default:
		b.log.Info("sites: connected to NATS", "url", url, "site", b.cfg.Site)
	}
}

// disconnected ends the session: the connection is lost (NATS connects
// again by itself).
func (b *Bus) disconnected(err error) {
	b.mu.Lock()
	if b.cur != nil {
		close(b.cur.done)
		b.cur = nil
	}
	say := !b.closed && !b.down
	if say {
		b.down, b.said = true, "unreachable"
		b.outages.begin(time.Now())
	}
	b.mu.Unlock()
	if say {
		b.log.Warn("sites: lost NATS; the LAN goes on alone, reconnecting", "err", err)
		if b.cfg.OnChange != nil {
			b.cfg.OnChange(false, fmt.Errorf("lost NATS: %w", err))
		}
	}
}

// failed notes a try to connect that failed: said at Warn the first time
// and when the kind of reason changes (at Error when the server refused
// this node's credentials), at Debug at every other retry.
func (b *Bus) failed(err error) {
	b.mu.Lock()
	dialing := b.dialing
	b.mu.Unlock()
	if dialing {
		select {
		case b.first <- err: // Dial says it
		default:
			b.log.Debug("sites: cannot reach NATS", "err", err)
		}
		return
	}
	reason := "unreachable"
	if refused(err) {
		reason = "refused"
	}
	b.mu.Lock()
	say := !b.closed && reason != b.said
	if say {
		b.said, b.down = reason, true
		b.outages.begin(time.Now())
	}
	b.mu.Unlock()
	urls := redactURLs(b.cfg.URLs)
	switch {
	case !say:
		b.log.Debug("sites: cannot reach NATS", "err", err)
		return
	case reason == "refused":
		b.log.Error("sites: NATS refuses this node's credentials; retrying", "urls", urls, "err", err)
		err = fmt.Errorf("NATS refuses this node's credentials (%s): %w", urls, err)
	default:
		b.log.Warn("sites: cannot reach NATS; the LAN goes on alone, retrying", "urls", urls, "err", err)
		err = fmt.Errorf("cannot reach NATS (%s): %w", urls, err)
	}
	if b.cfg.OnChange != nil {
		b.cfg.OnChange(false, err)
	}
}

// asyncError says what NATS reports on the side (a slow consumer, a
// permission the account lacks), at most once a second at Warn.
func (b *Bus) asyncError(err error) { b.sayLimited("sites: NATS", err) }

// sayLimited logs msg at Warn at most once a second, else at Debug.
func (b *Bus) sayLimited(msg string, err error) {
	level := slog.LevelWarn
	b.mu.Lock()
	if now := time.Now(); now.Sub(b.warnAt) >= time.Second {
		b.warnAt = now
	} else {
		level = slog.LevelDebug
	}
	b.mu.Unlock()
	b.log.Log(context.Background(), level, msg, "err", err)
}

// dropped says a message that is not the cluster's was dropped.
func (b *Bus) dropped(subject string, err error) {
	b.sayLimited("sites: NATS message dropped", fmt.Errorf("%s: %w", subject, err))
}

// deliver queues a message NATS delivered, or drops it when the inbox
// is full (said at most once a second at Warn).
func (b *Bus) deliver(m *nats.Msg) {
	if !b.in.push(m) {
		b.sayLimited("sites: NATS message dropped", fmt.Errorf("%w: %d bytes wait to be read", errInboxFull, inboxBytes))
	}
}

// errInboxFull: the registry (or the mesh) reads more slowly than NATS
// delivers.
var errInboxFull = errors.New("inbox full")

// messageChanLen is how many of the mesh's messages NATS may hand the
// pump before the pump takes them (beyond it NATS drops them, and says
// so through asyncError): the pump only moves them to the bounded
// inbox, and keeps up.
const messageChanLen = 4096

// pump moves the mesh's messages from NATS's channel to their inbox, or
// drops them when it is full (said at most once a second at Warn), until
// Close.
func (b *Bus) pump() {
	defer b.pumping.Done()
	for {
		select {
		case m := <-b.msgCh:
			if !b.msgs.push(m) {
				b.sayLimited("sites: NATS message dropped", fmt.Errorf("%w: %d bytes of messages wait to be read", errInboxFull, messageInboxBytes))
			}
		case <-b.closedc:
			return
		}
	}
}

// ReceiveMessage returns the next of the mesh's messages sent to this
// node (Session.SendMessage) or to its site (Session.PublishMessage),
// whichever connection brought it, waiting for one. Those of one sender
// come in the order NATS delivers them (on one server, the order it
// published them in), or not at all: NATS drops them while this node
// is not connected, and when more than 32 MiB wait to be read. Messages
// that do not open (with a secret: not sealed with it) are dropped and
// logged.
//
// Errors: ctx.Err(); ErrClosed once the Bus is closed.
func (b *Bus) ReceiveMessage(ctx context.Context) ([]byte, error) {
	for {
		m := b.msgs.pop(ctx, b.closedc)
		if m == nil {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			return nil, ErrClosed
		}
		msg, err := b.names.open(m.Subject, m.Data)
		if err != nil {
			b.dropped(m.Subject, err)
			continue
		}
		return msg, nil
	}
}

// Next returns the session of the current connection, waiting for one
// while there is none.
//
// Errors: ErrClosed, ctx.Err().
func (b *Bus) Next(ctx context.Context) (*Session, error) {
	for {
		b.mu.Lock()
		closed, cur, ready := b.closed, b.cur, b.ready
		b.mu.Unlock()
		switch {
		case closed:
			return nil, ErrClosed
		case cur != nil:
			return cur, nil
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// closeFlush bounds Close's wait for the server to have what was
// published.
const closeFlush = 250 * time.Millisecond

// Close closes the connection once the server has what was published
// (a leaving Beat), or after closeFlush when it does not answer: a
// connection closed while messages to it wait unread ends with a reset,
// and the server drops what it had not read yet. Sessions end. It is
// idempotent and returns nil.
func (b *Bus) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	if b.cur != nil {
		close(b.cur.done)
		b.cur = nil
	}
	close(b.ready)
	close(b.closedc)
	nc := b.nc
	b.mu.Unlock()
	if nc != nil {
		if nc.IsConnected() {
			nc.FlushTimeout(closeFlush)
		}
		nc.Close()
	}
	b.pumping.Wait()
	return nil
}

// Connected reports whether the bus has a connection to NATS now.
func (b *Bus) Connected() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cur != nil
}

// ConnectedURL returns the URL of the server the bus is connected to
// (its credentials, a password or a token, hidden), or "" while it is
// not.
func (b *Bus) ConnectedURL() string {
	b.mu.Lock()
	cur := b.cur
	b.mu.Unlock()
	if cur == nil {
		return ""
	}
	return redactURL(cur.nc.ConnectedUrl())
}

// Session is one connection to NATS: the registry's Bus (see
// registry.Bus), and the way out for the mesh's messages between sites,
// until the connection ends.
type Session struct {
	b    *Bus
	nc   *nats.Conn
	done chan struct{}
	max  int
}

// Publish sends msg to every node of the cluster on NATS, on this
// node's site's subject.
func (s *Session) Publish(msg []byte) error { return s.publish(s.b.siteSubj, msg) }

// Send sends msg to node alone.
func (s *Session) Send(node string, msg []byte) error {
	return s.publish(s.b.names.nodeRegistry(node), msg)
}

// SendMessage sends msg, one of the mesh's messages, to node alone.
func (s *Session) SendMessage(node string, msg []byte) error {
	return s.publish(s.b.names.nodeMessages(node), msg)
}

// PublishMessage sends msg, one of the mesh's messages, to every node of
// site: NATS carries it once to each (the mesh's envelope says which of
// them it is for).
func (s *Session) PublishMessage(site string, msg []byte) error {
	return s.publish(s.b.names.siteMessages(site), msg)
}

// Done is closed when the session's connection has ended.
func (s *Session) Done() <-chan struct{} { return s.done }

func (s *Session) publish(subject string, msg []byte) error {
	select {
	case <-s.done:
		return ErrDisconnected
	default:
	}
	data, err := s.b.names.seal(subject, msg)
	if err != nil {
		return err
	}
	return s.nc.Publish(subject, data)
}

// Receive returns the next message for this node: published by a node
// of the cluster, or sent to this one. Messages that do not open (with a
// secret: not sealed with it) are dropped and logged.
//
// Errors: ctx.Err(); ErrDisconnected once the connection has ended.
func (s *Session) Receive(ctx context.Context) ([]byte, error) {
	for {
		m := s.b.in.pop(ctx, s.done)
		if m == nil {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			return nil, ErrDisconnected
		}
		msg, err := s.b.names.open(m.Subject, m.Data)
		if err != nil {
			s.b.dropped(m.Subject, err)
			continue
		}
		return msg, nil
	}
}

// MaxMessage returns the largest message the connection's server takes,
// less what sealing adds.
func (s *Session) MaxMessage() int { return s.max }
