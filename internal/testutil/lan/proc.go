package lan

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Node configures the mesh process a host runs (internal/testutil/lanhost).
type Node struct {
	// Cluster to join. Required.
	Cluster string
	// ID is the node id; empty means a random one.
	ID string
	// Secret is the cluster secret; empty means none.
	Secret string
	// Timers is "local" (mesh.LocalConfig, the default here) or
	// "default" (the zero mesh.Config).
	Timers string
	// KeepAlive, WriteTimeout, Heartbeat and Lifetime override the
	// preset's when not zero.
	KeepAlive, WriteTimeout, Heartbeat, Lifetime time.Duration
	// NoMDNS runs no discovery: links come from Connect and peer
	// exchange only.
	NoMDNS bool
	// Roles are registered at start.
	Roles []string
	// Debug logs the node's Debug lines (shown when the test fails or
	// TALLSHIP_DEBUG is set).
	Debug bool
}

func (c Node) args(h *Host) []string {
	args := []string{
		"-cluster", c.Cluster,
		"-listen", h.IP.String() + ":0",
		"-iface", HostIface,
	}
	if c.ID != "" {
		args = append(args, "-id", c.ID)
	}
	if c.Secret != "" {
		args = append(args, "-secret", c.Secret)
	}
	if c.Timers != "" {
		args = append(args, "-timers", c.Timers)
	}
	for flag, d := range map[string]time.Duration{"-keepalive": c.KeepAlive, "-write-timeout": c.WriteTimeout, "-heartbeat": c.Heartbeat, "-lifetime": c.Lifetime} {
		if d > 0 {
			args = append(args, flag, d.String())
		}
	}
	if c.NoMDNS {
		args = append(args, "-no-mdns")
	}
	for _, r := range c.Roles {
		args = append(args, "-role", r)
	}
	if c.Debug || os.Getenv("TALLSHIP_DEBUG") != "" {
		args = append(args, "-debug")
	}
	return args
}

// Event is one line a node printed (see internal/testutil/lanhost).
type Event struct {
	// Ev is start, peer-up, peer-down, synced, registered, updated, freed,
	// discovery-error, msg, reply or fatal.
	Ev string `json:"ev"`
	// T is when it happened, in the node's clock (Unix nanoseconds).
	T     int64    `json:"t"`
	ID    string   `json:"id,omitempty"`
	Addrs []string `json:"addrs,omitempty"`
	// Peer is the peer (peer-*, synced, msg) or the record's owner.
	Peer string `json:"peer,omitempty"`
	Err  string `json:"err,omitempty"`
	// Rec is the record of a service event or of a register's reply.
	Rec  *Record `json:"rec,omitempty"`
	Data string  `json:"data,omitempty"`
	// Seq is a reply's command number.
	Seq     int      `json:"seq,omitempty"`
	Peers   []string `json:"peers,omitempty"`
	Records []Record `json:"records,omitempty"`
}

// Time returns T as a time.Time.
func (e Event) Time() time.Time { return time.Unix(0, e.T) }

// Record is a registry record as a node printed it.
type Record struct {
	ID    string            `json:"id"`
	Role  string            `json:"role"`
	Owner string            `json:"owner"`
	Host  string            `json:"host,omitempty"`
	Port  int               `json:"port,omitempty"`
	Meta  map[string]string `json:"meta,omitempty"`
	Inc   uint64            `json:"inc"`
	Seq   uint64            `json:"seq"`
}

// Proc is a mesh process running on a host.
type Proc struct {
	lan  *LAN
	Host *Host
	// ID is the node's id, Addrs its addresses, as it reported them.
	ID    string
	Addrs []string
	cmd   *exec.Cmd

	stdinMu sync.Mutex
	stdin   io.WriteCloser
	cmdSeq  int

	mu      sync.Mutex
	events  []Event
	wake    chan struct{} // closed and replaced on every new event
	replies map[int]chan Event
	stderr  tail
	exited  chan struct{}
	exitErr error
	killed  bool
}

func (p *Proc) String() string {
	id := p.ID
	if len(id) > 12 {
		id = id[:12]
	}
	return p.Host.Name + "/" + id
}

// Start runs a mesh node on h and waits until it has joined. It fails the
// test when the node cannot start. The node is killed when the test ends.
func (l *LAN) Start(h *Host, cfg Node) *Proc {
	l.t.Helper()
	p, err := l.TryStart(h, cfg)
	if err != nil {
		l.t.Fatalf("lan: start on %s: %v", h, err)
	}
	return p
}

// TryStart is Start that returns the error of a node that could not
// start (its "fatal" line, or how it exited) instead of failing the test.
func (l *LAN) TryStart(h *Host, cfg Node) (*Proc, error) {
	l.t.Helper()
	return l.startHelper(h, cfg.args(h))
}

// startHelper runs lanhost with args on h and waits for its start line.
func (l *LAN) startHelper(h *Host, args []string) (*Proc, error) {
	l.t.Helper()
	bin := helperBinary(l.t)
	cmd := h.ns.command(bin, args...)
	p := &Proc{lan: l, Host: h, cmd: cmd, wake: make(chan struct{}), replies: make(map[int]chan Event), exited: make(chan struct{})}
	cmd.Stderr = &p.stderr
	var err error
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := spawn(cmd); err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	go p.read(out)

	e, ok := p.WaitEvent(15*time.Second, func(e Event) bool { return e.Ev == "start" || e.Ev == "fatal" })
	switch {
	case !ok && p.Exited():
		return p, fmt.Errorf("exited before joining: %v\n%s", p.exitErr, p.Stderr())
	case !ok:
		return p, errors.New("not joined after 15s")
	case e.Ev == "fatal":
		p.waitExit(5 * time.Second)
		return p, errors.New(e.Err)
	}
	p.ID, p.Addrs = e.ID, e.Addrs
	return p, nil
}

// read takes the process's output until it ends, then waits for it.
func (p *Proc) read(out io.Reader) {
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var e Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			e = Event{Ev: "garbage", Data: sc.Text(), T: time.Now().UnixNano()}
		}
		p.mu.Lock()
		p.events = append(p.events, e)
		close(p.wake)
		p.wake = make(chan struct{})
		if e.Ev == "reply" {
			if ch := p.replies[e.Seq]; ch != nil {
				ch <- e
				delete(p.replies, e.Seq)
			}
		}
		p.mu.Unlock()
	}
	io.Copy(io.Discard, out)
	err := p.cmd.Wait()
	p.mu.Lock()
	p.exitErr = err
	p.mu.Unlock()
	close(p.exited)
}

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.exited }

// ExitErr is how the process ended (nil for status 0); valid once Done.
func (p *Proc) ExitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exitErr
}

// Stderr returns the end of what the process wrote to standard error.
func (p *Proc) Stderr() string { return p.stderr.String() }

// Kill kills the process with SIGKILL, waits for it to end, and returns
// the time the signal was sent.
func (p *Proc) Kill() time.Time {
	p.lan.t.Helper()
	at := time.Now()
	p.kill()
	if !p.waitExit(5 * time.Second) {
		p.lan.t.Fatalf("lan: %s still runs 5s after SIGKILL", p)
	}
	return at
}

// Freeze stops the process (SIGSTOP), as a hung host: its connections stay
// open and its kernel still acknowledges, but it answers nothing.
func (p *Proc) Freeze() {
	p.lan.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		p.lan.t.Fatalf("lan: freeze %s: %v", p, err)
	}
}

// Thaw resumes a frozen process (SIGCONT).
func (p *Proc) Thaw() {
	p.lan.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		p.lan.t.Fatalf("lan: thaw %s: %v", p, err)
	}
}

func (p *Proc) kill() {
	p.mu.Lock()
	p.killed = true
	p.mu.Unlock()
	p.cmd.Process.Signal(syscall.SIGKILL)
}

func (p *Proc) waitExit(d time.Duration) bool {
	select {
	case <-p.exited:
		return true
	case <-time.After(d):
		return false
	}
}

// Close makes the node leave gracefully and waits for the process to end.
func (p *Proc) Close() {
	p.lan.t.Helper()
	if _, err := p.do("close"); err != nil {
		p.lan.t.Fatalf("lan: close %s: %v", p, err)
	}
	if !p.waitExit(10 * time.Second) {
		p.lan.t.Fatalf("lan: %s still runs 10s after close", p)
	}
}

// do runs one command and returns its reply; an error the node reports
// is returned as an error.
func (p *Proc) do(verb string, args ...string) (Event, error) {
	ch := make(chan Event, 1)
	p.stdinMu.Lock()
	p.cmdSeq++
	seq := p.cmdSeq
	p.mu.Lock()
	p.replies[seq] = ch
	p.mu.Unlock()
	line := strings.Join(append([]string{strconv.Itoa(seq), verb}, args...), " ") + "\n"
	_, err := io.WriteString(p.stdin, line)
	p.stdinMu.Unlock()
	if err != nil {
		return Event{}, fmt.Errorf("%s: %s: %w", p, verb, err)
	}
	select {
	case e := <-ch:
		if e.Err != "" {
			return e, fmt.Errorf("%s: %s: %s", p, verb, e.Err)
		}
		return e, nil
	case <-p.exited:
		return Event{}, fmt.Errorf("%s: %s: process exited (%v)", p, verb, p.ExitErr())
	case <-time.After(10 * time.Second):
		return Event{}, fmt.Errorf("%s: %s: no reply in 10s", p, verb)
	}
}

// Register registers a role (name@version) with optional KEY=VALUE
// metadata and returns its record.
func (p *Proc) Register(role string, meta ...string) Record {
	p.lan.t.Helper()
	e, err := p.do("register", append([]string{role}, meta...)...)
	if err != nil {
		p.lan.t.Fatalf("lan: %v", err)
	}
	return *e.Rec
}

// Free frees a record the node owns.
func (p *Proc) Free(id string) {
	p.lan.t.Helper()
	if _, err := p.do("free", id); err != nil {
		p.lan.t.Fatalf("lan: %v", err)
	}
}

// Send sends text (no newlines) to a peer; it returns the node's error.
func (p *Proc) Send(peer, text string) error {
	_, err := p.do("send", peer, text)
	return err
}

// Connect makes the node link to (and keep) the node at addr, and
// returns the id it linked with or the node's error.
func (p *Proc) Connect(addr string) (string, error) {
	e, err := p.do("connect", addr)
	return e.Peer, err
}

// Peers returns the ids of the node's linked peers, sorted.
func (p *Proc) Peers() ([]string, error) {
	e, err := p.do("peers")
	return e.Peers, err
}

// Services returns the records the node sees matching query ("" for
// all), sorted by id.
func (p *Proc) Services(query string) ([]Record, error) {
	args := []string{}
	if query != "" {
		args = append(args, query)
	}
	e, err := p.do("services", args...)
	return e.Records, err
}

// Events returns the events the node has printed so far.
func (p *Proc) Events() []Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.events)
}

// WaitEvent waits up to d for an event that match accepts, among those
// printed so far and to come, and returns the first.
func (p *Proc) WaitEvent(d time.Duration, match func(Event) bool) (Event, bool) {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	next := 0
	for {
		p.mu.Lock()
		evs := p.events[next:]
		next = len(p.events)
		wake := p.wake
		p.mu.Unlock()
		for _, e := range evs {
			if match(e) {
				return e, true
			}
		}
		select {
		case <-wake:
		case <-p.exited:
			// The last events are in before exited closes.
			p.mu.Lock()
			evs := p.events[next:]
			p.mu.Unlock()
			for _, e := range evs {
				if match(e) {
					return e, true
				}
			}
			return Event{}, false
		case <-deadline.C:
			return Event{}, false
		}
	}
}

// eventLog formats the last n events, one a line, for a failed test's log.
func (p *Proc) eventLog(n int) string {
	evs := p.Events()
	if len(evs) > n {
		evs = evs[len(evs)-n:]
	}
	var b strings.Builder
	for _, e := range evs {
		if e.Ev == "reply" && e.Err == "" {
			continue
		}
		fmt.Fprintf(&b, "  %s %-15s", e.Time().Format("15:04:05.000"), e.Ev)
		if e.Peer != "" {
			fmt.Fprintf(&b, " peer=%s", short1(e.Peer))
		}
		if e.Rec != nil {
			fmt.Fprintf(&b, " rec=%s/%s inc=%d seq=%d", short1(e.Rec.ID), e.Rec.Role, e.Rec.Inc, e.Rec.Seq)
		}
		if e.Data != "" {
			fmt.Fprintf(&b, " data=%q", e.Data)
		}
		if e.Err != "" {
			fmt.Fprintf(&b, " err=%s", e.Err)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// tail keeps the last 64 KiB written to it.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

const tailMax = 64 << 10

func (w *tail) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, b...)
	if len(w.buf) > tailMax {
		w.buf = slices.Clone(w.buf[len(w.buf)-tailMax:])
	}
	return len(b), nil
}

func (w *tail) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.buf)
}
