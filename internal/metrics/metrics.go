// Package metrics implements cryptmilter's Prometheus metrics.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds the collectors of one daemon (a registry of its own, no
// package-level state).
type Metrics struct {
	reg      *prometheus.Registry
	messages *prometheus.CounterVec
	duration *prometheus.HistogramVec
	lookups  *prometheus.CounterVec
	cache    *prometheus.CounterVec
}

// New returns a fresh set of metrics.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cryptmilter_messages_total",
			Help: "Messages processed, by direction, decision and action.",
		}, []string{"direction", "decision", "action"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cryptmilter_message_duration_seconds",
			Help:    "Time from MAIL FROM to the end-of-message reply.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
		}, []string{"direction"}),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cryptmilter_discovery_lookups_total",
			Help: "Key discovery lookups over the network, by source (wkd, dane) and result (found, none, unusable, insecure, tempfail).",
		}, []string{"source", "result"}),
		cache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cryptmilter_discovery_cache_total",
			Help: "Key discovery cache use by messages, by source and result (hit, miss, stale).",
		}, []string{"source", "result"}),
	}
	m.reg.MustRegister(m.messages, m.duration, m.lookups, m.cache,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Observe records one message decision.
func (m *Metrics) Observe(direction, decision, action string, d time.Duration) {
	m.messages.WithLabelValues(direction, decision, action).Inc()
	m.duration.WithLabelValues(direction).Observe(d.Seconds())
}

// DiscoveryLookup records one key discovery lookup.
func (m *Metrics) DiscoveryLookup(source, result string) {
	m.lookups.WithLabelValues(source, result).Inc()
}

// DiscoveryCache records one use of the key discovery cache.
func (m *Metrics) DiscoveryCache(source, result string) {
	m.cache.WithLabelValues(source, result).Inc()
}

// Handler serves the metrics at /metrics.
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	return mux
}
