package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cryptmilter/cryptmilter/internal/listen"
	"github.com/cryptmilter/cryptmilter/internal/metrics"
	"github.com/cryptmilter/cryptmilter/keystore"
)

// health is what /healthz answers: healthy when the keystore was read
// without errors (last reload included), a gateway identity can sign, and
// every milter listener is up. It logs each change of state.
type health struct {
	keys *keystore.Holder
	log  *slog.Logger
	now  func() time.Time

	mu        sync.Mutex
	listeners []*watched
	stopping  bool
	last      string // reasons of the last check, joined ("" when healthy)
	checked   bool
}

// watched is a milter listener as health sees it.
type watched struct {
	name string
	// path and ino identify a unix socket file: removed or replaced,
	// Postfix can no longer reach the milter although it still listens.
	path   string
	ino    uint64
	failed error // why it stopped serving, nil while it serves
}

func newHealth(keys *keystore.Holder, log *slog.Logger) *health {
	return &health{keys: keys, log: log, now: time.Now}
}

// addListener registers a milter listener (before it serves).
func (h *health) addListener(l *listen.Listener) {
	w := &watched{name: l.Name}
	if a := l.Addr(); a.Network() == "unix" && a.String() != "" && !strings.HasPrefix(a.String(), "@") {
		w.path = a.String()
		if fi, err := os.Stat(w.path); err == nil {
			w.ino = inode(fi)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.listeners = append(h.listeners, w)
}

// listenerFailed records that the listener called name stopped serving.
func (h *health) listenerFailed(name string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, w := range h.listeners {
		if w.name == name {
			w.failed = err
		}
	}
}

// setStopping marks the daemon as draining: /healthz then fails, so a
// load balancer or monitor stops counting on it.
func (h *health) setStopping() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopping = true
}

// check returns whether the daemon is healthy, with one reason per
// problem, and logs a change of state.
func (h *health) check() (ok bool, reasons []string) {
	_, reasons = h.keys.Health(h.now())
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopping {
		reasons = append(reasons, "shutting down: draining the messages in flight")
	}
	if len(h.listeners) == 0 {
		reasons = append(reasons, "no milter listener")
	}
	for _, w := range h.listeners {
		if r := w.problem(); r != "" {
			reasons = append(reasons, "listener "+w.name+": "+r)
		}
	}
	h.logChange(reasons)
	return len(reasons) == 0, reasons
}

// problem says why the listener does not serve, or "".
func (w *watched) problem() string {
	if w.failed != nil {
		return "stopped serving: " + w.failed.Error()
	}
	if w.path == "" {
		return ""
	}
	fi, err := os.Stat(w.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Sprintf("socket file %s is gone: the MTA cannot connect; restart cryptmilter to create it again", w.path)
	case err != nil:
		return fmt.Sprintf("socket file %s cannot be checked: %v", w.path, err)
	case fi.Mode()&os.ModeSocket == 0 || w.ino != 0 && inode(fi) != w.ino:
		return fmt.Sprintf("socket file %s was replaced by another file: the MTA does not reach this process; restart cryptmilter", w.path)
	}
	return ""
}

// logChange logs the reasons when they differ from the last check's (the
// first check logs only a problem).
func (h *health) logChange(reasons []string) {
	now := strings.Join(reasons, "; ")
	if h.checked && now == h.last {
		return
	}
	first := !h.checked
	h.checked, h.last = true, now
	switch {
	case now != "":
		h.log.Warn("unhealthy: /healthz answers 503", "reasons", now)
	case !first:
		h.log.Info("healthy again: /healthz answers 200")
	}
}

// ServeHTTP answers /healthz: 200 "ok", or 503 with one reason a line.
func (h *health) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	ok, reasons := h.check()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if ok {
		w.WriteHeader(http.StatusOK)
		fmt.Fprintln(w, "ok")
		return
	}
	w.WriteHeader(http.StatusServiceUnavailable)
	for _, r := range reasons {
		fmt.Fprintln(w, r)
	}
}

// run checks every interval until ctx ends, so that a change (a gateway
// key expiring, a socket file removed) is logged even when nobody polls.
func (h *health) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			h.check()
		}
	}
}

// keyringSource gives the keyring metrics from the snapshot in service.
func keyringSource(keys *keystore.Holder) func() metrics.Keyring {
	return func() metrics.Keyring {
		s := keys.Current()
		return metrics.Keyring{Kinds: s.Counts(), LoadedAt: s.LoadedAt(),
			OK: keys.ReloadError() == nil && len(s.Faults()) == 0}
	}
}

// metricsHandler serves /metrics and /healthz.
func metricsHandler(m *metrics.Metrics, h *health) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	mux.Handle("/healthz", h)
	return mux
}

func inode(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

// listenerDetails are a listener's debug log attributes: its address and,
// for a unix socket, the file's mode and owner.
func listenerDetails(l *listen.Listener) []any {
	a := l.Addr()
	attrs := []any{"socket", l.Name, "network", a.Network(), "address", a.String()}
	if a.Network() == "unix" {
		if fi, err := os.Stat(a.String()); err == nil {
			attrs = append(attrs, "mode", fmt.Sprintf("%04o", fi.Mode().Perm()))
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				attrs = append(attrs, "uid", st.Uid, "gid", st.Gid)
			}
		}
	}
	return attrs
}

// logGatewayIdentities logs each gateway key and identity at debug level:
// address, protocol, fingerprint, expiry and what it may be used for.
func logGatewayIdentities(log *slog.Logger, s *keystore.Snapshot, t time.Time) {
	if !log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	for _, addr := range s.GatewayAddresses() {
		for _, e := range s.Describe(addr, t) {
			if e.Kind != "secret" && e.Kind != "identity" {
				continue
			}
			expires := "never"
			if e.Expires != nil {
				expires = e.Expires.Format(time.RFC3339)
			}
			attrs := []any{"address", addr, "protocol", e.Protocol, "fingerprint", e.Fingerprint,
				"algorithm", e.Algorithm, "expires", expires, "uses", strings.Join(e.Uses, ","), "file", e.File}
			if !e.Usable {
				attrs = append(attrs, "unusable", e.Reason)
			}
			log.Debug("gateway identity", attrs...)
		}
	}
}
