package lan

import (
	"os"
	"syscall"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/node"
)

// Proc is a harness node (internal/testutil/node) running on a host. Its
// methods fail the test where node.Proc's return an error; the others
// (WaitEvent, Events, Peers, Services, Send, Connect…) are node.Proc's.
type Proc struct {
	*node.Proc
	lan  *LAN
	Host *Host
}

// Start runs a node on h and waits until it has joined. It fails the test
// when the node cannot start. The node is killed when the test ends.
// Unless cfg says otherwise, the node listens on the host's address and
// runs mDNS on its interface.
func (l *LAN) Start(h *Host, cfg node.Config) *Proc {
	l.t.Helper()
	p, err := l.TryStart(h, cfg)
	if err != nil {
		l.t.Fatalf("lan: start on %s: %v", h, err)
	}
	return p
}

// TryStart is Start that returns the error of a node that could not
// start (its fatal event, or how it exited) instead of failing the test.
func (l *LAN) TryStart(h *Host, cfg node.Config) (*Proc, error) {
	l.t.Helper()
	if cfg.Proxy == "" && cfg.NATSServer == "" {
		if cfg.Listen == "" {
			cfg.Listen = h.IP.String() + ":0"
		}
		if len(cfg.Ifaces) == 0 {
			cfg.Ifaces = []string{HostIface}
		}
	}
	if os.Getenv("TALLSHIP_DEBUG") != "" {
		cfg.Debug = true // shown when the test fails or TALLSHIP_DEBUG is set
	}
	bin, err := node.Binary()
	if err != nil {
		l.t.Fatalf("lan: %v", err)
	}
	np, err := node.Start(h.ns.Command(bin, cfg.Args()...))
	if err != nil {
		return nil, err
	}
	np.Name = h.Name
	p := &Proc{Proc: np, lan: l, Host: h}
	l.mu.Lock()
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	return p, nil
}

// Kill kills the process with SIGKILL, waits for it to end, and returns
// the time the signal was sent.
func (p *Proc) Kill() time.Time {
	p.lan.t.Helper()
	at := time.Now()
	if err := p.Proc.Kill(); err != nil {
		p.lan.t.Fatalf("lan: %v", err)
	}
	return at
}

// Freeze stops the process (SIGSTOP), as a hung host: its connections stay
// open and its kernel still acknowledges, but it answers nothing.
func (p *Proc) Freeze() { p.signal("freeze", syscall.SIGSTOP) }

// Thaw resumes a frozen process (SIGCONT).
func (p *Proc) Thaw() { p.signal("thaw", syscall.SIGCONT) }

func (p *Proc) signal(what string, sig syscall.Signal) {
	p.lan.t.Helper()
	if err := p.Signal(sig); err != nil {
		p.lan.t.Fatalf("lan: %s %s: %v", what, p, err)
	}
}

// Close makes the node leave gracefully and waits for the process to end.
func (p *Proc) Close() {
	p.lan.t.Helper()
	if err := p.Proc.Close(); err != nil {
		p.lan.t.Fatalf("lan: close: %v", err)
	}
}

// Register registers a role (name@version) with optional KEY=VALUE
// metadata and returns its record.
func (p *Proc) Register(role string, meta ...string) node.Record {
	p.lan.t.Helper()
	r, err := p.Proc.Register(role, meta...)
	if err != nil {
		p.lan.t.Fatalf("lan: %v", err)
	}
	return r
}

// Free frees a record the node owns.
func (p *Proc) Free(id string) {
	p.lan.t.Helper()
	if err := p.Proc.Free(id); err != nil {
		p.lan.t.Fatalf("lan: %v", err)
	}
}

// StreamListen makes the node accept the streams peers open with
// protocol (node.Proc.StreamListen).
func (p *Proc) StreamListen(protocol string) {
	p.lan.t.Helper()
	if err := p.Proc.StreamListen(protocol); err != nil {
		p.lan.t.Fatalf("lan: %v", err)
	}
}

// StreamSend makes the node copy n bytes to peer over a stream of
// protocol, one write every every (node.Proc.StreamSend).
func (p *Proc) StreamSend(peer, protocol string, n int64, every time.Duration) {
	p.lan.t.Helper()
	if err := p.Proc.StreamSend(peer, protocol, n, every); err != nil {
		p.lan.t.Fatalf("lan: %v", err)
	}
}
