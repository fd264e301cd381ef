// Package metrics implements cryptmilter's Prometheus metrics.
//
// Every counter here is local: it is exported on the metrics listener
// (loopback, for the admin's Prometheus) and never shown to a sender, so
// the decryption failure classes it tells apart are no oracle.
package metrics

import (
	"net/http"
	"sync"
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

	ops         *prometheus.CounterVec
	decryptFail *prometheus.CounterVec
	reinject    prometheus.Counter
	reinjectErr prometheus.Counter
	slotWait    prometheus.Histogram
	inFlight    prometheus.Gauge
	build       *prometheus.GaugeVec

	mu      sync.Mutex
	keyring func() Keyring
	health  func() bool
}

// Keyring is what the keyring metrics show, read at each scrape.
type Keyring struct {
	// Kinds counts the loaded keys and certificates by kind, in the
	// words of `keys list --json` (public, secret, certificate,
	// identity, ca) and crl.
	Kinds map[string]int
	// LoadedAt is when the keyring in service was read.
	LoadedAt time.Time
	// OK is false when the last (re)load failed or could not read every
	// file (the keys read earlier stay in service).
	OK bool
}

// Label values of cryptmilter_crypto_operations_total and
// cryptmilter_decryption_failures_total: a small fixed set.
const (
	OpDecrypt = "decrypt"
	OpVerify  = "verify"
	OpSign    = "sign"
	OpEncrypt = "encrypt"

	// ResultOK: the operation succeeded (sign, encrypt, decrypt).
	ResultOK = "ok"
	// ResultFailed: a decryption failed (see the failure reasons).
	ResultFailed = "failed"
	// ResultTempfail: the keys the operation needs could not be read;
	// the message was tempfailed.
	ResultTempfail = "tempfail"
	// Verifications have the signature verdict as their result: valid,
	// mismatch, untrusted, expired, revoked, bad, partial.

	// ReasonDecryptFailed: the engine's one class for ciphertext to the
	// gateway that did not decrypt (wrong key material, integrity check,
	// malformed ciphertext, decrypted content over the limits): it tells
	// them apart to nobody, not even here.
	ReasonDecryptFailed = "decrypt_failed"
	// ReasonNotForGateway: encrypted to keys the gateway does not hold
	// (an old gateway key, another recipient's key).
	ReasonNotForGateway = "not_for_gateway"
	// ReasonKeyringUnavailable: the gateway's secret keys could not be
	// read; the message was tempfailed.
	ReasonKeyringUnavailable = "keyring_unavailable"
)

// New returns a fresh set of metrics for a daemon of the given version.
func New(version string) *Metrics {
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
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cryptmilter_crypto_operations_total",
			Help: "Cryptographic operations of the engine, one per message and kind: protocol (openpgp, smime), operation (decrypt, verify, sign, encrypt), result (ok, failed, tempfail; for verify the signature verdict).",
		}, []string{"protocol", "operation", "result"}),
		decryptFail: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cryptmilter_decryption_failures_total",
			Help: "Inbound decryptions that failed, by protocol and reason class (decrypt_failed, not_for_gateway, keyring_unavailable); local only, never told to the sender.",
		}, []string{"protocol", "reason"}),
		reinject: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cryptmilter_reinject_attempts_total",
			Help: "Extra copies handed to [outbound] reinject over SMTP.",
		}),
		reinjectErr: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cryptmilter_reinject_failures_total",
			Help: "Extra copies the re-injection listener did not accept (the whole message is tempfailed).",
		}),
		slotWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cryptmilter_slot_wait_seconds",
			Help:    "Time a message waited for one of limits.max_concurrent processing slots.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cryptmilter_messages_in_flight",
			Help: "Messages between MAIL FROM and the end-of-message reply.",
		}),
		build: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cryptmilter_build_info",
			Help: "Always 1; the version label is cryptmilter's version.",
		}, []string{"version"}),
	}
	m.build.WithLabelValues(version).Set(1)
	m.reg.MustRegister(m.messages, m.duration, m.lookups, m.cache,
		m.ops, m.decryptFail, m.reinject, m.reinjectErr, m.slotWait, m.inFlight, m.build,
		&keyringCollector{m}, &healthCollector{m},
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

// Operation records one cryptographic operation.
func (m *Metrics) Operation(protocol, operation, result string) {
	m.ops.WithLabelValues(protocol, operation, result).Inc()
}

// DecryptionFailure records a failed decryption of the reason class
// reason (one of the Reason constants).
func (m *Metrics) DecryptionFailure(protocol, reason string) {
	m.decryptFail.WithLabelValues(protocol, reason).Inc()
}

// Reinject records one copy handed to the re-injection listener: err is
// nil when the listener accepted it.
func (m *Metrics) Reinject(err error) {
	m.reinject.Inc()
	if err != nil {
		m.reinjectErr.Inc()
	}
}

// SlotWait records how long a message waited for a processing slot
// (also when it gave up waiting).
func (m *Metrics) SlotWait(d time.Duration) {
	m.slotWait.Observe(d.Seconds())
}

// MessagesInFlight adds delta (+1 at MAIL FROM, -1 when the message ends: its
// end-of-message reply, an abort or a lost connection) to the messages in
// flight.
func (m *Metrics) MessagesInFlight(delta int) {
	m.inFlight.Add(float64(delta))
}

// SetKeyring sets where the keyring metrics come from; f is called at
// each scrape. Without it they are not exported.
func (m *Metrics) SetKeyring(f func() Keyring) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.keyring = f
}

// SetHealth sets where cryptmilter_healthy comes from (what /healthz
// answers); f is called at each scrape.
func (m *Metrics) SetHealth(f func() bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.health = f
}

// Handler serves the metrics at /metrics.
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	return mux
}

// keyringKinds are the kinds always exported (0 when absent), so that a
// kind that empties shows 0 instead of vanishing.
var keyringKinds = []string{"public", "secret", "certificate", "identity", "ca", "crl"}

// keyringCollector exports the keyring gauges from Metrics.keyring.
type keyringCollector struct{ m *Metrics }

var (
	keyringKeysDesc = prometheus.NewDesc("cryptmilter_keyring_keys",
		"Keys and certificates of the keyring in service, by kind: public, secret, certificate, identity, ca (as in `keys list --json`) and crl.",
		[]string{"kind"}, nil)
	keyringReloadDesc = prometheus.NewDesc("cryptmilter_keyring_last_reload_timestamp_seconds",
		"Unix time at which the keyring in service was read.", nil, nil)
	keyringOKDesc = prometheus.NewDesc("cryptmilter_keyring_last_reload_success",
		"1 when the last keystore (re)load read every file, 0 when it failed or could not read some (the keys read earlier stay in service).", nil, nil)
	healthyDesc = prometheus.NewDesc("cryptmilter_healthy",
		"1 when /healthz answers 200 (keystore read without errors, a usable gateway identity, listeners up), else 0.", nil, nil)
)

func (c *keyringCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- keyringKeysDesc
	ch <- keyringReloadDesc
	ch <- keyringOKDesc
}

func (c *keyringCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	f := c.m.keyring
	c.m.mu.Unlock()
	if f == nil {
		return
	}
	k := f()
	seen := map[string]bool{}
	for _, kind := range keyringKinds {
		seen[kind] = true
		ch <- prometheus.MustNewConstMetric(keyringKeysDesc, prometheus.GaugeValue, float64(k.Kinds[kind]), kind)
	}
	for kind, n := range k.Kinds {
		if !seen[kind] {
			ch <- prometheus.MustNewConstMetric(keyringKeysDesc, prometheus.GaugeValue, float64(n), kind)
		}
	}
	if !k.LoadedAt.IsZero() {
		ch <- prometheus.MustNewConstMetric(keyringReloadDesc, prometheus.GaugeValue, float64(k.LoadedAt.UnixNano())/1e9)
	}
	ch <- prometheus.MustNewConstMetric(keyringOKDesc, prometheus.GaugeValue, boolValue(k.OK))
}

// healthCollector exports cryptmilter_healthy from Metrics.health.
type healthCollector struct{ m *Metrics }

func (c *healthCollector) Describe(ch chan<- *prometheus.Desc) { ch <- healthyDesc }

func (c *healthCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	f := c.m.health
	c.m.mu.Unlock()
	if f != nil {
		ch <- prometheus.MustNewConstMetric(healthyDesc, prometheus.GaugeValue, boolValue(f()))
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
