package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binaries are the programs the tests run: the CLI and the child that
// "tallship run" supervises.
type binaries struct {
	tallship, child string
}

// build compiles the CLI and testdata/child into a temporary directory,
// with the race detector when the tests have it. It runs inside the test's
// network namespace, so the module proxy is unreachable: it relies on the
// module cache (go mod download) and says so when that is missing.
func build(t *testing.T) binaries {
	t.Helper()
	gotool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build the CLI: %v", err)
	}
	dir := t.TempDir()
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, ".", "./testdata/child")
	cmd := exec.Command(gotool, args...)
	cmd.Env = append(os.Environ(), "GOPROXY=off", "GOTOOLCHAIN=local")
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s\n(the module cache must be filled first: go mod download)", strings.Join(args, " "), err, out)
	}
	t.Logf("built the CLI and the child in %v (race: %v)", time.Since(start).Round(time.Millisecond), raceEnabled)
	return binaries{tallship: filepath.Join(dir, "tallship"), child: filepath.Join(dir, "child")}
}

// line is one line a process printed, with when the test read it.
type line struct {
	text string
	at   time.Time
}

// proc is a running program whose stdout the test reads line by line.
type proc struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // cmd.Wait's, once exited is closed

	mu      sync.Mutex
	lines   []line
	partial []byte
	grew    chan struct{} // closed and replaced when a line arrives
	stderr  bytes.Buffer
}

// startProc starts path with args and extra environment variables. The
// process is killed when the test ends, if still running; its output is
// logged when the test failed.
func startProc(t *testing.T, name string, env []string, path string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, exited: make(chan struct{}), grew: make(chan struct{})}
	p.cmd = exec.Command(path, args...)
	// Race-enabled programs sleep 1 s at exit by default: not here.
	p.cmd.Env = append(append(os.Environ(), "GORACE=atexit_sleep_ms=10"), env...)
	p.cmd.Stdout = stdoutWriter{p}
	p.cmd.Stderr = stderrWriter{p}
	p.cmd.WaitDelay = 2 * time.Second // a grandchild holding stdout cannot hang Wait
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			select {
			case <-p.exited:
			case <-time.After(5 * time.Second):
				t.Errorf("%s did not exit after SIGKILL", name)
			}
		}
		if strings.Contains(p.stderrText(), "DATA RACE") {
			t.Errorf("%s: the race detector found a data race", name)
		}
		if t.Failed() {
			p.mu.Lock()
			defer p.mu.Unlock()
			var out strings.Builder
			for _, l := range p.lines {
				out.WriteString(l.at.Format(timeLayout) + " " + l.text + "\n")
			}
			t.Logf("%s %q\nstdout:\n%s\nstderr:\n%s", name, args, out.String(), p.stderr.String())
		}
	})
	return p
}

type stdoutWriter struct{ p *proc }

func (w stdoutWriter) Write(b []byte) (int, error) {
	p := w.p
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.partial = append(p.partial, b...)
	grew := false
	for {
		i := bytes.IndexByte(p.partial, '\n')
		if i < 0 {
			break
		}
		p.lines = append(p.lines, line{text: string(p.partial[:i]), at: now})
		p.partial = p.partial[i+1:]
		grew = true
	}
	if grew {
		close(p.grew)
		p.grew = make(chan struct{})
	}
	return len(b), nil
}

type stderrWriter struct{ p *proc }

func (w stderrWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.stderr.Write(b)
}

// snapshot returns the lines printed so far.
func (p *proc) snapshot() []line {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]line(nil), p.lines...)
}

// stderrText returns what the process printed on stderr so far.
func (p *proc) stderrText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// waitLine waits at most d for a line, at index from or later, that match
// accepts, and returns its index and the line. It fails the test when none
// comes, or the process exits without printing one.
func (p *proc) waitLine(what string, d time.Duration, from int, match func(string) bool) (int, line) {
	p.t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		for i := from; i < len(p.lines); i++ {
			if match(p.lines[i].text) {
				l := p.lines[i]
				p.mu.Unlock()
				return i, l
			}
		}
		from = max(from, len(p.lines))
		grew := p.grew
		p.mu.Unlock()
		select {
		case <-grew:
		case <-p.exited:
			// Exited: the last lines are in; look once more, then give up.
			p.mu.Lock()
			n := len(p.lines)
			p.mu.Unlock()
			if from < n {
				continue
			}
			p.t.Fatalf("%s exited (%v) before printing %s", p.name, p.err, what)
		case <-deadline.C:
			p.t.Fatalf("%s printed no %s within %v", p.name, what, d)
		}
	}
}

// waitEvent waits for a join --json event that match accepts.
func (p *proc) waitEvent(what string, d time.Duration, from int, match func(eventJSON) bool) (int, eventJSON, time.Time) {
	p.t.Helper()
	var ev eventJSON
	i, l := p.waitLine(what, d, from, func(s string) bool {
		var e eventJSON
		if json.Unmarshal([]byte(s), &e) != nil {
			return false
		}
		if match(e) {
			ev = e
			return true
		}
		return false
	})
	return i, ev, l.at
}

// signal sends sig to the process.
func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %s: %v", p.name, err)
	}
}

// wait waits at most d for the process to exit and returns its exit
// status.
func (p *proc) wait(d time.Duration) int {
	p.t.Helper()
	select {
	case <-p.exited:
	case <-time.After(d):
		p.t.Fatalf("%s still running after %v", p.name, d)
	}
	var ee *exec.ExitError
	switch {
	case p.err == nil:
		return 0
	case errors.As(p.err, &ee):
		return ee.ExitCode()
	}
	p.t.Fatalf("%s: %v", p.name, p.err)
	return -1
}

// running reports whether the process has not exited.
func (p *proc) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}
