package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"os/user"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/cryptmilter/cryptmilter/crypto"
	"github.com/cryptmilter/cryptmilter/internal/config"
	"github.com/cryptmilter/cryptmilter/internal/listen"
	"github.com/cryptmilter/cryptmilter/internal/metrics"
	"github.com/cryptmilter/cryptmilter/internal/spool"
	"github.com/cryptmilter/cryptmilter/keystore"
	"github.com/cryptmilter/cryptmilter/milter"
)

const serveUsage = `Usage: cryptmilter serve [-c FILE] [-n]

Runs the milter. Without -c it runs on the embedded default: it listens on
inet:127.0.0.1:8895 and keeps its keystore in ./cryptmilter-data, created
with a fresh gateway identity on first run.

  -c FILE   configuration file (TOML); contrib/cryptmilter.toml lists every key
  -n        check the configuration and the setup around it (socket directories
            and group, re-injection, gateway identity), saying what to do about
            each problem, and exit: 0 when valid, 1 otherwise

Exit status 78 (EX_CONFIG): serve found a problem only the admin can fix and
said what to do; the shipped unit does not restart it then.

Signals: SIGHUP reloads the configuration and the keystore, SIGTERM drains
messages in flight (up to drain_timeout) and exits.

Examples:
  cryptmilter serve
  cryptmilter serve -c /etc/cryptmilter/cryptmilter.toml
  systemd-socket-activate -l 127.0.0.1:8895 cryptmilter serve -c cryptmilter.toml
`

func runServe(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("serve", serveUsage, stderr)
	file := fs.String("c", "", "configuration file")
	check := fs.Bool("n", false, "check the configuration and exit")
	if code, ok := parseFlags(fs, args, stdout, stderr, serveUsage); !ok {
		return code
	}
	if fs.NArg() > 0 {
		errorf(stderr, "serve: unexpected argument %q", fs.Arg(0))
		return 1
	}
	cfg, err := config.Load(*file)
	if err != nil {
		errorf(stderr, "%v", err)
		if *check {
			return 1
		}
		return exitConfig
	}
	if code, done := preflight(cfg, *check, stdout, stderr); done {
		return code
	}
	log := newLogger(cfg, stderr)
	if err := serve(cfg, log); err != nil {
		log.Error("cryptmilter stopped", "error", err)
		errorf(stderr, "%v", err)
		return exitCode(err)
	}
	return 0
}

func nameOf(cfg *config.Config) string {
	if cfg.File == "" {
		return "(embedded default)"
	}
	return cfg.File
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.Log.Level.Slog()}
	if cfg.Log.Format == config.LogJSON {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// keystoreOptions derives the keystore's options from the configuration.
func keystoreOptions(cfg *config.Config, log *slog.Logger) keystore.Options {
	return keystore.Options{
		Dir:            cfg.Keystore,
		FoldLocalPart:  cfg.Keyring.FoldLocalPart,
		Pins:           cfg.Keyring.Pin,
		ServiceGroup:   cfg.Keyring.ServiceGroup,
		CredentialsDir: os.Getenv("CREDENTIALS_DIRECTORY"),
		Logger:         log,
	}
}

// daemonState is what a reload swaps.
type daemonState struct {
	cfg    *config.Config
	env    atomic.Pointer[milter.Env]
	keys   *keystore.Holder
	log    *slog.Logger
	sp     *spool.Dir
	slots  chan struct{}
	disc   discoveryState // key discovery (discovery.go)
	m      *metrics.Metrics
	health *health
}

func serve(cfg *config.Config, log *slog.Logger) error {
	log.Info("starting", "version", versionString(), "config", nameOf(cfg))
	logEffective(log, cfg)
	tuneGC(log)
	if stop := cpuProfile(log); stop != nil {
		defer stop()
	}
	holder, err := openKeystore(cfg, log)
	if err != nil {
		return err
	}
	logGatewayIdentities(log, holder.Current(), time.Now())
	if err := checkGatewayIdentity(cfg, holder.Current(), log); err != nil {
		return err
	}
	sp, err := spool.Open(cfg.SpoolDir(), int64(cfg.Limits.MemorySpool))
	if err != nil {
		return err
	}
	n := cfg.Limits.MaxConcurrent
	if n == 0 {
		n = 2 * runtime.NumCPU()
	}
	log.Debug("processing slots", "max_concurrent", n, "spool", cfg.SpoolDir(), "memory_spool", int64(cfg.Limits.MemorySpool))
	m := metrics.New(versionString())
	hl := newHealth(holder, log)
	m.SetKeyring(keyringSource(holder))
	m.SetHealth(func() bool { ok, _ := hl.check(); return ok })
	st := &daemonState{cfg: cfg, keys: holder, log: log, sp: sp, slots: make(chan struct{}, n), m: m, health: hl}
	st.disc.obs, st.disc.log, st.disc.keys = m, log, holder
	st.env.Store(st.newEnv(cfg))
	lns, err := openListeners(cfg, log)
	if err != nil {
		return err
	}
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for _, l := range lns {
		hl.addListener(l)
	}
	srv := &milter.Server{Env: func() *milter.Env { return st.env.Load() }, Logger: log, Observe: m.Observe, Metrics: m}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go st.disc.run(ctx)
	if cfg.Keyring.Watch {
		go func() {
			if err := holder.Watch(ctx); err != nil && !errors.Is(err, context.Canceled) {
				log.Warn("keystore watch stopped; SIGHUP still reloads", "error", err)
			}
		}()
	}
	metricsSrv, err := startMetrics(cfg, log, metricsHandler(m, hl))
	if err != nil {
		return err
	}
	go hl.run(ctx, healthInterval)
	errc := make(chan error, len(lns))
	var wg sync.WaitGroup
	for _, l := range lns {
		log.Info("listening", "socket", l.Name, "address", l.Addr().String())
		log.Debug("listener", listenerDetails(l)...)
		wg.Add(1)
		go func(l *listen.Listener) {
			defer wg.Done()
			if err := srv.Serve(l); err != nil {
				hl.listenerFailed(l.Name, err)
				errc <- fmt.Errorf("serving %s: %w", l.Name, err)
			}
		}(l)
	}
	// Before announcing readiness: a SIGTERM or SIGHUP sent as soon as
	// "ready" is seen must not kill the process.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	daemon.SdNotify(false, daemon.SdNotifyReady)
	go watchdog(ctx)
	log.Info("ready")

	serveErr := st.run(sigs, errc)
	daemon.SdNotify(false, daemon.SdNotifyStopping)
	hl.setStopping()
	st.drain(srv)
	if metricsSrv != nil {
		metricsSrv.Close()
	}
	cancel()
	wg.Wait()
	log.Info("stopped")
	return serveErr
}

// openKeystore opens the keystore, creating the gateway identity on first
// start, and logs the files it skips.
func openKeystore(cfg *config.Config, log *slog.Logger) (*keystore.Holder, error) {
	if err := os.MkdirAll(cfg.Keystore, 0o700); err != nil {
		return nil, fmt.Errorf("keystore %s: %w", cfg.Keystore, err)
	}
	kopts := keystoreOptions(cfg, log)
	initialized, err := keystore.IsInitialized(kopts)
	if err != nil {
		return nil, err // unreadable: never create a new identity over it
	}
	if !initialized {
		addrs, note, err := firstRunAddresses(cfg)
		if err != nil {
			return nil, err
		}
		if note != "" {
			log.Warn(note)
		}
		created, err := keystore.Init(kopts, addrs, false, time.Now())
		if err != nil {
			return nil, fmt.Errorf("creating the gateway identity in %s: %w", cfg.Keystore, err)
		}
		log.Info("created gateway identity on first run", "keystore", cfg.Keystore, "addresses", strings.Join(addrs, ","), "created", strings.Join(created, "; "))
	}
	// NewHolder logs the files it skips and the ones it cannot read.
	return keystore.NewHolder(kopts)
}

// openListeners returns the sockets systemd passed, or opens listen's.
func openListeners(cfg *config.Config, log *slog.Logger) ([]*listen.Listener, error) {
	lns, err := listen.Systemd()
	if err != nil {
		return nil, err
	}
	if len(lns) > 0 {
		log.Info("using sockets passed by systemd; listen is ignored", "count", len(lns))
		return lns, nil
	}
	return listen.Open(cfg)
}

// healthInterval is how often the daemon checks its health on its own, to
// log a change nobody polled for.
const healthInterval = 30 * time.Second

// startMetrics serves /metrics and /healthz when [metrics] listen is set.
func startMetrics(cfg *config.Config, log *slog.Logger, h http.Handler) (*http.Server, error) {
	if cfg.Metrics.Listen == "" {
		log.Debug("metrics and /healthz off: [metrics] listen is not set")
		return nil, nil
	}
	ml, err := net.Listen("tcp", cfg.Metrics.Listen)
	if err != nil {
		return nil, fmt.Errorf("metrics.listen: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ml)
	log.Info("metrics listening", "address", ml.Addr().String(), "paths", "/metrics,/healthz")
	return srv, nil
}

// watchdog pings systemd's watchdog every half interval until ctx ends.
func watchdog(ctx context.Context) {
	iv, err := daemon.SdWatchdogEnabled(false)
	if err != nil || iv <= 0 {
		return
	}
	t := time.NewTicker(iv / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			daemon.SdNotify(false, daemon.SdNotifyWatchdog)
		}
	}
}

// run handles signals until SIGTERM/SIGINT or a listener failure.
func (st *daemonState) run(sigs <-chan os.Signal, errc <-chan error) error {
	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				st.reload()
				continue
			}
			st.log.Info("shutting down", "signal", sig.String())
			return nil
		case err := <-errc:
			st.log.Error("listener failed", "error", err)
			return err
		}
	}
}

// drain lets messages in flight finish for up to drain_timeout.
func (st *daemonState) drain(srv *milter.Server) {
	dctx, dcancel := context.WithTimeout(context.Background(), st.cfg.DrainTimeout.D())
	defer dcancel()
	active := srv.Active()
	if err := srv.Shutdown(dctx); err != nil {
		st.log.Warn("drain timeout: closed sessions in flight; the MTA tempfails their messages", "sessions", active, "error", err)
	} else {
		st.log.Info("drained", "sessions", active)
	}
}

// newEnv is what messages starting now are processed with. The slots are
// the daemon's, so a reload does not raise the concurrency.
func (st *daemonState) newEnv(cfg *config.Config) *milter.Env {
	pol := cfg.EnginePolicy()
	eng := crypto.New(pol, st.sp)
	return &milter.Env{Engine: observedEngine{eng, st.m}, Policy: pol, Config: cfg, Spool: st.sp, Keys: st.keys, Slots: st.slots,
		Discover: st.disc.hook(cfg, eng), AllowUID: allowedUIDs(cfg.ListenUsers, st.log)}
}

// observedEngine counts the engine's cryptographic operations, read from
// the plans it returns (the engine itself knows nothing of metrics). The
// embedded engine keeps its other methods (RcptDefer) for the milter.
type observedEngine struct {
	*crypto.Engine
	m *metrics.Metrics
}

func (e observedEngine) Process(ctx context.Context, in *crypto.Input) (*crypto.Plan, error) {
	p, err := e.Engine.Process(ctx, in)
	if e.m != nil {
		if err != nil {
			e.m.EngineError(in.Direction, err)
		} else {
			e.m.Plan(in.Direction, p)
		}
	}
	return p, err
}

// reload re-reads the configuration file and the keystore. A bad
// configuration keeps the old one; listeners are not reopened.
func (st *daemonState) reload() {
	daemon.SdNotify(false, daemon.SdNotifyReloading)
	defer daemon.SdNotify(false, daemon.SdNotifyReady)
	cfg := st.cfg
	cfgNote := "configuration reloaded"
	if cfg.File == "" {
		cfgNote = "embedded default configuration unchanged"
	} else if n, err := config.Load(cfg.File); err != nil {
		st.log.Error("reload: configuration rejected, keeping the running one", "error", err)
		cfgNote = "configuration rejected, running one kept"
	} else {
		if fixed := keepRestartOnly(n, cfg); len(fixed) > 0 {
			st.log.Warn("reload: these settings take effect at restart; the running values are kept", "settings", strings.Join(fixed, ","))
		}
		cfg = n
		logEffective(st.log, cfg)
	}
	// Pins and address folding may have changed; the reload logs the
	// files it skips.
	if err := st.keys.SetOptions(keystoreOptions(cfg, st.log)); err != nil {
		st.log.Error("reload: keystore unreadable, keeping the loaded keys", "error", err)
	}
	st.cfg = cfg
	st.env.Store(st.newEnv(cfg))
	logGatewayIdentities(st.log, st.keys.Current(), time.Now())
	st.log.Info("reloaded", "config", nameOf(cfg), "configuration", cfgNote)
}

// restartOnly are the settings bound at start: a reload keeps their
// running values. Each entry compares and copies one setting.
var restartOnly = []struct {
	name string
	same func(n, old *config.Config) bool
	keep func(n, old *config.Config)
}{
	{"listen", func(n, o *config.Config) bool { return slices.Equal(n.Listen, o.Listen) },
		func(n, o *config.Config) { n.Listen, n.Sockets = o.Listen, o.Sockets }},
	{"socket_mode", func(n, o *config.Config) bool { return n.SocketMode == o.SocketMode },
		func(n, o *config.Config) { n.SocketMode = o.SocketMode }},
	{"socket_group", func(n, o *config.Config) bool { return n.SocketGroup == o.SocketGroup },
		func(n, o *config.Config) { n.SocketGroup = o.SocketGroup }},
	{"keystore", func(n, o *config.Config) bool { return n.Keystore == o.Keystore },
		func(n, o *config.Config) { n.Keystore = o.Keystore }},
	{"spool", func(n, o *config.Config) bool { return n.SpoolDir() == o.SpoolDir() },
		func(n, o *config.Config) { n.Spool = o.Spool }},
	{"log", func(n, o *config.Config) bool { return n.Log == o.Log },
		func(n, o *config.Config) { n.Log = o.Log }},
	{"keyring.watch", func(n, o *config.Config) bool { return n.Keyring.Watch == o.Keyring.Watch },
		func(n, o *config.Config) { n.Keyring.Watch = o.Keyring.Watch }},
	{"limits.memory_spool", func(n, o *config.Config) bool { return n.Limits.MemorySpool == o.Limits.MemorySpool },
		func(n, o *config.Config) { n.Limits.MemorySpool = o.Limits.MemorySpool }},
	{"limits.max_concurrent", func(n, o *config.Config) bool { return n.Limits.MaxConcurrent == o.Limits.MaxConcurrent },
		func(n, o *config.Config) { n.Limits.MaxConcurrent = o.Limits.MaxConcurrent }},
	{"metrics.listen", func(n, o *config.Config) bool { return n.Metrics == o.Metrics },
		func(n, o *config.Config) { n.Metrics = o.Metrics }},
}

// keepRestartOnly gives n the running values of the restart-only settings
// and returns the names of those that differed.
func keepRestartOnly(n, old *config.Config) []string {
	var fixed []string
	for _, r := range restartOnly {
		if !r.same(n, old) {
			fixed = append(fixed, r.name)
		}
		r.keep(n, old)
	}
	return fixed
}

// cpuProfile starts a CPU profile into $CRYPTMILTER_CPUPROFILE when it is
// set (for measuring the daemon under `cryptmilter bench`, see
// docs/performance.md) and returns what stops it at shutdown.
func cpuProfile(log *slog.Logger) func() {
	name := os.Getenv("CRYPTMILTER_CPUPROFILE")
	if name == "" {
		return nil
	}
	f, err := os.Create(name)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		log.Error("CPU profile not written", "file", name, "error", err)
		return nil
	}
	log.Info("writing a CPU profile until shutdown", "file", name)
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// allowedUIDs resolves [listen_users] to the check milter.Server.AllowUID
// makes: those users and the daemon's own; nil (no check) with "*". A name
// this host does not know (smmsp without Sendmail) is skipped.
func allowedUIDs(names []string, log *slog.Logger) func(uint32) bool {
	allow := map[uint32]bool{uint32(os.Getuid()): true}
	for _, n := range names {
		if n == "*" {
			return nil
		}
		if id, err := strconv.ParseUint(n, 10, 32); err == nil {
			allow[uint32(id)] = true
			continue
		}
		u, err := user.Lookup(n)
		if err != nil {
			log.Debug("listen_users: no such user here", "user", n)
			continue
		}
		if id, err := strconv.ParseUint(u.Uid, 10, 32); err == nil {
			allow[uint32(id)] = true
		}
	}
	return func(uid uint32) bool { return allow[uid] }
}
