// Package mesh is the face of tallship: a node of a zero-config cluster
// mesh. Nodes announce themselves over mDNS under a cluster name, link to
// every other node of the cluster (one TCP link per pair, multiplexed with
// yamux) and share a replicated service registry.
//
// The one-line use:
//
//	node, err := mesh.Join("my-cluster")
//	defer node.Shutdown(ctx) // graceful; Close is at once
//
// Join returns before the node has met its peers (mDNS answers within
// milliseconds, links come up a moment later); WaitPeers waits for them:
//
//	peers, err := node.WaitPeers(ctx, 1) // at least one other node is linked
//
// Messages go to one peer, to a list, or to all, framed once; each peer's
// messages arrive in order, with the sender's id:
//
//	err = node.Send(ctx, peerID, []byte("hello"))
//	err = node.Broadcast(ctx, []byte("hello, all")) // ErrNoPeers when alone
//	msg, err := node.Receive(ctx) // msg.From, msg.Data
//
// Streams are net.Conns, and stream listeners net.Listeners, so http.Serve
// works over the mesh:
//
//	ln, err := node.Listen("http")
//	go http.Serve(ln, handler)
//	conn, err := node.OpenStream(ctx, peerID, "http")
//
// The registry (seaport and tallship-manifest's manifest):
//
//	ln, err := node.ListenService(ctx, mesh.Service{Role: "web@1.4.2"}, ":0") // a free port, registered
//	recs, err := node.Lookup(ctx, "web@^1.4")    // waits for one to exist
//	events, err := node.Watch(ctx, "web")        // registered, updated, freed
//	conn, err := node.DialService(ctx, "web@^1") // any live instance
//
// Fully configured, with cancellation of the start:
//
//	node, err := mesh.Config{
//		ID:        "web-1",               // default: a random UUID
//		Listen:    ":7946",               // default: ":0"
//		Discovery: []discovery.Discoverer{&discovery.MDNS{}, &discovery.Static{Addrs: seeds}},
//		Secret:    os.Getenv("TALLSHIP_SECRET"),
//		Logger:    slog.Default(),
//	}.Join(ctx, "my-cluster")
//
// Links: discovery makes the lower id dial; when two links join a pair
// anyway both ends keep the one dialed by the lower id, without losing a
// message. A peer added with Connect (an IP address or a host name) is
// kept: its link is redialed with backoff until Disconnect. Linked nodes
// exchange their members, so joining through one address completes the
// mesh.
//
// Delivery: Send returns once the message is queued. What Send accepted
// for a peer arrives once, in order, for as long as that peer lives: a
// link that breaks while both nodes live is made again at once, silently,
// and carries on with what the peer had not acknowledged (docs/protocol.md,
// "Delivery"). A link that goes silent is not taken for a dead peer while
// another peer still hears it (a lossy link). A peer is down (PeerDown)
// when it says goodbye, when it is shown gone (kill -9: its address
// refuses the redial, within milliseconds), when it restarts (a new run
// of its id links), or when nobody has heard it for KeepAliveInterval +
// WriteTimeout (1.5 s by default; LocalConfig: 1 s): a frozen host or a
// cut cable. Its PeerDown then says how many messages it had not
// acknowledged (Event.Undelivered): never silence. In a mesh of two there
// is nobody to ask, and a link silent that long is a dead peer.
//
// Events (peer up and down, registry sync, refused ids, failed links,
// discovery errors) arrive in order on the channels of Events; services
// are followed with Watch. A slow reader never blocks the node. A link
// that fails (LinkFailed) names its reason first, on each end that took
// part: "wrong cluster secret", "wrong cluster", "wrong protocol version",
// "duplicate node id", "unreachable (connection refused)", "handshake
// timed out", …; a dial retried for the same reason is one event, and
// one line in the log (at Warn for a setting that differs between the
// nodes, else at Info: both shown by slog's default level).
//
// Sites: several LAN meshes of one cluster (offices, subnets without
// multicast, a datacenter beside the lab) share one registry through
// NATS, and reach each other's members with messages. Each LAN is a site
// (Config.Site), and every node also connects to NATS (Config.NATS),
// which carries only what crosses sites:
//
//	node, err := mesh.Config{
//		Site: "lab",
//		NATS: mesh.NATSConfig{URLs: []string{"nats://nats:4222"}, CredsFile: "user.creds"},
//	}.Join(ctx, "my-cluster")
//	recs, err := node.Lookup(ctx, "db@^2")        // of every site; recs[0].Site says whose
//	members := node.Remotes()                     // the other sites' members
//	err = node.Send(ctx, members[0].ID, msg)      // over NATS, once and in order
//	err = node.Broadcast(ctx, msg)                // the LAN over links, other sites over NATS
//
// NATSUp and NATSDown events follow the connection, RemoteUp and
// RemoteDown the members of other sites; a site cut off from NATS keeps
// its LAN and converges again when NATS returns (docs/sites.md).
// Streams are LAN-only (ErrRemotePeer).
//
// Leaving: Shutdown(ctx) says goodbye, frees this node's records
// everywhere and delivers what Send queued, until ctx ends; Close does it
// at once, dropping what is queued. Both return once every goroutine the
// node started has ended.
package mesh
