package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/tallship-go/tallship/mesh"
)

// Helper modes: the benchmark re-executes its own binary as a node to kill
// or freeze, and as CPU burners. Helpers run in the benchmark's namespace
// and die with it (Pdeathsig).

// runHelper runs the helper mode named by args[0].
func runHelper(args []string) error {
	switch args[0] {
	case "node":
		return helperNode(args[1:])
	case "burn":
		return helperBurn(args[1:])
	}
	return fmt.Errorf("unknown helper %q", args[0])
}

// helperNode joins a cluster, registers a role, prints "READY id record"
// and runs until killed or until its stdin closes; at most -for.
func helperNode(args []string) error {
	fs := flag.NewFlagSet("node", flag.ContinueOnError)
	cluster := fs.String("cluster", "", "cluster")
	listen := fs.String("listen", "", "listen address")
	id := fs.String("id", "", "node id")
	fallback := fs.Duration("fallback", 0, "Config.FallbackDelay")
	role := fs.String("role", "victim@1.0.0", "role to register")
	limit := fs.Duration("for", 2*time.Minute, "longest run")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg := mdnsConfig()
	cfg.ID, cfg.Listen, cfg.FallbackDelay = *id, *listen, *fallback
	n, err := cfg.Join(context.Background(), *cluster)
	if err != nil {
		return err
	}
	defer n.Close()
	rec, err := n.Register(mesh.Service{Role: *role})
	if err != nil {
		return err
	}
	fmt.Printf("READY %s %s\n", n.ID(), rec.ID)
	stdin := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(stdin)
	}()
	select {
	case <-stdin:
	case <-time.After(*limit):
	}
	return nil
}

// helperBurn spins one core for -for.
func helperBurn(args []string) error {
	fs := flag.NewFlagSet("burn", flag.ContinueOnError)
	d := fs.Duration("for", time.Second, "how long to burn")
	if err := fs.Parse(args); err != nil {
		return err
	}
	end := time.Now().Add(min(*d, time.Minute))
	x := uint64(1)
	for time.Now().Before(end) {
		for range 100000 {
			x = x*6364136223846793005 + 1442695040888963407
		}
	}
	if x == 0 {
		fmt.Println(x)
	}
	return nil
}

// child is a helper process.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	id    string // helper node: its node id
	rec   string // helper node: its record id
}

// startHelper starts a helper with the given mode and flags.
func startHelper(mode string, args ...string) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, append([]string{"-helper", mode}, args...)...)
	cmd.Env = os.Environ()
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, stdin: stdin}
	if mode != "node" {
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		return c, nil
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(out)
		if s.Scan() {
			line <- s.Text()
		}
		close(line)
		io.Copy(io.Discard, out)
	}()
	select {
	case l, ok := <-line:
		f := strings.Fields(l)
		if !ok || len(f) != 3 || f[0] != "READY" {
			c.kill()
			return nil, fmt.Errorf("helper node did not start: %q", l)
		}
		c.id, c.rec = f[1], f[2]
	case <-time.After(10 * time.Second):
		c.kill()
		return nil, errors.New("helper node did not start within 10 s")
	}
	return c, nil
}

// kill kills the helper with SIGKILL and reaps it.
func (c *child) kill() {
	c.cmd.Process.Signal(syscall.SIGKILL)
	c.stdin.Close()
	c.cmd.Wait()
}

// wait waits for a helper that ends by itself.
func (c *child) wait() error {
	c.stdin.Close()
	return c.cmd.Wait()
}
