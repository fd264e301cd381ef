package main

import (
	"context"
	"crypto/x509"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/cryptmilter/cryptmilter/crypto"
	"github.com/cryptmilter/cryptmilter/internal/config"
	"github.com/cryptmilter/cryptmilter/keystore"
	"github.com/cryptmilter/cryptmilter/keystore/discover"
)

// discovery is key discovery for one configuration: the Discoverer and
// the hook that fills crypto.Input.Discovered before the engine runs.
// The engine stays free of network code: the hook runs outside it (in
// the milter before a processing slot is taken, so that waiting for the
// network holds none), bounded by [discovery] timeout.
type discovery struct {
	eng *crypto.Engine
	d   *discover.Discoverer
}

// discoverOptions derives the Discoverer's options from the configuration.
func discoverOptions(cfg *config.Config, anchors func() *x509.CertPool, log *slog.Logger, obs discover.Observer) discover.Options {
	return discover.Options{
		Discovery:     cfg.Discovery,
		Dir:           discover.CacheDir(cfg.Keystore),
		FoldLocalPart: cfg.Keyring.FoldLocalPart,
		Anchors:       anchors,
		Logger:        log,
		Observer:      obs,
	}
}

// newDiscovery returns key discovery for cfg, or nil when it is off.
func newDiscovery(cfg *config.Config, eng *crypto.Engine, anchors func() *x509.CertPool, log *slog.Logger, obs discover.Observer) *discovery {
	if !cfg.Discovery.Enabled() {
		return nil
	}
	return &discovery{eng: eng, d: discover.New(discoverOptions(cfg, anchors, log, obs))}
}

// fill looks up the keys of the outbound recipients that need one (see
// crypto.Engine.DiscoveryTargets), all in parallel within the timeout,
// and hands the answers to the engine as data.
func (x *discovery) fill(ctx context.Context, in *crypto.Input) {
	if x == nil || in.Direction != crypto.Outbound {
		return
	}
	now := in.Now
	if now.IsZero() {
		now = time.Now()
	}
	targets := x.eng.DiscoveryTargets(in.Keys, in.Envelope.Rcpts, now)
	if len(targets) == 0 {
		return
	}
	reqs := make([]discover.Request, len(targets))
	for i, t := range targets {
		srcs := make([]string, len(t.Sources))
		for j, src := range t.Sources {
			srcs[j] = src.String()
		}
		reqs[i] = discover.Request{Address: t.Addr, Sources: srcs}
	}
	in.Discovered = engineAnswers(x.d.LookupMessage(ctx, reqs, now))
}

// engineAnswers turns the Discoverer's answers into the engine's data.
func engineAnswers(m map[string][]discover.Answer) crypto.Discovered {
	out := make(crypto.Discovered, len(m))
	for addr, as := range m {
		for _, a := range as {
			dk := crypto.DiscoveredKey{Temporary: a.Status == discover.Temporary, Reason: a.Reason}
			if dk.Source.UnmarshalText([]byte(a.Source)) != nil || dk.Source == crypto.TrustManual {
				continue // not a discovery source: never trusted as one
			}
			if a.Status == discover.Found {
				if a.OpenPGP != nil {
					dk.OpenPGP = a.OpenPGP.OpenPGP
				}
				if a.SMIME != nil {
					dk.Cert = a.SMIME.Cert
				}
			} else if dk.Reason == "" {
				dk.Reason = string(a.Status)
			} else {
				dk.Reason = string(a.Status) + ": " + dk.Reason
			}
			out[addr] = append(out[addr], dk)
		}
	}
	return out
}

// discoveryState is the daemon's key discovery across reloads: the
// discovery of the configuration in service (a new one per reload; a
// message keeps the one it started with) and the background refresh.
type discoveryState struct {
	cur  atomic.Pointer[discovery]
	obs  discover.Observer
	log  *slog.Logger
	keys *keystore.Holder
}

// hook returns milter.Env.Discover for cfg (nil when discovery is off)
// and makes it the one the background refresh uses.
func (s *discoveryState) hook(cfg *config.Config, eng *crypto.Engine) func(context.Context, *crypto.Input) {
	var anchors func() *x509.CertPool
	if s.keys != nil {
		anchors = func() *x509.CertPool { return s.keys.Current().TrustAnchors() }
	}
	x := newDiscovery(cfg, eng, anchors, s.log, s.obs)
	s.cur.Store(x)
	if x == nil {
		return nil
	}
	return x.fill
}

// run refreshes the cache in the background until ctx ends.
func (s *discoveryState) run(ctx context.Context) {
	for {
		iv := time.Minute
		if x := s.cur.Load(); x != nil {
			iv = discover.RefreshInterval(x.d.CacheTTL())
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(iv):
		}
		if x := s.cur.Load(); x != nil {
			x.d.RefreshDue(ctx, time.Now())
		}
	}
}

// processDiscovery is key discovery for `cryptmilter process`: as the
// milter does it, when the keystore exists (the cache lives in it);
// problems go to stderr.
func processDiscovery(ctx context.Context, cfg *config.Config, eng *crypto.Engine, in *crypto.Input, stderr io.Writer) {
	if in.Keys == nil {
		return
	}
	snap := in.Keys
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	x := newDiscovery(cfg, eng, snap.TrustAnchors, log, nil)
	if x == nil {
		return
	}
	defer x.d.Close()
	x.fill(ctx, in)
}
