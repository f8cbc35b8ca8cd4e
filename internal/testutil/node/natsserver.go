package node

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// runNATSServer is the harness's third mode (Config.NATSServer): a NATS
// server (nats-server embedded) listening on the address spec names, as
// a host of a LAN of the tests runs it for the sites of a cluster. It
// prints a start event with its address and serves until SIGINT,
// SIGTERM or the end of its input (or SIGKILL).
func runNATSServer(out *printer, spec string) error {
	listen, ok := strings.CutPrefix(spec, "listen=")
	host, port, err := net.SplitHostPort(listen)
	if !ok || err != nil {
		return fmt.Errorf("-nats-server %q: want listen=HOST:PORT", spec)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return fmt.Errorf("-nats-server %q: port %q", spec, port)
	}
	if p == 0 {
		p = server.RANDOM_PORT
	}
	srv, err := server.NewServer(&server.Options{Host: host, Port: p, NoLog: true, NoSigs: true})
	if err != nil {
		return err
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return fmt.Errorf("nats server on %s not ready", listen)
	}
	defer func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	}()
	out.print(Event{Ev: "start", Addrs: []string{srv.Addr().String()}})
	waitForEnd()
	return nil
}
