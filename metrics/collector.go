package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/tallship-go/tallship/mesh"
)

// Register registers a collector of n's figures (see the package doc) on
// reg. The figures are read from n.Stats at each scrape; after n closes,
// the counters keep their last values and the gauges read zero. It
// returns reg's error: a prometheus.AlreadyRegisteredError when reg
// already holds a tallship node's figures without a label that tells
// them apart.
func Register(reg prometheus.Registerer, n *mesh.Node) error {
	return reg.Register(newCollector(n))
}

// collector reads a node's Stats at scrape time.
type collector struct {
	n *mesh.Node

	peers, queueBytes, records                     *prometheus.Desc
	linksMade, linksRedone, acceptsFailed, refused *prometheus.Desc
	msgsSent, bytesSent, msgsReceived, bytesRecvd  *prometheus.Desc
	mdnsSent, mdnsReceived, eventsDropped          *prometheus.Desc

	natsConnected, natsServer, natsReconnects, natsOutages, natsOutageSeconds *prometheus.Desc
	natsMsgsSent, natsBytesSent, natsMsgsReceived, natsBytesReceived          *prometheus.Desc
	natsDropped, remoteMembers, remoteRecords                                 *prometheus.Desc
}

func newCollector(n *mesh.Node) *collector {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("tallship_"+name, help, labels, nil)
	}
	return &collector{
		n:             n,
		peers:         desc("peers", "Peers the node is linked with, or is linking with again after a lost link."),
		queueBytes:    desc("queue_bytes", "Bytes queued for peers that they have not acknowledged yet."),
		records:       desc("registry_records", "Service records the node sees (those of live owners)."),
		linksMade:     desc("links_made_total", "Links that passed their handshake and were taken into the mesh."),
		linksRedone:   desc("links_redone_total", "Lost links to a live peer that were made again before the peer was declared down."),
		acceptsFailed: desc("accepts_failed_total", "Accepts of inbound connections that failed (mostly too many open files); the node accepts again."),
		refused:       desc("handshakes_refused_total", "Handshakes that failed, on either end, by reason.", "reason"),
		msgsSent:      desc("messages_sent_total", "Messages queued by Send, SendMany and Broadcast, counted once per peer."),
		bytesSent:     desc("message_bytes_sent_total", "Bytes of the messages queued by Send, SendMany and Broadcast, counted once per peer, without framing."),
		msgsReceived:  desc("messages_received_total", "Messages delivered to Receive."),
		bytesRecvd:    desc("message_bytes_received_total", "Bytes of the messages delivered to Receive."),
		mdnsSent:      desc("mdns_packets_sent_total", "mDNS packets sent by the node's discovery."),
		mdnsReceived:  desc("mdns_packets_received_total", "mDNS packets received by the node's discovery."),
		eventsDropped: desc("events_dropped_total", "Events lost by a slow reader of the node's events."),

		natsConnected:     desc("nats_connected", "1 while the node is connected to NATS (sites), else 0."),
		natsServer:        desc("nats_server_info", "The NATS server the node is connected to, by URL (credentials hidden); absent while not connected.", "url"),
		natsReconnects:    desc("nats_reconnects_total", "Connections to NATS made again, after one was lost or a first try failed."),
		natsOutages:       desc("nats_outages_total", "Times NATS went out of reach: the connection lost, no server answering, credentials refused."),
		natsOutageSeconds: desc("nats_outage_seconds_total", "Time the node has been without NATS, the outage going on included."),
		natsMsgsSent:      desc("nats_messages_sent_total", "Messages the node published on NATS."),
		natsBytesSent:     desc("nats_bytes_sent_total", "Bytes of the messages the node published on NATS (payloads, as sealed)."),
		natsMsgsReceived:  desc("nats_messages_received_total", "Messages NATS delivered to the node, its own site's included."),
		natsBytesReceived: desc("nats_bytes_received_total", "Bytes of the messages NATS delivered to the node (payloads, as sealed)."),
		natsDropped:       desc("nats_messages_dropped_total", "Messages NATS delivered that the node dropped unread, what waited to be read being at its bound."),
		remoteMembers:     desc("remote_members", "Members of other sites the node hears over NATS."),
		remoteRecords:     desc("registry_remote_records", "Service records of other sites the node sees (part of tallship_registry_records)."),
	}
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.peers, c.queueBytes, c.records, c.linksMade, c.linksRedone, c.acceptsFailed, c.refused,
		c.msgsSent, c.bytesSent, c.msgsReceived, c.bytesRecvd, c.mdnsSent, c.mdnsReceived, c.eventsDropped,
		c.natsConnected, c.natsServer, c.natsReconnects, c.natsOutages, c.natsOutageSeconds,
		c.natsMsgsSent, c.natsBytesSent, c.natsMsgsReceived, c.natsBytesReceived,
		c.natsDropped, c.remoteMembers, c.remoteRecords,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.n.Stats()
	gauge := func(d *prometheus.Desc, v int) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(c.peers, s.Peers)
	gauge(c.queueBytes, s.QueueBytes)
	gauge(c.records, s.Records)
	counter(c.linksMade, s.LinksMade)
	counter(c.linksRedone, s.LinksRedone)
	counter(c.acceptsFailed, s.AcceptsFailed)
	r := s.HandshakesRefused
	counter(c.refused, r.Auth, "auth")
	counter(c.refused, r.Cluster, "cluster")
	counter(c.refused, r.Version, "version")
	counter(c.refused, r.DuplicateID, "duplicate_id")
	counter(c.refused, r.Self, "self")
	counter(c.refused, r.Timeout, "timeout")
	counter(c.refused, r.Other, "other")
	counter(c.msgsSent, s.MessagesSent)
	counter(c.bytesSent, s.MessageBytesSent)
	counter(c.msgsReceived, s.MessagesReceived)
	counter(c.bytesRecvd, s.MessageBytesReceived)
	counter(c.mdnsSent, s.MDNSPacketsSent)
	counter(c.mdnsReceived, s.MDNSPacketsReceived)
	counter(c.eventsDropped, s.EventsDropped)

	// Zero without NATS, as the mDNS figures are without mDNS; the
	// server's URL only while there is one.
	ns := s.NATS
	connected := 0
	if ns.Connected {
		connected = 1
	}
	gauge(c.natsConnected, connected)
	if ns.URL != "" {
		ch <- prometheus.MustNewConstMetric(c.natsServer, prometheus.GaugeValue, 1, ns.URL)
	}
	counter(c.natsReconnects, ns.Reconnects)
	counter(c.natsOutages, ns.Outages)
	ch <- prometheus.MustNewConstMetric(c.natsOutageSeconds, prometheus.CounterValue, ns.OutageTime.Seconds())
	counter(c.natsMsgsSent, ns.MessagesSent)
	counter(c.natsBytesSent, ns.BytesSent)
	counter(c.natsMsgsReceived, ns.MessagesReceived)
	counter(c.natsBytesReceived, ns.BytesReceived)
	counter(c.natsDropped, ns.MessagesDropped)
	gauge(c.remoteMembers, ns.RemoteMembers)
	gauge(c.remoteRecords, ns.RemoteRecords)
}
