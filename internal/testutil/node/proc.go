package node

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/netns"
)

// Bounds of the waits of a Proc.
const (
	// StartTimeout bounds Start's wait for the start event.
	StartTimeout = 15 * time.Second
	replyTimeout = 10 * time.Second // a command's reply
	exitTimeout  = 10 * time.Second // the end of a process told to end
)

// Proc is a harness node (or proxy) process, as the program that started
// it sees it: every event it printed, and its commands. Its methods may be
// called from any goroutine.
type Proc struct {
	// ID, Addrs and Records are what its start event said: the node's
	// id and addresses (a proxy's address), and the records of its -role
	// flags.
	ID      string
	Addrs   []string
	Records []Record
	// Name, when set, is shown before the id by String (a host's name).
	Name string

	cmd *exec.Cmd

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
}

// Start starts cmd, a harness command line (the binary of Binary, a
// command that runs it such as nsenter, or a program that calls Main), and
// waits up to StartTimeout for its start event. The process gets a
// parent-death signal and is started from netns.Spawn's thread, so that it
// ends with this program whatever happens; its standard input, output and
// error are Start's. When it cannot start (a fatal event, an exit, no
// start event in time), Start kills it and returns why, with the end of
// what it wrote to standard error.
func Start(cmd *exec.Cmd) (*Proc, error) {
	p := &Proc{cmd: cmd, wake: make(chan struct{}), replies: make(map[int]chan Event), exited: make(chan struct{})}
	cmd.Stderr = &p.stderr
	var err error
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := netns.Spawn(cmd); err != nil {
		return nil, err
	}
	go p.read(out)

	e, ok := p.WaitEvent(StartTimeout, func(e Event) bool { return e.Ev == "start" || e.Ev == "fatal" })
	switch {
	case !ok && p.Exited():
		err = fmt.Errorf("exited before it started: %v", p.ExitErr())
	case !ok:
		err = fmt.Errorf("not started after %v", StartTimeout)
	case e.Ev == "fatal":
		err = errors.New(e.Err)
	default:
		p.ID, p.Addrs, p.Records = e.ID, e.Addrs, e.Records
		return p, nil
	}
	p.Kill()
	if s := strings.TrimSpace(p.Stderr()); s != "" {
		err = fmt.Errorf("%w\nstderr:\n%s", err, s)
	}
	return nil, err
}

func (p *Proc) String() string {
	id := p.ID
	if len(id) > 12 {
		id = id[:12]
	}
	if p.Name != "" {
		return p.Name + "/" + id
	}
	return id
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

// Done is closed when the process has exited and all it printed is in
// Events.
func (p *Proc) Done() <-chan struct{} { return p.exited }

// ExitErr is how the process ended (nil for status 0); valid once Done.
func (p *Proc) ExitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exitErr
}

// Stderr returns the end of what the process wrote to standard error.
func (p *Proc) Stderr() string { return p.stderr.String() }

// Signal sends sig to the process: SIGKILL to crash it, SIGSTOP to freeze
// it as a hung host (its connections stay open and its kernel still
// acknowledges, but it answers nothing), SIGCONT to thaw it.
func (p *Proc) Signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }

// Kill kills the process with SIGKILL and waits for it to end; it returns
// an error when it still runs after a while.
func (p *Proc) Kill() error {
	p.Signal(syscall.SIGKILL) // fails only when it has ended already
	if !p.WaitExit(exitTimeout) {
		return fmt.Errorf("%s still runs %v after SIGKILL", p, exitTimeout)
	}
	return nil
}

// WaitExit waits up to d for the process to end and reports whether it
// has.
func (p *Proc) WaitExit(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.exited:
		return true
	case <-t.C:
		return false
	}
}

// Close makes the node leave gracefully (the close command) and waits for
// the process to end.
func (p *Proc) Close() error {
	if _, err := p.Do("close"); err != nil {
		return err
	}
	if !p.WaitExit(exitTimeout) {
		return fmt.Errorf("%s still runs %v after close", p, exitTimeout)
	}
	return nil
}

// Do runs one command (the package doc lists them) and returns its reply;
// an error the node reports is returned as an error.
func (p *Proc) Do(verb string, args ...string) (Event, error) {
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
	t := time.NewTimer(replyTimeout)
	defer t.Stop()
	select {
	case e := <-ch:
		if e.Err != "" {
			return e, fmt.Errorf("%s: %s: %s", p, verb, e.Err)
		}
		return e, nil
	case <-p.exited:
		return Event{}, fmt.Errorf("%s: %s: process exited (%v)", p, verb, p.ExitErr())
	case <-t.C:
		return Event{}, fmt.Errorf("%s: %s: no reply in %v", p, verb, replyTimeout)
	}
}

// Register registers a role (name@version) with optional KEY=VALUE
// metadata and returns its record.
func (p *Proc) Register(role string, meta ...string) (Record, error) {
	e, err := p.Do("register", append([]string{role}, meta...)...)
	if err != nil {
		return Record{}, err
	}
	return *e.Rec, nil
}

// Free frees a record the node owns.
func (p *Proc) Free(id string) error {
	_, err := p.Do("free", id)
	return err
}

// Send sends text (no newlines) to a peer.
func (p *Proc) Send(peer, text string) error {
	_, err := p.Do("send", peer, text)
	return err
}

// StreamListen makes the node accept the streams peers open with
// protocol: each is read to its end, then a stream-read event says how
// many bytes came and their SHA-256.
func (p *Proc) StreamListen(protocol string) error {
	_, err := p.Do("stream-listen", protocol)
	return err
}

// StreamSend makes the node open a stream to peer for protocol and
// returns once it is open; the node then writes n bytes of the pattern
// whose sum PatternSum returns, StreamChunk a write and one write every
// every (0: at full speed), closes the stream, and prints stream-sent.
func (p *Proc) StreamSend(peer, protocol string, n int64, every time.Duration) error {
	_, err := p.Do("stream-send", peer, protocol, strconv.FormatInt(n, 10), every.String())
	return err
}

// Connect makes the node link to (and keep) the node at addr, and
// returns the id it linked with.
func (p *Proc) Connect(addr string) (string, error) {
	e, err := p.Do("connect", addr)
	return e.Peer, err
}

// Peers returns the ids of the node's linked peers, sorted.
func (p *Proc) Peers() ([]string, error) {
	e, err := p.Do("peers")
	return e.Peers, err
}

// Services returns the records the node sees matching query ("" for
// all), sorted by id.
func (p *Proc) Services(query string) ([]Record, error) {
	args := []string{}
	if query != "" {
		args = append(args, query)
	}
	e, err := p.Do("services", args...)
	return e.Records, err
}

// Events returns the events the process has printed so far, in order.
func (p *Proc) Events() []Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.events)
}

// WaitEvent waits up to d for an event that match accepts, among those
// printed so far and to come, and returns the first. match sees every
// event once, in order, on the caller's goroutine, until it accepts one:
// it may keep state.
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

// Log formats the last n events, one a line, for a failed test's log;
// replies that report no error are left out.
func (p *Proc) Log(n int) string {
	// Plain replies are left out before the last n are taken: a test
	// that polls the node (peers, services) would fill them otherwise.
	evs := slices.DeleteFunc(p.Events(), func(e Event) bool { return e.Ev == "reply" && e.Err == "" })
	if len(evs) > n {
		evs = evs[len(evs)-n:]
	}
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "  %s %-15s", e.Time().Format("15:04:05.000"), e.Ev)
		if e.Peer != "" {
			fmt.Fprintf(&b, " peer=%s", Short(e.Peer))
		}
		if len(e.Addrs) > 0 {
			fmt.Fprintf(&b, " addrs=%v", e.Addrs)
		}
		if e.Rec != nil {
			fmt.Fprintf(&b, " rec=%s/%s inc=%d seq=%d", Short(e.Rec.ID), e.Rec.Role, e.Rec.Inc, e.Rec.Seq)
		}
		if e.Data != "" {
			fmt.Fprintf(&b, " data=%q", e.Data)
		}
		if e.Bytes != 0 {
			fmt.Fprintf(&b, " bytes=%d", e.Bytes)
		}
		if e.Err != "" {
			fmt.Fprintf(&b, " err=%s", e.Err)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// Short returns the first 8 characters of an id, for logs.
func Short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
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
