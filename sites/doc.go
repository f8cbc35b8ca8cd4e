// Package sites joins several LAN meshes of one tallship cluster (its
// sites) through NATS: a Bus is a node's connection to a NATS system
// (servers, a cluster, gateways, leaf nodes; core NATS only, no
// JetStream), and each of its Sessions carries the node's registry to
// the other sites (registry.ServeBus) and the mesh's messages to nodes
// of other sites (Session.SendMessage, Session.PublishMessage; the Bus's
// ReceiveMessage reads those for this node). The mesh runs it when
// mesh.Config.NATS names servers; a program that uses the mesh needs
// this package only for the errors mesh.Config.Join and Node.Start wrap
// (errors.Is(err, sites.ErrConfig), sites.ErrRefused).
//
//	b, err := sites.Dial(ctx, sites.Config{URLs: []string{"nats://nats:4222"}, Cluster: "c", Site: "lab", Node: id})
//	for {
//		s, err := b.Next(ctx) // waits for a connection
//		if err != nil {
//			break // closed
//		}
//		reg.ServeBus(ctx, s) // until the connection ends
//	}
//	b.Close()
//
// Fully configured:
//
//	sites.Config{
//		URLs:      []string{"tls://nats-1:4222", "tls://nats-2:4222"},
//		CredsFile: "/etc/tallship/nats.creds", // or User and Password, or Token
//		TLS:       tlsConfig,                  // roots, client certificate
//		Cluster:   "c",
//		Secret:    secret, // keys the subjects and seals every payload
//		Site:      "lab",
//		Node:      id,
//		ReconnectWait: 100 * time.Millisecond, ReconnectWaitMax: 5 * time.Second,
//		PingInterval:  2 * time.Second,
//		Logger:        logger,
//	}
//
// The subjects, what crosses them and what it costs are in
// docs/sites.md.
package sites
