// Package registry is tallship's replicated service registry (the
// "manifest"): every node holds a replica of the records of every node it
// can reach, kept in sync over the links of the mesh.
//
// A record is a service instance: a role "name@semver", the owner node's
// id, a host, a port, small key/value metadata and an owner-issued version.
// Only the owner changes or frees its records.
//
// # Use
//
// The mesh creates one Registry per node and runs Serve over one stream of
// each link; the registry alone needs nothing else (its tests link
// registries with net.Pipe):
//
//	r, err := registry.New(registry.Config{ID: "node-a", Host: "10.0.0.1"})
//	...
//	go r.Serve(ctx, "node-b", stream) // for each linked peer; the peer does the same
//
//	rec, err := r.Register(registry.Service{Role: "web@1.2.3", Port: 8080})
//	recs, err := r.Services("web@^1.2")       // snapshot
//	recs, err = r.Lookup(ctx, "db@>=2 <3")    // waits for at least one
//	events, err := r.Watch(ctx, "web")        // registered, updated, freed
//	err = r.Free(rec.ID)                      // owner only
//
//	ln, err := r.Listen(ctx, registry.Service{Role: "api@2.0.0"}, ":0") // a free port, registered
//	conn, err := r.Dial(ctx, "api@^2")        // any live instance, round robin
//
// Fully configured:
//
//	r, err := registry.New(registry.Config{
//		ID:                 id,
//		Host:               "10.0.0.1",
//		Heartbeat:          500 * time.Millisecond,
//		Lifetime:           3 * time.Second, // ≥ 3 heartbeats
//		MaxRecordsPerOwner: 1000,
//		MaxMetadataBytes:   1024,
//		MaxMessageBytes:    256 << 10,
//		WatchBuffer:        256,
//		Identity:           identity, // owners sign what they say (see Identity)
//		Logger:             logger,
//		OnEvent:            func(ev registry.Event) { events <- ev }, // must not block
//	})
//
// # Roles and queries
//
// A role name is 1 to 128 ASCII letters, digits, '.', '-' and '_', starting
// with a letter or digit; a version is a semantic version. A query is a
// name with an optional Masterminds/semver range: "web", "web@1.2.3",
// "web@^1.2", "web@~1.2", "web@>=1.0 <2", "web@1.x". A malformed role or
// query is an error (ErrBadRole, ErrBadQuery), never an empty result.
//
// # Replication and liveness
//
// On a new link both ends send each other what the other lacks, then push
// every change at once, relaying what they learn so that any connected
// topology converges; (owner, version) pairs drop duplicates in cycles and
// stale copies. Every node floods its adjacency; a node sees the records
// of the owners it can reach over links both ends announce. So a node that
// closes frees its records everywhere at once, a node that dies has them
// freed as soon as its neighbours drop their links to it, and a link
// dropping between nodes still joined through others frees nothing. A
// neighbour's link stands for its liveness; owners known only through
// relays are renewed by a heartbeat that their neighbours relay, and the
// records of one that stops renewing expire after Config.Lifetime. An
// idle full mesh sends nothing. With Config.Identity every owner signs
// what it says about itself, and no node takes another's word for it:
// a relay can neither change an owner's records nor make any up. The
// wire protocol is described in docs/registry-protocol.md.
//
// # Across sites
//
// Several LAN meshes (sites) of one cluster share one registry over a
// publish/subscribe bus (in the mesh, NATS: package sites). With
// Config.Site set, ServeBus runs the registry over one connection of the
// bus, until it ends:
//
//	err := r.ServeBus(ctx, bus) // bus: Publish, Send, Receive, MaxMessage
//
// Each node publishes only what it owns, so a node of another site is
// live while its Beats come; records carry their site (Record.Site), and
// Remotes lists the nodes of other sites.
//
// # Events
//
// Config.OnEvent receives every event of the node in order (Registered,
// Updated, Freed for records as this node sees them, each once; Synced when
// a peer's initial sync has been applied) from one goroutine. Watch
// channels receive the record events matching a query; they are buffered
// and a watcher that falls Config.WatchBuffer events behind is sent
// Overflowed and closed, so a slow consumer never stalls the registry.
package registry
