package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/node"
)

// Helper modes: the benchmark re-executes its own binary as a node to kill
// or freeze (the test-node harness, internal/testutil/node), and as CPU
// burners. Helpers run in the benchmark's namespace and die with it
// (Pdeathsig).

// runHelper runs the helper mode named by args[0].
func runHelper(args []string) error {
	switch args[0] {
	case "node":
		return node.Main(args[1:])
	case "burn":
		return helperBurn(args[1:])
	case "form":
		return helperForm(args[1:])
	}
	return fmt.Errorf("unknown helper %q", args[0])
}

// startNode starts a harness node of cfg, this binary in -helper node
// mode, and waits until it has started.
func startNode(cfg node.Config) (*node.Proc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	p, err := node.Start(exec.Command(self, append([]string{"-helper", "node"}, cfg.Args()...)...))
	if err != nil {
		return nil, fmt.Errorf("helper node: %w", err)
	}
	return p, nil
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

// child is a burn helper process.
type child struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout io.ReadCloser
}

// startHelper starts a helper with the given mode and flags.
func startHelper(mode string, args ...string) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, append([]string{"-helper", mode}, args...)...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &child{cmd: cmd, stdin: stdin, stdout: stdout}, nil
}

// wait waits for a helper that ends by itself.
func (c *child) wait() error {
	c.stdin.Close()
	return c.cmd.Wait()
}
