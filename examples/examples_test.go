// Package examples holds the tests of the runnable examples: each test
// builds the example programs and runs them as separate processes inside
// the private network namespace netns.Main made, which they inherit, so
// their mDNS stays on its loopback.
package examples

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/netns"
)

func TestMain(m *testing.M) { netns.Main(m) }

func TestExamples(t *testing.T) {
	netns.Require(t)
	bin := build(t)
	t.Run("client before web", func(t *testing.T) {
		t.Parallel()
		client := start(t, bin, "client", "--cluster", "ex-web", "--timeout", "20s")
		web := start(t, bin, "web", "--cluster", "ex-web")
		web.waitFor(t, "web@1.0.0 at ")
		if code := client.wait(t, 20*time.Second); code != 0 {
			t.Fatalf("client: exit status %d", code)
		}
		client.waitFor(t, "hello from web@1.0.0 at 127.0.0.1:")
		web.cmd.Process.Signal(syscall.SIGTERM)
		if code := web.wait(t, 10*time.Second); code != 0 {
			t.Errorf("web: exit status %d after SIGTERM", code)
		}
	})
	t.Run("web on a given port", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
		ln.Close()
		web := start(t, bin, "web", port)
		web.waitFor(t, "serving on port "+port)
		body := httpGet(t, "127.0.0.1:"+port)
		if body != "hello from web@1.0.0 on port "+port+"\n" {
			t.Errorf("web on port %s answered %q", port, body)
		}
		web.cmd.Process.Signal(syscall.SIGINT)
		if code := web.wait(t, 10*time.Second); code != 0 {
			t.Errorf("web: exit status %d after SIGINT", code)
		}
	})
	t.Run("httpmesh", func(t *testing.T) {
		t.Parallel()
		serve := start(t, bin, "httpmesh", "--cluster", "ex-httpmesh", "serve")
		serve.waitFor(t, "httpmesh: serving on node ")
		get := start(t, bin, "httpmesh", "--cluster", "ex-httpmesh", "--timeout", "20s", "get")
		if code := get.wait(t, 20*time.Second); code != 0 {
			t.Fatalf("httpmesh get: exit status %d", code)
		}
		get.waitFor(t, "hello over the mesh from ")
		serve.cmd.Process.Signal(syscall.SIGTERM)
		if code := serve.wait(t, 10*time.Second); code != 0 {
			t.Errorf("httpmesh serve: exit status %d after SIGTERM", code)
		}
	})
	t.Run("counter", func(t *testing.T) {
		t.Parallel()
		var nodes []*proc
		for _, id := range []string{"n1", "n2", "n3"} {
			nodes = append(nodes, start(t, bin, "counter", "--cluster", "ex-counter", "--id", id, "--rounds", "4", "--timeout", "20s"))
		}
		for _, n := range nodes {
			if code := n.wait(t, 25*time.Second); code != 0 {
				t.Errorf("counter %v: exit status %d", n.cmd.Args[1:], code)
			}
		}
		nodes[0].waitFor(t, "n1: done after 4 rounds, counter 12")
		nodes[0].waitFor(t, "n1: 12 from n3")
		nodes[1].waitFor(t, "n2: 10 from n1")
		nodes[2].waitFor(t, "n3: 11 from n2")
		nodes[2].waitFor(t, "n3: stopped by n1")
	})
	t.Run("chat", func(t *testing.T) {
		t.Parallel()
		a := start(t, bin, "chat", "--cluster", "ex-chat", "--id", "a")
		b := start(t, bin, "chat", "--cluster", "ex-chat", "--id", "b")
		a.waitFor(t, "* b joined")
		b.waitFor(t, "* a joined")
		io.WriteString(a.stdin, "hello from a\n")
		b.waitFor(t, "a: hello from a")
		io.WriteString(b.stdin, "and from b\n")
		a.waitFor(t, "b: and from b")
		a.stdin.Close()
		b.waitFor(t, "* a left")
		b.stdin.Close()
		for _, p := range []*proc{a, b} {
			if code := p.wait(t, 10*time.Second); code != 0 {
				t.Errorf("chat: exit status %d at the end of stdin", code)
			}
		}
	})
}

// build compiles every example into a temporary directory. It runs inside
// the namespace, without the module proxy: the module cache must be filled.
func build(t *testing.T) string {
	t.Helper()
	gotool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build the examples: %v", err)
	}
	dir := t.TempDir()
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "./chat", "./counter", "./web", "./client", "./httpmesh")
	cmd := exec.Command(gotool, args...)
	cmd.Env = append(os.Environ(), "GOPROXY=off", "GOTOOLCHAIN=local")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s\n(the module cache must be filled first: go mod download)", strings.Join(args, " "), err, out)
	}
	return dir
}

// proc is a running example whose output the test reads.
type proc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	exited chan struct{}
	err    error

	mu   sync.Mutex
	out  bytes.Buffer // stdout and stderr
	grew chan struct{}
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	close(p.grew)
	p.grew = make(chan struct{})
	return p.out.Write(b)
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// start runs the example name with args; it is killed when the test ends
// and its output is logged if the test failed.
func start(t *testing.T, dir, name string, args ...string) *proc {
	t.Helper()
	p := &proc{exited: make(chan struct{}), grew: make(chan struct{})}
	p.cmd = exec.Command(filepath.Join(dir, name), args...)
	p.cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=10")
	p.cmd.Stdout, p.cmd.Stderr = p, p
	p.cmd.WaitDelay = 2 * time.Second
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
		if out := p.output(); t.Failed() || strings.Contains(out, "DATA RACE") {
			t.Logf("%s %q:\n%s", name, args, out)
		}
		if strings.Contains(p.output(), "DATA RACE") {
			t.Errorf("%s: the race detector found a data race", name)
		}
	})
	return p
}

// waitFor waits at most 20 s for text in the output.
func (p *proc) waitFor(t *testing.T, text string) {
	t.Helper()
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		found, grew := strings.Contains(p.out.String(), text), p.grew
		p.mu.Unlock()
		if found {
			return
		}
		select {
		case <-grew:
		case <-p.exited:
			if !strings.Contains(p.output(), text) {
				t.Fatalf("%s exited (%v) without printing %q", p.cmd.Args[0], p.err, text)
			}
		case <-deadline.C:
			t.Fatalf("%s printed no %q within 20 s", p.cmd.Args[0], text)
		}
	}
}

// wait waits at most d for the process to exit and returns its status.
func (p *proc) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(d):
		t.Fatalf("%s still running after %v", p.cmd.Args[0], d)
	}
	if ee, ok := p.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatalf("%s: %v", p.cmd.Args[0], p.err)
	}
	return 0
}

// httpGet fetches / from addr, retrying until it answers.
func httpGet(t *testing.T, addr string) string {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := client.Get("http://" + addr + "/")
		if err == nil {
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil {
				return string(body)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer within 10 s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
