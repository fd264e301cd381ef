package main

import (
	"log/slog"
	"os"
	"runtime/debug"
)

// The garbage collector's settings for serve, chosen by measurement
// (docs/performance.md): GOGC=400 cut the CPU per OpenPGP message by 20 to
// 35% at the cost of about 16 MB more peak heap; the soft memory limit
// makes the collector work harder as the heap nears it, so that the larger
// GOGC never grows the daemon without bound. GOGC and GOMEMLIMIT in the
// environment (e.g. a systemd drop-in's Environment=) take precedence.
const (
	serveGOGC        = 400
	serveMemoryLimit = 512 << 20
)

// tuneGC applies serve's garbage collector settings unless the
// environment sets them, and logs what is in effect.
func tuneGC(log *slog.Logger) {
	gogc, limit := "GOGC", "GOMEMLIMIT"
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(serveGOGC)
		gogc = "default"
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(serveMemoryLimit)
		limit = "default"
	}
	percent := debug.SetGCPercent(-1) // reads it (and turns the collector off)
	debug.SetGCPercent(percent)       // and puts it back
	log.Debug("garbage collector", "gogc", percent, "gogc_from", gogc,
		"memory_limit", debug.SetMemoryLimit(-1), "memory_limit_from", limit) // -1 only reads

}
