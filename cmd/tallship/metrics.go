package main

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/tallship-go/tallship/metrics"
)

// metricsHandler serves the node's figures (package metrics) and the
// process's (Go runtime, CPU, memory, file descriptors) in Prometheus's
// text format, for GET /metrics on the dashboard's server. It sits behind
// the dashboard's access rule: the figures say as much about the cluster
// as the page does (how many peers, how much traffic), so off loopback a
// scraper sends the token ("Authorization: Bearer TOKEN"; in Prometheus,
// the scrape job's authorization.credentials).
func (d *dashboard) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	if err := metrics.Register(reg, d.n); err != nil {
		panic(err) // a fresh registry holds no other node
	}
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}
