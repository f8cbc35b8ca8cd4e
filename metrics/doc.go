// Package metrics serves a mesh node's figures to Prometheus.
//
// One call registers a node on the registry the caller serves:
//
//	reg := prometheus.NewRegistry()
//	if err := metrics.Register(reg, node); err != nil {
//		return err
//	}
//	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// Several nodes in one process (as in tests, or a program that joins two
// clusters) go on one registry under a label that tells them apart:
//
//	metrics.Register(prometheus.WrapRegistererWith(prometheus.Labels{"node": a.ID()}, reg), a)
//	metrics.Register(prometheus.WrapRegistererWith(prometheus.Labels{"node": b.ID()}, reg), b)
//
// Register itself adds no label: a process usually runs one node, and
// which process a series comes from is the scraper's business (its
// instance and job labels); a node's id, a fresh UUID at each start by
// default, would make a new series at every restart.
//
// # The figures
//
//	tallship_peers                              gauge    peers linked, or being linked again
//	tallship_links_made_total                   counter  links taken into the mesh past their handshake
//	tallship_links_redone_total                 counter  lost links to a live peer made again
//	tallship_accepts_failed_total               counter  inbound accepts that failed (mostly too
//	                                                     many open files: ulimit -n)
//	tallship_handshakes_refused_total{reason}   counter  failed handshakes, on either end; reason is
//	                                                     auth, cluster, version, duplicate_id, self,
//	                                                     timeout or other
//	tallship_messages_sent_total                counter  messages queued by Send/Broadcast, per peer
//	tallship_message_bytes_sent_total           counter  their bytes (the caller's, unframed)
//	tallship_messages_received_total            counter  messages delivered to Receive
//	tallship_message_bytes_received_total       counter  their bytes
//	tallship_queue_bytes                        gauge    bytes queued for peers and not acknowledged
//	tallship_registry_records                   gauge    service records visible to the node
//	tallship_mdns_packets_sent_total            counter  mDNS packets sent
//	tallship_mdns_packets_received_total        counter  mDNS packets received
//	tallship_events_dropped_total               counter  events a slow Events reader lost
//
// And of sites (mesh.Config.NATS; zero without NATS, as the mDNS figures
// are without mDNS):
//
//	tallship_nats_connected                     gauge    1 while connected to NATS, else 0
//	tallship_nats_server_info{url}              gauge    1, the server connected to (credentials
//	                                                     hidden); absent while not connected
//	tallship_nats_reconnects_total              counter  connections to NATS made again
//	tallship_nats_outages_total                 counter  times NATS went out of reach
//	tallship_nats_outage_seconds_total          counter  time without NATS, the outage going on included
//	tallship_nats_messages_sent_total           counter  messages published on NATS
//	tallship_nats_bytes_sent_total              counter  their bytes (payloads, as sealed)
//	tallship_nats_messages_received_total       counter  messages NATS delivered, the node's own site's included
//	tallship_nats_bytes_received_total          counter  their bytes
//	tallship_nats_messages_dropped_total        counter  delivered and dropped unread (the inbox at its bound)
//	tallship_remote_members                     gauge    members of other sites heard over NATS
//	tallship_registry_remote_records            gauge    their service records (within tallship_registry_records)
//
// mesh.Stats documents each precisely.
//
// # Why a package of its own
//
// The mesh package does not import Prometheus: it keeps plain atomic
// counters and returns them as a snapshot (mesh.Node.Stats), which costs
// the hot paths (Send, each link's reader) an atomic add and no lock and
// no allocation, and leaves a program free to export them any way it
// likes (expvar, OpenTelemetry, a log line). This package is the adapter
// for Prometheus: a custom prometheus.Collector that reads the snapshot at
// scrape time, so a node that is never scraped pays nothing more, and a
// program that does not import this package does not link
// client_golang at all.
package metrics
