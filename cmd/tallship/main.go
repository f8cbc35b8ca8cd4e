// Command tallship joins, inspects and uses a tallship mesh from the shell:
// the seaport of the Go library.
//
//	tallship join CLUSTER                    run a node, print peer and service events
//	tallship ls CLUSTER                      members and services
//	tallship query CLUSTER ROLE[@RANGE]      JSON array of "host:port"
//	tallship run CLUSTER ROLE@VER -- CMD...  supervise CMD on a registered port
//	tallship ui CLUSTER --http ADDR          serve a live dashboard of the cluster
//	tallship version                         the module and Go versions of this binary
//
// join --http ADDR serves the same dashboard from a node of the cluster.
// Both serve the node's figures to Prometheus at /metrics.
//
// Every command takes --help; tallship --version is tallship version.
// Nodes find each other over mDNS on the LAN (--mdns=false turns it off)
// and through --connect addresses. Errors are one line on stderr and a
// non-zero exit status: 2 for a usage error (an unknown flag, a bad role
// or range), 1 for anything else.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// command is one subcommand.
type command struct {
	name    string
	args    string // the positional arguments, for the usage line
	summary string
	// run runs the command with the arguments that follow its name. ctx
	// ends at SIGINT or SIGTERM, except for run, which handles signals
	// itself (it forwards them).
	run func(ctx context.Context, env *env, args []string) error
	// ownSignals: the command handles SIGINT and SIGTERM itself.
	ownSignals bool
}

// env is what a command reads and writes besides its arguments.
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
}

// commands is set in init: the commands refer to it for their help.
var commands []*command

func init() {
	commands = []*command{
		{name: "join", args: "CLUSTER", summary: "run a node until interrupted, printing peer and service events", run: runJoin},
		{name: "ls", args: "CLUSTER", summary: "list the members and services of a cluster", run: runLs},
		{name: "query", args: "CLUSTER ROLE[@RANGE]", summary: `print the addresses of a role's instances as a JSON array of "host:port"`, run: runQuery},
		{name: "run", args: "CLUSTER ROLE@VERSION -- CMD [ARGS...]", summary: "run CMD on a free port registered as ROLE, restarting it when it exits", run: runRun, ownSignals: true},
		{name: "ui", args: "CLUSTER", summary: "serve a live dashboard of the cluster over HTTP (--http ADDR), as an observer", run: runUI},
		{name: "version", summary: "print the versions of tallship and Go this binary was built from", run: runVersion},
	}
}

func main() {
	e := &env{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
	os.Exit(e.main(os.Args[1:]))
}

// main runs the command line args and returns the exit status.
func (e *env) main(args []string) int {
	if len(args) == 0 {
		return e.fail("", usageErrorf("no command (see tallship --help)"))
	}
	name := args[0]
	switch name {
	case "-h", "-help", "--help", "help":
		if name == "help" && len(args) > 1 {
			if c := lookupCommand(args[1]); c != nil {
				return e.main([]string{c.name, "--help"})
			}
			return e.fail("", usageErrorf("unknown command %q (see tallship --help)", args[1]))
		}
		printMainUsage(e.stdout)
		return 0
	case "-version", "--version":
		name, args = "version", append([]string{"version"}, args[1:]...)
	}
	c := lookupCommand(name)
	if c == nil {
		return e.fail("", usageErrorf("unknown command %q (see tallship --help)", name))
	}
	ctx := context.Background()
	if !c.ownSignals {
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
		defer stop()
	}
	err := c.run(ctx, e, args[1:])
	if errors.Is(err, errHelp) {
		return 0
	}
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		err = errors.New("interrupted")
	}
	return e.fail(c.name, err)
}

func lookupCommand(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// fail prints err as one line and returns the exit status for it: 0 for
// nil, 2 for a usage error, 1 for anything else.
func (e *env) fail(cmd string, err error) int {
	if err == nil {
		return 0
	}
	prefix := "tallship: "
	if cmd != "" {
		prefix = "tallship " + cmd + ": "
	}
	msg := strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
	fmt.Fprintln(e.stderr, prefix+msg)
	var u *usageError
	if errors.As(err, &u) {
		return 2
	}
	return 1
}

func printMainUsage(w io.Writer) {
	fmt.Fprint(w, `tallship joins, inspects and uses tallship meshes.

Usage:
`)
	for _, c := range commands {
		fmt.Fprintf(w, "  %s\n", strings.TrimSpace("tallship "+c.name+" "+c.args))
		fmt.Fprint(w, wrap(c.summary, "      ", helpWidth))
	}
	fmt.Fprint(w, `
Run "tallship COMMAND --help" for a command's flags. Nodes find each other
over mDNS on the LAN and through --connect addresses. The cluster secret can
come from $TALLSHIP_SECRET. Errors are one line on stderr; the exit status
is 2 for a usage error and 1 for any other.
`)
}
