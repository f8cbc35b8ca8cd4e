// Package node is the one test-node harness: a mesh node in a process of
// its own that prints what happens to it as JSON lines and takes commands
// on standard input. The multi-host LAN tests (internal/testutil/lan), the
// end-to-end tests (e2e) and the benchmark's kill and freeze measures
// (cmd/tallship-bench -helper node) all run it.
//
// Main is the node; the command tsnode (cmd/tsnode, built by Binary) and
// the benchmark call it. Config is its command line, Start runs it and
// Proc follows it:
//
//	bin, err := node.Binary()
//	p, err := node.Start(exec.Command(bin, node.Config{Cluster: "c", Roles: []string{"web@1.0.0"}}.Args()...))
//	p.WaitEvent(5*time.Second, func(e node.Event) bool { return e.Ev == "peer-up" })
//	p.Kill()
//
// It refuses to run outside the tests' private network namespaces
// (netns.Inside, and no interface but loopback and those named "ts…"), so
// that it never sends a packet on a real LAN: never run it by hand.
//
// # Flags
//
//	-cluster C [-id ID] [-secret S] [-listen ADDR] [-iface NAME]...
//	[-timers local|default] [-keepalive D] [-write-timeout D]
//	[-heartbeat D] [-lifetime D] [-fallback D]
//	[-no-mdns] [-dns-server HOST:PORT -dns-name NAME [-dns-interval D]]
//	[-discovery-events] [-connect ADDR]... [-role NAME@VER]... [-meta K=V]...
//	[-nats URL[,URL...] [-site NAME]] [-debug]
//
// Config's fields say what each means. With -proxy listen=ADDR,to=ADDR,delay=D
// the process is a TCP proxy that adds D of latency in each direction
// instead (the kernel has no netem); with -nats-server listen=HOST:PORT
// it is a NATS server (nats-server embedded) for the sites of a cluster.
//
// # Output
//
// One Event a line, T the time in the node's clock:
//
//	start            id, addrs, records: joined, linked to every -connect,
//	                 every -role registered; always the first line
//	peer-up          peer
//	peer-down        peer, err (none when it left gracefully), undelivered
//	synced           peer: its registry has arrived
//	id-conflict      peer, err: another live node has this node's id
//	discovery-error  err
//	registered, updated, freed
//	                 rec, peer (its owner): from Watch, own records too
//	overflowed       the watch fell behind and ended
//	found, lost      peer, addrs: what discovery reported (-discovery-events)
//	msg              peer, data: a message received
//	stream-read      peer, data (the protocol), bytes, sum, err: a stream
//	                 of a stream-listen read to its end (err: why it
//	                 ended early); sum is the hex SHA-256 of its bytes
//	stream-sent      peer, data, bytes, sum, err: a stream-send's writes
//	                 and close are done (err: why they stopped)
//	reply            seq, and what the command returns, or err
//	fatal            err: the node could not start; it exits with status 1
//
// nats-up and nats-down (err) say the node's connection to NATS came and
// went (-nats); remote-up (peer) and remote-down (peer, err, undelivered)
// that a member of another site came and went. A proxy or a NATS server prints only start, with its
// address.
//
// # Commands
//
// One a line, each starting with a number that its reply repeats:
//
//	N register NAME@VER [KEY=VALUE]...   reply: rec
//	N free RECORD-ID
//	N send PEER TEXT...                  TEXT arrives as one message
//	N connect HOST:PORT                  reply: peer (the id linked)
//	N peers                              reply: peers (ids, sorted)
//	N services [QUERY]                   reply: records (sorted by id)
//	N stream-listen NAME                 accept the streams of protocol NAME
//	N stream-send PEER NAME BYTES [EVERY]
//	                                     open a stream to PEER for NAME;
//	                                     reply once open, then write BYTES
//	                                     of a fixed pseudo-random pattern
//	                                     (its sum: PatternSum), StreamChunk
//	                                     a write, one write every EVERY (a
//	                                     duration; none: at full speed),
//	                                     and close it
//	N close                              leave gracefully, reply, exit 0
//
// The end of input also makes the node leave gracefully (Shutdown, for at
// most 5 s) and exit 0; SIGINT and SIGTERM too.
package node
