package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
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
	var level slog.Level
	level.UnmarshalText([]byte(cfg.Log.Level))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Log.Format == "json" {
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
	cfg   *config.Config
	env   atomic.Pointer[milter.Env]
	keys  *keystore.Holder
	log   *slog.Logger
	sp    *spool.Dir
	slots chan struct{}
}

func serve(cfg *config.Config, log *slog.Logger) error {
	effective, _ := json.Marshal(cfg)
	log.Info("starting", "version", versionString(), "config", nameOf(cfg), "effective", string(effective))

	if err := os.MkdirAll(cfg.Keystore, 0o700); err != nil {
		return fmt.Errorf("keystore %s: %w", cfg.Keystore, err)
	}
	kopts := keystoreOptions(cfg, log)
	if !keystore.IsInitialized(kopts) {
		addrs, note, err := firstRunAddresses(cfg)
		if err != nil {
			return err
		}
		if note != "" {
			log.Warn(note)
		}
		created, err := keystore.Init(kopts, addrs, false, time.Now())
		if err != nil {
			return fmt.Errorf("creating the gateway identity in %s: %w", cfg.Keystore, err)
		}
		log.Info("created gateway identity on first run", "keystore", cfg.Keystore, "addresses", strings.Join(addrs, ","), "created", strings.Join(created, "; "))
	}
	holder, err := keystore.NewHolder(kopts)
	if err != nil {
		return err
	}
	for _, p := range holder.Current().Problems() {
		log.Warn("keystore file skipped", "file", p.File, "error", p.Err)
	}
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
	st := &daemonState{cfg: cfg, keys: holder, log: log, sp: sp, slots: make(chan struct{}, n)}
	st.env.Store(st.newEnv(cfg))

	lns, err := listen.Systemd()
	if err != nil {
		return err
	}
	if len(lns) > 0 {
		log.Info("using sockets passed by systemd; listen is ignored", "count", len(lns))
	} else if lns, err = listen.Open(cfg); err != nil {
		return err
	}
	m := metrics.New()
	srv := &milter.Server{Env: func() *milter.Env { return st.env.Load() }, Logger: log, Observe: m.Observe}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if cfg.Keyring.Watch {
		go func() {
			if err := holder.Watch(ctx); err != nil && !errors.Is(err, context.Canceled) {
				log.Warn("keystore watch stopped; SIGHUP still reloads", "error", err)
			}
		}()
	}
	var metricsSrv *http.Server
	if cfg.Metrics.Listen != "" {
		ml, err := net.Listen("tcp", cfg.Metrics.Listen)
		if err != nil {
			return fmt.Errorf("metrics.listen: %w", err)
		}
		metricsSrv = &http.Server{Handler: m.Handler(), ReadHeaderTimeout: 10 * time.Second}
		go metricsSrv.Serve(ml)
		log.Info("metrics listening", "address", ml.Addr().String())
	}

	errc := make(chan error, len(lns))
	var wg sync.WaitGroup
	for _, l := range lns {
		log.Info("listening", "socket", l.Name, "address", l.Addr().String())
		wg.Add(1)
		go func(l *listen.Listener) {
			defer wg.Done()
			if err := srv.Serve(l); err != nil {
				errc <- fmt.Errorf("serving %s: %w", l.Name, err)
			}
		}(l)
	}
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	daemon.SdNotify(false, daemon.SdNotifyReady)
	if iv, err := daemon.SdWatchdogEnabled(false); err == nil && iv > 0 {
		go func() {
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
		}()
	}
	log.Info("ready")

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	var serveErr error
loop:
	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				st.reload()
				continue
			}
			log.Info("shutting down", "signal", sig.String())
			break loop
		case serveErr = <-errc:
			log.Error("listener failed", "error", serveErr)
			break loop
		}
	}
	daemon.SdNotify(false, daemon.SdNotifyStopping)
	dctx, dcancel := context.WithTimeout(context.Background(), st.cfg.DrainTimeout.D())
	defer dcancel()
	active := srv.Active()
	if err := srv.Shutdown(dctx); err != nil {
		log.Warn("drain timeout: closed sessions in flight; the MTA tempfails their messages", "sessions", active, "error", err)
	} else {
		log.Info("drained", "sessions", active)
	}
	if metricsSrv != nil {
		metricsSrv.Close()
	}
	cancel()
	wg.Wait()
	log.Info("stopped")
	return serveErr
}

// newEnv is what messages starting now are processed with. The slots are
// the daemon's, so a reload does not raise the concurrency.
func (st *daemonState) newEnv(cfg *config.Config) *milter.Env {
	return &milter.Env{Engine: crypto.New(cfg, st.sp), Config: cfg, Spool: st.sp, Keys: st.keys, Slots: st.slots}
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
	} else {
		n, err := config.Load(cfg.File)
		if err != nil {
			st.log.Error("reload: configuration rejected, keeping the running one", "error", err)
			cfgNote = "configuration rejected, running one kept"
		} else {
			// Settings bound at start keep their running values.
			var fixed []string
			same := func(name string, a, b any) {
				if fmt.Sprint(a) != fmt.Sprint(b) {
					fixed = append(fixed, name)
				}
			}
			same("listen", n.Listen, cfg.Listen)
			same("socket_mode", n.SocketMode, cfg.SocketMode)
			same("socket_group", n.SocketGroup, cfg.SocketGroup)
			same("keystore", n.Keystore, cfg.Keystore)
			same("spool", n.SpoolDir(), cfg.SpoolDir())
			same("log", n.Log, cfg.Log)
			same("keyring.watch", n.Keyring.Watch, cfg.Keyring.Watch)
			same("limits.memory_spool", n.Limits.MemorySpool, cfg.Limits.MemorySpool)
			same("limits.max_concurrent", n.Limits.MaxConcurrent, cfg.Limits.MaxConcurrent)
			same("metrics.listen", n.Metrics.Listen, cfg.Metrics.Listen)
			if len(fixed) > 0 {
				st.log.Warn("reload: these settings take effect at restart; the running values are kept", "settings", strings.Join(fixed, ","))
			}
			n.Listen, n.Sockets, n.SocketMode, n.SocketGroup = cfg.Listen, cfg.Sockets, cfg.SocketMode, cfg.SocketGroup
			n.Keystore, n.Spool, n.Log, n.Keyring.Watch = cfg.Keystore, cfg.Spool, cfg.Log, cfg.Keyring.Watch
			n.Limits.MemorySpool, n.Limits.MaxConcurrent, n.Metrics = cfg.Limits.MemorySpool, cfg.Limits.MaxConcurrent, cfg.Metrics
			cfg = n
		}
	}
	// Pins and address folding may have changed; the reload logs the
	// files it skips.
	if err := st.keys.SetOptions(keystoreOptions(cfg, st.log)); err != nil {
		st.log.Error("reload: keystore unreadable, keeping the loaded keys", "error", err)
	}
	st.cfg = cfg
	st.env.Store(st.newEnv(cfg))
	st.log.Info("reloaded", "config", nameOf(cfg), "configuration", cfgNote)
}
