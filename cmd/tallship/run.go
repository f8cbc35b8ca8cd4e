package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tallship-go/tallship/mesh"
	"github.com/tallship-go/tallship/registry"
)

const runHelp = `
Pick a free TCP port (or --port), register ROLE@VERSION with it in the
cluster, and run CMD with the port as its last argument and in $PORT.
When CMD exits, for any reason, it is started again on the same port
after a backoff (--backoff, doubling up to --backoff-max; reset once CMD
has run for --backoff-max); the service stays registered meanwhile.

SIGINT or SIGTERM frees the service everywhere first, then is forwarded to
CMD (to its process group); CMD gets --grace to exit before it is killed,
and the command exits 0. When peers refuse this node because another live
node has its --id, the same happens with SIGTERM, and the exit status is
1. CMD runs in its own process group with stdin from /dev/null and this
command's stdout and stderr; status lines go to stderr.
`

// supervisor runs one command line on a registered port.
type supervisor struct {
	e          *env
	node       *mesh.Node
	rec        mesh.Record
	argv       []string
	port       int
	backoff    time.Duration
	backoffMax time.Duration
	grace      time.Duration
	signals    <-chan os.Signal
	conflict   <-chan error // peers refuse the node's id
}

func runRun(ctx context.Context, e *env, args []string) error {
	var nf nodeFlags
	fs := newFlagSet("run", e, runHelp)
	nf.register(fs, e)
	port := fs.Int("port", 0, "register and hand CMD this `PORT` (default a free one)")
	host := fs.String("host", "", "`HOST` to record for the service (default the node's first address)")
	backoff := fs.Duration("backoff", 200*time.Millisecond, "wait `DURATION` before the first restart of CMD")
	backoffMax := fs.Duration("backoff-max", 10*time.Second, "wait at most `DURATION` between restarts of CMD")
	grace := fs.Duration("grace", 5*time.Second, "after forwarding a signal, wait `DURATION` for CMD to exit before killing it")
	var meta stringList
	fs.Var(&meta, "meta", "record metadata `KEY=VALUE` with the service; repeatable")
	pos, err := fs.parse(args, 2)
	if err != nil {
		return err
	}
	if len(pos) < 3 {
		names := []string{"CLUSTER", "ROLE@VERSION", "CMD"}
		return usageErrorf("missing %s (usage: tallship run %s)", names[len(pos)], fs.cmd.args)
	}
	cluster, role, argv := pos[0], pos[1], pos[2:]
	if err := checkCluster(cluster); err != nil {
		return err
	}
	if err := checkRole(role); err != nil {
		return err
	}
	if *port < 0 || *port > 65535 {
		return usageErrorf("--port %d: want 1 to 65535", *port)
	}
	if *backoff <= 0 || *backoffMax < *backoff || *grace <= 0 {
		return usageErrorf("--backoff, --backoff-max and --grace want positive durations, --backoff-max ≥ --backoff")
	}
	metadata := map[string]string{}
	for _, kv := range meta {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return usageErrorf("--meta %q: want KEY=VALUE", kv)
		}
		metadata[k] = v
	}
	if _, err := exec.LookPath(argv[0]); err != nil {
		return err
	}

	// Catch the signals before anything else: one that arrives while the
	// node starts still frees the service.
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(signals)

	p := *port
	if p == 0 {
		if p, err = freePort(); err != nil {
			return err
		}
	}
	n, events, err := nf.startNode(ctx, e, cluster)
	if err != nil {
		return err
	}
	defer nf.leave(n)
	conflict := make(chan error, 1)
	go watchConflict(events, func(err error) { // ends when the node closes
		select {
		case conflict <- err:
		default:
		}
	})
	rec, err := n.Register(mesh.Service{Role: role, Host: *host, Port: p, Meta: metadata})
	if err != nil {
		return err
	}
	where := "node " + n.ID()
	if site := n.Site(); site != "" {
		where += ", site " + site
	}
	fmt.Fprintf(e.stderr, "tallship run: %s registered at %s (%s)\n", rec.Role(), rec.Addr(), where)
	s := &supervisor{
		e: e, node: n, rec: rec, argv: argv, port: p,
		backoff: *backoff, backoffMax: *backoffMax, grace: *grace, signals: signals, conflict: conflict,
	}
	return s.loop()
}

// checkRole returns a usage error unless role is NAME@VERSION. The
// library takes a role without a version as version 0.0.0; on the command
// line a missing version is more likely a slip, so run asks for one.
func checkRole(role string) error {
	example := "web@1.0.0"
	name, _, hasVersion := strings.Cut(role, "@")
	if _, _, err := registry.ParseRole(name); err == nil {
		example = name + "@1.0.0"
	}
	if !hasVersion {
		return usageErrorf("bad role %q: no version (want ROLE@VERSION, e.g. %s)", role, example)
	}
	if _, _, err := registry.ParseRole(role); err != nil {
		return usageErrorf("%v (want ROLE@VERSION, e.g. %s)", err, example)
	}
	return nil
}

// freePort returns a TCP port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// loop runs the command, restarting it, until a signal.
func (s *supervisor) loop() error {
	delay := s.backoff
	for first := true; ; first = false {
		cmd := s.command()
		started := time.Now()
		if err := cmd.Start(); err != nil {
			if first {
				s.free()
				return err
			}
			fmt.Fprintf(s.e.stderr, "tallship run: %v; retrying in %v\n", err, delay)
		} else {
			fmt.Fprintf(s.e.stderr, "tallship run: started %s (pid %d) with port %d\n", s.argv[0], cmd.Process.Pid, s.port)
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			select {
			case sig := <-s.signals:
				return s.stop(sig.String(), sig, cmd, exited)
			case err := <-s.conflict:
				s.stop("id conflict", syscall.SIGTERM, cmd, exited)
				return err
			case err := <-exited:
				if time.Since(started) >= s.backoffMax {
					delay = s.backoff
				}
				fmt.Fprintf(s.e.stderr, "tallship run: %s exited (%s) after %v; restarting in %v\n",
					s.argv[0], exitStatus(err), time.Since(started).Round(time.Millisecond), delay)
			}
		}
		t := time.NewTimer(delay)
		select {
		case sig := <-s.signals:
			t.Stop()
			return s.stop(sig.String(), sig, nil, nil)
		case err := <-s.conflict:
			t.Stop()
			s.stop("id conflict", syscall.SIGTERM, nil, nil)
			return err
		case <-t.C:
		}
		delay = min(2*delay, s.backoffMax)
	}
}

// command returns the command line to start, with the port.
func (s *supervisor) command() *exec.Cmd {
	port := strconv.Itoa(s.port)
	cmd := exec.Command(s.argv[0], append(s.argv[1:], port)...)
	cmd.Env = append(os.Environ(), "PORT="+port)
	cmd.Stdout, cmd.Stderr = s.e.stdout, s.e.stderr
	setProcessGroup(cmd)
	return cmd
}

// stop frees the service, sends sig to the running command (if any),
// waits for it at most the grace period, kills it after, leaves the
// cluster and returns nil.
func (s *supervisor) stop(why string, sig os.Signal, cmd *exec.Cmd, exited <-chan error) error {
	s.free()
	fmt.Fprintf(s.e.stderr, "tallship run: %s: %s freed\n", why, s.rec.Role())
	if cmd != nil {
		signalGroup(cmd, sig)
		t := time.NewTimer(s.grace)
		defer t.Stop()
		select {
		case err := <-exited:
			fmt.Fprintf(s.e.stderr, "tallship run: %s exited (%s)\n", s.argv[0], exitStatus(err))
		case <-t.C:
			fmt.Fprintf(s.e.stderr, "tallship run: %s still running after %v; killing it\n", s.argv[0], s.grace)
			signalGroup(cmd, syscall.SIGKILL)
			<-exited
		case <-s.signals:
			fmt.Fprintf(s.e.stderr, "tallship run: second signal; killing %s\n", s.argv[0])
			signalGroup(cmd, syscall.SIGKILL)
			<-exited
		}
	}
	leave(s.node)
	return nil
}

// free frees the service, logging why it could not be.
func (s *supervisor) free() {
	if err := s.node.Free(s.rec.ID); err != nil {
		fmt.Fprintf(s.e.stderr, "tallship run: free %s: %v\n", s.rec.Role(), err)
	}
}

// exitStatus describes how a command ended.
func exitStatus(err error) string {
	if err == nil {
		return "status 0"
	}
	if ee, ok := err.(*exec.ExitError); ok {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "signal " + ws.Signal().String()
		}
		return "status " + strconv.Itoa(ee.ExitCode())
	}
	return err.Error()
}
