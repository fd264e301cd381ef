package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cryptmilter/cryptmilter/internal/config"
	"github.com/cryptmilter/cryptmilter/internal/listen"
	"github.com/cryptmilter/cryptmilter/internal/metrics"
	"github.com/cryptmilter/cryptmilter/keystore"
)

// healthFixture is a real keystore (with or without a gateway identity)
// and real milter listeners, a unix socket and a TCP port.
type healthFixture struct {
	dir  string
	keys *keystore.Holder
	lns  []*listen.Listener
	h    *health
	log  *lockedBuffer
}

func newHealthFixture(t *testing.T, identity bool) *healthFixture {
	t.Helper()
	f := &healthFixture{dir: t.TempDir(), log: &lockedBuffer{}}
	opts := keystore.Options{Dir: filepath.Join(f.dir, "keys")}
	if err := os.Mkdir(opts.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if identity {
		if _, err := keystore.Init(opts, []string{"gw@example.org"}, false, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	if f.keys, err = keystore.NewHolder(opts); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Keystore = opts.Dir
	cfg.Listen = []string{"unix:" + filepath.Join(f.dir, "m.sock"), "inet:127.0.0.1:0"}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if f.lns, err = listen.Open(cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, l := range f.lns {
			l.Close()
		}
	})
	f.h = newHealth(f.keys, slog.New(slog.NewTextHandler(f.log, nil)))
	for _, l := range f.lns {
		f.h.addListener(l)
	}
	return f
}

// get asks /healthz through the handler serve mounts.
func (f *healthFixture) get(t *testing.T) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	metricsHandler(metrics.New("test"), f.h).ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	return rec.Code, rec.Body.String()
}

func wantUnhealthy(t *testing.T, f *healthFixture, reason string) {
	t.Helper()
	code, body := f.get(t)
	t.Logf("/healthz: %d %s", code, body)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, reason) {
		t.Errorf("/healthz = %d %q, want 503 naming %q", code, body, reason)
	}
}

func TestHealthzHealthy(t *testing.T) {
	f := newHealthFixture(t, true)
	if code, body := f.get(t); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("/healthz = %d %q, want 200 ok", code, body)
	}
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, httptest.NewRequest("POST", "/healthz", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /healthz = %d, want 405", rec.Code)
	}
	if f.log.String() != "" {
		t.Errorf("a healthy first check logged:\n%s", f.log)
	}
}

// TestHealthzKeystoreUnreadable: a secret refused for its permissions, and
// a reload that cannot read the directory, each make /healthz fail with
// the reason; a good reload makes it healthy again, and the log says so.
func TestHealthzKeystoreUnreadable(t *testing.T) {
	f := newHealthFixture(t, true)
	secrets, _ := filepath.Glob(filepath.Join(f.dir, "keys", "private", "openpgp", "*.asc"))
	if len(secrets) != 1 {
		t.Fatalf("gateway OpenPGP secrets: %v", secrets)
	}
	os.Chmod(secrets[0], 0o644)
	f.keys.Reload()
	wantUnhealthy(t, f, "private/openpgp/"+filepath.Base(secrets[0]))
	os.Chmod(secrets[0], 0o600)

	ks := filepath.Join(f.dir, "keys")
	if err := os.Rename(ks, ks+".away"); err != nil {
		t.Fatal(err)
	}
	if err := f.keys.Reload(); err == nil {
		t.Fatal("reload of a missing keystore succeeded")
	}
	wantUnhealthy(t, f, "last reload failed")
	os.Rename(ks+".away", ks)
	if err := f.keys.Reload(); err != nil {
		t.Fatal(err)
	}
	if code, body := f.get(t); code != http.StatusOK {
		t.Errorf("after a good reload: /healthz = %d %q", code, body)
	}
	logs := f.log.String()
	if strings.Count(logs, "unhealthy: /healthz answers 503") != 2 || !strings.Contains(logs, "healthy again") {
		t.Errorf("state changes not logged once each:\n%s", logs)
	}
}

func TestHealthzNoIdentity(t *testing.T) {
	f := newHealthFixture(t, false)
	wantUnhealthy(t, f, "no gateway identity can sign")
}

// TestHealthzListeners: a unix socket file removed or replaced, a
// listener that stopped serving, and the drain each fail the check.
func TestHealthzListeners(t *testing.T) {
	f := newHealthFixture(t, true)
	sock := filepath.Join(f.dir, "m.sock")
	f.lns[0].Close() // removes the socket file, as a stray rm would
	wantUnhealthy(t, f, "listener unix:"+sock+": socket file "+sock+" is gone")
	if err := os.WriteFile(sock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	wantUnhealthy(t, f, "socket file "+sock+" was replaced by another file")

	f = newHealthFixture(t, true)
	f.h.listenerFailed("inet:127.0.0.1:0", errors.New("accept: too many open files"))
	wantUnhealthy(t, f, "listener inet:127.0.0.1:0: stopped serving: accept: too many open files")

	f = newHealthFixture(t, true)
	f.h.setStopping()
	wantUnhealthy(t, f, "shutting down")
}

// TestHealthMetric: cryptmilter_healthy and the keyring gauges follow the
// holder.
func TestHealthMetric(t *testing.T) {
	f := newHealthFixture(t, true)
	m := metrics.New("test")
	m.SetKeyring(keyringSource(f.keys))
	m.SetHealth(func() bool { ok, _ := f.h.check(); return ok })
	scrape := func() string {
		rec := httptest.NewRecorder()
		metricsHandler(m, f.h).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return rec.Body.String()
	}
	body := scrape()
	for _, want := range []string{"cryptmilter_healthy 1", `cryptmilter_keyring_keys{kind="secret"} 1`,
		`cryptmilter_keyring_keys{kind="identity"} 1`, "cryptmilter_keyring_last_reload_success 1"} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
	ks := filepath.Join(f.dir, "keys")
	os.Rename(ks, ks+".away")
	f.keys.Reload()
	body = scrape()
	for _, want := range []string{"cryptmilter_healthy 0", "cryptmilter_keyring_last_reload_success 0", `cryptmilter_keyring_keys{kind="secret"} 1`} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("after a failed reload: metrics lack %q", want)
		}
	}
}

// TestServeHealthAndLogs drives a real `cryptmilter serve`: the start logs
// the keystore summary and the effective configuration key by key, debug
// adds the listener, slot and gateway identity details; /healthz and
// /metrics answer on the metrics listener, and /healthz fails once the
// unix socket file is removed.
func TestServeHealthAndLogs(t *testing.T) {
	if testing.Short() {
		t.Skip("starts daemons")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "milter.sock")
	mport := freePort(t)
	conf := fmt.Sprintf("keystore = \"keys\"\nhostname = \"mx.example.test\"\nlisten = [\"unix:%s\"]\n[log]\nlevel = \"debug\"\n[metrics]\nlisten = \"127.0.0.1:%d\"\n[identity]\naddresses = [\"rt@example.org\"]\n", sock, mport)
	if err := os.WriteFile(filepath.Join(dir, "c.toml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, dir)
	for i := 0; i < 100 && !strings.Contains(d.logs.String(), "msg=ready"); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	logs := d.logs.String()
	start := logs[:strings.Index(logs, "msg=ready")]
	for _, want := range []string{
		`msg="keystore loaded" dir=keys openpgp=0 certificates=0 anchors=0 crls=0 gateway_openpgp=1 gateway_smime=1`,
		`msg="effective configuration" keystore=keys listen=unix:` + sock + " hostname=mx.example.test",
		`msg="effective configuration" metrics.listen=127.0.0.1:`,
		`level=DEBUG msg=listener socket=unix:` + sock + " network=unix address=" + sock + " mode=0660",
		`level=DEBUG msg="processing slots" max_concurrent=`,
		`level=DEBUG msg="gateway identity" address=rt@example.org protocol=openpgp fingerprint=`,
		`level=DEBUG msg="gateway identity" address=rt@example.org protocol=smime fingerprint=`,
		`msg="metrics listening" address=127.0.0.1:`,
	} {
		if !strings.Contains(start, want) {
			t.Errorf("the start log lacks %q", want)
		}
	}
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, "effective configuration") && strings.Contains(l, `\"`) {
			t.Errorf("the effective configuration is escaped: %s", l)
		}
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", mport)
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	_, body := get("/metrics")
	for _, want := range []string{`cryptmilter_build_info{version="`, `cryptmilter_keyring_keys{kind="secret"} 1`,
		"cryptmilter_keyring_last_reload_success 1", "cryptmilter_healthy 1", "cryptmilter_messages_in_flight 0"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// The socket file removed: the MTA cannot connect, /healthz says so
	// and the log tells it once.
	os.Remove(sock)
	if code, body := get("/healthz"); code != 503 || !strings.Contains(body, "socket file "+sock+" is gone") {
		t.Errorf("/healthz without the socket file = %d %q", code, body)
	}
	get("/metrics")
	if n := strings.Count(d.logs.String(), "unhealthy: /healthz answers 503"); n != 1 {
		t.Errorf("%d unhealthy lines, want 1:\n%s", n, d.logs)
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(15 * time.Second):
		t.Fatal("daemon did not stop")
	}
}
